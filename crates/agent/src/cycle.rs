//! One enrollment cycle (policy → decisions → enrollments) and the long-running loop that
//! sleeps until the next decision time.
use crate::config::AgentConfig;
use crate::https::{Client, ClientIdentity};
use crate::localstore::{LocalStore, PolicyTemplateState, State};
use crate::policy::{self, Policy, Template};
use crate::AgentError;
use autoenroll_core::clock::Clock;
use autoenroll_core::pki::cert::verify_issued_by;
use autoenroll_core::renewal::{self, Decision};
use autoenroll_core::{TemplateRef, UnixTime};
use autoenroll_keys::KeyPair;
use autoenroll_proto::soap::{self, HeaderToken};
use autoenroll_proto::{ns, pkcs7, wstep, xcep};

/// How soon a failed template is tried again (issue #3 replaces this with capped backoff).
const RETRY_AFTER_FAILURE_SECS: i64 = 300;
const SOAP_CONTENT_TYPE: &str = "application/soap+xml; charset=utf-8";

#[derive(Debug, Default)]
pub struct CycleReport {
    /// (template, serial) newly enrolled.
    pub enrolled: Vec<(String, String)>,
    /// Templates whose certificate is valid and not yet due.
    pub kept: Vec<String>,
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

/// How this agent authenticates a request.
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
    roots: Vec<Vec<u8>>,
    store: LocalStore,
    state: State,
    now: UnixTime,
    device: String,
}

impl Ctx<'_> {
    /// Accounts first (they can enroll again and again), then our own client certificate,
    /// then a bootstrap token that has not been spent.
    fn auth(&self) -> Result<Option<Auth>, AgentError> {
        if let Some((u, p)) = self.cfg.password()? {
            return Ok(Some(Auth::Password(u, p)));
        }
        if let Some(id) = self.store.client_identity(self.now)? {
            return Ok(Some(Auth::Certificate(id)));
        }
        if !self.state.bootstrap_token_used {
            if let Some(t) = self.cfg.bootstrap_token()? {
                return Ok(Some(Auth::Token(t)));
            }
        }
        Ok(None)
    }

    async fn call(
        &self,
        url: &str,
        action: &str,
        auth: &Auth,
        body: autoenroll_proto::xml::W,
    ) -> Result<soap::Envelope, AgentError> {
        let client = Client::new(&self.roots, auth.identity())?;
        let message_id = format!("urn:uuid:{}", hex::encode(autoenroll_keys::random_bytes(16)?));
        let envelope = soap::request(action, url, &message_id, &auth.header(), body);
        let resp = client.post(url, SOAP_CONTENT_TYPE, envelope.into_bytes()).await?;
        let transport = |m: String| AgentError::Transport { url: url.to_string(), message: m };
        let env = match resp.status {
            200 | 500 => {
                soap::parse_envelope(&resp.body).map_err(|e| transport(format!("HTTP {}: {e}", resp.status)))?
            }
            s => return Err(transport(format!("HTTP status {s}"))),
        };
        if let Some(f) = soap::parse_fault(&env) {
            return Err(AgentError::Refused { code: f.subcode.unwrap_or(f.code), reason: f.reason });
        }
        Ok(env)
    }

    async fn fetch_policy(&self, auth: &Auth) -> Result<Policy, AgentError> {
        let mut servers = self.cfg.policy_servers.clone();
        servers.sort_by_key(|s| s.priority);
        let mut last = None;
        for s in &servers {
            match self.call(&s.url, ns::ACTION_GET_POLICIES, auth, xcep::request_body(None)).await {
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

    fn csr(&self, t: &Template, key: &KeyPair) -> Result<Vec<u8>, AgentError> {
        let overrides = self.cfg.templates.get(&t.name).cloned().unwrap_or_default();
        let cn = overrides.subject.clone().filter(|_| t.supplies_subject).unwrap_or_else(|| self.device.clone());
        let mut exts = vec![template_extension(t)?];
        if t.supplies_san {
            let mut dns = overrides.dns_names.clone();
            if dns.is_empty() && is_dns_name(&cn) {
                dns.push(cn.clone());
            }
            if !dns.is_empty() {
                exts.push(autoenroll_keys::san_extension(&dns, &[])?);
            }
        }
        Ok(autoenroll_keys::build_csr(key, autoenroll_keys::cn_name(&cn)?, exts)?)
    }

    async fn enroll(
        &self,
        policy: &Policy,
        t: &Template,
        auth: &Auth,
    ) -> Result<(KeyPair, Vec<u8>, Vec<Vec<u8>>), AgentError> {
        let overrides = self.cfg.templates.get(&t.name);
        let alg = match overrides.and_then(|o| o.key_algorithm.as_deref()) {
            Some(a) => a.parse()?,
            None => t.key_algorithm,
        };
        let key = tokio::task::spawn_blocking(move || KeyPair::generate(alg))
            .await
            .map_err(|e| AgentError::Protocol(format!("key generation task: {e}")))??;
        let csr = self.csr(t, &key)?;
        let context = [("DeviceName", self.device.as_str())];
        let wanted = auth.endpoint_auth();
        let endpoints: Vec<_> = policy.endpoints.iter().filter(|e| wanted.is_none_or(|w| w == e.auth)).collect();
        if endpoints.is_empty() {
            return Err(AgentError::Protocol("the policy lists no enrollment endpoint for our credentials".into()));
        }
        let mut last = None;
        for e in endpoints {
            match self.call(&e.url, ns::ACTION_WSTEP, auth, wstep::issue_request_body(&csr, &context)).await {
                Ok(env) => {
                    let r = wstep::parse_response(&env.body)?;
                    let cert = r.certificate_der.ok_or_else(|| {
                        AgentError::Protocol(format!(
                            "no certificate in the response (disposition {:?})",
                            r.disposition
                        ))
                    })?;
                    let chain = self.chain_for(&cert, r.chain_pkcs7_der.as_deref(), policy)?;
                    return Ok((key, cert, chain));
                }
                Err(e @ AgentError::Refused { .. }) => return Err(e),
                Err(err) => {
                    tracing::warn!(url = %e.url, %err, "enrollment endpoint failed, trying the next");
                    last = Some(err);
                }
            }
        }
        Err(last.unwrap_or_else(|| AgentError::Protocol("no endpoint".into())))
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

/// Reads policy and enrolls every autoenroll template that is missing, expired, due or bumped.
pub async fn run_cycle(cfg: &AgentConfig, clock: &dyn Clock) -> Result<CycleReport, AgentError> {
    let now = clock.now();
    let store = LocalStore::open(&cfg.state_dir, cfg.archive_keep)?;
    let state = store.load_state()?;
    let mut ctx = Ctx { cfg, roots: cfg.trust_anchor_der()?, store, state, now, device: cfg.device_name() };
    let mut report = CycleReport::default();

    let auth = ctx.auth()?.ok_or_else(|| {
        AgentError::Config("no usable credentials: configure credentials.username/password or a bootstrap token (the token is spent and no client certificate is held)".into())
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
    let mut next_wake = now.plus_secs(i64::from(policy.next_update_hours) * 3600);

    // Client-auth templates first: with a one-time token, the first certificate becomes the
    // credential for the rest.
    let mut templates: Vec<&Template> = policy.templates.iter().filter(|t| t.enroll && t.auto_enroll).collect();
    templates.sort_by_key(|t| (!t.client_auth, t.name.clone()));

    for t in templates {
        let held = match ctx.store.current(&t.name) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(template = %t.name, %e, "live certificate unreadable; enrolling anew");
                None
            }
        };
        let decision = renewal::decide(&renewal::Input {
            now,
            held: held.as_ref().map(|h| renewal::Held {
                not_before: h.facts.not_before,
                not_after: h.facts.not_after,
                template: h.facts.template.clone(),
            }),
            policy: renewal::TemplatePolicy {
                template: TemplateRef { oid: t.oid.clone(), major: t.major, minor: t.minor },
                renewal_period_secs: t.renewal_secs,
            },
        });
        let reason = match decision {
            Decision::Keep { recheck_at } => {
                next_wake = next_wake.min(recheck_at);
                report.kept.push(t.name.clone());
                continue;
            }
            Decision::Enroll(r) | Decision::Renew(r) => r,
        };
        tracing::info!(template = %t.name, ?reason, "enrolling");
        let status = ctx.state.templates.entry(t.name.clone()).or_default();
        status.last_attempt = Some(now.0);
        let auth = match ctx.auth()? {
            Some(a) => a,
            None => {
                let msg = "no usable credentials left for this template".to_string();
                ctx.state.templates.entry(t.name.clone()).or_default().last_error = Some(msg.clone());
                report.failed.push((t.name.clone(), msg));
                continue;
            }
        };
        let result = match ctx.enroll(&policy, t, &auth).await {
            Ok((key, cert, chain)) => ctx.store.install(&t.name, &key, &cert, &chain).map(|_| cert),
            Err(e) => Err(e),
        };
        let status = ctx.state.templates.entry(t.name.clone()).or_default();
        match result {
            Ok(cert) => {
                let facts =
                    autoenroll_core::pki::CertFacts::parse(&cert).map_err(|e| AgentError::Protocol(e.to_string()))?;
                status.last_success = Some(now.0);
                status.last_error = None;
                if matches!(auth, Auth::Token(_)) {
                    ctx.state.bootstrap_token_used = true;
                }
                next_wake = next_wake.min(renewal::renew_at(facts.not_before, facts.not_after, t.renewal_secs));
                tracing::info!(template = %t.name, serial = %facts.serial, "certificate installed");
                report.enrolled.push((t.name.clone(), facts.serial.0));
            }
            Err(e) => {
                tracing::warn!(template = %t.name, %e, "enrollment failed");
                status.last_error = Some(e.to_string());
                next_wake = next_wake.min(now.plus_secs(RETRY_AFTER_FAILURE_SECS));
                report.failed.push((t.name.clone(), e.to_string()));
            }
        }
    }
    ctx.store.save_state(&ctx.state)?;
    report.next_wake = Some(next_wake);
    Ok(report)
}

/// Runs cycles forever, sleeping until the next decision time (no polling), until `stop`.
pub async fn run_forever(cfg: &AgentConfig, clock: &dyn Clock, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        let now = clock.now();
        let wake = match run_cycle(cfg, clock).await {
            Ok(r) => {
                tracing::info!(enrolled = r.enrolled.len(), kept = r.kept.len(), failed = r.failed.len(), "cycle done");
                r.next_wake.unwrap_or(now.plus_secs(3600))
            }
            Err(e) => {
                tracing::warn!(%e, "cycle failed");
                now.plus_secs(RETRY_AFTER_FAILURE_SECS)
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
