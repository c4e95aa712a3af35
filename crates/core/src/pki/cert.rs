//! Facts about an X.509 certificate that enrollment and renewal decisions need.
use super::{csr, sig, PkiError};
use crate::model::{Serial, TemplateRef, Thumbprint, UnixTime};
use crate::oids;
use der::{Decode, Encode};
use x509_cert::Certificate;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    pub serial: Serial,
    pub thumbprint: Thumbprint,
    pub subject: String,
    /// The subject as it is encoded (a renewal keeps it).
    pub subject_name: x509_cert::name::Name,
    pub subject_cn: Option<String>,
    /// subjectAltName DNS names and IP addresses.
    pub dns_names: Vec<String>,
    pub ip_addrs: Vec<std::net::IpAddr>,
    pub issuer: String,
    pub not_before: UnixTime,
    pub not_after: UnixTime,
    pub template: Option<TemplateRef>,
    pub template_name: Option<String>,
    pub spki_der: Vec<u8>,
    /// Extended key usage OIDs, dotted.
    pub ext_key_usage: Vec<String>,
}

impl CertFacts {
    pub fn parse(der_bytes: &[u8]) -> Result<CertFacts, PkiError> {
        let cert = Certificate::from_der(der_bytes)?;
        Self::of(&cert, der_bytes)
    }

    pub fn of(cert: &Certificate, der_bytes: &[u8]) -> Result<CertFacts, PkiError> {
        let tbs = cert.tbs_certificate();
        let mut template = None;
        let mut template_name = None;
        let mut ext_key_usage = Vec::new();
        let (mut dns_names, mut ip_addrs) = (Vec::new(), Vec::new());
        for ext in tbs.extensions().into_iter().flatten() {
            if ext.extn_id == oids::MS_CERTIFICATE_TEMPLATE {
                template = super::template_ext::decode_template(ext.extn_value.as_bytes()).ok();
            } else if ext.extn_id == oids::MS_ENROLL_CERTTYPE {
                template_name = super::template_ext::decode_template_name(ext.extn_value.as_bytes());
            } else if ext.extn_id == oids::CE_EXT_KEY_USAGE {
                let eku = x509_cert::ext::pkix::ExtendedKeyUsage::from_der(ext.extn_value.as_bytes())?;
                ext_key_usage = eku.0.iter().map(|o| o.to_string()).collect();
            } else if ext.extn_id == oids::CE_SUBJECT_ALT_NAME {
                (dns_names, ip_addrs) = csr::san_names(ext.extn_value.as_bytes())?;
            }
        }
        Ok(CertFacts {
            serial: Serial::from_bytes(tbs.serial_number().as_bytes()),
            thumbprint: Thumbprint::of_der(der_bytes),
            subject: tbs.subject().to_string(),
            subject_name: tbs.subject().clone(),
            subject_cn: csr::common_name(tbs.subject()),
            dns_names,
            ip_addrs,
            issuer: tbs.issuer().to_string(),
            not_before: UnixTime(tbs.validity().not_before.to_unix_duration().as_secs() as i64),
            not_after: UnixTime(tbs.validity().not_after.to_unix_duration().as_secs() as i64),
            template,
            template_name,
            spki_der: tbs.subject_public_key_info().to_der()?,
            ext_key_usage,
        })
    }

    pub fn has_client_auth(&self) -> bool {
        self.ext_key_usage.iter().any(|o| *o == oids::KP_CLIENT_AUTH.to_string())
    }

    pub fn lifetime_secs(&self) -> i64 {
        self.not_after.0 - self.not_before.0
    }
}

/// Verifies that `child_der` was signed by the key of `issuer_der`.
pub fn verify_issued_by(child_der: &[u8], issuer_der: &[u8]) -> Result<(), PkiError> {
    let child = Certificate::from_der(child_der)?;
    let issuer = Certificate::from_der(issuer_der)?;
    let tbs_raw = csr::first_element_raw(child_der)?;
    sig::verify(
        issuer.tbs_certificate().subject_public_key_info(),
        child.signature_algorithm(),
        tbs_raw,
        child.signature().as_bytes().ok_or_else(|| PkiError::Der("signature has unused bits".into()))?,
    )
}
