//! Running as a service (issue 15): systemd's readiness protocol (a NOTIFY_SOCKET made here, as
//! systemd makes it), SIGHUP reloading the configuration, SIGTERM draining requests in flight.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use autoenroll_test_support::bin;
use std::io::{Read, Write};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_autoenroll");

/// The next sd_notify message.
fn notified(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("a message on NOTIFY_SOCKET within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// The DNS names in the certificate the HTTPS listener serves, as openssl s_client sees them.
fn served_names(base: &str, dir: &Path) -> String {
    autoenroll_test_support::require_tool("openssl", "openssl");
    let host = base.trim_start_matches("https://");
    let out = Command::new("openssl")
        .args(["s_client", "-connect", host, "-servername", "localhost"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let start = text.find("-----BEGIN CERTIFICATE-----").expect("s_client printed the certificate");
    let end = text.find("-----END CERTIFICATE-----").unwrap() + 25;
    std::fs::write(dir.join("served.pem"), &text[start..end]).unwrap();
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(dir.join("served.pem"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn ready_reload_and_drain_as_systemd_sees_them() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let config = dir.path().join("server.toml");
    std::fs::write(&config, "hostnames = [\"localhost\"]\n").unwrap();
    let mut server = bin::Server::start_with_env(
        BIN,
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
        &[("NOTIFY_SOCKET", sock_path.to_str().unwrap())],
    );
    let ready = notified(&sock);
    assert!(ready.contains("READY=1"), "{ready}");
    assert!(!served_names(&server.base, dir.path()).contains("ca.example.test"));

    // SIGHUP with a new name: the listener certificate is re-issued for it, without a restart.
    std::fs::write(&config, "hostnames = [\"localhost\", \"ca.example.test\"]\n").unwrap();
    server.signal("HUP");
    let reloading = notified(&sock);
    assert!(reloading.contains("RELOADING=1") && reloading.contains("MONOTONIC_USEC="), "{reloading}");
    assert!(notified(&sock).contains("READY=1"));
    let names = served_names(&server.base, dir.path());
    assert!(names.contains("DNS:ca.example.test") && names.contains("DNS:localhost"), "{names}");

    // A broken file is reported and the running configuration stays.
    std::fs::write(&config, "hostnames = [\"unterminated\n").unwrap();
    server.signal("HUP");
    assert!(notified(&sock).contains("RELOADING=1"));
    assert!(notified(&sock).contains("READY=1"));
    assert!(served_names(&server.base, dir.path()).contains("DNS:ca.example.test"), "still serving as before");

    // SIGTERM with a request in flight (half its body sent) on the plain-HTTP listener: the
    // request is answered, new connections are not accepted, then the process exits 0.
    let http = server.banner_value("SCEP over HTTP").unwrap();
    let addr = http.trim_start_matches("http://").split('/').next().unwrap().to_string();
    let mut inflight = std::net::TcpStream::connect(&addr).unwrap();
    inflight
        .write_all(b"POST /scep?operation=PKIOperation HTTP/1.1\r\nHost: ca\r\nContent-Length: 20\r\n\r\n0123456789")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    server.signal("TERM");
    let stopping = notified(&sock);
    assert!(stopping.contains("STOPPING=1"), "{stopping}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(std::net::TcpStream::connect(&addr).is_err(), "no new connections while draining");
    assert!(server.wait_exit(Duration::from_millis(500)).is_none(), "waits for the request in flight");
    inflight.write_all(b"0123456789").unwrap();
    let mut answer = String::new();
    inflight.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = inflight.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 "), "the request in flight was answered: {answer:?}");
    let status = server.wait_exit(Duration::from_secs(20)).expect("exits once drained");
    assert!(status.success(), "{status:?}");
}
