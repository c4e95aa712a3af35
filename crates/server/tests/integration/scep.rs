//! SCEP on loopback (HTTPS, the real server, a fake clock): dynamic and static challenges with
//! every refusal in its documented order, renewal signed by our certificate, pending requests
//! with CertPoll, GetCert, and hostile messages that leave the server serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use crate::common;

use autoenroll_core::pki::cert::verify_issued_by;
use autoenroll_core::pki::scep::{MessageType, PkiStatus};
use autoenroll_core::pki::CertFacts;
use autoenroll_keys::envelope::ContentCipher;
use autoenroll_keys::scep_client::{build_request, read_reply, Reply, Request};
use autoenroll_keys::{KeyAlgorithm, KeyPair};
use autoenroll_server::ra::{ChallengeSpec, TemplateSpec};
use common::TestServer;

const BAD_REQUEST: u32 = 2;

struct Client {
    key: KeyPair,
    /// What the client signs with: self-signed at first, then its certificate.
    signer: Vec<u8>,
}

impl Client {
    fn new() -> Client {
        Self::with_key(KeyPair::generate(KeyAlgorithm::Rsa(2048)).unwrap())
    }

    fn with_key(key: KeyPair) -> Client {
        let signer =
            autoenroll_keys::self_signed_cert(&key, autoenroll_keys::cn_name("SCEP SIGNER").unwrap(), 0, 4_000_000_000)
                .unwrap();
        Client { key, signer }
    }

    fn csr(&self, subject: &str, dns: &[&str], challenge: Option<&str>) -> Vec<u8> {
        use std::str::FromStr;
        let name = x509_cert::name::Name::from_str(subject).unwrap();
        let mut exts = vec![];
        if !dns.is_empty() {
            let dns: Vec<String> = dns.iter().map(|s| s.to_string()).collect();
            exts.push(autoenroll_keys::san_extension(&dns, &[]).unwrap());
        }
        match challenge {
            Some(c) => autoenroll_keys::build_csr_with_challenge(&self.key, name, exts, c).unwrap(),
            None => autoenroll_keys::build_csr(&self.key, name, exts).unwrap(),
        }
    }
}

fn ra_cert(ts: &TestServer) -> Vec<u8> {
    ts.ra.scep_certificates()[0].clone()
}

async fn post(ts: &TestServer, path: &str, body: Vec<u8>) -> autoenroll_agent::https::Response {
    let url = ts.url(&format!("{path}?operation=PKIOperation"));
    ts.client(None).post(&url, "application/x-pki-message", body).await.unwrap()
}

async fn send_as(
    ts: &TestServer,
    path: &str,
    c: &Client,
    t: MessageType,
    txid: &str,
    content: &[u8],
    cipher: ContentCipher,
) -> Reply {
    let (msg, nonce) = build_request(&Request {
        message_type: t,
        transaction_id: txid,
        content,
        signer_cert_der: &c.signer,
        signer_key: &c.key,
        ra_cert_der: &ra_cert(ts),
        cipher,
    })
    .unwrap();
    let r = post(ts, path, msg).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let reply = read_reply(&r.body, &c.key).unwrap();
    assert_eq!(reply.signer_cert_der, ra_cert(ts), "CertReps are signed by the RA certificate");
    assert_eq!(reply.recipient_nonce.as_deref(), Some(nonce.as_slice()), "recipientNonce = senderNonce");
    assert_eq!(reply.transaction_id, txid);
    reply
}

async fn send(ts: &TestServer, c: &Client, txid: &str, csr: &[u8]) -> Reply {
    send_as(ts, "/scep", c, MessageType::PkcsReq, txid, csr, ContentCipher::Aes256Cbc).await
}

async fn challenge(ts: &TestServer, device: &str, dns: &[&str]) -> String {
    ts.ra
        .create_challenge(
            autoenroll_server::ra::LOCAL_ADMIN,
            &ChallengeSpec {
                device: device.into(),
                template: "Machine".into(),
                ttl_secs: 3600,
                dns_names: dns.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .0
}

fn refused(r: &Reply, code: &str) {
    assert_eq!(r.status, PkiStatus::Failure, "{r:?}");
    assert_eq!(r.fail_info, Some(BAD_REQUEST), "{r:?}");
    let text = r.fail_info_text.clone().unwrap_or_default();
    assert!(text.starts_with(&format!("{code}:")), "expected {code}, got {text:?}");
}

async fn last_audit(ts: &TestServer) -> String {
    let e = ts.ra.audit_events(&autoenroll_server::ra::AuditFilter { limit: 1, ..Default::default() }).await.unwrap();
    format!("{} {} {}", e[0].action, e[0].outcome, e[0].detail)
}

#[tokio::test]
async fn caps_and_ca_certificates() {
    let ts = TestServer::start().await;
    let r = ts.client(None).get(&ts.url("/scep?operation=GetCACaps")).await.unwrap();
    let caps = String::from_utf8(r.body).unwrap();
    for c in ["POSTPKIOperation", "Renewal", "SHA-256", "AES", "SCEPStandard"] {
        assert!(caps.lines().any(|l| l == c), "{caps}");
    }
    assert!(!caps.contains("DES"), "no legacy ciphers unless enabled: {caps}");
    let r = ts.client(None).get(&ts.url("/scep/Machine/pkiclient.exe?operation=GetCACert")).await.unwrap();
    assert_eq!(r.status, 200);
    let certs = autoenroll_proto::pkcs7::certificates(&r.body).unwrap();
    assert_eq!(certs.len(), 3);
    let ra = ra_cert(&ts);
    assert!(certs.contains(&ra));
    verify_issued_by(&ra, &std::fs::read(ts.issuing_pem()).map(|p| der::pem::decode_vec(&p).unwrap().1).unwrap())
        .unwrap();
    let ra_cert = <x509_cert::Certificate as der::Decode>::from_der(&ra).unwrap();
    let ku = ra_cert
        .tbs_certificate()
        .extensions()
        .into_iter()
        .flatten()
        .find(|e| e.extn_id == autoenroll_core::oids::CE_KEY_USAGE)
        .map(|e| <x509_cert::ext::pkix::KeyUsage as der::Decode>::from_der(e.extn_value.as_bytes()).unwrap())
        .unwrap();
    assert!(ku.digital_signature() && ku.key_encipherment(), "the RA signs CertReps and receives envelopes");
    let legacy = TestServer::start_with(|c| {
        c.scep = Some(autoenroll_server::config::RawScep { legacy_ciphers: Some(true), ..Default::default() })
    })
    .await;
    let caps = legacy.client(None).get(&legacy.url("/scep?operation=GetCACaps")).await.unwrap().body;
    assert!(String::from_utf8(caps).unwrap().lines().any(|l| l == "DES3"));
}

#[tokio::test]
async fn dynamic_challenge_enrolls_once_and_retries_get_the_same_answer() {
    let ts = TestServer::start().await;
    let ch = challenge(&ts, "dev1", &["dev1.example.test"]).await;
    assert!(ch.len() < 64 && ch.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'), "{ch}");
    let c = Client::new();
    let csr = c.csr("CN=dev1", &["dev1.example.test"], Some(&ch));
    let r = send(&ts, &c, "tx-1", &csr).await;
    assert_eq!(r.status, PkiStatus::Success, "{r:?}");
    assert_eq!(r.cipher, Some(ContentCipher::Aes256Cbc), "the reply uses the client's cipher");
    let cert = &r.certificates[0];
    let f = CertFacts::parse(cert).unwrap();
    assert_eq!(f.subject_cn.as_deref(), Some("dev1"));
    assert_eq!(f.spki_der, c.key.spki_der());
    // The client lost the answer and sends the same transaction again: the same certificate.
    let again = send(&ts, &c, "tx-1", &csr).await;
    assert_eq!(again.certificates, r.certificates);
    // AES-128 asks get AES-128 back; a different transaction and key cannot reuse the challenge.
    let other = Client::new();
    let r = send_as(
        &ts,
        "/scep",
        &other,
        MessageType::PkcsReq,
        "tx-2",
        &other.csr("CN=dev1", &["dev1.example.test"], Some(&ch)),
        ContentCipher::Aes128Cbc,
    )
    .await;
    refused(&r, "ChallengeUsed");
    assert!(last_audit(&ts).await.contains("ChallengeUsed"));
    // Same key, new transaction: still used.
    refused(&send(&ts, &c, "tx-3", &csr).await, "ChallengeUsed");
}

#[tokio::test]
async fn challenge_refusals_in_their_documented_order() {
    let ts = TestServer::start().await;
    let c = Client::new();
    // 1. No challenge.
    refused(&send(&ts, &c, "a", &c.csr("CN=dev2", &[], None)).await, "ChallengeMissing");
    // 3. Wrong secret for a real id, and an unknown id.
    let ch = challenge(&ts, "dev2", &[]).await;
    let (id, _) = ch.split_once('-').unwrap();
    refused(
        &send(&ts, &c, "b", &c.csr("CN=dev2", &[], Some(&format!("{id}-{}", "0".repeat(32))))).await,
        "ChallengeInvalid",
    );
    refused(&send(&ts, &c, "c", &c.csr("CN=dev2", &[], Some("nonsense"))).await, "ChallengeInvalid");
    // 4. Expired.
    ts.clock.advance(3601);
    refused(&send(&ts, &c, "d", &c.csr("CN=dev2", &[], Some(&ch))).await, "ChallengeExpired");
    // 6. The device left the inventory.
    let ch = challenge(&ts, "gone", &[]).await;
    ts.ra.remove_device("gone").await.unwrap();
    refused(&send(&ts, &c, "e", &c.csr("CN=gone", &[], Some(&ch))).await, "DeviceNotEnrolled");
    // 7. Asked on another template's path.
    let ch = challenge(&ts, "dev2", &[]).await;
    let r = send_as(
        &ts,
        "/scep/WebServer",
        &c,
        MessageType::PkcsReq,
        "f",
        &c.csr("CN=dev2", &[], Some(&ch)),
        ContentCipher::Aes256Cbc,
    )
    .await;
    refused(&r, "TemplateNotAssigned");
    // 8. Subject, 9. SANs, 10. key size, 11. EKU — the challenge is still unspent after each.
    refused(&send(&ts, &c, "g", &c.csr("CN=someone-else", &[], Some(&ch))).await, "SubjectMismatch");
    refused(&send(&ts, &c, "h", &c.csr("CN=dev2", &["extra.example"], Some(&ch))).await, "SubjectAltNameMismatch");
    let strict = ts
        .ra
        .create_challenge(
            autoenroll_server::ra::LOCAL_ADMIN,
            &ChallengeSpec {
                device: "dev2".into(),
                template: "Machine".into(),
                ttl_secs: 60,
                min_key_bits: Some(3072),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .0;
    refused(&send(&ts, &c, "i", &c.csr("CN=dev2", &[], Some(&strict))).await, "KeyLengthMismatch");
    // (A new challenge for the device and template ended the earlier one.)
    let ch = challenge(&ts, "dev2", &[]).await;
    let eku = x509_cert::ext::pkix::ExtendedKeyUsage(vec![autoenroll_core::oids::KP_SERVER_AUTH]);
    let ext = x509_cert::ext::Extension {
        extn_id: autoenroll_core::oids::CE_EXT_KEY_USAGE,
        critical: false,
        extn_value: der::asn1::OctetString::new(der::Encode::to_der(&eku).unwrap()).unwrap(),
    };
    let csr =
        autoenroll_keys::build_csr_with_challenge(&c.key, autoenroll_keys::cn_name("dev2").unwrap(), vec![ext], &ch)
            .unwrap();
    refused(&send(&ts, &c, "j", &csr).await, "EkuMismatch");
    // Every refusal is in the audit log with its reason.
    let events =
        ts.ra.audit_events(&autoenroll_server::ra::AuditFilter { limit: 100, ..Default::default() }).await.unwrap();
    for code in [
        "ChallengeMissing",
        "ChallengeInvalid",
        "ChallengeExpired",
        "DeviceNotEnrolled",
        "TemplateNotAssigned",
        "SubjectMismatch",
        "SubjectAltNameMismatch",
        "KeyLengthMismatch",
        "EkuMismatch",
    ] {
        assert!(events.iter().any(|e| e.action == "scep.issue" && e.detail.starts_with(code)), "{code} not audited");
    }
    // The right request still succeeds with the unspent challenge.
    assert_eq!(send(&ts, &c, "k", &c.csr("CN=dev2", &[], Some(&ch))).await.status, PkiStatus::Success);
}

#[tokio::test]
async fn renewal_is_signed_by_our_certificate_and_needs_no_challenge() {
    let ts = TestServer::start().await;
    let ch = challenge(&ts, "dev3", &[]).await;
    let mut c = Client::new();
    let r = send(&ts, &c, "t1", &c.csr("CN=dev3", &[], Some(&ch))).await;
    let first = r.certificates[0].clone();
    let first_serial = CertFacts::parse(&first).unwrap().serial;
    c.signer = first.clone();
    // Too early: the Machine template renews in the last 6 weeks of a year.
    let new_key = Client::new();
    let csr = autoenroll_keys::build_csr(&new_key.key, autoenroll_keys::cn_name("dev3").unwrap(), vec![]).unwrap();
    refused(&send(&ts, &c, "t2", &csr).await, "OutsideRenewalWindow");
    ts.clock.advance(330 * 86_400);
    // RenewalReq and PKCSReq alike; the reply is encrypted to the signer (the old certificate's key).
    let r = send_as(&ts, "/scep", &c, MessageType::RenewalReq, "t3", &csr, ContentCipher::Aes256Cbc).await;
    assert_eq!(r.status, PkiStatus::Success, "{r:?}");
    let renewed_der = r.certificates[0].clone();
    let renewed = CertFacts::parse(&renewed_der).unwrap();
    assert_eq!(renewed.spki_der, new_key.key.spki_der());
    let row = ts.ra.certificates(10).await.unwrap().into_iter().find(|x| x.serial == renewed.serial.0).unwrap();
    assert_eq!(row.previous_serial.as_deref(), Some(first_serial.0.as_str()));
    // Signed by a certificate of another CA, without a challenge: refused.
    let foreign_ca = KeyPair::generate(KeyAlgorithm::Rsa(2048)).unwrap();
    let foreign =
        autoenroll_keys::self_signed_cert(&foreign_ca, autoenroll_keys::cn_name("Other CA").unwrap(), 0, 4_000_000_000)
            .unwrap();
    let mut stranger = Client::new();
    stranger.signer = foreign;
    stranger.key = foreign_ca;
    let csr = stranger.csr("CN=dev3", &[], None);
    let r = send_as(&ts, "/scep", &stranger, MessageType::RenewalReq, "t4", &csr, ContentCipher::Aes256Cbc).await;
    refused(&r, "ForeignCertificate");
    // A revoked certificate cannot renew.
    ts.ra
        .revoke(autoenroll_server::ra::LOCAL_ADMIN, &renewed.serial.0, "keyCompromise".parse().unwrap())
        .await
        .unwrap();
    let holder = Client { key: new_key.key, signer: renewed_der };
    refused(&send(&ts, &holder, "t5", &Client::new().csr("CN=dev3", &[], None)).await, "CertificateRevoked");
}

#[tokio::test]
async fn pending_requests_are_collected_with_certpoll_and_getcert() {
    let ts = TestServer::start().await;
    let held = TemplateSpec { pend_all: Some(true), key_algorithm: Some("rsa2048".into()), ..Default::default() };
    ts.ra.create_template("Held", &held).await.unwrap();
    let ch = ts
        .ra
        .create_challenge(
            autoenroll_server::ra::LOCAL_ADMIN,
            &ChallengeSpec { device: "dev4".into(), template: "Held".into(), ttl_secs: 600, ..Default::default() },
        )
        .await
        .unwrap()
        .0;
    let c = Client::new();
    let r = send_as(
        &ts,
        "/scep/Held",
        &c,
        MessageType::PkcsReq,
        "p1",
        &c.csr("CN=dev4", &[], Some(&ch)),
        ContentCipher::Aes256Cbc,
    )
    .await;
    assert_eq!(r.status, PkiStatus::Pending, "{r:?}");
    // IssuerAndSubject for the poll.
    let poll = der::Encode::to_der(&autoenroll_core::pki::scep::IssuerAndSubject {
        issuer: autoenroll_keys::cn_name("issuer").unwrap(),
        subject: autoenroll_keys::cn_name("dev4").unwrap(),
    })
    .unwrap();
    let r = send_as(&ts, "/scep/Held", &c, MessageType::CertPoll, "p1", &poll, ContentCipher::Aes256Cbc).await;
    assert_eq!(r.status, PkiStatus::Pending);
    let pending =
        ts.ra.audit_events(&autoenroll_server::ra::AuditFilter { limit: 5, ..Default::default() }).await.unwrap();
    let id: i64 = pending
        .iter()
        .find_map(|e| {
            (e.outcome.as_str() == "pending")
                .then(|| {
                    e.detail.strip_prefix("request ").and_then(|d| d.split(' ').next()).and_then(|n| n.parse().ok())
                })
                .flatten()
        })
        .expect("the pending request is audited with its id");
    let issued = ts.ra.approve(autoenroll_server::ra::LOCAL_ADMIN, id).await.unwrap();
    let r = send_as(&ts, "/scep/Held", &c, MessageType::CertPoll, "p1", &poll, ContentCipher::Aes256Cbc).await;
    assert_eq!(r.status, PkiStatus::Success, "{r:?}");
    assert_eq!(r.certificates[0], issued.certificate_der);
    // An unknown transaction is badCertId.
    let r = send_as(&ts, "/scep/Held", &c, MessageType::CertPoll, "nope", &poll, ContentCipher::Aes256Cbc).await;
    assert_eq!((r.status, r.fail_info), (PkiStatus::Failure, Some(4)));
    // GetCert by issuer and serial.
    let f = CertFacts::parse(&issued.certificate_der).unwrap();
    let x = <x509_cert::Certificate as der::Decode>::from_der(&issued.certificate_der).unwrap();
    let ias = der::Encode::to_der(&cms::cert::IssuerAndSerialNumber {
        issuer: x.tbs_certificate().issuer().clone(),
        serial_number: x.tbs_certificate().serial_number().clone(),
    })
    .unwrap();
    let r = send_as(&ts, "/scep", &c, MessageType::GetCert, "g1", &ias, ContentCipher::Aes256Cbc).await;
    assert_eq!(r.status, PkiStatus::Success);
    assert_eq!(CertFacts::parse(&r.certificates[0]).unwrap().serial, f.serial);
    // GetCRL: the issuing CA's current CRL, listing a revoked certificate.
    ts.ra.revoke(autoenroll_server::ra::LOCAL_ADMIN, &f.serial.0, "superseded".parse().unwrap()).await.unwrap();
    let r = send_as(&ts, "/scep", &c, MessageType::GetCrl, "c1", &ias, ContentCipher::Aes256Cbc).await;
    assert_eq!(r.status, PkiStatus::Success, "{r:?}");
    assert_eq!(r.crls.len(), 1);
    let crl = <x509_cert::crl::CertificateList as der::Decode>::from_der(&r.crls[0]).unwrap();
    let listed = crl.tbs_cert_list.revoked_certificates.unwrap_or_default();
    assert!(
        listed.iter().any(|e| hex::encode(e.serial_number.as_bytes()) == f.serial.0),
        "the CRL lists the revoked certificate"
    );
}

#[tokio::test]
async fn static_challenge_is_reusable_and_compared_by_hash() {
    let ts = TestServer::start().await;
    ts.ra.set_static_challenge("Machine", Some("s3cret-static")).await.unwrap();
    for (i, dev) in ["printer1", "printer2"].iter().enumerate() {
        let c = Client::new();
        let r = send(&ts, &c, &format!("s{i}"), &c.csr(&format!("CN={dev}"), &[], Some("s3cret-static"))).await;
        assert_eq!(r.status, PkiStatus::Success, "{r:?}");
        assert_eq!(CertFacts::parse(&r.certificates[0]).unwrap().subject_cn.as_deref(), Some(*dev));
    }
    let c = Client::new();
    refused(&send(&ts, &c, "s9", &c.csr("CN=printer3", &[], Some("s3cret-Static"))).await, "ChallengeInvalid");
    ts.ra.set_static_challenge("Machine", None).await.unwrap();
    refused(&send(&ts, &c, "s10", &c.csr("CN=printer3", &[], Some("s3cret-static"))).await, "ChallengeInvalid");
    assert!(ts.ra.set_static_challenge("Machine", Some("short")).await.is_err());
}

#[tokio::test]
async fn hostile_messages_are_refused_and_the_server_keeps_serving() {
    let ts = TestServer::start().await;
    let ch = challenge(&ts, "dev5", &[]).await;
    let c = Client::new();
    let (good, _) = build_request(&Request {
        message_type: MessageType::PkcsReq,
        transaction_id: "h1",
        content: &c.csr("CN=dev5", &[], Some(&ch)),
        signer_cert_der: &c.signer,
        signer_key: &c.key,
        ra_cert_der: &ra_cert(&ts),
        cipher: ContentCipher::Aes256Cbc,
    })
    .unwrap();
    for cut in [0, 1, 10, good.len() / 2, good.len() - 1] {
        let r = post(&ts, "/scep", good[..cut].to_vec()).await;
        assert_eq!(r.status, 400, "truncated at {cut}");
        assert!(String::from_utf8_lossy(&r.body).contains("pkiMessage"));
    }
    assert_eq!(post(&ts, "/scep", b"garbage".repeat(100)).await.status, 400);
    assert_eq!(post(&ts, "/scep", vec![0x30; 300 * 1024]).await.status, 413, "oversized bodies are refused");
    for q in ["operation=PKIOperation&message=%%%", "operation=PKIOperation", "operation=Nope", ""] {
        let r = ts.client(None).get(&ts.url(&format!("/scep?{q}"))).await.unwrap();
        assert_eq!(r.status, 400, "{q}");
    }
    // A signed message whose envelope is not for us: one uniform failInfo (badMessageCheck).
    let stranger_ra = Client::new();
    let (msg, _) = build_request(&Request {
        message_type: MessageType::PkcsReq,
        transaction_id: "h2",
        content: &c.csr("CN=dev5", &[], Some(&ch)),
        signer_cert_der: &c.signer,
        signer_key: &c.key,
        ra_cert_der: &stranger_ra.signer,
        cipher: ContentCipher::Aes256Cbc,
    })
    .unwrap();
    let r = read_reply(&post(&ts, "/scep", msg).await.body, &c.key).unwrap();
    assert_eq!((r.status, r.fail_info), (PkiStatus::Failure, Some(1)), "{r:?}");
    // Legacy ciphers are refused by default with a reason (badAlg).
    let r = send_as(
        &ts,
        "/scep",
        &c,
        MessageType::PkcsReq,
        "h3",
        &c.csr("CN=dev5", &[], Some(&ch)),
        ContentCipher::Des3Cbc,
    )
    .await;
    assert_eq!((r.status, r.fail_info), (PkiStatus::Failure, Some(0)), "{r:?}");
    assert!(r.fail_info_text.unwrap_or_default().contains("legacy"));
    // Still serving: GET with a percent-encoded message enrolls.
    let (msg, _) = build_request(&Request {
        message_type: MessageType::PkcsReq,
        transaction_id: "h4",
        content: &c.csr("CN=dev5", &[], Some(&ch)),
        signer_cert_der: &c.signer,
        signer_key: &c.key,
        ra_cert_der: &ra_cert(&ts),
        cipher: ContentCipher::Aes128Cbc,
    })
    .unwrap();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&msg);
    let enc = b64.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D");
    let r = ts.client(None).get(&ts.url(&format!("/scep?operation=PKIOperation&message={enc}"))).await.unwrap();
    let reply = read_reply(&r.body, &c.key).unwrap();
    assert_eq!(reply.status, PkiStatus::Success, "{reply:?}");
    assert_eq!(reply.cipher, Some(ContentCipher::Aes128Cbc));
}

#[tokio::test]
async fn a_new_challenge_ends_the_earlier_one() {
    let ts = TestServer::start().await;
    let first = challenge(&ts, "dev9", &[]).await;
    let second = challenge(&ts, "dev9", &[]).await;
    let c = Client::new();
    // At most one outstanding challenge per device and template: the first no longer works.
    refused(&send(&ts, &c, "x1", &c.csr("CN=dev9", &[], Some(&first))).await, "ChallengeExpired");
    let r = send(&ts, &c, "x2", &c.csr("CN=dev9", &[], Some(&second))).await;
    assert_eq!(r.status, PkiStatus::Success, "{r:?}");
}

/// Attack (issue 12, finding 5): a static challenge with `CN=devA` issued a certificate
/// recorded under the existing device devA. A shared secret cannot claim a device that exists.
#[tokio::test]
async fn attack_static_challenge_cannot_claim_an_existing_device() {
    let ts = TestServer::start().await;
    common::issue(&ts.ra, "devA").await;
    ts.ra.set_static_challenge("Machine", Some("s3cret-static")).await.unwrap();
    let c = Client::new();
    refused(&send(&ts, &c, "st1", &c.csr("CN=devA", &[], Some("s3cret-static"))).await, "DeviceNameTaken");
    // Nor under another spelling of its name (DNS compares them equal).
    refused(&send(&ts, &c, "st1b", &c.csr("CN=DEVA", &[], Some("s3cret-static"))).await, "DeviceNameTaken");
    let certs = ts.ra.certificates(10).await.unwrap();
    assert_eq!(certs.iter().filter(|x| x.device.eq_ignore_ascii_case("devA")).count(), 1, "nothing new under devA");
    // A new device name is fine.
    let r = send(&ts, &c, "st2", &c.csr("CN=devB", &[], Some("s3cret-static"))).await;
    assert_eq!(r.status, PkiStatus::Success, "{r:?}");
}

/// Attack (issue 12, finding 3): 20 parallel identical SCEP RenewalReq gave 20 distinct
/// certificates. One certificate has one successor: all 20 get the same one.
#[tokio::test]
async fn attack_parallel_identical_renewals_get_one_certificate() {
    let ts = std::sync::Arc::new(TestServer::start().await);
    let ch = challenge(&ts, "dev20", &[]).await;
    let mut c = Client::new();
    let r = send(&ts, &c, "p0", &c.csr("CN=dev20", &[], Some(&ch))).await;
    assert_eq!(r.status, PkiStatus::Success, "{r:?}");
    c.signer = r.certificates[0].clone();
    ts.clock.advance(330 * 86_400);
    let new_key = KeyPair::generate(KeyAlgorithm::Rsa(2048)).unwrap();
    let csr = autoenroll_keys::build_csr(&new_key, autoenroll_keys::cn_name("dev20").unwrap(), vec![]).unwrap();
    let c = std::sync::Arc::new(c);
    let mut handles = Vec::new();
    for i in 0..20 {
        let (ts, c, csr) = (ts.clone(), c.clone(), csr.clone());
        // Identical requests; some clients resend with a new transaction ID, some with the same.
        let tx = if i % 2 == 0 { "renew-same".to_string() } else { format!("renew-{i}") };
        handles.push(tokio::spawn(async move {
            send_as(&ts, "/scep", &c, MessageType::RenewalReq, &tx, &csr, ContentCipher::Aes256Cbc).await
        }));
    }
    let mut serials = std::collections::BTreeSet::new();
    for h in handles {
        let r = h.await.unwrap();
        assert_eq!(r.status, PkiStatus::Success, "{r:?}");
        serials.insert(CertFacts::parse(&r.certificates[0]).unwrap().serial.0);
    }
    assert_eq!(serials.len(), 1, "one successor: {serials:?}");
    let rows = ts.ra.certificates(100).await.unwrap();
    assert_eq!(rows.iter().filter(|x| x.device == "dev20").count(), 2, "the original and one renewal");
}

/// Review: a challenge handed out at check-in vouches for no name an account's `*` did not: a
/// Machine certificate for `login.bank.example` (any device name is fine for client
/// authentication) does not turn into a server certificate for it over SCEP. And a device that
/// holds a good certificate of a template (reported or not) gets no challenge for it: a stolen
/// key cannot mint live certificates by claiming it lost one.
#[tokio::test]
async fn attack_check_in_challenges_vouch_for_nothing_and_replace_nothing() {
    let ts = TestServer::start().await;
    let anyone =
        autoenroll_server::ra::AccountSpec { name: "anyone", password: common::PASSWORD, ..Default::default() };
    ts.ra.create_account(&anyone).await.unwrap();
    let creds = autoenroll_server::ra::Credentials::Password {
        username: "anyone".into(),
        password: common::PASSWORD.into(),
        client: None,
    };
    let principal = ts.ra.authenticate(&creds, Some("login.bank.example")).await.unwrap();
    let k = KeyPair::generate(KeyAlgorithm::P256).unwrap();
    let csr = autoenroll_keys::build_csr(&k, autoenroll_keys::cn_name("x").unwrap(), vec![]).unwrap();
    let input = autoenroll_server::ra::EnrollInput { principal: &principal, csr_der: &csr, template_name: None };
    let machine = common::issued(ts.ra.enroll(input).await.unwrap());
    let web = TemplateSpec {
        grants: Some("account:*,holder:Machine".into()),
        key_algorithm: Some("rsa2048".into()),
        ..Default::default()
    };
    ts.ra.update_template(autoenroll_server::ra::LOCAL_ADMIN, "WebServer", &web).await.unwrap();
    let tls = common::identity_of(&ts.ra, &machine.certificate_der, &k);
    let checkin = |body: serde_json::Value| {
        let (ts, tls) = (&ts, &tls);
        async move {
            let (client, url) = (ts.client(Some(tls)), ts.url("/checkin"));
            let r = client.post(&url, "application/json", serde_json::to_vec(&body).unwrap()).await.unwrap();
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            serde_json::from_slice::<autoenroll_proto::checkin::CheckinAnswer>(&r.body).unwrap()
        }
    };
    let a = checkin(serde_json::json!({ "scep": true })).await;
    let challenge = a.directives.iter().find(|d| d.template == "WebServer").and_then(|d| d.challenge.clone());
    let challenge = challenge.expect("a WebServer challenge for a Machine holder");
    let c = Client::new();
    let r = send_as(
        &ts,
        "/scep/WebServer",
        &c,
        MessageType::PkcsReq,
        "lb1",
        &c.csr("CN=login.bank.example", &[], Some(&challenge)),
        ContentCipher::Aes256Cbc,
    )
    .await;
    refused(&r, "NameNotAllowed");
    // Machine is held (not reported: "lost"): no challenge to replace it.
    let m = a.directives.iter().find(|d| d.template == "Machine").unwrap();
    assert_eq!(m.action, autoenroll_proto::checkin::Action::Enroll, "{m:?}");
    assert!(m.challenge.is_none(), "a held certificate is not replaced by a second live one");
}

/// Review: a device a static challenge created enrolls again once it holds no good
/// certificate (expired, revoked), not while it does.
#[tokio::test]
async fn static_devices_enroll_again_once_their_certificate_is_gone() {
    let ts = TestServer::start().await;
    ts.ra.set_static_challenge("Machine", Some("s3cret-static")).await.unwrap();
    let c = Client::new();
    let r = send(&ts, &c, "sa1", &c.csr("CN=printer9", &[], Some("s3cret-static"))).await;
    assert_eq!(r.status, PkiStatus::Success, "{r:?}");
    let c2 = Client::new();
    refused(&send(&ts, &c2, "sa2", &c2.csr("CN=printer9", &[], Some("s3cret-static"))).await, "DeviceNameTaken");
    let serial = CertFacts::parse(&r.certificates[0]).unwrap().serial.0;
    ts.ra.revoke(autoenroll_server::ra::LOCAL_ADMIN, &serial, "keyCompromise".parse().unwrap()).await.unwrap();
    let r = send(&ts, &c2, "sa3", &c2.csr("CN=printer9", &[], Some("s3cret-static"))).await;
    assert_eq!(r.status, PkiStatus::Success, "{r:?}");
}

/// Issue 14, finding 2: 200 wrong static challenges at full speed, then the right one, used to
/// work. Now the address is locked after 30 failures (audited), and even the right challenge is
/// refused until the lock ends.
#[tokio::test]
async fn attack_guessing_the_static_challenge_locks_the_address() {
    let ts = TestServer::start().await;
    ts.ra.set_static_challenge("Machine", Some("s3cret-static")).await.unwrap();
    let c = Client::new();
    for i in 0..autoenroll_server::ra::ADDRESS_LIMIT {
        let r = send(&ts, &c, &format!("g{i}"), &c.csr("CN=guesser", &[], Some(&format!("guess-{i:04}")))).await;
        refused(&r, "ChallengeInvalid");
    }
    let r = send(&ts, &c, "right", &c.csr("CN=guesser", &[], Some("s3cret-static"))).await;
    refused(&r, "TooManyAttempts");
    let lockouts = ts
        .ra
        .audit_events(&autoenroll_server::ra::AuditFilter {
            action: Some("auth.lockout".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(lockouts.iter().map(|e| e.subject.as_str()).collect::<Vec<_>>(), ["ip:127.0.0.1"]);
    ts.clock.advance(autoenroll_server::ra::LOCK_SECS + 1);
    let r = send(&ts, &c, "later", &c.csr("CN=guesser", &[], Some("s3cret-static"))).await;
    assert_eq!(r.status, PkiStatus::Success, "the lock ends: {r:?}");
}

/// Issue 14, finding 3: the static challenge sat in clear inside the stored request (and its
/// stored hash was an unsalted SHA-256). Now neither the database nor its WAL holds it, and a
/// held request stored without it is still approved and collected.
#[tokio::test]
async fn the_challenge_is_kept_nowhere_in_the_database() {
    let ts = TestServer::start().await;
    let secret = "s3cret-static-7d1c";
    ts.ra.set_static_challenge("Machine", Some(secret)).await.unwrap();
    let c = Client::new();
    let r = send(&ts, &c, "at-rest-1", &c.csr("CN=printer-rest", &[], Some(secret))).await;
    assert_eq!(r.status, PkiStatus::Success, "{r:?}");
    // A request held for approval, then approved from the stored (challenge-less) request.
    let held = TemplateSpec { pend_all: Some(true), ..Default::default() };
    ts.ra.update_template(autoenroll_server::ra::LOCAL_ADMIN, "Machine", &held).await.unwrap();
    let c2 = Client::new();
    let r = send(&ts, &c2, "at-rest-2", &c2.csr("CN=printer-held", &[], Some(secret))).await;
    assert_eq!(r.status, PkiStatus::Pending, "{r:?}");
    let id = ts.ra.audit_events(&autoenroll_server::ra::AuditFilter { limit: 1, ..Default::default() }).await.unwrap()
        [0]
    .detail
    .split_whitespace()
    .nth(1)
    .unwrap()
    .parse::<i64>()
    .unwrap();
    let issued = ts.ra.approve(autoenroll_server::ra::LOCAL_ADMIN, id).await.unwrap();
    assert_eq!(CertFacts::parse(&issued.certificate_der).unwrap().subject_cn.as_deref(), Some("printer-held"));

    let data = ts.dir.path().join("data");
    let mut everything = Vec::new();
    for f in ["autoenroll.db", "autoenroll.db-wal"] {
        if let Ok(b) = std::fs::read(data.join(f)) {
            everything.extend(b);
        }
    }
    assert!(everything.len() > 10_000, "read the database");
    let hex_sha256 = autoenroll_keys::sha256_hex(secret.as_bytes());
    for needle in [secret.as_bytes(), hex_sha256.as_bytes(), hex_sha256.to_uppercase().as_bytes()] {
        assert!(!everything.windows(needle.len()).any(|w| w == needle), "{} found", String::from_utf8_lossy(needle));
    }
}
