//! Check-in: a device reports what it holds; the server gathers its own view of each template
//! (the certificate it issued, its state, its renewal time, the template's version) into a
//! `renewal::Input` and answers with `renewal::decide` — the same rule the agent applies, on the
//! server's facts. The answer carries those facts too (renewal time, window), so the agent
//! renews at the server's load-spread time. A certificate the server issued that the device
//! cannot show makes the decision "enroll (lost)"; certificates of superseded or withdrawn
//! templates are to be removed.
use super::auth::Principal;
use super::{Ra, RaError};
use autoenroll_core::model::{AuditOutcome, CertState, KeyFamily, RevocationReason, Template};
use autoenroll_core::renewal::{self, Decision, Held, Input, TemplatePolicy};
use autoenroll_core::{Refusal, Thumbprint, UnixTime};
use autoenroll_store::Certificate;

/// What the device says it holds.
#[derive(Debug, Clone, Default)]
pub struct CheckinReport {
    /// (template, SHA-1 thumbprint in hex) of each certificate held.
    pub certificates: Vec<(String, String)>,
    /// The last error per template, as the device saw it.
    pub errors: Vec<(String, String)>,
    /// The device enrolls over SCEP: enroll directives then carry a fresh one-time challenge.
    pub scep: bool,
}

/// The most entries of each list in a report the server reads.
pub const MAX_REPORTED: usize = 1000;
/// Per check-in: errors kept (for templates that are the device's), and characters of each.
pub const MAX_ERRORS_KEPT: usize = 32;
pub const MAX_ERROR_CHARS: usize = 500;

/// What the server decided for one template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `renewal::decide` on the server's view.
    Decided(Decision),
    /// Take the certificate out of service: superseded by that template, or (None) no longer
    /// assigned.
    Remove { superseded_by: Option<String> },
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Decided(Decision::Keep { recheck_at }) => write!(f, "keep until {recheck_at}"),
            Verdict::Decided(Decision::Enroll(r)) => write!(f, "enroll ({r:?})"),
            Verdict::Decided(Decision::Renew(r)) => write!(f, "renew ({r:?})"),
            Verdict::Decided(Decision::Retrieve { request_id }) => write!(f, "collect request {request_id}"),
            Verdict::Decided(Decision::Wait { until, .. }) => write!(f, "wait until {until}"),
            Verdict::Remove { superseded_by: Some(by) } => write!(f, "remove (superseded by {by})"),
            Verdict::Remove { superseded_by: None } => write!(f, "remove (not assigned)"),
        }
    }
}

/// The certificate a decision is about, as the server sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldView {
    pub serial: String,
    /// The server's renewal time (load-spread slot, or earlier when an administrator asked).
    pub renew_at: Option<UnixTime>,
    /// When the template's renewal window opens, and when the certificate expires.
    pub window_opens: UnixTime,
    pub not_after: UnixTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub template: String,
    pub verdict: Verdict,
    pub certificate: Option<HeldView>,
    /// For SCEP devices told to enroll: a one-time challenge bound to this device and template.
    pub challenge: Option<String>,
}

#[derive(Debug, Clone)]
pub struct CheckinAnswer {
    pub device: String,
    pub blocked: bool,
    pub directives: Vec<Directive>,
}

/// The server's view of one assigned template for one device.
fn view(
    t: &Template,
    held: &[Certificate],
    reported: &[&str],
    supersedes_held: bool,
    now: UnixTime,
) -> (Input, Option<HeldView>) {
    let ours: Vec<&Certificate> = held.iter().filter(|c| c.template == t.name).collect();
    let current = |c: &Certificate| c.state == CertState::Issued && c.not_after > now;
    let is_shown = |c: &&Certificate| {
        c.thumbprint.as_deref().is_some_and(|tp| reported.iter().any(|r| r.eq_ignore_ascii_case(tp)))
    };
    // Of several shown (an agent mid-swap), the current one counts.
    let shown = ours.iter().copied().filter(is_shown).max_by_key(|c| (current(c), c.created_at));
    // A current certificate was issued for the template but the device shows none (it shows
    // nothing, one we do not know, or one already renewed away): it has lost it (reinstalled,
    // restored from an old backup). A current one shown is what counts, whatever else was
    // issued (an answer a crashed client never received is not "lost" once it renewed again).
    // The newest certificate that renewed `c` (a successor replaced before use is older).
    let successor = |c: &Certificate| {
        held.iter().filter(|n| n.previous_serial.as_deref() == Some(c.serial.as_str())).max_by_key(|n| n.created_at)
    };
    // The device shows a certificate we renewed, and the successor never went into service:
    // the renewal was interrupted (the answer never arrived). Renewing the shown one again
    // hands out that successor (same key) or replaces it.
    let interrupted = shown.is_some_and(|c| {
        c.state == CertState::Renewed && successor(c).is_some_and(|n| current(n) && n.first_used_at.is_none())
    });
    let lost = !interrupted && !shown.is_some_and(current) && ours.iter().any(|c| current(c));
    // A renewed certificate whose successor an administrator revoked is as good as revoked:
    // renewing it is refused. (A successor replaced before use is revoked as superseded.)
    let revoked = |c: &Certificate| {
        c.state == CertState::Revoked
            || (c.state == CertState::Renewed
                && successor(c).is_some_and(|n| {
                    n.state == CertState::Revoked && n.revocation_reason != Some(RevocationReason::Superseded)
                }))
    };
    let rule = t.renewal_rule();
    let held_fact = shown.map(|c| Held {
        not_before: c.not_before,
        not_after: c.not_after,
        template: Some(autoenroll_core::TemplateRef {
            oid: t.oid.to_string(),
            major: c.template_major,
            minor: c.template_minor,
        }),
        revoked: revoked(c),
    });
    let input = Input {
        now,
        held: held_fact.clone(),
        policy: TemplatePolicy { template: t.template_ref(), rule },
        pending: interrupted.then_some(renewal::Pending::Interrupted),
        failure: None,
        forced: false,
        supersedes_held,
        scheduled: shown.filter(|c| c.state == CertState::Issued).and_then(|c| c.renew_after),
        lost,
    };
    let held_view = shown.zip(held_fact).map(|(c, h)| HeldView {
        serial: c.serial.clone(),
        renew_at: input.scheduled,
        window_opens: rule.due_at(&h),
        not_after: c.not_after,
    });
    (input, held_view)
}

impl Ra {
    pub async fn checkin(&self, principal: &Principal, report: &CheckinReport) -> Result<CheckinAnswer, RaError> {
        if report.certificates.len() > MAX_REPORTED || report.errors.len() > MAX_REPORTED {
            return Err(Refusal::TooLarge { what: "check-in report" }.into());
        }
        // A bootstrap token pays for one issuance; it does not buy check-ins (each could hand
        // out fresh SCEP challenges). A device checks in with its certificate.
        if principal.token_to_spend().is_some() {
            return Err(Refusal::TokenNotAccepted { what: "check-in" }.into());
        }
        let now = self.now();
        let device = self.store.touch_device(&principal.device, now).await?;
        if device.is_blocked() {
            self.audit(&principal.actor(), "checkin", &device.name, AuditOutcome::Refused, "DeviceBlocked").await;
            return Ok(CheckinAnswer { device: device.name, blocked: true, directives: vec![] });
        }
        let all = self.store.templates().await?;
        self.report_invalid(&all.invalid);
        let templates = all.valid;
        let held = self.store.device_certificates(device.id).await?;
        let groups = self.store.device_groups(device.id).await?;
        // A template is the device's to hold when it is in autoenrollment and either the device
        // holds a certificate of it (renewal is proven by that certificate, whoever enrolled
        // it) or the asker may enroll it.
        let holds = |t: &Template| held.iter().any(|c| c.template == t.name && c.state.is_good() && c.not_after > now);
        let assigned = |t: &Template| t.enroll && t.autoenroll && (holds(t) || principal.may_enroll(t, &groups));
        // Errors are kept only for templates that are the device's (a device could otherwise
        // store any number of rows under invented names), one short line each.
        let errors: Vec<(String, String)> = report
            .errors
            .iter()
            .filter(|(name, _)| templates.iter().any(|t| t.name == **name && assigned(t)))
            .take(MAX_ERRORS_KEPT)
            .map(|(t, e)| (format!("error:{t}"), e.chars().take(MAX_ERROR_CHARS).collect::<String>()))
            .collect();
        if !errors.is_empty() {
            self.store.set_device_attributes(device.id, &errors, now).await?;
        }
        // A successor the device shows is in service: its predecessor may go.
        for c in held.iter().filter(|c| c.state == CertState::Issued) {
            let shown = c
                .thumbprint
                .as_deref()
                .is_some_and(|tp| report.certificates.iter().any(|(_, reported)| reported.eq_ignore_ascii_case(tp)));
            if shown {
                self.note_use(c).await?;
            }
        }
        let superseded_by =
            |name: &str| templates.iter().find(|t| assigned(t) && t.supersedes.iter().any(|s| s == name));
        let mut directives: Vec<Directive> = Vec::new();
        // Certificates the device reports for templates it should no longer hold. A template
        // stored but misconfigured is left alone (an administrator's typo must not make every
        // device delete its certificate).
        for (template, _) in &report.certificates {
            if all.invalid.iter().any(|i| i.name == *template) || directives.iter().any(|d| d.template == *template) {
                continue;
            }
            let remove = match superseded_by(template) {
                Some(by) => Some(Some(by.name.clone())),
                None if !templates.iter().any(|t| t.name == *template && assigned(t)) => Some(None),
                None => None,
            };
            if let Some(superseded_by) = remove {
                directives.push(Directive {
                    template: template.clone(),
                    verdict: Verdict::Remove { superseded_by },
                    certificate: None,
                    challenge: None,
                });
            }
        }
        for t in templates.iter().filter(|t| assigned(t) && superseded_by(&t.name).is_none()) {
            let reported: Vec<&str> =
                report.certificates.iter().filter(|(n, _)| *n == t.name).map(|(_, tp)| tp.as_str()).collect();
            let supersedes_held = report.certificates.iter().any(|(n, _)| t.supersedes.contains(n));
            let (input, certificate) = view(t, &held, &reported, supersedes_held, now);
            let decision = renewal::decide(&input);
            let challenge = match decision {
                // A challenge is an enrollment: only for a template the asker may enroll (its
                // grants), that the device holds no good certificate of (a lost one is not
                // replaced by a second live one), with a current certificate (one already renewed
                // may report), and that takes RSA keys (SCEP signs with the request's key).
                Decision::Enroll(_)
                    if report.scep
                        && principal.may_request()
                        && principal.may_enroll(t, &groups)
                        && !holds(t)
                        && t.key.accept.contains(&KeyFamily::Rsa) =>
                {
                    // Handed out just in time: bound to this device and template, one hour.
                    let spec = super::scep::ChallengeSpec {
                        device: device.name.clone(),
                        template: t.name.clone(),
                        ttl_secs: 3600,
                        ..Default::default()
                    };
                    Some(self.make_challenge("server", &spec, false).await?.0)
                }
                _ => None,
            };
            directives.push(Directive {
                template: t.name.clone(),
                verdict: Verdict::Decided(decision),
                certificate,
                challenge,
            });
        }
        let summary: Vec<String> = directives.iter().map(|d| format!("{}: {}", d.template, d.verdict)).collect();
        self.audit(&principal.actor(), "checkin", &device.name, AuditOutcome::Ok, &summary.join("; ")).await;
        Ok(CheckinAnswer { device: device.name, blocked: false, directives })
    }
}

/// The thumbprint a device reports for a certificate (what the inventory stores).
pub fn thumbprint_of(der: &[u8]) -> String {
    Thumbprint::of_der(der).as_str().to_string()
}
