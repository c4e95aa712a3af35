//! Crash safety with real processes: the agent is killed (abort, like a power cut) at each step
//! of a renewal; a valid working pair is always on disk and the next run finishes the job.
use std::path::Path;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_autoenroll");

fn run(args: &[&str], data: Option<&Path>, env: Option<(&str, &str)>, stdin: Option<&str>) -> Output {
    let mut c = Command::new(BIN);
    c.args(args);
    if let Some(d) = data {
        c.arg("--data-dir").arg(d);
    }
    if let Some((k, v)) = env {
        c.env(k, v);
    }
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    if let Some(s) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    child.stdin.take();
    child.wait_with_output().unwrap()
}

fn ok(o: &Output) -> String {
    let text = String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{text}");
    text
}

fn openssl(args: &[&str], file: &Path) -> String {
    let out = Command::new("openssl").args(args).arg(file).output().unwrap();
    assert!(out.status.success(), "openssl {args:?} {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The live pair verifies to our root and the key matches the certificate. Returns the serial.
fn assert_valid_pair(state: &Path, data: &Path) -> String {
    let live = state.join("live/Crashy");
    let cert = live.join("cert.pem");
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(data.join("ca/root.pem"))
        .arg("-untrusted")
        .arg(data.join("ca/issuing.pem"))
        .arg(&cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "live certificate does not verify: {}", String::from_utf8_lossy(&out.stderr));
    let cert_pub = openssl(&["x509", "-noout", "-pubkey", "-in"], &cert);
    let key_pub = openssl(&["pkey", "-pubout", "-in"], &live.join("key.pem"));
    assert_eq!(cert_pub, key_pub, "the live key does not match the live certificate");
    openssl(&["x509", "-noout", "-serial", "-in"], &cert)
}

#[test]
fn a_killed_agent_always_leaves_a_working_pair_and_finishes_the_renewal() {
    autoenroll_test_support::require_tool("openssl", "openssl");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&run(&["server", "init"], Some(&data), None, None));
    for t in ["Machine", "WebServer"] {
        ok(&run(&["server", "template", "update", t, "--autoenroll", "false"], Some(&data), None, None));
    }
    // Renewal accepted at any time (grace), so each step can be forced at once.
    ok(&run(
        &[
            "server",
            "template",
            "create",
            "Crashy",
            "--validity",
            "1h",
            "--renewal-period",
            "10m",
            "--renewal-grace",
            "1h",
        ],
        Some(&data),
        None,
        None,
    ));
    ok(&run(&["server", "account", "create", "enroller"], Some(&data), None, Some("correct horse battery\n")));
    let mut server = Command::new(BIN)
        .args(["server", "run", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut stdout = std::io::BufReader::new(server.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    let base = line.trim().rsplit(' ').next().unwrap().to_string();

    let state = dir.path().join("state");
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "device = \"crashy-host\"\nstate_dir = \"{}\"\ntrust_anchor = \"{}\"\nretry_min = \"1s\"\n\n[[policy_server]]\nurl = \"{base}/xcep\"\n\n[credentials]\nusername = \"enroller\"\npassword = \"correct horse battery\"\n",
            state.display(),
            data.join("ca/root.pem").display()
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let out = ok(&run(&["agent", "run", "--once", "--config", cfg], None, None, None));
    assert!(out.contains("enrolled Crashy"), "{out}");
    let mut serial = assert_valid_pair(&state, &data);

    for point in ["after-keygen", "after-submit", "after-receive", "mid-write"] {
        let crashed = run(
            &["agent", "renew", "--now", "--template", "Crashy", "--config", cfg],
            None,
            Some(("AUTOENROLL_FAULT", point)),
            None,
        );
        assert!(!crashed.status.success(), "{point}: the agent should have died");
        assert!(
            String::from_utf8_lossy(&crashed.stderr).contains(&format!("aborting at {point}")),
            "{point}: {}",
            String::from_utf8_lossy(&crashed.stderr)
        );
        // Whatever happened, a valid pair is live: still the old one.
        assert_eq!(
            assert_valid_pair(&state, &data),
            serial,
            "{point}: the old pair stays live until the new one is complete"
        );
        // The next ordinary run finishes (install what was received) or retries the renewal.
        let out = ok(&run(&["agent", "run", "--once", "--config", cfg], None, None, None));
        assert!(out.contains("renewed Crashy"), "{point}: {out}");
        let new_serial = assert_valid_pair(&state, &data);
        assert_ne!(new_serial, serial, "{point}");
        serial = new_serial;
        assert!(!state.join("pending/Crashy").exists(), "{point}: pending state cleared");
    }
    let status = ok(&run(&["agent", "status", "--config", cfg], None, None, None));
    assert!(status.contains("Crashy") && status.contains("valid") && !status.contains("in progress"), "{status}");
    let _ = server.kill();
    let _ = server.wait();
}
