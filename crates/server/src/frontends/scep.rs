//! SCEP (RFC 8894) over HTTP: GetCACaps, GetCACert and PKIOperation (GET with a base64
//! `message`, or POST with any content type). Requests the RA can answer get a CertRep signed
//! by the RA certificate; RA errors become a FAILURE CertRep here, and only here.
use super::{AppState, Peer};
use crate::ra::{Issued, Outcome, RaError, ScepRequest};
use autoenroll_core::pki::scep::{
    parse_issuer_and_serial, parse_pki_message, FailInfo, MessageType, PkiMessage, PkiStatus, ScepAttributes,
    MAX_PKI_MESSAGE,
};
use autoenroll_core::pki::sig::Digest;
use autoenroll_core::{Refusal, RefusalCode};
use autoenroll_keys::envelope::ContentCipher;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use std::net::IpAddr;

pub const PATH: &str = "/scep";
pub const TEMPLATE_PATH: &str = "/scep/{*rest}";
const CERTREP: u32 = 3;

pub fn router(state: AppState) -> axum::Router {
    use axum::routing::get;
    let routes = axum::Router::new()
        .route(PATH, get(root).post(root))
        .route(TEMPLATE_PATH, get(with_template).post(with_template));
    super::body_limit(routes, MAX_PKI_MESSAGE).with_state(state)
}

async fn root(
    State(st): State<AppState>,
    peer: Option<Extension<Peer>>,
    method: Method,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    handle(st, None, client(peer), method, q, body).await
}

/// The client's address (failed challenges count against it).
fn client(peer: Option<Extension<Peer>>) -> Option<IpAddr> {
    peer.and_then(|Extension(p)| p.1)
}

async fn with_template(
    State(st): State<AppState>,
    peer: Option<Extension<Peer>>,
    Path(rest): Path<String>,
    method: Method,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    // `/scep/<template>`, tolerating the `pkiclient.exe` suffix some devices append.
    let template = rest.split('/').find(|s| !s.is_empty() && !s.eq_ignore_ascii_case("pkiclient.exe"));
    handle(st, template.map(str::to_string), client(peer), method, q, body).await
}

fn plain(status: StatusCode, text: impl Into<String>) -> Response {
    let mut text = text.into();
    text.push('\n');
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

/// Query parameters, percent-decoded; `+` stays `+` (raw base64 in a GET is common).
fn query_param(query: &str, name: &str) -> Option<Vec<u8>> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k.eq_ignore_ascii_case(name)).then(|| percent_encoding::percent_decode_str(v).collect())
    })
}

async fn handle(
    st: AppState,
    template: Option<String>,
    client: Option<IpAddr>,
    method: Method,
    query: Option<String>,
    body: Bytes,
) -> Response {
    let query = query.unwrap_or_default();
    let operation = query_param(&query, "operation").map(|o| String::from_utf8_lossy(&o).into_owned());
    match operation.as_deref() {
        Some("GetCACaps") => {
            let mut caps = vec!["POSTPKIOperation", "Renewal", "SHA-256", "SHA-512", "AES", "SCEPStandard"];
            if st.ra.scep_legacy_ciphers() {
                caps.push("DES3");
            }
            plain(StatusCode::OK, caps.join("\n"))
        }
        Some("GetCACert") => {
            let certs = st.ra.scep_certificates();
            let refs: Vec<&[u8]> = certs.iter().map(Vec::as_slice).collect();
            match autoenroll_proto::pkcs7::certs_only(&refs) {
                Ok(p7) => ([(header::CONTENT_TYPE, "application/x-x509-ca-ra-cert")], p7).into_response(),
                Err(e) => {
                    tracing::error!(%e, "GetCACert");
                    plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
                }
            }
        }
        Some("GetNextCACert") => plain(StatusCode::NOT_FOUND, "no CA rollover is pending"),
        Some("PKIOperation") => {
            let message = if method == Method::POST {
                body.to_vec()
            } else {
                let Some(text) = query_param(&query, "message") else {
                    return plain(StatusCode::BAD_REQUEST, "PKIOperation needs a message parameter");
                };
                if text.len() > MAX_PKI_MESSAGE * 2 {
                    return plain(StatusCode::PAYLOAD_TOO_LARGE, "message too large");
                }
                let text: Vec<u8> = text.into_iter().filter(|c| !c.is_ascii_whitespace()).collect();
                match base64_decode(&text) {
                    Some(m) => m,
                    None => return plain(StatusCode::BAD_REQUEST, "the message parameter is not base64"),
                }
            };
            pki_operation(&st, template.as_deref(), client, &message).await
        }
        Some(other) => plain(StatusCode::BAD_REQUEST, format!("unknown SCEP operation {other:?}")),
        None => plain(StatusCode::BAD_REQUEST, "SCEP requests need an operation parameter"),
    }
}

fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine;
    let cfg = base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent);
    let std = base64::engine::GeneralPurpose::new(&base64::alphabet::STANDARD, cfg);
    let url = base64::engine::GeneralPurpose::new(&base64::alphabet::URL_SAFE, cfg);
    std.decode(text).or_else(|_| url.decode(text)).ok()
}

async fn pki_operation(st: &AppState, template: Option<&str>, client: Option<IpAddr>, message: &[u8]) -> Response {
    // Without a verified signer there is nobody to answer to: plain HTTP errors.
    let msg = match parse_pki_message(message) {
        Ok(m) => m,
        Err(e) => {
            tracing::info!(%e, "refused a SCEP message");
            return plain(StatusCode::BAD_REQUEST, format!("not a valid SCEP pkiMessage: {e}"));
        }
    };
    let outcome = answer(st, template, client, &msg).await;
    let reply = match outcome {
        Ok(Answer::Sealed(p7, cipher)) => {
            match autoenroll_keys::envelope::encrypt_enveloped(&p7, &msg.signer_cert_der, cipher) {
                Ok(env) => cert_rep(st, &msg, PkiStatus::Success, None, &env),
                Err(e) => failure(st, &msg, &Refusal::SignerKeyNotRsa { detail: e.to_string() }.into()),
            }
        }
        Ok(Answer::Pending) => cert_rep(st, &msg, PkiStatus::Pending, None, &[]),
        Err(e) => failure(st, &msg, &e),
    };
    match reply {
        Ok(der) => ([(header::CONTENT_TYPE, "application/x-pki-message")], der).into_response(),
        Err(e) => {
            tracing::error!(%e, "could not sign a CertRep");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

/// What a request is answered with: a degenerate SignedData (certificates or a CRL) to seal
/// for the requester with its cipher, or PENDING.
enum Answer {
    Sealed(Vec<u8>, ContentCipher),
    Pending,
}

fn certs(certs: &[&[u8]], cipher: ContentCipher) -> Result<Answer, RaError> {
    let p7 = autoenroll_proto::pkcs7::certs_only(certs).map_err(RaError::internal)?;
    Ok(Answer::Sealed(p7, reply_cipher(cipher)))
}

fn reply_cipher(request: ContentCipher) -> ContentCipher {
    match request {
        ContentCipher::Aes128Cbc => ContentCipher::Aes128Cbc,
        ContentCipher::Aes256Cbc => ContentCipher::Aes256Cbc,
        // Legacy clients get 3DES back: never single DES.
        ContentCipher::Des3Cbc | ContentCipher::DesCbc => ContentCipher::Des3Cbc,
    }
}

fn issued(r: Outcome, cipher: ContentCipher) -> Result<Answer, RaError> {
    match r {
        Outcome::Issued(Issued { certificate_der, .. }) => certs(&[&certificate_der], cipher),
        Outcome::Pending { .. } => Ok(Answer::Pending),
    }
}

/// The digest check and the envelope; refusals here are audited (the RA audits the rest).
async fn open(st: &AppState, msg: &PkiMessage) -> Result<(Vec<u8>, ContentCipher), RaError> {
    let opened = if msg.digest == Digest::Sha1 && !st.ra.scep_legacy_ciphers() {
        Err(Refusal::UnsupportedDigest.into())
    } else {
        st.ra.scep_open_envelope(&msg.envelope)
    };
    if let Err(e) = &opened {
        st.ra.audit_scep_refusal(&msg.transaction_id, e).await;
    }
    opened
}

async fn answer(
    st: &AppState,
    template: Option<&str>,
    client: Option<IpAddr>,
    msg: &PkiMessage,
) -> Result<Answer, RaError> {
    match msg.message_type {
        MessageType::PkcsReq | MessageType::RenewalReq => {
            let (csr, cipher) = open(st, msg).await?;
            let r = st
                .ra
                .scep_request(&ScepRequest {
                    renewal_req: msg.message_type == MessageType::RenewalReq,
                    transaction_id: &msg.transaction_id,
                    signer_cert_der: &msg.signer_cert_der,
                    csr_der: &csr,
                    path_template: template,
                    client,
                })
                .await?;
            issued(r, cipher)
        }
        MessageType::CertPoll => {
            let (_issuer_and_subject, cipher) = open(st, msg).await?;
            issued(st.ra.scep_poll(&msg.transaction_id, &msg.signer_cert_der).await?, cipher)
        }
        MessageType::GetCert => {
            let (content, cipher) = open(st, msg).await?;
            let (_issuer, serial) = parse_issuer_and_serial(&content)
                .map_err(|e| Refusal::BadMessageContent { detail: format!("GetCert: {e}") })?;
            certs(&[&st.ra.scep_get_cert(&serial).await?], cipher)
        }
        MessageType::GetCrl => {
            // The content names a certificate of ours (issuer and serial); the answer is the
            // issuing CA's current CRL.
            let (_content, cipher) = open(st, msg).await?;
            let p7 = autoenroll_proto::pkcs7::crl_only(&st.ra.crl().await?).map_err(RaError::internal)?;
            Ok(Answer::Sealed(p7, reply_cipher(cipher)))
        }
        MessageType::CertRep => Err(Refusal::NotARequest.into()),
    }
}

/// The one place refusals become SCEP failInfo values (RFC 8894 3.2.1.4.5); exhaustive.
pub fn fail_info(code: RefusalCode) -> FailInfo {
    use RefusalCode as C;
    match code {
        C::BadMessageCheck | C::BadRenewalSignature => FailInfo::BadMessageCheck,
        C::UnsupportedCipher | C::UnsupportedDigest | C::SignerKeyNotRsa | C::UnsupportedAlgorithm => FailInfo::BadAlg,
        C::UnknownTransaction | C::NoSuchCertificate | C::UnknownCertificate | C::UnknownRequest => FailInfo::BadCertId,
        C::CertificateExpired => FailInfo::BadTime,
        C::MissingToken
        | C::WrongCredentials
        | C::TooManyAttempts
        | C::TokenUsed
        | C::TokenExpired
        | C::UnknownClientCertificate
        | C::ClientCertificateNotValid
        | C::ClientCertificateExpired
        | C::BadRenewalRequest
        | C::BadCertificate
        | C::ForeignCertificate
        | C::CertificateRevoked
        | C::DeviceMismatch
        | C::RenewalCertificateMismatch
        | C::AlreadyRenewed
        | C::TemplateNotAllowed
        | C::OutsideRenewalWindow
        | C::SameKeyNotAllowed
        | C::BadCsr
        | C::BadCsrSignature
        | C::KeyTypeNotAllowed
        | C::KeyTooWeak
        | C::SubjectRequired
        | C::BadDeviceName
        | C::UnknownTemplate
        | C::TemplateMisconfigured
        | C::NotPermitted
        | C::DeviceBlocked
        | C::ChallengeMissing
        | C::ChallengeInvalid
        | C::ChallengeExpired
        | C::ChallengeUsed
        | C::DeviceNotEnrolled
        | C::TemplateNotAssigned
        | C::SubjectMismatch
        | C::SubjectAltNameMismatch
        | C::KeyLengthMismatch
        | C::EkuMismatch
        | C::BadSignerCertificate
        | C::NotARequest
        | C::BadMessageContent
        | C::RequestDenied
        | C::MdmApprovalNeedsToken
        | C::ServerBusy
        | C::RenewalInProgress
        | C::NotPending
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
        | C::BadSubject
        | C::UnknownDevice
        | C::Duplicate
        | C::DeviceHasHistory
        | C::TokenNotAccepted
        | C::DeviceNotAllowed
        | C::DeviceBound
        | C::DeviceNameTaken
        | C::NameNotAllowed
        | C::ServerNameReserved
        | C::WildcardNotAllowed
        | C::CommonNameTooLong => FailInfo::BadRequest,
    }
}

fn failure(st: &AppState, msg: &PkiMessage, e: &RaError) -> Result<Vec<u8>, RaError> {
    // An internal failure is the server's, not the request's: badRequest is the closest SCEP has.
    let info = e.refusal_code().map_or(FailInfo::BadRequest, fail_info);
    tracing::info!(code = e.code(), transaction = %msg.transaction_id, ?info, "SCEP request refused");
    crate::metrics::refused(e);
    let text = format!("{}: {}", e.code(), e.detail());
    cert_rep(st, msg, PkiStatus::Failure, Some((info, &text)), &[])
}

fn cert_rep(
    st: &AppState,
    msg: &PkiMessage,
    status: PkiStatus,
    fail: Option<(FailInfo, &str)>,
    content: &[u8],
) -> Result<Vec<u8>, RaError> {
    let nonce = autoenroll_keys::random_bytes(16).map_err(RaError::internal)?;
    let attrs = ScepAttributes {
        message_type: CERTREP,
        transaction_id: &msg.transaction_id,
        sender_nonce: &nonce,
        recipient_nonce: Some(&msg.sender_nonce),
        status: Some(status),
        fail_info: fail,
    }
    .encode()
    .map_err(RaError::internal)?;
    st.ra.scep_sign(content, attrs)
}
