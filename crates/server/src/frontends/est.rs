//! EST (RFC 7030) under `/.well-known/est` and `/.well-known/est/<label>`, where the label names
//! a template: `cacerts`, `csrattrs`, `simpleenroll` and `simplereenroll`. The RA decides as
//! for every other protocol: the same templates, grants, name rules, inventory, renewal checks
//! and successor rule; this module is the wire (base64 DER bodies, RFC 7030 section 4) and the
//! one mapping of RA errors to EST answers (an HTTP status for the refusal's class, the refusal
//! in a text body, `WWW-Authenticate` on an enrollment's 401). A template that holds requests
//! for approval answers 202 with `Retry-After`; the same request sent again (same device, key
//! and labelled template) gets that request's answer: 202 while it waits, the certificate once
//! approved, 403 once denied.
use super::{http_status, AppState, Peer};
use crate::ra::{Credentials, EnrollInput, Outcome, Purpose, RaError, Window};
use autoenroll_core::model::KeyAlgorithm;
use autoenroll_core::pki::CsrFacts;
use autoenroll_core::{Kind, Refusal};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use base64::Engine;

/// Where EST lives (RFC 7030 section 3.2.2).
pub const PREFIX: &str = "/.well-known/est";
/// A PKCS#10 in base64 is a few kilobytes; anything much larger is not one.
const MAX_BODY: usize = 64 * 1024;
const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

pub fn router(state: AppState) -> axum::Router {
    use axum::routing::{get, post};
    let routes = axum::Router::new()
        .route("/.well-known/est/cacerts", get(cacerts))
        .route("/.well-known/est/{label}/cacerts", get(cacerts))
        .route("/.well-known/est/csrattrs", get(csrattrs))
        .route("/.well-known/est/{label}/csrattrs", get(csrattrs))
        .route("/.well-known/est/simpleenroll", post(simpleenroll))
        .route("/.well-known/est/{label}/simpleenroll", post(simpleenroll))
        .route("/.well-known/est/serverkeygen", post(serverkeygen))
        .route("/.well-known/est/{label}/serverkeygen", post(serverkeygen))
        .route("/.well-known/est/simplereenroll", post(simplereenroll))
        .route("/.well-known/est/{label}/simplereenroll", post(simplereenroll));
    super::body_limit(routes, MAX_BODY).with_state(state)
}

/// The one place RA errors become EST answers. `basic`: a 401 invites HTTP Basic credentials
/// (enrollment; a re-enrollment needs its certificate, which no password replaces).
fn error(e: &RaError, basic: bool) -> Response {
    tracing::info!(code = e.code(), kind = e.kind().as_str(), "EST request refused");
    crate::metrics::refused(e);
    let status = http_status(e.kind());
    let body = format!("{}: {}\n", e.code(), e.detail());
    let mut response = (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response();
    match e.kind() {
        // RFC 7030 section 3.2.3: the client may then retry with HTTP Basic credentials.
        Kind::Unauthorized => {
            if basic {
                let challenge = header::HeaderValue::from_static("Basic realm=\"autoenroll EST\"");
                response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
            }
        }
        Kind::RateLimited | Kind::Unavailable | Kind::Pending => {
            response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("60"));
        }
        Kind::BadRequest | Kind::BadCsr | Kind::PolicyDenied | Kind::NotFound | Kind::Conflict | Kind::Internal => {}
    }
    response
}

/// Base64 in lines of 64 characters, CRLF after each.
fn wrapped_base64(der: &[u8]) -> String {
    let encoded = BASE64.encode(der);
    let mut body = String::with_capacity(encoded.len() + encoded.len() / 32 + 2);
    for line in encoded.as_bytes().chunks(64) {
        body.push_str(&String::from_utf8_lossy(line));
        body.push_str("\r\n");
    }
    body
}

/// A base64 body (RFC 7030 section 4: `Content-Transfer-Encoding: base64`), line-wrapped.
fn base64_response(content_type: &'static str, der: &[u8]) -> Response {
    let body = wrapped_base64(der);
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (header::HeaderName::from_static("content-transfer-encoding"), "base64"),
        ],
        body,
    )
        .into_response()
}

/// `/cacerts`: the issuing CA and the root, certs-only (RFC 7030 section 4.1.3). No
/// authentication: trust anchors are public; the client decides whether to trust them.
async fn cacerts(State(st): State<AppState>) -> Response {
    let chain = st.ra.chain_der();
    let refs: Vec<&[u8]> = chain.iter().map(Vec::as_slice).collect();
    match autoenroll_proto::pkcs7::certs_only(&refs) {
        Ok(p7) => base64_response("application/pkcs7-mime", &p7),
        Err(e) => error(&RaError::internal(format!("EST cacerts: {e}")), false),
    }
}

/// `/csrattrs` (RFC 7030 section 4.5): what the template wants in a request: its key type
/// (the public key algorithm, with the curve for EC keys), the signature algorithm, and the
/// extended key usages the certificate will carry (so a client knows, before enrolling,
/// whether the certificate can authenticate its re-enrollment over TLS).
async fn csrattrs(State(st): State<AppState>, label: Option<Path<String>>) -> Response {
    use autoenroll_proto::est::{self, CsrAttrs, KeyRequest};
    let name = label.map_or_else(|| st.ra.default_template().to_string(), |Path(l)| l);
    let template = match st.ra.template(&name).await {
        Ok(t) => t,
        Err(e) => return error(&e, false),
    };
    let (key, signature) = match template.key.algorithm {
        KeyAlgorithm::P256 => (KeyRequest::Ec(est::P256), est::ECDSA_SHA256),
        KeyAlgorithm::P384 => (KeyRequest::Ec(est::P384), est::ECDSA_SHA384),
        KeyAlgorithm::Rsa(bits) => (KeyRequest::Rsa(bits), est::SHA256_WITH_RSA),
    };
    let attrs =
        CsrAttrs { key: Some(key), signature: Some(signature), ekus: template.ekus.iter().map(|e| e.oid()).collect() };
    match est::encode_csr_attrs(&attrs) {
        Ok(der) => base64_response("application/csrattrs", &der),
        Err(e) => error(&RaError::internal(format!("EST csrattrs: {e}")), false),
    }
}

/// The request body: base64 of a DER PKCS#10 (`application/pkcs10`), whitespace allowed.
fn csr_body(headers: &HeaderMap, body: &[u8]) -> Result<Vec<u8>, RaError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        let media = ct.split(';').next().unwrap_or_default().trim();
        if !media.eq_ignore_ascii_case("application/pkcs10") {
            return Err(Refusal::BadParameter {
                detail: format!("content type {media:?}: EST takes application/pkcs10"),
            }
            .into());
        }
    }
    let clean: Vec<u8> = body.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    BASE64.decode(&clean).map_err(|e| Refusal::BadCsr { detail: format!("the body is not base64: {e}") }.into())
}

/// Who is asking: the `Authorization` header when one is sent (HTTP Basic: an account;
/// Bearer: a bootstrap token), else the TLS client certificate (WSTEP's order too).
fn credentials(headers: &HeaderMap, peer: Option<&Peer>) -> Credentials {
    let client = peer.and_then(|p| p.1);
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::trim);
    // RFC 9110 section 11.1: the scheme is case-insensitive.
    let (scheme, value) = auth.and_then(|a| a.split_once(' ')).unwrap_or_default();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Credentials::BootstrapToken(value.trim().to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let basic = BASE64
            .decode(value.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.split_once(':').map(|(u, p)| (u.to_string(), p.to_string())));
        if let Some((username, password)) = basic {
            return Credentials::Password { username, password, client };
        }
    }
    match peer.and_then(|p| p.0.as_ref()).and_then(|c| c.first()) {
        Some(leaf) => Credentials::ClientCertificate(leaf.as_ref().to_vec()),
        None => Credentials::None,
    }
}

/// The certificate alone, certs-only (RFC 7030 section 4.2.3).
fn issued_response(certificate_der: &[u8]) -> Response {
    match autoenroll_proto::pkcs7::certs_only(&[certificate_der]) {
        Ok(p7) => base64_response("application/pkcs7-mime; smime-type=certs-only", &p7),
        Err(e) => error(&RaError::internal(format!("EST certs-only: {e}")), false),
    }
}

/// The request of an enrollment and who sends it: the device is the one the request's common
/// name (else its first DNS name) names; only that name is read here, the RA parses and checks
/// the request.
async fn enrollment_request(
    st: &AppState,
    peer: Option<&Peer>,
    headers: &HeaderMap,
    body: &[u8],
    purpose: Purpose,
) -> Result<(Vec<u8>, crate::ra::Principal), RaError> {
    let csr_der = csr_body(headers, body)?;
    let device =
        CsrFacts::parse_stored(&csr_der).ok().and_then(|c| c.subject_cn.or_else(|| c.dns_names.first().cloned()));
    let creds = credentials(headers, peer);
    // A bootstrap token that paid for a held request still names it: the client repeats the
    // request with it until it is answered (the enrollment spends a token only for a new
    // request, so a spent one gets nothing else).
    let purpose = match creds {
        Credentials::BootstrapToken(_) => purpose,
        Credentials::None | Credentials::Password { .. } | Credentials::ClientCertificate(_) => Purpose::Request,
    };
    let principal = st.ra.authenticate_for(&creds, device.as_deref(), purpose).await?;
    Ok((csr_der, principal))
}

/// `/simpleenroll` (RFC 7030 section 4.2.1): enrolled with the label's template (else the
/// request's template extension, else the server's default).
async fn simpleenroll(
    State(st): State<AppState>,
    label: Option<Path<String>>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let label = label.map(|Path(l)| l);
    let peer = peer.map(|Extension(p)| p);
    let result = async {
        let (csr_der, principal) = enrollment_request(&st, peer.as_ref(), &headers, &body, Purpose::Identify).await?;
        let input = EnrollInput { principal: &principal, csr_der: &csr_der, template_name: label.as_deref() };
        match label {
            Some(_) => st.ra.enroll_labelled(input).await,
            None => st.ra.enroll(input).await,
        }
    }
    .await;
    match result {
        Ok(Outcome::Issued(issued)) => issued_response(&issued.certificate_der),
        // RFC 7030 section 4.2.3: 202 with Retry-After; the request waits for an administrator.
        Ok(Outcome::Pending { request_id }) => (
            StatusCode::ACCEPTED,
            [(header::RETRY_AFTER, crate::ra::PENDING_POLL_SECS.to_string())],
            format!("request {request_id} waits for an administrator's approval\n"),
        )
            .into_response(),
        Err(e) => error(&e, true),
    }
}

/// `/serverkeygen` (RFC 7030 section 4.4): authenticated as `simpleenroll`; the server makes
/// the key in the template's algorithm. The answer is `multipart/mixed`: the private key as
/// base64 PKCS#8 (`application/pkcs8`; protected by the TLS connection alone, as section 4.4.2
/// allows without a key-encipherment certificate), then the certificate. The key is never stored.
async fn serverkeygen(
    State(st): State<AppState>,
    label: Option<Path<String>>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let label = label.map(|Path(l)| l);
    let peer = peer.map(|Extension(p)| p);
    let result = async {
        let (csr_der, principal) = enrollment_request(&st, peer.as_ref(), &headers, &body, Purpose::Request).await?;
        refuse_key_encipherment(&csr_der)?;
        let input = EnrollInput { principal: &principal, csr_der: &csr_der, template_name: label.as_deref() };
        st.ra.enroll_with_server_key(input).await
    }
    .await;
    let (issued, key) = match result {
        Ok(answer) => answer,
        Err(e) => return error(&e, true),
    };
    let certs = match autoenroll_proto::pkcs7::certs_only(&[&issued.certificate_der]) {
        Ok(p7) => p7,
        Err(e) => return error(&RaError::internal(format!("EST certs-only: {e}")), false),
    };
    let boundary = format!("est-{}", hex::encode(crate::ra::secrets::random_bytes::<12>()));
    let part = |content_type: &str, der: &[u8]| {
        format!(
            "--{boundary}\r\nContent-Type: {content_type}\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
            wrapped_base64(der)
        )
    };
    let mut multipart = part("application/pkcs8", &key);
    multipart.push_str(&part("application/pkcs7-mime; smime-type=certs-only", &certs));
    multipart.push_str(&format!("--{boundary}--\r\n"));
    let content_type = format!("multipart/mixed; boundary={boundary}");
    // A private key: no cache anywhere keeps it.
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-store".into())], multipart)
        .into_response()
}

/// RFC 7030 sections 4.4.1.1 and 4.4.1.2: a request asking for the key encrypted to a
/// symmetric or asymmetric key (DecryptKeyIdentifier, AsymmetricDecryptKeyIdentifier) must be
/// refused when the server cannot: here the key travels inside the TLS connection only.
fn refuse_key_encipherment(csr_der: &[u8]) -> Result<(), RaError> {
    use der::Decode;
    const DECRYPT_KEY_IDENTIFIER: der::asn1::ObjectIdentifier =
        der::asn1::ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.37");
    const ASYMMETRIC_DECRYPT_KEY_IDENTIFIER: der::asn1::ObjectIdentifier =
        der::asn1::ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.54");
    let Ok(request) = x509_cert::request::CertReq::from_der(csr_der) else { return Ok(()) };
    let asks = request
        .info
        .attributes
        .iter()
        .any(|a| a.oid == DECRYPT_KEY_IDENTIFIER || a.oid == ASYMMETRIC_DECRYPT_KEY_IDENTIFIER);
    if asks {
        return Err(
            Refusal::UnsupportedRequestType { what: "encrypting the server-generated key to a client key" }.into()
        );
    }
    Ok(())
}

/// `/simplereenroll` (RFC 7030 section 4.2.2): authenticated by the TLS client certificate it
/// renews, with the same checks as a WSTEP renewal over TLS (window, names kept, one
/// successor). The label is ignored: a renewal keeps its certificate's template.
async fn simplereenroll(
    State(st): State<AppState>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let csr_der = csr_body(&headers, &body)?;
        let leaf = peer
            .as_ref()
            .and_then(|Extension(p)| p.0.as_ref())
            .and_then(|c| c.first())
            .ok_or_else(|| RaError::from(Refusal::MissingToken))?;
        st.ra.renew_over_tls(&csr_der, leaf.as_ref(), Window::Autoenrollment).await
    }
    .await;
    match result {
        Ok(issued) => issued_response(&issued.certificate_der),
        Err(e) => error(&e, false),
    }
}
