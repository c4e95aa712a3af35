//! MS-WSTEP issuance and MS-XCEP policy over real HTTPS on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use crate::common;

use autoenroll_core::pki::cert::verify_issued_by;
use autoenroll_core::pki::CertFacts;
use autoenroll_keys::{build_csr, cn_name, KeyAlgorithm, KeyPair};
use autoenroll_proto::soap::HeaderToken;
use autoenroll_proto::{ns, pkcs7, wstep, xcep};
use autoenroll_server::ra::{AccountSpec, TemplateSpec, TokenSpec};
use common::*;
use std::process::Command;

fn vector(name: &str) -> Vec<u8> {
    std::fs::read(autoenroll_test_support::testdata(&format!("ms/{name}"))).unwrap()
}

fn csr(cn: &str) -> Vec<u8> {
    let key = KeyPair::generate(KeyAlgorithm::P256).unwrap();
    build_csr(&key, cn_name(cn).unwrap(), vec![]).unwrap()
}

async fn issue(
    s: &TestServer,
    token: &HeaderToken,
    csr_der: &[u8],
) -> Result<(Vec<u8>, wstep::ParsedResponse), String> {
    let (status, env) = s.soap(ns::ACTION_WSTEP, token, wstep::issue_request_body(csr_der, &[]), None).await;
    if status != 200 {
        return Err(subcode(status, &env));
    }
    let r = wstep::parse_response(&env.body).unwrap();
    Ok((r.certificate_der.clone().unwrap(), r))
}

#[tokio::test]
async fn openssl_csr_is_issued_and_verifies_with_openssl() {
    autoenroll_test_support::require_tool("openssl", "openssl");
    let s = TestServer::start().await;
    let work = s.dir.path();
    let key = work.join("dev.key");
    let req = work.join("dev.csr");
    // The template named the Windows way: 1.3.6.1.4.1.311.20.2 as a BMPString.
    let out = Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=openssl-dev.example.test",
            "-outform",
            "DER",
        ])
        .args([
            "-addext",
            "1.3.6.1.4.1.311.20.2=ASN1:BMPSTRING:WebServer",
            "-addext",
            "subjectAltName=DNS:openssl-dev.example.test",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&req)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let csr = std::fs::read(&req).unwrap();
    // Request-supplied names must be the device's own or under the template's DNS suffixes.
    assert_eq!(issue(&s, &account(), &csr).await.unwrap_err(), "ae:NameNotAllowed");
    let suffix = TemplateSpec { dns_suffixes: Some("example.test".into()), ..Default::default() };
    s.ra.update_template(autoenroll_server::ra::LOCAL_ADMIN, "WebServer", &suffix).await.unwrap();
    let (cert, r) = issue(&s, &account(), &csr).await.unwrap();
    let facts = CertFacts::parse(&cert).unwrap();
    assert_eq!(facts.template_name.as_deref(), Some("WebServer"));
    assert_eq!(facts.subject_cn.as_deref(), Some("openssl-dev.example.test"));
    assert!(r.request_id.unwrap().parse::<u32>().is_ok(), "numeric RequestID");
    // The collection-level token carries the chain.
    assert_eq!(pkcs7::certificates(&r.chain_pkcs7_der.unwrap()).unwrap().len(), 3);

    let pem = der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, &cert).unwrap();
    let cert_path = work.join("dev.pem");
    std::fs::write(&cert_path, pem).unwrap();
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(s.root_pem())
        .arg("-untrusted")
        .arg(s.issuing_pem())
        .arg("-purpose")
        .arg("sslserver")
        .arg(&cert_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": OK"));
    // The store has it, with its thumbprint, before the client saw it.
    let row = s.ra.certificates(10).await.unwrap().into_iter().find(|c| c.serial == facts.serial.0).unwrap();
    assert_eq!(row.state.as_str(), "issued");
    assert_eq!(row.thumbprint.as_deref(), Some(facts.thumbprint.as_str()));
}

#[tokio::test]
async fn real_windows_mdm_csr_is_accepted_and_issued() {
    let s = TestServer::start().await;
    // fleet's captured Windows request: CN with '!', non-DER extension 1.3.6.1.4.1.311.66.1.0.
    let env = autoenroll_proto::soap::parse_envelope(&vector("fleet-mdmtest-rst-enroll-request.xml")).unwrap();
    let rst = wstep::parse_request(&env.body).unwrap();
    let windows_csr = rst.token.unwrap().der;
    let body = wstep::issue_request_body(&windows_csr, &[("DeviceName", "DESKTOP-FLEET")]);
    let (status, env) = s.soap(ns::ACTION_WSTEP, &account(), body, None).await;
    assert_eq!(status, 200, "{:?}", autoenroll_proto::soap::parse_fault(&env));
    let cert = wstep::parse_response(&env.body).unwrap().certificate_der.unwrap();
    verify_issued_by(&cert, &s.ra.chain_der()[0]).unwrap();
    let facts = CertFacts::parse(&cert).unwrap();
    assert_eq!(facts.subject_cn.as_deref(), Some("DESKTOP-FLEET"), "Machine builds the subject from the device");
    assert_eq!(facts.template_name.as_deref(), Some("Machine"), "no template in the CSR: the default");
}

#[tokio::test]
async fn spec_windows_csr_names_its_template_by_bmpstring() {
    let s = TestServer::start().await;
    let env = autoenroll_proto::soap::parse_envelope(&vector("wstep-spec-4.1.1.1-issue-request.xml")).unwrap();
    let csr_der = wstep::parse_request(&env.body).unwrap().token.unwrap().der;
    assert_eq!(issue(&s, &account(), &csr_der).await.unwrap_err(), "ae:UnknownTemplate");
    // The captured request carries an RSA key: the template must take RSA.
    let user = TemplateSpec { key_algorithm: Some("rsa2048".into()), ..Default::default() };
    s.ra.create_template("User", &user).await.unwrap();
    let (cert, _) = issue(&s, &account(), &csr_der).await.unwrap();
    let facts = CertFacts::parse(&cert).unwrap();
    assert_eq!(facts.template_name.as_deref(), Some("User"));
    // Issue 13, finding 7: the machine the sample names in its ClientInformation attribute is
    // the device (not the account): many machines behind one account stay many devices.
    let machine = "9-1351C0405A.d9-1351C0406A.nttest.microsoft.com";
    assert_eq!(facts.subject_cn.as_deref(), Some(machine));
    let (device, _) = s.ra.device(machine).await.unwrap();
    assert_eq!(device.owner.as_deref(), Some("account:enroller"));
}

#[tokio::test]
async fn get_policies_lists_templates_and_honours_last_update() {
    let s = TestServer::start().await;
    let (status, env) = s.soap(ns::ACTION_GET_POLICIES, &account(), xcep::request_body(None), None).await;
    assert_eq!(status, 200);
    let p = xcep::parse_response(&env.body).unwrap();
    let names: Vec<_> = p.policies.iter().map(|p| p.common_name.as_str()).collect();
    assert_eq!(names, ["Machine", "WebServer"]);
    let machine = &p.policies[0];
    assert_eq!((machine.validity_seconds, machine.renewal_seconds), (365 * 86_400, 42 * 86_400));
    assert!(machine.auto_enroll && machine.enrollment_flags & 0x20 != 0);
    assert_eq!(p.cas.len(), 1);
    assert_eq!(p.cas[0].certificate_der, s.ra.chain_der()[0]);
    assert!(p.cas[0].uris.iter().all(|u| u.uri == s.url("/wstep")));
    // MS-XCEP 3.1.4.1.3.3: 4 username/password, 8 certificate, 1 anonymous.
    let auths: Vec<_> = p.cas[0].uris.iter().map(|u| (u.client_authentication.value(), u.renewal_only)).collect();
    assert_eq!(auths, [(4, false), (8, false), (1, true)], "anonymous only for signed renewals");
    let template_oid = p.oids.iter().find(|o| o.reference_id == machine.oid_reference).unwrap();
    assert_eq!(template_oid.group, 9);
    assert!(template_oid.value.starts_with("1.3.6.1.4.1.311.21.8."));

    // A client whose lastUpdate is after the newest change hears "not changed".
    let later = autoenroll_core::UnixTime(s.now() + 60).to_string();
    let (_, env) = s.soap(ns::ACTION_GET_POLICIES, &account(), xcep::request_body(Some(&later)), None).await;
    let p = xcep::parse_response(&env.body).unwrap();
    assert!(p.policies_not_changed && p.policies.is_empty());
    // An account limited to one template sees only that one.
    s.ra.create_account(&AccountSpec {
        name: "webonly",
        password: PASSWORD,
        templates: vec!["WebServer".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let web = HeaderToken::UsernameToken { username: "webonly".into(), password: PASSWORD.into() };
    let (_, env) = s.soap(ns::ACTION_GET_POLICIES, &web, xcep::request_body(None), None).await;
    let p = xcep::parse_response(&env.body).unwrap();
    assert_eq!(p.policies.iter().map(|p| p.common_name.as_str()).collect::<Vec<_>>(), ["WebServer"]);
}

fn envelope(action: &str, token: &HeaderToken, body: &str) -> String {
    let mut header = String::new();
    if let HeaderToken::UsernameToken { username, password } = token {
        header = format!(
            "<wsse:Security><wsse:UsernameToken><wsse:Username>{username}</wsse:Username><wsse:Password>{password}</wsse:Password></wsse:UsernameToken></wsse:Security>"
        );
    }
    format!(
        r#"<s:Envelope xmlns:s="{}" xmlns:a="{}" xmlns:wsse="{}"><s:Header><a:Action>{action}</a:Action><a:MessageID>urn:uuid:1</a:MessageID>{header}</s:Header><s:Body>{body}</s:Body></s:Envelope>"#,
        ns::SOAP12,
        ns::WSA,
        ns::WSSE
    )
}

fn rst(bst_text: &str) -> String {
    format!(
        r#"<wst:RequestSecurityToken xmlns:wst="{}"><wst:RequestType>{}</wst:RequestType><wsse:BinarySecurityToken ValueType="{}" EncodingType="{}">{bst_text}</wsse:BinarySecurityToken></wst:RequestSecurityToken>"#,
        ns::WST,
        ns::REQUEST_TYPE_ISSUE,
        ns::VALUE_TYPE_PKCS10,
        ns::ENCODING_BASE64
    )
}

async fn raw_subcode(s: &TestServer, body: impl Into<Vec<u8>>) -> String {
    let r = s.post("/wstep", body).await;
    let env = autoenroll_proto::soap::parse_envelope(&r.body).unwrap();
    subcode(r.status, &env)
}

#[tokio::test]
async fn each_bad_request_gets_its_specific_fault_and_the_server_keeps_serving() {
    let s = TestServer::start().await;
    let good_csr = autoenroll_proto::b64::encode(&csr("dev"));
    let mut tampered = csr("dev");
    let n = tampered.len();
    tampered[n - 5] ^= 0x55;
    let tampered = autoenroll_proto::b64::encode(&tampered);
    s.ra.create_account(&AccountSpec {
        name: "webonly",
        password: PASSWORD,
        templates: vec!["WebServer".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let webonly = HeaderToken::UsernameToken { username: "webonly".into(), password: PASSWORD.into() };
    let wrong = HeaderToken::UsernameToken { username: "enroller".into(), password: "nope-nope".into() };
    let nobody = HeaderToken::UsernameToken { username: "nobody".into(), password: PASSWORD.into() };
    let unknown_template = autoenroll_proto::b64::encode(&csr_with(
        &KeyPair::generate(KeyAlgorithm::P256).unwrap(),
        "x",
        &[],
        &[],
        Some("NoSuchTemplate"),
    ));
    let cases: Vec<(&str, String)> = vec![
        ("ae:BadXml", "<s:Envelope xmlns:s='x'><unclosed>".to_string()),
        ("ae:BadXml", "not xml at all".to_string()),
        ("ae:UnknownAction", envelope("urn:nope", &account(), &rst(&good_csr))),
        ("ae:MissingToken", envelope(ns::ACTION_WSTEP, &HeaderToken::None, &rst(&good_csr))),
        ("ae:BadBase64", envelope(ns::ACTION_WSTEP, &account(), &rst("@@@not-base64@@@"))),
        ("ae:BadCsrSignature", envelope(ns::ACTION_WSTEP, &account(), &rst(&tampered))),
        ("ae:BadCsr", envelope(ns::ACTION_WSTEP, &account(), &rst("AAAA"))),
        ("ae:UnknownTemplate", envelope(ns::ACTION_WSTEP, &account(), &rst(&unknown_template))),
        ("ae:NotPermitted", envelope(ns::ACTION_WSTEP, &webonly, &rst(&good_csr))),
        ("ae:WrongCredentials", envelope(ns::ACTION_WSTEP, &wrong, &rst(&good_csr))),
        ("ae:WrongCredentials", envelope(ns::ACTION_WSTEP, &nobody, &rst(&good_csr))),
        (
            "ae:MissingElement",
            envelope(ns::ACTION_WSTEP, &account(), &format!("<wst:RequestSecurityToken xmlns:wst='{}'/>", ns::WST)),
        ),
    ];
    for (expected, body) in cases {
        assert_eq!(raw_subcode(&s, body.clone()).await, expected, "for body {body}");
    }
    // Whitespace inside base64 (Windows wraps with CR LF every 64 characters) is fine.
    let wrapped: String =
        good_csr.as_bytes().chunks(64).map(|c| format!("{}&#xD;\n", std::str::from_utf8(c).unwrap())).collect();
    let r = s.post("/wstep", envelope(ns::ACTION_WSTEP, &account(), &rst(&wrapped))).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // Refusals are audited with their reason.
    let audit =
        s.ra.audit_events(&autoenroll_server::ra::AuditFilter { limit: 100, ..Default::default() }).await.unwrap();
    assert!(audit.iter().any(|e| e.outcome.as_str() == "refused" && e.detail.starts_with("BadCsrSignature")));
}

#[tokio::test]
async fn hostile_bodies_are_refused_without_reading_them() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start().await;
    // Announce 10 MiB, send only the headers: the answer must come without the body.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls_pki_types::CertificateDer::from(s.ra.root_der().to_vec())).unwrap();
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let addr = s.base.trim_start_matches("https://").to_string();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut tls = connector.connect(rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap(), tcp).await.unwrap();
    let head = format!(
        "POST /wstep HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/soap+xml\r\nContent-Length: {}\r\n\r\n",
        10 * 1024 * 1024
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&[b'x'; 1024]).await.unwrap();
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(std::time::Duration::from_secs(20), tls.read(&mut buf))
        .await
        .expect("an answer before the body")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 500"), "{text}");
    assert!(text.contains("ae:TooLarge"), "{text}");

    // A body that really is 10 MiB (no Content-Length trust needed): refused as well.
    let r = s.client(None).post(&s.url("/wstep"), "application/soap+xml", vec![b' '; 10 * 1024 * 1024]).await;
    match r {
        Ok(r) => assert!(String::from_utf8_lossy(&r.body).contains("ae:TooLarge")),
        Err(e) => panic!("{e}"),
    }

    // Deeply nested XML within the size limit.
    let deep = format!("{}{}", "<a>".repeat(30_000), "</a>".repeat(30_000));
    assert_eq!(raw_subcode(&s, deep).await, "ae:XmlTooComplex");
    let entity = format!("<!DOCTYPE s [<!ENTITY x 'y'>]>{}", envelope(ns::ACTION_WSTEP, &account(), "&x;"));
    assert_eq!(raw_subcode(&s, entity).await, "ae:BadXml");

    // And the next good request is served.
    issue(&s, &account(), &csr("after-abuse")).await.unwrap();
}

#[tokio::test]
async fn bootstrap_tokens_are_single_use_expiring_and_bound() {
    let s = TestServer::start().await;
    let (token, _) = s.ra.create_token(&TokenSpec { device: "kiosk-7", template: None, ttl_secs: 3600 }).await.unwrap();
    let (cert, _) = issue(&s, &token_header(&token), &csr("ignored")).await.unwrap();
    assert_eq!(CertFacts::parse(&cert).unwrap().subject_cn.as_deref(), Some("kiosk-7"), "the token names the device");
    assert_eq!(issue(&s, &token_header(&token), &csr("again")).await.unwrap_err(), "ae:TokenUsed");

    let (token, _) = s.ra.create_token(&TokenSpec { device: "kiosk-8", template: None, ttl_secs: 3600 }).await.unwrap();
    s.clock.advance(3601);
    assert_eq!(issue(&s, &token_header(&token), &csr("late")).await.unwrap_err(), "ae:TokenExpired");

    // A token bound to a template cannot buy another one.
    let (token, _) =
        s.ra.create_token(&TokenSpec { device: "web-9", template: Some("WebServer"), ttl_secs: 3600 }).await.unwrap();
    let machine_csr = csr_with(&KeyPair::generate(KeyAlgorithm::P256).unwrap(), "web-9", &[], &[], Some("Machine"));
    assert_eq!(issue(&s, &token_header(&token), &machine_csr).await.unwrap_err(), "ae:NotPermitted");
    // ...and the refusal did not spend it.
    let (cert, _) = issue(&s, &token_header(&token), &csr("web-9")).await.unwrap();
    assert_eq!(CertFacts::parse(&cert).unwrap().template_name.as_deref(), Some("WebServer"));

    // Guessing: a well-formed token with a wrong secret is unknown.
    let last = if token.ends_with('x') { 'y' } else { 'x' };
    let forged = format!("{}{last}", &token[..token.len() - 1]);
    assert_eq!(issue(&s, &token_header(&forged), &csr("x")).await.unwrap_err(), "ae:WrongCredentials");
}

#[tokio::test]
async fn racing_requests_spend_a_token_once() {
    let s = std::sync::Arc::new(TestServer::start().await);
    let (token, _) = s.ra.create_token(&TokenSpec { device: "race", template: None, ttl_secs: 3600 }).await.unwrap();
    let mut handles = Vec::new();
    for i in 0..6 {
        let s = s.clone();
        let token = token.clone();
        handles
            .push(tokio::spawn(async move { issue(&s, &token_header(&token), &csr(&format!("r{i}"))).await.is_ok() }));
    }
    let mut wins = 0;
    for h in handles {
        wins += h.await.unwrap() as usize;
    }
    assert_eq!(wins, 1);
}

#[tokio::test]
async fn client_certificate_authenticates_later_requests() {
    let s = TestServer::start().await;
    let key = KeyPair::generate(KeyAlgorithm::P256).unwrap();
    let csr_der = build_csr(&key, cn_name("dev-tls").unwrap(), vec![]).unwrap();
    let (cert, _) = issue(&s, &account(), &csr_der).await.unwrap();
    let identity = autoenroll_agent::https::ClientIdentity {
        chain: vec![cert, s.ra.chain_der()[0].clone()],
        key_pkcs8: key.to_pkcs8_der().unwrap(),
    };
    let over_tls = |csr_der: Vec<u8>| {
        let (s, identity) = (&s, &identity);
        async move {
            let (status, env) = s
                .soap(ns::ACTION_WSTEP, &HeaderToken::None, wstep::issue_request_body(&csr_der, &[]), Some(identity))
                .await;
            if status == 200 {
                Ok(wstep::parse_response(&env.body).unwrap().certificate_der.unwrap())
            } else {
                Err(subcode(status, &env))
            }
        }
    };
    // A Machine certificate enrolls only what grants name Machine holders: not Machine itself
    // (that is renewal), not WebServer (accounts only).
    assert_eq!(over_tls(csr("x")).await.unwrap_err(), "ae:NotPermitted");
    assert_eq!(
        over_tls(csr_with(&KeyPair::generate(KeyAlgorithm::P256).unwrap(), "dev-tls", &[], &[], Some("WebServer")))
            .await
            .unwrap_err(),
        "ae:NotPermitted"
    );
    let vpn = TemplateSpec { grants: Some("holder:Machine".into()), ..Default::default() };
    s.ra.create_template("Vpn", &vpn).await.unwrap();
    let cert2 =
        over_tls(csr_with(&KeyPair::generate(KeyAlgorithm::P256).unwrap(), "x", &[], &[], Some("Vpn"))).await.unwrap();
    let f = CertFacts::parse(&cert2).unwrap();
    assert_eq!(f.subject_cn.as_deref(), Some("enroller"), "same device as the authenticating certificate");
    assert_eq!(f.template_name.as_deref(), Some("Vpn"));
}

/// The client certificate's validity is judged on every request, also where TLS does not look
/// again (a connection kept open, a resumed session): the RA reads it from the certificate's
/// store row, found by the thumbprint of the presented bytes, instead of parsing them. On one
/// kept-open connection: good up to its last second, refused from notAfter on and before
/// notBefore.
#[tokio::test]
async fn client_certificate_validity_is_checked_on_every_request() {
    let s = TestServer::start().await;
    let key = KeyPair::generate(KeyAlgorithm::P256).unwrap();
    let (cert, _) =
        issue(&s, &account(), &build_csr(&key, cn_name("dev-kept").unwrap(), vec![]).unwrap()).await.unwrap();
    let facts = CertFacts::parse(&cert).unwrap();
    let identity = autoenroll_agent::https::ClientIdentity {
        chain: vec![cert, s.ra.chain_der()[0].clone()],
        key_pkcs8: key.to_pkcs8_der().unwrap(),
    };
    s.ra.create_template("Vpn", &TemplateSpec { grants: Some("holder:Machine".into()), ..Default::default() })
        .await
        .unwrap();
    let kept = s.client(Some(&identity)).with_pool(autoenroll_agent::https::Pool::default());
    let enroll = || async {
        let csr = csr_with(&KeyPair::generate(KeyAlgorithm::P256).unwrap(), "x", &[], &[], Some("Vpn"));
        match s.soap_on(&kept, ns::ACTION_WSTEP, &HeaderToken::None, wstep::issue_request_body(&csr, &[])).await {
            (200, _) => Ok(()),
            (status, env) => Err(subcode(status, &env)),
        }
    };
    let (full, resumed) = s.handshakes.get();
    enroll().await.unwrap();
    s.clock.set(facts.not_after.0 - 1);
    enroll().await.unwrap();
    s.clock.set(facts.not_after.0);
    assert_eq!(enroll().await.unwrap_err(), "ae:ClientCertificateExpired");
    s.clock.set(facts.not_before.0 - 1);
    assert_eq!(enroll().await.unwrap_err(), "ae:ClientCertificateExpired");
    let (f, r) = s.handshakes.get();
    assert_eq!((f - full) + (r - resumed), 1, "all on one connection: TLS never judged the certificate again");
}

#[tokio::test]
async fn the_listener_certificate_is_renewed_before_it_expires() {
    let s = TestServer::start().await;
    let first = std::fs::read(s.dir.path().join("data/tls/server.pem")).unwrap();
    // 340 days on: within 30 days of the listener certificate's expiry.
    s.clock.advance(340 * 86_400);
    s.tls.reload().await.unwrap();
    let second = std::fs::read(s.dir.path().join("data/tls/server.pem")).unwrap();
    assert_ne!(first, second, "re-issued");
    // 30 more days: the first certificate has expired, the server still answers.
    s.clock.advance(30 * 86_400);
    issue(&s, &account(), &csr("late")).await.unwrap();
    let rows = s.ra.certificates(50).await.unwrap();
    assert_eq!(
        rows.iter().filter(|c| c.template == "TLSListener").count(),
        2,
        "both listener certificates are in the inventory"
    );
}

/// Key usage by key type (issue 13, finding 10): an EC key enciphers no keys (RFC 5480 3), so
/// a WebServer certificate for an EC key says digitalSignature only; for RSA keyEncipherment too.
#[tokio::test]
async fn key_usage_follows_the_key_type() {
    let s = TestServer::start().await;
    let suffix = TemplateSpec { dns_suffixes: Some("example.test".into()), ..Default::default() };
    s.ra.update_template(autoenroll_server::ra::LOCAL_ADMIN, "WebServer", &suffix).await.unwrap();
    let usage = |cert: &[u8]| {
        let c = <x509_cert::Certificate as der::Decode>::from_der(cert).unwrap();
        let ext = c
            .tbs_certificate()
            .extensions()
            .into_iter()
            .flatten()
            .find(|e| e.extn_id == autoenroll_core::oids::CE_KEY_USAGE)
            .unwrap();
        <x509_cert::ext::pkix::KeyUsage as der::Decode>::from_der(ext.extn_value.as_bytes()).unwrap()
    };
    let ec = KeyPair::generate(KeyAlgorithm::P256).unwrap();
    let csr = csr_with(&ec, "w1.example.test", &["w1.example.test"], &[], Some("WebServer"));
    let (cert, _) = issue(&s, &account(), &csr).await.unwrap();
    let ku = usage(&cert);
    assert!(ku.digital_signature() && !ku.key_encipherment(), "EC: {ku:?}");
    let rsa = KeyPair::generate(KeyAlgorithm::Rsa(2048)).unwrap();
    let csr = csr_with(&rsa, "w2.example.test", &["w2.example.test"], &[], Some("WebServer"));
    let (cert, _) = issue(&s, &account(), &csr).await.unwrap();
    let ku = usage(&cert);
    assert!(ku.digital_signature() && ku.key_encipherment(), "RSA: {ku:?}");
}

/// Issue 13, finding 5: the MS-WSTEP sample KET request is refused as an unsupported request
/// type (as docs/error-mapping.md says), and an unknown RequestID in QueryTokenStatus carries
/// CERTSRV_E_NO_REQUEST (0x80094002), not the unknown-template HRESULT.
#[tokio::test]
async fn ket_and_unknown_requests_get_their_own_codes() {
    let s = TestServer::start().await;
    let ket = String::from_utf8(vector("wstep-spec-4.1.2.1-ket-request.xml")).unwrap();
    let r = s.client(None).post(&s.url("/wstep"), "application/soap+xml", ket.into_bytes()).await.unwrap();
    let env = autoenroll_proto::soap::parse_envelope(&r.body).unwrap();
    let f = fault(r.status, &env);
    assert_eq!(f.subcode.as_deref(), Some("ae:UnsupportedRequestType"), "{f:?}");
    let (status, env) = s.soap(ns::ACTION_WSTEP, &account(), wstep::query_request_body("999999"), None).await;
    let f = fault(status, &env);
    assert_eq!(f.subcode.as_deref(), Some("ae:UnknownRequest"));
    assert_eq!(f.detail.unwrap().error_code, 0x8009_4002_u32 as i32, "CERTSRV_E_NO_REQUEST");
}

/// Issue 13, finding 6: the collection-level token is a CMC Full PKI Response as ADCS sends it
/// (MS-WSTEP 4.1.1.2): content type id-cct-PKIResponse, status "Issued" with the certificate's
/// hash, signed by the issuing CA — verified by openssl, not by our own code.
#[tokio::test]
async fn the_response_token_is_a_cmc_full_pki_response_openssl_verifies() {
    autoenroll_test_support::require_tool("openssl", "openssl");
    let s = TestServer::start().await;
    let (cert, r) = issue(&s, &account(), &csr("cmc-dev")).await.unwrap();
    let cmc = r.chain_pkcs7_der.unwrap();
    let dir = s.dir.path();
    let content = openssl_cms_verify(&s, &cmc, "cmc");
    let out = Command::new("openssl")
        .args(["cms", "-cmsout", "-print", "-inform", "DER", "-in"])
        .arg(dir.join("cmc.der"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("eContentType: id-cct-PKIResponse"), "{text}");
    // The PKIResponse: statusInfo success for body part 1, "Issued", and the SHA-1 of the
    // certificate in Microsoft's add-attributes control.
    let sha1 = hex::decode(autoenroll_core::Thumbprint::of_der(&cert).as_str()).unwrap();
    assert_eq!(content, autoenroll_core::pki::cmc::issued_response(&sha1).unwrap());
    assert!(content.windows(6).any(|w| w == b"Issued"));
    // Clients reading it as a PKCS#7 find the certificate and the chain.
    let certs = pkcs7::certificates(&cmc).unwrap();
    assert!(certs.contains(&cert) && certs.contains(&s.ra.chain_der()[0]) && certs.contains(&s.ra.chain_der()[1]));
}

/// Issue 13, finding 6: a request held for approval answers as ADCS does — "Taken Under
/// Submission", a reference to poll, the RequestID, and an RSTR-level CMC response whose
/// status is pending (RFC 5272: cMCStatus 3 with pendInfo) — signed by the issuing CA and
/// verified by openssl; polling before approval answers the same way.
#[tokio::test]
async fn a_held_request_answers_with_a_cmc_pending_response_openssl_verifies() {
    autoenroll_test_support::require_tool("openssl", "openssl");
    let s = TestServer::start().await;
    let held = TemplateSpec { pend_all: Some(true), ..Default::default() };
    s.ra.update_template(autoenroll_server::ra::LOCAL_ADMIN, "Machine", &held).await.unwrap();
    let (status, env) =
        s.soap(ns::ACTION_WSTEP, &account(), wstep::issue_request_body(&csr("held-dev"), &[]), None).await;
    assert_eq!(status, 200);
    let first = wstep::parse_response(&env.body).unwrap();
    let (_, env) =
        s.soap(ns::ACTION_WSTEP, &account(), wstep::query_request_body(first.request_id.as_ref().unwrap()), None).await;
    let polled = wstep::parse_response(&env.body).unwrap();
    for r in [first, polled] {
        assert_eq!(r.disposition.as_deref(), Some("Taken Under Submission"));
        assert_eq!(r.pending_reference.as_deref(), Some(s.url("/wstep").as_str()));
        assert!(r.certificate_der.is_none());
        let id: u32 = r.request_id.unwrap().parse().unwrap();
        let cmc = r.chain_pkcs7_der.expect("an RSTR-level token");
        openssl_cms_verify(&s, &cmc, "pending");
        let out = Command::new("openssl")
            .args(["asn1parse", "-inform", "DER", "-in"])
            .arg(s.dir.path().join("pending-content.der"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        // openssl's own reading of the content: id-cmc-statusInfo, status 3 (pending), body
        // part 1, the disposition text, and pendInfo's token (the request id, little-endian).
        assert!(text.contains(":1.3.6.1.5.5.7.7.1") || text.contains("id-cmc-statusInfo"), "{text}");
        let status_line = text.lines().any(|l| l.contains("INTEGER") && l.contains(":03"));
        assert!(status_line, "cMCStatus pending (3): {text}");
        assert!(text.contains(":Taken Under Submission"), "{text}");
        assert!(text.contains(&format!("[HEX DUMP]:{}", hex::encode_upper(id.to_le_bytes()))), "{text}");
        assert!(text.contains("GENERALIZEDTIME"), "{text}");
    }
}

/// openssl's verdict on a CMS message signed by the issuing CA, against our root: asserts it
/// verifies and returns the signed content (also left in `<name>-content.der`).
fn openssl_cms_verify(s: &TestServer, cms: &[u8], name: &str) -> Vec<u8> {
    let dir = s.dir.path();
    let (input, content) = (dir.join(format!("{name}.der")), dir.join(format!("{name}-content.der")));
    std::fs::write(&input, cms).unwrap();
    let out = Command::new("openssl")
        .args(["cms", "-verify", "-inform", "DER", "-in"])
        .arg(&input)
        .arg("-CAfile")
        .arg(s.root_pem())
        .args(["-purpose", "any", "-out"])
        .arg(&content)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Verification successful"));
    std::fs::read(content).unwrap()
}
