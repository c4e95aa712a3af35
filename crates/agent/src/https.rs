//! A small HTTPS client (hyper over tokio-rustls): response size and time limits, optional TLS
//! client certificate, and optionally a pool of idle connections that one agent cycle shares
//! (policy, check-in and enrollment on one handshake). Enough for SOAP; nothing more to carry.
use crate::AgentError;
use autoenroll_core::clock::Clock;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::TlsConnector;

const MAX_RESPONSE: usize = 4 * 1024 * 1024;
const TIMEOUT: Duration = Duration::from_secs(30);

pub struct Response {
    pub status: u16,
    /// The Location header of a redirect (never followed).
    pub location: Option<String>,
    /// Retry-After in seconds (a date form is not read).
    pub retry_after: Option<u64>,
    pub body: Vec<u8>,
    pub content_length: Option<u64>,
    pub chunked: bool,
}

pub struct Client {
    connector: TlsConnector,
    /// Which configuration `connector` holds: pooled connections are reused only by a client
    /// with the same trust anchors and identity.
    config_key: ConfigKey,
    /// The local address connections leave from (multi-homed hosts; load generators).
    source: Option<std::net::IpAddr>,
    pool: Option<Pool>,
}

/// Idle connections kept for reuse, by configuration, server and source address. One per agent
/// cycle: dropping it (the cycle's end) closes them, so a daemon holds no connection while it
/// sleeps. Clones share the pool.
#[derive(Clone, Default)]
pub struct Pool(Arc<std::sync::Mutex<Vec<Idle>>>);

type PoolKey = (ConfigKey, String, Option<std::net::IpAddr>);

struct Idle {
    key: PoolKey,
    sender: SendRequest<Full<Bytes>>,
    since: std::time::Instant,
}

/// How long an idle connection is kept: well under the server's idle timeout (30 s by default),
/// so a reused connection is rarely one the server is closing.
const IDLE_FOR: Duration = Duration::from_secs(10);
/// Idle connections kept at once (one per server and identity in a cycle; more for a load
/// generator's concurrent clients).
const IDLE_KEPT: usize = 256;

impl Pool {
    fn take(&self, key: &PoolKey) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.0.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|i| i.since.elapsed() < IDLE_FOR && !i.sender.is_closed());
        let at = idle.iter().rposition(|i| i.key == *key)?;
        Some(idle.swap_remove(at).sender)
    }

    fn put(&self, key: PoolKey, sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() >= IDLE_KEPT {
            idle.remove(0);
        }
        idle.push(Idle { key, sender, since: std::time::Instant::now() });
    }
}

/// A client certificate chain (leaf first) with its PKCS#8 key.
pub struct ClientIdentity {
    pub chain: Vec<Vec<u8>>,
    pub key_pkcs8: Vec<u8>,
}

/// Client configurations by (anchors, identity, clock): a configuration holds rustls' session
/// cache, so reusing it lets the next connection to a server resume (a PSK handshake instead of
/// a full one with the client certificate) for the life of the process (the daemon).
type ConfigKey = (String, usize);
static CONFIGS: std::sync::Mutex<Vec<(ConfigKey, Arc<rustls::ClientConfig>)>> = std::sync::Mutex::new(Vec::new());
/// Identities a process uses at once: one per template's certificate and the account.
const CONFIGS_KEPT: usize = 16;

fn config_key(roots_der: &[Vec<u8>], identity: Option<&ClientIdentity>, clock: &Arc<dyn Clock>) -> ConfigKey {
    // Each section counted and each part length-prefixed, so no two different inputs read the
    // same (roots [R, X] + chain [L] differ from roots [R] + chain [X, L]).
    let mut input = Vec::new();
    let mut section = |parts: &[&Vec<u8>]| {
        input.extend_from_slice(&(parts.len() as u64).to_be_bytes());
        for p in parts {
            input.extend_from_slice(&(p.len() as u64).to_be_bytes());
            input.extend_from_slice(p);
        }
    };
    section(&roots_der.iter().collect::<Vec<_>>());
    match identity {
        Some(id) => {
            section(&id.chain.iter().collect::<Vec<_>>());
            section(&[&id.key_pkcs8]);
        }
        None => section(&[]),
    }
    let digest = autoenroll_keys::sha256_hex(&input);
    // The clock judges certificate validity: clients with different clocks (tests) differ.
    (digest, Arc::as_ptr(clock) as *const () as usize)
}

/// The configuration for `key`, moved to the back (most recently used) when found.
fn cached_config(key: &ConfigKey) -> Option<Arc<rustls::ClientConfig>> {
    let mut configs = CONFIGS.lock().unwrap_or_else(|p| p.into_inner());
    let at = configs.iter().position(|(k, _)| k == key)?;
    let entry = configs.remove(at);
    let config = entry.1.clone();
    configs.push(entry);
    Some(config)
}

/// Keeps `config` (unless a racing caller kept one for the same key first), dropping the least
/// recently used beyond `CONFIGS_KEPT`.
fn remember_config(key: ConfigKey, config: Arc<rustls::ClientConfig>) {
    let mut configs = CONFIGS.lock().unwrap_or_else(|p| p.into_inner());
    if configs.iter().any(|(k, _)| *k == key) {
        return;
    }
    if configs.len() >= CONFIGS_KEPT {
        configs.remove(0);
    }
    configs.push((key, config));
}

impl Client {
    /// A client that trusts only `roots_der` and judges certificate validity with `clock`.
    pub fn new(
        roots_der: &[Vec<u8>],
        identity: Option<&ClientIdentity>,
        clock: Arc<dyn Clock>,
    ) -> Result<Client, AgentError> {
        let mut roots = rustls::RootCertStore::empty();
        for r in roots_der {
            roots.add(CertificateDer::from(r.clone())).map_err(|e| AgentError::Config(format!("trust anchor: {e}")))?;
        }
        let key = config_key(roots_der, identity, &clock);
        if let Some(config) = cached_config(&key) {
            return Ok(Client { connector: TlsConnector::from(config), config_key: key, source: None, pool: None });
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder =
            rustls::ClientConfig::builder_with_details(provider, Arc::new(autoenroll_keys::time::TlsTime(clock)))
                .with_safe_default_protocol_versions()
                .map_err(|e| AgentError::Config(format!("TLS: {e}")))?
                .with_root_certificates(roots);
        let config = match identity {
            Some(id) => builder
                .with_client_auth_cert(
                    id.chain.iter().map(|c| CertificateDer::from(c.clone())).collect(),
                    PrivateKeyDer::try_from(id.key_pkcs8.clone())
                        .map_err(|e| AgentError::Config(format!("client key: {e}")))?,
                )
                .map_err(|e| AgentError::Config(format!("client certificate: {e}")))?,
            None => builder.with_no_client_auth(),
        };
        let config = Arc::new(config);
        remember_config(key.clone(), config.clone());
        Ok(Client { connector: TlsConnector::from(config), config_key: key, source: None, pool: None })
    }

    /// A client whose every connection does a full handshake (no session resumption, no
    /// pooling): what a device that never talked to the server before costs. For benchmarks.
    pub fn without_resumption(
        roots_der: &[Vec<u8>],
        identity: Option<&ClientIdentity>,
        clock: Arc<dyn Clock>,
    ) -> Result<Client, AgentError> {
        Ok(Client::new(roots_der, identity, clock)?.with_resumption(rustls::client::Resumption::disabled(), "full"))
    }

    /// The same client with a TLS session cache of its own instead of the process-wide one:
    /// one device among many simulated in one process (rustls keeps at most 8 TLS 1.3
    /// tickets per server and cache, so many concurrent connections sharing one cache would
    /// run out and fall back to full handshakes, which separate agents never do). For
    /// benchmarks.
    pub fn with_own_sessions(self) -> Client {
        static OWN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = OWN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.with_resumption(rustls::client::Resumption::in_memory_sessions(4), &format!("own{n}"))
    }

    /// This client's configuration with `resumption` instead of the shared one, under a key of
    /// its own, so its connections never mix with the shared configuration's in a pool.
    fn with_resumption(self, resumption: rustls::client::Resumption, key_suffix: &str) -> Client {
        let mut config = (**self.connector.config()).clone();
        config.resumption = resumption;
        let config_key = (format!("{}-{key_suffix}", self.config_key.0), self.config_key.1);
        Client { connector: TlsConnector::from(Arc::new(config)), config_key, ..self }
    }

    /// Requests reuse idle connections from `pool` and leave theirs there afterwards.
    pub fn with_pool(mut self, pool: Pool) -> Client {
        self.pool = Some(pool);
        self
    }

    /// Connections leave from `source` (an address of this host).
    pub fn from_source(mut self, source: std::net::IpAddr) -> Client {
        self.source = Some(source);
        self
    }

    pub async fn post(&self, url: &str, content_type: &str, body: Vec<u8>) -> Result<Response, AgentError> {
        self.request(http::Method::POST, url, Some((content_type, body)), None).await
    }

    /// A POST with `Authorization: Bearer <token>`.
    pub async fn post_bearer(
        &self,
        url: &str,
        content_type: &str,
        body: Vec<u8>,
        token: &str,
    ) -> Result<Response, AgentError> {
        self.request(http::Method::POST, url, Some((content_type, body)), Some(&format!("Bearer {token}"))).await
    }

    /// A POST with this `Authorization` header value, if any.
    pub async fn post_authorized(
        &self,
        url: &str,
        content_type: &str,
        body: Vec<u8>,
        authorization: Option<&str>,
    ) -> Result<Response, AgentError> {
        self.request(http::Method::POST, url, Some((content_type, body)), authorization).await
    }

    pub async fn get(&self, url: &str) -> Result<Response, AgentError> {
        self.request(http::Method::GET, url, None, None).await
    }

    /// A GET with `Authorization: Bearer <token>`.
    pub async fn get_bearer(&self, url: &str, token: &str) -> Result<Response, AgentError> {
        self.request(http::Method::GET, url, None, Some(&format!("Bearer {token}"))).await
    }

    async fn request(
        &self,
        method: http::Method,
        url: &str,
        body: Option<(&str, Vec<u8>)>,
        authorization: Option<&str>,
    ) -> Result<Response, AgentError> {
        let err = |m: String| AgentError::Transport { url: url.to_string(), message: m };
        tokio::time::timeout(TIMEOUT, self.request_inner(method, url, body, authorization))
            .await
            .map_err(|_| err("timed out".into()))?
            .map_err(err)
    }

    async fn request_inner(
        &self,
        method: http::Method,
        url: &str,
        body: Option<(&str, Vec<u8>)>,
        authorization: Option<&str>,
    ) -> Result<Response, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
        if uri.scheme_str() != Some("https") {
            return Err("only https:// URLs are supported".into());
        }
        let host = uri.host().ok_or("URL without host")?.trim_start_matches('[').trim_end_matches(']').to_string();
        let port = uri.port_u16().unwrap_or(443);
        let authority = uri.authority().map(|a| a.as_str().to_string()).unwrap_or_else(|| host.clone());
        let mut builder = http::Request::builder()
            .method(method)
            .uri(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
            .header(http::header::HOST, authority.as_str());
        if let Some(value) = authorization {
            builder = builder.header(http::header::AUTHORIZATION, value);
        }
        let payload = match body {
            Some((content_type, b)) => {
                builder = builder.header(http::header::CONTENT_TYPE, content_type);
                b
            }
            None => Vec::new(),
        };
        let mut req = builder.body(Full::new(Bytes::from(payload))).map_err(|e| format!("request: {e}"))?;
        let pool_key: PoolKey = (self.config_key.clone(), format!("{host}:{port}"), self.source);
        if let Some(pool) = &self.pool {
            if let Some(mut sender) = pool.take(&pool_key) {
                if sender.ready().await.is_ok() {
                    match sender.try_send_request(req).await {
                        Ok(resp) => return self.finish(resp, sender, pool_key, None).await,
                        // The server closed the idle connection before taking the request: it
                        // was never sent, so sending it on a new connection is safe.
                        Err(mut e) => match e.take_message() {
                            Some(unsent) => req = unsent,
                            None => return Err(format!("HTTP: {}", e.into_error())),
                        },
                    }
                } else {
                    // A closed connection: the request is still ours, on a new one.
                }
            }
        }
        let (mut sender, conn_task) = self.connect(&host, port).await?;
        let resp = sender.send_request(req).await.map_err(|e| format!("HTTP: {e}"))?;
        self.finish(resp, sender, pool_key, Some(conn_task)).await
    }

    /// A new connection: TCP (from `source` if set), TLS, HTTP/1.1.
    async fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> Result<(SendRequest<Full<Bytes>>, tokio::task::JoinHandle<()>), String> {
        let tcp = match self.source {
            None => tokio::net::TcpStream::connect((host, port)).await.map_err(|e| format!("connect: {e}"))?,
            Some(source) => {
                let to = tokio::net::lookup_host((host, port))
                    .await
                    .map_err(|e| format!("resolve: {e}"))?
                    .find(|a| a.is_ipv4() == source.is_ipv4())
                    .ok_or("no address of the source's family")?;
                let socket =
                    if source.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }
                        .map_err(|e| format!("socket: {e}"))?;
                socket.bind(std::net::SocketAddr::new(source, 0)).map_err(|e| format!("bind {source}: {e}"))?;
                socket.connect(to).await.map_err(|e| format!("connect: {e}"))?
            }
        };
        // Request head and body go out as separate writes: without this, Nagle holds the body
        // until the server's delayed ACK (40 ms) on servers that do not answer the head first.
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(host.to_string()).map_err(|e| format!("server name: {e}"))?;
        let tls = self.connector.connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        // The connection ends when its last sender is dropped (pooled or not).
        let conn_task = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok((sender, conn_task))
    }

    /// Reads the response (bounded) and leaves the connection in the pool, or closes it.
    async fn finish(
        &self,
        resp: http::Response<hyper::body::Incoming>,
        sender: SendRequest<Full<Bytes>>,
        pool_key: PoolKey,
        conn_task: Option<tokio::task::JoinHandle<()>>,
    ) -> Result<Response, String> {
        let status = resp.status().as_u16();
        let location = resp.headers().get(http::header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_string);
        let retry_after =
            resp.headers().get(http::header::RETRY_AFTER).and_then(|v| v.to_str().ok()?.trim().parse().ok());
        let content_length =
            resp.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
        let chunked = resp
            .headers()
            .get(http::header::TRANSFER_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("chunked"));
        let body = http_body_util::Limited::new(resp.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| format!("reading response: {e}"))?
            .to_bytes()
            .to_vec();
        match &self.pool {
            Some(pool) => pool.put(pool_key, sender),
            None => {
                drop(sender);
                if let Some(task) = conn_task {
                    task.abort();
                }
            }
        }
        Ok(Response { status, location, retry_after, body, content_length, chunked })
    }
}

#[cfg(test)]
mod config_cache_tests {
    use super::*;

    #[test]
    fn one_configuration_per_identity_so_sessions_resume() {
        let clock: Arc<dyn Clock> = Arc::new(autoenroll_keys::time::SystemClock);
        let roots = vec![b"root".to_vec()];
        let id = |key: &[u8]| ClientIdentity { chain: vec![b"leaf".to_vec()], key_pkcs8: key.to_vec() };
        let a = config_key(&roots, Some(&id(b"k1")), &clock);
        assert_eq!(a, config_key(&roots, Some(&id(b"k1")), &clock), "stable");
        assert_ne!(a, config_key(&roots, Some(&id(b"k2")), &clock), "another key");
        assert_ne!(a, config_key(&roots, None, &clock), "no identity");
        let other_clock: Arc<dyn Clock> = Arc::new(autoenroll_keys::time::SystemClock);
        assert_ne!(a, config_key(&roots, Some(&id(b"k1")), &other_clock), "another clock");
        // Two roots concatenated never read as one.
        assert_ne!(
            config_key(&[b"ab".to_vec()], None, &clock),
            config_key(&[b"a".to_vec(), b"b".to_vec()], None, &clock)
        );
        // Nor a root moved into the chain.
        let moved = ClientIdentity { chain: vec![b"root".to_vec(), b"leaf".to_vec()], key_pkcs8: b"k1".to_vec() };
        assert_ne!(
            config_key(&[b"root".to_vec(), b"root".to_vec()], Some(&id(b"k1")), &clock),
            config_key(&[b"root".to_vec()], Some(&moved), &clock)
        );
    }
}
