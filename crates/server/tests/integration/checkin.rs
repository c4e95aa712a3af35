//! Check-in over HTTPS: the device reports what it holds and gets directives computed on the
//! server's view — enroll, current (with its window), renew (cohort moved to now), re-enroll
//! (template bump, lost certificate), remove (superseded), blocked — with token or certificate
//! authentication and clean errors for bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use crate::common;

use autoenroll_agent::https::ClientIdentity;
use autoenroll_keys::{build_csr, cn_name, KeyAlgorithm, KeyPair};
use autoenroll_proto::checkin::{Action, CheckinAnswer, Reason};
use autoenroll_server::ra::{
    thumbprint_of, CertificateFilter, Credentials, DeviceState, EnrollInput, TemplateSpec, TokenSpec,
};
use common::{issued, TestServer};

async fn checkin(
    ts: &TestServer,
    identity: Option<&ClientIdentity>,
    token: Option<&str>,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let client = ts.client(identity);
    let url = ts.url("/checkin");
    let bytes = serde_json::to_vec(&body).unwrap();
    let r = match token {
        Some(t) => client.post_bearer(&url, "application/json", bytes, t).await.unwrap(),
        None => client.post(&url, "application/json", bytes).await.unwrap(),
    };
    (r.status, serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null))
}

fn action(answer: &serde_json::Value, template: &str) -> (Action, Reason) {
    let a: CheckinAnswer = serde_json::from_value(answer.clone()).unwrap();
    let d =
        a.directives.into_iter().find(|d| d.template == template).unwrap_or_else(|| panic!("no {template}: {answer}"));
    (d.action, d.reason)
}

#[tokio::test]
async fn directives_follow_the_servers_view() {
    use autoenroll_server::ra::LOCAL_ADMIN;
    let ts = TestServer::start().await;
    // A bootstrap token pays for one issuance; it does not check in (finding: five check-ins
    // with one unspent token handed out ten SCEP challenges).
    let (token, _) = ts.ra.create_token(&TokenSpec { device: "dev1", template: None, ttl_secs: 3600 }).await.unwrap();
    let (status, a) = checkin(&ts, None, Some(&token), serde_json::json!({ "scep": true })).await;
    assert_eq!((status, a["code"].as_str()), (401, Some("TokenNotAccepted")), "{a}");

    // It enrolls (spending the token) and checks in with its certificate: current, with a window.
    let principal = ts.ra.authenticate(&Credentials::BootstrapToken(token.clone()), None).await.unwrap();
    let key = KeyPair::generate(KeyAlgorithm::P256).unwrap();
    let csr = build_csr(&key, cn_name("dev1").unwrap(), vec![]).unwrap();
    let cert =
        issued(ts.ra.enroll(EnrollInput { principal: &principal, csr_der: &csr, template_name: None }).await.unwrap());
    let identity = ClientIdentity {
        chain: vec![cert.certificate_der.clone(), ts.ra.chain_der()[0].clone()],
        key_pkcs8: key.to_pkcs8_der().unwrap(),
    };
    let holding = serde_json::json!({
        "certificates": [{ "template": "Machine", "thumbprint": thumbprint_of(&cert.certificate_der) }],
        "errors": {}
    });
    let (status, a) = checkin(&ts, Some(&identity), None, holding.clone()).await;
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["device"], "dev1");
    let d: CheckinAnswer = serde_json::from_value(a.clone()).unwrap();
    let m = d.directives.iter().find(|d| d.template == "Machine").unwrap();
    assert_eq!((m.action, m.reason), (Action::Ok, Reason::Current));
    assert!(m.window_start.unwrap() < m.window_end.unwrap());
    assert_eq!(m.serial.as_deref(), Some(cert.serial.as_str()));
    // The server's renewal time (its spread slot) rides along: inside the first half of the window.
    let (start, end, at) = (m.window_start.unwrap(), m.window_end.unwrap(), m.renew_at.unwrap());
    assert!(at >= start && at <= start + (end - start) / 2, "{at} not in the first half of [{start}, {end}]");
    // WebServer is granted to accounts only: a device is not told to enroll it.
    assert!(d.directives.iter().all(|d| d.template != "WebServer"), "{a}");

    // The device lost its certificate (reinstalled): it is told to enroll again.
    let (_, a) = checkin(&ts, Some(&identity), None, serde_json::json!({ "certificates": [] })).await;
    assert_eq!(action(&a, "Machine"), (Action::Enroll, Reason::Lost), "{a}");

    // "Renew now" for its cohort: renew, and the renewal time says now.
    let cohort = CertificateFilter { devices: vec!["dev1".into()], limit: 10, ..Default::default() };
    ts.ra.renew_now(LOCAL_ADMIN, &cohort).await.unwrap();
    let (_, a) = checkin(&ts, Some(&identity), None, holding.clone()).await;
    assert_eq!(action(&a, "Machine"), (Action::Renew, Reason::ServerRequested), "{a}");
    assert_eq!(a["directives"][0]["renew_at"].as_i64(), Some(ts.now()), "{a}");

    // A major bump: renew with the current certificate (not a fresh enrollment).
    let bump = TemplateSpec { major: Some(5), ..Default::default() };
    ts.ra.update_template(LOCAL_ADMIN, "Machine", &bump).await.unwrap();
    let (_, a) = checkin(&ts, Some(&identity), None, holding.clone()).await;
    assert_eq!(action(&a, "Machine"), (Action::Renew, Reason::TemplateBumped), "{a}");

    // A second template Machine holders may enroll; its certificate revoked: enroll anew.
    let vpn = TemplateSpec { grants: Some("holder:Machine".into()), ..Default::default() };
    ts.ra.create_template("Vpn", &vpn).await.unwrap();
    let holder = ts.ra.authenticate(&Credentials::ClientCertificate(cert.certificate_der.clone()), None).await.unwrap();
    let vpn_key = KeyPair::generate(KeyAlgorithm::P256).unwrap();
    let csr = build_csr(&vpn_key, cn_name("dev1").unwrap(), vec![]).unwrap();
    let vpn_cert = issued(
        ts.ra.enroll(EnrollInput { principal: &holder, csr_der: &csr, template_name: Some("Vpn") }).await.unwrap(),
    );
    let both = serde_json::json!({ "certificates": [
        { "template": "Machine", "thumbprint": thumbprint_of(&cert.certificate_der) },
        { "template": "Vpn", "thumbprint": thumbprint_of(&vpn_cert.certificate_der) },
    ] });
    let (_, a) = checkin(&ts, Some(&identity), None, both.clone()).await;
    assert_eq!(action(&a, "Vpn"), (Action::Ok, Reason::Current), "{a}");
    ts.ra.revoke(LOCAL_ADMIN, &vpn_cert.serial, autoenroll_server::ra::RevocationReason::KeyCompromise).await.unwrap();
    let (_, a) = checkin(&ts, Some(&identity), None, both.clone()).await;
    assert_eq!(action(&a, "Vpn"), (Action::Enroll, Reason::Revoked), "{a}");
    // A SCEP device gets no challenge for an EC-only template (SCEP requests are RSA).
    let scep_both = serde_json::json!({ "scep": true, "certificates": both["certificates"] });
    let (_, a) = checkin(&ts, Some(&identity), None, scep_both).await;
    let d: CheckinAnswer = serde_json::from_value(a.clone()).unwrap();
    assert!(d.directives.iter().find(|d| d.template == "Vpn").unwrap().challenge.is_none(), "{a}");

    // A new template supersedes Vpn: remove Vpn, enroll the new one. A SCEP device is handed
    // a one-time challenge for it, a new one each time.
    let vpn2 = TemplateSpec {
        superseded: Some("Vpn".into()),
        grants: Some("holder:Machine".into()),
        key_algorithm: Some("rsa2048".into()),
        ..Default::default()
    };
    ts.ra.create_template("Vpn2", &vpn2).await.unwrap();
    let scep = serde_json::json!({ "scep": true, "certificates": both["certificates"] });
    let (_, a) = checkin(&ts, Some(&identity), None, scep.clone()).await;
    assert_eq!(action(&a, "Vpn"), (Action::Remove, Reason::SupersededBy), "{a}");
    assert_eq!(action(&a, "Vpn2"), (Action::Enroll, Reason::Superseded), "{a}");
    let challenge = |a: &serde_json::Value| {
        let d: CheckinAnswer = serde_json::from_value(a.clone()).unwrap();
        d.directives.iter().find(|d| d.template == "Vpn2").unwrap().challenge.clone().expect("a challenge")
    };
    let first = challenge(&a);
    assert!(first.len() == 41 && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-'), "{first}");
    let (_, a) = checkin(&ts, Some(&identity), None, scep.clone()).await;
    let second = challenge(&a);
    assert_ne!(second, first);
    // (Only the latest can be spent: scep.rs `a_new_challenge_ends_the_earlier_one`.)

    // Reported errors are kept; a blocked device is told so and gets nothing to do.
    ts.ra.set_device_state(LOCAL_ADMIN, "dev1", DeviceState::Blocked).await.unwrap();
    let (_, a) = checkin(&ts, Some(&identity), None, serde_json::json!({ "errors": { "Vpn2": "disk full" } })).await;
    assert_eq!(a["blocked"], true);
    assert!(a["directives"].as_array().unwrap().is_empty());
    let events =
        ts.ra.audit_events(&autoenroll_server::ra::AuditFilter { limit: 5, ..Default::default() }).await.unwrap();
    assert!(events.iter().any(|e| e.action == "checkin"
        && e.outcome == autoenroll_core::model::AuditOutcome::Refused
        && e.detail == "DeviceBlocked"));
}

#[tokio::test]
async fn bad_check_ins_are_refused_cleanly() {
    let ts = TestServer::start().await;
    let (status, a) = checkin(&ts, None, None, serde_json::json!({})).await;
    assert_eq!((status, a["code"].as_str()), (401, Some("MissingToken")));
    let (status, a) = checkin(&ts, None, Some("aet_nope.nope"), serde_json::json!({})).await;
    assert_eq!((status, a["code"].as_str()), (401, Some("WrongCredentials")));
    let (token, _) = ts.ra.create_token(&TokenSpec { device: "dev2", template: None, ttl_secs: 3600 }).await.unwrap();
    let r = ts
        .client(None)
        .post_bearer(&ts.url("/checkin"), "application/json", b"{not json".to_vec(), &token)
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("BadJson"));
    let huge = vec![b' '; 300 * 1024];
    let r = ts.client(None).post_bearer(&ts.url("/checkin"), "application/json", huge, &token).await.unwrap();
    assert_eq!(r.status, 413);
    let many: Vec<serde_json::Value> =
        (0..1001).map(|i| serde_json::json!({ "template": "Machine", "thumbprint": format!("{i:040x}") })).collect();
    let (status, a) = checkin(&ts, None, Some(&token), serde_json::json!({ "certificates": many })).await;
    assert_eq!((status, a["code"].as_str()), (400, Some("TooLarge")));
}

/// Issue 14, finding 7: each check-in could store ~250 KB of errors under invented template
/// names (three check-ins: 1,400 rows). Errors are kept only for templates that are the
/// device's, one short line each.
#[tokio::test]
async fn attack_check_in_errors_cannot_grow_the_inventory() {
    let ts = TestServer::start().await;
    let (token, _) = ts.ra.create_token(&TokenSpec { device: "dev-e", template: None, ttl_secs: 3600 }).await.unwrap();
    let principal = ts.ra.authenticate(&Credentials::BootstrapToken(token), None).await.unwrap();
    let key = KeyPair::generate(KeyAlgorithm::P256).unwrap();
    let csr = build_csr(&key, cn_name("dev-e").unwrap(), vec![]).unwrap();
    let cert =
        issued(ts.ra.enroll(EnrollInput { principal: &principal, csr_der: &csr, template_name: None }).await.unwrap());
    let identity = ClientIdentity {
        chain: vec![cert.certificate_der.clone(), ts.ra.chain_der()[0].clone()],
        key_pkcs8: key.to_pkcs8_der().unwrap(),
    };
    for round in 0..3 {
        let mut errors = serde_json::Map::new();
        for i in 0..400 {
            errors.insert(format!("Invented{round}x{i}"), serde_json::Value::String("x".repeat(600)));
        }
        errors.insert("Machine".into(), serde_json::Value::String(format!("disk full {round} {}", "y".repeat(900))));
        let (status, a) = checkin(&ts, Some(&identity), None, serde_json::json!({ "errors": errors })).await;
        assert_eq!(status, 200, "{a}");
    }
    let attributes = ts.ra.device_attributes("dev-e").await.unwrap();
    let errors: Vec<&(String, String)> = attributes.iter().filter(|(n, _)| n.starts_with("error:")).collect();
    assert_eq!(
        errors.len(),
        1,
        "only the device's own template: {:?}",
        errors.iter().map(|e| &e.0).collect::<Vec<_>>()
    );
    assert_eq!(errors[0].0, "error:Machine");
    assert!(errors[0].1.starts_with("disk full 2") && errors[0].1.chars().count() == 500);
}
