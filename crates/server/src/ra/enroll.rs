//! Enrollment: one validated request in, one recorded certificate (or a pending request) out.
use super::auth::{Principal, PrincipalKind};
use super::templates::profile_for;
use super::{Ra, RaError};
use autoenroll_ca::{IssueRequest, Profile};
use autoenroll_core::model::{AuditOutcome, CertState, RequestKind, RequestStatus, ServerNames, SubjectFrom, Template};
use autoenroll_core::pki::{CertFacts, CsrFacts, PkiError, TemplateHint};
use autoenroll_core::renewal::Held;
use autoenroll_core::{spread, Refusal, Serial, Thumbprint, UnixTime};
use autoenroll_store::{AuditEvent, CertificateIntent, Device, NewRequest, StoreError};

pub struct EnrollInput<'a> {
    pub principal: &'a Principal,
    pub csr_der: &'a [u8],
    /// A template named outside the CSR (e.g. an AdditionalContext item).
    pub template_name: Option<&'a str>,
}

#[derive(Debug, Clone)]
pub struct Issued {
    pub certificate_der: Vec<u8>,
    /// Issuing CA then root.
    pub chain: Vec<Vec<u8>>,
    pub request_id: i64,
    pub serial: String,
    pub template: String,
}

/// What a request came to: a certificate, or a request held for an administrator's approval
/// (an outcome, not an error: every protocol has its own way to say "come back later").
#[derive(Debug, Clone)]
pub enum Outcome {
    Issued(Issued),
    Pending { request_id: i64 },
}

/// The busiest minute of renewals the server aims for, against the mean (see `spread_renewal`).
const SPREAD_PEAK_OVER_MEAN: f64 = 1.25;

pub(crate) struct Recorded<'a> {
    pub previous_serial: Option<&'a str>,
    pub device_id: i64,
    pub requester: &'a str,
    pub template_name: &'a str,
    pub kind: RequestKind,
    pub csr_der: &'a [u8],
    pub request: &'a IssueRequest,
    pub profile: &'a Profile,
    /// The template's renewal period (the renewal window the store records).
    pub renewal_secs: i64,
    /// The audit event written with the certificate (same transaction).
    pub audit: Audit<'a>,
    /// SCEP: the (transaction ID, signer) this request answers, recorded with it.
    pub scep_transaction: Option<(&'a str, &'a str)>,
}

/// Who did what, for the issuance's audit event; its detail names serial and request.
pub(crate) struct Audit<'a> {
    pub actor: &'a str,
    pub action: &'a str,
    pub subject: &'a str,
    /// Appended to the detail, e.g. what a renewal replaced.
    pub note: String,
}

/// What recording a new certificate came to: signed, or claimed by another request first (the
/// certificate renewed already has its successor, or the SCEP transaction its request).
pub(crate) enum Issue {
    New { request_id: i64, serial: Serial, der: Vec<u8> },
    Taken,
}

/// Whether a request comes through Windows MDM enrollment: its template is the configured one
/// unless the request hints at a template that allows MDM use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Channel {
    Standard,
    Mdm,
    /// The template is fixed by the address asked (EST's label): a request naming another
    /// template is refused rather than served with the one it names.
    Labelled,
}

impl Ra {
    /// The CMC Full PKI Response for an issued certificate (MS-WSTEP with its errata; what
    /// ADCS sends): status "Issued" for body part 1 and the certificate's hash, signed by the
    /// issuing CA, with the certificate and the root.
    pub fn cmc_issued(&self, issued: &Issued) -> Result<Vec<u8>, RaError> {
        let sha1 = hex::decode(Thumbprint::of_der(&issued.certificate_der).as_str()).map_err(RaError::internal)?;
        let content = autoenroll_core::pki::cmc::issued_response(&sha1).map_err(RaError::internal)?;
        let mut certs = vec![issued.certificate_der.clone()];
        certs.extend(issued.chain.iter().skip(1).cloned());
        Ok(self.ca.sign_cmc(&content, &certs)?)
    }

    /// The CMC Full PKI Response for a request held for approval: status pending with the
    /// request id and the time to ask again, signed by the issuing CA, with the root.
    pub fn cmc_pending(&self, request_id: i64) -> Result<Vec<u8>, RaError> {
        let id = u32::try_from(request_id).map_err(RaError::internal)?;
        let poll_at = self.now().plus_secs(PENDING_POLL_SECS);
        let content = autoenroll_core::pki::cmc::pending_response(id, poll_at).map_err(RaError::internal)?;
        let root: Vec<Vec<u8>> = self.chain_der().iter().skip(1).cloned().collect();
        Ok(self.ca.sign_cmc(&content, &root)?)
    }
}

/// When a client holding a pending request is asked to come back (CMC pendTime): approval is
/// a person's decision, so hours, not seconds.
pub const PENDING_POLL_SECS: i64 = 3600;

/// What the database keeps of a request: everything but its challenge password (a secret).
fn stored_csr(csr_der: &[u8]) -> Result<Vec<u8>, RaError> {
    // The server's own listener certificate has no request.
    if csr_der.is_empty() {
        return Ok(Vec::new());
    }
    CsrFacts::without_challenge(csr_der).map_err(|e| RaError::from(csr_error(e)))
}

pub(crate) fn csr_error(e: PkiError) -> Refusal {
    match e {
        PkiError::BadSignature => Refusal::BadCsrSignature,
        PkiError::UnsupportedAlgorithm(algorithm) => Refusal::UnsupportedAlgorithm { algorithm },
        PkiError::UnsupportedKey(key) => Refusal::KeyTypeNotAllowed { key, template: "any template".into() },
        PkiError::WeakKey(key) => {
            Refusal::KeyTooWeak { key, min_bits: autoenroll_core::model::MIN_RSA_BITS, template: "any template".into() }
        }
        PkiError::Der(detail) => Refusal::BadCsr { detail },
        PkiError::Cms(detail) => Refusal::BadRenewalRequest { detail },
    }
}

impl Ra {
    /// A template by name; a stored one that no longer validates is refused with its reason.
    pub(crate) async fn find_template(&self, name: &str) -> Result<Option<Template>, RaError> {
        match self.store.template(name).await {
            Err(StoreError::Invalid { key, reason, .. }) => {
                Err(Refusal::TemplateMisconfigured { name: key, reason }.into())
            }
            Ok(Some(t)) => {
                crate::metrics::note_template(&t.name);
                Ok(Some(t))
            }
            other => Ok(other?),
        }
    }

    /// A template by name, or the refusal that names it unknown.
    pub async fn template(&self, name: &str) -> Result<Template, RaError> {
        self.find_template(name).await?.ok_or_else(|| Refusal::UnknownTemplate { name: name.to_string() }.into())
    }

    pub(crate) async fn template_by_name_or_oid(&self, name: &str) -> Result<Template, RaError> {
        if let Some(t) = self.find_template(name).await? {
            return Ok(t);
        }
        match self.store.template_by_oid(name).await {
            Err(StoreError::Invalid { key, reason, .. }) => {
                Err(Refusal::TemplateMisconfigured { name: key, reason }.into())
            }
            Ok(Some(t)) => {
                crate::metrics::note_template(&t.name);
                Ok(t)
            }
            Ok(None) => Err(Refusal::UnknownTemplate { name: name.to_string() }.into()),
            Err(e) => Err(e.into()),
        }
    }

    async fn resolve_template(
        &self,
        csr: &CsrFacts,
        input: &EnrollInput<'_>,
        channel: Channel,
    ) -> Result<Template, RaError> {
        let hinted = match &csr.template_hint {
            Some(TemplateHint::Oid { oid, .. }) => Some(oid.as_str()),
            Some(TemplateHint::Name(name)) => Some(name.as_str()),
            None => None,
        };
        if let (Channel::Mdm, Some(fixed)) = (channel, input.template_name) {
            // The configured MDM template wins, unless the request hints at one that allows
            // MDM use (an unknown hint is not an error here: Windows always sends one).
            if let Some(h) = hinted {
                if let Ok(t) = self.template_by_name_or_oid(h).await {
                    if t.allow_mdm {
                        return Ok(t);
                    }
                }
            }
            return self.template(fixed).await;
        }
        if let (Channel::Labelled, Some(fixed)) = (channel, input.template_name) {
            let template = self.template(fixed).await?;
            if let Some(h) = hinted {
                if h != template.name && h != template.oid.to_string() {
                    return Err(Refusal::BadParameter {
                        detail: format!("the request names template {h}, the address {}", template.name),
                    }
                    .into());
                }
            }
            return Ok(template);
        }
        if let Some(h) = hinted {
            return self.template_by_name_or_oid(h).await;
        }
        if let Some(name) = input.template_name {
            return self.template_by_name_or_oid(name).await;
        }
        if let PrincipalKind::Token { template: Some(t), .. } = &input.principal.kind {
            return self.template(t).await;
        }
        self.template(&self.settings.default_template).await
    }

    /// A new request, issued at once: request and certificate intent in one commit, then the
    /// signature, then certificate and audit event in a second commit (rule R4 with two fsyncs).
    pub(crate) async fn issue_recorded(&self, r: Recorded<'_>) -> Result<Issue, RaError> {
        let now = self.now();
        let (major, minor) = r.profile.template.as_ref().map(|t| (t.major, t.minor)).unwrap_or((0, 0));
        let prepared = self.ca.prepare(r.request, r.profile, now)?;
        let serial = Serial::from_bytes(&prepared.serial);
        let subject = r.request.subject.to_string();
        let renew_after = self.spread_renewal(&r, &prepared, &serial).await?;
        let stored_csr = stored_csr(r.csr_der)?;
        let recorded = self
            .store
            .insert_request_with_intent(
                &NewRequest {
                    device_id: r.device_id,
                    requester: r.requester,
                    template: r.template_name,
                    kind: r.kind,
                    status: RequestStatus::Signing,
                    csr_der: &stored_csr,
                    previous_serial: r.previous_serial,
                },
                &intent(&r, &prepared, serial.as_str(), &subject, 0, (major, minor), renew_after),
                r.scep_transaction,
                now,
            )
            .await;
        let request_id = match recorded {
            Ok(id) => id,
            Err(StoreError::Duplicate(_)) => return Ok(Issue::Taken),
            Err(e) => return Err(e.into()),
        };
        let der = self.sign_and_complete(&r, &prepared, &serial, request_id).await?;
        Ok(Issue::New { request_id, serial, der })
    }

    /// For a request already recorded (pending, then approved; SCEP): intent, sign, complete.
    pub(crate) async fn sign_request(
        &self,
        request_id: i64,
        r: &Recorded<'_>,
        (major, minor): (u32, u32),
    ) -> Result<(Serial, Vec<u8>), RaError> {
        let now = self.now();
        let prepared = self.ca.prepare(r.request, r.profile, now)?;
        let serial = Serial::from_bytes(&prepared.serial);
        let subject = r.request.subject.to_string();
        let renew_after = self.spread_renewal(r, &prepared, &serial).await?;
        self.store
            .insert_certificate_intent(
                &intent(r, &prepared, serial.as_str(), &subject, request_id, (major, minor), renew_after),
                now,
            )
            .await?;
        let der = self.sign_and_complete(r, &prepared, &serial, request_id).await?;
        Ok((serial, der))
    }

    /// The server's renewal time for a new certificate: a minute in the first half of its
    /// renewal window (the Windows rule, as the agent applies it), picked by a hash of device
    /// and serial and moved on from minutes already holding 1.25x the mean of the minutes
    /// around it (core::spread), so certificates issued together do not renew together. The
    /// target is below the 1.5x the fleet must stay under: concurrent issuances read the load
    /// before either writes, and minutes hold whole renewals. Agents learn it at check-in.
    async fn spread_renewal(
        &self,
        r: &Recorded<'_>,
        prepared: &autoenroll_ca::Prepared,
        serial: &Serial,
    ) -> Result<UnixTime, RaError> {
        let rule = autoenroll_core::renewal::RenewalRule::Windows { renewal_period_secs: r.renewal_secs };
        let opens = rule.due_at(&Held {
            not_before: prepared.not_before,
            not_after: prepared.not_after,
            template: None,
            revoked: false,
        });
        let key = format!("{}/{}", r.device_id, serial);
        // The hour of candidates after the hashed minute is both the sample the capacity comes
        // from and where the certificate may land: a bounded read (at most two range scans,
        // when the candidates wrap around the window) however large the fleet.
        let candidates: Vec<UnixTime> =
            spread::candidates(opens, prepared.not_after, key.as_bytes()).take(60).collect();
        let mut load = std::collections::HashMap::new();
        for run in candidates.chunk_by(|a, b| b.0 == a.0 + 60) {
            if let (Some(first), Some(last)) = (run.first(), run.last()) {
                let from = UnixTime(first.0 - first.0.rem_euclid(60));
                load.extend(self.store.renewals_per_minute(from, last.plus_secs(60)).await?);
            }
        }
        let placed: i64 = load.values().sum();
        let capacity = i64::from(spread::capacity(placed as u64 + 1, candidates.len() as u64, SPREAD_PEAK_OVER_MEAN));
        let at = |m: &UnixTime| load.get(&(m.0 - m.0.rem_euclid(60))).copied().unwrap_or(0);
        Ok(candidates.iter().find(|m| at(m) < capacity).or(candidates.first()).copied().unwrap_or(opens))
    }

    async fn sign_and_complete(
        &self,
        r: &Recorded<'_>,
        prepared: &autoenroll_ca::Prepared,
        serial: &Serial,
        request_id: i64,
    ) -> Result<Vec<u8>, RaError> {
        let der = self.ca.sign(prepared).map_err(|e| RaError::from(e).with_request(request_id))?;
        crate::metrics::issued(r.template_name, r.kind.as_str());
        let event = AuditEvent {
            at: self.now(),
            actor: r.audit.actor.to_string(),
            action: r.audit.action.to_string(),
            subject: r.audit.subject.to_string(),
            outcome: AuditOutcome::Issued,
            detail: format!("serial {serial} request {request_id}{}", r.audit.note),
        };
        let live = self
            .store
            .complete_certificate(
                serial.as_str(),
                request_id,
                Thumbprint::of_der(&der).as_str(),
                &der,
                self.now(),
                Some(&event),
            )
            .await
            .map_err(|e| RaError::from(e).with_request(request_id))?;
        if !live {
            // Revoked while it was being signed (its device was blocked): never handed out.
            return Err(
                RaError::from(Refusal::CertificateRevoked { serial: serial.to_string() }).with_request(request_id)
            );
        }
        tracing::info!(actor = r.audit.actor, action = r.audit.action, %serial, "issued");
        Ok(der)
    }

    /// Records a request held for approval and audits it as pending. With a SCEP transaction
    /// already tied to another request, nothing is recorded and `None` comes back (the caller
    /// answers with that request).
    pub(crate) async fn hold_for_approval(
        &self,
        r: &NewRequest<'_>,
        scep_transaction: Option<(&str, &str)>,
        (actor, action, subject): (&str, &str, &str),
    ) -> Result<Option<i64>, RaError> {
        let stored_csr = stored_csr(r.csr_der)?;
        let held = NewRequest { status: RequestStatus::Pending, csr_der: &stored_csr, ..*r };
        let request_id = match self.store.insert_request(&held, scep_transaction, self.now()).await {
            Ok(id) => id,
            Err(StoreError::Duplicate(_)) if scep_transaction.is_some() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        self.audit(actor, action, subject, AuditOutcome::Pending, &format!("request {request_id} awaits approval"))
            .await;
        Ok(Some(request_id))
    }

    pub async fn enroll(&self, input: EnrollInput<'_>) -> Result<Outcome, RaError> {
        self.enroll_through(input, Channel::Standard).await
    }

    /// Enrollment at an address that names the template (EST's label): `input.template_name`
    /// is the template, whatever the request names; a held request sent again gets its answer.
    pub async fn enroll_labelled(&self, input: EnrollInput<'_>) -> Result<Outcome, RaError> {
        self.enroll_through(input, Channel::Labelled).await
    }

    /// Enrollment with a key the server makes (EST's serverkeygen, RFC 7030 section 4.4): the
    /// client's request says who and which names; the key is made here in the template's
    /// algorithm, the request re-signed with it, and the enrollment runs as for any request.
    /// The private key (PKCS#8) goes back to the caller only, never to the store; so a
    /// template that holds requests for approval is refused (the key could never be collected).
    pub async fn enroll_with_server_key(&self, input: EnrollInput<'_>) -> Result<(Issued, Vec<u8>), RaError> {
        // The checks that need no key first (refusals audited as any enrollment's), then the
        // key, made off the runtime's threads (RSA-4096 takes up to a second).
        let prepared = self.server_key_checks(&input).await;
        let (client, template) = match prepared {
            Ok(p) => p,
            Err(e) => {
                self.record_failure(&input.principal.actor(), "issue", &input.principal.device, &e).await;
                return Err(e);
            }
        };
        let algorithm = template.key.algorithm;
        let key = tokio::task::spawn_blocking(move || autoenroll_keys::KeyPair::generate(algorithm))
            .await
            .map_err(RaError::internal)?
            .map_err(RaError::internal)?;
        // Exported before anything is issued: a certificate is never issued for a key lost.
        let pkcs8 = key.to_pkcs8_der().map_err(RaError::internal)?;
        let mut extensions = Vec::new();
        if !client.dns_names.is_empty() || !client.ip_addrs.is_empty() {
            extensions
                .push(autoenroll_keys::san_extension(&client.dns_names, &client.ip_addrs).map_err(RaError::internal)?);
        }
        let csr = autoenroll_keys::build_csr(&key, client.subject.clone(), extensions).map_err(RaError::internal)?;
        let labelled = EnrollInput { principal: input.principal, csr_der: &csr, template_name: Some(&template.name) };
        match self.enroll_through(labelled, Channel::Labelled).await? {
            Outcome::Issued(issued) => Ok((issued, pkcs8)),
            Outcome::Pending { request_id } => {
                Err(RaError::internal(format!("request {request_id} was held although its template holds none")))
            }
        }
    }

    /// What serverkeygen checks before it makes a key: the request, its template (one that
    /// holds requests cannot: the key is never stored), and the template's grants.
    async fn server_key_checks(&self, input: &EnrollInput<'_>) -> Result<(CsrFacts, Template), RaError> {
        let client = CsrFacts::parse(input.csr_der).map_err(csr_error)?;
        let channel = if input.template_name.is_some() { Channel::Labelled } else { Channel::Standard };
        let template = self.resolve_template(&client, input, channel).await?;
        let groups = self.store.device_with_groups(&input.principal.device).await?.map(|(_, g)| g).unwrap_or_default();
        if !input.principal.may_enroll(&template, &groups) {
            return Err(Refusal::NotPermitted { actor: input.principal.actor(), template: template.name }.into());
        }
        if template.pend_all {
            return Err(Refusal::UnsupportedRequestType {
                what: "server-side key generation for a template that holds requests for approval",
            }
            .into());
        }
        Ok((client, template))
    }

    /// A held request sent again (EST, RFC 7030 section 4.2.3: after 202 the client repeats
    /// it): the answer to the one `device` already made with the same key for `template`, if
    /// any: still pending, denied, or the certificate an administrator approved.
    async fn answer_to_repeat(
        &self,
        device: &Device,
        template: &str,
        csr: &CsrFacts,
    ) -> Result<Option<Outcome>, RaError> {
        // Stored requests lost their challenge (and so their signature): read as stored.
        let same_key = |der: &[u8]| CsrFacts::parse_stored(der).is_ok_and(|c| c.spki_der == csr.spki_der);
        // Held requests are an administrator's queue: few, scanned (for held templates only).
        for status in [RequestStatus::Pending, RequestStatus::Denied] {
            for r in self.store.requests_with_status(status, 1000).await? {
                if r.device_id == device.id && r.template == template && same_key(&r.csr_der) {
                    return match status {
                        RequestStatus::Pending => Ok(Some(Outcome::Pending { request_id: r.id })),
                        _ => Err(Refusal::RequestDenied { id: r.id, reason: r.detail }.into()),
                    };
                }
            }
        }
        // Approved: the device's live certificate of that template with that key.
        for c in self.store.device_certificates(device.id).await? {
            let Some(der) = c.der.clone() else { continue };
            if c.state == CertState::Issued
                && c.template == template
                && CertFacts::parse(&der).is_ok_and(|f| f.spki_der == csr.spki_der)
            {
                return Ok(Some(Outcome::Issued(self.issued_from(c, der))));
            }
        }
        Ok(None)
    }

    /// Enrollment through a channel (standard, or MDM which picks its own default template).
    pub(crate) async fn enroll_through(&self, input: EnrollInput<'_>, channel: Channel) -> Result<Outcome, RaError> {
        let result = self.enroll_inner(&input, channel).await;
        // Success is audited with the certificate (same transaction), pending where it is held.
        if let Err(e) = &result {
            self.record_failure(&input.principal.actor(), "issue", &input.principal.device, e).await;
        }
        result
    }

    async fn enroll_inner(&self, input: &EnrollInput<'_>, channel: Channel) -> Result<Outcome, RaError> {
        let now = self.now();
        let csr = CsrFacts::parse(input.csr_der).map_err(csr_error)?;
        let template = self.resolve_template(&csr, input, channel).await?;
        // A certificate already renewed may report and collect, never request.
        if !input.principal.may_request() {
            return Err(Refusal::ClientCertificateNotValid { state: CertState::Renewed }.into());
        }
        // The device as the inventory knows it (None on first sight), read once for both.
        let (known, groups) = match self.store.device_with_groups(&input.principal.device).await? {
            Some((device, groups)) => (Some(device), groups),
            None => (None, vec![]),
        };
        // 1. The template's grants name the requester.
        if !input.principal.may_enroll(&template, &groups) {
            return Err(Refusal::NotPermitted { actor: input.principal.actor(), template: template.name }.into());
        }
        // 2. The device: one this requester may act for, not bound to another, not blocked.
        let vouched = self.check_device(input.principal, known.as_ref()).await?;
        // 3. The key, 4. the names.
        template.check_key(&csr.key)?;
        let request = issue_request(&csr, &template, &input.principal.device, vouched, &self.settings.server_names)?;

        // MS-MDE2 has no pending state and Windows makes a new key on every attempt: a held MDM
        // request could never be collected. An administrator's token for the device and this
        // template is the approval; anyone else is refused before anything is written.
        let hold = match (template.pend_all, channel, &input.principal.kind) {
            (false, ..) => false,
            (true, Channel::Mdm, PrincipalKind::Token { template: Some(t), .. }) if *t == template.name => false,
            (true, Channel::Mdm, _) => return Err(Refusal::MdmApprovalNeedsToken { template: template.name }.into()),
            (true, Channel::Standard | Channel::Labelled, _) => true,
        };
        // EST repeats a held request until it is answered: the same device, key and template
        // get that request's answer, after the same checks, instead of a request per retry.
        if let (true, Channel::Labelled, Some(device)) = (hold, channel, known.as_ref()) {
            if let Some(outcome) = self.answer_to_repeat(device, &template.name, &csr).await? {
                return Ok(outcome);
            }
        }
        // 5. A single-use token (bootstrap or sign-in) pays for this request (held or issued):
        // one statement, so two racing requests with one token cannot both pass.
        if let Some(id) = input.principal.token_to_spend() {
            if !self.store.consume_token(id, now).await? {
                // Spent, or expired (a token identifying its held request may be either).
                let spent = self.store.token(id).await?.is_none_or(|t| t.used_at.is_some());
                return Err(if spent { Refusal::TokenUsed } else { Refusal::TokenExpired }.into());
            }
        }
        // Every check passed: the device is created and bound now.
        let device = self.claim_device(input.principal, known.as_ref()).await?;
        let actor = input.principal.actor();
        let new_request = NewRequest {
            device_id: device.id,
            requester: &actor,
            template: &template.name,
            kind: RequestKind::Enroll,
            status: RequestStatus::Signing,
            csr_der: &csr.der,
            previous_serial: None,
        };
        if hold {
            let audit = (actor.as_str(), "issue", input.principal.device.as_str());
            let request_id = self
                .hold_for_approval(&new_request, None, audit)
                .await?
                .ok_or_else(|| RaError::internal("a request held without a SCEP transaction was not recorded"))?;
            return Ok(Outcome::Pending { request_id });
        }
        let profile = profile_for(&template, &csr.key);
        let issued = self
            .issue_recorded(Recorded {
                previous_serial: None,
                device_id: device.id,
                requester: &actor,
                template_name: &template.name,
                kind: RequestKind::Enroll,
                csr_der: &csr.der,
                request: &request,
                profile: &profile,
                renewal_secs: template.renewal_secs,
                scep_transaction: None,
                audit: Audit { actor: &actor, action: "issue", subject: &input.principal.device, note: String::new() },
            })
            .await?;
        let Issue::New { request_id, serial, der } = issued else {
            return Err(RaError::internal("an enrollment without a predecessor or SCEP transaction was taken"));
        };
        Ok(Outcome::Issued(Issued {
            certificate_der: der,
            chain: self.chain_der(),
            request_id,
            serial: serial.0,
            template: template.name,
        }))
    }

    /// Marks the request (if one was recorded) denied and writes the audit event for a failure.
    pub(crate) async fn record_failure(&self, actor: &str, action: &str, subject: &str, e: &RaError) {
        if let Some(id) = e.request_id() {
            if let Err(err) = self.store.set_request_status(id, RequestStatus::Denied, e.code(), self.now()).await {
                tracing::error!(%err, "could not update request status");
            }
        }
        if self.audit_this_refusal(e) {
            self.audit(actor, action, subject, AuditOutcome::Refused, &format!("{}: {}", e.code(), e.detail())).await;
        }
    }
}

/// What a new certificate says: the subject from the request or the device's identity, SANs
/// from the request where the template allows them — every name checked against the template's
/// name policy (the device's own name, allowed suffixes and ranges, never the server's names).
/// What a new certificate will say: subject and names from the template's rules, checked
/// against its name policy. `vouched` says an administrator stands behind the device name (a
/// token or challenge made for it, an account's explicit device pattern): only then does the
/// device's own name pass without the template's DNS suffixes. A subject built from the device
/// name passes too when the certificate cannot authenticate a server (no serverAuth).
pub(crate) fn issue_request(
    csr: &CsrFacts,
    t: &Template,
    device: &str,
    vouched: bool,
    server: &ServerNames,
) -> Result<IssueRequest, Refusal> {
    let (dns_names, ip_addrs) =
        if t.allow_san { (csr.dns_names.clone(), csr.ip_addrs.clone()) } else { (vec![], vec![]) };
    let serves = t.has_eku(autoenroll_core::model::Eku::SERVER_AUTH);
    let (subject, cn, own_name) = match t.subject_from {
        SubjectFrom::Request => {
            if csr.subject.is_empty() && dns_names.is_empty() && ip_addrs.is_empty() {
                return Err(Refusal::SubjectRequired { template: t.name.clone() });
            }
            // One CN, in plain characters: a second CN or a NUL is what legacy name matching
            // gets wrong.
            let cns = autoenroll_core::pki::csr::common_names(&csr.subject);
            let bad = |detail: &str| Refusal::BadSubject { subject: csr.subject.to_string(), detail: detail.into() };
            if cns.len() > 1 {
                return Err(bad("more than one common name"));
            }
            if cns.iter().any(|cn| cn.chars().any(char::is_control)) {
                return Err(bad("control characters in the common name"));
            }
            (csr.subject.clone(), cns.into_iter().next(), vouched.then_some(device))
        }
        SubjectFrom::Identity => {
            let subject = autoenroll_keys::cn_name(device)
                .map_err(|e| Refusal::BadDeviceName { name: device.to_string(), reason: e.to_string() })?;
            (subject, Some(device.to_string()), (vouched || !serves).then_some(device))
        }
    };
    t.names.check(&t.name, own_name, cn.as_deref(), &dns_names, &ip_addrs, server)?;
    Ok(IssueRequest { subject, spki_der: csr.spki_der.clone(), dns_names, ip_addrs })
}

fn intent<'a>(
    r: &'a Recorded<'_>,
    prepared: &autoenroll_ca::Prepared,
    serial: &'a str,
    subject: &'a str,
    request_id: i64,
    (major, minor): (u32, u32),
    renew_after: UnixTime,
) -> CertificateIntent<'a> {
    CertificateIntent {
        serial,
        request_id,
        device_id: r.device_id,
        template: r.template_name,
        template_major: major,
        template_minor: minor,
        subject,
        not_before: prepared.not_before,
        not_after: prepared.not_after,
        previous_serial: r.previous_serial,
        renew_after,
    }
}
