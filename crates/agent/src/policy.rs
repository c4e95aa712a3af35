//! Enrollment policy as the agent uses it, converted from the MS-XCEP response.
use crate::AgentError;
use autoenroll_keys::KeyAlgorithm;
use autoenroll_proto::xcep::{ClientAuthentication, GetPoliciesResponse};
use der::Decode;

const ENROLLEE_SUPPLIES_SUBJECT: u32 = 0x1;
const ENROLLEE_SUPPLIES_SUBJECT_ALT_NAME: u32 = 0x10000;
const CLIENT_AUTH: &str = "1.3.6.1.5.5.7.3.2";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub name: String,
    pub oid: String,
    pub major: u32,
    pub minor: u32,
    pub validity_secs: i64,
    pub renewal_secs: i64,
    pub enroll: bool,
    pub auto_enroll: bool,
    pub key_algorithm: KeyAlgorithm,
    pub supplies_subject: bool,
    pub supplies_san: bool,
    pub superseded: Vec<String>,
    /// The issued certificate will have the clientAuth EKU (usable for TLS client auth).
    pub client_auth: bool,
}

impl Template {
    /// The Windows autoenrollment rule with this template's renewal period.
    pub fn renewal_rule(&self) -> autoenroll_core::renewal::RenewalRule {
        autoenroll_core::renewal::RenewalRule::Windows { renewal_period_secs: self.renewal_secs }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub auth: ClientAuthentication,
    pub url: String,
    pub priority: u32,
}

/// Where certificates are asked for.
#[derive(Debug, Clone)]
pub enum Enrollment {
    /// The policy's MS-WSTEP endpoints, by priority.
    Wstep(Vec<Endpoint>),
    /// The configured EST bases (`https://host/.well-known/est`), by priority.
    Est(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub policy_id: String,
    pub next_update_hours: u32,
    pub templates: Vec<Template>,
    pub enrollment: Enrollment,
    /// CA certificates the server published (XCEP's issuing CA, EST's `/cacerts`): candidates
    /// for an issued certificate's chain, which must still end at our trust anchor.
    pub ca_certs: Vec<Vec<u8>>,
    /// (template, why): templates the agent should hold that cannot be acted on this cycle
    /// (an EST label whose CSR attributes cannot be used).
    pub unavailable: Vec<(String, String)>,
}

pub fn from_wire(r: &GetPoliciesResponse) -> Result<Policy, AgentError> {
    let oid = |reference: i32| r.oids.iter().find(|o| o.reference_id == reference);
    let mut templates = Vec::new();
    for p in &r.policies {
        let template_oid = oid(p.oid_reference).ok_or_else(|| {
            AgentError::Protocol(format!("policy {} references unknown OID {}", p.common_name, p.oid_reference))
        })?;
        let alg_oid = p.algorithm_oid_reference.and_then(oid).map(|o| o.value.as_str());
        let key_algorithm = match alg_oid {
            Some("1.2.840.113549.1.1.1") => KeyAlgorithm::Rsa(match p.minimal_key_length {
                0..=2048 => 2048,
                2049..=3072 => 3072,
                _ => 4096,
            }),
            // Named curves (schema 3), or the generic EC OID with the key length.
            Some("1.3.132.0.34") => KeyAlgorithm::P384,
            Some("1.2.840.10045.3.1.7") => KeyAlgorithm::P256,
            _ if p.minimal_key_length > 256 => KeyAlgorithm::P384,
            _ => KeyAlgorithm::P256,
        };
        let client_auth = p.extensions.iter().any(|e| {
            oid(e.oid_reference).is_some_and(|o| o.value == "2.5.29.37")
                && x509_cert::ext::pkix::ExtendedKeyUsage::from_der(&e.value_der)
                    .map(|eku| eku.0.iter().any(|o| o.to_string() == CLIENT_AUTH))
                    .unwrap_or(false)
        });
        templates.push(Template {
            name: p.common_name.clone(),
            oid: template_oid.value.clone(),
            major: p.major_revision,
            minor: p.minor_revision,
            validity_secs: p.validity_seconds.min(i64::MAX as u64) as i64,
            renewal_secs: p.renewal_seconds.min(i64::MAX as u64) as i64,
            enroll: p.enroll,
            auto_enroll: p.auto_enroll,
            key_algorithm,
            supplies_subject: p.subject_name_flags & ENROLLEE_SUPPLIES_SUBJECT != 0,
            supplies_san: p.subject_name_flags & ENROLLEE_SUPPLIES_SUBJECT_ALT_NAME != 0,
            superseded: p.superseded.clone(),
            client_auth,
        });
    }
    let mut endpoints: Vec<Endpoint> = r
        .cas
        .iter()
        .filter(|ca| ca.enroll_permission)
        .flat_map(|ca| ca.uris.iter().filter(|u| !u.renewal_only))
        .map(|u| Endpoint { auth: u.client_authentication, url: u.uri.clone(), priority: u.priority })
        .collect();
    endpoints.sort_by_key(|e| e.priority);
    Ok(Policy {
        policy_id: r.policy_id.clone(),
        next_update_hours: r.next_update_hours.max(1),
        templates,
        enrollment: Enrollment::Wstep(endpoints),
        ca_certs: r.cas.first().map(|c| c.certificate_der.clone()).into_iter().collect(),
        unavailable: vec![],
    })
}
