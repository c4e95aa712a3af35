//! The console's pages (maud: every interpolation is HTML-escaped). Pure functions from records
//! to markup; the handlers in `mod.rs` fetch and act.
use super::charts;
use crate::frontends::views::TemplateJson;
use crate::ra::{
    AuditEvent, Certificate, ConsoleSession, DeviceState, DeviceSummary, FleetSummary, Request, Stuck, Template,
    DAY_SECS, WEEK_SECS,
};
use autoenroll_core::model::{AuditOutcome, CertState, RevocationReason};
use autoenroll_core::pki::csr::{CsrFacts, KeyFacts};
use autoenroll_core::pki::CertFacts;
use autoenroll_core::UnixTime;
use maud::{html, Markup, DOCTYPE};

/// 53 weeks: a certificate valid for a year from today expires in the last one.
pub const WEEKS: i64 = 53;
pub const DAYS: i64 = 90;

fn layout(title: &str, session: Option<&ConsoleSession>, notice: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · autoenroll" }
                link rel="stylesheet" href="/ui/style.css";
            }
            body {
                header {
                    a.brand href="/ui/" { "autoenroll" }
                    @if let Some(s) = session {
                        nav {
                            a href="/ui/" { "Fleet" }
                            a href="/ui/devices" { "Devices" }
                            a href="/ui/certificates" { "Certificates" }
                            a href="/ui/templates" { "Templates" }
                            a href="/ui/requests" { "Requests" }
                            a href="/ui/audit" { "Audit" }
                        }
                        form.signout method="post" action="/ui/logout" {
                            input type="hidden" name="csrf" value=(s.csrf);
                            span.who { (s.actor) }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    @if let Some(n) = notice { p.notice role="status" { (n) } }
                    (body)
                }
            }
        }
    }
}

fn csrf(s: &ConsoleSession) -> Markup {
    html! { input type="hidden" name="csrf" value=(s.csrf); }
}

/// The checkbox every action needs ticked (checked again by the server).
fn confirm(what: &str) -> Markup {
    html! { label.confirm { input type="checkbox" name="confirm" value="yes" required; " " (what) } }
}

fn opt_time(t: Option<UnixTime>) -> String {
    t.map(|t| t.to_string()).unwrap_or_else(|| "—".into())
}

/// A duration as an administrator writes it: whole days or hours when it is one.
fn duration(secs: i64) -> String {
    match secs {
        0 => "0".into(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s => humantime::format_duration(std::time::Duration::from_secs(s.max(0) as u64)).to_string(),
    }
}

fn date(t: UnixTime) -> String {
    t.to_string().chars().take(10).collect()
}

fn cert_state(c: &Certificate, now: UnixTime) -> String {
    if c.state == CertState::Issued && c.not_after <= now {
        "expired".into()
    } else {
        c.state.as_str().into()
    }
}

pub fn login(error: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        error,
        html! {
            form.card method="post" action="/ui/login" {
                label for="token" { "Admin token" }
                input #token type="password" name="token" autocomplete="current-password" required
                    placeholder="aea_…";
                p.hint { "Made with " code { "autoenroll server admin-token create NAME" } "." }
                button type="submit" { "Sign in" }
            }
        },
    )
}

pub fn error(session: Option<&ConsoleSession>, code: &str, detail: &str) -> Markup {
    layout("Refused", session, None, html! { p.error { code { (code) } ": " (detail) } p { a href="/ui/" { "Back" } } })
}

pub struct Fleet<'a> {
    pub now: UnixTime,
    pub summary: &'a FleetSummary,
    pub stuck: &'a [Stuck],
    /// Templates that exist (certificates may name others: the listener's own).
    pub templates: &'a [String],
}

pub fn fleet(s: &ConsoleSession, notice: Option<&str>, f: Fleet<'_>) -> Markup {
    let sum = f.summary;
    let live: i64 =
        sum.by_template_state.iter().filter(|c| c.state == CertState::Issued && !c.expired).map(|c| c.count).sum();
    let last_day = |pred: &dyn Fn(&str, AuditOutcome) -> bool| -> i64 {
        sum.last_day.iter().filter(|a| pred(&a.action, a.outcome)).map(|a| a.count).sum()
    };
    let issued_24h = last_day(&|_, o| o == AuditOutcome::Issued);
    let renewed_24h = last_day(&|a, o| o == AuditOutcome::Issued && a.starts_with("renew"));
    let refused_24h = last_day(&|_, o| o == AuditOutcome::Refused);
    // Templates as rows, states as columns.
    let mut templates: Vec<&str> = sum.by_template_state.iter().map(|c| c.template.as_str()).collect();
    templates.dedup();
    // (heading, which counts, the certificate list's filter for them)
    type Column = (&'static str, fn(&crate::ra::StateCount) -> bool, String);
    let filter = |s: CertState| format!("state={}", s.as_str());
    let columns: [Column; 5] = [
        ("issued", |c| c.state == CertState::Issued && !c.expired, filter(CertState::Issued) + "&valid=yes"),
        ("expired", |c| c.expired, filter(CertState::Issued) + "&expired=yes"),
        ("renewed", |c| c.state == CertState::Renewed, filter(CertState::Renewed)),
        ("revoked", |c| c.state == CertState::Revoked, filter(CertState::Revoked)),
        ("signing", |c| c.state == CertState::Signing, filter(CertState::Signing)),
    ];
    let count = |t: &str, pred: fn(&crate::ra::StateCount) -> bool| -> i64 {
        sum.by_template_state.iter().filter(|c| c.template == t && pred(c)).map(|c| c.count).sum()
    };
    // Expiry timeline: one bar per week, one series per template.
    let mut series: Vec<String> = sum.expiring_by_week.iter().map(|(t, _, _)| t.clone()).collect();
    series.sort();
    series.dedup();
    let mut weeks = vec![vec![0i64; series.len()]; WEEKS as usize];
    for (t, week, n) in &sum.expiring_by_week {
        if let (Some(s), Some(bar)) = (series.iter().position(|x| x == t), weeks.get_mut(*week as usize)) {
            bar[s] += n;
        }
    }
    let week_labels: Vec<(usize, String)> =
        (0..WEEKS as usize).step_by(8).map(|w| (w, date(f.now.plus_secs(w as i64 * WEEK_SECS)))).collect();
    let mut days = vec![vec![0i64]; DAYS as usize];
    for (day, n) in &sum.renewals_by_day {
        if let Some(bar) = days.get_mut(*day as usize) {
            bar[0] += n;
        }
    }
    let day_labels: Vec<(usize, String)> =
        (0..DAYS as usize).step_by(15).map(|d| (d, date(f.now.plus_secs(d as i64 * DAY_SECS)))).collect();
    let now = f.now;
    layout(
        "Fleet",
        Some(s),
        notice,
        html! {
            section.tiles {
                div.tile #tile-devices { b { (sum.devices) } span { "devices" } small { (sum.blocked_devices) " blocked" } }
                div.tile #tile-live { b { (live) } span { "certificates in use" } }
                div.tile #tile-expiring { b { (sum.expiring_7d) } span { "expire within 7 days" } small { (sum.expiring_30d) " within 30" } }
                div.tile #tile-pending { b { a href="/ui/requests" { (sum.pending_requests) } } span { "requests pending" } }
                div.tile #tile-issued { b { (issued_24h) } span { "issued in 24 h" } small { (renewed_24h) " renewals" } }
                div.tile #tile-refused { b { a href="/ui/audit?outcome=refused&since=24h" { (refused_24h) } } span { "refused in 24 h" } }
                div.tile #tile-stuck { b { (sum.stuck_devices) } span { "stuck devices" } small { (sum.renewal_overdue) " renewals overdue" } }
            }
            h2 { "Certificates by template" }
            div.scroll {
                table #by-template {
                    thead { tr { th { "template" } @for (name, _, _) in &columns { th.num { (name) } } } }
                    tbody {
                        @for t in &templates {
                            tr {
                                td {
                                    @if f.templates.iter().any(|x| x == t) { a href=(format!("/ui/templates/{}", url(t))) { (t) } }
                                    @else { (t) }
                                }
                                @for (_, pred, filter) in &columns {
                                    td.num { a href=(format!("/ui/certificates?template={}&{filter}", url(t))) { (count(t, *pred)) } }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Expiry timeline" }
            (charts::stacked_bars("expiry", "Certificates expiring per week, next year, by template", &weeks, &series,
                &week_labels, |w| {
                    let n: i64 = weeks[w].iter().sum();
                    format!("week of {}: {n} expiring", date(now.plus_secs(w as i64 * WEEK_SECS)))
                }))
            h2 { "Renewal forecast" }
            p.hint { "When the server will tell devices to renew (its spread schedule), per day. "
                (sum.renewal_overdue) " already overdue." }
            (charts::stacked_bars("forecast", "Renewals per day, next 90 days", &days, &["renewals".into()], &day_labels,
                |d| format!("{}: {} renewals", date(now.plus_secs(d as i64 * DAY_SECS)), days[d][0])))
            h2 { "Stuck" }
            @if f.stuck.is_empty() {
                p { "Nothing is more than a day past its renewal time." }
            } @else {
                div.scroll { table #stuck {
                    thead { tr { th { "device" } th { "certificate" } th { "template" } th { "renew after" } th { "expires" } th { "last refusal" } } }
                    tbody { @for st in f.stuck {
                        tr {
                            td { a href=(format!("/ui/devices/{}", url(&st.device))) { (st.device) } @if st.device_blocked { " (blocked)" } }
                            td { a href=(format!("/ui/certificates/{}", url(&st.serial))) { code { (st.serial) } } }
                            td { (st.template) }
                            td { (st.renew_after) }
                            td { (st.not_after) }
                            td { (st.last_error.as_deref().unwrap_or("none recorded")) @if let Some(at) = st.last_error_at { br; small { (at) } } }
                        }
                    } }
                } }
            }
        },
    )
}

pub fn url(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

pub fn devices(s: &ConsoleSession, q: &str, state: &str, list: &[DeviceSummary]) -> Markup {
    layout(
        "Devices",
        Some(s),
        None,
        html! {
            form.filters method="get" action="/ui/devices" {
                input type="search" name="q" value=(q) placeholder="name contains";
                select name="state" {
                    @for (v, label) in [("", "any state"), ("active", "active"), ("blocked", "blocked")] {
                        option value=(v) selected[state == v] { (label) }
                    }
                }
                button type="submit" { "Filter" }
            }
            p.hint { (list.len()) " shown (at most 1,000: narrow the search)" }
            div.scroll { table #devices {
                thead { tr { th { "device" } th { "state" } th.num { "certificates" } th { "next renewal" } th { "last seen" } } }
                tbody { @for d in list {
                    tr {
                        td { a href=(format!("/ui/devices/{}", url(&d.name))) { (d.name) } }
                        td { (d.state.as_str()) }
                        td.num { (d.certificates) }
                        td { (opt_time(d.next_renewal)) }
                        td { (d.last_seen) }
                    }
                } }
            } }
        },
    )
}

pub struct DeviceDetail<'a> {
    pub name: &'a str,
    pub state: DeviceState,
    pub created_at: UnixTime,
    pub last_seen: UnixTime,
    pub owner: Option<&'a str>,
    pub groups: &'a [String],
    pub certificates: &'a [Certificate],
    pub events: &'a [AuditEvent],
    pub now: UnixTime,
}

pub fn device(s: &ConsoleSession, notice: Option<&str>, d: DeviceDetail<'_>) -> Markup {
    let base = format!("/ui/devices/{}", url(d.name));
    layout(
        d.name,
        Some(s),
        notice,
        html! {
            dl {
                dt { "state" } dd #device-state { (d.state.as_str()) }
                dt { "first seen" } dd { (d.created_at) }
                dt { "last check-in or request" } dd { (d.last_seen) }
                dt { "bound to" } dd { (d.owner.unwrap_or("nobody yet")) }
                dt { "groups" } dd { @if d.groups.is_empty() { "none" } @else { (d.groups.join(", ")) } }
            }
            h2 { "Certificates" }
            (certificate_table(d.certificates, d.now))
            h2 { "Recent events and refusals" }
            (audit_table(d.events))
            h2 { "Actions" }
            @if d.state == DeviceState::Blocked {
                form.action method="post" action=(format!("{base}/unblock")) {
                    (csrf(s)) (confirm("Unblock this device: it may enroll and renew again."))
                    button type="submit" { "Unblock" }
                }
            } @else {
                form.action method="post" action=(format!("{base}/block")) {
                    (csrf(s))
                    label { input type="checkbox" name="revoke" value="yes"; " also revoke its certificates (privilegeWithdrawn)" }
                    (confirm("Block this device: every enrollment and renewal is refused."))
                    button.danger type="submit" { "Block" }
                }
            }
        },
    )
}

fn certificate_table(list: &[Certificate], now: UnixTime) -> Markup {
    html! {
        div.scroll { table.certificates {
            thead { tr { th { "serial" } th { "device" } th { "template" } th { "state" } th { "expires" } th { "renew after" } } }
            tbody { @for c in list {
                tr {
                    td { a href=(format!("/ui/certificates/{}", url(&c.serial))) { code { (c.serial) } } }
                    td { a href=(format!("/ui/devices/{}", url(&c.device))) { (c.device) } }
                    td { (c.template) " v" (c.template_major) "." (c.template_minor) }
                    td { (cert_state(c, now)) }
                    td { (c.not_after) }
                    td { (opt_time(c.renew_after)) }
                }
            } }
        } }
    }
}

fn audit_table(events: &[AuditEvent]) -> Markup {
    html! {
        div.scroll { table.audit {
            thead { tr { th { "at" } th { "actor" } th { "action" } th { "subject" } th { "outcome" } th { "detail" } } }
            tbody { @for e in events {
                tr.(e.outcome.as_str()) {
                    td { (e.at) } td { (e.actor) } td { (e.action) } td { (e.subject) } td { (e.outcome.as_str()) } td { (e.detail) }
                }
            } }
        } }
    }
}

pub struct CertificateFilterForm<'a> {
    pub template: &'a str,
    pub state: &'a str,
    pub expiring_within: &'a str,
    pub device: &'a str,
}

pub fn certificates(
    s: &ConsoleSession,
    notice: Option<&str>,
    f: CertificateFilterForm<'_>,
    templates: &[Template],
    list: &[Certificate],
    now: UnixTime,
) -> Markup {
    layout(
        "Certificates",
        Some(s),
        notice,
        html! {
            form.filters method="get" action="/ui/certificates" {
                select name="template" {
                    option value="" { "any template" }
                    @for t in templates { option value=(t.name) selected[f.template == t.name] { (t.name) } }
                }
                select name="state" {
                    @for v in ["", "issued", "renewed", "revoked", "signing"] {
                        option value=(v) selected[f.state == v] { @if v.is_empty() { "any state" } @else { (v) } }
                    }
                }
                input type="text" name="expiring_within" value=(f.expiring_within) placeholder="expiring within (30d)" size="12";
                input type="text" name="device" value=(f.device) placeholder="device" size="16";
                button type="submit" { "Filter" }
            }
            p.hint { (list.len()) " shown (at most 1,000)" }
            (certificate_table(list, now))
            h2 { "Renew a cohort now" }
            p.hint { "Moves the server-side renewal time of matching issued certificates to now: their devices renew at their next check-in." }
            form.action method="post" action="/ui/certificates/renew-now" {
                (csrf(s))
                select name="template" required {
                    @for t in templates { option value=(t.name) selected[f.template == t.name] { (t.name) } }
                }
                input type="number" name="major" min="0" placeholder="only major version (optional)";
                input type="text" name="expiring_within" placeholder="expiring within (optional)" size="14";
                (confirm("Renew every matching certificate now."))
                button type="submit" { "Renew now" }
            }
        },
    )
}

pub fn certificate(
    s: &ConsoleSession,
    notice: Option<&str>,
    c: &Certificate,
    chain: &[(String, String)],
    now: UnixTime,
) -> Markup {
    let facts = c.der.as_deref().and_then(|d| CertFacts::parse(d).ok());
    let base = format!("/ui/certificates/{}", url(&c.serial));
    layout(
        &format!("Certificate {}", c.serial),
        Some(s),
        notice,
        html! {
            dl {
                dt { "state" } dd #cert-state { (cert_state(c, now)) }
                @if let Some(at) = c.revoked_at {
                    dt { "revoked" } dd #cert-revoked { (at) " (" (c.revocation_reason.map(|r| r.as_str()).unwrap_or("unspecified")) ")" }
                }
                dt { "device" } dd { a href=(format!("/ui/devices/{}", url(&c.device))) { (c.device) } }
                dt { "template" } dd { a href=(format!("/ui/templates/{}", url(&c.template))) { (c.template) } " v" (c.template_major) "." (c.template_minor) }
                dt { "subject" } dd { (c.subject) }
                dt { "valid" } dd { (c.not_before) " – " (c.not_after) }
                dt { "renew after" } dd { (opt_time(c.renew_after)) }
                dt { "first used" } dd { (opt_time(c.first_used_at)) }
                dt { "renewed from" } dd { @match &c.previous_serial { Some(p) => a href=(format!("/ui/certificates/{}", url(p))) { code { (p) } }, None => "—" } }
                dt { "SHA-1 thumbprint" } dd { code { (c.thumbprint.as_deref().unwrap_or("—")) } }
            }
            @if let Some(f) = &facts {
                h2 { "Decoded" }
                dl #decoded {
                    dt { "issuer" } dd { (f.issuer) }
                    dt { "DNS names" } dd { @if f.dns_names.is_empty() { "none" } @else { (f.dns_names.join(", ")) } }
                    dt { "IP addresses" } dd { @if f.ip_addrs.is_empty() { "none" } @else { (f.ip_addrs.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")) } }
                    dt { "extended key usage" } dd { (f.ext_key_usage.iter().map(|o| eku_name(o)).collect::<Vec<_>>().join(", ")) }
                    dt { "template extension" } dd { (f.template.as_ref().map(|t| format!("{} v{}.{}", t.oid, t.major, t.minor)).or(f.template_name.clone()).unwrap_or_else(|| "none".into())) }
                }
                p { a #download-pem href=(format!("{base}/pem")) download=(format!("{}.pem", c.serial)) { "Download PEM" } }
            }
            h2 { "Chain" }
            ol.chain {
                li { (c.subject) }
                @for (subject, href) in chain { li { (subject) " — " a href=(href) { "certificate" } } }
            }
            @if c.state.is_good() {
                h2 { "Revoke" }
                form.action method="post" action=(format!("{base}/revoke")) {
                    (csrf(s))
                    select name="reason" {
                        @for r in RevocationReason::ALL { option value=(r.as_str()) { (r.as_str()) } }
                    }
                    (confirm("Revoke this certificate. It goes on the next CRL and OCSP says revoked."))
                    button.danger type="submit" { "Revoke" }
                }
            }
        },
    )
}

fn key_name(k: &KeyFacts) -> String {
    match k {
        KeyFacts::Ec { curve_bits } => format!("EC P-{curve_bits}"),
        KeyFacts::Rsa { bits } => format!("RSA {bits}"),
        KeyFacts::Ed25519 => "Ed25519".into(),
    }
}

fn eku_name(oid: &str) -> String {
    match oid {
        "1.3.6.1.5.5.7.3.1" => "serverAuth".into(),
        "1.3.6.1.5.5.7.3.2" => "clientAuth".into(),
        "1.3.6.1.5.5.7.3.4" => "emailProtection".into(),
        "1.3.6.1.5.5.7.3.3" => "codeSigning".into(),
        other => other.into(),
    }
}

pub fn templates(s: &ConsoleSession, list: &[Template]) -> Markup {
    layout(
        "Templates",
        Some(s),
        None,
        html! {
            div.scroll { table #templates {
                thead { tr { th { "template" } th { "version" } th { "validity" } th { "renewal period" } th { "key" } th { "issuance" } th { "supersedes" } } }
                tbody { @for t in list {
                    tr {
                        td { a href=(format!("/ui/templates/{}", url(&t.name))) { (t.name) } }
                        td { (t.major) "." (t.minor) }
                        td { (duration(t.validity_secs)) }
                        td { (duration(t.renewal_secs)) }
                        td { (t.key.algorithm.to_string()) }
                        td { @if t.pend_all { "approval" } @else if t.autoenroll { "autoenroll" } @else if t.enroll { "enroll" } @else { "off" } }
                        td { (t.supersedes.join(", ")) }
                    }
                } }
            } }
        },
    )
}

pub fn template(s: &ConsoleSession, notice: Option<&str>, t: &Template, history: &[AuditEvent]) -> Markup {
    // Every field the admin API shows, in its order: nothing is left out of the page.
    let fields = serde_json::to_value(TemplateJson::from(t)).unwrap_or_default();
    layout(
        &format!("Template {}", t.name),
        Some(s),
        notice,
        html! {
            div.scroll { table #template-fields {
                tbody {
                    @if let Some(map) = fields.as_object() {
                        @for (k, v) in map {
                            tr { th { (k) } td { (field(k, v)) } }
                        }
                    }
                }
            } }
            h2 { "Version history" }
            (audit_table(history))
            h2 { "Bump major version" }
            p.hint { "Every holder re-enrolls under version " (t.major.saturating_add(1)) " at its next check-in." }
            form.action method="post" action=(format!("/ui/templates/{}/bump-major", url(&t.name))) {
                (csrf(s)) (confirm(&format!("Bump {} to {}.0", t.name, t.major.saturating_add(1))))
                button type="submit" { "Bump major" }
            }
        },
    )
}

fn field(key: &str, v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Number(n) if key.ends_with("_secs") => {
            format!("{} ({n} s)", duration(n.as_i64().unwrap_or(0)))
        }
        serde_json::Value::Number(n) if key.ends_with("_at") => UnixTime(n.as_i64().unwrap_or(0)).to_string(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(a) if a.is_empty() => "—".into(),
        serde_json::Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string()))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

pub fn requests(s: &ConsoleSession, notice: Option<&str>, list: &[Request]) -> Markup {
    layout(
        "Pending requests",
        Some(s),
        notice,
        html! {
            @if list.is_empty() { p #no-requests { "No request is waiting for approval." } }
            @for r in list {
                article.request id=(format!("request-{}", r.id)) {
                    h2 { "Request " (r.id) }
                    dl {
                        dt { "device" } dd { a href=(format!("/ui/devices/{}", url(&r.device))) { (r.device) } }
                        dt { "requester" } dd { (r.requester) }
                        dt { "template" } dd { (r.template) }
                        dt { "kind" } dd { (r.kind.to_string()) }
                        dt { "received" } dd { (r.created_at) }
                        @match CsrFacts::parse_stored(&r.csr_der) {
                            Ok(csr) => {
                                dt { "subject" } dd.csr-subject { (csr.subject.to_string()) }
                                dt { "DNS names" } dd { @if csr.dns_names.is_empty() { "none" } @else { (csr.dns_names.join(", ")) } }
                                dt { "IP addresses" } dd { @if csr.ip_addrs.is_empty() { "none" } @else { (csr.ip_addrs.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")) } }
                                dt { "key" } dd { (key_name(&csr.key)) }
                            }
                            Err(e) => { dt { "request" } dd { "unreadable: " (e.to_string()) } }
                        }
                        @if let Some(p) = &r.previous_serial { dt { "renews" } dd { code { (p) } } }
                    }
                    div.actions {
                        form.action method="post" action=(format!("/ui/requests/{}/approve", r.id)) {
                            (csrf(s)) (confirm("Approve: the certificate is signed now."))
                            button type="submit" { "Approve" }
                        }
                        form.action method="post" action=(format!("/ui/requests/{}/deny", r.id)) {
                            (csrf(s))
                            input type="text" name="reason" placeholder="reason (optional)" maxlength="200";
                            (confirm("Deny this request."))
                            button.danger type="submit" { "Deny" }
                        }
                    }
                }
            }
        },
    )
}

pub struct AuditFilterForm<'a> {
    pub action: &'a str,
    pub actor: &'a str,
    pub subject: &'a str,
    pub outcome: &'a str,
    pub since: &'a str,
}

pub fn audit(s: &ConsoleSession, f: AuditFilterForm<'_>, events: &[AuditEvent]) -> Markup {
    layout(
        "Audit log",
        Some(s),
        None,
        html! {
            form.filters method="get" action="/ui/audit" {
                input type="text" name="action" value=(f.action) placeholder="action (cert.revoke)" size="14";
                input type="text" name="actor" value=(f.actor) placeholder="actor" size="14";
                input type="text" name="subject" value=(f.subject) placeholder="subject" size="14";
                select name="outcome" {
                    option value="" { "any outcome" }
                    @for o in AuditOutcome::ALL { option value=(o.as_str()) selected[f.outcome == o.as_str()] { (o.as_str()) } }
                }
                input type="text" name="since" value=(f.since) placeholder="within (24h)" size="8";
                button type="submit" { "Filter" }
            }
            p.hint { (events.len()) " shown, newest first (at most 500)" }
            (audit_table(events))
        },
    )
}

pub const STYLE: &str = r#"
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328;background:#f6f8fa}
header{display:flex;flex-wrap:wrap;align-items:center;gap:.5rem 1rem;padding:.6rem 1rem;background:#24292f;color:#fff}
header a{color:#fff;text-decoration:none}
.brand{font-weight:700}
nav{display:flex;flex-wrap:wrap;gap:.2rem .9rem}
.signout{margin-left:auto;display:flex;gap:.5rem;align-items:center}
.who{opacity:.8;font-size:.9em}
main{max-width:72rem;margin:0 auto;padding:1rem}
h1{font-size:1.4rem;margin:.3rem 0 1rem}
h2{font-size:1.1rem;margin:1.6rem 0 .6rem}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(9.5rem,1fr));gap:.6rem}
.tile{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:.6rem .8rem;display:flex;flex-direction:column}
.tile b{font-size:1.6rem}
.tile small{color:#57606a}
.scroll{overflow-x:auto;background:#fff;border:1px solid #d0d7de;border-radius:6px}
table{border-collapse:collapse;width:100%}
th,td{padding:.35rem .6rem;border-bottom:1px solid #eaeef2;text-align:left;vertical-align:top;white-space:nowrap}
td:last-child{white-space:normal}
.num{text-align:right}
tr.refused td{background:#fff5f5}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem;background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:.8rem}
dt{color:#57606a}
dd{margin:0;overflow-wrap:anywhere}
code{font-size:.9em;overflow-wrap:anywhere}
.chart{margin:0;background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:.6rem}
figcaption{font-size:.9em;color:#57606a}
.legend{list-style:none;display:flex;flex-wrap:wrap;gap:.3rem 1rem;padding:0;margin:.4rem 0 0;font-size:.9em}
form.filters,form.action{display:flex;flex-wrap:wrap;gap:.5rem;align-items:center;margin:.6rem 0}
form.card{display:flex;flex-direction:column;gap:.6rem;max-width:24rem;background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:1rem}
input,select,button{font:inherit;padding:.35rem .5rem;border:1px solid #8c959f;border-radius:6px;background:#fff}
button{background:#1f6feb;color:#fff;border-color:#1f6feb;cursor:pointer}
button.danger{background:#cf222e;border-color:#cf222e}
header button{background:transparent;border-color:#8c959f}
.notice{background:#dafbe1;border:1px solid #2da44e;border-radius:6px;padding:.5rem .8rem}
.error{background:#ffebe9;border:1px solid #cf222e;border-radius:6px;padding:.5rem .8rem}
.hint{color:#57606a;font-size:.9em}
.request{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:.2rem 1rem;margin:.8rem 0}
.confirm{font-size:.9em}
@media (max-width:40rem){main{padding:.6rem}th,td{padding:.3rem .4rem}.signout{margin-left:0}}
"#;
