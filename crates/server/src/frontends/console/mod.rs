//! The web console under `/ui`: server-rendered HTML over the same RA operations as the admin
//! API and the CLI. No JavaScript at all; charts are SVG made in Rust.
//!
//! Sign-in takes an admin token and sets a session cookie (HttpOnly, Secure, SameSite=Strict,
//! path `/ui`); every form carries the session's CSRF token and every action a ticked
//! confirmation, both checked here. Every response has a CSP that allows only the console's
//! own stylesheet and forms posting to itself. Served on the HTTPS listener only.
mod charts;
mod pages;

use super::AppState;
use crate::ra::{
    secrets, AuditFilter, CertificateFilter, ConsoleSession, DeviceFilter, DeviceState, RaError, SESSION_SECS,
};
use autoenroll_core::model::AuditOutcome;
use autoenroll_core::Refusal;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::Markup;

/// `__Host-`: the browser takes it only from this origin over TLS, for path `/`, so nothing
/// else (another port, a sibling host) can plant one.
pub const COOKIE: &str = "__Host-ae_console";
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                       frame-ancestors 'none'; base-uri 'none'";

pub fn router(state: AppState) -> axum::Router {
    use axum::routing::{get, post};
    let routes = axum::Router::new()
        .route("/ui", get(|| async { redirect("/ui/") }))
        .route("/ui/", get(fleet))
        .route("/ui/style.css", get(style))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/devices", get(devices))
        .route("/ui/devices/{name}", get(device))
        .route("/ui/devices/{name}/block", post(block))
        .route("/ui/devices/{name}/unblock", post(unblock))
        .route("/ui/certificates", get(certificates))
        .route("/ui/certificates/renew-now", post(renew_now))
        .route("/ui/certificates/{serial}", get(certificate))
        .route("/ui/certificates/{serial}/pem", get(certificate_pem))
        .route("/ui/certificates/{serial}/revoke", post(revoke))
        .route("/ui/templates", get(templates))
        .route("/ui/templates/{name}", get(template))
        .route("/ui/templates/{name}/bump-major", post(bump_major))
        .route("/ui/requests", get(requests))
        .route("/ui/requests/{id}/approve", post(approve))
        .route("/ui/requests/{id}/deny", post(deny))
        .route("/ui/audit", get(audit));
    super::body_limit(routes, 16 * 1024)
        .layer(axum::middleware::from_fn(refuse_cross_site))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    h.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"));
    r
}

fn redirect(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

fn page(m: Markup) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], m.into_string()).into_response()
}

/// The console's one mapping of RA errors: an HTML page with the JSON APIs' status.
fn error_page(session: Option<&ConsoleSession>, e: &RaError) -> Response {
    tracing::info!(code = e.code(), kind = e.kind().as_str(), "console request refused");
    crate::metrics::refused(e);
    let body = pages::error(session, e.code(), &e.detail()).into_string();
    (super::http_status(e.kind()), [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

/// The session cookie; none when there is none or more than one (a planted second one must
/// not choose the session).
fn cookie_value(headers: &HeaderMap) -> Option<String> {
    let mut found = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .filter(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string());
    let first = found.next();
    if found.next().is_some() {
        return None;
    }
    first
}

/// A form posted from another site: refused whatever it carries (the browser says so in
/// `Sec-Fetch-Site`, or its `Origin` is not this host). Also stops signing a victim in to an
/// attacker's session.
fn cross_site(req: &axum::extract::Request) -> bool {
    let get = |h: &str| req.headers().get(h).and_then(|v| v.to_str().ok());
    if let Some(site) = get("sec-fetch-site") {
        return !matches!(site, "same-origin" | "none");
    }
    // Browsers without Sec-Fetch-Site: Origin against the host asked for (Host in HTTP/1.1,
    // :authority in HTTP/2).
    let host = get("host").map(str::to_string).or_else(|| req.uri().authority().map(|a| a.to_string()));
    match (get("origin"), host) {
        (Some(origin), Some(host)) => origin.strip_prefix("https://") != Some(host.as_str()),
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// Every POST of the console (sign-in included) must come from the console itself.
async fn refuse_cross_site(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if req.method() != axum::http::Method::GET && cross_site(&req) {
        let e = RaError::from(Refusal::BadParameter {
            detail: "a form posted from another site is refused (Origin / Sec-Fetch-Site)".into(),
        });
        return error_page(None, &e);
    }
    next.run(req).await
}

/// The signed-in administrator, or the response that sends the browser to sign in.
async fn session(st: &AppState, headers: &HeaderMap) -> Result<ConsoleSession, Response> {
    let Some(cookie) = cookie_value(headers) else { return Err(redirect("/ui/login")) };
    st.ra.console_session(&cookie).await.map_err(|e| match e.kind() {
        autoenroll_core::Kind::Unauthorized => redirect("/ui/login"),
        _ => error_page(None, &e),
    })
}

/// A posted form of a signed-in administrator: session checked, CSRF token compared in
/// constant time, and for actions, the confirmation ticked.
async fn action_form(
    st: &AppState,
    headers: &HeaderMap,
    body: &Bytes,
    needs_confirm: bool,
) -> Result<(ConsoleSession, Vec<(String, String)>), Response> {
    let s = session(st, headers).await?;
    let form = super::form_params(std::str::from_utf8(body).unwrap_or(""));
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).unwrap_or("");
    if !secrets::ct_eq(get("csrf").as_bytes(), s.csrf.as_bytes()) {
        let e = RaError::from(Refusal::BadParameter {
            detail: "the form is stale or did not come from this console (CSRF token); reload the page".into(),
        });
        return Err(error_page(Some(&s), &e));
    }
    if needs_confirm && get("confirm") != "yes" {
        let e = RaError::from(Refusal::BadParameter { detail: "tick the confirmation box to do this".into() });
        return Err(error_page(Some(&s), &e));
    }
    Ok((s, form))
}

fn param<'a>(form: &'a [(String, String)], k: &str) -> &'a str {
    form.iter().find(|(n, _)| n == k).map(|(_, v)| v.trim()).unwrap_or("")
}

fn query(q: &Option<String>) -> Vec<(String, String)> {
    super::form_params(q.as_deref().unwrap_or(""))
}

/// What an action did, shown once on the page it returns to: a fixed text per code, so a
/// crafted link cannot put words in the console's mouth.
fn notice(q: &[(String, String)]) -> Option<String> {
    let n = param(q, "n");
    Some(match param(q, "done") {
        "request-approved" => "Request approved: the certificate is issued.".into(),
        "request-denied" => "Request denied.".into(),
        "cert-revoked" => "Certificate revoked; it is on the CRL now.".into(),
        "device-blocked" => "Device blocked.".into(),
        "device-unblocked" => "Device unblocked.".into(),
        "template-bumped" => "Major version bumped: holders re-enroll at their next check-in.".into(),
        "renew-now" if n.bytes().all(|b| b.is_ascii_digit()) && !n.is_empty() => {
            format!("{n} certificates will renew at their next check-in.")
        }
        _ => return None,
    })
}

fn duration_param(v: &str) -> Result<Option<i64>, RaError> {
    if v.is_empty() {
        return Ok(None);
    }
    super::duration_secs(v).map(Some)
}

/// An action: the posted form checked (session, CSRF, confirmation), then `$act` (the page to
/// return to, or the refusal shown as the error page).
macro_rules! acted {
    ($st:expr, $headers:expr, $body:expr, |$s:ident, $form:ident| $act:expr) => {{
        let ($s, $form) = match action_form(&$st, &$headers, &$body, true).await {
            Ok(x) => x,
            Err(r) => return r,
        };
        let to: Result<String, RaError> = async { $act }.await;
        match to {
            Ok(to) => redirect(&to),
            Err(e) => error_page(Some(&$s), &e),
        }
    }};
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "max-age=3600")], pages::STYLE)
        .into_response()
}

async fn login_page() -> Response {
    page(pages::login(None))
}

async fn login(State(st): State<AppState>, body: Bytes) -> Response {
    let form = super::form_params(std::str::from_utf8(&body).unwrap_or(""));
    match st.ra.console_sign_in(param(&form, "token")).await {
        Ok((cookie, _)) => {
            let set = format!("{COOKIE}={cookie}; Path=/; Max-Age={SESSION_SECS}; HttpOnly; Secure; SameSite=Strict");
            (StatusCode::SEE_OTHER, [(header::LOCATION, "/ui/".to_string()), (header::SET_COOKIE, set)]).into_response()
        }
        Err(e) if e.kind() == autoenroll_core::Kind::Unauthorized => {
            let body = pages::login(Some("That admin token is unknown or revoked.")).into_string();
            (StatusCode::UNAUTHORIZED, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
        }
        Err(e) => error_page(None, &e),
    }
}

async fn logout(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = action_form(&st, &headers, &body, false).await {
        return r;
    }
    let clear = format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict");
    (StatusCode::SEE_OTHER, [(header::LOCATION, "/ui/login".to_string()), (header::SET_COOKIE, clear)]).into_response()
}

/// Runs a page handler body with the session; errors become the error page.
macro_rules! signed_in {
    ($st:expr, $headers:expr, |$s:ident| $body:expr) => {{
        let $s = match session(&$st, &$headers).await {
            Ok(s) => s,
            Err(r) => return r,
        };
        let r: Result<Markup, RaError> = async { $body }.await;
        match r {
            Ok(m) => page(m),
            Err(e) => error_page(Some(&$s), &e),
        }
    }};
}

async fn fleet(State(st): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    signed_in!(st, headers, |s| {
        let summary = st.ra.fleet_summary(pages::WEEKS, pages::DAYS).await?;
        let stuck = st.ra.stuck(None, 200).await?; // the list shows the 200 most overdue
        let n = notice(&query(&q));
        let templates: Vec<String> = st.ra.templates().await?.valid.into_iter().map(|t| t.name).collect();
        Ok(pages::fleet(
            &s,
            n.as_deref(),
            pages::Fleet { now: st.ra.now(), summary: &summary, stuck: &stuck, templates: &templates },
        ))
    })
}

async fn devices(State(st): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    signed_in!(st, headers, |s| {
        let q = query(&q);
        let (search, state) = (param(&q, "q"), param(&q, "state"));
        let blocked = super::parsed_param::<DeviceState>("state", state)?.map(|d| d == DeviceState::Blocked);
        let filter = DeviceFilter { name_contains: search.to_string(), blocked, limit: 1000 };
        let list = st.ra.devices_matching(&filter).await?;
        Ok(pages::devices(&s, search, state, &list))
    })
}

async fn device(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    signed_in!(st, headers, |s| {
        let (d, groups) = st.ra.device(&name).await?;
        let filter = CertificateFilter { devices: vec![name.clone()], limit: 1000, ..Default::default() };
        let mut certs = st.ra.certificates_matching(&filter).await?;
        certs.sort_by_key(|c| std::cmp::Reverse(c.created_at));
        // The device's own events, and refusals of its latest certificates (renewals are
        // audited under the certificate's serial).
        let mut events =
            st.ra.audit_events(&AuditFilter { subject: Some(name.clone()), limit: 20, ..Default::default() }).await?;
        for c in certs.iter().take(5) {
            let f = AuditFilter {
                subject: Some(c.serial.clone()),
                outcome: Some(AuditOutcome::Refused),
                limit: 5,
                ..Default::default()
            };
            events.extend(st.ra.audit_events(&f).await?);
        }
        events.sort_by_key(|e| std::cmp::Reverse(e.at));
        events.truncate(30);
        let n = notice(&query(&q));
        Ok(pages::device(
            &s,
            n.as_deref(),
            pages::DeviceDetail {
                name: &d.name,
                state: d.state,
                created_at: d.created_at,
                last_seen: d.last_seen,
                owner: d.owner.as_deref(),
                groups: &groups,
                certificates: &certs,
                events: &events,
                now: st.ra.now(),
            },
        ))
    })
}

fn device_url(name: &str, done: &str) -> String {
    format!("/ui/devices/{}?done={done}", pages::url(name))
}

async fn block(State(st): State<AppState>, headers: HeaderMap, Path(name): Path<String>, body: Bytes) -> Response {
    acted!(st, headers, body, |s, form| {
        if param(&form, "revoke") == "yes" {
            let reason = autoenroll_core::model::RevocationReason::PrivilegeWithdrawn;
            st.ra.block_and_revoke(&s.actor, &name, reason).await?;
        } else {
            st.ra.set_device_state(&s.actor, &name, DeviceState::Blocked).await?;
        }
        Ok(device_url(&name, "device-blocked"))
    })
}

async fn unblock(State(st): State<AppState>, headers: HeaderMap, Path(name): Path<String>, body: Bytes) -> Response {
    acted!(st, headers, body, |s, _form| {
        st.ra.set_device_state(&s.actor, &name, DeviceState::Active).await?;
        Ok(device_url(&name, "device-unblocked"))
    })
}

async fn certificates(State(st): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    signed_in!(st, headers, |s| {
        let q = query(&q);
        let form = pages::CertificateFilterForm {
            template: param(&q, "template"),
            state: param(&q, "state"),
            expiring_within: param(&q, "expiring_within"),
            device: param(&q, "device"),
        };
        let now = st.ra.now();
        let filter = CertificateFilter {
            template: Some(form.template.to_string()).filter(|t| !t.is_empty()),
            state: super::parsed_param("state", form.state)?,
            // `expired=yes` (the fleet table's link): past their expiry; `valid=yes`: not yet;
            // "expiring within" means still valid now.
            expiring_before: if param(&q, "expired") == "yes" {
                Some(now)
            } else {
                duration_param(form.expiring_within)?.map(|d| now.plus_secs(d))
            },
            expiring_after: (param(&q, "valid") == "yes" || !form.expiring_within.is_empty()).then_some(now),
            devices: Some(form.device.to_string()).filter(|d| !d.is_empty()).into_iter().collect(),
            limit: 1000,
            ..Default::default()
        };
        let list = st.ra.certificates_matching(&filter).await?;
        let templates = st.ra.templates().await?;
        let n = notice(&q);
        Ok(pages::certificates(&s, n.as_deref(), form, &templates.valid, &list, now))
    })
}

async fn renew_now(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    acted!(st, headers, body, |s, form| {
        let template = param(&form, "template");
        if template.is_empty() {
            return Err(Refusal::BadParameter { detail: "choose a template".into() }.into());
        }
        let now = st.ra.now();
        let filter = CertificateFilter {
            template: Some(template.to_string()),
            template_major: super::parsed_param("major", param(&form, "major"))?,
            expiring_before: duration_param(param(&form, "expiring_within"))?.map(|d| now.plus_secs(d)),
            expiring_after: Some(now),
            limit: 100_000,
            ..Default::default()
        };
        let n = st.ra.renew_now(&s.actor, &filter).await?;
        Ok(format!("/ui/certificates?done=renew-now&n={n}"))
    })
}

async fn certificate(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(serial): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    signed_in!(st, headers, |s| {
        let c = st.ra.certificate(&serial).await?;
        let chain = st
            .ra
            .chain_der()
            .iter()
            .zip([crate::ra::ISSUING_PATH, crate::ra::ROOT_PATH])
            .map(|(der, path)| {
                let subject = autoenroll_core::pki::CertFacts::parse(der).map(|f| f.subject).unwrap_or_default();
                (subject, path.to_string())
            })
            .collect::<Vec<_>>();
        let n = notice(&query(&q));
        Ok(pages::certificate(&s, n.as_deref(), &c, &chain, st.ra.now()))
    })
}

async fn certificate_pem(State(st): State<AppState>, headers: HeaderMap, Path(serial): Path<String>) -> Response {
    let s = match session(&st, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let pem = async {
        let c = st.ra.certificate(&serial).await?;
        let der = c.der.ok_or_else(|| RaError::from(Refusal::NoSuchCertificate { serial: serial.clone() }))?;
        der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, &der).map_err(RaError::internal)
    }
    .await;
    match pem {
        Ok(pem) => (
            [
                (header::CONTENT_TYPE, "application/x-pem-file".to_string()),
                (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{}.pem\"", serial.replace('"', ""))),
            ],
            pem,
        )
            .into_response(),
        Err(e) => error_page(Some(&s), &e),
    }
}

async fn revoke(State(st): State<AppState>, headers: HeaderMap, Path(serial): Path<String>, body: Bytes) -> Response {
    acted!(st, headers, body, |s, form| {
        let reason = Some(param(&form, "reason")).filter(|r| !r.is_empty()).unwrap_or("unspecified");
        st.ra.revoke(&s.actor, &serial, crate::ra::revocation_reason(reason)?).await?;
        Ok(format!("/ui/certificates/{}?done=cert-revoked", pages::url(&serial)))
    })
}

async fn templates(State(st): State<AppState>, headers: HeaderMap) -> Response {
    signed_in!(st, headers, |s| {
        let t = st.ra.templates().await?;
        Ok(pages::templates(&s, &t.valid))
    })
}

async fn template(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    signed_in!(st, headers, |s| {
        let t = st.ra.template(&name).await?;
        let mut history = Vec::new();
        for action in ["template.create", "template.update"] {
            let f = AuditFilter {
                action: Some(action.into()),
                subject: Some(name.clone()),
                limit: 100,
                ..Default::default()
            };
            history.extend(st.ra.audit_events(&f).await?);
        }
        history.sort_by_key(|e| std::cmp::Reverse(e.at));
        let n = notice(&query(&q));
        Ok(pages::template(&s, n.as_deref(), &t, &history))
    })
}

async fn bump_major(State(st): State<AppState>, headers: HeaderMap, Path(name): Path<String>, body: Bytes) -> Response {
    acted!(st, headers, body, |s, _form| {
        st.ra.bump_major(&s.actor, &name).await?;
        Ok(format!("/ui/templates/{}?done=template-bumped", pages::url(&name)))
    })
}

async fn requests(State(st): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    signed_in!(st, headers, |s| {
        let list = st.ra.requests(autoenroll_core::model::RequestStatus::Pending, 500).await?;
        let n = notice(&query(&q));
        Ok(pages::requests(&s, n.as_deref(), &list))
    })
}

async fn approve(State(st): State<AppState>, headers: HeaderMap, Path(id): Path<i64>, body: Bytes) -> Response {
    acted!(st, headers, body, |s, _form| {
        st.ra.approve(&s.actor, id).await?;
        Ok("/ui/requests?done=request-approved".to_string())
    })
}

async fn deny(State(st): State<AppState>, headers: HeaderMap, Path(id): Path<i64>, body: Bytes) -> Response {
    acted!(st, headers, body, |s, form| {
        let reason = Some(param(&form, "reason")).filter(|r| !r.is_empty()).unwrap_or("denied by an administrator");
        st.ra.deny(&s.actor, id, reason).await?;
        Ok("/ui/requests?done=request-denied".to_string())
    })
}

async fn audit(State(st): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    signed_in!(st, headers, |s| {
        let q = query(&q);
        let form = pages::AuditFilterForm {
            action: param(&q, "action"),
            actor: param(&q, "actor"),
            subject: param(&q, "subject"),
            outcome: param(&q, "outcome"),
            since: param(&q, "since"),
        };
        let some = |v: &str| Some(v.to_string()).filter(|v| !v.is_empty());
        let filter = AuditFilter {
            action: some(form.action),
            actor: some(form.actor),
            subject: some(form.subject),
            outcome: super::parsed_param("outcome", form.outcome)?,
            since: duration_param(form.since)?.map(|d| st.ra.now().minus_secs(d)),
            limit: 500,
        };
        let events = st.ra.audit_events(&filter).await?;
        Ok(pages::audit(&s, form, &events))
    })
}
