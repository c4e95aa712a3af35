//! The registration authority: authentication, template policy, enrollment. The only module
//! that uses the store and the CA (rule R3); front ends call it with wire-free inputs and get
//! domain types, an `Outcome` (issued or pending) or an `RaError` (a `Refusal`, or internal).
mod admin;
mod auth;
mod checkin;
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

pub use admin::{AccountSpec, TemplateSpec, TokenSpec};
pub use auth::{Credentials, Principal, PrincipalKind, Purpose};
pub use autoenroll_core::model::{CertState, DeviceState, RevocationReason, Template};
pub use autoenroll_store::{
    AuditEvent, AuditFilter, Certificate, CertificateFilter, DeviceSummary, InvalidTemplate, Stuck, Templates,
};
pub use checkin::{thumbprint_of, CheckinAnswer, CheckinReport, Directive, HeldView, Verdict};
pub use enroll::{EnrollInput, Issued, Outcome};
pub use error::RaError;
pub use mdm::MdmSettings;
pub use policy::PolicyView;
pub use renew::Window;
pub use scep::{ChallengeSpec, ScepRequest};

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
}

/// The actor of administrative actions taken at the server's command line (the admin API uses
/// `admin:<token name>`).
pub const LOCAL_ADMIN: &str = "admin";

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
}

impl Ra {
    /// Opens the data directory, creating the CA hierarchy, the database and the default
    /// templates on first use.
    pub async fn open(settings: RaSettings, clock: Arc<dyn Clock>) -> Result<Ra, RaError> {
        let now = clock.now();
        let ca_dir = settings.data_dir.join("ca");
        std::fs::create_dir_all(&settings.data_dir).map_err(RaError::internal)?;
        let ca = if autoenroll_ca::exists(&ca_dir) {
            autoenroll_ca::load(&ca_dir)?
        } else {
            tracing::info!(dir = %ca_dir.display(), alg = %settings.key_algorithm, "creating CA hierarchy");
            autoenroll_ca::init(&ca_dir, settings.key_algorithm, &settings.organization, now)?
        };
        let scep = autoenroll_ca::scep_ra(&ca_dir, &ca, &settings.organization, now)?;
        let store = Store::open(&settings.database_url).await?;
        let ra = Ra { store, ca, scep, clock, settings };
        ra.store.upsert_ca("root", ra.ca.root_der(), now).await?;
        ra.store.upsert_ca("issuing", ra.ca.issuing_der(), now).await?;
        templates::ensure_defaults(&ra).await?;
        Ok(ra)
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
