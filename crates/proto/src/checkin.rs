//! The check-in messages (`POST /checkin`, JSON), one definition for the server and the agent.
//! A device reports what it holds; the server answers per template with its decision and the
//! facts behind it (its renewal time for the certificate, the window, revoked or lost), so the
//! agent decides with the same rule (`core::renewal::decide`) on the same facts. Unknown fields
//! are ignored and unknown actions or reasons read as `Unknown`: either side may be newer.
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const PATH: &str = "/checkin";
/// The largest report the server reads, and the most entries of each list in it.
pub const MAX_BODY: usize = 256 * 1024;
pub const MAX_ENTRIES: usize = 1000;

/// What the device says it holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckinReport {
    #[serde(default)]
    pub certificates: Vec<HeldCertificate>,
    /// The last error per template, as the agent saw it.
    #[serde(default)]
    pub errors: BTreeMap<String, String>,
    /// The device enrolls over SCEP: enroll directives then carry a fresh one-time challenge.
    #[serde(default)]
    pub scep: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldCertificate {
    pub template: String,
    /// SHA-1 thumbprint (hex) of the DER certificate.
    pub thumbprint: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Nothing to do until `renew_at`.
    Ok,
    /// Enroll with fresh credentials (nothing usable held: missing, revoked, expired, lost).
    Enroll,
    /// Renew the held certificate, proving possession of it.
    Renew,
    /// Take the certificate out of service: its template is superseded or no longer assigned.
    Remove,
    #[serde(other)]
    Unknown,
}

/// Why: the reason of the server's renewal decision, or of a removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Held and current: renews at `renew_at`.
    Current,
    Missing,
    /// This template supersedes one the device holds.
    Superseded,
    /// The template's major version went up: renew now, with the current certificate.
    TemplateBumped,
    /// The renewal time came.
    NearingExpiry,
    Expired,
    Revoked,
    /// An administrator asked for renewal now.
    ServerRequested,
    /// The server issued the device a newer certificate it does not report.
    Lost,
    /// The server renewed the certificate the device shows, and the successor never arrived:
    /// renew again (the same key gets the same certificate).
    Interrupted,
    /// (remove) Another template supersedes this one.
    SupersededBy,
    /// (remove) The template is no longer assigned to the device.
    NotAssigned,
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directive {
    pub template: String,
    pub action: Action,
    pub reason: Reason,
    /// A sentence for people (logs, `agent status`).
    #[serde(default)]
    pub detail: String,
    /// The certificate the directive is about (the one the device reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// The server's renewal time for that certificate (Unix seconds): its slot in the renewal
    /// window, spread over the fleet; earlier when an administrator asked for renewal now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_at: Option<i64>,
    /// When the template's renewal window opens for that certificate, and when it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_start: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_end: Option<i64>,
    /// For SCEP devices told to enroll: a one-time challenge bound to this device and template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckinAnswer {
    pub device: String,
    pub blocked: bool,
    pub directives: Vec<Directive>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_peers_are_understood() {
        let a: CheckinAnswer = serde_json::from_str(
            r#"{"device":"d","blocked":false,"future":1,"directives":[
                {"template":"T","action":"quarantine","reason":"cosmic_rays","renew_at":5}]}"#,
        )
        .unwrap();
        assert_eq!(a.directives[0].action, Action::Unknown);
        assert_eq!(a.directives[0].reason, Reason::Unknown);
        assert_eq!(a.directives[0].renew_at, Some(5));
        let r: CheckinReport = serde_json::from_str("{}").unwrap();
        assert_eq!(r, CheckinReport::default());
    }

    #[test]
    fn wire_names() {
        let d = Directive {
            template: "Machine".into(),
            action: Action::Renew,
            reason: Reason::TemplateBumped,
            detail: String::new(),
            serial: None,
            renew_at: Some(1),
            window_start: None,
            window_end: None,
            challenge: None,
        };
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"template":"Machine","action":"renew","reason":"template_bumped","detail":"","renew_at":1}"#
        );
    }
}
