//! The OCSP responder's decisions: what the inventory says about each certificate asked for.
use super::Ra;
use autoenroll_core::model::CertState;
use autoenroll_core::pki::ocsp::{
    self, error_response, CertStatus, ResponseData, ResponseStatus, RevokedInfo, SingleResponse,
};
use autoenroll_core::{Serial, UnixTime};
use der::asn1::{GeneralizedTime, Null};

/// How long a response may be cached.
const OCSP_VALIDITY_SECS: i64 = 3600;

fn time(t: UnixTime) -> Option<GeneralizedTime> {
    GeneralizedTime::from_unix_duration(std::time::Duration::from_secs(u64::try_from(t.0).ok()?)).ok()
}

impl Ra {
    /// Answers an OCSPRequest (DER) with an OCSPResponse (DER): signed by the issuing CA for
    /// well-formed requests, an unsigned malformedRequest / internalError otherwise.
    pub async fn ocsp(&self, request_der: &[u8]) -> Vec<u8> {
        let fallback = |status| error_response(status).unwrap_or_default();
        let request = match ocsp::parse_request(request_der) {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(%e, "malformed OCSP request");
                return fallback(ResponseStatus::MalformedRequest);
            }
        };
        match self.ocsp_answer(&request).await {
            Ok(der) => der,
            Err(e) => {
                tracing::error!(%e, "OCSP");
                fallback(ResponseStatus::InternalError)
            }
        }
    }

    async fn ocsp_answer(&self, request: &ocsp::OcspRequest) -> Result<Vec<u8>, super::RaError> {
        let now = self.now();
        let (Some(this_update), Some(next_update)) = (time(now), time(now.plus_secs(OCSP_VALIDITY_SECS))) else {
            return Err(super::RaError::internal("time out of range"));
        };
        let mut responses = Vec::new();
        for r in &request.tbs_request.request_list {
            let id = &r.req_cert;
            let status = if ocsp::issued_by(id, &self.ca.issuing_der()) {
                let serial = Serial::from_bytes(id.serial_number.as_bytes());
                match self.store.certificate(serial.as_str()).await? {
                    Some(c) => match c.state {
                        CertState::Revoked => CertStatus::Revoked(RevokedInfo {
                            revocation_time: time(c.revoked_at.unwrap_or_default())
                                .ok_or_else(|| super::RaError::internal("revocation time"))?,
                            revocation_reason: c.revocation_reason.and_then(|r| r.crl_reason()),
                        }),
                        CertState::Issued | CertState::Renewed => CertStatus::Good(Null),
                        // Recorded but not yet signed: nobody can hold it.
                        CertState::Signing => CertStatus::Unknown(Null),
                    },
                    None => CertStatus::Unknown(Null),
                }
            } else {
                CertStatus::Unknown(Null)
            };
            responses.push(SingleResponse {
                cert_id: id.clone(),
                cert_status: status,
                this_update,
                next_update: Some(next_update),
            });
        }
        let data = ResponseData {
            responder_id: self.ca.ocsp_responder_id()?,
            produced_at: this_update,
            responses,
            // The nonce comes back as sent, so the client can match the answer to its question.
            response_extensions: request.nonce().map(|n| vec![n.clone()]),
        };
        Ok(self.ca.sign_ocsp(data)?)
    }
}
