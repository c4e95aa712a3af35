//! Revocation on loopback: issued certificates name the CRL and the issuing CA; a revoked
//! certificate is in the CRL at once (verified and read by openssl, which then refuses the
//! certificate and accepts a good one); two RA instances on one database never publish the same
//! CRL number and the newest CRL wins.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use crate::common;

use autoenroll_server::ra::Ra;
use common::{issue, TestServer};
use std::path::Path;
use std::process::Command;

fn pem(label: &str, der: &[u8]) -> String {
    der::pem::encode_string(label, der::pem::LineEnding::LF, der).unwrap()
}

fn openssl(args: &[&str], dir: &Path) -> (bool, String) {
    autoenroll_test_support::require_tool("openssl", "openssl");
    let out = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

fn crl_number(der_bytes: &[u8]) -> u64 {
    use der::Decode;
    let crl = x509_cert::crl::CertificateList::<x509_cert::certificate::Rfc5280>::from_der(der_bytes).unwrap();
    let ext = crl
        .tbs_cert_list
        .crl_extensions
        .unwrap()
        .into_iter()
        .find(|e| e.extn_id == autoenroll_core::oids::CE_CRL_NUMBER)
        .unwrap();
    let n = der::asn1::Uint::from_der(ext.extn_value.as_bytes()).unwrap();
    n.as_bytes().iter().fold(0u64, |a, b| (a << 8) | u64::from(*b))
}

#[tokio::test]
async fn revoked_certificates_are_in_the_crl_and_openssl_refuses_them() {
    let ts = TestServer::start().await;
    let good = issue(&ts.ra, "good-device").await;
    let bad = issue(&ts.ra, "lost-device").await;
    let dir = ts.dir.path();
    std::fs::write(dir.join("good.pem"), pem("CERTIFICATE", &good)).unwrap();
    std::fs::write(dir.join("bad.pem"), pem("CERTIFICATE", &bad)).unwrap();
    // The certificate points at the CRL and the issuing CA over plain HTTP (CryptoAPI fetches
    // neither over https), and both are served there.
    let (_, text) = openssl(&["x509", "-in", "good.pem", "-noout", "-text"], dir);
    assert!(ts.http_base.starts_with("http://127.0.0.1:"), "{}", ts.http_base);
    let crl_url = format!("{}/crl", ts.http_base);
    assert!(text.contains(&format!("URI:{crl_url}")), "{text}");
    assert!(text.contains(&format!("CA Issuers - URI:{}/ca/issuing.crt", ts.http_base)), "{text}");
    let http = |url: String| tokio::task::spawn_blocking(move || autoenroll_test_support::bin::http_get(&url));
    let (status, issuing) = http(format!("{}/ca/issuing.crt", ts.http_base)).await.unwrap();
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(issuing, *ts.ra.issuing_der());

    let serial = autoenroll_core::pki::CertFacts::parse(&bad).unwrap().serial.0;
    ts.ra.revoke(autoenroll_server::ra::LOCAL_ADMIN, &serial, "keyCompromise".parse().unwrap()).await.unwrap();
    let (status, crl) = http(crl_url.clone()).await.unwrap();
    assert!(status.contains(" 200 "), "{status}");
    std::fs::write(dir.join("crl.der"), &crl).unwrap();
    std::fs::copy(ts.issuing_pem(), dir.join("issuing.pem")).unwrap();
    std::fs::copy(ts.root_pem(), dir.join("root.pem")).unwrap();
    let chain = std::fs::read_to_string(dir.join("issuing.pem")).unwrap()
        + &std::fs::read_to_string(dir.join("root.pem")).unwrap();
    std::fs::write(dir.join("chain.pem"), chain).unwrap();
    let (ok, text) =
        openssl(&["crl", "-inform", "DER", "-in", "crl.der", "-CAfile", "chain.pem", "-noout", "-text"], dir);
    assert!(ok && text.contains("verify OK"), "openssl crl -verify: {text}");
    assert!(text.to_ascii_lowercase().contains(&serial.to_ascii_lowercase()), "{serial} not listed: {text}");
    assert!(text.contains("Key Compromise"), "{text}");
    let (_, pem_crl) = openssl(&["crl", "-inform", "DER", "-in", "crl.der"], dir);
    std::fs::write(dir.join("crl.pem"), pem_crl).unwrap();
    for (cert, expect_ok) in [("good.pem", true), ("bad.pem", false)] {
        let (ok, text) = openssl(
            &["verify", "-crl_check", "-CRLfile", "crl.pem", "-CAfile", "root.pem", "-untrusted", "issuing.pem", cert],
            dir,
        );
        assert_eq!(ok, expect_ok, "{cert}: {text}");
        if !expect_ok {
            assert!(text.contains("certificate revoked"), "{text}");
        }
    }

    // OCSP: openssl writes the requests (with a nonce), we answer over POST and GET, openssl
    // verifies the responses against the chain and reads the status.
    let (_, text) = openssl(&["x509", "-in", "good.pem", "-noout", "-text"], dir);
    assert!(text.contains(&format!("OCSP - URI:{}/ocsp", ts.http_base)), "{text}");
    for (cert, expect, method) in [("good.pem", "good", "POST"), ("bad.pem", "revoked", "GET")] {
        let (ok, text) = openssl(&["ocsp", "-issuer", "issuing.pem", "-cert", cert, "-reqout", "req.der"], dir);
        assert!(ok, "{text}");
        let req = std::fs::read(dir.join("req.der")).unwrap();
        let r = if method == "POST" {
            ts.client(None).post(&format!("{}/ocsp", ts.base), "application/ocsp-request", req).await.unwrap()
        } else {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::STANDARD.encode(&req);
            let enc = b64.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D");
            ts.client(None).get(&format!("{}/ocsp/{enc}", ts.base)).await.unwrap()
        };
        assert_eq!(r.status, 200);
        std::fs::write(dir.join("resp.der"), &r.body).unwrap();
        // The signature verifies and the nonce of openssl's request comes back...
        let (ok, text) = openssl(&["ocsp", "-reqin", "req.der", "-respin", "resp.der", "-CAfile", "chain.pem"], dir);
        assert!(ok && text.contains("Response verify OK") && !text.contains("WARNING"), "{cert}: {text}");
        // ...and the status for the certificate is the inventory's.
        let (ok, text) = openssl(
            &[
                "ocsp",
                "-respin",
                "resp.der",
                "-issuer",
                "issuing.pem",
                "-cert",
                cert,
                "-CAfile",
                "chain.pem",
                "-no_nonce",
            ],
            dir,
        );
        assert!(ok && text.contains(&format!("{cert}: {expect}")), "{cert}: {text}");
    }
    // Garbage gets an unsigned malformedRequest, and the server keeps serving.
    let r =
        ts.client(None).post(&format!("{}/ocsp", ts.base), "application/ocsp-request", b"junk".to_vec()).await.unwrap();
    assert_eq!(r.body, vec![0x30, 0x03, 0x0a, 0x01, 0x01]);
    let r = ts.client(None).get(&format!("{}/ocsp/%%%not-base64", ts.base)).await.unwrap();
    assert_eq!(r.body, vec![0x30, 0x03, 0x0a, 0x01, 0x01], "bad base64 in a GET is malformedRequest too");
    assert!(http(crl_url).await.unwrap().0.contains(" 200 "), "the server keeps serving");
}

#[tokio::test]
async fn replicas_never_share_a_crl_number_and_the_newest_wins() {
    let ts = TestServer::start().await;
    // A second RA on the same data directory and database: another replica.
    let cfg = autoenroll_server::config::RawConfig {
        data_dir: Some(ts.dir.path().join("data")),
        listen: Some("127.0.0.1:0".into()),
        ..Default::default()
    }
    .validate()
    .unwrap();
    let other = Ra::open(cfg.ra, ts.ra.clock()).await.unwrap();
    let mut numbers = Vec::new();
    for _ in 0..5 {
        let (a, b) = tokio::join!(ts.ra.publish_crl(), other.publish_crl());
        numbers.push(crl_number(&a.unwrap()));
        numbers.push(crl_number(&b.unwrap()));
    }
    let newest = crl_number(&ts.ra.crl().await.unwrap());
    assert_eq!(newest, *numbers.iter().max().unwrap(), "the stored CRL is the newest: {numbers:?}");
    // Ten publications took ten numbers from the shared counter.
    assert!(newest >= 10, "ten publications, ten numbers: newest {newest}");
}

/// Issue 13, finding 3: every certificate names the plain-HTTP CRL and CA URLs — also those
/// issued by another process on the same database (the command line approving a request), and
/// the listener's own; the listener's certificate names the public URL's host.
#[tokio::test]
async fn every_process_names_the_servers_http_urls() {
    let ts = TestServer::start_with(|c| c.public_url = Some("https://ca.example.test:8443".into())).await;
    let http = ts.http_base.clone();
    assert!(http.starts_with("http://ca.example.test:"), "{http}");
    let listener = std::fs::read(ts.dir.path().join("data/tls/server.pem")).unwrap();
    let chain = x509_cert::Certificate::load_pem_chain(&listener).unwrap();
    let facts = autoenroll_core::pki::CertFacts::parse(&der::Encode::to_der(&chain[0]).unwrap()).unwrap();
    assert!(facts.dns_names.iter().any(|n| n == "ca.example.test"), "{:?}", facts.dns_names);
    let text = |der: &[u8]| {
        let dir = ts.dir.path();
        std::fs::write(dir.join("x.pem"), pem("CERTIFICATE", der)).unwrap();
        openssl(&["x509", "-in", "x.pem", "-noout", "-text"], dir).1
    };
    assert!(text(&der::Encode::to_der(&chain[0]).unwrap()).contains(&format!("URI:{http}/crl")), "the listener's too");
    let cli = autoenroll_server::config::RawConfig { data_dir: Some(ts.dir.path().join("data")), ..Default::default() }
        .validate()
        .unwrap();
    let other = Ra::open(cli.ra.clone(), ts.ra.clock()).await.unwrap();
    let cert = issue(&other, "cli-issued").await;
    assert!(text(&cert).contains(&format!("URI:{http}/crl")), "{}", text(&cert));
}

/// Issue 13, finding 3: the issuing CA certificate points chain builders at the root (AIA
/// caIssuers) and at the root's CRL (CDP), over plain HTTP, and both are served there; openssl
/// then checks revocation of the whole chain (`-crl_check_all`) from what it downloaded.
#[tokio::test]
async fn the_issuing_ca_names_the_root_and_its_crl_and_openssl_checks_the_whole_chain() {
    let ts = TestServer::start().await;
    let leaf = issue(&ts.ra, "chain-device").await;
    let dir = ts.dir.path();
    let http = |url: String| tokio::task::spawn_blocking(move || autoenroll_test_support::bin::http_get(&url));
    let (status, issuing) = http(format!("{}/ca/issuing.crt", ts.http_base)).await.unwrap();
    assert!(status.contains(" 200 "), "{status}");
    std::fs::write(dir.join("issuing-dl.pem"), pem("CERTIFICATE", &issuing)).unwrap();
    let (_, text) = openssl(&["x509", "-in", "issuing-dl.pem", "-noout", "-text"], dir);
    assert!(text.contains(&format!("CA Issuers - URI:{}/ca/root.crt", ts.http_base)), "{text}");
    assert!(text.contains(&format!("URI:{}/crl/root", ts.http_base)), "{text}");
    assert!(!text.contains("OCSP - URI"), "our responder answers for end entities only: {text}");
    assert_eq!(std::fs::read(ts.issuing_pem()).unwrap(), pem("CERTIFICATE", &issuing).into_bytes(), "on disk too");

    let (status, root) = http(format!("{}/ca/root.crt", ts.http_base)).await.unwrap();
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(root, ts.ra.root_der());
    let (status, root_crl) = http(format!("{}/crl/root", ts.http_base)).await.unwrap();
    assert!(status.contains(" 200 "), "{status}");
    let (status, crl) = http(format!("{}/crl", ts.http_base)).await.unwrap();
    assert!(status.contains(" 200 "), "{status}");
    std::fs::write(dir.join("root-dl.pem"), pem("CERTIFICATE", &root)).unwrap();
    std::fs::write(dir.join("root.crl"), &root_crl).unwrap();
    std::fs::write(dir.join("root-crl.pem"), pem("X509 CRL", &root_crl)).unwrap();
    std::fs::write(dir.join("issuing-crl.pem"), pem("X509 CRL", &crl)).unwrap();
    std::fs::write(dir.join("leaf.pem"), pem("CERTIFICATE", &leaf)).unwrap();
    let (ok, out) =
        openssl(&["crl", "-inform", "DER", "-in", "root.crl", "-CAfile", "root-dl.pem", "-noout", "-nextupdate"], dir);
    assert!(ok && out.contains("verify OK"), "the root signed its CRL: {out}");
    let (ok, out) = openssl(
        &[
            "verify",
            "-crl_check_all",
            "-CAfile",
            "root-dl.pem",
            "-untrusted",
            "issuing-dl.pem",
            "-CRLfile",
            "root-crl.pem",
            "-CRLfile",
            "issuing-crl.pem",
            "leaf.pem",
        ],
        dir,
    );
    assert!(ok && out.contains("leaf.pem: OK"), "{out}");
    // Without the root's CRL the same check cannot finish: the CDP is what makes it possible.
    let (ok, out) = openssl(
        &[
            "verify",
            "-crl_check_all",
            "-CAfile",
            "root-dl.pem",
            "-untrusted",
            "issuing-dl.pem",
            "-CRLfile",
            "issuing-crl.pem",
            "leaf.pem",
        ],
        dir,
    );
    assert!(!ok && out.contains("unable to get certificate CRL"), "{out}");
}
