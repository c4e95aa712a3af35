//! CMC Full PKI Responses (RFC 5272) as MS-WSTEP carries them (with its errata): the
//! PKIResponse content a CA signs. What ADCS sends for an issued certificate (MS-WSTEP
//! 4.1.1.2): a status control "success" for body part 1 with the text "Issued", and Microsoft's
//! add-attributes control naming the issued certificate's SHA-1 hash.
use crate::oids;
use der::asn1::{Any, OctetString, SetOfVec, Utf8StringRef};
use der::{Encode, Sequence};
use x509_cert::attr::Attribute;

/// TaggedAttribute ::= SEQUENCE { bodyPartID, attrType, attrValues SET OF AttributeValue }
#[derive(Sequence)]
struct TaggedAttribute {
    body_part_id: u32,
    attr_type: der::asn1::ObjectIdentifier,
    attr_values: SetOfVec<Any>,
}

/// CMCStatusInfo ::= SEQUENCE { cMCStatus, bodyList SEQUENCE OF BodyPartID, statusString
/// UTF8String OPTIONAL, otherInfo CHOICE OPTIONAL }
#[derive(Sequence)]
struct StatusInfo<'a> {
    status: u32,
    body_list: Vec<u32>,
    status_string: Option<Utf8StringRef<'a>>,
}

/// CMCAddAttributesInfo ::= SEQUENCE { dataReference BodyPartID, certReferences SEQUENCE OF
/// BodyPartID, attributes SET OF Attribute }
#[derive(Sequence)]
struct AddAttributes {
    data_reference: u32,
    cert_references: Vec<u32>,
    attributes: SetOfVec<Attribute>,
}

/// PKIResponse ::= SEQUENCE { controlSequence, cmsSequence, otherMsgSequence }
#[derive(Sequence)]
struct PkiResponse {
    controls: Vec<TaggedAttribute>,
    cms: Vec<Any>,
    other: Vec<Any>,
}

/// CMCStatus success.
const SUCCESS: u32 = 0;

fn set_of(value: &impl Encode) -> der::Result<SetOfVec<Any>> {
    let mut set = SetOfVec::new();
    set.insert(der::Decode::from_der(&value.to_der()?)?)?;
    Ok(set)
}

/// The PKIResponse content for an issued certificate (request body part 1).
pub fn issued_response(issued_cert_sha1: &[u8]) -> der::Result<Vec<u8>> {
    let status = StatusInfo { status: SUCCESS, body_list: vec![1], status_string: Some(Utf8StringRef::new("Issued")?) };
    let mut attributes = SetOfVec::new();
    attributes
        .insert(Attribute { oid: oids::MS_ISSUED_CERT_HASH, values: set_of(&OctetString::new(issued_cert_sha1)?)? })?;
    let add = AddAttributes { data_reference: 0, cert_references: vec![1], attributes };
    PkiResponse {
        controls: vec![
            TaggedAttribute { body_part_id: 1, attr_type: oids::CMC_STATUS_INFO, attr_values: set_of(&status)? },
            TaggedAttribute { body_part_id: 2, attr_type: oids::MS_CMC_ADD_ATTRIBUTES, attr_values: set_of(&add)? },
        ],
        cms: vec![],
        other: vec![],
    }
    .to_der()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    /// The PKIResponse of the MS-WSTEP 4.1.1.2 sample response (ADCS), byte for byte.
    #[test]
    fn matches_the_ms_wstep_sample() {
        let sample = "306D3067302102010106082B060105050707013112301002010030030201010C064973737565643042020102060A2B\
                      0601040182370A0A013131302F02010030030201013125302306092B06010401823715113116041458ACD78E7E61\
                      B11AD73B2C6B41BADCA9100FAF8E30003000";
        let hash = hex::decode("58ACD78E7E61B11AD73B2C6B41BADCA9100FAF8E").unwrap();
        assert_eq!(hex::encode_upper(super::issued_response(&hash).unwrap()), sample.replace(char::is_whitespace, ""));
    }
}
