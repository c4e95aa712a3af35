//! Crash safety with real processes: the agent is killed (abort, like a power cut) at each step
//! of a renewal; a valid working pair is always on disk and the next run finishes the job.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use autoenroll_test_support::bin::{self, ok};
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_autoenroll");

fn run(args: &[&str], data: Option<&Path>, env: Option<(&str, &str)>, stdin: Option<&str>) -> Output {
    let mut all = args.to_vec();
    let data = data.map(|d| d.to_str().unwrap().to_string());
    if let Some(d) = &data {
        all.extend(["--data-dir", d.as_str()]);
    }
    bin::run(BIN, &all, env.as_slice(), stdin)
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
    let server = bin::Server::start(BIN, &data, &[]);
    let base = server.base.clone();

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
    drop(server);
}
