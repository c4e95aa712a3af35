//! The renewal decision, one implementation for the agent and the server.
//!
//! Windows autoenrollment rule: renewal starts when 80 % of the lifetime has passed or when the
//! template's renewal period is reached, whichever window is smaller:
//! `renew_at = not_after - min(renewal_period, lifetime / 5)`. See docs/renewal-decision.md.
use crate::model::{TemplateRef, UnixTime};

/// What the holder has now for one template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub not_before: UnixTime,
    pub not_after: UnixTime,
    pub template: Option<TemplateRef>,
}

/// What policy says about the template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplatePolicy {
    pub template: TemplateRef,
    pub renewal_period_secs: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub now: UnixTime,
    pub held: Option<Held>,
    pub policy: TemplatePolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Missing,
    TemplateBumped,
    NearingExpiry,
    Expired,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Keep { recheck_at: UnixTime },
    Enroll(Reason),
    Renew(Reason),
}

/// The moment renewal becomes due for a certificate.
pub fn renew_at(not_before: UnixTime, not_after: UnixTime, renewal_period_secs: i64) -> UnixTime {
    let lifetime = (not_after.0 - not_before.0).max(0);
    let window = renewal_period_secs.max(0).min(lifetime / 5);
    not_after.minus_secs(window)
}

pub fn decide(input: &Input) -> Decision {
    let Some(held) = &input.held else {
        return Decision::Enroll(Reason::Missing);
    };
    let bumped = match &held.template {
        Some(t) => t.oid == input.policy.template.oid && t.major < input.policy.template.major,
        None => false,
    };
    if bumped {
        return Decision::Enroll(Reason::TemplateBumped);
    }
    if input.now >= held.not_after {
        return Decision::Enroll(Reason::Expired);
    }
    let due = renew_at(held.not_before, held.not_after, input.policy.renewal_period_secs);
    if input.now >= due {
        Decision::Renew(Reason::NearingExpiry)
    } else {
        Decision::Keep { recheck_at: due }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            }),
            policy: TemplatePolicy { template: tref(1), renewal_period_secs: period_days * DAY },
        }
    }

    #[test]
    fn one_year_six_weeks_renews_42_days_before_expiry() {
        assert_eq!(renew_at(UnixTime(0), UnixTime(365 * DAY), 42 * DAY), UnixTime(323 * DAY));
        assert_eq!(decide(&input(322, 365, 42)), Decision::Keep { recheck_at: UnixTime(323 * DAY) });
        assert_eq!(decide(&input(323, 365, 42)), Decision::Renew(Reason::NearingExpiry));
    }

    #[test]
    fn thirty_days_six_weeks_renews_at_day_24() {
        assert_eq!(renew_at(UnixTime(0), UnixTime(30 * DAY), 42 * DAY), UnixTime(24 * DAY));
        assert_eq!(decide(&input(23, 30, 42)), Decision::Keep { recheck_at: UnixTime(24 * DAY) });
        assert_eq!(decide(&input(24, 30, 42)), Decision::Renew(Reason::NearingExpiry));
    }

    #[test]
    fn missing_expired_and_bumped() {
        let mut i = input(1, 365, 42);
        i.held = None;
        assert_eq!(decide(&i), Decision::Enroll(Reason::Missing));
        assert_eq!(decide(&input(365, 365, 42)), Decision::Enroll(Reason::Expired));
        let mut i = input(1, 365, 42);
        i.policy.template.major = 2;
        assert_eq!(decide(&i), Decision::Enroll(Reason::TemplateBumped));
        // A minor bump does not re-enroll.
        let mut i = input(1, 365, 42);
        i.policy.template.minor = 7;
        assert!(matches!(decide(&i), Decision::Keep { .. }));
    }
}
