//! Signature verification over (SPKI, algorithm, message) with aws-lc-rs.
use super::PkiError;
use crate::oids;
use aws_lc_rs::signature as s;
use der::Encode;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

/// Verifies `signature` over `message` made by the key in `spki` with `alg`.
pub fn verify(
    spki: &SubjectPublicKeyInfoOwned,
    alg: &AlgorithmIdentifierOwned,
    message: &[u8],
    signature: &[u8],
) -> Result<(), PkiError> {
    let key_alg = spki.algorithm.oid;
    let verifier: &'static dyn s::VerificationAlgorithm = match (alg.oid, key_alg) {
        (a, k) if a == oids::ECDSA_WITH_SHA256 && k == oids::EC_PUBLIC_KEY => match curve(spki)? {
            Curve::P256 => &s::ECDSA_P256_SHA256_ASN1,
            Curve::P384 => &s::ECDSA_P384_SHA256_ASN1,
        },
        (a, k) if a == oids::ECDSA_WITH_SHA384 && k == oids::EC_PUBLIC_KEY => match curve(spki)? {
            Curve::P256 => &s::ECDSA_P256_SHA384_ASN1,
            Curve::P384 => &s::ECDSA_P384_SHA384_ASN1,
        },
        (a, k) if a == oids::ECDSA_WITH_SHA512 && k == oids::EC_PUBLIC_KEY => match curve(spki)? {
            Curve::P256 => &s::ECDSA_P256_SHA512_ASN1,
            Curve::P384 => &s::ECDSA_P384_SHA512_ASN1,
        },
        (a, k) if a == oids::SHA256_WITH_RSA && k == oids::RSA_ENCRYPTION => &s::RSA_PKCS1_2048_8192_SHA256,
        (a, k) if a == oids::SHA384_WITH_RSA && k == oids::RSA_ENCRYPTION => &s::RSA_PKCS1_2048_8192_SHA384,
        (a, k) if a == oids::SHA512_WITH_RSA && k == oids::RSA_ENCRYPTION => &s::RSA_PKCS1_2048_8192_SHA512,
        // Old Windows and the spec's 2009 renewal sample still sign with SHA-1.
        (a, k) if a == oids::SHA1_WITH_RSA && k == oids::RSA_ENCRYPTION => {
            &s::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY
        }
        (a, k) if a == oids::ED25519 && k == oids::ED25519 => &s::ED25519,
        (a, _) => return Err(PkiError::UnsupportedAlgorithm(a.to_string())),
    };
    let key_bytes = if key_alg == oids::RSA_ENCRYPTION {
        // aws-lc-rs RSA verification wants the full SPKI or the PKCS#1 key; give the SPKI.
        spki.to_der()?
    } else {
        spki.subject_public_key.raw_bytes().to_vec()
    };
    s::UnparsedPublicKey::new(verifier, key_bytes).verify(message, signature).map_err(|_| PkiError::BadSignature)
}

/// Digest algorithms CMS SignerInfos name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digest {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl Digest {
    pub fn from_oid(oid: &const_oid::ObjectIdentifier) -> Result<Digest, PkiError> {
        match oid.to_string().as_str() {
            "1.3.14.3.2.26" => Ok(Digest::Sha1),
            "2.16.840.1.101.3.4.2.1" => Ok(Digest::Sha256),
            "2.16.840.1.101.3.4.2.2" => Ok(Digest::Sha384),
            "2.16.840.1.101.3.4.2.3" => Ok(Digest::Sha512),
            other => Err(PkiError::UnsupportedAlgorithm(other.to_string())),
        }
    }

    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        use aws_lc_rs::digest as d;
        let alg = match self {
            Digest::Sha1 => &d::SHA1_FOR_LEGACY_USE_ONLY,
            Digest::Sha256 => &d::SHA256,
            Digest::Sha384 => &d::SHA384,
            Digest::Sha512 => &d::SHA512,
        };
        d::digest(alg, data).as_ref().to_vec()
    }
}

/// Verifies a CMS SignerInfo signature: the hash comes from the digest algorithm, since
/// signers write either a combined OID (sha256WithRSAEncryption, ecdsa-with-SHA256) or the bare
/// key algorithm (rsaEncryption, as openssl does).
pub fn verify_with_digest(
    spki: &SubjectPublicKeyInfoOwned,
    digest: Digest,
    message: &[u8],
    signature: &[u8],
) -> Result<(), PkiError> {
    let key_alg = spki.algorithm.oid;
    let verifier: &'static dyn s::VerificationAlgorithm = if key_alg == oids::RSA_ENCRYPTION {
        match digest {
            Digest::Sha1 => &s::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            Digest::Sha256 => &s::RSA_PKCS1_2048_8192_SHA256,
            Digest::Sha384 => &s::RSA_PKCS1_2048_8192_SHA384,
            Digest::Sha512 => &s::RSA_PKCS1_2048_8192_SHA512,
        }
    } else if key_alg == oids::EC_PUBLIC_KEY {
        match (curve(spki)?, digest) {
            (Curve::P256, Digest::Sha256) => &s::ECDSA_P256_SHA256_ASN1,
            (Curve::P256, Digest::Sha384) => &s::ECDSA_P256_SHA384_ASN1,
            (Curve::P256, Digest::Sha512) => &s::ECDSA_P256_SHA512_ASN1,
            (Curve::P384, Digest::Sha256) => &s::ECDSA_P384_SHA256_ASN1,
            (Curve::P384, Digest::Sha384) => &s::ECDSA_P384_SHA384_ASN1,
            (Curve::P384, Digest::Sha512) => &s::ECDSA_P384_SHA512_ASN1,
            (_, Digest::Sha1) => return Err(PkiError::UnsupportedAlgorithm("ECDSA with SHA-1".into())),
        }
    } else {
        return Err(PkiError::UnsupportedKey(key_alg.to_string()));
    };
    let key_bytes =
        if key_alg == oids::RSA_ENCRYPTION { spki.to_der()? } else { spki.subject_public_key.raw_bytes().to_vec() };
    s::UnparsedPublicKey::new(verifier, key_bytes).verify(message, signature).map_err(|_| PkiError::BadSignature)
}

pub enum Curve {
    P256,
    P384,
}

pub fn curve(spki: &SubjectPublicKeyInfoOwned) -> Result<Curve, PkiError> {
    let params =
        spki.algorithm.parameters.as_ref().ok_or_else(|| PkiError::UnsupportedKey("EC key without curve".into()))?;
    let oid: const_oid::ObjectIdentifier =
        params.decode_as().map_err(|_| PkiError::UnsupportedKey("EC curve is not a named curve".into()))?;
    if oid == oids::SECP256R1 {
        Ok(Curve::P256)
    } else if oid == oids::SECP384R1 {
        Ok(Curve::P384)
    } else {
        Err(PkiError::UnsupportedKey(format!("curve {oid}")))
    }
}
