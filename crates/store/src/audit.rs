//! The audit log: every decision, who asked, and its outcome.
use crate::{parse, Result, Store};
use autoenroll_core::model::AuditOutcome;
use autoenroll_core::UnixTime;
use sqlx::{Any, FromRow};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub at: UnixTime,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub outcome: AuditOutcome,
    pub detail: String,
}

#[derive(FromRow)]
struct AuditRow {
    at: i64,
    actor: String,
    action: String,
    subject: String,
    outcome: String,
    detail: String,
}

/// Which events `audit_events` returns, newest first; None matches everything.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub action: Option<String>,
    pub subject: Option<String>,
    pub actor: Option<String>,
    pub outcome: Option<AuditOutcome>,
    /// Only events at or after this time.
    pub since: Option<UnixTime>,
    pub limit: i64,
}

pub(crate) const INSERT_AUDIT_SQL: &str =
    "INSERT INTO audit_events (at, actor, action, subject, outcome, detail) VALUES ($1,$2,$3,$4,$5,$6)";

pub(crate) async fn insert_audit<'c>(ex: impl sqlx::Executor<'c, Database = Any>, e: &AuditEvent) -> Result<()> {
    sqlx::query(INSERT_AUDIT_SQL)
        .bind(e.at.0)
        .bind(&e.actor)
        .bind(&e.action)
        .bind(&e.subject)
        .bind(e.outcome.as_str())
        .bind(&e.detail)
        .execute(ex)
        .await?;
    Ok(())
}

impl Store {
    pub async fn audit(&self, e: &AuditEvent) -> Result<()> {
        let _writer = self.writer().await;
        insert_audit(&self.pool, e).await
    }

    /// Events matching the filter, newest first; the filter runs in SQL, before the limit.
    pub async fn audit_events(&self, f: &AuditFilter) -> Result<Vec<AuditEvent>> {
        let rows = sqlx::query_as::<_, AuditRow>(
            "SELECT at, actor, action, subject, outcome, detail FROM audit_events \
             WHERE ($1 = '' OR action = $1) AND ($2 = '' OR subject = $2) AND ($3 = '' OR actor = $3) \
             AND ($4 = '' OR outcome = $4) AND at >= $5 ORDER BY id DESC LIMIT $6",
        )
        .bind(f.action.as_deref().unwrap_or_default())
        .bind(f.subject.as_deref().unwrap_or_default())
        .bind(f.actor.as_deref().unwrap_or_default())
        .bind(f.outcome.map(|o| o.as_str()).unwrap_or_default())
        .bind(f.since.map_or(i64::MIN, |t| t.0))
        .bind(f.limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(AuditEvent {
                    outcome: parse("audit outcome", &r.at.to_string(), &r.outcome)?,
                    at: UnixTime(r.at),
                    actor: r.actor,
                    action: r.action,
                    subject: r.subject,
                    detail: r.detail,
                })
            })
            .collect()
    }
}
