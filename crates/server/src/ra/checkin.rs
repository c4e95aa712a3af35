//! Check-in: a device reports what it holds, and the server answers with what it must do,
//! decided on the server's view (its inventory, renewal times, template versions). A
//! certificate the server issued to the device but the device cannot show is issued again
//! (NodeCache behaviour); a certificate of a superseded or withdrawn template is removed.
use super::auth::Principal;
use super::{Ra, RaError};
use autoenroll_core::Thumbprint;
use autoenroll_store::CertificateFilter;
use serde::{Deserialize, Serialize};

/// What the device says it holds.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct CheckinReport {
    #[serde(default)]
    pub certificates: Vec<HeldCertificate>,
    /// The last error per template, as the agent saw it.
    #[serde(default)]
    pub errors: std::collections::BTreeMap<String, String>,
    /// The device enrolls over SCEP: enroll directives then carry a fresh one-time challenge.
    #[serde(default)]
    pub scep: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct HeldCertificate {
    pub template: String,
    /// SHA-1 thumbprint (hex) of the DER certificate.
    pub thumbprint: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Nothing to do until `window_start`.
    Ok,
    /// Enroll for the template (nothing held).
    Enroll,
    /// Renew the held certificate within the window.
    Renew,
    /// Enroll anew: the template's major version changed, the certificate was revoked, or the
    /// device lost the certificate the server issued.
    Reenroll,
    /// Remove the certificate: its template is superseded or no longer assigned.
    Remove,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directive {
    pub template: String,
    pub action: Action,
    pub serial: Option<String>,
    pub window_start: Option<i64>,
    pub window_end: Option<i64>,
    pub reason: String,
    /// For SCEP devices told to enroll: a one-time challenge bound to this device and template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckinAnswer {
    pub device: String,
    pub blocked: bool,
    pub directives: Vec<Directive>,
}

const MAX_REPORTED: usize = 1000;

impl Ra {
    pub async fn checkin(&self, principal: &Principal, report: &CheckinReport) -> Result<CheckinAnswer, RaError> {
        if report.certificates.len() > MAX_REPORTED || report.errors.len() > MAX_REPORTED {
            return Err(RaError::new(autoenroll_core::Kind::BadRequest, "TooLarge", "too many entries in the report"));
        }
        let now = self.now();
        let device = self.store.touch_device(&principal.device, now.0).await?;
        let errors: Vec<(String, String)> = report
            .errors
            .iter()
            .map(|(t, e)| (format!("error:{t}"), e.chars().take(500).collect::<String>()))
            .collect();
        if !errors.is_empty() {
            self.store.set_device_attributes(device.id, &errors, now.0).await?;
        }
        if device.blocked {
            self.audit(&principal.actor(), "checkin", &device.name, "refused", "DeviceBlocked").await;
            return Ok(CheckinAnswer { device: device.name, blocked: true, directives: vec![] });
        }
        let templates = self.store.templates().await?;
        let held: Vec<autoenroll_store::CertificateRow> = self
            .store
            .certificates_matching(&CertificateFilter {
                device: Some(device.name.clone()),
                limit: 10_000,
                ..Default::default()
            })
            .await?;
        let mut directives = Vec::new();
        let superseded_by = |name: &str| {
            templates.iter().find(|t| t.superseded.split(',').map(str::trim).any(|s| s == name)).map(|t| t.name.clone())
        };
        // Certificates the device reports for templates it should no longer hold.
        for r in &report.certificates {
            let assigned = templates
                .iter()
                .any(|t| t.name == r.template && t.autoenroll && t.enroll && principal.may_use_template(&t.name));
            if let Some(by) = superseded_by(&r.template) {
                directives.push(directive(&r.template, Action::Remove, None, format!("superseded by {by}")));
            } else if !assigned {
                directives.push(directive(&r.template, Action::Remove, None, "template no longer assigned".into()));
            }
        }
        for t in templates.iter().filter(|t| t.autoenroll && t.enroll && principal.may_use_template(&t.name)) {
            if superseded_by(&t.name).is_some() {
                continue;
            }
            let reported: Vec<&HeldCertificate> = report.certificates.iter().filter(|c| c.template == t.name).collect();
            let current = held.iter().find(|c| {
                c.template == t.name
                    && c.state == "issued"
                    && c.not_after > now.0
                    && reported
                        .iter()
                        .any(|r| c.thumbprint.as_deref().is_some_and(|tp| tp.eq_ignore_ascii_case(&r.thumbprint)))
            });
            let ours_unseen = held
                .iter()
                .any(|c| c.template == t.name && c.state == "issued" && c.not_after > now.0 && current.is_none());
            let d = match current {
                Some(c) if c.template_major < t.major => Directive {
                    serial: Some(c.serial.clone()),
                    ..directive(
                        &t.name,
                        Action::Reenroll,
                        None,
                        format!("template {} is now version {}", t.name, t.major),
                    )
                },
                Some(c) => {
                    let start = c.renew_after.unwrap_or(c.not_after);
                    let action = if now.0 >= start { Action::Renew } else { Action::Ok };
                    Directive {
                        template: t.name.clone(),
                        action,
                        serial: Some(c.serial.clone()),
                        window_start: Some(start),
                        window_end: Some(c.not_after),
                        reason: if action == Action::Renew { "renewal window open".into() } else { "current".into() },
                        challenge: None,
                    }
                }
                None if ours_unseen => directive(
                    &t.name,
                    Action::Reenroll,
                    None,
                    "the device does not hold the certificate issued to it".into(),
                ),
                None if !reported.is_empty() => directive(
                    &t.name,
                    Action::Reenroll,
                    None,
                    "the certificate held is not current (revoked, replaced or unknown)".into(),
                ),
                None => directive(&t.name, Action::Enroll, None, "no certificate".into()),
            };
            let mut d = d;
            if report.scep && matches!(d.action, Action::Enroll | Action::Reenroll) {
                // Handed out just in time: bound to this device and template, one hour.
                let spec = super::scep::ChallengeSpec {
                    device: device.name.clone(),
                    template: t.name.clone(),
                    ttl_secs: 3600,
                    ..Default::default()
                };
                d.challenge = Some(self.create_challenge(&spec).await?.0);
            }
            directives.push(d);
        }
        let summary: Vec<String> = directives.iter().map(|d| format!("{}={:?}", d.template, d.action)).collect();
        self.audit(&principal.actor(), "checkin", &device.name, "ok", &summary.join(" ")).await;
        Ok(CheckinAnswer { device: device.name, blocked: false, directives })
    }
}

fn directive(template: &str, action: Action, serial: Option<String>, reason: String) -> Directive {
    Directive {
        template: template.to_string(),
        action,
        serial,
        window_start: None,
        window_end: None,
        reason,
        challenge: None,
    }
}

/// The thumbprint a device reports for a certificate (what the inventory stores).
pub fn thumbprint_of(der: &[u8]) -> String {
    Thumbprint::of_der(der).as_str().to_string()
}
