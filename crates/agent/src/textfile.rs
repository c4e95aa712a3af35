//! Prometheus node-exporter textfile (`metrics_textfile` in agent.toml): after each cycle, one
//! file per host with each certificate's expiry, renewal time and last result, so a fleet's
//! agents are watched where its hosts already are. Written to a temporary file and renamed, so
//! the collector never reads half a file.
use crate::cycle::{renewal_time, Schedule};
use crate::localstore::{LocalStore, State};
use crate::{AgentConfig, AgentError};
use autoenroll_core::UnixTime;
use std::fmt::Write;
use std::path::Path;

/// Label values as the exposition format wants them.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The text for the state directory as it is now; `cycle_ok` is whether the last cycle as a
/// whole succeeded (policy read, no template failed).
pub fn render(store: &LocalStore, state: &State, device: &str, now: UnixTime, cycle_ok: bool) -> String {
    let mut out = String::new();
    let mut series = |name: &str, help: &str, kind: &str, rows: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in rows {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let mut names = store.live_templates().unwrap_or_default();
    for t in state.templates.keys() {
        if !names.contains(t) {
            names.push(t.clone());
        }
    }
    names.sort();
    let mut not_after = Vec::new();
    let mut renew_at = Vec::new();
    let mut ok = Vec::new();
    let mut failures = Vec::new();
    let mut last_success = Vec::new();
    for name in &names {
        let t = label(name);
        let status = state.templates.get(name).cloned().unwrap_or_default();
        if let Ok(Some(held)) = store.current(name) {
            let f = &held.facts;
            not_after.push((format!("{{template=\"{t}\",serial=\"{}\"}}", label(&f.serial.0)), f.not_after.0 as f64));
            if let Some(p) = state.policy.iter().find(|p| &p.name == name) {
                let (at, source) = renewal_time(f, p.renewal_secs, status.server.as_ref(), device);
                let source = match source {
                    Schedule::Server => "server",
                    Schedule::Local => "local",
                };
                renew_at.push((format!("{{template=\"{t}\",source=\"{source}\"}}"), at.0 as f64));
            }
        }
        let good = status.last_error.is_none() && status.failures == 0;
        ok.push((format!("{{template=\"{t}\"}}"), if good { 1.0 } else { 0.0 }));
        failures.push((format!("{{template=\"{t}\"}}"), f64::from(status.failures)));
        if let Some(at) = status.last_success {
            last_success.push((format!("{{template=\"{t}\"}}"), at as f64));
        }
    }
    series(
        "autoenroll_agent_certificate_not_after_seconds",
        "Expiry of the certificate held for a template (Unix time).",
        "gauge",
        not_after,
    );
    series(
        "autoenroll_agent_certificate_renew_at_seconds",
        "When the held certificate renews (Unix time), by the server's schedule or the template's rule.",
        "gauge",
        renew_at,
    );
    series("autoenroll_agent_template_ok", "1 if the template's last attempt succeeded.", "gauge", ok);
    series("autoenroll_agent_template_failures", "Consecutive failed attempts for the template.", "gauge", failures);
    series(
        "autoenroll_agent_template_last_success_seconds",
        "Last successful enrollment or renewal (Unix time).",
        "gauge",
        last_success,
    );
    series(
        "autoenroll_agent_blocked",
        "1 if the server said at the last check-in that this device is blocked.",
        "gauge",
        vec![(String::new(), if state.blocked { 1.0 } else { 0.0 })],
    );
    series(
        "autoenroll_agent_last_cycle_ok",
        "1 if the last cycle read policy and no template failed.",
        "gauge",
        vec![(String::new(), if cycle_ok { 1.0 } else { 0.0 })],
    );
    series(
        "autoenroll_agent_last_cycle_seconds",
        "When the last cycle ran (Unix time).",
        "gauge",
        vec![(String::new(), now.0 as f64)],
    );
    out
}

/// Writes the textfile for the configured state directory (if `metrics_textfile` is set).
pub fn write(cfg: &AgentConfig, now: UnixTime, cycle_ok: bool) -> Result<(), AgentError> {
    let Some(path) = &cfg.metrics_textfile else { return Ok(()) };
    let store = LocalStore::open(&cfg.state_dir, cfg.archive_keep)?;
    let state = store.load_state().unwrap_or_default();
    let text = render(&store, &state, &cfg.device_name(), now, cycle_ok);
    write_atomic(path, text.as_bytes())
}

/// World-readable (0644) whatever the umask: node-exporter runs as another user, and the file
/// holds no secret.
fn write_atomic(path: &Path, data: &[u8]) -> Result<(), AgentError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |e: std::io::Error| AgentError::Store { path: path.display().to_string(), message: e.to_string() };
    let tmp = path.with_extension("prom.tmp");
    std::fs::write(&tmp, data).map_err(err)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}
