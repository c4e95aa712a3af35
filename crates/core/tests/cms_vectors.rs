//! The MS-WSTEP 4.1.5.1 renewal sample: a SHA-1 RSA SignedData without signed attributes whose
//! content is a PKCS#10 carrying the old certificate in 1.3.6.1.4.1.311.13.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use autoenroll_core::pki::cms::{is_signed_data, verify_renewal};
use autoenroll_core::pki::CertFacts;
use autoenroll_core::UnixTime;
use base64::Engine;

fn renewal_token() -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/ms/wstep-spec-4.1.5.1-renewal-request.xml");
    let xml = std::fs::read_to_string(p).unwrap();
    let start = xml.find("<BinarySecurityToken").or_else(|| xml.find("BinarySecurityToken ")).unwrap();
    let body_start = start + xml[start..].find('>').unwrap() + 1;
    let body_end = body_start + xml[body_start..].find('<').unwrap();
    let b64: String = xml[body_start..body_end].chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(b64).unwrap()
}

#[test]
fn spec_renewal_request_verifies() {
    let der = renewal_token();
    assert!(is_signed_data(&der));
    let r = verify_renewal(&der).expect("the spec's renewal request verifies");
    assert!(!r.signed_attributes);
    assert_eq!(r.csr.renewal_cert_der.as_deref(), Some(r.signer_cert_der.as_slice()));
    // Fixed clock: the old certificate was valid in mid-2009 and has long expired.
    let old = CertFacts::parse(&r.signer_cert_der).unwrap();
    let mid_2009 = UnixTime(1_246_406_400);
    assert!(old.not_before <= mid_2009 && mid_2009 < old.not_after, "{old:?}");
    assert!(old.not_after < UnixTime(1_700_000_000));
}

#[test]
fn tampered_renewal_request_is_refused() {
    let der = renewal_token();
    // Flip one bit near the end (inside the signature).
    let mut bad = der.clone();
    let i = bad.len() - 10;
    bad[i] ^= 1;
    assert!(verify_renewal(&bad).is_err());
    // Truncations never panic.
    for cut in [0, 1, 10, der.len() / 2, der.len() - 1] {
        assert!(verify_renewal(&der[..cut]).is_err());
    }
}
