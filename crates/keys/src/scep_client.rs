//! The client side of SCEP: a pkiMessage around a request, and the reading of the CertRep.
//! Used by the load generator and by tests; a device agent could use it as well.
use crate::envelope::{decrypt_enveloped, encrypt_enveloped, ContentCipher};
use crate::{KeyError, KeyPair};
use autoenroll_core::pki::scep::{parse_pki_message, MessageType, PkiStatus, ScepAttributes};

/// PKCSReq (19), RenewalReq (17), CertPoll (20) or GetCert (21) carrying `content`
/// (a CSR, IssuerAndSubject or IssuerAndSerialNumber) encrypted to the RA.
pub struct Request<'a> {
    pub message_type: MessageType,
    pub transaction_id: &'a str,
    pub content: &'a [u8],
    pub signer_cert_der: &'a [u8],
    pub signer_key: &'a KeyPair,
    pub ra_cert_der: &'a [u8],
    pub cipher: ContentCipher,
}

fn number(t: MessageType) -> u32 {
    match t {
        MessageType::CertRep => 3,
        MessageType::RenewalReq => 17,
        MessageType::PkcsReq => 19,
        MessageType::CertPoll => 20,
        MessageType::GetCert => 21,
        MessageType::GetCrl => 22,
    }
}

/// Returns the DER pkiMessage and its senderNonce.
pub fn build_request(r: &Request<'_>) -> Result<(Vec<u8>, Vec<u8>), KeyError> {
    let envelope = encrypt_enveloped(r.content, r.ra_cert_der, r.cipher)?;
    let nonce = crate::random_bytes(16)?;
    let attrs = ScepAttributes {
        message_type: number(r.message_type),
        transaction_id: r.transaction_id,
        sender_nonce: &nonce,
        recipient_nonce: None,
        status: None,
        fail_info: None,
    }
    .encode()
    .map_err(|e| KeyError::Encoding(e.to_string()))?;
    let msg = crate::sign_cms_attributes(&envelope, r.signer_cert_der, r.signer_key, attrs, &[])?;
    Ok((msg, nonce))
}

#[derive(Debug)]
pub struct Reply {
    pub status: PkiStatus,
    pub fail_info: Option<u32>,
    pub fail_info_text: Option<String>,
    pub transaction_id: String,
    pub recipient_nonce: Option<Vec<u8>>,
    /// The signer of the CertRep (the RA certificate).
    pub signer_cert_der: Vec<u8>,
    /// The certificates in the envelope (SUCCESS only).
    pub certificates: Vec<Vec<u8>>,
    /// The CRLs in the envelope (GetCRL).
    pub crls: Vec<Vec<u8>>,
    pub cipher: Option<ContentCipher>,
}

/// Verifies and opens a CertRep with the requester's key.
pub fn read_reply(der_bytes: &[u8], recipient_key: &KeyPair) -> Result<Reply, KeyError> {
    let m = parse_pki_message(der_bytes).map_err(|e| KeyError::Encoding(format!("CertRep: {e}")))?;
    if m.message_type != MessageType::CertRep {
        return Err(KeyError::Encoding("not a CertRep".into()));
    }
    let status = m.pki_status.ok_or_else(|| KeyError::Encoding("CertRep without pkiStatus".into()))?;
    let ((certificates, crls), cipher) = if status == PkiStatus::Success {
        let (p7, cipher) = decrypt_enveloped(&m.envelope, &recipient_key.to_pkcs8_der()?, true)?;
        (contents_of(&p7)?, Some(cipher))
    } else {
        ((vec![], vec![]), None)
    };
    Ok(Reply {
        status,
        fail_info: m.fail_info,
        fail_info_text: m.fail_info_text,
        transaction_id: m.transaction_id,
        recipient_nonce: m.recipient_nonce,
        signer_cert_der: m.signer_cert_der,
        certificates,
        crls,
        cipher,
    })
}

/// DER objects, in order.
type Ders = Vec<Vec<u8>>;

/// The certificates and CRLs of a degenerate SignedData.
fn contents_of(p7: &[u8]) -> Result<(Ders, Ders), KeyError> {
    use cms::cert::CertificateChoices;
    use cms::content_info::ContentInfo;
    use cms::signed_data::SignedData;
    use der::{Decode, Encode};
    let ci = ContentInfo::from_ber(p7)?;
    let sd: SignedData = ci.content.decode_as_encoding(der::EncodingRules::Ber)?;
    let mut out = Vec::new();
    for c in sd.certificates.map(|s| s.0.into_vec()).unwrap_or_default() {
        if let CertificateChoices::Certificate(c) = c {
            out.push(c.to_der()?);
        }
    }
    let mut crls = Vec::new();
    for r in sd.crls.map(|s| s.0.into_vec()).unwrap_or_default() {
        if let cms::revocation::RevocationInfoChoice::Crl(c) = r {
            crls.push(c.to_der()?);
        }
    }
    Ok((out, crls))
}
