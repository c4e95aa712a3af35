//! SCEP interop with real clients against the real server on loopback: certmonger (request with
//! a dynamic challenge, resubmit = renewal signed by the current certificate with the same key,
//! rekey = new key) and micromdm's scepclient (single DES: refused by default, enrolled with
//! legacy ciphers enabled). Every certificate is checked with `openssl verify`.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use autoenroll_test_support::{bin, require_tool};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_autoenroll");

fn admin(data: &Path, args: &[&str]) -> String {
    let mut all = vec!["server"];
    all.extend(args);
    all.extend(["--data-dir", data.to_str().unwrap()]);
    let out = bin::run(BIN, &all, &[], None);
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(out.status.success(), "{args:?}: {text} {}", String::from_utf8_lossy(&out.stderr));
    text
}

fn start(dir: &Path, extra: &[&str]) -> (bin::Server, PathBuf, String) {
    let data = dir.join("data");
    let mut args = vec!["--scep-http-listen", "127.0.0.1:0"];
    args.extend(extra);
    let server = bin::Server::start(BIN, &data, &args);
    let url = server.banner_value("SCEP over HTTP").expect("the banner names the SCEP HTTP URL");
    (server, data, url)
}

fn openssl_verify(data: &Path, cert: &Path) {
    let out = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(data.join("ca/root.pem"))
        .arg("-untrusted")
        .arg(data.join("ca/issuing.pem"))
        .arg(cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl verify {}: {}", cert.display(), String::from_utf8_lossy(&out.stderr));
}

fn x509(cert: &Path, what: &str) -> String {
    let out = Command::new("openssl").args(["x509", "-noout", what, "-in"]).arg(cert).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// A private certmonger daemon (no D-Bus, private socket, private state); killed on drop.
struct Certmonger {
    child: Child,
    env: Vec<(String, String)>,
}

impl Certmonger {
    fn start(dir: &Path) -> Certmonger {
        let cm = dir.join("cm");
        let mut env = vec![];
        for (var, sub) in [
            ("CERTMONGER_REQUESTS_DIR", "requests"),
            ("CERTMONGER_CAS_DIR", "cas"),
            ("CERTMONGER_TMPDIR", "tmp"),
            ("CERTMONGER_CONFIG_DIR", "conf"),
            ("CERTMONGER_LOCAL_CA_DIR", "local"),
        ] {
            std::fs::create_dir_all(cm.join(sub)).unwrap();
            env.push((var.to_string(), cm.join(sub).display().to_string()));
        }
        let sock = cm.join("sock");
        // certmonger takes a machine-wide lock in /var/lib/certmonger whatever its directories
        // say; as root, a private mount namespace gives it its own, so a system certmonger (or
        // a parallel test run) cannot block it.
        let private = is_root() && Path::new("/var/lib/certmonger").is_dir() && which("unshare");
        let mut cmd = if private {
            let mut c = Command::new("unshare");
            c.args(["-m", "sh", "-c", "mount -t tmpfs tmpfs /var/lib/certmonger && exec certmonger -n -L -P \"$0\""]);
            c.arg(&sock);
            c
        } else {
            let mut c = Command::new("certmonger");
            c.args(["-n", "-L", "-P"]).arg(&sock);
            c
        };
        let child = cmd
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start certmonger");
        env.push(("CERTMONGER_PVT_ADDRESS".into(), format!("unix:path={}", sock.display())));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !sock.exists() {
            // certmonger takes a machine-wide lock (/var/lib/certmonger/lock) before listening.
            assert!(Instant::now() < deadline, "certmonger did not open its socket (another certmonger running?)");
            std::thread::sleep(Duration::from_millis(100));
        }
        Certmonger { child, env }
    }

    fn getcert(&self, args: &[&str]) -> Output {
        Command::new("getcert")
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .unwrap()
    }

    fn list(&self, id: &str) -> String {
        String::from_utf8_lossy(&self.getcert(&["list", "-i", id]).stdout).into_owned()
    }

    /// Waits until the request is MONITORING with a certificate other than `previous`.
    fn wait_issued(&self, id: &str, cert: &Path, previous: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let list = self.list(id);
            let serial = if cert.exists() { x509(cert, "-serial") } else { String::new() };
            if list.contains("status: MONITORING") && !serial.is_empty() && serial != previous {
                return serial;
            }
            assert!(Instant::now() < deadline, "certmonger request {id} did not complete:\n{list}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Certmonger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn certmonger_enrolls_renews_and_rekeys() {
    for (tool, package) in [("certmonger", "certmonger"), ("getcert", "certmonger"), ("openssl", "openssl")] {
        require_tool(tool, package);
    }
    let dir = tempfile::tempdir().unwrap();
    let (_server, data, url) = start(dir.path(), &[]);
    // A device template whose renewals are accepted at any time (manual renewal grace) and
    // that allows renewal with the same key (certmonger's resubmit).
    admin(
        &data,
        &[
            "template",
            "create",
            "ScepDevice",
            "--validity",
            "30d",
            "--renewal-period",
            "7d",
            "--renewal-grace",
            "30d",
            "--same-key-renewal",
            "true",
            // certmonger makes RSA keys; a template takes the key family it names.
            "--key-algorithm",
            "rsa2048",
        ],
    );
    let challenge = admin(
        &data,
        &[
            "challenge",
            "create",
            "--device",
            "cm1.example.test",
            "--template",
            "ScepDevice",
            "--subject",
            "CN=cm1.example.test",
            "--dns",
            "cm1.example.test",
        ],
    );
    let cm = Certmonger::start(dir.path());
    let root = data.join("ca/root.pem");
    let out =
        cm.getcert(&["add-scep-ca", "-c", "AE", "-u", &format!("{url}/ScepDevice"), "-N", root.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = dir.path().join("cm1.key");
    let cert = dir.path().join("cm1.crt");
    let out = cm.getcert(&[
        "request",
        "-c",
        "AE",
        "-I",
        "cm1",
        "-k",
        key.to_str().unwrap(),
        "-f",
        cert.to_str().unwrap(),
        "-N",
        "CN=cm1.example.test",
        "-D",
        "cm1.example.test",
        "-L",
        &challenge,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let first = cm.wait_issued("cm1", &cert, "");
    openssl_verify(&data, &cert);
    assert!(x509(&cert, "-subject").contains("cm1.example.test"));
    let first_key = x509(&cert, "-pubkey");
    // The certificate names the CRL on the plain-HTTP listener, and a CRL is served there.
    let base = url.trim_end_matches("/scep");
    assert!(x509(&cert, "-text").contains(&format!("URI:{base}/crl")), "{}", x509(&cert, "-text"));
    let (status, crl) = bin::http_get(&format!("{base}/crl"));
    assert!(status.contains(" 200 "), "{status}");
    std::fs::write(dir.path().join("crl.der"), &crl).unwrap();
    let out = Command::new("openssl")
        .args(["crl", "-inform", "DER", "-noout", "-in"])
        .arg(dir.path().join("crl.der"))
        .arg("-CAfile")
        .arg(data.join("ca/issuing.pem"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("verify OK"), "{out:?}");

    // resubmit: same key, signed with the current certificate, no challenge needed.
    assert!(cm.getcert(&["resubmit", "-i", "cm1"]).status.success());
    let second = cm.wait_issued("cm1", &cert, &first);
    openssl_verify(&data, &cert);
    assert_eq!(x509(&cert, "-pubkey"), first_key, "resubmit keeps the key");

    // rekey: a new key, the request signed with the current certificate.
    assert!(cm.getcert(&["rekey", "-i", "cm1"]).status.success());
    let third = cm.wait_issued("cm1", &cert, &second);
    openssl_verify(&data, &cert);
    assert_ne!(x509(&cert, "-pubkey"), first_key, "rekey makes a new key");
    assert_ne!(third, first);

    // The server saw one enrollment and two renewals, chained.
    let certs = admin(&data, &["cert", "list", "--output", "json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&certs).unwrap();
    let ours: Vec<&serde_json::Value> = rows.iter().filter(|r| r["template"] == "ScepDevice").collect();
    assert_eq!(ours.len(), 3, "{certs}");
    assert_eq!(ours.iter().filter(|r| r["previous_serial"].is_string()).count(), 2, "{certs}");
}

/// micromdm's scepclient writes `self.pem`/`csr.pem` into its working directory and reuses
/// them, so each run gets a fresh directory.
fn scepclient(dir: &Path, url: &str, challenge: &str, cn: &str, fingerprint: &str) -> (bool, String, PathBuf) {
    let work = dir.join(format!("scepclient-{cn}"));
    std::fs::create_dir_all(&work).unwrap();
    let out = Command::new("scepclient")
        .current_dir(&work)
        .args(["-server-url", url, "-challenge", challenge, "-private-key", "k.pem", "-certificate", "c.pem"])
        .args(["-cn", cn, "-ca-fingerprint", fingerprint])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success() && work.join("c.pem").exists(), text, work.join("c.pem"))
}

fn ra_fingerprint(server: &bin::Server) -> String {
    let v = server.banner_value("SCEP RA certificate").unwrap();
    v.split("SHA-256 ").nth(1).unwrap().trim_end_matches(')').to_string()
}

#[test]
fn micromdm_scepclient_needs_legacy_ciphers() {
    require_tool("scepclient", "scep");
    require_tool("openssl", "openssl");
    let dir = tempfile::tempdir().unwrap();
    // Default: its single-DES, SHA-1 request is refused, with the reason in the audit log.
    {
        let (server, data, url) = start(&dir.path().join("strict"), &[]);
        let subject = "CN=mm1,OU=MDM,O=scep-client,C=US";
        let ch =
            admin(&data, &["challenge", "create", "--device", "mm1", "--template", "Machine", "--subject", subject]);
        let (ok, text, _) = scepclient(dir.path(), &url, &ch, "mm1", &ra_fingerprint(&server));
        assert!(!ok && text.contains("badAlg"), "{text}");
        let audit = admin(&data, &["audit", "--limit", "5"]);
        assert!(audit.contains("UnsupportedDigest") || audit.contains("UnsupportedCipher"), "{audit}");
    }
    // With legacy ciphers enabled it enrolls (the reply is 3DES, never single DES).
    let (server, data, url) = start(&dir.path().join("legacy"), &["--scep-legacy-ciphers"]);
    let subject = "CN=mm2,OU=MDM,O=scep-client,C=US";
    let ch = admin(&data, &["challenge", "create", "--device", "mm2", "--template", "Machine", "--subject", subject]);
    let (ok, text, cert) = scepclient(dir.path(), &url, &ch, "mm2", &ra_fingerprint(&server));
    assert!(ok, "{text}");
    openssl_verify(&data, &cert);
    assert!(x509(&cert, "-subject").contains("mm2"));
}
