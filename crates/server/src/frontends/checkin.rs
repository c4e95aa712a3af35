//! `POST /checkin`: JSON over HTTPS, authenticated by the device's TLS client certificate or by
//! its bootstrap token (`Authorization: Bearer aet_...`, not consumed). Errors are JSON
//! `{"code": ..., "detail": ...}` with a 4xx/5xx status, mapped here once.
use super::{AppState, PeerCerts};
use crate::ra::{CheckinReport, Credentials, RaError};
use autoenroll_core::Kind;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

pub const PATH: &str = "/checkin";
pub const MAX_BODY: usize = 256 * 1024;

use super::json_error as error;

pub async fn handle(
    State(st): State<AppState>,
    peer: Option<Extension<PeerCerts>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let creds = match peer.and_then(|Extension(p)| p.0).and_then(|c| c.first().map(|l| l.as_ref().to_vec())) {
        Some(leaf) => Credentials::ClientCertificate(leaf),
        None => match headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        {
            Some(token) => Credentials::BootstrapToken(token.trim().to_string()),
            None => Credentials::None,
        },
    };
    let principal = match st.ra.authenticate(&creds, None).await {
        Ok(p) => p,
        Err(e) => return error(&e),
    };
    let report: CheckinReport = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(&RaError::new(Kind::BadRequest, "BadJson", format!("check-in report: {e}"))),
    };
    match st.ra.checkin(&principal, &report).await {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => error(&e),
    }
}
