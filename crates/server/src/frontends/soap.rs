//! The SOAP endpoint shared by MS-XCEP and MS-WSTEP: body limits, envelope parsing, dispatch on
//! `a:Action`, credentials, and the one mapping from errors to SOAP faults (HTTP 500).
use super::{AppState, Peer};
use crate::ra::{Credentials, RaError};
use autoenroll_core::{Kind, Refusal, RefusalCode};
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
    /// A request held for approval where the protocol has no way to say so (MS-MDE2).
    Pending(i64),
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

/// The HRESULT Windows clients know for each refusal (winerror.h values, signed as the schema's
/// xs:int). One exhaustive match: a new refusal does not compile until it has one.
pub fn hresult(code: RefusalCode) -> u32 {
    use RefusalCode as C;
    match code {
        C::TooManyAttempts => ERROR_ACCOUNT_LOCKED_OUT,
        C::MissingToken
        | C::WrongCredentials
        | C::TokenUsed
        | C::TokenExpired
        | C::UnknownClientCertificate
        | C::ClientCertificateNotValid
        | C::ClientCertificateExpired
        | C::UnknownCertificate
        | C::ChallengeMissing
        | C::ChallengeInvalid
        | C::ChallengeUsed
        | C::TokenNotAccepted => E_ACCESSDENIED,
        C::BadRenewalSignature | C::BadCsrSignature => NTE_BAD_SIGNATURE,
        C::UnsupportedAlgorithm | C::UnsupportedCipher | C::UnsupportedDigest | C::SignerKeyNotRsa => NTE_BAD_ALGID,
        C::ForeignCertificate => CERT_E_UNTRUSTEDROOT,
        C::CertificateExpired => CERT_E_EXPIRED,
        C::ChallengeExpired => CERTSRV_E_EXPIRED_CHALLENGE,
        C::CertificateRevoked => CRYPT_E_REVOKED,
        C::DeviceMismatch
        | C::DeviceBlocked
        | C::DeviceNotEnrolled
        | C::DeviceNotAllowed
        | C::DeviceBound
        | C::DeviceNameTaken => CERTSRV_E_ENROLL_DENIED,
        C::RenewalCertificateMismatch | C::AlreadyRenewed => CERTSRV_E_BAD_RENEWAL_CERT_ATTRIBUTE,
        C::TemplateNotAllowed | C::OutsideRenewalWindow | C::NotPermitted | C::TemplateNotAssigned => {
            CERTSRV_E_TEMPLATE_DENIED
        }
        C::SameKeyNotAllowed => CERTSRV_E_RENEWAL_BAD_PUBLIC_KEY,
        C::KeyTypeNotAllowed | C::KeyTooWeak | C::KeyLengthMismatch => CERTSRV_E_KEY_LENGTH,
        C::BadCsr
        | C::SubjectRequired
        | C::BadDeviceName
        | C::SubjectMismatch
        | C::NameNotAllowed
        | C::ServerNameReserved
        | C::WildcardNotAllowed
        | C::CommonNameTooLong => CERTSRV_E_BAD_REQUESTSUBJECT,
        C::SubjectAltNameMismatch => CERTSRV_E_SUBJECT_ALT_NAME_REQUIRED,
        C::EkuMismatch => CERTSRV_E_TEMPLATE_CONFLICT,
        C::UnknownTemplate | C::TemplateMisconfigured => CERTSRV_E_UNSUPPORTED_CERT_TYPE,
        C::UnknownRequest | C::UnknownTransaction => CERTSRV_E_NO_REQUEST,
        C::RequestDenied | C::MdmApprovalNeedsToken => CERTSRV_E_ADMIN_DENIED_REQUEST,
        // Another request of the same client is being signed: try again shortly.
        C::RenewalInProgress | C::ServerBusy => ERROR_BUSY,
        C::NotPending => CERTSRV_E_BAD_REQUESTSTATUS,
        C::NoSuchCertificate | C::UnknownDevice => ERROR_NOT_FOUND,
        C::Duplicate | C::DeviceHasHistory => ERROR_ALREADY_EXISTS,
        C::BadRenewalRequest
        | C::BadCertificate
        | C::BadMessageCheck
        | C::BadSignerCertificate
        | C::NotARequest
        | C::BadMessageContent
        | C::UnknownAction
        | C::UnsupportedRequestType
        | C::BadJson
        | C::BadParameter
        | C::BadNonce
        | C::BadJws
        | C::BadSignatureAlgorithm
        | C::AcmeAccountUnknown
        | C::ExternalAccountRequired
        | C::UnsupportedIdentifier
        | C::UnknownAcmeResource
        | C::OrderNotReady
        | C::ChallengeFailed
        | C::ReplacesRefused
        | C::BadRevocationReason
        | C::TooLarge
        | C::InvalidTemplate
        | C::InvalidAccount
        | C::InvalidToken
        | C::InvalidChallenge
        | C::WeakChallenge
        | C::InvalidReason
        | C::BadSubject => E_INVALIDARG,
    }
}

const E_ACCESSDENIED: u32 = 0x8007_0005;
const E_INVALIDARG: u32 = 0x8007_0057;
const E_FAIL: u32 = 0x8000_4005;
const ERROR_NOT_FOUND: u32 = 0x8007_0490;
const ERROR_BUSY: u32 = 0x8007_00AA;
/// HRESULT_FROM_WIN32(ERROR_ACCOUNT_LOCKED_OUT).
const ERROR_ACCOUNT_LOCKED_OUT: u32 = 0x8007_0775;
const ERROR_ALREADY_EXISTS: u32 = 0x8007_00B7;
const NTE_BAD_SIGNATURE: u32 = 0x8009_0006;
const NTE_BAD_ALGID: u32 = 0x8009_0008;
const CRYPT_E_REVOKED: u32 = 0x8009_2010;
const CERT_E_EXPIRED: u32 = 0x800B_0101;
const CERT_E_UNTRUSTEDROOT: u32 = 0x800B_0109;
const CERTSRV_E_BAD_REQUESTSUBJECT: u32 = 0x8009_4001;
const CERTSRV_E_NO_REQUEST: u32 = 0x8009_4002;
const CERTSRV_E_BAD_REQUESTSTATUS: u32 = 0x8009_4003;
const CERTSRV_E_BAD_RENEWAL_CERT_ATTRIBUTE: u32 = 0x8009_400E;
const CERTSRV_E_ENROLL_DENIED: u32 = 0x8009_4011;
const CERTSRV_E_TEMPLATE_DENIED: u32 = 0x8009_4012;
const CERTSRV_E_ADMIN_DENIED_REQUEST: u32 = 0x8009_4014;
const CERTSRV_E_UNSUPPORTED_CERT_TYPE: u32 = 0x8009_4800;
const CERTSRV_E_TEMPLATE_CONFLICT: u32 = 0x8009_4802;
const CERTSRV_E_SUBJECT_ALT_NAME_REQUIRED: u32 = 0x8009_4803;
const CERTSRV_E_KEY_LENGTH: u32 = 0x8009_4811;
const CERTSRV_E_RENEWAL_BAD_PUBLIC_KEY: u32 = 0x8009_4816;
const CERTSRV_E_EXPIRED_CHALLENGE: u32 = 0x8009_481C;

pub fn sender_or_receiver(kind: Kind) -> &'static str {
    match kind {
        Kind::BadRequest | Kind::BadCsr | Kind::Unauthorized | Kind::NotFound | Kind::PolicyDenied | Kind::Conflict => {
            "s:Sender"
        }
        Kind::Pending | Kind::RateLimited | Kind::Unavailable | Kind::Internal => "s:Receiver",
    }
}

/// The one mapping from errors to MS-WSTEP/XCEP SOAP faults.
pub fn to_fault(e: &FrontError) -> Fault {
    let (kind, code, reason, request_id, error_code) = match e {
        FrontError::Proto(p) => (Kind::BadRequest, proto_code(p), p.to_string(), None, E_INVALIDARG),
        FrontError::Pending(id) => {
            (Kind::Pending, "Pending", format!("request {id} awaits approval"), Some(*id), CERTSRV_E_BAD_REQUESTSTATUS)
        }
        FrontError::Ra(r) => {
            let error_code = r.refusal().map_or(E_FAIL, |f: &Refusal| hresult(f.code()));
            (r.kind(), r.code(), r.detail(), r.request_id(), error_code)
        }
    };
    Fault {
        code: sender_or_receiver(kind).into(),
        subcode: Some(format!("ae:{code}")),
        reason,
        detail: Some(EnrollmentDetail {
            error_code: error_code as i32,
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
        tracing::info!(code = r.code(), kind = r.kind().as_str(), "request refused");
        crate::metrics::refused(r);
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
pub fn credentials(token: &HeaderToken, peer: &Peer) -> Credentials {
    match token {
        HeaderToken::UsernameToken { username, password } => {
            Credentials::Password { username: username.clone(), password: password.clone(), client: peer.1 }
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
    peer: Option<Extension<Peer>>,
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
        // KET arrives with its own action (MS-WSTEP 4.1.2.1); the request type says what it is.
        ns::ACTION_WSTEP | ns::ACTION_KET => super::wstep::request_security_token(&state, &env, &peer).await,
        other => Err(FrontError::Ra(Refusal::UnknownAction { action: other.to_string() }.into())),
    };
    match result {
        Ok(body) => soap_response(StatusCode::OK, body),
        Err(e) => fault_response(&e, relates_to.as_deref()),
    }
}
