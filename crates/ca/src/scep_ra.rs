//! The SCEP registration authority certificate: an RSA key with digitalSignature and
//! keyEncipherment, issued by the issuing CA, that SCEP clients encrypt their requests to and
//! that signs every CertRep. Kept as `<ca dir>/scep-ra.pem` + `scep-ra.key` (0600) beside the
//! CA, so replicas that share the CA directory share it too. It lives as long as the issuing CA.
use crate::files::{io, pem_cert, read_pem, write_file};
use crate::issuer::{build_tbs, random_serial, sign_tbs, Ca, Profile, TbsInput};
use crate::CaError;
use autoenroll_core::model::{KeyUsage, UnixTime};
use autoenroll_keys::envelope::{self, ContentCipher};
use autoenroll_keys::{KeyAlgorithm, KeyPair};
use std::path::Path;
use std::str::FromStr;
use x509_cert::attr::Attribute;
use x509_cert::name::Name;

pub struct ScepRa {
    cert_der: Vec<u8>,
    key: KeyPair,
    /// The same key, parsed once for decryption.
    decrypting: aws_lc_rs::rsa::PrivateDecryptingKey,
}

impl ScepRa {
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// Decrypts a pkcsPKIEnvelope addressed to the RA. Every failure to decrypt reads the same.
    pub fn open_envelope(&self, envelope: &[u8], legacy: bool) -> Result<(Vec<u8>, ContentCipher), CaError> {
        Ok(envelope::decrypt_enveloped_with(envelope, &self.decrypting, legacy)?)
    }

    /// A SignedData over `content` with the given SCEP attributes, signed by the RA; the RA
    /// certificate and `more_certs` travel with it.
    pub fn sign(&self, content: &[u8], attributes: Vec<Attribute>, more_certs: &[Vec<u8>]) -> Result<Vec<u8>, CaError> {
        Ok(autoenroll_keys::sign_cms_attributes(content, &self.cert_der, &self.key, attributes, more_certs)?)
    }
}

/// Loads the RA from `dir`, or issues it when absent or when it no longer chains to the
/// issuing CA (a new issuing CA).
pub fn scep_ra(dir: &Path, ca: &Ca, organization: &str, now: UnixTime) -> Result<ScepRa, CaError> {
    let cert_path = dir.join("scep-ra.pem");
    let key_path = dir.join("scep-ra.key");
    if cert_path.exists() && key_path.exists() {
        let cert_der = read_pem(&cert_path, "CERTIFICATE")?;
        let key_pem = std::fs::read_to_string(&key_path).map_err(|e| io(&key_path, e))?;
        let key = KeyPair::from_pem(&key_pem)?;
        let chained = autoenroll_core::pki::cert::verify_issued_by(&cert_der, &ca.issuing_der()).is_ok();
        let cert = autoenroll_core::pki::CertFacts::parse(&cert_der)
            .map_err(|e| CaError::Encoding(format!("{}: {e}", cert_path.display())))?;
        if cert.spki_der != key.spki_der() {
            return Err(CaError::Io(format!("{} does not match {}", key_path.display(), cert_path.display())));
        }
        if chained {
            let decrypting = envelope::recipient_key(&key.to_pkcs8_der()?)?;
            return Ok(ScepRa { cert_der, key, decrypting });
        }
        for p in [&cert_path, &key_path] {
            let old = p.with_extension(format!("{}.old", p.extension().and_then(|e| e.to_str()).unwrap_or("")));
            std::fs::rename(p, &old).map_err(|e| io(p, e))?;
        }
    }
    let key = KeyPair::generate(KeyAlgorithm::Rsa(2048))?;
    let org = autoenroll_keys::escape_rdn_value(organization);
    let subject = Name::from_str(&format!("CN={org} SCEP RA,O={org}"))?;
    let profile = Profile {
        validity_secs: 0,
        key_usage: vec![KeyUsage::DigitalSignature, KeyUsage::KeyEncipherment],
        extended_key_usage: vec![],
        template: None,
        template_name: None,
        is_ca: false,
    };
    let tbs = build_tbs(TbsInput {
        serial: random_serial()?,
        not_before: now,
        not_after: ca.issuing_not_after(),
        subject,
        spki_der: key.spki_der(),
        issuer: ca.issuing_subject().clone(),
        issuer_key_id: ca.issuing_key_id().to_vec(),
        signature_algorithm: ca.issuing_key.signature_algorithm(),
        profile: &profile,
        dns_names: &[],
        ip_addrs: &[],
        path_len: None,
        distribution: None,
    })?;
    let cert_der = sign_tbs(&tbs, ca.issuing_key.as_ref())?;
    write_file(&key_path, key.to_pem()?.as_bytes(), 0o600)?;
    write_file(&cert_path, pem_cert(&cert_der)?.as_bytes(), 0o644)?;
    let decrypting = envelope::recipient_key(&key.to_pkcs8_der()?)?;
    Ok(ScepRa { cert_der, key, decrypting })
}
