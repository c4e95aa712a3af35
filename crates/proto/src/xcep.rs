//! MS-XCEP GetPolicies: request parsing and response encoding (server), the reverse for the
//! agent. Element order follows the schema, which strict clients check.
use crate::xml::{Element, W};
use crate::{b64, ns, soap, ProtoError};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GetPoliciesRequest {
    /// Raw `client/lastUpdate`; `None` when nil, absent or not a valid xs:dateTime.
    pub last_update: Option<String>,
    pub policy_oids: Vec<String>,
}

pub fn parse_request(body: &Element) -> Result<GetPoliciesRequest, ProtoError> {
    if !body.is(ns::XCEP, "GetPolicies") {
        return Err(ProtoError::Missing("xcep:GetPolicies"));
    }
    let client = body.child(ns::XCEP, "client").ok_or(ProtoError::Missing("xcep:client"))?;
    if client.is_nil() {
        return Err(ProtoError::Missing("xcep:client"));
    }
    let last_update = client
        .child(ns::XCEP, "lastUpdate")
        .and_then(|l| l.value())
        .filter(|v| looks_like_datetime(v))
        .map(str::to_string);
    let policy_oids = body
        .path(&[(ns::XCEP, "requestFilter"), (ns::XCEP, "policyOIDs")])
        .map(|p| p.children_named(ns::XCEP, "oid").filter_map(|o| o.value()).map(str::to_string).collect())
        .unwrap_or_default();
    Ok(GetPoliciesRequest { last_update, policy_oids })
}

/// Seconds since the epoch for an xs:dateTime (`YYYY-MM-DDTHH:MM:SS[.fff][Z]`, taken as UTC).
pub fn parse_datetime(v: &str) -> Option<i64> {
    if !looks_like_datetime(v) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| v.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss) = (n(11..13)?, n(14..16)?, n(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// `YYYY-MM-DDTHH:MM:SS...`; the spec's own sample has a broken date that must read as absent.
fn looks_like_datetime(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() >= 19
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18].iter().all(|&i| b[i].is_ascii_digit())
}

/// How an enrollment endpoint authenticates its clients (MS-XCEP 3.1.4.1.3.3 `clientAuthentication`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientAuthentication {
    /// 1: no credentials; for renewals signed with the current certificate.
    Anonymous,
    /// 2: Kerberos over the transport.
    Kerberos,
    /// 4: WS-Security UsernameToken.
    UsernamePassword,
    /// 8: an X.509 client certificate.
    Certificate,
    /// A value this version does not know.
    Other(u32),
}

impl ClientAuthentication {
    pub fn value(self) -> u32 {
        match self {
            ClientAuthentication::Anonymous => 1,
            ClientAuthentication::Kerberos => 2,
            ClientAuthentication::UsernamePassword => 4,
            ClientAuthentication::Certificate => 8,
            ClientAuthentication::Other(v) => v,
        }
    }

    pub fn from_value(v: u32) -> ClientAuthentication {
        match v {
            1 => ClientAuthentication::Anonymous,
            2 => ClientAuthentication::Kerberos,
            4 => ClientAuthentication::UsernamePassword,
            8 => ClientAuthentication::Certificate,
            other => ClientAuthentication::Other(other),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaUri {
    pub client_authentication: ClientAuthentication,
    pub uri: String,
    pub priority: u32,
    pub renewal_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ca {
    pub uris: Vec<CaUri>,
    pub certificate_der: Vec<u8>,
    pub enroll_permission: bool,
    pub reference_id: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oid {
    pub value: String,
    pub group: u32,
    pub reference_id: i32,
    pub default_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    pub oid_reference: i32,
    pub ca_references: Vec<i32>,
    pub common_name: String,
    pub policy_schema: u32,
    pub validity_seconds: u64,
    pub renewal_seconds: u64,
    pub enroll: bool,
    pub auto_enroll: bool,
    pub minimal_key_length: u32,
    pub key_spec: Option<u32>,
    pub algorithm_oid_reference: Option<i32>,
    /// Providers the client may create the key in (CSP names for schema 2, KSP names for 3).
    pub crypto_providers: Vec<String>,
    pub major_revision: u32,
    pub minor_revision: u32,
    pub superseded: Vec<String>,
    pub private_key_flags: u32,
    pub subject_name_flags: u32,
    pub enrollment_flags: u32,
    pub general_flags: u32,
    pub hash_algorithm_oid_reference: Option<i32>,
    /// Extensions the issued certificate will carry (e.g. its EKU), so clients can tell.
    pub extensions: Vec<PolicyExtension>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyExtension {
    pub oid_reference: i32,
    pub critical: bool,
    pub value_der: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GetPoliciesResponse {
    pub policy_id: String,
    pub policy_friendly_name: Option<String>,
    pub next_update_hours: u32,
    pub policies_not_changed: bool,
    pub policies: Vec<Policy>,
    pub cas: Vec<Ca>,
    pub oids: Vec<Oid>,
}

fn opt_int(name: &str, v: Option<impl ToString>) -> W {
    match v {
        Some(v) => W::leaf(name, v.to_string()),
        None => W::nil(name),
    }
}

fn policy_xml(p: &Policy) -> W {
    let cas = if p.ca_references.is_empty() {
        W::nil("cAs")
    } else {
        W::new("cAs").children(p.ca_references.iter().map(|r| W::leaf("cAReference", r.to_string())))
    };
    let superseded = if p.superseded.is_empty() {
        W::nil("supersededPolicies")
    } else {
        W::new("supersededPolicies").children(p.superseded.iter().map(|c| W::leaf("commonName", c.as_str())))
    };
    let attributes = W::new("attributes")
        .child(W::leaf("commonName", p.common_name.as_str()))
        .child(W::leaf("policySchema", p.policy_schema.to_string()))
        .child(
            W::new("certificateValidity")
                .child(W::leaf("validityPeriodSeconds", p.validity_seconds.to_string()))
                .child(W::leaf("renewalPeriodSeconds", p.renewal_seconds.to_string())),
        )
        .child(
            W::new("permission")
                .child(W::leaf("enroll", p.enroll.to_string()))
                .child(W::leaf("autoEnroll", p.auto_enroll.to_string())),
        )
        .child(
            W::new("privateKeyAttributes")
                .child(W::leaf("minimalKeyLength", p.minimal_key_length.to_string()))
                .child(opt_int("keySpec", p.key_spec))
                .child(W::nil("keyUsageProperty"))
                .child(W::nil("permissions"))
                .child(opt_int("algorithmOIDReference", p.algorithm_oid_reference))
                .child(if p.crypto_providers.is_empty() {
                    W::nil("cryptoProviders")
                } else {
                    W::new("cryptoProviders")
                        .children(p.crypto_providers.iter().map(|c| W::leaf("provider", c.as_str())))
                }),
        )
        .child(
            W::new("revision")
                .child(W::leaf("majorRevision", p.major_revision.to_string()))
                .child(W::leaf("minorRevision", p.minor_revision.to_string())),
        )
        .child(superseded)
        .child(W::leaf("privateKeyFlags", p.private_key_flags.to_string()))
        .child(W::leaf("subjectNameFlags", p.subject_name_flags.to_string()))
        .child(W::leaf("enrollmentFlags", p.enrollment_flags.to_string()))
        .child(W::leaf("generalFlags", p.general_flags.to_string()))
        .child(opt_int("hashAlgorithmOIDReference", p.hash_algorithm_oid_reference))
        .child(W::nil("rARequirements"))
        .child(W::nil("keyArchivalAttributes"))
        .child(if p.extensions.is_empty() {
            W::nil("extensions")
        } else {
            W::new("extensions").children(p.extensions.iter().map(|e| {
                W::new("extension")
                    .child(W::leaf("oIDReference", e.oid_reference.to_string()))
                    .child(W::leaf("critical", e.critical.to_string()))
                    .child(W::leaf("value", b64::encode(&e.value_der)))
            }))
        });
    W::new("policy").child(W::leaf("policyOIDReference", p.oid_reference.to_string())).child(cas).child(attributes)
}

impl GetPoliciesResponse {
    pub fn body(&self) -> W {
        let mut response = W::new("response").child(W::leaf("policyID", self.policy_id.as_str()));
        response = response.child(match &self.policy_friendly_name {
            Some(n) => W::leaf("policyFriendlyName", n.as_str()),
            None => W::nil("policyFriendlyName"),
        });
        response = response
            .child(W::leaf("nextUpdateHours", self.next_update_hours.to_string()))
            .child(W::leaf("policiesNotChanged", self.policies_not_changed.to_string()));
        let (policies, cas, oids) = if self.policies_not_changed {
            (W::nil("policies"), W::nil("cAs"), W::nil("oIDs"))
        } else {
            (
                W::new("policies").children(self.policies.iter().map(policy_xml)),
                // An empty collection is nil (the schema's sequences need one entry).
                if self.cas.is_empty() {
                    W::nil("cAs")
                } else {
                    W::new("cAs").children(self.cas.iter().map(|ca| {
                        W::new("cA")
                            .child(W::new("uris").children(ca.uris.iter().map(|u| {
                                W::new("cAURI")
                                    .child(W::leaf("clientAuthentication", u.client_authentication.value().to_string()))
                                    .child(W::leaf("uri", u.uri.as_str()))
                                    .child(W::leaf("priority", u.priority.to_string()))
                                    .child(W::leaf("renewalOnly", u.renewal_only.to_string()))
                            })))
                            .child(W::leaf("certificate", b64::encode(&ca.certificate_der)))
                            .child(W::leaf("enrollPermission", ca.enroll_permission.to_string()))
                            .child(W::leaf("cAReferenceID", ca.reference_id.to_string()))
                    }))
                },
                W::new("oIDs").children(self.oids.iter().map(|o| {
                    W::new("oID")
                        .child(W::leaf("value", o.value.as_str()))
                        .child(W::leaf("group", o.group.to_string()))
                        .child(W::leaf("oIDReferenceID", o.reference_id.to_string()))
                        .child(W::leaf("defaultName", o.default_name.as_str()))
                })),
            )
        };
        W::new("GetPoliciesResponse").attr("xmlns", ns::XCEP).child(response.child(policies)).child(cas).child(oids)
    }

    pub fn to_envelope(&self, relates_to: Option<&str>) -> String {
        soap::response(ns::ACTION_GET_POLICIES_RESPONSE, relates_to, self.body())
    }
}

/// The request body a client sends (no filter, optional lastUpdate).
pub fn request_body(last_update: Option<&str>) -> W {
    W::new("GetPolicies")
        .attr("xmlns", ns::XCEP)
        .child(
            W::new("client")
                .child(match last_update {
                    Some(l) => W::leaf("lastUpdate", l),
                    None => W::nil("lastUpdate"),
                })
                .child(W::nil("preferredLanguage")),
        )
        .child(W::nil("requestFilter"))
}

fn text<'a>(e: &'a Element, local: &str) -> Option<&'a str> {
    e.child(ns::XCEP, local).and_then(|c| c.value())
}

fn num<T: std::str::FromStr>(e: &Element, local: &'static str) -> Result<T, ProtoError> {
    text(e, local).ok_or(ProtoError::Missing(local))?.parse().map_err(|_| ProtoError::Invalid(local))
}

fn opt_num<T: std::str::FromStr>(e: &Element, local: &'static str) -> Result<Option<T>, ProtoError> {
    text(e, local).map(|v| v.parse().map_err(|_| ProtoError::Invalid(local))).transpose()
}

fn boolean(e: &Element, local: &'static str) -> Result<bool, ProtoError> {
    match text(e, local) {
        Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") | None => Ok(false),
        Some(_) => Err(ProtoError::Invalid(local)),
    }
}

/// Parses a `GetPoliciesResponse` body element (agent side).
pub fn parse_response(body: &Element) -> Result<GetPoliciesResponse, ProtoError> {
    if !body.is(ns::XCEP, "GetPoliciesResponse") {
        return Err(ProtoError::Missing("xcep:GetPoliciesResponse"));
    }
    let r = body.child(ns::XCEP, "response").ok_or(ProtoError::Missing("response"))?;
    let mut out = GetPoliciesResponse {
        policy_id: text(r, "policyID").unwrap_or_default().to_string(),
        policy_friendly_name: text(r, "policyFriendlyName").map(str::to_string),
        next_update_hours: opt_num(r, "nextUpdateHours")?.unwrap_or(8),
        policies_not_changed: boolean(r, "policiesNotChanged")?,
        ..Default::default()
    };
    if let Some(policies) = r.child(ns::XCEP, "policies") {
        for p in policies.children_named(ns::XCEP, "policy") {
            let a = p.child(ns::XCEP, "attributes").ok_or(ProtoError::Missing("attributes"))?;
            let validity =
                a.child(ns::XCEP, "certificateValidity").ok_or(ProtoError::Missing("certificateValidity"))?;
            let permission = a.child(ns::XCEP, "permission").ok_or(ProtoError::Missing("permission"))?;
            let pka = a.child(ns::XCEP, "privateKeyAttributes").ok_or(ProtoError::Missing("privateKeyAttributes"))?;
            let revision = a.child(ns::XCEP, "revision").ok_or(ProtoError::Missing("revision"))?;
            out.policies.push(Policy {
                oid_reference: num(p, "policyOIDReference")?,
                ca_references: p
                    .child(ns::XCEP, "cAs")
                    .map(|c| {
                        c.children_named(ns::XCEP, "cAReference").filter_map(|r| r.value()?.parse().ok()).collect()
                    })
                    .unwrap_or_default(),
                common_name: text(a, "commonName").ok_or(ProtoError::Missing("commonName"))?.to_string(),
                policy_schema: num(a, "policySchema")?,
                validity_seconds: num(validity, "validityPeriodSeconds")?,
                renewal_seconds: num(validity, "renewalPeriodSeconds")?,
                enroll: boolean(permission, "enroll")?,
                auto_enroll: boolean(permission, "autoEnroll")?,
                minimal_key_length: num(pka, "minimalKeyLength")?,
                key_spec: opt_num(pka, "keySpec")?,
                algorithm_oid_reference: opt_num(pka, "algorithmOIDReference")?,
                crypto_providers: pka
                    .child(ns::XCEP, "cryptoProviders")
                    .map(|c| {
                        c.children_named(ns::XCEP, "provider").filter_map(|p| p.value()).map(str::to_string).collect()
                    })
                    .unwrap_or_default(),
                major_revision: num(revision, "majorRevision")?,
                minor_revision: opt_num(revision, "minorRevision")?.unwrap_or(0),
                superseded: a
                    .child(ns::XCEP, "supersededPolicies")
                    .map(|s| {
                        s.children_named(ns::XCEP, "commonName").filter_map(|c| c.value()).map(str::to_string).collect()
                    })
                    .unwrap_or_default(),
                private_key_flags: opt_num(a, "privateKeyFlags")?.unwrap_or(0),
                subject_name_flags: opt_num(a, "subjectNameFlags")?.unwrap_or(0),
                enrollment_flags: opt_num(a, "enrollmentFlags")?.unwrap_or(0),
                general_flags: opt_num(a, "generalFlags")?.unwrap_or(0),
                hash_algorithm_oid_reference: opt_num(a, "hashAlgorithmOIDReference")?,
                extensions: match a.child(ns::XCEP, "extensions") {
                    Some(exts) => exts
                        .children_named(ns::XCEP, "extension")
                        .map(|e| {
                            Ok(PolicyExtension {
                                oid_reference: num(e, "oIDReference")?,
                                critical: boolean(e, "critical")?,
                                value_der: match text(e, "value") {
                                    Some(v) => b64::decode(v, "extension/value")?,
                                    None => Vec::new(),
                                },
                            })
                        })
                        .collect::<Result<Vec<_>, ProtoError>>()?,
                    None => Vec::new(),
                },
            });
        }
    }
    if let Some(cas) = body.child(ns::XCEP, "cAs") {
        for ca in cas.children_named(ns::XCEP, "cA") {
            let uris = ca
                .child(ns::XCEP, "uris")
                .map(|u| {
                    u.children_named(ns::XCEP, "cAURI")
                        .map(|c| {
                            Ok(CaUri {
                                client_authentication: ClientAuthentication::from_value(num(
                                    c,
                                    "clientAuthentication",
                                )?),
                                uri: text(c, "uri").ok_or(ProtoError::Missing("uri"))?.to_string(),
                                priority: opt_num(c, "priority")?.unwrap_or(u32::MAX),
                                renewal_only: boolean(c, "renewalOnly")?,
                            })
                        })
                        .collect::<Result<Vec<_>, ProtoError>>()
                })
                .transpose()?
                .unwrap_or_default();
            out.cas.push(Ca {
                uris,
                certificate_der: b64::decode(
                    text(ca, "certificate").ok_or(ProtoError::Missing("certificate"))?,
                    "certificate",
                )?,
                enroll_permission: boolean(ca, "enrollPermission")?,
                reference_id: num(ca, "cAReferenceID")?,
            });
        }
    }
    if let Some(oids) = body.child(ns::XCEP, "oIDs") {
        for o in oids.children_named(ns::XCEP, "oID") {
            out.oids.push(Oid {
                value: text(o, "value").ok_or(ProtoError::Missing("value"))?.to_string(),
                group: num(o, "group")?,
                reference_id: num(o, "oIDReferenceID")?,
                default_name: text(o, "defaultName").unwrap_or_default().to_string(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00"), Some(0));
        assert_eq!(parse_datetime("2026-11-22T02:21:54Z"), Some(1_795_314_114));
        assert_eq!(parse_datetime("0001-01-01T00:00:00"), Some(-62_135_596_800));
        assert_eq!(parse_datetime("20090-03-15-T09:38:46"), None);
        assert_eq!(parse_datetime("2026-13-01T00:00:00"), None);
    }
}
