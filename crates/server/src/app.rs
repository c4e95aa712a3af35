//! The HTTPS listener: TLS with optional client certificates (visible to handlers as
//! `Peer`), HTTP/1.1 and HTTP/2, time limits on handshakes and headers.
use crate::config::ServerConfig;
use crate::conn::{Budget, Full, IdleIo, InFlight, Limits};
use crate::frontends::{self, AppState, Peer};
use crate::ra::{Ra, RaError};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

pub fn install_crypto_provider() {
    // Ignore "already installed": tests and the CLI may both call this.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// TLS for the listener: our CA's certificate, client certificates optional but, when sent,
/// verified against our root or issuing CA.
/// The operator's listener certificate chain and key, with errors that name the file.
fn operator_identity(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), RaError> {
    use rustls_pki_types::pem::PemObject;
    let certs = CertificateDer::pem_file_iter(cert).and_then(|it| it.collect::<Result<Vec<_>, _>>()).map_err(|e| {
        RaError::internal(format!("tls.cert {}: {e} (expected PEM CERTIFICATE blocks)", cert.display()))
    })?;
    if certs.is_empty() {
        return Err(RaError::internal(format!("tls.cert {}: no CERTIFICATE in it", cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        RaError::internal(format!(
            "tls.key {}: {e} (expected a PEM PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY)",
            key.display()
        ))
    })?;
    Ok((certs, key))
}

/// Loads operator TLS files as the server would: the number of certificates in the chain.
pub fn check_tls_files(cert: &Path, key: &Path) -> Result<usize, RaError> {
    let (certs, _) = operator_identity(cert, key)?;
    Ok(certs.len())
}

/// A server's session resumption state: one session cache and one ticketer (keys rotated by
/// rustls) for the life of the server, across certificate reloads, never shared with another
/// server in the process (a ticket resumes only where it was issued).
#[derive(Clone)]
pub struct Resumption {
    cache: Arc<dyn rustls::server::StoresServerSessions>,
    ticketer: Arc<dyn rustls::server::ProducesTickets>,
}

impl Resumption {
    pub fn new() -> Result<Resumption, RaError> {
        Ok(Resumption {
            cache: rustls::server::ServerSessionMemoryCache::new(16_384),
            ticketer: rustls::crypto::aws_lc_rs::Ticketer::new().map_err(RaError::internal)?,
        })
    }
}

pub async fn tls_config(
    ra: &Ra,
    cfg: &ServerConfig,
    resumption: &Resumption,
) -> Result<Arc<rustls::ServerConfig>, RaError> {
    install_crypto_provider();
    let (certs, key) = match &cfg.tls_files {
        Some((cert, key)) => operator_identity(cert, key)?,
        None => {
            let (key_pem, chain) = ra.tls_identity(&cfg.tls_names(), &cfg.tls_ips()).await?;
            let (_, key_der) = der::pem::decode_vec(key_pem.as_bytes()).map_err(RaError::internal)?;
            let key = PrivateKeyDer::try_from(key_der).map_err(RaError::internal)?;
            (chain.into_iter().map(CertificateDer::from).collect(), key)
        }
    };
    // The issuing CA is an anchor too: many clients (curl, Python, certmonger's files) send
    // their leaf alone, which cannot be chained to the root without it.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ra.root_der().to_vec())).map_err(RaError::internal)?;
    roots.add(CertificateDer::from(ra.issuing_der().to_vec())).map_err(RaError::internal)?;
    let verifier =
        WebPkiClientVerifier::builder(Arc::new(roots)).allow_unauthenticated().build().map_err(RaError::internal)?;
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    // AES-128-GCM first, whatever the client prefers: its SHA-256 key schedule runs on the SHA
    // extensions of today's CPUs, SHA-384 in software (21 % less server CPU per resumed
    // handshake measured); both are 128-bit-secure or better against today's attacks.
    provider.cipher_suites.sort_by_key(|s| {
        use rustls::CipherSuite as C;
        match s.suite() {
            C::TLS13_AES_128_GCM_SHA256 => 0,
            C::TLS13_AES_256_GCM_SHA384 => 1,
            C::TLS13_CHACHA20_POLY1305_SHA256 => 2,
            C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 | C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 3,
            _ => 4,
        }
    });
    let provider = Arc::new(provider);
    let mut config =
        rustls::ServerConfig::builder_with_details(provider, Arc::new(autoenroll_keys::time::TlsTime(ra.clock())))
            .with_safe_default_protocol_versions()
            .map_err(RaError::internal)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .map_err(|e| match &cfg.tls_files {
                Some((c, k)) => {
                    RaError::internal(format!("tls.cert {} with tls.key {}: {e}", c.display(), k.display()))
                }
                None => RaError::internal(e),
            })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ignore_client_order = true;
    // Resumption: a device that comes back (every agent cycle, every renewal) pays a PSK
    // handshake instead of a full one. The RA checks the client certificate's state and
    // validity on every request whatever the handshake (`Ra::authenticate`).
    config.session_storage = resumption.cache.clone();
    config.ticketer = resumption.ticketer.clone();
    Ok(Arc::new(config))
}

/// A bound, ready-to-serve server.
/// Keeps the listener's TLS identity fresh: `tls_identity` re-issues it within 30 days of
/// expiry, and new connections pick up the new configuration.
#[derive(Clone)]
pub struct TlsReloader {
    ra: Arc<Ra>,
    resumption: Resumption,
    cfg: Arc<std::sync::RwLock<ServerConfig>>,
    acceptor: Arc<std::sync::RwLock<TlsAcceptor>>,
}

const TLS_RELOAD_EVERY: Duration = Duration::from_secs(12 * 3600);
const CRL_CHECK_EVERY: Duration = Duration::from_secs(1800);

impl TlsReloader {
    pub async fn reload(&self) -> Result<(), RaError> {
        let cfg = match self.cfg.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let tls = tls_config(&self.ra, &cfg, &self.resumption).await?;
        match self.acceptor.write() {
            Ok(mut a) => *a = TlsAcceptor::from(tls),
            Err(p) => *p.into_inner() = TlsAcceptor::from(tls),
        }
        Ok(())
    }

    /// Reloads with a new configuration (SIGHUP): new names re-issue our certificate, new
    /// operator files are read. On an error the running configuration stays.
    pub async fn reload_with(&self, cfg: &ServerConfig) -> Result<(), RaError> {
        let tls = tls_config(&self.ra, cfg, &self.resumption).await?;
        match self.cfg.write() {
            Ok(mut c) => *c = cfg.clone(),
            Err(p) => *p.into_inner() = cfg.clone(),
        }
        match self.acceptor.write() {
            Ok(mut a) => *a = TlsAcceptor::from(tls),
            Err(p) => *p.into_inner() = TlsAcceptor::from(tls),
        }
        Ok(())
    }

    fn current(&self) -> TlsAcceptor {
        match self.acceptor.read() {
            Ok(a) => a.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

pub struct Server {
    listener: TcpListener,
    tls: TlsReloader,
    router: axum::Router,
    pub local_addr: SocketAddr,
    pub base_url: String,
    /// The plain-HTTP listener (`[scep] http_listen`; on unless turned off).
    scep_http: Option<(TcpListener, axum::Router)>,
    /// The token-free `/metrics` listener (`[metrics] listen`; off unless configured).
    metrics_http: Option<(TcpListener, axum::Router)>,
    pub metrics_addr: Option<SocketAddr>,
    /// e.g. `http://127.0.0.1:8080/scep`
    pub scep_http_url: Option<String>,
    /// SHA-256 of the SCEP RA certificate (what micromdm's `scepclient -ca-fingerprint` takes).
    pub scep_ra_fingerprint: String,
    limits: Limits,
    /// TLS handshakes completed on the HTTPS listener, full and resumed.
    pub handshakes: Arc<Handshakes>,
}

/// Completed TLS handshakes (also `autoenroll_tls_handshakes_total{kind}`): how often clients
/// pay for a full one, and whether they keep connections open.
#[derive(Default, Debug)]
pub struct Handshakes {
    pub full: std::sync::atomic::AtomicU64,
    pub resumed: std::sync::atomic::AtomicU64,
}

impl Handshakes {
    fn count(&self, kind: Option<rustls::HandshakeKind>) {
        let resumed = kind == Some(rustls::HandshakeKind::Resumed);
        let counter = if resumed { &self.resumed } else { &self.full };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        crate::metrics::handshake(resumed);
    }

    /// Full and resumed handshakes so far.
    pub fn get(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.full.load(Relaxed), self.resumed.load(Relaxed))
    }
}

/// A request's future, counted as in flight on its connection until it has an answer.
fn handling<F: Future>(in_flight: &InFlight, handled: F) -> impl Future<Output = F::Output> {
    let guard = in_flight.enter();
    async move {
        let out = handled.await;
        drop(guard);
        out
    }
}

/// Every request answered within the configured deadline (408 otherwise).
fn with_deadline(router: axum::Router, limits: &Limits) -> axum::Router {
    let limit = limits.request;
    // Timed, labelled and logged under a request id inside the deadline (in the task that runs
    // the handler).
    router
        .layer(axum::middleware::from_fn(crate::metrics::track))
        .layer(axum::middleware::from_fn(request_id))
        .layer(axum::middleware::from_fn(move |req, next| crate::conn::request_deadline(limit, req, next)))
}

/// Every request gets an id: the caller's `X-Request-Id` when it is a short plain token (a
/// reverse proxy's), else a new one. Log lines of the request carry it (span `request`) and
/// the response returns it, so a client's error report can be found in the log.
async fn request_id(mut req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    use tracing::Instrument;
    const HEADER: &str = "x-request-id";
    let given = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64)
        .filter(|v| v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)))
        .map(str::to_string);
    let id = given.unwrap_or_else(|| hex::encode(crate::ra::secrets::random_bytes::<8>()));
    if let Ok(v) = axum::http::HeaderValue::from_str(&id) {
        req.headers_mut().insert(HEADER, v);
    }
    let span = tracing::info_span!("request", id = %id, method = %req.method(), path = %req.uri().path());
    let mut response = next.run(req).instrument(span).await;
    if let Ok(v) = axum::http::HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, v);
    }
    response
}

/// HTTP/1.1 and HTTP/2 with the header deadline; idle connections are closed by `IdleIo`.
fn http_builder(limits: &Limits) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header);
    // Few streams and small windows: a request body is at most 256 KiB, and each open stream
    // may hold one in memory.
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(8)
        .initial_stream_window_size(64 * 1024)
        .initial_connection_window_size(256 * 1024);
    builder
}

/// Logs refused connections, at most one line per second per listener (a flood must not
/// become a flood of log lines).
fn refuse(listener: &'static str, remote: SocketAddr, why: Full) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static HTTPS: AtomicU64 = AtomicU64::new(0);
    static HTTP: AtomicU64 = AtomicU64::new(0);
    let last = if listener == "https" { &HTTPS } else { &HTTP };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if last.swap(now, Ordering::Relaxed) == now {
        return;
    }
    match why {
        Full::Listener => {
            tracing::warn!(%remote, listener, "connection limit of the listener reached; connections dropped")
        }
        Full::Address => {
            tracing::warn!(%remote, listener, "too many connections from one address; connections dropped")
        }
    }
}

impl Server {
    pub async fn bind(ra: Arc<Ra>, cfg: &ServerConfig) -> Result<Server, RaError> {
        // Before anything is counted (the listener certificate below is an issuance).
        crate::metrics::handle();
        ra.remember_server_names().await?;
        let listener = TcpListener::bind(cfg.listen).await.map_err(|e| {
            let hint = match e.kind() {
                std::io::ErrorKind::AddrInUse => " (another process listens there: stop it or choose another --listen)",
                std::io::ErrorKind::PermissionDenied => " (ports below 1024 need CAP_NET_BIND_SERVICE or root)",
                std::io::ErrorKind::AddrNotAvailable => " (no interface of this host has that address)",
                _ => "",
            };
            RaError::internal(format!("binding {} (listen): {e}{hint}", cfg.listen))
        })?;
        let local_addr = listener.local_addr().map_err(RaError::internal)?;
        let base_url = cfg.base_url(local_addr);
        let state = AppState {
            ra,
            base_url: base_url.clone(),
            mdm_provider_id: cfg.mdm_provider_id.clone(),
            mdm_management_url: cfg
                .mdm_management_url
                .clone()
                .unwrap_or_else(|| format!("{base_url}/ManagementServer/MDM.svc")),
            mdm_sign_in_return: cfg.mdm_sign_in_return.clone(),
        };
        let (scep_http, scep_http_url) = match cfg.scep_http_listen {
            Some(addr) => {
                let l = TcpListener::bind(addr).await.map_err(|e| {
                    RaError::internal(format!(
                        "binding {addr} (plain HTTP: SCEP, CRL, CA certificates; choose another address with \
                             --scep-http-listen ADDR, or turn it off with --scep-http-listen off): {e}"
                    ))
                })?;
                let bound = l.local_addr().map_err(RaError::internal)?;
                // SCEP, the CRL and the issuing CA certificate: nothing that needs TLS.
                let router = frontends::scep::router(state.clone())
                    .merge(frontends::revocation::router(state.clone()))
                    .route("/healthz", axum::routing::get(|| async { "ok\n" }));
                let router = with_deadline(router, &cfg.limits);
                (Some((l, router)), Some(cfg.http_base(bound)))
            }
            None => (None, None),
        };
        let (metrics_http, metrics_addr) = match cfg.metrics_listen {
            Some(addr) => {
                let l = TcpListener::bind(addr).await.map_err(|e| {
                    RaError::internal(format!("binding {addr} (metrics.listen, the /metrics listener): {e}"))
                })?;
                let bound = l.local_addr().map_err(RaError::internal)?;
                let router = with_deadline(frontends::metrics_router(state.clone()), &cfg.limits);
                (Some((l, router)), Some(bound))
            }
            None => (None, None),
        };
        let scep_ra_fingerprint = autoenroll_keys::sha256_hex(&state.ra.scep_certificates()[0]);
        // Certificates name the CRL and the issuing CA at the plain-HTTP base when there is one,
        // from the first (the listener's own) on; recorded for the other processes.
        state.ra.publish_base(scep_http_url.as_deref().unwrap_or(&base_url)).await?;
        // The issuing CA names the root and its CRL at that base (with the root key at hand),
        // before the listener certificate and its chain are made. Not fatal: the server serves
        // with the chain it has and says what is wrong.
        if let Err(e) = state.ra.chain_upkeep(None).await {
            tracing::error!(%e, "could not bring the CA chain up to date");
        }
        let resumption = Resumption::new()?;
        let tls = tls_config(&state.ra, cfg, &resumption).await?;
        let reloader = TlsReloader {
            ra: state.ra.clone(),
            resumption,
            cfg: Arc::new(std::sync::RwLock::new(cfg.clone())),
            acceptor: Arc::new(std::sync::RwLock::new(TlsAcceptor::from(tls))),
        };
        let scep_http_url = scep_http_url.map(|b| format!("{b}{}", frontends::scep::PATH));
        let router = with_deadline(frontends::router(state), &cfg.limits);
        Ok(Server {
            limits: cfg.limits.clone(),
            listener,
            tls: reloader,
            router,
            local_addr,
            base_url,
            scep_http,
            metrics_http,
            metrics_addr,
            scep_http_url,
            scep_ra_fingerprint,
            handshakes: Default::default(),
        })
    }

    /// A handle that re-issues and swaps the listener certificate (also done every 12 hours).
    pub fn tls_reloader(&self) -> TlsReloader {
        self.tls.clone()
    }

    /// Serves until `shutdown` completes, then drains: no new connections, requests in
    /// flight finish (at most the request deadline), idle keep-alive connections close.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let graceful = Arc::new(GracefulShutdown::new());
        let limits = self.limits.clone();
        let budget = Budget::new(limits.max_connections, limits.per_ip_connections);
        let http_budget = Budget::new(limits.max_http_connections, limits.per_ip_connections);
        let reloader = self.tls.clone();
        let refresh = tokio::spawn(async move {
            loop {
                tokio::time::sleep(TLS_RELOAD_EVERY).await;
                if let Err(e) = reloader.reload().await {
                    tracing::error!(%e, "could not refresh the listener certificate");
                }
            }
        });
        let ra = self.tls.ra.clone();
        let crl_refresh = tokio::spawn(async move {
            loop {
                // Renewed certificates whose successor never showed up go after the grace.
                if let Err(e) = ra.revoke_superseded().await {
                    tracing::error!(%e, "could not revoke superseded certificates");
                }
                // `crl()` re-signs after a revocation or when half the CRL's validity has passed.
                if let Err(e) = ra.crl().await {
                    tracing::error!(%e, "could not refresh the CRL");
                }
                if let Err(e) = ra.reconcile_interrupted().await {
                    tracing::error!(%e, "could not finish interrupted requests");
                }
                if let Err(e) = ra.prune_throttle().await {
                    tracing::error!(%e, "could not prune failed-login counters");
                }
                // The root's CRL and the issuing CA certificate (when the root key is at hand).
                if let Err(e) = ra.chain_upkeep(None).await {
                    tracing::error!(%e, "could not keep the CA chain up");
                }
                tokio::time::sleep(CRL_CHECK_EVERY).await;
            }
        });
        let plain = self.scep_http.map(|(listener, router)| {
            tokio::spawn(serve_plain(listener, router, http_budget, limits.clone(), graceful.clone()))
        });
        let metrics_plain = self.metrics_http.map(|(listener, router)| {
            tokio::spawn(serve_plain(listener, router, Budget::new(64, 16), limits.clone(), graceful.clone()))
        });
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                a = self.listener.accept() => a,
                _ = &mut shutdown => break,
            };
            let (tcp, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(%e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let slot = match budget.admit(remote.ip()) {
                Ok(slot) => slot,
                Err(why) => {
                    refuse("https", remote, why);
                    continue;
                }
            };
            // Responses leave as several small TLS records; without this the second one waits
            // for the client's delayed ACK (40 ms).
            let _ = tcp.set_nodelay(true);
            let acceptor = self.tls.current();
            let router = self.router.clone();
            let limits = limits.clone();
            let watcher = graceful.watcher();
            let handshakes = self.handshakes.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let in_flight = InFlight::default();
                let tcp = IdleIo::new(tcp, limits.idle, in_flight.clone());
                let tls = match tokio::time::timeout(limits.handshake, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        // e.g. a client certificate of another CA, or an expired one.
                        tracing::info!(%remote, %e, "TLS handshake refused");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%remote, "TLS handshake timed out");
                        return;
                    }
                };
                handshakes.count(tls.get_ref().1.handshake_kind());
                let peer = Peer(
                    tls.get_ref()
                        .1
                        .peer_certificates()
                        .map(|c| Arc::new(c.iter().map(|c| c.clone().into_owned()).collect())),
                    Some(remote.ip()),
                );
                let svc = router
                    .map_request(move |mut req: hyper::Request<hyper::body::Incoming>| {
                        req.extensions_mut().insert(peer.clone());
                        req
                    })
                    .map_future(move |handled| handling(&in_flight, handled));
                let builder = http_builder(&limits);
                let conn = builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(svc));
                if let Err(e) = watcher.watch(conn).await {
                    tracing::debug!(%remote, %e, "connection ended with an error");
                }
            });
        }
        refresh.abort();
        crl_refresh.abort();
        for p in [plain, metrics_plain].into_iter().flatten() {
            p.abort();
            let _ = p.await;
        }
        drop(self.listener);
        let open = graceful.count();
        tracing::info!(open, "draining: no new connections; requests in flight finish");
        match Arc::try_unwrap(graceful) {
            Ok(g) => {
                if tokio::time::timeout(limits.request + Duration::from_secs(1), g.shutdown()).await.is_err() {
                    tracing::warn!("requests still running after the request deadline were cut off");
                }
            }
            Err(_) => tracing::warn!("could not drain: a listener still holds the shutdown handle"),
        }
        tracing::info!("stopped");
    }
}

/// Plain HTTP: SCEP (its messages carry their own signatures and encryption), CRLs, CA
/// certificates, OCSP. Its own connection budget.
async fn serve_plain(
    listener: TcpListener,
    router: axum::Router,
    budget: Budget,
    limits: Limits,
    graceful: Arc<GracefulShutdown>,
) {
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(%e, "accept failed (plain HTTP)");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match budget.admit(remote.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                refuse("http", remote, why);
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let limits = limits.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _slot = slot;
            let in_flight = InFlight::default();
            let io = IdleIo::new(tcp, limits.idle, in_flight.clone());
            let svc = router
                .map_request(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(Peer(None, Some(remote.ip())));
                    req
                })
                .map_future(move |handled| handling(&in_flight, handled));
            let builder = http_builder(&limits);
            let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(svc));
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%remote, %e, "connection ended with an error");
            }
        });
    }
}
