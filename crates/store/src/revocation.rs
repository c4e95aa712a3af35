//! Revocation state and CRLs. CRL numbers come from one counter row (replicas never reuse a
//! number); the newest CRL is kept, and an older one never overwrites it.
use crate::{parse, Result, Store};
use autoenroll_core::model::{CertState, RevocationReason};
use autoenroll_core::UnixTime;
use sqlx::FromRow;

/// A stored CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crl {
    pub number: i64,
    pub this_update: UnixTime,
    pub next_update: UnixTime,
    pub der: Vec<u8>,
}

#[derive(FromRow)]
struct CrlRow {
    number: i64,
    this_update: i64,
    next_update: i64,
    der: Vec<u8>,
}

/// A revoked certificate as a CRL lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedEntry {
    pub serial: String,
    pub revoked_at: UnixTime,
    pub reason: RevocationReason,
}

#[derive(FromRow)]
struct RevokedRow {
    serial: String,
    revoked_at: Option<i64>,
    revocation_reason: Option<String>,
}

impl Store {
    /// Revokes a certificate that is issued or renewed (not one still being signed). False
    /// when unknown or already revoked.
    pub async fn revoke_certificate(&self, serial: &str, reason: RevocationReason, now: UnixTime) -> Result<bool> {
        let _writer = self.writer().await;
        let r = sqlx::query(
            "UPDATE certificates SET state = $4, revoked_at = $2, revocation_reason = $3 \
             WHERE serial = $1 AND state IN ($5, $6)",
        )
        .bind(serial)
        .bind(now.0)
        .bind(reason.as_str())
        .bind(CertState::Revoked.as_str())
        .bind(CertState::Issued.as_str())
        .bind(CertState::Renewed.as_str())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Revokes, as superseded, the certificate `serial` renewed, if it is still in state
    /// `renewed` (its successor is in use); returns its serial when it did.
    pub async fn revoke_predecessor(&self, serial: &str, now: UnixTime) -> Result<Option<String>> {
        let _writer = self.writer().await;
        let row: Option<(String,)> = sqlx::query_as(
            "UPDATE certificates SET state = $3, revoked_at = $2, revocation_reason = $4 \
             WHERE state = $5 AND serial = (SELECT previous_serial FROM successors WHERE serial = $1) RETURNING serial",
        )
        .bind(serial)
        .bind(now.0)
        .bind(CertState::Revoked.as_str())
        .bind(RevocationReason::Superseded.as_str())
        .bind(CertState::Renewed.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(s,)| s))
    }

    /// Revokes every unexpired certificate of a device that is issued, renewed or still being
    /// signed (a signature in flight then never goes live); returns their serials.
    pub async fn revoke_device_certificates(
        &self,
        device_id: i64,
        reason: RevocationReason,
        now: UnixTime,
    ) -> Result<Vec<String>> {
        let _writer = self.writer().await;
        let rows: Vec<(String,)> = sqlx::query_as(
            "UPDATE certificates SET state = $3, revoked_at = $2, revocation_reason = $4 \
             WHERE device_id = $1 AND not_after > $2 AND state IN ($5, $6, $7) RETURNING serial",
        )
        .bind(device_id)
        .bind(now.0)
        .bind(CertState::Revoked.as_str())
        .bind(reason.as_str())
        .bind(CertState::Issued.as_str())
        .bind(CertState::Renewed.as_str())
        .bind(CertState::Signing.as_str())
        .fetch_all(&self.pool)
        .await?;
        let mut serials: Vec<String> = rows.into_iter().map(|(s,)| s).collect();
        serials.sort();
        Ok(serials)
    }

    /// Frees the successor claim on `previous` held by `successor` when that successor never
    /// went into service: issued after `issued_after` and never used, or an intent still
    /// signing since before `stale_before` (a signer that died). The successor is revoked (superseded: it may have
    /// been signed) and the claim dropped, in one commit; false when it was not in that state
    /// (used meanwhile, or released by a racing renewal).
    pub async fn release_successor(
        &self,
        previous: &str,
        successor: &str,
        stale_before: UnixTime,
        issued_after: UnixTime,
        now: UnixTime,
    ) -> Result<bool> {
        let _writer = self.writer().await;
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE certificates SET state = $2, revoked_at = $3, revocation_reason = $4 \
             WHERE serial = $1 AND previous_serial = $5 \
             AND ((state = $6 AND first_used_at IS NULL AND created_at > $9) OR (state = $7 AND created_at < $8))",
        )
        .bind(successor)
        .bind(CertState::Revoked.as_str())
        .bind(now.0)
        .bind(RevocationReason::Superseded.as_str())
        .bind(previous)
        .bind(CertState::Issued.as_str())
        .bind(CertState::Signing.as_str())
        .bind(stale_before.0)
        .bind(issued_after.0)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM successors WHERE previous_serial = $1 AND serial = $2")
            .bind(previous)
            .bind(successor)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Revokes, as superseded, every renewed certificate whose successor was issued before
    /// `issued_before` (the grace after which a predecessor goes, used or not); returns them.
    pub async fn revoke_superseded(&self, issued_before: UnixTime, now: UnixTime) -> Result<Vec<String>> {
        let _writer = self.writer().await;
        let rows: Vec<(String,)> = sqlx::query_as(
            "UPDATE certificates SET state = $2, revoked_at = $1, revocation_reason = $3 \
             WHERE state = $4 AND not_after > $1 AND serial IN (SELECT s.previous_serial FROM successors s \
               JOIN certificates n ON n.serial = s.serial WHERE n.created_at < $5) RETURNING serial",
        )
        .bind(now.0)
        .bind(CertState::Revoked.as_str())
        .bind(RevocationReason::Superseded.as_str())
        .bind(CertState::Renewed.as_str())
        .bind(issued_before.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(s,)| s).collect())
    }

    /// Revoked certificates that have not expired at `now` (expired ones may leave the CRL).
    pub async fn revoked_certificates(&self, now: UnixTime) -> Result<Vec<RevokedEntry>> {
        let rows = sqlx::query_as::<_, RevokedRow>(
            "SELECT serial, revoked_at, revocation_reason FROM certificates \
             WHERE state = 'revoked' AND not_after > $1 ORDER BY revoked_at, serial",
        )
        .bind(now.0)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(RevokedEntry {
                    reason: match &r.revocation_reason {
                        Some(x) => parse("revocation reason", &r.serial, x)?,
                        None => RevocationReason::Unspecified,
                    },
                    revoked_at: UnixTime(r.revoked_at.unwrap_or_default()),
                    serial: r.serial,
                })
            })
            .collect()
    }

    /// When the last revocation happened (a CRL older than that is stale).
    pub async fn last_revocation_at(&self) -> Result<Option<UnixTime>> {
        let (at,): (Option<i64>,) =
            sqlx::query_as("SELECT MAX(revoked_at) AS at FROM certificates WHERE state = 'revoked'")
                .fetch_one(&self.pool)
                .await?;
        Ok(at.map(UnixTime))
    }

    /// The next CRL number for `issuer`: one atomic increment, unique across replicas.
    pub async fn next_crl_number(&self, issuer: &str) -> Result<i64> {
        let _writer = self.writer().await;
        let (last,): (i64,) = sqlx::query_as(
            "INSERT INTO crl_numbers (issuer, last) VALUES ($1, 1) \
             ON CONFLICT (issuer) DO UPDATE SET last = crl_numbers.last + 1 RETURNING last",
        )
        .bind(issuer)
        .fetch_one(&self.pool)
        .await?;
        Ok(last)
    }

    /// Stores a CRL unless a higher-numbered one is already there.
    pub async fn save_crl(&self, issuer: &str, c: &Crl) -> Result<()> {
        let _writer = self.writer().await;
        sqlx::query(
            "INSERT INTO crls (issuer, number, this_update, next_update, der) VALUES ($1,$2,$3,$4,$5) \
             ON CONFLICT (issuer) DO UPDATE SET number = excluded.number, this_update = excluded.this_update, \
             next_update = excluded.next_update, der = excluded.der WHERE crls.number < excluded.number",
        )
        .bind(issuer)
        .bind(c.number)
        .bind(c.this_update.0)
        .bind(c.next_update.0)
        .bind(&c.der)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn crl(&self, issuer: &str) -> Result<Option<Crl>> {
        let row =
            sqlx::query_as::<_, CrlRow>("SELECT number, this_update, next_update, der FROM crls WHERE issuer = $1")
                .bind(issuer)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| Crl {
            number: r.number,
            this_update: UnixTime(r.this_update),
            next_update: UnixTime(r.next_update),
            der: r.der,
        }))
    }
}
