//! Captured SCEP requests of real clients (sscep, certmonger, micromdm scepclient; see
//! testdata/scep/README.md): the outer signature verifies, the envelope decrypts with the
//! included throwaway CA key, and the CSR inside parses with its challenge password.
use autoenroll_core::pki::scep::{parse_pki_message, MessageType};
use autoenroll_core::pki::CsrFacts;
use autoenroll_keys::envelope::decrypt_enveloped;

fn data(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/scep").join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn ca_key() -> Vec<u8> {
    der::pem::decode_vec(&data("ca.key")).unwrap().1
}

#[test]
fn captured_requests_verify_decrypt_and_parse() {
    for (file, challenge) in [
        ("sscep-pkcsreq-selfsigned.req.der", Some("secret")),
        ("sscep-pkcsreq-signed-by-existing-cert.req.der", Some("secret")),
        ("sscep-pkcsreq-bad-challenge.req.der", Some("wrong")),
        ("certmonger-pkcsreq-get.req.der", Some("secret")),
        ("certmonger-rekey-pkcsreq-get.req.der", None),
    ] {
        let m = parse_pki_message(&data(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(m.message_type, MessageType::PkcsReq, "{file}");
        assert!(!m.transaction_id.is_empty() && m.sender_nonce.len() == 16, "{file}");
        let csr_der = decrypt_enveloped(&m.envelope, &ca_key()).unwrap_or_else(|e| panic!("{file}: {e}"));
        let csr = CsrFacts::parse(&csr_der).unwrap_or_else(|e| panic!("{file}: {e}"));
        if let Some(c) = challenge {
            assert_eq!(csr.challenge_password.as_deref(), Some(c), "{file}");
        }
    }
    // sscep's transactionID is the upper-case hex MD5 of the key; certmonger's a long decimal.
    let m = parse_pki_message(&data("sscep-pkcsreq-selfsigned.req.der")).unwrap();
    assert_eq!(m.transaction_id.len(), 32);
    let m = parse_pki_message(&data("certmonger-pkcsreq-get.req.der")).unwrap();
    assert!(m.transaction_id.chars().all(|c| c.is_ascii_digit()));
}

#[test]
fn single_des_from_micromdm_scepclient_is_refused_clearly() {
    let m = parse_pki_message(&data("scepclient-pkcsreq.req.der")).unwrap();
    let e = decrypt_enveloped(&m.envelope, &ca_key()).unwrap_err().to_string();
    assert!(e.contains("single DES"), "{e}");
}

#[test]
fn hostile_pki_messages_are_refused_without_panics() {
    let good = data("sscep-pkcsreq-selfsigned.req.der");
    for cut in [0, 1, 2, 16, good.len() / 3, good.len() / 2, good.len() - 1] {
        assert!(parse_pki_message(&good[..cut]).is_err(), "truncated at {cut}");
    }
    let mut flipped = good.clone();
    let n = flipped.len();
    flipped[n - 20] ^= 0x40;
    assert!(parse_pki_message(&flipped).is_err(), "a flipped signature byte");
    assert!(parse_pki_message(b"garbage garbage garbage").is_err());
    // A valid message whose envelope is damaged gives one uniform error.
    let m = parse_pki_message(&good).unwrap();
    let mut env = m.envelope.clone();
    let n = env.len();
    env[n - 3] ^= 1;
    assert!(decrypt_enveloped(&env, &ca_key()).is_err());
}
