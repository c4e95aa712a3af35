//! Failed secret checks counted per key, so that guessing passwords or challenges is slowed
//! down on every replica alike. The RA decides thresholds; counting and locking are single
//! statements here.
use crate::{Result, Store};
use autoenroll_core::UnixTime;
use sqlx::Row;

impl Store {
    /// Until when `key` is locked, if it is locked at `now`.
    pub async fn auth_locked_until(&self, key: &str, now: UnixTime) -> Result<Option<UnixTime>> {
        let row = sqlx::query("SELECT locked_until FROM auth_failures WHERE key = $1 AND locked_until > $2")
            .bind(key)
            .bind(now.0)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get::<i64, _>("locked_until")).transpose()?.map(UnixTime))
    }

    /// Counts a failure for `key` in the window of `window_secs` that began with its first
    /// failure (a failure after the window starts a new one); returns the failures in the
    /// window, this one included.
    pub async fn note_auth_failure(&self, key: &str, now: UnixTime, window_secs: i64) -> Result<i64> {
        let _writer = self.writer().await;
        let row = sqlx::query(
            "INSERT INTO auth_failures (key, failures, window_start, locked_until) VALUES ($1, 1, $2, NULL) \
             ON CONFLICT (key) DO UPDATE SET \
               failures = CASE WHEN auth_failures.window_start <= $3 THEN 1 ELSE auth_failures.failures + 1 END, \
               window_start = CASE WHEN auth_failures.window_start <= $3 THEN $2 ELSE auth_failures.window_start END \
             RETURNING failures",
        )
        .bind(key)
        .bind(now.0)
        .bind(now.0 - window_secs)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<i64, _>("failures")?)
    }

    /// Locks `key` until `until` (and starts its count afresh for after the lock).
    pub async fn lock_auth(&self, key: &str, until: UnixTime) -> Result<()> {
        let _writer = self.writer().await;
        sqlx::query("UPDATE auth_failures SET locked_until = $2, failures = 0, window_start = $2 WHERE key = $1")
            .bind(key)
            .bind(until.0)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Takes back one counted attempt of `key` (an attempt counted before its check, which
    /// then succeeded).
    pub async fn forgive_auth_attempt(&self, key: &str) -> Result<()> {
        let _writer = self.writer().await;
        sqlx::query("UPDATE auth_failures SET failures = failures - 1 WHERE key = $1 AND failures > 0")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forgets the failures of `key` (a successful login, an administrator's unlock).
    pub async fn clear_auth_failures(&self, key: &str) -> Result<bool> {
        let _writer = self.writer().await;
        let r = sqlx::query("DELETE FROM auth_failures WHERE key = $1").bind(key).execute(&self.pool).await?;
        Ok(r.rows_affected() > 0)
    }

    /// Drops counters whose window and lock both ended before `before`; returns how many.
    pub async fn prune_auth_failures(&self, before: UnixTime) -> Result<u64> {
        let _writer = self.writer().await;
        let r = sqlx::query(
            "DELETE FROM auth_failures WHERE window_start < $1 AND (locked_until IS NULL OR locked_until < $1)",
        )
        .bind(before.0)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }
}
