//! Secrets at rest (issue 14, finding 3), with the real binary: `server init` takes the root
//! key out of the data directory, the data directory and database files are the owner's alone
//! whatever the umask, and a SCEP static challenge is in the database neither in clear (inside
//! the stored request) nor as an unsalted hash.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use autoenroll_test_support::bin::{self, ok};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn bin_path() -> String {
    std::env::var("AUTOENROLL_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_autoenroll").to_string())
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs a command under umask 022 (the usual default), as a shell would.
fn under_umask(args: &[&str]) -> String {
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let script = format!("umask 022 && exec '{}' {}", bin_path(), quoted.join(" "));
    ok(&bin::run("sh", &["-c", &script], &[], None))
}

#[test]
fn init_takes_the_root_key_offline_and_keeps_the_data_directory_private() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let root_key = dir.path().join("offline-root.key");
    let http = format!("127.0.0.1:{}", free_port());
    let out = under_umask(&[
        "server",
        "init",
        "--data-dir",
        data.to_str().unwrap(),
        "--root-key-out",
        root_key.to_str().unwrap(),
        "--scep-http-listen",
        &http,
    ]);
    assert!(out.contains("move it offline"), "{out}");
    assert!(!data.join("ca/root.key").exists(), "the root key left the data directory");
    assert_eq!(mode(&root_key), 0o600);
    assert!(std::fs::read_to_string(&root_key).unwrap().contains("PRIVATE KEY"));
    assert_eq!(mode(&data), 0o700, "data directory");
    assert_eq!(mode(&data.join("ca")), 0o700, "CA directory");
    assert_eq!(mode(&data.join("ca/issuing.key")), 0o600);
    assert_eq!(mode(&data.join("autoenroll.db")), 0o600, "database");

    // The server runs without the root key and serves the root CRL signed at init; its
    // database files (WAL, shared memory) are private too.
    let dir_s = data.to_str().unwrap();
    let set = bin::run(
        &bin_path(),
        &["server", "challenge", "static", "--template", "Machine", "--data-dir", dir_s],
        &[],
        Some("static-challenge-0f7e\n"),
    );
    ok(&set);
    let server = bin::Server::start(&bin_path(), &data, &["--scep-http-listen", &http]);
    let (status, crl) = bin::http_get(&format!("http://{http}/crl/root"));
    assert!(status.contains(" 200 "), "{status}");
    assert!(!crl.is_empty());
    for f in ["autoenroll.db", "autoenroll.db-wal", "autoenroll.db-shm"] {
        let p = data.join(f);
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{f}");
        }
    }
    drop(server);

    // A second export has nothing to move; the offline key still signs the upkeep.
    let again =
        bin::run(&bin_path(), &["server", "ca", "export-root-key", "--out", "/tmp/x", "--data-dir", dir_s], &[], None);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already offline"));
    let upkeep = ok(&bin::run(
        &bin_path(),
        &["server", "ca", "upkeep", "--root-key", root_key.to_str().unwrap(), "--data-dir", dir_s],
        &[],
        None,
    ));
    assert!(upkeep.contains("current"), "{upkeep}");

    // The static challenge is stored as an Argon2id hash, nowhere in clear.
    let mut everything = Vec::new();
    for f in ["autoenroll.db", "autoenroll.db-wal"] {
        if let Ok(b) = std::fs::read(data.join(f)) {
            everything.extend(b);
        }
    }
    let needle = b"static-challenge-0f7e";
    assert!(!everything.windows(needle.len()).any(|w| w == needle), "the challenge is not in the database");
    let text = String::from_utf8_lossy(&everything);
    assert!(text.contains("$argon2id$v=19$m=19456,t=2,p=1$"), "stored as a salted slow hash");
}
