//! `POST /checkin`: the `proto::checkin` JSON over HTTPS, authenticated by the device's TLS
//! client certificate (a current one, or one already renewed). A bootstrap token
//! (`Authorization: Bearer aet_...`) is read only to refuse it by name: `TokenNotAccepted`.
//! The RA decides with `core::renewal::decide`; this module turns each `Decision` into the wire
//! action and reason (one exhaustive match each). Errors are JSON `{"code", "detail"}`.
use super::{json_error as error, AppState, Peer};
use crate::ra::{CheckinAnswer, CheckinReport, Credentials, Directive, Purpose, Verdict};
use autoenroll_core::renewal::{Decision, Reason};
use autoenroll_core::Refusal;
use autoenroll_proto::checkin as wire;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

pub use wire::{MAX_BODY, PATH};

pub async fn handle(
    State(st): State<AppState>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let creds = match peer.and_then(|Extension(p)| p.0).and_then(|c| c.first().map(|l| l.as_ref().to_vec())) {
        Some(leaf) => Credentials::ClientCertificate(leaf),
        None => match headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        {
            Some(token) => Credentials::BootstrapToken(token.trim().to_string()),
            None => Credentials::None,
        },
    };
    let principal = match st.ra.authenticate_for(&creds, None, Purpose::Identify).await {
        Ok(p) => p,
        Err(e) => return error(&e),
    };
    let report: wire::CheckinReport = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(&Refusal::BadJson { detail: format!("check-in report: {e}") }.into()),
    };
    match st.ra.checkin(&principal, &from_wire(report)).await {
        Ok(answer) => Json(to_wire(answer)).into_response(),
        Err(e) => error(&e),
    }
}

fn from_wire(r: wire::CheckinReport) -> CheckinReport {
    CheckinReport {
        certificates: r.certificates.into_iter().map(|c| (c.template, c.thumbprint)).collect(),
        errors: r.errors.into_iter().collect(),
        scep: r.scep,
    }
}

fn reason(r: Reason) -> wire::Reason {
    match r {
        Reason::Missing => wire::Reason::Missing,
        Reason::Superseded => wire::Reason::Superseded,
        Reason::TemplateBumped => wire::Reason::TemplateBumped,
        Reason::NearingExpiry => wire::Reason::NearingExpiry,
        Reason::Expired => wire::Reason::Expired,
        Reason::Revoked => wire::Reason::Revoked,
        Reason::Interrupted => wire::Reason::Interrupted,
        // The server never sees a holder's `renew --now`.
        Reason::Requested | Reason::ServerRequested => wire::Reason::ServerRequested,
        Reason::Lost => wire::Reason::Lost,
    }
}

/// The wire action and reason of a verdict, with a sentence for people.
fn action(v: &Verdict) -> (wire::Action, wire::Reason, String) {
    match v {
        Verdict::Decided(Decision::Keep { recheck_at }) => {
            (wire::Action::Ok, wire::Reason::Current, format!("current; renews at {recheck_at}"))
        }
        // The server passes neither a pending request nor a failure: nothing to wait for.
        Verdict::Decided(Decision::Wait { until, .. }) => {
            (wire::Action::Ok, wire::Reason::Current, format!("wait until {until}"))
        }
        Verdict::Decided(Decision::Retrieve { request_id }) => {
            (wire::Action::Ok, wire::Reason::Current, format!("request {request_id} is pending"))
        }
        Verdict::Decided(Decision::Renew(r)) => (wire::Action::Renew, reason(*r), format!("renew ({r:?})")),
        Verdict::Decided(Decision::Enroll(r)) => (wire::Action::Enroll, reason(*r), format!("enroll ({r:?})")),
        Verdict::Remove { superseded_by: Some(by) } => {
            (wire::Action::Remove, wire::Reason::SupersededBy, format!("superseded by {by}"))
        }
        Verdict::Remove { superseded_by: None } => {
            (wire::Action::Remove, wire::Reason::NotAssigned, "template no longer assigned".into())
        }
    }
}

fn directive(d: Directive) -> wire::Directive {
    let (action, reason, detail) = action(&d.verdict);
    let held = d.certificate.as_ref();
    wire::Directive {
        template: d.template,
        action,
        reason,
        detail,
        serial: held.map(|c| c.serial.clone()),
        renew_at: held.and_then(|c| c.renew_at).map(|t| t.0),
        window_start: held.map(|c| c.window_opens.0),
        window_end: held.map(|c| c.not_after.0),
        challenge: d.challenge,
    }
}

/// The wire answer of the RA's check-in decisions.
pub fn to_wire(a: CheckinAnswer) -> wire::CheckinAnswer {
    wire::CheckinAnswer {
        device: a.device,
        blocked: a.blocked,
        directives: a.directives.into_iter().map(directive).collect(),
    }
}
