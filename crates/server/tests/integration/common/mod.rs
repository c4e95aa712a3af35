//! Loopback harness: a real server (TLS, HTTP, SQLite) on 127.0.0.1 with a random port and a
//! fake clock for RA decisions, plus a SOAP client.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]
use autoenroll_agent::https::{Client, ClientIdentity, Response};
use autoenroll_core::clock::Clock;
use autoenroll_proto::soap::{self, Envelope, Fault, HeaderToken};
use autoenroll_proto::xml::W;
use autoenroll_server::app::Server;
use autoenroll_server::config::RawConfig;
use autoenroll_server::ra::{AccountSpec, Ra};
use autoenroll_test_support::FakeClock;
use std::sync::Arc;

pub const PASSWORD: &str = "correct horse battery";

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub ra: Arc<Ra>,
    pub base: String,
    /// The plain-HTTP listener (SCEP, CRL, CA certificates): what certificates name.
    pub http_base: String,
    pub clock: FakeClock,
    pub tls: autoenroll_server::app::TlsReloader,
    /// TLS handshakes the server completed (full, resumed).
    pub handshakes: Arc<autoenroll_server::app::Handshakes>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// Starts with configuration changes on top of the defaults.
    pub async fn start_with(configure: impl FnOnce(&mut RawConfig)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut raw = RawConfig {
            data_dir: Some(dir.path().join("data")),
            listen: Some("127.0.0.1:0".into()),
            ..Default::default()
        };
        configure(&mut raw);
        let cfg = raw.validate().unwrap();
        let clock = FakeClock::now_real();
        let ra = Arc::new(Ra::open(cfg.ra.clone(), Arc::new(clock.clone())).await.unwrap());
        ra.create_account(&AccountSpec {
            name: "enroller",
            password: PASSWORD,
            templates: vec![],
            ..Default::default()
        })
        .await
        .unwrap();
        let server = Server::bind(ra.clone(), &cfg).await.unwrap();
        let base = server.base_url.clone();
        let http_base = server.scep_http_url.clone().unwrap_or_default().trim_end_matches("/scep").to_string();
        let tls = server.tls_reloader();
        let handshakes = server.handshakes.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.serve(async move {
            let _ = rx.await;
        }));
        TestServer { dir, ra, base, http_base, clock, tls, handshakes, stop: Some(tx) }
    }

    pub fn now(&self) -> i64 {
        self.clock.now().0
    }

    pub fn client(&self, identity: Option<&ClientIdentity>) -> Client {
        Client::new(&[self.ra.root_der().to_vec()], identity, self.ra.clock()).unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn root_pem(&self) -> std::path::PathBuf {
        self.dir.path().join("data/ca/root.pem")
    }

    pub fn issuing_pem(&self) -> std::path::PathBuf {
        self.dir.path().join("data/ca/issuing.pem")
    }

    pub async fn post(&self, path: &str, body: impl Into<Vec<u8>>) -> Response {
        self.client(None).post(&self.url(path), "application/soap+xml; charset=utf-8", body.into()).await.unwrap()
    }

    /// Sends an envelope; returns the parsed response envelope and HTTP status.
    pub async fn soap(
        &self,
        action: &str,
        token: &HeaderToken,
        body: W,
        identity: Option<&ClientIdentity>,
    ) -> (u16, Envelope) {
        self.soap_on(&self.client(identity), action, token, body).await
    }

    /// `soap` from a client of the caller's (one whose connections it keeps open, say).
    pub async fn soap_on(&self, client: &Client, action: &str, token: &HeaderToken, body: W) -> (u16, Envelope) {
        let xml = soap::request(action, &self.url("/wstep"), "urn:uuid:test", token, body);
        let r = client.post(&self.url("/wstep"), "application/soap+xml", xml.into_bytes()).await.unwrap();
        assert!(r.content_length.is_some() && !r.chunked, "responses carry Content-Length, never chunked");
        (r.status, soap::parse_envelope(&r.body).unwrap())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

pub fn account() -> HeaderToken {
    HeaderToken::UsernameToken { username: "enroller".into(), password: PASSWORD.into() }
}

pub fn token_header(token: &str) -> HeaderToken {
    HeaderToken::Binary {
        value_type: autoenroll_proto::ns::VALUE_TYPE_BOOTSTRAP_TOKEN.into(),
        value: token.as_bytes().to_vec(),
    }
}

/// The fault of a response, asserting HTTP 500.
pub fn fault(status: u16, env: &Envelope) -> Fault {
    assert_eq!(status, 500, "faults travel with HTTP 500");
    soap::parse_fault(env).expect("a SOAP fault")
}

pub fn subcode(status: u16, env: &Envelope) -> String {
    fault(status, env).subcode.unwrap_or_default()
}

/// Enrolls `device` for the default template with a fresh bootstrap token; returns the DER.
pub async fn issue(ra: &Ra, device: &str) -> Vec<u8> {
    use autoenroll_keys::{build_csr, cn_name, KeyAlgorithm, KeyPair};
    use autoenroll_server::ra::{Credentials, EnrollInput, TokenSpec};
    let (token, _) = ra.create_token(&TokenSpec { device, template: None, ttl_secs: 600 }).await.unwrap();
    let principal = ra.authenticate(&Credentials::BootstrapToken(token), None).await.unwrap();
    let key = KeyPair::generate(KeyAlgorithm::P256).unwrap();
    let csr = build_csr(&key, cn_name(device).unwrap(), vec![]).unwrap();
    issued(ra.enroll(EnrollInput { principal: &principal, csr_der: &csr, template_name: None }).await.unwrap())
        .certificate_der
}

/// The certificate of an outcome that must have been issued at once.
pub fn issued(o: autoenroll_server::ra::Outcome) -> autoenroll_server::ra::Issued {
    match o {
        autoenroll_server::ra::Outcome::Issued(i) => i,
        autoenroll_server::ra::Outcome::Pending { request_id } => panic!("request {request_id} is pending"),
    }
}

/// szOID_ENROLL_CERTTYPE_EXTENSION naming a template, as Windows sends it.
pub fn template_ext(name: &str) -> x509_cert::ext::Extension {
    x509_cert::ext::Extension {
        extn_id: autoenroll_core::oids::MS_ENROLL_CERTTYPE,
        critical: false,
        extn_value: der::asn1::OctetString::new(
            autoenroll_core::pki::template_ext::encode_template_name(name).unwrap(),
        )
        .unwrap(),
    }
}

/// A CSR with CN `cn`, these subject alternative names, optionally naming a template.
pub fn csr_with(
    key: &autoenroll_keys::KeyPair,
    cn: &str,
    dns: &[&str],
    ips: &[std::net::IpAddr],
    template: Option<&str>,
) -> Vec<u8> {
    let mut exts = Vec::new();
    if !dns.is_empty() || !ips.is_empty() {
        let dns: Vec<String> = dns.iter().map(|d| d.to_string()).collect();
        exts.push(autoenroll_keys::san_extension(&dns, ips).unwrap());
    }
    exts.extend(template.map(template_ext));
    autoenroll_keys::build_csr(key, autoenroll_keys::cn_name(cn).unwrap(), exts).unwrap()
}

/// The client identity of a certificate we issued (leaf and issuing CA).
pub fn identity_of(ra: &Ra, cert: &[u8], key: &autoenroll_keys::KeyPair) -> ClientIdentity {
    ClientIdentity { chain: vec![cert.to_vec(), ra.chain_der()[0].clone()], key_pkcs8: key.to_pkcs8_der().unwrap() }
}

/// A WS-TEP issue request; the parsed response, or the fault subcode.
pub async fn wstep_issue(
    s: &TestServer,
    token: &HeaderToken,
    csr_der: &[u8],
    context: &[(&str, &str)],
    identity: Option<&ClientIdentity>,
) -> Result<autoenroll_proto::wstep::ParsedResponse, String> {
    use autoenroll_proto::{ns, wstep};
    let (status, env) = s.soap(ns::ACTION_WSTEP, token, wstep::issue_request_body(csr_der, context), identity).await;
    if status == 200 {
        Ok(wstep::parse_response(&env.body).unwrap())
    } else {
        Err(subcode(status, &env))
    }
}

/// A WS-TEP renewal signed with the old key (RequestType Issue, a PKCS#7 around a request for
/// `new_key` that names the old certificate and asks for `cn` and `dns`); the certificate, or
/// the fault subcode.
pub async fn renew_signed_as(
    s: &TestServer,
    old: &[u8],
    old_key: &autoenroll_keys::KeyPair,
    new_key: &autoenroll_keys::KeyPair,
    (cn, dns): (&str, &[&str]),
    signed_attributes: bool,
) -> Result<Vec<u8>, String> {
    use autoenroll_proto::{ns, wstep};
    let dns: Vec<String> = dns.iter().map(|d| d.to_string()).collect();
    let exts = if dns.is_empty() { vec![] } else { vec![autoenroll_keys::san_extension(&dns, &[]).unwrap()] };
    let csr = autoenroll_keys::build_renewal_csr(new_key, autoenroll_keys::cn_name(cn).unwrap(), exts, old).unwrap();
    let cms = autoenroll_keys::sign_cms(&csr, old, old_key, signed_attributes).unwrap();
    let body = wstep::token_request_body(ns::REQUEST_TYPE_ISSUE, ns::VALUE_TYPE_PKCS7, &cms);
    let (status, env) = s.soap(ns::ACTION_WSTEP, &HeaderToken::None, body, None).await;
    if status == 200 {
        Ok(wstep::parse_response(&env.body).unwrap().certificate_der.unwrap())
    } else {
        Err(subcode(status, &env))
    }
}
