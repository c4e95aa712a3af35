//! Certs-only ("degenerate") PKCS#7 SignedData: how chains travel in WSTEP responses and SCEP.
use cms::cert::CertificateChoices;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{CertificateSet, EncapsulatedContentInfo, SignedData, SignerInfos};
use const_oid::ObjectIdentifier;
use der::asn1::SetOfVec;
use der::{Any, Decode, Encode};
use x509_cert::Certificate;

const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");

pub fn certs_only(certs_der: &[&[u8]]) -> Result<Vec<u8>, der::Error> {
    let certs = certs_der
        .iter()
        .map(|c| Certificate::from_der(c).map(CertificateChoices::Certificate))
        .collect::<Result<Vec<_>, _>>()?;
    let sd = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::new(),
        encap_content_info: EncapsulatedContentInfo { econtent_type: ID_DATA, econtent: None },
        certificates: Some(CertificateSet::try_from(certs)?),
        crls: None,
        signer_infos: SignerInfos(SetOfVec::new()),
    };
    ContentInfo { content_type: ID_SIGNED_DATA, content: Any::encode_from(&sd)? }.to_der()
}

/// A degenerate SignedData carrying one CRL (SCEP GetCRL's answer).
pub fn crl_only(crl_der: &[u8]) -> Result<Vec<u8>, der::Error> {
    use cms::revocation::{RevocationInfoChoice, RevocationInfoChoices};
    let crl = x509_cert::crl::CertificateList::from_der(crl_der)?;
    let mut crls = SetOfVec::new();
    crls.insert(RevocationInfoChoice::Crl(crl))?;
    let sd = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::new(),
        encap_content_info: EncapsulatedContentInfo { econtent_type: ID_DATA, econtent: None },
        certificates: None,
        crls: Some(RevocationInfoChoices(crls)),
        signer_infos: SignerInfos(SetOfVec::new()),
    };
    ContentInfo { content_type: ID_SIGNED_DATA, content: Any::encode_from(&sd)? }.to_der()
}

/// The certificates of a SignedData (DER or BER), in the order they appear.
pub fn certificates(der_bytes: &[u8]) -> Result<Vec<Vec<u8>>, crate::ProtoError> {
    let bad = |_| crate::ProtoError::Invalid("PKCS#7");
    let ci = ContentInfo::from_ber(der_bytes).map_err(bad)?;
    if ci.content_type != ID_SIGNED_DATA {
        return Err(crate::ProtoError::Invalid("PKCS#7 content type"));
    }
    let sd: SignedData = ci.content.decode_as_encoding(der::EncodingRules::Ber).map_err(bad)?;
    let mut out = Vec::new();
    for c in sd.certificates.map(|s| s.0.into_vec()).unwrap_or_default() {
        if let CertificateChoices::Certificate(c) = c {
            out.push(c.to_der().map_err(bad)?);
        }
    }
    Ok(out)
}
