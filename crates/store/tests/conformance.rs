//! Store conformance: the behaviour every backend must show, run on SQLite and on a private
//! PostgreSQL cluster started by the test (Debian's `postgresql` package).
use autoenroll_store::*;

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = super::Store::open(&super::Store::sqlite_url(&dir.path().join("t.db"))).await.unwrap();
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
    tokens_are_consumed_once_and_expire,
    certificate_is_recorded_before_and_after_signing,
    settings_and_audit,
    renewal_chain_revocation_and_requests,
    challenges_are_spent_once_per_transaction,
);

fn template(name: &str, oid: &str) -> TemplateRow {
    TemplateRow {
        name: name.into(),
        oid: oid.into(),
        major: 100,
        minor: 0,
        description: "d".into(),
        validity_secs: 3600,
        renewal_secs: 600,
        key_algorithm: "p256".into(),
        min_key_bits: 256,
        key_usage: "digitalSignature".into(),
        ext_key_usage: "clientAuth".into(),
        subject_from: "identity".into(),
        allow_san: false,
        enroll: true,
        autoenroll: true,
        pend_all: false,
        same_key_renewal: false,
        superseded: String::new(),
        created_at: 1,
        updated_at: 1,
        renewal_grace_secs: 0,
        retry_interval_secs: 604_800,
    }
}

async fn templates_round_trip_and_unique(s: Store) {
    let t = template("A", "1.2.3");
    s.insert_template(&t).await.unwrap();
    assert_eq!(s.template("A").await.unwrap(), Some(t.clone()));
    assert_eq!(s.template_by_oid("1.2.3").await.unwrap(), Some(t.clone()));
    assert!(matches!(s.insert_template(&template("A", "1.2.4")).await, Err(StoreError::Duplicate(_))));
    assert!(matches!(s.insert_template(&template("B", "1.2.3")).await, Err(StoreError::Duplicate(_))));
    let mut t2 = t.clone();
    t2.major = 101;
    t2.pend_all = true;
    assert!(s.update_template(&t2).await.unwrap());
    assert_eq!(s.template("A").await.unwrap(), Some(t2));
    assert!(!s.update_template(&template("nope", "9.9")).await.unwrap());
}

async fn tokens_are_consumed_once_and_expire(s: Store) {
    let t = TokenRow {
        id: "tok1".into(),
        secret_hash: vec![1, 2, 3],
        device: "dev".into(),
        template: None,
        expires_at: 100,
        used_at: None,
        created_at: 1,
    };
    s.insert_token(&t).await.unwrap();
    assert_eq!(s.token("tok1").await.unwrap(), Some(t.clone()));
    // Concurrent consumers: exactly one wins.
    let results = futures_join(&s, "tok1", 50).await;
    assert_eq!(results.iter().filter(|r| **r).count(), 1);
    assert_eq!(s.token("tok1").await.unwrap().unwrap().used_at, Some(50));
    s.insert_token(&TokenRow { id: "tok2".into(), ..t }).await.unwrap();
    assert!(!s.consume_token("tok2", 100).await.unwrap(), "expired at 100");
}

async fn futures_join(s: &Store, id: &str, now: i64) -> Vec<bool> {
    let mut handles = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        let id = id.to_string();
        handles.push(tokio::spawn(async move { s.consume_token(&id, now).await.unwrap() }));
    }
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

async fn certificate_is_recorded_before_and_after_signing(s: Store) {
    let dev = s.touch_device("dev1", 10).await.unwrap();
    assert_eq!(s.touch_device("dev1", 20).await.unwrap().id, dev.id);
    // last_seen has a five-minute precision: no write for every request.
    assert_eq!(s.device("dev1").await.unwrap().unwrap().last_seen, 10);
    s.touch_device("dev1", 400).await.unwrap();
    assert_eq!(s.device("dev1").await.unwrap().unwrap().last_seen, 400);
    let req = s
        .insert_request(
            &NewRequest {
                device_id: dev.id,
                requester: "acct",
                template: "A",
                kind: "enroll",
                status: "received",
                csr_der: b"csr",
                previous_serial: None,
            },
            30,
        )
        .await
        .unwrap();
    s.insert_certificate_intent(
        &CertificateIntent {
            serial: "0a",
            request_id: req,
            device_id: dev.id,
            template: "A",
            template_major: 100,
            template_minor: 0,
            subject: "CN=dev1",
            not_before: 30,
            not_after: 3630,
            previous_serial: None,
            renew_after: 0,
        },
        30,
    )
    .await
    .unwrap();
    let c = s.certificate("0a").await.unwrap().unwrap();
    assert_eq!((c.state.as_str(), c.der.as_deref(), c.device.as_str()), ("signing", None, "dev1"));
    s.complete_certificate("0a", req, "ABCD", b"der", 31, None).await.unwrap();
    let c = s.certificate_by_thumbprint("ABCD").await.unwrap().unwrap();
    assert_eq!((c.state.as_str(), c.der.as_deref()), ("issued", Some(&b"der"[..])));
    assert_eq!(s.certificates(10).await.unwrap().len(), 1);
}

async fn settings_and_audit(s: Store) {
    assert_eq!(s.setting("k").await.unwrap(), None);
    s.set_setting("k", "v1").await.unwrap();
    s.set_setting("k", "v2").await.unwrap();
    assert_eq!(s.setting("k").await.unwrap().as_deref(), Some("v2"));
    let e = AuditEvent {
        at: 1,
        actor: "a".into(),
        action: "issue".into(),
        subject: "s".into(),
        outcome: "ok".into(),
        detail: "".into(),
    };
    s.audit(&e).await.unwrap();
    assert_eq!(s.audit_events(5).await.unwrap(), vec![e]);
}

async fn renewal_chain_revocation_and_requests(s: Store) {
    let dev = s.touch_device("dev1", 10).await.unwrap();
    for (i, prev) in [(0, None), (1, Some("s0"))] {
        let serial = format!("s{i}");
        let req = s
            .insert_request(
                &NewRequest {
                    device_id: dev.id,
                    requester: "r",
                    template: "A",
                    kind: if prev.is_some() { "renew" } else { "enroll" },
                    status: "received",
                    csr_der: b"csr",
                    previous_serial: prev,
                },
                20,
            )
            .await
            .unwrap();
        s.insert_certificate_intent(
            &CertificateIntent {
                serial: &serial,
                request_id: req,
                device_id: dev.id,
                template: "A",
                template_major: 1,
                template_minor: 0,
                subject: "CN=dev1",
                not_before: 20,
                not_after: 100,
                previous_serial: prev,
                renew_after: 0,
            },
            20,
        )
        .await
        .unwrap();
        s.complete_certificate(&serial, req, &format!("T{i}"), b"der", 21, None).await.unwrap();
        let r = s.request(req).await.unwrap().unwrap();
        assert_eq!((r.status.as_str(), r.previous_serial.as_deref(), r.device.as_str()), ("issued", prev, "dev1"));
    }
    assert_eq!(s.certificate("s0").await.unwrap().unwrap().state, "renewed");
    assert_eq!(s.certificate("s1").await.unwrap().unwrap().previous_serial.as_deref(), Some("s0"));
    assert_eq!(s.successor("s0").await.unwrap().unwrap().serial, "s1");
    // Filters and "renew now" behave the same on both backends, device lists included.
    let f = |device: &str| CertificateFilter { device: Some(device.into()), limit: 10, ..Default::default() };
    assert_eq!(s.certificates_matching(&f("dev1")).await.unwrap().len(), 2);
    assert_eq!(s.certificates_matching(&f("other,dev1")).await.unwrap().len(), 2);
    assert!(s.certificates_matching(&f("dev")).await.unwrap().is_empty());
    let issued = CertificateFilter { state: Some("issued".into()), ..f("dev1") };
    assert_eq!(s.certificates_matching(&issued).await.unwrap().len(), 1);
    assert_eq!(s.renew_now(&f("other,dev1"), 25).await.unwrap(), 0, "renew_after 0 is already due");
    assert!(s.successor("s1").await.unwrap().is_none());
    assert!(s.revoke_certificate("s1", "keyCompromise", 30).await.unwrap());
    assert!(!s.revoke_certificate("s1", "keyCompromise", 31).await.unwrap(), "only once");
    let c = s.certificate("s1").await.unwrap().unwrap();
    assert_eq!(
        (c.state.as_str(), c.revoked_at, c.revocation_reason.as_deref()),
        ("revoked", Some(30), Some("keyCompromise"))
    );
    assert!(s.set_device_blocked("dev1", true).await.unwrap());
    assert!(s.device("dev1").await.unwrap().unwrap().blocked);
    assert!(!s.set_device_blocked("nobody", true).await.unwrap());
    assert!(!s.transition_request(1, "pending", "issued", "", 40).await.unwrap(), "request 1 is not pending");
    assert!(s.transition_request(1, "issued", "denied", "test", 40).await.unwrap());
    let items = vec![("DeviceType".to_string(), "CIMClient_Windows".to_string()), ("OSVersion".into(), "10.0".into())];
    s.set_device_attributes(dev.id, &items, 50).await.unwrap();
    s.set_device_attributes(dev.id, &[("OSVersion".into(), "11.0".into())], 51).await.unwrap();
    assert_eq!(
        s.device_attributes(dev.id).await.unwrap(),
        vec![("DeviceType".to_string(), "CIMClient_Windows".to_string()), ("OSVersion".into(), "11.0".into())]
    );
}

async fn challenges_are_spent_once_per_transaction(s: Store) {
    let c = ChallengeRow {
        id: "ch1".into(),
        secret_hash: vec![9; 32],
        device: "dev".into(),
        template: "Machine".into(),
        subject: "CN=dev".into(),
        dns_names: "a.example,b.example".into(),
        ip_addrs: String::new(),
        min_key_bits: 2048,
        ext_key_usage: "clientAuth".into(),
        created_at: 1,
        expires_at: 100,
        used_at: None,
        used_transaction: None,
        used_key: None,
    };
    s.insert_challenge(&c).await.unwrap();
    assert_eq!(s.challenge("ch1").await.unwrap(), Some(c.clone()));
    // Eight concurrent transactions with different keys: exactly one spends it.
    let mut handles = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        handles.push(tokio::spawn(async move { s.use_challenge("ch1", &format!("t{i}"), &format!("k{i}"), 10).await }));
    }
    let mut winners = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        if h.await.unwrap().unwrap() {
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let w = winners[0];
    // The winner may retry (same transaction and key); nobody else, not even with its key.
    assert!(s.use_challenge("ch1", &format!("t{w}"), &format!("k{w}"), 20).await.unwrap());
    assert!(!s.use_challenge("ch1", &format!("t{w}"), "other-key", 20).await.unwrap());
    assert!(!s.use_challenge("ch1", "other", &format!("k{w}"), 20).await.unwrap());
    let used = s.challenge("ch1").await.unwrap().unwrap();
    assert_eq!(used.used_at, Some(10), "the first use is kept");
    // Expired: refused even for the winner.
    assert!(!s.use_challenge("ch1", &format!("t{w}"), &format!("k{w}"), 100).await.unwrap());
    s.insert_challenge(&ChallengeRow { id: "ch2".into(), ..c }).await.unwrap();
    assert!(!s.use_challenge("ch2", "t", "k", 100).await.unwrap(), "expired at 100");
    // Transactions remember their request.
    let dev = s.touch_device("dev", 1).await.unwrap();
    let req = s
        .insert_request(
            &NewRequest {
                device_id: dev.id,
                requester: "scep",
                template: "Machine",
                kind: "enroll",
                status: "pending",
                csr_der: b"csr",
                previous_serial: None,
            },
            1,
        )
        .await
        .unwrap();
    assert_eq!(s.scep_transaction("tx", "key").await.unwrap(), None);
    s.insert_scep_transaction("tx", "key", req, 2).await.unwrap();
    assert_eq!(s.scep_transaction("tx", "key").await.unwrap(), Some(req));
    assert_eq!(s.scep_transaction("tx", "other").await.unwrap(), None);
    // A device with requests cannot be deleted; one without can.
    assert!(!s.delete_device("dev").await.unwrap());
    s.touch_device("spare", 1).await.unwrap();
    assert!(s.delete_device("spare").await.unwrap());
    assert_eq!(s.device("spare").await.unwrap(), None);
}
