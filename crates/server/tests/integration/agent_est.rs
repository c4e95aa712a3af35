//! Our agent speaking EST (RFC 7030) to the server on loopback, driven by a fake clock shared
//! by both: the labels' `/csrattrs` choose the keys, `simpleenroll` enrolls with an account or
//! a bootstrap token, `simplereenroll` renews over TLS with the certificate it renews, a held
//! request (202) is collected with the same key, and the server's renewal decision (check-in,
//! "renew now") moves an EST agent as it moves any other.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use crate::common;

use autoenroll_agent::localstore::LocalStore;
use autoenroll_agent::{AgentConfig, CycleReport, Force, Jitter};
use autoenroll_core::model::{CertState, RequestStatus};
use autoenroll_core::pki::CertFacts;
use autoenroll_keys::KeyAlgorithm;
use autoenroll_server::ra::{TemplateSpec, TokenSpec, LOCAL_ADMIN};
use autoenroll_store::CertificateFilter;
use common::*;
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
    fn new(s: &TestServer, top: &str, labels: &[&str], credentials: &str) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(s.root_pem(), dir.path().join("root.pem")).unwrap();
        let labels = labels.iter().map(|l| format!("{l:?}")).collect::<Vec<_>>().join(", ");
        let text = format!(
            r#"{top}
device = "agent1"
state_dir = "state"
trust_anchor = "root.pem"
retry_min = "30s"
retry_max = "10m"

[[policy_server]]
url = "{base}/.well-known/est"
protocol = "est"
labels = [{labels}]

[credentials]
{credentials}
"#,
            base = s.base,
        );
        std::fs::write(dir.path().join("agent.toml"), text).unwrap();
        let cfg = AgentConfig::load(&dir.path().join("agent.toml")).unwrap();
        Agent { dir, cfg }
    }

    async fn cycle(&self, s: &TestServer) -> CycleReport {
        autoenroll_agent::run_cycle(&self.cfg, Arc::new(s.clock.clone()), &FixedJitter, &Force::None).await.unwrap()
    }

    fn store(&self) -> LocalStore {
        LocalStore::open(&self.dir.path().join("state"), 5).unwrap()
    }

    fn live(&self, t: &str) -> CertFacts {
        self.store().current(t).unwrap().expect("a live certificate").facts
    }
}

fn names<T>(v: &[(String, T)]) -> Vec<&str> {
    v.iter().map(|(t, _)| t.as_str()).collect()
}

fn renewed(r: &CycleReport) -> Vec<&str> {
    let mut v: Vec<&str> = r.renewed.iter().map(|(t, _, _)| t.as_str()).collect();
    v.sort();
    v
}

async fn state_of(s: &TestServer, serial: &str) -> CertState {
    s.ra.certificates(1000).await.unwrap().into_iter().find(|c| c.serial == serial).unwrap().state
}

/// Ten-minute certificates the server lets renew in their last three minutes; the agent, told
/// nothing by check-in, renews at 80 % of the lifetime (minute 8).
async fn short_template(s: &TestServer, name: &str, key: &str, eku: &str) {
    lived_template(s, name, key, eku, 600).await
}

/// A template whose certificates live `secs`, renewable in their last 30 %.
async fn lived_template(s: &TestServer, name: &str, key: &str, eku: &str, secs: i64) {
    let spec = TemplateSpec {
        validity_secs: Some(secs),
        renewal_secs: Some(secs * 3 / 10),
        key_algorithm: Some(key.into()),
        ext_key_usage: Some(eku.into()),
        ..Default::default()
    };
    s.ra.create_template(name, &spec).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_enrolls_over_est_and_renews_at_80_percent() {
    let s = TestServer::start().await;
    short_template(&s, "EstDevice", "p384", "clientAuth").await;
    short_template(&s, "EstWeb", "rsa2048", "serverAuth").await;
    let names_under = TemplateSpec { dns_suffixes: Some("example.test".into()), ..Default::default() };
    s.ra.update_template(LOCAL_ADMIN, "EstWeb", &names_under).await.unwrap();
    let credentials = format!(
        "username = \"enroller\"\npassword = \"{PASSWORD}\"\n\n[templates.EstWeb]\nsubject = \"agent1.example.test\""
    );
    let agent = Agent::new(&s, "checkin = false", &["EstWeb", "EstDevice"], &credentials);

    // First cycle: both labels enrolled with the account (HTTP Basic), each key the one the
    // label's csrattrs asked for.
    let r = agent.cycle(&s).await;
    let mut enrolled = names(&r.enrolled);
    enrolled.sort();
    assert_eq!((enrolled, r.failed.len()), (vec!["EstDevice", "EstWeb"], 0), "{r:?}");
    let store = agent.store();
    assert_eq!(store.live_key("EstDevice").unwrap().algorithm(), KeyAlgorithm::P384);
    assert_eq!(store.live_key("EstWeb").unwrap().algorithm(), KeyAlgorithm::Rsa(2048));
    let device = agent.live("EstDevice");
    let web = agent.live("EstWeb");
    // The chain installed with each ends at our trust anchor.
    let chain = store.live_chain("EstDevice").unwrap();
    assert_eq!(chain.last().unwrap(), &s.ra.root_der().to_vec());
    // In the inventory like every other protocol's certificates.
    // (EST names the device by the request's common name.)
    for (f, device, template) in [(&device, "agent1", "EstDevice"), (&web, "agent1.example.test", "EstWeb")] {
        let row = s.ra.certificates(100).await.unwrap().into_iter().find(|c| c.serial == f.serial.0).unwrap();
        assert_eq!((row.device.as_str(), row.template.as_str()), (device, template));
    }
    assert_eq!(web.subject_cn.as_deref(), Some("agent1.example.test"), "the configured subject");
    // No check-in: the agent's own rule, 80 % of the lifetime.
    let at_80 = device.not_before.0 + (device.not_after.0 - device.not_before.0) * 4 / 5;
    assert_eq!(r.next_wake.unwrap().0, at_80.min(web.not_before.0 + (web.not_after.0 - web.not_before.0) * 4 / 5));
    let r = agent.cycle(&s).await;
    assert_eq!((r.kept.len(), r.enrolled.len(), r.renewed.len()), (2, 0, 0), "nothing due: {r:?}");

    // At 80 %: the clientAuth certificate renews itself over TLS (simplereenroll), and the
    // server records the successor; the serverAuth one cannot be a TLS client certificate, so
    // it is replaced by a new enrollment paid for with the account.
    s.clock.set(at_80.max(web.not_before.0 + (web.not_after.0 - web.not_before.0) * 4 / 5) + 1);
    let r = agent.cycle(&s).await;
    assert_eq!((renewed(&r), r.failed.len()), (vec!["EstDevice", "EstWeb"], 0), "{r:?}");
    let device2 = agent.live("EstDevice");
    assert_ne!(device2.serial, device.serial);
    assert_eq!(state_of(&s, &device.serial.0).await, CertState::Renewed, "simplereenroll retires its predecessor");
    let successor = s.ra.certificates(100).await.unwrap().into_iter().find(|c| c.serial == device2.serial.0).unwrap();
    assert_eq!(successor.previous_serial.as_deref(), Some(device.serial.0.as_str()), "the successor of the old one");
    assert_ne!(agent.live("EstWeb").serial, web.serial);
    assert_eq!(agent.store().archived("EstDevice").unwrap().len(), 1, "the old pair is archived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_enrollment_held_for_approval_is_collected_and_the_server_moves_renewal() {
    let s = TestServer::start().await;
    // Four-hour certificates: one outlives the server's hour between polls of a held request.
    lived_template(&s, "EstHeld", "p256", "clientAuth", 4 * 3600).await;
    s.ra.update_template(LOCAL_ADMIN, "EstHeld", &TemplateSpec { pend_all: Some(true), ..Default::default() })
        .await
        .unwrap();
    let spec = TokenSpec { device: "agent1", template: Some("EstHeld"), ttl_secs: 3600 };
    let (token, _) = s.ra.create_token(&spec).await.unwrap();
    let agent = Agent::new(&s, "", &["EstHeld"], &format!("bootstrap_token = \"{token}\""));

    // The token pays for one request, held for an administrator: 202, and the agent comes back
    // no sooner than the server's Retry-After.
    let r = agent.cycle(&s).await;
    assert_eq!(names(&r.waiting), ["EstHeld"], "{r:?}");
    assert_eq!(r.waiting[0].1 .0, s.now() + autoenroll_server::ra::PENDING_POLL_SECS, "{r:?}");
    let pending = agent.store().pending("EstHeld").unwrap().expect("the key is kept while the request waits");
    // Another cycle before then (a restart, another template's wake-up) does not ask early.
    s.clock.advance(60);
    let again = agent.cycle(&s).await;
    assert_eq!(again.waiting, r.waiting, "still waiting for the server's time");
    // Asked again before a decision: still waiting, and still one request in the queue.
    s.clock.advance(autoenroll_server::ra::PENDING_POLL_SECS - 60);
    let r = agent.cycle(&s).await;
    assert_eq!(names(&r.waiting), ["EstHeld"], "{r:?}");
    let queue = s.ra.requests(RequestStatus::Pending, 10).await.unwrap();
    assert_eq!(queue.len(), 1, "one request, not one per retry");

    // Approved: the next cycle collects it with the spent token, for the key it kept.
    s.ra.approve(LOCAL_ADMIN, queue[0].id).await.unwrap();
    s.clock.advance(autoenroll_server::ra::PENDING_POLL_SECS);
    let r = agent.cycle(&s).await;
    assert_eq!(names(&r.enrolled), ["EstHeld"], "{r:?}");
    let first = agent.live("EstHeld");
    assert_eq!(first.spki_der, pending.key.spki_der(), "the held request's key");
    assert!(agent.store().pending("EstHeld").unwrap().is_none());

    // The agent now checks in with that certificate. An administrator asks the device to renew
    // now: the server's word moves the EST agent before its own 80 % mark.
    s.clock.advance(10);
    let r = agent.cycle(&s).await;
    assert_eq!(r.kept, ["EstHeld"], "{r:?}");
    let filter = CertificateFilter { devices: vec!["agent1".into()], limit: 10, ..Default::default() };
    assert_eq!(s.ra.renew_now(LOCAL_ADMIN, &filter).await.unwrap(), 1);
    s.clock.advance(120);
    let r = agent.cycle(&s).await;
    assert_eq!(renewed(&r), ["EstHeld"], "{r:?}");
    let second = agent.live("EstHeld");
    assert!(s.now() < first.not_before.0 + (first.not_after.0 - first.not_before.0) * 4 / 5, "before the 80 % mark");
    assert_ne!(second.serial, first.serial);
    // A renewal, not a second enrollment: the new certificate succeeds the old one (which the
    // server retires as superseded once the new one is seen in use, at the check-in after it).
    let row = s.ra.certificates(100).await.unwrap().into_iter().find(|c| c.serial == second.serial.0).unwrap();
    assert_eq!(row.previous_serial.as_deref(), Some(first.serial.0.as_str()));
    let old = s.ra.certificates(100).await.unwrap().into_iter().find(|c| c.serial == first.serial.0).unwrap();
    assert!(
        old.state == CertState::Renewed
            || old.revocation_reason == Some(autoenroll_core::model::RevocationReason::Superseded),
        "{old:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn est_refusals_reach_the_agent_with_the_servers_reason() {
    let s = TestServer::start().await;
    // Grants that do not name the account: the agent reports the server's code, and keeps no key.
    let spec = TemplateSpec { grants: Some("holder:Machine".into()), ..Default::default() };
    s.ra.create_template("EstClosed", &spec).await.unwrap();
    let credentials = format!("username = \"enroller\"\npassword = \"{PASSWORD}\"");
    let agent = Agent::new(&s, "checkin = false", &["EstClosed"], &credentials);
    let r = agent.cycle(&s).await;
    assert_eq!(names(&r.failed), ["EstClosed"], "{r:?}");
    assert!(r.failed[0].1.contains("(NotPermitted)"), "{r:?}");
    assert!(agent.store().pending("EstClosed").unwrap().is_none(), "a refusal lets the key go");
    // A label the server does not have is that label's failure; the others go on.
    s.ra.create_template("EstOpen", &TemplateSpec::default()).await.unwrap();
    let agent = Agent::new(&s, "checkin = false", &["Nope", "EstOpen"], &credentials);
    let r = agent.cycle(&s).await;
    assert_eq!((names(&r.failed), names(&r.enrolled)), (vec!["Nope"], vec!["EstOpen"]), "{r:?}");
    assert!(r.failed[0].1.contains("(UnknownTemplate)"), "{r:?}");
    assert!(r.next_wake.unwrap().0 <= s.now() + 30, "looked at again after retry_min: {r:?}");
    // A wrong password: 401 with the reason.
    let agent = Agent::new(&s, "checkin = false", &["EstClosed"], "username = \"enroller\"\npassword = \"wrong\"");
    let r = agent.cycle(&s).await;
    assert_eq!(names(&r.failed), ["EstClosed"], "{r:?}");
    assert!(r.failed[0].1.ends_with("wrong username or password (WrongCredentials)"), "{r:?}");
}
