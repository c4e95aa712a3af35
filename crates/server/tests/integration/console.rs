//! The web console (issue 15): driven in Debian's chromium through chromedriver, and probed
//! with curl for what a browser hides (cookie flags, CSP, CSRF and confirmation refusals,
//! forged and revoked sessions, escaping).
#![allow(clippy::unwrap_used, clippy::expect_used)]
use crate::common;

use autoenroll_core::model::{CertState, RequestStatus};
use autoenroll_core::pki::CertFacts;
use autoenroll_keys::{build_csr, cn_name, KeyAlgorithm, KeyPair};
use autoenroll_proto::soap::HeaderToken;
use autoenroll_proto::{ns, wstep};
use autoenroll_server::ra::{Credentials, EnrollInput, Outcome, Ra, TemplateSpec, TokenSpec, LOCAL_ADMIN};
use common::*;
use std::process::Command;

/// curl against the test server: `-i` output (status line, headers, body).
fn curl(s: &TestServer, args: &[&str]) -> String {
    autoenroll_test_support::require_tool("curl", "curl");
    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "20", "--cacert"])
        .arg(s.root_pem())
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn status(response: &str) -> u16 {
    response.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    response
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .find(|l| l.to_ascii_lowercase().starts_with(&format!("{}:", name.to_ascii_lowercase())))
        .map(|l| l.split_once(':').unwrap().1.trim())
}

/// Signs in with curl: the session cookie's `name=value`.
fn sign_in(s: &TestServer, token: &str) -> String {
    let r = curl(s, &["--data-urlencode", &format!("token={token}"), &s.url("/ui/login")]);
    assert_eq!(status(&r), 303, "{r}");
    header(&r, "set-cookie").unwrap().split(';').next().unwrap().to_string()
}

/// The CSRF token in a page's forms.
fn csrf_of(page: &str) -> String {
    let at = page.find(r#"name="csrf" value=""#).expect("a form with a CSRF token");
    page[at + 19..].split('"').next().unwrap().to_string()
}

async fn pending_request(ra: &Ra, device: &str) -> i64 {
    let (token, _) = ra.create_token(&TokenSpec { device, template: None, ttl_secs: 600 }).await.unwrap();
    let principal = ra.authenticate(&Credentials::BootstrapToken(token), None).await.unwrap();
    let key = KeyPair::generate(KeyAlgorithm::P256).unwrap();
    let csr = build_csr(&key, cn_name(device).unwrap(), vec![]).unwrap();
    match ra.enroll(EnrollInput { principal: &principal, csr_der: &csr, template_name: None }).await.unwrap() {
        Outcome::Pending { request_id } => request_id,
        Outcome::Issued(_) => panic!("the template holds requests for approval"),
    }
}

fn serial_of(der: &[u8]) -> String {
    CertFacts::parse(der).unwrap().serial.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_in_a_real_browser() {
    use autoenroll_test_support::browser::{Browser, Locator};
    let s = TestServer::start().await;
    for d in ["web-01", "web-02", "db-01"] {
        issue(&s.ra, d).await;
    }
    let lost = serial_of(&issue(&s.ra, "lost-laptop").await);
    s.ra.update_template(LOCAL_ADMIN, "Machine", &TemplateSpec { pend_all: Some(true), ..Default::default() })
        .await
        .unwrap();
    let held = pending_request(&s.ra, "new-server").await;
    let token = s.ra.create_admin_token("ops").await.unwrap();

    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    let browser = Browser::start(&shots).await;
    let b = &browser.client;
    // Not signed in: every page sends the browser to the sign-in form.
    b.goto(&s.url("/ui/devices")).await.unwrap();
    b.wait().for_url(&s.url("/ui/login").parse().unwrap()).await.unwrap();
    b.find(Locator::Id("token")).await.unwrap().send_keys("aea_nobody.wrong").await.unwrap();
    b.find(Locator::Css("form.card button")).await.unwrap().click().await.unwrap();
    let notice = b.wait().for_element(Locator::Css("p.notice")).await.unwrap();
    assert!(notice.text().await.unwrap().contains("unknown or revoked"));
    b.find(Locator::Id("token")).await.unwrap().send_keys(&token).await.unwrap();
    browser.screenshot("console-sign-in").await;
    b.find(Locator::Css("form.card button")).await.unwrap().click().await.unwrap();
    b.wait().for_url(&s.url("/ui/").parse().unwrap()).await.unwrap();

    // The fleet: the seeded devices and certificates in the tiles, the table and the charts.
    let tile = |id: &'static str| async move {
        b.find(Locator::Css(&format!("#{id} b"))).await.unwrap().text().await.unwrap()
    };
    // The server's own listener certificate is in the inventory like any other.
    assert_eq!(tile("tile-devices").await, "6", "4 enrolled, the one waiting and the server itself");
    assert_eq!(tile("tile-live").await, "5");
    assert_eq!(tile("tile-pending").await, "1");
    assert_eq!(tile("tile-issued").await, "5", "issued in the last 24 hours");
    let row = b.find(Locator::Css("#by-template tbody tr")).await.unwrap().text().await.unwrap();
    assert!(row.starts_with("Machine") && row.contains('4'), "{row}");
    let weeks = b.find_all(Locator::Css("#expiry g.bar")).await.unwrap();
    assert_eq!(weeks.len(), 53);
    let mut expiring = 0;
    for w in &weeks {
        expiring += w.attr("data-total").await.unwrap().unwrap().parse::<i64>().unwrap();
    }
    assert_eq!(expiring, 5, "every live certificate expires within the year");
    assert_eq!(b.find_all(Locator::Css("#forecast g.bar")).await.unwrap().len(), 90);
    browser.screenshot("console-fleet-phone").await;
    b.set_window_size(1280, 1400).await.unwrap();
    browser.screenshot("console-fleet").await;

    // Approve the pending request.
    b.goto(&s.url("/ui/requests")).await.unwrap();
    // What is asked for is shown before it is approved: the request decoded.
    let subject = b.find(Locator::Css(&format!("#request-{held} dd.csr-subject"))).await.unwrap();
    assert_eq!(subject.text().await.unwrap(), "CN=new-server");
    let form = format!("#request-{held} form[action$='/approve']");
    b.find(Locator::Css(&format!("{form} input[name=confirm]"))).await.unwrap().click().await.unwrap();
    browser.screenshot("console-requests").await;
    b.find(Locator::Css(&format!("{form} button"))).await.unwrap().click().await.unwrap();
    let notice = b.wait().for_element(Locator::Css("p.notice")).await.unwrap();
    assert!(notice.text().await.unwrap().contains("approved"));
    assert!(b.find(Locator::Id("no-requests")).await.is_ok());
    let req = s.ra.requests(RequestStatus::Issued, 10).await.unwrap();
    assert!(req.iter().any(|r| r.id == held && r.serial.is_some()), "request {held} issued: {req:?}");

    // Find the lost laptop, open its certificate, revoke it.
    b.goto(&s.url("/ui/devices?q=LOST")).await.unwrap();
    let rows = b.find_all(Locator::Css("#devices tbody tr")).await.unwrap();
    assert_eq!(rows.len(), 1, "search is case-insensitive and filters");
    b.find(Locator::LinkText("lost-laptop")).await.unwrap().click().await.unwrap();
    b.find(Locator::Css("table.certificates a code")).await.unwrap().click().await.unwrap();
    assert_eq!(b.find(Locator::Id("cert-state")).await.unwrap().text().await.unwrap(), "issued");
    let decoded = b.find(Locator::Id("decoded")).await.unwrap().text().await.unwrap();
    assert!(decoded.contains("clientAuth"), "{decoded}");
    let pem = b.find(Locator::Id("download-pem")).await.unwrap().attr("href").await.unwrap().unwrap();
    assert!(pem.ends_with("/pem"));
    b.find(Locator::Css("select[name=reason] option[value=keyCompromise]")).await.unwrap().click().await.unwrap();
    b.find(Locator::Css("form.action input[name=confirm]")).await.unwrap().click().await.unwrap();
    b.find(Locator::Css("form.action button.danger")).await.unwrap().click().await.unwrap();
    b.wait().for_element(Locator::Css("p.notice")).await.unwrap();
    assert_eq!(b.find(Locator::Id("cert-state")).await.unwrap().text().await.unwrap(), "revoked");
    assert!(b.find(Locator::Id("cert-revoked")).await.unwrap().text().await.unwrap().contains("keyCompromise"));
    browser.screenshot("console-certificate-revoked").await;

    // The audit log, filtered in SQL by who did it.
    b.goto(&s.url("/ui/audit?actor=admin%3Aops")).await.unwrap();
    let log = b.find(Locator::Css("table.audit")).await.unwrap().text().await.unwrap();
    assert!(log.contains("cert.revoke") && log.contains("request.approve"), "{log}");
    assert!(!log.contains("enroller"), "other actors filtered out: {log}");
    browser.screenshot("console-audit").await;
    b.goto(&s.url("/ui/templates/Machine")).await.unwrap();
    let fields = b.find(Locator::Id("template-fields")).await.unwrap().text().await.unwrap();
    for f in ["pend_all", "renewal_grace_secs", "retry_interval_secs", "supersedes"] {
        assert!(fields.contains(f), "{f} shown: {fields}");
    }
    browser.screenshot("console-template").await;
    browser.close().await;

    // The revocation is on the CRL, as openssl reads it.
    let crl = autoenroll_test_support::bin::http_get(&format!("{}/crl", s.http_base)).1;
    let dir = s.dir.path();
    std::fs::write(dir.join("console.crl"), crl).unwrap();
    let out = Command::new("openssl")
        .args(["crl", "-inform", "DER", "-in", "console.crl", "-noout", "-text"])
        .current_dir(dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_uppercase();
    assert!(text.contains(&format!("SERIAL NUMBER: {}", lost.to_ascii_uppercase())), "{lost} on the CRL: {text}");
    assert!(text.contains("KEY COMPROMISE"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_csrf_and_confirmation_hold_against_forged_requests() {
    let s = TestServer::start().await;
    let serial = serial_of(&issue(&s.ra, "victim").await);
    let token = s.ra.create_admin_token("ops").await.unwrap();
    // What a browser gets: a cookie scripts cannot read, sent only to the console over TLS
    // and never on a request started by another site; a CSP on every page.
    let r = curl(&s, &["--data-urlencode", &format!("token={token}"), &s.url("/ui/login")]);
    let set = header(&r, "set-cookie").unwrap();
    for attr in ["__Host-", "HttpOnly", "Secure", "SameSite=Strict", "Path=/;"] {
        assert!(set.contains(attr), "{attr} in {set}");
    }
    let cookie = sign_in(&s, &token);
    let page = curl(&s, &["-b", &cookie, &s.url(&format!("/ui/certificates/{serial}"))]);
    assert_eq!(status(&page), 200, "{page}");
    let csp = header(&page, "content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("form-action 'self'"), "{csp}");
    assert!(!page.contains("<script"), "no script in the console");
    assert_eq!(header(&page, "x-frame-options"), Some("DENY"));
    assert_eq!(header(&page, "x-request-id").map(str::len), Some(16), "every response names its request");
    let csrf = csrf_of(&page);
    let revoke = s.url(&format!("/ui/certificates/{serial}/revoke"));
    let post = |fields: &[&str]| {
        let mut args: Vec<String> = vec!["-b".into(), cookie.clone()];
        for f in fields {
            args.push("--data-urlencode".into());
            args.push(f.to_string());
        }
        args.push(revoke.clone());
        curl(&s, &args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let still_issued = || async { s.ra.certificate(&serial).await.unwrap().state == CertState::Issued };
    // A cross-site form (no CSRF token, or a wrong one) and a form without the confirmation.
    let r = post(&["confirm=yes", "reason=keyCompromise"]);
    assert_eq!(status(&r), 400, "{r}");
    assert!(r.contains("CSRF"), "{r}");
    let r = post(&["csrf=AAAA", "confirm=yes"]);
    assert_eq!(status(&r), 400);
    let r = post(&[&format!("csrf={csrf}"), "reason=keyCompromise"]);
    assert_eq!(status(&r), 400);
    assert!(r.contains("confirmation"), "{r}");
    assert!(still_issued().await, "nothing was revoked");
    // A form posted from another site, even with the right token (the browser says so).
    let r = curl(
        &s,
        &[
            "-b",
            &cookie,
            "-H",
            "Sec-Fetch-Site: cross-site",
            "--data-urlencode",
            &format!("csrf={csrf}"),
            "--data-urlencode",
            "confirm=yes",
            &revoke,
        ],
    );
    assert_eq!(status(&r), 400, "{r}");
    assert!(r.contains("another site"), "{r}");
    let r = curl(&s, &["-H", "Origin: https://evil.example", "--data-urlencode", "token=x", &s.url("/ui/login")]);
    assert_eq!(status(&r), 400, "no signing a victim in from another site: {r}");
    // A second, planted session cookie makes the request anonymous rather than choosing one.
    let (name, _) = cookie.split_once('=').unwrap();
    let r = curl(&s, &["-b", &format!("{cookie}; {name}=planted"), &s.url("/ui/")]);
    assert_eq!((status(&r), header(&r, "location")), (303, Some("/ui/login")));
    assert!(still_issued().await);
    // No session, a forged one (a later expiry under the old MAC), another session's token.
    let anon = curl(&s, &["--data-urlencode", &format!("csrf={csrf}"), "--data-urlencode", "confirm=yes", &revoke]);
    assert_eq!((status(&anon), header(&anon, "location")), (303, Some("/ui/login")));
    let parts: Vec<&str> = cookie.split('.').collect();
    let [id_part, expiry, nonce, mac] = parts[..] else { panic!("cookie {cookie}") };
    let forged = format!("{id_part}.{}.{nonce}.{mac}", expiry.parse::<i64>().unwrap() + 86_400 * 365);
    let r = curl(&s, &["-b", &forged, &s.url("/ui/")]);
    assert_eq!((status(&r), header(&r, "location")), (303, Some("/ui/login")), "forged expiry");
    let other = sign_in(&s, &token);
    let r = curl(
        &s,
        &["-b", &other, "--data-urlencode", &format!("csrf={csrf}"), "--data-urlencode", "confirm=yes", &revoke],
    );
    assert_eq!(status(&r), 400, "a CSRF token belongs to its session");
    assert!(still_issued().await);
    // The real thing works...
    let r = post(&[&format!("csrf={csrf}"), "confirm=yes", "reason=keyCompromise"]);
    assert_eq!(status(&r), 303, "{r}");
    assert!(!still_issued().await);
    // Signing out needs the session's token and clears the cookie.
    let r = curl(&s, &["-b", &cookie, "--data-urlencode", "csrf=wrong", &s.url("/ui/logout")]);
    assert_eq!(status(&r), 400);
    let r = curl(&s, &["-b", &cookie, "--data-urlencode", &format!("csrf={csrf}"), &s.url("/ui/logout")]);
    assert_eq!(status(&r), 303);
    assert!(header(&r, "set-cookie").unwrap().contains("Max-Age=0"), "{r}");
    // ...and revoking the admin token ends its sessions at once.
    s.ra.revoke_admin_token("ops").await.unwrap();
    let r = curl(&s, &["-b", &cookie, &s.url("/ui/")]);
    assert_eq!((status(&r), header(&r, "location")), (303, Some("/ui/login")));
    // Sessions expire (8 hours).
    let token = s.ra.create_admin_token("ops2").await.unwrap();
    let cookie = sign_in(&s, &token);
    assert_eq!(status(&curl(&s, &["-b", &cookie, &s.url("/ui/")])), 200);
    s.clock.advance(autoenroll_server::ra::SESSION_SECS + 1);
    assert_eq!(status(&curl(&s, &["-b", &cookie, &s.url("/ui/")])), 303);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_devices_and_attackers_write_is_shown_escaped() {
    let s = TestServer::start().await;
    // An attacker's WS-TEP request lands in the audit log under the user name it typed.
    let evil = HeaderToken::UsernameToken { username: "<script>alert(1)</script>".into(), password: "x".into() };
    let (code, _) = s.soap(ns::ACTION_WSTEP, &evil, wstep::issue_request_body(b"not a csr", &[]), None).await;
    assert_ne!(code, 200);
    let r = curl(&s, &["--data-urlencode", "token=aea_nobody.wrong", &s.url("/ui/login")]);
    assert_eq!(status(&r), 401, "{r}");
    let token = s.ra.create_admin_token("ops").await.unwrap();
    let cookie = sign_in(&s, &token);
    let page = curl(&s, &["-b", &cookie, &s.url("/ui/audit?action=authenticate")]);
    assert_eq!(status(&page), 200, "{page}");
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{page}");
    assert!(!page.contains("<script>alert"), "{page}");
    // A crafted link cannot put words on the page: notices are fixed texts.
    let page = curl(&s, &["-b", &cookie, &s.url("/ui/?done=%3Cb%3Eyour+CA+was+stolen%3C/b%3E")]);
    assert!(!page.contains("stolen"), "{page}");
    // Bad filter input is a clear refusal, not a 500.
    let r = curl(&s, &["-b", &cookie, &s.url("/ui/audit?outcome=bogus")]);
    assert_eq!(status(&r), 400, "{r}");
    let r = curl(&s, &["-b", &cookie, &s.url("/ui/certificates?expiring_within=soon")]);
    assert_eq!(status(&r), 400, "{r}");
    let r = curl(&s, &["-b", &cookie, &s.url("/ui/certificates/NOPE")]);
    assert_eq!(status(&r), 404, "{r}");
    // Every link of the fleet table leads to a page (the expired column included).
    let fleet = curl(&s, &["-b", &cookie, &s.url("/ui/")]);
    let links: Vec<String> = fleet
        .split("href=\"")
        .skip(1)
        .map(|l| l.split('"').next().unwrap().replace("&amp;", "&"))
        .filter(|l| l.starts_with("/ui/"))
        .collect();
    assert!(links.iter().any(|l| l.contains("expired=yes")), "{links:?}");
    for l in &links {
        let r = curl(&s, &["-b", &cookie, &s.url(l)]);
        assert_eq!(status(&r), 200, "{l}: {r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_action_does_what_it_says() {
    let s = TestServer::start().await;
    let kept = serial_of(&issue(&s.ra, "kept").await);
    let stolen = serial_of(&issue(&s.ra, "stolen").await);
    let token = s.ra.create_admin_token("ops").await.unwrap();
    let cookie = sign_in(&s, &token);
    let csrf = csrf_of(&curl(&s, &["-b", &cookie, &s.url("/ui/")]));
    let act = |path: &str, fields: &[&str]| {
        let mut args: Vec<String> = vec!["-b".into(), cookie.clone()];
        for f in [&format!("csrf={csrf}"), "confirm=yes"].into_iter().chain(fields.iter().copied()) {
            args.push("--data-urlencode".into());
            args.push(f.to_string());
        }
        args.push(s.url(path));
        let r = curl(&s, &args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(status(&r), 303, "{path}: {r}");
        header(&r, "location").unwrap().to_string()
    };
    // Block with revocation, then unblock.
    act("/ui/devices/stolen/block", &["revoke=yes"]);
    let (d, _) = s.ra.device("stolen").await.unwrap();
    assert_eq!(d.state, autoenroll_server::ra::DeviceState::Blocked);
    assert_eq!(s.ra.certificate(&stolen).await.unwrap().state, CertState::Revoked);
    let blocked = curl(&s, &["-b", &cookie, &s.url("/ui/devices?state=blocked")]);
    assert!(blocked.contains(">stolen<") && !blocked.contains(">kept<"), "{blocked}");
    act("/ui/devices/stolen/unblock", &[]);
    assert_eq!(s.ra.device("stolen").await.unwrap().0.state, autoenroll_server::ra::DeviceState::Active);
    // Renew a cohort now: the renewal time moves to now.
    let before = s.ra.certificate(&kept).await.unwrap().renew_after.unwrap();
    let to = act("/ui/certificates/renew-now", &["template=Machine"]);
    assert!(to.ends_with("done=renew-now&n=1"), "{to}");
    let after = s.ra.certificate(&kept).await.unwrap().renew_after.unwrap();
    assert!(after < before && after.0 <= s.now(), "{before} -> {after}");
    // Bump the major version.
    let major = s.ra.template("Machine").await.unwrap().major;
    act("/ui/templates/Machine/bump-major", &[]);
    assert_eq!(s.ra.template("Machine").await.unwrap().major, major + 1);
    let page = curl(&s, &["-b", &cookie, &s.url("/ui/templates/Machine")]);
    assert!(page.contains("template.update"), "version history shows the bump: {page}");
    // Deny a pending request with a reason.
    s.ra.update_template(LOCAL_ADMIN, "Machine", &TemplateSpec { pend_all: Some(true), ..Default::default() })
        .await
        .unwrap();
    let id = pending_request(&s.ra, "unwanted").await;
    act(&format!("/ui/requests/{id}/deny"), &["reason=not ours"]);
    let denied = s.ra.requests(RequestStatus::Denied, 10).await.unwrap();
    assert!(denied.iter().any(|r| r.id == id && r.detail == "not ours"), "{denied:?}");
}
