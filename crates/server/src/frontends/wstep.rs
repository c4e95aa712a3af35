//! MS-WSTEP RequestSecurityToken: issuance, renewal (signed by the current certificate, or
//! ROBO over client TLS) and QueryTokenStatus for pending requests.
use super::soap::{credentials, FrontError};
use super::{AppState, Peer};
use crate::ra::{Credentials, EnrollInput, Issued, Outcome, Purpose, RaError, Window};
use autoenroll_core::pki::cms::is_signed_data;
use autoenroll_core::Refusal;
use autoenroll_proto::soap::Envelope;
use autoenroll_proto::wstep::{self, IssuedResponse, PendingResponse, RequestType};
use autoenroll_proto::ProtoError;

fn issued_response(state: &AppState, issued: Issued, relates_to: Option<&str>) -> Result<String, FrontError> {
    // The collection-level token is a CMC Full PKI Response, as ADCS sends (MS-WSTEP 4.1.1.2);
    // it carries the certificate and the chain like the certs-only PKCS#7 older clients read.
    let chain_pkcs7_der = state.ra.cmc_issued(&issued)?;
    let response = IssuedResponse {
        certificate_der: issued.certificate_der,
        chain_pkcs7_der,
        request_id: u64::try_from(issued.request_id).map_err(RaError::internal)?,
    };
    Ok(response.to_envelope(relates_to))
}

fn pending_response(state: &AppState, request_id: i64, relates_to: Option<&str>) -> Result<String, FrontError> {
    // The collection-level token: a CMC response with status pending, as ADCS sends.
    let cmc_der = state.ra.cmc_pending(request_id)?;
    let request_id = u64::try_from(request_id).map_err(RaError::internal)?;
    Ok(PendingResponse { request_id, reference_uri: state.enrollment_url(), cmc_der }.to_envelope(relates_to))
}

pub async fn request_security_token(state: &AppState, env: &Envelope, peer: &Peer) -> Result<String, FrontError> {
    let rst = wstep::parse_request(&env.body)?;
    let relates_to = env.message_id.as_deref();
    let creds = credentials(&env.token, peer);
    match rst.request_type {
        RequestType::Issue | RequestType::Renew => {}
        RequestType::QueryTokenStatus => {
            let id = rst
                .request_id
                .as_deref()
                .ok_or(ProtoError::Missing("wstep:RequestID"))?
                .parse::<i64>()
                .map_err(|_| ProtoError::Invalid("wstep:RequestID"))?;
            // Only the requester learns the outcome (MS-WSTEP 3.1.4.1.3.2: the same client).
            let device_hint = rst.context_value("DeviceName").or(rst.context_value("MachineName"));
            let principal = state.ra.authenticate_for(&creds, device_hint, Purpose::Identify).await?;
            return outcome_response(state, state.ra.retrieve_for(&principal, id).await?, relates_to);
        }
        RequestType::Ket => {
            return Err(RaError::from(Refusal::UnsupportedRequestType { what: "key archival (KET)" }).into());
        }
    }
    let token = rst.token.as_ref().ok_or(ProtoError::Missing("wsse:BinarySecurityToken"))?;
    let device_hint = rst.context_value("DeviceName").or(rst.context_value("MachineName"));

    // Renewal signed with the current certificate: the signature is the authentication; any
    // other credential on the request must belong to the same device.
    if is_signed_data(&token.der) {
        let caller = match creds {
            Credentials::None => None,
            // Only to name the caller's device: a certificate already renewed (a retry of this
            // very renewal) or a spent token says that as well as a live one.
            other => Some(state.ra.authenticate_for(&other, device_hint, Purpose::Identify).await?),
        };
        let issued = state.ra.renew_signed(&token.der, caller.as_ref(), Window::Autoenrollment).await?;
        return issued_response(state, issued, relates_to);
    }
    // ROBO: RequestType Renew with a plain PKCS#10, authenticated by the TLS client certificate
    // being renewed.
    if rst.request_type == RequestType::Renew {
        let Some(leaf) = peer.0.as_ref().and_then(|c| c.first()) else {
            return Err(RaError::from(Refusal::MissingToken).into());
        };
        let issued = state.ra.renew_over_tls(&token.der, leaf.as_ref(), Window::Autoenrollment).await?;
        return issued_response(state, issued, relates_to);
    }
    // The computer the request is for: what the request context says, else the machine name
    // Windows puts in the request (ClientInformation), else the account's own name. Many
    // machines behind one account are then many devices, each bound to that account.
    let machine = match device_hint {
        Some(_) => None,
        None => autoenroll_core::pki::csr::client_machine_name(&token.der),
    };
    let principal = state.ra.authenticate(&creds, device_hint.or(machine.as_deref())).await?;
    let input = EnrollInput {
        principal: &principal,
        csr_der: &token.der,
        template_name: rst.context_value("CertificateTemplate"),
    };
    outcome_response(state, state.ra.enroll(input).await?, relates_to)
}

fn outcome_response(state: &AppState, outcome: Outcome, relates_to: Option<&str>) -> Result<String, FrontError> {
    match outcome {
        Outcome::Issued(i) => issued_response(state, i, relates_to),
        Outcome::Pending { request_id } => pending_response(state, request_id, relates_to),
    }
}
