//! Fleet-wide figures for the console and the metrics: counted in SQL (GROUP BY), so that a
//! fleet of 100,000 certificates costs a few aggregate scans, never a transfer of every row.
use crate::{parse, Result, Store};
use autoenroll_core::model::{AuditOutcome, CertState};
use autoenroll_core::UnixTime;

/// One week, the expiry timeline's bucket.
pub const WEEK_SECS: i64 = 7 * 86_400;
/// One day, the renewal forecast's bucket.
pub const DAY_SECS: i64 = 86_400;

/// What the fleet looks like at `now`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetSummary {
    pub devices: i64,
    pub blocked_devices: i64,
    /// Certificates by template and state, issued ones past their expiry apart.
    pub by_template_state: Vec<StateCount>,
    /// Audit events of the last 24 hours by action and outcome.
    pub last_day: Vec<ActionCount>,
    /// Issued, unexpired certificates by template and the week (0 = the next 7 days) in which
    /// they expire, for the next `weeks` weeks.
    pub expiring_by_week: Vec<(String, i64, i64)>,
    /// Issued, unexpired certificates by the day (0 = the next 24 hours) their server-side
    /// renewal time falls in, for the next `days` days; overdue ones are in `renewal_overdue`.
    pub renewals_by_day: Vec<(i64, i64)>,
    pub renewal_overdue: i64,
    /// Issued, unexpired certificates expiring within 7 and 30 days.
    pub expiring_7d: i64,
    pub expiring_30d: i64,
    /// Requests waiting for an administrator.
    pub pending_requests: i64,
    /// Devices holding a stuck certificate (as `stuck` lists them by default), counted once each.
    pub stuck_devices: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateCount {
    pub template: String,
    pub state: CertState,
    /// Issued, but past its expiry.
    pub expired: bool,
    pub count: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionCount {
    pub action: String,
    pub outcome: AuditOutcome,
    pub count: i64,
}

impl Store {
    /// The fleet at `now`: expiry timeline over `weeks` weeks, renewal forecast over `days` days.
    pub async fn fleet_summary(&self, now: UnixTime, weeks: i64, days: i64) -> Result<FleetSummary> {
        let (devices, blocked_devices): (i64, i64) =
            sqlx::query_as("SELECT COUNT(*), COALESCE(SUM(CASE WHEN blocked <> 0 THEN 1 ELSE 0 END), 0) FROM devices")
                .fetch_one(&self.pool)
                .await?;
        let states: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT template, state, CASE WHEN state = 'issued' AND not_after <= $1 THEN 1 ELSE 0 END AS expired, \
             COUNT(*) FROM certificates GROUP BY template, state, expired ORDER BY template, state, expired",
        )
        .bind(now.0)
        .fetch_all(&self.pool)
        .await?;
        let by_template_state = states
            .into_iter()
            .map(|(template, state, expired, count)| {
                Ok(StateCount {
                    state: parse("certificate state", &template, &state)?,
                    template,
                    expired: expired != 0,
                    count,
                })
            })
            .collect::<Result<_>>()?;
        let actions: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT action, outcome, COUNT(*) FROM audit_events WHERE at > $1 \
             GROUP BY action, outcome ORDER BY action, outcome",
        )
        .bind(now.0 - DAY_SECS)
        .fetch_all(&self.pool)
        .await?;
        let last_day = actions
            .into_iter()
            .map(|(action, outcome, count)| {
                Ok(ActionCount { outcome: parse("audit outcome", &action, &outcome)?, action, count })
            })
            .collect::<Result<_>>()?;
        let expiring_by_week: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT template, (not_after - $1) / $2 AS week, COUNT(*) FROM certificates \
             WHERE state = 'issued' AND not_after > $1 AND not_after <= $3 \
             GROUP BY template, week ORDER BY template, week",
        )
        .bind(now.0)
        .bind(WEEK_SECS)
        .bind(now.0 + weeks * WEEK_SECS)
        .fetch_all(&self.pool)
        .await?;
        let renewals_by_day: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT (renew_after - $1) / $2 AS day, COUNT(*) FROM certificates \
             WHERE state = 'issued' AND not_after > $1 AND renew_after >= $1 AND renew_after < $3 \
             GROUP BY day ORDER BY day",
        )
        .bind(now.0)
        .bind(DAY_SECS)
        .bind(now.0 + days * DAY_SECS)
        .fetch_all(&self.pool)
        .await?;
        let (renewal_overdue, expiring_7d, expiring_30d): (i64, i64, i64) = sqlx::query_as(
            "SELECT COALESCE(SUM(CASE WHEN renew_after < $1 THEN 1 ELSE 0 END), 0), \
             COALESCE(SUM(CASE WHEN not_after <= $1 + 604800 THEN 1 ELSE 0 END), 0), \
             COALESCE(SUM(CASE WHEN not_after <= $1 + 2592000 THEN 1 ELSE 0 END), 0) \
             FROM certificates WHERE state = 'issued' AND not_after > $1",
        )
        .bind(now.0)
        .fetch_one(&self.pool)
        .await?;
        let (stuck_devices,): (i64,) = sqlx::query_as(concat!(
            "SELECT COUNT(DISTINCT c.device_id) FROM certificates c WHERE ",
            crate::issuance::stuck_where!()
        ))
        .bind(now.0)
        .bind(-1_i64)
        .fetch_one(&self.pool)
        .await?;
        let (pending_requests,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM requests WHERE status = 'pending'").fetch_one(&self.pool).await?;
        Ok(FleetSummary {
            devices,
            blocked_devices,
            by_template_state,
            last_day,
            expiring_by_week,
            renewals_by_day,
            renewal_overdue,
            expiring_7d,
            expiring_30d,
            pending_requests,
            stuck_devices,
        })
    }
}
