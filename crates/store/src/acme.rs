//! ACME state: external account binding keys (single use), accounts (key thumbprint to
//! autoenroll account), orders (the RA's JSON, changed by compare-and-swap on a revision) and
//! used nonces (replay protection across replicas).
use crate::{duplicate, Result, Store};
use autoenroll_core::UnixTime;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeEabKey {
    pub kid: String,
    /// The autoenroll account an ACME account bound with this key acts as.
    pub account: String,
    pub created_at: UnixTime,
    pub expires_at: UnixTime,
    pub used_at: Option<UnixTime>,
}

#[derive(sqlx::FromRow)]
struct EabRow {
    kid: String,
    account: String,
    created_at: i64,
    expires_at: i64,
    used_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeAccount {
    pub id: i64,
    /// RFC 7638 thumbprint of the account key.
    pub thumbprint: String,
    /// The account key as a canonical JWK.
    pub jwk: String,
    pub account: String,
    pub contact: String,
    pub eab_kid: String,
    pub created_at: UnixTime,
    /// When its client deactivated it (final).
    pub deactivated_at: Option<UnixTime>,
}

#[derive(sqlx::FromRow)]
struct AccountRow {
    id: i64,
    thumbprint: String,
    jwk: String,
    account: String,
    contact: String,
    eab_kid: String,
    created_at: i64,
    deactivated_at: Option<i64>,
}

impl From<AccountRow> for AcmeAccount {
    fn from(r: AccountRow) -> AcmeAccount {
        AcmeAccount {
            id: r.id,
            thumbprint: r.thumbprint,
            jwk: r.jwk,
            account: r.account,
            contact: r.contact,
            eab_kid: r.eab_kid,
            created_at: UnixTime(r.created_at),
            deactivated_at: r.deactivated_at.map(UnixTime),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeOrder {
    pub id: i64,
    pub acme_account_id: i64,
    /// The order and its authorizations as the RA writes them (JSON).
    pub body: String,
    pub revision: i64,
    pub expires_at: UnixTime,
    pub certificate_serial: Option<String>,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    id: i64,
    acme_account_id: i64,
    body: String,
    revision: i64,
    expires_at: i64,
    certificate_serial: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl From<OrderRow> for AcmeOrder {
    fn from(r: OrderRow) -> AcmeOrder {
        AcmeOrder {
            id: r.id,
            acme_account_id: r.acme_account_id,
            body: r.body,
            revision: r.revision,
            expires_at: UnixTime(r.expires_at),
            certificate_serial: r.certificate_serial,
            created_at: UnixTime(r.created_at),
            updated_at: UnixTime(r.updated_at),
        }
    }
}

impl Store {
    pub async fn insert_acme_eab_key(
        &self,
        kid: &str,
        account: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<()> {
        let _writer = self.writer().await;
        sqlx::query(
            "INSERT INTO acme_eab_keys (kid, account, created_at, expires_at, used_at) VALUES ($1,$2,$3,$4,NULL)",
        )
        .bind(kid)
        .bind(account)
        .bind(now.0)
        .bind(expires_at.0)
        .execute(&self.pool)
        .await
        .map_err(duplicate(|| format!("ACME key {kid}")))?;
        Ok(())
    }

    pub async fn acme_eab_key(&self, kid: &str) -> Result<Option<AcmeEabKey>> {
        let row = sqlx::query_as::<_, EabRow>(
            "SELECT kid, account, created_at, expires_at, used_at FROM acme_eab_keys WHERE kid = $1",
        )
        .bind(kid)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| AcmeEabKey {
            kid: r.kid,
            account: r.account,
            created_at: UnixTime(r.created_at),
            expires_at: UnixTime(r.expires_at),
            used_at: r.used_at.map(UnixTime),
        }))
    }

    /// Records an ACME account bound by the key `eab_kid`, spending that key in the same
    /// transaction. None when the key is spent or expired (a racing registration with the same
    /// key); `Duplicate` when the account key is registered already.
    pub async fn insert_acme_account(
        &self,
        thumbprint: &str,
        jwk: &str,
        account: &str,
        contact: &str,
        eab_kid: &str,
        now: UnixTime,
    ) -> Result<Option<i64>> {
        let _writer = self.writer().await;
        let mut tx = self.pool.begin().await?;
        let spent =
            sqlx::query("UPDATE acme_eab_keys SET used_at = $2 WHERE kid = $1 AND used_at IS NULL AND expires_at > $2")
                .bind(eab_kid)
                .bind(now.0)
                .execute(&mut *tx)
                .await?;
        if spent.rows_affected() != 1 {
            return Ok(None);
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO acme_accounts (thumbprint, jwk, account, contact, eab_kid, created_at) \
             VALUES ($1,$2,$3,$4,$5,$6) RETURNING id",
        )
        .bind(thumbprint)
        .bind(jwk)
        .bind(account)
        .bind(contact)
        .bind(eab_kid)
        .bind(now.0)
        .fetch_one(&mut *tx)
        .await
        .map_err(duplicate(|| "an ACME account with this key".to_string()))?;
        tx.commit().await?;
        Ok(Some(id))
    }

    pub async fn acme_account(&self, id: i64) -> Result<Option<AcmeAccount>> {
        let sql = "SELECT id, thumbprint, jwk, account, contact, eab_kid, created_at, deactivated_at FROM acme_accounts WHERE id = $1";
        Ok(sqlx::query_as::<_, AccountRow>(sql).bind(id).fetch_optional(&self.pool).await?.map(Into::into))
    }

    pub async fn acme_account_by_thumbprint(&self, thumbprint: &str) -> Result<Option<AcmeAccount>> {
        let sql = "SELECT id, thumbprint, jwk, account, contact, eab_kid, created_at, deactivated_at FROM acme_accounts WHERE thumbprint = $1";
        Ok(sqlx::query_as::<_, AccountRow>(sql).bind(thumbprint).fetch_optional(&self.pool).await?.map(Into::into))
    }

    /// ACME accounts, newest first (an administrator's list).
    pub async fn acme_accounts(&self, limit: i64) -> Result<Vec<AcmeAccount>> {
        let sql =
            "SELECT id, thumbprint, jwk, account, contact, eab_kid, created_at, deactivated_at FROM acme_accounts \
                   ORDER BY id DESC LIMIT $1";
        let rows = sqlx::query_as::<_, AccountRow>(sql).bind(limit).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Deactivates an account (its client's request, RFC 8555 section 7.3.6); false when it
    /// was deactivated already.
    pub async fn deactivate_acme_account(&self, id: i64, now: UnixTime) -> Result<bool> {
        let _writer = self.writer().await;
        let r = sqlx::query("UPDATE acme_accounts SET deactivated_at = $2 WHERE id = $1 AND deactivated_at IS NULL")
            .bind(id)
            .bind(now.0)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn insert_acme_order(
        &self,
        acme_account_id: i64,
        body: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<i64> {
        let _writer = self.writer().await;
        Ok(sqlx::query_scalar(
            "INSERT INTO acme_orders (acme_account_id, body, revision, expires_at, certificate_serial, created_at, \
             updated_at) VALUES ($1,$2,0,$3,NULL,$4,$4) RETURNING id",
        )
        .bind(acme_account_id)
        .bind(body)
        .bind(expires_at.0)
        .bind(now.0)
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn acme_order(&self, id: i64) -> Result<Option<AcmeOrder>> {
        let sql = "SELECT id, acme_account_id, body, revision, expires_at, certificate_serial, created_at, updated_at FROM acme_orders WHERE id = $1";
        Ok(sqlx::query_as::<_, OrderRow>(sql).bind(id).fetch_optional(&self.pool).await?.map(Into::into))
    }

    /// An account's orders not yet expired, newest first (its order list, RFC 8555 section 7.1.2.1).
    pub async fn acme_orders_of(&self, acme_account_id: i64, now: UnixTime, limit: i64) -> Result<Vec<AcmeOrder>> {
        let sql = "SELECT id, acme_account_id, body, revision, expires_at, certificate_serial, created_at, updated_at \
                   FROM acme_orders WHERE acme_account_id = $1 AND expires_at > $2 ORDER BY id DESC LIMIT $3";
        let rows = sqlx::query_as::<_, OrderRow>(sql)
            .bind(acme_account_id)
            .bind(now.0)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// The order whose certificate has `serial` (revocation, renewal information, `replaces`).
    pub async fn acme_order_by_serial(&self, serial: &str) -> Result<Option<AcmeOrder>> {
        let sql = "SELECT id, acme_account_id, body, revision, expires_at, certificate_serial, created_at, updated_at \
                   FROM acme_orders WHERE certificate_serial = $1";
        Ok(sqlx::query_as::<_, OrderRow>(sql).bind(serial).fetch_optional(&self.pool).await?.map(Into::into))
    }

    /// Replaces an order's body if it is still at `revision` (false: someone changed it first;
    /// read it again). A certificate serial, once set, stays.
    pub async fn update_acme_order(
        &self,
        id: i64,
        revision: i64,
        body: &str,
        certificate_serial: Option<&str>,
        now: UnixTime,
    ) -> Result<bool> {
        let _writer = self.writer().await;
        let r = sqlx::query(
            "UPDATE acme_orders SET body = $3, revision = revision + 1, updated_at = $5, \
             certificate_serial = COALESCE(certificate_serial, $4) WHERE id = $1 AND revision = $2",
        )
        .bind(id)
        .bind(revision)
        .bind(body)
        .bind(certificate_serial)
        .bind(now.0)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Spends a nonce: true the first time (across replicas), false for a replay. Nonces that
    /// have expired anyway are forgotten on the way.
    pub async fn use_acme_nonce(&self, nonce: &str, expires_at: UnixTime, now: UnixTime) -> Result<bool> {
        let _writer = self.writer().await;
        sqlx::query("DELETE FROM acme_used_nonces WHERE expires_at < $1").bind(now.0).execute(&self.pool).await?;
        let r = sqlx::query("INSERT INTO acme_used_nonces (nonce, expires_at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(nonce)
            .bind(expires_at.0)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }
}
