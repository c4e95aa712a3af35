//! MS-WSTEP RequestSecurityToken parsing and RequestSecurityTokenResponseCollection encoding.
use crate::xml::{Element, W};
use crate::{b64, ns, soap, ProtoError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestType {
    Issue,
    Renew,
    QueryTokenStatus,
    Ket,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSecurityToken {
    pub token_type: Option<String>,
    pub request_type: RequestType,
    /// The decoded BinarySecurityToken (a PKCS#10 or a CMS SignedData; sniff the DER).
    pub token: Option<BinaryToken>,
    pub request_id: Option<String>,
    /// `AdditionalContext` items, in order; names may repeat.
    pub context: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryToken {
    pub value_type: String,
    pub der: Vec<u8>,
}

impl RequestSecurityToken {
    pub fn context_value(&self, name: &str) -> Option<&str> {
        self.context.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

pub fn parse_request(body: &Element) -> Result<RequestSecurityToken, ProtoError> {
    if !body.is(ns::WST, "RequestSecurityToken") {
        return Err(ProtoError::Missing("wst:RequestSecurityToken"));
    }
    let request_type = match body.child(ns::WST, "RequestType").and_then(|r| r.value()) {
        None => return Err(ProtoError::Missing("wst:RequestType")),
        Some(ns::REQUEST_TYPE_ISSUE) => RequestType::Issue,
        Some(ns::REQUEST_TYPE_RENEW) => RequestType::Renew,
        Some(ns::REQUEST_TYPE_QUERY) => RequestType::QueryTokenStatus,
        Some(ns::REQUEST_TYPE_KET) => RequestType::Ket,
        Some(_) => return Err(ProtoError::Invalid("wst:RequestType")),
    };
    let token = match body.child(ns::WSSE, "BinarySecurityToken") {
        Some(bst) if !bst.text.trim().is_empty() => {
            let encoding = bst.attr(None, "EncodingType").unwrap_or(ns::ENCODING_BASE64);
            if !encoding.ends_with("#base64binary") {
                return Err(ProtoError::Invalid("wsse:BinarySecurityToken/@EncodingType"));
            }
            let mut der = b64::decode(&bst.text, "wsse:BinarySecurityToken")?;
            // Manual MDM renewal wraps the PKCS#7 in base64 twice; PEM armour appears too.
            // If that inner text is not base64 either, keep the bytes: the DER check downstream
            // gives the precise error.
            if der.first() != Some(&0x30) {
                let inner = String::from_utf8_lossy(&der).to_string();
                let stripped: String = inner.lines().filter(|l| !l.starts_with("-----")).collect();
                if let Ok(twice) = b64::decode(&stripped, "wsse:BinarySecurityToken") {
                    der = twice;
                }
            }
            Some(BinaryToken { value_type: bst.attr(None, "ValueType").unwrap_or_default().to_string(), der })
        }
        _ => None,
    };
    let request_id = body.child(ns::WSTEP, "RequestID").and_then(|r| r.value()).map(str::to_string);
    let context = body
        .child(ns::AUTH, "AdditionalContext")
        .map(|c| {
            c.children_named(ns::AUTH, "ContextItem")
                .map(|i| {
                    (
                        i.attr(None, "Name").unwrap_or_default().to_string(),
                        i.child(ns::AUTH, "Value").map(|v| v.text.trim().to_string()).unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(RequestSecurityToken {
        token_type: body.child(ns::WST, "TokenType").and_then(|t| t.value()).map(str::to_string),
        request_type,
        token,
        request_id,
        context,
    })
}

/// The body a client sends to request a certificate for a PKCS#10, with optional
/// AdditionalContext items (e.g. `DeviceName`).
pub fn issue_request_body(csr_der: &[u8], context: &[(&str, &str)]) -> W {
    let mut body = W::new("wst:RequestSecurityToken")
        .attr("xmlns:wst", ns::WST)
        .attr("xmlns:wstep", ns::WSTEP)
        .child(W::leaf("wst:TokenType", ns::TOKEN_TYPE_X509V3))
        .child(W::leaf("wst:RequestType", ns::REQUEST_TYPE_ISSUE))
        .child(
            W::leaf("wsse:BinarySecurityToken", b64::encode(csr_der))
                .attr("ValueType", ns::VALUE_TYPE_PKCS10)
                .attr("EncodingType", ns::ENCODING_BASE64),
        )
        .child(W::nil("wstep:RequestID"));
    if !context.is_empty() {
        body = body.child(W::new("ac:AdditionalContext").attr("xmlns:ac", ns::AUTH).children(
            context.iter().map(|(n, v)| W::new("ac:ContextItem").attr("Name", *n).child(W::leaf("ac:Value", *v))),
        ));
    }
    body
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedResponse {
    pub certificate_der: Vec<u8>,
    /// Certs-only PKCS#7 (degenerate SignedData) with the chain, for the RSTR-level token.
    pub chain_pkcs7_der: Vec<u8>,
    pub request_id: u64,
}

impl IssuedResponse {
    pub fn body(&self) -> W {
        W::new("RequestSecurityTokenResponseCollection").attr("xmlns", ns::WST).child(
            W::new("RequestSecurityTokenResponse")
                .child(W::leaf("TokenType", ns::TOKEN_TYPE_X509V3))
                .child(W::leaf("DispositionMessage", "Issued").attr("xmlns", ns::WSTEP).attr("xml:lang", "en-US"))
                .child(
                    W::leaf("BinarySecurityToken", b64::encode(&self.chain_pkcs7_der))
                        .attr("xmlns", ns::WSSE)
                        .attr("ValueType", ns::VALUE_TYPE_PKCS7)
                        .attr("EncodingType", ns::ENCODING_BASE64),
                )
                .child(
                    W::new("RequestedSecurityToken").child(
                        W::leaf("BinarySecurityToken", b64::encode(&self.certificate_der))
                            .attr("xmlns", ns::WSSE)
                            .attr("ValueType", ns::TOKEN_TYPE_X509V3)
                            .attr("EncodingType", ns::ENCODING_BASE64),
                    ),
                )
                .child(W::leaf("RequestID", self.request_id.to_string()).attr("xmlns", ns::WSTEP)),
        )
    }

    pub fn to_envelope(&self, relates_to: Option<&str>) -> String {
        soap::response(ns::ACTION_WSTEP_RESPONSE, relates_to, self.body())
    }
}

/// "Taken Under Submission": the request waits for approval; the client polls with
/// QueryTokenStatus at `reference_uri` with `request_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingResponse {
    pub request_id: u64,
    pub reference_uri: String,
    /// CMC Full PKI Response with status pending, for the RSTR-level token (as ADCS sends).
    pub cmc_der: Vec<u8>,
}

impl PendingResponse {
    pub fn body(&self) -> W {
        W::new("RequestSecurityTokenResponseCollection").attr("xmlns", ns::WST).child(
            W::new("RequestSecurityTokenResponse")
                .child(W::leaf("TokenType", ns::TOKEN_TYPE_X509V3))
                .child(
                    W::leaf("DispositionMessage", "Taken Under Submission")
                        .attr("xmlns", ns::WSTEP)
                        .attr("xml:lang", "en-US"),
                )
                .child(
                    W::leaf("BinarySecurityToken", b64::encode(&self.cmc_der))
                        .attr("xmlns", ns::WSSE)
                        .attr("ValueType", ns::VALUE_TYPE_PKCS7)
                        .attr("EncodingType", ns::ENCODING_BASE64),
                )
                .child(
                    W::new("RequestedSecurityToken").child(
                        W::new("SecurityTokenReference")
                            .attr("xmlns", ns::WSSE)
                            .child(W::new("Reference").attr("URI", self.reference_uri.as_str())),
                    ),
                )
                .child(W::leaf("RequestID", self.request_id.to_string()).attr("xmlns", ns::WSTEP)),
        )
    }

    pub fn to_envelope(&self, relates_to: Option<&str>) -> String {
        soap::response(ns::ACTION_WSTEP_RESPONSE, relates_to, self.body())
    }
}

/// QueryTokenStatus for a pending request.
pub fn query_request_body(request_id: &str) -> W {
    W::new("wst:RequestSecurityToken")
        .attr("xmlns:wst", ns::WST)
        .attr("xmlns:wstep", ns::WSTEP)
        .child(W::leaf("wst:TokenType", ns::TOKEN_TYPE_X509V3))
        .child(W::leaf("wst:RequestType", ns::REQUEST_TYPE_QUERY))
        .child(W::leaf("wstep:RequestID", request_id))
}

/// A request whose token is `der` with the given request type and value type (renewals send a
/// CMS SignedData as `#PKCS7`; ROBO sends a PKCS#10 with RequestType Renew).
pub fn token_request_body(request_type: &str, value_type: &str, der: &[u8]) -> W {
    W::new("wst:RequestSecurityToken")
        .attr("xmlns:wst", ns::WST)
        .attr("xmlns:wstep", ns::WSTEP)
        .child(W::leaf("wst:TokenType", ns::TOKEN_TYPE_X509V3))
        .child(W::leaf("wst:RequestType", request_type))
        .child(
            W::leaf("wsse:BinarySecurityToken", b64::encode(der))
                .attr("ValueType", value_type)
                .attr("EncodingType", ns::ENCODING_BASE64),
        )
        .child(W::nil("wstep:RequestID"))
}

/// What a client reads from an RSTRC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedResponse {
    pub certificate_der: Option<Vec<u8>>,
    pub chain_pkcs7_der: Option<Vec<u8>>,
    pub request_id: Option<String>,
    pub disposition: Option<String>,
    /// Set when the request is pending (SecurityTokenReference/Reference@URI).
    pub pending_reference: Option<String>,
}

pub fn parse_response(body: &Element) -> Result<ParsedResponse, ProtoError> {
    if !body.is(ns::WST, "RequestSecurityTokenResponseCollection") {
        return Err(ProtoError::Missing("wst:RequestSecurityTokenResponseCollection"));
    }
    let r = body
        .child(ns::WST, "RequestSecurityTokenResponse")
        .ok_or(ProtoError::Missing("wst:RequestSecurityTokenResponse"))?;
    let certificate_der = r
        .path(&[(ns::WST, "RequestedSecurityToken"), (ns::WSSE, "BinarySecurityToken")])
        .map(|b| b64::decode(&b.text, "RequestedSecurityToken"))
        .transpose()?;
    let chain_pkcs7_der =
        r.child(ns::WSSE, "BinarySecurityToken").map(|b| b64::decode(&b.text, "BinarySecurityToken")).transpose()?;
    Ok(ParsedResponse {
        certificate_der,
        chain_pkcs7_der,
        request_id: r.child(ns::WSTEP, "RequestID").and_then(|e| e.value()).map(str::to_string),
        disposition: r.child(ns::WSTEP, "DispositionMessage").and_then(|e| e.value()).map(str::to_string),
        pending_reference: r
            .path(&[(ns::WST, "RequestedSecurityToken"), (ns::WSSE, "SecurityTokenReference"), (ns::WSSE, "Reference")])
            .and_then(|e| e.attr(None, "URI"))
            .map(str::to_string),
    })
}
