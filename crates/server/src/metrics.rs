//! Prometheus metrics: counters and latency histograms recorded as requests pass (the `metrics`
//! facade, rendered by `metrics-exporter-prometheus`), and fleet gauges read from the inventory
//! when `/metrics` is scraped (a few aggregate queries, not a per-request cost).
//!
//! Series (all prefixed `autoenroll_`):
//! - `issued_total{template, kind, protocol}`: certificates signed; kind is the request kind
//!   (enroll, renew, renew-tls, renew-scep, scep, listener).
//! - `refusals_total{protocol, code, kind, template}`: refused requests by refusal code and class,
//!   and the template when the refusal came after it was found ("-" before: bad credentials, an
//!   unknown template name, malformed requests).
//! - `http_request_duration_seconds{endpoint, protocol}`: latency per route (histogram).
//! - `tls_handshakes_total{kind="full"|"resumed"}`: TLS handshakes on the HTTPS listener.
//! - `certificates{template, state}`, `certificates_expiring{within="7d"|"30d"}`,
//!   `pending_requests`, `stuck_devices`, `renewals_overdue`, `devices{state}`,
//!   `crl_age_seconds`, `crl_next_update_seconds`, `db_pool_connections{state="busy"|"idle"}`.
use crate::ra::{Ra, RaError};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

tokio::task_local! {
    /// The protocol of the request being served (set by the HTTP layer, read by the RA's
    /// counters, which know the template but not the wire).
    static PROTOCOL: &'static str;
    /// The template the request turned out to be about (noted by the RA once it has found it;
    /// read by the front ends' refusal counters, which know the wire but not the template).
    static TEMPLATE: std::cell::RefCell<Option<String>>;
}

const LATENCY: &str = "autoenroll_http_request_duration_seconds";
const LATENCY_BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The process's recorder, installed on first use. If another recorder is installed already
/// (a library user's), metrics go there and `/metrics` renders only the fleet gauges.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = || {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(LATENCY.into()), &LATENCY_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new())
        };
        let recorder = builder().build_recorder();
        let handle = recorder.handle();
        match metrics::set_global_recorder(recorder) {
            Ok(()) => {
                describe();
                handle
            }
            Err(_) => {
                tracing::warn!("another metrics recorder is installed; /metrics shows the fleet gauges only");
                builder().build_recorder().handle()
            }
        }
    })
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!("autoenroll_issued_total", "Certificates signed, by template, request kind and protocol");
    describe_counter!(
        "autoenroll_tls_handshakes_total",
        "TLS handshakes completed on the HTTPS listener, by kind (full, resumed)"
    );
    describe_counter!("autoenroll_refusals_total", "Requests refused, by protocol, refusal code and class");
    describe_histogram!(LATENCY, Unit::Seconds, "Time to answer a request, by route");
    describe_gauge!("autoenroll_certificates", "Certificates in the inventory by template and state");
    describe_gauge!("autoenroll_certificates_expiring", "Issued certificates expiring within 7 or 30 days");
    describe_gauge!("autoenroll_pending_requests", "Requests waiting for an administrator");
    describe_gauge!("autoenroll_stuck_devices", "Devices with a renewal overdue by more than a day");
    describe_gauge!("autoenroll_renewals_overdue", "Issued certificates past their server-side renewal time");
    describe_gauge!("autoenroll_devices", "Devices by state");
    describe_gauge!("autoenroll_crl_age_seconds", Unit::Seconds, "Age of the current CRL");
    describe_gauge!("autoenroll_crl_next_update_seconds", Unit::Seconds, "Time until the CRL's nextUpdate");
    describe_gauge!("autoenroll_db_pool_connections", "Database pool connections, busy and idle");
}

/// The first path segment of each front end, and its protocol label.
const PROTOCOLS: [(&str, &str); 14] = [
    ("acme", "acme"),
    ("xcep", "xcep"),
    ("wstep", "wstep"),
    ("EnrollmentServer", "mdm"),
    ("scep", "scep"),
    ("checkin", "checkin"),
    ("admin", "admin"),
    ("ui", "console"),
    ("crl", "revocation"),
    ("ocsp", "revocation"),
    ("ca", "revocation"),
    ("metrics", "metrics"),
    ("healthz", "health"),
    ("", "other"),
];

/// The protocol of a request path (the label every series of a request carries).
pub fn protocol_of(path: &str) -> &'static str {
    // EST's well-known prefix is its own (RFC 7030 section 3.2.2).
    if path.starts_with(crate::frontends::est::PREFIX) {
        return "est";
    }
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    PROTOCOLS.iter().find(|(segment, _)| *segment == first).map_or("other", |(_, p)| p)
}

/// The protocol of the request in progress; `cli` outside a request (commands, approvals at
/// the command line).
pub fn protocol() -> &'static str {
    PROTOCOL.try_with(|p| *p).unwrap_or("cli")
}

/// The HTTP layer: times each request by its route and makes its protocol known to the RA.
pub async fn track(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let endpoint = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let protocol = protocol_of(req.uri().path());
    let started = std::time::Instant::now();
    let response = TEMPLATE.scope(std::cell::RefCell::new(None), PROTOCOL.scope(protocol, next.run(req))).await;
    metrics::histogram!(LATENCY, "endpoint" => endpoint, "protocol" => protocol)
        .record(started.elapsed().as_secs_f64());
    response
}

/// One TLS handshake completed on the HTTPS listener.
pub fn handshake(resumed: bool) {
    metrics::counter!("autoenroll_tls_handshakes_total", "kind" => if resumed { "resumed" } else { "full" })
        .increment(1);
}

pub fn issued(template: &str, kind: &'static str) {
    metrics::counter!("autoenroll_issued_total", "template" => template.to_string(), "kind" => kind,
        "protocol" => protocol())
    .increment(1);
}

/// Notes the template a request is about: only names of templates that exist (administrators
/// make them), so the label's values stay few whatever clients send.
pub fn note_template(name: &str) {
    let _ = TEMPLATE.try_with(|t| *t.borrow_mut() = Some(name.to_string()));
}

fn template() -> String {
    TEMPLATE.try_with(|t| t.borrow().clone()).ok().flatten().unwrap_or_else(|| "-".into())
}

pub fn refused(e: &RaError) {
    metrics::counter!("autoenroll_refusals_total", "protocol" => protocol(), "code" => e.code(),
        "kind" => e.kind().as_str(), "template" => template())
    .increment(1);
}

/// Fleet gauges are read from the inventory at most this often: scrapes in between (or many at
/// once, from a hostile client) cost no database work.
const GAUGES_FRESH_FOR: std::time::Duration = std::time::Duration::from_secs(30);

/// The text exposition: fleet gauges refreshed from the inventory (at most every 30 s, one
/// refresh at a time), then everything recorded.
pub async fn render(ra: &Ra) -> Result<String, RaError> {
    static REFRESHED: tokio::sync::Mutex<Option<std::time::Instant>> = tokio::sync::Mutex::const_new(None);
    let handle = handle();
    let mut refreshed = REFRESHED.lock().await;
    if refreshed.is_none_or(|at| at.elapsed() >= GAUGES_FRESH_FOR) {
        refresh_gauges(ra).await?;
        *refreshed = Some(std::time::Instant::now());
    }
    drop(refreshed);
    Ok(handle.render())
}

async fn refresh_gauges(ra: &Ra) -> Result<(), RaError> {
    let fleet = ra.fleet_summary(0, 0).await?;
    let mut live = std::collections::BTreeMap::<(String, &'static str), i64>::new();
    for c in &fleet.by_template_state {
        let state = if c.expired { "expired" } else { c.state.as_str() };
        *live.entry((c.template.clone(), state)).or_default() += c.count;
    }
    // Every state of every template, so a count that falls to zero shows 0, not its last value.
    let templates: std::collections::BTreeSet<String> = live.keys().map(|(t, _)| t.clone()).collect();
    for template in templates {
        for state in ["issued", "expired", "renewed", "revoked", "signing"] {
            let n = live.get(&(template.clone(), state)).copied().unwrap_or(0);
            metrics::gauge!("autoenroll_certificates", "template" => template.clone(), "state" => state).set(n as f64);
        }
    }
    metrics::gauge!("autoenroll_certificates_expiring", "within" => "7d").set(fleet.expiring_7d as f64);
    metrics::gauge!("autoenroll_certificates_expiring", "within" => "30d").set(fleet.expiring_30d as f64);
    metrics::gauge!("autoenroll_pending_requests").set(fleet.pending_requests as f64);
    metrics::gauge!("autoenroll_renewals_overdue").set(fleet.renewal_overdue as f64);
    metrics::gauge!("autoenroll_devices", "state" => "active").set((fleet.devices - fleet.blocked_devices) as f64);
    metrics::gauge!("autoenroll_devices", "state" => "blocked").set(fleet.blocked_devices as f64);
    metrics::gauge!("autoenroll_stuck_devices").set(fleet.stuck_devices as f64);
    if let Some((this_update, next_update)) = ra.crl_times().await? {
        let now = ra.now();
        metrics::gauge!("autoenroll_crl_age_seconds").set((now.0 - this_update.0) as f64);
        metrics::gauge!("autoenroll_crl_next_update_seconds").set((next_update.0 - now.0) as f64);
    }
    let (size, idle) = ra.db_pool();
    metrics::gauge!("autoenroll_db_pool_connections", "state" => "busy").set(size.saturating_sub(idle) as f64);
    metrics::gauge!("autoenroll_db_pool_connections", "state" => "idle").set(idle as f64);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_route_has_a_protocol() {
        for (path, protocol) in [
            ("/xcep", "xcep"),
            ("/wstep", "wstep"),
            ("/EnrollmentServer/Discovery.svc", "mdm"),
            ("/scep/Machine", "scep"),
            ("/.well-known/est/Machine/simpleenroll", "est"),
            ("/.well-known/est/cacerts", "est"),
            ("/acme/new-order", "acme"),
            ("/admin/v1/devices", "admin"),
            ("/ui/", "console"),
            ("/crl", "revocation"),
            ("/ocsp/abc", "revocation"),
        ] {
            assert_eq!(super::protocol_of(path), protocol, "{path}");
        }
    }
}
