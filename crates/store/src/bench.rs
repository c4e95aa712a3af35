//! Support for the renewal-scan benchmark (`autoenroll bench scan`): a fast synthetic fill and
//! the store's own queries run raw (no row mapping), to compare the Store API against plain SQL
//! on the same data. Not used by the server.
use crate::{Backend, Result, Store};
use autoenroll_core::model::{RequestKind, RequestStatus};
use autoenroll_core::UnixTime;
use sqlx::Row;

/// Synthetic certificates: lifetimes of one year starting at `base`, spread over a year, with a
/// renewal window opening 6 weeks before expiry.
const YEAR: i64 = 365 * 86_400;
const SIX_WEEKS: i64 = 42 * 86_400;

impl Store {
    /// Creates the device and request the synthetic certificates point at; returns their ids.
    pub async fn bench_prepare(&self, now: i64) -> Result<(i64, i64)> {
        let device = self.touch_device("bench-device", UnixTime(now)).await?;
        let request = self
            .insert_request(
                &crate::NewRequest {
                    device_id: device.id,
                    requester: "bench",
                    template: "Machine",
                    kind: RequestKind::Enroll,
                    status: RequestStatus::Issued,
                    csr_der: b"",
                    previous_serial: None,
                },
                None,
                UnixTime(now),
            )
            .await?;
        Ok((device.id, request))
    }

    /// Inserts synthetic issued certificates numbered `from..to` in one statement.
    pub async fn bench_fill(&self, from: i64, to: i64, device_id: i64, request_id: i64, base: i64) -> Result<()> {
        let _writer = self.writer().await;
        let q = match self.backend() {
            Backend::Sqlite => sqlx::query(
                "WITH RECURSIVE n(i) AS (SELECT $1 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < $2) \
                 INSERT INTO certificates (serial, request_id, device_id, template, template_major, template_minor, \
                 subject, thumbprint, not_before, not_after, state, der, created_at, previous_serial, renew_after) \
                 SELECT 'b' || i, $3, $4, 'Machine', 1, 0, 'CN=bench', printf('%064x', i), $5 + (i * 7919) % $6, \
                 $5 + (i * 7919) % $6 + $6, 'issued', NULL, $5, NULL, $5 + (i * 7919) % $6 + $6 - $7 FROM n",
            ),
            Backend::Postgres => sqlx::query(
                "INSERT INTO certificates (serial, request_id, device_id, template, template_major, template_minor, \
                 subject, thumbprint, not_before, not_after, state, der, created_at, previous_serial, renew_after) \
                 SELECT 'b' || i, $3, $4, 'Machine', 1, 0, 'CN=bench', lpad(to_hex(i), 64, '0'), $5 + (i * 7919) % $6, \
                 $5 + (i * 7919) % $6 + $6, 'issued', NULL, $5, NULL, $5 + (i * 7919) % $6 + $6 - $7 \
                 FROM generate_series($1::bigint, $2::bigint - 1) AS i",
            ),
        };
        q.bind(from)
            .bind(to)
            .bind(request_id)
            .bind(device_id)
            .bind(base)
            .bind(YEAR)
            .bind(SIX_WEEKS)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The thumbprint the synthetic certificate `i` got.
    pub fn bench_thumbprint(i: i64) -> String {
        format!("{i:064x}")
    }

    /// `due_for_renewal`'s SQL, rows counted instead of mapped.
    pub async fn bench_raw_due(&self, until: i64, limit: i64) -> Result<usize> {
        let rows = sqlx::query(
            "SELECT serial, device_id, template, template_major, thumbprint, not_after, renew_after \
             FROM certificates WHERE state = 'issued' AND renew_after <= $1 ORDER BY renew_after LIMIT $2",
        )
        .bind(until)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.len())
    }

    /// `certificate_by_thumbprint`'s SQL, the row not mapped.
    pub async fn bench_raw_thumbprint(&self, thumbprint: &str) -> Result<bool> {
        let sql = concat!(certificate_select!(), "WHERE c.thumbprint = $1");
        let row = sqlx::query(sql).bind(thumbprint).fetch_optional(&self.pool).await?;
        Ok(row.is_some_and(|r| r.len() > 0))
    }

    /// Statistics refresh after a bulk load (the planner needs them on both backends).
    pub async fn bench_analyze(&self) -> Result<()> {
        sqlx::query("ANALYZE").execute(&self.pool).await?;
        Ok(())
    }
}
