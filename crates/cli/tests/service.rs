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

fn run(cmd: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

/// Removes what installing the packages added, whatever happened in the test.
struct Uninstall;
impl Drop for Uninstall {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "autoenroll-server", "autoenroll-agent"]).output();
        let _ = std::fs::remove_dir_all("/var/lib/autoenroll");
        let _ = std::fs::remove_dir_all("/var/lib/autoenroll-agent");
        let _ = std::fs::remove_dir_all("/var/lib/autoenroll-root");
        let _ = Command::new("userdel").arg("autoenroll").output();
        let _ = Command::new("groupdel").arg("autoenroll").output();
    }
}

/// The .deb packages as `scripts/package-deb.sh` builds them: contents, maintainer scripts, and
/// installed for real with dpkg (this needs root, as CI has): the user and directories exist
/// with the right modes, systemd accepts the units, and the server starts from the installed
/// binary and configuration as the service user.
#[test]
fn debian_packages_install_and_serve() {
    for (tool, package) in [("dpkg-deb", "dpkg"), ("systemd-analyze", "systemd"), ("setpriv", "util-linux")] {
        autoenroll_test_support::require_tool(tool, package);
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("debs");
    let bin_dir = Path::new(BIN).parent().unwrap();
    // The agent binary is another package's (`cargo test --workspace` builds it): never package
    // one older than the agent's sources.
    let agent = bin_dir.join("autoenroll-agent");
    let built = std::fs::metadata(&agent).and_then(|m| m.modified()).ok();
    let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/agent_cmd.rs");
    let changed = std::fs::metadata(&sources).and_then(|m| m.modified()).unwrap();
    assert!(
        built.is_some_and(|b| b >= changed),
        "{} is missing or older than its sources: cargo build -p autoenroll-agent-bin (cargo test --workspace does)",
        agent.display()
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/package-deb.sh");
    let (ok, text) = run(
        "bash",
        &[
            script.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--bin-dir",
            bin_dir.to_str().unwrap(),
            // Debug binaries are large; the release build's xz is not what this test checks.
            "--compress",
            "gzip",
        ],
    );
    assert!(ok, "package-deb.sh: {text}");
    let debs: Vec<String> = text.lines().filter(|l| l.ends_with(".deb")).map(str::to_string).collect();
    assert_eq!(debs.len(), 2, "{text}");
    let (server_deb, agent_deb) = (&debs[0], &debs[1]);
    assert!(server_deb.contains("autoenroll-server_") && agent_deb.contains("autoenroll-agent_"), "{debs:?}");

    // Contents.
    let (_, listing) = run("dpkg-deb", &["-c", server_deb]);
    for path in [
        "./usr/bin/autoenroll",
        "./lib/systemd/system/autoenroll-server.service",
        "./etc/autoenroll/server.toml",
        "./usr/share/man/man1/autoenroll-server-run.1.gz",
        "./usr/share/doc/autoenroll-server/deployment.md",
        "./usr/share/doc/autoenroll-server/configuration.md",
    ] {
        assert!(listing.contains(path), "{path} in the server package:\n{listing}");
    }
    let (_, listing) = run("dpkg-deb", &["-c", agent_deb]);
    for path in
        ["./usr/bin/autoenroll-agent", "./lib/systemd/system/autoenroll-agent.service", "./etc/autoenroll/agent.toml"]
    {
        assert!(listing.contains(path), "{path} in the agent package:\n{listing}");
    }
    assert!(!listing.contains("./usr/bin/autoenroll\n"), "the agent package carries the agent alone");
    let (_, info) = run("dpkg-deb", &["-I", server_deb]);
    for want in ["Package: autoenroll-server", "postinst", "conffiles", "Depends:"] {
        assert!(info.contains(want), "{want}:\n{info}");
    }
    let control = dir.path().join("control");
    assert!(run("dpkg-deb", &["-e", server_deb, control.to_str().unwrap()]).0);
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert!(postinst.contains("adduser --system") && postinst.contains("/var/lib/autoenroll"), "{postinst}");
    assert_eq!(std::fs::read_to_string(control.join("conffiles")).unwrap().trim(), "/etc/autoenroll/server.toml");

    // Installed for real.
    let root = run("id", &["-u"]).1.trim() == "0";
    assert!(
        root,
        "installing the packages needs root: run the test suite as root (CI does), e.g. `sudo scripts/test.sh`"
    );
    let _cleanup = Uninstall;
    let (ok, text) = run("dpkg", &["-i", server_deb, agent_deb]);
    assert!(ok, "dpkg -i: {text}");
    assert!(run("getent", &["passwd", "autoenroll"]).0, "the service user exists");
    let (_, stat) = run(
        "stat",
        &["-c", "%a %U %G", "/var/lib/autoenroll", "/etc/autoenroll/server.toml", "/var/lib/autoenroll-agent"],
    );
    assert_eq!(
        stat.lines().collect::<Vec<_>>(),
        ["700 autoenroll autoenroll", "640 root autoenroll", "700 root root"],
        "{stat}"
    );
    for unit in ["/lib/systemd/system/autoenroll-server.service", "/lib/systemd/system/autoenroll-agent.service"] {
        let (ok, text) = run("systemd-analyze", &["verify", unit]);
        assert!(ok, "systemd-analyze verify {unit}: {text}");
    }
    // Man pages where man(1) looks, readable as roff (gzip-compressed, a .TH header).
    let (ok, page) = run("sh", &["-c", "gzip -dc /usr/share/man/man1/autoenroll-server-run.1.gz | head -5"]);
    assert!(ok && page.contains(".TH autoenroll-server-run 1"), "{page}");

    // The server from the installed files, as the service user (systemd is not PID 1 here).
    // setpriv execs the server itself (runuser would stay its parent, and killing it would
    // leave the server running).
    let mut child = Command::new("setpriv")
        .args(["--reuid=autoenroll", "--regid=autoenroll", "--init-groups", "--"])
        .args(["/usr/bin/autoenroll", "server", "run", "--config", "/etc/autoenroll/server.toml"])
        .args(["--listen", "127.0.0.1:0", "--scep-http-listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut first).unwrap();
    let base = first.trim().rsplit(' ').next().unwrap().to_string();
    let (ok, health) = run("curl", &["-sS", "--cacert", "/var/lib/autoenroll/ca/root.pem", &format!("{base}/healthz")]);
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok && health.trim() == "ok", "{first} {health}");
    let (_, stat) = run("stat", &["-c", "%a %U", "/var/lib/autoenroll/autoenroll.db", "/var/lib/autoenroll/ca"]);
    assert_eq!(stat.lines().collect::<Vec<_>>(), ["600 autoenroll", "700 autoenroll"], "{stat}");
}

fn autoenroll(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What an administrator reaches for (issue 15): errors that say what and where, `template
/// show` with every field, `config check`, `backup` that restores, completions and man pages,
/// and a pipe to `head` that ends quietly.
#[test]
fn operator_commands_and_errors_a_user_can_act_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    // Errors that name what and where.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let other = dir.path().join("other");
    let (code, _, err) = autoenroll(&["server", "run", "--data-dir", other.to_str().unwrap(), "--listen", &port]);
    assert_ne!(code, 0);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: binding")
            && last.contains(&port)
            && last.contains("Address already in use")
            && last.contains("--listen"),
        "{err}"
    );
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let (code, _, err) =
        autoenroll(&["server", "run", "--data-dir", file.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    assert_ne!(code, 0);
    assert!(err.contains("is a file, not a directory"), "{err}");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let agent_cfg = dir.path().join("agent.toml");
    std::fs::write(
        &agent_cfg,
        format!(
            "state_dir = \"{}\"\ntrust_anchor = \"{}\"\n[[policy_server]]\nurl = \"https://127.0.0.1:1/xcep\"\n[credentials]\nusername = \"a\"\npassword = \"b\"\n",
            dir.path().join("state").display(),
            junk.display()
        ),
    )
    .unwrap();
    let (code, out, err) = autoenroll(&["agent", "run", "--once", "--config", agent_cfg.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("junk.pem") && err.contains("root CA certificate"), "{err}");

    // config check: a fresh directory is fine; a port in use is a problem, named.
    let (code, out, _) = autoenroll(&["server", "config", "check", "--data-dir", d, "--listen", "127.0.0.1:0"]);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = autoenroll(&["server", "config", "check", "--data-dir", d, "--listen", &port]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("PROBLEM  listen") && out.contains(&port), "{out}");
    drop(taken);

    // template show: every field the JSON view has, in the table too.
    assert_eq!(autoenroll(&["server", "init", "--data-dir", d, "--keep-root-online"]).0, 0);
    let (_, json, _) = autoenroll(&["server", "template", "show", "Machine", "--data-dir", d, "--output", "json"]);
    let (_, table, _) = autoenroll(&["server", "template", "show", "Machine", "--data-dir", d]);
    let fields: serde_json::Value = serde_json::from_str(&json).unwrap();
    for key in fields.as_object().unwrap().keys() {
        assert!(table.lines().any(|l| l.starts_with(&format!("{key}:"))), "{key} in\n{table}");
    }
    assert!(
        table.contains("renewal_grace_secs") && table.contains("retry_interval_secs") && table.contains("pend_all")
    );

    // backup: a new directory that is itself a data directory.
    let backup = dir.path().join("backup");
    let (code, out, err) = autoenroll(&["server", "backup", "--data-dir", d, "--out", backup.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    use std::os::unix::fs::PermissionsExt;
    for (f, mode) in [("", 0o700), ("autoenroll.db", 0o600), ("ca/issuing.key", 0o600), ("ca/root.pem", 0o644)] {
        let m = std::fs::metadata(backup.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, mode, "{f}");
    }
    // SQLite itself (Python's module, not our code) finds the snapshot whole.
    let check = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute('pragma integrity_check').fetchone()[0])",
        ])
        .arg(backup.join("autoenroll.db"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&check.stdout).trim(), "ok", "{}", String::from_utf8_lossy(&check.stderr));
    let (code, out, _) = autoenroll(&["server", "template", "list", "--data-dir", backup.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains("Machine") && out.contains("WebServer"), "restores as a data directory: {out}");
    let (code, _, err) = autoenroll(&["server", "backup", "--data-dir", d, "--out", backup.to_str().unwrap()]);
    assert_ne!(code, 0, "never over an existing backup");
    assert!(err.contains("new directory"), "{err}");

    // Completions and man pages come from the same definitions as the commands.
    let (code, bash, _) = autoenroll(&["completions", "bash"]);
    assert_eq!(code, 0);
    assert!(bash.contains("_autoenroll()") && bash.contains("config") && bash.contains("backup"));
    let man = dir.path().join("man");
    assert_eq!(autoenroll(&["man", "--out", man.to_str().unwrap()]).0, 0);
    let page = std::fs::read_to_string(man.join("autoenroll-server-backup.1")).unwrap();
    assert!(page.contains(".TH") && page.contains("\\-\\-out"), "{page}");
    // A reader that stops early (`| head`) ends the writer quietly, as for any Unix tool.
    let out = Command::new("bash")
        .args(["-c", &format!("{BIN} completions bash | head -c 10 >/dev/null; echo ${{PIPESTATUS[0]}}")])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "141");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"), "{}", String::from_utf8_lossy(&out.stderr));
}
