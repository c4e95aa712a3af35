//! Pending requests, revocation and device blocking.
use super::enroll::{issue_request, Issued, Recorded};
use super::templates::profile_for;
use super::{Ra, RaError};
use autoenroll_core::pki::CsrFacts;
use autoenroll_core::Kind;

/// The RFC 5280 CRLReason for a reason name we accept (`unspecified` is None: CRLs and OCSP
/// leave it out).
pub(crate) fn crl_reason(name: &str) -> Option<x509_cert::ext::pkix::CrlReason> {
    use x509_cert::ext::pkix::CrlReason;
    Some(match name {
        "keyCompromise" => CrlReason::KeyCompromise,
        "caCompromise" => CrlReason::CaCompromise,
        "affiliationChanged" => CrlReason::AffiliationChanged,
        "superseded" => CrlReason::Superseded,
        "cessationOfOperation" => CrlReason::CessationOfOperation,
        "privilegeWithdrawn" => CrlReason::PrivilegeWithdrawn,
        _ => return None,
    })
}

/// RFC 5280 CRLReason names we accept.
pub const REVOCATION_REASONS: [&str; 7] = [
    "unspecified",
    "keyCompromise",
    "caCompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
    "privilegeWithdrawn",
];

#[derive(Debug, Clone)]
pub enum Retrieved {
    Issued(Issued),
    Pending { request_id: i64 },
}

impl Ra {
    /// The outcome of a request (MS-WSTEP QueryTokenStatus).
    pub async fn retrieve(&self, request_id: i64) -> Result<Retrieved, RaError> {
        let req = self
            .store
            .request(request_id)
            .await?
            .ok_or_else(|| RaError::new(Kind::NotFound, "UnknownRequest", format!("no request {request_id}")))?;
        match req.status.as_str() {
            "pending" => Ok(Retrieved::Pending { request_id }),
            "issued" => {
                let serial = req.serial.ok_or_else(|| RaError::internal("issued request without serial"))?;
                let cert =
                    self.store.certificate(&serial).await?.ok_or_else(|| RaError::internal("issued serial missing"))?;
                let der = cert.der.ok_or_else(|| RaError::internal("issued certificate without DER"))?;
                Ok(Retrieved::Issued(Issued {
                    certificate_der: der,
                    chain: self.chain_der(),
                    request_id,
                    serial,
                    template: req.template,
                }))
            }
            "denied" => Err(RaError::new(
                Kind::PolicyDenied,
                "RequestDenied",
                format!("request {request_id} was denied: {}", req.detail),
            )
            .with_request(request_id)),
            other => {
                Err(RaError::new(Kind::Unavailable, "RequestInProgress", format!("request {request_id} is {other}")))
            }
        }
    }

    /// Issues a pending request.
    pub async fn approve(&self, request_id: i64) -> Result<Issued, RaError> {
        let now = self.now();
        let req = self
            .store
            .request(request_id)
            .await?
            .ok_or_else(|| RaError::new(Kind::NotFound, "UnknownRequest", format!("no request {request_id}")))?;
        if !self.store.transition_request(request_id, "pending", "received", "approved", now.0).await? {
            return Err(RaError::new(Kind::Conflict, "NotPending", format!("request {request_id} is {}", req.status)));
        }
        let result: Result<Issued, RaError> = async {
            let csr = CsrFacts::parse(&req.csr_der).map_err(RaError::internal)?;
            let template = self.template(&req.template).await?;
            let request = issue_request(&csr, &template, &req.device)?;
            let profile = profile_for(&template);
            let recorded = Recorded {
                audit: super::enroll::Audit {
                    actor: "admin",
                    action: "request.approve",
                    subject: &req.device,
                    note: String::new(),
                },
                previous_serial: req.previous_serial.as_deref(),
                device_id: req.device_id,
                requester: &req.requester,
                template_name: &template.name,
                kind: &req.kind,
                csr_der: &req.csr_der,
                request: &request,
                profile: &profile,
                renewal_secs: template.renewal_secs,
                scep_transaction: None,
            };
            let (serial, der) = self.sign_request(request_id, &recorded, template.major, template.minor).await?;
            let serial = serial.0;
            Ok(Issued { certificate_der: der, chain: self.chain_der(), request_id, serial, template: template.name })
        }
        .await;
        // Success is audited with the certificate, in the same transaction.
        if let Err(e) = &result {
            self.record_failure("admin", "request.approve", &req.device, &e.clone_for_audit(request_id)).await;
        }
        result
    }

    pub async fn deny(&self, request_id: i64, reason: &str) -> Result<(), RaError> {
        if !self.store.transition_request(request_id, "pending", "denied", reason, self.now().0).await? {
            return Err(RaError::new(Kind::Conflict, "NotPending", format!("request {request_id} is not pending")));
        }
        self.audit("admin", "request.deny", &request_id.to_string(), "ok", reason).await;
        Ok(())
    }

    pub async fn revoke(&self, serial: &str, reason: &str) -> Result<(), RaError> {
        if !REVOCATION_REASONS.contains(&reason) {
            return Err(RaError::new(
                Kind::BadRequest,
                "InvalidReason",
                format!("unknown revocation reason {reason} (use one of {})", REVOCATION_REASONS.join(", ")),
            ));
        }
        if !self.store.revoke_certificate(serial, reason, self.now().0).await? {
            return Err(RaError::new(
                Kind::NotFound,
                "UnknownCertificate",
                format!("no unrevoked certificate {serial}"),
            ));
        }
        self.audit("admin", "cert.revoke", serial, "ok", reason).await;
        // The CRL says so at once (a failure here is logged; the next fetch retries).
        if let Err(e) = self.publish_crl().await {
            tracing::error!(%e, "could not publish the CRL after a revocation");
        }
        Ok(())
    }

    /// Blocks a device and revokes every certificate it still holds (one CRL for all).
    pub async fn block_and_revoke(&self, device: &str, reason: &str) -> Result<u64, RaError> {
        self.set_device_blocked(device, true).await?;
        let filter = autoenroll_store::CertificateFilter {
            device: Some(device.to_string()),
            state: Some("issued".into()),
            limit: i64::MAX,
            ..Default::default()
        };
        let mut n = 0;
        let now = self.now().0;
        for c in self.store.certificates_matching(&filter).await? {
            if self.store.revoke_certificate(&c.serial, reason, now).await? {
                self.audit("admin", "cert.revoke", &c.serial, "ok", &format!("{reason} (device {device} blocked)"))
                    .await;
                n += 1;
            }
        }
        if n > 0 {
            if let Err(e) = self.publish_crl().await {
                tracing::error!(%e, "could not publish the CRL after blocking a device");
            }
        }
        Ok(n)
    }

    pub async fn set_device_blocked(&self, device: &str, blocked: bool) -> Result<(), RaError> {
        if !self.store.set_device_blocked(device, blocked).await? {
            return Err(RaError::new(Kind::NotFound, "UnknownDevice", format!("no device {device}")));
        }
        let action = if blocked { "device.block" } else { "device.unblock" };
        self.audit("admin", action, device, "ok", "").await;
        Ok(())
    }

    /// Removes a device that never requested anything (e.g. one registered for a challenge
    /// that was never used); devices with history are blocked instead.
    pub async fn remove_device(&self, device: &str) -> Result<(), RaError> {
        if self.store.device(device).await?.is_none() {
            return Err(RaError::new(Kind::NotFound, "UnknownDevice", format!("no device {device}")));
        }
        if !self.store.delete_device(device).await? {
            return Err(RaError::new(
                Kind::Conflict,
                "DeviceHasHistory",
                format!("device {device} has requests or certificates: block it instead"),
            ));
        }
        self.audit("admin", "device.remove", device, "ok", "").await;
        Ok(())
    }
}
