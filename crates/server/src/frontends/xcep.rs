//! MS-XCEP GetPolicies: the RA's policy view in XCEP's schema.
use super::soap::{credentials, FrontError};
use super::{AppState, Peer};
use crate::ra::RaError;
use autoenroll_core::model::{KeyAlgorithm, KeyFamily, SubjectFrom, Template};
use autoenroll_proto::soap::Envelope;
use autoenroll_proto::xcep::{
    self, Ca, CaUri, ClientAuthentication, GetPoliciesResponse, Oid, Policy, PolicyExtension,
};

// OID groups (MS-XCEP 3.1.4.1.3.16).
const OID_GROUP_HASH: u32 = 1;
const OID_GROUP_PUBLIC_KEY: u32 = 3;
const OID_GROUP_EXTENSION: u32 = 6;
const OID_GROUP_TEMPLATE: u32 = 9;
const EXT_KEY_USAGE: &str = "2.5.29.37";
const RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
/// Named curves: CNG (schema 3) templates name the curve, not the generic id-ecPublicKey.
const SECP256R1: &str = "1.2.840.10045.3.1.7";
const SECP384R1: &str = "1.3.132.0.34";
const SHA256: &str = "2.16.840.1.101.3.4.2.1";

// Flag values from MS-CRTD 2.26 (enrollment), 2.28 (subject name), 2.27 (private key) and
// 2.4 (general), as XCEP reuses them.
const CT_FLAG_PEND_ALL_REQUESTS: u32 = 0x2;
const CT_FLAG_AUTO_ENROLLMENT: u32 = 0x20;
/// Renewals are signed with the certificate they renew and are not held for approval.
const CT_FLAG_PREVIOUS_APPROVAL_VALIDATE_REENROLLMENT: u32 = 0x40;
const CT_FLAG_ENROLLEE_SUPPLIES_SUBJECT: u32 = 0x1;
/// A renewal keeps the old certificate's subject and names (what the server enforces).
const CT_FLAG_OLD_CERT_SUPPLIES_SUBJECT_AND_ALT_NAME: u32 = 0x8;
const CT_FLAG_ENROLLEE_SUPPLIES_SUBJECT_ALT_NAME: u32 = 0x10000;
const CT_FLAG_MACHINE_TYPE: u32 = 0x40;
const CT_FLAG_ADD_TEMPLATE_NAME: u32 = 0x200;
/// pKIDefaultKeySpec AT_KEYEXCHANGE: a CryptoAPI RSA key that signs and enciphers keys.
const AT_KEYEXCHANGE: u32 = 1;
/// CSPs for schema-2 (CryptoAPI) RSA templates; the KSP for schema-3 (CNG) ones.
const RSA_CSPS: [&str; 2] =
    ["Microsoft RSA SChannel Cryptographic Provider", "Microsoft Enhanced RSA and AES Cryptographic Provider"];
const SOFTWARE_KSP: &str = "Microsoft Software Key Storage Provider";

/// Plain MS-XCEP for autoenrollment clients, or the MS-MDE2 flavour for Windows MDM (schema 3,
/// only the MDM template, a hash algorithm, no CA list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    Xcep,
    Mdm,
}

/// The response's `oIDs`: each OID once, with a reference id.
#[derive(Default)]
struct Oids(Vec<Oid>);

impl Oids {
    fn reference(&mut self, value: &str, group: u32, default_name: &str) -> i32 {
        if let Some(o) = self.0.iter().find(|o| o.value == value && o.group == group) {
            return o.reference_id;
        }
        let reference_id = self.0.len() as i32 + 1;
        self.0.push(Oid { value: value.into(), group, reference_id, default_name: default_name.into() });
        reference_id
    }
}

/// What a template asks of the client's key, as Windows reads it: the algorithm and length it
/// generates, the template schema that can express it, and where the key may live.
struct KeyRequest {
    algorithm: (&'static str, &'static str),
    minimal_key_length: u32,
    schema: u32,
    key_spec: Option<u32>,
    providers: Vec<String>,
}

fn key_request(t: &Template, flavour: Flavour) -> KeyRequest {
    // Windows MDM creates RSA keys (in the TPM when it can): advertise what it will send when the
    // template takes RSA, so policy and issuance agree.
    let algorithm = match (flavour, t.key.algorithm) {
        (Flavour::Mdm, _) if t.key.accept.contains(&KeyFamily::Rsa) => KeyAlgorithm::Rsa(t.min_rsa_bits()),
        (_, a) => a,
    };
    let schema = match (flavour, algorithm) {
        (Flavour::Mdm, _) => 3,
        // CryptoAPI (schema 2) has no ECC; CNG (schema 3) has.
        (Flavour::Xcep, KeyAlgorithm::Rsa(_)) => 2,
        (Flavour::Xcep, _) => 3,
    };
    let providers = match schema {
        2 => RSA_CSPS.iter().map(|p| p.to_string()).collect(),
        _ => vec![SOFTWARE_KSP.to_string()],
    };
    let (algorithm, minimal_key_length) = match algorithm {
        KeyAlgorithm::Rsa(bits) => ((RSA_ENCRYPTION, "RSA"), bits.max(t.min_rsa_bits())),
        KeyAlgorithm::P384 => ((SECP384R1, "ECDSA_P384"), 384),
        KeyAlgorithm::P256 => ((SECP256R1, "ECDSA_P256"), 256),
    };
    // A key spec is CryptoAPI's (schema 2); CNG keys have none, and Microsoft's schema-3 sample
    // (MS-MDE2 4.2.2) sends keySpec nil.
    let key_spec = (schema == 2).then_some(AT_KEYEXCHANGE);
    KeyRequest { algorithm, minimal_key_length, schema, key_spec, providers }
}

pub async fn get_policies(
    state: &AppState,
    env: &Envelope,
    peer: &Peer,
    flavour: Flavour,
) -> Result<String, FrontError> {
    let request = xcep::parse_request(&env.body)?;
    let principal = state.ra.authenticate(&credentials(&env.token, peer), None).await?;
    let last_update = request.last_update.as_deref().and_then(xcep::parse_datetime);
    let mut view = state.ra.policy(&principal, last_update).await?;
    let mdm = flavour == Flavour::Mdm;
    if mdm {
        let settings = state.ra.mdm_settings().await?;
        view.templates.retain(|t| t.name == settings.template);
    }
    // requestFilter/policyOIDs: only those templates (an empty filter is no filter).
    if !request.policy_oids.is_empty() {
        view.templates.retain(|t| request.policy_oids.iter().any(|o| *o == t.oid.to_string()));
    }

    let mut oids = Oids::default();
    for t in &view.templates {
        oids.reference(&t.oid.to_string(), OID_GROUP_TEMPLATE, &t.name);
    }
    let eku_ref = oids.reference(EXT_KEY_USAGE, OID_GROUP_EXTENSION, "Enhanced Key Usage");
    let policies = view
        .templates
        .iter()
        .map(|t| -> Result<Policy, FrontError> {
            let key = key_request(t, flavour);
            let algorithm_ref = oids.reference(key.algorithm.0, OID_GROUP_PUBLIC_KEY, key.algorithm.1);
            // hashAlgorithmOIDReference MUST be nil below schema 3.
            let hash_ref = (key.schema >= 3).then(|| oids.reference(SHA256, OID_GROUP_HASH, "sha256"));
            let mut subject_flags = 0;
            if t.subject_from == SubjectFrom::Request {
                subject_flags |= CT_FLAG_ENROLLEE_SUPPLIES_SUBJECT;
            }
            if t.allow_san {
                subject_flags |= CT_FLAG_ENROLLEE_SUPPLIES_SUBJECT_ALT_NAME;
            }
            if subject_flags != 0 {
                subject_flags |= CT_FLAG_OLD_CERT_SUPPLIES_SUBJECT_AND_ALT_NAME;
            }
            let mut enrollment_flags = CT_FLAG_PREVIOUS_APPROVAL_VALIDATE_REENROLLMENT;
            if t.autoenroll {
                enrollment_flags |= CT_FLAG_AUTO_ENROLLMENT;
            }
            if t.pend_all {
                enrollment_flags |= CT_FLAG_PEND_ALL_REQUESTS;
            }
            let mut general_flags = CT_FLAG_ADD_TEMPLATE_NAME;
            if t.autoenroll {
                general_flags |= CT_FLAG_AUTO_ENROLLMENT;
            }
            if !t.for_users {
                general_flags |= CT_FLAG_MACHINE_TYPE;
            }
            Ok(Policy {
                oid_reference: oids.reference(&t.oid.to_string(), OID_GROUP_TEMPLATE, &t.name),
                ca_references: if mdm { vec![] } else { vec![0] },
                common_name: t.name.clone(),
                policy_schema: key.schema,
                validity_seconds: t.validity_secs as u64,
                renewal_seconds: advertised_renewal_secs(t, flavour) as u64,
                enroll: t.enroll,
                auto_enroll: t.autoenroll,
                minimal_key_length: key.minimal_key_length,
                key_spec: key.key_spec,
                algorithm_oid_reference: Some(algorithm_ref),
                crypto_providers: key.providers,
                major_revision: t.major,
                minor_revision: t.minor,
                superseded: t.supersedes.clone(),
                private_key_flags: 0,
                subject_name_flags: subject_flags,
                enrollment_flags,
                general_flags,
                hash_algorithm_oid_reference: hash_ref,
                extensions: vec![PolicyExtension {
                    oid_reference: eku_ref,
                    critical: false,
                    value_der: ext_key_usage_der(t)?,
                }],
            })
        })
        .collect::<Result<Vec<_>, _>>()?;

    let url = state.enrollment_url();
    let response = GetPoliciesResponse {
        policy_id: view.policy_id,
        policy_friendly_name: Some("autoenroll".into()),
        next_update_hours: view.next_update_hours,
        policies_not_changed: view.not_changed,
        policies,
        cas: if mdm {
            vec![]
        } else {
            vec![Ca {
                uris: vec![
                    CaUri {
                        client_authentication: ClientAuthentication::UsernamePassword,
                        uri: url.clone(),
                        priority: 1,
                        renewal_only: false,
                    },
                    CaUri {
                        client_authentication: ClientAuthentication::Certificate,
                        uri: url.clone(),
                        priority: 2,
                        renewal_only: false,
                    },
                    // Renewal requests signed with the current certificate need no other credential.
                    CaUri {
                        client_authentication: ClientAuthentication::Anonymous,
                        uri: url,
                        priority: 3,
                        renewal_only: true,
                    },
                ],
                certificate_der: view.issuing_ca_der,
                enroll_permission: true,
                reference_id: 0,
            }]
        },
        oids: oids.0,
    };
    Ok(response.to_envelope(env.message_id.as_deref()))
}

/// The renewal period clients are told: the window the server enforces. Autoenrollment opens
/// at `not_after - min(period, lifetime / 5)` (the Windows rule, which the server applies), so
/// advertise the smaller of the two; MDM renews `RenewPeriod` before expiry as configured.
fn advertised_renewal_secs(t: &Template, flavour: Flavour) -> i64 {
    match flavour {
        Flavour::Xcep => t.renewal_secs.min(t.validity_secs / 5).max(1),
        Flavour::Mdm => t.renewal_secs,
    }
}

/// The DER of the EKU extension value certificates of `t` will carry.
fn ext_key_usage_der(t: &Template) -> Result<Vec<u8>, FrontError> {
    use der::Encode;
    Ok(x509_cert::ext::pkix::ExtendedKeyUsage(t.ekus.iter().map(|e| e.oid()).collect())
        .to_der()
        .map_err(RaError::internal)?)
}
