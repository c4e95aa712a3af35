//! The listener's TLS as openssl sees it (issue 16): AES-128-GCM chosen whatever the client
//! prefers, and sessions resumed from a ticket (no full handshake, no client certificate sent
//! again).
#![allow(clippy::unwrap_used, clippy::expect_used)]
use crate::common;

use common::*;
use std::process::{Command, Stdio};

/// openssl s_client with stdin held open a moment, so the session tickets arrive.
fn s_client(s: &TestServer, extra: &[&str]) -> String {
    autoenroll_test_support::require_tool("openssl", "openssl");
    let host = s.base.trim_start_matches("https://").to_string();
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &host, "-CAfile"])
        .arg(s.root_pem())
        .args(extra)
        .current_dir(s.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take();
    std::thread::sleep(std::time::Duration::from_millis(500));
    drop(stdin);
    String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aes128_first_and_sessions_resume_for_openssl() {
    let s = TestServer::start().await;
    let first = tokio::task::block_in_place(|| {
        s_client(&s, &["-ciphersuites", "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256", "-sess_out", "sess.pem"])
    });
    assert!(first.contains("New, TLSv1.3, Cipher is TLS_AES_128_GCM_SHA256"), "server order wins: {first}");
    let again = tokio::task::block_in_place(|| s_client(&s, &["-sess_in", "sess.pem"]));
    assert!(again.contains("Reused, TLSv1.3"), "resumed from the ticket: {again}");
}

/// Issue 16, fifth round: `bench issue` simulates many devices in one process. One shared
/// rustls session cache holds at most 8 TLS 1.3 tickets per server, so its 64 concurrent
/// connections made full handshakes for over half of them; a cache per simulated device
/// (`with_own_sessions`) resumes every connection, as separate agents do. Counted by the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_devices_each_resume_their_own_sessions() {
    let s = TestServer::start().await;
    let health = s.url("/healthz");
    let devices: Vec<std::sync::Arc<_>> =
        (0..24).map(|_| std::sync::Arc::new(s.client(None).with_own_sessions())).collect();
    let (full, resumed) = s.handshakes.get();
    for d in &devices {
        assert_eq!(d.get(&health).await.unwrap().status, 200);
    }
    let (f, r) = s.handshakes.get();
    assert_eq!((f - full, r - resumed), (24, 0), "each device's first connection is a full handshake");
    // All at once, each device once: 24 concurrent connections, more than one cache's 8 tickets.
    let mut all = tokio::task::JoinSet::new();
    for d in &devices {
        let (d, health) = (d.clone(), health.clone());
        all.spawn(async move { d.get(&health).await.map(|r| r.status) });
    }
    while let Some(answer) = all.join_next().await {
        assert_eq!(answer.unwrap().unwrap(), 200);
    }
    let (f2, r2) = s.handshakes.get();
    assert_eq!((f2 - f, r2 - r), (0, 24), "every device resumed its own session");
}
