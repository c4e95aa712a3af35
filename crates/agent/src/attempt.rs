//! One attempt for one template: the key (saved under `pending/` before anything is sent), the
//! request (enroll, renew signed with the current certificate or over TLS with it, or collect a
//! pending request), and the answer (saved before it goes live). A crash at any point resumes:
//! a pending key is reused, a received certificate only needs installing.
use crate::config::{AgentConfig, RenewalMode, TemplateOverrides};
use crate::credentials::Auth;
use crate::fault;
use crate::https::ClientIdentity;
use crate::localstore::{AttemptKind, Held, LocalStore, PendingMeta};
use crate::policy::{Enrollment, Policy, Template};
use crate::transport::{Answer, Transport};
use crate::AgentError;
use autoenroll_core::{TemplateRef, UnixTime};
use autoenroll_keys::KeyPair;
use autoenroll_proto::soap::HeaderToken;
use autoenroll_proto::xcep::ClientAuthentication;
use autoenroll_proto::{ns, wstep};

/// An issued certificate with the key it was issued for.
pub struct Outcome {
    pub key: KeyPair,
    pub cert: Vec<u8>,
    pub chain: Vec<Vec<u8>>,
}

/// How an attempt ended, short of an error.
pub enum Done {
    Issued(Outcome),
    /// Held for an administrator; ask again, not before `retry_after` seconds if the server said.
    Pending {
        retry_after: Option<u64>,
    },
}

pub struct Attempt<'a> {
    pub cfg: &'a AgentConfig,
    pub transport: &'a Transport<'a>,
    pub store: &'a LocalStore,
    pub policy: &'a Policy,
    pub now: UnixTime,
    pub device: &'a str,
}

fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
}

/// 1.3.6.1.4.1.311.21.7 in the request names the template (and version) unambiguously.
fn template_extension(t: &Template) -> Result<x509_cert::ext::Extension, AgentError> {
    let value = autoenroll_core::pki::template_ext::encode_template(&TemplateRef {
        oid: t.oid.clone(),
        major: t.major,
        minor: t.minor,
    })
    .map_err(|e| AgentError::Protocol(e.to_string()))?;
    Ok(x509_cert::ext::Extension {
        extn_id: autoenroll_core::oids::MS_CERTIFICATE_TEMPLATE,
        critical: false,
        extn_value: der::asn1::OctetString::new(value).map_err(|e| AgentError::Protocol(e.to_string()))?,
    })
}

impl Attempt<'_> {
    fn overrides(&self, t: &str) -> TemplateOverrides {
        self.cfg.templates.get(t).cloned().unwrap_or_default()
    }

    /// Subject and extensions for a request for `t`.
    fn request_parts(
        &self,
        t: &Template,
    ) -> Result<(x509_cert::name::Name, Vec<x509_cert::ext::Extension>), AgentError> {
        let o = self.overrides(&t.name);
        let cn = o.subject.clone().filter(|_| t.supplies_subject).unwrap_or_else(|| self.device.to_string());
        // An EST label names the template in the address instead.
        let mut exts = match self.policy.enrollment {
            Enrollment::Wstep(_) => vec![template_extension(t)?],
            Enrollment::Est(_) => vec![],
        };
        if t.supplies_san {
            let mut dns = o.dns_names.clone();
            if dns.is_empty() && is_dns_name(&cn) {
                dns.push(cn.clone());
            }
            if !dns.is_empty() {
                exts.push(autoenroll_keys::san_extension(&dns, &[])?);
            }
        }
        Ok((autoenroll_keys::cn_name(&cn)?, exts))
    }

    /// The key for a new attempt: a pending one (a retry keeps its key), the current one when
    /// configured and possible, or a fresh one. Saved under pending/ before anything is sent.
    async fn attempt_key(
        &self,
        t: &Template,
        held_key: Option<&KeyPair>,
        kind: AttemptKind,
    ) -> Result<KeyPair, AgentError> {
        if let Some(p) = self.store.pending(&t.name)? {
            if p.received.is_none() && p.meta.request_id.is_none() {
                return Ok(p.key);
            }
        }
        let o = self.overrides(&t.name);
        let key = match (o.reuse_key, held_key) {
            (true, Some(k)) => KeyPair::from_pkcs8_der(&k.to_pkcs8_der()?)?,
            _ => {
                let alg = match o.key_algorithm.as_deref() {
                    Some(a) => a.parse().map_err(|e| AgentError::Config(format!("templates.{}: {e}", t.name)))?,
                    None => t.key_algorithm,
                };
                tokio::task::spawn_blocking(move || KeyPair::generate(alg))
                    .await
                    .map_err(|e| AgentError::Protocol(format!("key generation task: {e}")))??
            }
        };
        self.store.begin_attempt(
            &t.name,
            &key,
            &PendingMeta { created_at: self.now.0, kind, request_id: None, not_before: None },
        )?;
        fault::point("after-keygen");
        Ok(key)
    }

    /// A new certificate, paid for with `auth`.
    pub async fn enroll(&self, t: &Template, auth: &Auth) -> Result<Done, AgentError> {
        let key = self.attempt_key(t, None, AttemptKind::Enroll).await?;
        let answer = self.send_enrollment(t, &key, auth).await?;
        self.keep_answer(t, key, answer, AttemptKind::Enroll)
    }

    /// An enrollment request for `key`: WSTEP's issue request, or EST's `simpleenroll` (which
    /// also collects a held request: EST knows it by the request itself).
    async fn send_enrollment(&self, t: &Template, key: &KeyPair, auth: &Auth) -> Result<Answer, AgentError> {
        let (subject, exts) = self.request_parts(t)?;
        let csr = autoenroll_keys::build_csr(key, subject, exts)?;
        match self.policy.enrollment {
            Enrollment::Wstep(_) => {
                let body = wstep::issue_request_body(&csr, &[("DeviceName", self.device)]);
                self.transport.submit(self.policy, auth.endpoint_auth(), &auth.header(), auth.identity(), body).await
            }
            Enrollment::Est(_) => self.transport.est_enroll(self.policy, &t.name, &csr, key.spki_der(), auth).await,
        }
    }

    /// A successor for `held`, proving possession of its key: a request signed with it, or (in
    /// `tls` mode, for clientAuth certificates) it as the TLS client certificate.
    pub async fn renew(&self, t: &Template, held: &Held) -> Result<Done, AgentError> {
        let old_key = self.store.live_key(&t.name)?;
        let key = self.attempt_key(t, Some(&old_key), AttemptKind::Renew).await?;
        let (subject, exts) = self.request_parts(t)?;
        let mode = self.overrides(&t.name).renewal_mode.unwrap_or(self.cfg.renewal_mode);
        let answer = if let Enrollment::Est(_) = self.policy.enrollment {
            self.renew_over_est(t, held, &key, subject, exts).await?
        } else if mode == RenewalMode::Tls && held.facts.has_client_auth() {
            // ROBO: the current certificate is the TLS client certificate.
            let csr = autoenroll_keys::build_csr(&key, subject, exts)?;
            let mut chain = vec![held.cert_der.clone()];
            chain.extend(self.store.live_chain(&t.name)?.into_iter().take(1));
            let identity = ClientIdentity { chain, key_pkcs8: old_key.to_pkcs8_der()? };
            let body = wstep::token_request_body(ns::REQUEST_TYPE_RENEW, ns::VALUE_TYPE_PKCS10, &csr);
            self.transport
                .submit(self.policy, Some(ClientAuthentication::Certificate), &HeaderToken::None, Some(&identity), body)
                .await?
        } else {
            if mode == RenewalMode::Tls {
                tracing::info!(template = %t.name, "no clientAuth usage: renewing with a signed request instead of TLS");
            }
            // A PKCS#10 naming the old certificate, inside a SignedData made with the old key.
            let csr = autoenroll_keys::build_renewal_csr(&key, subject, exts, &held.cert_der)?;
            let signed = autoenroll_keys::sign_cms(&csr, &held.cert_der, &old_key, true)?;
            let body = wstep::token_request_body(ns::REQUEST_TYPE_ISSUE, ns::VALUE_TYPE_PKCS7, &signed);
            self.transport
                .submit(self.policy, Some(ClientAuthentication::Anonymous), &HeaderToken::None, None, body)
                .await?
        };
        self.keep_answer(t, key, answer, AttemptKind::Renew)
    }

    /// An EST renewal. RFC 7030 section 4.2.2 authenticates `simplereenroll` with the certificate
    /// it renews as the TLS client certificate; one whose usages exclude client authentication
    /// cannot be that, so it is replaced by a new `simpleenroll` paid for with an account or
    /// another client certificate.
    async fn renew_over_est(
        &self,
        t: &Template,
        held: &Held,
        key: &KeyPair,
        subject: x509_cert::name::Name,
        exts: Vec<x509_cert::ext::Extension>,
    ) -> Result<Answer, AgentError> {
        // No EKU extension at all: any usage (RFC 5280 section 4.2.1.12).
        if held.facts.has_client_auth() || held.facts.ext_key_usage.is_empty() {
            return self.send_reenrollment(t, held, key).await;
        }
        tracing::info!(template = %t.name, "no clientAuth usage: EST renews it with a new enrollment");
        let auth = crate::credentials::for_reenrollment(self.cfg, self.store, self.now)?.ok_or_else(|| {
            AgentError::Config(format!(
                "the {} certificate cannot authenticate its own EST re-enrollment (no clientAuth usage): \
                 configure an account, or hold a clientAuth certificate from another label",
                t.name
            ))
        })?;
        let csr = autoenroll_keys::build_csr(key, subject, exts)?;
        self.transport.est_enroll(self.policy, &t.name, &csr, key.spki_der(), &auth).await
    }

    /// `simplereenroll` for `key`, over TLS with `held`. The request's subject and subject
    /// alternative names are the held certificate's, as section 4.2.2 requires.
    async fn send_reenrollment(&self, t: &Template, held: &Held, key: &KeyPair) -> Result<Answer, AgentError> {
        use der::Decode;
        let bad = |e: der::Error| AgentError::Protocol(format!("the held certificate: {e}"));
        let cert = x509_cert::Certificate::from_der(&held.cert_der).map_err(bad)?;
        let tbs = cert.tbs_certificate();
        let san = tbs
            .extensions()
            .into_iter()
            .flatten()
            .filter(|e| e.extn_id == autoenroll_core::oids::CE_SUBJECT_ALT_NAME)
            .cloned()
            .collect();
        let csr = autoenroll_keys::build_csr(key, tbs.subject().clone(), san)?;
        let old_key = self.store.live_key(&t.name)?;
        let mut chain = vec![held.cert_der.clone()];
        chain.extend(self.store.live_chain(&t.name)?.into_iter().take(1));
        let current = ClientIdentity { chain, key_pkcs8: old_key.to_pkcs8_der()? };
        self.transport.est_reenroll(self.policy, &t.name, &csr, key.spki_der(), &current).await
    }

    /// Asks for the outcome of a pending request (QueryTokenStatus), as the requester who made
    /// it (the server tells nobody else).
    pub async fn retrieve(&self, t: &Template, request_id: &str, auth: &Auth) -> Result<Done, AgentError> {
        let pending =
            self.store.pending(&t.name)?.ok_or_else(|| AgentError::Protocol("pending state vanished".into()))?;
        let answer = match self.policy.enrollment {
            Enrollment::Wstep(_) => {
                let body = wstep::query_request_body(request_id);
                self.transport.submit(self.policy, auth.endpoint_auth(), &auth.header(), auth.identity(), body).await
            }
            // The same request again (same key, same label, same operation) is answered with
            // its decision.
            Enrollment::Est(_) => match (crate::est::held_operation(request_id), self.store.current(&t.name)?) {
                (crate::est::SIMPLEREENROLL, Some(held)) => self.send_reenrollment(t, &held, &pending.key).await,
                _ => self.send_enrollment(t, &pending.key, auth).await,
            },
        };
        match answer {
            Ok(answer) => self.keep_answer(t, pending.key, answer, pending.meta.kind),
            Err(e) if e.is_final_refusal() && self.ends_held_request(&e) => {
                // Denied (or unknown): this attempt is over; the next one starts afresh.
                self.store.clear_pending(&t.name)?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether refusal `e` of a held request's collection lets its key go: always for WSTEP
    /// (the server knows the request by its id), only a denial for EST (sending the same request
    /// again is never harmful there, and a wrong password or a busy server is not an answer).
    pub fn ends_held_request(&self, e: &AgentError) -> bool {
        match self.policy.enrollment {
            Enrollment::Wstep(_) => true,
            Enrollment::Est(_) => crate::est::ends_held_request(e),
        }
    }

    /// Saves the answer under pending/ (so a crash after this point still installs it).
    fn keep_answer(&self, t: &Template, key: KeyPair, answer: Answer, kind: AttemptKind) -> Result<Done, AgentError> {
        match answer {
            Answer::Issued { cert, chain } => {
                self.store.save_received(&t.name, &cert, &chain)?;
                fault::point("after-receive");
                Ok(Done::Issued(Outcome { key, cert, chain }))
            }
            Answer::Pending { request_id, retry_after } => {
                tracing::info!(template = %t.name, %request_id, "request pending approval");
                self.store.save_pending_meta(
                    &t.name,
                    &PendingMeta {
                        created_at: self.now.0,
                        kind,
                        request_id: Some(request_id),
                        not_before: retry_after.map(|s| self.now.plus_secs(i64::try_from(s).unwrap_or(i64::MAX)).0),
                    },
                )?;
                Ok(Done::Pending { retry_after })
            }
        }
    }
}
