//! The JSON shapes of inventory objects, shared by the admin API and the CLI's `--output json`:
//! wire types built from the RA's records (times as Unix seconds, states by name).
use crate::ra::{AuditEvent, Certificate, DeviceState, DeviceSummary, Stuck, Template};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct CertificateJson {
    pub serial: String,
    pub request_id: i64,
    pub device_id: i64,
    pub device: String,
    pub template: String,
    pub template_major: u32,
    pub template_minor: u32,
    pub subject: String,
    pub thumbprint: Option<String>,
    pub not_before: i64,
    pub not_after: i64,
    pub state: &'static str,
    pub created_at: i64,
    pub previous_serial: Option<String>,
    pub revoked_at: Option<i64>,
    pub revocation_reason: Option<&'static str>,
    pub renew_after: Option<i64>,
}

impl From<&Certificate> for CertificateJson {
    fn from(c: &Certificate) -> Self {
        CertificateJson {
            serial: c.serial.clone(),
            request_id: c.request_id,
            device_id: c.device_id,
            device: c.device.clone(),
            template: c.template.clone(),
            template_major: c.template_major,
            template_minor: c.template_minor,
            subject: c.subject.clone(),
            thumbprint: c.thumbprint.clone(),
            not_before: c.not_before.0,
            not_after: c.not_after.0,
            state: c.state.as_str(),
            created_at: c.created_at.0,
            previous_serial: c.previous_serial.clone(),
            revoked_at: c.revoked_at.map(|t| t.0),
            revocation_reason: c.revocation_reason.map(|r| r.as_str()),
            renew_after: c.renew_after.map(|t| t.0),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct DeviceJson {
    pub name: String,
    pub blocked: bool,
    pub created_at: i64,
    pub last_seen: i64,
    pub certificates: i64,
    pub next_renewal: Option<i64>,
}

impl From<&DeviceSummary> for DeviceJson {
    fn from(d: &DeviceSummary) -> Self {
        DeviceJson {
            name: d.name.clone(),
            blocked: d.state == DeviceState::Blocked,
            created_at: d.created_at.0,
            last_seen: d.last_seen.0,
            certificates: d.certificates,
            next_renewal: d.next_renewal.map(|t| t.0),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct StuckJson {
    pub device: String,
    pub blocked: bool,
    pub serial: String,
    pub template: String,
    pub renew_after: i64,
    pub not_after: i64,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
}

/// A request (without its CSR).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RequestJson {
    pub id: i64,
    pub device: String,
    pub requester: String,
    pub template: String,
    pub kind: String,
    pub status: String,
    pub detail: String,
    pub serial: Option<String>,
    pub previous_serial: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<&crate::ra::Request> for RequestJson {
    fn from(r: &crate::ra::Request) -> Self {
        RequestJson {
            id: r.id,
            device: r.device.clone(),
            requester: r.requester.clone(),
            template: r.template.clone(),
            kind: r.kind.to_string(),
            status: r.status.to_string(),
            detail: r.detail.clone(),
            serial: r.serial.clone(),
            previous_serial: r.previous_serial.clone(),
            created_at: r.created_at.0,
            updated_at: r.updated_at.0,
        }
    }
}

impl From<&Stuck> for StuckJson {
    fn from(s: &Stuck) -> Self {
        StuckJson {
            device: s.device.clone(),
            blocked: s.device_blocked,
            serial: s.serial.clone(),
            template: s.template.clone(),
            renew_after: s.renew_after.0,
            not_after: s.not_after.0,
            last_error: s.last_error.clone(),
            last_error_at: s.last_error_at.map(|t| t.0),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct AuditJson {
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub outcome: &'static str,
    pub detail: String,
}

impl From<&AuditEvent> for AuditJson {
    fn from(e: &AuditEvent) -> Self {
        AuditJson {
            at: e.at.0,
            actor: e.actor.clone(),
            action: e.action.clone(),
            subject: e.subject.clone(),
            outcome: e.outcome.as_str(),
            detail: e.detail.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TemplateJson {
    pub name: String,
    pub oid: String,
    pub major: u32,
    pub minor: u32,
    pub description: String,
    pub validity_secs: i64,
    pub renewal_secs: i64,
    pub renewal_grace_secs: i64,
    pub retry_interval_secs: i64,
    pub key_algorithm: String,
    pub min_key_bits: u32,
    pub same_key_renewal: bool,
    pub key_usage: Vec<String>,
    pub ext_key_usage: Vec<String>,
    pub subject_from: &'static str,
    pub allow_san: bool,
    pub enroll: bool,
    pub autoenroll: bool,
    pub pend_all: bool,
    pub supersedes: Vec<String>,
    pub grants: Vec<String>,
    pub key_types: Vec<String>,
    pub dns_suffixes: Vec<String>,
    pub ip_ranges: Vec<String>,
    pub allow_wildcards: bool,
    pub allow_server_names: bool,
    pub renewal_subset: bool,
    pub allow_mdm: bool,
    pub for_users: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<&Template> for TemplateJson {
    fn from(t: &Template) -> Self {
        TemplateJson {
            name: t.name.clone(),
            oid: t.oid.to_string(),
            major: t.major,
            minor: t.minor,
            description: t.description.clone(),
            validity_secs: t.validity_secs,
            renewal_secs: t.renewal_secs,
            renewal_grace_secs: t.renewal_grace_secs,
            retry_interval_secs: t.retry_interval_secs,
            key_algorithm: t.key.algorithm.to_string(),
            min_key_bits: t.key.min_rsa_bits,
            same_key_renewal: t.key.same_key_renewal,
            key_usage: t.key_usage.iter().map(|k| k.to_string()).collect(),
            ext_key_usage: t.ekus.iter().map(|e| e.to_string()).collect(),
            subject_from: t.subject_from.as_str(),
            allow_san: t.allow_san,
            enroll: t.enroll,
            autoenroll: t.autoenroll,
            pend_all: t.pend_all,
            supersedes: t.supersedes.clone(),
            grants: t.grants.iter().map(|g| g.to_string()).collect(),
            key_types: t.key.accept.iter().map(|k| k.to_string()).collect(),
            dns_suffixes: t.names.dns_suffixes.clone(),
            ip_ranges: t.names.ip_ranges.iter().map(|r| r.to_string()).collect(),
            allow_wildcards: t.names.allow_wildcards,
            allow_server_names: t.names.allow_server_names,
            renewal_subset: t.names.renewal_subset,
            allow_mdm: t.allow_mdm,
            for_users: t.for_users,
            created_at: t.created_at.0,
            updated_at: t.updated_at.0,
        }
    }
}

/// A list of records as their JSON shapes.
pub fn list<'a, T: 'a, J: From<&'a T>>(items: &'a [T]) -> Vec<J> {
    items.iter().map(J::from).collect()
}
