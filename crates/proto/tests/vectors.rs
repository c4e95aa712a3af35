//! Golden vectors: real MS-XCEP / MS-WSTEP messages from the specifications and from fleet's
//! Windows MDM test client (copied under testdata/ms; see its README for provenance).
#![allow(clippy::unwrap_used, clippy::expect_used)]
use autoenroll_proto::wstep::{self, RequestType};
use autoenroll_proto::{ns, pkcs7, soap, xcep};
use std::path::PathBuf;

fn vector(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/ms").join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn xcep_get_policies_requests_parse() {
    for (file, has_last_update) in [
        ("xcep-spec-4.1.1.1-getpolicies-request.xml", true),
        // The spec's own sample carries an invalid date: it must read as "absent".
        ("xcep-spec-4.1.2.1-getpolicies-request-lastupdate.xml", false),
        ("mde2-spec-4.2.1.3-getpolicies-request-onpremise.xml", false),
        ("fleet-mdmtest-getpolicies-request.xml", false),
    ] {
        let env = soap::parse_envelope(&vector(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(env.action, ns::ACTION_GET_POLICIES, "{file}");
        let req = xcep::parse_request(&env.body).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(req.last_update.is_some(), has_last_update, "{file}");
    }
    let env = soap::parse_envelope(&vector("xcep-spec-4.1.1.1-getpolicies-request.xml")).unwrap();
    assert_eq!(xcep::parse_request(&env.body).unwrap().last_update.as_deref(), Some("0001-01-01T00:00:00"));
}

#[test]
fn xcep_spec_not_changed_response_parses() {
    let env = soap::parse_envelope(&vector("xcep-spec-4.1.2.2-getpolicies-response-notchanged.xml")).unwrap();
    let r = xcep::parse_response(&env.body).unwrap();
    assert!(r.policies_not_changed);
    assert!(r.policies.is_empty() && r.cas.is_empty() && r.oids.is_empty());
}

/// MS-XCEP 4.1.1.2: the spec's CA lists its endpoints with Kerberos (2), username/password (4)
/// and certificate (8) authentication.
#[test]
fn xcep_spec_response_names_its_endpoint_authentication() {
    use xcep::ClientAuthentication as A;
    // The published sample elides the middle of its base64 values ("…"): make them whole.
    let xml = String::from_utf8(vector("xcep-spec-4.1.1.2-getpolicies-response.xml")).unwrap();
    let xml: String =
        xml.lines().map(|l| if l.contains('…') { "AAAA\n".to_string() } else { format!("{l}\n") }).collect();
    let env = soap::parse_envelope(xml.as_bytes()).unwrap();
    let r = xcep::parse_response(&env.body).unwrap();
    let mut auths: Vec<A> = r.cas.iter().flat_map(|c| c.uris.iter().map(|u| u.client_authentication)).collect();
    auths.sort_by_key(|a| a.value());
    assert_eq!(auths, [A::Kerberos, A::UsernamePassword, A::Certificate]);
    assert_eq!(A::from_value(16), A::Other(16), "an unknown value is kept, not an error");
}

#[test]
fn wstep_issue_request_parses() {
    let env = soap::parse_envelope(&vector("wstep-spec-4.1.1.1-issue-request.xml")).unwrap();
    assert_eq!(env.action, ns::ACTION_WSTEP);
    let rst = wstep::parse_request(&env.body).unwrap();
    assert_eq!(rst.request_type, RequestType::Issue);
    let token = rst.token.unwrap();
    // Verified in the vector README: a bare 1040-byte PKCS#10 although the ValueType says PKCS7.
    assert_eq!(token.der.len(), 1040);
    assert_eq!(token.der[0], 0x30);
}

#[test]
fn wstep_other_request_types_parse() {
    let env = soap::parse_envelope(&vector("wstep-spec-4.1.3.1-querytokenstatus-request.xml")).unwrap();
    let rst = wstep::parse_request(&env.body).unwrap();
    assert_eq!(rst.request_type, RequestType::QueryTokenStatus);
    assert_eq!(rst.request_id.as_deref(), Some("65"));
    assert!(rst.token.is_none());

    let env = soap::parse_envelope(&vector("wstep-spec-4.1.2.1-ket-request.xml")).unwrap();
    assert_eq!(env.action, ns::ACTION_KET);
    assert_eq!(wstep::parse_request(&env.body).unwrap().request_type, RequestType::Ket);

    // The renewal sample is an Issue whose token is a CMS SignedData (5156 bytes).
    let env = soap::parse_envelope(&vector("wstep-spec-4.1.5.1-renewal-request.xml")).unwrap();
    let rst = wstep::parse_request(&env.body).unwrap();
    assert_eq!(rst.request_type, RequestType::Issue);
    let der = rst.token.unwrap().der;
    assert_eq!(der.len(), 5156);
    assert_eq!(pkcs7::certificates(&der).unwrap().len(), 1, "the old certificate travels in the SignedData");
}

#[test]
fn fleet_windows_mdm_enroll_request_parses() {
    let env = soap::parse_envelope(&vector("fleet-mdmtest-rst-enroll-request.xml")).unwrap();
    match &env.token {
        soap::HeaderToken::Binary { value_type, value } => {
            assert_eq!(value_type, ns::VALUE_TYPE_BOOTSTRAP_TOKEN);
            assert_eq!(value, b"PLACEHOLDER-OPAQUE-TOKEN");
        }
        other => panic!("unexpected header token {other:?}"),
    }
    let rst = wstep::parse_request(&env.body).unwrap();
    assert_eq!(rst.request_type, RequestType::Issue);
    assert_eq!(rst.context_value("DeviceType"), Some("CIMClient_Windows"));
    assert_eq!(rst.context_value("enrollmenttype"), Some("Full"), "names match case-insensitively");
    assert_eq!(rst.token.unwrap().der[0], 0x30);
}

#[test]
fn spec_responses_parse_with_the_client_parser() {
    let env = soap::parse_envelope(&vector("wstep-spec-4.1.1.2-issue-response.xml")).unwrap();
    let r = wstep::parse_response(&env.body).unwrap();
    assert_eq!(r.certificate_der.unwrap().len(), 1682);
    assert_eq!(r.request_id.as_deref(), Some("61"));
    assert_eq!(r.disposition.as_deref(), Some("Issued"));
    assert_eq!(pkcs7::certificates(&r.chain_pkcs7_der.unwrap()).unwrap().len(), 3, "root, sub-CA and leaf");

    let env = soap::parse_envelope(&vector("wstep-spec-4.1.4.2-fault-response.xml")).unwrap();
    let f = soap::parse_fault(&env).expect("a fault");
    assert!(f.reason.contains("internal error"), "{}", f.reason);
}

#[test]
fn our_responses_parse_back() {
    let leaf = vector("wstep-spec-4.1.1.2-issue-response.xml");
    let env = soap::parse_envelope(&leaf).unwrap();
    let spec = wstep::parse_response(&env.body).unwrap();
    let cert = spec.certificate_der.unwrap();
    let chain = pkcs7::certs_only(&[&cert]).unwrap();
    let ours = wstep::IssuedResponse {
        certificate_der: cert.clone(),
        chain_pkcs7_der: chain.clone(),
        request_id: 4_000_000_000,
    };
    let env = soap::parse_envelope(ours.to_envelope(Some("urn:uuid:x")).as_bytes()).unwrap();
    assert_eq!(env.action, ns::ACTION_WSTEP_RESPONSE);
    let back = wstep::parse_response(&env.body).unwrap();
    assert_eq!(back.certificate_der, Some(cert));
    assert_eq!(back.chain_pkcs7_der, Some(chain));
    assert_eq!(back.request_id.as_deref(), Some("4000000000"));

    let policy = xcep::GetPoliciesResponse {
        policy_id: "{p}".into(),
        policy_friendly_name: None,
        next_update_hours: 8,
        policies_not_changed: false,
        policies: vec![xcep::Policy {
            oid_reference: 1,
            ca_references: vec![0],
            common_name: "Machine & Co".into(),
            policy_schema: 2,
            validity_seconds: 31_536_000,
            renewal_seconds: 3_628_800,
            enroll: true,
            auto_enroll: true,
            minimal_key_length: 256,
            algorithm_oid_reference: Some(2),
            major_revision: 3,
            minor_revision: 1,
            superseded: vec!["Old".into()],
            enrollment_flags: 0x20,
            extensions: vec![xcep::PolicyExtension { oid_reference: 3, critical: false, value_der: vec![0x30, 0x00] }],
            ..Default::default()
        }],
        cas: vec![xcep::Ca {
            uris: vec![xcep::CaUri {
                client_authentication: autoenroll_proto::xcep::ClientAuthentication::UsernamePassword,
                uri: "https://x/wstep".into(),
                priority: 1,
                renewal_only: false,
            }],
            certificate_der: vec![1, 2, 3],
            enroll_permission: true,
            reference_id: 0,
        }],
        oids: vec![xcep::Oid { value: "1.2.3".into(), group: 9, reference_id: 1, default_name: "Machine".into() }],
    };
    let env = soap::parse_envelope(policy.to_envelope(None).as_bytes()).unwrap();
    assert_eq!(xcep::parse_response(&env.body).unwrap(), policy);
}

// ---- MS-MDE2 and the MDM "Certificate Renewal" document

/// Spec samples carry placeholders where base64 goes; put real bytes there first.
fn with_token(xml: &[u8], placeholder: &str, der: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(xml.to_vec()).unwrap();
    assert!(text.contains(placeholder), "placeholder {placeholder} not found");
    text.replace(placeholder, &autoenroll_proto::b64::encode(der)).into_bytes()
}

#[test]
fn mde2_discovery_requests_and_response_parse() {
    for file in ["mde2-spec-4.1.1.3-discover-request-onpremise.xml", "fleet-mdmtest-discover-request.xml"] {
        let env = soap::parse_envelope(&vector(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(env.action, ns::ACTION_DISCOVER, "{file}");
        let d = autoenroll_proto::mde2::parse_discover(&env.body).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(d.auth_policies.iter().any(|p| p == "OnPremise" || p == "Federated"), "{file}: {d:?}");
    }
    let env = soap::parse_envelope(&vector("mde2-spec-4.1.2.3-discover-response-onpremise.xml")).unwrap();
    let r = autoenroll_proto::mde2::parse_discover_response(&env.body).unwrap();
    assert_eq!(r.auth_policy, "OnPremise");
    assert!(r.enrollment_url.starts_with("https://enrolltest.contoso.com/"));
}

#[test]
fn mde2_enrollment_and_renewal_requests_parse() {
    // Any DER SEQUENCE will do for the structure; the server checks the content.
    let der = [0x30, 0x03, 0x02, 0x01, 0x00];
    let xml = with_token(
        &vector("mde2-spec-4.3.1.4-rst-request-onpremise.xml"),
        "DER format PKCS#10 certificate request in Base64 encoding Insterted Here",
        &der,
    );
    let env = soap::parse_envelope(&xml).unwrap();
    assert!(matches!(env.token, soap::HeaderToken::UsernameToken { .. }));
    let rst = wstep::parse_request(&env.body).unwrap();
    assert_eq!(rst.request_type, RequestType::Issue);
    assert_eq!(rst.token_type.as_deref(), Some(ns::TOKEN_TYPE_DEVICE_ENROLLMENT));
    assert_eq!(rst.context_value("DeviceType"), Some("CIMClient_Windows"));
    assert_eq!(rst.token.unwrap().der, der);

    let xml =
        with_token(&vector("mdm-certrenewal-doc-robo-renew-request.xml"), "BinarySecurityTokenInsertedHere", &der);
    let env = soap::parse_envelope(&xml).unwrap();
    let rst = wstep::parse_request(&env.body).unwrap();
    assert_eq!(rst.request_type, RequestType::Renew);
    assert_eq!(rst.token.unwrap().der, der);
    // The manual variant: the PKCS#7 base64-encoded twice.
    let twice = autoenroll_proto::b64::encode(autoenroll_proto::b64::encode(&der).as_bytes());
    let text = String::from_utf8(vector("mdm-certrenewal-doc-robo-renew-request.xml"))
        .unwrap()
        .replace("BinarySecurityTokenInsertedHere", &twice);
    let env = soap::parse_envelope(text.as_bytes()).unwrap();
    assert_eq!(wstep::parse_request(&env.body).unwrap().token.unwrap().der, der);
}

#[test]
fn mde2_policy_response_and_faults_parse() {
    let env = soap::parse_envelope(&vector("mde2-spec-4.2.2-getpolicies-response.xml")).unwrap();
    let p = xcep::parse_response(&env.body).unwrap();
    assert_eq!(p.policies[0].policy_schema, 3);
    assert!(p.cas.is_empty());
    for (file, error_type) in
        [("mde2-spec-2.2.10-fault-devicecap.xml", "devicecapreached"), ("mde2-spec-2.2.10-fault-authorization.xml", "")]
    {
        let xml = String::from_utf8(vector(file)).unwrap();
        // The published sample lower-cases the SOAP element names; match leniently.
        let fixed = xml
            .replace("s:envelope", "s:Envelope")
            .replace("s:header", "s:Header")
            .replace("s:body", "s:Body")
            .replace("a:action", "a:Action");
        let env = soap::parse_envelope(fixed.as_bytes()).unwrap();
        let f = autoenroll_proto::mde2::parse_fault(&env).unwrap();
        assert_eq!(f.error_type, error_type);
        assert_eq!(f.subcode, "s:authorization");
    }
}
