//! Installation settings (key/value) and the CA certificates the server runs with.
use crate::{Result, Store};
use autoenroll_core::UnixTime;
use sqlx::Row;

impl Store {
    pub async fn setting(&self, key: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT value FROM settings WHERE key = $1").bind(key).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| r.try_get::<String, _>("value")).transpose()?)
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

    /// Records a CA certificate by role (`root`, `issuing`); a new one replaces the old.
    pub async fn upsert_ca(&self, name: &str, cert_der: &[u8], now: UnixTime) -> Result<()> {
        let _writer = self.writer().await;
        sqlx::query(
            "INSERT INTO cas (name, cert_der, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET cert_der = excluded.cert_der",
        )
        .bind(name)
        .bind(cert_der)
        .bind(now.0)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The CA certificate recorded under `name`.
    pub async fn ca(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT cert_der FROM cas WHERE name = $1").bind(name).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| r.try_get::<Vec<u8>, _>("cert_der")).transpose()?)
    }

    /// An online, consistent copy of an SQLite database at `path` (`VACUUM INTO`: a snapshot
    /// while the server keeps serving). PostgreSQL is backed up with its own tools (pg_dump).
    pub async fn backup_to(&self, path: &std::path::Path) -> Result<()> {
        match self.backend {
            crate::Backend::Sqlite => {
                let target =
                    path.to_str().ok_or_else(|| crate::StoreError::Io(format!("{}: not UTF-8", path.display())))?;
                sqlx::query("VACUUM INTO $1").bind(target).execute(&self.pool).await?;
                Ok(())
            }
            crate::Backend::Postgres => Err(crate::StoreError::Io(
                "a PostgreSQL database is backed up with pg_dump (see docs/deployment.md)".into(),
            )),
        }
    }
}
