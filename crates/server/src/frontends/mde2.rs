//! Windows MDM enrollment (MS-MDE2): discovery, the MDM-flavoured policy, enrollment answered
//! with a wap-provisioningdoc, ROBO renewal over client TLS, and MDM fault codes.
use super::soap::{credentials, proto_code, read_envelope, FrontError};
use super::xcep::{get_policies, Flavour};
use super::{AppState, Peer};
use crate::ra::{Credentials, Issued, Outcome, RaError, Window};
use autoenroll_core::pki::cms::is_signed_data;
use autoenroll_core::{Refusal, RefusalCode, Thumbprint, UnixTime};
use autoenroll_proto::mde2::{self, DiscoverResponse, Management, MdmFault, ProvisioningDoc, RenewParams};
use autoenroll_proto::soap::Envelope;
use autoenroll_proto::wstep::{self, RequestType};
use autoenroll_proto::{ns, ProtoError};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;

pub const DISCOVERY_PATH: &str = "/EnrollmentServer/Discovery.svc";
pub const POLICY_PATH: &str = "/EnrollmentServer/Policy.svc";
pub const ENROLLMENT_PATH: &str = "/EnrollmentServer/Enrollment.svc";

/// Windows probes the discovery URL with a GET before POSTing Discover.
pub async fn discovery_probe() -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], "").into_response()
}

/// MS-MDE2 fault subcodes (2.2.10) and DeviceEnrollmentServiceError error types, exactly the
/// specification's values.
const MESSAGE_FORMAT: &str = "s:MessageFormat";
const AUTHENTICATION: &str = "s:Authentication";
const AUTHORIZATION: &str = "s:Authorization";
const CERTIFICATE_REQUEST: &str = "s:CertificateRequest";
const ENROLLMENT_SERVER: &str = "s:EnrollmentServer";
const INTERNAL_SERVICE_FAULT: &str = "a:InternalServiceFault";
const INVALID_SECURITY: &str = "a:InvalidSecurity";
const NOT_SUPPORTED: &str = "NotSupported";
const DEVICE_NOT_SUPPORTED: &str = "DeviceNotSupported";
const NOT_ELIGIBLE_TO_RENEW: &str = "NotEligibleToRenew";
const INVALID_ENROLLMENT_DATA: &str = "InvalidEnrollmentData";
const CUSTOM_SERVER_ERROR: &str = "CustomServerError";

/// (subcode, error type) for each refusal; one exhaustive match.
pub fn mdm_error(code: RefusalCode) -> (&'static str, &'static str) {
    use RefusalCode as C;
    match code {
        C::MissingToken => (INVALID_SECURITY, CUSTOM_SERVER_ERROR),
        C::WrongCredentials
        | C::TooManyAttempts
        | C::TokenUsed
        | C::TokenExpired
        | C::UnknownClientCertificate
        | C::ClientCertificateNotValid
        | C::ClientCertificateExpired
        | C::ChallengeMissing
        | C::ChallengeInvalid
        | C::ChallengeExpired
        | C::ChallengeUsed
        | C::TokenNotAccepted => (AUTHENTICATION, CUSTOM_SERVER_ERROR),
        // A renewal the device cannot make with what it holds: Windows stops retrying ROBO.
        C::BadRenewalSignature
        | C::ForeignCertificate
        | C::UnknownCertificate
        | C::CertificateExpired
        | C::CertificateRevoked
        | C::DeviceMismatch
        | C::RenewalCertificateMismatch
        | C::AlreadyRenewed
        | C::TemplateNotAllowed
        | C::OutsideRenewalWindow => (AUTHORIZATION, NOT_ELIGIBLE_TO_RENEW),
        C::DeviceBlocked | C::DeviceNotEnrolled | C::DeviceNotAllowed | C::DeviceBound | C::DeviceNameTaken => {
            (AUTHORIZATION, DEVICE_NOT_SUPPORTED)
        }
        C::NotPermitted
        | C::UnknownTemplate
        | C::TemplateMisconfigured
        | C::TemplateNotAssigned
        | C::RequestDenied
        | C::MdmApprovalNeedsToken
        | C::UnknownRequest
        | C::UnknownTransaction
        | C::NoSuchCertificate
        | C::UnknownDevice => (AUTHORIZATION, NOT_SUPPORTED),
        C::SameKeyNotAllowed
        | C::BadCsr
        | C::BadCsrSignature
        | C::UnsupportedAlgorithm
        | C::KeyTypeNotAllowed
        | C::KeyTooWeak
        | C::SubjectRequired
        | C::BadDeviceName
        | C::SubjectMismatch
        | C::SubjectAltNameMismatch
        | C::KeyLengthMismatch
        | C::EkuMismatch
        | C::NameNotAllowed
        | C::ServerNameReserved
        | C::WildcardNotAllowed
        | C::CommonNameTooLong => (CERTIFICATE_REQUEST, INVALID_ENROLLMENT_DATA),
        C::BadRenewalRequest
        | C::BadCertificate
        | C::BadMessageCheck
        | C::UnsupportedCipher
        | C::UnsupportedDigest
        | C::SignerKeyNotRsa
        | C::BadSignerCertificate
        | C::NotARequest
        | C::BadMessageContent
        | C::UnknownAction
        | C::UnsupportedRequestType
        | C::BadJson
        | C::BadParameter
        | C::BadNonce
        | C::BadJws
        | C::BadSignatureAlgorithm
        | C::AcmeAccountUnknown
        | C::ExternalAccountRequired
        | C::UnsupportedIdentifier
        | C::UnknownAcmeResource
        | C::OrderNotReady
        | C::ChallengeFailed
        | C::ReplacesRefused
        | C::BadRevocationReason
        | C::TooLarge
        | C::InvalidTemplate
        | C::InvalidAccount
        | C::InvalidToken
        | C::InvalidChallenge
        | C::WeakChallenge
        | C::InvalidReason
        | C::BadSubject => (MESSAGE_FORMAT, INVALID_ENROLLMENT_DATA),
        C::RenewalInProgress | C::ServerBusy | C::NotPending | C::Duplicate | C::DeviceHasHistory => {
            (ENROLLMENT_SERVER, CUSTOM_SERVER_ERROR)
        }
    }
}

/// The one mapping from errors to MS-MDE2 faults.
pub fn to_mdm_fault(e: &FrontError) -> MdmFault {
    let trace_id = hex::encode(crate::ra::secrets::random_bytes::<8>());
    let ((subcode, error_type), code, reason) = match e {
        FrontError::Proto(p) => ((MESSAGE_FORMAT, INVALID_ENROLLMENT_DATA), proto_code(p), p.to_string()),
        FrontError::Pending(id) => {
            ((CERTIFICATE_REQUEST, CUSTOM_SERVER_ERROR), "Pending", format!("request {id} awaits approval"))
        }
        FrontError::Ra(r) => {
            let mapped = r.refusal_code().map_or((INTERNAL_SERVICE_FAULT, CUSTOM_SERVER_ERROR), mdm_error);
            (mapped, r.code(), r.detail())
        }
    };
    MdmFault { subcode: subcode.into(), reason: format!("{reason} ({code})"), error_type: error_type.into(), trace_id }
}

fn mdm_fault_response(e: &FrontError, relates_to: Option<&str>) -> Response {
    if let FrontError::Ra(r) = e {
        tracing::info!(code = r.code(), kind = r.kind().as_str(), "MDM request refused");
        crate::metrics::refused(r);
    }
    let body = mde2::fault(&to_mdm_fault(e), relates_to);
    (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "application/soap+xml; charset=utf-8")], body)
        .into_response()
}

fn respond(result: Result<String, FrontError>, relates_to: Option<&str>) -> Response {
    match result {
        Ok(body) => super::soap::ok_response(body),
        Err(e) => mdm_fault_response(&e, relates_to),
    }
}

pub async fn discovery(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    mdm_soap(headers, body, ns::ACTION_DISCOVER, |env| async move {
        let req = mde2::parse_discover(&env.body)?;
        // OnPremise (UsernameToken) when the device offers it; Federated (a bearer token from
        // `autoenroll server token create`) otherwise.
        let federated =
            !req.auth_policies.iter().any(|p| p == "OnPremise") && req.auth_policies.iter().any(|p| p == "Federated");
        let version = match req.request_version.as_deref() {
            Some(v @ ("3.0" | "4.0" | "5.0")) => v.to_string(),
            _ => "4.0".to_string(),
        };
        Ok(DiscoverResponse {
            auth_policy: if federated { "Federated" } else { "OnPremise" }.into(),
            enrollment_version: version,
            policy_url: format!("{}{POLICY_PATH}", state.base_url),
            enrollment_url: format!("{}{ENROLLMENT_PATH}", state.base_url),
            authentication_url: federated.then(|| format!("{}/EnrollmentServer/Authenticate", state.base_url)),
        }
        .to_envelope(env.message_id.as_deref()))
    })
    .await
}

/// Reads the envelope, checks the action, runs `f`, and answers with the result or an MDM fault.
async fn mdm_soap<F, Fut>(headers: HeaderMap, body: Body, action: &str, f: F) -> Response
where
    F: FnOnce(Envelope) -> Fut,
    Fut: std::future::Future<Output = Result<String, FrontError>>,
{
    let env = match read_envelope(&headers, body).await {
        Ok(env) => env,
        Err(e) => return mdm_fault_response(&e, None),
    };
    let relates_to = env.message_id.clone();
    let result = if env.action == action {
        f(env).await
    } else {
        Err(RaError::from(Refusal::UnknownAction { action: env.action.clone() }).into())
    };
    respond(result, relates_to.as_deref())
}

pub async fn policy(
    State(state): State<AppState>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let peer = peer.map(|Extension(p)| p).unwrap_or_default();
    mdm_soap(headers, body, ns::ACTION_GET_POLICIES, |env| async move {
        get_policies(&state, &env, &peer, Flavour::Mdm).await
    })
    .await
}

pub async fn enrollment(
    State(state): State<AppState>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let peer = peer.map(|Extension(p)| p).unwrap_or_default();
    mdm_soap(headers, body, ns::ACTION_WSTEP, |env| async move { enroll_or_renew(&state, &env, &peer).await }).await
}

/// The device identity: the MDM DeviceID, else the device name it reports.
fn device_id(rst: &wstep::RequestSecurityToken) -> Option<&str> {
    rst.context_value("DeviceID").or(rst.context_value("DeviceName")).filter(|v| !v.is_empty())
}

async fn enroll_or_renew(state: &AppState, env: &Envelope, peer: &Peer) -> Result<String, FrontError> {
    let rst = wstep::parse_request(&env.body)?;
    let token = rst.token.as_ref().ok_or(ProtoError::Missing("wsse:BinarySecurityToken"))?;
    let client_cert = peer.0.as_ref().and_then(|c| c.first()).map(|c| c.as_ref().to_vec());
    let (issued, renewal) = match rst.request_type {
        RequestType::Issue => {
            let principal = state.ra.authenticate(&credentials(&env.token, peer), device_id(&rst)).await?;
            match state.ra.mdm_enroll(&principal, &token.der, &rst.context).await? {
                Outcome::Issued(issued) => (issued, false),
                // MS-MDE2 has no "pending": the device is told the request is waiting and retries.
                Outcome::Pending { request_id } => {
                    return Err(FrontError::Pending(request_id));
                }
            }
        }
        RequestType::Renew => {
            // ROBO: the PKCS#7 (or a plain PKCS#10) travels on a TLS connection authenticated by
            // the certificate it renews; the manual variant re-sends the user's credentials.
            let caller = match credentials(&env.token, peer) {
                Credentials::None => None,
                // The TLS certificate is the one being renewed: the renewal checks judge it (a
                // revoked or unknown one is "not eligible to renew", not a login failure).
                c @ Credentials::ClientCertificate(_) => state.ra.authenticate(&c, None).await.ok(),
                c => Some(state.ra.authenticate(&c, device_id(&rst)).await?),
            };
            let issued = if is_signed_data(&token.der) {
                state.ra.renew_signed(&token.der, caller.as_ref(), Window::Mdm).await?
            } else {
                let leaf = client_cert.as_deref().ok_or_else(|| RaError::from(Refusal::MissingToken))?;
                state.ra.renew_over_tls(&token.der, leaf, Window::Mdm).await?
            };
            (issued, true)
        }
        RequestType::QueryTokenStatus | RequestType::Ket => {
            let what = "QueryTokenStatus or KET on the MDM enrollment endpoint";
            return Err(RaError::from(Refusal::UnsupportedRequestType { what }).into());
        }
    };
    // The store the certificate lives in: what the request says, else (a renewal that omits
    // EnrollmentType, as the MDM renewal documentation's sample does) where it was enrolled.
    let enrollment_type = match rst.context_value("EnrollmentType") {
        Some(t) => Some(t.to_string()),
        None => state.ra.mdm_enrollment_type(&issued.serial).await?,
    };
    let enrollment_type_device = enrollment_type.is_some_and(|t| t.eq_ignore_ascii_case("Device"));
    // The renewal settings of the certificate's own template; the management client finds its
    // certificate by the subject it has (for a token, the token's device, not the DeviceID).
    let mdm = state.ra.mdm_settings_for(&issued.template).await?;
    let device = Some(issued_device(&issued))
        .filter(|d| !d.is_empty())
        .or_else(|| device_id(&rst).map(str::to_string))
        .unwrap_or_default();
    let doc = provisioning_doc(state, &issued, &mdm, enrollment_type_device, renewal, &device, &rst);
    let now = state.ra.now();
    let created = timestamp(now.minus_secs(300));
    let expires = timestamp(now.plus_secs(300));
    Ok(mde2::provisioning_response(&doc, &created, &expires, env.message_id.as_deref()))
}

fn issued_device(issued: &Issued) -> String {
    autoenroll_core::pki::CertFacts::parse(&issued.certificate_der).ok().and_then(|f| f.subject_cn).unwrap_or_default()
}

/// `2006-01-02T15:04:05.000Z`, as Windows MDM servers write u:Timestamp.
fn timestamp(t: UnixTime) -> String {
    let s = t.to_string();
    format!("{}.000Z", s.trim_end_matches('Z'))
}

fn provisioning_doc(
    state: &AppState,
    issued: &Issued,
    mdm: &crate::ra::MdmSettings,
    device_store: bool,
    renewal: bool,
    device: &str,
    rst: &wstep::RequestSecurityToken,
) -> ProvisioningDoc {
    let root = issued.chain.last().cloned();
    let issuing = issued.chain.first().filter(|_| issued.chain.len() > 1).cloned();
    ProvisioningDoc {
        // Enrollment installs the root and the issuing CA; a renewal carries only the new
        // certificate (and names the provider).
        root_thumbprint: if renewal { None } else { root.as_ref().map(|r| Thumbprint::of_der(r).0) },
        root_der: if renewal { None } else { root },
        issuing_thumbprint: if renewal { None } else { issuing.as_ref().map(|c| Thumbprint::of_der(c).0) },
        issuing_der: if renewal { None } else { issuing },
        provider_id: renewal.then(|| state.mdm_provider_id.clone()),
        cert_thumbprint: Thumbprint::of_der(&issued.certificate_der).0,
        cert_der: issued.certificate_der.clone(),
        store: if device_store { "System" } else { "User" }.into(),
        renew: (!renewal).then(|| RenewParams {
            renew_period_days: mdm.renew_period_days,
            retry_interval_days: mdm.retry_interval_days,
            server_url: Some(format!("{}{DISCOVERY_PATH}", state.base_url)),
        }),
        management: (!renewal).then(|| Management {
            provider_id: state.mdm_provider_id.clone(),
            name: "autoenroll".into(),
            address: state.mdm_management_url.clone(),
            ent_dm_id: device.to_string(),
            device_name: rst.context_value("DeviceName").unwrap_or(device).to_string(),
        }),
    }
}
