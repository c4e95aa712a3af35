//! Persistent state behind one type, `Store`, over sqlx's `Any` driver with runtime queries and
//! `$n` placeholders, so the same SQL serves SQLite (embedded default) and, later, PostgreSQL.
//! Timestamps are whole seconds since the Unix epoch.
#![forbid(unsafe_code)]

mod rows;

pub use rows::*;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL {0:?} (use sqlite://PATH or postgres://USER@HOST:PORT/DB)")]
    UnsupportedUrl(String),
    #[error("{0} already exists")]
    Duplicate(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

// Column lists as macros so every query stays a literal string (sqlx refuses dynamic SQL).
macro_rules! template_columns {
    () => {
        "name, oid, major, minor, description, validity_secs, renewal_secs, key_algorithm, min_key_bits, \
         key_usage, ext_key_usage, subject_from, allow_san, enroll, autoenroll, pend_all, same_key_renewal, \
         superseded, created_at, updated_at, renewal_grace_secs, retry_interval_secs"
    };
}
macro_rules! certificate_columns {
    () => {
        "c.serial, c.request_id, c.device_id, d.name, c.template, c.template_major, c.template_minor, \
         c.subject, c.thumbprint, c.not_before, c.not_after, c.state, c.der, c.created_at, c.previous_serial, \
         c.revoked_at, c.revocation_reason, c.renew_after"
    };
}

mod bench;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite has one writer at a time; connections that find the database locked poll with
    /// growing sleeps (up to 100 ms), which made the latency tail. Writers queue here instead,
    /// in order. PostgreSQL needs no such lock.
    write_lock: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl Store {
    /// Opens (creating if needed) and migrates the database at `url`.
    pub async fn open(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        };
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 8,
                Backend::Postgres => 16,
            })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the writer; FULL sync keeps every answered
                        // issuance durable across power loss; busy_timeout serialises writers.
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA synchronous = FULL",
                            "PRAGMA busy_timeout = 10000",
                            "PRAGMA foreign_keys = ON",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        match backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite").run(&pool).await?,
            // Several replicas may start at once: the migrator takes an advisory lock.
            Backend::Postgres => sqlx::migrate!("migrations/postgres").run(&pool).await?,
        }
        Ok(Store { pool, backend, write_lock: Default::default() })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Held for the duration of a write on SQLite.
    async fn writer(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.backend {
            Backend::Sqlite => Some(self.write_lock.lock().await),
            Backend::Postgres => None,
        }
    }

    /// `sqlite://<path>?mode=rwc` for a database file.
    pub fn sqlite_url(path: &std::path::Path) -> String {
        format!("sqlite://{}?mode=rwc", path.display())
    }

    // ---- settings

    pub async fn setting(&self, key: &str) -> Result<Option<String>> {
        Ok(sqlx::query("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.get::<String, _>(0)))
    }

    pub async fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        let _writer = self.writer().await;
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // ---- CA certificates

    pub async fn upsert_ca(&self, name: &str, cert_der: &[u8], now: i64) -> Result<()> {
        let _writer = self.writer().await;
        sqlx::query(
            "INSERT INTO cas (name, cert_der, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET cert_der = excluded.cert_der",
        )
        .bind(name)
        .bind(cert_der)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // ---- templates

    pub async fn templates(&self) -> Result<Vec<TemplateRow>> {
        let sql = concat!("SELECT ", template_columns!(), " FROM templates ORDER BY name");
        let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
        rows.iter().map(TemplateRow::from_row).collect()
    }

    pub async fn template(&self, name: &str) -> Result<Option<TemplateRow>> {
        let sql = concat!("SELECT ", template_columns!(), " FROM templates WHERE name = $1");
        let row = sqlx::query(sql).bind(name).fetch_optional(&self.pool).await?;
        row.as_ref().map(TemplateRow::from_row).transpose()
    }

    pub async fn template_by_oid(&self, oid: &str) -> Result<Option<TemplateRow>> {
        let sql = concat!("SELECT ", template_columns!(), " FROM templates WHERE oid = $1");
        let row = sqlx::query(sql).bind(oid).fetch_optional(&self.pool).await?;
        row.as_ref().map(TemplateRow::from_row).transpose()
    }

    pub async fn insert_template(&self, t: &TemplateRow) -> Result<()> {
        let _writer = self.writer().await;
        let sql = concat!(
            "INSERT INTO templates (",
            template_columns!(),
            ") VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22)"
        );
        t.bind_all(sqlx::query(sql)).execute(&self.pool).await.map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Duplicate(format!("template {} (or its OID)", t.name))
            } else {
                e.into()
            }
        })?;
        Ok(())
    }

    /// Replaces a template's row (matched by name). Returns false when it does not exist.
    pub async fn update_template(&self, t: &TemplateRow) -> Result<bool> {
        let _writer = self.writer().await;
        let r = t
            .bind_all(sqlx::query(
                "UPDATE templates SET oid=$2, major=$3, minor=$4, description=$5, validity_secs=$6, \
                 renewal_secs=$7, key_algorithm=$8, min_key_bits=$9, key_usage=$10, ext_key_usage=$11, \
                 subject_from=$12, allow_san=$13, enroll=$14, autoenroll=$15, pend_all=$16, \
                 same_key_renewal=$17, superseded=$18, created_at=$19, updated_at=$20, \
                 renewal_grace_secs=$21, retry_interval_secs=$22 WHERE name=$1",
            ))
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    // ---- accounts

    pub async fn insert_account(&self, a: &AccountRow) -> Result<()> {
        let _writer = self.writer().await;
        sqlx::query(
            "INSERT INTO accounts (name, password_hash, templates, disabled, created_at) VALUES ($1,$2,$3,$4,$5)",
        )
        .bind(&a.name)
        .bind(&a.password_hash)
        .bind(&a.templates)
        .bind(a.disabled as i64)
        .bind(a.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Duplicate(format!("account {}", a.name))
            } else {
                e.into()
            }
        })?;
        Ok(())
    }

    pub async fn account(&self, name: &str) -> Result<Option<AccountRow>> {
        let row =
            sqlx::query("SELECT name, password_hash, templates, disabled, created_at FROM accounts WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| {
            Ok(AccountRow {
                name: r.try_get(0)?,
                password_hash: r.try_get(1)?,
                templates: r.try_get(2)?,
                disabled: r.try_get::<i64, _>(3)? != 0,
                created_at: r.try_get(4)?,
            })
        })
        .transpose()
    }

    // ---- bootstrap tokens

    pub async fn insert_token(&self, t: &TokenRow) -> Result<()> {
        let _writer = self.writer().await;
        sqlx::query(
            "INSERT INTO bootstrap_tokens (id, secret_hash, device, template, expires_at, used_at, created_at) \
             VALUES ($1,$2,$3,$4,$5,$6,$7)",
        )
        .bind(&t.id)
        .bind(&t.secret_hash)
        .bind(&t.device)
        .bind(&t.template)
        .bind(t.expires_at)
        .bind(t.used_at)
        .bind(t.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn token(&self, id: &str) -> Result<Option<TokenRow>> {
        let row = sqlx::query(
            "SELECT id, secret_hash, device, template, expires_at, used_at, created_at FROM bootstrap_tokens WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(TokenRow {
                id: r.try_get(0)?,
                secret_hash: r.try_get(1)?,
                device: r.try_get(2)?,
                template: r.try_get(3)?,
                expires_at: r.try_get(4)?,
                used_at: r.try_get(5)?,
                created_at: r.try_get(6)?,
            })
        })
        .transpose()
    }

    /// Marks a token used if it is still unused and unexpired. Exactly one caller wins, even
    /// across server replicas: the condition and the write are one statement.
    pub async fn consume_token(&self, id: &str, now: i64) -> Result<bool> {
        let _writer = self.writer().await;
        let r = sqlx::query(
            "UPDATE bootstrap_tokens SET used_at = $2 WHERE id = $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    // ---- admin API tokens

    pub async fn insert_admin_token(&self, id: &str, name: &str, secret_hash: &[u8], now: i64) -> Result<()> {
        let _writer = self.writer().await;
        sqlx::query(
            "INSERT INTO admin_tokens (id, name, secret_hash, created_at, revoked_at) VALUES ($1,$2,$3,$4,NULL)",
        )
        .bind(id)
        .bind(name)
        .bind(secret_hash)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// (name, secret hash) of an unrevoked admin token.
    pub async fn admin_token(&self, id: &str) -> Result<Option<(String, Vec<u8>)>> {
        let row = sqlx::query("SELECT name, secret_hash FROM admin_tokens WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
    }

    pub async fn revoke_admin_token(&self, name: &str, now: i64) -> Result<u64> {
        let _writer = self.writer().await;
        let r = sqlx::query("UPDATE admin_tokens SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL")
            .bind(name)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    // ---- CRLs

    /// The next CRL number for `issuer`: one atomic increment, unique across replicas.
    pub async fn next_crl_number(&self, issuer: &str) -> Result<i64> {
        let _writer = self.writer().await;
        let row = sqlx::query(
            "INSERT INTO crl_numbers (issuer, last) VALUES ($1, 1) \
             ON CONFLICT (issuer) DO UPDATE SET last = crl_numbers.last + 1 RETURNING last",
        )
        .bind(issuer)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get(0)?)
    }

    /// Stores a CRL unless a higher-numbered one is already there.
    pub async fn save_crl(&self, issuer: &str, c: &CrlRow) -> Result<()> {
        let _writer = self.writer().await;
        sqlx::query(
            "INSERT INTO crls (issuer, number, this_update, next_update, der) VALUES ($1,$2,$3,$4,$5) \
             ON CONFLICT (issuer) DO UPDATE SET number = excluded.number, this_update = excluded.this_update, \
             next_update = excluded.next_update, der = excluded.der WHERE crls.number < excluded.number",
        )
        .bind(issuer)
        .bind(c.number)
        .bind(c.this_update)
        .bind(c.next_update)
        .bind(&c.der)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn crl(&self, issuer: &str) -> Result<Option<CrlRow>> {
        let row = sqlx::query("SELECT number, this_update, next_update, der FROM crls WHERE issuer = $1")
            .bind(issuer)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(CrlRow {
                number: r.try_get(0)?,
                this_update: r.try_get(1)?,
                next_update: r.try_get(2)?,
                der: r.try_get(3)?,
            })
        })
        .transpose()
    }

    /// Revoked certificates that have not expired at `now` (expired ones may leave the CRL).
    pub async fn revoked_certificates(&self, now: i64) -> Result<Vec<RevokedRow>> {
        let rows = sqlx::query(
            "SELECT serial, revoked_at, revocation_reason FROM certificates \
             WHERE state = 'revoked' AND not_after > $1 ORDER BY revoked_at",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RevokedRow {
                    serial: r.try_get(0)?,
                    revoked_at: r.try_get::<Option<i64>, _>(1)?.unwrap_or_default(),
                    reason: r.try_get::<Option<String>, _>(2)?.unwrap_or_default(),
                })
            })
            .collect()
    }

    /// When the last revocation happened (a CRL older than that is stale).
    pub async fn last_revocation_at(&self) -> Result<Option<i64>> {
        Ok(sqlx::query("SELECT MAX(revoked_at) FROM certificates WHERE state = 'revoked'")
            .fetch_one(&self.pool)
            .await?
            .try_get::<Option<i64>, _>(0)?)
    }

    // ---- SCEP challenges and transactions

    pub async fn insert_challenge(&self, c: &ChallengeRow) -> Result<()> {
        let _writer = self.writer().await;
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
        .bind(&c.dns_names)
        .bind(&c.ip_addrs)
        .bind(c.min_key_bits)
        .bind(&c.ext_key_usage)
        .bind(c.created_at)
        .bind(c.expires_at)
        .bind(c.used_at)
        .bind(&c.used_transaction)
        .bind(&c.used_key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn challenge(&self, id: &str) -> Result<Option<ChallengeRow>> {
        let row = sqlx::query(
            "SELECT id, secret_hash, device, template, subject, dns_names, ip_addrs, min_key_bits, ext_key_usage, \
             created_at, expires_at, used_at, used_transaction, used_key FROM challenges WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(ChallengeRow {
                id: r.try_get(0)?,
                secret_hash: r.try_get(1)?,
                device: r.try_get(2)?,
                template: r.try_get(3)?,
                subject: r.try_get(4)?,
                dns_names: r.try_get(5)?,
                ip_addrs: r.try_get(6)?,
                min_key_bits: r.try_get(7)?,
                ext_key_usage: r.try_get(8)?,
                created_at: r.try_get(9)?,
                expires_at: r.try_get(10)?,
                used_at: r.try_get(11)?,
                used_transaction: r.try_get(12)?,
                used_key: r.try_get(13)?,
            })
        })
        .transpose()
    }

    /// Spends a challenge for one transaction and key. The first caller wins, across replicas
    /// (condition and write are one statement); the same transaction with the same key may
    /// spend it again until it expires, so a client that lost the answer can retry.
    pub async fn use_challenge(&self, id: &str, transaction: &str, key: &str, now: i64) -> Result<bool> {
        let _writer = self.writer().await;
        let r = sqlx::query(
            "UPDATE challenges SET used_at = COALESCE(used_at, $4), used_transaction = $2, used_key = $3 \
             WHERE id = $1 AND expires_at > $4 \
             AND (used_at IS NULL OR (used_transaction = $2 AND used_key = $3))",
        )
        .bind(id)
        .bind(transaction)
        .bind(key)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Remembers which request a SCEP transaction (ID + signer key) produced.
    pub async fn insert_scep_transaction(&self, transaction: &str, key: &str, request_id: i64, now: i64) -> Result<()> {
        let _writer = self.writer().await;
        sqlx::query(
            "INSERT INTO scep_transactions (transaction_id, signer_key, request_id, created_at) VALUES ($1,$2,$3,$4) \
             ON CONFLICT (transaction_id, signer_key) DO UPDATE SET request_id = excluded.request_id",
        )
        .bind(transaction)
        .bind(key)
        .bind(request_id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn scep_transaction(&self, transaction: &str, key: &str) -> Result<Option<i64>> {
        Ok(sqlx::query("SELECT request_id FROM scep_transactions WHERE transaction_id = $1 AND signer_key = $2")
            .bind(transaction)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.try_get::<i64, _>(0))
            .transpose()?)
    }

    /// Removes a device that holds no certificates and no requests (a retired device).
    pub async fn delete_device(&self, name: &str) -> Result<bool> {
        let _writer = self.writer().await;
        let r = sqlx::query(
            "DELETE FROM devices WHERE name = $1 AND NOT EXISTS (SELECT 1 FROM requests WHERE requests.device_id = devices.id)",
        )
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    // ---- devices

    /// The device's id, creating the device on first sight; updates `last_seen`.
    /// Within `LAST_SEEN_PRECISION` of the previous sighting nothing is written: a write
    /// (and its fsync) per request would cost more than the inventory gains.
    pub async fn touch_device(&self, name: &str, now: i64) -> Result<DeviceRow> {
        const LAST_SEEN_PRECISION: i64 = 300;
        if let Some(d) = self.device(name).await? {
            if (now - d.last_seen).abs() < LAST_SEEN_PRECISION {
                return Ok(d);
            }
        }
        let _writer = self.writer().await;
        sqlx::query(
            "INSERT INTO devices (name, blocked, created_at, last_seen) VALUES ($1, 0, $2, $2) \
             ON CONFLICT (name) DO UPDATE SET last_seen = excluded.last_seen",
        )
        .bind(name)
        .bind(now)
        .execute(&self.pool)
        .await?;
        self.device(name).await?.ok_or(StoreError::Db(sqlx::Error::RowNotFound))
    }

    pub async fn device(&self, name: &str) -> Result<Option<DeviceRow>> {
        let row = sqlx::query("SELECT id, name, blocked, created_at, last_seen FROM devices WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(DeviceRow::from_row).transpose()
    }

    pub async fn device_by_id(&self, id: i64) -> Result<Option<DeviceRow>> {
        let row = sqlx::query("SELECT id, name, blocked, created_at, last_seen FROM devices WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(DeviceRow::from_row).transpose()
    }

    // ---- requests and certificates

    pub async fn insert_request(&self, r: &NewRequest<'_>, now: i64) -> Result<i64> {
        let _writer = self.writer().await;
        let row = sqlx::query(
            "INSERT INTO requests (device_id, requester, template, kind, status, csr_der, serial, detail, created_at, \
             updated_at, previous_serial) VALUES ($1,$2,$3,$4,$5,$6,NULL,'',$7,$7,$8) RETURNING id",
        )
        .bind(r.device_id)
        .bind(r.requester)
        .bind(r.template)
        .bind(r.kind)
        .bind(r.status)
        .bind(r.csr_der)
        .bind(now)
        .bind(r.previous_serial)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get(0)?)
    }

    pub async fn set_request_status(&self, id: i64, status: &str, detail: &str, now: i64) -> Result<()> {
        let _writer = self.writer().await;
        sqlx::query("UPDATE requests SET status = $2, detail = $3, updated_at = $4 WHERE id = $1")
            .bind(id)
            .bind(status)
            .bind(detail)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a certificate about to be signed (state `signing`, no DER yet) and links it to
    /// its request.
    /// Records a request and its certificate intent in one transaction (one commit before
    /// signing); `c.request_id` is ignored. Returns the request id.
    pub async fn insert_request_with_intent(
        &self,
        r: &NewRequest<'_>,
        c: &CertificateIntent<'_>,
        scep_transaction: Option<(&str, &str)>,
        now: i64,
    ) -> Result<i64> {
        let _writer = self.writer().await;
        let mut tx = self.pool.begin().await?;
        let request_id: i64 = sqlx::query(
            "INSERT INTO requests (device_id, requester, template, kind, status, csr_der, serial, detail, created_at, \
             updated_at, previous_serial) VALUES ($1,$2,$3,$4,$5,$6,NULL,'',$7,$7,$8) RETURNING id",
        )
        .bind(r.device_id)
        .bind(r.requester)
        .bind(r.template)
        .bind(r.kind)
        .bind(r.status)
        .bind(r.csr_der)
        .bind(now)
        .bind(r.previous_serial)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        intent_in(&mut tx, &CertificateIntent { request_id, ..*c }, now).await?;
        if let Some((transaction, key)) = scep_transaction {
            sqlx::query(
                "INSERT INTO scep_transactions (transaction_id, signer_key, request_id, created_at) VALUES ($1,$2,$3,$4)",
            )
            .bind(transaction)
            .bind(key)
            .bind(request_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(request_id)
    }

    pub async fn insert_certificate_intent(&self, c: &CertificateIntent<'_>, now: i64) -> Result<()> {
        let _writer = self.writer().await;
        let mut tx = self.pool.begin().await?;
        intent_in(&mut tx, c, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stores the signed certificate and marks it and its request issued, atomically; a renewal
    /// (the intent named a previous serial) also marks the old certificate `renewed`.
    pub async fn complete_certificate(
        &self,
        serial: &str,
        request_id: i64,
        thumbprint: &str,
        der: &[u8],
        now: i64,
        audit: Option<&AuditEvent>,
    ) -> Result<()> {
        let _writer = self.writer().await;
        let mut tx = self.pool.begin().await?;
        if let Some(e) = audit {
            insert_audit(&mut tx, e).await?;
        }
        sqlx::query(
            "UPDATE certificates SET state = 'renewed' WHERE state = 'issued' AND serial = \
             (SELECT previous_serial FROM certificates WHERE serial = $1)",
        )
        .bind(serial)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE certificates SET state = 'issued', thumbprint = $2, der = $3 WHERE serial = $1")
            .bind(serial)
            .bind(thumbprint)
            .bind(der)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE requests SET status = 'issued', updated_at = $2 WHERE id = $1")
            .bind(request_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn certificate(&self, serial: &str) -> Result<Option<CertificateRow>> {
        let sql = concat!(
            "SELECT ",
            certificate_columns!(),
            " FROM certificates c JOIN devices d ON d.id = c.device_id WHERE c.serial = $1"
        );
        let row = sqlx::query(sql).bind(serial).fetch_optional(&self.pool).await?;
        row.as_ref().map(CertificateRow::from_row).transpose()
    }

    pub async fn certificate_by_thumbprint(&self, thumbprint: &str) -> Result<Option<CertificateRow>> {
        let sql = concat!(
            "SELECT ",
            certificate_columns!(),
            " FROM certificates c JOIN devices d ON d.id = c.device_id WHERE c.thumbprint = $1"
        );
        let row = sqlx::query(sql).bind(thumbprint).fetch_optional(&self.pool).await?;
        row.as_ref().map(CertificateRow::from_row).transpose()
    }

    /// The next `limit` issued certificates whose renewal window opened before `until`,
    /// earliest first: one range scan over `certificates_due`.
    pub async fn due_for_renewal(&self, until: i64, limit: i64) -> Result<Vec<DueCertificate>> {
        let rows = sqlx::query(
            "SELECT serial, device_id, template, template_major, thumbprint, not_after, renew_after \
             FROM certificates WHERE state = 'issued' AND renew_after <= $1 ORDER BY renew_after LIMIT $2",
        )
        .bind(until)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DueCertificate {
                    serial: r.try_get(0)?,
                    device_id: r.try_get(1)?,
                    template: r.try_get(2)?,
                    template_major: r.try_get(3)?,
                    thumbprint: r.try_get(4)?,
                    not_after: r.try_get(5)?,
                    renew_after: r.try_get(6)?,
                })
            })
            .collect()
    }

    /// Certificates by the administrator's filters (sentinel values keep the SQL literal).
    pub async fn certificates_matching(&self, f: &CertificateFilter) -> Result<Vec<CertificateRow>> {
        let sql = concat!(
            "SELECT ",
            certificate_columns!(),
            " FROM certificates c JOIN devices d ON d.id = c.device_id \
             WHERE c.not_after <= $1 AND ($2 = '' OR c.template = $2) AND ($3 < 0 OR c.template_major = $3) \
             AND ($4 = '' OR c.state = $4) AND ($5 = '' OR ',' || $5 || ',' LIKE '%,' || d.name || ',%') AND c.created_at <= $6 \
             ORDER BY c.not_after, c.serial LIMIT $7"
        );
        let rows = f.bind(sqlx::query(sql)).bind(f.limit).fetch_all(&self.pool).await?;
        rows.iter().map(CertificateRow::from_row).collect()
    }

    /// Moves the renewal time of matching issued certificates to `now` ("renew now" for a
    /// cohort); returns how many moved.
    pub async fn renew_now(&self, f: &CertificateFilter, now: i64) -> Result<u64> {
        let _writer = self.writer().await;
        let r = f
            .bind(sqlx::query(
                "UPDATE certificates SET renew_after = $7 WHERE state = 'issued' AND renew_after > $7 \
             AND not_after <= $1 AND ($2 = '' OR template = $2) AND ($3 < 0 OR template_major = $3) \
             AND ($5 = '' OR device_id IN (SELECT id FROM devices WHERE ',' || $5 || ',' LIKE '%,' || name || ',%')) AND created_at <= $6 \
             AND ($4 = '' OR state = $4)",
            ))
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    pub async fn devices(&self, now: i64, limit: i64) -> Result<Vec<DeviceSummary>> {
        let rows = sqlx::query(
            "SELECT d.name, d.blocked, d.created_at, d.last_seen, \
             (SELECT COUNT(*) FROM certificates c WHERE c.device_id = d.id AND c.state = 'issued' AND c.not_after > $1), \
             (SELECT MIN(c.renew_after) FROM certificates c WHERE c.device_id = d.id AND c.state = 'issued' AND c.not_after > $1) \
             FROM devices d ORDER BY d.name LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DeviceSummary {
                    name: r.try_get(0)?,
                    blocked: r.try_get::<i64, _>(1)? != 0,
                    created_at: r.try_get(2)?,
                    last_seen: r.try_get(3)?,
                    certificates: r.try_get(4)?,
                    next_renewal: r.try_get(5)?,
                })
            })
            .collect()
    }

    /// Issued certificates whose renewal time passed before `overdue_before` (still not
    /// renewed), with the latest refusal about them or their device (from the audit log).
    pub async fn stuck(&self, now: i64, overdue_before: i64, limit: i64) -> Result<Vec<StuckRow>> {
        let rows = sqlx::query(
            "SELECT d.name, d.blocked, c.serial, c.template, c.renew_after, c.not_after, \
             (SELECT a.detail FROM audit_events a WHERE a.subject IN (c.serial, d.name) AND a.outcome = 'refused' \
              ORDER BY a.at DESC, a.id DESC LIMIT 1), \
             (SELECT a.at FROM audit_events a WHERE a.subject IN (c.serial, d.name) AND a.outcome = 'refused' \
              ORDER BY a.at DESC, a.id DESC LIMIT 1) \
             FROM certificates c JOIN devices d ON d.id = c.device_id \
             WHERE c.state = 'issued' AND c.renew_after < $2 AND c.not_after > $1 - 2592000 \
             ORDER BY c.renew_after LIMIT $3",
        )
        .bind(now)
        .bind(overdue_before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StuckRow {
                    device: r.try_get(0)?,
                    blocked: r.try_get::<i64, _>(1)? != 0,
                    serial: r.try_get(2)?,
                    template: r.try_get(3)?,
                    renew_after: r.try_get(4)?,
                    not_after: r.try_get(5)?,
                    last_error: r.try_get(6)?,
                    last_error_at: r.try_get(7)?,
                })
            })
            .collect()
    }

    /// Renewals already placed per minute in `[from, to)` (issued or being signed), keyed by
    /// the minute's start: one range scan over `certificates_due`.
    pub async fn renewals_per_minute(&self, from: i64, to: i64) -> Result<std::collections::HashMap<i64, i64>> {
        let rows = sqlx::query(
            "SELECT (renew_after / 60) * 60, COUNT(*) FROM certificates \
             WHERE state IN ('issued', 'signing') AND renew_after >= $1 AND renew_after < $2 GROUP BY 1",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get::<i64, _>(0)?, r.try_get::<i64, _>(1)?))).collect()
    }

    pub async fn certificates(&self, limit: i64) -> Result<Vec<CertificateRow>> {
        let sql = concat!(
            "SELECT ",
            certificate_columns!(),
            " FROM certificates c JOIN devices d ON d.id = c.device_id ORDER BY c.created_at DESC, c.serial LIMIT $1"
        );
        let rows = sqlx::query(sql).bind(limit).fetch_all(&self.pool).await?;
        rows.iter().map(CertificateRow::from_row).collect()
    }

    /// Revokes an unrevoked certificate. False when unknown or already revoked.
    pub async fn revoke_certificate(&self, serial: &str, reason: &str, now: i64) -> Result<bool> {
        let _writer = self.writer().await;
        let r = sqlx::query(
            "UPDATE certificates SET state = 'revoked', revoked_at = $2, revocation_reason = $3 \
             WHERE serial = $1 AND state IN ('issued', 'renewed')",
        )
        .bind(serial)
        .bind(now)
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// The certificate that renewed `serial`, if any.
    pub async fn successor(&self, serial: &str) -> Result<Option<CertificateRow>> {
        let sql = concat!(
            "SELECT ",
            certificate_columns!(),
            " FROM certificates c JOIN devices d ON d.id = c.device_id WHERE c.previous_serial = $1 \
             ORDER BY c.created_at DESC LIMIT 1"
        );
        let row = sqlx::query(sql).bind(serial).fetch_optional(&self.pool).await?;
        row.as_ref().map(CertificateRow::from_row).transpose()
    }

    pub async fn set_device_blocked(&self, name: &str, blocked: bool) -> Result<bool> {
        let _writer = self.writer().await;
        let r = sqlx::query("UPDATE devices SET blocked = $2 WHERE name = $1")
            .bind(name)
            .bind(blocked as i64)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn request(&self, id: i64) -> Result<Option<RequestRow>> {
        let row = sqlx::query(
            "SELECT r.id, r.device_id, d.name, r.requester, r.template, r.kind, r.status, r.csr_der, r.serial, \
             r.detail, r.created_at, r.updated_at, r.previous_serial FROM requests r \
             JOIN devices d ON d.id = r.device_id WHERE r.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(RequestRow::from_row).transpose()
    }

    /// Moves a request from one status to another; false when it was not in `from`.
    pub async fn transition_request(&self, id: i64, from: &str, to: &str, detail: &str, now: i64) -> Result<bool> {
        let _writer = self.writer().await;
        let r =
            sqlx::query("UPDATE requests SET status = $3, detail = $4, updated_at = $5 WHERE id = $1 AND status = $2")
                .bind(id)
                .bind(from)
                .bind(to)
                .bind(detail)
                .bind(now)
                .execute(&self.pool)
                .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Replaces what a device reported about itself (e.g. MS-MDE2 AdditionalContext items).
    pub async fn set_device_attributes(&self, device_id: i64, items: &[(String, String)], now: i64) -> Result<()> {
        let _writer = self.writer().await;
        let mut tx = self.pool.begin().await?;
        for (name, value) in items {
            sqlx::query(
                "INSERT INTO device_attributes (device_id, name, value, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (device_id, name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )
            .bind(device_id)
            .bind(name)
            .bind(value)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn device_attributes(&self, device_id: i64) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT name, value FROM device_attributes WHERE device_id = $1 ORDER BY name")
            .bind(device_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    // ---- audit

    pub async fn audit(&self, e: &AuditEvent) -> Result<()> {
        let _writer = self.writer().await;
        let mut tx = self.pool.begin().await?;
        insert_audit(&mut tx, e).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn audit_events(&self, limit: i64) -> Result<Vec<AuditEvent>> {
        let rows = sqlx::query(
            "SELECT at, actor, action, subject, outcome, detail FROM audit_events ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r: &AnyRow| {
                Ok(AuditEvent {
                    at: r.try_get(0)?,
                    actor: r.try_get(1)?,
                    action: r.try_get(2)?,
                    subject: r.try_get(3)?,
                    outcome: r.try_get(4)?,
                    detail: r.try_get(5)?,
                })
            })
            .collect()
    }
}

async fn insert_audit(tx: &mut sqlx::Transaction<'_, sqlx::Any>, e: &AuditEvent) -> Result<()> {
    sqlx::query("INSERT INTO audit_events (at, actor, action, subject, outcome, detail) VALUES ($1,$2,$3,$4,$5,$6)")
        .bind(e.at)
        .bind(&e.actor)
        .bind(&e.action)
        .bind(&e.subject)
        .bind(&e.outcome)
        .bind(&e.detail)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn intent_in(tx: &mut sqlx::Transaction<'_, sqlx::Any>, c: &CertificateIntent<'_>, now: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO certificates (serial, request_id, device_id, template, template_major, template_minor, \
             subject, thumbprint, not_before, not_after, state, der, created_at, previous_serial, renew_after) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,NULL,$8,$9,'signing',NULL,$10,$11,$12)",
    )
    .bind(c.serial)
    .bind(c.request_id)
    .bind(c.device_id)
    .bind(c.template)
    .bind(c.template_major)
    .bind(c.template_minor)
    .bind(c.subject)
    .bind(c.not_before)
    .bind(c.not_after)
    .bind(now)
    .bind(c.previous_serial)
    .bind(c.renew_after)
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE requests SET serial = $2, status = 'signing', updated_at = $3 WHERE id = $1")
        .bind(c.request_id)
        .bind(c.serial)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
