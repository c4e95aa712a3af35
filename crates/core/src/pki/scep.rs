//! SCEP (RFC 8894) pkiMessage: the outer SignedData with its SCEP attributes, verified against
//! the signer certificate it carries (self-signed on first enrollment, ours on renewal). The
//! inner pkcsPKIEnvelope stays opaque here: only the RA can decrypt it.
use super::cms::econtent_bytes;
use super::sig::{self, Digest};
use super::PkiError;
use crate::oids;
use cms::content_info::ContentInfo;
use const_oid::ObjectIdentifier as Oid;
use der::asn1::{OctetString, PrintableStringRef, Utf8StringRef};
use der::{Decode, Encode, EncodingRules, Reader, SliceReader};

pub const MAX_PKI_MESSAGE: usize = 256 * 1024;

pub const MESSAGE_TYPE: Oid = Oid::new_unwrap("2.16.840.1.113733.1.9.2");
pub const PKI_STATUS: Oid = Oid::new_unwrap("2.16.840.1.113733.1.9.3");
pub const FAIL_INFO: Oid = Oid::new_unwrap("2.16.840.1.113733.1.9.4");
pub const SENDER_NONCE: Oid = Oid::new_unwrap("2.16.840.1.113733.1.9.5");
pub const RECIPIENT_NONCE: Oid = Oid::new_unwrap("2.16.840.1.113733.1.9.6");
pub const TRANSACTION_ID: Oid = Oid::new_unwrap("2.16.840.1.113733.1.9.7");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    CertRep,
    RenewalReq,
    PkcsReq,
    CertPoll,
    GetCert,
    GetCrl,
}

impl MessageType {
    pub fn from_number(n: u32) -> Option<MessageType> {
        Some(match n {
            3 => MessageType::CertRep,
            17 => MessageType::RenewalReq,
            19 => MessageType::PkcsReq,
            20 => MessageType::CertPoll,
            21 => MessageType::GetCert,
            22 => MessageType::GetCrl,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct PkiMessage {
    pub message_type: MessageType,
    /// Opaque (hex, decimal or base64 depending on the client).
    pub transaction_id: String,
    pub sender_nonce: Vec<u8>,
    pub signer_cert_der: Vec<u8>,
    pub digest: Digest,
    /// The DER pkcsPKIEnvelope (empty for CertRep PENDING/FAILURE).
    pub envelope: Vec<u8>,
    /// CertRep only.
    pub recipient_nonce: Option<Vec<u8>>,
    pub pki_status: Option<PkiStatus>,
    pub fail_info: Option<u32>,
    pub fail_info_text: Option<String>,
}

fn err(m: impl Into<String>) -> PkiError {
    PkiError::Cms(m.into())
}

fn text_attr(attrs: &x509_cert::attr::Attributes, oid: Oid) -> Option<String> {
    let v = attrs.iter().find(|a| a.oid == oid)?.values.iter().next()?;
    v.decode_as::<PrintableStringRef<'_>>()
        .map(|s| s.as_str().to_string())
        .or_else(|_| v.decode_as::<Utf8StringRef<'_>>().map(|s| s.as_str().to_string()))
        .ok()
}

// SCEP clients make their first signer certificate themselves, and sscep gives it a 32-byte
// serial number, which RFC 5280 forbids and strict CMS types refuse. So the SignedData is read
// with the `Raw` certificate profile: lenient where the client's own certificate is concerned,
// while the signature over the signed attributes is still checked.
type RawCertificate = x509_cert::certificate::CertificateInner<x509_cert::certificate::Raw>;

#[derive(der::Sequence)]
struct IssuerAndSerialRaw {
    issuer: x509_cert::name::Name,
    serial_number: x509_cert::serial_number::SerialNumber<x509_cert::certificate::Raw>,
}

#[derive(der::Choice)]
enum SignerIdRaw {
    IssuerAndSerialNumber(IssuerAndSerialRaw),
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT")]
    SubjectKeyIdentifier(OctetString),
}

#[derive(der::Sequence)]
struct SignerInfoRaw {
    version: der::Any,
    sid: SignerIdRaw,
    digest_alg: spki::AlgorithmIdentifierOwned,
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", constructed = "true", optional = "true")]
    signed_attrs: Option<x509_cert::attr::Attributes>,
    signature_algorithm: spki::AlgorithmIdentifierOwned,
    signature: OctetString,
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", constructed = "true", optional = "true")]
    unsigned_attrs: Option<x509_cert::attr::Attributes>,
}

fn ber(bytes: &[u8]) -> Result<SliceReader<'_>, PkiError> {
    Ok(SliceReader::new_with_encoding_rules(bytes, EncodingRules::Ber)?)
}

fn signer_matches(cert: &RawCertificate, sid: &SignerIdRaw) -> bool {
    let tbs = cert.tbs_certificate();
    match sid {
        SignerIdRaw::IssuerAndSerialNumber(i) => {
            i.issuer == *tbs.issuer() && i.serial_number.as_bytes() == tbs.serial_number().as_bytes()
        }
        SignerIdRaw::SubjectKeyIdentifier(ski) => tbs
            .extensions()
            .into_iter()
            .flatten()
            .find(|e| e.extn_id == oids::CE_SUBJECT_KEY_IDENTIFIER)
            .and_then(|e| OctetString::from_der(e.extn_value.as_bytes()).ok())
            .is_some_and(|k| k.as_bytes() == ski.as_bytes()),
    }
}

/// The signed attributes of a SignerInfo as sent, re-tagged from `[0] IMPLICIT` to SET.
fn raw_signed_attrs(signer_info: &[u8]) -> Result<Vec<u8>, PkiError> {
    let outer = der::Any::from_ber(signer_info)?;
    let mut r = ber(outer.value())?;
    for _ in 0..3 {
        r.tlv_bytes()?; // version, sid, digestAlgorithm
    }
    if r.peek_byte() != Some(0xa0) {
        return Err(err("SCEP messages need signed attributes"));
    }
    let mut raw = r.tlv_bytes()?.to_vec();
    raw[0] = 0x31;
    Ok(raw)
}

/// Parses a pkiMessage (DER or BER) and verifies its signature with the signer certificate it
/// carries. Signed attributes are mandatory in SCEP.
pub fn parse_pki_message(der_bytes: &[u8]) -> Result<PkiMessage, PkiError> {
    if der_bytes.len() > MAX_PKI_MESSAGE {
        return Err(err("pkiMessage too large"));
    }
    let ci = ContentInfo::from_ber(der_bytes)?;
    if ci.content_type != oids::CMS_SIGNED_DATA {
        return Err(err("not a CMS SignedData"));
    }
    // SignedData ::= SEQUENCE { version, digestAlgorithms, encapContentInfo,
    //   [0] certificates OPTIONAL, [1] crls OPTIONAL, signerInfos }
    let mut r = ber(ci.content.value())?;
    let _version: der::Any = r.decode()?;
    let _digests: der::Any = r.decode()?;
    let encap: cms::signed_data::EncapsulatedContentInfo = r.decode()?;
    let mut certificates = Vec::new();
    while let Some(b) = r.peek_byte() {
        if b & 0xdf == 0x80 {
            // [0] certificates / [1] crls (constructed, context-specific)
            let number = b & 0x1f;
            let block: der::Any = r.decode()?;
            if number == 0 {
                let mut cr = ber(block.value())?;
                while !cr.is_finished() {
                    let tlv = cr.tlv_bytes()?;
                    // Certificates that do not even parse leniently are skipped, not fatal.
                    if let Ok(c) = RawCertificate::from_der(tlv) {
                        certificates.push((c, tlv.to_vec()));
                    }
                }
            }
        } else {
            break;
        }
    }
    let signer_set: der::Any = r.decode()?;
    let mut sr = ber(signer_set.value())?;
    let signer_tlv = sr.tlv_bytes()?;
    if !sr.is_finished() {
        return Err(err("a pkiMessage has exactly one signer"));
    }
    let signer = SignerInfoRaw::from_ber(signer_tlv)?;
    // The signature covers the attributes exactly as the client encoded them (some clients do
    // not sort the SET), so the original bytes are verified, not a re-encoding.
    let signed_attrs_der = raw_signed_attrs(signer_tlv)?;
    let (signer_cert, signer_cert_der) = certificates
        .into_iter()
        .find(|(c, _)| signer_matches(c, &signer.sid))
        .ok_or_else(|| err("the signer certificate is not in the message"))?;
    let attrs = signer.signed_attrs.as_ref().ok_or_else(|| err("SCEP messages need signed attributes"))?;
    let content = match &encap.econtent {
        Some(e) => econtent_bytes(e)?,
        None => Vec::new(),
    };
    let digest = Digest::from_oid(&signer.digest_alg.oid)?;
    let md = attrs
        .iter()
        .find(|a| a.oid == oids::CMS_MESSAGE_DIGEST)
        .and_then(|a| a.values.iter().next())
        .ok_or_else(|| err("no messageDigest"))?
        .decode_as::<OctetString>()?;
    if md.as_bytes() != digest.digest(&content).as_slice() {
        return Err(PkiError::BadSignature);
    }
    let spki =
        spki::SubjectPublicKeyInfoOwned::from_der(&signer_cert.tbs_certificate().subject_public_key_info().to_der()?)?;
    sig::verify_with_digest(&spki, digest, &signed_attrs_der, signer.signature.as_bytes())?;
    let message_type = text_attr(attrs, MESSAGE_TYPE)
        .and_then(|t| t.trim().parse::<u32>().ok())
        .and_then(MessageType::from_number)
        .ok_or_else(|| err("missing or unknown messageType"))?;
    let transaction_id = text_attr(attrs, TRANSACTION_ID).ok_or_else(|| err("missing transactionID"))?;
    let octets = |oid: Oid| {
        attrs
            .iter()
            .find(|a| a.oid == oid)
            .and_then(|a| a.values.iter().next())
            .and_then(|v| v.decode_as::<OctetString>().ok())
            .map(|o| o.as_bytes().to_vec())
    };
    let number = |oid: Oid| text_attr(attrs, oid).and_then(|t| t.trim().parse::<u32>().ok());
    Ok(PkiMessage {
        message_type,
        transaction_id,
        sender_nonce: octets(SENDER_NONCE).unwrap_or_default(),
        signer_cert_der,
        digest,
        envelope: content,
        recipient_nonce: octets(RECIPIENT_NONCE),
        pki_status: number(PKI_STATUS).and_then(|n| match n {
            0 => Some(PkiStatus::Success),
            2 => Some(PkiStatus::Failure),
            3 => Some(PkiStatus::Pending),
            _ => None,
        }),
        fail_info: number(FAIL_INFO),
        fail_info_text: text_attr(attrs, FAIL_INFO_TEXT),
    })
}

/// pkiStatus of a CertRep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PkiStatus {
    Success,
    Failure,
    Pending,
}

/// failInfo of a FAILURE CertRep (RFC 8894 §3.2.1.4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailInfo {
    BadAlg,
    BadMessageCheck,
    BadRequest,
    BadTime,
    BadCertId,
}

impl FailInfo {
    pub fn number(self) -> u8 {
        match self {
            FailInfo::BadAlg => 0,
            FailInfo::BadMessageCheck => 1,
            FailInfo::BadRequest => 2,
            FailInfo::BadTime => 3,
            FailInfo::BadCertId => 4,
        }
    }

    /// The RFC 8894 name.
    pub fn name(self) -> &'static str {
        match self {
            FailInfo::BadAlg => "badAlg",
            FailInfo::BadMessageCheck => "badMessageCheck",
            FailInfo::BadRequest => "badRequest",
            FailInfo::BadTime => "badTime",
            FailInfo::BadCertId => "badCertId",
        }
    }
}

/// id-scep-failInfoText (RFC 8894): a human-readable reason beside failInfo.
pub const FAIL_INFO_TEXT: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.24.1");

fn attribute(oid: Oid, value: der::Any) -> Result<x509_cert::attr::Attribute, PkiError> {
    let mut values = der::asn1::SetOfVec::new();
    values.insert(value)?;
    Ok(x509_cert::attr::Attribute { oid, values })
}

fn printable(s: &str) -> Result<der::Any, PkiError> {
    Ok(der::Any::encode_from(&der::asn1::PrintableStringRef::new(s)?)?)
}

/// The SCEP signed attributes of a message (contentType and messageDigest are the signer's).
pub struct ScepAttributes<'a> {
    pub message_type: u32,
    pub transaction_id: &'a str,
    pub sender_nonce: &'a [u8],
    pub recipient_nonce: Option<&'a [u8]>,
    pub status: Option<PkiStatus>,
    pub fail_info: Option<(FailInfo, &'a str)>,
}

impl ScepAttributes<'_> {
    pub fn encode(&self) -> Result<Vec<x509_cert::attr::Attribute>, PkiError> {
        let mut out = vec![
            attribute(MESSAGE_TYPE, printable(&self.message_type.to_string())?)?,
            // The transaction ID is echoed exactly; clients write a PrintableString.
            attribute(
                TRANSACTION_ID,
                printable(self.transaction_id).or_else(|_| {
                    Ok::<_, PkiError>(der::Any::encode_from(&der::asn1::Utf8StringRef::new(self.transaction_id)?)?)
                })?,
            )?,
            attribute(SENDER_NONCE, der::Any::encode_from(&OctetString::new(self.sender_nonce)?)?)?,
        ];
        if let Some(n) = self.recipient_nonce {
            out.push(attribute(RECIPIENT_NONCE, der::Any::encode_from(&OctetString::new(n)?)?)?);
        }
        if let Some(s) = self.status {
            let n = match s {
                PkiStatus::Success => "0",
                PkiStatus::Failure => "2",
                PkiStatus::Pending => "3",
            };
            out.push(attribute(PKI_STATUS, printable(n)?)?);
        }
        if let Some((info, text)) = self.fail_info {
            out.push(attribute(FAIL_INFO, printable(&info.number().to_string())?)?);
            out.push(attribute(FAIL_INFO_TEXT, der::Any::encode_from(&der::asn1::Utf8StringRef::new(text)?)?)?);
        }
        Ok(out)
    }
}

/// CertPoll's content: IssuerAndSubject ::= SEQUENCE { issuer Name, subject Name }.
#[derive(der::Sequence)]
pub struct IssuerAndSubject {
    pub issuer: x509_cert::name::Name,
    pub subject: x509_cert::name::Name,
}

/// GetCert's content: IssuerAndSerialNumber; the serial is returned as its bytes.
pub fn parse_issuer_and_serial(der_bytes: &[u8]) -> Result<(x509_cert::name::Name, Vec<u8>), PkiError> {
    let i = IssuerAndSerialRaw::from_ber(der_bytes)?;
    Ok((i.issuer, i.serial_number.as_bytes().to_vec()))
}

pub fn parse_issuer_and_subject(der_bytes: &[u8]) -> Result<IssuerAndSubject, PkiError> {
    Ok(IssuerAndSubject::from_ber(der_bytes)?)
}
