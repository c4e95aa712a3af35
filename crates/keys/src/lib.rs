//! Local key pairs (generation, PKCS#8 PEM, signing) and PKCS#10 building with aws-lc-rs.
//! Used by the CA layer for its own keys and by the agent for device keys; it holds no policy and
//! does no I/O.
#![forbid(unsafe_code)]

pub mod time;

use autoenroll_core::oids;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self as sig, KeyPair as _};
use der::asn1::{Any, BitString, Ia5String, OctetString, SetOfVec};
use der::{Decode, Encode};

use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use std::fmt;
use std::str::FromStr;
use x509_cert::attr::Attribute;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::request::{CertReq, CertReqInfo, Version};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key generation failed")]
    Generate,
    #[error("invalid private key: {0}")]
    InvalidKey(String),
    #[error("signing failed")]
    Sign,
    #[error("encoding: {0}")]
    Encoding(String),
    #[error("unsupported key algorithm {0:?}")]
    Unsupported(String),
}

impl From<der::Error> for KeyError {
    fn from(e: der::Error) -> Self {
        KeyError::Encoding(e.to_string())
    }
}

/// The key algorithms are domain types (templates name them); key pairs are made here.
pub use autoenroll_core::model::KeyAlgorithm;

enum Inner {
    Ec(sig::EcdsaKeyPair),
    Rsa(aws_lc_rs::rsa::KeyPair),
}

/// A private key held in memory. `Debug` never prints key material.
pub struct KeyPair {
    alg: KeyAlgorithm,
    inner: Inner,
    spki_der: Vec<u8>,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair").field("alg", &self.alg).finish_non_exhaustive()
    }
}

const PEM_LABEL: &str = "PRIVATE KEY";

impl KeyPair {
    pub fn generate(alg: KeyAlgorithm) -> Result<KeyPair, KeyError> {
        let inner = match alg {
            KeyAlgorithm::P256 => Inner::Ec(
                sig::EcdsaKeyPair::generate(&sig::ECDSA_P256_SHA256_ASN1_SIGNING).map_err(|_| KeyError::Generate)?,
            ),
            KeyAlgorithm::P384 => Inner::Ec(
                sig::EcdsaKeyPair::generate(&sig::ECDSA_P384_SHA384_ASN1_SIGNING).map_err(|_| KeyError::Generate)?,
            ),
            KeyAlgorithm::Rsa(bits) => {
                let size = match bits {
                    2048 => aws_lc_rs::rsa::KeySize::Rsa2048,
                    3072 => aws_lc_rs::rsa::KeySize::Rsa3072,
                    4096 => aws_lc_rs::rsa::KeySize::Rsa4096,
                    _ => return Err(KeyError::Unsupported(format!("rsa{bits}"))),
                };
                Inner::Rsa(aws_lc_rs::rsa::KeyPair::generate(size).map_err(|_| KeyError::Generate)?)
            }
        };
        Self::wrap(alg, inner)
    }

    fn wrap(alg: KeyAlgorithm, inner: Inner) -> Result<KeyPair, KeyError> {
        let spki_der = match &inner {
            Inner::Ec(k) => k.public_key().as_der().map_err(|_| KeyError::Encoding("spki".into()))?.as_ref().to_vec(),
            Inner::Rsa(k) => k.public_key().as_der().map_err(|_| KeyError::Encoding("spki".into()))?.as_ref().to_vec(),
        };
        Ok(KeyPair { alg, inner, spki_der })
    }

    /// Loads an unencrypted PKCS#8 key (DER), detecting its algorithm.
    pub fn from_pkcs8_der(der_bytes: &[u8]) -> Result<KeyPair, KeyError> {
        if let Ok(k) = sig::EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_ASN1_SIGNING, der_bytes) {
            return Self::wrap(KeyAlgorithm::P256, Inner::Ec(k));
        }
        if let Ok(k) = sig::EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P384_SHA384_ASN1_SIGNING, der_bytes) {
            return Self::wrap(KeyAlgorithm::P384, Inner::Ec(k));
        }
        match aws_lc_rs::rsa::KeyPair::from_pkcs8(der_bytes) {
            Ok(k) => {
                let bits = (k.public_modulus_len() * 8) as u32;
                Self::wrap(KeyAlgorithm::Rsa(bits), Inner::Rsa(k))
            }
            Err(e) => Err(KeyError::InvalidKey(e.to_string())),
        }
    }

    pub fn from_pem(pem: &str) -> Result<KeyPair, KeyError> {
        let (label, der_bytes) =
            der::pem::decode_vec(pem.as_bytes()).map_err(|e| KeyError::InvalidKey(e.to_string()))?;
        if label != PEM_LABEL {
            return Err(KeyError::InvalidKey(format!("expected a PKCS#8 \"{PEM_LABEL}\" PEM, got {label}")));
        }
        Self::from_pkcs8_der(&der_bytes)
    }

    pub fn to_pkcs8_der(&self) -> Result<Vec<u8>, KeyError> {
        let doc = match &self.inner {
            Inner::Ec(k) => k.to_pkcs8v1().map_err(|_| KeyError::Encoding("pkcs8".into()))?.as_ref().to_vec(),
            Inner::Rsa(k) => k.as_der().map_err(|_| KeyError::Encoding("pkcs8".into()))?.as_ref().to_vec(),
        };
        Ok(doc)
    }

    pub fn to_pem(&self) -> Result<String, KeyError> {
        der::pem::encode_string(PEM_LABEL, der::pem::LineEnding::LF, &self.to_pkcs8_der()?)
            .map_err(|e| KeyError::Encoding(e.to_string()))
    }

    pub fn algorithm(&self) -> KeyAlgorithm {
        self.alg
    }

    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    pub fn spki(&self) -> Result<SubjectPublicKeyInfoOwned, KeyError> {
        Ok(SubjectPublicKeyInfoOwned::from_der(&self.spki_der)?)
    }

    /// The AlgorithmIdentifier of the signatures `sign` makes.
    pub fn signature_algorithm(&self) -> AlgorithmIdentifierOwned {
        match self.alg {
            KeyAlgorithm::P256 => AlgorithmIdentifierOwned { oid: oids::ECDSA_WITH_SHA256, parameters: None },
            KeyAlgorithm::P384 => AlgorithmIdentifierOwned { oid: oids::ECDSA_WITH_SHA384, parameters: None },
            KeyAlgorithm::Rsa(_) => {
                AlgorithmIdentifierOwned { oid: oids::SHA256_WITH_RSA, parameters: Some(der::asn1::Null.into()) }
            }
        }
    }

    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let rng = SystemRandom::new();
        match &self.inner {
            Inner::Ec(k) => Ok(k.sign(&rng, message).map_err(|_| KeyError::Sign)?.as_ref().to_vec()),
            Inner::Rsa(k) => {
                let mut out = vec![0u8; k.public_modulus_len()];
                k.sign(&sig::RSA_PKCS1_SHA256, &rng, message, &mut out).map_err(|_| KeyError::Sign)?;
                Ok(out)
            }
        }
    }
}

pub mod envelope;
pub mod scep_client;

/// A certificate serial: 16 random bytes (RFC 5280 allows 20; CA/B asks for 64 random bits),
/// positive and without a leading zero byte, so its DER length is always 16.
pub fn random_serial() -> Result<Vec<u8>, KeyError> {
    let mut serial = random_bytes(16)?;
    serial[0] = (serial[0] & 0x7f) | 0x40;
    Ok(serial)
}

/// Random bytes from the system generator (message ids, nonces).
pub fn random_bytes(n: usize) -> Result<Vec<u8>, KeyError> {
    let mut b = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| KeyError::Generate)?;
    Ok(b)
}

/// Lower-case hex SHA-256 (fingerprints of secrets that must not be stored in clear).
pub fn sha256_hex(data: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Escapes a value for an RFC 4514 string so `Name::from_str` takes it literally.
pub fn escape_rdn_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (i == 0 && (c == '#' || c == ' '))
            || (i + 1 == v.chars().count() && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `CN=<cn>` as a Name (UTF8String).
pub fn cn_name(cn: &str) -> Result<Name, KeyError> {
    Name::from_str(&format!("CN={}", escape_rdn_value(cn))).map_err(KeyError::from)
}

/// A SAN extension with DNS names and IP addresses.
pub fn san_extension(dns: &[String], ips: &[std::net::IpAddr]) -> Result<Extension, KeyError> {
    let mut names = Vec::new();
    for d in dns {
        names.push(GeneralName::DnsName(Ia5String::new(d)?));
    }
    for ip in ips {
        names.push(GeneralName::from(*ip));
    }
    Ok(Extension {
        extn_id: oids::CE_SUBJECT_ALT_NAME,
        critical: false,
        extn_value: OctetString::new(SubjectAltName(names).to_der()?)?,
    })
}

/// Builds and signs a PKCS#10 with the given extensions in an extensionRequest attribute.
pub fn build_csr(key: &KeyPair, subject: Name, extensions: Vec<Extension>) -> Result<Vec<u8>, KeyError> {
    build_csr_with(key, subject, extensions, vec![])
}

/// A PKCS#10 carrying a challengePassword attribute (PrintableString when it fits, else
/// UTF8String), as SCEP clients send it.
pub fn build_csr_with_challenge(
    key: &KeyPair,
    subject: Name,
    extensions: Vec<Extension>,
    challenge: &str,
) -> Result<Vec<u8>, KeyError> {
    let value = match der::asn1::PrintableStringRef::new(challenge) {
        Ok(p) => Any::encode_from(&p)?,
        Err(_) => Any::encode_from(&der::asn1::Utf8StringRef::new(challenge)?)?,
    };
    let mut values = SetOfVec::new();
    values.insert(value)?;
    build_csr_with(key, subject, extensions, vec![Attribute { oid: oids::CHALLENGE_PASSWORD, values }])
}

/// A renewal PKCS#10: the new key, and the certificate it replaces in szOID_RENEWAL_CERTIFICATE
/// (1.3.6.1.4.1.311.13.1), as Windows writes it.
pub fn build_renewal_csr(
    new_key: &KeyPair,
    subject: Name,
    extensions: Vec<Extension>,
    old_cert_der: &[u8],
) -> Result<Vec<u8>, KeyError> {
    let mut values = SetOfVec::new();
    values.insert(Any::from_der(old_cert_der)?)?;
    build_csr_with(new_key, subject, extensions, vec![Attribute { oid: oids::MS_RENEWAL_CERTIFICATE, values }])
}

fn build_csr_with(
    key: &KeyPair,
    subject: Name,
    extensions: Vec<Extension>,
    extra: Vec<Attribute>,
) -> Result<Vec<u8>, KeyError> {
    let mut attributes = SetOfVec::new();
    if !extensions.is_empty() {
        let mut values = SetOfVec::new();
        values.insert(Any::encode_from(&extensions)?)?;
        attributes.insert(Attribute { oid: oids::EXTENSION_REQUEST, values })?;
    }
    for a in extra {
        attributes.insert(a)?;
    }
    let info = CertReqInfo { version: Version::V1, subject, public_key: key.spki()?, attributes };
    let signature = key.sign(&info.to_der()?)?;
    let req = CertReq { info, algorithm: key.signature_algorithm(), signature: BitString::from_bytes(&signature)? };
    Ok(req.to_der()?)
}

/// A CMS SignedData over `content` (id-data), signed with `signer_key` and identified by the
/// issuer and serial of `signer_cert_der`, which travels in `certificates`. With
/// `signed_attributes` the signature covers contentType + messageDigest (RFC 5652); without,
/// it covers the content itself (what Windows sends for renewals).
pub fn sign_cms(
    content: &[u8],
    signer_cert_der: &[u8],
    signer_key: &KeyPair,
    signed_attributes: bool,
) -> Result<Vec<u8>, KeyError> {
    let attrs = if signed_attributes { Some(vec![]) } else { None };
    sign_cms_with(content, oids::CMS_DATA, signer_cert_der, signer_key, attrs, &[])
}

/// What signs a CMS SignedData: a key pair here, or a CA key behind the CA crate's interface.
/// The digest follows the signature algorithm (SHA-384 with P-384, SHA-256 otherwise).
pub trait CmsSigner {
    fn signature_algorithm(&self) -> AlgorithmIdentifierOwned;
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError>;
}

impl CmsSigner for KeyPair {
    fn signature_algorithm(&self) -> AlgorithmIdentifierOwned {
        KeyPair::signature_algorithm(self)
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        KeyPair::sign(self, message)
    }
}

/// A SignedData over `content` of another type than id-data (a CMC PKIResponse): signed
/// attributes carry the type, as RFC 5652 5.3 requires, and the version is 3.
pub fn sign_cms_typed(
    content: &[u8],
    content_type: const_oid::ObjectIdentifier,
    signer_cert_der: &[u8],
    signer: &dyn CmsSigner,
    more_certs: &[Vec<u8>],
) -> Result<Vec<u8>, KeyError> {
    sign_cms_with(content, content_type, signer_cert_der, signer, Some(vec![]), more_certs)
}

/// `sign_cms` with signed attributes `extra` beside contentType and messageDigest (SCEP puts
/// its message type, nonces and status there) and `more_certs` after the signer's.
pub fn sign_cms_attributes(
    content: &[u8],
    signer_cert_der: &[u8],
    signer_key: &KeyPair,
    extra: Vec<Attribute>,
    more_certs: &[Vec<u8>],
) -> Result<Vec<u8>, KeyError> {
    sign_cms_with(content, oids::CMS_DATA, signer_cert_der, signer_key, Some(extra), more_certs)
}

fn sign_cms_with(
    content: &[u8],
    content_type: const_oid::ObjectIdentifier,
    signer_cert_der: &[u8],
    signer_key: &dyn CmsSigner,
    signed_attributes: Option<Vec<Attribute>>,
    more_certs: &[Vec<u8>],
) -> Result<Vec<u8>, KeyError> {
    use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
    use cms::content_info::{CmsVersion, ContentInfo};
    use cms::signed_data::{
        CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
    };
    let cert = x509_cert::Certificate::from_der(signer_cert_der)?;
    let (digest_oid, digest_alg) = if signer_key.signature_algorithm().oid == oids::ECDSA_WITH_SHA384 {
        ("2.16.840.1.101.3.4.2.2", &aws_lc_rs::digest::SHA384)
    } else {
        ("2.16.840.1.101.3.4.2.1", &aws_lc_rs::digest::SHA256)
    };
    let digest_alg_id =
        AlgorithmIdentifierOwned { oid: const_oid::ObjectIdentifier::new_unwrap(digest_oid), parameters: None };
    let (signed_attrs, signature) = match signed_attributes {
        Some(extra) => {
            let mut attrs = SetOfVec::new();
            let mut ct = SetOfVec::new();
            ct.insert(Any::encode_from(&content_type)?)?;
            attrs.insert(Attribute { oid: oids::CMS_CONTENT_TYPE, values: ct })?;
            let mut md = SetOfVec::new();
            md.insert(Any::encode_from(&OctetString::new(aws_lc_rs::digest::digest(digest_alg, content).as_ref())?)?)?;
            attrs.insert(Attribute { oid: oids::CMS_MESSAGE_DIGEST, values: md })?;
            for a in extra {
                attrs.insert(a)?;
            }
            let sig = signer_key.sign(&attrs.to_der()?)?;
            (Some(attrs), sig)
        }
        None => (None, signer_key.sign(content)?),
    };
    let signer = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: cert.tbs_certificate().issuer().clone(),
            serial_number: cert.tbs_certificate().serial_number().clone(),
        }),
        digest_alg: digest_alg_id.clone(),
        signed_attrs,
        signature_algorithm: signer_key.signature_algorithm(),
        signature: OctetString::new(signature)?,
        unsigned_attrs: None,
    };
    let mut digests = SetOfVec::new();
    digests.insert(digest_alg_id)?;
    let mut signers = SetOfVec::new();
    signers.insert(signer)?;
    let mut certs = vec![CertificateChoices::Certificate(cert)];
    for c in more_certs {
        certs.push(CertificateChoices::Certificate(x509_cert::Certificate::from_der(c)?));
    }
    let sd = SignedData {
        version: if content_type == oids::CMS_DATA { CmsVersion::V1 } else { CmsVersion::V3 },
        digest_algorithms: digests,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: content_type,
            econtent: Some(Any::encode_from(&OctetString::new(content)?)?),
        },
        certificates: Some(CertificateSet::try_from(certs)?),
        crls: None,
        signer_infos: SignerInfos(signers),
    };
    Ok(ContentInfo { content_type: oids::CMS_SIGNED_DATA, content: Any::encode_from(&sd)? }.to_der()?)
}

#[derive(der::Sequence)]
struct SelfSignedValidity {
    not_before: x509_cert::time::Time,
    not_after: x509_cert::time::Time,
}

#[derive(der::Sequence)]
struct SelfSignedTbs {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    version: x509_cert::certificate::Version,
    serial_number: x509_cert::serial_number::SerialNumber,
    signature: AlgorithmIdentifierOwned,
    issuer: Name,
    validity: SelfSignedValidity,
    subject: Name,
    subject_public_key_info: SubjectPublicKeyInfoOwned,
}

#[derive(der::Sequence)]
struct SignedCertificate {
    tbs: Any,
    signature_algorithm: AlgorithmIdentifierOwned,
    signature: BitString,
}

/// A self-signed certificate for `key` (what a SCEP client signs its first request with).
pub fn self_signed_cert(key: &KeyPair, subject: Name, not_before: u64, not_after: u64) -> Result<Vec<u8>, KeyError> {
    let time = |secs: u64| -> Result<x509_cert::time::Time, KeyError> {
        Ok(x509_cert::time::Time::from(der::DateTime::from_unix_duration(std::time::Duration::from_secs(secs))?))
    };
    let serial = random_serial()?;
    let tbs = SelfSignedTbs {
        version: x509_cert::certificate::Version::V3,
        serial_number: x509_cert::serial_number::SerialNumber::new(&serial)?,
        signature: key.signature_algorithm(),
        issuer: subject.clone(),
        validity: SelfSignedValidity { not_before: time(not_before)?, not_after: time(not_after)? },
        subject,
        subject_public_key_info: key.spki()?,
    };
    let tbs_der = tbs.to_der()?;
    let signature = key.sign(&tbs_der)?;
    let cert = SignedCertificate {
        tbs: Any::from_der(&tbs_der)?,
        signature_algorithm: key.signature_algorithm(),
        signature: BitString::from_bytes(&signature)?,
    };
    Ok(cert.to_der()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use autoenroll_core::pki::{CsrFacts, KeyFacts};

    #[test]
    fn csr_round_trip_all_algorithms() {
        for (alg, facts) in [
            (KeyAlgorithm::P256, KeyFacts::Ec { curve_bits: 256 }),
            (KeyAlgorithm::P384, KeyFacts::Ec { curve_bits: 384 }),
            (KeyAlgorithm::Rsa(2048), KeyFacts::Rsa { bits: 2048 }),
        ] {
            let key = KeyPair::generate(alg).unwrap();
            let again = KeyPair::from_pem(&key.to_pem().unwrap()).unwrap();
            assert_eq!(again.spki_der(), key.spki_der());
            let san = san_extension(&["a.example".into()], &["127.0.0.1".parse().unwrap()]).unwrap();
            let csr = build_csr(&key, cn_name("dev, 1").unwrap(), vec![san]).unwrap();
            let f = CsrFacts::parse(&csr).unwrap();
            assert_eq!(f.key, facts);
            assert_eq!(f.subject_cn.as_deref(), Some("dev, 1"));
            assert_eq!(f.dns_names, vec!["a.example".to_string()]);
            assert_eq!(f.ip_addrs.len(), 1);
        }
    }

    #[test]
    fn tampered_csr_is_refused() {
        let key = KeyPair::generate(KeyAlgorithm::P256).unwrap();
        let mut csr = build_csr(&key, cn_name("x").unwrap(), vec![]).unwrap();
        let i = csr.len() / 3;
        csr[i] ^= 1;
        assert!(CsrFacts::parse(&csr).is_err());
    }
}
