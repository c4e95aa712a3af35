//! The agent's renewal engine against a real server on loopback, driven by a fake clock shared
//! by both (the TLS layers judge validity with it too): no real waiting.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use crate::common;

use autoenroll_agent::localstore::LocalStore;
use autoenroll_agent::{AgentConfig, CycleReport, Force, Jitter};
use autoenroll_core::pki::CertFacts;
use autoenroll_core::UnixTime;
use autoenroll_server::ra::{TemplateSpec, TokenSpec};
use common::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;

struct FixedJitter;
impl Jitter for FixedJitter {
    fn next(&self) -> f64 {
        0.5
    }
}

struct Agent {
    dir: tempfile::TempDir,
    cfg: AgentConfig,
}

impl Agent {
    fn new(s: &TestServer, credentials: &str, extra: &str) -> Agent {
        Self::with("", s, credentials, extra)
    }

    /// `top` goes before the first table (settings such as `checkin = false`).
    fn with(top: &str, s: &TestServer, credentials: &str, extra: &str) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root.pem");
        std::fs::copy(s.root_pem(), &root).unwrap();
        let hooks = dir.path().join("hooks.log");
        let text = format!(
            r#"{top}
device = "agent1"
state_dir = "state"
trust_anchor = "root.pem"
retry_min = "30s"
retry_max = "10m"
archive_keep = 2

[[policy_server]]
url = "{base}/xcep"

[credentials]
{credentials}

[templates.Signed]
hooks = [["/bin/sh", "-c", "echo \"$AUTOENROLL_EVENT $AUTOENROLL_TEMPLATE $AUTOENROLL_SERIAL $AUTOENROLL_OLD_SERIAL\" >> {hooks}"]]

[templates.Tls]
renewal_mode = "tls"
hooks = [["/bin/sh", "-c", "echo \"$AUTOENROLL_EVENT $AUTOENROLL_TEMPLATE $AUTOENROLL_SERIAL\" >> {hooks}; test -s \"$AUTOENROLL_KEY\""]]
{extra}
"#,
            base = s.base,
            hooks = hooks.display()
        );
        std::fs::write(dir.path().join("agent.toml"), text).unwrap();
        let cfg = AgentConfig::load(&dir.path().join("agent.toml")).unwrap();
        Agent { dir, cfg }
    }

    async fn cycle(&self, s: &TestServer) -> CycleReport {
        self.try_cycle(s, &Force::None).await.unwrap()
    }

    async fn try_cycle(&self, s: &TestServer, force: &Force) -> Result<CycleReport, autoenroll_agent::AgentError> {
        autoenroll_agent::run_cycle(&self.cfg, Arc::new(s.clock.clone()), &FixedJitter, force).await
    }

    fn store(&self) -> LocalStore {
        LocalStore::open(&self.state(), 2).unwrap()
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn live(&self, t: &str) -> Option<CertFacts> {
        self.store().current(t).unwrap().map(|h| h.facts)
    }

    fn hook_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("hooks.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// When the agent renews `t`: the server's renewal time for the certificate it holds (read from
/// the inventory), plus the agent's own second inside that minute (core::spread::within_slot).
async fn server_time(s: &TestServer, agent: &Agent, t: &str) -> i64 {
    let f = agent.live(t).unwrap();
    let c = s.ra.certificates(1000).await.unwrap().into_iter().find(|c| c.serial == f.serial.0).unwrap();
    autoenroll_core::spread::within_slot(c.renew_after.unwrap(), format!("agent1/{}", f.serial).as_bytes()).0
}

/// 10-minute certificates with a 3-minute renewal period: the 80 % mark (8 minutes) comes first.
async fn short_templates(s: &TestServer) {
    for t in ["Machine", "WebServer"] {
        s.ra.update_template(
            autoenroll_server::ra::LOCAL_ADMIN,
            t,
            &TemplateSpec { autoenroll: Some(false), ..Default::default() },
        )
        .await
        .unwrap();
    }
    for t in ["Signed", "Tls"] {
        let spec = TemplateSpec {
            validity_secs: Some(600),
            renewal_secs: Some(180),
            ext_key_usage: Some("clientAuth".into()),
            ..Default::default()
        };
        s.ra.create_template(t, &spec).await.unwrap();
    }
}

fn openssl_verify(s: &TestServer, cert: &Path) {
    autoenroll_test_support::require_tool("openssl", "openssl");
    // openssl checks validity against the real clock; the fake clock stays within it here.
    let out = std::process::Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(s.root_pem())
        .arg("-untrusted")
        .arg(s.issuing_pem())
        .arg("-attime")
        .arg(s.now().to_string())
        .arg(cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn short_certificates_renew_at_the_servers_time_repeatedly_in_both_modes() {
    let s = TestServer::start().await;
    short_templates(&s).await;
    let agent = Agent::new(&s, "username = \"enroller\"\npassword = \"correct horse battery\"", "");
    let mut r = agent.cycle(&s).await;
    assert_eq!(r.enrolled.len(), 2, "{r:?}");
    for generation in 1..=4 {
        // Each certificate renews at the server's time for it: inside the template's window
        // (opens at not_after - min(3 min, 20 % of 10 min), the agent never goes past its middle).
        let mut due = Vec::new();
        for t in ["Signed", "Tls"] {
            let f = agent.live(t).unwrap();
            let at = server_time(&s, &agent, t).await;
            let opens = f.not_after.0 - 120;
            assert!(at >= opens && at <= opens + 60, "generation {generation}: {t} at {at}, window opens {opens}");
            due.push((at, t));
        }
        due.sort();
        assert_eq!(r.next_wake, Some(UnixTime(due[0].0)), "generation {generation}: sleeps until the first");
        for at in due.iter().map(|(at, _)| *at).collect::<std::collections::BTreeSet<_>>() {
            let now_due: Vec<&str> = due.iter().filter(|(a, _)| *a == at).map(|(_, t)| *t).collect();
            // One second early: nothing happens.
            s.clock.set(at - 1);
            let early = agent.cycle(&s).await;
            assert!(early.renewed.iter().all(|(t, _, _)| !now_due.contains(&t.as_str())), "{early:?}");
            s.clock.set(at);
            let before: Vec<_> = now_due.iter().map(|t| agent.live(t).unwrap().serial).collect();
            r = agent.cycle(&s).await;
            assert_eq!(r.renewed.len(), now_due.len(), "generation {generation}: {r:?}");
            for (i, t) in now_due.iter().enumerate() {
                let f = agent.live(t).unwrap();
                assert_ne!(f.serial, before[i]);
                assert_eq!(f.not_before, UnixTime(at), "issued at the server's time");
                openssl_verify(&s, &agent.store().live_dir(t).unwrap().join("cert.pem"));
            }
        }
    }
    // Both proofs were used.
    let details: Vec<String> =
        s.ra.audit_events(&autoenroll_server::ra::AuditFilter { limit: 500, ..Default::default() })
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.action == "renew")
            .map(|e| e.detail)
            .collect();
    assert_eq!(details.iter().filter(|d| d.contains("SignedRequest")).count(), 4);
    assert_eq!(details.iter().filter(|d| d.contains("ClientTls")).count(), 4);
    // The archive keeps the last two old certificates per template.
    for t in ["Signed", "Tls"] {
        assert_eq!(agent.store().archived(t).unwrap().len(), 2, "{t}");
    }
    // Hooks ran after every install, with the serials.
    let log = agent.hook_log();
    assert_eq!(log.iter().filter(|l| l.starts_with("enroll ")).count(), 2, "{log:?}");
    assert_eq!(log.iter().filter(|l| l.starts_with("renew ")).count(), 8, "{log:?}");
    let state = agent.store().load_state().unwrap();
    assert!(state.templates["Tls"].last_hook.as_ref().unwrap().ok);
}

#[tokio::test]
async fn failures_back_off_within_the_remaining_lifetime_then_recover() {
    let s = TestServer::start().await;
    short_templates(&s).await;
    // The template's rule alone (no check-in): renewal due exactly when the window opens.
    let credentials = "username = \"enroller\"\npassword = \"correct horse battery\"";
    let agent = Agent::with("checkin = false", &s, credentials, "");
    agent.cycle(&s).await;
    let start = s.now();
    s.ra.set_device_state(autoenroll_server::ra::LOCAL_ADMIN, "agent1", autoenroll_server::ra::DeviceState::Blocked)
        .await
        .unwrap();
    s.clock.set(start + 480);
    let mut retry_times = Vec::new();
    for _ in 0..3 {
        let r = agent.cycle(&s).await;
        assert_eq!(r.failed.len(), 2, "{r:?}");
        assert!(r.failed[0].1.contains("DeviceBlocked"), "{r:?}");
        let state = agent.store().load_state().unwrap();
        let retry = state.templates["Signed"].retry_at.unwrap();
        let remaining = start + 600 - s.now();
        assert!(retry - s.now() <= (remaining / 2).max(30), "retry {retry} too late at {}", s.now());
        assert_eq!(r.next_wake, Some(UnixTime(retry)));
        // Not before the retry time.
        s.clock.set(retry - 1);
        let r = agent.cycle(&s).await;
        assert_eq!(r.waiting.len(), 2, "{r:?}");
        s.clock.set(retry);
        retry_times.push(retry);
    }
    // Exponential from 30 s, but never past half the remaining lifetime (floor 30 s): at
    // +510 s 90 s remain, so the second retry comes after 45 s instead of 60 s.
    assert_eq!(retry_times[0] - (start + 480), 30);
    assert_eq!(retry_times[1] - retry_times[0], 45);
    assert!(retry_times[2] < start + 600, "several tries before expiry");
    s.ra.set_device_state(autoenroll_server::ra::LOCAL_ADMIN, "agent1", autoenroll_server::ra::DeviceState::Active)
        .await
        .unwrap();
    let r = agent.cycle(&s).await;
    assert_eq!(r.renewed.len(), 2, "recovered at once, renewing (not re-enrolling): {r:?}");
    let state = agent.store().load_state().unwrap();
    assert_eq!((state.templates["Signed"].failures, state.templates["Signed"].retry_at), (0, None));
}

#[tokio::test]
async fn template_bump_renews_at_once_and_supersedence_replaces() {
    let s = TestServer::start().await;
    short_templates(&s).await;
    let agent = Agent::new(&s, "username = \"enroller\"\npassword = \"correct horse battery\"", "");
    agent.cycle(&s).await;
    let old = agent.live("Signed").unwrap();
    s.ra.update_template(
        autoenroll_server::ra::LOCAL_ADMIN,
        "Signed",
        &TemplateSpec { major: Some(2), ..Default::default() },
    )
    .await
    .unwrap();
    s.clock.advance(1);
    let r = agent.cycle(&s).await;
    let new = agent.live("Signed").unwrap();
    assert_eq!(new.template.clone().unwrap().major, 2);
    assert_ne!(new.serial, old.serial);
    // A renewal with the current certificate, not a new enrollment: the agent says so, and the
    // server's audit log shows a renewal of the old serial into the new one.
    assert_eq!(r.renewed, [("Signed".to_string(), old.serial.0.clone(), new.serial.0.clone())], "{r:?}");
    assert!(r.enrolled.is_empty() && r.reenrolled.is_empty(), "{r:?}");
    let filter =
        autoenroll_server::ra::AuditFilter { subject: Some(old.serial.0.clone()), limit: 10, ..Default::default() };
    let events = s.ra.audit_events(&filter).await.unwrap();
    let renewal = events
        .iter()
        .find(|e| e.action == "renew")
        .unwrap_or_else(|| panic!("no renewal of the old serial: {events:?}"));
    assert!(renewal.actor == format!("cert:{}", old.serial) && renewal.detail.contains(&new.serial.0), "{renewal:?}");
    let certificate = s.ra.certificates(100).await.unwrap().into_iter().find(|c| c.serial == new.serial.0).unwrap();
    assert_eq!(certificate.previous_serial.as_deref(), Some(old.serial.0.as_str()), "the inventory chains them");

    let spec = TemplateSpec {
        validity_secs: Some(600),
        renewal_secs: Some(180),
        ext_key_usage: Some("clientAuth".into()),
        superseded: Some("Signed".into()),
        ..Default::default()
    };
    s.ra.create_template("Signed2", &spec).await.unwrap();
    s.clock.advance(1);
    let r = agent.cycle(&s).await;
    assert_eq!(r.enrolled.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(), ["Signed2"], "{r:?}");
    assert!(agent.live("Signed").is_none(), "the superseded certificate left service");
    assert!(!agent.store().archived("Signed").unwrap().is_empty(), "and stays in the archive");
    let r = agent.cycle(&s).await;
    assert!(r.enrolled.is_empty() && r.renewed.is_empty(), "{r:?}");
}

#[tokio::test]
async fn pending_requests_survive_restarts_and_are_collected() {
    let s = TestServer::start().await;
    short_templates(&s).await;
    s.ra.update_template(
        autoenroll_server::ra::LOCAL_ADMIN,
        "Signed",
        &TemplateSpec { pend_all: Some(true), ..Default::default() },
    )
    .await
    .unwrap();
    let agent = Agent::new(&s, "username = \"enroller\"\npassword = \"correct horse battery\"", "");
    let r = agent.cycle(&s).await;
    assert_eq!(r.waiting.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(), ["Signed"], "{r:?}");
    let pending = agent.store().pending("Signed").unwrap().expect("key and request id kept");
    let request_id = pending.meta.request_id.clone().unwrap();
    // A new process (same state directory) still waits for the same request.
    let again = Agent { dir: tempfile::tempdir().unwrap(), cfg: agent.cfg.clone() };
    s.clock.advance(30);
    let r = again.try_cycle(&s, &Force::None).await.unwrap();
    assert_eq!(r.waiting.len(), 1, "{r:?}");
    s.ra.approve(autoenroll_server::ra::LOCAL_ADMIN, request_id.parse().unwrap()).await.unwrap();
    s.clock.advance(30);
    let r = agent.cycle(&s).await;
    assert_eq!(r.enrolled.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(), ["Signed"], "{r:?}");
    assert_eq!(agent.live("Signed").unwrap().spki_der, pending.key.spki_der(), "the pending key was kept");
    assert!(agent.store().pending("Signed").unwrap().is_none());
}

#[tokio::test]
async fn an_expired_certificate_needs_fresh_credentials() {
    let s = TestServer::start().await;
    short_templates(&s).await;
    s.ra.update_template(
        autoenroll_server::ra::LOCAL_ADMIN,
        "Tls",
        &TemplateSpec { autoenroll: Some(false), ..Default::default() },
    )
    .await
    .unwrap();
    let (token, _) = s.ra.create_token(&TokenSpec { device: "agent1", template: None, ttl_secs: 3600 }).await.unwrap();
    let agent = Agent::new(&s, &format!("bootstrap_token = \"{token}\""), "");
    assert_eq!(agent.cycle(&s).await.enrolled.len(), 1);
    // The agent was down past expiry: nothing can renew the certificate now.
    s.clock.advance(700);
    let err = agent.try_cycle(&s, &Force::None).await.unwrap_err().to_string();
    assert!(err.contains("no usable credentials"), "{err}");
    // With a new token it re-enrolls.
    let (token, _) = s.ra.create_token(&TokenSpec { device: "agent1", template: None, ttl_secs: 3600 }).await.unwrap();
    let text = std::fs::read_to_string(agent.dir.path().join("agent.toml")).unwrap();
    let fresh = Agent { cfg: toml_with_token(&agent, &text, &token), dir: agent.dir };
    let r = fresh.cycle(&s).await;
    assert_eq!(r.reenrolled.iter().map(|(t, _, _)| t.as_str()).collect::<Vec<_>>(), ["Signed"], "{r:?}");
    assert!(fresh.live("Signed").unwrap().not_after > UnixTime(s.now()));
}

fn toml_with_token(agent: &Agent, text: &str, token: &str) -> AgentConfig {
    let start = text.find("bootstrap_token = \"").unwrap();
    let end = start + text[start..].find('\n').unwrap();
    let updated = format!("{}bootstrap_token = \"{token}\"{}", &text[..start], &text[end..]);
    std::fs::write(agent.dir.path().join("agent.toml"), updated).unwrap();
    AgentConfig::load(&agent.dir.path().join("agent.toml")).unwrap()
}

#[tokio::test]
async fn renew_now_forces_renewal_inside_the_servers_grace() {
    let s = TestServer::start().await;
    short_templates(&s).await;
    s.ra.update_template(
        autoenroll_server::ra::LOCAL_ADMIN,
        "Signed",
        &TemplateSpec { renewal_grace_secs: Some(600), ..Default::default() },
    )
    .await
    .unwrap();
    let agent = Agent::new(&s, "username = \"enroller\"\npassword = \"correct horse battery\"", "");
    agent.cycle(&s).await;
    s.clock.advance(5);
    let r = agent.try_cycle(&s, &Force::Templates(vec!["Signed".into()])).await.unwrap();
    assert_eq!(r.renewed.iter().map(|(t, _, _)| t.as_str()).collect::<Vec<_>>(), ["Signed"], "{r:?}");
    // Without grace the server refuses an early renewal, and the agent says why.
    let r = agent.try_cycle(&s, &Force::Templates(vec!["Tls".into()])).await.unwrap();
    assert!(r.failed[0].1.contains("OutsideRenewalWindow"), "{r:?}");
}

#[tokio::test]
async fn redirects_are_never_followed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start().await;
    // A TLS server with a certificate our CA issued, answering every request with a redirect.
    let tls_dir = s.dir.path().join("data/tls");
    let chain = x509_cert::Certificate::load_pem_chain(&std::fs::read(tls_dir.join("server.pem")).unwrap()).unwrap();
    let certs = chain.iter().map(|c| rustls_pki_types::CertificateDer::from(der::Encode::to_der(c).unwrap())).collect();
    let (_, key) = der::pem::decode_vec(&std::fs::read(tls_dir.join("server.key")).unwrap()).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, rustls_pki_types::PrivateKeyDer::try_from(key).unwrap())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            if let Ok(mut tls) = acceptor.accept(tcp).await {
                let mut buf = vec![0u8; 65536];
                let _ = tls.read(&mut buf).await;
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 302 Found\r\nLocation: https://elsewhere.example/xcep\r\nContent-Length: 0\r\n\r\n",
                    )
                    .await;
                let _ = tls.shutdown().await;
            }
        }
    });
    let mut agent = Agent::new(&s, "username = \"enroller\"\npassword = \"correct horse battery\"", "");
    agent.cfg.policy_servers[0].url = format!("https://127.0.0.1:{}/xcep", addr.port());
    let err = agent.try_cycle(&s, &Force::None).await.unwrap_err().to_string();
    assert!(err.contains("redirects are never followed") && err.contains("elsewhere.example"), "{err}");
}

#[tokio::test]
async fn a_certificate_replaced_by_someone_else_is_noticed() {
    let s = TestServer::start().await;
    short_templates(&s).await;
    // Local rules only: the point is that the store is read afresh each cycle.
    let credentials = "username = \"enroller\"\npassword = \"correct horse battery\"";
    let agent = Agent::with("checkin = false", &s, credentials, "");
    agent.cycle(&s).await;
    // An operator drops in a pair with a later expiry by hand (same template).
    let spec = TemplateSpec { validity_secs: Some(1200), ..Default::default() };
    s.ra.update_template(autoenroll_server::ra::LOCAL_ADMIN, "Signed", &spec).await.unwrap();
    let other = Agent::with("checkin = false", &s, credentials, "");
    s.clock.advance(10);
    other.cycle(&s).await;
    let theirs = other.store().live_dir("Signed").unwrap();
    let ours = agent.store().live_dir("Signed").unwrap();
    for f in ["cert.pem", "key.pem", "chain.pem"] {
        std::fs::copy(theirs.join(f), ours.join(f)).unwrap();
    }
    let replaced = agent.live("Signed").unwrap();
    assert_eq!(replaced.serial, other.live("Signed").unwrap().serial);
    // The next cycle reads the store afresh and schedules by the replacement's lifetime.
    let r = agent.cycle(&s).await;
    assert!(r.kept.contains(&"Signed".to_string()), "{r:?}");
    let due = autoenroll_core::renewal::renew_at(replaced.not_before, replaced.not_after, 180);
    assert!(r.next_wake.unwrap() <= due);
    s.clock.set(due.0);
    let r = agent.cycle(&s).await;
    assert!(r.renewed.iter().any(|(t, old, _)| t == "Signed" && *old == replaced.serial.0), "{r:?}");
}

/// Issue 14, finding 5: a full disk (or a power cut) left a 0-byte pending key, and every later
/// cycle failed for every template ("invalid private key"), `agent status` too. The unfinished
/// attempt is now discarded with a reason, and renewal goes on.
#[tokio::test]
async fn a_torn_pending_key_is_discarded_and_every_template_renews() {
    let s = TestServer::start().await;
    short_templates(&s).await;
    let agent = Agent::new(&s, "username = \"enroller\"\npassword = \"correct horse battery\"", "");
    assert_eq!(agent.cycle(&s).await.enrolled.len(), 2);
    let torn = agent.state().join("pending/Signed");
    std::fs::create_dir_all(&torn).unwrap();
    std::fs::write(torn.join("key.pem"), b"").unwrap();
    std::fs::write(torn.join("request.json"), b"{\"created_at\": 1, \"kind\": \"re").unwrap();
    assert!(agent.store().pending("Signed").is_err(), "reading says so and changes nothing");
    assert!(torn.join("key.pem").exists());
    let due = server_time(&s, &agent, "Signed").await.max(server_time(&s, &agent, "Tls").await);
    s.clock.set(due);
    let r = agent.cycle(&s).await;
    assert_eq!(r.renewed.len(), 2, "{r:?}");
    assert!(r.failed.is_empty(), "{r:?}");
    let aside = std::fs::read_dir(agent.state().join("pending"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(".set-aside-Signed-"))
        .count();
    assert_eq!(aside, 1, "the torn attempt is kept aside, not deleted");
}

/// Issue 14, finding 6: an empty or corrupt state.json stopped every command. It is moved
/// aside and rebuilt; the certificates on disk are the truth.
#[tokio::test]
async fn a_corrupt_state_file_is_moved_aside() {
    let s = TestServer::start().await;
    short_templates(&s).await;
    let agent = Agent::new(&s, "username = \"enroller\"\npassword = \"correct horse battery\"", "");
    agent.cycle(&s).await;
    let held = agent.live("Signed").unwrap().serial;
    std::fs::write(agent.state().join("state.json"), b"").unwrap();
    let r = agent.cycle(&s).await;
    assert_eq!(r.kept.len(), 2, "nothing lost, nothing redone: {r:?}");
    assert_eq!(agent.live("Signed").unwrap().serial, held);
    let aside: Vec<_> = std::fs::read_dir(agent.state())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("state.json.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1);
    assert!(agent.store().load_state().unwrap().policy_fetched_at.is_some(), "rebuilt");
}

/// Issue 14, finding 6: `renew --now` refused by the server left pending keys, put templates
/// into backoff, and `--template T` acted on the others too. Now a refused forced renewal
/// leaves nothing behind, sets no backoff, says how the window is opened, and touches no other
/// template.
#[tokio::test]
async fn a_refused_forced_renewal_leaves_nothing_behind() {
    let s = TestServer::start().await;
    short_templates(&s).await;
    let agent = Agent::new(&s, "username = \"enroller\"\npassword = \"correct horse battery\"", "");
    agent.cycle(&s).await;
    s.clock.advance(5);
    let r = agent.try_cycle(&s, &Force::Templates(vec!["Tls".into()])).await.unwrap();
    assert_eq!(r.failed.len(), 1, "{r:?}");
    assert!(r.failed[0].1.contains("OutsideRenewalWindow") && r.failed[0].1.contains("renew-now"), "{r:?}");
    assert!(r.kept.is_empty() && r.renewed.is_empty() && r.waiting.is_empty(), "only Tls was acted on: {r:?}");
    assert!(agent.store().pending("Tls").unwrap().is_none(), "no key left behind");
    let st = agent.store().load_state().unwrap();
    assert_eq!((st.templates["Tls"].failures, st.templates["Tls"].retry_at), (0, None), "no backoff");
    let r = agent.cycle(&s).await;
    assert_eq!(r.kept.len(), 2, "an ordinary cycle is unaffected: {r:?}");
}

/// Issue 14, finding 6: a local backoff delayed a later server directive (a major bump) by
/// minutes. A new word from the server wins over the backoff.
#[tokio::test]
async fn a_server_directive_wins_over_a_local_backoff() {
    use autoenroll_server::ra::{DeviceState, LOCAL_ADMIN};
    let s = TestServer::start().await;
    short_templates(&s).await;
    let agent = Agent::new(&s, "username = \"enroller\"\npassword = \"correct horse battery\"", "");
    agent.cycle(&s).await;
    let due = server_time(&s, &agent, "Signed").await.max(server_time(&s, &agent, "Tls").await);
    s.clock.set(due);
    s.ra.set_device_state(LOCAL_ADMIN, "agent1", DeviceState::Blocked).await.unwrap();
    let r = agent.cycle(&s).await;
    assert_eq!(r.failed.len(), 2, "{r:?}");
    let retry = agent.store().load_state().unwrap().templates["Signed"].retry_at.unwrap();
    assert!(retry > s.now());
    s.ra.set_device_state(LOCAL_ADMIN, "agent1", DeviceState::Active).await.unwrap();
    s.ra.update_template(LOCAL_ADMIN, "Signed", &TemplateSpec { major: Some(2), ..Default::default() }).await.unwrap();
    s.clock.advance(1);
    assert!(s.now() < retry, "still inside the backoff");
    let r = agent.cycle(&s).await;
    assert!(r.renewed.iter().any(|(t, _, _)| t == "Signed"), "the bump is acted on at once: {r:?}");
    assert_eq!(agent.live("Signed").unwrap().template.unwrap().major, 2);
}

/// A TCP proxy between agent and server that passes, resets, or delays connections.
struct FaultProxy {
    base: String,
    mode: Arc<std::sync::atomic::AtomicU8>,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
}

const PASS: u8 = 0;
const RESET: u8 = 1;
/// Every other connection reset, the rest passed.
const FLAKY: u8 = 2;
/// Each connection held 400 ms before it is passed on.
const SLOW: u8 = 3;

async fn fault_proxy(to: &str) -> FaultProxy {
    use std::sync::atomic::Ordering;
    let target: std::net::SocketAddr = to.trim_start_matches("https://").parse().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("https://{}", listener.local_addr().unwrap());
    let mode = Arc::new(std::sync::atomic::AtomicU8::new(PASS));
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (m, a) = (mode.clone(), accepted.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else { continue };
            let n = a.fetch_add(1, Ordering::Relaxed);
            let mode = m.load(Ordering::Relaxed);
            tokio::spawn(async move {
                let reset = mode == RESET || (mode == FLAKY && n % 2 == 0);
                if reset {
                    let _ = client.set_zero_linger();
                    return;
                }
                if mode == SLOW {
                    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
                }
                if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    FaultProxy { base, mode, accepted }
}

/// Issue 14: the agent against a server that resets, drops and delays connections. While it
/// is unreachable nothing held is touched and the agent says so; on a flaky network failures
/// back off within the remaining lifetime and the renewal completes before expiry; when the
/// server answers again (slowly) the agent is served at once.
#[tokio::test]
async fn the_agent_rides_out_resets_flakiness_and_delays() {
    use std::sync::atomic::Ordering;
    let s = TestServer::start().await;
    short_templates(&s).await;
    let proxy = fault_proxy(&s.base).await;
    let mut agent = Agent::new(&s, "username = \"enroller\"\npassword = \"correct horse battery\"", "");
    let toml = std::fs::read_to_string(agent.dir.path().join("agent.toml")).unwrap().replace(&s.base, &proxy.base);
    std::fs::write(agent.dir.path().join("agent.toml"), toml).unwrap();
    agent.cfg = AgentConfig::load(&agent.dir.path().join("agent.toml")).unwrap();
    assert_eq!(agent.cycle(&s).await.enrolled.len(), 2);
    assert!(proxy.accepted.load(Ordering::Relaxed) > 0, "the agent goes through the proxy");
    let held = agent.live("Signed").unwrap();
    let due = server_time(&s, &agent, "Signed").await.max(server_time(&s, &agent, "Tls").await);
    s.clock.set(due);

    // Every connection reset: the cycle says the server is unreachable; nothing held changes.
    proxy.mode.store(RESET, Ordering::Relaxed);
    let e = agent.try_cycle(&s, &Force::None).await.unwrap_err();
    assert!(matches!(e, autoenroll_agent::AgentError::Transport { .. }), "{e}");
    assert_eq!(agent.live("Signed").unwrap().serial, held.serial);

    // Flaky: every other connection reset. Retries stay within half the remaining lifetime
    // (at least 30 s apart) and both renewals land before expiry.
    proxy.mode.store(FLAKY, Ordering::Relaxed);
    let not_after = held.not_after.0;
    let mut renewed = std::collections::BTreeSet::new();
    for _ in 0..20 {
        match agent.try_cycle(&s, &Force::None).await {
            Ok(r) => {
                renewed.extend(r.renewed.iter().map(|(t, _, _)| t.clone()));
                if renewed.len() == 2 {
                    break;
                }
                let wake = r.next_wake.unwrap().0;
                let remaining = not_after - s.now();
                assert!(
                    wake - s.now() <= (remaining / 2).max(30),
                    "retry at +{} with {remaining} s left",
                    wake - s.now()
                );
                s.clock.set(wake);
            }
            // The policy request itself was reset: the daemon tries again a minute later.
            Err(_) => s.clock.advance(60),
        }
        assert!(s.now() < not_after, "renewed before expiry");
    }
    assert_eq!(renewed.len(), 2, "both renewed through a flaky network");

    // The server is back, slowly: served at once.
    proxy.mode.store(SLOW, Ordering::Relaxed);
    let r = agent.cycle(&s).await;
    assert!(r.failed.is_empty(), "{r:?}");
    proxy.mode.store(PASS, Ordering::Relaxed);
}

/// Issue 16: an agent cycle keeps its connections open (HTTP keep-alive): policy and the
/// enrollments with the account's credentials share one connection, the check-in with the new
/// machine certificate another; before, each request was a connection of its own (1 + 2 + 1).
/// Counted by the server, which sees every completed TLS handshake.
#[tokio::test]
async fn one_cycle_reuses_its_connections() {
    let s = TestServer::start().await;
    short_templates(&s).await;
    let agent = Agent::new(&s, "username = \"enroller\"\npassword = \"correct horse battery\"", "");
    // One clock for the process, as the daemon has (TLS configurations, which hold the
    // session caches, are kept per identity and clock).
    let clock: Arc<dyn autoenroll_core::clock::Clock> = Arc::new(s.clock.clone());
    let cycle = || autoenroll_agent::run_cycle(&agent.cfg, clock.clone(), &FixedJitter, &Force::None);
    let (full, resumed) = s.handshakes.get();
    let r = cycle().await.unwrap();
    assert_eq!(r.enrolled.len(), 2, "{r:?}");
    let (full_after, resumed_after) = s.handshakes.get();
    let connections = (full_after - full) + (resumed_after - resumed);
    assert_eq!(connections, 2, "policy + 2 enrollments on one connection, the check-in on a second");
    // The next cycle (nothing due) resumes the TLS sessions the first one made.
    let (full, resumed) = s.handshakes.get();
    let r = cycle().await.unwrap();
    assert!(r.enrolled.is_empty() && r.renewed.is_empty(), "{r:?}");
    let (full_after, resumed_after) = s.handshakes.get();
    assert_eq!(full_after - full, 0, "no full handshake in a later cycle of the same process");
    assert!(resumed_after - resumed >= 1, "the policy and check-in connections resume");
}

/// The agent's pooled connection closed by the server while idle (its idle timeout, a restart):
/// the next request goes out on a new connection, once, and is answered. Counted by the server.
#[tokio::test]
async fn a_pooled_connection_the_server_closed_is_replaced() {
    let s = TestServer::start_with(|raw| {
        raw.limits =
            Some(autoenroll_server::config::RawLimits { idle_timeout: Some("1s".into()), ..Default::default() });
    })
    .await;
    let client = s.client(None).with_pool(autoenroll_agent::https::Pool::default());
    let health = s.url("/healthz");
    let (full, resumed) = s.handshakes.get();
    assert_eq!(client.get(&health).await.unwrap().status, 200);
    assert_eq!(client.get(&health).await.unwrap().status, 200);
    let (f, r) = s.handshakes.get();
    assert_eq!((f - full) + (r - resumed), 1, "two requests, one connection");
    // The server closes the idle connection after 1 s; the pool still holds it.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(client.get(&health).await.unwrap().status, 200, "answered on a new connection");
    let (f2, r2) = s.handshakes.get();
    assert_eq!((f2 - f) + (r2 - r), 1, "one new connection");
}
