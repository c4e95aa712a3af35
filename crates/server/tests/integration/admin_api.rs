//! The admin REST API over HTTPS: bearer-token authentication (missing, wrong, revoked), and
//! the fleet operations with JSON in and out.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use crate::common;

use common::{issue, TestServer};

async fn call(
    ts: &TestServer,
    method: &str,
    path: &str,
    token: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let url = ts.url(path);
    let client = ts.client(None);
    let r = if method == "GET" {
        client.get_bearer(&url, token).await.unwrap()
    } else {
        client.post_bearer(&url, "application/json", serde_json::to_vec(&body).unwrap(), token).await.unwrap()
    };
    (r.status, serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn admin_api_answers_the_fleet_questions() {
    let ts = TestServer::start().await;
    let token = ts.ra.create_admin_token("ops").await.unwrap();
    for d in ["web1", "web2"] {
        issue(&ts.ra, d).await;
    }
    // Authentication.
    let (status, a) = call(&ts, "GET", "/admin/v1/devices", "", serde_json::Value::Null).await;
    assert_eq!((status, a["code"].as_str()), (401, Some("MissingToken")), "{a}");
    let forged = format!("{}x", &token[..token.len() - 2]);
    assert_eq!(call(&ts, "GET", "/admin/v1/devices", &forged, serde_json::Value::Null).await.0, 401);

    let (status, devices) = call(&ts, "GET", "/admin/v1/devices", &token, serde_json::Value::Null).await;
    assert_eq!(status, 200, "{devices}");
    assert!(devices.as_array().unwrap().iter().any(|d| d["name"] == "web1"));
    let (_, certs) = call(
        &ts,
        "GET",
        "/admin/v1/certificates?template=Machine&expiring_within=400d",
        &token,
        serde_json::Value::Null,
    )
    .await;
    assert_eq!(certs.as_array().unwrap().len(), 2, "{certs}");
    let (status, e) = call(&ts, "GET", "/admin/v1/certificates?nonsense=1", &token, serde_json::Value::Null).await;
    assert_eq!((status, e["code"].as_str()), (400, Some("BadParameter")));
    // A duration ending in a multi-byte character used to panic the old hand-written parser.
    let (status, e) =
        call(&ts, "GET", "/admin/v1/certificates?expiring_within=3%E2%82%AC", &token, serde_json::Value::Null).await;
    assert_eq!((status, e["code"].as_str()), (400, Some("BadParameter")), "{e}");
    let (status, e) = call(&ts, "GET", "/admin/v1/certificates?state=bogus", &token, serde_json::Value::Null).await;
    assert_eq!((status, e["code"].as_str()), (400, Some("BadParameter")), "{e}");

    let (_, moved) =
        call(&ts, "POST", "/admin/v1/certificates/renew-now", &token, serde_json::json!({ "device": "web1" })).await;
    assert_eq!(moved["moved"], 1, "{moved}");
    let (_, blocked) =
        call(&ts, "POST", "/admin/v1/devices/web2/block", &token, serde_json::json!({ "revoke": true })).await;
    assert_eq!((blocked["blocked"].as_bool(), blocked["revoked"].as_u64()), (Some(true), Some(1)), "{blocked}");
    let (_, show) = call(&ts, "GET", "/admin/v1/devices/web2", &token, serde_json::Value::Null).await;
    assert_eq!(show["device"]["blocked"], true);
    assert_eq!(show["certificates"][0]["state"], "revoked");
    let (_, t) = call(&ts, "POST", "/admin/v1/templates/Machine/bump-major", &token, serde_json::Value::Null).await;
    assert!(t["major"].as_i64().unwrap() >= 2, "{t}");
    let (status, _) = call(&ts, "GET", "/admin/v1/reports/stuck?overdue=1d", &token, serde_json::Value::Null).await;
    assert_eq!(status, 200);
    let (_, audit) = call(&ts, "GET", "/admin/v1/audit?action=cert.revoke", &token, serde_json::Value::Null).await;
    assert!(
        audit.as_array().unwrap().iter().all(|e| e["action"] == "cert.revoke") && !audit.as_array().unwrap().is_empty()
    );
    // Attack (issue 12, finding 9): admin actions were audited as "admin" whoever did them;
    // they carry the token's name.
    assert!(audit.as_array().unwrap().iter().all(|e| e["actor"] == "admin:ops"), "{audit}");
    let (_, blocks) = call(&ts, "GET", "/admin/v1/audit?action=device.block", &token, serde_json::Value::Null).await;
    assert_eq!(blocks[0]["actor"], "admin:ops", "{blocks}");
    let r = ts
        .client(None)
        .post_bearer(
            &ts.url("/admin/v1/certificates/renew-now"),
            "application/json",
            b"{\"devise\": 1".to_vec(),
            &token,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("BadJson"));
    let (status, e) =
        call(&ts, "POST", "/admin/v1/certificates/renew-now", &token, serde_json::json!({ "devise": "web1" })).await;
    assert_eq!((status, e["code"].as_str()), (400, Some("BadJson")), "unknown fields are refused: {e}");
    let (status, e) = call(&ts, "POST", "/admin/v1/devices/nobody/block", &token, serde_json::json!({})).await;
    assert_eq!((status, e["code"].as_str()), (404, Some("UnknownDevice")));

    // A revoked token stops working.
    ts.ra.revoke_admin_token("ops").await.unwrap();
    assert_eq!(call(&ts, "GET", "/admin/v1/devices", &token, serde_json::Value::Null).await.0, 401);
}
