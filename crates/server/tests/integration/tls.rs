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
