//! Attacks with real processes (issue 12): the server binary on loopback; curl, openssl and
//! Python's ssl module as clients nobody here wrote.
//!
//! The MITM decision: the server never issues a certificate that could impersonate it — device
//! principals (client certificates, bootstrap tokens) are not granted WebServer, and no template
//! issues the server's own names or loopback unless it says so. The agent also checks the server
//! name against its trust anchor, so what a device can obtain (a Machine certificate for its own
//! name) gets no password: both are shown here with an unmodified agent and openssl s_server.
//!
//! `AUTOENROLL_BIN` runs these against another build (e.g. one from before the trust model, to
//! see them fail there).
#![allow(clippy::unwrap_used, clippy::expect_used)]
use autoenroll_proto::soap::{self, HeaderToken};
use autoenroll_proto::{ns, wstep};
use autoenroll_test_support::bin::{self, ok};
use autoenroll_test_support::require_tool;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "correct horse battery";

fn bin_path() -> String {
    std::env::var("AUTOENROLL_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_autoenroll").to_string())
}

fn admin(data: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let mut all = vec!["server"];
    all.extend_from_slice(args);
    all.extend(["--data-dir", data.to_str().unwrap()]);
    ok(&bin::run(&bin_path(), &all, &[], stdin))
}

/// An EC key and a DER CSR made by openssl, with extra `-addext` values.
fn openssl_csr(dir: &Path, name: &str, cn: &str, addext: &[&str]) -> (PathBuf, Vec<u8>) {
    let key = dir.join(format!("{name}.key"));
    let req = dir.join(format!("{name}.der"));
    let mut cmd = Command::new("openssl");
    cmd.args(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-outform", "DER"]);
    cmd.args(["-subj", &format!("/CN={cn}")]);
    for e in addext {
        cmd.args(["-addext", e]);
    }
    let out = cmd.arg("-keyout").arg(&key).arg("-out").arg(&req).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (key, std::fs::read(&req).unwrap())
}

/// A WS-TEP issue request sent by curl (optionally with a client certificate: leaf only).
/// Ok(certificate DER) or Err(fault subcode).
fn curl_issue(
    dir: &Path,
    base: &str,
    root: &Path,
    token: &HeaderToken,
    csr: &[u8],
    device: &str,
    client: Option<(&Path, &Path)>,
) -> Result<Vec<u8>, String> {
    let url = format!("{base}/wstep");
    let body = wstep::issue_request_body(csr, &[("DeviceName", device)]);
    let xml = soap::request(ns::ACTION_WSTEP, &url, "urn:uuid:attack", token, body);
    let req = dir.join("request.xml");
    let resp = dir.join("response.xml");
    std::fs::write(&req, xml).unwrap();
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--cacert"]).arg(root);
    cmd.args(["-H", "Content-Type: application/soap+xml; charset=utf-8", "--data-binary"]);
    cmd.arg(format!("@{}", req.display()));
    if let Some((cert, key)) = client {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let out = cmd.arg("-o").arg(&resp).args(["-w", "%{http_code}"]).arg(&url).output().unwrap();
    let status = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "curl: {status} {}", String::from_utf8_lossy(&out.stderr));
    let env = soap::parse_envelope(&std::fs::read(&resp).unwrap()).unwrap();
    if status == "200" {
        Ok(wstep::parse_response(&env.body).unwrap().certificate_der.unwrap())
    } else {
        Err(soap::parse_fault(&env).and_then(|f| f.subcode).unwrap_or(status))
    }
}

fn pem(label: &str, der_bytes: &[u8]) -> String {
    der::pem::encode_string(label, der::pem::LineEnding::LF, der_bytes).unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_device_cannot_obtain_a_certificate_that_impersonates_the_server() {
    for (tool, package) in [("openssl", "openssl"), ("curl", "curl")] {
        require_tool(tool, package);
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let data = work.join("data");
    let server = bin::Server::start(&bin_path(), &data, &[]);
    let root = data.join("ca/root.pem");
    admin(&data, &["account", "create", "machine-only", "--templates", "Machine"], Some(&format!("{PASSWORD}\n")));
    let login = HeaderToken::UsernameToken { username: "machine-only".into(), password: PASSWORD.into() };

    // The attacker's foothold: an account restricted to Machine gets a Machine certificate.
    let (key, csr) = openssl_csr(work, "machine", "dev-m1", &[]);
    let machine = curl_issue(work, &server.base, &root, &login, &csr, "dev-m1", None).unwrap();
    let cert = work.join("machine.pem");
    std::fs::write(&cert, pem("CERTIFICATE", &machine)).unwrap();

    // With it as the TLS client certificate (and its chain, as a careful client sends it), it
    // asks for a server certificate for localhost, 127.0.0.1 and a bank: refused.
    let chain = work.join("machine-chain.pem");
    std::fs::write(
        &chain,
        pem("CERTIFICATE", &machine) + &std::fs::read_to_string(data.join("ca/issuing.pem")).unwrap(),
    )
    .unwrap();
    let web = "1.3.6.1.4.1.311.20.2=ASN1:BMPSTRING:WebServer";
    let (_, evil) = openssl_csr(
        work,
        "evil",
        "localhost",
        &[web, "subjectAltName=DNS:localhost,DNS:www.bank.example,IP:127.0.0.1"],
    );
    let over_tls = curl_issue(work, &server.base, &root, &HeaderToken::None, &evil, "dev-m1", Some((&chain, &key)));
    assert_eq!(over_tls.unwrap_err(), "ae:NotPermitted", "a Machine certificate must not buy a server certificate");
    // An account allowed WebServer, vouching for web1.corp.example, gets that name and no
    // server name, loopback or foreign name.
    admin(&data, &["account", "create", "ops", "--devices", "web1.corp.example"], Some(&format!("{PASSWORD}\n")));
    let ops = HeaderToken::UsernameToken { username: "ops".into(), password: PASSWORD.into() };
    let device = "web1.corp.example";
    for (name, san, code) in [
        ("localhost", "DNS:localhost", "ae:ServerNameReserved"),
        (device, "IP:127.0.0.1", "ae:ServerNameReserved"),
        (device, "DNS:www.bank.example", "ae:NameNotAllowed"),
    ] {
        let (_, csr) = openssl_csr(work, "named", name, &[web, &format!("subjectAltName={san}")]);
        assert_eq!(curl_issue(work, &server.base, &root, &ops, &csr, device, None).unwrap_err(), code, "{san}");
    }
    let (_, csr) = openssl_csr(work, "named", device, &[web, &format!("subjectAltName=DNS:{device}")]);
    curl_issue(work, &server.base, &root, &ops, &csr, device, None).unwrap();

    // The MITM the attacker can actually stage: openssl s_server on loopback with the Machine
    // certificate (and its chain). An unmodified agent with an account password refuses it, and
    // the password never reaches it.
    let port = free_port();
    let received = work.join("mitm.out");
    let mitm = Killed(
        Command::new("openssl")
            .args(["s_server", "-quiet", "-accept", &format!("127.0.0.1:{port}"), "-cert"])
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .arg("-cert_chain")
            .arg(data.join("ca/issuing.pem"))
            .stdout(std::fs::File::create(&received).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "openssl s_server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let cfg = work.join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "device = \"victim\"\nstate_dir = \"{}\"\ntrust_anchor = \"{}\"\n\n[[policy_server]]\nurl = \"https://127.0.0.1:{port}/xcep\"\n\n[credentials]\nusername = \"ops\"\npassword = \"{PASSWORD}\"\n",
            work.join("state").display(),
            root.display()
        ),
    )
    .unwrap();
    let out = Command::new(bin_path()).args(["agent", "run", "--once", "--config"]).arg(&cfg).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the agent must refuse the impostor: {text}");
    drop(mitm);
    let seen = std::fs::read_to_string(&received).unwrap_or_default();
    assert!(!seen.contains(PASSWORD) && !seen.contains("machine-only"), "the impostor received: {seen}");
}

#[test]
fn clients_that_send_their_leaf_alone_are_accepted() {
    for (tool, package) in [("openssl", "openssl"), ("curl", "curl"), ("python3", "python3")] {
        require_tool(tool, package);
    }
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let data = work.join("data");
    let server = bin::Server::start(&bin_path(), &data, &[]);
    let root = data.join("ca/root.pem");
    let created = bin::run(
        &bin_path(),
        &["server", "token", "create", "--device", "leaf-dev", "--data-dir", data.to_str().unwrap()],
        &[],
        None,
    );
    ok(&created);
    let token = HeaderToken::Binary {
        value_type: ns::VALUE_TYPE_BOOTSTRAP_TOKEN.into(),
        value: String::from_utf8_lossy(&created.stdout).trim().as_bytes().to_vec(),
    };
    let (key, csr) = openssl_csr(work, "leaf", "leaf-dev", &[]);
    let leaf = curl_issue(work, &server.base, &root, &token, &csr, "leaf-dev", None).unwrap();
    let cert = work.join("leaf.pem");
    std::fs::write(&cert, pem("CERTIFICATE", &leaf)).unwrap();
    let url = format!("{}/checkin", server.base);

    // curl with --cert holding the leaf alone.
    let out = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(&root)
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .args(["-H", "Content-Type: application/json", "--data", "{}", "-w", "\n%{http_code}"])
        .arg(&url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success() && text.ends_with("\n200"), "curl: {text} {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("\"device\":\"leaf-dev\""), "{text}");

    // Python's ssl module, likewise.
    let script = r#"
import http.client, ssl, sys, urllib.parse
url, root, cert, key = sys.argv[1:5]
u = urllib.parse.urlsplit(url)
ctx = ssl.create_default_context(cafile=root)
ctx.load_cert_chain(cert, key)
c = http.client.HTTPSConnection(u.hostname, u.port, context=ctx)
c.request("POST", u.path, body=b"{}", headers={"Content-Type": "application/json"})
r = c.getresponse()
print(r.status)
print(r.read().decode())
"#;
    let out = Command::new("python3").arg("-c").arg(script).arg(&url).arg(&root).arg(&cert).arg(&key).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.starts_with("200\n"), "python: {text} {}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("leaf-dev"), "{text}");
}
