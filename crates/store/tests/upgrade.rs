//! Upgrading a database written before the trust model (schema version 8) to the current one:
//! what migration 0009 makes of existing templates, devices, certificates and accounts.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use autoenroll_core::model::{CertState, Eku, Grant, KeyFamily, RevocationReason};
use autoenroll_store::Store;
use std::borrow::Cow;

/// Statements in the version-8 schema (the shape older releases wrote).
const OLD_ROWS: &[&str] = &[
    "INSERT INTO templates (name, oid, major, minor, description, validity_secs, renewal_secs, key_algorithm, \
     min_key_bits, key_usage, ext_key_usage, subject_from, allow_san, enroll, autoenroll, pend_all, \
     same_key_renewal, superseded, created_at, updated_at, renewal_grace_secs, retry_interval_secs) VALUES \
     ('Machine', '1.3.6.1.4.1.311.21.8.1.1', 1, 0, '', 31536000, 3628800, 'p256', 2048, 'digitalSignature', \
      'clientAuth', 'identity', 0, 1, 1, 0, 0, '', 1, 1, 0, 604800), \
     ('WebServer', '1.3.6.1.4.1.311.21.8.1.2', 1, 0, '', 7776000, 2592000, 'p256', 2048, 'digitalSignature', \
      'serverAuth', 'request', 1, 1, 1, 0, 0, '', 1, 1, 0, 604800), \
     ('Legacy', '1.3.6.1.4.1.311.21.8.1.3', 1, 0, '', 7776000, 2592000, 'rsa2048', 1024, '', \
      '', 'identity', 0, 1, 1, 0, 0, '', 1, 1, 0, 604800)",
    "INSERT INTO accounts (name, password_hash, templates, disabled, created_at) VALUES ('ops', 'x', '', 0, 1)",
    "INSERT INTO devices (id, name, blocked, created_at, last_seen) VALUES \
     (1, 'by-account', 0, 1, 1), (2, 'by-token', 0, 1, 1), (3, 'by-static', 0, 1, 1), \
     (4, 'denied-first', 0, 1, 1), (5, 'never-issued', 0, 1, 1)",
    "INSERT INTO requests (id, device_id, requester, template, kind, status, csr_der, serial, detail, created_at, \
     updated_at) VALUES \
     (1, 1, 'account:ops', 'Machine', 'enroll', 'issued', {BLOB}, 'a0', '', 1, 1), \
     (2, 1, 'cert:a0', 'Machine', 'renew', 'issued', {BLOB}, 'a1', '', 2, 2), \
     (3, 1, 'cert:a0', 'Machine', 'renew', 'issued', {BLOB}, 'a2', '', 3, 3), \
     (4, 2, 'token:t1', 'Machine', 'enroll', 'issued', {BLOB}, 'b0', '', 1, 1), \
     (5, 3, 'scep:static', 'Machine', 'scep', 'issued', {BLOB}, 'c0', '', 1, 1), \
     (6, 4, 'account:mallory', 'Machine', 'enroll', 'denied', {BLOB}, NULL, '', 1, 1), \
     (7, 4, 'account:ops', 'Machine', 'enroll', 'issued', {BLOB}, 'd0', '', 2, 2), \
     (8, 5, 'account:ops', 'Machine', 'enroll', 'pending', {BLOB}, NULL, '', 1, 1)",
    // a0 was renewed twice (the old bug): both successors exist; the first one keeps the claim.
    "INSERT INTO certificates (serial, request_id, device_id, template, template_major, template_minor, subject, \
     thumbprint, not_before, not_after, state, der, created_at, previous_serial, revoked_at, revocation_reason, \
     renew_after) VALUES \
     ('a0', 1, 1, 'Machine', 1, 0, 'CN=by-account', 'T0', 1, 9999999999, 'renewed', {BLOB}, 1, NULL, NULL, NULL, 5), \
     ('a1', 2, 1, 'Machine', 1, 0, 'CN=by-account', 'T1', 2, 9999999999, 'issued', {BLOB}, 2, 'a0', NULL, NULL, 5), \
     ('a2', 3, 1, 'Machine', 1, 0, 'CN=by-account', 'T2', 3, 9999999999, 'issued', {BLOB}, 3, 'a0', NULL, NULL, 5), \
     ('b0', 4, 2, 'Machine', 1, 0, 'CN=by-token', 'T3', 1, 9999999999, 'revoked', {BLOB}, 1, NULL, 5, \
      'device blocked by admin', 5)",
];

#[tokio::test]
async fn a_version_8_sqlite_database_upgrades_to_the_trust_model() {
    let dir = tempfile::tempdir().unwrap();
    let url = Store::sqlite_url(&dir.path().join("old.db"));
    upgrade(&url, sqlx::migrate!("migrations/sqlite"), "x'00'").await;
}

#[tokio::test]
async fn a_version_8_postgres_database_upgrades_to_the_trust_model() {
    let pg = autoenroll_test_support::pg::PgCluster::start();
    upgrade(&pg.database("upgrade"), sqlx::migrate!("migrations/postgres"), "'\\x00'::bytea").await;
}

/// Writes the version-8 rows through version 8's migrations, opens the store (which runs the
/// rest), and checks what migration 0009 made of them.
async fn upgrade(url: &str, mut old: sqlx::migrate::Migrator, blob: &str) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    old.migrations = Cow::Owned(old.migrations.iter().filter(|m| m.version <= 8).cloned().collect());
    old.run(&pool).await.unwrap();
    for sql in OLD_ROWS {
        sqlx::query(sqlx::AssertSqlSafe(sql.replace("{BLOB}", blob))).execute(&pool).await.unwrap();
    }
    pool.close().await;

    let store = Store::open(url).await.unwrap();
    // Templates: the grants they effectively had; EC and RSA keys as before; what older versions
    // let through made valid where the intent is plain.
    let all = store.templates().await.unwrap();
    assert!(all.invalid.is_empty(), "{:?}", all.invalid);
    let t = |name: &str| all.valid.iter().find(|t| t.name == name).unwrap().clone();
    assert_eq!(t("Machine").grants, [Grant::AnyAccount, Grant::Token]);
    assert_eq!(t("WebServer").grants, [Grant::AnyAccount], "devices never got server certificates by default");
    assert_eq!(t("Machine").key.accept, [KeyFamily::Ec, KeyFamily::Rsa]);
    let legacy = t("Legacy");
    assert_eq!(legacy.ekus, [Eku::CLIENT_AUTH], "no EKU was any purpose: now client authentication");
    assert_eq!(legacy.key.min_rsa_bits, 2048);
    assert!(!legacy.key_usage.is_empty());
    // Devices: bound to the requester of their first issued request.
    let owner = |name: &str| {
        let store = store.clone();
        let name = name.to_string();
        async move { store.device(&name).await.unwrap().unwrap().owner }
    };
    assert_eq!(owner("by-account").await.as_deref(), Some("account:ops"));
    assert_eq!(owner("by-token").await.as_deref(), Some("admin"));
    assert_eq!(owner("by-static").await.as_deref(), Some("scep:static"), "a client-chosen name is nobody's word");
    assert_eq!(owner("denied-first").await.as_deref(), Some("account:ops"), "a denied request binds nothing");
    assert_eq!(owner("never-issued").await, None);
    // One claim per renewed certificate: the first successor holds it.
    assert_eq!(store.successor("a0").await.unwrap().unwrap().serial, "a1");
    // Free-text revocation reasons became RFC 5280 ones.
    let b0 = store.certificate("b0").await.unwrap().unwrap();
    assert_eq!((b0.state, b0.revocation_reason), (CertState::Revoked, Some(RevocationReason::Unspecified)));
    // Accounts: any device, no groups.
    let ops = store.account("ops").await.unwrap().unwrap();
    assert_eq!((ops.devices, ops.groups), (vec!["*".to_string()], vec![]));
}
