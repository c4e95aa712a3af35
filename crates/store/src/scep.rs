//! SCEP: one-time challenges bound to a device, a template and the expected request, and the
//! transactions (transaction ID + signer) that let a client poll or retry what it already sent.
use crate::{join_list, parse, split_list, to_u32, Result, Store, StoreError};
use autoenroll_core::model::Eku;
use autoenroll_core::UnixTime;
use sqlx::{Any, FromRow};

/// A one-time SCEP challenge and the request it was made for. Name lists are lower-case and
/// sorted (the RA normalises them); an empty list expects none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub id: String,
    pub secret_hash: Vec<u8>,
    pub device: String,
    pub template: String,
    pub subject: String,
    pub dns_names: Vec<String>,
    pub ip_addrs: Vec<String>,
    pub min_key_bits: u32,
    pub ekus: Vec<Eku>,
    pub created_at: UnixTime,
    pub expires_at: UnixTime,
    pub used_at: Option<UnixTime>,
    pub used_transaction: Option<String>,
    pub used_key: Option<String>,
}

#[derive(FromRow)]
struct ChallengeRow {
    id: String,
    secret_hash: Vec<u8>,
    device: String,
    template: String,
    subject: String,
    dns_names: String,
    ip_addrs: String,
    min_key_bits: i64,
    ext_key_usage: String,
    created_at: i64,
    expires_at: i64,
    used_at: Option<i64>,
    used_transaction: Option<String>,
    used_key: Option<String>,
}

impl TryFrom<ChallengeRow> for Challenge {
    type Error = StoreError;
    fn try_from(r: ChallengeRow) -> Result<Challenge> {
        let key = r.id.as_str();
        Ok(Challenge {
            min_key_bits: to_u32("challenge key size", key, r.min_key_bits)?,
            ekus: split_list(&r.ext_key_usage).iter().map(|e| parse("challenge EKU", key, e)).collect::<Result<_>>()?,
            dns_names: split_list(&r.dns_names),
            ip_addrs: split_list(&r.ip_addrs),
            id: r.id,
            secret_hash: r.secret_hash,
            device: r.device,
            template: r.template,
            subject: r.subject,
            created_at: UnixTime(r.created_at),
            expires_at: UnixTime(r.expires_at),
            used_at: r.used_at.map(UnixTime),
            used_transaction: r.used_transaction,
            used_key: r.used_key,
        })
    }
}

/// Ties a SCEP transaction (ID + signer key) to the request it produced; a transaction tied
/// already is `StoreError::Duplicate` (parallel identical requests: one wins).
pub(crate) const INSERT_SCEP_TRANSACTION_SQL: &str =
    "INSERT INTO scep_transactions (transaction_id, signer_key, request_id, created_at) VALUES ($1,$2,$3,$4)";

pub(crate) async fn insert_transaction_in<'c>(
    ex: impl sqlx::Executor<'c, Database = Any>,
    transaction: &str,
    key: &str,
    request_id: i64,
    now: UnixTime,
) -> Result<()> {
    sqlx::query(INSERT_SCEP_TRANSACTION_SQL)
        .bind(transaction)
        .bind(key)
        .bind(request_id)
        .bind(now.0)
        .execute(ex)
        .await
        .map_err(crate::duplicate(|| format!("SCEP transaction {transaction}")))?;
    Ok(())
}

impl Store {
    pub async fn challenge(&self, id: &str) -> Result<Option<Challenge>> {
        let row = sqlx::query_as::<_, ChallengeRow>(
            "SELECT id, secret_hash, device, template, subject, dns_names, ip_addrs, min_key_bits, ext_key_usage, \
             created_at, expires_at, used_at, used_transaction, used_key FROM challenges WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(Challenge::try_from).transpose()
    }

    /// Spends a challenge for one transaction and key. The first caller wins, across replicas
    /// (condition and write are one statement); the same transaction with the same key may
    /// spend it again until it expires, so a client that lost the answer can retry.
    pub async fn use_challenge(&self, id: &str, transaction: &str, key: &str, now: UnixTime) -> Result<bool> {
        let _writer = self.writer().await;
        let r = sqlx::query(
            "UPDATE challenges SET used_at = COALESCE(used_at, $4), used_transaction = $2, used_key = $3 \
             WHERE id = $1 AND expires_at > $4 \
             AND (used_at IS NULL OR (used_transaction = $2 AND used_key = $3))",
        )
        .bind(id)
        .bind(transaction)
        .bind(key)
        .bind(now.0)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Remembers which request a SCEP transaction (ID + signer key) produced. A transaction tied
    /// already keeps its first request (a parallel identical request got the same certificate).
    pub async fn insert_scep_transaction(
        &self,
        transaction: &str,
        key: &str,
        request_id: i64,
        now: UnixTime,
    ) -> Result<()> {
        let _writer = self.writer().await;
        sqlx::query(
            "INSERT INTO scep_transactions (transaction_id, signer_key, request_id, created_at) \
             VALUES ($1,$2,$3,$4) ON CONFLICT (transaction_id, signer_key) DO NOTHING",
        )
        .bind(transaction)
        .bind(key)
        .bind(request_id)
        .bind(now.0)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Stores a new challenge and ends the unused ones for the same device and template, in one
    /// commit: at most one is outstanding, even with racing creators (the device row is locked
    /// first; on SQLite writers are serialized anyway). Returns how many it ended.
    pub async fn replace_challenge(&self, c: &Challenge) -> Result<u64> {
        let _writer = self.writer().await;
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE devices SET last_seen = last_seen WHERE name = $1")
            .bind(&c.device)
            .execute(&mut *tx)
            .await?;
        let ended = sqlx::query(
            "UPDATE challenges SET expires_at = $3 \
             WHERE device = $1 AND template = $2 AND used_at IS NULL AND expires_at > $3",
        )
        .bind(&c.device)
        .bind(&c.template)
        .bind(c.created_at.0)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(
            "INSERT INTO challenges (id, secret_hash, device, template, subject, dns_names, ip_addrs, min_key_bits, \
         ext_key_usage, created_at, expires_at, used_at, used_transaction, used_key) \
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)",
        )
        .bind(&c.id)
        .bind(&c.secret_hash)
        .bind(&c.device)
        .bind(&c.template)
        .bind(&c.subject)
        .bind(c.dns_names.join(","))
        .bind(c.ip_addrs.join(","))
        .bind(i64::from(c.min_key_bits))
        .bind(join_list(&c.ekus))
        .bind(c.created_at.0)
        .bind(c.expires_at.0)
        .bind(c.used_at.map(|t| t.0))
        .bind(&c.used_transaction)
        .bind(&c.used_key)
        .execute(&mut *tx)
        .await
        .map_err(crate::duplicate(|| format!("challenge {}", c.id)))?;
        tx.commit().await?;
        Ok(ended)
    }

    pub async fn scep_transaction(&self, transaction: &str, key: &str) -> Result<Option<i64>> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT request_id FROM scep_transactions WHERE transaction_id = $1 AND signer_key = $2")
                .bind(transaction)
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(id,)| id))
    }
}
