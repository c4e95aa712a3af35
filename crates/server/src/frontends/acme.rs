//! ACME (RFC 8555) under `/acme`, with renewal information (RFC 9773). `/acme/directory`
//! issues from the configured ACME template, `/acme/<template>/directory` from another. This
//! module is the wire: JWS decoding and the checks every POST gets (URL, nonce, signer), the
//! JSON objects and their URLs, and the one mapping of RA errors to problem documents
//! (`problem_type`). The RA decides: accounts bound by external account binding, names the
//! account may have, HTTP-01 validation, issuance and renewal, revocation, renewal windows.
use super::AppState;
use crate::ra::{
    AcmeAccount, AcmeOrder, AuthzStatus, ChallengeKind, OrderStatus, RaError, RenewalInfo, Revoker, StoredProblem,
};
use autoenroll_core::{Refusal, RefusalCode};
use autoenroll_proto::acme::{self as wire, ExternalAccountBinding, Jws, Signer};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

pub const PREFIX: &str = "/acme";
/// A JWS with a CSR or a certificate is a few kilobytes.
const MAX_BODY: usize = 64 * 1024;
/// How soon a client polling a held order should ask again.
const PROCESSING_RETRY_SECS: u32 = 60;

pub fn router(state: AppState) -> axum::Router {
    use axum::routing::{get, post};
    let routes = axum::Router::new()
        .route("/acme/directory", get(directory_default))
        .route("/acme/{template}/directory", get(directory_labelled))
        .route("/acme/new-nonce", get(new_nonce).head(new_nonce))
        .route("/acme/new-account", post(new_account))
        .route("/acme/account/{id}", post(account))
        .route("/acme/account/{id}/orders", post(account_orders))
        .route("/acme/new-order", post(new_order_default))
        .route("/acme/{template}/new-order", post(new_order_labelled))
        .route("/acme/order/{id}", post(order))
        .route("/acme/order/{id}/finalize", post(finalize))
        .route("/acme/authz/{order}/{index}", post(authorization))
        .route("/acme/chall/{order}/{index}/{kind}", post(challenge))
        .route("/acme/cert/{order}", post(certificate))
        .route("/acme/revoke-cert", post(revoke))
        .route("/acme/key-change", post(key_change))
        .route("/acme/renewal-info/{cert_id}", get(renewal_info));
    super::body_limit(routes, MAX_BODY)
        .layer(axum::middleware::from_fn_with_state(state.clone(), jose_only))
        .with_state(state)
}

/// Every POST is `application/jose+json` (RFC 8555 section 6.2: others are refused with 415).
async fn jose_only(State(st): State<AppState>, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let jose =
        req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
            v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/jose+json"))
        });
    if req.method() == axum::http::Method::POST && !jose {
        let e = RaError::from(Refusal::BadJws { detail: "the body must be application/jose+json".into() });
        let mut response = error(&st, &e);
        *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        return response;
    }
    next.run(req).await
}

/// The ACME problem type of a refusal (RFC 8555 section 6.7, RFC 9773): one exhaustive match,
/// no catch-all, so a new refusal says what it is here too.
pub fn problem_type(code: RefusalCode) -> &'static str {
    use RefusalCode as C;
    match code {
        C::BadNonce => "badNonce",
        C::BadSignatureAlgorithm => "badSignatureAlgorithm",
        C::AcmeAccountUnknown => "accountDoesNotExist",
        C::ExternalAccountRequired => "externalAccountRequired",
        C::UnsupportedIdentifier => "unsupportedIdentifier",
        C::OrderNotReady => "orderNotReady",
        C::ChallengeFailed => "incorrectResponse",
        C::BadRevocationReason => "badRevocationReason",
        C::CertificateRevoked => "alreadyRevoked",
        C::AlreadyRenewed => "alreadyReplaced",
        C::TooManyAttempts => "rateLimited",
        C::NameNotAllowed
        | C::ServerNameReserved
        | C::WildcardNotAllowed
        | C::DeviceNotAllowed
        | C::DeviceBound
        | C::DeviceNameTaken
        | C::DeviceBlocked
        | C::BadDeviceName => "rejectedIdentifier",
        C::KeyTypeNotAllowed | C::KeyTooWeak | C::KeyLengthMismatch | C::SameKeyNotAllowed => "badPublicKey",
        C::BadCsr
        | C::BadCsrSignature
        | C::UnsupportedAlgorithm
        | C::SubjectRequired
        | C::CommonNameTooLong
        | C::SubjectMismatch
        | C::SubjectAltNameMismatch
        | C::EkuMismatch
        | C::BadSubject => "badCSR",
        C::MissingToken
        | C::WrongCredentials
        | C::TokenUsed
        | C::TokenExpired
        | C::TokenNotAccepted
        | C::UnknownClientCertificate
        | C::ClientCertificateNotValid
        | C::ClientCertificateExpired
        | C::ForeignCertificate
        | C::DeviceMismatch
        | C::RenewalCertificateMismatch
        | C::TemplateNotAllowed
        | C::OutsideRenewalWindow
        | C::NotPermitted
        | C::ChallengeMissing
        | C::ChallengeInvalid
        | C::ChallengeExpired
        | C::ChallengeUsed
        | C::DeviceNotEnrolled
        | C::TemplateNotAssigned
        | C::RequestDenied
        | C::MdmApprovalNeedsToken => "unauthorized",
        C::ServerBusy | C::RenewalInProgress | C::TemplateMisconfigured => "serverInternal",
        C::BadRenewalRequest
        | C::BadRenewalSignature
        | C::BadCertificate
        | C::UnknownCertificate
        | C::CertificateExpired
        | C::UnknownTemplate
        | C::BadMessageCheck
        | C::UnsupportedCipher
        | C::UnsupportedDigest
        | C::SignerKeyNotRsa
        | C::BadSignerCertificate
        | C::NotARequest
        | C::BadMessageContent
        | C::UnknownTransaction
        | C::NoSuchCertificate
        | C::UnknownRequest
        | C::NotPending
        | C::UnknownAction
        | C::UnsupportedRequestType
        | C::BadJson
        | C::BadParameter
        | C::TooLarge
        | C::InvalidTemplate
        | C::InvalidAccount
        | C::InvalidToken
        | C::InvalidChallenge
        | C::WeakChallenge
        | C::InvalidReason
        | C::UnknownDevice
        | C::Duplicate
        | C::DeviceHasHistory
        | C::BadJws
        | C::UnknownAcmeResource
        | C::ReplacesRefused => "malformed",
    }
}

fn problem_urn(kind: &str) -> String {
    format!("urn:ietf:params:acme:error:{kind}")
}

/// A refusal's problem type, or `serverInternal` for an internal failure.
fn problem_kind(e: &RaError) -> &'static str {
    e.refusal_code().map_or("serverInternal", problem_type)
}

/// Answers on every ACME response: a fresh nonce and the directory (section 7.1).
fn with_nonce(st: &AppState, mut response: Response) -> Response {
    if let Ok(nonce) = st.ra.acme_nonce() {
        if let Ok(v) = HeaderValue::from_str(&nonce) {
            response.headers_mut().insert("replay-nonce", v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&format!("<{}/acme/directory>;rel=\"index\"", st.base_url)) {
        response.headers_mut().append(header::LINK, v);
    }
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The one place RA errors become problem documents.
fn error(st: &AppState, e: &RaError) -> Response {
    tracing::info!(code = e.code(), kind = e.kind().as_str(), "ACME request refused");
    crate::metrics::refused(e);
    let status = super::http_status(e.kind());
    let body = serde_json::json!({
        "type": problem_urn(problem_kind(e)),
        "detail": format!("{}: {}", e.code(), e.detail()),
        "status": status.as_u16(),
    });
    let mut response = (status, [(header::CONTENT_TYPE, "application/problem+json")], body.to_string()).into_response();
    if matches!(e.kind(), autoenroll_core::Kind::RateLimited | autoenroll_core::Kind::Unavailable) {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    }
    with_nonce(st, response)
}

fn json(st: &AppState, status: StatusCode, location: Option<String>, value: serde_json::Value) -> Response {
    let mut response = (status, [(header::CONTENT_TYPE, "application/json")], value.to_string()).into_response();
    if let Some(Ok(v)) = location.map(|l| HeaderValue::from_str(&l)) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    with_nonce(st, response)
}

fn acme_url(st: &AppState, path: &str) -> String {
    format!("{}{PREFIX}{path}", st.base_url)
}

fn bad_jws(e: wire::AcmeWireError) -> RaError {
    match e {
        wire::AcmeWireError::BadSignatureAlgorithm(alg) => Refusal::BadSignatureAlgorithm { alg }.into(),
        wire::AcmeWireError::BadSignature => {
            Refusal::BadJws { detail: "the JWS signature does not verify".into() }.into()
        }
        other => Refusal::BadJws { detail: format!("malformed JWS: {other}") }.into(),
    }
}

/// Who signed a request that passed the checks.
enum Verified {
    Account(AcmeAccount),
    /// A key no account has yet (newAccount), or a certificate's key (revocation).
    Key(wire::Jwk),
}

/// Every POST (section 6): a flattened JWS for exactly this URL, signed by the account its `kid` names (or, where `jwk_allowed`, by the key it
/// carries), with a nonce of ours not used before.
async fn verify(st: &AppState, path: &str, body: &[u8], jwk_allowed: bool) -> Result<(Jws, Verified), RaError> {
    let jws = Jws::parse(body).map_err(bad_jws)?;
    let url = format!("{}{path}", st.base_url);
    if jws.url != url {
        return Err(
            Refusal::BadJws { detail: format!("the JWS url is {:?}, the request went to {url:?}", jws.url) }.into()
        );
    }
    let signer = match &jws.signer {
        Signer::Jwk(key) if jwk_allowed => {
            jws.verify(key).map_err(bad_jws)?;
            Verified::Key(key.clone())
        }
        Signer::Jwk(_) => {
            return Err(Refusal::BadJws { detail: "this request must be signed by an account (kid)".into() }.into())
        }
        Signer::Kid(kid) => {
            let id = kid
                .strip_prefix(&acme_url(st, "/account/"))
                .and_then(|id| id.parse::<i64>().ok())
                .ok_or(Refusal::AcmeAccountUnknown)?;
            let account = st.ra.acme_account(id).await?;
            jws.verify(&account.key).map_err(bad_jws)?;
            Verified::Account(account)
        }
    };
    // Spent only once the signature holds: nobody else makes the server write.
    st.ra.acme_use_nonce(jws.nonce.as_deref().ok_or(Refusal::BadNonce)?).await?;
    Ok((jws, signer))
}

/// A request that must come from an account.
async fn verify_account(st: &AppState, path: &str, body: &[u8]) -> Result<(Jws, AcmeAccount), RaError> {
    match verify(st, path, body, false).await? {
        (jws, Verified::Account(a)) => Ok((jws, a)),
        (_, Verified::Key(_)) => Err(Refusal::AcmeAccountUnknown.into()),
    }
}

fn directory(st: &AppState, template: Option<&str>) -> serde_json::Value {
    let new_order = match template {
        Some(t) => acme_url(st, &format!("/{t}/new-order")),
        None => acme_url(st, "/new-order"),
    };
    serde_json::json!({
        "newNonce": acme_url(st, "/new-nonce"),
        "newAccount": acme_url(st, "/new-account"),
        "newOrder": new_order,
        "revokeCert": acme_url(st, "/revoke-cert"),
        "keyChange": acme_url(st, "/key-change"),
        "renewalInfo": acme_url(st, "/renewal-info"),
        "meta": { "externalAccountRequired": true },
    })
}

async fn directory_default(State(st): State<AppState>) -> Response {
    json(&st, StatusCode::OK, None, directory(&st, None))
}

async fn directory_labelled(State(st): State<AppState>, Path(template): Path<String>) -> Response {
    match st.ra.template(&template).await {
        Ok(t) => json(&st, StatusCode::OK, None, directory(&st, Some(&t.name))),
        Err(e) => error(&st, &e),
    }
}

/// newNonce (section 7.2): HEAD answers 200, GET 204.
async fn new_nonce(State(st): State<AppState>, method: axum::http::Method) -> Response {
    let status = if method == axum::http::Method::HEAD { StatusCode::OK } else { StatusCode::NO_CONTENT };
    with_nonce(&st, status.into_response())
}

fn account_json(st: &AppState, a: &AcmeAccount) -> serde_json::Value {
    serde_json::json!({ "status": "valid", "contact": a.contact, "orders": acme_url(st, &format!("/account/{}/orders", a.id)) })
}

fn strings(v: Option<&serde_json::Value>) -> Vec<String> {
    v.and_then(|c| c.as_array())
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// newAccount (section 7.3): the account of this key, or a new one bound by its external
/// account binding.
async fn new_account(State(st): State<AppState>, body: Bytes) -> Response {
    let result = async {
        let (jws, signer) = verify(&st, "/acme/new-account", &body, true).await?;
        let Verified::Key(key) = signer else {
            return Err(Refusal::BadJws { detail: "newAccount is signed with the new key (jwk)".into() }.into());
        };
        let payload = jws.json().map_err(bad_jws)?;
        if payload.get("onlyReturnExisting").and_then(|v| v.as_bool()) == Some(true) {
            let a = st.ra.acme_account_by_key(&key).await?.ok_or(Refusal::AcmeAccountUnknown)?;
            return Ok((a, false));
        }
        let binding = payload
            .get("externalAccountBinding")
            .map(|eab| ExternalAccountBinding::parse(eab, &jws.url, &key))
            .transpose()
            .map_err(|e| Refusal::ExternalAccountRequired { detail: e.to_string() })?;
        st.ra.acme_register(&key, &strings(payload.get("contact")), binding.as_ref()).await
    }
    .await;
    match result {
        Ok((a, created)) => {
            let status = if created { StatusCode::CREATED } else { StatusCode::OK };
            json(&st, status, Some(acme_url(&st, &format!("/account/{}", a.id))), account_json(&st, &a))
        }
        Err(e) => error(&st, &e),
    }
}

/// The account (POST-as-GET), or its deactivation (`{"status": "deactivated"}`, section
/// 7.3.6). Contact updates are not offered: contacts are the enrollment account's business.
async fn account(State(st): State<AppState>, Path(id): Path<i64>, body: Bytes) -> Response {
    let result = async {
        let (jws, a) = verify_account(&st, &format!("/acme/account/{id}"), &body).await?;
        if a.id != id {
            return Err(Refusal::UnknownAcmeResource { what: "such account for this key".into() }.into());
        }
        let payload = if jws.payload.is_empty() { serde_json::json!({}) } else { jws.json().map_err(bad_jws)? };
        if payload.get("contact").is_some() {
            return Err(Refusal::UnsupportedRequestType { what: "changing an ACME account's contacts" }.into());
        }
        match payload.get("status").and_then(|s| s.as_str()) {
            None => Ok((a, "valid")),
            Some("deactivated") => {
                st.ra.acme_deactivate(&a).await?;
                Ok((a, "deactivated"))
            }
            Some(other) => Err(Refusal::BadParameter { detail: format!("account status {other:?}") }.into()),
        }
    }
    .await;
    match result {
        Ok((a, status)) => {
            let mut v = account_json(&st, &a);
            v["status"] = status.into();
            json(&st, StatusCode::OK, Some(acme_url(&st, &format!("/account/{}", a.id))), v)
        }
        Err(e) => error(&st, &e),
    }
}

/// The account's order list (RFC 8555 section 7.1.2.1), POST-as-GET.
async fn account_orders(State(st): State<AppState>, Path(id): Path<i64>, body: Bytes) -> Response {
    let result = async {
        let (_, a) = verify_account(&st, &format!("/acme/account/{id}/orders"), &body).await?;
        if a.id != id {
            return Err(Refusal::UnknownAcmeResource { what: "such account for this key".into() }.into());
        }
        st.ra.acme_orders_of(&a).await
    }
    .await;
    match result {
        Ok(ids) => {
            let urls: Vec<String> = ids.iter().map(|o| acme_url(&st, &format!("/order/{o}"))).collect();
            json(&st, StatusCode::OK, None, serde_json::json!({ "orders": urls }))
        }
        Err(e) => error(&st, &e),
    }
}

fn problem_json(p: &StoredProblem) -> serde_json::Value {
    // Stored refusals carry their code; validation failures an ACME type already.
    const VALIDATION: [&str; 3] = ["incorrectResponse", "connection", "dns"];
    let kind = match RefusalCode::ALL.iter().find(|c| c.as_str() == p.kind) {
        Some(c) => problem_type(*c),
        None if VALIDATION.contains(&p.kind.as_str()) => p.kind.as_str(),
        None => "serverInternal",
    };
    serde_json::json!({ "type": problem_urn(kind), "detail": p.detail })
}

fn order_json(st: &AppState, o: &AcmeOrder) -> serde_json::Value {
    let status = match o.body.status {
        OrderStatus::Pending => "pending",
        OrderStatus::Ready => "ready",
        OrderStatus::Processing => "processing",
        OrderStatus::Valid => "valid",
        OrderStatus::Invalid => "invalid",
    };
    let mut v = serde_json::json!({
        "status": status,
        "expires": o.expires.to_string(),
        "identifiers": o.body.identifiers.iter().map(|n| serde_json::json!({"type": "dns", "value": n})).collect::<Vec<_>>(),
        "authorizations": (0..o.body.authorizations.len()).map(|i| acme_url(st, &format!("/authz/{}/{i}", o.id))).collect::<Vec<_>>(),
        "finalize": acme_url(st, &format!("/order/{}/finalize", o.id)),
    });
    if o.body.status == OrderStatus::Valid && o.certificate_serial.is_some() {
        v["certificate"] = acme_url(st, &format!("/cert/{}", o.id)).into();
    }
    if let Some(p) = &o.body.error {
        v["error"] = problem_json(p);
    }
    v
}

fn order_response(st: &AppState, status: StatusCode, o: &AcmeOrder) -> Response {
    let mut response = json(st, status, Some(acme_url(st, &format!("/order/{}", o.id))), order_json(st, o));
    if o.body.status == OrderStatus::Processing {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(PROCESSING_RETRY_SECS));
    }
    response
}

async fn new_order_default(State(st): State<AppState>, body: Bytes) -> Response {
    let template = st.ra.acme_template().to_string();
    new_order(&st, "/acme/new-order", &template, &body).await
}

async fn new_order_labelled(State(st): State<AppState>, Path(template): Path<String>, body: Bytes) -> Response {
    new_order(&st, &format!("/acme/{template}/new-order"), &template, &body).await
}

/// newOrder (section 7.4): names, and optionally the certificate it replaces (RFC 9773).
async fn new_order(st: &AppState, path: &str, template: &str, body: &[u8]) -> Response {
    let result = async {
        let (jws, a) = verify_account(st, path, body).await?;
        let payload = jws.json().map_err(bad_jws)?;
        if payload.get("notBefore").is_some() || payload.get("notAfter").is_some() {
            return Err(Refusal::UnsupportedRequestType {
                what: "notBefore/notAfter (the template sets the validity)",
            }
            .into());
        }
        let identifiers: Vec<(String, String)> = payload
            .get("identifiers")
            .and_then(|i| i.as_array())
            .ok_or_else(|| Refusal::BadJson { detail: "newOrder needs identifiers".into() })?
            .iter()
            .map(|i| {
                let field = |n: &str| i.get(n).and_then(|v| v.as_str()).unwrap_or("").to_string();
                (field("type"), field("value"))
            })
            .collect();
        let replaces = payload.get("replaces").and_then(|r| r.as_str());
        st.ra.acme_new_order(&a, template, &identifiers, replaces).await
    }
    .await;
    match result {
        Ok(o) => order_response(st, StatusCode::CREATED, &o),
        Err(e) => error(st, &e),
    }
}

async fn order(State(st): State<AppState>, Path(id): Path<i64>, body: Bytes) -> Response {
    let result = async {
        let (_, a) = verify_account(&st, &format!("/acme/order/{id}"), &body).await?;
        st.ra.acme_order(&a, id).await
    }
    .await;
    match result {
        Ok(o) => order_response(&st, StatusCode::OK, &o),
        Err(e) => error(&st, &e),
    }
}

/// finalize (section 7.4): `{"csr": base64url(DER)}`.
async fn finalize(State(st): State<AppState>, Path(id): Path<i64>, body: Bytes) -> Response {
    let result = async {
        let (jws, a) = verify_account(&st, &format!("/acme/order/{id}/finalize"), &body).await?;
        let payload = jws.json().map_err(bad_jws)?;
        let csr = payload
            .get("csr")
            .and_then(|c| c.as_str())
            .ok_or_else(|| Refusal::BadJson { detail: "finalize needs csr".into() })?;
        let csr_der = wire::b64url_decode(csr, "csr").map_err(|e| Refusal::BadCsr { detail: e.to_string() })?;
        st.ra.acme_finalize(&a, id, &csr_der).await
    }
    .await;
    match result {
        Ok(o) => order_response(&st, StatusCode::OK, &o),
        Err(e) => error(&st, &e),
    }
}

fn authz_json(st: &AppState, o: &AcmeOrder, index: usize) -> Option<serde_json::Value> {
    let z = o.body.authorizations.get(index)?;
    let status = match z.status {
        AuthzStatus::Pending => "pending",
        AuthzStatus::Valid => "valid",
        AuthzStatus::Invalid => "invalid",
    };
    // The challenge answered carries the outcome; the others stay pending.
    let challenges: Vec<serde_json::Value> = ChallengeKind::ALL
        .iter()
        .map(|kind| {
            let answered = z.answered == Some(*kind);
            let mut c = serde_json::json!({
                "type": kind.as_str(),
                "url": acme_url(st, &format!("/chall/{}/{index}/{}", o.id, kind.as_str())),
                "status": if answered { status } else { "pending" },
                "token": z.token,
            });
            if let (true, Some(at)) = (answered, z.validated_at) {
                c["validated"] = autoenroll_core::UnixTime(at).to_string().into();
            }
            if let (true, Some(p)) = (answered, &z.error) {
                c["error"] = problem_json(p);
            }
            c
        })
        .collect();
    Some(serde_json::json!({
        "status": status,
        "expires": o.expires.to_string(),
        "identifier": {"type": "dns", "value": z.identifier},
        "challenges": challenges,
    }))
}

async fn authorization(
    State(st): State<AppState>,
    Path((order_id, index)): Path<(i64, usize)>,
    body: Bytes,
) -> Response {
    let result = async {
        let (_, a) = verify_account(&st, &format!("/acme/authz/{order_id}/{index}"), &body).await?;
        let o = st.ra.acme_order(&a, order_id).await?;
        authz_json(&st, &o, index)
            .ok_or_else(|| Refusal::UnknownAcmeResource { what: "such authorization".into() }.into())
    }
    .await;
    match result {
        Ok(v) => json(&st, StatusCode::OK, None, v),
        Err(e) => error(&st, &e),
    }
}

/// A challenge (section 7.5.1): the client says it is ready; the server validates now and
/// answers with the challenge as it stands.
async fn challenge(
    State(st): State<AppState>,
    Path((order_id, index, kind)): Path<(i64, usize, String)>,
    body: Bytes,
) -> Response {
    let result = async {
        let (jws, a) = verify_account(&st, &format!("/acme/chall/{order_id}/{index}/{kind}"), &body).await?;
        let unknown = || RaError::from(Refusal::UnknownAcmeResource { what: "such challenge".into() });
        let kind = ChallengeKind::ALL.into_iter().find(|k| k.as_str() == kind).ok_or_else(unknown)?;
        // An empty object starts validation; POST-as-GET (empty payload) only reads.
        let o = if jws.payload.is_empty() {
            st.ra.acme_order(&a, order_id).await?
        } else {
            st.ra.acme_validate(&a, order_id, index, kind).await?
        };
        let authz = authz_json(&st, &o, index).ok_or_else(unknown)?;
        let position = ChallengeKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        Ok(authz["challenges"][position].clone())
    }
    .await;
    match result {
        Ok(v) => {
            let mut response = json(&st, StatusCode::OK, None, v);
            if let Ok(up) =
                HeaderValue::from_str(&format!("<{}>;rel=\"up\"", acme_url(&st, &format!("/authz/{order_id}/{index}"))))
            {
                response.headers_mut().append(header::LINK, up);
            }
            response
        }
        Err(e) => error(&st, &e),
    }
}

/// The certificate (section 7.4.2): PEM, leaf then issuing CA.
async fn certificate(State(st): State<AppState>, Path(order_id): Path<i64>, body: Bytes) -> Response {
    let result = async {
        let (_, a) = verify_account(&st, &format!("/acme/cert/{order_id}"), &body).await?;
        st.ra.acme_certificate(&a, order_id).await
    }
    .await;
    match result {
        Ok(issued) => {
            let mut pem = pem_block(&issued.certificate_der);
            if let Some(issuing) = issued.chain.first() {
                pem.push_str(&pem_block(issuing));
            }
            let response =
                (StatusCode::OK, [(header::CONTENT_TYPE, "application/pem-certificate-chain")], pem).into_response();
            with_nonce(&st, response)
        }
        Err(e) => error(&st, &e),
    }
}

fn pem_block(der: &[u8]) -> String {
    let b64 = autoenroll_proto::b64::encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// revokeCert (section 7.6): by the account that got the certificate, or signed with the
/// certificate's own key.
async fn revoke(State(st): State<AppState>, body: Bytes) -> Response {
    let result = async {
        let (jws, signer) = verify(&st, "/acme/revoke-cert", &body, true).await?;
        let payload = jws.json().map_err(bad_jws)?;
        let cert = payload
            .get("certificate")
            .and_then(|c| c.as_str())
            .ok_or_else(|| Refusal::BadJson { detail: "revokeCert needs certificate".into() })?;
        let der =
            wire::b64url_decode(cert, "certificate").map_err(|e| Refusal::BadCertificate { detail: e.to_string() })?;
        let reason =
            payload.get("reason").map(|r| r.as_i64().ok_or(Refusal::BadRevocationReason { code: -1 })).transpose()?;
        let by = match &signer {
            Verified::Account(a) => Revoker::Account(a),
            Verified::Key(k) => Revoker::CertificateKey(k),
        };
        st.ra.acme_revoke(by, &der, reason).await
    }
    .await;
    match result {
        Ok(()) => with_nonce(&st, StatusCode::OK.into_response()),
        Err(e) => error(&st, &e),
    }
}

/// keyChange (section 7.3.5) is not offered: a new key gets a new binding key from an
/// administrator (its certificates stay the autoenroll account's).
async fn key_change(State(st): State<AppState>, body: Bytes) -> Response {
    let result: Result<(), RaError> = async {
        verify_account(&st, "/acme/key-change", &body).await?;
        Err(Refusal::UnsupportedRequestType { what: "ACME key rollover (register the new key with a new binding key)" }
            .into())
    }
    .await;
    match result {
        Ok(()) => with_nonce(&st, StatusCode::OK.into_response()),
        Err(e) => error(&st, &e),
    }
}

/// renewalInfo (RFC 9773 section 4): an unauthenticated GET.
async fn renewal_info(State(st): State<AppState>, Path(cert_id): Path<String>) -> Response {
    match st.ra.acme_renewal_info(&cert_id).await {
        Ok(RenewalInfo { start, end, retry_after_secs }) => {
            let body = serde_json::json!({"suggestedWindow": {"start": start.to_string(), "end": end.to_string()}});
            let mut response = json(&st, StatusCode::OK, None, body);
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            response
        }
        Err(e) => error(&st, &e),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_refusal_has_a_registered_problem_type() {
        // RFC 8555 section 9.7.4's registry as RFC 8555 and RFC 9773 (alreadyReplaced) fill it.
        const REGISTERED: [&str; 17] = [
            "alreadyReplaced",
            "accountDoesNotExist",
            "alreadyRevoked",
            "badCSR",
            "badNonce",
            "badPublicKey",
            "badRevocationReason",
            "badSignatureAlgorithm",
            "externalAccountRequired",
            "incorrectResponse",
            "malformed",
            "orderNotReady",
            "rateLimited",
            "rejectedIdentifier",
            "serverInternal",
            "unauthorized",
            "unsupportedIdentifier",
        ];
        for c in autoenroll_core::RefusalCode::ALL {
            assert!(REGISTERED.contains(&super::problem_type(*c)), "{c}");
        }
    }
}
