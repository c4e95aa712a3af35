//! Templates are validated where they are made, with the field named; a stored template that no
//! longer validates (written by an older version, or by hand) is reported and left out of
//! policy instead of breaking GetPolicies for every client, and requests for it are refused
//! with their own reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use crate::common;

use autoenroll_core::model::{Eku, KeyUsage};
use autoenroll_proto::{ns, wstep, xcep};
use autoenroll_server::ra::{RaError, TemplateSpec};
use common::{account, subcode, TestServer};

fn refusal(e: RaError) -> String {
    format!("{}: {}", e.code(), e.detail())
}

#[tokio::test]
async fn invalid_input_is_refused_by_field() {
    let s = TestServer::start().await;
    let cases: [(TemplateSpec, &str); 10] = [
        // const-oid cannot encode a first arc of 7: the old digits-and-dots check let it through,
        // and the template then broke GetPolicies for everyone.
        (TemplateSpec { ext_key_usage: Some("7.1".into()), ..Default::default() }, "eku"),
        (TemplateSpec { ext_key_usage: Some("2.5.29.37.0".into()), ..Default::default() }, "eku"),
        (TemplateSpec { key_usage: Some("keyCertSign".into()), ..Default::default() }, "key_usage"),
        (TemplateSpec { key_algorithm: Some("rsa1024".into()), ..Default::default() }, "key_algorithm"),
        (TemplateSpec { min_key_bits: Some(1024), ..Default::default() }, "min_key_bits"),
        (TemplateSpec { superseded: Some("Bad Name".into()), ..Default::default() }, "supersedes"),
        // No EKU at all would be good for every purpose, server authentication included.
        (TemplateSpec { ext_key_usage: Some("".into()), ..Default::default() }, "eku"),
        (TemplateSpec { key_types: Some("rsa".into()), ..Default::default() }, "key_types"),
        (TemplateSpec { dns_suffixes: Some("*.example.test".into()), ..Default::default() }, "dns_suffixes"),
        (TemplateSpec { grants: Some("account:*,everyone".into()), ..Default::default() }, "grants"),
    ];
    for (spec, field) in cases {
        let e = refusal(s.ra.create_template("T", &spec).await.unwrap_err());
        assert!(e.starts_with(&format!("InvalidTemplate: invalid template: {field}:")), "{field}: {e}");
    }
    let e = refusal(s.ra.create_template("../evil", &TemplateSpec::default()).await.unwrap_err());
    assert!(e.starts_with("InvalidTemplate: invalid template: name:"), "{e}");
    let e = refusal(
        s.ra.update_template(
            autoenroll_server::ra::LOCAL_ADMIN,
            "Machine",
            &TemplateSpec { validity_secs: Some(0), ..Default::default() },
        )
        .await
        .unwrap_err(),
    );
    assert!(e.starts_with("InvalidTemplate: invalid template: validity:"), "{e}");
    assert!(s.ra.templates().await.unwrap().valid.iter().all(|t| t.name != "T"), "nothing was stored");
}

#[tokio::test]
async fn a_stored_template_that_no_longer_validates_is_left_out_not_fatal() {
    let s = TestServer::start().await;
    // A row as an older version or a hand edit could have left it: valid in shape, invalid by
    // today's rules (a CA key usage on an end-entity template).
    let store =
        autoenroll_store::Store::open(&autoenroll_store::Store::sqlite_url(&s.dir.path().join("data/autoenroll.db")))
            .await
            .unwrap();
    let mut legacy = s.ra.template("Machine").await.unwrap();
    legacy.name = "Legacy".into();
    legacy.oid = "1.3.6.1.4.1.311.21.8.99.1".parse().unwrap();
    legacy.key_usage = vec![KeyUsage::KeyCertSign];
    legacy.ekus = vec![Eku::CLIENT_AUTH];
    store.insert_template(&legacy).await.unwrap();

    // GetPolicies still answers every client, without it.
    let (status, env) = s.soap(ns::ACTION_GET_POLICIES, &account(), xcep::request_body(None), None).await;
    assert_eq!(status, 200);
    let names: Vec<String> =
        xcep::parse_response(&env.body).unwrap().policies.into_iter().map(|p| p.common_name).collect();
    assert_eq!(names, ["Machine", "WebServer"]);
    let all = s.ra.templates().await.unwrap();
    assert_eq!(all.invalid.len(), 1);
    assert!(all.invalid[0].name == "Legacy" && all.invalid[0].reason.contains("key_usage"), "{:?}", all.invalid);

    // A request for it is refused with its own reason.
    let key = autoenroll_keys::KeyPair::generate(autoenroll_keys::KeyAlgorithm::P256).unwrap();
    let csr = autoenroll_keys::build_csr(&key, autoenroll_keys::cn_name("dev1").unwrap(), vec![]).unwrap();
    let body = wstep::issue_request_body(&csr, &[("CertificateTemplate", "Legacy")]);
    let (status, env) = s.soap(ns::ACTION_WSTEP, &account(), body, None).await;
    assert_eq!(subcode(status, &env), "ae:TemplateMisconfigured");
}
