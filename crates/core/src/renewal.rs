//! The renewal decision, one implementation for the agent and the server's inventory (check-in).
//! Pure: `now` and everything else come in as arguments; jitter stays in the scheduler. See
//! docs/renewal-decision.md.
use crate::model::{TemplateRef, UnixTime};

/// What the holder has now for one template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub not_before: UnixTime,
    pub not_after: UnixTime,
    pub template: Option<TemplateRef>,
    /// Known revoked (the server says so; the agent learns it at check-in).
    pub revoked: bool,
}

/// When renewal is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewalRule {
    /// Windows autoenrollment: at `not_after - min(renewal_period, lifetime / 5)`; failed
    /// attempts back off exponentially.
    Windows { renewal_period_secs: i64 },
    /// Windows MDM (CertificateStore CSP): `renew_period` before expiry, retried every
    /// `retry_interval` until expiry.
    Mdm { renew_period_secs: i64, retry_interval_secs: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplatePolicy {
    pub template: TemplateRef,
    pub rule: RenewalRule,
}

/// Local state of an unfinished attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// The server answered "pending" with this request id, and asked not to be asked again
    /// before `not_before` (EST's Retry-After), if it said.
    Submitted { request_id: String, not_before: Option<UnixTime> },
    /// A key was generated and maybe submitted, but no answer was kept (e.g. a crash).
    Interrupted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub count: u32,
    /// When the scheduler decided to try again (jitter already applied).
    pub retry_at: UnixTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub now: UnixTime,
    pub held: Option<Held>,
    pub policy: TemplatePolicy,
    pub pending: Option<Pending>,
    pub failure: Option<Failure>,
    /// `renew --now`: renew regardless of the window and backoff.
    pub forced: bool,
    /// This template supersedes one the holder has: enrolling it replaces that certificate.
    pub supersedes_held: bool,
    /// The server's renewal time for the held certificate (its load-spread slot, or earlier
    /// when an administrator asked a cohort to renew now). None: the local rule alone.
    pub scheduled: Option<UnixTime>,
    /// The server issued this holder a newer certificate for the template that the holder does
    /// not have (lost in a reinstall or restore): the held one cannot be renewed into it.
    pub lost: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Nothing held.
    Missing,
    /// This template replaces one the holder has.
    Superseded,
    /// The template's major version went up.
    TemplateBumped,
    /// The renewal time came (the rule's window, or the server's slot inside it).
    NearingExpiry,
    Expired,
    Revoked,
    /// A previous attempt left a key but no answer.
    Interrupted,
    /// `renew --now` on the holder.
    Requested,
    /// The server moved the renewal time before the window ("renew now" for a cohort).
    ServerRequested,
    /// The server issued a newer certificate the holder does not have.
    Lost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitReason {
    Backoff,
    /// A held request's server asked to be asked again later.
    ServerAsked,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do until `recheck_at`.
    Keep { recheck_at: UnixTime },
    /// Get a certificate with fresh credentials (none held, expired, revoked).
    Enroll(Reason),
    /// Replace the held certificate, proving possession of it (signed request or client TLS).
    Renew(Reason),
    /// Ask the server for the outcome of a pending request.
    Retrieve { request_id: String },
    /// Due, but a recent attempt failed: try again at `until`.
    Wait { until: UnixTime, why: WaitReason },
}

/// The moment renewal becomes due.
pub fn renew_at(not_before: UnixTime, not_after: UnixTime, renewal_period_secs: i64) -> UnixTime {
    let lifetime = (not_after.0 - not_before.0).max(0);
    let window = renewal_period_secs.max(0).min(lifetime / 5);
    not_after.minus_secs(window)
}

impl RenewalRule {
    pub fn due_at(&self, held: &Held) -> UnixTime {
        match *self {
            RenewalRule::Windows { renewal_period_secs } => {
                renew_at(held.not_before, held.not_after, renewal_period_secs)
            }
            RenewalRule::Mdm { renew_period_secs, .. } => {
                held.not_after.minus_secs(renew_period_secs.max(0)).max(held.not_before)
            }
        }
    }
}

pub fn decide(input: &Input) -> Decision {
    if let Some(Pending::Submitted { request_id, not_before }) = &input.pending {
        return match not_before {
            Some(at) if input.now < *at && !input.forced => Decision::Wait { until: *at, why: WaitReason::ServerAsked },
            _ => Decision::Retrieve { request_id: request_id.clone() },
        };
    }
    let backoff = |d: Decision| match input.failure {
        Some(f) if !input.forced && input.now < f.retry_at => {
            Decision::Wait { until: f.retry_at, why: WaitReason::Backoff }
        }
        _ => d,
    };
    if input.lost {
        // What the holder has (if anything) is not what the server issued last: renewing it
        // would not bring the lost one back.
        return backoff(Decision::Enroll(Reason::Lost));
    }
    let Some(held) = &input.held else {
        let reason = if input.supersedes_held { Reason::Superseded } else { Reason::Missing };
        return backoff(Decision::Enroll(reason));
    };
    if held.revoked {
        return backoff(Decision::Enroll(Reason::Revoked));
    }
    if input.now >= held.not_after {
        return backoff(Decision::Enroll(Reason::Expired));
    }
    let p = &input.policy.template;
    if held.template.as_ref().is_some_and(|t| t.oid == p.oid && t.major < p.major) {
        // Still valid: prove possession of it rather than asking for fresh credentials.
        return backoff(Decision::Renew(Reason::TemplateBumped));
    }
    if input.forced {
        return Decision::Renew(Reason::Requested);
    }
    if input.pending == Some(Pending::Interrupted) {
        return backoff(Decision::Renew(Reason::Interrupted));
    }
    let window_opens = input.policy.rule.due_at(held);
    let due = renewal_time(window_opens, held.not_after, input.scheduled);
    if input.now < due {
        Decision::Keep { recheck_at: due }
    } else if due < window_opens {
        backoff(Decision::Renew(Reason::ServerRequested))
    } else {
        backoff(Decision::Renew(Reason::NearingExpiry))
    }
}

/// When a held certificate renews: the server's time when it gave one, else the moment the
/// window opens. A server time later than the middle of the window is not followed past it (the
/// second half is left for retries, whatever a server says).
pub fn renewal_time(window_opens: UnixTime, not_after: UnixTime, scheduled: Option<UnixTime>) -> UnixTime {
    match scheduled {
        Some(at) => at.min(window_opens.plus_secs((not_after.0 - window_opens.0).max(0) / 2)),
        None => window_opens,
    }
}

/// Retry pacing for the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First retry delay, and the floor of the half-remaining-lifetime cap.
    pub min_secs: i64,
    pub max_secs: i64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { min_secs: 300, max_secs: 6 * 3600 }
    }
}

/// When to try again after the `failures`-th consecutive failure. `jitter` in [0, 1) spreads
/// retries by ±10 %. The result is never later than half the remaining lifetime (floor
/// `min_secs`), so a certificate gets several more tries before it expires.
pub fn next_retry(
    now: UnixTime,
    failures: u32,
    not_after: Option<UnixTime>,
    rule: &RenewalRule,
    cfg: Backoff,
    jitter: f64,
) -> UnixTime {
    let min = cfg.min_secs.max(1);
    let delay = match *rule {
        RenewalRule::Mdm { retry_interval_secs, .. } => retry_interval_secs.max(1),
        RenewalRule::Windows { .. } => {
            let max = cfg.max_secs.max(min);
            let exp = min.saturating_mul(1i64 << failures.saturating_sub(1).min(30)).min(max);
            let j = jitter.clamp(0.0, 1.0);
            ((exp as f64 * (0.9 + 0.2 * j)) as i64).clamp(1, max)
        }
    };
    let delay = match not_after {
        Some(na) if na > now => delay.min(((na.0 - now.0) / 2).max(min)),
        _ => delay,
    };
    now.plus_secs(delay.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DAY: i64 = 86_400;

    fn tref(major: u32) -> TemplateRef {
        TemplateRef { oid: "1.3.6.1.4.1.311.21.8.1.1".into(), major, minor: 0 }
    }

    fn input(now_day: i64, lifetime_days: i64, period_days: i64) -> Input {
        Input {
            now: UnixTime(now_day * DAY),
            held: Some(Held {
                not_before: UnixTime(0),
                not_after: UnixTime(lifetime_days * DAY),
                template: Some(tref(1)),
                revoked: false,
            }),
            policy: TemplatePolicy {
                template: tref(1),
                rule: RenewalRule::Windows { renewal_period_secs: period_days * DAY },
            },
            pending: None,
            failure: None,
            forced: false,
            supersedes_held: false,
            scheduled: None,
            lost: false,
        }
    }

    #[test]
    fn table() {
        let mut bumped = input(1, 365, 42);
        bumped.policy.template.major = 2;
        let mut minor = input(1, 365, 42);
        minor.policy.template.minor = 7;
        let mut missing = input(1, 365, 42);
        missing.held = None;
        let mut superseding = missing.clone();
        superseding.supersedes_held = true;
        let mut revoked = input(1, 365, 42);
        revoked.held.as_mut().unwrap().revoked = true;
        let mut forced = input(1, 365, 42);
        forced.forced = true;
        let mut pending = input(1, 365, 42);
        pending.pending = Some(Pending::Submitted { request_id: "17".into(), not_before: None });
        let mut pending_asked_later = input(1, 365, 42);
        pending_asked_later.pending =
            Some(Pending::Submitted { request_id: "17".into(), not_before: Some(UnixTime(DAY + 3600)) });
        let mut pending_asked_earlier = pending_asked_later.clone();
        pending_asked_earlier.now = UnixTime(DAY + 3600);
        let mut interrupted = input(1, 365, 42);
        interrupted.pending = Some(Pending::Interrupted);
        let mut backing_off = input(330, 365, 42);
        backing_off.failure = Some(Failure { count: 2, retry_at: UnixTime(331 * DAY) });
        let mut backoff_over = backing_off.clone();
        backoff_over.now = UnixTime(331 * DAY);
        let mut forced_in_backoff = backing_off.clone();
        forced_in_backoff.forced = true;
        let mut expired_in_backoff = input(400, 365, 42);
        expired_in_backoff.failure = Some(Failure { count: 1, retry_at: UnixTime(401 * DAY) });
        let scheduled = |now_day: i64, at_day: i64| {
            let mut i = input(now_day, 365, 42);
            i.scheduled = Some(UnixTime(at_day * DAY));
            i
        };
        let mut lost = input(1, 365, 42);
        lost.lost = true;
        let mut lost_and_nothing_held = lost.clone();
        lost_and_nothing_held.held = None;
        let mut bumped_and_lost = lost.clone();
        bumped_and_lost.policy.template.major = 2;
        let mdm = |now_day| {
            let mut i = input(now_day, 365, 0);
            i.policy.rule = RenewalRule::Mdm { renew_period_secs: 42 * DAY, retry_interval_secs: 7 * DAY };
            i
        };

        let cases: Vec<(&str, Input, Decision)> = vec![
            // Seed cases: 1-year certificate, 6-week period: 42 days before expiry.
            ("1y/6w day 322 keeps", input(322, 365, 42), Decision::Keep { recheck_at: UnixTime(323 * DAY) }),
            ("1y/6w day 323 renews", input(323, 365, 42), Decision::Renew(Reason::NearingExpiry)),
            // 30-day certificate, 6-week period: the 80 % mark, day 24.
            ("30d/6w day 23 keeps", input(23, 30, 42), Decision::Keep { recheck_at: UnixTime(24 * DAY) }),
            ("30d/6w day 24 renews", input(24, 30, 42), Decision::Renew(Reason::NearingExpiry)),
            ("90d/30d renews at day 72", input(72, 90, 30), Decision::Renew(Reason::NearingExpiry)),
            ("missing enrolls", missing, Decision::Enroll(Reason::Missing)),
            ("superseding template enrolls", superseding, Decision::Enroll(Reason::Superseded)),
            ("expired re-enrolls", input(365, 365, 42), Decision::Enroll(Reason::Expired)),
            ("revoked re-enrolls", revoked, Decision::Enroll(Reason::Revoked)),
            ("major bump renews at once", bumped, Decision::Renew(Reason::TemplateBumped)),
            ("minor bump keeps", minor, Decision::Keep { recheck_at: UnixTime(323 * DAY) }),
            ("forced renews", forced, Decision::Renew(Reason::Requested)),
            ("pending retrieves", pending, Decision::Retrieve { request_id: "17".into() }),
            (
                "pending waits for the server's Retry-After",
                pending_asked_later,
                Decision::Wait { until: UnixTime(DAY + 3600), why: WaitReason::ServerAsked },
            ),
            ("pending retrieves once asked", pending_asked_earlier, Decision::Retrieve { request_id: "17".into() }),
            ("interrupted attempt resumes", interrupted, Decision::Renew(Reason::Interrupted)),
            ("failure backs off", backing_off, Decision::Wait { until: UnixTime(331 * DAY), why: WaitReason::Backoff }),
            ("backoff over", backoff_over, Decision::Renew(Reason::NearingExpiry)),
            ("forced ignores backoff", forced_in_backoff, Decision::Renew(Reason::Requested)),
            (
                "expired in backoff waits",
                expired_in_backoff,
                Decision::Wait { until: UnixTime(401 * DAY), why: WaitReason::Backoff },
            ),
            // The server's slot inside the window is followed; before the window it is a request.
            ("server slot keeps", scheduled(330, 331), Decision::Keep { recheck_at: UnixTime(331 * DAY) }),
            ("server slot renews", scheduled(331, 331), Decision::Renew(Reason::NearingExpiry)),
            ("server moved it to now", scheduled(100, 100), Decision::Renew(Reason::ServerRequested)),
            // A slot past the window's middle (day 344) is not followed past it.
            ("late slot is capped", scheduled(300, 360), Decision::Keep { recheck_at: UnixTime(344 * DAY) }),
            ("lost certificate enrolls", lost, Decision::Enroll(Reason::Lost)),
            ("lost beats a bump", bumped_and_lost, Decision::Enroll(Reason::Lost)),
            ("lost with nothing held", lost_and_nothing_held, Decision::Enroll(Reason::Lost)),
            ("MDM keeps before RenewPeriod", mdm(322), Decision::Keep { recheck_at: UnixTime(323 * DAY) }),
            ("MDM renews at RenewPeriod", mdm(323), Decision::Renew(Reason::NearingExpiry)),
        ];
        for (name, i, want) in cases {
            assert_eq!(decide(&i), want, "{name}");
        }
    }

    #[test]
    fn retry_pacing() {
        let rule = RenewalRule::Windows { renewal_period_secs: 42 * DAY };
        let cfg = Backoff::default();
        let now = UnixTime(1000 * DAY);
        let far = Some(UnixTime(2000 * DAY));
        assert_eq!(next_retry(now, 1, far, &rule, cfg, 0.5), now.plus_secs(300));
        assert_eq!(next_retry(now, 2, far, &rule, cfg, 0.5), now.plus_secs(600));
        assert_eq!(next_retry(now, 30, far, &rule, cfg, 0.5), now.plus_secs(6 * 3600), "capped");
        // Half the remaining lifetime, with a floor.
        assert_eq!(next_retry(now, 30, Some(now.plus_secs(3600)), &rule, cfg, 0.5), now.plus_secs(1800));
        assert_eq!(next_retry(now, 30, Some(now.plus_secs(60)), &rule, cfg, 0.5), now.plus_secs(300));
        let mdm = RenewalRule::Mdm { renew_period_secs: 42 * DAY, retry_interval_secs: 7 * DAY };
        assert_eq!(next_retry(now, 5, far, &mdm, cfg, 0.9), now.plus_secs(7 * DAY));
    }

    proptest! {
        #[test]
        fn keep_always_rechecks_later(now in 0i64..10_000_000, nb in 0i64..10_000_000, life in 1i64..100_000_000, period in 0i64..100_000_000) {
            let mut i = input(0, 1, 1);
            i.now = UnixTime(now);
            i.held = Some(Held { not_before: UnixTime(nb), not_after: UnixTime(nb + life), template: Some(tref(1)), revoked: false });
            i.policy.rule = RenewalRule::Windows { renewal_period_secs: period };
            if let Decision::Keep { recheck_at } = decide(&i) {
                prop_assert!(recheck_at > i.now);
            }
            // Never due before the certificate is valid.
            let due = renew_at(UnixTime(nb), UnixTime(nb + life), period);
            prop_assert!(due >= UnixTime(nb) && due <= UnixTime(nb + life));
            // Once due, it stays due: a later look (nothing else changed) never keeps it again.
            if let Decision::Renew(_) = decide(&i) {
                let mut later = i.clone();
                later.now = UnixTime(now + 1 + (life / 7));
                if later.now < UnixTime(nb + life) {
                    prop_assert!(matches!(decide(&later), Decision::Renew(_)), "{:?}", decide(&later));
                }
            }
        }

        #[test]
        fn the_server_time_is_followed_but_never_past_the_windows_middle(
            now in 0i64..2_000_000, life in 10i64..1_000_000, period in 1i64..1_000_000, at in 0i64..3_000_000
        ) {
            let mut i = input(0, 1, 1);
            i.now = UnixTime(now);
            i.held = Some(Held { not_before: UnixTime(0), not_after: UnixTime(life), template: Some(tref(1)), revoked: false });
            i.policy.rule = RenewalRule::Windows { renewal_period_secs: period };
            i.scheduled = Some(UnixTime(at));
            let opens = renew_at(UnixTime(0), UnixTime(life), period);
            let latest = opens.0 + (life - opens.0) / 2;
            match decide(&i) {
                Decision::Keep { recheck_at } => prop_assert_eq!(recheck_at, UnixTime(at.min(latest))),
                Decision::Renew(Reason::ServerRequested) => prop_assert!(at < opens.0 && now >= at),
                Decision::Renew(Reason::NearingExpiry) => prop_assert!(now >= at.min(latest) && at >= opens.0),
                Decision::Enroll(Reason::Expired) => prop_assert!(now >= life),
                d => prop_assert!(false, "unexpected {:?}", d),
            }
        }

        #[test]
        fn retries_come_soon_enough(now in 0i64..1_000_000_000, remaining in 1i64..100_000_000, failures in 1u32..100, jitter in 0.0f64..1.0) {
            let cfg = Backoff::default();
            let rule = RenewalRule::Windows { renewal_period_secs: 0 };
            let at = next_retry(UnixTime(now), failures, Some(UnixTime(now + remaining)), &rule, cfg, jitter);
            prop_assert!(at > UnixTime(now));
            prop_assert!(at.0 - now <= (remaining / 2).max(cfg.min_secs));
            prop_assert!(at.0 - now <= cfg.max_secs);
        }
    }
}
