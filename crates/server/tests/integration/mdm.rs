//! Windows MDM enrollment and ROBO renewal (MS-MDE2) over real HTTPS on loopback: a test MDM
//! client does discovery → policy → enrollment with a Windows-shaped CSR → installs → renews
//! over client TLS, and the provisioning documents follow the spec's structure.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use crate::common;

use autoenroll_agent::https::ClientIdentity;
use autoenroll_core::pki::CertFacts;
use autoenroll_core::{Thumbprint, UnixTime};
use autoenroll_keys::{build_csr, cn_name, sign_cms, KeyAlgorithm, KeyPair};
use autoenroll_proto::mde2;
use autoenroll_proto::soap::{self, HeaderToken};
use autoenroll_proto::xml::{Element, W};
use autoenroll_proto::{ns, xcep};
use common::*;
use std::collections::BTreeSet;

const DEVICE_ID: &str = "0F3B8E6C-A271-4556-9B72-A26CBD8090C8";

fn vector(name: &str) -> Vec<u8> {
    std::fs::read(autoenroll_test_support::testdata(&format!("ms/{name}"))).unwrap()
}

/// The skeleton of a provisioning document: characteristic paths and parm names, with
/// thumbprints and the provider id normalised.
fn skeleton(doc: &Element) -> BTreeSet<String> {
    fn walk(e: &Element, path: &str, out: &mut BTreeSet<String>, provider: &str) {
        for c in &e.children {
            match c.local.as_str() {
                "characteristic" => {
                    let t = c.attr(None, "type").unwrap_or_default().trim();
                    let t = if t.len() == 40 && t.chars().all(|x| x.is_ascii_hexdigit()) || t.contains("InsertedHere") {
                        "<thumbprint>"
                    } else if t == provider {
                        "<provider>"
                    } else {
                        t
                    };
                    let p = format!("{path}/{t}");
                    out.insert(p.clone());
                    walk(c, &p, out, provider);
                }
                "parm" => {
                    out.insert(format!("{path}@{}", c.attr(None, "name").unwrap_or_default()));
                }
                _ => {}
            }
        }
    }
    let provider = find_parm(doc, "PROVIDER-ID").unwrap_or_default();
    let mut out = BTreeSet::new();
    walk(doc, "", &mut out, &provider);
    out
}

fn find_parm(e: &Element, name: &str) -> Option<String> {
    for c in &e.children {
        if c.local == "parm" && c.attr(None, "name") == Some(name) {
            return c.attr(None, "value").map(str::to_string);
        }
        if let Some(v) = find_parm(c, name) {
            return Some(v);
        }
    }
    None
}

fn find_char<'a>(e: &'a Element, path: &[&str]) -> Option<&'a Element> {
    let mut cur = e;
    for p in path {
        cur = cur.children.iter().find(|c| c.local == "characteristic" && c.attr(None, "type") == Some(p))?;
    }
    Some(cur)
}

/// A CSR shaped like the real Windows one in fleet's capture: RSA-2048, CN "<DeviceID>!<hex>",
/// EKU clientAuth, and extension 1.3.6.1.4.1.311.66.1.0 whose value is raw ASCII, not DER.
fn windows_csr(key: &KeyPair) -> Vec<u8> {
    windows_csr_hinting(key, None)
}

/// A Windows-shaped CSR, optionally naming a template (szOID_ENROLL_CERTTYPE_EXTENSION).
fn windows_csr_hinting(key: &KeyPair, template: Option<&str>) -> Vec<u8> {
    let eku = x509_cert::ext::Extension {
        extn_id: autoenroll_core::oids::CE_EXT_KEY_USAGE,
        critical: false,
        extn_value: der::asn1::OctetString::new(
            der::Encode::to_der(&x509_cert::ext::pkix::ExtendedKeyUsage(vec![autoenroll_core::oids::KP_CLIENT_AUTH]))
                .unwrap(),
        )
        .unwrap(),
    };
    let mut raw = b"8090C8B484A0E24EB5C56E806CB4EE5B".to_vec();
    raw.push(0);
    let device_ext = x509_cert::ext::Extension {
        extn_id: const_oid::ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.66.1.0"),
        critical: false,
        extn_value: der::asn1::OctetString::new(raw).unwrap(),
    };
    let mut exts = vec![eku, device_ext];
    exts.extend(template.map(template_ext));
    build_csr(key, cn_name(&format!("{DEVICE_ID}!8090C8B484A0E24EB5C56E806CB4EE5B")).unwrap(), exts).unwrap()
}

fn rst_body(request_type: &str, value_type: &str, token_b64: String, enrollment_type: &str) -> W {
    let context = [
        ("DeviceID", DEVICE_ID),
        ("HWDevID", "A4E3E1D5C1B2F7E8"),
        ("EnrollmentType", enrollment_type),
        ("DeviceType", "CIMClient_Windows"),
        ("ApplicationVersion", "10.0.22631.2428"),
        ("OSVersion", "10.0.22631.2428"),
        ("DeviceName", "DESKTOP-TEST"),
    ];
    W::new("wst:RequestSecurityToken")
        .attr("xmlns:wst", ns::WST)
        .attr("xmlns:ac", ns::AUTH)
        .child(W::leaf("wst:TokenType", ns::TOKEN_TYPE_DEVICE_ENROLLMENT))
        .child(W::leaf("wst:RequestType", request_type))
        .child(
            W::leaf("wsse:BinarySecurityToken", token_b64)
                .attr("ValueType", value_type)
                .attr("EncodingType", ns::ENCODING_BASE64),
        )
        .child(W::new("ac:AdditionalContext").children(
            context.iter().map(|(n, v)| W::new("ac:ContextItem").attr("Name", *n).child(W::leaf("ac:Value", *v))),
        ))
}

struct Mdm<'a> {
    s: &'a TestServer,
}

impl Mdm<'_> {
    /// An enrollment with a Windows-shaped CSR for `key`; the HTTP status and envelope.
    async fn enroll(&self, token: &HeaderToken, key: &KeyPair, enrollment_type: &str) -> (u16, soap::Envelope) {
        let csr = autoenroll_proto::b64::encode(&windows_csr(key));
        let body = rst_body(ns::REQUEST_TYPE_ISSUE, ns::VALUE_TYPE_PKCS10, csr, enrollment_type);
        self.post("/EnrollmentServer/Enrollment.svc", ns::ACTION_WSTEP, token, body, None).await
    }

    async fn post(
        &self,
        path: &str,
        action: &str,
        token: &HeaderToken,
        body: W,
        identity: Option<&ClientIdentity>,
    ) -> (u16, soap::Envelope) {
        let url = self.s.url(path);
        let xml = soap::request(action, &url, "urn:uuid:mdm-test", token, body);
        let r =
            self.s.client(identity).post(&url, "application/soap+xml; charset=utf-8", xml.into_bytes()).await.unwrap();
        assert!(r.content_length.is_some() && !r.chunked, "MDM responses must not be chunked");
        (r.status, soap::parse_envelope(&r.body).unwrap())
    }

    async fn renew(&self, cert: &[u8], key: &KeyPair, new_key: &KeyPair, twice: bool) -> (u16, soap::Envelope) {
        let csr = build_csr(new_key, cn_name("renew").unwrap(), vec![]).unwrap();
        let pkcs7 = sign_cms(&csr, cert, key, false).unwrap();
        let b64 = autoenroll_proto::b64::encode(&pkcs7);
        let token = if twice { autoenroll_proto::b64::encode(b64.as_bytes()) } else { b64 };
        let identity = ClientIdentity {
            chain: vec![cert.to_vec(), self.s.ra.chain_der()[0].clone()],
            key_pkcs8: key.to_pkcs8_der().unwrap(),
        };
        let body = rst_body(ns::REQUEST_TYPE_RENEW, ns::VALUE_TYPE_PKCS7, token, "Device");
        self.post("/EnrollmentServer/Enrollment.svc", ns::ACTION_WSTEP, &HeaderToken::None, body, Some(&identity)).await
    }
}

/// The device certificate the document installs in `My/<store>`, with its thumbprint.
fn installed_cert(doc: &Element, store: &str) -> (String, Vec<u8>) {
    let store_el = doc
        .children
        .iter()
        .filter(|c| c.attr(None, "type") == Some("CertificateStore"))
        .find_map(|c| find_char(c, &["My", store]))
        .expect("My/<store>");
    let thumb_el = store_el
        .children
        .iter()
        .find(|c| c.attr(None, "type").is_some_and(|t| t.len() == 40))
        .expect("thumbprint characteristic");
    let thumb = thumb_el.attr(None, "type").unwrap_or_default().to_string();
    let cert = autoenroll_proto::b64::decode(&find_parm(thumb_el, "EncodedCertificate").unwrap(), "cert").unwrap();
    assert!(
        store_el.children.iter().any(|c| c.attr(None, "type") == Some("PrivateKeyContainer")),
        "PrivateKeyContainer must be present"
    );
    (thumb, cert)
}

#[tokio::test]
async fn discovery_policy_enrollment_and_robo_renewal() {
    let s = TestServer::start().await;
    let mdm = Mdm { s: &s };
    // 90-day device certificates (RenewPeriod 42 days): two renewals stay within the lifetime
    // of the listener's own TLS certificate under the fake clock.
    let spec = autoenroll_server::ra::TemplateSpec { validity_secs: Some(90 * 86_400), ..Default::default() };
    s.ra.update_template(autoenroll_server::ra::LOCAL_ADMIN, "Machine", &spec).await.unwrap();

    // Discovery: the GET probe, then Discover (fleet's request shape).
    let r = s.client(None).get(&s.url("/EnrollmentServer/Discovery.svc")).await.unwrap();
    assert_eq!((r.status, r.content_length), (200, Some(0)));
    let discover = String::from_utf8(vector("fleet-mdmtest-discover-request.xml")).unwrap();
    let r = s
        .client(None)
        .post(&s.url("/EnrollmentServer/Discovery.svc"), "application/soap+xml", discover.into_bytes())
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let env = soap::parse_envelope(&r.body).unwrap();
    assert_eq!(env.action, ns::ACTION_DISCOVER_RESPONSE);
    let d = mde2::parse_discover_response(&env.body).unwrap();
    assert_eq!(d.auth_policy, "OnPremise");
    assert_eq!(d.enrollment_url, s.url("/EnrollmentServer/Enrollment.svc"));

    // Policy: MDM flavour.
    let (status, env) = mdm
        .post("/EnrollmentServer/Policy.svc", ns::ACTION_GET_POLICIES, &account(), xcep::request_body(None), None)
        .await;
    assert_eq!(status, 200);
    let p = xcep::parse_response(&env.body).unwrap();
    assert_eq!(p.policies.len(), 1);
    assert_eq!((p.policies[0].common_name.as_str(), p.policies[0].policy_schema), ("Machine", 3));
    let hash = p.oids.iter().find(|o| Some(o.reference_id) == p.policies[0].hash_algorithm_oid_reference).unwrap();
    assert_eq!(hash.value, "2.16.840.1.101.3.4.2.1");

    // Enrollment.
    let key = KeyPair::generate(KeyAlgorithm::Rsa(2048)).unwrap();
    let (status, env) = mdm.enroll(&account(), &key, "Device").await;
    assert_eq!(status, 200, "{:?}", mde2::parse_fault(&env));
    let doc = mde2::parse_provisioning_response(&env.body).unwrap();
    let (thumb, cert) = installed_cert(&doc, "System");
    assert_eq!(thumb, Thumbprint::of_der(&cert).0, "upper-case SHA-1 thumbprint");
    let facts = CertFacts::parse(&cert).unwrap();
    assert_eq!(facts.subject_cn.as_deref(), Some(DEVICE_ID));
    assert_eq!(facts.not_before, UnixTime(s.now()), "never backdated");
    assert_eq!(find_parm(&doc, "RenewPeriod").as_deref(), Some("42"));
    assert_eq!(find_parm(&doc, "RetryInterval").as_deref(), Some("7"));
    assert_eq!(find_parm(&doc, "ROBOSupport").as_deref(), Some("true"));
    assert_eq!(find_parm(&doc, "EntDMID").as_deref(), Some(DEVICE_ID));
    let provider = find_parm(&doc, "PROVIDER-ID").unwrap();
    assert!(
        find_char(
            doc.children.iter().find(|c| c.attr(None, "type") == Some("DMClient")).unwrap(),
            &["Provider", &provider]
        )
        .is_some(),
        "PROVIDER-ID matches the DMClient provider"
    );
    let root_thumb = Thumbprint::of_der(&s.ra.chain_der()[1]).0;
    assert!(skeleton(&doc).contains("/CertificateStore/Root/System/<thumbprint>@EncodedCertificate"));
    assert!(find_char(&doc, &["CertificateStore", "Root", "System", &root_thumb]).is_some());
    // The device's AdditionalContext is in the inventory.
    let attrs = s.ra.device_attributes(DEVICE_ID).await.unwrap();
    assert!(attrs.contains(&("DeviceType".into(), "CIMClient_Windows".into())), "{attrs:?}");
    assert!(attrs.contains(&("HWDevID".into(), "A4E3E1D5C1B2F7E8".into())));

    // Renewal before RenewPeriod is refused (the window opens 42 days before expiry).
    let (status, env) = mdm.renew(&cert, &key, &KeyPair::generate(KeyAlgorithm::Rsa(2048)).unwrap(), false).await;
    let f = mde2::parse_fault(&soap_fault_env(status, env)).unwrap();
    assert_eq!((f.subcode.as_str(), f.error_type.as_str()), ("s:Authorization", "NotEligibleToRenew"), "{f:?}");

    // ROBO renewal once RenewPeriod is reached.
    s.clock.set(facts.not_after.0 - 42 * 86_400 + 1);
    let new_key = KeyPair::generate(KeyAlgorithm::Rsa(2048)).unwrap();
    let (status, env) = mdm.renew(&cert, &key, &new_key, false).await;
    assert_eq!(status, 200, "{:?}", mde2::parse_fault(&env));
    let doc = mde2::parse_provisioning_response(&env.body).unwrap();
    let (_, cert2) = installed_cert(&doc, "System");
    let f2 = CertFacts::parse(&cert2).unwrap();
    assert_eq!(f2.spki_der, new_key.spki_der());
    assert_eq!(f2.subject_cn.as_deref(), Some(DEVICE_ID));
    assert!(
        find_char(&doc, &["CertificateStore", "Root"]).is_none() && find_parm(&doc, "EntDMID").is_none(),
        "a renewal carries only the new certificate"
    );
    assert!(find_parm(&doc, "PROVIDER-ID").is_some(), "and names the provider, as Microsoft's renewal sample");

    // The same renewal again (the device lost the answer) gets the same certificate.
    let (status, env) = mdm.renew(&cert, &key, &new_key, false).await;
    assert_eq!(status, 200, "{:?}", mde2::parse_fault(&env));
    let (_, again) = installed_cert(&mde2::parse_provisioning_response(&env.body).unwrap(), "System");
    assert_eq!(again, cert2, "one certificate, one successor");

    // The manual variant (PKCS#7 base64-encoded twice), with another key: the successor was
    // never used, so it is replaced (and revoked as superseded), not doubled.
    let third_key = KeyPair::generate(KeyAlgorithm::Rsa(2048)).unwrap();
    let (status, env) = mdm.renew(&cert, &key, &third_key, true).await;
    assert_eq!(status, 200, "{:?}", mde2::parse_fault(&env));
    let (_, cert3) = installed_cert(&mde2::parse_provisioning_response(&env.body).unwrap(), "System");
    assert_eq!(CertFacts::parse(&cert3).unwrap().spki_der, third_key.spki_der());
    let all = autoenroll_server::ra::CertificateFilter { limit: 100, ..Default::default() };
    let replaced = s.ra.certificates_matching(&all).await.unwrap();
    let replaced = replaced.iter().find(|c| c.serial == f2.serial.0).unwrap();
    assert_eq!(
        (replaced.state, replaced.revocation_reason),
        (autoenroll_server::ra::CertState::Revoked, Some(autoenroll_server::ra::RevocationReason::Superseded))
    );

    // A blocked device cannot renew.
    s.clock.set(f2.not_after.0 - 42 * 86_400 + 1);
    s.ra.set_device_state(autoenroll_server::ra::LOCAL_ADMIN, DEVICE_ID, autoenroll_server::ra::DeviceState::Blocked)
        .await
        .unwrap();
    let (status, env) =
        mdm.renew(&cert3, &third_key, &KeyPair::generate(KeyAlgorithm::Rsa(2048)).unwrap(), false).await;
    let f = mde2::parse_fault(&soap_fault_env(status, env)).unwrap();
    assert_eq!((f.subcode.as_str(), f.error_type.as_str()), ("s:Authorization", "DeviceNotSupported"), "{f:?}");
}

fn soap_fault_env(status: u16, env: soap::Envelope) -> soap::Envelope {
    assert_eq!(status, 500, "MDM faults travel with HTTP 500");
    env
}

/// MS-MDE2 2.2.10: every fault we can send uses a subcode and an error type from the
/// specification's lists (the table in ../shared/reference/protocols-ms.md 3.7).
#[test]
fn every_refusal_maps_to_a_spec_subcode_and_error_type() {
    const SUBCODES: [&str; 7] = [
        "s:MessageFormat",
        "s:Authentication",
        "s:Authorization",
        "s:CertificateRequest",
        "s:EnrollmentServer",
        "a:InternalServiceFault",
        "a:InvalidSecurity",
    ];
    const ERROR_TYPES: [&str; 8] = [
        "DeviceCapReached",
        "DeviceNotSupported",
        "NotSupported",
        "NotEligibleToRenew",
        "InMaintenance",
        "UserLicense",
        "InvalidEnrollmentData",
        "CustomServerError",
    ];
    for &code in autoenroll_core::RefusalCode::ALL {
        let (subcode, error_type) = autoenroll_server::frontends::mde2::mdm_error(code);
        assert!(SUBCODES.contains(&subcode) && ERROR_TYPES.contains(&error_type), "{code}: {subcode} {error_type}");
    }
}

#[tokio::test]
async fn mdm_faults_carry_the_spec_codes() {
    let s = TestServer::start().await;
    let mdm = Mdm { s: &s };
    let key = KeyPair::generate(KeyAlgorithm::Rsa(2048)).unwrap();
    let body = || {
        rst_body(
            ns::REQUEST_TYPE_ISSUE,
            ns::VALUE_TYPE_PKCS10,
            autoenroll_proto::b64::encode(&windows_csr(&key)),
            "Full",
        )
    };
    let wrong = HeaderToken::UsernameToken { username: "enroller".into(), password: "wrong-password".into() };
    let (status, env) = mdm.post("/EnrollmentServer/Enrollment.svc", ns::ACTION_WSTEP, &wrong, body(), None).await;
    let f = mde2::parse_fault(&soap_fault_env(status, env)).unwrap();
    assert_eq!((f.subcode.as_str(), f.error_type.as_str()), ("s:Authentication", "CustomServerError"));
    let (status, env) =
        mdm.post("/EnrollmentServer/Enrollment.svc", ns::ACTION_WSTEP, &HeaderToken::None, body(), None).await;
    let f = mde2::parse_fault(&soap_fault_env(status, env)).unwrap();
    assert_eq!((f.subcode.as_str(), f.error_type.as_str()), ("a:InvalidSecurity", "CustomServerError"));
    let (status, env) = mdm
        .post(
            "/EnrollmentServer/Enrollment.svc",
            ns::ACTION_WSTEP,
            &account(),
            rst_body(ns::REQUEST_TYPE_ISSUE, ns::VALUE_TYPE_PKCS10, "!!".into(), "Full"),
            None,
        )
        .await;
    let f = mde2::parse_fault(&soap_fault_env(status, env)).unwrap();
    assert_eq!((f.subcode.as_str(), f.error_type.as_str()), ("s:MessageFormat", "InvalidEnrollmentData"));
    assert!(!f.trace_id.is_empty());
    // A user enrollment (EnrollmentType Full) lands in My/User.
    let (status, env) = mdm.post("/EnrollmentServer/Enrollment.svc", ns::ACTION_WSTEP, &account(), body(), None).await;
    assert_eq!(status, 200);
    let doc = mde2::parse_provisioning_response(&env.body).unwrap();
    let (_, cert) = installed_cert(&doc, "User");

    // Manual renewal: the user's credentials again, PKCS#7 base64-encoded twice, no client TLS.
    let facts = CertFacts::parse(&cert).unwrap();
    s.clock.set(facts.not_after.0 - 42 * 86_400 + 1);
    let key2 = KeyPair::generate(KeyAlgorithm::P256).unwrap();
    let csr = build_csr(&key2, cn_name("r").unwrap(), vec![]).unwrap();
    let twice = autoenroll_proto::b64::encode(
        autoenroll_proto::b64::encode(&sign_cms(&csr, &cert, &key, true).unwrap()).as_bytes(),
    );
    let renew = rst_body(ns::REQUEST_TYPE_RENEW, ns::VALUE_TYPE_PKCS7, twice.clone(), "Full");
    let (status, env) = mdm.post("/EnrollmentServer/Enrollment.svc", ns::ACTION_WSTEP, &account(), renew, None).await;
    assert_eq!(status, 200, "{:?}", mde2::parse_fault(&env));
    let (_, cert2) = installed_cert(&mde2::parse_provisioning_response(&env.body).unwrap(), "User");
    // ...but not with another account's credentials.
    s.ra.create_account(&autoenroll_server::ra::AccountSpec {
        name: "mallory",
        password: PASSWORD,
        templates: vec![],
        ..Default::default()
    })
    .await
    .unwrap();
    let mallory = HeaderToken::UsernameToken { username: "mallory".into(), password: PASSWORD.into() };
    let renew = rst_body(ns::REQUEST_TYPE_RENEW, ns::VALUE_TYPE_PKCS7, twice, "Full");
    let (status, env) = mdm.post("/EnrollmentServer/Enrollment.svc", ns::ACTION_WSTEP, &mallory, renew, None).await;
    let f = mde2::parse_fault(&soap_fault_env(status, env)).unwrap();
    assert!(f.reason.contains("DeviceMismatch"), "{f:?}");
    // ...and the generation after it, with the same credentials (the device is the account's).
    s.clock.set(CertFacts::parse(&cert2).unwrap().not_after.0 - 42 * 86_400 + 1);
    s.tls.reload().await.unwrap(); // a year on: the listener's own certificate is renewed too
    let csr = build_csr(&KeyPair::generate(KeyAlgorithm::P256).unwrap(), cn_name("r").unwrap(), vec![]).unwrap();
    let twice2 = autoenroll_proto::b64::encode(
        autoenroll_proto::b64::encode(&sign_cms(&csr, &cert2, &key2, true).unwrap()).as_bytes(),
    );
    let renew = rst_body(ns::REQUEST_TYPE_RENEW, ns::VALUE_TYPE_PKCS7, twice2, "Full");
    let (status, env) = mdm.post("/EnrollmentServer/Enrollment.svc", ns::ACTION_WSTEP, &account(), renew, None).await;
    assert_eq!(status, 200, "second generation: {:?}", mde2::parse_fault(&env));
}

#[tokio::test]
async fn federated_enrollment_with_a_bearer_token() {
    let s = TestServer::start().await;
    let mdm = Mdm { s: &s };
    federated_discovery(&s).await;
    let (token, _) =
        s.ra.create_token(&autoenroll_server::ra::TokenSpec { device: DEVICE_ID, template: None, ttl_secs: 600 })
            .await
            .unwrap();
    let bearer = token_header(&token);
    let key = KeyPair::generate(KeyAlgorithm::Rsa(2048)).unwrap();
    let (status, env) = mdm.enroll(&bearer, &key, "Device").await;
    assert_eq!(status, 200, "{:?}", mde2::parse_fault(&env));
    let (_, cert) = installed_cert(&mde2::parse_provisioning_response(&env.body).unwrap(), "System");
    assert_eq!(CertFacts::parse(&cert).unwrap().subject_cn.as_deref(), Some(DEVICE_ID));
}

#[tokio::test]
async fn provisioning_documents_follow_the_spec_structure() {
    let s = TestServer::start().await;
    let mdm = Mdm { s: &s };
    for (store, enrollment_type, spec_file) in [
        ("System", "Device", "mde2-spec-2.2.9.1-provisioningdoc-device.xml"),
        ("User", "Full", "mde2-spec-2.2.9.1-provisioningdoc-user.xml"),
    ] {
        let key = KeyPair::generate(KeyAlgorithm::Rsa(2048)).unwrap();
        let (status, env) = mdm.enroll(&account(), &key, enrollment_type).await;
        assert_eq!(status, 200);
        let ours = skeleton(&mde2::parse_provisioning_response(&env.body).unwrap());
        let spec = skeleton(&autoenroll_proto::xml::parse(&vector(spec_file)).unwrap());
        // Element by element: everything the spec example has, we have, except the OMA-DM
        // server's own authentication (APPAUTH, UPN), which belongs to the DM server we hand over to.
        let missing: Vec<_> =
            spec.iter().filter(|p| !ours.contains(*p) && !p.contains("APPAUTH") && !p.ends_with("@UPN")).collect();
        assert!(missing.is_empty(), "{store}: missing {missing:?}\nours: {ours:#?}");
        assert!(ours.contains(&format!("/CertificateStore/My/{store}/PrivateKeyContainer")));
    }
    // The renewal document of Microsoft's "Certificate Renewal" page: My/User/<thumbprint> with
    // its certificate (it nests PrivateKeyContainer in the thumbprint; MS-MDE2 puts it beside).
    let spec =
        skeleton(&autoenroll_proto::xml::parse(&vector("mdm-certrenewal-doc-renew-provisioningdoc.xml")).unwrap());
    assert!(spec.contains("/CertificateStore/My/User/<thumbprint>@EncodedCertificate"));
}

/// Attack (issue 12, finding 9): the MDM endpoint let a CSR's template hint override
/// `[mdm] template` — a device enrolling over MDM asked for WebServer and got it. The
/// configured template wins unless the hinted one is marked for MDM use.
#[tokio::test]
async fn attack_a_csr_hint_does_not_override_the_mdm_template() {
    let s = TestServer::start().await;
    let mdm = Mdm { s: &s };
    let enroll = |template: Option<&'static str>| {
        let mdm = &mdm;
        async move {
            let key = KeyPair::generate(KeyAlgorithm::Rsa(2048)).unwrap();
            let csr = windows_csr_hinting(&key, template);
            let body =
                rst_body(ns::REQUEST_TYPE_ISSUE, ns::VALUE_TYPE_PKCS10, autoenroll_proto::b64::encode(&csr), "Device");
            let (status, env) =
                mdm.post("/EnrollmentServer/Enrollment.svc", ns::ACTION_WSTEP, &account(), body, None).await;
            assert_eq!(status, 200, "{:?}", mde2::parse_fault(&env));
            let (_, cert) = installed_cert(&mde2::parse_provisioning_response(&env.body).unwrap(), "System");
            CertFacts::parse(&cert).unwrap().template_name.unwrap()
        }
    };
    assert_eq!(enroll(Some("WebServer")).await, "Machine", "the hint is ignored");
    let spec = autoenroll_server::ra::TemplateSpec {
        allow_mdm: Some(true),
        key_algorithm: Some("rsa2048".into()),
        ..Default::default()
    };
    s.ra.create_template("MdmVpn", &spec).await.unwrap();
    assert_eq!(enroll(Some("MdmVpn")).await, "MdmVpn", "a template marked for MDM may be picked");
}

/// The MS-MDE2 sample request (4.3.1.4) as Windows sends it, against an account named as in
/// the sample: a user principal name, and a password the sample ends with a line break
/// (issue 13, finding 5). Authentication passes; what follows is the request's business.
#[tokio::test]
async fn the_specs_sample_request_authenticates() {
    let s = TestServer::start().await;
    let upn =
        autoenroll_server::ra::AccountSpec { name: "user@contoso.com", password: "mypassword", ..Default::default() };
    s.ra.create_account(&upn).await.unwrap();
    let r = s
        .client(None)
        .post(
            &s.url("/EnrollmentServer/Enrollment.svc"),
            "application/soap+xml; charset=utf-8",
            vector("mde2-spec-4.3.1.4-rst-request-onpremise.xml"),
        )
        .await
        .unwrap();
    // The sample's token is a placeholder ("DER format PKCS#10 ... Inserted Here"): past
    // authentication, it is refused as the malformed message it is.
    let f = mde2::parse_fault(&soap::parse_envelope(&r.body).unwrap()).unwrap();
    assert_eq!((f.subcode.as_str(), f.error_type.as_str()), ("s:MessageFormat", "InvalidEnrollmentData"), "{f:?}");
    assert!(f.reason.contains("BadBase64"), "{f:?}");
}

/// Issue 13, findings 3 and 4: the enrollment document installs the issuing CA
/// (`CertificateStore/CA/System`) beside the root, so Windows can build the chain; a ROBO
/// renewal whose request omits EnrollmentType (as the MDM certificate-renewal documentation's
/// sample does) keeps the certificate in the store it was enrolled in, and its document names
/// the provider (`APPLICATION/PROVIDER-ID`) like that sample.
#[tokio::test]
async fn renewal_keeps_the_store_and_the_chain_is_provisioned() {
    let s = TestServer::start().await;
    let mdm = Mdm { s: &s };
    let key = KeyPair::generate(KeyAlgorithm::Rsa(2048)).unwrap();
    let (status, env) = mdm.enroll(&account(), &key, "Device").await;
    assert_eq!(status, 200, "{:?}", mde2::parse_fault(&env));
    let doc = mde2::parse_provisioning_response(&env.body).unwrap();
    let issuing = &s.ra.chain_der()[0];
    let ca = doc
        .children
        .iter()
        .filter(|c| c.attr(None, "type") == Some("CertificateStore"))
        .find_map(|c| find_char(c, &["CA", "System", &Thumbprint::of_der(issuing).0]))
        .expect("CA/System/<issuing thumbprint>");
    let der = autoenroll_proto::b64::decode(&find_parm(ca, "EncodedCertificate").unwrap(), "ca").unwrap();
    assert_eq!(&der, issuing);
    let (_, cert) = installed_cert(&doc, "System");

    // ROBO renewal without EnrollmentType in the request.
    s.clock.set(CertFacts::parse(&cert).unwrap().not_after.0 - 42 * 86_400 + 1);
    s.tls.reload().await.unwrap();
    let new_key = KeyPair::generate(KeyAlgorithm::Rsa(2048)).unwrap();
    let csr = build_csr(&new_key, cn_name("renew").unwrap(), vec![]).unwrap();
    let token = autoenroll_proto::b64::encode(&sign_cms(&csr, &cert, &key, false).unwrap());
    let body = W::new("wst:RequestSecurityToken")
        .attr("xmlns:wst", ns::WST)
        .attr("xmlns:ac", ns::AUTH)
        .child(W::leaf("wst:TokenType", ns::TOKEN_TYPE_DEVICE_ENROLLMENT))
        .child(W::leaf("wst:RequestType", ns::REQUEST_TYPE_RENEW))
        .child(
            W::leaf("wsse:BinarySecurityToken", token)
                .attr("ValueType", ns::VALUE_TYPE_PKCS7)
                .attr("EncodingType", ns::ENCODING_BASE64),
        )
        .child(
            W::new("ac:AdditionalContext")
                .child(W::new("ac:ContextItem").attr("Name", "DeviceID").child(W::leaf("ac:Value", DEVICE_ID))),
        );
    let identity = ClientIdentity { chain: vec![cert.clone()], key_pkcs8: key.to_pkcs8_der().unwrap() };
    let (status, env) =
        mdm.post("/EnrollmentServer/Enrollment.svc", ns::ACTION_WSTEP, &HeaderToken::None, body, Some(&identity)).await;
    assert_eq!(status, 200, "{:?}", mde2::parse_fault(&env));
    let doc = mde2::parse_provisioning_response(&env.body).unwrap();
    let (_, renewed) = installed_cert(&doc, "System");
    assert_eq!(CertFacts::parse(&renewed).unwrap().spki_der, new_key.spki_der());
    let app = doc.children.iter().find(|c| c.attr(None, "type") == Some("APPLICATION")).expect("APPLICATION");
    assert!(find_parm(app, "PROVIDER-ID").is_some_and(|p| !p.is_empty()));
    // Element by element against Microsoft's renewal document sample (a User store there): all
    // it has, we have — except the root, which it only sends "if it is not in the device
    // already", and PrivateKeyContainer, which it nests in the thumbprint and MS-MDE2 beside it.
    let ours: BTreeSet<String> = skeleton(&doc).into_iter().map(|p| p.replace("/My/System", "/My/User")).collect();
    let sample =
        skeleton(&autoenroll_proto::xml::parse(&vector("mdm-certrenewal-doc-renew-provisioningdoc.xml")).unwrap());
    let missing: Vec<_> = sample
        .iter()
        .filter(|p| !ours.contains(*p) && !p.contains("/Root") && !p.ends_with("/PrivateKeyContainer"))
        .collect();
    assert!(missing.is_empty(), "missing {missing:?}\nours: {ours:#?}");
}

/// Review of issue 13: with a bootstrap token the certificate is the token's device, and the
/// management client must find it by that subject (EntDMID and the certificate search criteria
/// follow the certificate, not the request's DeviceID).
#[tokio::test]
async fn the_management_client_looks_for_the_certificate_it_got() {
    let s = TestServer::start().await;
    let mdm = Mdm { s: &s };
    let (token, _) =
        s.ra.create_token(&autoenroll_server::ra::TokenSpec { device: "kiosk-mdm", template: None, ttl_secs: 600 })
            .await
            .unwrap();
    let key = KeyPair::generate(KeyAlgorithm::Rsa(2048)).unwrap();
    let (status, env) = mdm.enroll(&token_header(&token), &key, "Device").await;
    assert_eq!(status, 200, "{:?}", mde2::parse_fault(&env));
    let doc = mde2::parse_provisioning_response(&env.body).unwrap();
    let (_, cert) = installed_cert(&doc, "System");
    assert_eq!(CertFacts::parse(&cert).unwrap().subject_cn.as_deref(), Some("kiosk-mdm"));
    assert_eq!(find_parm(&doc, "EntDMID").as_deref(), Some("kiosk-mdm"));
    assert!(find_parm(&doc, "SSLCLIENTCERTSEARCHCRITERIA").unwrap().contains("CN%3dkiosk-mdm"));
}

/// Discovery with the device offering Federated only: the AuthenticationServiceUrl it is told.
async fn federated_discovery(s: &TestServer) -> String {
    let discover =
        String::from_utf8(vector("fleet-mdmtest-discover-request.xml")).unwrap().replace("OnPremise", "Federated");
    let r = s
        .client(None)
        .post(&s.url("/EnrollmentServer/Discovery.svc"), "application/soap+xml", discover.into_bytes())
        .await
        .unwrap();
    let d = mde2::parse_discover_response(&soap::parse_envelope(&r.body).unwrap().body).unwrap();
    assert_eq!(d.auth_policy, "Federated");
    d.authentication_url.expect("Federated discovery names the sign-in page")
}

fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
    let enc = |v: &str| percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string();
    pairs.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&").into_bytes()
}

/// The `value` of the hidden input `name` in a page.
fn hidden_value(page: &str, name: &str) -> Option<String> {
    let at = page.find(&format!("name=\"{name}\" value=\""))? + name.len() + 15;
    Some(page[at..].split('"').next()?.to_string())
}

const APPRU: &str = "ms-app://windows.immersivecontrolpanel";

#[tokio::test]
async fn sign_in_page_hands_a_single_use_token_to_windows_only() {
    let s = TestServer::start().await;
    let mdm = Mdm { s: &s };
    let page_url = federated_discovery(&s).await;
    assert_eq!(page_url, s.url("/EnrollmentServer/Authenticate"));
    let client = s.client(None);

    // The page Windows opens: a form that keeps appru and prefills the login hint.
    let q = format!(
        "{page_url}?appru={}&login_hint=enroller%40example.com",
        "ms-app%3A%2F%2Fwindows.immersivecontrolpanel"
    );
    let r = client.get(&q).await.unwrap();
    let page = String::from_utf8(r.body).unwrap();
    assert_eq!(r.status, 200, "{page}");
    assert!(page.contains("<form method=\"post\" action=\"/EnrollmentServer/Authenticate\">"), "{page}");
    assert_eq!(hidden_value(&page, "appru").as_deref(), Some(APPRU));
    assert!(page.contains("value=\"enroller@example.com\""), "login_hint prefilled: {page}");

    // Attacker's moves: a link whose appru is the attacker's site gets no form and no token;
    // markup in the parameters comes back escaped.
    let evil = client.get(&format!("{page_url}?appru=https%3A%2F%2Fevil.example%2F")).await.unwrap();
    assert_eq!(evil.status, 400);
    let post = |fields: Vec<u8>| {
        let client = s.client(None);
        let url = page_url.clone();
        async move { client.post(&url, "application/x-www-form-urlencoded", fields).await.unwrap() }
    };
    let r = post(form(&[("appru", "https://evil.example/"), ("username", "enroller"), ("password", PASSWORD)])).await;
    assert_eq!(r.status, 400);
    assert!(!String::from_utf8_lossy(&r.body).contains("wresult"));
    let r =
        client.get(&format!("{page_url}?appru={}&login_hint=%22%3E%3Cscript%3E", "ms-app%3A%2F%2Fx")).await.unwrap();
    assert!(!String::from_utf8_lossy(&r.body).contains("\"><script>"), "the hint is escaped");

    // A wrong password: the form again, 401, no token.
    let r = post(form(&[("appru", APPRU), ("username", "enroller"), ("password", "wrong")])).await;
    assert_eq!(r.status, 401);
    let page = String::from_utf8(r.body).unwrap();
    assert!(page.contains("Sign-in failed") && !page.contains("wresult"), "{page}");

    // The right one: a form posting wresult to appru exactly.
    let r = post(form(&[("appru", APPRU), ("username", "enroller"), ("password", PASSWORD)])).await;
    let page = String::from_utf8(r.body).unwrap();
    assert_eq!(r.status, 200, "{page}");
    assert!(page.contains(&format!("<form id=\"return\" method=\"post\" action=\"{APPRU}\">")), "{page}");
    let token = hidden_value(&page, "wresult").unwrap();

    // The token is good on policy and enrollment, once; then it is spent. It does not buy
    // another token or a check-in.
    let bearer = token_header(&token);
    let (status, _) = mdm
        .post("/EnrollmentServer/Policy.svc", ns::ACTION_GET_POLICIES, &bearer, xcep::request_body(None), None)
        .await;
    assert_eq!(status, 200);
    let r = post(form(&[("appru", APPRU), ("token", &token)])).await;
    assert_eq!(r.status, 401, "a sign-in token does not buy another");
    let key = KeyPair::generate(KeyAlgorithm::Rsa(2048)).unwrap();
    let (status, env) = mdm.enroll(&bearer, &key, "Full").await;
    assert_eq!(status, 200, "{:?}", mde2::parse_fault(&env));
    let (_, cert) = installed_cert(&mde2::parse_provisioning_response(&env.body).unwrap(), "User");
    assert_eq!(CertFacts::parse(&cert).unwrap().subject_cn.as_deref(), Some(DEVICE_ID));
    let (status, env) = mdm.enroll(&bearer, &key, "Full").await;
    assert_eq!(subcode(status, &env), "s:Authentication", "spent");
    // Spent, it names nobody: no reading the account's requests with a captured token.
    let query = autoenroll_proto::wstep::query_request_body("1");
    let (status, env) = s.soap(ns::ACTION_WSTEP, &bearer, query, None).await;
    assert_eq!(subcode(status, &env), "ae:TokenUsed");
    let filter = autoenroll_server::ra::AuditFilter { limit: 100, ..Default::default() };
    let events = s.ra.audit_events(&filter).await.unwrap();
    assert!(events.iter().any(|e| e.action == "mdm.sign-in" && e.actor == "account:enroller"));

    // Windows sends the address the user typed: an account named by its UPN signs in (and
    // its token gets policy without a device name in the request).
    s.ra.create_account(&autoenroll_server::ra::AccountSpec {
        name: "user@contoso.com",
        password: PASSWORD,
        ..Default::default()
    })
    .await
    .unwrap();
    let r = post(form(&[("appru", APPRU), ("username", "user@contoso.com"), ("password", PASSWORD)])).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let upn_token = hidden_value(&String::from_utf8(r.body).unwrap(), "wresult").unwrap();
    let (status, env) = mdm
        .post(
            "/EnrollmentServer/Policy.svc",
            ns::ACTION_GET_POLICIES,
            &token_header(&upn_token),
            xcep::request_body(None),
            None,
        )
        .await;
    assert_eq!(status, 200, "{:?}", mde2::parse_fault(&env));

    // An administrator's bootstrap token typed into the page comes back as it is.
    let (admin_token, _) =
        s.ra.create_token(&autoenroll_server::ra::TokenSpec { device: "LAPTOP-7", template: None, ttl_secs: 600 })
            .await
            .unwrap();
    let r = post(form(&[("appru", APPRU), ("token", &admin_token)])).await;
    assert_eq!(hidden_value(&String::from_utf8(r.body).unwrap(), "wresult"), Some(admin_token));
}

#[tokio::test]
async fn sign_in_tokens_expire_and_follow_the_account() {
    let s = TestServer::start().await;
    let mdm = Mdm { s: &s };
    let page_url = federated_discovery(&s).await;
    let sign_in = || async {
        let body = form(&[("appru", APPRU), ("username", "enroller"), ("password", PASSWORD)]);
        let r = s.client(None).post(&page_url, "application/x-www-form-urlencoded", body).await.unwrap();
        hidden_value(&String::from_utf8(r.body).unwrap(), "wresult").unwrap()
    };
    let key = KeyPair::generate(KeyAlgorithm::Rsa(2048)).unwrap();

    // Fifteen minutes, then useless.
    let token = sign_in().await;
    s.clock.advance(autoenroll_server::ra::SIGN_IN_TOKEN_SECS + 1);
    let (status, env) = mdm.enroll(&token_header(&token), &key, "Full").await;
    assert_eq!(subcode(status, &env), "s:Authentication", "expired");

    // A disabled account's tokens stop working at once.
    let token = sign_in().await;
    s.ra.set_account_disabled("enroller", true).await.unwrap();
    let (status, env) = mdm.enroll(&token_header(&token), &key, "Full").await;
    assert_eq!(subcode(status, &env), "s:Authentication", "account disabled");
    let body = form(&[("appru", APPRU), ("username", "enroller"), ("password", PASSWORD)]);
    let r = s.client(None).post(&page_url, "application/x-www-form-urlencoded", body).await.unwrap();
    assert_eq!(r.status, 401, "a disabled account cannot sign in");
    s.ra.set_account_disabled("enroller", false).await.unwrap();
    let (status, env) = mdm.enroll(&token_header(&sign_in().await), &key, "Full").await;
    assert_eq!(status, 200, "enabled again: {:?}", mde2::parse_fault(&env));
}

/// Discovery → the sign-in page in Debian's chromium (typed into like a user would) → the
/// page posts `wresult` to the return address → policy and enrollment with that token.
/// Windows' broker captures the post to `ms-app://…`; here a loopback page stands in for it
/// (allowed by the `sign_in_return` setting, as an administrator would for another client).
#[tokio::test]
async fn federated_sign_in_in_a_real_browser() {
    use autoenroll_test_support::browser::{Browser, Locator};
    // The return address: records what the browser posts to it.
    let capture = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let appru = format!("http://{}/return", capture.local_addr().unwrap());
    let (posted_tx, mut posted_rx) = tokio::sync::mpsc::channel::<String>(1);
    let app = axum::Router::new().route(
        "/return",
        axum::routing::post(move |body: String| {
            let tx = posted_tx.clone();
            async move {
                let _ = tx.send(body).await;
                "returned to the enrollment wizard"
            }
        }),
    );
    tokio::spawn(async move { axum::serve(capture, app).await });
    let allowed = appru.clone();
    let s = TestServer::start_with(move |c| {
        c.mdm = Some(autoenroll_server::config::RawMdm {
            sign_in_return: Some(vec!["ms-app://".into(), allowed]),
            ..Default::default()
        })
    })
    .await;
    let mdm = Mdm { s: &s };
    let page_url = federated_discovery(&s).await;

    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    let browser = Browser::start(&shots).await;
    let b = &browser.client;
    let enc = |v: &str| percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string();
    b.goto(&format!("{page_url}?appru={}&login_hint={}", enc(&appru), enc("enroller"))).await.unwrap();
    assert_eq!(b.find(Locator::Css("h1")).await.unwrap().text().await.unwrap(), "Sign in to enroll this device");
    let user = b.find(Locator::Id("username")).await.unwrap();
    assert_eq!(user.prop("value").await.unwrap().as_deref(), Some("enroller"), "login_hint prefilled");
    // A wrong password first: the page says so and posts nothing.
    b.find(Locator::Id("password")).await.unwrap().send_keys("not the password").await.unwrap();
    b.find(Locator::Id("sign-in")).await.unwrap().click().await.unwrap();
    let alert = b.wait().for_element(Locator::Css("p.error")).await.unwrap();
    assert!(alert.text().await.unwrap().contains("Sign-in failed"));
    browser.screenshot("mdm-sign-in-refused").await;
    let user = b.find(Locator::Id("username")).await.unwrap();
    assert_eq!(user.prop("value").await.unwrap().as_deref(), Some("enroller"), "the account typed is kept");
    b.find(Locator::Id("password")).await.unwrap().send_keys(PASSWORD).await.unwrap();
    browser.screenshot("mdm-sign-in-form").await;
    b.find(Locator::Id("sign-in")).await.unwrap().click().await.unwrap();

    // The page submits itself (its script runs under the page's CSP) to the return address.
    let posted = tokio::time::timeout(std::time::Duration::from_secs(30), posted_rx.recv())
        .await
        .expect("the browser posted to appru within 30 s")
        .unwrap();
    b.wait().for_url(&appru.parse().unwrap()).await.unwrap();
    browser.screenshot("mdm-sign-in-returned").await;
    browser.close().await;
    let fields = autoenroll_server::frontends::form_params(&posted);
    assert_eq!(fields.len(), 1, "only wresult is posted: {posted}");
    let (name, token) = &fields[0];
    assert_eq!(name, "wresult");

    // What Windows does next: policy and enrollment with the token as DeviceEnrollmentUserToken.
    let bearer = token_header(token);
    let (status, env) = mdm
        .post("/EnrollmentServer/Policy.svc", ns::ACTION_GET_POLICIES, &bearer, xcep::request_body(None), None)
        .await;
    assert_eq!(status, 200, "{:?}", mde2::parse_fault(&env));
    let key = KeyPair::generate(KeyAlgorithm::Rsa(2048)).unwrap();
    let (status, env) = mdm.enroll(&bearer, &key, "Full").await;
    assert_eq!(status, 200, "{:?}", mde2::parse_fault(&env));
    let (_, cert) = installed_cert(&mde2::parse_provisioning_response(&env.body).unwrap(), "User");
    assert_eq!(CertFacts::parse(&cert).unwrap().subject_cn.as_deref(), Some(DEVICE_ID));
}

/// Issue 13: MS-MDE2 has no pending state and Windows makes a new key on every attempt, so a
/// request held for approval could never be collected (an approval would sign a key nobody
/// has). From a template that holds requests, MDM enrollment takes an administrator's token for
/// the device as the approval and refuses anyone else, saying so.
#[tokio::test]
async fn a_template_held_for_approval_takes_an_administrators_token_as_the_approval() {
    let s = TestServer::start().await;
    let mdm = Mdm { s: &s };
    let held = autoenroll_server::ra::TemplateSpec { pend_all: Some(true), ..Default::default() };
    s.ra.update_template(autoenroll_server::ra::LOCAL_ADMIN, "Machine", &held).await.unwrap();
    let key = KeyPair::generate(KeyAlgorithm::Rsa(2048)).unwrap();
    let (status, env) = mdm.enroll(&account(), &key, "Device").await;
    assert_eq!(status, 500);
    let f = mde2::parse_fault(&env).unwrap();
    assert_eq!((f.subcode.as_str(), f.error_type.as_str()), ("s:Authorization", "NotSupported"), "{f:?}");
    assert!(f.reason.contains("enrollment token"), "the fault says what to do: {}", f.reason);
    // A token that does not name this template approves nothing here (on WS-TEP it would be held).
    let (any_template, _) =
        s.ra.create_token(&autoenroll_server::ra::TokenSpec { device: DEVICE_ID, template: None, ttl_secs: 600 })
            .await
            .unwrap();
    let (status, env) = mdm.enroll(&token_header(&any_template), &key, "Device").await;
    assert_eq!(status, 500, "{:?}", mde2::parse_fault(&env));
    let (token, _) = s
        .ra
        .create_token(&autoenroll_server::ra::TokenSpec { device: DEVICE_ID, template: Some("Machine"), ttl_secs: 600 })
        .await
        .unwrap();
    let (status, env) = mdm.enroll(&token_header(&token), &key, "Device").await;
    assert_eq!(status, 200, "{:?}", mde2::parse_fault(&env));
    installed_cert(&mde2::parse_provisioning_response(&env.body).unwrap(), "System");
}
