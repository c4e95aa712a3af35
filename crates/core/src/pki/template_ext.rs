//! The Microsoft template extensions: 1.3.6.1.4.1.311.21.7 (template OID + versions) and
//! 1.3.6.1.4.1.311.20.2 (template name as BMPString).
use crate::model::TemplateRef;
use const_oid::ObjectIdentifier;
use der::asn1::{BmpString, Utf8StringRef};
use der::{Decode, Encode, Sequence};

#[derive(Sequence)]
struct CertificateTemplate {
    template_id: ObjectIdentifier,
    #[asn1(optional = "true")]
    major: Option<u32>,
    #[asn1(optional = "true")]
    minor: Option<u32>,
}

/// DER of the 1.3.6.1.4.1.311.21.7 extension value.
pub fn encode_template(t: &TemplateRef) -> Result<Vec<u8>, der::Error> {
    CertificateTemplate {
        template_id: ObjectIdentifier::new(&t.oid).map_err(|_| der::Tag::ObjectIdentifier.value_error())?,
        major: Some(t.major),
        minor: Some(t.minor),
    }
    .to_der()
}

pub fn decode_template(value: &[u8]) -> Result<TemplateRef, der::Error> {
    let t = CertificateTemplate::from_der(value)?;
    Ok(TemplateRef { oid: t.template_id.to_string(), major: t.major.unwrap_or(0), minor: t.minor.unwrap_or(0) })
}

/// DER of the 1.3.6.1.4.1.311.20.2 extension value (a bare BMPString, as Windows writes it).
pub fn encode_template_name(name: &str) -> Result<Vec<u8>, der::Error> {
    BmpString::from_utf8(name)?.to_der()
}

/// Accepts the BMPString Windows writes, a UTF8String, and the `SEQ { UTF8String }` MS-WCCE shows.
pub fn decode_template_name(value: &[u8]) -> Option<String> {
    if let Ok(s) = BmpString::from_der(value) {
        return Some(s.to_string());
    }
    if let Ok(s) = Utf8StringRef::from_der(value) {
        return Some(s.as_str().to_string());
    }
    if let Ok(seq) = Vec::<Utf8StringRef<'_>>::from_der(value) {
        return seq.first().map(|s| s.as_str().to_string());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_round_trip() {
        let t = TemplateRef { oid: "1.3.6.1.4.1.311.21.8.1.2.3".into(), major: 100, minor: 4 };
        assert_eq!(decode_template(&encode_template(&t).unwrap()).unwrap(), t);
    }

    #[test]
    fn name_as_windows_writes_it() {
        // From the MS-WSTEP 4.1.1.1 sample request: BMPString "User".
        let v = [0x1e, 0x08, 0x00, 0x55, 0x00, 0x73, 0x00, 0x65, 0x00, 0x72];
        assert_eq!(decode_template_name(&v).as_deref(), Some("User"));
        assert_eq!(encode_template_name("User").unwrap(), v);
        assert_eq!(decode_template_name(&[0x0c, 0x02, b'W', b'S']).as_deref(), Some("WS"));
        assert_eq!(decode_template_name(&[0x02, 0x01, 0x00]), None);
    }
}
