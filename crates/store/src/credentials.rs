//! Who may ask: enrollment accounts, one-time bootstrap tokens, admin API tokens. Only hashes
//! of secrets are stored; single use is one conditional UPDATE (exactly once across replicas).
use crate::{duplicate, join_list, split_list, Result, Store};
use autoenroll_core::UnixTime;
use sqlx::FromRow;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    /// `pbkdf2-sha256$<iterations>$<salt>$<hash>`.
    pub password_hash: String,
    /// Templates this account may enroll; empty = every one whose grants name it.
    pub templates: Vec<String>,
    pub disabled: bool,
    pub created_at: UnixTime,
    /// Groups templates may grant enrollment to (`account-group:NAME`).
    pub groups: Vec<String>,
    /// Device-name patterns this account may enroll for (`*` any).
    pub devices: Vec<String>,
}

row_struct! {
    struct AccountRow {
        name: String,
        password_hash: String,
        templates: String,
        disabled: i64,
        created_at: i64,
        groups: String,
        devices: String,
    }
}

impl From<AccountRow> for Account {
    fn from(r: AccountRow) -> Account {
        Account {
            templates: split_list(&r.templates),
            groups: split_list(&r.groups),
            devices: split_list(&r.devices),
            name: r.name,
            password_hash: r.password_hash,
            disabled: r.disabled != 0,
            created_at: UnixTime(r.created_at),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    pub id: String,
    /// SHA-256 of the secret part.
    pub secret_hash: Vec<u8>,
    pub device: String,
    pub template: Option<String>,
    pub expires_at: UnixTime,
    pub used_at: Option<UnixTime>,
    pub created_at: UnixTime,
    /// Set for a sign-in token: it authenticates as this account (for any device the account
    /// may act for) instead of reserving `device`.
    pub account: Option<String>,
}

#[derive(FromRow)]
struct TokenRow {
    id: String,
    secret_hash: Vec<u8>,
    device: String,
    template: Option<String>,
    expires_at: i64,
    used_at: Option<i64>,
    created_at: i64,
    account: Option<String>,
}

impl From<TokenRow> for BootstrapToken {
    fn from(r: TokenRow) -> BootstrapToken {
        BootstrapToken {
            id: r.id,
            secret_hash: r.secret_hash,
            device: r.device,
            template: r.template,
            expires_at: UnixTime(r.expires_at),
            used_at: r.used_at.map(UnixTime),
            created_at: UnixTime(r.created_at),
            account: r.account,
        }
    }
}

/// An unrevoked admin API token: whose it is, and the hash of its secret.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct AdminToken {
    pub name: String,
    pub secret_hash: Vec<u8>,
}

impl Store {
    pub async fn insert_account(&self, a: &Account) -> Result<()> {
        let _writer = self.writer().await;
        sqlx::query(
            "INSERT INTO accounts (name, password_hash, templates, disabled, created_at, groups, devices) \
             VALUES ($1,$2,$3,$4,$5,$6,$7)",
        )
        .bind(&a.name)
        .bind(&a.password_hash)
        .bind(join_list(&a.templates))
        .bind(i64::from(a.disabled))
        .bind(a.created_at.0)
        .bind(join_list(&a.groups))
        .bind(join_list(&a.devices))
        .execute(&self.pool)
        .await
        .map_err(duplicate(|| format!("account {}", a.name)))?;
        Ok(())
    }

    pub async fn account(&self, name: &str) -> Result<Option<Account>> {
        const SQL: &str =
            "SELECT name, password_hash, templates, disabled, created_at, groups, devices FROM accounts WHERE name = $1";
        let row = match &self.sqlite {
            Some(sqlite) => sqlite.readers.one(SQL, &[&name], AccountRow::from_sqlite)?,
            None => sqlx::query_as::<_, AccountRow>(SQL).bind(name).fetch_optional(&self.pool).await?,
        };
        Ok(row.map(Account::from))
    }

    /// Replaces an account's password hash if it is still `old` (a rehash must not undo a
    /// password change made meanwhile); false otherwise.
    pub async fn replace_password_hash(&self, name: &str, old: &str, password_hash: &str) -> Result<bool> {
        let _writer = self.writer().await;
        let r = sqlx::query("UPDATE accounts SET password_hash = $3 WHERE name = $1 AND password_hash = $2")
            .bind(name)
            .bind(old)
            .bind(password_hash)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Disables or enables an account; false when there is no such account.
    pub async fn set_account_disabled(&self, name: &str, disabled: bool) -> Result<bool> {
        let _writer = self.writer().await;
        let r = sqlx::query("UPDATE accounts SET disabled = $2 WHERE name = $1")
            .bind(name)
            .bind(i64::from(disabled))
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn insert_token(&self, t: &BootstrapToken) -> Result<()> {
        let _writer = self.writer().await;
        sqlx::query(
            "INSERT INTO bootstrap_tokens (id, secret_hash, device, template, expires_at, used_at, created_at, account) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
        )
        .bind(&t.id)
        .bind(&t.secret_hash)
        .bind(&t.device)
        .bind(&t.template)
        .bind(t.expires_at.0)
        .bind(t.used_at.map(|u| u.0))
        .bind(t.created_at.0)
        .bind(&t.account)
        .execute(&self.pool)
        .await
        .map_err(duplicate(|| format!("bootstrap token {}", t.id)))?;
        Ok(())
    }

    pub async fn token(&self, id: &str) -> Result<Option<BootstrapToken>> {
        let row = sqlx::query_as::<_, TokenRow>(
            "SELECT id, secret_hash, device, template, expires_at, used_at, created_at, account FROM bootstrap_tokens \
             WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(BootstrapToken::from))
    }

    /// Marks a token used if it is still unused and unexpired. Exactly one caller wins, even
    /// across server replicas: the condition and the write are one statement.
    pub async fn consume_token(&self, id: &str, now: UnixTime) -> Result<bool> {
        let _writer = self.writer().await;
        let r = sqlx::query(
            "UPDATE bootstrap_tokens SET used_at = $2 WHERE id = $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(id)
        .bind(now.0)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn insert_admin_token(&self, id: &str, name: &str, secret_hash: &[u8], now: UnixTime) -> Result<()> {
        let _writer = self.writer().await;
        sqlx::query(
            "INSERT INTO admin_tokens (id, name, secret_hash, created_at, revoked_at) VALUES ($1,$2,$3,$4,NULL)",
        )
        .bind(id)
        .bind(name)
        .bind(secret_hash)
        .bind(now.0)
        .execute(&self.pool)
        .await
        .map_err(duplicate(|| format!("admin token {id}")))?;
        Ok(())
    }

    /// An unrevoked admin token by id.
    pub async fn admin_token(&self, id: &str) -> Result<Option<AdminToken>> {
        Ok(sqlx::query_as::<_, AdminToken>(
            "SELECT name, secret_hash FROM admin_tokens WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Revokes every token of that name; returns how many.
    pub async fn revoke_admin_token(&self, name: &str, now: UnixTime) -> Result<u64> {
        let _writer = self.writer().await;
        let r = sqlx::query("UPDATE admin_tokens SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL")
            .bind(name)
            .bind(now.0)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }
}
