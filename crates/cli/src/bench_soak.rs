//! `autoenroll bench soak`: legitimate clients at a steady rate for a long time while attackers
//! do what issue 14 found cheap — a slowloris client holding idle connections on both
//! listeners and a guesser hammering passwords — against an in-process server. Prints, every
//! interval: legitimate requests and errors, p99 latency, resident memory (the server's, with the
//! clients' in the same process), and what the attackers got. Legitimate errors must stay 0 and memory flat.
use crate::bench::{cpu_model, percentile};
use anyhow::{Context, Result};
use autoenroll_agent::https::{Client, ClientIdentity};
use autoenroll_keys::{build_csr, cn_name, KeyAlgorithm, KeyPair};
use autoenroll_proto::checkin::CheckinReport;
use autoenroll_proto::soap::{self, HeaderToken};
use autoenroll_proto::{ns, wstep, xcep};
use clap::Args;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct SoakBench {
    /// How long the soak runs.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
    duration: Duration,
    /// Legitimate requests per second (a mix: issuance, check-in, OCSP, CRL, SCEP GetCACaps,
    /// policy). Default: about half of what `bench issue` measures on this machine kind.
    #[arg(long, default_value = "150")]
    rate: u32,
    /// Idle connections the slowloris client keeps open (re-opened when the server closes
    /// them), spread over both listeners and 250 loopback source addresses.
    #[arg(long, default_value = "2000")]
    slowloris: usize,
    /// Concurrent password guessers (from 127.0.0.2, as fast as they are answered).
    #[arg(long, default_value = "8")]
    guessers: usize,
    /// Reporting interval.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    interval: Duration,
}

const MAX_OUTSTANDING: usize = 2000;

/// Resident memory of this process (the server runs in it), in MiB.
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

#[derive(Default)]
struct Tally {
    latencies: Mutex<Vec<Duration>>,
    ok: AtomicUsize,
    errors: AtomicUsize,
    first_error: Mutex<Option<String>>,
}

impl Tally {
    fn record(&self, started: Instant, r: Result<()>) {
        match r {
            Ok(()) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut l) = self.latencies.lock() {
                    l.push(started.elapsed());
                }
            }
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut f) = self.first_error.lock() {
                    f.get_or_insert_with(|| format!("{e:#}"));
                }
            }
        }
    }

    fn take(&self) -> (usize, usize, Vec<Duration>) {
        let mut l = self.latencies.lock().map(|mut l| std::mem::take(&mut *l)).unwrap_or_default();
        l.sort();
        (self.ok.swap(0, Ordering::Relaxed), self.errors.swap(0, Ordering::Relaxed), l)
    }
}

fn ocsp_request(cert_der: &[u8], issuer_der: &[u8]) -> Result<Vec<u8>> {
    use autoenroll_core::pki::ocsp::{CertId, OcspRequest, Request, TbsRequest, SHA1};
    use der::{Decode, Encode};
    let cert = x509_cert::Certificate::from_der(cert_der)?;
    let issuer = x509_cert::Certificate::from_der(issuer_der)?;
    let sha1 = |b: &[u8]| aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, b).as_ref().to_vec();
    let id = CertId {
        hash_algorithm: spki::AlgorithmIdentifierOwned { oid: SHA1, parameters: None },
        issuer_name_hash: der::asn1::OctetString::new(sha1(&issuer.tbs_certificate().subject().to_der()?))?,
        issuer_key_hash: der::asn1::OctetString::new(sha1(
            issuer.tbs_certificate().subject_public_key_info().subject_public_key.raw_bytes(),
        ))?,
        serial_number: cert.tbs_certificate().serial_number().clone(),
    };
    let req = OcspRequest {
        tbs_request: TbsRequest {
            version: None,
            requestor_name: None,
            request_list: vec![Request { req_cert: id, single_request_extensions: None }],
            request_extensions: None,
        },
        optional_signature: None,
    };
    Ok(req.to_der()?)
}

pub async fn soak(b: SoakBench) -> Result<i32> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    let cfg = autoenroll_server::config::RawConfig {
        data_dir: Some(dir.path().join("data")),
        listen: Some("127.0.0.1:0".into()),
        ..Default::default()
    }
    .validate()?;
    let ra = Arc::new(autoenroll_server::Ra::open(cfg.ra.clone(), Arc::new(autoenroll_server::SystemClock)).await?);
    let password = "correct horse battery";
    ra.create_account(&autoenroll_server::ra::AccountSpec { name: "soak", password, ..Default::default() }).await?;
    let load = autoenroll_server::ra::TemplateSpec { grants: Some("holder:Machine".into()), ..Default::default() };
    ra.create_template("SoakLoad", &load).await?;
    let root_der = ra.root_der().to_vec();
    let issuing_der = ra.issuing_der().to_vec();
    let server = autoenroll_server::app::Server::bind(ra, &cfg).await?;
    let base = server.base_url.clone();
    let http_base =
        server.scep_http_url.clone().context("the plain-HTTP listener")?.trim_end_matches("/scep").to_string();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(async move {
        let _ = stop_rx.await;
    }));

    // Two devices, each enrolled once by password, then speaking with its certificate: one
    // issues (its certificates pile up: a fleet's issuance, not one device's), the other checks
    // in holding just its own (what a device's check-in costs).
    let clock: Arc<dyn autoenroll_core::clock::Clock> = Arc::new(autoenroll_agent::SystemClock);
    let url = format!("{base}/wstep");
    let account = HeaderToken::UsernameToken { username: "soak".into(), password: password.into() };
    let plain = Arc::new(Client::new(std::slice::from_ref(&root_der), None, clock.clone())?);
    let mut devices = Vec::new();
    for name in ["soak-issuer", "soak-checkin"] {
        let key = KeyPair::generate(KeyAlgorithm::P256)?;
        let csr = build_csr(&key, cn_name(name)?, vec![])?;
        let body = wstep::issue_request_body(&csr, &[("DeviceName", name)]);
        let xml = soap::request(ns::ACTION_WSTEP, &url, "urn:uuid:soak", &account, body);
        let r = plain.post(&url, "application/soap+xml; charset=utf-8", xml.into_bytes()).await?;
        let cert = wstep::parse_response(&soap::parse_envelope(&r.body)?.body)?.certificate_der.context("enroll")?;
        let identity =
            ClientIdentity { chain: vec![cert.clone(), issuing_der.clone()], key_pkcs8: key.to_pkcs8_der()? };
        devices.push((Arc::new(Client::new(std::slice::from_ref(&root_der), Some(&identity), clock.clone())?), cert));
    }
    let (checker, cert) = devices.pop().context("the check-in device")?;
    let (device, _) = devices.pop().context("the issuing device")?;
    let ocsp = ocsp_request(&cert, &issuing_der)?;
    let ocsp_url = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&ocsp);
        format!("{base}/ocsp/{}", percent_encoding::utf8_percent_encode(&b64, percent_encoding::NON_ALPHANUMERIC))
    };
    let csrs: Arc<Vec<Vec<u8>>> = Arc::new(crate::bench::template_csrs("SoakLoad", "soak", 64)?);
    let report = CheckinReport {
        certificates: vec![autoenroll_proto::checkin::HeldCertificate {
            template: "Machine".into(),
            thumbprint: autoenroll_core::Thumbprint::of_der(&cert).0,
        }],
        ..Default::default()
    };

    let deadline = Instant::now() + b.duration;
    let tally = Arc::new(Tally::default());

    // The slowloris client: idle connections on both listeners, re-opened when closed.
    let held_open = Arc::new(AtomicUsize::new(0));
    let reopened = Arc::new(AtomicU64::new(0));
    let addr = |u: &str| u.trim_start_matches("https://").trim_start_matches("http://").to_string();
    for i in 0..b.slowloris {
        let target = if i % 2 == 0 { addr(&base) } else { addr(&http_base) };
        let (held_open, reopened) = (held_open.clone(), reopened.clone());
        tokio::spawn(async move {
            // Spread over 250 loopback addresses (a distributed slowloris: each address stays
            // under the per-address cap, so the listeners' budgets and the idle timer are what
            // hold).
            let source: std::net::SocketAddr = match format!("127.0.1.{}:0", i % 250 + 1).parse() {
                Ok(a) => a,
                Err(_) => return,
            };
            let Ok(to) = target.parse::<std::net::SocketAddr>() else { return };
            while Instant::now() < deadline {
                let connect = async {
                    let socket = tokio::net::TcpSocket::new_v4()?;
                    socket.bind(source)?;
                    socket.connect(to).await
                };
                let Ok(mut s) = connect.await else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                held_open.fetch_add(1, Ordering::Relaxed);
                let mut buf = [0u8; 64];
                // Sends nothing; waits for the server to give up on it.
                let _ = tokio::time::timeout_at(deadline.into(), tokio::io::AsyncReadExt::read(&mut s, &mut buf)).await;
                held_open.fetch_sub(1, Ordering::Relaxed);
                reopened.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    // The guessers: wrong passwords for the soak account and invented ones, as fast as answered.
    let guesses = Arc::new(AtomicU64::new(0));
    let locked_out = Arc::new(AtomicU64::new(0));
    // From an address of their own (127.0.0.2): one sharing the legitimate clients' address
    // would also share their per-address connection cap and their lockout.
    let guesser =
        Arc::new(Client::new(std::slice::from_ref(&root_der), None, clock.clone())?.from_source([127, 0, 0, 2].into()));
    for g in 0..b.guessers {
        let (plain, url, guesses, locked_out) =
            (guesser.clone(), format!("{base}/xcep"), guesses.clone(), locked_out.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let user = if n.is_multiple_of(2) { "soak".to_string() } else { format!("user{g}x{n}") };
                let token = HeaderToken::UsernameToken { username: user, password: format!("guess{n}") };
                let xml = soap::request(ns::ACTION_GET_POLICIES, &url, "urn:uuid:g", &token, xcep::request_body(None));
                if let Ok(r) = plain.post(&url, "application/soap+xml", xml.into_bytes()).await {
                    guesses.fetch_add(1, Ordering::Relaxed);
                    if String::from_utf8_lossy(&r.body).contains("TooManyAttempts") {
                        locked_out.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    // The legitimate mix, at a fixed rate (open loop: a slow server does not slow the load).
    let scheduler = {
        let (tally, device, plain, csrs) = (tally.clone(), device.clone(), plain.clone(), csrs.clone());
        let (url, base, ocsp_url, report) = (url.clone(), base.clone(), ocsp_url.clone(), report.clone());
        let checker = checker.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(b.rate.max(1))));
            // At most this many legitimate requests outstanding: a server that falls behind shows
            // as errors, not as a backlog growing in this process's memory.
            let outstanding = Arc::new(tokio::sync::Semaphore::new(MAX_OUTSTANDING));
            let mut i = 0usize;
            while Instant::now() < deadline {
                tick.tick().await;
                i += 1;
                let Ok(slot) = outstanding.clone().try_acquire_owned() else {
                    tally.record(Instant::now(), Err(anyhow::anyhow!("{MAX_OUTSTANDING} requests outstanding")));
                    continue;
                };
                let (tally, device, plain, csrs) = (tally.clone(), device.clone(), plain.clone(), csrs.clone());
                let (url, base, ocsp_url, report) = (url.clone(), base.clone(), ocsp_url.clone(), report.clone());
                let checker = checker.clone();
                tokio::spawn(async move {
                    let started = Instant::now();
                    let r: Result<()> = async {
                        match i % 6 {
                            0 => {
                                let csr = &csrs[i % csrs.len()];
                                let xml = soap::request(
                                    ns::ACTION_WSTEP,
                                    &url,
                                    "urn:uuid:l",
                                    &HeaderToken::None,
                                    wstep::issue_request_body(csr, &[]),
                                );
                                let r = device.post(&url, "application/soap+xml", xml.into_bytes()).await?;
                                wstep::parse_response(&soap::parse_envelope(&r.body)?.body)?
                                    .certificate_der
                                    .context("issuance")?;
                            }
                            1 => {
                                let body = serde_json::to_vec(&report)?;
                                let r = checker.post(&format!("{base}/checkin"), "application/json", body).await?;
                                anyhow::ensure!(r.status == 200, "check-in {}", r.status);
                            }
                            2 => {
                                let r = plain.get(&ocsp_url).await?;
                                anyhow::ensure!(r.status == 200 && r.body.len() > 100, "OCSP {}", r.status);
                            }
                            3 => {
                                let r = plain.get(&format!("{base}/crl")).await?;
                                anyhow::ensure!(r.status == 200, "CRL {}", r.status);
                            }
                            4 => {
                                let r = plain.get(&format!("{base}/scep?operation=GetCACaps")).await?;
                                anyhow::ensure!(r.status == 200, "SCEP {}", r.status);
                            }
                            _ => {
                                let purl = format!("{base}/xcep");
                                let xml = soap::request(
                                    ns::ACTION_GET_POLICIES,
                                    &purl,
                                    "urn:uuid:p",
                                    &HeaderToken::None,
                                    xcep::request_body(None),
                                );
                                let r = device.post(&purl, "application/soap+xml", xml.into_bytes()).await?;
                                anyhow::ensure!(r.status == 200, "policy {}", r.status);
                            }
                        }
                        Ok(())
                    }
                    .await;
                    tally.record(started, r);
                    drop(slot);
                });
            }
        })
    };

    println!(
        "soak: {} at {} req/s (issuance, check-in, OCSP, CRL, SCEP caps, policy; client-certificate TLS), {} idle \
         connections held, {} password guessers; CPU {}",
        humantime::format_duration(b.duration),
        b.rate,
        b.slowloris,
        b.guessers,
        cpu_model()
    );
    println!(
        "{:>8} {:>9} {:>7} {:>8} {:>8} {:>9} {:>10} {:>10} {:>9} {:>9}",
        "minute", "requests", "errors", "p50 ms", "p99 ms", "RSS MiB", "idle held", "idle shut", "guesses", "lockouts"
    );
    let started = Instant::now();
    let mut total_errors = 0;
    let mut rss = Vec::new();
    while Instant::now() < deadline {
        tokio::time::sleep(b.interval.min(deadline.saturating_duration_since(Instant::now()))).await;
        let (ok, errors, lat) = tally.take();
        total_errors += errors;
        let m = rss_mib();
        rss.push(m);
        println!(
            "{:>8.1} {:>9} {:>7} {:>8.1} {:>8.1} {:>9.1} {:>10} {:>10} {:>9} {:>9}",
            started.elapsed().as_secs_f64() / 60.0,
            ok + errors,
            errors,
            percentile(&lat, 0.5).as_secs_f64() * 1e3,
            percentile(&lat, 0.99).as_secs_f64() * 1e3,
            m,
            held_open.load(Ordering::Relaxed),
            reopened.swap(0, Ordering::Relaxed),
            guesses.swap(0, Ordering::Relaxed),
            locked_out.swap(0, Ordering::Relaxed),
        );
    }
    scheduler.abort();
    let _ = stop_tx.send(());
    if let Some(e) = tally.first_error.lock().ok().and_then(|f| f.clone()) {
        println!("first legitimate error: {e}");
    }
    let (first, last) = (rss.first().copied().unwrap_or(0.0), rss.last().copied().unwrap_or(0.0));
    println!("legitimate errors: {total_errors}; RSS first interval {first:.1} MiB, last {last:.1} MiB");
    Ok(if total_errors == 0 { 0 } else { 1 })
}
