//! `agent.toml`:
//!
//! ```toml
//! device = "web01"                       # default: the host name
//! state_dir = "/var/lib/autoenroll-agent"
//! trust_anchor = "/etc/autoenroll/root.pem"
//! renewal_mode = "signed"                # or "tls" (client certificate = the one renewed)
//! retry_min = "5m"                        # backoff: first retry, doubling...
//! retry_max = "6h"                        # ...up to this (never past half the remaining life)
//! archive_keep = 5
//! metrics_textfile = "/var/lib/prometheus/node-exporter/autoenroll.prom"   # optional
//! rest_in_fresh_process = true           # sleep between cycles in a fresh process image
//!
//! [[policy_server]]
//! url = "https://ca.example:8443/xcep"
//! priority = 1                           # lower first; failover in order
//! # or EST (RFC 7030), with the templates named here instead of by a policy:
//! # url = "https://ca.example:8443/.well-known/est"
//! # protocol = "est"
//! # labels = ["DeviceAuth", "WebServer"]
//!
//! [credentials]                          # one or both
//! username = "enroller"
//! password_file = "/etc/autoenroll/password"   # or password = "..."
//! bootstrap_token = "aet_..."            # or bootstrap_token_file
//!
//! [templates.WebServer]                  # optional per-template request details
//! subject = "web01.example"
//! dns_names = ["web01.example"]
//! hooks = [["systemctl", "reload", "nginx"]]
//! hook_timeout = "30s"
//! ```
use crate::AgentError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub device: Option<String>,
    pub state_dir: PathBuf,
    pub trust_anchor: PathBuf,
    #[serde(rename = "policy_server")]
    pub policy_servers: Vec<PolicyServer>,
    #[serde(default)]
    pub credentials: Credentials,
    #[serde(default)]
    pub templates: BTreeMap<String, TemplateOverrides>,
    /// Old certificates kept per template in the archive.
    #[serde(default = "default_keep")]
    pub archive_keep: usize,
    /// How renewals prove possession of the current certificate: `signed` (a CMS request signed
    /// with it, the default) or `tls` (it is the TLS client certificate; needs clientAuth).
    #[serde(default)]
    pub renewal_mode: RenewalMode,
    /// First retry delay after a failure, doubling up to `retry_max` (never past half the
    /// remaining lifetime, floor `retry_min`).
    #[serde(default = "default_retry_min", with = "humantime_serde_compat")]
    pub retry_min: std::time::Duration,
    #[serde(default = "default_retry_max", with = "humantime_serde_compat")]
    pub retry_max: std::time::Duration,
    /// Check in with the policy server's host (`/checkin`) each cycle and follow its
    /// view (its renewal time, revoked or lost certificates, an interrupted renewal). Local
    /// rules still apply when it does not answer. Only a client certificate checks in.
    #[serde(default = "default_true")]
    pub checkin: bool,
    /// A Prometheus node-exporter textfile written after each cycle (e.g.
    /// /var/lib/prometheus/node-exporter/autoenroll.prom): expiry, renewal time and last
    /// result per template.
    #[serde(default)]
    pub metrics_textfile: Option<PathBuf>,
    /// Between cycles the daemon replaces itself (same process, same PID) with a fresh image of
    /// its program that only sleeps until the next cycle: the memory a cycle touched (TLS,
    /// parsing, the policy) is not kept resident for the hours in between.
    #[serde(default = "default_true")]
    pub rest_in_fresh_process: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RenewalMode {
    #[default]
    Signed,
    Tls,
}

fn default_retry_min() -> std::time::Duration {
    std::time::Duration::from_secs(300)
}

fn default_retry_max() -> std::time::Duration {
    std::time::Duration::from_secs(6 * 3600)
}

fn default_hook_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(60)
}

/// Durations as humantime strings ("5m", "30s", "6h").
mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer};
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

fn default_true() -> bool {
    true
}

fn default_keep() -> usize {
    5
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyServer {
    pub url: String,
    #[serde(default)]
    pub priority: u32,
    #[serde(default)]
    pub protocol: Protocol,
    /// EST only: the labels (on autoenroll, template names) to hold one certificate each of.
    #[serde(default)]
    pub labels: Vec<String>,
}

/// How the agent learns what to hold and asks for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// MS-XCEP policy (the server says which templates), MS-WSTEP enrollment.
    #[default]
    Xcep,
    /// RFC 7030: `url` is the EST base (`https://host/.well-known/est`) and `labels` the
    /// templates; each label's `/csrattrs` gives the key to make.
    Est,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    pub bootstrap_token: Option<String>,
    pub bootstrap_token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateOverrides {
    pub subject: Option<String>,
    #[serde(default)]
    pub dns_names: Vec<String>,
    pub key_algorithm: Option<String>,
    pub renewal_mode: Option<RenewalMode>,
    /// Renew with the current key (the template must allow same-key renewal).
    #[serde(default)]
    pub reuse_key: bool,
    /// Commands run after a new certificate is installed: argv lists, no shell. They get
    /// AUTOENROLL_TEMPLATE, _EVENT (enroll|renew), _SERIAL, _OLD_SERIAL, _CERT, _KEY, _CHAIN,
    /// _FULLCHAIN in their environment.
    #[serde(default)]
    pub hooks: Vec<Vec<String>>,
    #[serde(default = "default_hook_timeout", with = "humantime_serde_compat")]
    pub hook_timeout: std::time::Duration,
}

impl Default for TemplateOverrides {
    fn default() -> Self {
        TemplateOverrides {
            subject: None,
            dns_names: vec![],
            key_algorithm: None,
            renewal_mode: None,
            reuse_key: false,
            hooks: vec![],
            hook_timeout: default_hook_timeout(),
        }
    }
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<AgentConfig, AgentError> {
        let text = std::fs::read_to_string(path).map_err(|e| AgentError::Config(format!("{}: {e}", path.display())))?;
        let mut cfg: AgentConfig =
            toml::from_str(&text).map_err(|e| AgentError::Config(format!("{}: {e}", path.display())))?;
        // Relative paths are relative to the config file.
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut cfg.state_dir, &mut cfg.trust_anchor].into_iter().chain(cfg.metrics_textfile.as_mut()) {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), AgentError> {
        if self.policy_servers.is_empty() {
            return Err(AgentError::Config("at least one [[policy_server]] is needed".into()));
        }
        for s in &self.policy_servers {
            if !s.url.starts_with("https://") {
                return Err(AgentError::Config(format!("policy server URL {} must start with https://", s.url)));
            }
            if s.protocol != self.protocol() {
                return Err(AgentError::Config(
                    "every [[policy_server]] speaks the same protocol (xcep or est): failover needs the same answers"
                        .into(),
                ));
            }
            match s.protocol {
                Protocol::Est if s.labels.is_empty() => {
                    return Err(AgentError::Config(format!(
                        "policy server {}: protocol = \"est\" needs labels = [\"Template\", ...]",
                        s.url
                    )))
                }
                Protocol::Xcep if !s.labels.is_empty() => {
                    return Err(AgentError::Config(format!(
                        "policy server {}: labels are for protocol = \"est\" (an XCEP policy names its templates)",
                        s.url
                    )))
                }
                Protocol::Est | Protocol::Xcep => {}
            }
            // A label is one path segment of the EST address (RFC 7030 section 3.2.2) and the
            // name of its directory in the state directory.
            if let Some(bad) = s.labels.iter().find(|l| crate::localstore::safe_component(l).is_err()) {
                return Err(AgentError::Config(format!(
                    "policy server {}: label {bad:?} must be letters, digits, '-', '_' or '.', not starting with '.'",
                    s.url
                )));
            }
            let mut seen = std::collections::BTreeSet::new();
            if let Some(twice) = s.labels.iter().find(|l| !seen.insert(l.as_str())) {
                return Err(AgentError::Config(format!("policy server {}: label {twice:?} is listed twice", s.url)));
            }
            // Failover: another server must mean the same certificates.
            if s.labels != self.policy_servers[0].labels {
                return Err(AgentError::Config("every EST policy server lists the same labels".into()));
            }
        }
        for (name, t) in &self.templates {
            for h in &t.hooks {
                if h.is_empty() || h[0].is_empty() {
                    return Err(AgentError::Config(format!("templates.{name}.hooks: empty command")));
                }
            }
        }
        if self.retry_min.is_zero() || self.retry_max < self.retry_min {
            return Err(AgentError::Config("retry_min must be positive and not above retry_max".into()));
        }
        Ok(())
    }

    /// The policy servers' protocol (validation makes them all the same).
    pub fn protocol(&self) -> Protocol {
        self.policy_servers.first().map(|s| s.protocol).unwrap_or_default()
    }

    pub fn device_name(&self) -> String {
        self.device.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "localhost".into())
        })
    }

    pub fn password(&self) -> Result<Option<(String, String)>, AgentError> {
        let Some(user) = &self.credentials.username else { return Ok(None) };
        let password = match (&self.credentials.password, &self.credentials.password_file) {
            (Some(p), _) => p.clone(),
            (None, Some(f)) => std::fs::read_to_string(f)
                .map_err(|e| AgentError::Config(format!("{}: {e}", f.display())))?
                .trim_end()
                .to_string(),
            (None, None) => {
                return Err(AgentError::Config("credentials.username needs password or password_file".into()))
            }
        };
        Ok(Some((user.clone(), password)))
    }

    pub fn bootstrap_token(&self) -> Result<Option<String>, AgentError> {
        match (&self.credentials.bootstrap_token, &self.credentials.bootstrap_token_file) {
            (Some(t), _) => Ok(Some(t.trim().to_string())),
            (None, Some(f)) => Ok(Some(
                std::fs::read_to_string(f)
                    .map_err(|e| AgentError::Config(format!("{}: {e}", f.display())))?
                    .trim()
                    .to_string(),
            )),
            (None, None) => Ok(None),
        }
    }

    pub fn trust_anchor_der(&self) -> Result<Vec<Vec<u8>>, AgentError> {
        let pem = std::fs::read(&self.trust_anchor)
            .map_err(|e| AgentError::Config(format!("trust anchor {}: {e}", self.trust_anchor.display())))?;
        let certs = x509_cert::Certificate::load_pem_chain(&pem).map_err(|e| {
            AgentError::Config(format!(
                "trust anchor {} is not a PEM certificate file ({e}): expected the server's root CA \
                 certificate, `-----BEGIN CERTIFICATE-----` blocks, e.g. <data-dir>/ca/root.pem",
                self.trust_anchor.display()
            ))
        })?;
        if certs.is_empty() {
            return Err(AgentError::Config(format!(
                "trust anchor {} holds no certificate: expected the server's root CA certificate (PEM)",
                self.trust_anchor.display()
            )));
        }
        certs.iter().map(|c| der::Encode::to_der(c).map_err(|e| AgentError::Config(e.to_string()))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(servers: &str) -> Result<AgentConfig, AgentError> {
        let cfg: AgentConfig = toml::from_str(&format!("state_dir = \"s\"\ntrust_anchor = \"r.pem\"\n{servers}"))
            .map_err(|e| AgentError::Config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    #[test]
    fn est_servers_name_their_labels_and_do_not_mix_with_xcep() {
        let est =
            "[[policy_server]]\nurl = \"https://ca/.well-known/est\"\nprotocol = \"est\"\nlabels = [\"Device\"]\n";
        assert_eq!(parse(est).unwrap().protocol(), Protocol::Est);
        let xcep = "[[policy_server]]\nurl = \"https://ca/xcep\"\n";
        assert_eq!(parse(xcep).unwrap().protocol(), Protocol::Xcep);
        let refused = |text: &str, says: &str| {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        };
        refused(&format!("{est}{xcep}"), "same protocol");
        refused("[[policy_server]]\nurl = \"https://ca/.well-known/est\"\nprotocol = \"est\"\n", "needs labels");
        refused(&format!("{xcep}labels = [\"Device\"]\n"), "labels are for");
        for bad in ["a/../b", "", "..", ".hidden", "a~b"] {
            refused(&est.replace("Device", bad), "must be letters");
        }
        refused(&est.replace("[\"Device\"]", "[\"Device\", \"Device\"]"), "listed twice");
        refused(&format!("{est}{}", est.replace("Device", "Other")), "same labels");
        refused(&est.replace("\"est\"", "\"scep\""), "unknown variant");
    }
}
