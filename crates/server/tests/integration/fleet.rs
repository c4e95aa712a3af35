//! Fleet operations on the inventory: devices and certificates listed and filtered, renewal
//! times spread, "renew now" for a cohort, the stuck report with its reason, and blocking a
//! device with its certificates revoked.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use crate::common;

use autoenroll_core::pki::CertFacts;
use autoenroll_core::UnixTime;
use autoenroll_keys::{build_csr, cn_name, KeyAlgorithm, KeyPair};
use autoenroll_server::ra::{CertState, CertificateFilter, DeviceState, RevocationReason, Window};
use common::{issue, TestServer};
use std::collections::HashMap;

fn new_csr(device: &str) -> Vec<u8> {
    let key = KeyPair::generate(KeyAlgorithm::P256).unwrap();
    build_csr(&key, cn_name(device).unwrap(), vec![]).unwrap()
}

fn filter() -> CertificateFilter {
    CertificateFilter { limit: 10_000, ..Default::default() }
}

#[tokio::test]
async fn inventory_cohorts_stuck_report_and_blocking() {
    let ts = TestServer::start().await;
    let mut certs = HashMap::new();
    for d in ["alpha", "beta", "gamma"] {
        certs.insert(d, issue(&ts.ra, d).await);
    }
    let devices = ts.ra.devices(100).await.unwrap();
    for d in ["alpha", "beta", "gamma"] {
        let s = devices.iter().find(|x| x.name == d).unwrap();
        assert_eq!(s.certificates, 1, "{s:?}");
        let f = CertFacts::parse(&certs[d]).unwrap();
        // The Machine template: one year, renewal in the last 6 weeks; the server's renewal time
        // lies in the first half of that window.
        let next = s.next_renewal.unwrap().0;
        let opens = f.not_after.0 - 42 * 86_400;
        assert!(next >= opens - 60 && next <= opens + 21 * 86_400, "{next} vs window opening {opens}");
    }
    // Filters: device, template, expiring within, state.
    let only_beta =
        ts.ra.certificates_matching(&CertificateFilter { devices: vec!["beta".into()], ..filter() }).await.unwrap();
    assert_eq!(only_beta.len(), 1);
    // A device list selects exactly those devices (and "alpha" does not match "alphabet").
    let mut two: Vec<String> = ts
        .ra
        .certificates_matching(&CertificateFilter { devices: vec!["alpha".into(), "gamma".into()], ..filter() })
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.device)
        .collect();
    two.sort();
    assert_eq!(two, ["alpha", "gamma"]);
    assert!(ts
        .ra
        .certificates_matching(&CertificateFilter { devices: vec!["alph".into()], ..filter() })
        .await
        .unwrap()
        .is_empty());
    let machine =
        ts.ra.certificates_matching(&CertificateFilter { template: Some("Machine".into()), ..filter() }).await.unwrap();
    assert_eq!(machine.len(), 3);
    let soon = ts
        .ra
        .certificates_matching(&CertificateFilter {
            expiring_before: Some(UnixTime(ts.now() + 30 * 86_400)),
            ..filter()
        })
        .await
        .unwrap();
    assert!(soon.iter().all(|c| c.template != "Machine"), "no Machine certificate expires this month");

    // Renewing early is refused... until the administrator says "renew now" for beta's cohort.
    let renew = |d: &'static str| {
        let ra = ts.ra.clone();
        let cert = certs[d].clone();
        async move { ra.renew_over_tls(&new_csr(d), &cert, Window::Autoenrollment).await }
    };
    assert_eq!(renew("alpha").await.unwrap_err().code(), "OutsideRenewalWindow");
    let moved = ts
        .ra
        .renew_now(autoenroll_server::ra::LOCAL_ADMIN, &CertificateFilter { devices: vec!["beta".into()], ..filter() })
        .await
        .unwrap();
    assert_eq!(moved, 1);
    renew("beta").await.unwrap();
    assert_eq!(renew("gamma").await.unwrap_err().code(), "OutsideRenewalWindow");

    // Past the renewal time by more than a day and still not renewed: stuck, with the reason.
    ts.clock.advance(360 * 86_400);
    ts.ra.set_device_state(autoenroll_server::ra::LOCAL_ADMIN, "gamma", DeviceState::Blocked).await.unwrap();
    assert_eq!(renew("gamma").await.unwrap_err().code(), "DeviceBlocked");
    let stuck = ts.ra.stuck(Some(86_400), 100).await.unwrap();
    let gamma = stuck.iter().find(|s| s.device == "gamma").expect("gamma is stuck");
    assert!(
        gamma.device_blocked && gamma.last_error.as_deref().unwrap_or("").starts_with("DeviceBlocked"),
        "{gamma:?}"
    );
    assert!(stuck.iter().any(|s| s.device == "alpha"), "alpha never renewed: {stuck:?}");
    assert!(stuck.iter().all(|s| s.serial != CertFacts::parse(&certs["beta"]).unwrap().serial.0), "beta renewed");

    // Blocking with revocation revokes what the device holds, and the CRL lists it.
    let n = ts
        .ra
        .block_and_revoke(autoenroll_server::ra::LOCAL_ADMIN, "alpha", RevocationReason::PrivilegeWithdrawn)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let revoked = ts
        .ra
        .certificates_matching(&CertificateFilter {
            devices: vec!["alpha".into()],
            state: Some(CertState::Revoked),
            ..filter()
        })
        .await
        .unwrap();
    assert_eq!(revoked.len(), 1);
    let crl = ts.ra.crl().await.unwrap();
    let serial_bytes = hex::decode(&revoked[0].serial).unwrap();
    assert!(crl.windows(serial_bytes.len()).any(|w| w == serial_bytes.as_slice()), "the CRL lists alpha's certificate");
}

/// Certificates issued at the same moment get different renewal minutes (core::spread with
/// capacity from the window's population).
#[tokio::test]
async fn renewal_times_are_spread() {
    let ts = TestServer::start().await;
    let mut minutes: HashMap<i64, u32> = HashMap::new();
    for i in 0..60 {
        issue(&ts.ra, &format!("spread-{i}")).await;
    }
    for c in
        ts.ra.certificates_matching(&CertificateFilter { template: Some("Machine".into()), ..filter() }).await.unwrap()
    {
        *minutes.entry(c.renew_after.unwrap().0 / 60).or_default() += 1;
    }
    let busiest = *minutes.values().max().unwrap();
    assert!(minutes.len() >= 55 && busiest <= 2, "60 certificates over {} minutes, busiest {busiest}", minutes.len());
}
