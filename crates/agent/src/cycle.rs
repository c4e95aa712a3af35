//! One enrollment cycle, in four steps per template:
//! - gather: the local facts (held certificate, unfinished attempt, failures) and the server's
//!   view from check-in (its renewal time for the certificate, revoked, lost);
//! - decide: `core::renewal::decide` on those facts (`renewal_input` builds its input; pure);
//! - act: enroll, renew or collect (`attempt`), install atomically, run hooks;
//! - record: success or failure with backoff, and the next wake-up time (pure).
use crate::attempt::{Attempt, Done, Outcome};
use crate::config::AgentConfig;
use crate::credentials::{self, Auth};
use crate::hooks::{self, HookEnv};
use crate::localstore::{
    AttemptKind, Held, LocalStore, PendingAttempt, PolicyTemplateState, ServerView, State, TemplateStatus,
};
use crate::policy::Template;
use crate::transport::Transport;
use crate::AgentError;
use autoenroll_core::clock::Clock;
use autoenroll_core::pki::CertFacts;
use autoenroll_core::renewal::{self, Backoff, Decision, Reason};
use autoenroll_core::{spread, TemplateRef, UnixTime};
use autoenroll_proto::checkin::{self as wire, CheckinAnswer, CheckinReport, HeldCertificate};
use std::sync::Arc;

#[derive(Debug, Default)]
pub struct CycleReport {
    /// (template, serial) newly enrolled (nothing was held).
    pub enrolled: Vec<(String, String)>,
    /// (template, old serial, new serial): renewed by proving possession of the old one.
    pub renewed: Vec<(String, String, String)>,
    /// (template, old serial, new serial): replaced by a new enrollment (the old one was
    /// expired, revoked or lost, or a superseding template was enrolled).
    pub reenrolled: Vec<(String, String, String)>,
    /// Templates whose certificate is valid and not yet due.
    pub kept: Vec<String>,
    /// Templates waiting: backoff after a failure, or a pending request.
    pub waiting: Vec<(String, UnixTime)>,
    /// (template, error).
    pub failed: Vec<(String, String)>,
    pub next_wake: Option<UnixTime>,
}

impl CycleReport {
    /// 0 all good, 1 some template failed.
    pub fn exit_code(&self) -> i32 {
        if self.failed.is_empty() {
            0
        } else {
            1
        }
    }
}

/// Which templates `renew --now` forces.
#[derive(Debug, Clone, Default)]
pub enum Force {
    #[default]
    None,
    All,
    Templates(Vec<String>),
}

impl Force {
    fn covers(&self, template: &str) -> bool {
        match self {
            Force::None => false,
            Force::All => true,
            Force::Templates(t) => t.iter().any(|x| x == template),
        }
    }
}

/// Injected randomness for retry jitter: a number in [0, 1).
pub trait Jitter: Send + Sync {
    fn next(&self) -> f64;
}

/// Where a renewal time came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// The server's slot (from check-in), with this agent's second inside it.
    Server,
    /// The template's rule alone (no server view for this certificate).
    Local,
}

/// When a held certificate renews, and by whose word: the server's slot (plus a stable second
/// inside it, from device and serial) when the server gave one for this certificate, else the
/// template's window. Shown by `agent status`; the same value `renewal_input` schedules with.
pub fn renewal_time(
    held: &CertFacts,
    renewal_secs: i64,
    server: Option<&ServerView>,
    device: &str,
) -> (UnixTime, Schedule) {
    let opens = held.not_after.minus_secs(renewal_period(held, renewal_secs, server));
    match scheduled(held, server, device) {
        Some(at) => (renewal::renewal_time(opens, held.not_after, Some(at)), Schedule::Server),
        None => (opens, Schedule::Local),
    }
}

/// The renewal period that applies to `held`: the server's, when its view of this certificate
/// says where the window opens (an EST label publishes no period), else the template's.
/// Either way at most a fifth of the lifetime (`renewal::renew_at`'s rule).
fn renewal_period(held: &CertFacts, renewal_secs: i64, server: Option<&ServerView>) -> i64 {
    let from_server =
        view_for(server, Some(&held.serial.0)).and_then(|v| v.window_opens).map(|at| held.not_after.0 - at);
    let period = from_server.unwrap_or(renewal_secs);
    held.not_after.0 - renewal::renew_at(held.not_before, held.not_after, period).0
}

/// The server view, if it is about `serial` (the certificate held now, or none); a view about
/// no certificate (the server knows none of what we showed) applies to whatever is held.
fn view_for<'a>(server: Option<&'a ServerView>, serial: Option<&str>) -> Option<&'a ServerView> {
    server.filter(|v| v.serial.is_none() || v.serial.as_deref() == serial)
}

/// The server's renewal time for `held` with this agent's second inside the slot.
fn scheduled(held: &CertFacts, server: Option<&ServerView>, device: &str) -> Option<UnixTime> {
    let at = view_for(server, Some(&held.serial.0))?.renew_at?;
    Some(spread::within_slot(UnixTime(at), format!("{device}/{}", held.serial).as_bytes()))
}

/// What the agent knows locally about one template (the server's view is in `status`).
pub struct Local<'a> {
    pub held: Option<&'a CertFacts>,
    pub pending: Option<&'a PendingAttempt>,
    pub status: &'a TemplateStatus,
    /// `renew --now` names it.
    pub forced: bool,
    /// It supersedes a template the agent holds a certificate of.
    pub supersedes_held: bool,
}

/// The decision's input for one template: local facts and the server's view.
pub fn renewal_input(t: &Template, local: &Local<'_>, device: &str, now: UnixTime) -> renewal::Input {
    let Local { held, pending, status, forced, supersedes_held } = *local;
    let server = view_for(status.server.as_ref(), held.map(|h| h.serial.0.as_str()));
    renewal::Input {
        now,
        held: held.map(|h| renewal::Held {
            not_before: h.not_before,
            not_after: h.not_after,
            template: h.template.clone(),
            revoked: server.is_some_and(|s| s.revoked),
        }),
        policy: renewal::TemplatePolicy {
            template: TemplateRef { oid: t.oid.clone(), major: t.major, minor: t.minor },
            rule: match held {
                Some(h) => renewal::RenewalRule::Windows {
                    renewal_period_secs: renewal_period(h, t.renewal_secs, status.server.as_ref()),
                },
                None => t.renewal_rule(),
            },
        },
        pending: match pending {
            Some(p) => Some(match &p.meta.request_id {
                Some(id) => {
                    renewal::Pending::Submitted { request_id: id.clone(), not_before: p.meta.not_before.map(UnixTime) }
                }
                None => renewal::Pending::Interrupted,
            }),
            // The server renewed what we hold and we never got the answer (no key kept).
            None => server.is_some_and(|s| s.interrupted).then_some(renewal::Pending::Interrupted),
        },
        failure: status.retry_at.map(|r| renewal::Failure { count: status.failures, retry_at: UnixTime(r) }),
        forced: forced && held.is_some(),
        supersedes_held,
        scheduled: held.and_then(|h| scheduled(h, status.server.as_ref(), device)),
        lost: server.is_some_and(|s| s.lost),
    }
}

/// What the check-in answer says, kept per template (and the blocked flag).
pub fn apply_checkin(state: &mut State, answer: &CheckinAnswer, now: UnixTime) {
    state.blocked = answer.blocked;
    state.checked_in_at = Some(now.0);
    for d in &answer.directives {
        if matches!(d.action, wire::Action::Remove | wire::Action::Unknown) {
            continue;
        }
        let status = state.templates.entry(d.template.clone()).or_default();
        let view = ServerView {
            serial: d.serial.clone(),
            renew_at: d.renew_at,
            revoked: d.reason == wire::Reason::Revoked,
            // "Enroll: missing" while we hold one means the server knows none of what we
            // showed (another CA, a restored server): what we hold is not what it issued.
            lost: d.reason == wire::Reason::Lost
                || (d.action == wire::Action::Enroll && d.reason == wire::Reason::Missing),
            interrupted: d.reason == wire::Reason::Interrupted,
            window_opens: d.window_start,
            at: now.0,
            directive: format!("{:?}/{:?}", d.action, d.reason),
        };
        // A new word from the server (a renewal time moved to now, a major bump, a revocation)
        // wins over a local backoff from an earlier failure.
        let changed = |old: &ServerView| {
            (&old.serial, old.renew_at, &old.directive, old.revoked, old.lost)
                != (&view.serial, view.renew_at, &view.directive, view.revoked, view.lost)
        };
        let acts = matches!(d.action, wire::Action::Renew | wire::Action::Enroll);
        if acts && status.retry_at.is_some() && status.server.as_ref().is_none_or(changed) {
            status.retry_at = None;
            status.failures = 0;
        }
        status.server = Some(view);
    }
}

/// Records a failed attempt; returns when to try again.
pub fn record_failure(
    status: &mut TemplateStatus,
    error: &str,
    now: UnixTime,
    not_after: Option<UnixTime>,
    rule: &renewal::RenewalRule,
    backoff: Backoff,
    jitter: f64,
) -> UnixTime {
    status.failures = status.failures.saturating_add(1);
    let retry = renewal::next_retry(now, status.failures, not_after, rule, backoff, jitter);
    status.retry_at = Some(retry.0);
    status.last_error = Some(error.to_string());
    retry
}

/// Records a successful install: failures and the server view of the old certificate go.
pub fn record_success(status: &mut TemplateStatus, now: UnixTime) {
    status.last_success = Some(now.0);
    status.last_error = None;
    status.failures = 0;
    status.retry_at = None;
    status.server = None;
}

/// Reports what this device holds and learns the server's view; false when check-in is off or
/// nobody answered (the view learned last time still counts then).
async fn checkin(
    cfg: &AgentConfig,
    transport: &Transport<'_>,
    store: &LocalStore,
    state: &mut State,
    templates: &[Template],
    now: UnixTime,
) -> bool {
    if !cfg.checkin {
        return false;
    }
    // The device speaks for itself with its certificate; a bootstrap token pays for one
    // issuance and does not check in.
    let Some(identity) = store.client_identity(now).ok().flatten() else {
        return false;
    };
    let mut report = CheckinReport::default();
    for t in templates {
        if let Ok(Some(h)) = store.current(&t.name) {
            report.certificates.push(HeldCertificate {
                template: t.name.clone(),
                thumbprint: autoenroll_core::Thumbprint::of_der(&h.cert_der).0,
            });
        }
        if let Some(e) = state.templates.get(&t.name).and_then(|s| s.last_error.clone()) {
            report.errors.insert(t.name.clone(), e);
        }
    }
    match transport.checkin(&report, &identity).await {
        Some(answer) => {
            if answer.blocked {
                tracing::warn!("the server has blocked this device: enrollment and renewal will be refused");
            }
            apply_checkin(state, &answer, now);
            true
        }
        None => false,
    }
}

/// Runs the template's hooks after an install; the outcome goes into the state file.
async fn run_hooks(
    cfg: &AgentConfig,
    store: &LocalStore,
    status: &mut TemplateStatus,
    clock: &dyn Clock,
    t: &Template,
    (event, serial, old_serial): (&str, &str, Option<&str>),
) -> Result<(), AgentError> {
    let overrides = cfg.templates.get(&t.name).cloned().unwrap_or_default();
    for argv in &overrides.hooks {
        let env = HookEnv { template: &t.name, event, serial, old_serial, live_dir: &store.live_dir(&t.name)? };
        status.last_hook = Some(hooks::run(argv, &env, overrides.hook_timeout, clock.now().0).await);
    }
    Ok(())
}

/// Installs a received pair, retires what it supersedes and runs the hooks. Any failure leaves
/// the pair in `pending/` to be installed next cycle, and is this template's alone.
async fn install_and_announce(
    cfg: &AgentConfig,
    store: &LocalStore,
    status: &mut TemplateStatus,
    clock: &dyn Clock,
    t: &Template,
    out: Outcome,
    old_serial: Option<&str>,
) -> Result<CertFacts, AgentError> {
    let now = clock.now();
    store.install(&t.name, &out.key, &out.cert, &out.chain)?;
    store.clear_pending(&t.name)?;
    let facts = CertFacts::parse(&out.cert).map_err(|e| AgentError::Protocol(e.to_string()))?;
    record_success(status, now);
    // Superseded certificates leave service once their replacement is live.
    for s in &t.superseded {
        if store.current(s)?.is_some() {
            tracing::info!(superseded = %s, by = %t.name, "archiving superseded certificate");
            store.retire(s)?;
        }
    }
    let event = if old_serial.is_some() { "renew" } else { "enroll" };
    tracing::info!(template = %t.name, serial = %facts.serial, event, "certificate installed");
    run_hooks(cfg, store, status, clock, t, (event, &facts.serial.0, old_serial)).await?;
    Ok(facts)
}

/// Reads policy and brings every autoenroll template up to date.
pub async fn run_cycle(
    cfg: &AgentConfig,
    clock: Arc<dyn Clock>,
    jitter: &dyn Jitter,
    force: &Force,
) -> Result<CycleReport, AgentError> {
    let store = LocalStore::open(&cfg.state_dir, cfg.archive_keep)?;
    let _lock = store.lock()?;
    let now = clock.now();
    let mut state = store.load_state()?;
    let transport = Transport {
        policy_servers: &cfg.policy_servers,
        roots: cfg.trust_anchor_der()?,
        clock: clock.clone(),
        pool: Default::default(),
    };
    let device = cfg.device_name();
    let mut report = CycleReport::default();

    let policy = match cfg.protocol() {
        // XCEP policy needs a credential: an account, our client certificate or an unspent token.
        crate::config::Protocol::Xcep => {
            let auth = credentials::select(cfg, &store, &state, now)?.ok_or_else(|| {
                AgentError::Config(
                    "no usable credentials: configure credentials.username/password or a bootstrap token \
                     (the token is spent and no valid client certificate is held)"
                        .into(),
                )
            })?;
            transport.fetch_policy(&auth).await?
        }
        // EST's cacerts and csrattrs are public (RFC 7030 sections 4.1 and 4.5); each request
        // below picks its own credential, so a spent token can still collect its held request.
        crate::config::Protocol::Est => transport.fetch_est_policy().await?,
    };
    state.policy_fetched_at = Some(now.0);
    state.next_update_hours = Some(policy.next_update_hours);
    state.policy = policy
        .templates
        .iter()
        .map(|t| PolicyTemplateState {
            name: t.name.clone(),
            oid: t.oid.clone(),
            major: t.major,
            minor: t.minor,
            renewal_secs: t.renewal_secs,
        })
        .collect();
    // Templates another policy template supersedes are not enrolled; their holders move over.
    let superseded: Vec<&str> = policy.templates.iter().flat_map(|t| t.superseded.iter().map(String::as_str)).collect();
    // Client-auth templates first: with a one-time token, the first certificate becomes the
    // credential for the rest.
    let mut templates: Vec<Template> = policy
        .templates
        .iter()
        .filter(|t| t.enroll && t.auto_enroll && !superseded.contains(&t.name.as_str()))
        .cloned()
        .collect();
    templates.sort_by_key(|t| (!t.client_auth, t.name.clone()));
    // `renew --now --template T` acts on T alone (and a T the policy does not have is an error).
    if let Force::Templates(only) = force {
        if let Some(unknown) = only.iter().find(|n| !templates.iter().any(|t| &t.name == *n)) {
            return Err(AgentError::Config(format!("template {unknown} is not in the enrollment policy")));
        }
        templates.retain(|t| only.contains(&t.name));
    }

    // Templates to hold that cannot be acted on this cycle (an EST label whose CSR attributes
    // do not read): each its own failure, looked at again soon; the rest go on.
    for (name, why) in &policy.unavailable {
        let status = state.templates.entry(name.clone()).or_default();
        status.last_error = Some(why.clone());
        report.failed.push((name.clone(), why.clone()));
    }

    // The server's view: its renewal times, revoked or lost certificates, blocked.
    checkin(cfg, &transport, &store, &mut state, &policy.templates, now).await;
    let mut next_wake = now.plus_secs(i64::from(policy.next_update_hours) * 3600);
    let backoff = Backoff { min_secs: cfg.retry_min.as_secs() as i64, max_secs: cfg.retry_max.as_secs() as i64 };
    if !policy.unavailable.is_empty() {
        next_wake = next_wake.min(now.plus_secs(backoff.min_secs));
    }
    let attempt = Attempt { cfg, transport: &transport, store: &store, policy: &policy, now, device: &device };
    // Certificates installed this cycle: their renewal time comes from the server once it has
    // seen them (a second check-in below), else from the template's rule.
    let mut installed: Vec<(&Template, CertFacts)> = Vec::new();

    for t in &templates {
        // 1. Gather.
        let held: Option<Held> = store.current(&t.name).unwrap_or_else(|e| {
            tracing::warn!(template = %t.name, %e, "live certificate unreadable; treating it as missing");
            None
        });
        let pending = match store.pending(&t.name) {
            Ok(p) => p,
            Err(e @ AgentError::Key(_)) => {
                // Its key can never be used: set aside (not deleted), and start afresh.
                tracing::warn!(template = %t.name, %e, "unfinished attempt has an unreadable key; set aside");
                let _ = store.set_aside_pending(&t.name);
                None
            }
            // Unreadable for now (I/O): this template waits; nothing is thrown away.
            Err(e) => {
                report.failed.push((t.name.clone(), e.to_string()));
                continue;
            }
        };
        let status = state.templates.get(&t.name).cloned().unwrap_or_default();
        let supersedes_held = t.superseded.iter().any(|s| store.current(s).ok().flatten().is_some());

        // 2. Decide. A certificate received before a crash only needs installing.
        let decision = match pending.as_ref().and_then(|p| p.received.clone()) {
            Some(received) => Err(received),
            None => {
                let local = Local {
                    held: held.as_ref().map(|h| &h.facts),
                    pending: pending.as_ref(),
                    status: &status,
                    forced: force.covers(&t.name),
                    supersedes_held,
                };
                Ok(renewal::decide(&renewal_input(t, &local, &device, now)))
            }
        };
        let retrieval = matches!(decision, Ok(Decision::Retrieve { .. }));
        let renewal = matches!(decision, Ok(Decision::Renew(_)))
            || pending.as_ref().is_some_and(|p| p.received.is_some() && p.meta.kind == AttemptKind::Renew);

        // 3. Act.
        let result = match decision {
            Err((cert, chain)) => match pending {
                Some(p) => Ok(Done::Issued(Outcome { key: p.key, cert, chain })),
                None => Err(AgentError::Protocol("pending state vanished".into())),
            },
            Ok(Decision::Keep { recheck_at }) => {
                next_wake = next_wake.min(recheck_at);
                report.kept.push(t.name.clone());
                continue;
            }
            Ok(Decision::Wait { until, .. }) => {
                next_wake = next_wake.min(until);
                report.waiting.push((t.name.clone(), until));
                continue;
            }
            Ok(Decision::Retrieve { request_id }) => {
                tracing::info!(template = %t.name, %request_id, "collecting pending request");
                match credentials::for_retrieval(cfg, &store, now) {
                    Ok(Some(auth)) => attempt.retrieve(t, &request_id, &auth).await,
                    Ok(None) => Err(AgentError::Config("no credentials to collect the pending request with".into())),
                    Err(e) => Err(e),
                }
            }
            Ok(Decision::Renew(reason)) => {
                tracing::info!(template = %t.name, ?reason, "renewing");
                match &held {
                    Some(h) => attempt.renew(t, h).await,
                    None => Err(AgentError::Protocol("nothing to renew".into())),
                }
            }
            Ok(Decision::Enroll(reason)) => {
                tracing::info!(template = %t.name, ?reason, "enrolling");
                match credentials::select(cfg, &store, &state, now) {
                    Err(e) => Err(e),
                    Ok(Some(auth)) => {
                        let r = attempt.enroll(t, &auth).await;
                        if let (Ok(_), Auth::Token(token)) = (&r, &auth) {
                            state.spent_tokens.push(credentials::token_hash(token));
                        }
                        r
                    }
                    Ok(None) => Err(AgentError::Config(match reason {
                        Reason::Expired => format!(
                            "the {} certificate has expired and cannot renew itself: re-enrollment needs credentials \
                             (configure an account or a new bootstrap token)",
                            t.name
                        ),
                        _ => "no usable credentials to enroll".to_string(),
                    })),
                }
            }
        };

        // 4. Record.
        let status = state.templates.entry(t.name.clone()).or_default();
        status.last_attempt = Some(now.0);
        match result {
            Ok(Done::Pending { retry_after }) => {
                // Pending at the server: ask again after the first retry delay, or later if the
                // server asked for that (RFC 7030's Retry-After).
                let after = retry_after.map_or(0, |s| i64::try_from(s).unwrap_or(i64::MAX));
                let at = now.plus_secs(after.min(7 * 86_400).max(backoff.min_secs));
                next_wake = next_wake.min(at);
                report.waiting.push((t.name.clone(), at));
            }
            Ok(Done::Issued(out)) => {
                let old_serial = held.as_ref().map(|h| h.facts.serial.0.clone());
                match install_and_announce(cfg, &store, status, clock.as_ref(), t, out, old_serial.as_deref()).await {
                    Ok(facts) => {
                        let new_serial = facts.serial.0.clone();
                        installed.push((t, facts));
                        match old_serial {
                            Some(old) if renewal => report.renewed.push((t.name.clone(), old, new_serial)),
                            Some(old) => report.reenrolled.push((t.name.clone(), old, new_serial)),
                            None => report.enrolled.push((t.name.clone(), new_serial)),
                        }
                    }
                    // The pair stays in pending/ (received): the next cycle installs it.
                    Err(e) => {
                        let not_after = held.as_ref().map(|h| h.facts.not_after);
                        let retry = record_failure(
                            status,
                            &e.to_string(),
                            now,
                            not_after,
                            &t.renewal_rule(),
                            backoff,
                            jitter.next(),
                        );
                        tracing::warn!(template = %t.name, %e, retry = %retry, "could not install the certificate");
                        next_wake = next_wake.min(retry);
                        report.failed.push((t.name.clone(), e.to_string()));
                    }
                }
            }
            // The server said no to a renewal forced by hand (`renew --now`): nothing was
            // issued, so nothing is kept and no backoff is set; the message says how the window
            // is opened.
            Err(AgentError::Refused { code, reason })
                if force.covers(&t.name) && renewal && !crate::transient_refusal(&code) =>
            {
                let _ = store.clear_pending(&t.name);
                let message = format!(
                    "server refused the forced renewal: {reason} ({code}); the server decides when renewal opens: \
                     an administrator can open it now with `autoenroll server cert renew-now --device {device}` \
                     (or give the template a renewal grace)"
                );
                tracing::warn!(template = %t.name, "{message}");
                status.last_error = Some(message.clone());
                report.failed.push((t.name.clone(), message));
            }
            Err(e) => {
                // A refusal means the server recorded nothing for this key: the attempt is over
                // (for a held request, only when its protocol says the refusal ends it).
                if e.is_final_refusal() && (!retrieval || attempt.ends_held_request(&e)) {
                    let _ = store.clear_pending(&t.name);
                }
                let not_after = held.as_ref().map(|h| h.facts.not_after);
                let retry =
                    record_failure(status, &e.to_string(), now, not_after, &t.renewal_rule(), backoff, jitter.next());
                tracing::warn!(template = %t.name, %e, failures = status.failures, retry = %retry, "attempt failed");
                next_wake = next_wake.min(retry);
                report.failed.push((t.name.clone(), e.to_string()));
            }
        }
    }
    if !installed.is_empty() {
        // Tell the server what is held now, and learn when the new certificates renew.
        checkin(cfg, &transport, &store, &mut state, &policy.templates, now).await;
        for (t, facts) in &installed {
            let view = state.templates.get(&t.name).and_then(|s| s.server.as_ref());
            next_wake = next_wake.min(renewal_time(facts, t.renewal_secs, view, &device).0);
        }
    }
    store.save_state(&state)?;
    report.next_wake = Some(next_wake.max(now.plus_secs(1)));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use autoenroll_core::{Serial, Thumbprint};

    const DAY: i64 = 86_400;

    fn template() -> Template {
        Template {
            name: "Machine".into(),
            oid: "1.3.6.1.4.1.311.21.8.1.1".into(),
            major: 1,
            minor: 0,
            validity_secs: 365 * DAY,
            renewal_secs: 42 * DAY,
            enroll: true,
            auto_enroll: true,
            key_algorithm: autoenroll_keys::KeyAlgorithm::P256,
            supplies_subject: false,
            supplies_san: false,
            superseded: vec![],
            client_auth: true,
        }
    }

    fn held(serial: &str) -> CertFacts {
        CertFacts {
            serial: Serial(serial.into()),
            thumbprint: Thumbprint("AB".into()),
            subject: "CN=dev1".into(),
            subject_name: Default::default(),
            subject_cn: Some("dev1".into()),
            dns_names: vec![],
            ip_addrs: vec![],
            issuer: "CN=CA".into(),
            not_before: UnixTime(0),
            not_after: UnixTime(365 * DAY),
            template: Some(TemplateRef { oid: "1.3.6.1.4.1.311.21.8.1.1".into(), major: 1, minor: 0 }),
            template_name: Some("Machine".into()),
            spki_der: vec![],
            ext_key_usage: vec![],
        }
    }

    fn answer(directive: wire::Directive) -> CheckinAnswer {
        CheckinAnswer { device: "dev1".into(), blocked: false, directives: vec![directive] }
    }

    fn directive(
        action: wire::Action,
        reason: wire::Reason,
        serial: Option<&str>,
        renew_at: Option<i64>,
    ) -> wire::Directive {
        wire::Directive {
            template: "Machine".into(),
            action,
            reason,
            detail: String::new(),
            serial: serial.map(str::to_string),
            renew_at,
            window_start: None,
            window_end: None,
            challenge: None,
        }
    }

    fn decide_at(state: &State, held: &CertFacts, now_day: f64) -> Decision {
        let status = state.templates.get("Machine").cloned().unwrap_or_default();
        let now = UnixTime((now_day * DAY as f64) as i64);
        let local = Local { held: Some(held), pending: None, status: &status, forced: false, supersedes_held: false };
        renewal::decide(&renewal_input(&template(), &local, "dev1", now))
    }

    #[test]
    fn the_servers_slot_decides_when_it_is_about_the_held_certificate() {
        let h = held("0a");
        let mut state = State::default();
        // No server view: the window opens on day 323.
        assert_eq!(decide_at(&state, &h, 1.0), Decision::Keep { recheck_at: UnixTime(323 * DAY) });
        // The server places it on day 330: the agent sleeps until then, plus its second.
        let slot = 330 * DAY;
        apply_checkin(
            &mut state,
            &answer(directive(wire::Action::Ok, wire::Reason::Current, Some("0a"), Some(slot))),
            UnixTime(DAY),
        );
        let Decision::Keep { recheck_at } = decide_at(&state, &h, 1.0) else { panic!() };
        assert!((slot..slot + 60).contains(&recheck_at.0), "{recheck_at}");
        assert_eq!(recheck_at, spread::within_slot(UnixTime(slot), b"dev1/0a"));
        assert_eq!(
            renewal_time(&h, 42 * DAY, state.templates["Machine"].server.as_ref(), "dev1"),
            (recheck_at, Schedule::Server)
        );
        // Inside the window but before the slot it still waits; at the slot it renews.
        assert!(matches!(decide_at(&state, &h, 325.0), Decision::Keep { .. }));
        assert_eq!(decide_at(&state, &h, 331.0), Decision::Renew(Reason::NearingExpiry));
        // A view about another certificate (the agent holds a different one) does not count.
        let other = held("0b");
        assert_eq!(decide_at(&state, &other, 1.0), Decision::Keep { recheck_at: UnixTime(323 * DAY) });
        assert_eq!(
            renewal_time(&other, 42 * DAY, state.templates["Machine"].server.as_ref(), "dev1").1,
            Schedule::Local
        );
    }

    #[test]
    fn an_est_label_learns_the_servers_window_from_check_in() {
        // An EST label publishes no renewal period: the local rule is 80 % of the lifetime
        // (window opens day 292), whose middle (day 328.5) would cap the server's slot.
        let mut t = template();
        t.renewal_secs = i64::MAX;
        let h = held("0a");
        let mut state = State::default();
        let status = |s: &State| s.templates.get("Machine").cloned().unwrap_or_default();
        let decide = |s: &State, day: f64| {
            let st = status(s);
            let local = Local { held: Some(&h), pending: None, status: &st, forced: false, supersedes_held: false };
            renewal::decide(&renewal_input(&t, &local, "dev1", UnixTime((day * DAY as f64) as i64)))
        };
        assert_eq!(decide(&state, 1.0), Decision::Keep { recheck_at: UnixTime(292 * DAY) });
        // The server's window opens on day 323 (a 6-week period); its slot is day 340.
        let mut d = directive(wire::Action::Ok, wire::Reason::Current, Some("0a"), Some(340 * DAY));
        d.window_start = Some(323 * DAY);
        apply_checkin(&mut state, &answer(d), UnixTime(DAY));
        let Decision::Keep { recheck_at } = decide(&state, 1.0) else { panic!() };
        assert_eq!(recheck_at, spread::within_slot(UnixTime(340 * DAY), b"dev1/0a"), "the server's slot, not capped");
        let view = status(&state).server;
        assert_eq!(renewal_time(&h, t.renewal_secs, view.as_ref(), "dev1"), (recheck_at, Schedule::Server));
        assert!(matches!(decide(&state, 335.0), Decision::Keep { .. }));
    }

    #[test]
    fn server_facts_become_decisions() {
        let h = held("0a");
        let mut state = State::default();
        // "Renew now" for a cohort: the server time moved to now.
        apply_checkin(
            &mut state,
            &answer(directive(wire::Action::Renew, wire::Reason::ServerRequested, Some("0a"), Some(DAY))),
            UnixTime(DAY),
        );
        assert_eq!(decide_at(&state, &h, 1.1), Decision::Renew(Reason::ServerRequested));
        // Revoked: a new enrollment with fresh credentials.
        apply_checkin(
            &mut state,
            &answer(directive(wire::Action::Enroll, wire::Reason::Revoked, Some("0a"), None)),
            UnixTime(DAY),
        );
        assert_eq!(decide_at(&state, &h, 1.1), Decision::Enroll(Reason::Revoked));
        // Lost: the server issued a newer one this device does not hold.
        apply_checkin(
            &mut state,
            &answer(directive(wire::Action::Enroll, wire::Reason::Lost, Some("0a"), None)),
            UnixTime(DAY),
        );
        assert_eq!(decide_at(&state, &h, 1.1), Decision::Enroll(Reason::Lost));
        // A removal or an unknown action leaves the view as it was.
        apply_checkin(
            &mut state,
            &answer(directive(wire::Action::Remove, wire::Reason::NotAssigned, None, None)),
            UnixTime(DAY),
        );
        assert_eq!(decide_at(&state, &h, 1.1), Decision::Enroll(Reason::Lost));
        // A success clears the view of the old certificate.
        record_success(state.templates.get_mut("Machine").unwrap(), UnixTime(DAY));
        assert_eq!(decide_at(&state, &h, 1.1), Decision::Keep { recheck_at: UnixTime(323 * DAY) });
        // Interrupted: the server renewed what we hold and the answer never came (no key was
        // kept): renew again, now, with what we hold.
        apply_checkin(
            &mut state,
            &answer(directive(wire::Action::Renew, wire::Reason::Interrupted, Some("0a"), None)),
            UnixTime(DAY),
        );
        assert_eq!(decide_at(&state, &h, 1.1), Decision::Renew(Reason::Interrupted));
        // "Enroll: missing" while we hold one: the server knows nothing we showed (another CA,
        // a restored server): what we hold is not what it issued. Such a view names no serial
        // and applies to whatever is held.
        apply_checkin(
            &mut state,
            &answer(directive(wire::Action::Enroll, wire::Reason::Missing, None, None)),
            UnixTime(DAY),
        );
        assert_eq!(decide_at(&state, &h, 1.1), Decision::Enroll(Reason::Lost));
    }

    #[test]
    fn a_template_bump_is_a_renewal_with_the_current_certificate() {
        let mut t = template();
        t.major = 2;
        let h = held("0a");
        let status = TemplateStatus::default();
        let local = Local { held: Some(&h), pending: None, status: &status, forced: false, supersedes_held: false };
        let i = renewal_input(&t, &local, "dev1", UnixTime(DAY));
        assert_eq!(renewal::decide(&i), Decision::Renew(Reason::TemplateBumped));
    }

    #[test]
    fn failures_back_off_and_success_resets() {
        let mut s = TemplateStatus::default();
        let rule = template().renewal_rule();
        let cfg = Backoff { min_secs: 60, max_secs: 3600 };
        let r1 = record_failure(&mut s, "boom", UnixTime(1000), Some(UnixTime(100_000)), &rule, cfg, 0.5);
        let r2 = record_failure(&mut s, "boom", r1, Some(UnixTime(100_000)), &rule, cfg, 0.5);
        assert_eq!((r1.0 - 1000, r2.0 - r1.0, s.failures), (60, 120, 2));
        assert_eq!(s.last_error.as_deref(), Some("boom"));
        record_success(&mut s, UnixTime(5000));
        assert_eq!((s.failures, s.retry_at, s.last_error, s.last_success), (0, None, None, Some(5000)));
    }
}
