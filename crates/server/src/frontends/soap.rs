//! The SOAP endpoint shared by MS-XCEP and MS-WSTEP: body limits, envelope parsing, dispatch on
//! `a:Action`, credentials, and the one mapping from errors to SOAP faults (HTTP 500).
use super::{AppState, PeerCerts};
use crate::ra::{Credentials, RaError};
use autoenroll_core::Kind;
use autoenroll_proto::soap::{self, EnrollmentDetail, Fault, HeaderToken};
use autoenroll_proto::{ns, ProtoError};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use http_body_util::BodyExt;

/// Largest SOAP request we read. Real requests are a few KiB; renewals with chains ~10 KiB.
pub const MAX_BODY: usize = 256 * 1024;

pub enum FrontError {
    Proto(ProtoError),
    Ra(RaError),
}

impl From<ProtoError> for FrontError {
    fn from(e: ProtoError) -> Self {
        FrontError::Proto(e)
    }
}

impl From<RaError> for FrontError {
    fn from(e: RaError) -> Self {
        FrontError::Ra(e)
    }
}

pub fn proto_code(e: &ProtoError) -> &'static str {
    match e {
        ProtoError::Xml(_) | ProtoError::NotSoap => "BadXml",
        ProtoError::TooDeep | ProtoError::TooManyElements => "XmlTooComplex",
        ProtoError::TooLarge => "TooLarge",
        ProtoError::Missing(_) => "MissingElement",
        ProtoError::Invalid(_) => "InvalidValue",
        ProtoError::Base64(_) => "BadBase64",
    }
}

/// HRESULTs Windows clients know (signed, as the schema's xs:int).
fn hresult(kind: Kind, code: &str) -> i32 {
    let h: u32 = match kind {
        Kind::BadRequest => 0x8007_0057,                          // E_INVALIDARG
        Kind::BadCsr if code == "BadCsrSignature" => 0x8009_0006, // NTE_BAD_SIGNATURE
        Kind::BadCsr => 0x8009_4001,                              // CERTSRV_E_BAD_REQUESTSUBJECT
        Kind::Unauthorized => 0x8007_0005,                        // E_ACCESSDENIED
        Kind::NotFound => 0x8009_4800,                            // CERTSRV_E_UNSUPPORTED_CERT_TYPE
        Kind::PolicyDenied => 0x8009_4012,                        // CERTSRV_E_TEMPLATE_DENIED
        Kind::Pending => 0x8009_4003,                             // CERTSRV_E_BAD_REQUESTSTATUS
        Kind::RateLimited | Kind::Unavailable => 0x8007_00AA,     // ERROR_BUSY
        Kind::Conflict => 0x8007_00B7,                            // ERROR_ALREADY_EXISTS
        Kind::Internal => 0x8000_4005,                            // E_FAIL
    };
    h as i32
}

fn sender_or_receiver(kind: Kind) -> &'static str {
    match kind {
        Kind::BadRequest | Kind::BadCsr | Kind::Unauthorized | Kind::NotFound | Kind::PolicyDenied | Kind::Conflict => {
            "s:Sender"
        }
        Kind::Pending | Kind::RateLimited | Kind::Unavailable | Kind::Internal => "s:Receiver",
    }
}

pub fn to_fault(e: &FrontError) -> Fault {
    let (kind, code, reason, request_id) = match e {
        FrontError::Proto(p) => (Kind::BadRequest, proto_code(p), p.to_string(), None),
        FrontError::Ra(r) => {
            let reason = if r.kind == Kind::Internal {
                let reference = hex::encode(crate::ra::secrets::random_bytes::<4>());
                tracing::error!(reference, source = r.source.as_deref().unwrap_or(""), "internal error");
                format!("internal error (reference {reference})")
            } else {
                r.detail.clone()
            };
            (r.kind, r.code, reason, r.request_id)
        }
    };
    Fault {
        code: sender_or_receiver(kind).into(),
        subcode: Some(format!("ae:{code}")),
        reason,
        detail: Some(EnrollmentDetail {
            error_code: hresult(kind, code),
            invalid_request: matches!(kind, Kind::BadCsr | Kind::PolicyDenied | Kind::NotFound),
            request_id: request_id.and_then(|i| u64::try_from(i).ok()),
        }),
    }
}

fn soap_response(status: StatusCode, body: String) -> Response {
    // A complete String body: axum sends Content-Length, never chunked (Windows MDM needs this).
    (status, [(header::CONTENT_TYPE, "application/soap+xml; charset=utf-8")], body).into_response()
}

pub fn fault_response(e: &FrontError, relates_to: Option<&str>) -> Response {
    if let FrontError::Ra(r) = e {
        tracing::info!(code = r.code, kind = r.kind.as_str(), "request refused");
    }
    soap_response(StatusCode::INTERNAL_SERVER_ERROR, soap::fault(&to_fault(e), relates_to))
}

async fn read_body(headers: &HeaderMap, body: Body) -> Result<Vec<u8>, FrontError> {
    // Refuse a declared oversize body before reading a byte of it.
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(ProtoError::TooLarge.into());
    }
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes().to_vec()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ProtoError::TooLarge.into()),
        Err(e) => Err(ProtoError::Xml(format!("reading body: {e}")).into()),
    }
}

/// The credentials a request carries: the WS-Security header first, then the TLS client cert.
pub fn credentials(token: &HeaderToken, peer: &PeerCerts) -> Credentials {
    match token {
        HeaderToken::UsernameToken { username, password } => {
            Credentials::Password { username: username.clone(), password: password.clone() }
        }
        HeaderToken::Binary { value_type, value } if value_type == ns::VALUE_TYPE_BOOTSTRAP_TOKEN => {
            Credentials::BootstrapToken(String::from_utf8_lossy(value).into_owned())
        }
        _ => match peer.0.as_ref().and_then(|c| c.first()) {
            Some(leaf) => Credentials::ClientCertificate(leaf.as_ref().to_vec()),
            None => Credentials::None,
        },
    }
}

/// Reads a bounded body and parses it as a SOAP 1.2 envelope.
pub async fn read_envelope(headers: &HeaderMap, body: Body) -> Result<soap::Envelope, FrontError> {
    let bytes = read_body(headers, body).await?;
    Ok(soap::parse_envelope(&bytes)?)
}

pub fn ok_response(body: String) -> Response {
    soap_response(StatusCode::OK, body)
}

pub async fn handle(
    State(state): State<AppState>,
    peer: Option<Extension<PeerCerts>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let peer = peer.map(|Extension(p)| p).unwrap_or_default();
    let env = match read_envelope(&headers, body).await {
        Ok(env) => env,
        Err(e) => return fault_response(&e, None),
    };
    let relates_to = env.message_id.clone();
    let result = match env.action.as_str() {
        ns::ACTION_GET_POLICIES => super::xcep::get_policies(&state, &env, &peer, super::xcep::Flavour::Xcep).await,
        ns::ACTION_WSTEP => super::wstep::request_security_token(&state, &env, &peer).await,
        other => {
            Err(FrontError::Ra(RaError::new(Kind::BadRequest, "UnknownAction", format!("unknown SOAP action {other}"))))
        }
    };
    match result {
        Ok(body) => soap_response(StatusCode::OK, body),
        Err(e) => fault_response(&e, relates_to.as_deref()),
    }
}
