//! The admin REST API under `/admin/v1`: JSON in and out, authenticated by an admin token
//! (`Authorization: Bearer aea_...`, created with `server admin-token create`). The same RA
//! operations as the CLI; errors are `{"code", "detail"}` with a 4xx/5xx status.
use super::AppState;
use crate::ra::{CertificateFilter, RaError, TemplateSpec};
use autoenroll_core::Kind;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

pub fn router(state: AppState) -> axum::Router {
    use axum::routing::{get, post};
    axum::Router::new()
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
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(state)
}

use super::json_error as error;

fn bad(detail: impl Into<String>) -> RaError {
    RaError::new(Kind::BadRequest, "BadRequest", detail)
}

async fn admin(st: &AppState, headers: &HeaderMap) -> Result<String, RaError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| RaError::new(Kind::Unauthorized, "MissingToken", "send Authorization: Bearer <admin token>"))?;
    st.ra.authenticate_admin(token).await
}

fn json<T: serde::Serialize>(r: Result<T, RaError>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(&e),
    }
}

/// `key=value` pairs of a query string (values percent-decoded).
fn params(q: &Option<String>) -> Vec<(String, String)> {
    let Some(q) = q else { return vec![] };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let v = v.replace('+', " ");
            let mut out = Vec::new();
            let b = v.as_bytes();
            let mut i = 0;
            while i < b.len() {
                let hex = |c: u8| (c as char).to_digit(16);
                if b[i] == b'%' {
                    if let (Some(h), Some(l)) = (b.get(i + 1).and_then(|c| hex(*c)), b.get(i + 2).and_then(|c| hex(*c)))
                    {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                }
                out.push(b[i]);
                i += 1;
            }
            (k.to_string(), String::from_utf8_lossy(&out).into_owned())
        })
        .collect()
}

fn duration(v: &str) -> Result<i64, RaError> {
    humantime_like(v).ok_or_else(|| bad(format!("bad duration {v:?} (e.g. 30d, 12h, 90m)")))
}

/// `<n>s|m|h|d` durations.
fn humantime_like(v: &str) -> Option<i64> {
    let (n, unit) = v.trim().split_at(v.trim().len().checked_sub(1)?);
    let n: i64 = n.parse().ok()?;
    Some(
        n * match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return None,
        },
    )
}

/// Filters from the query string or a JSON body: expiring_within, template, major, state,
/// device, issued_before (Unix seconds), limit.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterSpec {
    expiring_within: Option<String>,
    template: Option<String>,
    major: Option<i64>,
    state: Option<String>,
    device: Option<String>,
    issued_before: Option<i64>,
    limit: Option<i64>,
}

impl FilterSpec {
    fn from_query(q: &Option<String>) -> Result<FilterSpec, RaError> {
        let mut f = FilterSpec::default();
        for (k, v) in params(q) {
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

    fn filter(self, now: i64) -> Result<CertificateFilter, RaError> {
        Ok(CertificateFilter {
            expiring_before: self.expiring_within.as_deref().map(duration).transpose()?.map(|d| now + d),
            template: self.template,
            template_major: self.major,
            state: self.state,
            device: self.device,
            issued_before: self.issued_before,
            limit: self.limit.unwrap_or(1000).clamp(1, 100_000),
        })
    }
}

async fn devices(State(st): State<AppState>, headers: HeaderMap) -> Response {
    json(
        async {
            admin(&st, &headers).await?;
            st.ra.devices(100_000).await
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
                .ok_or_else(|| RaError::new(Kind::NotFound, "UnknownDevice", format!("no device {name}")))?;
            let filter = CertificateFilter { device: Some(name.clone()), limit: 1000, ..Default::default() };
            let certs = st.ra.certificates_matching(&filter).await?;
            Ok(serde_json::json!({ "device": d, "certificates": certs }))
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
    serde_json::from_slice(b).map_err(|e| RaError::new(Kind::BadRequest, "BadJson", e.to_string()))
}

async fn block(State(st): State<AppState>, headers: HeaderMap, Path(name): Path<String>, b: Bytes) -> Response {
    json(
        async {
            admin(&st, &headers).await?;
            let spec: BlockSpec = body(&b)?;
            if spec.revoke {
                let reason = spec.reason.as_deref().unwrap_or("privilegeWithdrawn");
                let n = st.ra.block_and_revoke(&name, reason).await?;
                Ok(serde_json::json!({ "device": name, "blocked": true, "revoked": n }))
            } else {
                st.ra.set_device_blocked(&name, true).await?;
                Ok(serde_json::json!({ "device": name, "blocked": true, "revoked": 0 }))
            }
        }
        .await,
    )
}

async fn unblock(State(st): State<AppState>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    json(
        async {
            admin(&st, &headers).await?;
            st.ra.set_device_blocked(&name, false).await?;
            Ok(serde_json::json!({ "device": name, "blocked": false }))
        }
        .await,
    )
}

async fn certificates(State(st): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    json(
        async {
            admin(&st, &headers).await?;
            let f = FilterSpec::from_query(&q)?.filter(st.ra.now().0)?;
            st.ra.certificates_matching(&f).await
        }
        .await,
    )
}

async fn renew_now(State(st): State<AppState>, headers: HeaderMap, b: Bytes) -> Response {
    json(
        async {
            admin(&st, &headers).await?;
            let spec: FilterSpec = body(&b)?;
            let f = spec.filter(st.ra.now().0)?;
            let n = st.ra.renew_now(&f).await?;
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
            admin(&st, &headers).await?;
            let spec: ReasonSpec = body(&b)?;
            let reason = spec.reason.unwrap_or_else(|| "unspecified".into());
            st.ra.revoke(&serial, &reason).await?;
            Ok(serde_json::json!({ "serial": serial, "revoked": true, "reason": reason }))
        }
        .await,
    )
}

async fn bump_major(State(st): State<AppState>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    json(
        async {
            admin(&st, &headers).await?;
            let t = st.ra.template(&name).await?;
            let spec = TemplateSpec { major: Some(t.major + 1), ..Default::default() };
            st.ra.update_template(&name, &spec).await
        }
        .await,
    )
}

async fn approve(State(st): State<AppState>, headers: HeaderMap, Path(id): Path<i64>) -> Response {
    json(
        async {
            admin(&st, &headers).await?;
            let i = st.ra.approve(id).await?;
            Ok(serde_json::json!({ "request": id, "serial": i.serial }))
        }
        .await,
    )
}

async fn deny(State(st): State<AppState>, headers: HeaderMap, Path(id): Path<i64>, b: Bytes) -> Response {
    json(
        async {
            admin(&st, &headers).await?;
            let spec: ReasonSpec = body(&b)?;
            st.ra.deny(id, spec.reason.as_deref().unwrap_or("denied by an administrator")).await?;
            Ok(serde_json::json!({ "request": id, "denied": true }))
        }
        .await,
    )
}

async fn stuck(State(st): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    json(
        async {
            admin(&st, &headers).await?;
            let mut overdue = 86_400;
            for (k, v) in params(&q) {
                match k.as_str() {
                    "overdue" => overdue = duration(&v)?,
                    other => return Err(bad(format!("unknown parameter {other}"))),
                }
            }
            st.ra.stuck(overdue, 10_000).await
        }
        .await,
    )
}

async fn audit(State(st): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    json(
        async {
            admin(&st, &headers).await?;
            let mut limit = 100;
            let (mut action, mut subject) = (None, None);
            for (k, v) in params(&q) {
                match k.as_str() {
                    "limit" => limit = v.parse::<i64>().map_err(|_| bad("limit must be a number"))?.clamp(1, 10_000),
                    "action" => action = Some(v),
                    "subject" => subject = Some(v),
                    other => return Err(bad(format!("unknown parameter {other}"))),
                }
            }
            let events = st.ra.audit_events(limit).await?;
            Ok(events
                .into_iter()
                .filter(|e| action.as_deref().is_none_or(|a| e.action == a))
                .filter(|e| subject.as_deref().is_none_or(|s| e.subject == s))
                .collect::<Vec<_>>())
        }
        .await,
    )
}
