//! Storage rows: plain data mirroring the tables.
use crate::Result;
use serde::{Deserialize, Serialize};
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, Row};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateRow {
    pub name: String,
    pub oid: String,
    pub major: i64,
    pub minor: i64,
    pub description: String,
    pub validity_secs: i64,
    pub renewal_secs: i64,
    /// Key algorithm the agent generates (`p256`, `p384`, `rsa2048`, ...).
    pub key_algorithm: String,
    pub min_key_bits: i64,
    /// Comma-separated RFC 5280 key usage names.
    pub key_usage: String,
    /// Comma-separated EKU names or OIDs.
    pub ext_key_usage: String,
    /// `identity`: subject built from the authenticated device; `request`: enrollee supplies it.
    pub subject_from: String,
    pub allow_san: bool,
    pub enroll: bool,
    pub autoenroll: bool,
    pub pend_all: bool,
    pub same_key_renewal: bool,
    /// Comma-separated names of templates this one supersedes.
    pub superseded: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// How long before the renewal window a renewal is still accepted (manual early renewal).
    pub renewal_grace_secs: i64,
    /// MDM RetryInterval: how often a device retries a failed renewal.
    pub retry_interval_secs: i64,
}

impl TemplateRow {
    pub(crate) fn from_row(r: &AnyRow) -> Result<TemplateRow> {
        Ok(TemplateRow {
            name: r.try_get(0)?,
            oid: r.try_get(1)?,
            major: r.try_get(2)?,
            minor: r.try_get(3)?,
            description: r.try_get(4)?,
            validity_secs: r.try_get(5)?,
            renewal_secs: r.try_get(6)?,
            key_algorithm: r.try_get(7)?,
            min_key_bits: r.try_get(8)?,
            key_usage: r.try_get(9)?,
            ext_key_usage: r.try_get(10)?,
            subject_from: r.try_get(11)?,
            allow_san: r.try_get::<i64, _>(12)? != 0,
            enroll: r.try_get::<i64, _>(13)? != 0,
            autoenroll: r.try_get::<i64, _>(14)? != 0,
            pend_all: r.try_get::<i64, _>(15)? != 0,
            same_key_renewal: r.try_get::<i64, _>(16)? != 0,
            superseded: r.try_get(17)?,
            created_at: r.try_get(18)?,
            updated_at: r.try_get(19)?,
            renewal_grace_secs: r.try_get(20)?,
            retry_interval_secs: r.try_get(21)?,
        })
    }

    pub(crate) fn bind_all<'q>(&'q self, q: Query<'q, Any, AnyArguments>) -> Query<'q, Any, AnyArguments> {
        q.bind(&self.name)
            .bind(&self.oid)
            .bind(self.major)
            .bind(self.minor)
            .bind(&self.description)
            .bind(self.validity_secs)
            .bind(self.renewal_secs)
            .bind(&self.key_algorithm)
            .bind(self.min_key_bits)
            .bind(&self.key_usage)
            .bind(&self.ext_key_usage)
            .bind(&self.subject_from)
            .bind(self.allow_san as i64)
            .bind(self.enroll as i64)
            .bind(self.autoenroll as i64)
            .bind(self.pend_all as i64)
            .bind(self.same_key_renewal as i64)
            .bind(&self.superseded)
            .bind(self.created_at)
            .bind(self.updated_at)
            .bind(self.renewal_grace_secs)
            .bind(self.retry_interval_secs)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRow {
    pub name: String,
    pub password_hash: String,
    /// Comma-separated template names this account may enroll; empty = every enrollable one.
    pub templates: String,
    pub disabled: bool,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub id: String,
    pub secret_hash: Vec<u8>,
    pub device: String,
    pub template: Option<String>,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceRow {
    pub id: i64,
    pub name: String,
    pub blocked: bool,
    pub created_at: i64,
    pub last_seen: i64,
}

impl DeviceRow {
    pub(crate) fn from_row(r: &AnyRow) -> Result<DeviceRow> {
        Ok(DeviceRow {
            id: r.try_get(0)?,
            name: r.try_get(1)?,
            blocked: r.try_get::<i64, _>(2)? != 0,
            created_at: r.try_get(3)?,
            last_seen: r.try_get(4)?,
        })
    }
}

pub struct NewRequest<'a> {
    pub device_id: i64,
    pub requester: &'a str,
    pub template: &'a str,
    /// `enroll` or `renew`.
    pub kind: &'a str,
    pub status: &'a str,
    pub csr_der: &'a [u8],
    /// For renewals: the certificate being replaced.
    pub previous_serial: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRow {
    pub id: i64,
    pub device_id: i64,
    pub device: String,
    pub requester: String,
    pub template: String,
    pub kind: String,
    /// `received`, `pending`, `signing`, `issued`, `denied`.
    pub status: String,
    pub csr_der: Vec<u8>,
    pub serial: Option<String>,
    pub detail: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub previous_serial: Option<String>,
}

impl RequestRow {
    pub(crate) fn from_row(r: &AnyRow) -> Result<RequestRow> {
        Ok(RequestRow {
            id: r.try_get(0)?,
            device_id: r.try_get(1)?,
            device: r.try_get(2)?,
            requester: r.try_get(3)?,
            template: r.try_get(4)?,
            kind: r.try_get(5)?,
            status: r.try_get(6)?,
            csr_der: r.try_get(7)?,
            serial: r.try_get(8)?,
            detail: r.try_get(9)?,
            created_at: r.try_get(10)?,
            updated_at: r.try_get(11)?,
            previous_serial: r.try_get(12)?,
        })
    }
}

#[derive(Clone, Copy)]
pub struct CertificateIntent<'a> {
    pub serial: &'a str,
    pub request_id: i64,
    pub device_id: i64,
    pub template: &'a str,
    pub template_major: i64,
    pub template_minor: i64,
    pub subject: &'a str,
    pub not_before: i64,
    pub not_after: i64,
    pub previous_serial: Option<&'a str>,
    /// When the renewal window opens (server's view).
    pub renew_after: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertificateRow {
    pub serial: String,
    pub request_id: i64,
    pub device_id: i64,
    pub device: String,
    pub template: String,
    pub template_major: i64,
    pub template_minor: i64,
    pub subject: String,
    pub thumbprint: Option<String>,
    pub not_before: i64,
    pub not_after: i64,
    /// `signing` (recorded, not yet signed), `issued`, later `renewed` / `revoked`.
    pub state: String,
    #[serde(skip)]
    pub der: Option<Vec<u8>>,
    pub created_at: i64,
    /// The certificate this one renewed.
    pub previous_serial: Option<String>,
    pub revoked_at: Option<i64>,
    pub revocation_reason: Option<String>,
    /// When the server considers it due for renewal.
    pub renew_after: Option<i64>,
}

impl CertificateRow {
    pub(crate) fn from_row(r: &AnyRow) -> Result<CertificateRow> {
        Ok(CertificateRow {
            serial: r.try_get(0)?,
            request_id: r.try_get(1)?,
            device_id: r.try_get(2)?,
            device: r.try_get(3)?,
            template: r.try_get(4)?,
            template_major: r.try_get(5)?,
            template_minor: r.try_get(6)?,
            subject: r.try_get(7)?,
            thumbprint: r.try_get(8)?,
            not_before: r.try_get(9)?,
            not_after: r.try_get(10)?,
            state: r.try_get(11)?,
            der: r.try_get(12)?,
            created_at: r.try_get(13)?,
            previous_serial: r.try_get(14)?,
            revoked_at: r.try_get(15)?,
            revocation_reason: r.try_get(16)?,
            renew_after: r.try_get(17)?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEvent {
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub outcome: String,
    pub detail: String,
}

/// A one-time SCEP challenge and the request it was made for. Name lists are comma-separated,
/// lower-case and sorted; an empty list expects none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeRow {
    pub id: String,
    pub secret_hash: Vec<u8>,
    pub device: String,
    pub template: String,
    pub subject: String,
    pub dns_names: String,
    pub ip_addrs: String,
    pub min_key_bits: i64,
    pub ext_key_usage: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    pub used_transaction: Option<String>,
    pub used_key: Option<String>,
}

/// A certificate as the renewal scan sees it (no DER: the scan decides, it does not serve).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DueCertificate {
    pub serial: String,
    pub device_id: i64,
    pub template: String,
    pub template_major: i64,
    pub thumbprint: Option<String>,
    pub not_after: i64,
    pub renew_after: i64,
}

/// A stored CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlRow {
    pub number: i64,
    pub this_update: i64,
    pub next_update: i64,
    pub der: Vec<u8>,
}

/// A revoked certificate as a CRL lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedRow {
    pub serial: String,
    pub revoked_at: i64,
    pub reason: String,
}

/// Which certificates `certificates_matching` returns; empty / None fields match everything.
#[derive(Debug, Clone, Default)]
pub struct CertificateFilter {
    pub expiring_before: Option<i64>,
    pub template: Option<String>,
    pub template_major: Option<i64>,
    pub state: Option<String>,
    /// One device, or several comma-separated.
    pub device: Option<String>,
    pub issued_before: Option<i64>,
    pub limit: i64,
}

impl CertificateFilter {
    /// Binds `$1`..`$6` of a filtered query; absent fields bind values that match everything
    /// (so the SQL stays one literal for both backends).
    pub(crate) fn bind<'q>(&'q self, q: Query<'q, Any, AnyArguments>) -> Query<'q, Any, AnyArguments> {
        q.bind(self.expiring_before.unwrap_or(i64::MAX))
            .bind(self.template.as_deref().unwrap_or_default())
            .bind(self.template_major.unwrap_or(-1))
            .bind(self.state.as_deref().unwrap_or_default())
            .bind(self.device.as_deref().unwrap_or_default())
            .bind(self.issued_before.unwrap_or(i64::MAX))
    }
}

/// A device with what the inventory knows about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceSummary {
    pub name: String,
    pub blocked: bool,
    pub created_at: i64,
    pub last_seen: i64,
    /// Certificates currently issued (not renewed, revoked or expired).
    pub certificates: i64,
    /// The earliest renewal time among them.
    pub next_renewal: Option<i64>,
}

/// A certificate whose renewal is overdue, with the device's latest refusal if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StuckRow {
    pub device: String,
    pub blocked: bool,
    pub serial: String,
    pub template: String,
    pub renew_after: i64,
    pub not_after: i64,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
}
