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
    assert!(queue.status.success() && String::from_utf8_lossy(&queue.stdout).starts_with("ID  DEVICE"));
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
    let version = |out: &std::process::Output| {
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let field =
            |k: &str| text.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.trim().to_string()).unwrap_or_default();
        format!("{}.{}", field("major:"), field("minor:"))
    };
    assert_eq!(version(&out), "1.1", "{}", String::from_utf8_lossy(&out.stdout));
    let out = autoenroll(&["server", "template", "update", "Vpn", "--major", "2"], &data, None);
    assert_eq!(version(&out), "2.0");
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

/// `/metrics` after real traffic (issue 15): what Prometheus would scrape, read with curl from
/// the token-free listener and from the HTTPS listener with an admin token.
#[test]
fn metrics_show_the_traffic_and_the_fleet() {
    autoenroll_test_support::require_tool("curl", "curl");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = bin::Server::start(BIN, &data, &["--metrics-listen", "127.0.0.1:0"]);
    let proc = ServerProcess { base: server.base.clone(), data: data.clone(), _server: server };
    let out = autoenroll(
        &["server", "account", "create", "enroller", "--devices", "*.example.test"],
        &data,
        Some("correct horse battery\n"),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cfg = write_agent_config(dir.path(), &proc, "username = \"enroller\"\npassword = \"correct horse battery\"");
    let textfile = dir.path().join("autoenroll.prom");
    let with_textfile = std::fs::read_to_string(&cfg).unwrap().replacen(
        "\n[[policy_server]]",
        &format!("metrics_textfile = \"{}\"\n\n[[policy_server]]", textfile.display()),
        1,
    );
    std::fs::write(&cfg, with_textfile).unwrap();
    let (code, out) = agent(&["run", "--once"], &cfg);
    assert_eq!(code, 0, "{out}");
    // The agent's textfile, as node-exporter's collector would read it.
    let families = prometheus_parse(&std::fs::read_to_string(&textfile).unwrap());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    for t in ["Machine", "WebServer"] {
        let not_after = sample(&families, "autoenroll_agent_certificate_not_after_seconds", t);
        let renew_at = sample(&families, "autoenroll_agent_certificate_renew_at_seconds", t);
        assert!(now < renew_at && renew_at < not_after, "{t}: now {now} < renew {renew_at} < expiry {not_after}");
        assert_eq!(sample(&families, "autoenroll_agent_template_ok", t), 1.0);
    }
    // A refusal about a template: renewing before the window opens (the server decides).
    let (code, out) = agent(&["renew", "--now", "--template", "Machine"], &cfg);
    assert_ne!(code, 0, "{out}");
    // A refusal: a wrong password.
    let bad = write_agent_config(dir.path(), &proc, "username = \"enroller\"\npassword = \"wrong\"");
    std::fs::write(dir.path().join("bad.toml"), std::fs::read_to_string(&bad).unwrap().replace("state\"", "state2\""))
        .unwrap();
    let (code, _) = agent(&["run", "--once"], &dir.path().join("bad.toml"));
    assert_ne!(code, 0);
    let curl = |args: &[&str]| {
        let out = Command::new("curl").args(["-sS", "--max-time", "20"]).args(args).output().unwrap();
        assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // EST and ACME traffic counts like any other protocol's: an EST enrollment by openssl and
    // curl, and an ACME request that is not a JWS.
    let root = data.join("ca/root.pem");
    let root = root.to_str().unwrap();
    let key = dir.path().join("est.key");
    let csr = dir.path().join("est.csr.b64");
    let sh = format!(
        "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out {k} && \
         openssl req -new -key {k} -subj /CN=est1.example.test -outform DER | openssl base64 > {c}",
        k = key.display(),
        c = csr.display()
    );
    assert!(Command::new("sh").args(["-c", &sh]).status().unwrap().success());
    let est = format!("{}/.well-known/est/simpleenroll", proc.base);
    let answer = curl(&[
        "--cacert",
        root,
        "--user",
        "enroller:correct horse battery",
        "-H",
        "Content-Type: application/pkcs10",
        "--data-binary",
        &format!("@{}", csr.display()),
        "-w",
        "%{http_code}",
        "-o",
        "/dev/null",
        &est,
    ]);
    assert_eq!(answer, "200");
    let acme = format!("{}/acme/new-order", proc.base);
    curl(&["--cacert", root, "-H", "Content-Type: application/jose+json", "-d", "{}", "-o", "/dev/null", &acme]);
    let url = proc._server.banner_value("metrics").expect("the banner names the metrics listener");
    let text = curl(&[&url]);
    // Well-formed for Prometheus' own parser.
    let families = prometheus_parse(&text);
    assert!(families
        .iter()
        .any(|f| f["name"] == "autoenroll_http_request_duration_seconds" && f["type"] == "histogram"));
    for series in [
        r#"autoenroll_issued_total{template="Machine",kind="enroll",protocol="wstep"} 1"#,
        r#"autoenroll_issued_total{template="WebServer",kind="enroll",protocol="wstep"} 1"#,
        r#"autoenroll_issued_total{template="Machine",kind="enroll",protocol="est"} 1"#,
        r#"autoenroll_refusals_total{protocol="acme",code="BadJws",kind="bad_request",template="-"} 1"#,
        r#"autoenroll_refusals_total{protocol="xcep",code="WrongCredentials",kind="unauthorized",template="-"}"#,
        r#"autoenroll_refusals_total{protocol="wstep",code="OutsideRenewalWindow",kind="policy_denied",template="Machine"} 1"#,
        r#"autoenroll_http_request_duration_seconds_bucket{endpoint="/wstep",protocol="wstep",le="+Inf"} 3"#,
        // The agent's Machine certificate and the EST one.
        r#"autoenroll_certificates{template="Machine",state="issued"} 2"#,
        r#"autoenroll_certificates_expiring{within="30d"} 0"#,
        "autoenroll_pending_requests 0",
        "autoenroll_stuck_devices 0",
        "autoenroll_crl_age_seconds ",
        r#"autoenroll_db_pool_connections{state="idle"}"#,
        // The agent's first connection made a full handshake.
        r#"autoenroll_tls_handshakes_total{kind="full"} "#,
    ] {
        assert!(text.contains(series), "{series} in\n{text}");
    }
    // On the HTTPS listener: an admin token, or nothing.
    let root = data.join("ca/root.pem");
    let https = format!("{}/metrics", proc.base);
    let refused = curl(&["--cacert", root.to_str().unwrap(), "-o", "/dev/null", "-w", "%{http_code}", &https]);
    assert_eq!(refused, "401");
    let out = autoenroll(&["server", "admin-token", "create", "--name", "prometheus"], &data, None);
    let token =
        String::from_utf8_lossy(&out.stdout).split_whitespace().find(|w| w.starts_with("aea_")).unwrap().to_string();
    let text = curl(&["--cacert", root.to_str().unwrap(), "-H", &format!("Authorization: Bearer {token}"), &https]);
    assert!(text.contains("autoenroll_issued_total"), "{text}");
}

/// The exposition text as Prometheus' Python client parses it: families with their samples.
fn prometheus_parse(text: &str) -> Vec<serde_json::Value> {
    const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = [{"name": f.name, "type": f.type,
        "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples]}
       for f in text_string_to_metric_families(sys.stdin.read())]
print(json.dumps(out))
"#;
    use std::io::Write;
    let mut child = Command::new("python3")
        .args(["-c", PARSE])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client could not parse it (pip install prometheus_client; scripts/test.sh does): {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
}

/// The value of `name` for one template.
fn sample(families: &[serde_json::Value], name: &str, template: &str) -> f64 {
    families
        .iter()
        .flat_map(|f| f["samples"].as_array().unwrap())
        .find(|s| s["name"] == name && s["labels"]["template"] == template)
        .unwrap_or_else(|| panic!("{name}{{template={template}}} in {families:?}"))["value"]
        .as_f64()
        .unwrap()
}

/// The daemon rests between cycles in a fresh image of itself (same PID, `--resume-at` the next
/// cycle's time): it waits for the time it was given, runs its cycle, replaces itself (one
/// `--resume-at`, the new one), and a SIGTERM while it rests stops it cleanly.
#[test]
fn the_daemon_rests_between_cycles_in_a_fresh_image_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path());
    let out = autoenroll(
        &["server", "account", "create", "enroller", "--devices", "*.example.test"],
        &server.data,
        Some("correct horse battery\n"),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cfg = write_agent_config(dir.path(), &server, "username = \"enroller\"\npassword = \"correct horse battery\"");
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let first_at = now() + 3;
    let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
    let mut daemon = Command::new(BIN)
        .args(["agent", "run", "--config"])
        .arg(&cfg)
        .args(["--resume-at", &first_at.to_string()])
        .stderr(log)
        .spawn()
        .unwrap();
    let pid = daemon.id();
    let live = || std::fs::read_dir(dir.path().join("state/live")).map(|d| d.count()).unwrap_or(0);
    let cmdline =
        || std::fs::read(format!("/proc/{pid}/cmdline")).map(|b| String::from_utf8_lossy(&b).replace('\0', " "));
    std::thread::sleep(std::time::Duration::from_millis(1000));
    assert_eq!(live(), 0, "nothing before the time it was given");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let rested = loop {
        let line = cmdline().unwrap();
        let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();
        // The new image is up once it says it sleeps (its stop handler is then in place).
        let resting = log.split("resting in a fresh process image").nth(1).is_some_and(|l| l.contains("sleeping"));
        if live() == 2 && !line.contains(&format!("--resume-at {first_at}")) && resting {
            std::thread::sleep(std::time::Duration::from_millis(200));
            break line;
        }
        assert!(std::time::Instant::now() < deadline, "no cycle and rest: {line}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(now() >= first_at, "the cycle ran at its time");
    assert_eq!(rested.matches("--resume-at").count(), 1, "{rested}");
    let next: i64 = rested.split("--resume-at ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(next > now() + 3600, "resting until the next decision time (hours away): {rested}");
    // The fresh image's resident memory, for the record (bench/agent-footprint.sh measures).
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    eprintln!("{}", status.lines().filter(|l| l.starts_with("VmRSS")).collect::<String>());

    let killed = Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(killed.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let code = loop {
        if let Some(s) = daemon.try_wait().unwrap() {
            break s.code();
        }
        assert!(std::time::Instant::now() < deadline, "SIGTERM did not stop the resting daemon");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("resting in a fresh process image"), "{log}");
}
