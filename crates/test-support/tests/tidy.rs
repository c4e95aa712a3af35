//! Architecture rules from ARCHITECTURE.md, checked on every `cargo test`:
//! R1 core and proto are sans-IO; R2 core and proto do not depend on each other;
//! R3 only `server::ra` uses the store and the CA; R5 the agent never links the CA or the store.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Workspace crates (by directory name) each crate's `[dependencies]` names.
fn workspace_deps() -> BTreeMap<String, BTreeSet<String>> {
    let mut map = BTreeMap::new();
    for e in std::fs::read_dir(root().join("crates")).unwrap() {
        let dir = e.unwrap().path();
        let toml = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        let mut deps = BTreeSet::new();
        let mut in_deps = false;
        for line in toml.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                in_deps = line == "[dependencies]";
            } else if in_deps {
                if let Some(name) = line.split(['.', ' ', '=']).next() {
                    if !name.is_empty() {
                        deps.insert(name.to_string());
                    }
                }
            }
        }
        map.insert(dir.file_name().unwrap().to_string_lossy().into_owned(), deps);
    }
    map
}

fn closure(deps: &BTreeMap<String, BTreeSet<String>>, start: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![start.to_string()];
    while let Some(c) = todo.pop() {
        for d in deps.get(&c).into_iter().flatten() {
            if let Some(local) = d.strip_prefix("autoenroll-") {
                if seen.insert(local.to_string()) {
                    todo.push(local.to_string());
                }
            } else {
                seen.insert(d.clone());
            }
        }
    }
    seen
}

#[test]
fn r1_core_and_proto_are_sans_io() {
    let deps = workspace_deps();
    const FORBIDDEN_CRATES: [&str; 7] = ["tokio", "sqlx", "axum", "hyper", "reqwest", "rand", "tokio-rustls"];
    const FORBIDDEN_CODE: [&str; 10] = [
        "std::fs",
        "TcpStream",
        "TcpListener",
        "UdpSocket",
        "SystemTime::now",
        "Instant::now",
        "thread_rng",
        "aws_lc_rs::rand",
        "SystemRandom",
        "std::env::var",
    ];
    for krate in ["core", "proto"] {
        let all = closure(&deps, krate);
        for f in FORBIDDEN_CRATES {
            assert!(!all.contains(f), "R1: {krate} depends on {f}");
        }
        for file in rust_files(&root().join("crates").join(krate).join("src")) {
            let text = std::fs::read_to_string(&file).unwrap();
            for pat in FORBIDDEN_CODE {
                assert!(!text.contains(pat), "R1: {} uses {pat}", file.display());
            }
        }
    }
}

#[test]
fn r2_core_and_proto_are_independent() {
    let deps = workspace_deps();
    assert!(!closure(&deps, "core").contains("proto"), "R2: core depends on proto");
    assert!(!closure(&deps, "proto").contains("core"), "R2: proto depends on core");
}

#[test]
fn r3_only_the_ra_uses_store_and_ca() {
    let deps = workspace_deps();
    for (krate, d) in &deps {
        for inner in ["autoenroll-store", "autoenroll-ca"] {
            if d.contains(inner) {
                assert_eq!(krate, "server", "R3: crate {krate} depends on {inner}");
            }
        }
    }
    let server_src = root().join("crates/server/src");
    for file in rust_files(&server_src) {
        if file.starts_with(server_src.join("ra")) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for pat in ["autoenroll_store", "autoenroll_ca"] {
            assert!(!text.contains(pat), "R3: {} uses {pat} outside server::ra", file.display());
        }
    }
}

#[test]
fn r5_agent_never_links_ca_or_store() {
    let all = closure(&workspace_deps(), "agent");
    assert!(!all.contains("ca") && !all.contains("store") && !all.contains("sqlx"), "R5: agent reaches {all:?}");
}

#[test]
fn libraries_forbid_unsafe_code() {
    for e in std::fs::read_dir(root().join("crates")).unwrap() {
        let dir = e.unwrap().path();
        let entry = if dir.join("src/lib.rs").exists() { dir.join("src/lib.rs") } else { dir.join("src/main.rs") };
        let text = std::fs::read_to_string(&entry).unwrap();
        assert!(text.contains("#![forbid(unsafe_code)]"), "{} lacks #![forbid(unsafe_code)]", entry.display());
    }
}

/// The typed domain: request statuses, certificate and device states, request kinds and audit
/// outcomes are compared as enums everywhere; only the store knows the names they are stored
/// under (core's `stored_enum!` table defines them).
#[test]
fn state_names_are_compared_only_in_the_store() {
    const NAMES: [&str; 17] = [
        "signing",
        "issued",
        "renewed",
        "revoked",
        "received",
        "pending",
        "denied",
        "blocked",
        "active",
        "refused",
        "enroll",
        "renew",
        "renew-tls",
        "renew-scep",
        "renew-acme",
        "scep",
        "listener",
    ];
    for e in std::fs::read_dir(root().join("crates")).unwrap() {
        let dir = e.unwrap().path();
        if dir.ends_with("store") {
            continue;
        }
        for file in rust_files(&dir.join("src")) {
            let text = std::fs::read_to_string(&file).unwrap();
            for name in NAMES {
                for pat in [
                    format!("== \"{name}\""),
                    format!("!= \"{name}\""),
                    format!("\"{name}\" =>"),
                    format!("\"{name}\" |"),
                ] {
                    assert!(!text.contains(&pat), "{} compares a stored name: {pat}", file.display());
                }
            }
        }
    }
}

/// Every wire mapping of refusals is one exhaustive match without a catch-all arm, so a new
/// refusal does not compile until each protocol says what it is.
#[test]
fn refusal_mappings_have_no_catch_all() {
    for (file, function) in [
        ("crates/server/src/frontends/soap.rs", "pub fn hresult("),
        ("crates/server/src/frontends/soap.rs", "pub fn sender_or_receiver("),
        ("crates/server/src/frontends/scep.rs", "pub fn fail_info("),
        ("crates/server/src/frontends/mde2.rs", "pub fn mdm_error("),
        ("crates/server/src/frontends/mod.rs", "pub fn http_status("),
        ("crates/server/src/frontends/checkin.rs", "fn reason("),
        ("crates/server/src/frontends/acme.rs", "pub fn problem_type("),
    ] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        let start = text.find(function).unwrap_or_else(|| panic!("{file}: {function} is gone"));
        let body = &text[start..start + text[start..].find("\n}\n").expect("end of function")];
        for line in body.lines() {
            // `_ =>`, `other =>`, `x @ _ =>`: a pattern that is a bare binding catches all.
            let Some((pattern, _)) = line.trim().split_once(" =>") else { continue };
            let pattern = pattern.trim_start_matches('|').trim();
            let bare = pattern
                .split(" @ ")
                .all(|p| p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
            assert!(!bare || pattern.is_empty(), "{file}: {function} has a catch-all arm: {line}");
        }
    }
}
