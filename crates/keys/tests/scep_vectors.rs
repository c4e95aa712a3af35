//! Captured SCEP requests of real clients (sscep, certmonger, micromdm scepclient; see
//! testdata/scep/README.md): the outer signature verifies, the envelope decrypts with the
//! included throwaway CA key, and the CSR inside parses with its challenge password.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use autoenroll_core::pki::scep::{parse_pki_message, MessageType};
use autoenroll_core::pki::CsrFacts;
use autoenroll_keys::envelope::{decrypt_enveloped, encrypt_enveloped, ContentCipher};

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
        let (csr_der, cipher) =
            decrypt_enveloped(&m.envelope, &ca_key(), false).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(!cipher.is_legacy(), "{file}");
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
fn single_des_from_micromdm_scepclient_needs_legacy() {
    let m = parse_pki_message(&data("scepclient-pkcsreq.req.der")).unwrap();
    let e = decrypt_enveloped(&m.envelope, &ca_key(), false).unwrap_err().to_string();
    assert!(e.contains("single DES") && e.contains("legacy"), "{e}");
    let (csr_der, cipher) = decrypt_enveloped(&m.envelope, &ca_key(), true).unwrap();
    assert_eq!(cipher, ContentCipher::DesCbc);
    let csr = CsrFacts::parse(&csr_der).unwrap();
    assert_eq!(csr.challenge_password.as_deref(), Some("secret"));
}

fn pem_key(name: &str) -> Vec<u8> {
    der::pem::decode_vec(&data(name)).unwrap().1
}

/// Our envelopes decrypt with our own reader and with openssl, for every cipher, to a client
/// certificate whose serial is 32 bytes long (sscep's self-signed signer).
#[test]
fn envelopes_we_write_decrypt_here_and_in_openssl() {
    let cert = pem_key("sscep1-selfsigned.crt");
    let key = pem_key("sscep1.key");
    let dir = tempfile::tempdir().unwrap();
    for cipher in [ContentCipher::Aes128Cbc, ContentCipher::Aes256Cbc, ContentCipher::Des3Cbc] {
        let plain = format!("certificate bytes for {cipher:?}").repeat(7);
        let env = encrypt_enveloped(plain.as_bytes(), &cert, cipher).unwrap();
        let (back, c) = decrypt_enveloped(&env, &key, true).unwrap();
        assert_eq!((back.as_slice(), c), (plain.as_bytes(), cipher));
        if cipher.is_legacy() {
            assert!(decrypt_enveloped(&env, &key, false).is_err());
        }
        autoenroll_test_support::require_tool("openssl", "openssl");
        let env_path = dir.path().join("env.der");
        std::fs::write(&env_path, &env).unwrap();
        let out = std::process::Command::new("openssl")
            .args(["cms", "-decrypt", "-inform", "DER", "-binary", "-in"])
            .arg(&env_path)
            .arg("-recip")
            .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/scep/sscep1-selfsigned.crt"))
            .arg("-inkey")
            .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/scep/sscep1.key"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{cipher:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.stdout, plain.as_bytes(), "{cipher:?}");
    }
    // A certificate with an EC key cannot receive an RSA key-transport envelope.
    let ec = autoenroll_keys::KeyPair::generate(autoenroll_keys::KeyAlgorithm::P256).unwrap();
    let ec_cert =
        autoenroll_keys::self_signed_cert(&ec, autoenroll_keys::cn_name("ec").unwrap(), 0, 4_000_000_000).unwrap();
    let e = encrypt_enveloped(b"x", &ec_cert, ContentCipher::Aes256Cbc).unwrap_err().to_string();
    assert!(e.contains("RSA"), "{e}");
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
    assert!(decrypt_enveloped(&env, &ca_key(), true).is_err());
}

/// RSA-OAEP key transport (what some clients choose) decrypts too; openssl writes the envelope.
#[test]
fn oaep_envelopes_from_openssl_decrypt() {
    autoenroll_test_support::require_tool("openssl", "openssl");
    let dir = tempfile::tempdir().unwrap();
    let td = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/scep");
    let plain = dir.path().join("plain");
    std::fs::write(&plain, b"a CSR would be here").unwrap();
    let out = std::process::Command::new("openssl")
        .args(["cms", "-encrypt", "-binary", "-outform", "DER", "-aes256", "-in"])
        .arg(&plain)
        .arg("-recip")
        .arg(td.join("sscep1-selfsigned.crt"))
        .args(["-keyopt", "rsa_padding_mode:oaep"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (back, cipher) = decrypt_enveloped(&out.stdout, &pem_key("sscep1.key"), false).unwrap();
    assert_eq!(back, b"a CSR would be here");
    assert_eq!(cipher, ContentCipher::Aes256Cbc);
}
