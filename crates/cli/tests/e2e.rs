//! End to end as a user runs it: the `autoenroll` binary as server and as agent on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use autoenroll_test_support::bin;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_autoenroll");

struct ServerProcess {
    /// Dropping it stops the server.
    _server: bin::Server,
    base: String,
    data: PathBuf,
}

fn start_server(dir: &Path) -> ServerProcess {
    let data = dir.join("data");
    let server = bin::Server::start(BIN, &data, &[]);
    ServerProcess { base: server.base.clone(), _server: server, data }
}

fn autoenroll(args: &[&str], data: &Path, stdin: Option<&str>) -> std::process::Output {
    let data = data.to_str().unwrap();
    let mut all = args.to_vec();
    all.extend(["--data-dir", data]);
    bin::run(BIN, &all, &[], stdin)
}

fn agent(args: &[&str], config: &Path) -> (i32, String) {
    let out = Command::new(BIN).arg("agent").args(args).arg("--config").arg(config).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn write_agent_config(dir: &Path, server: &ServerProcess, credentials: &str) -> PathBuf {
    let cfg = dir.join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "device = \"host1.example.test\"\nstate_dir = \"{}\"\ntrust_anchor = \"{}\"\n\n[[policy_server]]\nurl = \"{}/xcep\"\n\n[credentials]\n{credentials}\n",
            dir.join("state").display(),
            server.data.join("ca/root.pem").display(),
            server.base
        ),
    )
    .unwrap();
    cfg
}

fn openssl_verify(data: &Path, cert: &Path) {
    autoenroll_test_support::require_tool("openssl", "openssl");
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(data.join("ca/root.pem"))
        .arg("-untrusted")
        .arg(data.join("ca/issuing.pem"))
        .arg(cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl verify {}: {}", cert.display(), String::from_utf8_lossy(&out.stderr));
}

#[test]
fn agent_enrolls_both_default_templates_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path());
    // The account vouches for the device names it enrolls (`--devices`): they may go into
    // server certificates.
    let out = autoenroll(
        &["server", "account", "create", "enroller", "--devices", "*.example.test"],
        &server.data,
        Some("correct horse battery\n"),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cfg = write_agent_config(dir.path(), &server, "username = \"enroller\"\npassword = \"correct horse battery\"");

    let (code, out) = agent(&["run", "--once"], &cfg);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("enrolled Machine") && out.contains("enrolled WebServer"), "{out}");
    for t in ["Machine", "WebServer"] {
        let live = dir.path().join("state/live").join(t);
        openssl_verify(&server.data, &live.join("cert.pem"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(live.join("key.pem")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "private keys are 0600");
    }

    // A second cycle has nothing to do.
    let (code, out) = agent(&["run", "--once"], &cfg);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("enrolled"), "{out}");
    assert!(out.contains("kept Machine") && out.contains("kept WebServer"), "{out}");

    let (code, status) = agent(&["status"], &cfg);
    assert_eq!(code, 0);
    assert!(status.contains("Machine") && status.contains("valid"), "{status}");

    // The server's inventory lists both, issued to the agent's device.
    let out = autoenroll(&["server", "cert", "list", "--output", "json"], &server.data, None);
    let certs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mine: Vec<_> = certs.as_array().unwrap().iter().filter(|c| c["device"] == "host1.example.test").collect();
    assert_eq!(mine.len(), 2, "{certs}");
}

#[test]
fn bootstrap_token_enrolls_everything_then_is_spent() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path());
    let out = autoenroll(
        &["server", "token", "create", "--device", "host1.example.test", "--ttl", "10m"],
        &server.data,
        None,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(token.starts_with("aet_"));
    let cfg = write_agent_config(dir.path(), &server, &format!("bootstrap_token = \"{token}\""));
    // The token buys the client-auth certificate; that certificate then speaks for the device
    // (check-in). WebServer is granted to accounts only: a token or a Machine certificate is not
    // offered it (a device must not obtain a server certificate on its own).
    let (code, out) = agent(&["run", "--once"], &cfg);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("enrolled Machine"), "{out}");
    assert!(!out.contains("WebServer"), "{out}");
    assert!(!out.contains("check-in refused"), "the token does not check in; the certificate does: {out}");

    // A second agent with the same token is refused: single use.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let cfg2 = write_agent_config(&other, &server, &format!("bootstrap_token = \"{token}\""));
    let (code, out) = agent(&["run", "--once"], &cfg2);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("TokenUsed"), "{out}");
}

#[test]
fn template_admin_commands() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = autoenroll(&["server", "init", "--key-algorithm", "p384"], &data, None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let empty = autoenroll(&["server", "template", "list"], &dir.path().join("nothing-here"), None);
    assert!(!empty.status.success() && String::from_utf8_lossy(&empty.stderr).contains("holds no CA"));
    // Logs for log shippers: one JSON object per line.
    let json_logs = autoenroll(&["--log-format", "json", "server", "init"], &dir.path().join("json/data"), None);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&json_logs.stderr)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect();
    assert!(lines.iter().all(|v| v["level"].is_string() && v["timestamp"].is_string()));
    assert!(lines.iter().any(|v| v["fields"]["message"] == "creating CA hierarchy"), "{lines:?}");
    let queue = autoenroll(&["server", "request", "list"], &data, None);
    assert!(queue.status.success() && String::from_utf8_lossy(&queue.stdout).starts_with("    ID DEVICE"));
    let queue = autoenroll(&["server", "request", "list", "--output", "json"], &data, None);
    assert_eq!(String::from_utf8_lossy(&queue.stdout).trim(), "[]");
    let again = autoenroll(&["server", "init"], &data, None);
    assert!(!again.status.success(), "init refuses to overwrite a CA");
    let out = autoenroll(
        &["server", "template", "create", "Vpn", "--validity", "30d", "--renewal-period", "7d", "--eku", "clientAuth"],
        &data,
        None,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = autoenroll(&["server", "template", "update", "Vpn", "--renewal-period", "10d"], &data, None);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("version:           1.1"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = autoenroll(&["server", "template", "update", "Vpn", "--major", "2"], &data, None);
    assert!(String::from_utf8_lossy(&out.stdout).contains("version:           2.0"));
    let out = autoenroll(&["server", "template", "list", "--output", "json"], &data, None);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<_> = list.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, ["Machine", "Vpn", "WebServer"]);
    let bad = autoenroll(&["server", "template", "create", "Bad", "--eku", "notAnEku"], &data, None);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("InvalidTemplate"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("eku: unknown extended key usage"));
    // A name that cannot be a file name on the agents is refused where it is made.
    let bad = autoenroll(&["server", "template", "create", "../evil"], &data, None);
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("invalid template: name"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(data.join("ca/issuing.pem"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("NIST CURVE: P-384"));
}
