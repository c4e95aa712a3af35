//! "PKCS#7 renewal requests": a CMS SignedData whose content is a PKCS#10 for the new key,
//! signed with the key of the certificate being renewed (MS-WSTEP 4.1.5.1, MS-WCCE). Accepts
//! signed attributes present or absent, DER or BER (indefinite lengths, constructed OCTET
//! STRINGs), and the old certificate in the SignedData and/or the CSR's renewal attribute.
use super::csr::{CsrFacts, MAX_CSR_LEN};
use super::sig::{self, Digest};
use super::PkiError;
use crate::oids;
use cms::cert::CertificateChoices;
use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier};
use der::asn1::OctetString;
use der::{Decode, Encode, EncodingRules, Reader, SliceReader, Tagged};
use x509_cert::Certificate;

/// Largest renewal message we look at (the spec sample is 5 KiB).
pub const MAX_CMS_LEN: usize = 256 * 1024;

#[derive(Debug, Clone)]
pub struct RenewalRequest {
    /// The inner PKCS#10 (self-signature verified).
    pub csr: CsrFacts,
    /// The certificate whose key signed the SignedData.
    pub signer_cert_der: Vec<u8>,
    pub signed_attributes: bool,
}

fn cms_err(m: impl Into<String>) -> PkiError {
    PkiError::Cms(m.into())
}

/// True when `der` starts like a ContentInfo of type signedData.
pub fn is_signed_data(der_bytes: &[u8]) -> bool {
    ContentInfo::from_ber(der_bytes).map(|ci| ci.content_type == oids::CMS_SIGNED_DATA).unwrap_or(false)
}

/// The eContent octets. der 0.8 hands a BER constructed OCTET STRING over as its raw inner
/// segments (tag dropped), so re-assemble those.
pub(crate) fn econtent_bytes(any: &der::Any) -> Result<Vec<u8>, PkiError> {
    let v = any.value();
    if any.tag() == der::Tag::OctetString && v.first() == Some(&0x04) {
        // Our content is a PKCS#10 (a SEQUENCE, 0x30); a leading OCTET STRING tag means segments.
        let mut r = SliceReader::new(v)?;
        let mut out = Vec::new();
        while !r.is_finished() {
            out.extend_from_slice(OctetString::decode(&mut r)?.as_bytes());
        }
        return Ok(out);
    }
    if any.tag() != der::Tag::OctetString {
        return Err(cms_err("eContent is not an OCTET STRING"));
    }
    Ok(v.to_vec())
}

fn matches_sid(cert: &Certificate, sid: &SignerIdentifier) -> bool {
    let tbs = cert.tbs_certificate();
    match sid {
        SignerIdentifier::IssuerAndSerialNumber(ias) => {
            ias.issuer == *tbs.issuer() && ias.serial_number.as_bytes() == tbs.serial_number().as_bytes()
        }
        SignerIdentifier::SubjectKeyIdentifier(ski) => tbs
            .extensions()
            .into_iter()
            .flatten()
            .find(|e| e.extn_id == oids::CE_SUBJECT_KEY_IDENTIFIER)
            .and_then(|e| OctetString::from_der(e.extn_value.as_bytes()).ok())
            .is_some_and(|k| k.as_bytes() == ski.0.as_bytes()),
    }
}

/// Parses and verifies a renewal request. Time is not checked here (the RA does, with its
/// clock): this proves only that the holder of the old certificate's key asked for the CSR.
pub fn verify_renewal(der_bytes: &[u8]) -> Result<RenewalRequest, PkiError> {
    if der_bytes.len() > MAX_CMS_LEN {
        return Err(cms_err("renewal request too large"));
    }
    let ci = ContentInfo::from_ber(der_bytes)?;
    if ci.content_type != oids::CMS_SIGNED_DATA {
        return Err(cms_err("not a CMS SignedData"));
    }
    let sd: SignedData = ci.content.decode_as_encoding(EncodingRules::Ber)?;
    if sd.encap_content_info.econtent_type != oids::CMS_DATA {
        return Err(cms_err(format!(
            "unsupported content type {} (CMC is not accepted)",
            sd.encap_content_info.econtent_type
        )));
    }
    let content = econtent_bytes(sd.encap_content_info.econtent.as_ref().ok_or_else(|| cms_err("detached content"))?)?;
    if content.len() > MAX_CSR_LEN {
        return Err(cms_err("inner request too large"));
    }
    let csr = CsrFacts::parse(&content)?;

    let mut candidates: Vec<Certificate> = sd
        .certificates
        .iter()
        .flat_map(|s| s.0.iter())
        .filter_map(|c| match c {
            CertificateChoices::Certificate(c) => Some(c.clone()),
            _ => None,
        })
        .collect();
    if let Some(rc) = &csr.renewal_cert_der {
        candidates.push(Certificate::from_der(rc)?);
    }
    let signer = match sd.signer_infos.0.as_slice() {
        [one] => one,
        [] => return Err(cms_err("no signer")),
        _ => return Err(cms_err("more than one signer")),
    };
    let signer_cert = candidates
        .into_iter()
        .find(|c| matches_sid(c, &signer.sid))
        .ok_or_else(|| cms_err("the signer's certificate is not in the request"))?;
    let digest = Digest::from_oid(&signer.digest_alg.oid)?;
    let spki = signer_cert.tbs_certificate().subject_public_key_info();
    let signature = signer.signature.as_bytes();
    let signed_attributes = signer.signed_attrs.is_some();
    match &signer.signed_attrs {
        None => sig::verify_with_digest(spki, digest, &content, signature)?,
        Some(attrs) => {
            let md = attrs
                .iter()
                .find(|a| a.oid == oids::CMS_MESSAGE_DIGEST)
                .and_then(|a| a.values.iter().next())
                .ok_or_else(|| cms_err("signed attributes without messageDigest"))?;
            let md = md.decode_as::<OctetString>()?;
            if md.as_bytes() != digest.digest(&content).as_slice() {
                return Err(cms_err("messageDigest does not match the content"));
            }
            let content_type_ok = attrs
                .iter()
                .find(|a| a.oid == oids::CMS_CONTENT_TYPE)
                .and_then(|a| a.values.iter().next())
                .and_then(|v| v.decode_as::<const_oid::ObjectIdentifier>().ok())
                .is_some_and(|o| o == oids::CMS_DATA);
            if !content_type_ok {
                return Err(cms_err("signed contentType attribute missing or not id-data"));
            }
            // The signature covers the attributes' DER SET encoding, not the [0] on the wire.
            sig::verify_with_digest(spki, digest, &attrs.to_der()?, signature)?;
        }
    }
    Ok(RenewalRequest { csr, signer_cert_der: signer_cert.to_der()?, signed_attributes })
}
