//! ACME (RFC 8555) on the wire: JWS in the flattened JSON serialization (section 6.2), account
//! keys as JWKs with their RFC 7638 thumbprints, external account binding (section 7.3.4), and
//! the RFC 9773 CertID that names a certificate in renewalInfo and `replaces`. Decoding only
//! accepts what the RFC allows: ES256, ES384, RS256 and EdDSA (Ed25519) signatures verified with
//! aws-lc-rs, exactly one of `jwk` and `kid`, no `none` and no MAC for account signatures.
use aws_lc_rs::{digest, hmac, signature};
use base64::Engine;

const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Everything that can be wrong with an ACME message. `BadSignatureAlgorithm` becomes the
/// problem of that name, the rest `malformed` (or `unauthorized` for a bad signature).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcmeWireError {
    #[error("{0}")]
    Malformed(String),
    #[error("unsupported JWS algorithm {0:?} (ES256, ES384, RS256 or EdDSA)")]
    BadSignatureAlgorithm(String),
    #[error("JWS signature does not verify")]
    BadSignature,
    #[error("malformed JWK: {0}")]
    BadKey(String),
}

fn malformed(detail: impl Into<String>) -> AcmeWireError {
    AcmeWireError::Malformed(detail.into())
}

pub fn b64url(bytes: &[u8]) -> String {
    B64URL.encode(bytes)
}

pub fn b64url_decode(text: &str, field: &str) -> Result<Vec<u8>, AcmeWireError> {
    B64URL.decode(text.as_bytes()).map_err(|_| malformed(format!("{field} is not base64url without padding")))
}

/// A JWS signature algorithm an account key may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Es256,
    Es384,
    Rs256,
    EdDsa,
}

impl Alg {
    fn parse(name: &str) -> Result<Alg, AcmeWireError> {
        match name {
            "ES256" => Ok(Alg::Es256),
            "ES384" => Ok(Alg::Es384),
            "RS256" => Ok(Alg::Rs256),
            "EdDSA" => Ok(Alg::EdDsa),
            other => Err(AcmeWireError::BadSignatureAlgorithm(other.chars().take(32).collect())),
        }
    }

    /// The names the directory and `badSignatureAlgorithm` problems list.
    pub const NAMES: [&'static str; 4] = ["ES256", "ES384", "RS256", "EdDSA"];
}

/// A public account key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Jwk {
    /// P-256 or P-384: affine coordinates, each the curve's size in bytes.
    Ec {
        p384: bool,
        x: Vec<u8>,
        y: Vec<u8>,
    },
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    Ed25519 {
        x: Vec<u8>,
    },
}

fn text_field<'a>(v: &'a serde_json::Value, name: &str) -> Result<&'a str, AcmeWireError> {
    v.get(name).and_then(|f| f.as_str()).ok_or_else(|| AcmeWireError::BadKey(format!("no {name}")))
}

impl Jwk {
    pub fn from_json(v: &serde_json::Value) -> Result<Jwk, AcmeWireError> {
        let bytes = |name: &str| {
            b64url_decode(text_field(v, name)?, name)
                .map_err(|_| AcmeWireError::BadKey(format!("{name} is not base64url")))
        };
        let jwk = match (text_field(v, "kty")?, v.get("crv").and_then(|c| c.as_str())) {
            ("EC", Some(crv @ ("P-256" | "P-384"))) => {
                let size = if crv == "P-256" { 32 } else { 48 };
                let (x, y) = (bytes("x")?, bytes("y")?);
                if x.len() != size || y.len() != size {
                    return Err(AcmeWireError::BadKey(format!("{crv} coordinates must have {size} bytes")));
                }
                Jwk::Ec { p384: crv == "P-384", x, y }
            }
            ("OKP", Some("Ed25519")) => {
                let x = bytes("x")?;
                if x.len() != 32 {
                    return Err(AcmeWireError::BadKey("an Ed25519 key has 32 bytes".into()));
                }
                Jwk::Ed25519 { x }
            }
            ("RSA", _) => {
                let (n, e) = (bytes("n")?, bytes("e")?);
                // Leading zero octets are not part of the base64url of a JWK integer (RFC 7518).
                if n.len() < 256 || n.len() > 1024 || n[0] == 0 || e.is_empty() || e.len() > 8 || e[0] == 0 {
                    return Err(AcmeWireError::BadKey("RSA keys need 2048 to 8192 bits".into()));
                }
                Jwk::Rsa { n, e }
            }
            (kty, crv) => {
                return Err(AcmeWireError::BadKey(format!("unsupported key type {kty} {}", crv.unwrap_or(""))))
            }
        };
        Ok(jwk)
    }

    /// The key as a JWK with only its required members, in lexicographic order (RFC 7638
    /// section 3.2): what its thumbprint hashes, and how the server stores it.
    pub fn canonical_json(&self) -> String {
        match self {
            Jwk::Ec { p384, x, y } => format!(
                r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
                if *p384 { "P-384" } else { "P-256" },
                b64url(x),
                b64url(y)
            ),
            Jwk::Rsa { n, e } => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b64url(e), b64url(n)),
            Jwk::Ed25519 { x } => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, b64url(x)),
        }
    }

    /// RFC 7638 thumbprint, base64url of SHA-256: the key's identity (key authorizations,
    /// account lookup).
    pub fn thumbprint(&self) -> String {
        b64url(digest::digest(&digest::SHA256, self.canonical_json().as_bytes()).as_ref())
    }

    /// Verifies a JWS signature by this key with `alg`; the algorithm must fit the key.
    pub fn verify(&self, alg: Alg, message: &[u8], sig: &[u8]) -> Result<(), AcmeWireError> {
        let ok = match (alg, self) {
            (Alg::Es256, Jwk::Ec { p384: false, x, y }) | (Alg::Es384, Jwk::Ec { p384: true, x, y }) => {
                let point = [&[4u8][..], x, y].concat();
                let params = if alg == Alg::Es256 {
                    &signature::ECDSA_P256_SHA256_FIXED
                } else {
                    &signature::ECDSA_P384_SHA384_FIXED
                };
                signature::UnparsedPublicKey::new(params, &point).verify(message, sig).is_ok()
            }
            (Alg::Rs256, Jwk::Rsa { n, e }) => signature::RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, sig)
                .is_ok(),
            (Alg::EdDsa, Jwk::Ed25519 { x }) => {
                signature::UnparsedPublicKey::new(&signature::ED25519, x).verify(message, sig).is_ok()
            }
            (alg, _) => return Err(malformed(format!("algorithm {alg:?} does not fit the key"))),
        };
        if ok {
            Ok(())
        } else {
            Err(AcmeWireError::BadSignature)
        }
    }
}

/// Who signed: a new key (`jwk`: new accounts, revocation by the certificate's key) or an
/// account (`kid`: its URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signer {
    Jwk(Jwk),
    Kid(String),
}

/// A decoded JWS, not yet verified (the key may be an account's, looked up by `kid`).
#[derive(Debug, Clone)]
pub struct Jws {
    pub alg: Alg,
    pub nonce: Option<String>,
    pub url: String,
    pub signer: Signer,
    /// The payload; empty for POST-as-GET (section 6.3).
    pub payload: Vec<u8>,
    signing_input: Vec<u8>,
    signature: Vec<u8>,
}

/// The parts of a flattened JWS (RFC 7515 section 7.2.2).
fn flattened(v: &serde_json::Value) -> Result<(&str, &str, Vec<u8>), AcmeWireError> {
    let part = |name: &str| v.get(name).and_then(|p| p.as_str()).ok_or_else(|| malformed(format!("no {name}")));
    if v.get("signatures").is_some() {
        return Err(malformed("the general JWS serialization is not allowed (section 6.2)"));
    }
    let signature = b64url_decode(part("signature")?, "signature")?;
    Ok((part("protected")?, part("payload")?, signature))
}

impl Jws {
    /// Decodes a request body: flattened JSON, a protected header with `alg`, `url`, `nonce` and
    /// exactly one of `jwk` and `kid`.
    pub fn parse(body: &[u8]) -> Result<Jws, AcmeWireError> {
        let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| malformed(format!("not JSON: {e}")))?;
        let (protected_b64, payload_b64, signature) = flattened(&v)?;
        let header: serde_json::Value = serde_json::from_slice(&b64url_decode(protected_b64, "protected")?)
            .map_err(|_| malformed("the protected header is not JSON"))?;
        // No extension this server would have to understand (RFC 7515 section 4.1.11), and
        // nothing unprotected (RFC 8555 section 6.2).
        if header.get("crit").is_some() || v.get("header").is_some() {
            return Err(malformed("crit and unprotected headers are not accepted"));
        }
        let alg = Alg::parse(header.get("alg").and_then(|a| a.as_str()).ok_or_else(|| malformed("no alg"))?)?;
        let url = header.get("url").and_then(|u| u.as_str()).ok_or_else(|| malformed("no url"))?.to_string();
        let nonce = header.get("nonce").and_then(|n| n.as_str()).map(str::to_string);
        let signer = match (header.get("jwk"), header.get("kid")) {
            (Some(jwk), None) => Signer::Jwk(Jwk::from_json(jwk)?),
            (None, Some(kid)) => Signer::Kid(kid.as_str().ok_or_else(|| malformed("kid is not a string"))?.to_string()),
            _ => return Err(malformed("the protected header needs exactly one of jwk and kid")),
        };
        Ok(Jws {
            alg,
            nonce,
            url,
            signer,
            payload: b64url_decode(payload_b64, "payload")?,
            signing_input: format!("{protected_b64}.{payload_b64}").into_bytes(),
            signature,
        })
    }

    pub fn verify(&self, key: &Jwk) -> Result<(), AcmeWireError> {
        key.verify(self.alg, &self.signing_input, &self.signature)
    }

    /// The payload as JSON (an empty payload, POST-as-GET, is an error here).
    pub fn json(&self) -> Result<serde_json::Value, AcmeWireError> {
        serde_json::from_slice(&self.payload).map_err(|_| malformed("the payload is not JSON"))
    }
}

/// An external account binding (section 7.3.4), decoded: the MAC key's id, and a check of its
/// MAC once the server has looked that key up.
#[derive(Debug, Clone)]
pub struct ExternalAccountBinding {
    pub kid: String,
    mac: hmac::Algorithm,
    signing_input: Vec<u8>,
    signature: Vec<u8>,
}

impl ExternalAccountBinding {
    /// `eab` is the `externalAccountBinding` member of a newAccount payload; it must be a JWS
    /// by `url` (the newAccount URL) over exactly the account key `account_key`.
    pub fn parse(eab: &serde_json::Value, url: &str, account_key: &Jwk) -> Result<Self, AcmeWireError> {
        let (protected_b64, payload_b64, signature) = flattened(eab)?;
        let header: serde_json::Value = serde_json::from_slice(&b64url_decode(protected_b64, "protected")?)
            .map_err(|_| malformed("the binding's header is not JSON"))?;
        let mac = match header.get("alg").and_then(|a| a.as_str()) {
            Some("HS256") => hmac::HMAC_SHA256,
            Some("HS384") => hmac::HMAC_SHA384,
            Some("HS512") => hmac::HMAC_SHA512,
            other => {
                return Err(AcmeWireError::BadSignatureAlgorithm(format!("binding {}", other.unwrap_or("without alg"))))
            }
        };
        if header.get("nonce").is_some() {
            return Err(malformed("the binding must not carry a nonce"));
        }
        if header.get("url").and_then(|u| u.as_str()) != Some(url) {
            return Err(malformed("the binding's url is not the newAccount URL"));
        }
        let kid = header.get("kid").and_then(|k| k.as_str()).ok_or_else(|| malformed("the binding has no kid"))?;
        let bound: serde_json::Value = serde_json::from_slice(&b64url_decode(payload_b64, "payload")?)
            .map_err(|_| malformed("the binding's payload is not JSON"))?;
        if Jwk::from_json(&bound)? != *account_key {
            return Err(malformed("the binding is for another account key"));
        }
        Ok(ExternalAccountBinding {
            kid: kid.to_string(),
            mac,
            signing_input: format!("{protected_b64}.{payload_b64}").into_bytes(),
            signature,
        })
    }

    /// Checks the MAC with the key `kid` names (constant time).
    pub fn verify(&self, mac_key: &[u8]) -> Result<(), AcmeWireError> {
        hmac::verify(&hmac::Key::new(self.mac, mac_key), &self.signing_input, &self.signature)
            .map_err(|_| AcmeWireError::BadSignature)
    }
}

/// The key authorization for a challenge token (section 8.1): what an HTTP-01 responder serves.
pub fn key_authorization(token: &str, account_key: &Jwk) -> String {
    format!("{token}.{}", account_key.thumbprint())
}

/// The TXT value a DNS-01 responder publishes (section 8.4).
pub fn dns01_txt(key_authorization: &str) -> String {
    b64url(digest::digest(&digest::SHA256, key_authorization.as_bytes()).as_ref())
}

/// RFC 9773 section 4.1: base64url(AKI keyIdentifier) "." base64url(serial's DER content octets).
pub fn cert_id(authority_key_id: &[u8], serial_content: &[u8]) -> String {
    format!("{}.{}", b64url(authority_key_id), b64url(serial_content))
}

/// A CertID's two parts, (keyIdentifier, serial content octets).
pub fn parse_cert_id(id: &str) -> Result<(Vec<u8>, Vec<u8>), AcmeWireError> {
    let (aki, serial) = id.split_once('.').ok_or_else(|| malformed("a CertID is keyIdentifier.serial"))?;
    let (aki, serial) = (b64url_decode(aki, "CertID keyIdentifier")?, b64url_decode(serial, "CertID serial")?);
    // A DER INTEGER's content: no redundant leading zero, positive, at most 20 octets + sign.
    let redundant = serial.len() > 1 && serial[0] == 0 && serial[1] & 0x80 == 0;
    if aki.is_empty() || serial.is_empty() || serial.len() > 21 || redundant || serial[0] & 0x80 != 0 {
        return Err(malformed("the CertID's serial is not a DER INTEGER's content"));
    }
    Ok((aki, serial))
}

/// The CertID of a certificate: its AKI keyIdentifier and serial (None without an AKI).
pub fn cert_id_of(cert_der: &[u8]) -> Result<Option<String>, AcmeWireError> {
    use der::Decode;
    use x509_cert::ext::pkix::AuthorityKeyIdentifier;
    let cert = x509_cert::Certificate::from_der(cert_der).map_err(|e| malformed(format!("certificate: {e}")))?;
    let tbs = cert.tbs_certificate();
    let aki = tbs
        .extensions()
        .into_iter()
        .flatten()
        .find(|e| e.extn_id == const_oid::db::rfc5280::ID_CE_AUTHORITY_KEY_IDENTIFIER)
        .map(|e| AuthorityKeyIdentifier::from_der(e.extn_value.as_bytes()))
        .transpose()
        .map_err(|e| malformed(format!("authority key identifier: {e}")))?
        .and_then(|a| a.key_identifier);
    Ok(aki.map(|k| cert_id(k.as_bytes(), tbs.serial_number().as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_of_rfc7638_example() {
        // RFC 7638 section 3.1.
        let jwk = serde_json::json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        assert_eq!(Jwk::from_json(&jwk).unwrap().thumbprint(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn ed25519_signature_of_rfc8037_example() {
        // RFC 8037 appendix A.1 and A.4: the key, and its signature of "Example of Ed25519 signing".
        let jwk = serde_json::json!({"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
        let key = Jwk::from_json(&jwk).unwrap();
        assert_eq!(key.thumbprint(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
        let input = b"eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc";
        let sig = b64url_decode(
            "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg",
            "s",
        )
        .unwrap();
        assert_eq!(key.verify(Alg::EdDsa, input, &sig), Ok(()));
        assert_eq!(key.verify(Alg::EdDsa, b"eyJhbGciOiJFZERTQSJ9.x", &sig), Err(AcmeWireError::BadSignature));
        assert!(matches!(key.verify(Alg::Es256, input, &sig), Err(AcmeWireError::Malformed(_))), "alg must fit key");
    }

    #[test]
    fn cert_id_of_rfc9773_example_and_captured_certbot_request() {
        let aki = hex_bytes("69885B6B87464041E1B37B847BA0AE2CDE01C8D4");
        assert_eq!(cert_id(&aki, &[0x00, 0x87, 0x65, 0x43, 0x21]), "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE");
        assert_eq!(
            parse_cert_id("aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE").unwrap(),
            (aki, vec![0, 0x87, 0x65, 0x43, 0x21])
        );
        // What certbot 5.8.0 sent for a pebble certificate (shared/vectors/acme).
        let pem = include_str!("../tests/data/acme/ari-cert1.pem");
        assert_eq!(cert_id_of(&pem_der(pem)).unwrap().as_deref(), Some("stg7hwxWKyt8UTpl0IOGLLX0oPo.K_38MADJLEk"));
        let pem = include_str!("../tests/data/acme/ari-cert2.pem");
        assert_eq!(cert_id_of(&pem_der(pem)).unwrap().as_deref(), Some("stg7hwxWKyt8UTpl0IOGLLX0oPo.U88gNKPXoFM"));
        for bad in ["", "abc", "aYhba4dGQEHhs3uEe6CuLN4ByNQ.", "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AAE", "aYhb=.AQ", "a.gA"] {
            assert!(parse_cert_id(bad).is_err(), "{bad:?}");
        }
    }

    fn hex_bytes(h: &str) -> Vec<u8> {
        (0..h.len()).step_by(2).map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap()).collect()
    }

    fn pem_der(pem: &str) -> Vec<u8> {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD.decode(body).unwrap()
    }

    #[test]
    fn jws_header_rules() {
        let protected = |h: serde_json::Value| b64url(h.to_string().as_bytes());
        let body = |h: serde_json::Value| {
            serde_json::json!({"protected": protected(h), "payload": "", "signature": "AA"}).to_string()
        };
        let jwk = serde_json::json!({"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
        let ok =
            Jws::parse(body(serde_json::json!({"alg":"EdDSA","nonce":"n","url":"u","jwk":jwk})).as_bytes()).unwrap();
        assert_eq!((ok.url.as_str(), ok.nonce.as_deref(), ok.payload.len()), ("u", Some("n"), 0));
        let crit = serde_json::json!({"alg":"EdDSA","nonce":"n","url":"u","jwk":jwk,"crit":["b64"],"b64":false});
        assert!(matches!(Jws::parse(body(crit).as_bytes()), Err(AcmeWireError::Malformed(_))));
        let both = serde_json::json!({"alg":"EdDSA","nonce":"n","url":"u","jwk":jwk,"kid":"k"});
        assert!(matches!(Jws::parse(body(both).as_bytes()), Err(AcmeWireError::Malformed(_))));
        for alg in ["none", "HS256", "RS1"] {
            let h = serde_json::json!({"alg":alg,"nonce":"n","url":"u","kid":"k"});
            assert!(matches!(Jws::parse(body(h).as_bytes()), Err(AcmeWireError::BadSignatureAlgorithm(_))), "{alg}");
        }
        for junk in [&b"{"[..], b"[]", b"{\"protected\":1}", b"\xff\xfe"] {
            assert!(Jws::parse(junk).is_err());
        }
    }
}
