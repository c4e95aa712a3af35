//! Pending requests, revocation and device blocking.
use super::auth::{Principal, PrincipalKind};
use super::enroll::{issue_request, Issued, Outcome, Recorded};
use super::templates::profile_for;
use super::{Ra, RaError};
use autoenroll_core::model::{AuditOutcome, DeviceState, RequestStatus, RevocationReason};
use autoenroll_core::pki::CsrFacts;
use autoenroll_core::Refusal;

impl Ra {
    /// The outcome of a request for the requester who made it (MS-WSTEP QueryTokenStatus): the
    /// same account, the bootstrap token that paid for it, or a certificate of the same device.
    /// Anyone else learns nothing, not even that the request exists.
    pub async fn retrieve_for(&self, principal: &Principal, request_id: i64) -> Result<Outcome, RaError> {
        let unknown = || RaError::from(Refusal::UnknownRequest { id: request_id });
        let req = self.store.request(request_id).await?.ok_or_else(unknown)?;
        let theirs = match &principal.kind {
            PrincipalKind::Account { .. } | PrincipalKind::Token { .. } => req.requester == principal.actor(),
            PrincipalKind::Certificate { .. } => req.device == principal.device,
        };
        if !theirs {
            let detail = format!("request {request_id} belongs to another requester");
            self.audit(&principal.actor(), "request.query", &request_id.to_string(), AuditOutcome::Refused, &detail)
                .await;
            return Err(unknown());
        }
        self.retrieve(request_id).await
    }

    /// The outcome of a request (SCEP CertPoll: the transaction already binds it to its signer).
    pub(crate) async fn retrieve(&self, request_id: i64) -> Result<Outcome, RaError> {
        let req = self.store.request(request_id).await?.ok_or(Refusal::UnknownRequest { id: request_id })?;
        match req.status {
            RequestStatus::Pending => Ok(Outcome::Pending { request_id }),
            RequestStatus::Issued => {
                let serial = req.serial.ok_or_else(|| RaError::internal("issued request without serial"))?;
                let cert =
                    self.store.certificate(&serial).await?.ok_or_else(|| RaError::internal("issued serial missing"))?;
                let der = cert.der.ok_or_else(|| RaError::internal("issued certificate without DER"))?;
                Ok(Outcome::Issued(Issued {
                    certificate_der: der,
                    chain: self.chain_der(),
                    request_id,
                    serial,
                    template: req.template,
                }))
            }
            RequestStatus::Denied => {
                Err(RaError::from(Refusal::RequestDenied { id: request_id, reason: req.detail })
                    .with_request(request_id))
            }
            // Being approved or signed right now: pending, for every poller (an error here made
            // SCEP and WS-TEP clients give up for good).
            RequestStatus::Received | RequestStatus::Signing => Ok(Outcome::Pending { request_id }),
        }
    }

    /// Finishes what a process that died left half-done (run at start and with the periodic
    /// checks; only rows untouched for `STALE_SIGNING_SECS`, so a live replica's work is left
    /// alone). A certificate intent still signing is revoked (whether a signature was made is
    /// unknown; the serial goes on the CRL). A request being approved goes back to pending, to
    /// be approved again; one being issued directly is denied as interrupted (its client sends
    /// it again). Each is audited as `request.interrupted`.
    pub async fn reconcile_interrupted(&self) -> Result<usize, RaError> {
        let now = self.now();
        let stale_before = now.minus_secs(super::renew::STALE_SIGNING_SECS);
        let mut done = 0;
        for req in self.store.interrupted_requests(stale_before, 1000).await? {
            let abandoned = self.store.abandon_intents(req.id, now).await?;
            let (to, detail) = match req.status {
                RequestStatus::Received => (RequestStatus::Pending, "approval interrupted; approve it again"),
                _ => (RequestStatus::Denied, "interrupted while signing; send the request again"),
            };
            if self.store.transition_request(req.id, req.status, to, detail, now).await? {
                let note = format!("{detail} (was {}; intents revoked: {})", req.status, abandoned.join(", "));
                self.audit("server", "request.interrupted", &req.id.to_string(), AuditOutcome::Refused, &note).await;
                tracing::warn!(request = req.id, "{note}");
                done += 1;
            }
            if !abandoned.is_empty() {
                self.publish_crl().await?;
            }
        }
        Ok(done)
    }

    /// Requests in `status` (the approval queue: pending), oldest first.
    pub async fn requests(&self, status: RequestStatus, limit: i64) -> Result<Vec<autoenroll_store::Request>, RaError> {
        Ok(self.store.requests_with_status(status, limit).await?)
    }

    /// Issues a pending request, checked again as it is now: a device blocked meanwhile, or a
    /// template whose key or name rules changed, refuses it (and the request is denied).
    pub async fn approve(&self, actor: &str, request_id: i64) -> Result<Issued, RaError> {
        let now = self.now();
        let req = self.store.request(request_id).await?.ok_or(Refusal::UnknownRequest { id: request_id })?;
        if !self
            .store
            .transition_request(request_id, RequestStatus::Pending, RequestStatus::Received, "approved", now)
            .await?
        {
            return Err(Refusal::NotPending { id: request_id, status: req.status.to_string() }.into());
        }
        let result: Result<Issued, RaError> = async {
            // Stored without its challenge, so no longer signed: it was verified on arrival.
            let csr = CsrFacts::parse_stored(&req.csr_der).map_err(RaError::internal)?;
            let template = self.template(&req.template).await?;
            let device = self
                .store
                .device_by_id(req.device_id)
                .await?
                .ok_or_else(|| RaError::internal("request without device"))?;
            if device.is_blocked() {
                return Err(Refusal::DeviceBlocked { device: device.name }.into());
            }
            template.check_key(&csr.key)?;
            let vouched = match device.owner.as_deref() {
                Some(owner) => self.owner_vouches(owner, &device.name).await?,
                None => false,
            };
            let request = issue_request(&csr, &template, &req.device, vouched, &self.settings.server_names)?;
            let profile = profile_for(&template, &csr.key);
            let recorded = Recorded {
                audit: super::enroll::Audit {
                    actor,
                    action: "request.approve",
                    subject: &req.device,
                    note: String::new(),
                },
                previous_serial: req.previous_serial.as_deref(),
                device_id: req.device_id,
                requester: &req.requester,
                template_name: &template.name,
                kind: req.kind,
                csr_der: &req.csr_der,
                request: &request,
                profile: &profile,
                renewal_secs: template.renewal_secs,
                scep_transaction: None,
            };
            let (serial, der) = self.sign_request(request_id, &recorded, (template.major, template.minor)).await?;
            Ok(Issued {
                certificate_der: der,
                chain: self.chain_der(),
                request_id,
                serial: serial.0,
                template: template.name,
            })
        }
        .await;
        // Success is audited with the certificate, in the same transaction.
        match result {
            Ok(issued) => Ok(issued),
            Err(e) => {
                // A refusal stands (the request is denied with its reason); a failure of ours
                // puts it back for another try.
                let (to, detail) = match &e {
                    RaError::Refused { refusal, .. } => (RequestStatus::Denied, refusal.to_string()),
                    RaError::Internal { .. } => (RequestStatus::Pending, "approval failed; pending again".to_string()),
                };
                let _ =
                    self.store.transition_request(request_id, RequestStatus::Received, to, &detail, self.now()).await;
                let e = e.with_request(request_id);
                self.record_failure(actor, "request.approve", &req.device, &e).await;
                Err(e)
            }
        }
    }

    pub async fn deny(&self, actor: &str, request_id: i64, reason: &str) -> Result<(), RaError> {
        if !self
            .store
            .transition_request(request_id, RequestStatus::Pending, RequestStatus::Denied, reason, self.now())
            .await?
        {
            let status = match self.store.request(request_id).await? {
                Some(r) => r.status.to_string(),
                None => return Err(Refusal::UnknownRequest { id: request_id }.into()),
            };
            return Err(Refusal::NotPending { id: request_id, status }.into());
        }
        self.audit(actor, "request.deny", &request_id.to_string(), AuditOutcome::Ok, reason).await;
        Ok(())
    }

    pub async fn revoke(&self, actor: &str, serial: &str, reason: RevocationReason) -> Result<(), RaError> {
        if !self.store.revoke_certificate(serial, reason, self.now()).await? {
            return Err(Refusal::NoSuchCertificate { serial: serial.to_string() }.into());
        }
        self.audit(actor, "cert.revoke", serial, AuditOutcome::Ok, reason.as_str()).await;
        // The CRL says so at once (a failure here is logged; the next fetch retries).
        if let Err(e) = self.publish_crl().await {
            tracing::error!(%e, "could not publish the CRL after a revocation");
        }
        Ok(())
    }

    /// Blocks a device and revokes every unexpired certificate it was issued — current ones
    /// and those renewed away whose keys may still be around (one CRL for all).
    pub async fn block_and_revoke(&self, actor: &str, device: &str, reason: RevocationReason) -> Result<u64, RaError> {
        self.set_device_state(actor, device, DeviceState::Blocked).await?;
        let d = self.store.device(device).await?.ok_or_else(|| Refusal::UnknownDevice { name: device.to_string() })?;
        // One statement: issued, renewed and in-flight signatures alike (those never go live).
        let revoked = self.store.revoke_device_certificates(d.id, reason, self.now()).await?;
        for serial in &revoked {
            let detail = format!("{reason} (device {device} blocked)");
            self.audit(actor, "cert.revoke", serial, AuditOutcome::Ok, &detail).await;
        }
        let n = revoked.len() as u64;
        if n > 0 {
            if let Err(e) = self.publish_crl().await {
                tracing::error!(%e, "could not publish the CRL after blocking a device");
            }
        }
        Ok(n)
    }

    pub async fn set_device_state(&self, actor: &str, device: &str, state: DeviceState) -> Result<(), RaError> {
        if !self.store.set_device_state(device, state).await? {
            return Err(Refusal::UnknownDevice { name: device.to_string() }.into());
        }
        let action = match state {
            DeviceState::Blocked => "device.block",
            DeviceState::Active => "device.unblock",
        };
        self.audit(actor, action, device, AuditOutcome::Ok, "").await;
        Ok(())
    }

    /// Revokes, as superseded, renewed certificates whose successor was issued more than the
    /// grace ago (their successor's first use revokes them sooner); returns how many.
    pub async fn revoke_superseded(&self) -> Result<usize, RaError> {
        let now = self.now();
        let revoked = self.store.revoke_superseded(now.minus_secs(self.settings.superseded_grace_secs), now).await?;
        for serial in &revoked {
            self.audit("server", "cert.revoke", serial, AuditOutcome::Ok, "superseded (grace over)").await;
        }
        Ok(revoked.len())
    }

    /// Binds a device to an owner (`account:NAME`, `admin`), or frees it (None) so the next
    /// account that enrolls it binds it: an administrator's rebinding.
    pub async fn rebind_device(&self, actor: &str, device: &str, owner: Option<&str>) -> Result<(), RaError> {
        if let Some(owner) = owner {
            let known = match owner.strip_prefix("account:") {
                Some(name) => self.store.account(name).await?.is_some(),
                None => owner == super::LOCAL_ADMIN,
            };
            if !known {
                let detail = format!("owner {owner:?}: expected account:NAME of an existing account, or admin");
                return Err(Refusal::BadParameter { detail }.into());
            }
        }
        if !self.store.set_device_owner(device, owner).await? {
            return Err(Refusal::UnknownDevice { name: device.to_string() }.into());
        }
        self.audit(actor, "device.rebind", device, AuditOutcome::Ok, owner.unwrap_or("(unbound)")).await;
        Ok(())
    }

    /// Removes a device that never requested anything (e.g. one registered for a challenge
    /// that was never used); devices with history are blocked instead.
    pub async fn remove_device(&self, device: &str) -> Result<(), RaError> {
        if self.store.device(device).await?.is_none() {
            return Err(Refusal::UnknownDevice { name: device.to_string() }.into());
        }
        if !self.store.delete_device(device).await? {
            return Err(Refusal::DeviceHasHistory { device: device.to_string() }.into());
        }
        self.audit(super::LOCAL_ADMIN, "device.remove", device, AuditOutcome::Ok, "").await;
        Ok(())
    }
}
