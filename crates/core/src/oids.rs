//! Object identifiers used across the code base, named once.
use const_oid::ObjectIdentifier as Oid;

/// szOID_CERTIFICATE_TEMPLATE: SEQUENCE { templateID OID, major INTEGER, minor INTEGER }.
pub const MS_CERTIFICATE_TEMPLATE: Oid = Oid::new_unwrap("1.3.6.1.4.1.311.21.7");
/// szOID_ENROLL_CERTTYPE_EXTENSION: the template name as a BMPString.
pub const MS_ENROLL_CERTTYPE: Oid = Oid::new_unwrap("1.3.6.1.4.1.311.20.2");
/// szOID_ENROLLMENT_NAME_VALUE_PAIR: SEQUENCE OF { BMPString name, BMPString value }.
pub const MS_ENROLLMENT_NAME_VALUE_PAIR: Oid = Oid::new_unwrap("1.3.6.1.4.1.311.13.2.1");
/// szOID_RENEWAL_CERTIFICATE: the certificate a renewal request replaces (CSR attribute).
pub const MS_RENEWAL_CERTIFICATE: Oid = Oid::new_unwrap("1.3.6.1.4.1.311.13.1");
/// szOID_REQUEST_CLIENT_INFO: { clientId, machine name, user name, process name } (certenroll).
pub const MS_REQUEST_CLIENT_INFO: Oid = Oid::new_unwrap("1.3.6.1.4.1.311.21.20");
/// Legacy Microsoft extension-request attribute (certenroll on old systems).
pub const MS_CERT_EXTENSIONS: Oid = Oid::new_unwrap("1.3.6.1.4.1.311.2.1.14");
/// Arc under which Windows names enterprise templates (ADCS puts forest-specific arcs here).
pub const MS_TEMPLATE_ARC: &str = "1.3.6.1.4.1.311.21.8";

pub const EXTENSION_REQUEST: Oid = Oid::new_unwrap("1.2.840.113549.1.9.14");
pub const CHALLENGE_PASSWORD: Oid = Oid::new_unwrap("1.2.840.113549.1.9.7");

pub const CE_SUBJECT_KEY_IDENTIFIER: Oid = Oid::new_unwrap("2.5.29.14");
pub const CE_KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.15");
pub const CE_SUBJECT_ALT_NAME: Oid = Oid::new_unwrap("2.5.29.17");
pub const CE_BASIC_CONSTRAINTS: Oid = Oid::new_unwrap("2.5.29.19");
pub const CE_AUTHORITY_KEY_IDENTIFIER: Oid = Oid::new_unwrap("2.5.29.35");
pub const CE_EXT_KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.37");

pub const KP_SERVER_AUTH: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.1");
pub const KP_CLIENT_AUTH: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.3.2");

pub const AT_COMMON_NAME: Oid = Oid::new_unwrap("2.5.4.3");

pub const EC_PUBLIC_KEY: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
pub const SECP256R1: Oid = Oid::new_unwrap("1.2.840.10045.3.1.7");
pub const SECP384R1: Oid = Oid::new_unwrap("1.3.132.0.34");
pub const RSA_ENCRYPTION: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
pub const ED25519: Oid = Oid::new_unwrap("1.3.101.112");

pub const ECDSA_WITH_SHA256: Oid = Oid::new_unwrap("1.2.840.10045.4.3.2");
pub const ECDSA_WITH_SHA384: Oid = Oid::new_unwrap("1.2.840.10045.4.3.3");
pub const ECDSA_WITH_SHA512: Oid = Oid::new_unwrap("1.2.840.10045.4.3.4");
pub const SHA1_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.5");
pub const SHA256_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.11");
pub const SHA384_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.12");
pub const SHA512_WITH_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.13");
pub const RSASSA_PSS: Oid = Oid::new_unwrap("1.2.840.113549.1.1.10");

pub const CMS_CONTENT_TYPE: Oid = Oid::new_unwrap("1.2.840.113549.1.9.3");
pub const CMS_MESSAGE_DIGEST: Oid = Oid::new_unwrap("1.2.840.113549.1.9.4");
pub const CMS_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.1");
pub const CMS_SIGNED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.2");
/// id-cct-PKIResponse (RFC 5272 3.2): the content type of a CMC Full PKI Response.
pub const CMC_PKI_RESPONSE: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.12.3");
/// id-cmc-statusInfo (RFC 5272 6.1.1).
pub const CMC_STATUS_INFO: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.7.1");
/// szOID_CMC_ADD_ATTRIBUTES (MS-WCCE 2.2.2.8): attributes for the certificate it references.
pub const MS_CMC_ADD_ATTRIBUTES: Oid = Oid::new_unwrap("1.3.6.1.4.1.311.10.10.1");
/// szOID_ISSUED_CERT_HASH: the SHA-1 of the issued certificate.
pub const MS_ISSUED_CERT_HASH: Oid = Oid::new_unwrap("1.3.6.1.4.1.311.21.17");
pub const SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");
pub const CE_CRL_NUMBER: Oid = Oid::new_unwrap("2.5.29.20");
pub const CE_CRL_REASON: Oid = Oid::new_unwrap("2.5.29.21");
pub const CE_CRL_DISTRIBUTION_POINTS: Oid = Oid::new_unwrap("2.5.29.31");
pub const PE_AUTHORITY_INFO_ACCESS: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.1.1");
pub const AD_CA_ISSUERS: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.48.2");
pub const AD_OCSP: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.48.1");
