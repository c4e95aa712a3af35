//! Requests caught mid-way (issue 14, finding 4): a poller during an approval hears "pending",
//! never an error; a process that dies while approving or signing leaves nothing stuck — the
//! reconciler puts approvals back, denies interrupted issuances and revokes their intents.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use crate::common;

use autoenroll_core::model::{RequestKind, RequestStatus};
use autoenroll_core::UnixTime;
use autoenroll_keys::{build_csr, cn_name, KeyAlgorithm, KeyPair};
use autoenroll_proto::{ns, wstep};
use autoenroll_server::ra::{TemplateSpec, LOCAL_ADMIN};
use autoenroll_store::{CertificateIntent, NewRequest, Store};
use common::*;

async fn store_of(s: &TestServer) -> Store {
    Store::open(&Store::sqlite_url(&s.dir.path().join("data/autoenroll.db"))).await.unwrap()
}

async fn held_request(s: &TestServer, cn: &str) -> String {
    let key = KeyPair::generate(KeyAlgorithm::P256).unwrap();
    let csr = build_csr(&key, cn_name(cn).unwrap(), vec![]).unwrap();
    let (status, env) = s.soap(ns::ACTION_WSTEP, &account(), wstep::issue_request_body(&csr, &[]), None).await;
    assert_eq!(status, 200);
    let r = wstep::parse_response(&env.body).unwrap();
    assert_eq!(r.disposition.as_deref(), Some("Taken Under Submission"));
    r.request_id.unwrap()
}

#[tokio::test]
async fn polling_during_an_approval_hears_pending() {
    let s = TestServer::start().await;
    let held = TemplateSpec { pend_all: Some(true), ..Default::default() };
    s.ra.update_template(LOCAL_ADMIN, "Machine", &held).await.unwrap();
    let id = held_request(&s, "poller").await;
    // The approval queue shows it (`server request list`).
    let queue = s.ra.requests(RequestStatus::Pending, 10).await.unwrap();
    assert_eq!(
        queue.iter().map(|r| (r.id.to_string(), r.device.as_str())).collect::<Vec<_>>(),
        [(id.clone(), "enroller")],
        "the account's own device"
    );
    // The moment approve has taken the request (received) and is signing it.
    let store = store_of(&s).await;
    let now = UnixTime(s.now());
    assert!(store
        .transition_request(id.parse().unwrap(), RequestStatus::Pending, RequestStatus::Received, "approved", now)
        .await
        .unwrap());
    for _ in 0..3 {
        let (status, env) = s.soap(ns::ACTION_WSTEP, &account(), wstep::query_request_body(&id), None).await;
        assert_eq!(status, 200, "a poller during approval is not refused: {:?}", env.body);
        let r = wstep::parse_response(&env.body).unwrap();
        assert_eq!(r.disposition.as_deref(), Some("Taken Under Submission"));
    }
}

#[tokio::test]
async fn interrupted_approvals_and_signatures_are_finished() {
    let s = TestServer::start().await;
    let held = TemplateSpec { pend_all: Some(true), ..Default::default() };
    s.ra.update_template(LOCAL_ADMIN, "Machine", &held).await.unwrap();
    let approving: i64 = held_request(&s, "approve-died").await.parse().unwrap();
    let store = store_of(&s).await;
    let long_ago = UnixTime(s.now() - 3600);
    // 1. An approval that died after taking the request.
    store
        .transition_request(approving, RequestStatus::Pending, RequestStatus::Received, "approved", long_ago)
        .await
        .unwrap();
    // 2. A direct issuance whose signer died after recording request and intent.
    let device = store.touch_device("sign-died", long_ago).await.unwrap();
    let signing = store
        .insert_request_with_intent(
            &NewRequest {
                device_id: device.id,
                requester: "account:enroller",
                template: "Machine",
                kind: RequestKind::Enroll,
                status: RequestStatus::Signing,
                csr_der: &[],
                previous_serial: None,
            },
            &CertificateIntent {
                serial: "7a11ed0f5e21a1",
                request_id: 0,
                device_id: device.id,
                template: "Machine",
                template_major: 1,
                template_minor: 0,
                subject: "CN=sign-died",
                not_before: long_ago,
                not_after: UnixTime(long_ago.0 + 86_400 * 365),
                previous_serial: None,
                renew_after: UnixTime(long_ago.0 + 86_400 * 300),
            },
            None,
            long_ago,
        )
        .await
        .unwrap();
    // A fresh one (a live replica's work in progress) is left alone.
    let fresh: i64 = held_request(&s, "in-progress").await.parse().unwrap();
    store
        .transition_request(fresh, RequestStatus::Pending, RequestStatus::Received, "approved", UnixTime(s.now()))
        .await
        .unwrap();

    assert_eq!(s.ra.reconcile_interrupted().await.unwrap(), 2);
    assert_eq!(store.request(approving).await.unwrap().unwrap().status, RequestStatus::Pending);
    let denied = store.request(signing).await.unwrap().unwrap();
    assert_eq!(denied.status, RequestStatus::Denied);
    assert!(denied.detail.contains("interrupted"), "{}", denied.detail);
    assert_eq!(store.request(fresh).await.unwrap().unwrap().status, RequestStatus::Received);
    // The intent that may have been signed is revoked and on the CRL.
    let intent = store.certificate("7a11ed0f5e21a1").await.unwrap().unwrap();
    assert_eq!(intent.state.to_string(), "revoked");
    let crl = s.ra.crl().await.unwrap();
    assert!(crl.windows(7).any(|w| w == hex::decode("7a11ed0f5e21a1").unwrap().as_slice()), "on the CRL");
    let events =
        s.ra.audit_events(&autoenroll_server::ra::AuditFilter { limit: 20, ..Default::default() }).await.unwrap();
    assert_eq!(events.iter().filter(|e| e.action == "request.interrupted").count(), 2);
    // The approval can be made again; a second pass finds nothing.
    s.ra.approve(LOCAL_ADMIN, approving).await.unwrap();
    assert_eq!(s.ra.reconcile_interrupted().await.unwrap(), 0);
}
