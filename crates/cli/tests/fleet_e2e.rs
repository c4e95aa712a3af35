//! The fleet end to end with real processes: a server, three agents that enroll and check in;
//! one device is blocked (its renewal is refused, the agent and the inventory show it blocked);
//! a template bump makes the others re-enroll; a revoked certificate is in the CRL
//! (`openssl crl` verifies it) and `openssl ocsp` says revoked for it and good for another.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use autoenroll_test_support::{bin, require_tool};
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_autoenroll");

fn admin(data: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let mut all = vec!["server"];
    all.extend(args);
    all.extend(["--data-dir", data.to_str().unwrap()]);
    let out = bin::run(BIN, &all, &[], stdin);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{args:?}: {text} {}", String::from_utf8_lossy(&out.stderr));
    text
}

fn agent(args: &[&str], cfg: &Path) -> (i32, String) {
    let out = Command::new(BIN)
        .arg("agent")
        .args(args)
        .arg("--config")
        .arg(cfg)
        .env("AUTOENROLL_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn agent_config(dir: &Path, name: &str, base: &str, data: &Path) -> PathBuf {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "device = \"{name}\"\nstate_dir = \"{}\"\ntrust_anchor = \"{}\"\n\n[[policy_server]]\nurl = \"{base}/xcep\"\n\n\
             [credentials]\nusername = \"fleet\"\npassword = \"correct horse battery\"\n",
            dir.join(name).display(),
            data.join("ca/root.pem").display()
        ),
    )
    .unwrap();
    cfg
}

fn openssl(args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

fn serial_of(cert: &Path, dir: &Path) -> String {
    let (_, s) = openssl(&["x509", "-noout", "-serial", "-in", cert.to_str().unwrap()], dir);
    s.trim().trim_start_matches("serial=").to_ascii_lowercase()
}

#[test]
fn three_agents_blocking_bump_and_revocation() {
    require_tool("openssl", "openssl");
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path();
    let data = w.join("data");
    let server = bin::Server::start(BIN, &data, &["--scep-http-listen", "127.0.0.1:0"]);
    let http = server.banner_value("SCEP over HTTP").unwrap().trim_end_matches("/scep").to_string();
    admin(&data, &["account", "create", "fleet", "--devices", "a?"], Some("correct horse battery\n"));
    let names = ["a1", "a2", "a3"];
    let cfgs: Vec<PathBuf> = names.iter().map(|n| agent_config(w, n, &server.base, &data)).collect();
    for cfg in &cfgs {
        let (code, out) = agent(&["run", "--once"], cfg);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("enrolled Machine"), "{out}");
    }
    let machine = |n: &str| w.join(n).join("live/Machine/cert.pem");

    // a3 is blocked: its forced renewal is refused, the agent learns it at check-in, and the
    // inventory says so.
    admin(&data, &["device", "block", "a3"], None);
    let (code, out) = agent(&["renew", "--now", "--template", "Machine"], &cfgs[2]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("DeviceBlocked"), "{out}");
    let (_, status) = agent(&["status"], &cfgs[2]);
    assert!(status.contains("BLOCKED by the server"), "{status}");
    let devices = admin(&data, &["device", "list", "--output", "json"], None);
    let devices: Vec<serde_json::Value> = serde_json::from_str(&devices).unwrap();
    assert!(devices.iter().any(|d| d["name"] == "a3" && d["blocked"] == true), "{devices:?}");

    // A major bump: the others re-enroll on their next cycle; a3 cannot.
    let before: Vec<String> = names.iter().map(|n| serial_of(&machine(n), w)).collect();
    admin(&data, &["template", "update", "Machine", "--major", "2"], None);
    for (i, cfg) in cfgs.iter().enumerate().take(2) {
        let (code, out) = agent(&["run", "--once"], cfg);
        assert_eq!(code, 0, "{out}");
        assert_ne!(serial_of(&machine(names[i]), w), before[i], "{} re-enrolled: {out}", names[i]);
    }
    // a3 is backing off after its refusal (or refused again): it keeps what it had.
    let (_, out) = agent(&["run", "--once"], &cfgs[2]);
    assert!(out.contains("waiting Machine") || out.contains("DeviceBlocked"), "{out}");
    assert_eq!(serial_of(&machine("a3"), w), before[2], "a3 keeps what it had");
    let listed = admin(&data, &["cert", "list", "--template", "Machine", "--major", "2", "--output", "json"], None);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");

    // Revoke a1's certificate: the CRL lists it, OCSP says revoked; a2 is good.
    let a1 = serial_of(&machine("a1"), w);
    admin(&data, &["cert", "revoke", &a1, "--reason", "keyCompromise"], None);
    std::fs::copy(data.join("ca/issuing.pem"), w.join("issuing.pem")).unwrap();
    let chain = std::fs::read_to_string(data.join("ca/issuing.pem")).unwrap()
        + &std::fs::read_to_string(data.join("ca/root.pem")).unwrap();
    std::fs::write(w.join("chain.pem"), chain).unwrap();
    let crl_url = format!("{http}/crl");
    let (status, crl) = bin::http_get(&crl_url);
    assert!(status.contains(" 200 "), "{status}");
    std::fs::write(w.join("crl.der"), crl).unwrap();
    let (ok, text) =
        openssl(&["crl", "-inform", "DER", "-in", "crl.der", "-CAfile", "chain.pem", "-noout", "-text"], w);
    assert!(ok && text.contains("verify OK"), "{text}");
    assert!(text.to_ascii_lowercase().contains(&a1), "{a1} not in the CRL: {text}");
    for (name, expect) in [("a1", "revoked"), ("a2", "good")] {
        let cert = machine(name);
        let (ok, text) = openssl(
            &[
                "ocsp",
                "-url",
                &format!("{http}/ocsp"),
                "-issuer",
                "issuing.pem",
                "-CAfile",
                "chain.pem",
                "-cert",
                cert.to_str().unwrap(),
            ],
            w,
        );
        assert!(ok && text.contains("Response verify OK"), "{name}: {text}");
        assert!(text.contains(&format!("{}: {expect}", cert.display())), "{name}: {text}");
    }
    // What is stuck and why: nothing is overdue yet, but the report answers.
    admin(&data, &["report", "stuck"], None);
}
