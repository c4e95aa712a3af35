//! `autoenroll bench scep`: SCEP PKCSReq issuance over plain HTTP with pre-built messages
//! (RSA-2048 keys, AES-256, SHA-256, a static challenge), so the figures measure the server.
//! Without `--url` it starts its own server on loopback; with `--url` it drives any SCEP
//! server (e.g. micromdm's scepserver) the same way.
use anyhow::{bail, Context, Result};
use autoenroll_core::pki::scep::{parse_pki_message, MessageType, PkiStatus};
use autoenroll_keys::envelope::ContentCipher;
use autoenroll_keys::scep_client::{build_request, Request};
use autoenroll_keys::{cn_name, KeyAlgorithm, KeyPair};
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct ScepBench {
    /// SCEP URL, e.g. http://127.0.0.1:8080/scep (default: start a server on loopback).
    #[arg(long)]
    url: Option<String>,
    /// Challenge password the server accepts (a static one).
    #[arg(long, default_value = "bench-static-challenge")]
    challenge: String,
    /// Concurrency levels, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    concurrency: Vec<usize>,
    /// Duration of each level.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    duration: Duration,
    /// CA key algorithm of the server this run starts (p256, rsa2048, ...), to match a peer.
    #[arg(long, default_value = "p256")]
    key_algorithm: String,
    /// Pre-built messages per level (each is used once: a new transaction every time).
    #[arg(long, default_value_t = 3000)]
    messages: usize,
}

/// One HTTP/1.1 request on a new connection.
pub async fn http(method: hyper::Method, url: &str, body: Vec<u8>) -> Result<(u16, Vec<u8>)> {
    let uri: hyper::Uri = url.parse()?;
    let host = uri.host().context("URL without host")?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    tcp.set_nodelay(true)?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .header(hyper::header::HOST, format!("{host}:{port}"))
        .header(hyper::header::CONTENT_TYPE, "application/x-pki-message")
        .body(Full::new(Bytes::from(body)))?;
    let resp = send.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes().to_vec();
    Ok((status, body))
}

/// The certificate requests are encrypted to: the RSA one that is not a CA when there are
/// several (our RA), else the only RSA one (a CA that is its own RA, like scepserver's).
fn recipient(certs: &[Vec<u8>]) -> Result<Vec<u8>> {
    use der::Decode;
    let rsa: Vec<&Vec<u8>> = certs
        .iter()
        .filter(|c| {
            autoenroll_core::pki::CertFacts::parse(c)
                .ok()
                .and_then(|f| spki::SubjectPublicKeyInfoOwned::from_der(&f.spki_der).ok())
                .and_then(|s| autoenroll_core::pki::csr::key_facts(&s).ok())
                .is_some_and(|k| matches!(k, autoenroll_core::pki::KeyFacts::Rsa { .. }))
        })
        .collect();
    let is_ca = |c: &Vec<u8>| {
        x509_cert::Certificate::from_der(c).ok().is_some_and(|x| {
            x.tbs_certificate().extensions().into_iter().flatten().any(|e| {
                e.extn_id == autoenroll_core::oids::CE_BASIC_CONSTRAINTS
                    && x509_cert::ext::pkix::BasicConstraints::from_der(e.extn_value.as_bytes()).is_ok_and(|b| b.ca)
            })
        })
    };
    rsa.iter()
        .find(|c| !is_ca(c))
        .or(rsa.first())
        .map(|c| (*c).clone())
        .context("GetCACert returned no RSA certificate")
}

pub async fn scep(b: ScepBench) -> Result<i32> {
    let dir = tempfile::tempdir()?;
    let (url, _stop) = match &b.url {
        Some(u) => (u.trim_end_matches('/').to_string(), None),
        None => {
            let cfg = autoenroll_server::config::RawConfig {
                data_dir: Some(dir.path().join("data")),
                listen: Some("127.0.0.1:0".into()),
                key_algorithm: Some(b.key_algorithm.clone()),
                scep: Some(autoenroll_server::config::RawScep {
                    http_listen: Some("127.0.0.1:0".into()),
                    ..Default::default()
                }),
                // The whole load comes from one address: counted per address (the default),
                // 64 requests in flight would lock it as a guessing burst would. A fleet comes
                // from many addresses.
                limits: Some(autoenroll_server::config::RawLimits {
                    count_addresses: Some(false),
                    ..Default::default()
                }),
                ..Default::default()
            }
            .validate()?;
            let challenge = b.challenge.clone();
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let (url, rt) = crate::bench::in_server_runtime(async move {
                let ra = Arc::new(
                    autoenroll_server::Ra::open(cfg.ra.clone(), Arc::new(autoenroll_server::SystemClock)).await?,
                );
                ra.set_static_challenge("Machine", Some(&challenge)).await?;
                let server = autoenroll_server::app::Server::bind(ra, &cfg).await?;
                let url = server.scep_http_url.clone().context("no SCEP HTTP listener")?;
                tokio::spawn(server.serve(async move {
                    let _ = rx.await;
                }));
                anyhow::Ok(url)
            })
            .await?;
            (url, Some((tx, rt)))
        }
    };
    let (status, body) = http(hyper::Method::GET, &format!("{url}?operation=GetCACert"), vec![]).await?;
    if status != 200 {
        bail!("GetCACert answered {status}");
    }
    let certs = autoenroll_proto::pkcs7::certificates(&body).or_else(|_| Ok::<_, anyhow::Error>(vec![body.clone()]))?;
    let ra = recipient(&certs)?;

    // Keys and self-signed signers are few; every message has its own transaction.
    eprintln!("building {} SCEP messages per level ...", b.messages);
    let signers: Vec<(KeyPair, Vec<u8>)> = (0..8)
        .map(|i| {
            let key = KeyPair::generate(KeyAlgorithm::Rsa(2048))?;
            let cert = autoenroll_keys::self_signed_cert(&key, cn_name(&format!("bench-{i}"))?, 0, 4_000_000_000)?;
            Ok((key, cert))
        })
        .collect::<Result<_>>()?;
    let build = |level: usize| -> Result<Arc<Vec<Vec<u8>>>> {
        Ok(Arc::new(
            (0..b.messages)
                .map(|i| {
                    let (key, cert) = &signers[i % signers.len()];
                    let txid = format!("bench-{level}-{i}-{}", std::process::id());
                    // A subject per request: servers that file certificates by name see no clashes.
                    let csr = autoenroll_keys::build_csr_with_challenge(key, cn_name(&txid)?, vec![], &b.challenge)?;
                    let csr = &csr;
                    let (msg, _) = build_request(&Request {
                        message_type: MessageType::PkcsReq,
                        transaction_id: &txid,
                        content: csr,
                        signer_cert_der: cert,
                        signer_key: key,
                        ra_cert_der: &ra,
                        cipher: ContentCipher::Aes256Cbc,
                    })?;
                    Ok(msg)
                })
                .collect::<Result<_>>()?,
        ))
    };
    let pki = format!("{url}?operation=PKIOperation");
    let own_server = b.url.is_none();
    // The floor: the server's private-key operations per request, timed here on one core. An
    // RSA CA signs with RSA too (three operations: envelope, CertRep, certificate); an EC CA
    // signs the certificate with its own key (two RSA operations and one ECDSA).
    let floor_ms = if own_server {
        let rsa = KeyPair::generate(KeyAlgorithm::Rsa(2048))?;
        let ca = KeyPair::generate(b.key_algorithm.parse().map_err(|e| anyhow::anyhow!("{e}"))?)?;
        let per = |k: &KeyPair| -> Result<f64> {
            let started = std::time::Instant::now();
            for i in 0..50u32 {
                k.sign(&i.to_be_bytes())?;
            }
            Ok(started.elapsed().as_secs_f64() * 1000.0 / 50.0)
        };
        Some(2.0 * per(&rsa)? + per(&ca)?)
    } else {
        None
    };
    println!(
        "CPU: {} ({} cores)",
        crate::bench::cpu_model(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("SCEP PKCSReq issuance against {url} (RSA-2048 requesters, AES-256, SHA-256, new connection per request)");
    if let Some(f) = floor_ms {
        println!(
            "floor: the server's private-key operations per request (RA decrypts, RA signs the CertRep, CA {} signs): {f:.2} ms",
            b.key_algorithm
        );
    }
    println!(
        "{:>11} {:>9} {:>10} {:>9} {:>9} {:>9} {:>7} {:>11} {:>9}",
        "concurrency", "requests", "req/s", "p50 ms", "p90 ms", "p99 ms", "errors", "server cpu", "x floor"
    );
    for (level, &c) in b.concurrency.iter().enumerate() {
        let messages = build(level)?;
        let total = messages.len();
        let used = Arc::new(AtomicUsize::new(0));
        let (pki, used_by) = (pki.clone(), used.clone());
        let m = crate::bench::measure(c, b.duration, move |i| {
            let (messages, pki) = (messages.clone(), pki.clone());
            used_by.fetch_max(i + 1, Ordering::Relaxed);
            async move {
                let msg = messages.get(i)?.clone();
                Some(match http(hyper::Method::POST, &pki, msg).await {
                    Ok((200, body)) => {
                        parse_pki_message(&body).map(|m| m.pki_status == Some(PkiStatus::Success)).unwrap_or(false)
                    }
                    _ => false,
                })
            }
        })
        .await?;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let (server, ratio) = match floor_ms {
            Some(f) => (format!("{:.2}", m.server_cpu_ms), format!("{:.2}x", m.server_cpu_ms / f)),
            None => ("-".into(), "-".into()),
        };
        println!(
            "{:>11} {:>9} {:>10.1} {:>9.2} {:>9.2} {:>9.2} {:>7} {:>11} {:>9}",
            c,
            m.lat.len(),
            m.rate(),
            ms(crate::bench::percentile(&m.lat, 0.50)),
            ms(crate::bench::percentile(&m.lat, 0.90)),
            ms(crate::bench::percentile(&m.lat, 0.99)),
            m.errors,
            server,
            ratio
        );
        if used.load(Ordering::Relaxed) > total {
            eprintln!("(level {c} used all {total} messages before the time was up: raise --messages)");
        }
    }
    println!("(server cpu: ms of CPU per request on the server's threads; x floor: that over the floor)");
    Ok(0)
}
