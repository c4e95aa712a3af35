//! OCSP responses signed by the issuing CA itself (RFC 6960 §2.2: the CA is an authorized
//! responder for its own certificates, no delegated responder certificate needed).
use crate::issuer::Ca;
use crate::CaError;
use autoenroll_core::pki::ocsp::{
    BasicOcspResponse, OcspResponse, ResponderId, ResponseBytes, ResponseData, ResponseStatus, ID_PKIX_OCSP_BASIC,
};
use der::asn1::{BitString, OctetString};
use der::{Decode, Encode};

impl Ca {
    /// The responder ID the issuing CA answers under (its key identifier).
    pub fn ocsp_responder_id(&self) -> Result<ResponderId, CaError> {
        Ok(ResponderId::ByKey(OctetString::new(self.issuing_key_id().to_vec())?))
    }

    /// Signs response data into a successful OCSPResponse (DER).
    pub fn sign_ocsp(&self, data: ResponseData) -> Result<Vec<u8>, CaError> {
        let tbs = data.to_der()?;
        let signature = self.issuing_key.sign(&tbs)?;
        let basic = BasicOcspResponse {
            tbs_response_data: data,
            signature_algorithm: self.issuing_key.signature_algorithm(),
            signature: BitString::from_bytes(&signature)?,
            // The signer travels with the response, so clients find it without being told.
            certs: Some(vec![der::Any::from_der(&self.issuing_der())?]),
        };
        Ok(OcspResponse {
            response_status: ResponseStatus::Successful,
            response_bytes: Some(ResponseBytes {
                response_type: ID_PKIX_OCSP_BASIC,
                response: OctetString::new(basic.to_der()?)?,
            }),
        }
        .to_der()?)
    }
}
