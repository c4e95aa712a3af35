//! The federated MDM sign-in page (MS-MDE2 `AuthenticationServiceUrl`). Windows opens it in its
//! Web Authentication Broker as `?appru=<return address>&login_hint=<user>`; after sign-in the
//! page posts the token in a form field `wresult` to `appru`, and the device then presents that
//! token on the policy and enrollment endpoints (ValueType DeviceEnrollmentUserToken).
use super::{form_params, AppState, Peer};
use crate::ra::{Credentials, RaError};
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;

pub const PATH: &str = "/EnrollmentServer/Authenticate";

/// A sign-in form is a few short fields.
const MAX_FORM: usize = 8 * 1024;

/// What the page was opened with: where the token goes back to, and whom Windows suggests.
struct Opened {
    appru: String,
    login_hint: String,
}

/// The return address must be one the administrator allows (Windows' `ms-app://` by default):
/// the page hands a bearer token to whatever `appru` names, so an attacker's link must not be
/// able to name their own site.
fn opened(state: &AppState, params: &[(String, String)]) -> Result<Opened, &'static str> {
    let value = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim().to_string());
    let appru = value("appru").filter(|a| !a.is_empty()).ok_or(
        "This page is opened by the Windows enrollment wizard (Settings > Accounts > Access work or school), \
         which says where to return: the appru parameter is missing.",
    )?;
    if appru.chars().any(char::is_control) || !state.mdm_sign_in_return.iter().any(|p| appru.starts_with(p.as_str())) {
        return Err("The return address (appru) is not one this server returns sign-in tokens to.");
    }
    Ok(Opened { appru, login_hint: value("login_hint").unwrap_or_default() })
}

pub async fn page(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let params = form_params(query.as_deref().unwrap_or(""));
    match opened(&state, &params) {
        Ok(o) => html(StatusCode::OK, &sign_in_form(&o, None)),
        Err(why) => html(StatusCode::BAD_REQUEST, &message_page(why)),
    }
}

pub async fn submit(State(state): State<AppState>, peer: Option<Extension<Peer>>, body: Body) -> Response {
    let client = peer.and_then(|Extension(p)| p.1);
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM).await else {
        return html(StatusCode::PAYLOAD_TOO_LARGE, &message_page("The sign-in form is too large."));
    };
    let params = form_params(&String::from_utf8_lossy(&bytes));
    let mut opened = match opened(&state, &params) {
        Ok(o) => o,
        Err(why) => return html(StatusCode::BAD_REQUEST, &message_page(why)),
    };
    let field = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default();
    let token = field("token");
    // A failed attempt shows the form again with the account the user typed.
    opened.login_hint = field("username");
    let creds = if token.trim().is_empty() {
        Credentials::Password { username: field("username").trim().to_string(), password: field("password"), client }
    } else {
        Credentials::BootstrapToken(token)
    };
    match state.ra.mdm_sign_in(&creds).await {
        Ok(token) => html(StatusCode::OK, &return_form(&opened.appru, &token)),
        Err(e) => {
            // The page says only that sign-in failed; the audit log and the server log say why.
            tracing::info!(code = e.code(), "MDM sign-in refused");
            crate::metrics::refused(&e);
            let locked = e.refusal_code() == Some(autoenroll_core::RefusalCode::TooManyAttempts);
            let (status, shown) = match e {
                RaError::Refused { .. } if locked => {
                    (StatusCode::TOO_MANY_REQUESTS, "Too many failed sign-ins: try again in a quarter of an hour.")
                }
                RaError::Refused { .. } => (
                    StatusCode::UNAUTHORIZED,
                    "Sign-in failed: check the account and password, or the enrollment token.",
                ),
                RaError::Internal { .. } => {
                    (StatusCode::SERVICE_UNAVAILABLE, "Sign-in is unavailable right now; try again later.")
                }
            };
            html(status, &sign_in_form(&opened, Some(shown)))
        }
    }
}

/// Escapes text for HTML element content and double-quoted attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;background:#f4f6f8;color:#1b1f23}\
main{max-width:26rem;margin:2rem auto;padding:1.5rem;background:#fff;border-radius:8px;box-shadow:0 1px 4px #0002}\
h1{font-size:1.3rem;margin-top:0}label{display:block;margin:.8rem 0 .2rem}\
input{width:100%;box-sizing:border-box;padding:.5rem;font-size:1rem}\
button{margin-top:1rem;padding:.6rem 1.2rem;font-size:1rem}.or{text-align:center;color:#586069}\
.error{color:#b00020;font-weight:600}";

fn document(title: &str, body: &str, script: Option<&str>) -> String {
    let script = script.map(|s| format!("<script>{s}</script>")).unwrap_or_default();
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title}</title>\
         <style>{STYLE}</style></head><body><main>{body}</main>{script}</body></html>",
        title = esc(title)
    )
}

fn sign_in_form(o: &Opened, error: Option<&str>) -> String {
    let error = error.map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e))).unwrap_or_default();
    let body = format!(
        "<h1>Sign in to enroll this device</h1>{error}\
         <form method=\"post\" action=\"{PATH}\">\
         <input type=\"hidden\" name=\"appru\" value=\"{appru}\">\
         <label for=\"username\">Account</label>\
         <input id=\"username\" name=\"username\" autocomplete=\"username\" value=\"{hint}\">\
         <label for=\"password\">Password</label>\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\">\
         <p class=\"or\">or</p>\
         <label for=\"token\">Enrollment token from your administrator</label>\
         <input id=\"token\" name=\"token\" autocomplete=\"off\" spellcheck=\"false\">\
         <button id=\"sign-in\" type=\"submit\">Sign in</button></form>",
        appru = esc(&o.appru),
        hint = esc(&o.login_hint),
    );
    document("Sign in to enroll", &body, None)
}

/// The form Windows' broker waits for: POST to `appru` with the token in `wresult`,
/// submitted on load (and by hand where scripts are off).
fn return_form(appru: &str, token: &str) -> String {
    let body = format!(
        "<h1>Signed in</h1><p>Returning to device enrollment…</p>\
         <form id=\"return\" method=\"post\" action=\"{appru}\">\
         <input type=\"hidden\" name=\"wresult\" value=\"{token}\">\
         <button type=\"submit\">Continue</button></form>",
        appru = esc(appru),
        token = esc(token),
    );
    document("Signed in", &body, Some(AUTO_SUBMIT))
}

const AUTO_SUBMIT: &str = "document.getElementById('return').submit();";

fn message_page(text: &str) -> String {
    document("Sign in to enroll", &format!("<h1>Cannot sign in</h1><p class=\"error\">{}</p>", esc(text)), None)
}

/// The page's one inline script and style are allowed by hash, nothing else loads; it cannot be
/// framed (clickjacking of the password form) and is never cached (it may carry a token).
fn html(status: StatusCode, page: &str) -> Response {
    let mut r = (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], page.to_string()).into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if let Ok(csp) = HeaderValue::from_str(&content_security_policy()) {
        h.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    r
}

fn content_security_policy() -> String {
    use base64::Engine;
    let hash = |s: &str| {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes());
        format!("'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(digest.as_ref()))
    };
    format!(
        "default-src 'none'; style-src {}; script-src {}; frame-ancestors 'none'; base-uri 'none'",
        hash(STYLE),
        hash(AUTO_SUBMIT)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(esc(r#"<a href="x">'&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    }

    #[test]
    fn the_return_form_carries_the_token_to_appru_exactly() {
        let page = return_form("ms-app://windows.immersivecontrolpanel", "aet_abc.def");
        assert!(page.contains(r#"action="ms-app://windows.immersivecontrolpanel""#));
        assert!(page.contains(r#"name="wresult" value="aet_abc.def""#));
        assert!(page.contains(AUTO_SUBMIT));
    }
}
