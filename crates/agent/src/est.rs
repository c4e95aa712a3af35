//! EST (RFC 7030) as the agent's way to its certificates, for servers configured with
//! `protocol = "est"`: the "policy" is the configured labels, each read from its `/csrattrs`
//! (the key to make, whether the certificate will do TLS client authentication) with the CA
//! certificates from `/cacerts`; `simpleenroll` enrolls with an account (HTTP Basic), a
//! bootstrap token (Bearer) or a client certificate; `simplereenroll` renews over TLS with the
//! certificate it renews. A 202 is a held request: the same request sent again (same key and
//! label) is answered once decided. No decisions here: the cycle decides as for XCEP.
use crate::credentials::Auth;
use crate::https::{ClientIdentity, Response};
use crate::policy::{Enrollment, Policy, Template};
use crate::transport::{Answer, Transport};
use crate::AgentError;
use autoenroll_core::pki::CertFacts;
use autoenroll_keys::KeyAlgorithm;
use autoenroll_proto::est::{self, KeyRequest};

/// What a held EST request is remembered by (with the operation it was sent to): EST has no
/// request id; the request itself (the pending key, the label) names it when it is sent again.
const HELD_PREFIX: &str = "est-held:";
pub const SIMPLEENROLL: &str = "simpleenroll";
pub const SIMPLEREENROLL: &str = "simplereenroll";

/// The operation a held request was sent to (`simpleenroll` for anything else, such as the
/// request id a WSTEP server gave before the agent moved to EST: the key is sent again).
pub fn held_operation(request_id: &str) -> &'static str {
    match request_id.strip_prefix(HELD_PREFIX) {
        Some(SIMPLEREENROLL) => SIMPLEREENROLL,
        _ => SIMPLEENROLL,
    }
}

/// Whether a refusal ends a held request for good (denied). Anything else (credentials, a
/// label gone, a busy server) leaves it waiting with its key: sending the same request again is
/// never harmful in EST (the server answers it, or takes it as a new request for the same key).
pub fn ends_held_request(e: &AgentError) -> bool {
    matches!(e, AgentError::Refused { code, .. } if code == "RequestDenied" || code == "HTTP403")
}
const CLIENT_AUTH: &str = "1.3.6.1.5.5.7.3.2";

/// A template learnt from `/csrattrs`. The server's renewal period is not published by EST, so
/// the local rule is 80 % of the lifetime; the server's own time arrives by check-in.
fn template(label: &str, attrs: &est::CsrAttrs) -> Result<Template, AgentError> {
    let key_algorithm = match &attrs.key {
        Some(KeyRequest::Ec(curve)) if *curve == est::P256 => KeyAlgorithm::P256,
        Some(KeyRequest::Ec(curve)) if *curve == est::P384 => KeyAlgorithm::P384,
        Some(KeyRequest::Rsa(bits @ (2048 | 3072 | 4096))) => KeyAlgorithm::Rsa(*bits),
        Some(other) => {
            return Err(AgentError::Protocol(format!(
                "EST label {label}: the server asks for a key we cannot make: {other:?}"
            )))
        }
        None => KeyAlgorithm::P256,
    };
    Ok(Template {
        name: label.to_string(),
        // The label names the template; a request carries no template extension.
        oid: String::new(),
        major: 0,
        minor: 0,
        validity_secs: 0,
        renewal_secs: i64::MAX,
        enroll: true,
        auto_enroll: true,
        key_algorithm,
        supplies_subject: true,
        supplies_san: true,
        superseded: vec![],
        client_auth: attrs.ekus.iter().any(|o| o.to_string() == CLIENT_AUTH),
    })
}

/// An answer's refusal, by status first: a redirect (never followed), a timeout or a server
/// error is the transport's (the next server is tried), 429 and 503 are "not now"; any other
/// 4xx is a refusal whose code is our server's (`Code: detail` in the body) or the status.
fn refusal(url: &str, r: &Response) -> AgentError {
    let text = String::from_utf8_lossy(&r.body[..r.body.len().min(2048)]).trim().to_string();
    let transport = |message: String| AgentError::Transport { url: url.to_string(), message };
    match r.status {
        300..=399 => {
            let to = r.location.as_deref().unwrap_or("?");
            return transport(format!("HTTP {}: the server redirects to {to}; redirects are never followed", r.status));
        }
        429 | 503 => {
            let reason = if text.is_empty() { format!("HTTP {}", r.status) } else { text };
            return AgentError::Refused { code: "ServerBusy".into(), reason };
        }
        408 | 500..=599 | 0..=199 => return transport(format!("HTTP {}: {text}", r.status)),
        _ => {}
    }
    let ours = text
        .split_once(':')
        .filter(|(c, _)| !c.is_empty() && c.chars().all(|ch| ch.is_ascii_alphanumeric()))
        .map(|(c, detail)| (c.to_string(), detail.trim().to_string()));
    let (code, reason) = ours.unwrap_or_else(|| {
        (format!("HTTP{}", r.status), if text.is_empty() { format!("HTTP {}", r.status) } else { text })
    });
    AgentError::Refused { code, reason }
}

/// One EST request: the label's operation with a base64 PKCS#10 for the key `spki`.
#[derive(Clone, Copy)]
struct EstRequest<'a> {
    label: &'a str,
    operation: &'static str,
    csr: &'a [u8],
    spki: &'a [u8],
}

impl Transport<'_> {
    /// The labels of the first EST server that answers, with what each wants.
    pub async fn fetch_est_policy(&self) -> Result<Policy, AgentError> {
        let mut last = None;
        for s in self.servers() {
            match self.read_est_server(&s.url, &s.labels).await {
                Ok(policy) => return Ok(policy),
                Err(e @ (AgentError::Refused { .. } | AgentError::Protocol(_))) => return Err(e),
                Err(e) => {
                    tracing::warn!(url = %s.url, %e, "EST server unreachable, trying the next");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| AgentError::Config("no policy server".into())))
    }

    /// `/cacerts`, then each label's `/csrattrs`. A label whose `/csrattrs` cannot be used is
    /// that label's failure alone; only a server that does not answer fails them all.
    async fn read_est_server(&self, base: &str, labels: &[String]) -> Result<Policy, AgentError> {
        let base = base.trim_end_matches('/');
        let client = self.client(None)?;
        let url = format!("{base}/cacerts");
        let r = client.get(&url).await?;
        if r.status != 200 {
            return Err(refusal(&url, &r));
        }
        let ca_certs = autoenroll_proto::pkcs7::certificates(&est::decode_body(&r.body, "cacerts")?)?;
        let (mut templates, mut unavailable) = (Vec::new(), Vec::new());
        for label in labels {
            let url = format!("{base}/{label}/csrattrs");
            let r = client.get(&url).await?;
            let attrs = match r.status {
                200 => est::decode_body(&r.body, "csrattrs")
                    .and_then(|der| est::decode_csr_attrs(&der))
                    .map_err(AgentError::from),
                // RFC 7030 section 4.5.2: 204 or 404 when the server has nothing to say (and a
                // server may not offer csrattrs at all, or want credentials for it): the
                // template's defaults, or the agent's `key_algorithm` for it, then.
                204 | 404 | 501 | 401 | 403 => {
                    tracing::debug!(%url, status = r.status, "no CSR attributes; using defaults");
                    Ok(est::CsrAttrs::default())
                }
                _ => match refusal(&url, &r) {
                    e @ AgentError::Transport { .. } => return Err(e),
                    e => Err(e),
                },
            };
            match attrs.and_then(|a| template(label, &a)) {
                Ok(t) => templates.push(t),
                Err(e) => {
                    tracing::warn!(%url, %e, "label unusable this cycle");
                    unavailable.push((label.clone(), e.to_string()));
                }
            }
        }
        let bases = self.servers().iter().map(|s| s.url.trim_end_matches('/').to_string()).collect();
        Ok(Policy {
            policy_id: format!("est:{base}"),
            next_update_hours: 8,
            templates,
            enrollment: Enrollment::Est(bases),
            ca_certs,
            unavailable,
        })
    }

    /// `simpleenroll` of `csr` for `label`, paid for with `auth`.
    pub async fn est_enroll(
        &self,
        policy: &Policy,
        label: &str,
        csr: &[u8],
        spki: &[u8],
        auth: &Auth,
    ) -> Result<Answer, AgentError> {
        let authorization = match auth {
            Auth::Password(user, password) => {
                Some(format!("Basic {}", autoenroll_proto::b64::encode(format!("{user}:{password}").as_bytes())))
            }
            Auth::Token(token) => Some(format!("Bearer {token}")),
            Auth::Certificate(_) => None,
        };
        let request = EstRequest { label, operation: SIMPLEENROLL, csr, spki };
        self.est_post(policy, &request, auth.identity(), authorization.as_deref()).await
    }

    /// `simplereenroll` of `csr`, over TLS with the certificate it renews.
    pub async fn est_reenroll(
        &self,
        policy: &Policy,
        label: &str,
        csr: &[u8],
        spki: &[u8],
        current: &ClientIdentity,
    ) -> Result<Answer, AgentError> {
        let request = EstRequest { label, operation: SIMPLEREENROLL, csr, spki };
        self.est_post(policy, &request, Some(current), None).await
    }

    /// POSTs the request to the EST bases in priority order, failing over on transport errors.
    async fn est_post(
        &self,
        policy: &Policy,
        request: &EstRequest<'_>,
        identity: Option<&ClientIdentity>,
        authorization: Option<&str>,
    ) -> Result<Answer, AgentError> {
        let EstRequest { label, operation, csr, spki } = *request;
        let Enrollment::Est(bases) = &policy.enrollment else {
            return Err(AgentError::Protocol("a WSTEP policy has no EST server".into()));
        };
        let body = autoenroll_proto::b64::encode(csr).into_bytes();
        let client = self.client(identity)?;
        let mut last = None;
        for base in bases {
            let url = format!("{base}/{label}/{operation}");
            let r = match client.post_authorized(&url, "application/pkcs10", body.clone(), authorization).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(%url, %e, "EST server failed, trying the next");
                    last = Some(e);
                    continue;
                }
            };
            crate::fault::point("after-submit");
            return match r.status {
                200 => {
                    let certs = autoenroll_proto::pkcs7::certificates(&est::decode_body(&r.body, "certificate")?)?;
                    // The answer may carry the chain too: ours is the one for our key.
                    let cert =
                        certs.into_iter().find(|c| CertFacts::parse(c).is_ok_and(|f| f.spki_der == spki)).ok_or_else(
                            || AgentError::Protocol("the EST answer holds no certificate for our key".into()),
                        )?;
                    // Never one that cannot serve: already expired, or not valid for days.
                    let now = self.clock.now();
                    let facts = CertFacts::parse(&cert).map_err(|e| AgentError::Protocol(e.to_string()))?;
                    if facts.not_after <= now || facts.not_before > now.plus_secs(86_400) {
                        return Err(AgentError::Protocol(format!(
                            "the EST answer's certificate is valid from {} to {}, not now",
                            facts.not_before, facts.not_after
                        )));
                    }
                    let chain = self.chain_for(&cert, None, policy)?;
                    Ok(Answer::Issued { cert, chain })
                }
                202 => {
                    Ok(Answer::Pending { request_id: format!("{HELD_PREFIX}{operation}"), retry_after: r.retry_after })
                }
                _ => match refusal(&url, &r) {
                    e @ AgentError::Transport { .. } => {
                        tracing::warn!(%url, %e, "EST server failed, trying the next");
                        last = Some(e);
                        continue;
                    }
                    e => Err(e),
                },
            };
        }
        Err(last.unwrap_or_else(|| AgentError::Protocol("no EST server configured".into())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, body: &str) -> Response {
        Response {
            status,
            location: None,
            retry_after: None,
            body: body.as_bytes().to_vec(),
            content_length: None,
            chunked: false,
        }
    }

    #[test]
    fn refusals_keep_the_servers_code_or_stand_for_the_status() {
        let code = |status, body| match refusal("u", &response(status, body)) {
            AgentError::Refused { code, .. } => code,
            e => format!("not a refusal: {e}"),
        };
        assert_eq!(code(403, "OutsideRenewalWindow: not yet\n"), "OutsideRenewalWindow");
        assert_eq!(code(401, "<html>no</html>"), "HTTP401");
        assert_eq!(code(503, ""), "ServerBusy");
        assert_eq!(code(429, "slow down please"), "ServerBusy");
        assert_eq!(code(503, "Internal: not now"), "ServerBusy", "a busy server is busy whatever its body");
        assert_eq!(code(404, "UnknownTemplate: no such label"), "UnknownTemplate");
        assert_eq!(code(403, ""), "HTTP403");
        for status in [301, 302, 408, 500, 502] {
            assert!(matches!(refusal("u", &response(status, "x")), AgentError::Transport { .. }), "{status}");
        }
        assert!(ends_held_request(&refusal("u", &response(403, "RequestDenied: no"))));
        assert!(ends_held_request(&refusal("u", &response(403, "<html>"))));
        assert!(!ends_held_request(&refusal("u", &response(401, "WrongCredentials: no"))));
        assert_eq!(held_operation("est-held:simplereenroll"), SIMPLEREENROLL);
        assert_eq!(held_operation("est-held:simpleenroll"), SIMPLEENROLL);
        assert_eq!(held_operation("1234"), SIMPLEENROLL);
        assert!(crate::transient_refusal(&code(503, "")));
    }

    #[test]
    fn csrattrs_decide_the_key_and_client_authentication() {
        let client_auth = der::asn1::ObjectIdentifier::new_unwrap(CLIENT_AUTH);
        let attrs = est::CsrAttrs { key: Some(KeyRequest::Ec(est::P384)), signature: None, ekus: vec![client_auth] };
        let t = template("Device", &attrs).unwrap();
        assert_eq!((t.key_algorithm, t.client_auth, t.name.as_str()), (KeyAlgorithm::P384, true, "Device"));
        let rsa = est::CsrAttrs { key: Some(KeyRequest::Rsa(3072)), ..Default::default() };
        assert_eq!(template("Web", &rsa).unwrap().key_algorithm, KeyAlgorithm::Rsa(3072));
        assert!(!template("Web", &rsa).unwrap().client_auth);
        // Nothing said: a P-256 key.
        assert_eq!(template("Any", &est::CsrAttrs::default()).unwrap().key_algorithm, KeyAlgorithm::P256);
        // A key we cannot make is an error, not a wrong key.
        let odd = est::CsrAttrs { key: Some(KeyRequest::Rsa(1024)), ..Default::default() };
        assert!(template("Old", &odd).is_err());
        // The renewal rule is 80 % of the lifetime.
        let due = autoenroll_core::renewal::renew_at(
            autoenroll_core::UnixTime(0),
            autoenroll_core::UnixTime(1000),
            template("Any", &est::CsrAttrs::default()).unwrap().renewal_secs,
        );
        assert_eq!(due, autoenroll_core::UnixTime(800));
    }
}
