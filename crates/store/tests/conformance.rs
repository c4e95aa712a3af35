//! Store conformance: the behaviour every backend must show, run on SQLite and on a private
//! PostgreSQL cluster started by the test (Debian's `postgresql` package). Every public `Store`
//! method has a case here; `every_public_store_method_has_a_conformance_case` keeps it so.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use autoenroll_core::model::{
    AuditOutcome, CertState, DeviceState, Eku, Grant, KeyAlgorithm, KeyFamily, KeyPolicy, KeyUsage, NamePolicy,
    RequestKind, RequestStatus, RevocationReason, SubjectFrom, Template,
};
use autoenroll_core::UnixTime;
use autoenroll_store::*;

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = super::Store::open(&super::Store::sqlite_url(&dir.path().join("t.db"))).await.unwrap();
                    assert_eq!(store.backend(), super::Backend::Sqlite);
                    super::$name(store).await;
                }
            }
        )*

        /// One cluster for the whole suite; a fresh database per case.
        #[tokio::test]
        async fn postgres_conformance() {
            let pg = autoenroll_test_support::pg::PgCluster::start();
            $(
                let store = Store::open(&pg.database(stringify!($name))).await.unwrap();
                assert_eq!(store.backend(), Backend::Postgres);
                $name(store).await;
            )*
        }
    };
}

conformance!(
    templates_round_trip_and_unique,
    invalid_stored_template_is_reported_not_served,
    accounts_and_admin_tokens,
    tokens_are_consumed_once_and_expire,
    certificate_is_recorded_before_and_after_signing,
    request_with_intent_records_scep_transaction,
    settings_cas_and_audit,
    audit_filter_runs_before_limit,
    renewal_chain_revocation_and_requests,
    cohort_filters_match_exact_device_names,
    due_for_renewal_lists_issued_by_renewal_time,
    renewals_per_minute_counts_placed_renewals,
    stuck_certificates_show_latest_refusal,
    device_inventory,
    revocation_list_and_crls,
    crl_numbers_are_unique_under_concurrency,
    challenges_are_spent_once_per_transaction,
    device_binding_and_groups,
    one_successor_and_superseded_revocation,
    auth_failures_are_counted_locked_and_pruned,
    interrupted_requests_are_found_and_their_intents_abandoned,
    fleet_summary_counts_in_sql,
    device_search_and_state_filter,
    pool_connections_are_reported,
    online_backup_is_a_consistent_copy,
    concurrent_issuances_commit_together_and_fail_alone,
    audit_filter_by_actor_outcome_and_time,
    templates_are_cached_and_replicas_see_changes,
    acme_keys_accounts_orders_and_nonces,
);

/// A time on a minute boundary (2023-11-14T22:14:00Z).
const T0: i64 = 28_333_334 * 60;
const DAY: i64 = 86_400;

fn t(secs: i64) -> UnixTime {
    UnixTime(secs)
}

/// A valid template (as `Template::validate` wants it).
fn template(name: &str, oid: &str) -> Template {
    Template {
        name: name.into(),
        oid: oid.parse().unwrap(),
        major: 100,
        minor: 0,
        description: "d".into(),
        validity_secs: 365 * DAY,
        renewal_secs: 42 * DAY,
        renewal_grace_secs: 0,
        retry_interval_secs: 7 * DAY,
        key: KeyPolicy {
            algorithm: KeyAlgorithm::P256,
            min_rsa_bits: 2048,
            same_key_renewal: false,
            accept: vec![KeyFamily::Ec],
        },
        key_usage: vec![KeyUsage::DigitalSignature],
        ekus: vec![Eku::CLIENT_AUTH],
        subject_from: SubjectFrom::Identity,
        allow_san: false,
        enroll: true,
        autoenroll: true,
        pend_all: false,
        supersedes: vec![],
        grants: vec![Grant::AnyAccount, Grant::Token],
        names: NamePolicy::default(),
        allow_mdm: false,
        for_users: false,
        created_at: t(1),
        updated_at: t(1),
    }
}

fn event(at: i64, action: &str, subject: &str, outcome: AuditOutcome, detail: &str) -> AuditEvent {
    AuditEvent {
        at: t(at),
        actor: "ra".into(),
        action: action.into(),
        subject: subject.into(),
        outcome,
        detail: detail.into(),
    }
}

/// A certificate as a case wants it issued; `cert()` fills in the rest.
#[derive(Clone, Copy)]
struct Cert<'a> {
    device: &'a str,
    serial: &'a str,
    template: &'a str,
    major: u32,
    previous: Option<&'a str>,
    /// Recorded (request, intent, `created_at`) at this time; signed a second later.
    at: i64,
    not_after: i64,
    renew_after: i64,
}

fn cert<'a>(device: &'a str, serial: &'a str) -> Cert<'a> {
    Cert {
        device,
        serial,
        template: "A",
        major: 1,
        previous: None,
        at: T0,
        not_after: T0 + 365 * DAY,
        renew_after: T0 + 323 * DAY,
    }
}

fn thumbprint(serial: &str) -> String {
    format!("TP-{serial}")
}

/// Records the device, the request and the certificate intent (state `signing`), as the RA
/// does before signing. Returns (device id, request id).
async fn record(s: &Store, c: Cert<'_>) -> (i64, i64) {
    let dev = s.touch_device(c.device, t(c.at)).await.unwrap();
    let kind = if c.previous.is_some() { RequestKind::Renew } else { RequestKind::Enroll };
    let req = s
        .insert_request(
            &NewRequest {
                device_id: dev.id,
                requester: "ra",
                template: c.template,
                kind,
                status: RequestStatus::Received,
                csr_der: b"csr",
                previous_serial: c.previous,
            },
            None,
            t(c.at),
        )
        .await
        .unwrap();
    s.insert_certificate_intent(
        &CertificateIntent {
            serial: c.serial,
            request_id: req,
            device_id: dev.id,
            template: c.template,
            template_major: c.major,
            template_minor: 0,
            subject: &format!("CN={}", c.device),
            not_before: t(c.at),
            not_after: t(c.not_after),
            previous_serial: c.previous,
            renew_after: t(c.renew_after),
        },
        t(c.at),
    )
    .await
    .unwrap();
    (dev.id, req)
}

/// `record`, then the signed certificate stored (state `issued`).
async fn issue(s: &Store, c: Cert<'_>) -> (i64, i64) {
    let (dev, req) = record(s, c).await;
    s.complete_certificate(c.serial, req, &thumbprint(c.serial), c.serial.as_bytes(), t(c.at + 1), None).await.unwrap();
    (dev, req)
}

fn serials_of(stuck: &[Stuck]) -> Vec<String> {
    stuck.iter().map(|c| c.serial.clone()).collect()
}

fn serials(certs: &[Certificate]) -> Vec<&str> {
    certs.iter().map(|c| c.serial.as_str()).collect()
}

async fn state(s: &Store, serial: &str) -> CertState {
    s.certificate(serial).await.unwrap().unwrap().state
}

async fn templates_round_trip_and_unique(s: Store) {
    let t1 = template("A", "1.2.3");
    s.insert_template(&t1).await.unwrap();
    assert_eq!(s.template("A").await.unwrap(), Some(t1.clone()));
    assert_eq!(s.template_by_oid("1.2.3").await.unwrap(), Some(t1.clone()));
    assert_eq!(s.template("a").await.unwrap(), None, "names are exact");
    assert_eq!(s.template_by_oid("1.2.3.4").await.unwrap(), None);
    assert!(matches!(s.insert_template(&template("A", "1.2.4")).await, Err(StoreError::Duplicate(_))));
    assert!(matches!(s.insert_template(&template("B", "1.2.3")).await, Err(StoreError::Duplicate(_))));
    // Every field survives the trip, lists and enums included.
    let rich = Template {
        description: "Web servers, with SANs".into(),
        renewal_grace_secs: 3600,
        key: KeyPolicy {
            algorithm: KeyAlgorithm::Rsa(3072),
            min_rsa_bits: 3072,
            same_key_renewal: true,
            accept: vec![KeyFamily::Rsa, KeyFamily::Ec],
        },
        key_usage: vec![KeyUsage::DigitalSignature, KeyUsage::KeyEncipherment],
        ekus: vec![Eku::SERVER_AUTH, Eku::CLIENT_AUTH, "1.3.6.1.4.1.99999.7".parse().unwrap()],
        subject_from: SubjectFrom::Request,
        allow_san: true,
        autoenroll: false,
        pend_all: true,
        supersedes: vec!["A".into(), "Old-Web_1.0".into()],
        grants: vec![
            Grant::Account("ops".into()),
            Grant::AccountGroup("web-admins".into()),
            Grant::Device("web-*".into()),
            Grant::DeviceGroup("dmz".into()),
            Grant::Holder("Machine".into()),
        ],
        names: NamePolicy {
            dns_suffixes: vec!["example.test".into(), "corp.example".into()],
            ip_ranges: vec!["10.0.0.0/8".parse().unwrap(), "2001:db8::/32".parse().unwrap()],
            allow_wildcards: true,
            allow_server_names: true,
            renewal_subset: true,
        },
        allow_mdm: true,
        for_users: true,
        created_at: t(T0),
        updated_at: t(T0 + 5),
        ..template("B", "1.2.5")
    };
    assert_eq!(rich.validate(), Ok(()));
    s.insert_template(&rich).await.unwrap();
    assert_eq!(s.template("B").await.unwrap(), Some(rich.clone()));
    let mut t2 = t1.clone();
    t2.major = 101;
    t2.pend_all = true;
    t2.ekus = vec![Eku::SERVER_AUTH];
    t2.updated_at = t(T0);
    assert!(s.update_template(&t2).await.unwrap());
    assert_eq!(s.template("A").await.unwrap(), Some(t2.clone()));
    assert!(!s.update_template(&template("nope", "1.9.9")).await.unwrap());
    assert_eq!(s.template("nope").await.unwrap(), None, "an update does not insert");
    assert_eq!(s.templates().await.unwrap(), Templates { valid: vec![t2, rich], invalid: vec![] });
}

async fn invalid_stored_template_is_reported_not_served(s: Store) {
    let good = template("Good", "1.2.5");
    s.insert_template(&good).await.unwrap();
    // `insert_template` does not validate: this models a row written by an older version or by
    // hand, which this version's rules refuse.
    let mut old = template("Old", "1.2.6");
    old.key.min_rsa_bits = 1024;
    assert!(old.validate().is_err());
    s.insert_template(&old).await.unwrap();
    for got in [s.template("Old").await, s.template_by_oid("1.2.6").await] {
        match got {
            Err(StoreError::Invalid { what: "template", key, reason }) => {
                assert_eq!(key, "Old");
                assert!(reason.contains("min_key_bits"), "{reason}");
            }
            other => panic!("expected StoreError::Invalid, got {other:?}"),
        }
    }
    let all = s.templates().await.unwrap();
    assert_eq!(all.valid, vec![good.clone()], "the valid ones are still served");
    assert_eq!(all.invalid.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), ["Old"]);
    assert!(all.invalid[0].reason.contains("min_key_bits"), "{:?}", all.invalid);
    // As stored, it can still be read (to be repaired).
    assert_eq!(s.template_as_stored("Old").await.unwrap(), Some(old.clone()));
    assert_eq!(s.template_as_stored("Good").await.unwrap(), Some(good.clone()));
    assert_eq!(s.template_as_stored("nope").await.unwrap(), None);
    // Repaired by an update, it is served again.
    assert!(s.update_template(&template("Old", "1.2.6")).await.unwrap());
    assert_eq!(s.template("Old").await.unwrap(), Some(template("Old", "1.2.6")));
    assert!(s.templates().await.unwrap().invalid.is_empty());
}

async fn accounts_and_admin_tokens(s: Store) {
    let a = Account {
        name: "enroller".into(),
        password_hash: "pbkdf2-sha256$600000$c2FsdA$aGFzaA".into(),
        templates: vec!["A".into(), "Web-Server".into()],
        disabled: false,
        created_at: t(T0),
        groups: vec!["ops".into(), "web-admins".into()],
        devices: vec!["web-*".into(), "db-??".into()],
    };
    assert_eq!(s.account("enroller").await.unwrap(), None);
    s.insert_account(&a).await.unwrap();
    assert_eq!(s.account("enroller").await.unwrap(), Some(a.clone()));
    assert!(matches!(
        s.insert_account(&Account { templates: vec![], ..a.clone() }).await,
        Err(StoreError::Duplicate(_))
    ));
    assert_eq!(s.account("enroller").await.unwrap(), Some(a.clone()), "the duplicate changed nothing");
    // An empty list (every enrollable template) and `disabled` round-trip too.
    let b = Account { name: "everything".into(), templates: vec![], disabled: true, ..a };
    s.insert_account(&b).await.unwrap();
    assert_eq!(s.account("everything").await.unwrap(), Some(b));
    assert!(s.set_account_disabled("everything", false).await.unwrap());
    assert_eq!(s.account("everything").await.unwrap().map(|x| x.disabled), Some(false));
    assert!(s.set_account_disabled("everything", true).await.unwrap());
    assert_eq!(s.account("everything").await.unwrap().map(|x| x.disabled), Some(true));
    assert!(!s.set_account_disabled("nobody", true).await.unwrap());
    let old = s.account("everything").await.unwrap().unwrap().password_hash;
    assert!(s.replace_password_hash("everything", &old, "$argon2id$new").await.unwrap());
    assert_eq!(s.account("everything").await.unwrap().map(|x| x.password_hash), Some("$argon2id$new".into()));
    assert!(!s.replace_password_hash("everything", &old, "$argon2id$other").await.unwrap(), "changed meanwhile");
    assert!(!s.replace_password_hash("nobody", "x", "y").await.unwrap());

    s.insert_admin_token("id1", "alice", &[1; 32], t(T0)).await.unwrap();
    s.insert_admin_token("id2", "alice", &[2; 32], t(T0 + 1)).await.unwrap();
    s.insert_admin_token("id3", "bob", &[3; 32], t(T0 + 2)).await.unwrap();
    assert!(matches!(s.insert_admin_token("id1", "eve", &[4; 32], t(T0)).await, Err(StoreError::Duplicate(_))));
    assert_eq!(
        s.admin_token("id1").await.unwrap(),
        Some(AdminToken { name: "alice".into(), secret_hash: vec![1; 32] })
    );
    assert_eq!(s.admin_token("nope").await.unwrap(), None);
    assert_eq!(s.revoke_admin_token("alice", t(T0 + 10)).await.unwrap(), 2, "every token of that name");
    assert_eq!(s.admin_token("id1").await.unwrap(), None, "revoked tokens are not returned");
    assert_eq!(s.admin_token("id2").await.unwrap(), None);
    assert_eq!(s.admin_token("id3").await.unwrap(), Some(AdminToken { name: "bob".into(), secret_hash: vec![3; 32] }));
    assert_eq!(s.revoke_admin_token("alice", t(T0 + 11)).await.unwrap(), 0, "already revoked");
    assert_eq!(s.revoke_admin_token("nobody", t(T0 + 11)).await.unwrap(), 0);
}

async fn tokens_are_consumed_once_and_expire(s: Store) {
    let tok = BootstrapToken {
        id: "tok1".into(),
        secret_hash: vec![1, 2, 3],
        device: "dev".into(),
        template: Some("A".into()),
        expires_at: t(100),
        used_at: None,
        created_at: t(1),
        account: None,
    };
    s.insert_token(&tok).await.unwrap();
    assert_eq!(s.token("tok1").await.unwrap(), Some(tok.clone()));
    assert_eq!(s.token("nope").await.unwrap(), None);
    assert!(matches!(s.insert_token(&tok).await, Err(StoreError::Duplicate(_))));
    // Concurrent consumers: exactly one wins.
    let mut handles = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        handles.push(tokio::spawn(async move { s.consume_token("tok1", t(50)).await.unwrap() }));
    }
    let mut wins = 0;
    for h in handles {
        wins += usize::from(h.await.unwrap());
    }
    assert_eq!(wins, 1);
    assert_eq!(s.token("tok1").await.unwrap().unwrap().used_at, Some(t(50)));
    assert!(!s.consume_token("tok1", t(60)).await.unwrap(), "used");
    s.insert_token(&BootstrapToken { id: "tok2".into(), template: None, ..tok.clone() }).await.unwrap();
    assert_eq!(s.token("tok2").await.unwrap().unwrap().template, None);
    assert!(!s.consume_token("tok2", t(100)).await.unwrap(), "expired at 100");
    assert!(s.consume_token("tok2", t(99)).await.unwrap());
    assert!(!s.consume_token("nope", t(1)).await.unwrap());
    // A sign-in token keeps the account it stands for.
    let signin = BootstrapToken { id: "tok3".into(), device: String::new(), account: Some("alice".into()), ..tok };
    s.insert_token(&signin).await.unwrap();
    assert_eq!(s.token("tok3").await.unwrap(), Some(signin));
}

async fn certificate_is_recorded_before_and_after_signing(s: Store) {
    let dev = s.touch_device("dev1", t(10)).await.unwrap();
    assert_eq!(
        (dev.name.as_str(), dev.state, dev.created_at, dev.last_seen),
        ("dev1", DeviceState::Active, t(10), t(10))
    );
    assert_eq!(s.touch_device("dev1", t(20)).await.unwrap().id, dev.id);
    // last_seen has a five-minute precision: no write for every request.
    assert_eq!(s.device("dev1").await.unwrap().unwrap().last_seen, t(10));
    s.touch_device("dev1", t(400)).await.unwrap();
    let seen = s.device("dev1").await.unwrap().unwrap();
    assert_eq!((seen.last_seen, seen.created_at), (t(400), t(10)));
    assert_eq!(s.device("dev2").await.unwrap(), None);
    let req = s
        .insert_request(
            &NewRequest {
                device_id: dev.id,
                requester: "acct",
                template: "A",
                kind: RequestKind::Enroll,
                status: RequestStatus::Received,
                csr_der: b"csr",
                previous_serial: None,
            },
            None,
            t(30),
        )
        .await
        .unwrap();
    let r = s.request(req).await.unwrap().unwrap();
    assert_eq!(
        (r.status, r.kind, r.serial.as_deref(), r.requester.as_str()),
        (RequestStatus::Received, RequestKind::Enroll, None, "acct")
    );
    assert_eq!((r.csr_der.as_slice(), r.created_at, r.device_id), (&b"csr"[..], t(30), dev.id));
    assert_eq!(s.request(req + 1000).await.unwrap(), None);
    s.insert_certificate_intent(
        &CertificateIntent {
            serial: "0a",
            request_id: req,
            device_id: dev.id,
            template: "A",
            template_major: 100,
            template_minor: 3,
            subject: "CN=dev1",
            not_before: t(30),
            not_after: t(3630),
            previous_serial: None,
            renew_after: t(3000),
        },
        t(30),
    )
    .await
    .unwrap();
    let c = s.certificate("0a").await.unwrap().unwrap();
    assert_eq!(
        (c.state, c.der.as_deref(), c.device.as_str(), c.thumbprint.as_deref()),
        (CertState::Signing, None, "dev1", None)
    );
    assert_eq!((c.request_id, c.template_major, c.template_minor, c.subject.as_str()), (req, 100, 3, "CN=dev1"));
    assert_eq!((c.not_before, c.not_after, c.renew_after, c.created_at), (t(30), t(3630), Some(t(3000)), t(30)));
    let r = s.request(req).await.unwrap().unwrap();
    assert_eq!((r.status, r.serial.as_deref()), (RequestStatus::Signing, Some("0a")), "the intent moves its request");
    let issued = event(31, "issue", "0a", AuditOutcome::Issued, "A v100.3");
    s.complete_certificate("0a", req, "ABCD", b"der", t(31), Some(&issued)).await.unwrap();
    let c = s.certificate_by_thumbprint("ABCD").await.unwrap().unwrap();
    assert_eq!((c.serial.as_str(), c.state, c.der.as_deref()), ("0a", CertState::Issued, Some(&b"der"[..])));
    assert_eq!(s.certificate("0a").await.unwrap(), Some(c.clone()));
    assert_eq!(s.certificate_by_thumbprint("abcd").await.unwrap(), None);
    assert_eq!(s.certificate("nope").await.unwrap(), None);
    let r = s.request(req).await.unwrap().unwrap();
    assert_eq!((r.status, r.updated_at), (RequestStatus::Issued, t(31)));
    assert_eq!(s.audit_events(&AuditFilter { limit: 10, ..Default::default() }).await.unwrap(), vec![issued]);
    assert_eq!(s.certificates(10).await.unwrap(), vec![c]);
}

async fn request_with_intent_records_scep_transaction(s: Store) {
    let dev = s.touch_device("scep-dev", t(T0)).await.unwrap();
    let request = NewRequest {
        device_id: dev.id,
        requester: "scep",
        template: "A",
        kind: RequestKind::Scep,
        status: RequestStatus::Received,
        csr_der: b"p10",
        previous_serial: None,
    };
    let intent = CertificateIntent {
        serial: "5c",
        request_id: -1, // ignored: the new request's id is used
        device_id: dev.id,
        template: "A",
        template_major: 2,
        template_minor: 0,
        subject: "CN=scep-dev",
        not_before: t(T0),
        not_after: t(T0 + DAY),
        previous_serial: None,
        renew_after: t(T0 + DAY / 2),
    };
    let req = s.insert_request_with_intent(&request, &intent, Some(("tx1", "signer1")), t(T0)).await.unwrap();
    assert_eq!(s.scep_transaction("tx1", "signer1").await.unwrap(), Some(req));
    assert_eq!(s.scep_transaction("tx1", "signer2").await.unwrap(), None);
    let r = s.request(req).await.unwrap().unwrap();
    assert_eq!(
        (r.status, r.kind, r.serial.as_deref(), r.device.as_str()),
        (RequestStatus::Signing, RequestKind::Scep, Some("5c"), "scep-dev")
    );
    let c = s.certificate("5c").await.unwrap().unwrap();
    assert_eq!((c.request_id, c.state, c.template_major), (req, CertState::Signing, 2));
    // Without a transaction: just the request and the intent.
    let req2 = s
        .insert_request_with_intent(&request, &CertificateIntent { serial: "5d", ..intent }, None, t(T0))
        .await
        .unwrap();
    assert_ne!(req2, req);
    assert_eq!(s.certificate("5d").await.unwrap().unwrap().request_id, req2);
    assert_eq!(s.scep_transaction("tx1", "signer1").await.unwrap(), Some(req), "untouched");
    // One commit: a failing intent (duplicate serial) leaves neither request nor transaction.
    let other = s.touch_device("scep-dev2", t(T0)).await.unwrap();
    let failed = s
        .insert_request_with_intent(
            &NewRequest { device_id: other.id, ..request },
            &CertificateIntent { device_id: other.id, ..intent },
            Some(("tx2", "signer1")),
            t(T0),
        )
        .await;
    assert!(failed.is_err(), "{failed:?}");
    assert_eq!(s.scep_transaction("tx2", "signer1").await.unwrap(), None);
    assert!(s.delete_device("scep-dev2").await.unwrap(), "no request was left behind");
}

async fn settings_cas_and_audit(s: Store) {
    assert_eq!(s.setting("k").await.unwrap(), None);
    s.set_setting("k", "v1").await.unwrap();
    s.set_setting("k", "v2").await.unwrap();
    s.set_setting("other", "x").await.unwrap();
    assert_eq!(s.setting("k").await.unwrap().as_deref(), Some("v2"));
    assert_eq!(s.setting("other").await.unwrap().as_deref(), Some("x"));
    assert_eq!(s.ca("root").await.unwrap(), None);
    s.upsert_ca("root", b"root-1", t(1)).await.unwrap();
    s.upsert_ca("issuing", b"issuing-1", t(1)).await.unwrap();
    assert_eq!(s.ca("root").await.unwrap().as_deref(), Some(&b"root-1"[..]));
    s.upsert_ca("root", b"root-2", t(2)).await.unwrap();
    assert_eq!(s.ca("root").await.unwrap().as_deref(), Some(&b"root-2"[..]), "a new one replaces the old");
    assert_eq!(s.ca("issuing").await.unwrap().as_deref(), Some(&b"issuing-1"[..]));
    let e = event(1, "issue", "s", AuditOutcome::Ok, "");
    s.audit(&e).await.unwrap();
    assert_eq!(s.audit_events(&AuditFilter { limit: 5, ..Default::default() }).await.unwrap(), vec![e]);
}

async fn audit_filter_runs_before_limit(s: Store) {
    let old = event(1, "revoke", "s1", AuditOutcome::Ok, "keyCompromise");
    s.audit(&old).await.unwrap();
    for i in 0..20 {
        s.audit(&event(2 + i, "issue", &format!("dev{i}"), AuditOutcome::Issued, "")).await.unwrap();
    }
    let f = |action: Option<&str>, subject: Option<&str>, limit| AuditFilter {
        action: action.map(str::to_string),
        subject: subject.map(str::to_string),
        limit,
        ..Default::default()
    };
    // The one match is older than twenty non-matching events, and still found with limit 1.
    assert_eq!(s.audit_events(&f(Some("revoke"), None, 1)).await.unwrap(), vec![old.clone()]);
    assert_eq!(s.audit_events(&f(None, Some("s1"), 1)).await.unwrap(), vec![old.clone()]);
    assert_eq!(s.audit_events(&f(Some("revoke"), Some("s1"), 1)).await.unwrap(), vec![old.clone()]);
    assert!(s.audit_events(&f(Some("issue"), Some("s1"), 10)).await.unwrap().is_empty());
    assert!(s.audit_events(&f(Some("Revoke"), None, 10)).await.unwrap().is_empty(), "exact");
    // Newest first; the limit counts.
    let newest = s.audit_events(&f(None, None, 3)).await.unwrap();
    assert_eq!(newest.iter().map(|e| e.at).collect::<Vec<_>>(), [t(21), t(20), t(19)]);
    assert_eq!(s.audit_events(&f(Some("issue"), None, 100)).await.unwrap().len(), 20);
    let refused = event(30, "renew", "s1", AuditOutcome::Refused, "superseded");
    s.audit(&refused).await.unwrap();
    assert_eq!(s.audit_events(&f(None, Some("s1"), 1)).await.unwrap(), vec![refused.clone()]);
    assert_eq!(s.audit_events(&f(None, Some("s1"), 5)).await.unwrap(), vec![refused, old.clone()]);
    assert_eq!(s.audit_events(&f(Some("revoke"), Some("s1"), 1)).await.unwrap(), vec![old]);
}

async fn renewal_chain_revocation_and_requests(s: Store) {
    let (dev, req0) = issue(&s, Cert { renew_after: T0 + 100, ..cert("dev1", "s0") }).await;
    let r0 = s.request(req0).await.unwrap().unwrap();
    assert_eq!(
        (r0.status, r0.kind, r0.previous_serial.as_deref(), r0.device.as_str()),
        (RequestStatus::Issued, RequestKind::Enroll, None, "dev1")
    );
    assert_eq!(state(&s, "s0").await, CertState::Issued);
    // Completing the renewal marks the old certificate `renewed`, not before.
    let renewal = Cert { previous: Some("s0"), at: T0 + 200, renew_after: T0 + 1000, ..cert("dev1", "s1") };
    let (_, req1) = record(&s, renewal).await;
    assert_eq!(state(&s, "s0").await, CertState::Issued, "still issued while its successor is signed");
    s.complete_certificate("s1", req1, &thumbprint("s1"), b"s1", t(T0 + 201), None).await.unwrap();
    let r1 = s.request(req1).await.unwrap().unwrap();
    assert_eq!(
        (r1.status, r1.kind, r1.previous_serial.as_deref(), r1.device.as_str()),
        (RequestStatus::Issued, RequestKind::Renew, Some("s0"), "dev1")
    );
    assert_eq!(state(&s, "s0").await, CertState::Renewed);
    assert_eq!(s.certificate("s1").await.unwrap().unwrap().previous_serial.as_deref(), Some("s0"));
    assert_eq!(s.successor("s0").await.unwrap().unwrap().serial, "s1");
    assert!(s.successor("s1").await.unwrap().is_none());
    assert_eq!(serials(&s.certificates(10).await.unwrap()), ["s1", "s0"], "newest first");
    assert_eq!(serials(&s.certificates(1).await.unwrap()), ["s1"]);
    // "Renew now" moves issued certificates of the cohort only, and only forward in time.
    let f = |devices: &[&str]| CertificateFilter {
        devices: devices.iter().map(|d| d.to_string()).collect(),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(s.renew_now(&f(&["other", "dev1"]), t(T0 + 300)).await.unwrap(), 1);
    assert_eq!(s.certificate("s1").await.unwrap().unwrap().renew_after, Some(t(T0 + 300)));
    assert_eq!(s.certificate("s0").await.unwrap().unwrap().renew_after, Some(t(T0 + 100)), "renewed: untouched");
    assert_eq!(s.renew_now(&f(&["other", "dev1"]), t(T0 + 400)).await.unwrap(), 0, "already due");
    // Revocation: once, and never for a certificate still being signed.
    assert!(s.revoke_certificate("s1", RevocationReason::KeyCompromise, t(T0 + 500)).await.unwrap());
    assert!(!s.revoke_certificate("s1", RevocationReason::Superseded, t(T0 + 501)).await.unwrap(), "only once");
    let c = s.certificate("s1").await.unwrap().unwrap();
    assert_eq!(
        (c.state, c.revoked_at, c.revocation_reason),
        (CertState::Revoked, Some(t(T0 + 500)), Some(RevocationReason::KeyCompromise))
    );
    assert!(
        s.revoke_certificate("s0", RevocationReason::Superseded, t(T0 + 502)).await.unwrap(),
        "renewed ones may be"
    );
    record(&s, cert("dev1", "s2")).await;
    assert!(!s.revoke_certificate("s2", RevocationReason::Unspecified, t(T0 + 503)).await.unwrap());
    assert_eq!(state(&s, "s2").await, CertState::Signing);
    assert!(!s.revoke_certificate("nope", RevocationReason::Unspecified, t(T0 + 503)).await.unwrap());
    // Renewing a revoked certificate leaves it revoked.
    issue(&s, cert("dev2", "q0")).await;
    assert!(s.revoke_certificate("q0", RevocationReason::CessationOfOperation, t(T0 + 600)).await.unwrap());
    issue(&s, Cert { previous: Some("q0"), at: T0 + 700, ..cert("dev2", "q1") }).await;
    let q0 = s.certificate("q0").await.unwrap().unwrap();
    assert_eq!((q0.state, q0.revoked_at), (CertState::Revoked, Some(t(T0 + 600))));
    assert_eq!(s.successor("q0").await.unwrap().unwrap().serial, "q1");
    // Devices: blocked and unblocked by name.
    assert!(s.set_device_state("dev1", DeviceState::Blocked).await.unwrap());
    let d = s.device("dev1").await.unwrap().unwrap();
    assert_eq!(d.state, DeviceState::Blocked);
    assert!(d.is_blocked());
    assert_eq!(s.device("dev2").await.unwrap().unwrap().state, DeviceState::Active, "only that device");
    assert!(!s.set_device_state("nobody", DeviceState::Blocked).await.unwrap());
    assert!(s.set_device_state("dev1", DeviceState::Active).await.unwrap());
    assert_eq!(s.device("dev1").await.unwrap().unwrap().state, DeviceState::Active);
    // Requests: a transition happens only from the named status.
    assert!(
        !s.transition_request(req0, RequestStatus::Pending, RequestStatus::Issued, "", t(T0 + 800)).await.unwrap(),
        "not pending"
    );
    assert!(s
        .transition_request(req0, RequestStatus::Issued, RequestStatus::Denied, "test", t(T0 + 800))
        .await
        .unwrap());
    let r0 = s.request(req0).await.unwrap().unwrap();
    assert_eq!((r0.status, r0.detail.as_str(), r0.updated_at), (RequestStatus::Denied, "test", t(T0 + 800)));
    s.set_request_status(req1, RequestStatus::Pending, "waiting for approval", t(T0 + 900)).await.unwrap();
    let r1 = s.request(req1).await.unwrap().unwrap();
    assert_eq!(
        (r1.status, r1.detail.as_str(), r1.updated_at),
        (RequestStatus::Pending, "waiting for approval", t(T0 + 900))
    );
    // Of two racing approvals, one wins.
    let (alice, bob) = tokio::join!(
        s.transition_request(req1, RequestStatus::Pending, RequestStatus::Received, "alice", t(T0 + 901)),
        s.transition_request(req1, RequestStatus::Pending, RequestStatus::Received, "bob", t(T0 + 901)),
    );
    assert!(alice.unwrap() ^ bob.unwrap(), "exactly one approval wins");
    assert_eq!(s.request(req1).await.unwrap().unwrap().status, RequestStatus::Received);
    // What a device reports about itself: replaced by name, kept per device.
    let items = vec![("DeviceType".to_string(), "CIMClient_Windows".to_string()), ("OSVersion".into(), "10.0".into())];
    s.set_device_attributes(dev, &items, t(50)).await.unwrap();
    s.set_device_attributes(dev, &[("OSVersion".into(), "11.0".into())], t(51)).await.unwrap();
    assert_eq!(
        s.device_attributes(dev).await.unwrap(),
        vec![("DeviceType".to_string(), "CIMClient_Windows".to_string()), ("OSVersion".into(), "11.0".into())]
    );
    let dev2 = s.device("dev2").await.unwrap().unwrap();
    assert!(s.device_attributes(dev2.id).await.unwrap().is_empty());
}

async fn cohort_filters_match_exact_device_names(s: Store) {
    // Names that a pattern match would confuse: prefixes, `_` (a LIKE wildcard), case.
    issue(&s, Cert { not_after: T0 + 100 * DAY, ..cert("dev1", "f1") }).await;
    issue(&s, Cert { major: 2, at: T0 + 10, not_after: T0 + 200 * DAY, ..cert("dev", "f2") }).await;
    issue(&s, Cert { template: "B", at: T0 + 20, not_after: T0 + 300 * DAY, ..cert("pc_1", "f3") }).await;
    record(&s, Cert { at: T0 + 30, not_after: T0 + 400 * DAY, ..cert("pcx1", "f4") }).await;
    let f = |devices: &[&str]| CertificateFilter {
        devices: devices.iter().map(|d| d.to_string()).collect(),
        limit: 10,
        ..Default::default()
    };
    let matching = |f: CertificateFilter| {
        let s = s.clone();
        async move { serials(&s.certificates_matching(&f).await.unwrap()).iter().map(|x| x.to_string()).collect::<Vec<_>>() }
    };
    assert_eq!(matching(f(&[])).await, ["f1", "f2", "f3", "f4"], "soonest expiry first");
    assert_eq!(matching(f(&["dev1"])).await, ["f1"]);
    assert_eq!(matching(f(&["dev"])).await, ["f2"]);
    assert_eq!(matching(f(&["de"])).await, Vec::<String>::new());
    assert_eq!(matching(f(&["pcx1"])).await, ["f4"]);
    assert_eq!(matching(f(&["pc_1"])).await, ["f3"]);
    assert_eq!(matching(f(&["DEV1"])).await, Vec::<String>::new(), "names are case-sensitive");
    assert_eq!(matching(f(&["other", "dev1"])).await, ["f1"]);
    assert_eq!(matching(f(&["dev1", "pcx1"])).await, ["f1", "f4"]);
    // The other fields, alone and together.
    assert_eq!(matching(CertificateFilter { template: Some("A".into()), ..f(&[]) }).await, ["f1", "f2", "f4"]);
    assert_eq!(matching(CertificateFilter { template_major: Some(1), ..f(&[]) }).await, ["f1", "f3", "f4"]);
    assert_eq!(
        matching(CertificateFilter { template: Some("A".into()), template_major: Some(1), ..f(&[]) }).await,
        ["f1", "f4"]
    );
    assert_eq!(matching(CertificateFilter { state: Some(CertState::Signing), ..f(&[]) }).await, ["f4"]);
    assert_eq!(matching(CertificateFilter { state: Some(CertState::Issued), ..f(&["dev", "pcx1"]) }).await, ["f2"]);
    assert_eq!(matching(CertificateFilter { expiring_before: Some(t(T0 + 250 * DAY)), ..f(&[]) }).await, ["f1", "f2"]);
    assert_eq!(matching(CertificateFilter { issued_before: Some(t(T0 + 15)), ..f(&[]) }).await, ["f1", "f2"]);
    assert_eq!(matching(CertificateFilter { limit: 2, ..f(&[]) }).await, ["f1", "f2"]);
    // "Renew now" takes the same filters, and moves issued certificates only.
    let now = t(T0 + 40);
    assert_eq!(s.renew_now(&f(&["pcx1"]), now).await.unwrap(), 0, "f4 is being signed; pc_1 is not pcx1");
    assert_eq!(s.renew_now(&f(&["DEV1"]), now).await.unwrap(), 0);
    assert_eq!(s.renew_now(&f(&["dev1"]), now).await.unwrap(), 1);
    assert_eq!(s.certificate("f1").await.unwrap().unwrap().renew_after, Some(now));
    assert_eq!(s.certificate("f2").await.unwrap().unwrap().renew_after, Some(t(T0 + 323 * DAY)));
    assert_eq!(s.renew_now(&CertificateFilter { template: Some("B".into()), ..f(&[]) }, now).await.unwrap(), 1);
    assert_eq!(s.certificate("f3").await.unwrap().unwrap().renew_after, Some(now));
    assert_eq!(s.certificate("f4").await.unwrap().unwrap().renew_after, Some(t(T0 + 323 * DAY)));
}

async fn due_for_renewal_lists_issued_by_renewal_time(s: Store) {
    let (dev, _) = issue(&s, Cert { renew_after: T0 + 300, ..cert("d1", "a") }).await;
    issue(&s, Cert { renew_after: T0 + 100, major: 3, ..cert("d1", "b") }).await;
    issue(&s, Cert { renew_after: T0 + 200, ..cert("d1", "c") }).await;
    issue(&s, Cert { renew_after: T0 + 301, ..cert("d1", "d") }).await;
    record(&s, Cert { renew_after: T0 + 150, ..cert("d1", "signing") }).await;
    issue(&s, Cert { renew_after: T0 + 50, ..cert("d1", "revoked") }).await;
    s.revoke_certificate("revoked", RevocationReason::Unspecified, t(T0)).await.unwrap();
    issue(&s, Cert { renew_after: T0 + 60, ..cert("d1", "old") }).await;
    issue(&s, Cert { previous: Some("old"), renew_after: T0 + 5000, ..cert("d1", "new") }).await;
    let due = s.due_for_renewal(t(T0 + 300), 10).await.unwrap();
    assert_eq!(
        due.iter().map(|d| d.serial.as_str()).collect::<Vec<_>>(),
        ["b", "c", "a"],
        "issued only, at or before, earliest first"
    );
    assert_eq!(
        due[0],
        DueCertificate {
            serial: "b".into(),
            device_id: dev,
            template: "A".into(),
            template_major: 3,
            thumbprint: Some(thumbprint("b")),
            not_after: T0 + 365 * DAY,
            renew_after: T0 + 100,
        }
    );
    let first = s.due_for_renewal(t(T0 + 300), 2).await.unwrap();
    assert_eq!(first.iter().map(|d| d.serial.as_str()).collect::<Vec<_>>(), ["b", "c"]);
    assert!(s.due_for_renewal(t(T0 + 99), 10).await.unwrap().is_empty());
}

async fn renewals_per_minute_counts_placed_renewals(s: Store) {
    let m = T0; // a minute's start
    issue(&s, Cert { renew_after: m, ..cert("d", "m0") }).await;
    record(&s, Cert { renew_after: m + 59, ..cert("d", "m59") }).await; // being signed: counts
    issue(&s, Cert { renew_after: m + 60, ..cert("d", "m60") }).await;
    issue(&s, Cert { renew_after: m + 125, ..cert("d", "m125") }).await;
    issue(&s, Cert { renew_after: m + 180, ..cert("d", "m180") }).await; // `to` is exclusive
    issue(&s, Cert { renew_after: m - 1, ..cert("d", "before") }).await; // before `from`
    issue(&s, Cert { renew_after: m + 10, ..cert("d", "revoked") }).await;
    s.revoke_certificate("revoked", RevocationReason::Unspecified, t(T0)).await.unwrap();
    issue(&s, Cert { renew_after: m + 20, ..cert("d", "old") }).await;
    issue(&s, Cert { previous: Some("old"), renew_after: m + 300, ..cert("d", "new") }).await;
    let per_minute = s.renewals_per_minute(t(m), t(m + 180)).await.unwrap();
    assert_eq!(per_minute, [(m, 2), (m + 60, 1), (m + 120, 1)].into_iter().collect());
    let later = s.renewals_per_minute(t(m + 120), t(m + 400)).await.unwrap();
    assert_eq!(later, [(m + 120, 1), (m + 180, 1), (m + 300, 1)].into_iter().collect());
    assert!(s.renewals_per_minute(t(m + 1000), t(m + 2000)).await.unwrap().is_empty());
}

async fn stuck_certificates_show_latest_refusal(s: Store) {
    let now = T0 + 10 * DAY;
    let overdue_before = now - DAY;
    issue(&s, Cert { renew_after: T0, not_after: T0 + 30 * DAY, ..cert("pc1", "late") }).await;
    issue(&s, Cert { renew_after: T0 - 1000, not_after: T0 + 30 * DAY, ..cert("pc5", "later") }).await;
    s.set_device_state("pc5", DeviceState::Blocked).await.unwrap();
    issue(&s, Cert { renew_after: now - 3600, ..cert("pc2", "fresh") }).await; // overdue, not for long
    issue(
        &s,
        Cert { renew_after: T0 - 100 * DAY, at: T0 - 200 * DAY, not_after: now - 31 * DAY, ..cert("pc3", "gone") },
    )
    .await;
    record(&s, Cert { renew_after: T0, ..cert("pc6", "signing") }).await;
    issue(&s, Cert { renew_after: T0, ..cert("pc4", "old") }).await;
    issue(&s, Cert { previous: Some("old"), renew_after: now + DAY, ..cert("pc4", "new") }).await;
    // The latest refusal about the certificate itself counts, even when its device has a later
    // one (that may be about another template); the device's only when the certificate has
    // none, marked as the device's. Ties: the last written.
    for e in [
        event(T0 + 100, "renew", "late", AuditOutcome::Refused, "key too small"),
        event(T0 + 200, "renew", "late", AuditOutcome::Refused, "template superseded"),
        event(T0 + 300, "enroll", "pc1", AuditOutcome::Refused, "WebServer not granted"),
        event(T0 + 300, "renew", "late", AuditOutcome::Ok, "not a refusal"),
        event(T0 + 400, "renew", "pc2", AuditOutcome::Refused, "another device"),
        event(T0 + 50, "checkin", "pc5", AuditOutcome::Refused, "DeviceBlocked"),
        event(T0 + 60, "checkin", "pc5", AuditOutcome::Refused, "DeviceBlocked again"),
    ] {
        s.audit(&e).await.unwrap();
    }
    let expect = vec![
        Stuck {
            device: "pc5".into(),
            device_blocked: true,
            serial: "later".into(),
            template: "A".into(),
            renew_after: t(T0 - 1000),
            not_after: t(T0 + 30 * DAY),
            last_error: Some("device: DeviceBlocked again".into()),
            last_error_at: Some(t(T0 + 60)),
        },
        Stuck {
            device: "pc1".into(),
            device_blocked: false,
            serial: "late".into(),
            template: "A".into(),
            renew_after: t(T0),
            not_after: t(T0 + 30 * DAY),
            last_error: Some("template superseded".into()),
            last_error_at: Some(t(T0 + 200)),
        },
    ];
    let overdue = Some(now - overdue_before);
    assert_eq!(s.stuck(t(now), overdue, 10).await.unwrap(), expect);
    assert_eq!(s.stuck(t(now), overdue, 1).await.unwrap(), expect[..1]);
    assert!(s.stuck(t(now), Some(now - (T0 - 1000)), 10).await.unwrap().is_empty(), "none overdue before then");
    // By default a day, or a tenth of the lifetime when shorter: an hour-long certificate ten
    // minutes past its renewal time is stuck (a tenth is 6 minutes), not with a day's threshold.
    issue(&s, Cert { at: now - 3000, renew_after: now - 600, not_after: now + 600, ..cert("pc7", "short") }).await;
    let by_default: Vec<String> = s.stuck(t(now), None, 10).await.unwrap().into_iter().map(|c| c.serial).collect();
    assert_eq!(by_default, ["later", "late", "short"]);
    assert!(!serials_of(&s.stuck(t(now), overdue, 10).await.unwrap()).contains(&"short".to_string()));
}

async fn device_inventory(s: Store) {
    let now = T0 + 1000;
    let a = s.touch_device("a-dev", t(T0)).await.unwrap();
    issue(&s, Cert { renew_after: T0 + 500, not_after: T0 + 5000, ..cert("a-dev", "x") }).await;
    issue(&s, Cert { renew_after: T0 + 200, not_after: T0 + 6000, ..cert("a-dev", "y") }).await;
    issue(&s, Cert { renew_after: T0 + 100, not_after: T0 + 6000, ..cert("a-dev", "revoked") }).await;
    s.revoke_certificate("revoked", RevocationReason::Unspecified, t(T0)).await.unwrap();
    issue(&s, Cert { renew_after: T0 + 50, not_after: now, ..cert("a-dev", "expired") }).await;
    record(&s, Cert { renew_after: T0 + 60, ..cert("a-dev", "signing") }).await;
    let b = s.touch_device("b-dev", t(T0 + 1)).await.unwrap();
    s.set_device_state("b-dev", DeviceState::Blocked).await.unwrap();
    s.touch_device("c-dev", t(T0 + 2)).await.unwrap();
    let devices = s.devices(t(now), 10).await.unwrap();
    assert_eq!(
        devices,
        vec![
            DeviceSummary {
                name: "a-dev".into(),
                state: DeviceState::Active,
                created_at: t(T0),
                last_seen: t(T0),
                certificates: 2,
                next_renewal: Some(t(T0 + 200)),
            },
            DeviceSummary {
                name: "b-dev".into(),
                state: DeviceState::Blocked,
                created_at: t(T0 + 1),
                last_seen: t(T0 + 1),
                certificates: 0,
                next_renewal: None,
            },
            DeviceSummary {
                name: "c-dev".into(),
                state: DeviceState::Active,
                created_at: t(T0 + 2),
                last_seen: t(T0 + 2),
                certificates: 0,
                next_renewal: None,
            },
        ]
    );
    assert_eq!(s.devices(t(now), 2).await.unwrap(), devices[..2]);
    // A device read already is not written while it was seen recently, and is after that.
    let seen = s.device("c-dev").await.unwrap().unwrap();
    assert_eq!(s.touch_seen_device(seen.clone(), t(T0 + 2 + 299)).await.unwrap(), seen);
    let later = s.touch_seen_device(seen.clone(), t(T0 + 2 + 300)).await.unwrap();
    assert_eq!((later.id, later.last_seen), (seen.id, t(T0 + 302)));
    assert_eq!(s.device("c-dev").await.unwrap().unwrap().last_seen, t(T0 + 302));
    assert_eq!(s.device_by_id(a.id).await.unwrap(), s.device("a-dev").await.unwrap());
    let by_id = s.device_by_id(b.id).await.unwrap().unwrap();
    assert_eq!((by_id.name.as_str(), by_id.state), ("b-dev", DeviceState::Blocked));
    assert_eq!(s.device_by_id(a.id + b.id + 1000).await.unwrap(), None);
    // All of a device's certificates, every state, oldest first; none of another device's.
    let held: Vec<String> = s.device_certificates(a.id).await.unwrap().into_iter().map(|c| c.serial).collect();
    assert_eq!(held.len(), 5, "{held:?}");
    for serial in ["x", "y", "revoked", "expired", "signing"] {
        assert!(held.contains(&serial.to_string()), "{serial}: {held:?}");
    }
    assert!(s.device_certificates(b.id).await.unwrap().is_empty());
}

async fn revocation_list_and_crls(s: Store) {
    assert_eq!(s.last_revocation_at().await.unwrap(), None);
    assert!(s.revoked_certificates(t(T0)).await.unwrap().is_empty());
    issue(&s, Cert { not_after: T0 + 1000, ..cert("d", "r1") }).await;
    issue(&s, Cert { not_after: T0 + 5000, ..cert("d", "r2") }).await;
    issue(&s, cert("d", "kept")).await;
    assert!(s.revoke_certificate("r2", RevocationReason::Superseded, t(T0 + 10)).await.unwrap());
    assert!(s.revoke_certificate("r1", RevocationReason::KeyCompromise, t(T0 + 20)).await.unwrap());
    assert_eq!(
        s.revoked_certificates(t(T0 + 30)).await.unwrap(),
        vec![
            RevokedEntry { serial: "r2".into(), revoked_at: t(T0 + 10), reason: RevocationReason::Superseded },
            RevokedEntry { serial: "r1".into(), revoked_at: t(T0 + 20), reason: RevocationReason::KeyCompromise },
        ]
    );
    assert_eq!(
        s.revoked_certificates(t(T0 + 1000)).await.unwrap(),
        vec![RevokedEntry { serial: "r2".into(), revoked_at: t(T0 + 10), reason: RevocationReason::Superseded }],
        "expired ones leave the list"
    );
    assert_eq!(s.last_revocation_at().await.unwrap(), Some(t(T0 + 20)));
    // CRL numbers count per issuer; an older CRL never replaces a newer one.
    assert_eq!(s.crl("issuing").await.unwrap(), None);
    assert_eq!(s.next_crl_number("issuing").await.unwrap(), 1);
    assert_eq!(s.next_crl_number("issuing").await.unwrap(), 2);
    assert_eq!(s.next_crl_number("root").await.unwrap(), 1);
    let crl = |number: i64| Crl {
        number,
        this_update: t(T0 + number),
        next_update: t(T0 + number + DAY),
        der: format!("crl-{number}").into_bytes(),
    };
    s.save_crl("issuing", &crl(2)).await.unwrap();
    assert_eq!(s.crl("issuing").await.unwrap(), Some(crl(2)));
    s.save_crl("issuing", &crl(1)).await.unwrap();
    assert_eq!(s.crl("issuing").await.unwrap(), Some(crl(2)), "an older CRL never replaces a newer one");
    s.save_crl("issuing", &crl(3)).await.unwrap();
    assert_eq!(s.crl("issuing").await.unwrap(), Some(crl(3)));
    assert_eq!(s.crl("root").await.unwrap(), None, "per issuer");
    s.save_crl("root", &crl(1)).await.unwrap();
    assert_eq!(s.crl("root").await.unwrap(), Some(crl(1)));
    assert_eq!(s.crl("issuing").await.unwrap(), Some(crl(3)));
}

async fn crl_numbers_are_unique_under_concurrency(s: Store) {
    let mut handles = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..5 {
                got.push(s.next_crl_number("issuing").await.unwrap());
            }
            got
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        let got = h.await.unwrap();
        assert!(got.windows(2).all(|w| w[0] < w[1]), "strictly increasing for each caller: {got:?}");
        all.extend(got);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=40).collect::<Vec<i64>>(), "distinct, none skipped");
    assert_eq!(s.next_crl_number("issuing").await.unwrap(), 41);
}

async fn challenges_are_spent_once_per_transaction(s: Store) {
    let c = Challenge {
        id: "ch1".into(),
        secret_hash: vec![9; 32],
        device: "dev".into(),
        template: "Machine".into(),
        subject: "CN=dev".into(),
        dns_names: vec!["a.example".into(), "b.example".into()],
        ip_addrs: vec![],
        min_key_bits: 2048,
        ekus: vec![Eku::CLIENT_AUTH, "1.3.6.1.4.1.99999.7".parse().unwrap()],
        created_at: t(1),
        expires_at: t(100),
        used_at: None,
        used_transaction: None,
        used_key: None,
    };
    s.replace_challenge(&c).await.unwrap();
    assert_eq!(s.challenge("ch1").await.unwrap(), Some(c.clone()));
    assert_eq!(s.challenge("nope").await.unwrap(), None);
    assert!(matches!(s.replace_challenge(&c).await, Err(StoreError::Duplicate(_))));
    // Eight concurrent transactions with different keys: exactly one spends it.
    let mut handles = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        handles
            .push(tokio::spawn(async move { s.use_challenge("ch1", &format!("t{i}"), &format!("k{i}"), t(10)).await }));
    }
    let mut winners = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        if h.await.unwrap().unwrap() {
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let w = winners[0];
    let (tx, key) = (format!("t{w}"), format!("k{w}"));
    // The winner may retry (same transaction and key); nobody else, not even with its key.
    assert!(s.use_challenge("ch1", &tx, &key, t(20)).await.unwrap());
    assert!(!s.use_challenge("ch1", &tx, "other-key", t(20)).await.unwrap());
    assert!(!s.use_challenge("ch1", "other", &key, t(20)).await.unwrap());
    let used = s.challenge("ch1").await.unwrap().unwrap();
    assert_eq!(used.used_at, Some(t(10)), "the first use is kept");
    assert_eq!((used.used_transaction, used.used_key), (Some(tx.clone()), Some(key.clone())));
    // Expired: refused even for the winner.
    assert!(!s.use_challenge("ch1", &tx, &key, t(100)).await.unwrap());
    s.replace_challenge(&Challenge { id: "ch2".into(), ..c.clone() }).await.unwrap();
    assert!(!s.use_challenge("ch2", "t", "k", t(100)).await.unwrap(), "expired at 100");
    assert!(!s.use_challenge("nope", "t", "k", t(1)).await.unwrap());
    // Transactions remember their request.
    let dev = s.touch_device("dev", t(1)).await.unwrap();
    let new_request = |status| NewRequest {
        device_id: dev.id,
        requester: "scep",
        template: "Machine",
        kind: RequestKind::Scep,
        status,
        csr_der: b"csr",
        previous_serial: None,
    };
    let req = s.insert_request(&new_request(RequestStatus::Pending), None, t(1)).await.unwrap();
    assert_eq!(s.request(req).await.unwrap().unwrap().status, RequestStatus::Pending);
    assert_eq!(s.scep_transaction("tx", "key").await.unwrap(), None);
    s.insert_scep_transaction("tx", "key", req, t(2)).await.unwrap();
    assert_eq!(s.scep_transaction("tx", "key").await.unwrap(), Some(req));
    assert_eq!(s.scep_transaction("tx", "other").await.unwrap(), None);
    assert_eq!(s.scep_transaction("other", "key").await.unwrap(), None);
    // A transaction keeps its first request: a parallel identical request does not repoint it.
    let req2 = s.insert_request(&new_request(RequestStatus::Received), None, t(3)).await.unwrap();
    s.insert_scep_transaction("tx", "key", req2, t(3)).await.unwrap();
    assert_eq!(s.scep_transaction("tx", "key").await.unwrap(), Some(req));
    // A held request tied to its transaction in one commit; a second one for the same
    // transaction is a Duplicate and leaves nothing behind.
    let held = s.insert_request(&new_request(RequestStatus::Pending), Some(("tx2", "key")), t(4)).await.unwrap();
    assert_eq!(s.scep_transaction("tx2", "key").await.unwrap(), Some(held));
    assert!(matches!(
        s.insert_request(&new_request(RequestStatus::Pending), Some(("tx2", "key")), t(5)).await,
        Err(StoreError::Duplicate(_))
    ));
    assert_eq!(s.request(held + 1).await.unwrap(), None, "the losing request was rolled back");
    // A new challenge for a device and template ends the unused earlier ones (not used ones,
    // not other devices' or templates'), in the same commit.
    let base = Challenge {
        id: "e1".into(),
        device: "edev".into(),
        created_at: t(1),
        expires_at: t(1000),
        used_at: None,
        ..c.clone()
    };
    s.replace_challenge(&base).await.unwrap();
    s.replace_challenge(&Challenge { id: "e2".into(), template: "Other".into(), ..base.clone() }).await.unwrap();
    s.replace_challenge(&Challenge { id: "e3".into(), device: "fdev".into(), ..base.clone() }).await.unwrap();
    let next = Challenge { id: "e4".into(), created_at: t(50), ..base.clone() };
    assert_eq!(s.replace_challenge(&next).await.unwrap(), 1);
    assert_eq!(s.challenge("e1").await.unwrap().unwrap().expires_at, t(50));
    assert!(!s.use_challenge("e1", "t", "k", t(60)).await.unwrap(), "ended");
    assert!(s.use_challenge("e4", "t", "k", t(60)).await.unwrap(), "the new one stands");
    assert_eq!(s.challenge("e2").await.unwrap().unwrap().expires_at, t(1000));
    assert_eq!(s.challenge("e3").await.unwrap().unwrap().expires_at, t(1000));
    assert!(matches!(s.replace_challenge(&next).await, Err(StoreError::Duplicate(_))), "ids are unique");
    assert_eq!(s.challenge("e4").await.unwrap().unwrap().used_at, Some(t(60)), "a failed replace changes nothing");
    // A device with requests cannot be deleted; one without can, with what it reported.
    assert!(!s.delete_device("dev").await.unwrap());
    assert!(s.device("dev").await.unwrap().is_some());
    let spare = s.touch_device("spare", t(1)).await.unwrap();
    s.set_device_attributes(spare.id, &[("OSVersion".into(), "10.0".into())], t(1)).await.unwrap();
    assert!(s.delete_device("spare").await.unwrap());
    assert_eq!(s.device("spare").await.unwrap(), None);
    assert!(s.device_attributes(spare.id).await.unwrap().is_empty());
    assert!(!s.delete_device("spare").await.unwrap(), "already gone");
}

async fn acme_keys_accounts_orders_and_nonces(s: Store) {
    // A binding key is spent by the account it binds, once; an expired one binds nothing.
    s.insert_acme_eab_key("kid1", "web-team", t(DAY), t(0)).await.unwrap();
    s.insert_acme_eab_key("kid2", "web-team", t(10), t(0)).await.unwrap();
    assert!(matches!(s.insert_acme_eab_key("kid1", "other", t(DAY), t(0)).await, Err(StoreError::Duplicate(_))));
    let key = s.acme_eab_key("kid1").await.unwrap().unwrap();
    assert_eq!((key.account.as_str(), key.expires_at, key.used_at), ("web-team", t(DAY), None));
    assert!(s.acme_eab_key("nope").await.unwrap().is_none());
    let id = s.insert_acme_account("tp1", "{jwk1}", "web-team", "mailto:a@x", "kid1", t(5)).await.unwrap().unwrap();
    assert_eq!(s.acme_eab_key("kid1").await.unwrap().unwrap().used_at, Some(t(5)));
    assert_eq!(s.insert_acme_account("tp2", "{jwk2}", "web-team", "", "kid1", t(6)).await.unwrap(), None, "spent");
    assert_eq!(s.insert_acme_account("tp2", "{jwk2}", "web-team", "", "kid2", t(11)).await.unwrap(), None, "expired");
    s.insert_acme_eab_key("kid3", "web-team", t(DAY), t(0)).await.unwrap();
    assert!(matches!(
        s.insert_acme_account("tp1", "{jwk1}", "web-team", "", "kid3", t(7)).await,
        Err(StoreError::Duplicate(_))
    ));
    assert_eq!(s.acme_eab_key("kid3").await.unwrap().unwrap().used_at, None, "a failed registration spends nothing");
    let account = s.acme_account(id).await.unwrap().unwrap();
    assert_eq!(
        (account.thumbprint.as_str(), account.jwk.as_str(), account.eab_kid.as_str()),
        ("tp1", "{jwk1}", "kid1")
    );
    assert_eq!(s.acme_account_by_thumbprint("tp1").await.unwrap(), Some(account));
    assert!(s.acme_account_by_thumbprint("tp2").await.unwrap().is_none());
    assert!(s.acme_account(id + 100).await.unwrap().is_none());
    assert_eq!(s.acme_account(id).await.unwrap().unwrap().deactivated_at, None);

    // Orders change by compare-and-swap; the certificate serial, once set, stays.
    let order = s.insert_acme_order(id, "{\"v\":0}", t(DAY), t(10)).await.unwrap();
    let o = s.acme_order(order).await.unwrap().unwrap();
    assert_eq!((o.acme_account_id, o.revision, o.body.as_str(), o.certificate_serial), (id, 0, "{\"v\":0}", None));
    assert!(s.update_acme_order(order, 0, "{\"v\":1}", None, t(11)).await.unwrap());
    assert!(!s.update_acme_order(order, 0, "{\"v\":\"lost\"}", None, t(11)).await.unwrap(), "stale revision");
    assert!(s.update_acme_order(order, 1, "{\"v\":2}", Some("0a"), t(12)).await.unwrap());
    assert!(s.update_acme_order(order, 2, "{\"v\":3}", Some("0b"), t(13)).await.unwrap());
    let o = s.acme_order(order).await.unwrap().unwrap();
    assert_eq!((o.revision, o.body.as_str(), o.certificate_serial.as_deref()), (3, "{\"v\":3}", Some("0a")));
    assert_eq!((o.created_at, o.updated_at), (t(10), t(13)));
    assert_eq!(s.acme_order_by_serial("0a").await.unwrap().map(|o| o.id), Some(order));
    assert!(s.acme_order_by_serial("0b").await.unwrap().is_none());
    assert!(s.acme_order(order + 100).await.unwrap().is_none());
    let later = s.insert_acme_order(id, "{}", t(2 * DAY), t(14)).await.unwrap();
    let listed: Vec<i64> = s.acme_orders_of(id, t(20), 10).await.unwrap().iter().map(|o| o.id).collect();
    assert_eq!(listed, vec![later, order], "newest first");
    let listed: Vec<i64> = s.acme_orders_of(id, t(DAY + 1), 10).await.unwrap().iter().map(|o| o.id).collect();
    assert_eq!(listed, vec![later], "expired orders are left out");
    assert!(s.acme_orders_of(id + 100, t(20), 10).await.unwrap().is_empty());

    let second = s.insert_acme_account("tp3", "{jwk3}", "web-team", "", "kid3", t(8)).await.unwrap().unwrap();
    let listed: Vec<i64> = s.acme_accounts(10).await.unwrap().iter().map(|a| a.id).collect();
    assert_eq!(listed, vec![second, id], "newest first");
    assert_eq!(s.acme_accounts(1).await.unwrap().len(), 1);
    // Deactivation is final and happens once.
    assert!(s.deactivate_acme_account(id, t(20)).await.unwrap());
    assert!(!s.deactivate_acme_account(id, t(21)).await.unwrap());
    assert_eq!(s.acme_account(id).await.unwrap().unwrap().deactivated_at, Some(t(20)));

    // A nonce is spent once; expired ones are forgotten (their MAC says they are too old anyway).
    assert!(s.use_acme_nonce("n1", t(100), t(0)).await.unwrap());
    assert!(!s.use_acme_nonce("n1", t(100), t(1)).await.unwrap(), "replay");
    assert!(s.use_acme_nonce("n2", t(100), t(2)).await.unwrap());
    assert!(s.use_acme_nonce("n1", t(300), t(200)).await.unwrap(), "forgotten after it expired");
}

/// Every public `Store` method (in an `impl Store` block under `src/`) must be called by some
/// case above, written as a method call or a path call. Benchmark helpers (`bench_*`) and the
/// constructors used by the harness itself are exempt.
#[test]
fn every_public_store_method_has_a_conformance_case() {
    const EXEMPT: [&str; 3] = ["open", "sqlite_url", "backend"];
    let this = include_str!("conformance.rs");
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files: Vec<_> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    let mut methods = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let mut in_store = false;
        for line in text.lines() {
            if line.starts_with("impl") {
                in_store = line.starts_with("impl Store ") || line.starts_with("impl Store{");
            } else if line.starts_with('}') {
                in_store = false;
            } else if in_store {
                let l = line.trim_start();
                if let Some(rest) = l.strip_prefix("pub async fn ").or_else(|| l.strip_prefix("pub fn ")) {
                    let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                    if !name.starts_with("bench_") && !EXEMPT.contains(&name.as_str()) {
                        methods.push(name);
                    }
                }
            }
        }
    }
    // The scan itself must work: these are known to exist.
    for known in ["templates", "insert_request_with_intent", "renewals_per_minute", "use_challenge", "ca"] {
        assert!(methods.iter().any(|m| m == known), "{known} not found by the scan of {files:?}: {methods:?}");
    }
    // Calls in code only: a method named in a comment does not count as tested.
    let code: String = this
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .map(|l| l.split(" // ").next().unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let missing: Vec<&String> =
        methods.iter().filter(|m| !code.contains(&format!(".{m}(")) && !code.contains(&format!("::{m}("))).collect();
    assert!(missing.is_empty(), "public Store methods without a conformance case: {missing:?}");
}

async fn interrupted_requests_are_found_and_their_intents_abandoned(s: Store) {
    let dev = s.touch_device("dev-int", t(10)).await.unwrap();
    let new = |status| NewRequest {
        device_id: dev.id,
        requester: "acct",
        template: "A",
        kind: RequestKind::Enroll,
        status,
        csr_der: b"csr",
        previous_serial: None,
    };
    let intent = |serial| CertificateIntent {
        serial,
        request_id: 0,
        device_id: dev.id,
        template: "A",
        template_major: 1,
        template_minor: 0,
        subject: "CN=dev-int",
        not_before: t(10),
        not_after: t(100_000),
        previous_serial: None,
        renew_after: t(50_000),
    };
    let signing =
        s.insert_request_with_intent(&new(RequestStatus::Signing), &intent("0b01"), None, t(10)).await.unwrap();
    let received = s.insert_request(&new(RequestStatus::Received), None, t(20)).await.unwrap();
    let pending = s.insert_request(&new(RequestStatus::Pending), None, t(20)).await.unwrap();
    let recent = s.insert_request(&new(RequestStatus::Signing), None, t(500)).await.unwrap();
    let held: Vec<i64> =
        s.requests_with_status(RequestStatus::Pending, 10).await.unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(held, [pending]);
    assert_eq!(s.requests_with_status(RequestStatus::Signing, 1).await.unwrap().len(), 1, "limit");
    let found: Vec<i64> = s.interrupted_requests(t(400), 10).await.unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(found, [signing, received], "stale received/signing only; {pending} and {recent} are not");
    assert_eq!(s.interrupted_requests(t(400), 1).await.unwrap().len(), 1, "limit");
    assert_eq!(s.abandon_intents(signing, t(600)).await.unwrap(), ["0b01"]);
    let c = s.certificate("0b01").await.unwrap().unwrap();
    assert_eq!((c.state, c.revoked_at), (CertState::Revoked, Some(t(600))));
    assert!(s.abandon_intents(signing, t(700)).await.unwrap().is_empty(), "once");
    assert!(s.abandon_intents(received, t(700)).await.unwrap().is_empty(), "no intent");
    // What the device holds: a revoked intent is not held.
    assert!(s.templates_held(dev.id, t(700)).await.unwrap().is_empty());
    let live = s.insert_request_with_intent(&new(RequestStatus::Signing), &intent("0b02"), None, t(800)).await.unwrap();
    s.complete_certificate("0b02", live, "ab", b"der", t(801), None).await.unwrap();
    assert_eq!(s.templates_held(dev.id, t(900)).await.unwrap(), ["A"]);
    assert!(s.templates_held(dev.id, t(100_000)).await.unwrap().is_empty(), "expired");
}

async fn auth_failures_are_counted_locked_and_pruned(s: Store) {
    let key = "account:alice";
    assert_eq!(s.auth_locked_until(key, t(100)).await.unwrap(), None);
    for n in 1..=3 {
        assert_eq!(s.note_auth_failure(key, t(100 + n), 900).await.unwrap(), n);
    }
    // Concurrent failures are each counted once.
    let mut handles = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        handles.push(tokio::spawn(async move { s.note_auth_failure("account:alice", t(110), 900).await.unwrap() }));
    }
    let mut seen: Vec<i64> = Vec::new();
    for h in handles {
        seen.push(h.await.unwrap());
    }
    seen.sort();
    assert_eq!(seen, (4..=11).collect::<Vec<_>>());
    // A failure after the window starts a new one.
    assert_eq!(s.note_auth_failure(key, t(101 + 900), 900).await.unwrap(), 1);
    s.lock_auth(key, t(2000)).await.unwrap();
    assert_eq!(s.auth_locked_until(key, t(1500)).await.unwrap(), Some(t(2000)));
    assert_eq!(s.auth_locked_until(key, t(2000)).await.unwrap(), None, "the lock ends");
    assert_eq!(s.auth_locked_until("ip:192.0.2.1", t(1500)).await.unwrap(), None, "other keys are apart");
    assert!(s.clear_auth_failures(key).await.unwrap());
    assert!(!s.clear_auth_failures(key).await.unwrap());
    assert_eq!(s.note_auth_failure("ip:192.0.2.9", t(2500), 900).await.unwrap(), 1);
    assert_eq!(s.note_auth_failure("ip:192.0.2.9", t(2500), 900).await.unwrap(), 2);
    s.forgive_auth_attempt("ip:192.0.2.9").await.unwrap();
    assert_eq!(s.note_auth_failure("ip:192.0.2.9", t(2501), 900).await.unwrap(), 2, "one taken back");
    s.forgive_auth_attempt("ip:nobody").await.unwrap();
    assert_eq!(s.note_auth_failure("ip:192.0.2.1", t(3000), 900).await.unwrap(), 1);
    s.note_auth_failure("ip:192.0.2.2", t(5000), 900).await.unwrap();
    assert_eq!(s.prune_auth_failures(t(4000)).await.unwrap(), 2, "only the old, unlocked counters");
    assert_eq!(s.note_auth_failure("ip:192.0.2.2", t(5001), 900).await.unwrap(), 2, "the recent one stays");
}

async fn device_binding_and_groups(s: Store) {
    let dev = s.touch_device("web-1", t(10)).await.unwrap();
    assert_eq!(dev.owner, None, "a new device is bound to nobody");
    // The first binding wins; a second does not overwrite it.
    assert!(s.bind_device(dev.id, "account:ops").await.unwrap());
    assert!(!s.bind_device(dev.id, "account:mallory").await.unwrap());
    assert_eq!(s.device("web-1").await.unwrap().unwrap().owner.as_deref(), Some("account:ops"));
    // Concurrent first bindings: exactly one wins.
    let fresh = s.touch_device("web-2", t(10)).await.unwrap();
    let mut handles = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        handles.push(tokio::spawn(async move { s.bind_device(fresh.id, &format!("account:a{i}")).await.unwrap() }));
    }
    let mut wins = 0;
    for h in handles {
        wins += usize::from(h.await.unwrap());
    }
    assert_eq!(wins, 1);
    // An administrator rebinds or frees a device by name.
    assert!(s.set_device_owner("web-1", Some("admin")).await.unwrap());
    assert_eq!(s.device("web-1").await.unwrap().unwrap().owner.as_deref(), Some("admin"));
    assert!(s.set_device_owner("web-1", None).await.unwrap());
    assert_eq!(s.device("web-1").await.unwrap().unwrap().owner, None);
    assert!(!s.set_device_owner("nope", Some("admin")).await.unwrap());
    // Groups.
    assert!(s.add_device_to_group("dmz", dev.id).await.unwrap());
    assert!(!s.add_device_to_group("dmz", dev.id).await.unwrap(), "already in it");
    assert!(s.add_device_to_group("dmz", fresh.id).await.unwrap());
    assert!(s.add_device_to_group("all", dev.id).await.unwrap());
    assert_eq!(s.device_groups(dev.id).await.unwrap(), ["all", "dmz"]);
    let (with, groups) = s.device_with_groups("web-1").await.unwrap().unwrap();
    assert_eq!((with.id, groups), (dev.id, vec!["all".to_string(), "dmz".to_string()]));
    assert_eq!(with, s.device("web-1").await.unwrap().unwrap());
    assert!(s.device_with_groups("nope").await.unwrap().is_none());
    s.touch_device("loner", t(10)).await.unwrap();
    // Another spelling of a known name: case and trailing dots.
    assert_eq!(s.device_spelled_otherwise("WEB-1").await.unwrap().unwrap().name, "web-1");
    assert_eq!(s.device_spelled_otherwise("web-1.").await.unwrap().unwrap().name, "web-1");
    assert!(s.device_spelled_otherwise("web-1").await.unwrap().is_none(), "the same spelling");
    assert!(s.device_spelled_otherwise("web-10").await.unwrap().is_none());
    let (loner, none) = s.device_with_groups("loner").await.unwrap().unwrap();
    assert_eq!((loner.name.as_str(), none.len()), ("loner", 0), "a device in no group is still found");
    assert_eq!(s.device_group_members("dmz").await.unwrap(), ["web-1", "web-2"]);
    assert!(s.device_group_members("DMZ").await.unwrap().is_empty(), "names are exact");
    assert!(s.remove_device_from_group("dmz", dev.id).await.unwrap());
    assert!(!s.remove_device_from_group("dmz", dev.id).await.unwrap());
    assert_eq!(s.device_group_members("dmz").await.unwrap(), ["web-2"]);
    // Deleting a device (no history) takes it out of its groups.
    assert!(s.delete_device("web-2").await.unwrap());
    assert!(s.device_group_members("dmz").await.unwrap().is_empty());
    assert!(s.device_groups(fresh.id).await.unwrap().is_empty());
}

async fn one_successor_and_superseded_revocation(s: Store) {
    issue(&s, cert("dev1", "a0")).await;
    let renewal = Cert { previous: Some("a0"), at: T0 + 100, ..cert("dev1", "a1") };
    issue(&s, renewal).await;
    assert_eq!(state(&s, "a0").await, CertState::Renewed);
    // A second renewal of the same certificate cannot claim it: one certificate, one successor.
    let dev = s.device("dev1").await.unwrap().unwrap();
    let req = s
        .insert_request(
            &NewRequest {
                device_id: dev.id,
                requester: "ra",
                template: "A",
                kind: RequestKind::Renew,
                status: RequestStatus::Received,
                csr_der: b"csr",
                previous_serial: Some("a0"),
            },
            None,
            t(T0 + 150),
        )
        .await
        .unwrap();
    let second = CertificateIntent {
        serial: "a2",
        request_id: req,
        device_id: dev.id,
        template: "A",
        template_major: 1,
        template_minor: 0,
        subject: "CN=dev1",
        not_before: t(T0 + 150),
        not_after: t(T0 + 365 * DAY),
        previous_serial: Some("a0"),
        renew_after: t(T0 + 323 * DAY),
    };
    assert!(matches!(s.insert_certificate_intent(&second, t(T0 + 150)).await, Err(StoreError::Duplicate(_))));
    assert_eq!(s.certificate("a2").await.unwrap(), None, "nothing of the loser is left");
    assert_eq!(s.successor("a0").await.unwrap().unwrap().serial, "a1");
    // The successor's first use revokes its predecessor, once.
    assert!(s.mark_first_used("a1", t(T0 + 200)).await.unwrap());
    assert!(!s.mark_first_used("a1", t(T0 + 201)).await.unwrap(), "only the first use counts");
    assert_eq!(s.certificate("a1").await.unwrap().unwrap().first_used_at, Some(t(T0 + 200)));
    assert_eq!(s.revoke_predecessor("a1", t(T0 + 200)).await.unwrap().as_deref(), Some("a0"));
    assert_eq!(s.revoke_predecessor("a1", t(T0 + 201)).await.unwrap(), None, "already revoked");
    let a0 = s.certificate("a0").await.unwrap().unwrap();
    assert_eq!(
        (a0.state, a0.revoked_at, a0.revocation_reason),
        (CertState::Revoked, Some(t(T0 + 200)), Some(RevocationReason::Superseded))
    );
    assert_eq!(s.revoke_predecessor("a0", t(T0 + 202)).await.unwrap(), None, "a first certificate has none");
    // Unused successors: their predecessors go once the grace is over, not before; an
    // expired predecessor is left alone (it is off the CRL anyway).
    issue(&s, cert("dev2", "b0")).await;
    issue(&s, Cert { previous: Some("b0"), at: T0 + 1000, ..cert("dev2", "b1") }).await;
    issue(&s, Cert { not_after: T0 + 500, ..cert("dev3", "c0") }).await;
    issue(&s, Cert { previous: Some("c0"), at: T0 + 400, ..cert("dev3", "c1") }).await;
    assert!(s.revoke_superseded(t(T0 + 1000), t(T0 + 2000)).await.unwrap().is_empty(), "b1 is not older");
    assert_eq!(s.revoke_superseded(t(T0 + 1001), t(T0 + 2000)).await.unwrap(), ["b0"]);
    assert_eq!(state(&s, "c0").await, CertState::Renewed, "expired: left alone");
    assert!(s.revoke_superseded(t(T0 + 5000), t(T0 + 5000)).await.unwrap().is_empty(), "only once");
    // A successor that never went into service can be released (revoked as superseded, claim
    // dropped) so the certificate may be renewed again; a used one, or one too old, cannot.
    issue(&s, cert("dev4", "d0")).await;
    issue(&s, Cert { previous: Some("d0"), at: T0 + 100, ..cert("dev4", "d1") }).await;
    assert!(!s.release_successor("d0", "d1", t(T0), t(T0 + 101), t(T0 + 200)).await.unwrap(), "issued too long ago");
    assert!(!s.release_successor("x0", "d1", t(T0), t(T0), t(T0 + 200)).await.unwrap(), "not its successor");
    assert!(s.release_successor("d0", "d1", t(T0), t(T0), t(T0 + 200)).await.unwrap());
    let d1 = s.certificate("d1").await.unwrap().unwrap();
    assert_eq!((d1.state, d1.revocation_reason), (CertState::Revoked, Some(RevocationReason::Superseded)));
    assert_eq!(s.successor("d0").await.unwrap(), None, "the claim is free");
    assert!(!s.release_successor("d0", "d1", t(T0), t(T0), t(T0 + 201)).await.unwrap(), "only once");
    issue(&s, Cert { previous: Some("d0"), at: T0 + 300, ..cert("dev4", "d2") }).await;
    assert_eq!(s.successor("d0").await.unwrap().unwrap().serial, "d2");
    assert!(s.mark_first_used("d2", t(T0 + 400)).await.unwrap());
    assert!(!s.release_successor("d0", "d2", t(T0), t(T0), t(T0 + 500)).await.unwrap(), "in service");
    // An intent that never finished signing is released once stale, not before.
    issue(&s, cert("dev5", "e0")).await;
    record(&s, Cert { previous: Some("e0"), at: T0 + 100, ..cert("dev5", "e1") }).await;
    assert_eq!(s.successor("e0").await.unwrap().unwrap().state, CertState::Signing);
    assert!(!s.release_successor("e0", "e1", t(T0 + 100), t(T0), t(T0 + 200)).await.unwrap(), "still fresh");
    assert!(s.release_successor("e0", "e1", t(T0 + 101), t(T0), t(T0 + 500)).await.unwrap());
    assert_eq!(state(&s, "e1").await, CertState::Revoked);
    // Blocking revokes a device's certificates in every live state, a signature in flight too:
    // that one never goes live (its DER is kept for the record).
    issue(&s, cert("dev6", "f0")).await;
    issue(&s, Cert { previous: Some("f0"), at: T0 + 100, ..cert("dev6", "f1") }).await;
    let (dev6, req) = record(&s, Cert { previous: Some("f1"), at: T0 + 200, ..cert("dev6", "f2") }).await;
    issue(&s, Cert { not_after: T0 + 50, ..cert("dev6", "f9") }).await;
    let revoked = s.revoke_device_certificates(dev6, RevocationReason::KeyCompromise, t(T0 + 300)).await.unwrap();
    assert_eq!(revoked, ["f0", "f1", "f2"], "not the expired one");
    assert!(!s.complete_certificate("f2", req, "TP-f2", b"f2", t(T0 + 301), None).await.unwrap());
    let f2 = s.certificate("f2").await.unwrap().unwrap();
    assert_eq!((f2.state, f2.der.as_deref()), (CertState::Revoked, Some(&b"f2"[..])));
    assert_eq!(state(&s, "f1").await, CertState::Revoked, "not marked renewed by a dead successor");
    assert!(s.revoke_device_certificates(dev6, RevocationReason::KeyCompromise, t(T0 + 302)).await.unwrap().is_empty());
    // What a device holds, oldest first, in every state.
    let held = s.device_certificates(dev.id).await.unwrap();
    assert_eq!(serials(&held), ["a0", "a1"]);
    assert_eq!(held[0].state, CertState::Revoked);
}

async fn fleet_summary_counts_in_sql(s: Store) {
    let now = T0 + 10 * DAY;
    // Template A: one expiring in 3 days (renewal overdue), one in 20 days (renewal in 5 days),
    // one in 100 days; one expired, one revoked. Template B: one in 200 days, one signing.
    issue(&s, Cert { not_after: now + 3 * DAY, renew_after: now - DAY, ..cert("d1", "a1") }).await;
    issue(&s, Cert { not_after: now + 20 * DAY, renew_after: now + 5 * DAY + 60, ..cert("d1", "a2") }).await;
    issue(&s, Cert { not_after: now + 100 * DAY, renew_after: now + 80 * DAY, ..cert("d2", "a3") }).await;
    issue(&s, Cert { not_after: now - 1, renew_after: now - 2 * DAY, ..cert("d2", "a4") }).await;
    issue(&s, Cert { not_after: now + 50 * DAY, ..cert("d3", "a5") }).await;
    s.revoke_certificate("a5", RevocationReason::KeyCompromise, t(now - 5)).await.unwrap();
    issue(&s, Cert { template: "B", not_after: now + 200 * DAY, renew_after: now + 150 * DAY, ..cert("d3", "b1") })
        .await;
    record(&s, Cert { template: "B", ..cert("d3", "b2") }).await;
    s.set_device_state("d3", DeviceState::Blocked).await.unwrap();
    s.audit(&event(now - 2 * DAY, "renew", "a1", AuditOutcome::Refused, "old")).await.unwrap();
    s.audit(&event(now - 100, "renew", "a1", AuditOutcome::Refused, "x")).await.unwrap();
    s.audit(&event(now - 50, "renew", "a2", AuditOutcome::Refused, "y")).await.unwrap();
    s.audit(&event(now - 10, "issue", "a3", AuditOutcome::Issued, "")).await.unwrap();
    let f = s.fleet_summary(t(now), 52, 90).await.unwrap();
    assert_eq!((f.devices, f.blocked_devices), (3, 1));
    let st = |template: &str, state, expired, count| StateCount { template: template.into(), state, expired, count };
    let mut by_state = f.by_template_state.clone();
    by_state.sort_by_key(|c| (c.template.clone(), c.state.as_str(), c.expired));
    assert_eq!(
        by_state,
        vec![
            st("A", CertState::Issued, false, 3),
            st("A", CertState::Issued, true, 1),
            st("A", CertState::Revoked, false, 1),
            st("B", CertState::Issued, false, 1),
            st("B", CertState::Signing, false, 1),
        ]
    );
    let ac = |action: &str, outcome, count| ActionCount { action: action.into(), outcome, count };
    assert_eq!(
        f.last_day,
        vec![ac("issue", AuditOutcome::Issued, 1), ac("renew", AuditOutcome::Refused, 2)],
        "only the last 24 hours"
    );
    assert_eq!(
        f.expiring_by_week,
        vec![("A".into(), 0, 1), ("A".into(), 2, 1), ("A".into(), 14, 1), ("B".into(), 28, 1)]
    );
    assert_eq!(f.renewals_by_day, vec![(5, 1), (80, 1)], "b1 renews after the 90 days shown");
    assert_eq!((f.renewal_overdue, f.expiring_7d, f.expiring_30d), (1, 1, 2));
    assert_eq!(f.pending_requests, 0);
    // Stuck as `stuck` lists them: d2's a4 expired unrenewed (two days overdue); d1's a1 is
    // overdue by exactly a day, not more, until an hour later. Devices count once.
    assert_eq!(f.stuck_devices, 1);
    let later = s.fleet_summary(t(now + 3600), 52, 90).await.unwrap();
    assert_eq!(later.stuck_devices, 2);
    // "Expiring within 30 days" is what is still valid now: a4 expired already and is not in it.
    let within = |after: Option<i64>| CertificateFilter {
        expiring_before: Some(t(now + 30 * DAY)),
        expiring_after: after.map(t),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(serials(&s.certificates_matching(&within(None)).await.unwrap()), ["a4", "a1", "a2"]);
    assert_eq!(serials(&s.certificates_matching(&within(Some(now))).await.unwrap()), ["a1", "a2"]);
    let short = s.fleet_summary(t(now), 2, 5).await.unwrap();
    assert_eq!(short.expiring_by_week, vec![("A".into(), 0, 1)]);
    assert!(short.renewals_by_day.is_empty());
}

async fn device_search_and_state_filter(s: Store) {
    for name in ["web-01.example.com", "WEB-02.example.com", "db_1", "dbx1"] {
        s.touch_device(name, t(T0)).await.unwrap();
    }
    s.set_device_state("dbx1", DeviceState::Blocked).await.unwrap();
    let names = |f: DeviceFilter| {
        let s = &s;
        async move { s.devices_matching(t(T0), &f).await.unwrap().into_iter().map(|d| d.name).collect::<Vec<_>>() }
    };
    let f = |q: &str, blocked: Option<bool>| DeviceFilter { name_contains: q.into(), blocked, limit: 10 };
    assert_eq!(names(f("web", None)).await, ["WEB-02.example.com", "web-01.example.com"], "case-insensitive");
    assert_eq!(names(f("db_", None)).await, ["db_1"], "_ is literal, not a wildcard");
    assert!(names(f("%", None)).await.is_empty(), "% is literal");
    assert_eq!(names(f("", Some(true))).await, ["dbx1"]);
    assert_eq!(names(f("db", Some(false))).await, ["db_1"]);
    assert_eq!(names(DeviceFilter { limit: 2, ..Default::default() }).await.len(), 2);
}

async fn pool_connections_are_reported(s: Store) {
    s.touch_device("d", t(T0)).await.unwrap();
    let (open, idle) = s.pool_connections();
    assert!(open >= 1 && idle <= open, "{open} open, {idle} idle");
}

async fn audit_filter_by_actor_outcome_and_time(s: Store) {
    let mut by_admin = event(10, "cert.revoke", "s1", AuditOutcome::Ok, "");
    by_admin.actor = "admin:alice".into();
    s.audit(&by_admin).await.unwrap();
    let refused = event(20, "renew", "s1", AuditOutcome::Refused, "superseded");
    s.audit(&refused).await.unwrap();
    s.audit(&event(30, "issue", "s2", AuditOutcome::Issued, "")).await.unwrap();
    let get = |f: AuditFilter| {
        let s = &s;
        async move { s.audit_events(&AuditFilter { limit: 10, ..f }).await.unwrap() }
    };
    assert_eq!(get(AuditFilter { actor: Some("admin:alice".into()), ..Default::default() }).await, vec![by_admin]);
    assert_eq!(
        get(AuditFilter { outcome: Some(AuditOutcome::Refused), ..Default::default() }).await,
        vec![refused.clone()]
    );
    assert_eq!(get(AuditFilter { since: Some(t(20)), ..Default::default() }).await.len(), 2);
    assert_eq!(
        get(AuditFilter { since: Some(t(15)), subject: Some("s1".into()), ..Default::default() }).await,
        vec![refused]
    );
}

async fn online_backup_is_a_consistent_copy(s: Store) {
    issue(&s, cert("dev", "s1")).await;
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("backup.db");
    match s.backend() {
        Backend::Sqlite => {
            s.backup_to(&copy).await.unwrap();
            let restored = Store::open(&Store::sqlite_url(&copy)).await.unwrap();
            assert_eq!(restored.certificate("s1").await.unwrap().unwrap().serial, "s1");
            assert!(s.backup_to(&copy).await.is_err(), "an existing file is never overwritten");
        }
        Backend::Postgres => {
            let e = s.backup_to(&copy).await.unwrap_err().to_string();
            assert!(e.contains("pg_dump"), "{e}");
        }
    }
}

/// Many issuances at once (on SQLite they share group commits): every one recorded and
/// completed, and the one losing a successor race refused alone, nothing of it recorded.
async fn concurrent_issuances_commit_together_and_fail_alone(s: Store) {
    issue(&s, cert("dev0", "old")).await;
    let mut tasks = Vec::new();
    for i in 0..24 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let serial = format!("new{i}");
            // Two of them renew the same certificate: one successor only.
            let previous = (i < 2).then_some("old");
            let dev = s.touch_device(&format!("dev{}", i % 3), t(T0)).await.unwrap();
            let request = NewRequest {
                device_id: dev.id,
                requester: "ra",
                template: "A",
                kind: if previous.is_some() { RequestKind::Renew } else { RequestKind::Enroll },
                status: RequestStatus::Signing,
                csr_der: b"csr",
                previous_serial: previous,
            };
            let intent = CertificateIntent {
                serial: &serial,
                request_id: 0,
                device_id: dev.id,
                template: "A",
                template_major: 1,
                template_minor: 0,
                subject: "CN=x",
                not_before: t(T0),
                not_after: t(T0 + 365 * DAY),
                previous_serial: previous,
                renew_after: t(T0 + 300 * DAY),
            };
            let id = match s.insert_request_with_intent(&request, &intent, None, t(T0)).await {
                Ok(id) => id,
                Err(StoreError::Duplicate(_)) => return (serial, None),
                Err(e) => panic!("{e}"),
            };
            let live =
                s.complete_certificate(&serial, id, &thumbprint(&serial), serial.as_bytes(), t(T0 + 1), None).await;
            (serial, Some(live.unwrap()))
        }));
    }
    let mut refused = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            (serial, None) => refused.push(serial),
            (serial, Some(live)) => {
                assert!(live, "{serial}");
                assert_eq!(state(&s, &serial).await, CertState::Issued, "{serial}");
            }
        }
    }
    assert_eq!(refused.len(), 1, "one of the two renewals of `old` loses: {refused:?}");
    assert!(s.certificate(&refused[0]).await.unwrap().is_none(), "nothing of the loser is recorded");
    assert_eq!(state(&s, "old").await, CertState::Renewed);
    // A second completion of a live certificate is not live again.
    let c = s.certificate("new5").await.unwrap().unwrap();
    assert!(!s.complete_certificate("new5", c.request_id, "x", b"x", t(T0 + 2), None).await.unwrap());
}

async fn templates_are_cached_and_replicas_see_changes(s: Store) {
    let t1 = template("Cached", "1.3.6.1.4.1.311.21.8.9.1");
    s.insert_template(&t1).await.unwrap();
    // Another replica checks the database's version on every read; a third trusts its memory
    // for an hour.
    let checking = s.with_template_cache(std::time::Duration::ZERO);
    let trusting = s.with_template_cache(std::time::Duration::from_secs(3600));
    assert_eq!(checking.template("Cached").await.unwrap().unwrap().major, t1.major);
    assert_eq!(trusting.template("Cached").await.unwrap().unwrap().major, t1.major);
    let bumped = Template { major: t1.major + 1, ..t1.clone() };
    assert!(s.update_template(&bumped).await.unwrap());
    // This process's own write shows at once (its cache is forgotten), by name and by OID.
    assert_eq!(s.template("Cached").await.unwrap().unwrap().major, bumped.major);
    assert_eq!(s.template_by_oid(&t1.oid.to_string()).await.unwrap().unwrap().major, bumped.major);
    // Another replica sees it at its next version check; the trusting one still serves what
    // it read (the cache is really used), until its freshness runs out.
    assert_eq!(checking.template("Cached").await.unwrap().unwrap().major, bumped.major);
    assert_eq!(trusting.template("Cached").await.unwrap().unwrap().major, t1.major);
    // A template added elsewhere is found, in name order, with the invalid ones apart.
    s.insert_template(&template("Another", "1.3.6.1.4.1.311.21.8.9.2")).await.unwrap();
    let names: Vec<String> = checking.templates().await.unwrap().valid.into_iter().map(|t| t.name).collect();
    assert_eq!(names.iter().filter(|n| ["Another", "Cached"].contains(&n.as_str())).count(), 2);
    assert!(names.windows(2).all(|w| w[0] <= w[1]) || s.backend() == Backend::Postgres, "name order");
    assert!(checking.template("Nope").await.unwrap().is_none());
    assert!(checking.template_by_oid("1.2.3.4").await.unwrap().is_none());
}
