//! Persistent state behind one type, `Store`, over sqlx's `Any` driver with runtime queries and
//! `$n` placeholders, so the same SQL serves SQLite (embedded default) and PostgreSQL.
//!
//! Rows are read by column name (`sqlx::FromRow`) into private row structs and converted to
//! typed records and domain types (`autoenroll_core::model`) here, once: state and status names
//! are strings only inside this crate. Timestamps are whole seconds since the Unix epoch. One
//! module per area: templates, credentials (accounts, bootstrap and admin tokens), devices,
//! issuance (requests and certificates), revocation (CRLs), scep (challenges and transactions),
//! audit, settings.
#![forbid(unsafe_code)]

/// A row struct read by sqlx (`FromRow`) and by rusqlite (`from_sqlite`, columns by name), so
/// the two drivers share one definition of a row.
macro_rules! row_struct {
    ($(#[$meta:meta])* $vis:vis struct $name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[derive(sqlx::FromRow)]
        $vis struct $name { $($field: $ty),* }

        impl $name {
            fn from_sqlite(r: &rusqlite::Row<'_>) -> rusqlite::Result<$name> {
                Ok($name { $($field: r.get(stringify!($field))?),* })
            }
        }
    };
}

mod acme;
mod audit;
mod credentials;
mod devices;
mod fleet;
mod group;
#[macro_use]
mod issuance;
mod bench;
mod revocation;
mod scep;
mod settings;
mod sqlite_sync;
mod templates;
mod throttle;

pub use acme::{AcmeAccount, AcmeEabKey, AcmeOrder};
pub use audit::{AuditEvent, AuditFilter};
pub use credentials::{Account, AdminToken, BootstrapToken};
pub use devices::{Device, DeviceFilter, DeviceSummary};
pub use fleet::{ActionCount, FleetSummary, StateCount, DAY_SECS, WEEK_SECS};
pub use issuance::{Certificate, CertificateFilter, CertificateIntent, DueCertificate, NewRequest, Request, Stuck};
pub use revocation::{Crl, RevokedEntry};
pub use scep::Challenge;
pub use sqlite_sync::{
    CONTROL_STATEMENTS as SQLITE_CONTROL_STATEMENTS, STATEMENTS as SQLITE_STATEMENTS,
    WRITER_HANDOFFS as SQLITE_WRITER_HANDOFFS, WRITER_THREAD as SQLITE_WRITER_THREAD,
};
pub use templates::{InvalidTemplate, Templates};

use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL {0:?} (use sqlite://PATH or postgres://USER@HOST:PORT/DB)")]
    UnsupportedUrl(String),
    #[error("{0} already exists")]
    Duplicate(String),
    #[error("database file {0}")]
    Io(String),
    /// A group commit that did not commit: none of its writes is on disk.
    #[error("write batch not committed: {0}")]
    Batch(String),
    /// A stored row this version cannot read (an unknown state name, a template that no longer
    /// validates): reported with what and why, never guessed at.
    #[error("stored {what} {key:?} is unreadable: {reason}")]
    Invalid { what: &'static str, key: String, reason: String },
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A primary-key or unique violation, from either driver.
fn is_unique_violation(e: &StoreError) -> bool {
    match e {
        StoreError::Db(sqlx::Error::Database(d)) => d.is_unique_violation(),
        StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
            f.code == rusqlite::ErrorCode::ConstraintViolation
                && [rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY, rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE]
                    .contains(&f.extended_code)
        }
        _ => false,
    }
}

/// A unique-constraint failure (either driver) as `Duplicate(what)`, anything else as it is.
fn duplicate<E: Into<StoreError>>(what: impl FnOnce() -> String) -> impl FnOnce(E) -> StoreError {
    move |e| {
        let e = e.into();
        if is_unique_violation(&e) {
            StoreError::Duplicate(what())
        } else {
            e
        }
    }
}

/// Parses a stored name into a domain enum, or says which row holds what.
fn parse<T: std::str::FromStr>(what: &'static str, key: &str, value: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e: T::Err| StoreError::Invalid { what, key: key.to_string(), reason: e.to_string() })
}

/// Stored lists are comma-separated names (no name may contain a comma).
fn split_list(s: &str) -> Vec<String> {
    s.split(',').map(str::trim).filter(|x| !x.is_empty()).map(str::to_string).collect()
}

fn join_list<T: std::fmt::Display>(items: &[T]) -> String {
    items.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

/// A stored count or version as the unsigned number it is.
fn to_u32(what: &'static str, key: &str, v: i64) -> Result<u32> {
    u32::try_from(v).map_err(|_| StoreError::Invalid {
        what,
        key: key.to_string(),
        reason: format!("{v} out of range"),
    })
}

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
    /// Issuance writes waiting for the next group commit.
    queue: std::sync::Arc<group::Queue>,
    templates: std::sync::Arc<templates::TemplateCache>,
    /// SQLite's group-commit writer thread and inline read connections (None on PostgreSQL).
    sqlite: Option<std::sync::Arc<sqlite_sync::Sqlite>>,
}

/// The file a `sqlite:` URL names, percent-decoded as sqlx decodes it (both drivers must open
/// the same file).
fn sqlite_path(url: &str) -> String {
    let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let path = rest.split('?').next().unwrap_or_default();
    percent_encoding::percent_decode_str(path).decode_utf8_lossy().into_owned()
}

/// The database holds password, token and challenge hashes: the file, its WAL and its shared
/// memory are the owner's alone (0600) whatever the umask. SQLite creates the WAL and SHM
/// files with the database file's mode, so the file is made first, 0600.
fn private_sqlite_files(url: &str) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = sqlite_path(url);
    if path.is_empty() || path == ":memory:" {
        return Err(StoreError::UnsupportedUrl(format!(
            "{url} (SQLite needs a database file: the store's connections and its writer thread share it)"
        )));
    }
    let io = |e: std::io::Error| StoreError::Io(format!("{path}: {e}"));
    std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(&path).map_err(io)?;
    for file in [path.to_string(), format!("{path}-wal"), format!("{path}-shm")] {
        match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
            _ => {}
        }
    }
    Ok(())
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
        if backend == Backend::Sqlite {
            private_sqlite_files(url)?;
        }
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
        let sqlite = match backend {
            Backend::Sqlite => Some(std::sync::Arc::new(sqlite_sync::Sqlite::open(&sqlite_path(url))?)),
            Backend::Postgres => None,
        };
        Ok(Store {
            pool,
            backend,
            write_lock: Default::default(),
            queue: Default::default(),
            templates: std::sync::Arc::new(templates::TemplateCache::trusted_for(match backend {
                // A version check is an inline read of microseconds: every read checks, so the
                // CLI's changes (another process) show at once.
                Backend::Sqlite => Duration::ZERO,
                // A version check is a round trip: replicas may serve a change up to 1 s late.
                Backend::Postgres => Duration::from_secs(1),
            })),
            sqlite,
        })
    }

    /// A handle on the same database with a template cache of its own, trusted for `fresh_for`
    /// before the database's template version is checked again: what another replica sees.
    pub fn with_template_cache(&self, fresh_for: Duration) -> Store {
        let templates = templates::TemplateCache::trusted_for(fresh_for);
        Store { templates: std::sync::Arc::new(templates), ..self.clone() }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Connections in the pool: (open, idle).
    pub fn pool_connections(&self) -> (u32, u32) {
        (self.pool.size(), u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX))
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
}
