//! Talking to the servers: SOAP calls (policy, enrollment) with failover across the configured
//! policy servers and the policy's enrollment endpoints, the check-in POST, and checking the
//! chain of what comes back against our trust anchors. No decisions here.
use crate::credentials::Auth;
use crate::fault;
use crate::https::{Client, ClientIdentity};
use crate::policy::{self, Policy};
use crate::AgentError;
use autoenroll_core::clock::Clock;
use autoenroll_core::pki::cert::verify_issued_by;
use autoenroll_proto::checkin::{CheckinAnswer, CheckinReport};
use autoenroll_proto::soap::{self, HeaderToken};
use autoenroll_proto::xcep::ClientAuthentication;
use autoenroll_proto::{ns, pkcs7, wstep, xcep};
use std::sync::Arc;

const SOAP_CONTENT_TYPE: &str = "application/soap+xml; charset=utf-8";

/// What an enrollment endpoint answered.
pub enum Answer {
    Issued {
        cert: Vec<u8>,
        chain: Vec<Vec<u8>>,
    },
    /// Held for approval; ask again after `retry_after` seconds when the server said.
    Pending {
        request_id: String,
        retry_after: Option<u64>,
    },
}

pub struct Transport<'a> {
    pub policy_servers: &'a [crate::config::PolicyServer],
    pub roots: Vec<Vec<u8>>,
    pub clock: Arc<dyn Clock>,
    /// One cycle's idle connections: policy, check-in and enrollment with the same identity go
    /// over one connection; they close when the cycle drops its transport.
    pub pool: crate::https::Pool,
}

impl Transport<'_> {
    pub(crate) fn client(&self, identity: Option<&ClientIdentity>) -> Result<Client, AgentError> {
        Ok(Client::new(&self.roots, identity, self.clock.clone())?.with_pool(self.pool.clone()))
    }

    /// Policy servers, lowest priority value first.
    pub(crate) fn servers(&self) -> Vec<&crate::config::PolicyServer> {
        let mut servers: Vec<_> = self.policy_servers.iter().collect();
        servers.sort_by_key(|s| s.priority);
        servers
    }

    async fn call(
        &self,
        url: &str,
        action: &str,
        header: &HeaderToken,
        identity: Option<&ClientIdentity>,
        body: autoenroll_proto::xml::W,
    ) -> Result<soap::Envelope, AgentError> {
        let resp = self.post_soap(url, action, header, identity, body).await?;
        read_envelope(url, &resp)
    }

    /// `call`, reading the answer with `read` on a short-lived thread and handing back a copy.
    /// The policy is the largest message an agent reads (its XML tree peaks at megabytes for a
    /// hundred templates); built on a thread of its own, glibc allocates it in that thread's
    /// arena, which returns its pages to the system once everything in it is freed, instead of
    /// keeping the peak resident in the main heap between cycles. The copy is made here, on
    /// the caller's thread (a few small chunks of the original may linger in this thread's
    /// allocator cache; measured, the heap stays at 0.8 MiB after the cycle).
    async fn call_reading<T: Clone + Send>(
        &self,
        url: &str,
        action: &str,
        header: &HeaderToken,
        identity: Option<&ClientIdentity>,
        body: autoenroll_proto::xml::W,
        read: impl Fn(&soap::Envelope) -> Result<T, AgentError> + Sync,
    ) -> Result<T, AgentError> {
        let resp = self.post_soap(url, action, header, identity, body).await?;
        let work = || read_envelope(url, &resp).and_then(|env| read(&env));
        let read_there = std::thread::scope(|scope| {
            match std::thread::Builder::new().name("policy-reader".into()).spawn_scoped(scope, work) {
                Ok(thread) => thread.join().map_err(|_| AgentError::Transport {
                    url: url.to_string(),
                    message: "reading the answer failed".into(),
                }),
                // No thread to be had (a pids limit): read it here, as before.
                Err(_) => Ok(work()),
            }
        })?;
        Ok(read_there?.clone())
    }

    async fn post_soap(
        &self,
        url: &str,
        action: &str,
        header: &HeaderToken,
        identity: Option<&ClientIdentity>,
        body: autoenroll_proto::xml::W,
    ) -> Result<crate::https::Response, AgentError> {
        let message_id = format!("urn:uuid:{}", hex::encode(autoenroll_keys::random_bytes(16)?));
        let envelope = soap::request(action, url, &message_id, header, body);
        self.client(identity)?.post(url, SOAP_CONTENT_TYPE, envelope.into_bytes()).await
    }
}

/// A SOAP answer's envelope, or the server's refusal (a fault).
fn read_envelope(url: &str, resp: &crate::https::Response) -> Result<soap::Envelope, AgentError> {
    let transport = |m: String| AgentError::Transport { url: url.to_string(), message: m };
    let env = match resp.status {
        200 | 500 => soap::parse_envelope(&resp.body).map_err(|e| transport(format!("HTTP {}: {e}", resp.status)))?,
        s @ 300..=399 => {
            let to = resp.location.clone().unwrap_or_else(|| "?".into());
            return Err(transport(format!("HTTP {s}: the server redirects to {to}; redirects are never followed")));
        }
        s => return Err(transport(format!("HTTP status {s}"))),
    };
    if let Some(f) = soap::parse_fault(&env) {
        return Err(AgentError::Refused { code: f.subcode.unwrap_or(f.code), reason: f.reason });
    }
    Ok(env)
}

impl Transport<'_> {
    /// The policy from the first policy server that answers (a refusal is an answer: another
    /// server of the same policy would say the same).
    pub async fn fetch_policy(&self, auth: &Auth) -> Result<Policy, AgentError> {
        let mut last = None;
        for s in self.servers() {
            let read = |env: &soap::Envelope| policy::from_wire(&xcep::parse_response(&env.body)?);
            let (header, identity) = (auth.header(), auth.identity());
            match self
                .call_reading(&s.url, ns::ACTION_GET_POLICIES, &header, identity, xcep::request_body(None), read)
                .await
            {
                Ok(policy) => return Ok(policy),
                // A refusal or an answer that does not read is the policy server's answer.
                Err(e @ (AgentError::Refused { .. } | AgentError::Protocol(_))) => return Err(e),
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
    pub async fn submit(
        &self,
        policy: &Policy,
        wanted_auth: Option<ClientAuthentication>,
        header: &HeaderToken,
        identity: Option<&ClientIdentity>,
        body: autoenroll_proto::xml::W,
    ) -> Result<Answer, AgentError> {
        let crate::policy::Enrollment::Wstep(all) = &policy.enrollment else {
            return Err(AgentError::Protocol("an EST policy has no WSTEP endpoint".into()));
        };
        let endpoints: Vec<_> = all.iter().filter(|e| wanted_auth.is_none_or(|w| w == e.auth)).collect();
        let endpoints = if endpoints.is_empty() { all.iter().collect() } else { endpoints };
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
                        (None, Some(request_id)) if r.pending_reference.is_some() => {
                            Ok(Answer::Pending { request_id, retry_after: None })
                        }
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
    pub(crate) fn chain_for(
        &self,
        cert: &[u8],
        pkcs7_der: Option<&[u8]>,
        policy: &Policy,
    ) -> Result<Vec<Vec<u8>>, AgentError> {
        let mut candidates: Vec<Vec<u8>> = match pkcs7_der {
            Some(p) => pkcs7::certificates(p)?.into_iter().filter(|c| c.as_slice() != cert).collect(),
            None => Vec::new(),
        };
        candidates.extend(policy.ca_certs.iter().cloned());
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

    /// Reports to the first policy server host that answers `/checkin`; None when none did
    /// (the agent then decides on its local rules and the server view it last learned).
    pub async fn checkin(&self, report: &CheckinReport, identity: &ClientIdentity) -> Option<CheckinAnswer> {
        let body = serde_json::to_vec(report).ok()?;
        let client = self.client(Some(identity)).ok()?;
        for s in self.servers() {
            let Ok(uri) = s.url.parse::<http::Uri>() else { continue };
            let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else { continue };
            let url = format!("{scheme}://{authority}{}", autoenroll_proto::checkin::PATH);
            match client.post(&url, "application/json", body.clone()).await {
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
}
