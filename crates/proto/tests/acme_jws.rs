//! Every JWS algorithm an ACME account key may use, signed by aws-lc-rs keys made here (the
//! signer side is what clients do; the verifier is ours): ES256, ES384, RS256, EdDSA verify, a
//! changed payload or another key does not, and an algorithm that does not fit the key is
//! refused before any signature check.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use autoenroll_proto::acme::{b64url, Jwk, Jws};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, KeyPair};

enum Signer {
    Ec(signature::EcdsaKeyPair, bool),
    Rsa(signature::RsaKeyPair),
    Ed(signature::Ed25519KeyPair),
}

impl Signer {
    fn all() -> Vec<(&'static str, Signer)> {
        use signature::{EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair};
        vec![
            ("ES256", Signer::Ec(EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(), false)),
            ("ES384", Signer::Ec(EcdsaKeyPair::generate(&signature::ECDSA_P384_SHA384_FIXED_SIGNING).unwrap(), true)),
            ("RS256", Signer::Rsa(RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap())),
            ("EdDSA", Signer::Ed(Ed25519KeyPair::generate().unwrap())),
        ]
    }

    fn jwk(&self) -> serde_json::Value {
        match self {
            Signer::Ec(k, p384) => {
                let point = k.public_key().as_ref();
                let n = (point.len() - 1) / 2;
                serde_json::json!({"kty": "EC", "crv": if *p384 { "P-384" } else { "P-256" },
                    "x": b64url(&point[1..=n]), "y": b64url(&point[n + 1..])})
            }
            Signer::Rsa(k) => {
                use aws_lc_rs::rsa::PublicKeyComponents;
                let c: PublicKeyComponents<Vec<u8>> = k.public_key().into();
                serde_json::json!({"kty": "RSA", "n": b64url(&c.n), "e": b64url(&c.e)})
            }
            Signer::Ed(k) => serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": b64url(k.public_key().as_ref())}),
        }
    }

    fn sign(&self, input: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Signer::Ec(k, _) => k.sign(&rng, input).unwrap().as_ref().to_vec(),
            Signer::Rsa(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rng, input, &mut sig).unwrap();
                sig
            }
            Signer::Ed(k) => k.sign(input).as_ref().to_vec(),
        }
    }

    fn jws(&self, alg: &str, payload: &str) -> Vec<u8> {
        let header =
            serde_json::json!({"alg": alg, "nonce": "n", "url": "https://ca.test/acme/new-account", "jwk": self.jwk()});
        let protected = b64url(header.to_string().as_bytes());
        let payload = b64url(payload.as_bytes());
        let sig = self.sign(format!("{protected}.{payload}").as_bytes());
        serde_json::json!({"protected": protected, "payload": payload, "signature": b64url(&sig)})
            .to_string()
            .into_bytes()
    }
}

fn key_of(jws: &Jws) -> Jwk {
    match &jws.signer {
        autoenroll_proto::acme::Signer::Jwk(k) => k.clone(),
        autoenroll_proto::acme::Signer::Kid(_) => panic!("signed with a kid"),
    }
}

#[test]
fn every_account_key_algorithm_verifies_and_tampering_does_not() {
    let signers = Signer::all();
    for (alg, signer) in &signers {
        let jws = Jws::parse(&signer.jws(alg, "{\"termsOfServiceAgreed\":true}")).unwrap();
        assert_eq!(jws.verify(&key_of(&jws)), Ok(()), "{alg}");
        // The payload changed after signing.
        let mut v: serde_json::Value = serde_json::from_slice(&signer.jws(alg, "{}")).unwrap();
        v["payload"] = b64url(b"{\"onlyReturnExisting\":true}").into();
        let tampered = Jws::parse(v.to_string().as_bytes()).unwrap();
        assert!(tampered.verify(&key_of(&tampered)).is_err(), "{alg}: tampered payload");
        // Another key of the same kind.
        let other = Signer::all().into_iter().find(|(a, _)| a == alg).unwrap().1;
        let other_key = key_of(&Jws::parse(&other.jws(alg, "{}")).unwrap());
        assert!(jws.verify(&other_key).is_err(), "{alg}: another key");
    }
    // An algorithm that does not fit the key (ES384 named, P-256 key) is refused.
    let (_, p256) = &signers[0];
    let jws = Jws::parse(&p256.jws("ES384", "{}")).unwrap();
    assert!(jws.verify(&key_of(&jws)).is_err());
}
