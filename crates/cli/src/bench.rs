//! `autoenroll bench issue`: a load generator that drives a server over real HTTPS with
//! pre-generated CSRs and prints requests/s and latency percentiles per concurrency level.
//! Without `--url` it starts its own server on loopback (SQLite, fresh data directory).
use anyhow::{bail, Context, Result};
use autoenroll_agent::https::{Client, ClientIdentity, Pool};
use autoenroll_keys::{build_csr, cn_name, KeyAlgorithm, KeyPair};
use autoenroll_proto::soap::{self, HeaderToken};
use autoenroll_proto::{ns, wstep};
use clap::Args;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct IssueBench {
    /// Server base URL (default: start a server on loopback for the run).
    #[arg(long)]
    url: Option<String>,
    /// Root CA PEM of that server (required with --url).
    #[arg(long)]
    root: Option<std::path::PathBuf>,
    /// Account used once to obtain the client certificate that authenticates the load.
    #[arg(long, default_value = "bench")]
    username: String,
    #[arg(long, default_value = "correct horse battery")]
    password: String,
    /// Concurrency levels, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    concurrency: Vec<usize>,
    /// Duration of each level.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    duration: Duration,
    /// Template the load enrolls with the client certificate (its grants must name Machine
    /// holders, e.g. `--grants holder:Machine`; the built-in server creates it).
    #[arg(long, default_value = "BenchLoad")]
    template: String,
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn post(client: &Client, url: &str, header: &HeaderToken, csr: &[u8]) -> Result<Vec<u8>> {
    let xml = soap::request(ns::ACTION_WSTEP, url, "urn:uuid:bench", header, wstep::issue_request_body(csr, &[]));
    let r = client.post(url, "application/soap+xml; charset=utf-8", xml.into_bytes()).await?;
    let env = soap::parse_envelope(&r.body)?;
    if let Some(f) = soap::parse_fault(&env) {
        bail!("fault {}: {}", f.subcode.unwrap_or_default(), f.reason);
    }
    wstep::parse_response(&env.body)?.certificate_der.context("no certificate")
}

/// The built-in server's own runtime, so that its threads' CPU can be told from the load
/// generator's (`server_cpu_secs`). Shut down without waiting when the bench ends.
pub struct ServerRuntime(Option<tokio::runtime::Runtime>);

impl Drop for ServerRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Thread names of the built-in server: its runtime, sqlx's SQLite worker threads and the
/// store's SQLite writer.
const SERVER_THREADS: [&str; 3] = ["ae-server", "sqlx-sqlite", autoenroll_server::ra::SQLITE_WRITER_THREAD];

/// CPU time used by the built-in server's threads (runtime workers and blocking pool, SQLite
/// workers), in seconds, from the scheduler's per-thread nanosecond counters.
pub fn server_cpu_secs() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0.0 };
    let mut ns = 0u64;
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if SERVER_THREADS.iter().any(|p| comm.starts_with(p)) {
            let sched = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
            ns += sched.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    ns as f64 / 1e9
}

/// Runs `start` (which binds a server and spawns it) on a runtime of its own whose threads
/// `server_cpu_secs` counts.
pub async fn in_server_runtime<T: Send + 'static>(
    start: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<(T, ServerRuntime)> {
    let rt = ServerRuntime(Some(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(SERVER_THREADS[0])
            .enable_all()
            .build()?,
    ));
    let started = rt.0.as_ref().context("runtime")?.spawn(start);
    Ok((started.await??, rt))
}

/// Starts a server on loopback in its own runtime, with the bench account and a template that
/// Machine certificate holders may enroll. Returns its base URL and root certificate.
async fn start_server(b: &IssueBench, dir: &std::path::Path) -> Result<Started> {
    let cfg = autoenroll_server::config::RawConfig {
        data_dir: Some(dir.join("data")),
        listen: Some("127.0.0.1:0".into()),
        ..Default::default()
    }
    .validate()?;
    let (username, password, template) = (b.username.clone(), b.password.clone(), b.template.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let ((base, root, handshakes), rt) = in_server_runtime(async move {
        let ra = Arc::new(autoenroll_server::Ra::open(cfg.ra.clone(), Arc::new(autoenroll_server::SystemClock)).await?);
        ra.create_account(&autoenroll_server::ra::AccountSpec {
            name: &username,
            password: &password,
            templates: vec![],
            ..Default::default()
        })
        .await?;
        // What an enrolled device may enroll with its Machine certificate.
        let load = autoenroll_server::ra::TemplateSpec { grants: Some("holder:Machine".into()), ..Default::default() };
        ra.create_template(&template, &load).await?;
        let root = ra.root_der().to_vec();
        let server = autoenroll_server::app::Server::bind(ra, &cfg).await?;
        let (base, handshakes) = (server.base_url.clone(), server.handshakes.clone());
        tokio::spawn(server.serve(async move {
            let _ = rx.await;
        }));
        anyhow::Ok((base, root, handshakes))
    })
    .await?;
    Ok(Started { base, root, handshakes, _runtime: rt, _stop: tx })
}

/// The built-in server of a bench run.
struct Started {
    base: String,
    root: Vec<u8>,
    /// The server's count of full and resumed TLS handshakes.
    handshakes: Arc<autoenroll_server::app::Handshakes>,
    /// Held for their drop: the runtime stops with the run, and the server with the sender.
    _runtime: ServerRuntime,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// One measured load: successful latencies (sorted), errors, seconds, and the CPU per request
/// of the whole process and of the server's threads.
pub struct Measured {
    pub lat: Vec<Duration>,
    pub errors: usize,
    pub elapsed: f64,
    pub cpu_ms: f64,
    pub server_cpu_ms: f64,
}

impl Measured {
    pub fn rate(&self) -> f64 {
        self.lat.len() as f64 / self.elapsed.max(f64::MIN_POSITIVE)
    }
}

pub async fn measure<F, Fut>(concurrency: usize, duration: Duration, request: F) -> Result<Measured>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Option<bool>> + Send,
{
    let (cpu, server_cpu) = (process_cpu_secs(), server_cpu_secs());
    let (lat, errors, elapsed) = drive(concurrency, duration, request).await?;
    let n = lat.len().max(1) as f64;
    let cpu_ms = (process_cpu_secs() - cpu) * 1000.0 / n;
    let server_cpu_ms = (server_cpu_secs() - server_cpu) * 1000.0 / n;
    Ok(Measured { lat, errors, elapsed, cpu_ms, server_cpu_ms })
}

/// `measure`, with the built-in server's full and resumed TLS handshakes during the load.
async fn measure_counted<F, Fut>(
    handshakes: Option<&autoenroll_server::app::Handshakes>,
    concurrency: usize,
    duration: Duration,
    request: F,
) -> Result<(Measured, Option<(u64, u64)>)>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Option<bool>> + Send,
{
    let before = handshakes.map(|h| h.get());
    let measured = measure(concurrency, duration, request).await?;
    let after = handshakes.map(|h| h.get());
    Ok((measured, before.zip(after).map(|(b, a)| (a.0 - b.0, a.1 - b.1))))
}

/// The clients a load's requests go out from: one (its connections share one session cache
/// or one pool), or one simulated device per concurrent client.
type Devices = Arc<Vec<Arc<Client>>>;

/// One device per client of the largest load, each resuming its own TLS sessions as a
/// separate agent does (a shared cache holds 8 tickets per server and would send the rest
/// of 64 concurrent connections to full handshakes).
fn simulated_devices(
    roots: &[Vec<u8>],
    identity: Option<&ClientIdentity>,
    clock: &Arc<dyn autoenroll_core::clock::Clock>,
    concurrency: &[usize],
) -> Result<Devices> {
    let n = concurrency.iter().copied().max().unwrap_or(1).max(1);
    Ok(Arc::new(
        (0..n)
            .map(|_| Ok(Arc::new(Client::new(roots, identity, clock.clone())?.with_own_sessions())))
            .collect::<Result<_>>()?,
    ))
}

/// The device request `i` of a load with `concurrency` clients goes out from: with the
/// clients taking requests in turn, each device has about one connection open at a time.
fn device(devices: &Devices, concurrency: usize, i: usize) -> Arc<Client> {
    devices[i % concurrency.clamp(1, devices.len().max(1))].clone()
}

pub async fn issue(b: IssueBench) -> Result<i32> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    let (base, root_der, server) = match &b.url {
        Some(u) => {
            let root = b.root.as_ref().context("--root is required with --url")?;
            let pem = std::fs::read(root)?;
            let der = der::Encode::to_der(&x509_cert::Certificate::load_pem_chain(&pem)?[0])?;
            (u.trim_end_matches('/').to_string(), der, None)
        }
        None => {
            let started = start_server(&b, dir.path()).await?;
            (started.base.clone(), started.root.clone(), Some(started))
        }
    };
    let handshakes = server.as_ref().map(|s| s.handshakes.clone());
    let url = format!("{base}/wstep");
    let clock: Arc<dyn autoenroll_core::clock::Clock> = Arc::new(autoenroll_agent::SystemClock);
    // One password enrollment buys the client certificate; the load then authenticates by TLS
    // client certificate, as enrolled devices do (a password check is a deliberate 100k-round
    // PBKDF2 and would measure only that).
    let key = KeyPair::generate(KeyAlgorithm::P256)?;
    let account = HeaderToken::UsernameToken { username: b.username.clone(), password: b.password.clone() };
    let plain = Client::new(std::slice::from_ref(&root_der), None, clock.clone())?;
    let csr = build_csr(&key, cn_name("bench")?, vec![])?;
    let xml = soap::request(ns::ACTION_WSTEP, &url, "urn:uuid:bench", &account, wstep::issue_request_body(&csr, &[]));
    let r = plain.post(&url, "application/soap+xml; charset=utf-8", xml.into_bytes()).await?;
    let resp = wstep::parse_response(&soap::parse_envelope(&r.body)?.body)?;
    let cert = resp.certificate_der.context("could not enroll the bench client certificate")?;
    // The issuing CA travels with the client certificate; the server holds only the root.
    let mut chain = vec![cert.clone()];
    let pkcs7 = resp.chain_pkcs7_der.context("no chain in the response")?;
    chain.extend(autoenroll_proto::pkcs7::certificates(&pkcs7)?.into_iter().filter(|c| *c != cert && *c != root_der));
    let identity = ClientIdentity { chain, key_pkcs8: key.to_pkcs8_der()? };
    let roots = std::slice::from_ref(&root_der);
    // A new connection per request, resuming the TLS session as agents do.
    let resuming = simulated_devices(roots, Some(&identity), &clock, &b.concurrency)?;
    // A full handshake with the client certificate per request: a device the server never saw.
    let full: Devices = Arc::new(vec![Arc::new(Client::without_resumption(roots, Some(&identity), clock.clone())?)]);
    // Connections kept open across requests (an agent's cycle; a load balancer).
    let keep_alive: Devices =
        Arc::new(vec![Arc::new(Client::new(roots, Some(&identity), clock)?.with_pool(Pool::default()))]);

    let csrs: Arc<Vec<Vec<u8>>> = Arc::new(template_csrs(&b.template, "bench", 256)?);
    println!("CPU: {} ({} cores)", cpu_model(), std::thread::available_parallelism().map_or(0, |n| n.get()));
    if b.url.is_none() {
        // Statements per issuance: sqlx reports each statement as a tracing event, counted
        // here over sequential issuances (the timed runs below count nothing).
        // SQLite statements outside sqlx (the store's inline reads and writer thread) are
        // counted by the store; thread hand-offs are one per sqlx statement and one per batch
        // given to the writer thread (inline reads have none).
        let n = 50;
        STATEMENTS.store(0, Ordering::Relaxed);
        let (direct, control, handoffs) = (
            autoenroll_server::ra::SQLITE_STATEMENTS.load(Ordering::Relaxed),
            autoenroll_server::ra::SQLITE_CONTROL_STATEMENTS.load(Ordering::Relaxed),
            autoenroll_server::ra::SQLITE_WRITER_HANDOFFS.load(Ordering::Relaxed),
        );
        COUNTING.store(true, Ordering::Relaxed);
        for i in 0..n {
            post(&resuming[0], &url, &HeaderToken::None, &csrs[i % csrs.len()]).await?;
        }
        COUNTING.store(false, Ordering::Relaxed);
        let via_sqlx = STATEMENTS.load(Ordering::Relaxed);
        let direct = autoenroll_server::ra::SQLITE_STATEMENTS.load(Ordering::Relaxed) - direct;
        let control = autoenroll_server::ra::SQLITE_CONTROL_STATEMENTS.load(Ordering::Relaxed) - control;
        let handoffs = autoenroll_server::ra::SQLITE_WRITER_HANDOFFS.load(Ordering::Relaxed) - handoffs + via_sqlx;
        let per = |x: u64| x as f64 / n as f64;
        println!(
            "database statements per issuance: {:.1} ({via_sqlx} through sqlx, {direct} on SQLite directly over {n} \
             sequential issuances; plus {:.1} BEGIN/SAVEPOINT/RELEASE/COMMIT on the writer thread); \
             thread hand-offs per issuance: {:.1}",
            per(via_sqlx + direct),
            per(control),
            per(handoffs)
        );
    }
    println!("WSTEP issuance against {base} (P-256 CA, client-certificate auth, durable SQLite)");
    println!("  issue: a new TLS connection per request, resuming the session (as agents do)");
    println!("  issue keep-alive: requests reuse open connections (one agent cycle; a load balancer)");
    println!("  floor: GET /healthz with the same client certificate, a new connection per request:");
    println!("         with a full handshake each time, and resuming the session");
    println!(
        "{:<18} {:>7} {:>9} {:>10} {:>8} {:>8} {:>8} {:>7} {:>11} {:>11} {:>10}",
        "what",
        "clients",
        "requests",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "errors",
        "cpu ms/req",
        "server cpu",
        "full hs"
    );
    let health = format!("{base}/healthz");
    let row = |what: &str, c: usize, (m, hs): &(Measured, Option<(u64, u64)>)| {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let server = if b.url.is_none() { format!("{:.2}", m.server_cpu_ms) } else { "-".into() };
        let full = match hs {
            Some((full, resumed)) => format!("{full}/{}", full + resumed),
            None => "-".into(),
        };
        println!(
            "{:<18} {:>7} {:>9} {:>10.1} {:>8.2} {:>8.2} {:>8.2} {:>7} {:>11.2} {:>11} {:>10}",
            what,
            c,
            m.lat.len(),
            m.rate(),
            ms(percentile(&m.lat, 0.50)),
            ms(percentile(&m.lat, 0.90)),
            ms(percentile(&m.lat, 0.99)),
            m.errors,
            m.cpu_ms,
            server,
            full
        );
    };
    let handshakes = handshakes.as_deref();
    for &c in &b.concurrency {
        let get = |devices: &Devices| {
            let (devices, health) = (devices.clone(), health.clone());
            move |i| {
                let (client, health) = (device(&devices, c, i), health.clone());
                async move { Some(client.get(&health).await.is_ok_and(|r| r.status == 200)) }
            }
        };
        let issue = |devices: &Devices| {
            let (devices, csrs, url) = (devices.clone(), csrs.clone(), url.clone());
            move |i: usize| {
                let (client, csrs, url) = (device(&devices, c, i), csrs.clone(), url.clone());
                async move { Some(post(&client, &url, &HeaderToken::None, &csrs[i % csrs.len()]).await.is_ok()) }
            }
        };
        let floor_full = measure_counted(handshakes, c, b.duration, get(&full)).await?;
        let floor_resumed = measure_counted(handshakes, c, b.duration, get(&resuming)).await?;
        let issued = measure_counted(handshakes, c, b.duration, issue(&resuming)).await?;
        let issued_keep_alive = measure_counted(handshakes, c, b.duration, issue(&keep_alive)).await?;
        row("issue", c, &issued);
        row("issue keep-alive", c, &issued_keep_alive);
        row("floor full", c, &floor_full);
        row("floor resumed", c, &floor_resumed);
        println!(
            "{:<18} {:>7} issue at {:.0} % of the full-handshake floor, {:.0} % of the resumed one",
            "",
            "",
            100.0 * issued.0.rate() / floor_full.0.rate().max(f64::MIN_POSITIVE),
            100.0 * issued.0.rate() / floor_resumed.0.rate().max(f64::MIN_POSITIVE)
        );
    }
    println!("(cpu ms/req: this process, load generator and server together; server cpu: the server's threads alone;");
    println!(" full hs: full TLS handshakes of all the server completed during the load)");
    Ok(0)
}

/// Whether `StatementCounter` counts (only around the counting run).
pub static COUNTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
pub static STATEMENTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts sqlx's per-statement events (target `sqlx::query`) while `COUNTING` is on.
pub struct StatementCounter;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for StatementCounter {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if COUNTING.load(Ordering::Relaxed) && event.metadata().target() == "sqlx::query" {
            STATEMENTS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// CPU time (user + system) this process has used, in seconds.
pub fn process_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line: 12 and 13 after the name; 100 ticks/s.
    (ticks(11) + ticks(12)) / 100.0
}

/// `n` P-256 requests `CN=<prefix>-<i>` naming `template` (Microsoft's template-name extension),
/// made before a load so that key generation is not measured.
pub fn template_csrs(template: &str, prefix: &str, n: usize) -> Result<Vec<Vec<u8>>> {
    let name = autoenroll_core::pki::template_ext::encode_template_name(template)?;
    (0..n)
        .map(|i| {
            let k = KeyPair::generate(KeyAlgorithm::P256)?;
            let ext = x509_cert::ext::Extension {
                extn_id: autoenroll_core::oids::MS_ENROLL_CERTTYPE,
                critical: false,
                extn_value: der::asn1::OctetString::new(name.clone())?,
            };
            Ok(build_csr(&k, cn_name(&format!("{prefix}-{i}"))?, vec![ext])?)
        })
        .collect()
}

/// One line of a latency table; `sorted` holds the successful requests' latencies.
pub fn print_row(concurrency: usize, sorted: &[Duration], elapsed_secs: f64, errors: usize) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{:>11} {:>9} {:>10.1} {:>9.2} {:>9.2} {:>9.2} {:>7}",
        concurrency,
        sorted.len(),
        sorted.len() as f64 / elapsed_secs,
        ms(percentile(sorted, 0.50)),
        ms(percentile(sorted, 0.90)),
        ms(percentile(sorted, 0.99)),
        errors
    );
}

#[derive(Args)]
pub struct CfsslBench {
    /// cfssl base URL, e.g. https://127.0.0.1:8888
    #[arg(long)]
    url: String,
    /// CA certificate (PEM) that issued cfssl's TLS certificate (for https URLs).
    #[arg(long)]
    root: Option<std::path::PathBuf>,
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    concurrency: Vec<usize>,
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    duration: Duration,
}

/// The same load against cfssl's `/api/v1/cfssl/sign` (the peer in bench/peers.sh): P-256 CSRs,
/// a new connection per request.
pub async fn cfssl(b: CfsslBench) -> Result<i32> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let url = format!("{}/api/v1/cfssl/sign", b.url.trim_end_matches('/'));
    let client = match &b.root {
        Some(root) => {
            let pem = std::fs::read(root)?;
            let der = der::Encode::to_der(&x509_cert::Certificate::load_pem_chain(&pem)?[0])?;
            let clock: Arc<dyn autoenroll_core::clock::Clock> = Arc::new(autoenroll_agent::SystemClock);
            // Driven as `bench issue` drives autoenroll.
            Some(simulated_devices(std::slice::from_ref(&der), None, &clock, &b.concurrency)?)
        }
        None => None,
    };
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..256)
            .map(|i| {
                let k = KeyPair::generate(KeyAlgorithm::P256)?;
                let csr = build_csr(&k, cn_name(&format!("bench-{i}"))?, vec![])?;
                let pem = der::pem::encode_string("CERTIFICATE REQUEST", der::pem::LineEnding::LF, &csr)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                Ok(serde_json::to_vec(&serde_json::json!({ "certificate_request": pem }))?)
            })
            .collect::<Result<_>>()?,
    );
    println!("cfssl sign against {url} (new connection per request)");
    println!(
        "{:>11} {:>9} {:>10} {:>9} {:>9} {:>9} {:>7}",
        "concurrency", "requests", "req/s", "p50 ms", "p90 ms", "p99 ms", "errors"
    );
    for &c in &b.concurrency {
        let (client, bodies, url) = (client.clone(), bodies.clone(), url.clone());
        let (lat, errors, elapsed) = drive(c, b.duration, move |i| {
            let client = client.as_ref().map(|devices| device(devices, c, i));
            let url = url.clone();
            let body = bodies[i % bodies.len()].clone();
            async move {
                let answer = match &client {
                    Some(cl) => cl.post(&url, "application/json", body).await.map(|r| (r.status, r.body)).ok(),
                    None => crate::bench_scep::http(hyper::Method::POST, &url, body).await.ok(),
                };
                Some(answer.is_some_and(|(status, body)| {
                    status == 200
                        && serde_json::from_slice::<serde_json::Value>(&body)
                            .is_ok_and(|v| v["success"] == true && v["result"]["certificate"].is_string())
                }))
            }
        })
        .await?;
        print_row(c, &lat, elapsed, errors);
    }
    Ok(0)
}

/// Runs `concurrency` workers for `duration`; worker requests are numbered by one shared
/// counter and `request(i)` answers Some(success), or None when there is no request `i`.
/// Returns the successful latencies (sorted), the errors and the elapsed seconds.
pub async fn drive<F, Fut>(concurrency: usize, duration: Duration, request: F) -> Result<(Vec<Duration>, usize, f64)>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Option<bool>> + Send,
{
    let request = Arc::new(request);
    let deadline = Instant::now() + duration;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (request, next) = (request.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            while Instant::now() < deadline {
                let t = Instant::now();
                match request(next.fetch_add(1, Ordering::Relaxed)).await {
                    None => break,
                    Some(true) => lat.push(t.elapsed()),
                    Some(false) => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
    }
    all.sort();
    Ok((all, errors, started.elapsed().as_secs_f64()))
}

/// The CPU the figures were measured on (compare figures only within one run and one CPU).
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}
