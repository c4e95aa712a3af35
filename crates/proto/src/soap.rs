//! SOAP 1.2 envelopes with WS-Addressing and WS-Security headers, and SOAP faults.
use crate::xml::{self, Element, W};
use crate::{b64, ns, ProtoError};

/// The credential a request carries in its `wsse:Security` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderToken {
    None,
    UsernameToken {
        username: String,
        password: String,
    },
    /// A `wsse:BinarySecurityToken` in the header (MDM Federated / bootstrap token).
    Binary {
        value_type: String,
        value: Vec<u8>,
    },
}

#[derive(Debug, Clone)]
pub struct Envelope {
    pub action: String,
    pub message_id: Option<String>,
    pub token: HeaderToken,
    /// The first element inside `s:Body`.
    pub body: Element,
}

pub fn parse_envelope(input: &[u8]) -> Result<Envelope, ProtoError> {
    let root = xml::parse(input)?;
    if !root.is(ns::SOAP12, "Envelope") {
        return Err(ProtoError::NotSoap);
    }
    let header = root.child(ns::SOAP12, "Header");
    let action = header
        .and_then(|h| h.child(ns::WSA, "Action"))
        .and_then(|a| a.value())
        .ok_or(ProtoError::Missing("a:Action"))?
        .to_string();
    let message_id = header.and_then(|h| h.child(ns::WSA, "MessageID")).and_then(|m| m.value()).map(str::to_string);
    let token = match header.and_then(|h| h.child(ns::WSSE, "Security")) {
        None => HeaderToken::None,
        Some(sec) => parse_security(sec)?,
    };
    let body = root
        .child(ns::SOAP12, "Body")
        .ok_or(ProtoError::Missing("s:Body"))?
        .children
        .first()
        .cloned()
        .ok_or(ProtoError::Missing("s:Body content"))?;
    Ok(Envelope { action, message_id, token, body })
}

fn parse_security(sec: &Element) -> Result<HeaderToken, ProtoError> {
    if let Some(ut) = sec.child(ns::WSSE, "UsernameToken") {
        let username = ut
            .child(ns::WSSE, "Username")
            .map(|u| u.text.trim().to_string())
            .ok_or(ProtoError::Missing("wsse:Username"))?;
        // Line breaks and tabs around the value are the document's layout, not the password (the
        // MS-MDE2 sample itself ends its password with a line break); spaces are kept.
        let password = ut
            .child(ns::WSSE, "Password")
            .map(|p| p.text.trim_matches(['\r', '\n', '\t']).to_string())
            .ok_or(ProtoError::Missing("wsse:Password"))?;
        return Ok(HeaderToken::UsernameToken { username, password });
    }
    if let Some(bst) = sec.child(ns::WSSE, "BinarySecurityToken") {
        let value_type = bst.attr(None, "ValueType").unwrap_or_default().to_string();
        let value = b64::decode(&bst.text, "wsse:BinarySecurityToken")?;
        return Ok(HeaderToken::Binary { value_type, value });
    }
    Ok(HeaderToken::None)
}

fn envelope_root() -> W {
    W::new("s:Envelope")
        .attr("xmlns:s", ns::SOAP12)
        .attr("xmlns:a", ns::WSA)
        .attr("xmlns:xsi", ns::XSI)
        .attr("xmlns:wsse", ns::WSSE)
        .attr("xmlns:u", ns::WSU)
}

/// A response envelope echoing the request's MessageID in RelatesTo.
pub fn response(action: &str, relates_to: Option<&str>, body: W) -> String {
    let mut header = W::new("s:Header").child(W::leaf("a:Action", action).attr("s:mustUnderstand", "1"));
    if let Some(id) = relates_to {
        header = header.child(W::leaf("a:RelatesTo", id));
    }
    envelope_root().child(header).child(W::new("s:Body").child(body)).to_document()
}

/// A response with a `wsse:Security/u:Timestamp` header (MS-MDE2 responses carry one).
pub fn response_with_timestamp(
    action: &str,
    relates_to: Option<&str>,
    created: &str,
    expires: &str,
    body: W,
) -> String {
    let mut header = W::new("s:Header").child(W::leaf("a:Action", action).attr("s:mustUnderstand", "1"));
    if let Some(id) = relates_to {
        header = header.child(W::leaf("a:RelatesTo", id));
    }
    header = header.child(
        W::new("wsse:Security").attr("s:mustUnderstand", "1").child(
            W::new("u:Timestamp")
                .attr("u:Id", "_0")
                .child(W::leaf("u:Created", created))
                .child(W::leaf("u:Expires", expires)),
        ),
    );
    envelope_root().child(header).child(W::new("s:Body").child(body)).to_document()
}

/// A request envelope as a client sends it.
pub fn request(action: &str, to: &str, message_id: &str, token: &HeaderToken, body: W) -> String {
    let mut header = W::new("s:Header")
        .child(W::leaf("a:Action", action).attr("s:mustUnderstand", "1"))
        .child(W::leaf("a:MessageID", message_id))
        .child(W::leaf("a:To", to).attr("s:mustUnderstand", "1"));
    match token {
        HeaderToken::None => {}
        HeaderToken::UsernameToken { username, password } => {
            header = header.child(
                W::new("wsse:Security").attr("s:mustUnderstand", "1").child(
                    W::new("wsse:UsernameToken")
                        .child(W::leaf("wsse:Username", username.as_str()))
                        .child(W::leaf("wsse:Password", password.as_str()).attr("Type", ns::PASSWORD_TEXT)),
                ),
            );
        }
        HeaderToken::Binary { value_type, value } => {
            header = header.child(
                W::new("wsse:Security").attr("s:mustUnderstand", "1").child(
                    W::leaf("wsse:BinarySecurityToken", b64::encode(value))
                        .attr("ValueType", value_type.as_str())
                        .attr("EncodingType", ns::ENCODING_BASE64),
                ),
            );
        }
    }
    envelope_root().child(header).child(W::new("s:Body").child(body)).to_document()
}

/// Detail of a WSTEP fault (`CertificateEnrollmentWSDetail`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentDetail {
    /// Signed HRESULT.
    pub error_code: i32,
    /// True when the CA denied the request (as opposed to a transport/format problem).
    pub invalid_request: bool,
    pub request_id: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// `s:Sender` or `s:Receiver`.
    pub code: String,
    /// A specific reason as a qualified name, e.g. `a:BadBase64`.
    pub subcode: Option<String>,
    pub reason: String,
    pub detail: Option<EnrollmentDetail>,
}

/// A fault envelope. Served with HTTP 500 (clients only read faults on 500).
pub fn fault(f: &Fault, relates_to: Option<&str>) -> String {
    let mut code = W::new("s:Code").child(W::leaf("s:Value", f.code.as_str()));
    if let Some(sub) = &f.subcode {
        code = code.child(W::new("s:Subcode").child(W::leaf("s:Value", sub.as_str())));
    }
    let mut fault = W::new("s:Fault")
        .attr("xmlns:ae", ns::AUTOENROLL_FAULT)
        .child(code)
        .child(W::new("s:Reason").child(W::leaf("s:Text", f.reason.as_str()).attr("xml:lang", "en-US")));
    if let Some(d) = &f.detail {
        let request_id = match d.request_id {
            Some(id) => W::leaf("RequestID", id.to_string()),
            None => W::nil("RequestID"),
        };
        fault = fault.child(
            W::new("s:Detail").child(
                W::new("CertificateEnrollmentWSDetail")
                    .attr("xmlns", ns::WSTEP)
                    .child(W::nil("BinaryResponse"))
                    .child(W::leaf("ErrorCode", d.error_code.to_string()))
                    .child(W::leaf("InvalidRequest", d.invalid_request.to_string()))
                    .child(request_id),
            ),
        );
    }
    response(ns::ACTION_WSTEP_FAULT, relates_to, fault)
}

/// Reads a fault out of a response envelope body, if it is one.
pub fn parse_fault(env: &Envelope) -> Option<Fault> {
    let f = &env.body;
    if !f.is(ns::SOAP12, "Fault") {
        return None;
    }
    let code = f.path(&[(ns::SOAP12, "Code"), (ns::SOAP12, "Value")]);
    let subcode = f.path(&[(ns::SOAP12, "Code"), (ns::SOAP12, "Subcode"), (ns::SOAP12, "Value")]);
    let reason = f.path(&[(ns::SOAP12, "Reason"), (ns::SOAP12, "Text")]);
    let detail =
        f.path(&[(ns::SOAP12, "Detail"), (ns::WSTEP, "CertificateEnrollmentWSDetail")]).map(|d| EnrollmentDetail {
            error_code: d
                .child(ns::WSTEP, "ErrorCode")
                .and_then(|e| e.value())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            invalid_request: d
                .child(ns::WSTEP, "InvalidRequest")
                .and_then(|e| e.value())
                .map(|v| v == "true" || v == "1")
                .unwrap_or(false),
            request_id: d.child(ns::WSTEP, "RequestID").and_then(|e| e.value()).and_then(|v| v.parse().ok()),
        });
    Some(Fault {
        code: code.and_then(|c| c.value()).unwrap_or_default().to_string(),
        subcode: subcode.and_then(|c| c.value()).map(str::to_string),
        reason: reason.map(|r| r.text.trim().to_string()).unwrap_or_default(),
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_round_trips() {
        let f = Fault {
            code: "s:Receiver".into(),
            subcode: Some("a:BadBase64".into()),
            reason: "bad base64 in <BinarySecurityToken>".into(),
            detail: Some(EnrollmentDetail { error_code: -2147024809, invalid_request: true, request_id: Some(7) }),
        };
        let xml = fault(&f, Some("urn:uuid:1"));
        let env = parse_envelope(xml.as_bytes()).unwrap();
        assert_eq!(env.action, ns::ACTION_WSTEP_FAULT);
        assert_eq!(parse_fault(&env), Some(f));
    }

    #[test]
    fn request_round_trips_username_token() {
        let t = HeaderToken::UsernameToken { username: "u".into(), password: "p&<".into() };
        let xml = request(
            ns::ACTION_GET_POLICIES,
            "https://x/",
            "urn:uuid:2",
            &t,
            W::new("GetPolicies").attr("xmlns", ns::XCEP),
        );
        let env = parse_envelope(xml.as_bytes()).unwrap();
        assert_eq!(env.token, t);
        assert_eq!(env.message_id.as_deref(), Some("urn:uuid:2"));
        assert!(env.body.is(ns::XCEP, "GetPolicies"));
    }
}
