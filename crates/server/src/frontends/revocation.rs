//! Public, unauthenticated downloads for relying parties: the CRL and the issuing CA
//! certificate the CRL distribution point and AIA extensions name.
use super::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

pub const CRL_PATH: &str = "/crl";
pub const ISSUING_PATH: &str = "/ca/issuing.crt";

pub fn router(state: AppState) -> axum::Router {
    use axum::routing::get;
    axum::Router::new().route(CRL_PATH, get(crl)).route(ISSUING_PATH, get(issuing)).with_state(state)
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
