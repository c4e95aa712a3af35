//! One enrollment cycle (policy → per-template decision → enroll, renew or retrieve → atomic
//! install → hooks) and the daemon loop that sleeps until the next decision time.
use crate::config::{AgentConfig, RenewalMode, TemplateOverrides};
use crate::fault;
use crate::hooks::{self, HookEnv};
use crate::https::{Client, ClientIdentity};
use crate::localstore::{Held, LocalStore, PendingMeta, PolicyTemplateState, State};
use crate::policy::{self, Policy, Template};
use crate::AgentError;
use autoenroll_core::clock::Clock;
use autoenroll_core::pki::cert::verify_issued_by;
use autoenroll_core::renewal::{self, Backoff, Decision, Reason, RenewalRule};
use autoenroll_core::{TemplateRef, UnixTime};
use autoenroll_keys::KeyPair;
use autoenroll_proto::soap::{self, HeaderToken};
use autoenroll_proto::{ns, pkcs7, wstep, xcep};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

const SOAP_CONTENT_TYPE: &str = "application/soap+xml; charset=utf-8";
/// How soon a failed cycle (no policy) is retried by the daemon.
const CYCLE_RETRY_SECS: i64 = 60;

#[derive(Debug, Default)]
pub struct CycleReport {
    /// (template, serial) newly enrolled.
    pub enrolled: Vec<(String, String)>,
    /// (template, old serial, new serial).
    pub renewed: Vec<(String, String, String)>,
    /// Templates whose certificate is valid and not yet due.
    pub kept: Vec<String>,
    /// Templates waiting: backoff after a failure, or a pending request.
    pub waiting: Vec<(String, UnixTime)>,
    /// (template, error).
    pub failed: Vec<(String, String)>,
    pub next_wake: Option<UnixTime>,
}

impl CycleReport {
    /// 0 all good, 1 some template failed.
    pub fn exit_code(&self) -> i32 {
        if self.failed.is_empty() {
            0
        } else {
            1
        }
    }
}

/// What the agent tells the server at check-in.
#[derive(Debug, Default, Serialize)]
struct CheckinReport {
    certificates: Vec<HeldCertificate>,
    errors: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
struct HeldCertificate {
    template: String,
    thumbprint: String,
}

/// The server's answer; unknown actions are ignored (newer servers may say more).
#[derive(Debug, Deserialize)]
struct CheckinAnswer {
    blocked: bool,
    directives: Vec<CheckinDirective>,
}

#[derive(Debug, Deserialize)]
struct CheckinDirective {
    template: String,
    action: String,
}

/// Which templates `renew --now` forces.
#[derive(Debug, Clone, Default)]
pub enum Force {
    #[default]
    None,
    All,
    Templates(Vec<String>),
}

impl Force {
    fn covers(&self, template: &str) -> bool {
        match self {
            Force::None => false,
            Force::All => true,
            Force::Templates(t) => t.iter().any(|x| x == template),
        }
    }
}

/// Injected randomness for retry jitter: a number in [0, 1).
pub trait Jitter: Send + Sync {
    fn next(&self) -> f64;
}

pub struct SystemJitter;

impl Jitter for SystemJitter {
    fn next(&self) -> f64 {
        let b = autoenroll_keys::random_bytes(8).unwrap_or_else(|_| vec![0; 8]);
        let n = u64::from_be_bytes(b.try_into().unwrap_or([0; 8]));
        (n >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// How this agent authenticates a request that needs credentials.
enum Auth {
    Password(String, String),
    Certificate(ClientIdentity),
    Token(String),
}

impl Auth {
    fn header(&self) -> HeaderToken {
        match self {
            Auth::Password(u, p) => HeaderToken::UsernameToken { username: u.clone(), password: p.clone() },
            Auth::Token(t) => {
                HeaderToken::Binary { value_type: ns::VALUE_TYPE_BOOTSTRAP_TOKEN.into(), value: t.as_bytes().to_vec() }
            }
            Auth::Certificate(_) => HeaderToken::None,
        }
    }
    fn identity(&self) -> Option<&ClientIdentity> {
        match self {
            Auth::Certificate(id) => Some(id),
            _ => None,
        }
    }
    /// The XCEP clientAuthentication value of endpoints this credential fits.
    fn endpoint_auth(&self) -> Option<u32> {
        match self {
            Auth::Password(..) => Some(4),
            Auth::Certificate(_) => Some(8),
            Auth::Token(_) => None,
        }
    }
}

struct Ctx<'a> {
    cfg: &'a AgentConfig,
    clock: Arc<dyn Clock>,
    roots: Vec<Vec<u8>>,
    store: LocalStore,
    state: State,
    now: UnixTime,
    device: String,
}

/// An issued certificate with the key it was issued for.
struct Outcome {
    key: KeyPair,
    cert: Vec<u8>,
    chain: Vec<Vec<u8>>,
}

enum Answer {
    Issued { cert: Vec<u8>, chain: Vec<Vec<u8>> },
    Pending { request_id: String },
}

impl Ctx<'_> {
    fn overrides(&self, t: &str) -> TemplateOverrides {
        self.cfg.templates.get(t).cloned().unwrap_or_default()
    }

    /// Accounts first (they can enroll again and again), then our own client certificate,
    /// then a bootstrap token that has not been spent.
    fn auth(&self) -> Result<Option<Auth>, AgentError> {
        if let Some((u, p)) = self.cfg.password()? {
            return Ok(Some(Auth::Password(u, p)));
        }
        if let Some(id) = self.store.client_identity(self.clock.now())? {
            return Ok(Some(Auth::Certificate(id)));
        }
        if let Some(t) = self.cfg.bootstrap_token()? {
            if !self.state.spent_tokens.contains(&autoenroll_keys::sha256_hex(t.as_bytes())) {
                return Ok(Some(Auth::Token(t)));
            }
        }
        Ok(None)
    }

    async fn call(
        &self,
        url: &str,
        action: &str,
        header: &HeaderToken,
        identity: Option<&ClientIdentity>,
        body: autoenroll_proto::xml::W,
    ) -> Result<soap::Envelope, AgentError> {
        let client = Client::new(&self.roots, identity, self.clock.clone())?;
        let message_id = format!("urn:uuid:{}", hex::encode(autoenroll_keys::random_bytes(16)?));
        let envelope = soap::request(action, url, &message_id, header, body);
        let resp = client.post(url, SOAP_CONTENT_TYPE, envelope.into_bytes()).await?;
        let transport = |m: String| AgentError::Transport { url: url.to_string(), message: m };
        let env = match resp.status {
            200 | 500 => {
                soap::parse_envelope(&resp.body).map_err(|e| transport(format!("HTTP {}: {e}", resp.status)))?
            }
            s @ 300..=399 => {
                let to = resp.location.unwrap_or_else(|| "?".into());
                return Err(transport(format!("HTTP {s}: the server redirects to {to}; redirects are never followed")));
            }
            s => return Err(transport(format!("HTTP status {s}"))),
        };
        if let Some(f) = soap::parse_fault(&env) {
            return Err(AgentError::Refused { code: f.subcode.unwrap_or(f.code), reason: f.reason });
        }
        Ok(env)
    }

    /// Reports what this device holds to the policy server's host and returns its directives;
    /// None when check-in is off, there is no certificate or token to authenticate with, or no
    /// server answered (local rules then decide alone).
    async fn checkin(&self, policy: &Policy) -> Option<CheckinAnswer> {
        if !self.cfg.checkin {
            return None;
        }
        let identity = self.store.client_identity(self.clock.now()).ok().flatten();
        let token = match &identity {
            Some(_) => None,
            None => self
                .cfg
                .bootstrap_token()
                .ok()
                .flatten()
                .filter(|t| !self.state.spent_tokens.contains(&autoenroll_keys::sha256_hex(t.as_bytes()))),
        };
        if identity.is_none() && token.is_none() {
            return None;
        }
        let mut report = CheckinReport::default();
        for t in &policy.templates {
            if let Ok(Some(h)) = self.store.current(&t.name) {
                report.certificates.push(HeldCertificate {
                    template: t.name.clone(),
                    thumbprint: autoenroll_core::Thumbprint::of_der(&h.cert_der).as_str().to_string(),
                });
            }
            if let Some(e) = self.state.templates.get(&t.name).and_then(|s| s.last_error.clone()) {
                report.errors.insert(t.name.clone(), e);
            }
        }
        let body = serde_json::to_vec(&report).ok()?;
        let client = Client::new(&self.roots, identity.as_ref(), self.clock.clone()).ok()?;
        let mut servers = self.cfg.policy_servers.clone();
        servers.sort_by_key(|s| s.priority);
        for s in &servers {
            let Ok(uri) = s.url.parse::<http::Uri>() else { continue };
            let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else { continue };
            let url = format!("{scheme}://{authority}/checkin");
            let resp = match &token {
                Some(t) => client.post_bearer(&url, "application/json", body.clone(), t).await,
                None => client.post(&url, "application/json", body.clone()).await,
            };
            match resp {
                Ok(r) if r.status == 200 => match serde_json::from_slice::<CheckinAnswer>(&r.body) {
                    Ok(a) => return Some(a),
                    Err(e) => tracing::warn!(%url, %e, "unreadable check-in answer"),
                },
                Ok(r) => tracing::warn!(%url, status = r.status, "check-in refused"),
                Err(e) => tracing::warn!(%url, %e, "check-in failed"),
            }
        }
        None
    }

    async fn fetch_policy(&self, auth: &Auth) -> Result<Policy, AgentError> {
        let mut servers = self.cfg.policy_servers.clone();
        servers.sort_by_key(|s| s.priority);
        let mut last = None;
        for s in &servers {
            match self
                .call(&s.url, ns::ACTION_GET_POLICIES, &auth.header(), auth.identity(), xcep::request_body(None))
                .await
            {
                Ok(env) => return policy::from_wire(&xcep::parse_response(&env.body)?),
                // A refusal is an answer: another server of the same policy would say the same.
                Err(e @ AgentError::Refused { .. }) => return Err(e),
                Err(e) => {
                    tracing::warn!(url = %s.url, %e, "policy server unreachable, trying the next");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| AgentError::Config("no policy server".into())))
    }

    /// Sends `body` to the policy's enrollment endpoints whose authentication fits, in priority
    /// order, failing over on transport errors only.
    async fn submit(
        &self,
        policy: &Policy,
        wanted_auth: Option<u32>,
        header: &HeaderToken,
        identity: Option<&ClientIdentity>,
        body: autoenroll_proto::xml::W,
    ) -> Result<Answer, AgentError> {
        let endpoints: Vec<_> = policy.endpoints.iter().filter(|e| wanted_auth.is_none_or(|w| w == e.auth)).collect();
        let endpoints = if endpoints.is_empty() { policy.endpoints.iter().collect() } else { endpoints };
        let mut last = None;
        for e in endpoints {
            match self.call(&e.url, ns::ACTION_WSTEP, header, identity, body.clone()).await {
                Ok(env) => {
                    fault::point("after-submit");
                    let r = wstep::parse_response(&env.body)?;
                    return match (r.certificate_der, r.request_id) {
                        (Some(cert), _) => {
                            let chain = self.chain_for(&cert, r.chain_pkcs7_der.as_deref(), policy)?;
                            Ok(Answer::Issued { cert, chain })
                        }
                        (None, Some(request_id)) if r.pending_reference.is_some() => Ok(Answer::Pending { request_id }),
                        _ => Err(AgentError::Protocol(format!(
                            "neither a certificate nor a pending request in the response ({:?})",
                            r.disposition
                        ))),
                    };
                }
                Err(e @ AgentError::Refused { .. }) => return Err(e),
                Err(err) => {
                    tracing::warn!(url = %e.url, %err, "enrollment endpoint failed, trying the next");
                    last = Some(err);
                }
            }
        }
        Err(last.unwrap_or_else(|| AgentError::Protocol("the policy lists no enrollment endpoint".into())))
    }

    /// The chain above `cert` (issuing CA, then root), checked against our trust anchor. A
    /// PKCS#7 SET OF certificates carries no order, so the chain is rebuilt by signature.
    fn chain_for(&self, cert: &[u8], pkcs7_der: Option<&[u8]>, policy: &Policy) -> Result<Vec<Vec<u8>>, AgentError> {
        let mut candidates: Vec<Vec<u8>> = match pkcs7_der {
            Some(p) => pkcs7::certificates(p)?.into_iter().filter(|c| c.as_slice() != cert).collect(),
            None => Vec::new(),
        };
        candidates.extend(policy.issuing_ca_der.clone());
        let bad = |m: &str| AgentError::Protocol(format!("issued certificate rejected: {m}"));
        let issuing = candidates
            .into_iter()
            .find(|c| verify_issued_by(cert, c).is_ok())
            .ok_or_else(|| bad("no CA certificate in the response signed it"))?;
        if self.roots.contains(&issuing) {
            return Ok(vec![issuing]);
        }
        let root = self
            .roots
            .iter()
            .find(|r| verify_issued_by(&issuing, r).is_ok())
            .ok_or_else(|| bad("the issuing CA does not chain to our trust anchor"))?;
        Ok(vec![issuing, root.clone()])
    }

    /// Subject and extensions for a request for `t`.
    fn request_parts(
        &self,
        t: &Template,
    ) -> Result<(x509_cert::name::Name, Vec<x509_cert::ext::Extension>), AgentError> {
        let o = self.overrides(&t.name);
        let cn = o.subject.clone().filter(|_| t.supplies_subject).unwrap_or_else(|| self.device.clone());
        let mut exts = vec![template_extension(t)?];
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
    async fn attempt_key(&self, t: &Template, held_key: Option<&KeyPair>, kind: &str) -> Result<KeyPair, AgentError> {
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
                    Some(a) => a.parse()?,
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
            &PendingMeta { created_at: self.now.0, kind: kind.into(), request_id: None },
        )?;
        fault::point("after-keygen");
        Ok(key)
    }

    async fn enroll(&self, policy: &Policy, t: &Template, auth: &Auth) -> Result<Option<Outcome>, AgentError> {
        let key = self.attempt_key(t, None, "enroll").await?;
        let (subject, exts) = self.request_parts(t)?;
        let csr = autoenroll_keys::build_csr(&key, subject, exts)?;
        let body = wstep::issue_request_body(&csr, &[("DeviceName", self.device.as_str())]);
        let answer = self.submit(policy, auth.endpoint_auth(), &auth.header(), auth.identity(), body).await?;
        self.keep_answer(t, key, answer, "enroll")
    }

    async fn renew(&self, policy: &Policy, t: &Template, held: &Held) -> Result<Option<Outcome>, AgentError> {
        let old_key = KeyPair::from_pem(
            &std::fs::read_to_string(held.dir.join("key.pem"))
                .map_err(|e| AgentError::Store { path: held.dir.display().to_string(), message: e.to_string() })?,
        )?;
        let key = self.attempt_key(t, Some(&old_key), "renew").await?;
        let (subject, exts) = self.request_parts(t)?;
        let o = self.overrides(&t.name);
        let mode = o.renewal_mode.unwrap_or(self.cfg.renewal_mode);
        let answer = if mode == RenewalMode::Tls && held.facts.has_client_auth() {
            // ROBO: the current certificate is the TLS client certificate.
            let csr = autoenroll_keys::build_csr(&key, subject, exts)?;
            let mut chain = vec![held.cert_der.clone()];
            chain.extend(self.store.live_chain(&t.name)?.into_iter().take(1));
            let identity = ClientIdentity { chain, key_pkcs8: old_key.to_pkcs8_der()? };
            let body = wstep::token_request_body(ns::REQUEST_TYPE_RENEW, ns::VALUE_TYPE_PKCS10, &csr);
            self.submit(policy, Some(8), &HeaderToken::None, Some(&identity), body).await?
        } else {
            if mode == RenewalMode::Tls {
                tracing::info!(template = %t.name, "no clientAuth usage: renewing with a signed request instead of TLS");
            }
            // A PKCS#10 naming the old certificate, inside a SignedData made with the old key.
            let csr = autoenroll_keys::build_renewal_csr(&key, subject, exts, &held.cert_der)?;
            let signed = autoenroll_keys::sign_cms(&csr, &held.cert_der, &old_key, true)?;
            let body = wstep::token_request_body(ns::REQUEST_TYPE_ISSUE, ns::VALUE_TYPE_PKCS7, &signed);
            self.submit(policy, Some(1), &HeaderToken::None, None, body).await?
        };
        self.keep_answer(t, key, answer, "renew")
    }

    async fn retrieve(&self, policy: &Policy, t: &Template, request_id: &str) -> Result<Option<Outcome>, AgentError> {
        let pending =
            self.store.pending(&t.name)?.ok_or_else(|| AgentError::Protocol("pending state vanished".into()))?;
        let body = wstep::query_request_body(request_id);
        match self.submit(policy, None, &HeaderToken::None, None, body).await {
            Ok(answer) => self.keep_answer(t, pending.key, answer, &pending.meta.kind),
            Err(e @ AgentError::Refused { .. }) => {
                // Denied (or unknown): this attempt is over; the next one starts afresh.
                self.store.clear_pending(&t.name)?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Saves the answer under pending/ (so a crash after this point still installs it).
    fn keep_answer(
        &self,
        t: &Template,
        key: KeyPair,
        answer: Answer,
        kind: &str,
    ) -> Result<Option<Outcome>, AgentError> {
        match answer {
            Answer::Issued { cert, chain } => {
                self.store.save_received(&t.name, &cert, &chain)?;
                fault::point("after-receive");
                Ok(Some(Outcome { key, cert, chain }))
            }
            Answer::Pending { request_id } => {
                tracing::info!(template = %t.name, %request_id, "request pending approval");
                self.store.save_pending_meta(
                    &t.name,
                    &PendingMeta { created_at: self.now.0, kind: kind.into(), request_id: Some(request_id) },
                )?;
                Ok(None)
            }
        }
    }
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

/// Reads policy and brings every autoenroll template up to date.
pub async fn run_cycle(
    cfg: &AgentConfig,
    clock: Arc<dyn Clock>,
    jitter: &dyn Jitter,
    force: &Force,
) -> Result<CycleReport, AgentError> {
    let store = LocalStore::open(&cfg.state_dir, cfg.archive_keep)?;
    let _lock = store.lock()?;
    let now = clock.now();
    let state = store.load_state()?;
    let mut ctx =
        Ctx { cfg, clock: clock.clone(), roots: cfg.trust_anchor_der()?, store, state, now, device: cfg.device_name() };
    let mut report = CycleReport::default();

    // Policy needs a credential: an account, our client certificate or an unspent token.
    let auth = ctx.auth()?.ok_or_else(|| {
        AgentError::Config(
            "no usable credentials: configure credentials.username/password or a bootstrap token \
             (the token is spent and no valid client certificate is held)"
                .into(),
        )
    })?;
    let policy = ctx.fetch_policy(&auth).await?;
    ctx.state.policy_fetched_at = Some(now.0);
    ctx.state.next_update_hours = Some(policy.next_update_hours);
    ctx.state.policy = policy
        .templates
        .iter()
        .map(|t| PolicyTemplateState {
            name: t.name.clone(),
            oid: t.oid.clone(),
            major: t.major,
            minor: t.minor,
            renewal_secs: t.renewal_secs,
        })
        .collect();
    // The server's view: renew now, re-enroll (major bump, revoked, lost), blocked.
    let checkin = ctx.checkin(&policy).await;
    let mut server_renew: Vec<String> = Vec::new();
    let mut server_reenroll: Vec<String> = Vec::new();
    if let Some(a) = &checkin {
        ctx.state.blocked = a.blocked;
        ctx.state.checked_in_at = Some(now.0);
        if a.blocked {
            tracing::warn!("the server has blocked this device: enrollment and renewal will be refused");
        }
        for d in &a.directives {
            match d.action.as_str() {
                "renew" => server_renew.push(d.template.clone()),
                "reenroll" => server_reenroll.push(d.template.clone()),
                _ => {}
            }
        }
    }
    let mut next_wake = now.plus_secs(i64::from(policy.next_update_hours) * 3600);
    let backoff = Backoff { min_secs: cfg.retry_min.as_secs() as i64, max_secs: cfg.retry_max.as_secs() as i64 };

    // Templates another policy template supersedes are not enrolled; their holders move over.
    let superseded: Vec<&str> = policy.templates.iter().flat_map(|t| t.superseded.iter().map(String::as_str)).collect();
    // Client-auth templates first: with a one-time token, the first certificate becomes the
    // credential for the rest.
    let mut templates: Vec<&Template> = policy
        .templates
        .iter()
        .filter(|t| t.enroll && t.auto_enroll && !superseded.contains(&t.name.as_str()))
        .collect();
    templates.sort_by_key(|t| (!t.client_auth, t.name.clone()));

    for t in templates {
        let rule = RenewalRule::Windows { renewal_period_secs: t.renewal_secs };
        let held = ctx.store.current(&t.name).unwrap_or_else(|e| {
            tracing::warn!(template = %t.name, %e, "live certificate unreadable; treating it as missing");
            None
        });
        let pending = ctx.store.pending(&t.name)?;
        let status = ctx.state.templates.entry(t.name.clone()).or_default();
        let failure = status.retry_at.map(|r| renewal::Failure { count: status.failures, retry_at: UnixTime(r) });

        // A certificate received before a crash only needs installing (decision None).
        let decision = if pending.as_ref().is_some_and(|p| p.received.is_some()) {
            None
        } else {
            let replaces: Vec<String> =
                t.superseded.iter().filter(|s| ctx.store.current(s).ok().flatten().is_some()).cloned().collect();
            let d = renewal::decide(&renewal::Input {
                now,
                held: held.as_ref().map(|h| renewal::Held {
                    not_before: h.facts.not_before,
                    not_after: h.facts.not_after,
                    template: h.facts.template.clone(),
                    // The server no longer counts it (revoked, or re-enrollment required).
                    revoked: server_reenroll.contains(&t.name),
                }),
                policy: renewal::TemplatePolicy {
                    template: TemplateRef { oid: t.oid.clone(), major: t.major, minor: t.minor },
                    rule,
                },
                pending: pending.as_ref().map(|p| match &p.meta.request_id {
                    Some(id) => renewal::Pending::Submitted { request_id: id.clone() },
                    None => renewal::Pending::Interrupted,
                }),
                failure,
                forced: (force.covers(&t.name) || server_renew.contains(&t.name)) && held.is_some(),
                supersedes_held: !replaces.is_empty(),
            });
            Some(d)
        };
        let result = match &decision {
            None => {
                let p = pending.ok_or_else(|| AgentError::Protocol("pending state vanished".into()))?;
                let (cert, chain) = p.received.ok_or_else(|| AgentError::Protocol("pending state vanished".into()))?;
                Ok(Some(Outcome { key: p.key, cert, chain }))
            }
            Some(Decision::Keep { recheck_at }) => {
                next_wake = next_wake.min(*recheck_at);
                report.kept.push(t.name.clone());
                continue;
            }
            Some(Decision::Wait { until, .. }) => {
                next_wake = next_wake.min(*until);
                report.waiting.push((t.name.clone(), *until));
                continue;
            }
            Some(Decision::Retrieve { request_id }) => {
                tracing::info!(template = %t.name, %request_id, "collecting pending request");
                ctx.retrieve(&policy, t, request_id).await
            }
            Some(Decision::Renew(reason)) => {
                tracing::info!(template = %t.name, ?reason, "renewing");
                match &held {
                    Some(h) => ctx.renew(&policy, t, h).await,
                    None => Err(AgentError::Protocol("nothing to renew".into())),
                }
            }
            Some(Decision::Enroll(reason)) => {
                tracing::info!(template = %t.name, ?reason, "enrolling");
                match ctx.auth()? {
                    Some(auth) => ctx.enroll(&policy, t, &auth).await.inspect(|_| {
                        if let Auth::Token(t) = &auth {
                            ctx.state.spent_tokens.push(autoenroll_keys::sha256_hex(t.as_bytes()));
                        }
                    }),
                    None => Err(AgentError::Config(match reason {
                        Reason::Expired => format!(
                            "the {} certificate has expired and cannot renew itself: re-enrollment needs credentials \
                             (configure an account or a new bootstrap token)",
                            t.name
                        ),
                        _ => "no usable credentials to enroll".to_string(),
                    })),
                }
            }
        };
        let status = ctx.state.templates.entry(t.name.clone()).or_default();
        status.last_attempt = Some(now.0);
        match result {
            Ok(None) => {
                // Pending at the server: ask again after the first retry delay.
                let at = now.plus_secs(backoff.min_secs);
                next_wake = next_wake.min(at);
                report.waiting.push((t.name.clone(), at));
            }
            Ok(Some(out)) => {
                // Replacing a held certificate (due, bumped, expired) is a renewal for hooks.
                let renewing = held.is_some();
                let old_serial = held.as_ref().map(|h| h.facts.serial.0.clone());
                ctx.store.install(&t.name, &out.key, &out.cert, &out.chain)?;
                ctx.store.clear_pending(&t.name)?;
                let facts = autoenroll_core::pki::CertFacts::parse(&out.cert)
                    .map_err(|e| AgentError::Protocol(e.to_string()))?;
                let status = ctx.state.templates.entry(t.name.clone()).or_default();
                status.last_success = Some(now.0);
                status.last_error = None;
                status.failures = 0;
                status.retry_at = None;
                next_wake = next_wake.min(rule.due_at(&renewal::Held {
                    not_before: facts.not_before,
                    not_after: facts.not_after,
                    template: None,
                    revoked: false,
                }));
                // Superseded certificates leave service once their replacement is live.
                for s in &t.superseded {
                    if ctx.store.current(s)?.is_some() {
                        tracing::info!(superseded = %s, by = %t.name, "archiving superseded certificate");
                        ctx.store.retire(s)?;
                    }
                }
                let event = if renewing { "renew" } else { "enroll" };
                tracing::info!(template = %t.name, serial = %facts.serial, event, "certificate installed");
                let overrides = ctx.overrides(&t.name);
                for argv in &overrides.hooks {
                    let env = HookEnv {
                        template: &t.name,
                        event,
                        serial: &facts.serial.0,
                        old_serial: old_serial.as_deref(),
                        live_dir: &ctx.store.live_dir(&t.name)?,
                    };
                    let outcome = hooks::run(argv, &env, overrides.hook_timeout, ctx.clock.now().0).await;
                    ctx.state.templates.entry(t.name.clone()).or_default().last_hook = Some(outcome);
                }
                match (renewing, old_serial) {
                    (true, Some(old)) => report.renewed.push((t.name.clone(), old, facts.serial.0)),
                    _ => report.enrolled.push((t.name.clone(), facts.serial.0)),
                }
            }
            Err(e) => {
                let status = ctx.state.templates.entry(t.name.clone()).or_default();
                status.failures = status.failures.saturating_add(1);
                let retry = renewal::next_retry(
                    now,
                    status.failures,
                    held.as_ref().map(|h| h.facts.not_after),
                    &rule,
                    backoff,
                    jitter.next(),
                );
                status.retry_at = Some(retry.0);
                status.last_error = Some(e.to_string());
                tracing::warn!(template = %t.name, %e, failures = status.failures, retry = %retry, "attempt failed");
                next_wake = next_wake.min(retry);
                report.failed.push((t.name.clone(), e.to_string()));
            }
        }
    }
    ctx.store.save_state(&ctx.state)?;
    report.next_wake = Some(next_wake.max(now.plus_secs(1)));
    Ok(report)
}

/// Runs cycles until `stop`, sleeping until the next decision time (no polling).
pub async fn run_forever(cfg: &AgentConfig, clock: Arc<dyn Clock>, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        let now = clock.now();
        let wake = match run_cycle(cfg, clock.clone(), &SystemJitter, &Force::None).await {
            Ok(r) => {
                tracing::info!(
                    enrolled = r.enrolled.len(),
                    renewed = r.renewed.len(),
                    kept = r.kept.len(),
                    waiting = r.waiting.len(),
                    failed = r.failed.len(),
                    "cycle done"
                );
                r.next_wake.unwrap_or(now.plus_secs(3600))
            }
            Err(e) => {
                tracing::warn!(%e, "cycle failed");
                now.plus_secs(CYCLE_RETRY_SECS)
            }
        };
        let secs = (wake.0 - clock.now().0).clamp(1, 24 * 3600) as u64;
        tracing::info!(next = %wake, "sleeping");
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(secs)) => {}
            _ = &mut stop => return,
        }
    }
}
