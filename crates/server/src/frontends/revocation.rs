//! Public, unauthenticated downloads for relying parties: the CRLs and the CA certificates the
//! CRL distribution point and AIA extensions name.
use super::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

pub use crate::ra::{ISSUING_PATH, ROOT_CRL_PATH, ROOT_PATH};
pub const CRL_PATH: &str = "/crl";
pub const OCSP_PATH: &str = "/ocsp";

pub fn router(state: AppState) -> axum::Router {
    use axum::routing::{get, post};
    let routes = axum::Router::new()
        .route(CRL_PATH, get(crl))
        .route(ISSUING_PATH, get(issuing))
        .route(ROOT_PATH, get(root))
        .route(ROOT_CRL_PATH, get(root_crl))
        .route(OCSP_PATH, post(ocsp_post))
        .route("/ocsp/{*request}", get(ocsp_get));
    super::body_limit(routes, autoenroll_core::pki::ocsp::MAX_OCSP_REQUEST).with_state(state)
}

fn ocsp_response(der: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/ocsp-response")], der).into_response()
}

/// RFC 6960 A.1: POST with the DER request as the body.
async fn ocsp_post(State(st): State<AppState>, body: axum::body::Bytes) -> Response {
    ocsp_response(st.ra.ocsp(&body).await)
}

/// RFC 6960 A.1: GET with the base64 of the DER request, URL-encoded, as the last path part.
async fn ocsp_get(State(st): State<AppState>, axum::extract::Path(request): axum::extract::Path<String>) -> Response {
    use base64::Engine;
    let text: String = request.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    match base64::engine::general_purpose::STANDARD.decode(text.as_bytes()) {
        Ok(der) => ocsp_response(st.ra.ocsp(&der).await),
        Err(_) => ocsp_response(
            autoenroll_core::pki::ocsp::error_response(autoenroll_core::pki::ocsp::ResponseStatus::MalformedRequest)
                .unwrap_or_default(),
        ),
    }
}

async fn crl(State(st): State<AppState>) -> Response {
    match st.ra.crl().await {
        Ok(der) => ([(header::CONTENT_TYPE, "application/pkix-crl")], der).into_response(),
        Err(e) => {
            tracing::error!(%e, "CRL");
            (StatusCode::SERVICE_UNAVAILABLE, "the CRL is not available\n").into_response()
        }
    }
}

async fn issuing(State(st): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "application/pkix-cert")], st.ra.issuing_der().to_vec()).into_response()
}

async fn root(State(st): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "application/pkix-cert")], st.ra.root_der().to_vec()).into_response()
}

/// The root's CRL (it covers the issuing CA), signed with the root key; 404 until one was.
async fn root_crl(State(st): State<AppState>) -> Response {
    match st.ra.root_crl().await {
        Ok(Some(der)) => ([(header::CONTENT_TYPE, "application/pkix-crl")], der).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "no root CRL has been signed (the root key is offline)\n").into_response(),
        Err(e) => {
            tracing::error!(%e, "root CRL");
            (StatusCode::SERVICE_UNAVAILABLE, "the root CRL is not available\n").into_response()
        }
    }
}
