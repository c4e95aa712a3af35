//! Protocol front ends: wire in, RA call, wire out. Each maps RA errors to its wire error once.
pub mod acme;
mod admin_api;
pub mod checkin;
pub mod console;
pub mod est;
pub mod mde2;
pub mod revocation;
pub mod scep;
pub mod signin;
pub mod soap;
pub mod views;
mod wstep;
mod xcep;

use crate::ra::Ra;
use rustls_pki_types::CertificateDer;
use std::sync::Arc;

/// Who is on the other end of a connection: the TLS client certificate chain, if the client
/// sent one, and its address (failed secrets count against it).
#[derive(Clone, Default)]
pub struct Peer(pub Option<Arc<Vec<CertificateDer<'static>>>>, pub Option<std::net::IpAddr>);

#[derive(Clone)]
pub struct AppState {
    pub ra: Arc<Ra>,
    /// e.g. `https://127.0.0.1:8443`
    pub base_url: String,
    /// DMClient provider id in MDM provisioning documents.
    pub mdm_provider_id: String,
    /// The OMA-DM server devices are handed to.
    pub mdm_management_url: String,
    /// Return-address prefixes the federated sign-in page may post its token to.
    pub mdm_sign_in_return: Vec<String>,
}

impl AppState {
    pub fn policy_url(&self) -> String {
        format!("{}/xcep", self.base_url)
    }
    pub fn enrollment_url(&self) -> String {
        format!("{}/wstep", self.base_url)
    }
}

/// `key=value` pairs of a query string or form body (form encoding: `+` is a space, `%XX`
/// decoded).
pub fn form_params(q: &str) -> Vec<(String, String)> {
    let decode = |v: &str| percent_encoding::percent_decode_str(&v.replace('+', " ")).decode_utf8_lossy().into_owned();
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// A duration parameter such as `30d`, `12h` or `90m` (humantime), in seconds.
pub(crate) fn duration_secs(v: &str) -> Result<i64, crate::ra::RaError> {
    humantime::parse_duration(v.trim()).ok().and_then(|d| i64::try_from(d.as_secs()).ok()).ok_or_else(|| {
        autoenroll_core::Refusal::BadParameter { detail: format!("bad duration {v:?} (e.g. 30d, 12h, 90m)") }.into()
    })
}

/// An optional parameter of a stored vocabulary (a state, an outcome): empty is absent, anything
/// else must parse.
pub(crate) fn parsed_param<T: std::str::FromStr>(name: &str, v: &str) -> Result<Option<T>, crate::ra::RaError>
where
    T::Err: std::fmt::Display,
{
    if v.is_empty() {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .map_err(|e: T::Err| autoenroll_core::Refusal::BadParameter { detail: format!("{name}: {e}") }.into())
}

/// Every front end's body limit: a request whose declared length is over `max` is refused
/// before any of it is read (`refuse_declared_over`), and `DefaultBodyLimit` bounds the rest.
pub(crate) fn body_limit<S: Clone + Send + Sync + 'static>(router: axum::Router<S>, max: usize) -> axum::Router<S> {
    router
        .layer(axum::extract::DefaultBodyLimit::max(max))
        .layer(axum::middleware::from_fn(move |req, next| refuse_declared_over(max, req, next)))
}

/// Refuses a request whose declared length is over `max` before reading any of it: no
/// `100 Continue`, so a client that waits for one never sends the body (a body read up to the
/// limit and then cut off would meet a closed connection).
async fn refuse_declared_over(
    max: usize,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return (axum::http::StatusCode::PAYLOAD_TOO_LARGE, format!("the body is over {max} bytes\n")).into_response();
    }
    next.run(req).await
}

/// The HTTP status of an error class for the JSON APIs (check-in, admin) and EST; exhaustive.
pub fn http_status(kind: autoenroll_core::Kind) -> axum::http::StatusCode {
    use autoenroll_core::Kind;
    use axum::http::StatusCode;
    match kind {
        Kind::BadRequest | Kind::BadCsr => StatusCode::BAD_REQUEST,
        Kind::Unauthorized => StatusCode::UNAUTHORIZED,
        Kind::PolicyDenied => StatusCode::FORBIDDEN,
        Kind::NotFound => StatusCode::NOT_FOUND,
        Kind::Conflict => StatusCode::CONFLICT,
        Kind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        Kind::Pending | Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The JSON APIs' error (check-in, admin): `{"code", "detail"}` with the status for the kind.
/// The one place RA errors become JSON responses (internal errors were logged with their
/// reference where they were made; the detail shows the reference).
pub(crate) fn json_error(e: &crate::ra::RaError) -> axum::response::Response {
    use axum::response::IntoResponse;
    tracing::info!(code = e.code(), kind = e.kind().as_str(), "JSON request refused");
    crate::metrics::refused(e);
    (http_status(e.kind()), axum::Json(serde_json::json!({ "code": e.code(), "detail": e.detail() }))).into_response()
}

/// The error-mapping table of `docs/error-mapping.md`: every refusal with its kind and what
/// each protocol answers, generated from the enum and the front ends' mappings.
pub fn error_mapping_table() -> String {
    use autoenroll_core::RefusalCode;
    let mut out = String::from(
        "| code | kind | JSON, EST and ACME (HTTP) | ACME problem | WSTEP/XCEP fault (HRESULT) | MDM fault (subcode, ErrorType) | SCEP failInfo | when |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for &c in RefusalCode::ALL {
        let (subcode, error_type) = mde2::mdm_error(c);
        out.push_str(&format!(
            "| `{c}` | {} | {} | `{}` | `{}` 0x{:08X} | `{subcode}` {error_type} | {} ({}) | {} |\n",
            c.kind().as_str(),
            http_status(c.kind()).as_u16(),
            acme::problem_type(c),
            soap::sender_or_receiver(c.kind()),
            soap::hresult(c),
            scep::fail_info(c).name(),
            scep::fail_info(c).number(),
            c.when().replace('|', "\\|"),
        ));
    }
    out
}

pub fn router(state: AppState) -> axum::Router {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/xcep", post(soap::handle))
        .route("/wstep", post(soap::handle))
        .route("/healthz", get(|| async { "ok\n" }))
        .route(mde2::DISCOVERY_PATH, get(mde2::discovery_probe).post(mde2::discovery))
        .route(mde2::POLICY_PATH, post(mde2::policy))
        .route(mde2::ENROLLMENT_PATH, post(mde2::enrollment))
        .route(signin::PATH, get(signin::page).post(signin::submit))
        .merge(body_limit(axum::Router::new().route(checkin::PATH, post(checkin::handle)), checkin::MAX_BODY))
        .with_state(state.clone())
        .merge(scep::router(state.clone()))
        .merge(est::router(state.clone()))
        .merge(acme::router(state.clone()))
        .merge(revocation::router(state.clone()))
        .merge(admin_api::router(state.clone()))
        .merge(console::router(state))
}

/// The token-free metrics listener's only route (`[metrics] listen`).
pub fn metrics_router(state: AppState) -> axum::Router {
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(|axum::extract::State(st): axum::extract::State<AppState>| async move {
                admin_api::exposition(&st).await
            }),
        )
        .with_state(state)
}
