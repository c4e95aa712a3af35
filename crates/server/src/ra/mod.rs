//! The registration authority: authentication, template policy, enrollment. The only module
//! that uses the store and the CA (rule R3); front ends call it with wire-free inputs and get
//! domain types, an `Outcome` (issued or pending) or an `RaError` (a `Refusal`, or internal).
mod acme;
mod admin;
mod auth;
mod checkin;
mod console;
mod crl;
mod enroll;
mod error;
mod lifecycle;
mod mdm;
mod ocsp;
mod policy;
mod renew;
mod scep;
pub mod secrets;
mod templates;
mod throttle;

pub use acme::{
    AcmeAccount, AcmeOrder, AcmeSettings, AuthzStatus, ChallengeKind, OrderBody, OrderStatus, RenewalInfo, Revoker,
    StoredProblem,
};
pub use admin::{AccountSpec, TemplateSpec, TokenSpec};
pub use auth::{Credentials, Principal, PrincipalKind, Purpose};
pub use autoenroll_ca::ChainUpkeep;
pub use autoenroll_core::model::{CertState, DeviceState, RevocationReason, Template};
pub use autoenroll_store::{
    AuditEvent, AuditFilter, Certificate, CertificateFilter, DeviceFilter, DeviceSummary, FleetSummary,
    InvalidTemplate, Request, StateCount, Stuck, Templates, DAY_SECS, WEEK_SECS,
};
/// The store's SQLite statement and hand-off counters and its writer thread's name, for
/// `autoenroll bench issue` (the CLI reaches the store only through the RA).
pub use autoenroll_store::{
    SQLITE_CONTROL_STATEMENTS, SQLITE_STATEMENTS, SQLITE_WRITER_HANDOFFS, SQLITE_WRITER_THREAD,
};
pub use checkin::{thumbprint_of, CheckinAnswer, CheckinReport, Directive, HeldView, Verdict};
pub use console::{ConsoleSession, SESSION_SECS};
pub use crl::{ISSUING_PATH, ROOT_CRL_PATH, ROOT_PATH};
pub use enroll::{EnrollInput, Issued, Outcome, PENDING_POLL_SECS};
pub use error::RaError;
pub use mdm::{MdmSettings, SIGN_IN_TOKEN_SECS};
pub use policy::PolicyView;
pub use renew::Window;
pub use scep::{ChallengeSpec, ScepRequest};
pub use throttle::{ACCOUNT_LIMIT, ADDRESS_LIMIT, LOCK_SECS, WINDOW_SECS};

use autoenroll_ca::Ca;
use autoenroll_core::clock::Clock;
use autoenroll_core::model::AuditOutcome;
use autoenroll_core::UnixTime;
use autoenroll_store::Store;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What the RA needs from the configuration.
#[derive(Debug, Clone)]
pub struct RaSettings {
    pub data_dir: PathBuf,
    pub database_url: String,
    pub key_algorithm: autoenroll_ca::KeyAlgorithm,
    pub organization: String,
    /// Template used when a request names none.
    pub default_template: String,
    pub next_update_hours: u32,
    /// Template Windows MDM enrollment issues from.
    pub mdm_template: String,
    /// Template `/scep` issues from (`/scep/<template>` names another).
    pub scep_template: String,
    /// Accept DES and 3DES request envelopes (old devices; micromdm's scepclient).
    pub scep_legacy_ciphers: bool,
    /// The server's own names and addresses: never issued to anyone else (unless a template
    /// allows it), so no certificate of ours can impersonate the server to its agents.
    pub server_names: autoenroll_core::model::ServerNames,
    /// How long a renewed certificate stays good when its successor is not used (it is revoked
    /// as superseded at the successor's first use, or after this).
    pub superseded_grace_secs: i64,
    /// Count failed secrets per client address too (off behind a reverse proxy, where every
    /// client has the proxy's address).
    pub count_addresses: bool,
    pub acme: AcmeSettings,
}

/// The actor of administrative actions taken at the server's command line (the admin API uses
/// `admin:<token name>`).
pub const LOCAL_ADMIN: &str = "admin";
const SERVER_NAMES_SETTING: &str = "server.names";

/// The embedded default: SQLite in the data directory.
pub fn default_database_url(data_dir: &Path) -> String {
    Store::sqlite_url(&data_dir.join("autoenroll.db"))
}

/// Whether `data_dir` already holds a CA hierarchy.
pub fn ca_exists(data_dir: &Path) -> bool {
    autoenroll_ca::exists(&data_dir.join("ca"))
}

/// A revocation reason by its RFC 5280 name, or the refusal that lists the names.
pub fn revocation_reason(name: &str) -> Result<RevocationReason, RaError> {
    name.parse().map_err(|_| {
        autoenroll_core::Refusal::InvalidReason { reason: name.to_string(), allowed: RevocationReason::names() }.into()
    })
}

pub struct Ra {
    store: Store,
    ca: Ca,
    scep: autoenroll_ca::ScepRa,
    clock: Arc<dyn Clock>,
    settings: RaSettings,
    /// When each misconfigured template was last reported (once an hour, not per request).
    reported_invalid: std::sync::Mutex<std::collections::HashMap<String, UnixTime>>,
    /// Password hashes in flight (one per CPU).
    hashing: Arc<tokio::sync::Semaphore>,
    /// Refused requests audited this minute (`throttle::MAX_REFUSAL_AUDITS_PER_MINUTE`).
    refusal_audits: throttle::RefusalAudits,
    /// The console's session MAC key, read from the store once.
    console_key: std::sync::OnceLock<[u8; 32]>,
    /// The ACME nonce MAC key, derived by the CA layer once (every ACME request uses it twice).
    acme_nonce_key: std::sync::OnceLock<aws_lc_rs::hmac::Key>,
    /// SCEP static challenges already checked against their slow hash.
    verified_challenges: secrets::VerifiedSecrets,
}

impl Ra {
    /// Opens the data directory, creating the CA hierarchy, the database and the default
    /// templates on first use.
    pub async fn open(settings: RaSettings, clock: Arc<dyn Clock>) -> Result<Ra, RaError> {
        let now = clock.now();
        let ca_dir = settings.data_dir.join("ca");
        let dir = &settings.data_dir;
        if dir.exists() && !dir.is_dir() {
            return Err(RaError::internal(format!(
                "data directory {} is a file, not a directory: choose another --data-dir (or data_dir)",
                dir.display()
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| {
            RaError::internal(format!(
                "cannot create the data directory {}: {e} (it must be writable by the user the server runs as)",
                dir.display()
            ))
        })?;
        let probe = dir.join(".autoenroll-write-test");
        let writable = std::fs::write(&probe, b"").and_then(|()| std::fs::remove_file(&probe));
        if let Err(e) = writable {
            return Err(RaError::internal(format!(
                "data directory {} is not writable: {e} (it must be writable by the user the server runs as)",
                dir.display()
            )));
        }
        // The data directory holds keys and the database: the owner's alone, whatever the umask.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&settings.data_dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| RaError::internal(format!("{}: {e}", settings.data_dir.display())))?;
        }
        let ca = if autoenroll_ca::exists(&ca_dir) {
            autoenroll_ca::load(&ca_dir)?
        } else {
            tracing::info!(dir = %ca_dir.display(), alg = %settings.key_algorithm, "creating CA hierarchy");
            autoenroll_ca::init(&ca_dir, settings.key_algorithm, &settings.organization, now)?
        };
        let scep = autoenroll_ca::scep_ra(&ca_dir, &ca, &settings.organization, now)?;
        let store = Store::open(&settings.database_url).await?;
        let mut settings = settings;
        // The names a running server answers to (its flags may add some the configuration
        // file does not have): reserved here too, e.g. when the CLI approves a request.
        if let Some(stored) = store.setting(SERVER_NAMES_SETTING).await? {
            for name in stored.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                match name.parse::<std::net::IpAddr>() {
                    Ok(ip) if !settings.server_names.ips.contains(&ip) => settings.server_names.ips.push(ip),
                    Ok(_) => {}
                    Err(_) if !settings.server_names.dns.iter().any(|d| d.eq_ignore_ascii_case(name)) => {
                        settings.server_names.dns.push(name.to_string())
                    }
                    Err(_) => {}
                }
            }
        }
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let hashing = Arc::new(tokio::sync::Semaphore::new(cpus));
        let ra = Ra {
            store,
            ca,
            scep,
            clock,
            settings,
            reported_invalid: Default::default(),
            hashing,
            refusal_audits: Default::default(),
            console_key: Default::default(),
            acme_nonce_key: Default::default(),
            verified_challenges: Default::default(),
        };
        ra.store.upsert_ca("root", ra.ca.root_der(), now).await?;
        // The issuing certificate other processes published (a re-certified one) stays; the
        // upkeep adopts it.
        if ra.store.ca("issuing").await?.is_none() {
            ra.store.upsert_ca("issuing", &ra.ca.issuing_der(), now).await?;
        }
        templates::ensure_defaults(&ra).await?;
        // The URLs the running server names in certificates, until it says otherwise.
        if let Some(base) = ra.store.setting(crl::PUBLIC_BASE_SETTING).await? {
            ra.set_public_base(&base);
        }
        Ok(ra)
    }

    /// Records the names this server answers to, so every process on this database reserves
    /// them (see `open`).
    pub async fn remember_server_names(&self) -> Result<(), RaError> {
        let names = &self.settings.server_names;
        let mut all: Vec<String> = names.dns.iter().map(|d| d.to_ascii_lowercase()).collect();
        all.extend(names.ips.iter().map(|ip| ip.to_string()));
        all.sort();
        all.dedup();
        self.store.set_setting(SERVER_NAMES_SETTING, &all.join(",")).await?;
        Ok(())
    }

    /// Logs stored templates that no longer validate, each at most once an hour.
    pub(crate) fn report_invalid(&self, invalid: &[autoenroll_store::InvalidTemplate]) {
        if invalid.is_empty() {
            return;
        }
        let now = self.now();
        let mut seen = match self.reported_invalid.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        for bad in invalid {
            let due = seen.get(&bad.name).is_none_or(|last| now.0 - last.0 >= 3600);
            if due {
                tracing::error!(template = %bad.name, reason = %bad.reason, "stored template does not validate; left out of policy (repair it with `template update`)");
                seen.insert(bad.name.clone(), now);
            }
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.settings.data_dir
    }

    pub fn now(&self) -> UnixTime {
        self.clock.now()
    }

    /// The clock RA decisions use; the TLS layer checks certificate validity with it too.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    pub fn root_der(&self) -> &[u8] {
        self.ca.root_der()
    }

    /// Moves the root's private key out of the data directory to `out` (0600, never
    /// overwriting): from then on the running server never holds it.
    pub fn export_root_key(&self, out: &Path) -> Result<(), RaError> {
        Ok(autoenroll_ca::export_root_key(&self.settings.data_dir.join("ca"), out)?)
    }

    /// A backup in `out` (a new directory, 0700): an online snapshot of the SQLite database
    /// (`autoenroll.db`), the CA files (`ca/`) and the listener identity (`tls/`), modes kept.
    /// With PostgreSQL the files are copied and the database is left to pg_dump (said in the
    /// list returned).
    pub async fn backup(&self, out: &Path) -> Result<Vec<String>, RaError> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir(out)
            .map_err(|e| RaError::internal(format!("{}: {e} (give a new directory)", out.display())))?;
        std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| RaError::internal(format!("{}: {e}", out.display())))?;
        let mut written = Vec::new();
        match self.store.backend() {
            autoenroll_store::Backend::Sqlite => {
                let db = out.join("autoenroll.db");
                self.store.backup_to(&db).await?;
                // It holds password, token and challenge hashes: the owner's alone.
                std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| RaError::internal(format!("{}: {e}", db.display())))?;
                written.push("autoenroll.db".to_string());
            }
            autoenroll_store::Backend::Postgres => {
                written.push("(the PostgreSQL database is not in it: back it up with pg_dump)".to_string())
            }
        }
        for sub in ["ca", "tls"] {
            let from = self.settings.data_dir.join(sub);
            if from.is_dir() {
                let files = autoenroll_ca::backup_files(&from, &out.join(sub))?;
                written.extend(files.into_iter().map(|f| format!("{sub}/{f}")));
            }
        }
        self.audit(LOCAL_ADMIN, "server.backup", &out.display().to_string(), AuditOutcome::Ok, &written.join(","))
            .await;
        Ok(written)
    }

    /// The template a request that names none gets (`default_template`).
    pub fn default_template(&self) -> &str {
        &self.settings.default_template
    }

    /// The chain a client needs above its certificate: issuing CA, then root.
    pub fn chain_der(&self) -> Vec<Vec<u8>> {
        vec![self.ca.issuing_der().to_vec(), self.ca.root_der().to_vec()]
    }

    async fn audit(&self, actor: &str, action: &str, subject: &str, outcome: AuditOutcome, detail: &str) {
        let e = AuditEvent {
            at: self.now(),
            actor: actor.to_string(),
            action: action.to_string(),
            subject: subject.to_string(),
            outcome,
            detail: detail.to_string(),
        };
        if let Err(err) = self.store.audit(&e).await {
            tracing::error!(%err, action, "could not write audit event");
        }
    }

    pub async fn audit_events(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, RaError> {
        Ok(self.store.audit_events(filter).await?)
    }

    pub async fn certificates(&self, limit: i64) -> Result<Vec<Certificate>, RaError> {
        Ok(self.store.certificates(limit).await?)
    }

    /// A TLS identity for the listener, issued by our CA and kept under `<data>/tls`;
    /// re-issued when missing, unreadable or within 30 days of expiry.
    pub async fn tls_identity(
        &self,
        hostnames: &[String],
        ips: &[std::net::IpAddr],
    ) -> Result<(String, Vec<Vec<u8>>), RaError> {
        templates::tls_identity(self, hostnames, ips).await
    }
}
