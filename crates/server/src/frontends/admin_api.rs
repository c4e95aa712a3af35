//! The admin REST API under `/admin/v1`: JSON in and out, authenticated by an admin token
//! (`Authorization: Bearer aea_...`, created with `server admin-token create`). The same RA
//! operations as the CLI; errors are `{"code", "detail"}` with a 4xx/5xx status.
use super::views::{self, AuditJson, CertificateJson, DeviceJson, StuckJson, TemplateJson};
use super::AppState;
use crate::ra::{AuditFilter, CertificateFilter, DeviceState, RaError};
use autoenroll_core::{Refusal, UnixTime};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

pub fn router(state: AppState) -> axum::Router {
    use axum::routing::{get, post};
    let routes = axum::Router::new()
        .route("/admin/v1/devices", get(devices))
        .route("/admin/v1/devices/{name}", get(device))
        .route("/admin/v1/devices/{name}/block", post(block))
        .route("/admin/v1/devices/{name}/unblock", post(unblock))
        .route("/admin/v1/certificates", get(certificates))
        .route("/admin/v1/certificates/renew-now", post(renew_now))
        .route("/admin/v1/certificates/{serial}/revoke", post(revoke))
        .route("/admin/v1/templates/{name}/bump-major", post(bump_major))
        .route("/admin/v1/requests/{id}/approve", post(approve))
        .route("/admin/v1/requests/{id}/deny", post(deny))
        .route("/admin/v1/reports/stuck", get(stuck))
        .route("/admin/v1/audit", get(audit))
        .route("/metrics", get(metrics));
    super::body_limit(routes, 64 * 1024).with_state(state)
}

use super::json_error as error;

fn bad(detail: impl Into<String>) -> RaError {
    Refusal::BadParameter { detail: detail.into() }.into()
}

/// The administrator a request comes from, as the audit log names them: `admin:<token name>`.
async fn admin(st: &AppState, headers: &HeaderMap) -> Result<String, RaError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| RaError::from(Refusal::MissingToken))?;
    Ok(format!("admin:{}", st.ra.authenticate_admin(token).await?))
}

fn json<T: serde::Serialize>(r: Result<T, RaError>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(&e),
    }
}

use super::duration_secs as duration;

/// Filters from the query string or a JSON body: expiring_within, template, major, state,
/// device, issued_before (Unix seconds), limit.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterSpec {
    expiring_within: Option<String>,
    template: Option<String>,
    major: Option<u32>,
    state: Option<String>,
    device: Option<String>,
    issued_before: Option<i64>,
    limit: Option<i64>,
}

impl FilterSpec {
    fn from_query(q: &Option<String>) -> Result<FilterSpec, RaError> {
        let mut f = FilterSpec::default();
        for (k, v) in super::form_params(q.as_deref().unwrap_or("")) {
            match k.as_str() {
                "expiring_within" => f.expiring_within = Some(v),
                "template" => f.template = Some(v),
                "major" => f.major = Some(v.parse().map_err(|_| bad("major must be a number"))?),
                "state" => f.state = Some(v),
                "device" => f.device = Some(v),
                "issued_before" => f.issued_before = Some(v.parse().map_err(|_| bad("issued_before: Unix seconds"))?),
                "limit" => f.limit = Some(v.parse().map_err(|_| bad("limit must be a number"))?),
                other => return Err(bad(format!("unknown parameter {other}"))),
            }
        }
        Ok(f)
    }

    fn filter(self, now: UnixTime) -> Result<CertificateFilter, RaError> {
        Ok(CertificateFilter {
            expiring_before: self.expiring_within.as_deref().map(duration).transpose()?.map(|d| now.plus_secs(d)),
            // "Expiring within" means still valid now.
            expiring_after: self.expiring_within.as_ref().map(|_| now),
            template: self.template,
            template_major: self.major,
            state: super::parsed_param("state", self.state.as_deref().unwrap_or(""))?,
            devices: self
                .device
                .map(|d| d.split(',').map(str::trim).filter(|d| !d.is_empty()).map(str::to_string).collect())
                .unwrap_or_default(),
            issued_before: self.issued_before.map(UnixTime),
            limit: self.limit.unwrap_or(1000).clamp(1, 100_000),
        })
    }
}

async fn devices(State(st): State<AppState>, headers: HeaderMap) -> Response {
    json(
        async {
            admin(&st, &headers).await?;
            Ok(views::list::<_, DeviceJson>(&st.ra.devices(100_000).await?))
        }
        .await,
    )
}

async fn device(State(st): State<AppState>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    json(
        async {
            admin(&st, &headers).await?;
            let d = st
                .ra
                .devices(i64::MAX)
                .await?
                .into_iter()
                .find(|d| d.name == name)
                .ok_or_else(|| RaError::from(Refusal::UnknownDevice { name: name.clone() }))?;
            let filter = CertificateFilter { devices: vec![name.clone()], limit: 1000, ..Default::default() };
            let certs = st.ra.certificates_matching(&filter).await?;
            Ok(serde_json::json!({
                "device": DeviceJson::from(&d),
                "certificates": views::list::<_, CertificateJson>(&certs),
            }))
        }
        .await,
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockSpec {
    #[serde(default)]
    revoke: bool,
    reason: Option<String>,
}

fn body<T: for<'de> Deserialize<'de> + Default>(b: &Bytes) -> Result<T, RaError> {
    if b.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(b).map_err(|e| Refusal::BadJson { detail: e.to_string() }.into())
}

async fn block(State(st): State<AppState>, headers: HeaderMap, Path(name): Path<String>, b: Bytes) -> Response {
    json(
        async {
            let actor = admin(&st, &headers).await?;
            let spec: BlockSpec = body(&b)?;
            if spec.revoke {
                let reason = crate::ra::revocation_reason(spec.reason.as_deref().unwrap_or("privilegeWithdrawn"))?;
                let n = st.ra.block_and_revoke(&actor, &name, reason).await?;
                Ok(serde_json::json!({ "device": name, "blocked": true, "revoked": n }))
            } else {
                st.ra.set_device_state(&actor, &name, DeviceState::Blocked).await?;
                Ok(serde_json::json!({ "device": name, "blocked": true, "revoked": 0 }))
            }
        }
        .await,
    )
}

async fn unblock(State(st): State<AppState>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    json(
        async {
            let actor = admin(&st, &headers).await?;
            st.ra.set_device_state(&actor, &name, DeviceState::Active).await?;
            Ok(serde_json::json!({ "device": name, "blocked": false }))
        }
        .await,
    )
}

async fn certificates(State(st): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    json(
        async {
            admin(&st, &headers).await?;
            let f = FilterSpec::from_query(&q)?.filter(st.ra.now())?;
            Ok(views::list::<_, CertificateJson>(&st.ra.certificates_matching(&f).await?))
        }
        .await,
    )
}

async fn renew_now(State(st): State<AppState>, headers: HeaderMap, b: Bytes) -> Response {
    json(
        async {
            let actor = admin(&st, &headers).await?;
            let spec: FilterSpec = body(&b)?;
            let f = spec.filter(st.ra.now())?;
            let n = st.ra.renew_now(&actor, &f).await?;
            Ok(serde_json::json!({ "moved": n }))
        }
        .await,
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonSpec {
    reason: Option<String>,
}

async fn revoke(State(st): State<AppState>, headers: HeaderMap, Path(serial): Path<String>, b: Bytes) -> Response {
    json(
        async {
            let actor = admin(&st, &headers).await?;
            let spec: ReasonSpec = body(&b)?;
            let reason = crate::ra::revocation_reason(spec.reason.as_deref().unwrap_or("unspecified"))?;
            st.ra.revoke(&actor, &serial, reason).await?;
            Ok(serde_json::json!({ "serial": serial, "revoked": true, "reason": reason.as_str() }))
        }
        .await,
    )
}

async fn bump_major(State(st): State<AppState>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    json(
        async {
            let actor = admin(&st, &headers).await?;
            Ok(TemplateJson::from(&st.ra.bump_major(&actor, &name).await?))
        }
        .await,
    )
}

async fn approve(State(st): State<AppState>, headers: HeaderMap, Path(id): Path<i64>) -> Response {
    json(
        async {
            let actor = admin(&st, &headers).await?;
            let i = st.ra.approve(&actor, id).await?;
            Ok(serde_json::json!({ "request": id, "serial": i.serial }))
        }
        .await,
    )
}

async fn deny(State(st): State<AppState>, headers: HeaderMap, Path(id): Path<i64>, b: Bytes) -> Response {
    json(
        async {
            let actor = admin(&st, &headers).await?;
            let spec: ReasonSpec = body(&b)?;
            st.ra.deny(&actor, id, spec.reason.as_deref().unwrap_or("denied by an administrator")).await?;
            Ok(serde_json::json!({ "request": id, "denied": true }))
        }
        .await,
    )
}

async fn stuck(State(st): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    json(
        async {
            admin(&st, &headers).await?;
            let mut overdue = None;
            for (k, v) in super::form_params(q.as_deref().unwrap_or("")) {
                match k.as_str() {
                    "overdue" => overdue = Some(duration(&v)?),
                    other => return Err(bad(format!("unknown parameter {other}"))),
                }
            }
            Ok(views::list::<_, StuckJson>(&st.ra.stuck(overdue, 10_000).await?))
        }
        .await,
    )
}

async fn audit(State(st): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    json(
        async {
            admin(&st, &headers).await?;
            let mut filter = AuditFilter { limit: 100, ..Default::default() };
            for (k, v) in super::form_params(q.as_deref().unwrap_or("")) {
                match k.as_str() {
                    "limit" => {
                        filter.limit = v.parse::<i64>().map_err(|_| bad("limit must be a number"))?.clamp(1, 10_000)
                    }
                    "action" => filter.action = Some(v),
                    "subject" => filter.subject = Some(v),
                    other => return Err(bad(format!("unknown parameter {other}"))),
                }
            }
            Ok(views::list::<_, AuditJson>(&st.ra.audit_events(&filter).await?))
        }
        .await,
    )
}

/// Prometheus metrics on the HTTPS listener, for a scraper holding an admin token
/// (`authorization: { credentials: aea_... }` in Prometheus' scrape configuration).
async fn metrics(State(st): State<AppState>, headers: HeaderMap) -> Response {
    match admin(&st, &headers).await {
        Ok(_) => exposition(&st).await,
        Err(e) => error(&e),
    }
}

/// The text exposition format (also served without a token on `[metrics] listen`).
pub(super) async fn exposition(st: &AppState) -> Response {
    match crate::metrics::render(&st.ra).await {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response(),
        Err(e) => error(&e),
    }
}
