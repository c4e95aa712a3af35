//! CRLs signed by the issuing CA (RFC 5280 §5): CRL number, authority key identifier, and a
//! reason code per entry. The RA decides what is revoked and the number; this crate signs.
use crate::issuer::{to_time, Ca, SigningKey};
use crate::CaError;
use autoenroll_core::model::UnixTime;
use autoenroll_core::oids;
use der::asn1::{BitString, OctetString};
use der::Encode;
use x509_cert::crl::{CertificateList, RevokedCert, TbsCertList};
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, CrlReason};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;

/// One revoked certificate: serial bytes, when, and why (None: unspecified, left out as
/// RFC 5280 §5.3.1 recommends).
#[derive(Debug, Clone)]
pub struct RevokedEntry {
    pub serial: Vec<u8>,
    pub revoked_at: UnixTime,
    pub reason: Option<CrlReason>,
}

impl Ca {
    /// A CRL numbered `number`, valid from `this_update` to `next_update`.
    pub fn sign_crl(
        &self,
        entries: &[RevokedEntry],
        number: u64,
        this_update: UnixTime,
        next_update: UnixTime,
    ) -> Result<Vec<u8>, CaError> {
        let signer =
            CrlSigner { key: self.issuing_key.as_ref(), issuer: self.issuing_subject(), key_id: self.issuing_key_id() };
        signer.sign(entries, number, this_update, next_update)
    }
}

/// Who signs a CRL: the issuing CA (end entities), or the root (the issuing CA itself).
pub(crate) struct CrlSigner<'a> {
    pub key: &'a dyn SigningKey,
    pub issuer: &'a Name,
    pub key_id: &'a [u8],
}

impl CrlSigner<'_> {
    pub(crate) fn sign(
        &self,
        entries: &[RevokedEntry],
        number: u64,
        this_update: UnixTime,
        next_update: UnixTime,
    ) -> Result<Vec<u8>, CaError> {
        let mut revoked: Vec<RevokedCert> = Vec::with_capacity(entries.len());
        for e in entries {
            let exts = match e.reason {
                Some(r) => Some(vec![Extension {
                    extn_id: oids::CE_CRL_REASON,
                    critical: false,
                    extn_value: OctetString::new(r.to_der()?)?,
                }]),
                None => None,
            };
            revoked.push(RevokedCert {
                serial_number: SerialNumber::new(&e.serial)?,
                revocation_date: to_time(e.revoked_at)?,
                crl_entry_extensions: exts,
            });
        }
        let aki = AuthorityKeyIdentifier {
            key_identifier: Some(OctetString::new(self.key_id.to_vec())?),
            authority_cert_issuer: None,
            authority_cert_serial_number: None,
        };
        let tbs = TbsCertList {
            version: x509_cert::Version::V2,
            signature: self.key.signature_algorithm(),
            issuer: self.issuer.clone(),
            this_update: to_time(this_update)?,
            next_update: Some(to_time(next_update)?),
            revoked_certificates: if revoked.is_empty() { None } else { Some(revoked) },
            crl_extensions: Some(vec![
                Extension {
                    extn_id: oids::CE_AUTHORITY_KEY_IDENTIFIER,
                    critical: false,
                    extn_value: OctetString::new(aki.to_der()?)?,
                },
                Extension {
                    extn_id: oids::CE_CRL_NUMBER,
                    critical: false,
                    extn_value: OctetString::new(der::asn1::Uint::new(&number.to_be_bytes())?.to_der()?)?,
                },
            ]),
        };
        let tbs_der = tbs.to_der()?;
        let signature = self.key.sign(&tbs_der)?;
        let crl = CertificateList {
            tbs_cert_list: tbs,
            signature_algorithm: self.key.signature_algorithm(),
            signature: BitString::from_bytes(&signature)?,
        };
        Ok(crl.to_der()?)
    }
}
