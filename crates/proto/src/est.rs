//! EST (RFC 7030) wire pieces both ends share: the CSR attributes a server publishes for a
//! template (`/csrattrs`, section 4.5, with RFC 9908's reading of the attributes) and the base64
//! bodies every EST message travels in (section 4: `Content-Transfer-Encoding: base64`).
use const_oid::ObjectIdentifier;
use der::asn1::{Any, SetOfVec};
use der::{Decode, Encode, Tag, Tagged};
use x509_cert::attr::Attribute;
use x509_cert::ext::pkix::ExtendedKeyUsage;
use x509_cert::ext::{Extension, Extensions};

const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EXTENSION_REQUEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.14");
const EXT_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
pub const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
pub const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
pub const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
pub const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
pub const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
/// A CsrAttrs is a few hundred bytes; a server sending more is not describing a template.
const MAX_CSR_ATTRS: usize = 16 * 1024;

/// The key a server asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRequest {
    /// id-ecPublicKey with this named curve.
    Ec(ObjectIdentifier),
    /// rsaEncryption with this modulus size (RFC 9908 section 3.3's INTEGER value).
    Rsa(u32),
}

/// What `/csrattrs` says about the request a template wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CsrAttrs {
    pub key: Option<KeyRequest>,
    /// The signature algorithm asked for (a bare OID among the attributes).
    pub signature: Option<ObjectIdentifier>,
    /// Extended key usages the issued certificate will carry (an extensionRequest holding an
    /// extKeyUsage extension, RFC 9908 section 3.2).
    pub ekus: Vec<ObjectIdentifier>,
}

/// `CsrAttrs ::= SEQUENCE SIZE (0..MAX) OF AttrOrOID`.
pub fn encode_csr_attrs(attrs: &CsrAttrs) -> Result<Vec<u8>, der::Error> {
    let mut items: Vec<Any> = Vec::new();
    match &attrs.key {
        Some(KeyRequest::Ec(curve)) => items.push(attribute(EC_PUBLIC_KEY, Any::encode_from(curve)?)?),
        Some(KeyRequest::Rsa(bits)) => items.push(attribute(RSA_ENCRYPTION, Any::encode_from(bits)?)?),
        None => {}
    }
    if let Some(signature) = &attrs.signature {
        items.push(Any::encode_from(signature)?);
    }
    if !attrs.ekus.is_empty() {
        let eku = ExtendedKeyUsage(attrs.ekus.clone());
        let extension = Extension {
            extn_id: EXT_KEY_USAGE,
            critical: false,
            extn_value: der::asn1::OctetString::new(eku.to_der()?)?,
        };
        let extensions: Extensions = vec![extension];
        items.push(attribute(EXTENSION_REQUEST, Any::encode_from(&extensions)?)?);
    }
    items.to_der()
}

fn attribute(oid: ObjectIdentifier, value: Any) -> Result<Any, der::Error> {
    let mut values = SetOfVec::new();
    values.insert(value)?;
    Any::encode_from(&Attribute { oid, values })
}

/// Reads a CsrAttrs. Items this client has no use for (a challengePassword request, RFC 7030's
/// bare OIDs inside an extensionRequest) are skipped, as section 4.5.2 lets a client do; a body
/// that is not a CsrAttrs at all is refused.
pub fn decode_csr_attrs(der_bytes: &[u8]) -> Result<CsrAttrs, crate::ProtoError> {
    if der_bytes.len() > MAX_CSR_ATTRS {
        return Err(crate::ProtoError::TooLarge);
    }
    let bad = |_| crate::ProtoError::Invalid("CsrAttrs");
    let items = Vec::<Any>::from_der(der_bytes).map_err(bad)?;
    let mut attrs = CsrAttrs::default();
    for item in items {
        match item.tag() {
            Tag::ObjectIdentifier => {
                let oid: ObjectIdentifier = item.decode_as().map_err(bad)?;
                if [ECDSA_SHA256, ECDSA_SHA384, SHA256_WITH_RSA].contains(&oid) {
                    attrs.signature = Some(oid);
                }
                // RFC 7030's bare key OIDs: the family without its size (an attribute, read
                // below, says more and wins). RSA then means the common minimum, 2048 bits.
                match oid {
                    RSA_ENCRYPTION if attrs.key.is_none() => attrs.key = Some(KeyRequest::Rsa(2048)),
                    EC_PUBLIC_KEY if attrs.key.is_none() => attrs.key = Some(KeyRequest::Ec(P256)),
                    _ => {}
                }
            }
            Tag::Sequence => {
                let a: Attribute = item.decode_as().map_err(bad)?;
                let Some(value) = a.values.iter().next() else { continue };
                match a.oid {
                    EC_PUBLIC_KEY => {
                        if let Ok(curve) = value.decode_as::<ObjectIdentifier>() {
                            attrs.key = Some(KeyRequest::Ec(curve));
                        }
                    }
                    RSA_ENCRYPTION => {
                        if let Ok(bits) = value.decode_as::<u32>() {
                            attrs.key = Some(KeyRequest::Rsa(bits));
                        }
                    }
                    EXTENSION_REQUEST => {
                        // RFC 9908's form; RFC 7030's example (a set of OIDs) says nothing usable.
                        let Ok(extensions) = value.decode_as::<Extensions>() else { continue };
                        for e in extensions.iter().filter(|e| e.extn_id == EXT_KEY_USAGE) {
                            let eku = ExtendedKeyUsage::from_der(e.extn_value.as_bytes()).map_err(bad)?;
                            attrs.ekus.extend(eku.0);
                        }
                    }
                    _ => {}
                }
            }
            _ => return Err(crate::ProtoError::Invalid("CsrAttrs item")),
        }
    }
    Ok(attrs)
}

/// An EST body: base64 of DER, in lines or not (section 4).
pub fn decode_body(body: &[u8], what: &'static str) -> Result<Vec<u8>, crate::ProtoError> {
    let text = std::str::from_utf8(body).map_err(|_| crate::ProtoError::Base64(what))?;
    crate::b64::decode(text, what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn rfc_7030_example_reads_as_a_p384_key_signed_with_sha384() {
        // RFC 7030 section 4.5.2's example: challengePassword, id-ecPublicKey with secp384r1,
        // an extensionRequest in the pre-RFC 9908 form (a bare OID), ecdsa-with-SHA384.
        let body = "MEEGCSqGSIb3DQEJBzASBgcqhkjOPQIBMQcGBSuBBAAiMBYGCSqGSIb3DQEJDjEJ\r\n\
                    BgcrBgEBAQEWBggqhkjOPQQDAw==\r\n";
        let der = decode_body(body.as_bytes(), "csrattrs").unwrap();
        let attrs = decode_csr_attrs(&der).unwrap();
        assert_eq!(attrs, CsrAttrs { key: Some(KeyRequest::Ec(P384)), signature: Some(ECDSA_SHA384), ekus: vec![] });
    }

    #[test]
    fn what_is_encoded_reads_back() {
        let client_auth = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");
        for attrs in [
            CsrAttrs { key: Some(KeyRequest::Ec(P256)), signature: Some(ECDSA_SHA256), ekus: vec![client_auth] },
            CsrAttrs { key: Some(KeyRequest::Rsa(3072)), signature: Some(SHA256_WITH_RSA), ekus: vec![] },
            CsrAttrs::default(),
        ] {
            assert_eq!(decode_csr_attrs(&encode_csr_attrs(&attrs).unwrap()).unwrap(), attrs);
        }
    }

    #[test]
    fn a_bare_key_oid_names_the_family() {
        let bare_rsa = vec![Any::encode_from(&RSA_ENCRYPTION).unwrap(), Any::encode_from(&SHA256_WITH_RSA).unwrap()];
        let attrs = decode_csr_attrs(&bare_rsa.to_der().unwrap()).unwrap();
        assert_eq!(attrs.key, Some(KeyRequest::Rsa(2048)));
        // The attribute with the size wins over a bare OID before or after it.
        let mut sized = encode_csr_attrs(&CsrAttrs { key: Some(KeyRequest::Rsa(4096)), ..Default::default() }).unwrap();
        let mut items = Vec::<Any>::from_der(&sized).unwrap();
        items.push(Any::encode_from(&RSA_ENCRYPTION).unwrap());
        sized = items.to_der().unwrap();
        assert_eq!(decode_csr_attrs(&sized).unwrap().key, Some(KeyRequest::Rsa(4096)));
    }

    #[test]
    fn what_is_not_a_csrattrs_is_refused() {
        let not_der = base64::engine::general_purpose::STANDARD.encode(b"hello");
        let der = decode_body(not_der.as_bytes(), "csrattrs").unwrap();
        assert_eq!(decode_csr_attrs(&der), Err(crate::ProtoError::Invalid("CsrAttrs")));
        assert_eq!(decode_body(b"%%%", "csrattrs"), Err(crate::ProtoError::Base64("csrattrs")));
        // A SEQUENCE OF something else (an INTEGER).
        assert_eq!(decode_csr_attrs(&[0x30, 0x03, 0x02, 0x01, 0x05]), Err(crate::ProtoError::Invalid("CsrAttrs item")));
        assert_eq!(decode_csr_attrs(&vec![0x30; MAX_CSR_ATTRS + 1]), Err(crate::ProtoError::TooLarge));
        // Truncated.
        let good = encode_csr_attrs(&CsrAttrs { key: Some(KeyRequest::Ec(P256)), ..Default::default() }).unwrap();
        assert!(decode_csr_attrs(&good[..good.len() - 1]).is_err());
    }
}
