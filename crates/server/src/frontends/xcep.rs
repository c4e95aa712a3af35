//! MS-XCEP GetPolicies: the RA's policy view in XCEP's schema.
use super::soap::{credentials, FrontError};
use super::{AppState, PeerCerts};
use crate::ra::RaError;
use autoenroll_core::model::{KeyAlgorithm, SubjectFrom, Template};
use autoenroll_proto::soap::Envelope;
use autoenroll_proto::xcep::{
    self, Ca, CaUri, ClientAuthentication, GetPoliciesResponse, Oid, Policy, PolicyExtension,
};

const OID_GROUP_PUBLIC_KEY: u32 = 3;
const OID_GROUP_EXTENSION: u32 = 6;
const OID_GROUP_TEMPLATE: u32 = 9;
const EXT_KEY_USAGE: &str = "2.5.29.37";
const EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";

// Flag values from MS-CRTD, as XCEP reuses them.
const CT_FLAG_PEND_ALL_REQUESTS: u32 = 0x2;
const CT_FLAG_AUTO_ENROLLMENT: u32 = 0x20;
const CT_FLAG_ENROLLEE_SUPPLIES_SUBJECT: u32 = 0x1;
const CT_FLAG_ENROLLEE_SUPPLIES_SUBJECT_ALT_NAME: u32 = 0x10000;
const CT_FLAG_ADD_TEMPLATE_NAME: u32 = 0x200;

/// Plain MS-XCEP for autoenrollment clients, or the MS-MDE2 flavour for Windows MDM (schema 3,
/// only the MDM template, a hash algorithm, no CA list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    Xcep,
    Mdm,
}

const SHA256: &str = "2.16.840.1.101.3.4.2.1";
const OID_GROUP_HASH: u32 = 1;

pub async fn get_policies(
    state: &AppState,
    env: &Envelope,
    peer: &PeerCerts,
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

    let template_count = view.templates.len() as i32;
    let (ec_ref, rsa_ref, eku_ref, hash_ref) =
        (template_count + 1, template_count + 2, template_count + 3, template_count + 4);
    let mut oids: Vec<Oid> = view
        .templates
        .iter()
        .enumerate()
        .map(|(i, t)| Oid {
            value: t.oid.to_string(),
            group: OID_GROUP_TEMPLATE,
            reference_id: i as i32 + 1,
            default_name: t.name.clone(),
        })
        .collect();
    if mdm {
        oids.push(Oid {
            value: SHA256.into(),
            group: OID_GROUP_HASH,
            reference_id: hash_ref,
            default_name: "sha256".into(),
        });
    }
    oids.push(Oid {
        value: EC_PUBLIC_KEY.into(),
        group: OID_GROUP_PUBLIC_KEY,
        reference_id: ec_ref,
        default_name: "ECC".into(),
    });
    oids.push(Oid {
        value: RSA_ENCRYPTION.into(),
        group: OID_GROUP_PUBLIC_KEY,
        reference_id: rsa_ref,
        default_name: "RSA".into(),
    });
    oids.push(Oid {
        value: EXT_KEY_USAGE.into(),
        group: OID_GROUP_EXTENSION,
        reference_id: eku_ref,
        default_name: "Enhanced Key Usage".into(),
    });

    let policies = view
        .templates
        .iter()
        .enumerate()
        .map(|(i, t)| -> Result<Policy, FrontError> {
            let (min_len, alg_ref) = match t.key.algorithm {
                KeyAlgorithm::Rsa(bits) => (bits.max(t.min_rsa_bits()), rsa_ref),
                other => (other.bits(), ec_ref),
            };
            let mut subject_flags = 0;
            if t.subject_from == SubjectFrom::Request {
                subject_flags |= CT_FLAG_ENROLLEE_SUPPLIES_SUBJECT;
            }
            if t.allow_san {
                subject_flags |= CT_FLAG_ENROLLEE_SUPPLIES_SUBJECT_ALT_NAME;
            }
            let mut enrollment_flags = 0;
            if t.autoenroll {
                enrollment_flags |= CT_FLAG_AUTO_ENROLLMENT;
            }
            if t.pend_all {
                enrollment_flags |= CT_FLAG_PEND_ALL_REQUESTS;
            }
            Ok(Policy {
                oid_reference: i as i32 + 1,
                ca_references: if mdm { vec![] } else { vec![0] },
                common_name: t.name.clone(),
                policy_schema: if mdm { 3 } else { 2 },
                validity_seconds: t.validity_secs as u64,
                renewal_seconds: t.renewal_secs as u64,
                enroll: t.enroll,
                auto_enroll: t.autoenroll,
                minimal_key_length: min_len,
                key_spec: None,
                algorithm_oid_reference: Some(alg_ref),
                major_revision: t.major,
                minor_revision: t.minor,
                superseded: t.supersedes.clone(),
                private_key_flags: 0,
                subject_name_flags: subject_flags,
                enrollment_flags,
                general_flags: CT_FLAG_ADD_TEMPLATE_NAME | if t.autoenroll { CT_FLAG_AUTO_ENROLLMENT } else { 0 },
                hash_algorithm_oid_reference: mdm.then_some(hash_ref),
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
        oids,
    };
    Ok(response.to_envelope(env.message_id.as_deref()))
}

/// The DER of the EKU extension value certificates of `t` will carry.
fn ext_key_usage_der(t: &Template) -> Result<Vec<u8>, FrontError> {
    use der::Encode;
    Ok(x509_cert::ext::pkix::ExtendedKeyUsage(t.ekus.iter().map(|e| e.oid()).collect())
        .to_der()
        .map_err(RaError::internal)?)
}
