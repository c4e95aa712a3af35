//! Hostile traffic on loopback (issue 14, finding 1): idle, half-sent and hoarded connections
//! cost the attacker their connections, not everyone else theirs. Real sockets, real TLS.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use crate::common;

use autoenroll_server::config::RawLimits;
use common::TestServer;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn addr_of(base: &str) -> SocketAddr {
    base.trim_start_matches("https://").trim_start_matches("http://").parse().unwrap()
}

async fn start(limits: RawLimits) -> TestServer {
    TestServer::start_with(move |c| c.limits = Some(limits)).await
}

/// Reads until the server closes the connection (or errors); how long that took, and the bytes.
async fn until_closed(s: &mut (impl AsyncReadExt + Unpin), within: Duration) -> Option<(Duration, Vec<u8>)> {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + within).into(), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some((started.elapsed(), got)),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

async fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// GET `path` over TLS from `source`; the status line.
async fn tls_get(s: &TestServer, source: &str, path: &str) -> String {
    autoenroll_server::app::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls_pki_types::CertificateDer::from(s.ra.root_der().to_vec())).unwrap();
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let tcp = connect_from(source, addr_of(&s.base)).await;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (_, got) = until_closed(&mut tls, Duration::from_secs(10)).await.expect("an answer");
    String::from_utf8_lossy(&got).lines().next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn idle_connections_are_closed_from_accept_on_both_listeners() {
    let s = start(RawLimits { idle_timeout: Some("1s".into()), ..Default::default() }).await;
    // Plain HTTP: nothing sent at all (the header timeout alone starts at the first byte).
    let mut plain = TcpStream::connect(addr_of(&s.http_base)).await.unwrap();
    let (took, _) = until_closed(&mut plain, Duration::from_secs(8)).await.expect("an idle plain connection is closed");
    assert!(took < Duration::from_secs(4), "{took:?}");
    // HTTPS, no handshake, and a completed handshake that never sends a request.
    let mut raw = TcpStream::connect(addr_of(&s.base)).await.unwrap();
    assert!(until_closed(&mut raw, Duration::from_secs(8)).await.is_some(), "an idle TLS socket is closed");
    autoenroll_server::app::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls_pki_types::CertificateDer::from(s.ra.root_der().to_vec())).unwrap();
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let tcp = TcpStream::connect(addr_of(&s.base)).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
    let (took, _) = until_closed(&mut tls, Duration::from_secs(8)).await.expect("an idle TLS session is closed");
    assert!(took < Duration::from_secs(4), "{took:?}");
    // A keep-alive connection between requests is idle too.
    let mut keep = TcpStream::connect(addr_of(&s.http_base)).await.unwrap();
    keep.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let (_, got) = until_closed(&mut keep, Duration::from_secs(8)).await.expect("closed after going idle");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"), "answered first");
}

#[tokio::test]
async fn a_body_dribbled_byte_by_byte_gets_408_and_the_connection_closes() {
    let s =
        start(RawLimits { request_timeout: Some("1s".into()), idle_timeout: Some("10s".into()), ..Default::default() })
            .await;
    let mut c = TcpStream::connect(addr_of(&s.http_base)).await.unwrap();
    c.write_all(b"POST /scep?operation=PKIOperation HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        .await
        .unwrap();
    let (mut r, mut w) = c.into_split();
    let reader = async { until_closed(&mut r, Duration::from_secs(8)).await };
    // One byte every 200 ms: never idle, never done.
    let writer = async {
        for _ in 0..40 {
            if w.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let (answer, ()) = tokio::join!(reader, writer);
    let (took, got) = answer.expect("the server ends a dribbled request");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 408"), "{}", String::from_utf8_lossy(&got));
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[tokio::test]
async fn filling_the_plain_listener_leaves_https_serving() {
    let s = start(RawLimits { max_http_connections: Some(8), ..Default::default() }).await;
    let mut hoard = Vec::new();
    for _ in 0..8 {
        hoard.push(TcpStream::connect(addr_of(&s.http_base)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut ninth = TcpStream::connect(addr_of(&s.http_base)).await.unwrap();
    let (took, _) = until_closed(&mut ninth, Duration::from_secs(5)).await.expect("over budget: dropped");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(tls_get(&s, "127.0.0.1", "/healthz").await, "HTTP/1.1 200 OK", "HTTPS has its own budget");
    drop(hoard);
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let s = start(RawLimits { per_ip_connections: Some(4), ..Default::default() }).await;
    let to = addr_of(&s.base);
    let mut hoard = Vec::new();
    for _ in 0..4 {
        hoard.push(connect_from("127.0.0.3", to).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fifth = connect_from("127.0.0.3", to).await;
    let (took, _) = until_closed(&mut fifth, Duration::from_secs(5)).await.expect("over its share: dropped");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(tls_get(&s, "127.0.0.4", "/healthz").await, "HTTP/1.1 200 OK", "another address is served");
    drop(hoard);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(tls_get(&s, "127.0.0.3", "/healthz").await, "HTTP/1.1 200 OK", "slots come back");
}

/// Issue 14, finding 2: password guessing. Ten wrong passwords lock the account (whoever
/// guesses, audited) — then even the right one is refused until the lock ends; thirty failures
/// from one address lock the address for every account.
#[tokio::test]
async fn password_guessing_locks_the_account_then_the_address() {
    use autoenroll_proto::soap::HeaderToken;
    use autoenroll_proto::{ns, xcep};
    let s = TestServer::start().await;
    let as_user =
        |user: &str, password: &str| HeaderToken::UsernameToken { username: user.into(), password: password.into() };
    for _ in 0..autoenroll_server::ra::ACCOUNT_LIMIT {
        let (status, env) =
            s.soap(ns::ACTION_GET_POLICIES, &as_user("enroller", "guess"), xcep::request_body(None), None).await;
        assert_eq!(common::subcode(status, &env), "ae:WrongCredentials");
    }
    let (status, env) = s.soap(ns::ACTION_GET_POLICIES, &common::account(), xcep::request_body(None), None).await;
    assert_eq!(common::subcode(status, &env), "ae:TooManyAttempts", "locked: the right password is refused too");
    let detail = common::fault(status, &env).detail.unwrap();
    assert_eq!(detail.error_code, 0x8007_0775_u32 as i32, "ERROR_ACCOUNT_LOCKED_OUT");
    let filter =
        autoenroll_server::ra::AuditFilter { action: Some("auth.lockout".into()), limit: 10, ..Default::default() };
    let lockouts = s.ra.audit_events(&filter).await.unwrap();
    assert_eq!(lockouts.iter().map(|e| e.subject.as_str()).collect::<Vec<_>>(), ["account:enroller"]);
    s.clock.advance(autoenroll_server::ra::LOCK_SECS + 1);
    let (status, _) = s.soap(ns::ACTION_GET_POLICIES, &common::account(), xcep::request_body(None), None).await;
    assert_eq!(status, 200, "the lock ends");

    // Spraying many account names from one address: the address is locked.
    for i in 0..autoenroll_server::ra::ADDRESS_LIMIT {
        let (status, env) = s
            .soap(ns::ACTION_GET_POLICIES, &as_user(&format!("user{i}"), "guess"), xcep::request_body(None), None)
            .await;
        assert_eq!(common::subcode(status, &env), "ae:WrongCredentials", "attempt {i}");
    }
    let (status, env) = s.soap(ns::ACTION_GET_POLICIES, &common::account(), xcep::request_body(None), None).await;
    assert_eq!(common::subcode(status, &env), "ae:TooManyAttempts", "the address is locked for every account");
    let lockouts = s.ra.audit_events(&filter).await.unwrap();
    assert!(lockouts.iter().any(|e| e.subject == "ip:127.0.0.1"), "{lockouts:?}");

    // Found by the soak: every refused attempt of a locked guesser was a durable audit write,
    // which starved legitimate issuance of the database writer. A lock is audited once.
    let all = autoenroll_server::ra::AuditFilter { limit: 100_000, ..Default::default() };
    let before = s.ra.audit_events(&all).await.unwrap().len();
    for i in 0..50 {
        let (status, env) = s
            .soap(ns::ACTION_GET_POLICIES, &as_user(&format!("late{i}"), "guess"), xcep::request_body(None), None)
            .await;
        assert_eq!(common::subcode(status, &env), "ae:TooManyAttempts");
    }
    assert_eq!(s.ra.audit_events(&all).await.unwrap().len(), before, "refusals of a locked address are not audited");
}

/// Issue 14, finding 2: password hashes ran on the async workers, so guessing slowed everyone.
/// On a single-threaded runtime a ticker keeps ticking while a password is checked: the hash
/// runs on the blocking pool.
#[test]
fn password_checks_leave_the_async_workers_free() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let cfg =
            autoenroll_server::config::RawConfig { data_dir: Some(dir.path().join("data")), ..Default::default() }
                .validate()
                .unwrap();
        let clock = autoenroll_test_support::FakeClock::now_real();
        let ra = autoenroll_server::ra::Ra::open(cfg.ra.clone(), Arc::new(clock)).await.unwrap();
        let ticks = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let t = ticks.clone();
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(1)).await;
                t.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        let started = Instant::now();
        let creds = autoenroll_server::ra::Credentials::Password {
            username: "nobody".into(),
            password: "wrong password".into(),
            client: None,
        };
        assert!(ra.authenticate(&creds, None).await.is_err());
        let took = started.elapsed();
        let ticked = ticks.load(std::sync::atomic::Ordering::Relaxed);
        ticker.abort();
        // An Argon2id hash takes tens of milliseconds; the ticker ran throughout.
        assert!(took >= Duration::from_millis(5), "a real hash was computed: {took:?}");
        assert!(ticked >= 3, "the runtime kept running other tasks during the hash ({ticked} ticks in {took:?})");
    });
}

/// Issue 14, finding 2: hashes of earlier versions (PBKDF2, 100,000 iterations) are replaced by
/// Argon2id at the next successful login, transparently.
#[tokio::test]
async fn an_old_password_hash_is_replaced_at_login() {
    use autoenroll_proto::{ns, xcep};
    let s = TestServer::start().await;
    let store =
        autoenroll_store::Store::open(&format!("sqlite://{}", s.dir.path().join("data/autoenroll.db").display()))
            .await
            .unwrap();
    let before = store.account("enroller").await.unwrap().unwrap().password_hash;
    assert!(before.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "new hashes are Argon2id: {before}");
    // What version 0.1 stored: pbkdf2-sha256, 100,000 iterations.
    let legacy = "pbkdf2-sha256$100000$BwcHBwcHBwcHBwcHBwcHBw$";
    let hash = {
        use aws_lc_rs::pbkdf2;
        use base64::Engine;
        let mut out = [0u8; 32];
        let n = std::num::NonZeroU32::new(100_000).unwrap();
        pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, n, &[7u8; 16], common::PASSWORD.as_bytes(), &mut out);
        format!("{legacy}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out))
    };
    assert!(store.replace_password_hash("enroller", &before, &hash).await.unwrap());
    let (status, _) = s.soap(ns::ACTION_GET_POLICIES, &common::account(), xcep::request_body(None), None).await;
    assert_eq!(status, 200, "the old hash verifies");
    let after = store.account("enroller").await.unwrap().unwrap().password_hash;
    assert!(after.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "rehashed: {after}");
}

/// POSTs `path` over TLS with headers only: a declared length and `Expect: 100-continue`, no
/// body. The whole answer.
async fn tls_declare(s: &TestServer, path: &str, content_type: &str, length: usize) -> String {
    autoenroll_server::app::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls_pki_types::CertificateDer::from(s.ra.root_der().to_vec())).unwrap();
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let tcp = TcpStream::connect(addr_of(&s.base)).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n\
         Expect: 100-continue\r\nConnection: close\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let (_, got) = until_closed(&mut tls, Duration::from_secs(10)).await.expect("an answer");
    String::from_utf8_lossy(&got).into_owned()
}

/// Every front end's body limit refuses a body declared too large from its length alone: 413,
/// never `100 Continue`, nothing read (a client waiting for 100 never sends it). On the plain
/// listener (SCEP, OCSP) and the HTTPS one (check-in, admin API, EST, ACME).
#[tokio::test]
async fn a_body_declared_too_large_is_refused_before_it_is_sent() {
    let s = TestServer::start().await;
    for path in ["/scep?operation=PKIOperation", "/ocsp"] {
        let mut tcp = TcpStream::connect(addr_of(&s.http_base)).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000000\r\nExpect: 100-continue\r\n\
             Connection: close\r\n\r\n"
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        let (_, got) = until_closed(&mut tcp, Duration::from_secs(10)).await.expect("an answer");
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with("HTTP/1.1 413"), "{path}: {got}");
    }
    for (path, content_type) in [
        ("/checkin", "application/json"),
        ("/admin/v1/devices", "application/json"),
        ("/.well-known/est/simpleenroll", "application/pkcs10"),
        ("/acme/new-order", "application/jose+json"),
    ] {
        let got = tls_declare(&s, path, content_type, 100_000_000).await;
        assert!(got.starts_with("HTTP/1.1 413"), "{path}: {got}");
    }
}
