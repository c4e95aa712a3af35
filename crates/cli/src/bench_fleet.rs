//! `autoenroll bench fleet`: do agents renew at the server's spread times? A fleet of devices
//! gets its certificates at the same moment from a real RA (SQLite, fresh data directory); each
//! device then checks in (the RA's check-in, decided with `core::renewal::decide`) and decides
//! its own renewal time with the agent's code (`autoenroll_agent::cycle`) on the answer. The
//! figures: renewals in the busiest minute against the mean, with the server's times and with
//! the template's rule alone (what agents did before they followed the server).
use anyhow::{Context, Result};
use autoenroll_agent::cycle::{apply_checkin, renewal_input, Local};
use autoenroll_agent::localstore::State;
use autoenroll_agent::policy::Template;
use autoenroll_core::pki::CertFacts;
use autoenroll_core::renewal::{self, Decision};
use autoenroll_core::UnixTime;
use autoenroll_keys::{build_csr, cn_name, KeyAlgorithm, KeyPair};
use autoenroll_server::ra::{CheckinReport, EnrollInput, Outcome, Principal, PrincipalKind, Ra, TemplateSpec};
use clap::Args;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct FleetBench {
    /// Devices, all issued their certificate at the same moment.
    #[arg(long, default_value_t = 10_000)]
    pub devices: usize,
    /// Certificate lifetime.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1d")]
    pub validity: Duration,
    /// The template's renewal period (the window is min(period, 20 % of the lifetime)).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "4h")]
    pub renewal_period: Duration,
    /// Issuances and check-ins in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
}

/// Busiest minute, mean per minute over `minutes`, and their ratio.
fn peak(times: &[UnixTime], minutes: f64) -> (usize, f64, f64) {
    let mut per_minute: BTreeMap<i64, usize> = BTreeMap::new();
    for t in times {
        *per_minute.entry(t.0.div_euclid(60)).or_default() += 1;
    }
    let busiest = per_minute.values().copied().max().unwrap_or(0);
    let mean = times.len() as f64 / minutes.max(1.0);
    (busiest, mean, busiest as f64 / mean)
}

/// Runs `n` jobs with at most `width` in flight.
async fn in_parallel<T: Send + 'static>(
    n: usize,
    width: usize,
    job: impl Fn(usize) -> tokio::task::JoinHandle<Result<T>>,
) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(n);
    let mut running = std::collections::VecDeque::new();
    for i in 0..n {
        running.push_back(job(i));
        if running.len() >= width.max(1) {
            out.push(running.pop_front().context("queue")?.await??);
        }
    }
    while let Some(h) = running.pop_front() {
        out.push(h.await??);
    }
    Ok(out)
}

pub async fn fleet(b: FleetBench) -> Result<i32> {
    let dir = tempfile::tempdir()?;
    let cfg = autoenroll_server::config::RawConfig { data_dir: Some(dir.path().join("data")), ..Default::default() }
        .validate()?;
    let ra = Arc::new(Ra::open(cfg.ra, Arc::new(autoenroll_server::SystemClock)).await?);
    let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    let spec = TemplateSpec {
        validity_secs: Some(secs(b.validity)),
        renewal_secs: Some(secs(b.renewal_period)),
        ext_key_usage: Some("clientAuth".into()),
        ..Default::default()
    };
    let t = ra.create_template("Fleet", &spec).await?;
    println!("cpu: {}", crate::bench::cpu_model());
    println!(
        "fleet of {} devices, template validity {} renewal period {}",
        b.devices,
        humantime::format_duration(b.validity),
        humantime::format_duration(b.renewal_period)
    );

    // Everyone enrolls at once.
    let key = Arc::new(KeyPair::generate(KeyAlgorithm::P256)?);
    let started = Instant::now();
    let issued = in_parallel(b.devices, b.concurrency, |i| {
        let (ra, key) = (ra.clone(), key.clone());
        tokio::spawn(async move {
            let device = format!("fleet-{i:06}");
            let principal = Principal {
                kind: PrincipalKind::Account {
                    name: "bench".into(),
                    templates: vec![],
                    groups: vec![],
                    devices: vec!["*".into()],
                    sign_in_token: None,
                },
                device: device.clone(),
            };
            let csr = build_csr(&key, cn_name(&device)?, vec![])?;
            let input = EnrollInput { principal: &principal, csr_der: &csr, template_name: Some("Fleet") };
            match ra.enroll(input).await? {
                Outcome::Issued(issued) => Ok((device, issued)),
                Outcome::Pending { request_id } => anyhow::bail!("request {request_id} is pending"),
            }
        })
    })
    .await?;
    let issuing = started.elapsed();

    // Each device checks in and decides when to renew, as the agent does.
    let policy = Template {
        name: t.name.clone(),
        oid: t.oid.to_string(),
        major: t.major,
        minor: t.minor,
        validity_secs: t.validity_secs,
        renewal_secs: t.renewal_secs,
        enroll: true,
        auto_enroll: true,
        key_algorithm: KeyAlgorithm::P256,
        supplies_subject: false,
        supplies_san: false,
        superseded: vec![],
        client_auth: true,
    };
    let policy = Arc::new(policy);
    let started = Instant::now();
    let decided = in_parallel(issued.len(), b.concurrency, |i| {
        let (ra, policy) = (ra.clone(), policy.clone());
        let (device, cert) = (issued[i].0.clone(), issued[i].1.clone());
        tokio::spawn(async move {
            let facts = CertFacts::parse(&cert.certificate_der).map_err(|e| anyhow::anyhow!("{e}"))?;
            let principal = Principal {
                kind: PrincipalKind::Certificate {
                    serial: cert.serial.clone(),
                    template: cert.template.clone(),
                    current: true,
                },
                device: device.clone(),
            };
            let report = CheckinReport {
                certificates: vec![(policy.name.clone(), facts.thumbprint.0.clone())],
                ..Default::default()
            };
            let answer = ra.checkin(&principal, &report).await?;
            let now = ra.now();
            let mut state = State::default();
            apply_checkin(&mut state, &autoenroll_server::frontends::checkin::to_wire(answer), now);
            let status = state.templates.get(&policy.name).cloned().unwrap_or_default();
            let local =
                Local { held: Some(&facts), pending: None, status: &status, forced: false, supersedes_held: false };
            let by_server = match renewal::decide(&renewal_input(&policy, &local, &device, now)) {
                Decision::Keep { recheck_at } => recheck_at,
                other => anyhow::bail!("{device}: expected to keep its new certificate, got {other:?}"),
            };
            let by_rule = renewal::renew_at(facts.not_before, facts.not_after, policy.renewal_secs);
            let first_half_end = by_rule.plus_secs((facts.not_after.0 - by_rule.0) / 2);
            anyhow::ensure!(
                by_server >= by_rule && by_server <= first_half_end,
                "{device}: the server's time {by_server} is outside the first half of the window"
            );
            Ok((by_server, by_rule))
        })
    })
    .await?;
    let checking_in = started.elapsed();

    let window = (secs(b.renewal_period)).min(secs(b.validity) / 5);
    let minutes = (window / 2) as f64 / 60.0;
    let server_times: Vec<UnixTime> = decided.iter().map(|d| d.0).collect();
    let rule_times: Vec<UnixTime> = decided.iter().map(|d| d.1).collect();
    let (busiest, mean, ratio) = peak(&server_times, minutes);
    let (rule_busiest, _, rule_ratio) = peak(&rule_times, minutes);
    println!(
        "issued {} in {:.1} s, {} check-ins in {:.1} s",
        issued.len(),
        issuing.as_secs_f64(),
        decided.len(),
        checking_in.as_secs_f64()
    );
    println!("renewal window {} min; the server places renewals in its first half ({minutes:.0} min)", window / 60);
    println!("agents following the server: busiest minute {busiest}, mean {mean:.2}/min, peak {ratio:.2}x the mean");
    println!("agents on the template's rule alone: busiest minute {rule_busiest}, peak {rule_ratio:.2}x the mean");
    Ok(0)
}
