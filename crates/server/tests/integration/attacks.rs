//! The attack suite of issue 12: each finding as an attacker reproduced it against a running
//! server (real HTTPS on loopback), now refused with its own code. Elsewhere: the SCEP findings
//! in scep.rs (`attack_*`), the MDM template hint in mdm.rs, the admin API actor in
//! admin_api.rs, and the MITM with real processes and leaf-only client certificates (curl,
//! Python) in crates/cli/tests/attacks.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use crate::common;

use autoenroll_core::model::CertState;
use autoenroll_core::pki::CertFacts;
use autoenroll_keys::{build_renewal_csr, cn_name, sign_cms, KeyAlgorithm, KeyPair};
use autoenroll_proto::soap::HeaderToken;
use autoenroll_proto::{ns, wstep, xcep};
use autoenroll_server::ra::{AccountSpec, RevocationReason, TemplateSpec, TokenSpec, LOCAL_ADMIN};
use common::*;
use std::net::IpAddr;

fn key() -> KeyPair {
    KeyPair::generate(KeyAlgorithm::P256).unwrap()
}

fn login(name: &str) -> HeaderToken {
    HeaderToken::UsernameToken { username: name.into(), password: PASSWORD.into() }
}

async fn account(s: &TestServer, name: &'static str, templates: &[&str], devices: &[&str]) -> HeaderToken {
    let spec = AccountSpec {
        name,
        password: PASSWORD,
        templates: templates.iter().map(|t| t.to_string()).collect(),
        devices: devices.iter().map(|d| d.to_string()).collect(),
        ..Default::default()
    };
    s.ra.create_account(&spec).await.unwrap();
    login(name)
}

/// Enrolls over WS-TEP; the certificate, or the fault subcode.
async fn enroll(s: &TestServer, who: &HeaderToken, csr: &[u8], device: &str) -> Result<Vec<u8>, String> {
    let r = wstep_issue(s, who, csr, &[("DeviceName", device)], None).await?;
    Ok(r.certificate_der.expect("issued at once"))
}

/// A renewal signed with the old key, asking for these names; the certificate or the subcode.
async fn renew_signed(
    s: &TestServer,
    old: &[u8],
    old_key: &KeyPair,
    new_key: &KeyPair,
    cn: &str,
    dns: &[&str],
) -> Result<Vec<u8>, String> {
    renew_signed_as(s, old, old_key, new_key, (cn, dns), true).await
}

fn serial(cert: &[u8]) -> String {
    CertFacts::parse(cert).unwrap().serial.0
}

async fn state(s: &TestServer, serial: &str) -> (CertState, Option<RevocationReason>) {
    let all = autoenroll_server::ra::CertificateFilter { limit: 1000, ..Default::default() };
    let c = s.ra.certificates_matching(&all).await.unwrap().into_iter().find(|c| c.serial == serial).unwrap();
    (c.state, c.revocation_reason)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Finding 1: an account restricted to Machine got a Machine certificate, then over client TLS
/// enrolled WebServer for `localhost`, `www.bank.example`, `127.0.0.1`, and a MITM with it
/// collected an agent's password. Now a certificate enrolls only what grants name its holders,
/// WebServer is for accounts, and no template issues the server's own names or loopback.
#[tokio::test]
async fn finding_1_a_device_cannot_obtain_a_server_certificate_for_any_name() {
    let s = TestServer::start_with(|c| c.hostnames = Some(vec!["ca.corp.example".into(), "localhost".into()])).await;
    let machine_only = account(&s, "machine-only", &["Machine"], &[]).await;
    let k = key();
    let machine = enroll(&s, &machine_only, &csr_with(&k, "dev-m1", &[], &[], None), "dev-m1").await.unwrap();
    let tls = identity_of(&s.ra, &machine, &k);
    let evil = csr_with(&key(), "localhost", &["localhost", "www.bank.example"], &[ip("127.0.0.1")], Some("WebServer"));
    let over_tls = wstep_issue(&s, &HeaderToken::None, &evil, &[], Some(&tls)).await;
    assert_eq!(over_tls.unwrap_err(), "ae:NotPermitted", "a Machine certificate may not enroll WebServer");
    // Its policy does not even list WebServer.
    let (_, env) = s.soap(ns::ACTION_GET_POLICIES, &HeaderToken::None, xcep::request_body(None), Some(&tls)).await;
    let names: Vec<String> =
        xcep::parse_response(&env.body).unwrap().policies.into_iter().map(|p| p.common_name).collect();
    assert!(!names.contains(&"WebServer".to_string()), "{names:?}");
    // A bootstrap token (made without a template) may not either.
    let (token, _) = s.ra.create_token(&TokenSpec { device: "kiosk", template: None, ttl_secs: 600 }).await.unwrap();
    let by_token = wstep_issue(&s, &token_header(&token), &evil, &[], None).await;
    assert_eq!(by_token.unwrap_err(), "ae:NotPermitted");

    // An account allowed WebServer still gets no server name, loopback, wildcard or foreign name.
    let suffixes = TemplateSpec { dns_suffixes: Some("corp.example".into()), ..Default::default() };
    s.ra.update_template(LOCAL_ADMIN, "WebServer", &suffixes).await.unwrap();
    let ops = account(&s, "ops", &[], &[]).await;
    let web = |cn: &str, dns: &[&str], ips: &[IpAddr]| csr_with(&key(), cn, dns, ips, Some("WebServer"));
    for (csr, code) in [
        (web("localhost", &[], &[]), "ae:ServerNameReserved"),
        (web("web1.corp.example", &["localhost"], &[]), "ae:ServerNameReserved"),
        (web("web1.corp.example", &[], &[ip("127.0.0.1")]), "ae:ServerNameReserved"),
        (web("web1.corp.example", &[], &[ip("::1")]), "ae:ServerNameReserved"),
        (web("ca.corp.example", &[], &[]), "ae:ServerNameReserved"),
        (web("web1.corp.example", &["*.corp.example"], &[]), "ae:ServerNameReserved"),
        (web("web1.corp.example", &["*.dev.corp.example"], &[]), "ae:WildcardNotAllowed"),
        (web("web1.corp.example", &["www.bank.example"], &[]), "ae:NameNotAllowed"),
        (web("www.bank.example", &[], &[]), "ae:NameNotAllowed"),
        (web("web1.corp.example", &[], &[ip("10.1.2.3")]), "ae:NameNotAllowed"),
        (web(&format!("{}.corp.example", "a".repeat(60)), &[], &[]), "ae:CommonNameTooLong"),
    ] {
        assert_eq!(enroll(&s, &ops, &csr, "web1").await.unwrap_err(), code);
    }
    let cert = enroll(&s, &ops, &web("web1.corp.example", &["web1.corp.example"], &[]), "web1").await.unwrap();
    assert_eq!(CertFacts::parse(&cert).unwrap().dns_names, ["web1.corp.example"]);
}

/// Finding 2: a certificate of a `--pend-all` template for web01.example.test was renewed with
/// its old key into `CN=login.bank.example` with `*.bank.example`, issued at once. Renewal now
/// keeps the names that were approved; a name change is a new (held) enrollment.
#[tokio::test]
async fn finding_2_renewal_keeps_the_approved_names() {
    let s = TestServer::start().await;
    let spec = TemplateSpec {
        pend_all: Some(true),
        subject_from: Some("request".into()),
        allow_san: Some(true),
        dns_suffixes: Some("example.test".into()),
        ext_key_usage: Some("serverAuth".into()),
        validity_secs: Some(100 * 86_400),
        renewal_secs: Some(20 * 86_400),
        ..Default::default()
    };
    s.ra.create_template("HeldWeb", &spec).await.unwrap();
    let ops = account(&s, "ops", &[], &[]).await;
    let k = key();
    let csr = csr_with(&k, "web01.example.test", &["web01.example.test"], &[], Some("HeldWeb"));
    let r = wstep_issue(&s, &ops, &csr, &[("DeviceName", "web01")], None).await.unwrap();
    let id = r.request_id.unwrap();
    assert!(r.certificate_der.is_none(), "held for approval");
    let old = s.ra.approve(LOCAL_ADMIN, id.parse().unwrap()).await.unwrap().certificate_der;
    s.clock.advance(85 * 86_400);
    let evil = key();
    let renewed = renew_signed(&s, &old, &k, &evil, "login.bank.example", &["login.bank.example", "*.bank.example"])
        .await
        .unwrap();
    let f = CertFacts::parse(&renewed).unwrap();
    assert_eq!(f.subject_cn.as_deref(), Some("web01.example.test"), "the approved subject");
    assert_eq!(f.dns_names, ["web01.example.test"], "the approved names, nothing added");
    assert_eq!(f.spki_der, evil.spki_der(), "the new key");
}

/// Finding 3 (WS-TEP half; SCEP in scep.rs): the same old certificate renewed 4 times gave 4
/// valid certificates. One certificate has one live successor.
#[tokio::test]
async fn finding_3_one_certificate_has_one_live_successor() {
    let s = TestServer::start().await;
    let ops = account(&s, "ops", &[], &[]).await;
    let k = key();
    let old = enroll(&s, &ops, &csr_with(&k, "dev3", &[], &[], None), "dev3").await.unwrap();
    s.clock.advance(330 * 86_400);
    // The same request again (an answer lost on the way): the same certificate.
    let k1 = key();
    let first = renew_signed(&s, &old, &k, &k1, "dev3", &[]).await.unwrap();
    assert_eq!(renew_signed(&s, &old, &k, &k1, "dev3", &[]).await.unwrap(), first);
    // Three more, each with a new key: each replaces a successor that was never used.
    let mut successors = vec![serial(&first)];
    let mut last = (first, k1);
    for _ in 0..3 {
        let kn = key();
        let next = renew_signed(&s, &old, &k, &kn, "dev3", &[]).await.unwrap();
        successors.push(serial(&next));
        last = (next, kn);
    }
    let mut live = 0;
    for sn in &successors {
        match state(&s, sn).await {
            (CertState::Issued, None) => live += 1,
            (CertState::Revoked, Some(RevocationReason::Superseded)) => {}
            other => panic!("{sn}: {other:?}"),
        }
    }
    assert_eq!(live, 1, "one live successor of four renewals");
    assert_eq!(state(&s, successors.last().unwrap()).await.0, CertState::Issued, "the newest one");
    // Once the successor is in use (here: it authenticates a policy request), the old one is
    // revoked as superseded and renews nothing more.
    let tls = identity_of(&s.ra, &last.0, &last.1);
    let (status, _) = s.soap(ns::ACTION_GET_POLICIES, &HeaderToken::None, xcep::request_body(None), Some(&tls)).await;
    assert_eq!(status, 200);
    assert_eq!(state(&s, &serial(&old)).await, (CertState::Revoked, Some(RevocationReason::Superseded)));
    assert_eq!(renew_signed(&s, &old, &k, &key(), "dev3", &[]).await.unwrap_err(), "ae:CertificateRevoked");
}

/// Finding 4: after `device block --revoke`, the device's older, renewed-away certificates
/// (keys still in the agent's archive) stayed good and off the CRL.
#[tokio::test]
async fn finding_4_block_revokes_every_certificate_of_the_device() {
    let s = TestServer::start().await;
    let ops = account(&s, "ops", &[], &[]).await;
    let k = key();
    let old = enroll(&s, &ops, &csr_with(&k, "dev4", &[], &[], None), "dev4").await.unwrap();
    s.clock.advance(330 * 86_400);
    let new = renew_signed(&s, &old, &k, &key(), "dev4", &[]).await.unwrap();
    assert_eq!(state(&s, &serial(&old)).await.0, CertState::Renewed);
    assert_eq!(s.ra.block_and_revoke(LOCAL_ADMIN, "dev4", RevocationReason::KeyCompromise).await.unwrap(), 2);
    let crl = s.client(None).get(&s.url("/crl")).await.unwrap().body;
    let crl = <x509_cert::crl::CertificateList as der::Decode>::from_der(&crl).unwrap();
    let listed: Vec<String> = crl
        .tbs_cert_list
        .revoked_certificates
        .unwrap_or_default()
        .iter()
        .map(|r| hex::encode_upper(r.serial_number.as_bytes()))
        .collect();
    for c in [&old, &new] {
        let sn = serial(c);
        assert!(listed.iter().any(|l| l.eq_ignore_ascii_case(&sn)), "{sn} not on the CRL: {listed:?}");
        assert_eq!(state(&s, &sn).await, (CertState::Revoked, Some(RevocationReason::KeyCompromise)));
    }
}

/// Finding 5: an account (even template-restricted) could name any DeviceName, including an
/// existing device's. Devices are bound to whoever enrolled them first; accounts name the
/// devices they may act for.
#[tokio::test]
async fn finding_5_device_names_are_bound_to_their_owner() {
    let s = TestServer::start().await;
    let team_a = account(&s, "team-a", &[], &[]).await;
    let team_b = account(&s, "team-b", &["Machine"], &[]).await;
    let web_ops = account(&s, "web-ops", &[], &["web-*"]).await;
    enroll(&s, &team_a, &csr_with(&key(), "devA", &[], &[], None), "devA").await.unwrap();
    let claim = csr_with(&key(), "devA", &[], &[], None);
    assert_eq!(enroll(&s, &team_b, &claim, "devA").await.unwrap_err(), "ae:DeviceBound");
    assert_eq!(enroll(&s, &web_ops, &claim, "devA").await.unwrap_err(), "ae:DeviceNotAllowed");
    assert_eq!(
        enroll(&s, &web_ops, &csr_with(&key(), "db-1", &[], &[], None), "db-1").await.unwrap_err(),
        "ae:DeviceNotAllowed"
    );
    enroll(&s, &web_ops, &csr_with(&key(), "web-1", &[], &[], None), "web-1").await.unwrap();
    // An administrator moves devA to team-b: now team-b may, team-a may not.
    s.ra.rebind_device(LOCAL_ADMIN, "devA", Some("account:team-b")).await.unwrap();
    enroll(&s, &team_b, &claim, "devA").await.unwrap();
    assert_eq!(enroll(&s, &team_a, &claim, "devA").await.unwrap_err(), "ae:DeviceBound");
    assert!(s.ra.rebind_device(LOCAL_ADMIN, "devA", Some("account:nobody")).await.is_err(), "unknown owner");
}

/// A device bound to one account, asked for under another spelling (case, a trailing dot):
/// DNS compares those names equal, so a new device under that spelling would be a certificate
/// for the bound one. Found while reviewing EST (the device name comes from the CSR there).
#[tokio::test]
async fn another_spelling_of_a_bound_device_is_the_same_device() {
    let s = TestServer::start().await;
    let team_a = account(&s, "team-a", &[], &["*.x.test"]).await;
    let team_b = account(&s, "team-b", &[], &["*.x.test"]).await;
    enroll(&s, &team_a, &csr_with(&key(), "router1.x.test", &[], &[], None), "router1.x.test").await.unwrap();
    // An account that may name any device (`*`) gets past its patterns with a trailing dot.
    let anyone = account(&s, "anyone", &[], &["*"]).await;
    for (who, spelling) in [
        (&team_b, "ROUTER1.x.test"),
        (&team_b, "Router1.X.Test"),
        (&anyone, "router1.x.test."),
        (&anyone, "ROUTER1.X.TEST"),
    ] {
        let claim = csr_with(&key(), spelling.trim_end_matches('.'), &[], &[], None);
        let r = enroll(&s, who, &claim, spelling).await;
        assert_eq!(r.unwrap_err(), "ae:DeviceNameTaken", "{spelling}");
    }
    // Its owner, under another spelling too: the device keeps one name.
    let claim = csr_with(&key(), "ROUTER1.x.test", &[], &[], None);
    assert_eq!(enroll(&s, &team_a, &claim, "ROUTER1.x.test").await.unwrap_err(), "ae:DeviceNameTaken");
    // The exact name still works for its owner; another name is another device.
    enroll(&s, &team_a, &csr_with(&key(), "router1.x.test", &[], &[], None), "router1.x.test").await.unwrap();
    enroll(&s, &team_b, &csr_with(&key(), "router2.x.test", &[], &[], None), "router2.x.test").await.unwrap();
}

/// Finding 6: `/checkin` accepted an unspent bootstrap token and handed out fresh SCEP
/// challenges on every call; the token still paid for an issuance after.
#[tokio::test]
async fn finding_6_a_bootstrap_token_pays_for_one_issuance_and_nothing_else() {
    let s = TestServer::start().await;
    let (token, _) = s.ra.create_token(&TokenSpec { device: "kiosk6", template: None, ttl_secs: 600 }).await.unwrap();
    for _ in 0..5 {
        let r = s
            .client(None)
            .post_bearer(&s.url("/checkin"), "application/json", br#"{"scep": true}"#.to_vec(), &token)
            .await
            .unwrap();
        assert_eq!(r.status, 401);
        assert!(String::from_utf8_lossy(&r.body).contains("TokenNotAccepted"));
    }
    let filter = autoenroll_server::ra::AuditFilter { limit: 100, ..Default::default() };
    let events = s.ra.audit_events(&filter).await.unwrap();
    assert!(!events.iter().any(|e| e.action == "challenge.create"), "no challenge was made");
    let k = key();
    let cert = enroll(&s, &token_header(&token), &csr_with(&k, "kiosk6", &[], &[], None), "").await.unwrap();
    let again = enroll(&s, &token_header(&token), &csr_with(&key(), "kiosk6", &[], &[], None), "").await;
    assert_eq!(again.unwrap_err(), "ae:TokenUsed");
    // The device checks in with what the token bought.
    let r = s
        .client(Some(&identity_of(&s.ra, &cert, &k)))
        .post(&s.url("/checkin"), "application/json", b"{}".to_vec())
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

/// Finding 7: QueryTokenStatus needed no credentials and request IDs are sequential: IDs 1..40
/// returned every certificate. Only the requester learns a request's outcome.
#[tokio::test]
async fn finding_7_request_status_is_told_to_the_requester_only() {
    let s = TestServer::start().await;
    let spec = TemplateSpec { pend_all: Some(true), ..Default::default() };
    s.ra.create_template("Held", &spec).await.unwrap();
    let ops = account(&s, "ops", &[], &[]).await;
    let other = account(&s, "other", &[], &[]).await;
    let mut ids = Vec::new();
    for d in ["h1", "h2", "h3"] {
        let csr = csr_with(&key(), d, &[], &[], Some("Held"));
        let id = wstep_issue(&s, &ops, &csr, &[("DeviceName", d)], None).await.unwrap().request_id.unwrap();
        s.ra.approve(LOCAL_ADMIN, id.parse().unwrap()).await.unwrap();
        ids.push(id);
    }
    for id in 1..=40 {
        let query = || wstep::query_request_body(&id.to_string());
        let (status, env) = s.soap(ns::ACTION_WSTEP, &HeaderToken::None, query(), None).await;
        assert_eq!(subcode(status, &env), "ae:MissingToken", "anonymous, request {id}");
        let (status, env) = s.soap(ns::ACTION_WSTEP, &other, query(), None).await;
        assert_eq!(subcode(status, &env), "ae:UnknownRequest", "another account, request {id}");
    }
    for id in &ids {
        let (status, env) = s.soap(ns::ACTION_WSTEP, &ops, wstep::query_request_body(id), None).await;
        assert_eq!(status, 200);
        assert!(wstep::parse_response(&env.body).unwrap().certificate_der.is_some(), "the requester collects it");
    }
    // A token-paid request is collected with that (spent) token.
    let (token, _) =
        s.ra.create_token(&TokenSpec { device: "h4", template: Some("Held"), ttl_secs: 600 }).await.unwrap();
    let r = wstep_issue(&s, &token_header(&token), &csr_with(&key(), "h4", &[], &[], None), &[], None).await.unwrap();
    let id = r.request_id.unwrap();
    s.ra.approve(LOCAL_ADMIN, id.parse().unwrap()).await.unwrap();
    let (status, env) = s.soap(ns::ACTION_WSTEP, &token_header(&token), wstep::query_request_body(&id), None).await;
    assert_eq!(status, 200, "{:?}", autoenroll_proto::soap::parse_fault(&env));
    let (status, env) = s.soap(ns::ACTION_WSTEP, &ops, wstep::query_request_body(&id), None).await;
    assert_eq!(subcode(status, &env), "ae:UnknownRequest");
}

/// Finding 8: device names with newlines, bidi characters or 5,000 characters were accepted,
/// and template names like `../evil` or `Web Server` too.
#[tokio::test]
async fn finding_8_device_and_template_names_are_checked() {
    let s = TestServer::start().await;
    let ops = account(&s, "ops", &[], &[]).await;
    let long = "d".repeat(5000);
    for bad in ["dev\nINJECTED line", "dev\u{202E}txt.exe", long.as_str(), "../etc", ""] {
        let r = enroll(&s, &ops, &csr_with(&key(), "x", &[], &[], None), bad).await;
        if bad.is_empty() {
            r.unwrap(); // no DeviceName: the account's own name
            continue;
        }
        assert_eq!(r.unwrap_err(), "ae:BadDeviceName", "{bad:?}");
        assert!(s.ra.create_token(&TokenSpec { device: bad, template: None, ttl_secs: 60 }).await.is_err(), "{bad:?}");
        let challenge = autoenroll_server::ra::ChallengeSpec {
            device: bad.into(),
            template: "Machine".into(),
            ttl_secs: 60,
            ..Default::default()
        };
        assert!(s.ra.create_challenge(LOCAL_ADMIN, &challenge).await.is_err(), "{bad:?}");
    }
    for bad in ["../evil", "Web Server", "a/b", "x".repeat(65).as_str(), "tab\tname"] {
        let e = s.ra.create_template(bad, &TemplateSpec::default()).await.unwrap_err();
        assert_eq!(e.code(), "InvalidTemplate", "{bad:?}");
    }
    // A CN over the RFC 5280 limit of 64 characters: device names stop at 64 (Machine builds
    // its subject from the device name), request-supplied names too.
    let cn = "c".repeat(65);
    let r = enroll(&s, &ops, &csr_with(&key(), "x", &[], &[], None), &cn).await;
    assert_eq!(r.unwrap_err(), "ae:BadDeviceName");
    enroll(&s, &ops, &csr_with(&key(), "x", &[], &[], None), &cn[..64]).await.unwrap();
    let web = csr_with(&key(), &cn, &[], &[], Some("WebServer"));
    assert_eq!(enroll(&s, &ops, &web, "web-cn").await.unwrap_err(), "ae:CommonNameTooLong");
}

/// Finding 9 (keys): the template's key algorithm was not enforced, and an RSA-1024 CSR was
/// refused as BadCsrSignature instead of KeyTooWeak.
#[tokio::test]
async fn finding_9_the_template_key_policy_is_enforced() {
    autoenroll_test_support::require_tool("openssl", "openssl");
    let s = TestServer::start().await;
    s.ra.create_template("EcOnly", &TemplateSpec::default()).await.unwrap();
    let ops = account(&s, "ops", &[], &[]).await;
    let rsa = KeyPair::generate(KeyAlgorithm::Rsa(2048)).unwrap();
    let r = enroll(&s, &ops, &csr_with(&rsa, "dev9", &[], &[], Some("EcOnly")), "dev9").await;
    assert_eq!(r.unwrap_err(), "ae:KeyTypeNotAllowed");
    // RSA-1024, made by openssl.
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("openssl")
        .args(["req", "-new", "-newkey", "rsa:1024", "-nodes", "-subj", "/CN=dev9", "-outform", "DER", "-keyout"])
        .arg(dir.path().join("k.pem"))
        .arg("-out")
        .arg(dir.path().join("r.der"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let weak = std::fs::read(dir.path().join("r.der")).unwrap();
    assert_eq!(enroll(&s, &ops, &weak, "dev9").await.unwrap_err(), "ae:KeyTooWeak");
}

/// An account may name any device (`--devices` defaults to `*`), so the device's name is only
/// as good as whoever vouches for it: an account's `*` vouches for nothing (its devices' names
/// go into server certificates only under the template's DNS suffixes); an explicit pattern
/// vouches for the names it matches.
#[tokio::test]
async fn an_account_vouches_only_for_names_its_patterns_name() {
    let s = TestServer::start().await;
    let anyone = account(&s, "anyone", &[], &[]).await;
    let web = |cn: &str| csr_with(&key(), cn, &[cn], &[], Some("WebServer"));
    let r = enroll(&s, &anyone, &web("www.bank.example"), "www.bank.example").await;
    assert_eq!(r.unwrap_err(), "ae:NameNotAllowed", "naming the device after a bank buys nothing");
    // Machine (client authentication only) still enrolls any device it may name.
    enroll(&s, &anyone, &csr_with(&key(), "x", &[], &[], None), "laptop-7").await.unwrap();
    let web_ops = account(&s, "web-ops", &[], &["*.corp.example"]).await;
    enroll(&s, &web_ops, &web("web1.corp.example"), "web1.corp.example").await.unwrap();
    let r = enroll(&s, &web_ops, &web("www.bank.example"), "web1.corp.example").await;
    assert_eq!(r.unwrap_err(), "ae:NameNotAllowed");
}

/// A name that CN matching could read differently: a BMPString CN is decoded as UTF-16 (it
/// used to read as `l\0o\0c...` and slip past the checks), a second CN or a NUL is refused.
#[tokio::test]
async fn common_names_are_read_as_encoded_and_only_one_is_taken() {
    use der::{Decode, Encode};
    let s = TestServer::start().await;
    let ops = account(&s, "ops", &[], &["web1"]).await;
    // DER by hand (x509-cert builds names from strings only): SET { SEQUENCE { CN, value } }.
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        assert!(content.len() < 128);
        [&[tag, content.len() as u8][..], content].concat()
    }
    let cn = |tag: der::Tag, bytes: Vec<u8>| {
        let oid = autoenroll_core::oids::AT_COMMON_NAME.to_der().unwrap();
        let value = der::Any::new(tag, bytes).unwrap().to_der().unwrap();
        tlv(0x31, &tlv(0x30, &[oid, value].concat()))
    };
    let utf16 = |s: &str| s.encode_utf16().flat_map(u16::to_be_bytes).collect::<Vec<u8>>();
    let csr_named = |rdns: Vec<Vec<u8>>| {
        let name = x509_cert::name::Name::from_der(&tlv(0x30, &rdns.concat())).unwrap();
        autoenroll_keys::build_csr(&key(), name, vec![template_ext("WebServer")]).unwrap()
    };
    let bmp_localhost = csr_named(vec![cn(der::Tag::BmpString, utf16("localhost"))]);
    assert_eq!(enroll(&s, &ops, &bmp_localhost, "web1").await.unwrap_err(), "ae:ServerNameReserved");
    let two =
        csr_named(vec![cn(der::Tag::Utf8String, b"web1".to_vec()), cn(der::Tag::Utf8String, b"localhost".to_vec())]);
    assert_eq!(enroll(&s, &ops, &two, "web1").await.unwrap_err(), "ae:BadSubject");
    let nul = csr_named(vec![cn(der::Tag::Utf8String, b"web1\0.bank.example".to_vec())]);
    assert_eq!(enroll(&s, &ops, &nul, "web1").await.unwrap_err(), "ae:BadSubject");
    let fine = csr_named(vec![cn(der::Tag::BmpString, utf16("web1"))]);
    enroll(&s, &ops, &fine, "web1").await.unwrap();
}

/// A refused request leaves no device behind (the name is not taken by a request that failed
/// its key or name checks), and approval checks again: a device blocked while its request
/// waited gets nothing, and the request is denied.
#[tokio::test]
async fn refusals_leave_nothing_and_approval_checks_again() {
    let s = TestServer::start().await;
    s.ra.create_template("EcOnly", &TemplateSpec::default()).await.unwrap();
    let ops = account(&s, "ops", &[], &[]).await;
    let rsa = KeyPair::generate(KeyAlgorithm::Rsa(2048)).unwrap();
    let r = enroll(&s, &ops, &csr_with(&rsa, "x", &[], &[], Some("EcOnly")), "ghost").await;
    assert_eq!(r.unwrap_err(), "ae:KeyTypeNotAllowed");
    assert!(s.ra.device("ghost").await.is_err(), "no device recorded for a refused request");
    // Another account may still have the name: nothing was bound.
    let other = account(&s, "other", &[], &[]).await;
    enroll(&s, &other, &csr_with(&key(), "x", &[], &[], Some("EcOnly")), "ghost").await.unwrap();

    let held = TemplateSpec { pend_all: Some(true), ..Default::default() };
    s.ra.create_template("Held", &held).await.unwrap();
    let csr = csr_with(&key(), "x", &[], &[], Some("Held"));
    let r = wstep_issue(&s, &ops, &csr, &[("DeviceName", "late")], None).await.unwrap();
    let id: i64 = r.request_id.unwrap().parse().unwrap();
    s.ra.set_device_state(LOCAL_ADMIN, "late", autoenroll_server::ra::DeviceState::Blocked).await.unwrap();
    let e = s.ra.approve(LOCAL_ADMIN, id).await.unwrap_err();
    assert_eq!(e.code(), "DeviceBlocked");
    let (status, env) = s.soap(ns::ACTION_WSTEP, &ops, wstep::query_request_body(&id.to_string()), None).await;
    assert_eq!(subcode(status, &env), "ae:RequestDenied", "the request is denied, not left half-approved");
}

/// The names a running server answers to are reserved in every process on its database (the
/// CLI approving a request opens its own RA).
#[tokio::test]
async fn the_servers_names_are_reserved_in_every_process() {
    let s = TestServer::start_with(|c| c.hostnames = Some(vec!["ca.corp.example".into()])).await;
    let cli = autoenroll_server::config::RawConfig { data_dir: Some(s.dir.path().join("data")), ..Default::default() }
        .validate()
        .unwrap();
    let other = autoenroll_server::Ra::open(cli.ra.clone(), s.ra.clock()).await.unwrap();
    other
        .create_account(&AccountSpec {
            name: "ops",
            password: PASSWORD,
            devices: vec!["*.corp.example".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let principal = other
        .authenticate(
            &autoenroll_server::ra::Credentials::Password {
                username: "ops".into(),
                password: PASSWORD.into(),
                client: None,
            },
            Some("ca.corp.example"),
        )
        .await
        .unwrap();
    let csr = csr_with(&key(), "ca.corp.example", &[], &[], Some("WebServer"));
    let input = autoenroll_server::ra::EnrollInput { principal: &principal, csr_der: &csr, template_name: None };
    let Err(e) = other.enroll(input).await else { panic!("issued a certificate for the server's own name") };
    assert_eq!(e.code(), "ServerNameReserved");
}

/// A successor an administrator revoked ends the line: the certificate it renewed cannot be
/// renewed again into a fresh one (it would undo the revocation).
#[tokio::test]
async fn a_revoked_successor_ends_the_line() {
    let s = TestServer::start().await;
    let ops = account(&s, "ops", &[], &[]).await;
    let k = key();
    let old = enroll(&s, &ops, &csr_with(&k, "dev-r", &[], &[], None), "dev-r").await.unwrap();
    s.clock.advance(330 * 86_400);
    let new = renew_signed(&s, &old, &k, &key(), "dev-r", &[]).await.unwrap();
    s.ra.revoke(LOCAL_ADMIN, &serial(&new), RevocationReason::KeyCompromise).await.unwrap();
    assert_eq!(renew_signed(&s, &old, &k, &key(), "dev-r", &[]).await.unwrap_err(), "ae:CertificateRevoked");
}

/// Review: a device whose renewal answer was lost, coming back after the grace revoked its old
/// certificate, still gets the successor made for its key (and nothing else).
#[tokio::test]
async fn a_lost_renewal_answer_is_collected_even_after_the_grace() {
    let s = TestServer::start().await;
    let ops = account(&s, "ops", &[], &[]).await;
    let k = key();
    let old = enroll(&s, &ops, &csr_with(&k, "dev-g", &[], &[], None), "dev-g").await.unwrap();
    s.clock.advance(330 * 86_400);
    let pending_key = key();
    let successor = renew_signed(&s, &old, &k, &pending_key, "dev-g", &[]).await.unwrap();
    s.clock.advance(8 * 86_400);
    assert!(s.ra.revoke_superseded().await.unwrap() >= 1);
    assert_eq!(state(&s, &serial(&old)).await, (CertState::Revoked, Some(RevocationReason::Superseded)));
    assert_eq!(renew_signed(&s, &old, &k, &pending_key, "dev-g", &[]).await.unwrap(), successor);
    assert_eq!(renew_signed(&s, &old, &k, &key(), "dev-g", &[]).await.unwrap_err(), "ae:CertificateRevoked");
}

/// Review: certificates issued before the trust model (here: while an administrator allowed
/// the server's names) keep their names at renewal — except the server's own names and
/// wildcards the template does not allow, which renewal checks again.
#[tokio::test]
async fn renewal_does_not_carry_reserved_names_forward() {
    let s = TestServer::start().await;
    let open = TemplateSpec {
        allow_server_names: Some(true),
        allow_wildcards: Some(true),
        dns_suffixes: Some("localhost,example.test".into()),
        ..Default::default()
    };
    s.ra.update_template(LOCAL_ADMIN, "WebServer", &open).await.unwrap();
    let ops = account(&s, "ops", &[], &[]).await;
    let k = key();
    let web = csr_with(&k, "web1.example.test", &["localhost", "*.example.test"], &[], Some("WebServer"));
    let old = enroll(&s, &ops, &web, "web1").await.unwrap();
    let closed = TemplateSpec { allow_server_names: Some(false), ..Default::default() };
    s.ra.update_template(LOCAL_ADMIN, "WebServer", &closed).await.unwrap();
    s.clock.advance(80 * 86_400);
    let r = renew_signed(&s, &old, &k, &key(), "web1.example.test", &[]).await;
    assert_eq!(r.unwrap_err(), "ae:ServerNameReserved");
    s.ra.update_template(
        LOCAL_ADMIN,
        "WebServer",
        &TemplateSpec { allow_server_names: Some(true), allow_wildcards: Some(false), ..Default::default() },
    )
    .await
    .unwrap();
    let r = renew_signed(&s, &old, &k, &key(), "web1.example.test", &[]).await;
    assert_eq!(r.unwrap_err(), "ae:WildcardNotAllowed");
}

/// Review: a bootstrap token reserves its device (an account cannot bind the name first), and
/// a device never binds itself (after `rebind --unbind`, its certificate leaves it unbound).
#[tokio::test]
async fn tokens_reserve_their_device_and_certificates_bind_nothing() {
    let s = TestServer::start().await;
    let anyone = account(&s, "anyone", &[], &[]).await;
    let (token, _) = s.ra.create_token(&TokenSpec { device: "kiosk-x", template: None, ttl_secs: 600 }).await.unwrap();
    let r = enroll(&s, &anyone, &csr_with(&key(), "x", &[], &[], None), "kiosk-x").await;
    assert_eq!(r.unwrap_err(), "ae:DeviceBound", "the token's device is taken");
    let k = key();
    let cert = enroll(&s, &token_header(&token), &csr_with(&k, "kiosk-x", &[], &[], None), "").await.unwrap();
    s.ra.rebind_device(LOCAL_ADMIN, "kiosk-x", None).await.unwrap();
    let vpn = TemplateSpec { grants: Some("holder:Machine".into()), ..Default::default() };
    s.ra.create_template("Vpn", &vpn).await.unwrap();
    let tls = identity_of(&s.ra, &cert, &k);
    wstep_issue(&s, &HeaderToken::None, &csr_with(&key(), "x", &[], &[], Some("Vpn")), &[], Some(&tls)).await.unwrap();
    assert_eq!(s.ra.device("kiosk-x").await.unwrap().0.owner, None, "still free for the next account");
}

/// Review: a signed renewal retried over the same TLS connection setup (the old certificate as
/// client certificate, now renewed) gets its certificate again instead of a refusal.
#[tokio::test]
async fn a_signed_renewal_retried_with_the_old_client_certificate_gets_the_same_answer() {
    let s = TestServer::start().await;
    let ops = account(&s, "ops", &[], &[]).await;
    let k = key();
    let old = enroll(&s, &ops, &csr_with(&k, "dev-t", &[], &[], None), "dev-t").await.unwrap();
    s.clock.advance(330 * 86_400);
    let tls = identity_of(&s.ra, &old, &k);
    let new_key = key();
    let csr = build_renewal_csr(&new_key, cn_name("dev-t").unwrap(), vec![], &old).unwrap();
    let cms = sign_cms(&csr, &old, &k, true).unwrap();
    let mut answers = Vec::new();
    for _ in 0..2 {
        let body = wstep::token_request_body(ns::REQUEST_TYPE_ISSUE, ns::VALUE_TYPE_PKCS7, &cms);
        let (status, env) = s.soap(ns::ACTION_WSTEP, &HeaderToken::None, body, Some(&tls)).await;
        assert_eq!(status, 200, "{:?}", autoenroll_proto::soap::parse_fault(&env));
        answers.push(wstep::parse_response(&env.body).unwrap().certificate_der.unwrap());
    }
    assert_eq!(answers[0], answers[1]);
}

/// One live successor, the refusal side: a successor more than a day old that was never used
/// is not replaced by a renewal with another key (that key could be someone's copy of the old
/// one): `AlreadyRenewed`, and the successor stays good. The same key still gets it again.
#[tokio::test]
async fn an_old_successor_is_not_replaced_by_another_key() {
    let s = TestServer::start().await;
    let ops = account(&s, "ops", &[], &[]).await;
    let k = key();
    let old = enroll(&s, &ops, &csr_with(&k, "dev-a", &[], &[], None), "dev-a").await.unwrap();
    s.clock.advance(330 * 86_400);
    let k1 = key();
    let successor = renew_signed(&s, &old, &k, &k1, "dev-a", &[]).await.unwrap();
    s.clock.advance(2 * 86_400);
    assert_eq!(renew_signed(&s, &old, &k, &key(), "dev-a", &[]).await.unwrap_err(), "ae:AlreadyRenewed");
    assert_eq!(state(&s, &serial(&successor)).await, (CertState::Issued, None));
    assert_eq!(renew_signed(&s, &old, &k, &k1, "dev-a", &[]).await.unwrap(), successor);
}

/// A device that shows the certificate we renewed, whose successor never arrived, hears
/// "interrupted" at check-in (authenticated by that renewed certificate), gets no SCEP
/// challenge with it, and renewing again hands it the successor.
#[tokio::test]
async fn check_in_with_a_renewed_certificate_says_the_renewal_was_interrupted() {
    use autoenroll_proto::checkin::{Action, CheckinAnswer, Reason};
    let s = TestServer::start().await;
    let ops = account(&s, "ops", &[], &[]).await;
    let k = key();
    let old = enroll(&s, &ops, &csr_with(&k, "dev-i", &[], &[], None), "dev-i").await.unwrap();
    s.clock.advance(330 * 86_400);
    let k1 = key();
    let successor = renew_signed(&s, &old, &k, &k1, "dev-i", &[]).await.unwrap();
    let report = serde_json::json!({
        "scep": true,
        "certificates": [{ "template": "Machine", "thumbprint": autoenroll_server::ra::thumbprint_of(&old) }],
    });
    let r = s
        .client(Some(&identity_of(&s.ra, &old, &k)))
        .post(&s.url("/checkin"), "application/json", serde_json::to_vec(&report).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let a: CheckinAnswer = serde_json::from_slice(&r.body).unwrap();
    let m = a.directives.iter().find(|d| d.template == "Machine").unwrap();
    assert_eq!((m.action, m.reason), (Action::Renew, Reason::Interrupted), "{m:?}");
    assert!(a.directives.iter().all(|d| d.challenge.is_none()), "a renewed certificate buys no challenge");
    assert_eq!(renew_signed(&s, &old, &k, &k1, "dev-i", &[]).await.unwrap(), successor);
}
