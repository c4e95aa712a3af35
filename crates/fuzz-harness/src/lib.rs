//! The decoders of network input, one entry point per fuzz target. Each takes arbitrary bytes
//! and must return (an error is fine) without panicking, looping or allocating without bound.
//! `fuzz/` drives them with libFuzzer; `tests/corpus.rs` replays every stored input (the seed
//! corpora, what fuzzing found and minimised, and every crash turned regression) on each test
//! run.
#![forbid(unsafe_code)]

use autoenroll_core::pki::{self, CertFacts, CsrFacts};
use autoenroll_proto::{mde2, soap, wstep, xcep};

/// A fuzz target: bytes in, nothing out (it must only not panic).
pub type Target = fn(&[u8]);

/// The targets, by the name of their corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("soap", soap_request),
    ("csr", csr),
    ("cms_renewal", cms_renewal),
    ("scep_message", scep_message),
    ("ocsp_request", ocsp_request),
    ("certificate", certificate),
    ("checkin_json", checkin_json),
];

/// A SOAP envelope and every body reader the server applies to it (XCEP GetPolicies, WS-TEP
/// RST, MS-MDE2 Discover).
pub fn soap_request(data: &[u8]) {
    if let Ok(env) = soap::parse_envelope(data) {
        let _ = xcep::parse_request(&env.body);
        if let Ok(rst) = wstep::parse_request(&env.body) {
            let _ = rst.context_value("DeviceID");
        }
        let _ = mde2::parse_discover(&env.body);
    }
}

/// A PKCS#10 request as WS-TEP, MDM and SCEP hand it over, and what the server stores of it.
pub fn csr(data: &[u8]) {
    let _ = CsrFacts::parse(data);
    if let Ok(stripped) = CsrFacts::without_challenge(data) {
        let _ = CsrFacts::parse_stored(&stripped);
    }
    let _ = pki::csr::client_machine_name(data);
}

/// A renewal: CMS SignedData around a PKCS#10, signed by the certificate it renews; and the
/// PKCS#7 certificate bags clients send.
pub fn cms_renewal(data: &[u8]) {
    let _ = pki::cms::is_signed_data(data);
    let _ = pki::cms::verify_renewal(data);
    let _ = autoenroll_proto::pkcs7::certificates(data);
}

/// The RSA key the SCEP seed messages are encrypted to (the test CA's), so that fuzzing reaches
/// the EnvelopedData decoder behind the pkiMessage.
fn scep_recipient() -> &'static [u8] {
    static KEY: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let pem = include_str!("../../../testdata/scep/ca.key");
        autoenroll_keys::KeyPair::from_pem(pem).and_then(|k| k.to_pkcs8_der()).unwrap_or_default()
    })
}

/// A SCEP pkiMessage: the signed outer message, its envelope, and the message bodies inside.
pub fn scep_message(data: &[u8]) {
    let Ok(msg) = pki::scep::parse_pki_message(data) else { return };
    if let Ok((content, _)) = autoenroll_keys::envelope::decrypt_enveloped(&msg.envelope, scep_recipient(), true) {
        let _ = CsrFacts::parse(&content);
        let _ = pki::scep::parse_issuer_and_serial(&content);
        let _ = pki::scep::parse_issuer_and_subject(&content);
    }
}

pub fn ocsp_request(data: &[u8]) {
    let _ = pki::ocsp::parse_request(data);
}

/// A client certificate (TLS, renewal signer) as the server reads it.
pub fn certificate(data: &[u8]) {
    let _ = CertFacts::parse(data);
}

/// The check-in report a device posts.
pub fn checkin_json(data: &[u8]) {
    let _ = serde_json::from_slice::<autoenroll_proto::checkin::CheckinReport>(data);
}
