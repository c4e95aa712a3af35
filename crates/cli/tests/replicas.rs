//! Two `autoenroll server run` replicas on one PostgreSQL database behave as one service:
//! a one-time token is spent exactly once across them, serials never collide, and every
//! issued certificate is in the shared inventory.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use autoenroll_agent::https::Client;
use autoenroll_keys::{build_csr, cn_name, KeyAlgorithm, KeyPair};
use autoenroll_proto::soap::{self, HeaderToken};
use autoenroll_proto::{ns, wstep};
use autoenroll_test_support::bin;
use std::path::Path;
use std::sync::Arc;

const BIN: &str = env!("CARGO_BIN_EXE_autoenroll");

fn cli(args: &[&str], data: &Path, db: &str, stdin: Option<&str>) -> String {
    let mut all = args.to_vec();
    all.extend(["--data-dir", data.to_str().unwrap(), "--database", db]);
    let out = bin::run(BIN, &all, &[], stdin);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn replica(data: &Path, db: &str) -> bin::Server {
    bin::Server::start(BIN, data, &["--database", db])
}

async fn issue(client: &Client, base: &str, token: &HeaderToken, cn: &str) -> Result<Vec<u8>, String> {
    let key = KeyPair::generate(KeyAlgorithm::P256).unwrap();
    let csr = build_csr(&key, cn_name(cn).unwrap(), vec![]).unwrap();
    let url = format!("{base}/wstep");
    let xml = soap::request(ns::ACTION_WSTEP, &url, "urn:uuid:r", token, wstep::issue_request_body(&csr, &[]));
    let r = client.post(&url, "application/soap+xml", xml.into_bytes()).await.map_err(|e| e.to_string())?;
    let env = soap::parse_envelope(&r.body).unwrap();
    match soap::parse_fault(&env) {
        Some(f) => Err(f.subcode.unwrap_or_default()),
        None => Ok(wstep::parse_response(&env.body).unwrap().certificate_der.unwrap()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_postgres_act_as_one_service() {
    let pg = autoenroll_test_support::pg::PgCluster::start();
    let db = pg.database("replicas");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The CA files are shared (as on a shared volume); initialise once, then start replicas.
    cli(&["server", "init"], &data, &db, None);
    cli(&["server", "account", "create", "enroller"], &data, &db, Some("correct horse battery\n"));
    let a = replica(&data, &db);
    let b = replica(&data, &db);
    let root = std::fs::read(data.join("ca/root.pem")).unwrap();
    let root = der::Encode::to_der(&x509_cert::Certificate::load_pem_chain(&root).unwrap()[0]).unwrap();
    let client = Arc::new(Client::new(&[root], None, Arc::new(autoenroll_agent::SystemClock)).unwrap());

    // One token, twelve concurrent requests spread over both replicas: exactly one wins.
    let token = cli(&["server", "token", "create", "--device", "race-host"], &data, &db, None).trim().to_string();
    let header =
        HeaderToken::Binary { value_type: ns::VALUE_TYPE_BOOTSTRAP_TOKEN.into(), value: token.as_bytes().to_vec() };
    let mut tasks = Vec::new();
    for i in 0..12 {
        let base = if i % 2 == 0 { a.base.clone() } else { b.base.clone() };
        let (client, header) = (client.clone(), header.clone());
        tasks.push(tokio::spawn(async move { issue(&client, &base, &header, "x").await }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(code) => assert_eq!(code, "ae:TokenUsed", "the losers are told why"),
        }
    }
    assert_eq!(ok, 1, "a one-time token is spent once across replicas");

    // Accounts issue on both; all serials distinct and all in the shared inventory.
    let account = HeaderToken::UsernameToken { username: "enroller".into(), password: "correct horse battery".into() };
    let mut serials = std::collections::BTreeSet::new();
    for i in 0..10 {
        let base = if i % 2 == 0 { &a.base } else { &b.base };
        let cert = issue(&client, base, &account, &format!("host{i}")).await.unwrap();
        assert!(serials.insert(autoenroll_core::pki::CertFacts::parse(&cert).unwrap().serial.0));
    }
    drop(a); // a replica may go away at any time: the other keeps serving
    issue(&client, &b.base, &account, "after-a").await.unwrap();
    let list = cli(&["server", "cert", "list", "--output", "json", "--limit", "1000"], &data, &db, None);
    for s in &serials {
        assert!(list.contains(s.as_str()), "serial {s} missing from the inventory");
    }
}
