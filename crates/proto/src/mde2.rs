//! MS-MDE2 (Windows MDM enrollment): discovery, the RSTRC carrying a wap-provisioningdoc, the
//! provisioning document itself, and MDM faults. Enrollment and renewal requests are MS-WSTEP
//! RequestSecurityTokens (see `wstep`).
use crate::xml::{Element, W};
use crate::{b64, ns, soap, ProtoError};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiscoverRequest {
    pub email: Option<String>,
    pub request_version: Option<String>,
    pub device_type: Option<String>,
    pub auth_policies: Vec<String>,
}

fn is_discovery(e: &Element, local: &str) -> bool {
    let ns = e.ns.as_deref().unwrap_or_default();
    e.local == local && ns.trim_end_matches('/') == ns::DISCOVERY
}

fn child<'a>(e: &'a Element, local: &str) -> Option<&'a Element> {
    e.children.iter().find(|c| is_discovery(c, local))
}

pub fn parse_discover(body: &Element) -> Result<DiscoverRequest, ProtoError> {
    if !is_discovery(body, "Discover") {
        return Err(ProtoError::Missing("Discover"));
    }
    let req = child(body, "request").ok_or(ProtoError::Missing("Discover/request"))?;
    let text = |l: &str| child(req, l).and_then(|e| e.value()).map(str::to_string);
    Ok(DiscoverRequest {
        email: text("EmailAddress"),
        request_version: text("RequestVersion"),
        device_type: text("DeviceType"),
        auth_policies: child(req, "AuthPolicies")
            .map(|a| {
                a.children
                    .iter()
                    .filter(|c| is_discovery(c, "AuthPolicy"))
                    .filter_map(|c| c.value())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverResponse {
    /// `OnPremise` or `Federated`.
    pub auth_policy: String,
    pub enrollment_version: String,
    pub policy_url: String,
    pub enrollment_url: String,
    pub authentication_url: Option<String>,
}

impl DiscoverResponse {
    pub fn to_envelope(&self, relates_to: Option<&str>) -> String {
        let mut result = W::new("DiscoverResult")
            .child(W::leaf("AuthPolicy", self.auth_policy.as_str()))
            .child(W::leaf("EnrollmentVersion", self.enrollment_version.as_str()))
            .child(W::leaf("EnrollmentPolicyServiceUrl", self.policy_url.as_str()))
            .child(W::leaf("EnrollmentServiceUrl", self.enrollment_url.as_str()));
        if let Some(a) = &self.authentication_url {
            result = result.child(W::leaf("AuthenticationServiceUrl", a.as_str()));
        }
        soap::response(
            ns::ACTION_DISCOVER_RESPONSE,
            relates_to,
            W::new("DiscoverResponse").attr("xmlns", ns::DISCOVERY).child(result),
        )
    }
}

pub fn parse_discover_response(body: &Element) -> Result<DiscoverResponse, ProtoError> {
    if !is_discovery(body, "DiscoverResponse") {
        return Err(ProtoError::Missing("DiscoverResponse"));
    }
    let r = child(body, "DiscoverResult").ok_or(ProtoError::Missing("DiscoverResult"))?;
    let text = |l: &'static str| child(r, l).and_then(|e| e.value()).map(str::to_string);
    Ok(DiscoverResponse {
        auth_policy: text("AuthPolicy").ok_or(ProtoError::Missing("AuthPolicy"))?,
        enrollment_version: text("EnrollmentVersion").unwrap_or_default(),
        policy_url: text("EnrollmentPolicyServiceUrl").ok_or(ProtoError::Missing("EnrollmentPolicyServiceUrl"))?,
        enrollment_url: text("EnrollmentServiceUrl").ok_or(ProtoError::Missing("EnrollmentServiceUrl"))?,
        authentication_url: text("AuthenticationServiceUrl"),
    })
}

/// `WSTEP/Renew` parameters (CertificateStore CSP): days, as the CSP takes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewParams {
    pub renew_period_days: u32,
    pub retry_interval_days: u32,
    pub server_url: Option<String>,
}

/// The OMA-DM management server the device is handed to (`APPLICATION` w7 + `DMClient`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Management {
    pub provider_id: String,
    pub name: String,
    pub address: String,
    pub ent_dm_id: String,
    pub device_name: String,
}

/// A wap-provisioningdoc installing the root, the device certificate and its renewal settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisioningDoc {
    pub root_der: Option<Vec<u8>>,
    /// The issuing CA, for `CertificateStore/CA/System` (intermediates), with its thumbprint:
    /// without it Windows cannot build the chain of a certificate that arrives alone.
    pub issuing_der: Option<Vec<u8>>,
    pub issuing_thumbprint: Option<String>,
    pub cert_der: Vec<u8>,
    /// Upper-case hex SHA-1 of `cert_der`, and of `root_der`.
    pub cert_thumbprint: String,
    pub root_thumbprint: Option<String>,
    /// `User` (EnrollmentType Full) or `System` (EnrollmentType Device).
    pub store: String,
    pub renew: Option<RenewParams>,
    pub management: Option<Management>,
    /// A renewal's document names the management provider alone (as the MDM certificate
    /// renewal documentation's sample does).
    pub provider_id: Option<String>,
}

fn parm(name: &str, value: impl Into<String>) -> W {
    W::new("parm").attr("name", name).attr("value", value)
}

fn typed(name: &str, value: impl Into<String>, datatype: &str) -> W {
    parm(name, value).attr("datatype", datatype)
}

fn ch(kind: &str) -> W {
    W::new("characteristic").attr("type", kind)
}

impl ProvisioningDoc {
    pub fn to_xml(&self) -> String {
        let mut doc = W::new("wap-provisioningdoc").attr("version", "1.1");
        if let (Some(root), Some(thumb)) = (&self.root_der, &self.root_thumbprint) {
            doc = doc.child(ch("CertificateStore").child(
                ch("Root").child(ch("System").child(ch(thumb).child(parm("EncodedCertificate", b64::encode(root))))),
            ));
        }
        if let (Some(ca), Some(thumb)) = (&self.issuing_der, &self.issuing_thumbprint) {
            doc = doc.child(ch("CertificateStore").child(
                ch("CA").child(ch("System").child(ch(thumb).child(parm("EncodedCertificate", b64::encode(ca))))),
            ));
        }
        let mut my = ch("My").child(
            ch(&self.store)
                .child(ch(&self.cert_thumbprint).child(parm("EncodedCertificate", b64::encode(&self.cert_der))))
                .child(ch("PrivateKeyContainer")),
        );
        if let Some(r) = &self.renew {
            let mut renew = ch("Renew")
                .child(typed("ROBOSupport", "true", "boolean"))
                .child(typed("RenewPeriod", r.renew_period_days.to_string(), "integer"))
                .child(typed("RetryInterval", r.retry_interval_days.to_string(), "integer"));
            if let Some(u) = &r.server_url {
                renew = renew.child(typed("ServerURL", u.as_str(), "string"));
            }
            my = my.child(ch("WSTEP").child(renew));
        }
        doc = doc.child(ch("CertificateStore").child(my));
        if let Some(m) = &self.management {
            doc = doc
                .child(
                    ch("APPLICATION")
                        .child(parm("APPID", "w7"))
                        .child(parm("PROVIDER-ID", m.provider_id.as_str()))
                        .child(parm("NAME", m.name.as_str()))
                        .child(parm("ADDR", m.address.as_str()))
                        .child(parm("CONNRETRYFREQ", "6"))
                        .child(parm("INITIALBACKOFFTIME", "30000"))
                        .child(parm("MAXBACKOFFTIME", "120000"))
                        .child(W::new("parm").attr("name", "BACKCOMPATRETRYDISABLED"))
                        .child(parm("DEFAULTENCODING", "application/vnd.syncml.dm+wbxml"))
                        .child(parm(
                            "SSLCLIENTCERTSEARCHCRITERIA",
                            format!("Subject=CN%3d{}&Stores=My%5C{}", m.ent_dm_id, self.store),
                        )),
                )
                .child(
                    ch("DMClient").child(
                        ch("Provider").child(
                            ch(&m.provider_id)
                                .child(typed("EntDMID", m.ent_dm_id.as_str(), "string"))
                                .child(typed("EntDeviceName", m.device_name.as_str(), "string"))
                                .child(
                                    ch("Poll")
                                        .child(typed("NumberOfFirstRetries", "8", "integer"))
                                        .child(typed("IntervalForFirstSetOfRetries", "15", "integer"))
                                        .child(typed("NumberOfSecondRetries", "5", "integer"))
                                        .child(typed("IntervalForSecondSetOfRetries", "3", "integer"))
                                        .child(typed("NumberOfRemainingScheduledRetries", "0", "integer"))
                                        .child(typed("IntervalForRemainingScheduledRetries", "1560", "integer"))
                                        .child(typed("PollOnLogin", "true", "boolean")),
                                ),
                        ),
                    ),
                );
        }
        if let (None, Some(provider)) = (&self.management, &self.provider_id) {
            doc = doc.child(ch("APPLICATION").child(parm("PROVIDER-ID", provider.as_str())));
        }
        let mut out = String::new();
        doc.write(&mut out);
        out
    }
}

/// The RSTRC of an MDM enrollment or renewal: the provisioning document, base64, as the token.
pub fn provisioning_response(doc: &ProvisioningDoc, created: &str, expires: &str, relates_to: Option<&str>) -> String {
    let body = W::new("RequestSecurityTokenResponseCollection").attr("xmlns", ns::WST).child(
        W::new("RequestSecurityTokenResponse")
            .child(W::leaf("TokenType", ns::TOKEN_TYPE_DEVICE_ENROLLMENT))
            .child(W::new("DispositionMessage").attr("xmlns", ns::WSTEP))
            .child(
                W::new("RequestedSecurityToken").child(
                    W::leaf("BinarySecurityToken", b64::encode(doc.to_xml().as_bytes()))
                        .attr("xmlns", ns::WSSE)
                        .attr("ValueType", ns::VALUE_TYPE_PROVISION_DOC)
                        .attr("EncodingType", ns::ENCODING_BASE64),
                ),
            )
            .child(W::leaf("RequestID", "0").attr("xmlns", ns::WSTEP)),
    );
    soap::response_with_timestamp(ns::ACTION_WSTEP_RESPONSE, relates_to, created, expires, body)
}

/// The decoded provisioning document of an MDM RSTRC (client side).
pub fn parse_provisioning_response(body: &Element) -> Result<Element, ProtoError> {
    let bst = body
        .path(&[
            (ns::WST, "RequestSecurityTokenResponse"),
            (ns::WST, "RequestedSecurityToken"),
            (ns::WSSE, "BinarySecurityToken"),
        ])
        .ok_or(ProtoError::Missing("RequestedSecurityToken/BinarySecurityToken"))?;
    let xml = b64::decode(&bst.text, "provisioning document")?;
    crate::xml::parse(&xml)
}

/// An MS-MDE2 fault: `s:Receiver` with a subcode (`s:Authentication`, `a:InvalidSecurity`, ...),
/// a reason, and `deviceenrollmentserviceerror { errortype, message, traceid }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdmFault {
    pub subcode: String,
    pub reason: String,
    pub error_type: String,
    pub trace_id: String,
}

pub fn fault(f: &MdmFault, relates_to: Option<&str>) -> String {
    let fault = W::new("s:Fault")
        .child(
            W::new("s:Code")
                .child(W::leaf("s:Value", "s:Receiver"))
                .child(W::new("s:Subcode").child(W::leaf("s:Value", f.subcode.as_str()))),
        )
        .child(W::new("s:Reason").child(W::leaf("s:Text", f.reason.as_str()).attr("xml:lang", "en-US")))
        .child(
            W::new("s:Detail").child(
                W::new("DeviceEnrollmentServiceError")
                    .attr("xmlns", ns::WSTEP)
                    .child(W::leaf("ErrorType", f.error_type.as_str()))
                    .child(W::leaf("Message", f.reason.as_str()))
                    .child(W::leaf("TraceId", f.trace_id.as_str())),
            ),
        );
    soap::response(ns::ACTION_WSTEP_RESPONSE, relates_to, fault)
}

/// Reads an MDM fault (case-insensitive element names: the spec's own samples lower-case them).
pub fn parse_fault(env: &soap::Envelope) -> Option<MdmFault> {
    let f = &env.body;
    if !f.local.eq_ignore_ascii_case("Fault") {
        return None;
    }
    let find = |e: &Element, l: &str| e.children.iter().find(|c| c.local.eq_ignore_ascii_case(l)).cloned();
    let sub = find(f, "Code").and_then(|c| find(&c, "Subcode")).and_then(|s| find(&s, "Value"));
    let reason = find(f, "Reason").and_then(|r| find(&r, "Text"));
    let detail = find(f, "Detail").and_then(|d| find(&d, "DeviceEnrollmentServiceError"));
    let dtext =
        |l: &str| detail.as_ref().and_then(|d| find(d, l)).map(|e| e.text.trim().to_string()).unwrap_or_default();
    Some(MdmFault {
        subcode: sub.map(|s| s.text.trim().to_string()).unwrap_or_default(),
        reason: reason.map(|r| r.text.trim().to_string()).unwrap_or_default(),
        error_type: dtext("ErrorType"),
        trace_id: dtext("TraceId"),
    })
}
