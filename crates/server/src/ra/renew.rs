//! Renewal: a new certificate for the holder of a current one, authenticated by possession of
//! its key, either as the signer of a CMS SignedData around the new PKCS#10 or as the TLS client
//! certificate of the connection (ROBO). Every check has its own reason code and audit event.
use super::auth::Principal;
use super::enroll::{csr_error, Issue, Issued, Recorded};
use super::templates::profile_for;
use super::{Ra, RaError};
use autoenroll_ca::IssueRequest;
use autoenroll_core::model::{AuditOutcome, CertState, RequestKind, RevocationReason};
use autoenroll_core::pki::cert::verify_issued_by;
use autoenroll_core::pki::{cms, CertFacts, CsrFacts, PkiError};
use autoenroll_core::renewal::Held;
use autoenroll_core::{Refusal, Thumbprint};

/// Which rule opens the renewal window: the Windows autoenrollment rule
/// (`not_after - min(period, lifetime/5)`) or the MDM one (`not_after - RenewPeriod`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Autoenrollment,
    Mdm,
}

/// How the caller proved possession of the old certificate's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    SignedRequest,
    ClientTls,
    /// A SCEP request signed with the old certificate.
    ScepSigned,
    /// An ACME order of the account the old certificate's device is bound to.
    Acme,
}

impl Ra {
    /// A CMS SignedData (DER or BER) whose content is the new PKCS#10, signed by the old key.
    /// `caller` is any other authentication on the request (it must be the same device).
    pub async fn renew_signed(
        &self,
        cms_der: &[u8],
        caller: Option<&Principal>,
        window: Window,
    ) -> Result<Issued, RaError> {
        let req = match cms::verify_renewal(cms_der) {
            Ok(r) => r,
            Err(e) => {
                let e = RaError::from(match e {
                    PkiError::BadSignature => Refusal::BadRenewalSignature,
                    other => csr_error(other),
                });
                self.record_failure("anonymous", "renew", "-", &e).await;
                return Err(e);
            }
        };
        self.renew(req.csr, &req.signer_cert_der, Proof::SignedRequest, caller, window).await
    }

    /// ROBO: a plain PKCS#10 on a TLS connection authenticated by the certificate it renews.
    pub async fn renew_over_tls(
        &self,
        csr_der: &[u8],
        client_cert_der: &[u8],
        window: Window,
    ) -> Result<Issued, RaError> {
        let csr = match CsrFacts::parse(csr_der) {
            Ok(c) => c,
            Err(e) => {
                let e = RaError::from(csr_error(e));
                self.record_failure("anonymous", "renew", "-", &e).await;
                return Err(e);
            }
        };
        self.renew(csr, client_cert_der, Proof::ClientTls, None, window).await
    }

    pub(crate) async fn renew(
        &self,
        csr: CsrFacts,
        old_der: &[u8],
        proof: Proof,
        caller: Option<&Principal>,
        window: Window,
    ) -> Result<Issued, RaError> {
        let old = CertFacts::parse(old_der).map_err(|e| Refusal::BadCertificate { detail: e.to_string() })?;
        let actor = format!("cert:{}", old.serial);
        let result = self.renew_inner(&csr, old_der, &old, proof, caller, window).await;
        // Success is audited with the certificate, in the same transaction.
        if let Err(e) = &result {
            self.record_failure(&actor, "renew", &old.serial.0, e).await;
        }
        result
    }

    async fn renew_inner(
        &self,
        csr: &CsrFacts,
        old_der: &[u8],
        old: &CertFacts,
        proof: Proof,
        caller: Option<&Principal>,
        window: Window,
    ) -> Result<Issued, RaError> {
        let now = self.now();
        // 1. Ours, and known.
        if verify_issued_by(old_der, &self.ca.issuing_der()).is_err() {
            return Err(Refusal::ForeignCertificate.into());
        }
        let row = self
            .store
            .certificate_by_thumbprint(Thumbprint::of_der(old_der).as_str())
            .await?
            .ok_or(Refusal::UnknownCertificate)?;
        // 2. Still good. One exception: revoked as superseded (the grace ran out) while its
        // successor waited for a client that lost the answer: the same key gets that successor
        // (it proves nothing new: whoever has the key has the certificate already).
        if row.state == CertState::Revoked {
            if row.revocation_reason == Some(RevocationReason::Superseded) {
                if let Some(s) = self.store.successor(&row.serial).await? {
                    let same_key =
                        s.der.as_deref().is_some_and(|d| CertFacts::parse(d).is_ok_and(|f| f.spki_der == csr.spki_der));
                    if s.state == CertState::Issued && s.not_after > now && same_key {
                        if let Some(der) = s.der.clone() {
                            return Ok(self.issued_from(s, der));
                        }
                    }
                }
            }
            return Err(Refusal::CertificateRevoked { serial: row.serial }.into());
        }
        if now >= old.not_after {
            return Err(Refusal::CertificateExpired.into());
        }
        // 3. The same device, not blocked.
        let device = self
            .store
            .device_by_id(row.device_id)
            .await?
            .ok_or_else(|| RaError::internal("certificate without device"))?;
        if device.is_blocked() {
            return Err(Refusal::DeviceBlocked { device: device.name }.into());
        }
        if let Some(c) = caller {
            // An account names its device itself, so for accounts only the one the device is
            // bound to counts (manual MDM renewal re-sends the user's credentials, generation
            // after generation); tokens and certificates are bound to their device.
            let allowed = match &c.kind {
                super::auth::PrincipalKind::Account { .. } => device.owner.as_deref() == Some(c.actor().as_str()),
                _ => c.device == device.name,
            };
            if !allowed {
                return Err(Refusal::DeviceMismatch { actor: c.actor(), device: device.name }.into());
            }
        }
        if let Some(named) = &csr.renewal_cert_der {
            if named.as_slice() != old_der {
                return Err(Refusal::RenewalCertificateMismatch.into());
            }
        }
        // The certificate is in use: its own predecessor may go now.
        self.note_use(&row).await?;
        // One certificate has one live successor: a repeated (or racing) renewal gets the same
        // one; one that never went into service is replaced.
        if let Some(existing) = self.existing_successor(&row.serial, &csr.spki_der).await? {
            return Ok(existing);
        }
        // 4. The template still allows it, and the window is open.
        let template = match self.find_template(&row.template).await? {
            Some(t) if t.enroll => t,
            _ => return Err(Refusal::TemplateNotAllowed { template: row.template }.into()),
        };
        renewal_open(&row, old, &template, window, now)?;
        // 5. Key policy.
        if csr.spki_der == old.spki_der && !template.key.same_key_renewal {
            return Err(Refusal::SameKeyNotAllowed { template: template.name }.into());
        }
        template.check_key(&csr.key)?;

        // 6. Names: what was approved for the old certificate (or, where the template allows,
        // a subset of it): a name change is a new enrollment, with its approval rules.
        let request = renewal_request(csr, old, &template);
        // Kept names were approved once, maybe under older rules: never the server's own names
        // or a wildcard the template does not allow (certificates from before the trust model).
        let cn = autoenroll_core::pki::csr::common_name(&request.subject);
        template.names.check_kept(
            &template.name,
            cn.as_deref(),
            &request.dns_names,
            &request.ip_addrs,
            &self.settings.server_names,
        )?;
        let profile = profile_for(&template, &csr.key);
        let kind = match proof {
            Proof::SignedRequest => RequestKind::Renew,
            Proof::ClientTls => RequestKind::RenewTls,
            Proof::ScepSigned => RequestKind::RenewScep,
            Proof::Acme => RequestKind::RenewAcme,
        };
        let requester = format!("cert:{}", row.serial);
        let issued = self
            .issue_recorded(Recorded {
                audit: super::enroll::Audit {
                    actor: &requester,
                    action: "renew",
                    subject: &row.serial,
                    note: format!(" renews {} ({proof:?})", row.serial),
                },
                previous_serial: Some(&row.serial),
                device_id: device.id,
                requester: &requester,
                template_name: &template.name,
                kind,
                csr_der: &csr.der,
                request: &request,
                profile: &profile,
                renewal_secs: template.renewal_secs,
                scep_transaction: None,
            })
            .await?;
        match issued {
            Issue::New { request_id, serial, der } => Ok(Issued {
                certificate_der: der,
                chain: self.chain_der(),
                request_id,
                serial: serial.0,
                template: template.name,
            }),
            // Another renewal of the same certificate got there first.
            Issue::Taken => match self.successor_of(&row.serial).await? {
                Some(s) if same_key(&s, &csr.spki_der) => Ok(s),
                Some(s) => Err(Refusal::AlreadyRenewed { serial: row.serial, successor: s.serial }.into()),
                None => Err(RaError::internal(format!("the successor of {} vanished", row.serial))),
            },
        }
    }

    /// What an earlier renewal of `serial` left: the same certificate again for the same key (a
    /// client that lost the answer, or a racing duplicate); None when a new successor may be
    /// issued — there is none, or the one there never went into service (issued within a day
    /// and never used, or a signature that never completed) and is now revoked as superseded. A revoked
    /// successor ends the line; one in service cannot be doubled.
    async fn existing_successor(&self, serial: &str, spki_der: &[u8]) -> Result<Option<Issued>, RaError> {
        let now = self.now();
        let Some(s) = self.store.successor(serial).await? else { return Ok(None) };
        let stale_before = now.minus_secs(STALE_SIGNING_SECS);
        match s.state {
            CertState::Revoked => return Err(Refusal::CertificateRevoked { serial: s.serial }.into()),
            CertState::Signing if s.created_at >= stale_before => {
                // Being signed right now: wait for it.
                return match self.successor_of(serial).await? {
                    Some(i) if same_key(&i, spki_der) => Ok(Some(i)),
                    Some(i) => Err(Refusal::AlreadyRenewed { serial: serial.to_string(), successor: i.serial }.into()),
                    None => Ok(None),
                };
            }
            CertState::Issued => {
                if let Some(der) = &s.der {
                    if CertFacts::parse(der).is_ok_and(|f| f.spki_der == spki_der) {
                        return Ok(Some(self.issued_from(s.clone(), der.clone())));
                    }
                }
            }
            CertState::Signing | CertState::Renewed => {}
        }
        let issued_after = now.minus_secs(REPLACE_UNUSED_WITHIN_SECS);
        if self.store.release_successor(serial, &s.serial, stale_before, issued_after, now).await? {
            let detail = format!("superseded (never used; {serial} is renewed again)");
            self.audit("server", "cert.revoke", &s.serial, AuditOutcome::Ok, &detail).await;
            return Ok(None);
        }
        Err(Refusal::AlreadyRenewed { serial: serial.to_string(), successor: s.serial }.into())
    }

    pub(super) fn issued_from(&self, c: autoenroll_store::Certificate, der: Vec<u8>) -> Issued {
        Issued {
            certificate_der: der,
            chain: self.chain_der(),
            request_id: c.request_id,
            serial: c.serial,
            template: c.template,
        }
    }

    /// The certificate that renewed `serial`, once signed (a racing renewal may still be
    /// signing it: wait a little, then say so).
    pub(crate) async fn successor_of(&self, serial: &str) -> Result<Option<Issued>, RaError> {
        for _ in 0..50 {
            let Some(c) = self.store.successor(serial).await? else { return Ok(None) };
            if let (false, Some(der)) = (c.state == CertState::Signing, c.der.clone()) {
                return Ok(Some(self.issued_from(c, der)));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Err(Refusal::RenewalInProgress { serial: serial.to_string() }.into())
    }
}

/// Whether a certificate may renew now: its template's major version went up, or its renewal
/// window is open (less a grace for early manual renewal and a little clock skew), or the
/// server's own renewal time for it has come ("renew now" for a cohort moves it).
pub(crate) fn renewal_open(
    row: &autoenroll_store::Certificate,
    old: &CertFacts,
    template: &autoenroll_core::model::Template,
    window: Window,
    now: autoenroll_core::UnixTime,
) -> Result<(), Refusal> {
    if row.template_major < template.major {
        return Ok(());
    }
    // The same rule the agent decides with (core::renewal), server-side.
    let rule = match window {
        Window::Autoenrollment => template.renewal_rule(),
        Window::Mdm => template.mdm_rule(),
    };
    let opens = rule.due_at(&Held {
        not_before: old.not_before,
        not_after: old.not_after,
        template: old.template.clone(),
        revoked: false,
    });
    let skew = (old.lifetime_secs() / 20).min(60);
    let server_says_due = row.renew_after.is_some_and(|t| now >= t);
    if now < opens.minus_secs(template.renewal_grace_secs + skew) && !server_says_due {
        return Err(Refusal::OutsideRenewalWindow { serial: row.serial.clone(), opens });
    }
    Ok(())
}

/// An intent still signing after this long was abandoned (the signer died).
pub(crate) const STALE_SIGNING_SECS: i64 = 300;
/// An unused successor may be replaced by a renewal with another key this long after it was
/// issued (a client that lost the answer and made a new key); later, the old key could only
/// be someone else's copy.
const REPLACE_UNUSED_WITHIN_SECS: i64 = 86_400;

fn same_key(issued: &Issued, spki_der: &[u8]) -> bool {
    CertFacts::parse(&issued.certificate_der).is_ok_and(|f| f.spki_der == spki_der)
}

/// A renewal's certificate request: the new key, the old certificate's subject and names — or
/// the request's names where the template allows a subset and they are one.
fn renewal_request(csr: &CsrFacts, old: &CertFacts, t: &autoenroll_core::model::Template) -> IssueRequest {
    let subset = t.names.renewal_subset
        && !(csr.dns_names.is_empty() && csr.ip_addrs.is_empty())
        && csr.dns_names.iter().all(|n| old.dns_names.iter().any(|o| o.eq_ignore_ascii_case(n)))
        && csr.ip_addrs.iter().all(|ip| old.ip_addrs.contains(ip));
    let (dns_names, ip_addrs) = if subset {
        (csr.dns_names.clone(), csr.ip_addrs.clone())
    } else {
        (old.dns_names.clone(), old.ip_addrs.clone())
    };
    IssueRequest { subject: old.subject_name.clone(), spki_der: csr.spki_der.clone(), dns_names, ip_addrs }
}
