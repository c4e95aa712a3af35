//! OCSP (RFC 6960) messages: the request a relying party sends and the pieces of the basic
//! response; the CA crate signs the response data. Types follow the RFC's ASN.1 module
//! (explicit tags), decoded and encoded with `der`.
use super::PkiError;
use const_oid::ObjectIdentifier as Oid;
use der::asn1::{BitString, GeneralizedTime, Null, OctetString};
use der::{Decode, Sequence};
use spki::AlgorithmIdentifierOwned;
use x509_cert::ext::Extension;
use x509_cert::serial_number::SerialNumber;

pub const MAX_OCSP_REQUEST: usize = 16 * 1024;
pub const ID_PKIX_OCSP_BASIC: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.48.1.1");
pub const ID_PKIX_OCSP_NONCE: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.48.1.2");
pub const SHA1: Oid = Oid::new_unwrap("1.3.14.3.2.26");
pub const SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");

#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct CertId {
    pub hash_algorithm: AlgorithmIdentifierOwned,
    pub issuer_name_hash: OctetString,
    pub issuer_key_hash: OctetString,
    pub serial_number: SerialNumber,
}

#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct Request {
    pub req_cert: CertId,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub single_request_extensions: Option<Vec<Extension>>,
}

#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct TbsRequest {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub version: Option<u8>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    pub requestor_name: Option<der::Any>,
    pub request_list: Vec<Request>,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", optional = "true")]
    pub request_extensions: Option<Vec<Extension>>,
}

#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct OcspRequest {
    pub tbs_request: TbsRequest,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub optional_signature: Option<der::Any>,
}

/// Parses an OCSPRequest (DER), refusing oversized or empty ones.
pub fn parse_request(der_bytes: &[u8]) -> Result<OcspRequest, PkiError> {
    if der_bytes.len() > MAX_OCSP_REQUEST {
        return Err(PkiError::Der("OCSP request too large".into()));
    }
    let r = OcspRequest::from_der(der_bytes)?;
    if r.tbs_request.request_list.is_empty() || r.tbs_request.request_list.len() > 100 {
        return Err(PkiError::Der("an OCSP request asks about 1 to 100 certificates".into()));
    }
    Ok(r)
}

impl OcspRequest {
    pub fn nonce(&self) -> Option<&Extension> {
        self.tbs_request.request_extensions.as_ref()?.iter().find(|e| e.extn_id == ID_PKIX_OCSP_NONCE)
    }
}

#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct RevokedInfo {
    pub revocation_time: GeneralizedTime,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub revocation_reason: Option<x509_cert::ext::pkix::CrlReason>,
}

#[derive(Clone, Debug, Eq, PartialEq, der::Choice)]
pub enum CertStatus {
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT")]
    Good(Null),
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", constructed = "true")]
    Revoked(RevokedInfo),
    #[asn1(context_specific = "2", tag_mode = "IMPLICIT")]
    Unknown(Null),
}

#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct SingleResponse {
    pub cert_id: CertId,
    pub cert_status: CertStatus,
    pub this_update: GeneralizedTime,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub next_update: Option<GeneralizedTime>,
}

/// ResponderID byKey: SHA-1 of the responder's public key bits.
#[derive(Clone, Debug, Eq, PartialEq, der::Choice)]
pub enum ResponderId {
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", constructed = "true")]
    ByKey(OctetString),
}

#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct ResponseData {
    pub responder_id: ResponderId,
    pub produced_at: GeneralizedTime,
    pub responses: Vec<SingleResponse>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    pub response_extensions: Option<Vec<Extension>>,
}

#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct BasicOcspResponse {
    pub tbs_response_data: ResponseData,
    pub signature_algorithm: AlgorithmIdentifierOwned,
    pub signature: BitString,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub certs: Option<Vec<der::Any>>,
}

#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct ResponseBytes {
    pub response_type: Oid,
    pub response: OctetString,
}

#[derive(Clone, Copy, Debug, Eq, PartialEq, der::Enumerated)]
#[repr(u8)]
pub enum ResponseStatus {
    Successful = 0,
    MalformedRequest = 1,
    InternalError = 2,
    TryLater = 3,
    SigRequired = 5,
    Unauthorized = 6,
}

#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct OcspResponse {
    pub response_status: ResponseStatus,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub response_bytes: Option<ResponseBytes>,
}

/// An unsigned error response (malformedRequest, internalError, ...).
pub fn error_response(status: ResponseStatus) -> Result<Vec<u8>, PkiError> {
    Ok(der::Encode::to_der(&OcspResponse { response_status: status, response_bytes: None })?)
}

/// Whether `id` names a certificate issued by `issuer_der` (SHA-1 or SHA-256 CertIDs).
pub fn issued_by(id: &CertId, issuer_der: &[u8]) -> bool {
    let Ok(issuer) = x509_cert::Certificate::from_der(issuer_der) else { return false };
    let tbs = issuer.tbs_certificate();
    let Ok(name) = der::Encode::to_der(tbs.subject()) else { return false };
    let key = tbs.subject_public_key_info().subject_public_key.raw_bytes();
    let alg = match id.hash_algorithm.oid {
        SHA1 => &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        SHA256 => &aws_lc_rs::digest::SHA256,
        _ => return false,
    };
    let eq = |a: &[u8], b: &[u8]| a == b;
    eq(aws_lc_rs::digest::digest(alg, &name).as_ref(), id.issuer_name_hash.as_bytes())
        && eq(aws_lc_rs::digest::digest(alg, key).as_ref(), id.issuer_key_hash.as_bytes())
}
