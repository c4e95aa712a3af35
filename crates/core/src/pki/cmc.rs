//! CMC Full PKI Responses (RFC 5272) as MS-WSTEP carries them (with its errata): the
//! PKIResponse content a CA signs. What ADCS sends for an issued certificate (MS-WSTEP
//! 4.1.1.2): a status control "success" for body part 1 with the text "Issued", and Microsoft's
//! add-attributes control naming the issued certificate's SHA-1 hash; for a request held for
//! approval, status "pending" with the request's pendInfo.
use crate::oids;
use crate::UnixTime;
use der::asn1::{Any, GeneralizedTime, OctetString, SetOfVec, Utf8StringRef};
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
    /// The `pendInfo` arm of `otherInfo` (the other arm, failInfo, is an INTEGER).
    pend_info: Option<PendInfo>,
}

/// PendInfo ::= SEQUENCE { pendToken OCTET STRING, pendTime GeneralizedTime }
#[derive(Sequence)]
struct PendInfo {
    pend_token: OctetString,
    pend_time: GeneralizedTime,
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
/// CMCStatus pending: "the requester must poll back" (RFC 5272 3.2.1.2.1, CMC_STATUS_PENDING).
const PENDING: u32 = 3;

fn set_of(value: &impl Encode) -> der::Result<SetOfVec<Any>> {
    let mut set = SetOfVec::new();
    set.insert(der::Decode::from_der(&value.to_der()?)?)?;
    Ok(set)
}

/// The PKIResponse content for an issued certificate (request body part 1).
pub fn issued_response(issued_cert_sha1: &[u8]) -> der::Result<Vec<u8>> {
    let status = StatusInfo {
        status: SUCCESS,
        body_list: vec![1],
        status_string: Some(Utf8StringRef::new("Issued")?),
        pend_info: None,
    };
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

/// The pendToken of a held request: its id as a little-endian 32-bit integer (a Windows
/// RequestId DWORD; MS-WSTEP clients poll with the RSTR's RequestID, which says the same).
pub fn pend_token(request_id: u32) -> [u8; 4] {
    request_id.to_le_bytes()
}

/// The PKIResponse content for a request held for approval (request body part 1): status
/// pending, "Taken Under Submission" (ADCS' disposition text), and pendInfo naming the request
/// and when the server wants to be asked again (RFC 5272 3.2.1.2.1: pendTime is "the suggested
/// time the server wants to be queried").
pub fn pending_response(request_id: u32, poll_at: UnixTime) -> der::Result<Vec<u8>> {
    let secs = u64::try_from(poll_at.0).map_err(|_| der::Error::from(der::ErrorKind::DateTime))?;
    let pend_time = GeneralizedTime::from_unix_duration(std::time::Duration::from_secs(secs))?;
    let status = StatusInfo {
        status: PENDING,
        body_list: vec![1],
        status_string: Some(Utf8StringRef::new("Taken Under Submission")?),
        pend_info: Some(PendInfo { pend_token: OctetString::new(pend_token(request_id))?, pend_time }),
    };
    PkiResponse {
        controls: vec![TaggedAttribute {
            body_part_id: 1,
            attr_type: oids::CMC_STATUS_INFO,
            attr_values: set_of(&status)?,
        }],
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

    /// Written from RFC 5272's ASN.1 by hand, not by the encoder: PKIResponse { controlSequence {
    /// TaggedAttribute { 1, id-cmc-statusInfo, SET { CMCStatusInfo { 3, {1}, "Taken Under
    /// Submission", PendInfo { 07000000, 20261202000000Z } } } } }, {}, {} }.
    #[test]
    fn pending_follows_rfc_5272() {
        let status_string = hex::encode_upper("Taken Under Submission");
        let expected = format!(
            "3052\
             304C\
             304A 020101 06082B06010505070701 313B\
             3039 020103 3003020101 0C16{status_string}\
             3017 0404 07000000 180F 32303236313230323030303030305A\
             3000 3000"
        );
        let at = crate::UnixTime(1_796_169_600); // 2026-12-02T00:00:00Z
        let got = super::pending_response(7, at).unwrap();
        assert_eq!(hex::encode_upper(got), expected.replace(char::is_whitespace, ""));
    }
}
