//! MS-WSTEP RequestSecurityToken: issuance of a PKCS#10.
use super::soap::{credentials, FrontError};
use super::{AppState, PeerCerts};
use crate::ra::{EnrollInput, RaError};
use autoenroll_core::Kind;
use autoenroll_proto::soap::Envelope;
use autoenroll_proto::wstep::{self, IssuedResponse, RequestType};
use autoenroll_proto::{pkcs7, ProtoError};

/// `SEQUENCE { OID 1.2.840.113549.1.7.2 ...` — a CMS SignedData rather than a bare PKCS#10.
fn is_cms_signed_data(der: &[u8]) -> bool {
    const SIGNED_DATA_OID: [u8; 11] = [0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
    der.windows(SIGNED_DATA_OID.len()).take(8).any(|w| w == SIGNED_DATA_OID)
}

pub async fn request_security_token(state: &AppState, env: &Envelope, peer: &PeerCerts) -> Result<String, FrontError> {
    let rst = wstep::parse_request(&env.body)?;
    match rst.request_type {
        RequestType::Issue => {}
        RequestType::Renew | RequestType::QueryTokenStatus | RequestType::Ket => {
            return Err(RaError::new(
                Kind::BadRequest,
                "UnsupportedRequestType",
                format!("request type {:?} is not supported by this server yet", rst.request_type),
            )
            .into());
        }
    }
    let token = rst.token.as_ref().ok_or(ProtoError::Missing("wsse:BinarySecurityToken"))?;
    if is_cms_signed_data(&token.der) {
        return Err(RaError::new(
            Kind::BadRequest,
            "UnsupportedRequestType",
            "renewal requests signed with the current certificate are not supported by this server yet",
        )
        .into());
    }
    let device_hint = rst.context_value("DeviceName").or(rst.context_value("MachineName"));
    let principal = state.ra.authenticate(&credentials(&env.token, peer), device_hint).await?;
    let issued = state
        .ra
        .enroll(EnrollInput {
            principal: &principal,
            csr_der: &token.der,
            template_name: rst.context_value("CertificateTemplate"),
        })
        .await?;
    let mut chain: Vec<&[u8]> = vec![&issued.certificate_der];
    chain.extend(issued.chain.iter().map(Vec::as_slice));
    let chain_pkcs7_der = pkcs7::certs_only(&chain).map_err(RaError::internal)?;
    let response = IssuedResponse {
        certificate_der: issued.certificate_der,
        chain_pkcs7_der,
        request_id: u64::try_from(issued.request_id).map_err(RaError::internal)?,
    };
    Ok(response.to_envelope(env.message_id.as_deref()))
}
