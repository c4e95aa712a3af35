//! MS-XCEP GetPolicies against the specifications' tables (issue 13): flag values from MS-CRTD
//! (2.4 general flags, 2.26 enrollment flags, 2.28 subject-name flags), key attributes as
//! certenroll reads them (schema 2 = CryptoAPI CSPs and keySpec, schema 3 = CNG with a named
//! curve and a hash algorithm, which MS-XCEP 3.1.4.1.3.1 says MUST be nil below schema 3), the
//! OID groups of MS-XCEP 3.1.4.1.3.16, nil collections, the requestFilter, and the renewal period
//! the server enforces. Expected values are written from the tables, not from our output.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use crate::common;

use autoenroll_proto::ns;
use autoenroll_proto::soap;
use autoenroll_proto::xcep::{self, GetPoliciesResponse, Policy};
use autoenroll_proto::xml::W;
use autoenroll_server::ra::TemplateSpec;
use common::*;

// MS-CRTD 2.4 (flags attribute)
const CT_FLAG_AUTO_ENROLLMENT: u32 = 0x20;
const CT_FLAG_MACHINE_TYPE: u32 = 0x40;
const CT_FLAG_ADD_TEMPLATE_NAME: u32 = 0x200;
// MS-CRTD 2.26 (msPKI-Enrollment-Flag)
const CT_FLAG_PEND_ALL_REQUESTS: u32 = 0x2;
const CT_FLAG_PREVIOUS_APPROVAL_VALIDATE_REENROLLMENT: u32 = 0x40;
// MS-CRTD 2.28 (msPKI-Certificate-Name-Flag)
const CT_FLAG_ENROLLEE_SUPPLIES_SUBJECT: u32 = 0x1;
const CT_FLAG_OLD_CERT_SUPPLIES_SUBJECT_AND_ALT_NAME: u32 = 0x8;
const CT_FLAG_ENROLLEE_SUPPLIES_SUBJECT_ALT_NAME: u32 = 0x10000;
// MS-XCEP 3.1.4.1.3.16 OID groups
const GROUP_HASH: u32 = 1;
const GROUP_PUBLIC_KEY: u32 = 3;
const GROUP_TEMPLATE: u32 = 9;
const DAY: u64 = 86_400;

async fn policies(s: &TestServer, body: W) -> GetPoliciesResponse {
    let xml = soap::request(ns::ACTION_GET_POLICIES, &s.url("/wstep"), "urn:uuid:x", &account(), body);
    let r = s.client(None).post(&s.url("/wstep"), "application/soap+xml", xml.into_bytes()).await.unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    xcep::parse_response(&soap::parse_envelope(&r.body).unwrap().body).unwrap()
}

fn policy<'a>(r: &'a GetPoliciesResponse, name: &str) -> &'a Policy {
    r.policies.iter().find(|p| p.common_name == name).unwrap_or_else(|| panic!("no policy {name}"))
}

fn oid(r: &GetPoliciesResponse, reference: Option<i32>) -> Option<(String, u32)> {
    let reference = reference?;
    r.oids.iter().find(|o| o.reference_id == reference).map(|o| (o.value.clone(), o.group))
}

#[tokio::test]
async fn templates_read_as_certenroll_expects() {
    let s = TestServer::start().await;
    let rsa = TemplateSpec { key_algorithm: Some("rsa3072".into()), pend_all: Some(true), ..Default::default() };
    s.ra.create_template("RsaServer", &rsa).await.unwrap();
    let p384 = TemplateSpec { key_algorithm: Some("p384".into()), for_users: Some(true), ..Default::default() };
    s.ra.create_template("UserP384", &p384).await.unwrap();
    let r = policies(&s, xcep::request_body(None)).await;

    // Machine: a computer template with an ECDSA P-256 key — CNG, schema 3, the named curve.
    let m = policy(&r, "Machine");
    assert_eq!(m.general_flags, CT_FLAG_MACHINE_TYPE | CT_FLAG_ADD_TEMPLATE_NAME | CT_FLAG_AUTO_ENROLLMENT);
    assert_eq!(m.enrollment_flags, CT_FLAG_AUTO_ENROLLMENT | CT_FLAG_PREVIOUS_APPROVAL_VALIDATE_REENROLLMENT);
    assert_eq!(m.subject_name_flags, 0, "the subject is built from the device, not supplied");
    assert_eq!(m.policy_schema, 3);
    assert_eq!(oid(&r, m.algorithm_oid_reference), Some(("1.2.840.10045.3.1.7".into(), GROUP_PUBLIC_KEY)));
    assert_eq!(m.minimal_key_length, 256);
    assert_eq!(m.crypto_providers, ["Microsoft Software Key Storage Provider"]);
    assert_eq!(m.key_spec, None, "CNG keys have no key spec: nil, as in the MS-MDE2 4.2.2 schema-3 sample");
    assert_eq!(oid(&r, m.hash_algorithm_oid_reference), Some(("2.16.840.1.101.3.4.2.1".into(), GROUP_HASH)));
    assert_eq!(oid(&r, Some(m.oid_reference)).unwrap().1, GROUP_TEMPLATE);
    // Renewal period: the window the server enforces, min(42 d, 365 d / 5).
    assert_eq!((m.validity_seconds, m.renewal_seconds), (365 * DAY, 42 * DAY));

    // WebServer: the enrollee supplies subject and SANs; a renewal reuses the old ones.
    let w = policy(&r, "WebServer");
    assert_eq!(
        w.subject_name_flags,
        CT_FLAG_ENROLLEE_SUPPLIES_SUBJECT
            | CT_FLAG_ENROLLEE_SUPPLIES_SUBJECT_ALT_NAME
            | CT_FLAG_OLD_CERT_SUPPLIES_SUBJECT_AND_ALT_NAME
    );
    // 90-day certificates with a 30-day period renew in the last 18 days (20 % of the lifetime):
    // that is what is advertised, so a client following it is never refused.
    assert_eq!((w.validity_seconds, w.renewal_seconds), (90 * DAY, 18 * DAY));

    // An RSA template: CryptoAPI (schema 2), AT_KEYEXCHANGE, CSPs, no hash reference.
    let rs = policy(&r, "RsaServer");
    assert_eq!(rs.policy_schema, 2);
    assert_eq!(rs.key_spec, Some(1));
    assert_eq!(rs.minimal_key_length, 3072);
    assert_eq!(oid(&r, rs.algorithm_oid_reference), Some(("1.2.840.113549.1.1.1".into(), GROUP_PUBLIC_KEY)));
    assert!(rs.crypto_providers.iter().all(|c| c.starts_with("Microsoft") && c.contains("Cryptographic Provider")));
    assert!(!rs.crypto_providers.is_empty());
    assert_eq!(rs.hash_algorithm_oid_reference, None, "MUST be nil when policySchema is 1 or 2");
    assert_eq!(rs.enrollment_flags & CT_FLAG_PEND_ALL_REQUESTS, CT_FLAG_PEND_ALL_REQUESTS);

    // A user template: no CT_FLAG_MACHINE_TYPE (Windows enrolls it in user context).
    let u = policy(&r, "UserP384");
    assert_eq!(u.general_flags & CT_FLAG_MACHINE_TYPE, 0);
    assert_eq!(oid(&r, u.algorithm_oid_reference), Some(("1.3.132.0.34".into(), GROUP_PUBLIC_KEY)));
    assert_eq!(u.minimal_key_length, 384);

    // Every reference resolves, and each OID is listed once.
    let mut seen = std::collections::BTreeSet::new();
    for o in &r.oids {
        assert!(seen.insert(o.reference_id), "duplicate oIDReferenceID {}", o.reference_id);
    }
}

#[tokio::test]
async fn the_request_filter_selects_templates_by_oid() {
    let s = TestServer::start().await;
    let all = policies(&s, xcep::request_body(None)).await;
    let machine_oid = oid(&all, Some(policy(&all, "Machine").oid_reference)).unwrap().0;
    // MS-XCEP 3.1.4.1.3.24 RequestFilter: policyOIDs, clientVersion, serverVersion.
    let body = W::new("GetPolicies")
        .attr("xmlns", ns::XCEP)
        .child(W::new("client").child(W::nil("lastUpdate")).child(W::nil("preferredLanguage")))
        .child(
            W::new("requestFilter")
                .child(W::new("policyOIDs").child(W::leaf("oid", machine_oid.as_str())))
                .child(W::nil("clientVersion"))
                .child(W::nil("serverVersion")),
        );
    let filtered = policies(&s, body).await;
    assert_eq!(filtered.policies.iter().map(|p| p.common_name.as_str()).collect::<Vec<_>>(), ["Machine"]);
}

#[tokio::test]
async fn the_mdm_policy_says_what_windows_will_send_and_nils_empty_collections() {
    let s = TestServer::start().await;
    let url = s.url("/EnrollmentServer/Policy.svc");
    let xml = soap::request(ns::ACTION_GET_POLICIES, &url, "urn:uuid:m", &account(), xcep::request_body(None));
    let r = s.client(None).post(&url, "application/soap+xml", xml.into_bytes()).await.unwrap();
    let raw = String::from_utf8(r.body.clone()).unwrap();
    let p = xcep::parse_response(&soap::parse_envelope(&r.body).unwrap().body).unwrap();
    let m = policy(&p, "Machine");
    // Windows MDM creates RSA keys; Machine takes them: policy and issuance agree.
    assert_eq!(oid(&p, m.algorithm_oid_reference).unwrap().0, "1.2.840.113549.1.1.1");
    assert_eq!((m.policy_schema, m.minimal_key_length), (3, 2048));
    assert_eq!(m.key_spec, None, "schema 3 (CNG): keySpec nil, as in the MS-MDE2 4.2.2 sample");
    // No CA list in MDM policy: the top-level cAs is nil, not an empty element.
    let doc = autoenroll_proto::xml::parse(raw.as_bytes()).unwrap();
    let body = doc.child(ns::SOAP12, "Body").unwrap().child(ns::XCEP, "GetPoliciesResponse").unwrap();
    assert!(body.child(ns::XCEP, "cAs").unwrap().is_nil(), "{raw}");
}

/// Element order against the MS-XCEP 4.1.1.2 sample response (what ADCS's enrollment policy
/// service sends, and strict schema-checking clients read): for each container, our children
/// come in the sample's order, and what the sample has, we have.
#[tokio::test]
async fn element_order_follows_the_specs_sample_response() {
    use autoenroll_proto::xml::Element;
    fn children(e: &Element) -> Vec<&str> {
        e.children.iter().map(|c| c.local.as_str()).collect()
    }
    fn at<'a>(e: &'a Element, path: &[&str]) -> &'a Element {
        path.iter().fold(e, |cur, p| {
            cur.children.iter().find(|c| c.local == *p).unwrap_or_else(|| panic!("no {p} under {}", cur.local))
        })
    }
    // The published sample elides the middle of its base64 values ("…"): make them whole.
    let sample = String::from_utf8(
        std::fs::read(autoenroll_test_support::testdata("ms/xcep-spec-4.1.1.2-getpolicies-response.xml")).unwrap(),
    )
    .unwrap();
    let sample: String =
        sample.lines().map(|l| if l.contains('…') { "AAAA\n".to_string() } else { format!("{l}\n") }).collect();
    let spec = autoenroll_proto::soap::parse_envelope(sample.as_bytes()).unwrap().body;

    let s = TestServer::start().await;
    // An RSA template, so that cryptoProviders is filled as in the sample.
    let rsa = TemplateSpec { key_algorithm: Some("rsa2048".into()), ..Default::default() };
    s.ra.create_template("Rsa", &rsa).await.unwrap();
    let xml =
        soap::request(ns::ACTION_GET_POLICIES, &s.url("/wstep"), "urn:uuid:o", &account(), xcep::request_body(None));
    let r = s.client(None).post(&s.url("/wstep"), "application/soap+xml", xml.into_bytes()).await.unwrap();
    let ours = autoenroll_proto::soap::parse_envelope(&r.body).unwrap().body;
    let rsa_policy = at(&ours, &["response", "policies"])
        .children
        .iter()
        .find(|p| at(p, &["attributes", "commonName"]).text == "Rsa")
        .unwrap();

    let spec_policy = at(&spec, &["response", "policies", "policy"]);
    for (name, theirs, mine) in [
        ("GetPoliciesResponse", &spec, &ours),
        ("response", at(&spec, &["response"]), at(&ours, &["response"])),
        ("policy", spec_policy, rsa_policy),
        ("attributes", at(spec_policy, &["attributes"]), at(rsa_policy, &["attributes"])),
        (
            "privateKeyAttributes",
            at(spec_policy, &["attributes", "privateKeyAttributes"]),
            at(rsa_policy, &["attributes", "privateKeyAttributes"]),
        ),
        (
            "cryptoProviders",
            at(spec_policy, &["attributes", "privateKeyAttributes", "cryptoProviders"]),
            at(rsa_policy, &["attributes", "privateKeyAttributes", "cryptoProviders"]),
        ),
        ("cA", at(&spec, &["cAs", "cA"]), at(&ours, &["cAs", "cA"])),
        ("cAURI", at(&spec, &["cAs", "cA", "uris", "cAURI"]), at(&ours, &["cAs", "cA", "uris", "cAURI"])),
        ("oID", at(&spec, &["oIDs", "oID"]), at(&ours, &["oIDs", "oID"])),
    ] {
        let mut theirs: Vec<&str> = children(theirs);
        theirs.dedup();
        let mut mine: Vec<&str> = children(mine);
        mine.dedup();
        assert_eq!(mine, theirs, "children of {name}");
    }
}
