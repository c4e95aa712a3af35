//! `server template list|show|create|update`.
use super::output::{self, cell, days, Output};
use super::Common;
use anyhow::Result;
use autoenroll_server::frontends::views::{self, TemplateJson};
use autoenroll_server::ra::{Template, TemplateSpec, LOCAL_ADMIN};
use clap::{Args, Subcommand};
use std::time::Duration;

#[derive(Subcommand)]
pub enum TemplateCommand {
    /// Every template; stored ones that no longer validate are listed with the reason.
    List {
        #[command(flatten)]
        common: Common,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    Show {
        #[command(flatten)]
        common: Common,
        name: String,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    Create {
        #[command(flatten)]
        common: Common,
        name: String,
        #[command(flatten)]
        fields: TemplateFields,
    },
    /// Change a template: bumps the minor version, or set --major higher to make holders renew.
    Update {
        #[command(flatten)]
        common: Common,
        name: String,
        #[command(flatten)]
        fields: TemplateFields,
    },
}

#[derive(Args, Default)]
pub struct TemplateFields {
    #[arg(long)]
    description: Option<String>,
    /// Certificate lifetime, e.g. 365d.
    #[arg(long, value_parser = humantime::parse_duration)]
    validity: Option<Duration>,
    /// Renewal period before expiry, e.g. 42d (renewal starts at the earlier of this and 80 % of the lifetime).
    #[arg(long, value_parser = humantime::parse_duration)]
    renewal_period: Option<Duration>,
    /// Key algorithm agents generate: p256, p384, rsa2048, rsa3072, rsa4096.
    #[arg(long)]
    key_algorithm: Option<String>,
    /// Minimum RSA key size accepted, 2048 or more (EC keys must be P-256 or P-384).
    #[arg(long)]
    min_key_bits: Option<u32>,
    /// Comma-separated key usages, e.g. digitalSignature,keyEncipherment.
    #[arg(long)]
    key_usage: Option<String>,
    /// Comma-separated EKUs: serverAuth, clientAuth, codeSigning, ... or dotted OIDs.
    #[arg(long)]
    eku: Option<String>,
    /// Where the subject comes from: identity (device name) or request (enrollee supplies it).
    #[arg(long)]
    subject_from: Option<String>,
    /// Copy DNS/IP subject alternative names from the request.
    #[arg(long)]
    allow_san: Option<bool>,
    /// Allow enrollment at all.
    #[arg(long)]
    enroll: Option<bool>,
    /// Agents enroll it automatically.
    #[arg(long)]
    autoenroll: Option<bool>,
    /// Renewal may keep the same key.
    #[arg(long)]
    same_key_renewal: Option<bool>,
    /// Comma-separated names of templates this one supersedes.
    #[arg(long)]
    supersedes: Option<String>,
    /// Template OID (create only; default: a new OID under this installation's arc).
    #[arg(long)]
    oid: Option<String>,
    /// Major version (higher than the current one makes every holder renew at once).
    #[arg(long)]
    major: Option<u32>,
    /// Accept renewals this long before the renewal window opens (early manual renewal).
    #[arg(long, value_parser = humantime::parse_duration)]
    renewal_grace: Option<Duration>,
    /// Hold every new enrollment for approval (`server request approve ID`).
    #[arg(long)]
    pend_all: Option<bool>,
    /// MDM RetryInterval: how often Windows devices retry a failed renewal (default 7d).
    #[arg(long, value_parser = humantime::parse_duration)]
    retry_interval: Option<Duration>,
    /// Who may enroll, comma-separated: account:*, account:NAME, account-group:NAME,
    /// device:PATTERN, device-group:NAME, token, holder:TEMPLATE.
    #[arg(long)]
    grants: Option<String>,
    /// Comma-separated DNS suffixes request-supplied names must be under (besides the device's own name).
    #[arg(long)]
    dns_suffixes: Option<String>,
    /// Comma-separated IP ranges (CIDR) request-supplied addresses must be in.
    #[arg(long)]
    ip_ranges: Option<String>,
    /// Allow wildcard names (*.suffix, under an allowed suffix).
    #[arg(long)]
    allow_wildcards: Option<bool>,
    /// Allow this server's own names and addresses, and loopback.
    #[arg(long)]
    allow_server_names: Option<bool>,
    /// A renewal may drop names of the certificate it renews (never add any).
    #[arg(long)]
    renewal_subset: Option<bool>,
    /// Comma-separated key types accepted: ec, rsa.
    #[arg(long)]
    key_types: Option<String>,
    /// MDM enrollment may pick this template when the device names it.
    #[arg(long)]
    allow_mdm: Option<bool>,
    /// A template for users (Windows user-context autoenrollment) instead of computers.
    #[arg(long)]
    for_users: Option<bool>,
}

fn secs(d: Option<Duration>) -> Option<i64> {
    d.map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl TemplateFields {
    fn spec(&self) -> TemplateSpec {
        TemplateSpec {
            oid: self.oid.clone(),
            description: self.description.clone(),
            validity_secs: secs(self.validity),
            renewal_secs: secs(self.renewal_period),
            key_algorithm: self.key_algorithm.clone(),
            min_key_bits: self.min_key_bits,
            key_usage: self.key_usage.clone(),
            ext_key_usage: self.eku.clone(),
            subject_from: self.subject_from.clone(),
            allow_san: self.allow_san,
            enroll: self.enroll,
            autoenroll: self.autoenroll,
            same_key_renewal: self.same_key_renewal,
            superseded: self.supersedes.clone(),
            major: self.major,
            renewal_grace_secs: secs(self.renewal_grace),
            pend_all: self.pend_all,
            retry_interval_secs: secs(self.retry_interval),
            grants: self.grants.clone(),
            dns_suffixes: self.dns_suffixes.clone(),
            ip_ranges: self.ip_ranges.clone(),
            allow_wildcards: self.allow_wildcards,
            allow_server_names: self.allow_server_names,
            renewal_subset: self.renewal_subset,
            key_types: self.key_types.clone(),
            allow_mdm: self.allow_mdm,
            for_users: self.for_users,
        }
    }
}

fn list_of<T: std::fmt::Display>(items: &[T]) -> String {
    items.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

/// A duration as an administrator writes it: whole days or hours when it is one.
fn span(secs: i64) -> String {
    match secs {
        0 => "0".into(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s => humantime::format_duration(std::time::Duration::from_secs(s.max(0) as u64)).to_string(),
    }
}

/// Every field of the template, as the admin API and the console show them (from the same
/// JSON view, so a new field cannot be left out here).
fn print_template(t: &Template) {
    let view = serde_json::to_value(TemplateJson::from(t)).unwrap_or_default();
    let Some(fields) = view.as_object() else { return };
    let width = fields.keys().map(String::len).max().unwrap_or(0) + 1;
    for (key, value) in fields {
        let shown = match value {
            serde_json::Value::Number(n) if key.ends_with("_secs") => {
                let secs = n.as_i64().unwrap_or(0);
                format!("{} ({secs} s)", span(secs))
            }
            serde_json::Value::Number(n) if key.ends_with("_at") => {
                autoenroll_core::UnixTime(n.as_i64().unwrap_or(0)).to_string()
            }
            serde_json::Value::String(s) => cell(s),
            serde_json::Value::Array(a) if a.is_empty() => "-".into(),
            serde_json::Value::Array(a) => cell(
                &a.iter()
                    .map(|x| x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string()))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            other => other.to_string(),
        };
        println!("{:<width$} {shown}", format!("{key}:"));
    }
}

pub async fn run(cmd: TemplateCommand) -> Result<i32> {
    match cmd {
        TemplateCommand::List { common, output } => {
            let all = common.open().await?.templates().await?;
            match output {
                Output::Json => output::json(&views::list::<_, TemplateJson>(&all.valid))?,
                Output::Table => {
                    let rows: Vec<Vec<String>> = all
                        .valid
                        .iter()
                        .map(|t| {
                            vec![
                                cell(&t.name),
                                format!("{}.{}", t.major, t.minor),
                                days(t.validity_secs),
                                days(t.renewal_secs),
                                t.key.algorithm.to_string(),
                                list_of(&t.ekus),
                                t.autoenroll.to_string(),
                                t.oid.to_string(),
                            ]
                        })
                        .collect();
                    output::table(&["NAME", "VERSION", "VALIDITY", "RENEWAL", "KEY", "EKU", "AUTO", "OID"], &rows);
                }
            }
            for bad in &all.invalid {
                eprintln!(
                    "template {} does not validate and is left out of policy: {}",
                    cell(&bad.name),
                    cell(&bad.reason)
                );
            }
        }
        TemplateCommand::Show { common, name, output } => {
            let t = common.open().await?.template(&name).await?;
            match output {
                Output::Json => output::json(&TemplateJson::from(&t))?,
                Output::Table => print_template(&t),
            }
        }
        TemplateCommand::Create { common, name, fields } => {
            print_template(&common.open().await?.create_template(&name, &fields.spec()).await?);
        }
        TemplateCommand::Update { common, name, fields } => {
            print_template(&common.open().await?.update_template(LOCAL_ADMIN, &name, &fields.spec()).await?);
        }
    }
    Ok(0)
}
