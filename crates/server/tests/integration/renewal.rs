//! Renewal at the RA over real HTTPS: signed by the current certificate (with and without
//! signed attributes) and ROBO over client TLS, and each refusal with its own reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use crate::common;

use autoenroll_agent::https::ClientIdentity;
use autoenroll_core::pki::CertFacts;
use autoenroll_core::UnixTime;
use autoenroll_keys::{build_csr, build_renewal_csr, cn_name, sign_cms, KeyAlgorithm, KeyPair};
use autoenroll_proto::soap::HeaderToken;
use autoenroll_proto::{ns, wstep};
use autoenroll_server::ra::{AccountSpec, TemplateSpec};
use common::*;

/// A 100-second certificate of template "Short" (renewal window: the last 20 s).
struct Held {
    key: KeyPair,
    cert: Vec<u8>,
    facts: CertFacts,
}

async fn short_template(s: &TestServer, spec: TemplateSpec) {
    let spec = TemplateSpec {
        validity_secs: Some(100),
        renewal_secs: Some(50),
        ext_key_usage: Some("clientAuth".into()),
        ..spec
    };
    s.ra.create_template("Short", &spec).await.unwrap();
}

async fn enroll(s: &TestServer, header: &HeaderToken, device: &str) -> Held {
    let key = KeyPair::generate(KeyAlgorithm::P256).unwrap();
    let csr = build_csr(&key, cn_name(device).unwrap(), vec![template_ext("Short")]).unwrap();
    let (status, env) =
        s.soap(ns::ACTION_WSTEP, header, wstep::issue_request_body(&csr, &[("DeviceName", device)]), None).await;
    assert_eq!(status, 200, "{:?}", autoenroll_proto::soap::parse_fault(&env));
    let cert = wstep::parse_response(&env.body).unwrap().certificate_der.unwrap();
    let facts = CertFacts::parse(&cert).unwrap();
    Held { key, cert, facts }
}

/// Sends a signed renewal; Ok(new certificate) or Err(fault subcode).
async fn renew_signed(
    s: &TestServer,
    signer_cert: &[u8],
    signer_key: &KeyPair,
    new_key: &KeyPair,
    attrs: bool,
) -> Result<Vec<u8>, String> {
    renew_signed_as(s, signer_cert, signer_key, new_key, ("ignored", &[]), attrs).await
}

async fn renew_tls(s: &TestServer, held: &Held, new_key: &KeyPair) -> Result<Vec<u8>, String> {
    let csr = build_csr(new_key, cn_name("ignored").unwrap(), vec![]).unwrap();
    let identity = ClientIdentity {
        chain: vec![held.cert.clone(), s.ra.chain_der()[0].clone()],
        key_pkcs8: held.key.to_pkcs8_der().unwrap(),
    };
    let body = wstep::token_request_body(ns::REQUEST_TYPE_RENEW, ns::VALUE_TYPE_PKCS10, &csr);
    let (status, env) = s.soap(ns::ACTION_WSTEP, &HeaderToken::None, body, Some(&identity)).await;
    if status == 200 {
        Ok(wstep::parse_response(&env.body).unwrap().certificate_der.unwrap())
    } else {
        Err(subcode(status, &env))
    }
}

fn new_key() -> KeyPair {
    KeyPair::generate(KeyAlgorithm::P256).unwrap()
}

#[tokio::test]
async fn signed_renewal_with_and_without_signed_attributes_and_the_chain_is_recorded() {
    let s = TestServer::start().await;
    short_template(&s, TemplateSpec::default()).await;
    let held = enroll(&s, &account(), "dev1").await;
    s.clock.advance(85); // inside the last 20 s
    for attrs in [true, false] {
        let k = new_key();
        let cert = renew_signed(&s, &held.cert, &held.key, &k, attrs).await.unwrap();
        let f = CertFacts::parse(&cert).unwrap();
        assert_eq!(f.spki_der, k.spki_der());
        assert_eq!(f.subject_cn.as_deref(), Some("dev1"), "same device");
        assert_eq!(f.not_before, UnixTime(s.now()), "never backdated");
        let row = s.ra.certificates(50).await.unwrap().into_iter().find(|c| c.serial == f.serial.0).unwrap();
        assert_eq!(row.previous_serial.as_deref(), Some(held.facts.serial.as_str()));
        assert_eq!(row.device, "dev1");
    }
    let old = s.ra.certificates(50).await.unwrap().into_iter().find(|c| c.serial == held.facts.serial.0).unwrap();
    assert_eq!(old.state.as_str(), "renewed");
    let audit =
        s.ra.audit_events(&autoenroll_server::ra::AuditFilter { limit: 50, ..Default::default() }).await.unwrap();
    assert!(audit
        .iter()
        .any(|e| e.action == "renew" && e.outcome.as_str() == "issued" && e.detail.contains("SignedRequest")));
}

#[tokio::test]
async fn robo_renewal_over_client_tls() {
    let s = TestServer::start().await;
    short_template(&s, TemplateSpec::default()).await;
    let held = enroll(&s, &account(), "dev2").await;
    s.clock.advance(85);
    let k = new_key();
    let cert = renew_tls(&s, &held, &k).await.unwrap();
    let f = CertFacts::parse(&cert).unwrap();
    assert_eq!((f.subject_cn.as_deref(), f.spki_der.as_slice()), (Some("dev2"), k.spki_der()));
    // Without a client certificate a plain Renew has no proof.
    let body = wstep::token_request_body(
        ns::REQUEST_TYPE_RENEW,
        ns::VALUE_TYPE_PKCS10,
        &build_csr(&k, cn_name("x").unwrap(), vec![]).unwrap(),
    );
    let (status, env) = s.soap(ns::ACTION_WSTEP, &HeaderToken::None, body, None).await;
    assert_eq!(subcode(status, &env), "ae:MissingToken");
}

#[tokio::test]
async fn every_refusal_has_its_reason() {
    let s = TestServer::start().await;
    short_template(&s, TemplateSpec::default()).await;

    // Outside the window: just issued.
    let a = enroll(&s, &account(), "dev-a").await;
    assert_eq!(renew_signed(&s, &a.cert, &a.key, &new_key(), true).await.unwrap_err(), "ae:OutsideRenewalWindow");
    assert_eq!(renew_tls(&s, &a, &new_key()).await.unwrap_err(), "ae:OutsideRenewalWindow");

    s.clock.advance(85);
    // Signed by a key that is not the certificate's.
    assert_eq!(renew_signed(&s, &a.cert, &new_key(), &new_key(), true).await.unwrap_err(), "ae:BadRenewalSignature");
    assert_eq!(renew_signed(&s, &a.cert, &new_key(), &new_key(), false).await.unwrap_err(), "ae:BadRenewalSignature");
    // Same key where the template forbids it.
    assert_eq!(renew_signed(&s, &a.cert, &a.key, &a.key, true).await.unwrap_err(), "ae:SameKeyNotAllowed");

    // A certificate from another CA.
    let other = tempfile::tempdir().unwrap();
    let foreign_ca =
        autoenroll_ca::init(other.path(), KeyAlgorithm::P256, "Elsewhere", UnixTime(s.now() - 100)).unwrap();
    let fk = new_key();
    let prepared = foreign_ca
        .prepare(
            &autoenroll_ca::IssueRequest {
                subject: cn_name("dev-a").unwrap(),
                spki_der: fk.spki_der().to_vec(),
                dns_names: vec![],
                ip_addrs: vec![],
            },
            &autoenroll_ca::Profile {
                validity_secs: 100,
                key_usage: vec![autoenroll_core::model::KeyUsage::DigitalSignature],
                extended_key_usage: vec![autoenroll_core::model::Eku::CLIENT_AUTH],
                template: None,
                template_name: None,
                is_ca: false,
            },
            UnixTime(s.now() - 90),
        )
        .unwrap();
    let foreign = foreign_ca.sign(&prepared).unwrap();
    assert_eq!(renew_signed(&s, &foreign, &fk, &new_key(), true).await.unwrap_err(), "ae:ForeignCertificate");

    // Revoked.
    let b = enroll(&s, &account(), "dev-b").await;
    s.clock.advance(85);
    s.ra.revoke(autoenroll_server::ra::LOCAL_ADMIN, &b.facts.serial.0, "keyCompromise".parse().unwrap()).await.unwrap();
    assert_eq!(renew_signed(&s, &b.cert, &b.key, &new_key(), true).await.unwrap_err(), "ae:CertificateRevoked");

    // Blocked device (and unblocking lets it through).
    let c = enroll(&s, &account(), "dev-c").await;
    s.clock.advance(85);
    s.ra.set_device_state(autoenroll_server::ra::LOCAL_ADMIN, "dev-c", autoenroll_server::ra::DeviceState::Blocked)
        .await
        .unwrap();
    assert_eq!(renew_signed(&s, &c.cert, &c.key, &new_key(), true).await.unwrap_err(), "ae:DeviceBlocked");
    assert_eq!(renew_tls(&s, &c, &new_key()).await.unwrap_err(), "ae:DeviceBlocked");
    s.ra.set_device_state(autoenroll_server::ra::LOCAL_ADMIN, "dev-c", autoenroll_server::ra::DeviceState::Active)
        .await
        .unwrap();
    renew_signed(&s, &c.cert, &c.key, &new_key(), true).await.unwrap();

    // Another device's certificate: device E (authenticated by its TLS certificate) sends a
    // renewal signed with device D's certificate.
    let d = enroll(&s, &account(), "dev-d").await;
    let e = enroll(&s, &account(), "dev-e").await;
    s.clock.advance(85);
    let csr = build_renewal_csr(&new_key(), cn_name("x").unwrap(), vec![], &d.cert).unwrap();
    let cms = sign_cms(&csr, &d.cert, &d.key, true).unwrap();
    let identity = ClientIdentity {
        chain: vec![e.cert.clone(), s.ra.chain_der()[0].clone()],
        key_pkcs8: e.key.to_pkcs8_der().unwrap(),
    };
    let body = wstep::token_request_body(ns::REQUEST_TYPE_ISSUE, ns::VALUE_TYPE_PKCS7, &cms);
    let (status, env) = s.soap(ns::ACTION_WSTEP, &HeaderToken::None, body, Some(&identity)).await;
    assert_eq!(subcode(status, &env), "ae:DeviceMismatch");
    // ...and a request naming a different certificate than the one that signed it.
    let csr = build_renewal_csr(&new_key(), cn_name("x").unwrap(), vec![], &d.cert).unwrap();
    let cms = sign_cms(&csr, &e.cert, &e.key, true).unwrap();
    let body = wstep::token_request_body(ns::REQUEST_TYPE_ISSUE, ns::VALUE_TYPE_PKCS7, &cms);
    let (status, env) = s.soap(ns::ACTION_WSTEP, &HeaderToken::None, body, None).await;
    // The signature is E's and verifies; the CSR names D's certificate.
    assert_eq!(subcode(status, &env), "ae:RenewalCertificateMismatch");

    // Expired: re-enrollment needs fresh credentials.
    s.clock.advance(100);
    assert_eq!(renew_signed(&s, &e.cert, &e.key, &new_key(), true).await.unwrap_err(), "ae:CertificateExpired");

    let refusals: Vec<String> =
        s.ra.audit_events(&autoenroll_server::ra::AuditFilter { limit: 200, ..Default::default() })
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.action == "renew" && e.outcome.as_str() == "refused")
            .map(|e| e.detail)
            .collect();
    for code in [
        "OutsideRenewalWindow",
        "BadRenewalSignature",
        "SameKeyNotAllowed",
        "ForeignCertificate",
        "CertificateRevoked",
        "DeviceBlocked",
        "DeviceMismatch",
        "CertificateExpired",
    ] {
        assert!(refusals.iter().any(|d| d.starts_with(code)), "no audit event for {code}: {refusals:?}");
    }
}

#[tokio::test]
async fn same_key_renewal_when_the_template_allows_it_and_grace_for_early_renewal() {
    let s = TestServer::start().await;
    short_template(
        &s,
        TemplateSpec { same_key_renewal: Some(true), renewal_grace_secs: Some(1000), ..Default::default() },
    )
    .await;
    let a = enroll(&s, &account(), "dev-s").await;
    // Grace: accepted right away; same key: allowed by this template.
    let cert = renew_signed(&s, &a.cert, &a.key, &a.key, true).await.unwrap();
    assert_eq!(CertFacts::parse(&cert).unwrap().spki_der, a.key.spki_der());
}

#[tokio::test]
async fn a_major_bump_opens_renewal_at_once_and_issues_the_new_version() {
    let s = TestServer::start().await;
    short_template(&s, TemplateSpec::default()).await;
    let a = enroll(&s, &account(), "dev-m").await;
    assert_eq!(a.facts.template.as_ref().unwrap().major, 1);
    s.ra.update_template(
        autoenroll_server::ra::LOCAL_ADMIN,
        "Short",
        &TemplateSpec { major: Some(2), ..Default::default() },
    )
    .await
    .unwrap();
    let cert = renew_signed(&s, &a.cert, &a.key, &new_key(), true).await.unwrap();
    assert_eq!(CertFacts::parse(&cert).unwrap().template.unwrap().major, 2);
}

#[tokio::test]
async fn pending_requests_are_collected_after_approval() {
    let s = TestServer::start().await;
    short_template(&s, TemplateSpec { pend_all: Some(true), ..Default::default() }).await;
    s.ra.create_account(&AccountSpec { name: "other", password: PASSWORD, templates: vec![], ..Default::default() })
        .await
        .unwrap();
    let key = new_key();
    let csr = build_csr(&key, cn_name("dev-p").unwrap(), vec![template_ext("Short")]).unwrap();
    let (status, env) = s.soap(ns::ACTION_WSTEP, &account(), wstep::issue_request_body(&csr, &[]), None).await;
    assert_eq!(status, 200);
    let r = wstep::parse_response(&env.body).unwrap();
    assert_eq!(r.disposition.as_deref(), Some("Taken Under Submission"));
    assert_eq!(r.pending_reference.as_deref(), Some(s.url("/wstep").as_str()));
    let id = r.request_id.unwrap();
    let query = || wstep::query_request_body(&id);
    let (_, env) = s.soap(ns::ACTION_WSTEP, &account(), query(), None).await;
    assert!(wstep::parse_response(&env.body).unwrap().certificate_der.is_none());
    let issued = s.ra.approve(autoenroll_server::ra::LOCAL_ADMIN, id.parse().unwrap()).await.unwrap();
    // Only the requester learns the outcome: nobody anonymous, no other account (finding:
    // sequential request IDs read the whole inventory anonymously).
    let (status, env) = s.soap(ns::ACTION_WSTEP, &HeaderToken::None, query(), None).await;
    assert_eq!(subcode(status, &env), "ae:MissingToken");
    let other = HeaderToken::UsernameToken { username: "other".into(), password: PASSWORD.into() };
    let (status, env) = s.soap(ns::ACTION_WSTEP, &other, query(), None).await;
    assert_eq!(subcode(status, &env), "ae:UnknownRequest", "another account learns nothing");
    let (_, env) = s.soap(ns::ACTION_WSTEP, &account(), query(), None).await;
    assert_eq!(wstep::parse_response(&env.body).unwrap().certificate_der, Some(issued.certificate_der));
    assert!(s.ra.approve(autoenroll_server::ra::LOCAL_ADMIN, id.parse().unwrap()).await.is_err(), "approved once");
    // A denied request answers with a fault.
    let (_, env) = s.soap(ns::ACTION_WSTEP, &account(), wstep::issue_request_body(&csr, &[]), None).await;
    let id2 = wstep::parse_response(&env.body).unwrap().request_id.unwrap();
    s.ra.deny(autoenroll_server::ra::LOCAL_ADMIN, id2.parse().unwrap(), "no").await.unwrap();
    let (status, env) = s.soap(ns::ACTION_WSTEP, &account(), wstep::query_request_body(&id2), None).await;
    assert_eq!(subcode(status, &env), "ae:RequestDenied");
}

#[tokio::test]
async fn openssl_streamed_ber_renewal_request_is_accepted() {
    autoenroll_test_support::require_tool("openssl", "openssl");
    let s = TestServer::start().await;
    short_template(&s, TemplateSpec::default()).await;
    let held = enroll(&s, &account(), "dev-ber").await;
    s.clock.advance(85);
    // openssl as an independent CMS producer: -stream writes indefinite-length BER and a
    // constructed eContent OCTET STRING; signed attributes present.
    let dir = s.dir.path();
    std::fs::write(
        dir.join("old.pem"),
        der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, &held.cert).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("old.key"), held.key.to_pem().unwrap()).unwrap();
    let k = new_key();
    std::fs::write(dir.join("new.csr"), build_renewal_csr(&k, cn_name("x").unwrap(), vec![], &held.cert).unwrap())
        .unwrap();
    let out = std::process::Command::new("openssl")
        .args(["cms", "-sign", "-binary", "-nodetach", "-stream", "-md", "sha256", "-outform", "DER"])
        .arg("-signer")
        .arg(dir.join("old.pem"))
        .arg("-inkey")
        .arg(dir.join("old.key"))
        .arg("-in")
        .arg(dir.join("new.csr"))
        .arg("-out")
        .arg(dir.join("renew.p7"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cms = std::fs::read(dir.join("renew.p7")).unwrap();
    assert_eq!(&cms[..2], &[0x30, 0x80], "indefinite-length BER");
    let body = wstep::token_request_body(ns::REQUEST_TYPE_ISSUE, ns::VALUE_TYPE_PKCS7, &cms);
    let (status, env) = s.soap(ns::ACTION_WSTEP, &HeaderToken::None, body, None).await;
    assert_eq!(status, 200, "{:?}", autoenroll_proto::soap::parse_fault(&env));
    let cert = wstep::parse_response(&env.body).unwrap().certificate_der.unwrap();
    assert_eq!(CertFacts::parse(&cert).unwrap().spki_der, k.spki_der());
}
