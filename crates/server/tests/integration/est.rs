//! EST (RFC 7030) driven by the command-line tools an administrator has when there is no EST
//! client (Debian packages none): curl for the HTTP, openssl for keys, requests, base64 and
//! PKCS#7. Nothing here is our code on the client side. (Multi-threaded: curl and openssl run
//! blocking on one worker while the server answers on the other.)
#![allow(clippy::unwrap_used, clippy::expect_used)]
use crate::common::*;
use autoenroll_core::model::CertState;
use autoenroll_core::pki::CertFacts;
use autoenroll_server::ra::TemplateSpec;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Answer {
    status: u16,
    headers: String,
    body: PathBuf,
}

/// `curl` with the server's root as its only trust anchor; `args` add credentials and a body.
fn curl(s: &TestServer, dir: &Path, path: &str, args: &[&str]) -> Answer {
    autoenroll_test_support::require_tool("curl", "curl");
    let body = dir.join(format!("answer-{}", rand_suffix()));
    let headers = dir.join("headers");
    let out = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(s.root_pem())
        .arg("-o")
        .arg(&body)
        .arg("-D")
        .arg(&headers)
        .args(["-w", "%{http_code}"])
        .args(args)
        .arg(s.url(path))
        .output()
        .unwrap();
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    let status = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    Answer { status, headers: std::fs::read_to_string(&headers).unwrap().to_ascii_lowercase(), body }
}

fn rand_suffix() -> String {
    hex::encode(autoenroll_keys::random_bytes(6).unwrap())
}

fn openssl(args: &[&str]) -> String {
    autoenroll_test_support::require_tool("openssl", "openssl");
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A P-256 key and a base64 PKCS#10 for `cn`, made by openssl.
fn request(dir: &Path, name: &str, cn: &str, key: Option<&Path>) -> (PathBuf, PathBuf) {
    let key_path = key.map(Path::to_path_buf).unwrap_or_else(|| dir.join(format!("{name}.key")));
    if key.is_none() {
        openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", p(&key_path)]);
    }
    let der = dir.join(format!("{name}.csr.der"));
    let b64 = dir.join(format!("{name}.csr.b64"));
    openssl(&["req", "-new", "-key", p(&key_path), "-subj", &format!("/CN={cn}"), "-outform", "DER", "-out", p(&der)]);
    openssl(&["base64", "-in", p(&der), "-out", p(&b64)]);
    (key_path, b64)
}

/// The certificates of a base64 certs-only PKCS#7 answer, as PEM (openssl decodes it).
fn certificates(dir: &Path, answer: &Answer) -> String {
    let der = dir.join(format!("p7-{}.der", rand_suffix()));
    openssl(&["base64", "-d", "-in", p(&answer.body), "-out", p(&der)]);
    openssl(&["pkcs7", "-inform", "DER", "-in", p(&der), "-print_certs"])
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    let block = pem.split("-----BEGIN CERTIFICATE-----").nth(1).unwrap().split("-----END").next().unwrap();
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(block.split_whitespace().collect::<String>()).unwrap()
}

/// `simplereenroll` of `csr`, authenticated by the TLS client certificate `cert` with `key`.
fn reenroll(s: &TestServer, dir: &Path, cert: &Path, key: &Path, csr: &Path) -> Answer {
    let data = format!("@{}", p(csr));
    let args = ["--cert", p(cert), "--key", p(key), "-H", "Content-Type: application/pkcs10", "--data-binary", &data];
    curl(s, dir, "/.well-known/est/simplereenroll", &args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cacerts_and_csrattrs_read_by_openssl() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = curl(&s, dir.path(), "/.well-known/est/cacerts", &[]);
    assert_eq!(a.status, 200);
    assert!(a.headers.contains("content-type: application/pkcs7-mime"), "{}", a.headers);
    assert!(a.headers.contains("content-transfer-encoding: base64"), "{}", a.headers);
    let pems = certificates(dir.path(), &a);
    let root_pem = std::fs::read_to_string(s.root_pem()).unwrap();
    assert!(pems.contains(root_pem.trim()), "the root is in cacerts:\n{pems}");
    assert_eq!(pems.matches("BEGIN CERTIFICATE").count(), 2, "issuing CA and root");

    // csrattrs for the default template (P-256): the key type with its curve, and the signature.
    let a = curl(&s, dir.path(), "/.well-known/est/csrattrs", &[]);
    assert_eq!(a.status, 200);
    assert!(a.headers.contains("content-type: application/csrattrs"), "{}", a.headers);
    let der = dir.path().join("attrs.der");
    openssl(&["base64", "-d", "-in", p(&a.body), "-out", p(&der)]);
    let parsed = openssl(&["asn1parse", "-inform", "DER", "-in", p(&der)]);
    // The extended key usages travel as an extensionRequest holding an extKeyUsage extension
    // (RFC 9908 section 3.2's form).
    for oid in ["id-ecPublicKey", "prime256v1", "ecdsa-with-SHA256", "Extension Request", "X509v3 Extended Key Usage"] {
        assert!(parsed.contains(oid), "{oid} in\n{parsed}");
    }
    let template = s.ra.template(s.ra.default_template()).await.unwrap();
    let attrs = autoenroll_proto::est::decode_csr_attrs(&std::fs::read(&der).unwrap()).unwrap();
    assert_eq!(attrs.ekus, template.ekus.iter().map(|e| e.oid()).collect::<Vec<_>>());
    assert!(!attrs.ekus.is_empty());
    // An RSA template asks for RSA.
    let rsa = TemplateSpec { key_algorithm: Some("rsa2048".into()), ..Default::default() };
    s.ra.create_template("EstRsa", &rsa).await.unwrap();
    let a = curl(&s, dir.path(), "/.well-known/est/EstRsa/csrattrs", &[]);
    openssl(&["base64", "-d", "-in", p(&a.body), "-out", p(&der)]);
    let parsed = openssl(&["asn1parse", "-inform", "DER", "-in", p(&der)]);
    assert!(parsed.contains("rsaEncryption") && parsed.contains("sha256WithRSAEncryption"), "{parsed}");
    // An unknown label is a 404 with the reason.
    let a = curl(&s, dir.path(), "/.well-known/est/Nope/csrattrs", &[]);
    assert_eq!(a.status, 404);
    assert!(std::fs::read_to_string(&a.body).unwrap().contains("UnknownTemplate"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_with_an_account_then_reenroll_with_the_certificate() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Ten-minute certificates, renewable in their last three minutes.
    let spec = TemplateSpec { validity_secs: Some(600), renewal_secs: Some(180), ..Default::default() };
    s.ra.create_template("EstShort", &spec).await.unwrap();
    let user = format!("enroller:{PASSWORD}");

    let (key, csr) = request(d, "first", "est-dev1", None);
    let data = format!("@{}", p(&csr));
    let ct = "Content-Type: application/pkcs10";
    let a = curl(&s, d, "/.well-known/est/EstShort/simpleenroll", &["--user", &user, "-H", ct, "--data-binary", &data]);
    assert_eq!(a.status, 200, "{}", std::fs::read_to_string(&a.body).unwrap_or_default());
    assert!(a.headers.contains("application/pkcs7-mime; smime-type=certs-only"), "{}", a.headers);
    let cert_pem = certificates(d, &a);
    let cert = d.join("first.pem");
    std::fs::write(&cert, &cert_pem).unwrap();
    let at = s.now().to_string();
    let verified =
        openssl(&["verify", "-CAfile", p(&s.root_pem()), "-untrusted", p(&s.issuing_pem()), "-attime", &at, p(&cert)]);
    assert!(verified.contains(": OK"), "{verified}");
    let first = CertFacts::parse(&pem_to_der(&cert_pem)).unwrap();
    assert_eq!(first.subject_cn.as_deref(), Some("est-dev1"));
    // In the inventory like any other enrollment: the device, the template, the state.
    let held = s.ra.certificates(100).await.unwrap();
    let row = held.iter().find(|c| c.serial == first.serial.0).unwrap();
    assert_eq!((row.device.as_str(), row.template.as_str(), row.state), ("est-dev1", "EstShort", CertState::Issued));

    // Too early to renew: the server's renewal window applies to EST as to WSTEP and SCEP.
    let (_, early) = request(d, "early", "est-dev1", None);
    let a = reenroll(&s, d, &cert, &key, &early);
    assert_eq!(a.status, 403, "{}", std::fs::read_to_string(&a.body).unwrap_or_default());
    assert!(std::fs::read_to_string(&a.body).unwrap().contains("OutsideRenewalWindow"));

    // Inside the window: a new key, the same name, authenticated by the certificate itself.
    s.clock.set(first.not_after.0 - 100);
    let (second_key, renewal) = request(d, "second", "est-dev1", None);
    let a = reenroll(&s, d, &cert, &key, &renewal);
    assert_eq!(a.status, 200, "{}", std::fs::read_to_string(&a.body).unwrap_or_default());
    let second = CertFacts::parse(&pem_to_der(&certificates(d, &a))).unwrap();
    assert_ne!(second.serial, first.serial);
    assert_eq!(second.subject_cn.as_deref(), Some("est-dev1"));
    let held = s.ra.certificates(100).await.unwrap();
    let old = held.iter().find(|c| c.serial == first.serial.0).unwrap();
    assert_eq!(old.state, CertState::Renewed, "the predecessor is retired");
    // Asked again with the same key (a client that lost the answer), the server hands back
    // the one successor it has, never a second one.
    let (_, again) = request(d, "third", "est-dev1", Some(&second_key));
    let a = reenroll(&s, d, &cert, &key, &again);
    assert_eq!(a.status, 200, "{}", std::fs::read_to_string(&a.body).unwrap_or_default());
    let retried = CertFacts::parse(&pem_to_der(&certificates(d, &a))).unwrap();
    assert_eq!(retried.serial, second.serial, "the same successor");
    let live = s.ra.certificates(100).await.unwrap();
    let live = live.iter().filter(|c| c.device == "est-dev1" && c.state == CertState::Issued).count();
    assert_eq!(live, 1, "one live certificate for the device");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_http_statuses_with_the_reason() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_, csr) = request(d, "r", "est-refused", None);
    let data = format!("@{}", p(&csr));
    let ct = "Content-Type: application/pkcs10";
    let body = |a: &Answer| std::fs::read_to_string(&a.body).unwrap_or_default();

    // No credentials: 401 and the Basic challenge RFC 7030 section 3.2.3 lets clients answer.
    let a = curl(&s, d, "/.well-known/est/simpleenroll", &["-H", ct, "--data-binary", &data]);
    assert_eq!(a.status, 401, "{}", body(&a));
    assert!(a.headers.contains("www-authenticate: basic realm=\"autoenroll est\""), "{}", a.headers);
    // A wrong password.
    let a =
        curl(&s, d, "/.well-known/est/simpleenroll", &["--user", "enroller:wrong", "-H", ct, "--data-binary", &data]);
    assert_eq!(a.status, 401, "{}", body(&a));
    let user = format!("enroller:{PASSWORD}");
    // Not base64; not a PKCS#10; another media type.
    let a = curl(&s, d, "/.well-known/est/simpleenroll", &["--user", &user, "-H", ct, "--data-binary", "%%%"]);
    assert_eq!((a.status, body(&a).contains("BadCsr")), (400, true), "{}", body(&a));
    let a = curl(&s, d, "/.well-known/est/simpleenroll", &["--user", &user, "-H", ct, "--data-binary", "AAAA"]);
    assert_eq!((a.status, body(&a).contains("BadCsr")), (400, true), "{}", body(&a));
    let json = "Content-Type: application/json";
    let a = curl(&s, d, "/.well-known/est/simpleenroll", &["--user", &user, "-H", json, "--data-binary", &data]);
    assert_eq!(a.status, 400, "{}", body(&a));
    // A body far beyond any request.
    let big = d.join("big");
    std::fs::write(&big, "A".repeat(200_000)).unwrap();
    let big_arg = format!("@{}", p(&big));
    // `Expect: 100-continue`: curl waits for the server's answer (413, from the length alone)
    // before sending a body the server would not read; on a loaded machine longer than curl's
    // default second, after which it would send the body into a closing connection.
    let big_args = [
        "--http1.1",
        "-H",
        "Expect: 100-continue",
        "--expect100-timeout",
        "60",
        "--user",
        &user,
        "-H",
        ct,
        "--data-binary",
        &big_arg,
    ];
    let a = curl(&s, d, "/.well-known/est/simpleenroll", &big_args);
    assert_eq!(a.status, 413, "{}", body(&a));
    // Re-enrollment needs the certificate being renewed on the connection.
    let a = curl(&s, d, "/.well-known/est/simplereenroll", &["--user", &user, "-H", ct, "--data-binary", &data]);
    assert_eq!(a.status, 401, "{}", body(&a));
    // A template whose grants do not name the account: refused, with the reason.
    let certs_only = TemplateSpec { grants: Some("holder:Machine".into()), ..Default::default() };
    s.ra.create_template("HoldersOnly", &certs_only).await.unwrap();
    let args = ["--user", &user, "-H", ct, "--data-binary", &data];
    let a = curl(&s, d, "/.well-known/est/HoldersOnly/simpleenroll", &args);
    assert_eq!((a.status, body(&a).contains("NotPermitted")), (403, true), "{}", body(&a));
    // The address names the template: a request naming another one (Microsoft's template
    // extension, as openssl adds it) is refused, not served with the one it names.
    let named = d.join("named.csr.der");
    let named_b64 = d.join("named.csr.b64");
    let key = d.join("r.key");
    openssl(&[
        "req",
        "-new",
        "-key",
        p(&key),
        "-subj",
        "/CN=est-refused",
        "-addext",
        "1.3.6.1.4.1.311.20.2=ASN1:BMPSTRING:WebServer",
        "-outform",
        "DER",
        "-out",
        p(&named),
    ]);
    openssl(&["base64", "-in", p(&named), "-out", p(&named_b64)]);
    let data = format!("@{}", p(&named_b64));
    let args = ["--user", &user, "-H", ct, "--data-binary", &data];
    let a = curl(&s, d, "/.well-known/est/Machine/simpleenroll", &args);
    assert_eq!((a.status, body(&a).contains("names template WebServer")), (400, true), "{}", body(&a));
    // The server still serves.
    assert_eq!(curl(&s, d, "/.well-known/est/cacerts", &[]).status, 200);
}

/// RFC 7030 section 4.2.3: after 202 the client sends the same request again; it gets that
/// request's answer (still waiting; then the certificate an administrator approved), and the
/// approval queue holds one request, not one per retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_request_sent_again_is_answered_not_queued_again() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let held = TemplateSpec { pend_all: Some(true), ..Default::default() };
    s.ra.create_template("EstHeld", &held).await.unwrap();
    let user = format!("enroller:{PASSWORD}");
    let (_, csr) = request(d, "held", "est-held1", None);
    let data = format!("@{}", p(&csr));
    let args = ["--user", &user, "-H", "Content-Type: application/pkcs10", "--data-binary", &data];
    let path = "/.well-known/est/EstHeld/simpleenroll";
    let pending = || async { s.ra.requests(autoenroll_core::model::RequestStatus::Pending, 100).await.unwrap() };
    for _ in 0..2 {
        let a = curl(&s, d, path, &args);
        assert_eq!(a.status, 202, "{}", std::fs::read_to_string(&a.body).unwrap_or_default());
        assert!(a.headers.contains("retry-after: "), "{}", a.headers);
        assert_eq!(pending().await.len(), 1, "one request in the queue");
    }
    let id = pending().await[0].id;
    let approved = s.ra.approve(autoenroll_server::ra::LOCAL_ADMIN, id).await.unwrap();
    let a = curl(&s, d, path, &args);
    assert_eq!(a.status, 200, "{}", std::fs::read_to_string(&a.body).unwrap_or_default());
    let cert = CertFacts::parse(&pem_to_der(&certificates(d, &a))).unwrap();
    assert_eq!(cert.serial.0, approved.serial, "the approved certificate");
    // Another key is another request.
    let (_, other) = request(d, "held2", "est-held1", None);
    let data = format!("@{}", p(&other));
    let args = ["--user", &user, "-H", "Content-Type: application/pkcs10", "--data-binary", &data];
    assert_eq!(curl(&s, d, path, &args).status, 202);
    assert_eq!(pending().await.len(), 1);
    // Denied: the retry hears it.
    let id = pending().await[0].id;
    s.ra.deny(autoenroll_server::ra::LOCAL_ADMIN, id, "not this one").await.unwrap();
    let a = curl(&s, d, path, &args);
    assert_eq!(a.status, 403, "{}", std::fs::read_to_string(&a.body).unwrap_or_default());
    assert!(std::fs::read_to_string(&a.body).unwrap().contains("RequestDenied"));
}

/// A device enrolling with a bootstrap token (`Authorization: Bearer`) on a template that holds
/// requests: the token pays for the request; repeating it with the spent token collects the
/// answer; the spent token buys nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_request_paid_by_a_token_is_collected_with_the_spent_token() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    s.ra.create_template("EstHeldToken", &TemplateSpec { pend_all: Some(true), ..Default::default() }).await.unwrap();
    let spec = autoenroll_server::ra::TokenSpec { device: "est-token1", template: Some("EstHeldToken"), ttl_secs: 600 };
    let (token, _) = s.ra.create_token(&spec).await.unwrap();
    let bearer = format!("Authorization: Bearer {token}");
    let (_, csr) = request(d, "token", "est-token1", None);
    let data = format!("@{}", p(&csr));
    let args = ["-H", &bearer, "-H", "Content-Type: application/pkcs10", "--data-binary", &data];
    let path = "/.well-known/est/EstHeldToken/simpleenroll";
    for _ in 0..2 {
        let a = curl(&s, d, path, &args);
        assert_eq!(a.status, 202, "{}", std::fs::read_to_string(&a.body).unwrap_or_default());
    }
    let pending = s.ra.requests(autoenroll_core::model::RequestStatus::Pending, 100).await.unwrap();
    assert_eq!(pending.len(), 1);
    let approved = s.ra.approve(autoenroll_server::ra::LOCAL_ADMIN, pending[0].id).await.unwrap();
    let a = curl(&s, d, path, &args);
    assert_eq!(a.status, 200, "{}", std::fs::read_to_string(&a.body).unwrap_or_default());
    assert_eq!(CertFacts::parse(&pem_to_der(&certificates(d, &a))).unwrap().serial.0, approved.serial);
    // Another key with the spent token: a new request, which the token no longer pays for.
    let (_, other) = request(d, "token2", "est-token1", None);
    let data = format!("@{}", p(&other));
    let args = ["-H", &bearer, "-H", "Content-Type: application/pkcs10", "--data-binary", &data];
    let a = curl(&s, d, path, &args);
    let text = std::fs::read_to_string(&a.body).unwrap_or_default();
    assert_eq!((a.status, text.contains("TokenUsed")), (401, true), "{text}");
    // An unused token past its expiry pays for nothing either, and says so.
    let spec = autoenroll_server::ra::TokenSpec { device: "est-token2", template: Some("EstHeldToken"), ttl_secs: 600 };
    let (late, _) = s.ra.create_token(&spec).await.unwrap();
    s.clock.advance(601);
    let late = format!("Authorization: Bearer {late}");
    let (_, csr) = request(d, "token3", "est-token2", None);
    let data = format!("@{}", p(&csr));
    let a = curl(&s, d, path, &["-H", &late, "-H", "Content-Type: application/pkcs10", "--data-binary", &data]);
    let text = std::fs::read_to_string(&a.body).unwrap_or_default();
    assert_eq!((a.status, text.contains("TokenExpired")), (401, true), "{text}");
}

/// `serverkeygen` (RFC 7030 section 4.4): the server makes the key (the template's algorithm),
/// and answers multipart/mixed with the key as PKCS#8 and the certificate. openssl reads both
/// and finds the certificate is for that key; the database holds no copy of the key; a template
/// that holds requests for approval is refused (the key could never be collected).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serverkeygen_returns_a_key_of_the_template_and_its_certificate_and_keeps_no_copy() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rsa = TemplateSpec { key_algorithm: Some("rsa3072".into()), ..Default::default() };
    s.ra.create_template("EstRsa", &rsa).await.unwrap();
    let user = format!("enroller:{PASSWORD}");
    // The client's request names the device; its own key is not the certificate's.
    let (client_key, csr) = request(d, "keygen", "est-keygen1", None);
    let data = format!("@{}", p(&csr));
    let args = ["--user", &user, "-H", "Content-Type: application/pkcs10", "--data-binary", &data];
    let a = curl(&s, d, "/.well-known/est/EstRsa/serverkeygen", &args);
    let body = std::fs::read_to_string(&a.body).unwrap();
    assert_eq!(a.status, 200, "{body}");
    let boundary = a.headers.split("boundary=").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    // The parts: headers, a blank line, base64 (multipart is split by its boundary lines).
    let parts: Vec<(String, String)> = body
        .split(&format!("--{boundary}"))
        .filter_map(|part| part.split_once("\r\n\r\n"))
        .map(|(head, b64)| (head.to_ascii_lowercase(), b64.split_whitespace().collect::<String>()))
        .collect();
    assert_eq!(parts.len(), 2, "{body}");
    assert!(a.headers.contains("cache-control: no-store"), "{}", a.headers);
    assert!(parts[0].0.contains("content-type: application/pkcs8"), "{}", parts[0].0);
    assert!(parts[1].0.contains("application/pkcs7-mime; smime-type=certs-only"), "{}", parts[1].0);
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let (key_der, p7_der) = (b64.decode(&parts[0].1).unwrap(), b64.decode(&parts[1].1).unwrap());
    std::fs::write(d.join("server.key.der"), &key_der).unwrap();
    std::fs::write(d.join("cert.p7"), &p7_der).unwrap();
    let key_text = openssl(&["pkey", "-inform", "DER", "-in", p(&d.join("server.key.der")), "-noout", "-text"]);
    assert!(key_text.contains("Private-Key: (3072 bit"), "the template's algorithm: {key_text}");
    let key_pub = openssl(&["pkey", "-inform", "DER", "-in", p(&d.join("server.key.der")), "-pubout"]);
    let cert_pem = openssl(&["pkcs7", "-inform", "DER", "-in", p(&d.join("cert.p7")), "-print_certs"]);
    std::fs::write(d.join("cert.pem"), &cert_pem).unwrap();
    let cert_pub = openssl(&["x509", "-in", p(&d.join("cert.pem")), "-noout", "-pubkey"]);
    assert_eq!(key_pub, cert_pub, "the certificate is for the key the server made");
    let client_pub = openssl(&["pkey", "-in", p(&client_key), "-pubout"]);
    assert_ne!(client_pub, cert_pub);
    assert_eq!(CertFacts::parse(&pem_to_der(&cert_pem)).unwrap().subject_cn.as_deref(), Some("est-keygen1"));
    // Nothing of the key in the database (or its WAL).
    for file in ["autoenroll.db", "autoenroll.db-wal"] {
        let bytes = std::fs::read(s.dir.path().join("data").join(file)).unwrap_or_default();
        assert!(!bytes.windows(key_der.len()).any(|w| w == key_der.as_slice()), "{file} holds the key");
    }
    // No key is made for a template whose grants do not name the requester.
    let holders = TemplateSpec { grants: Some("holder:Machine".into()), ..Default::default() };
    s.ra.create_template("EstHolders", &holders).await.unwrap();
    let a = curl(&s, d, "/.well-known/est/EstHolders/serverkeygen", &args);
    assert_eq!(a.status, 403, "{}", std::fs::read_to_string(&a.body).unwrap_or_default());
    // A template that holds requests for approval cannot hand a key out later: refused.
    s.ra.create_template("EstHeldKeygen", &TemplateSpec { pend_all: Some(true), ..Default::default() }).await.unwrap();
    let a = curl(&s, d, "/.well-known/est/EstHeldKeygen/serverkeygen", &args);
    assert_eq!(a.status, 400, "{}", std::fs::read_to_string(&a.body).unwrap_or_default());
}
