//! `server device|cert|request|report|audit`: the inventory and what administrators do with it.
use super::output::{self, cell, opt_time, time, Output};
use super::Common;
use anyhow::Result;
use autoenroll_core::clock::Clock;
use autoenroll_core::model::{CertState, DeviceState, RevocationReason};
use autoenroll_core::UnixTime;
use autoenroll_server::frontends::views::{self, AuditJson, CertificateJson, DeviceJson, RequestJson, StuckJson};
use autoenroll_server::ra::{AuditFilter, Certificate, CertificateFilter, LOCAL_ADMIN};
use autoenroll_server::SystemClock;
use clap::{Args, Subcommand};
use std::time::Duration;

#[derive(Subcommand)]
pub enum DeviceCommand {
    /// Refuse every enrollment and renewal of this device.
    Block {
        #[command(flatten)]
        common: Common,
        name: String,
        /// Also revoke every certificate the device holds.
        #[arg(long)]
        revoke: bool,
        #[arg(long, default_value = "privilegeWithdrawn")]
        reason: RevocationReason,
    },
    Unblock {
        #[command(flatten)]
        common: Common,
        name: String,
    },
    /// Remove a device that never requested anything (devices with history are blocked instead).
    Remove {
        #[command(flatten)]
        common: Common,
        name: String,
    },
    /// Devices with their current certificates and next renewal.
    List {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1000)]
        limit: i64,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// One device: whom it is bound to, its groups and its certificates.
    Show {
        #[command(flatten)]
        common: Common,
        name: String,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Bind a device to an owner (account:NAME or admin), or --unbind it so the next account
    /// allowed to enroll it binds it (a device moved to another team).
    Rebind {
        #[command(flatten)]
        common: Common,
        name: String,
        #[arg(long, conflicts_with = "unbind", required_unless_present = "unbind")]
        owner: Option<String>,
        #[arg(long)]
        unbind: bool,
    },
}

#[derive(Subcommand)]
pub enum DeviceGroupCommand {
    /// Put devices in a group (the devices must be known).
    Add {
        #[command(flatten)]
        common: Common,
        group: String,
        #[arg(required = true)]
        devices: Vec<String>,
    },
    /// Take devices out of a group.
    Remove {
        #[command(flatten)]
        common: Common,
        group: String,
        #[arg(required = true)]
        devices: Vec<String>,
    },
    /// The devices in a group.
    List {
        #[command(flatten)]
        common: Common,
        group: String,
    },
}

#[derive(Subcommand)]
pub enum CertCommand {
    /// Revoke a certificate (it can no longer renew or authenticate).
    Revoke {
        #[command(flatten)]
        common: Common,
        serial: String,
        /// unspecified, keyCompromise, caCompromise, affiliationChanged, superseded,
        /// cessationOfOperation, privilegeWithdrawn
        #[arg(long, default_value = "unspecified")]
        reason: RevocationReason,
    },
    /// Certificates, soonest expiry first, optionally filtered.
    List {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        filter: CertFilterArgs,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// "Renew now" for a cohort: their renewals are accepted from now on, and their agents are
    /// told at their next check-in (moves the server's renewal time of the matching issued
    /// certificates to now).
    RenewNow {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        filter: CertFilterArgs,
    },
}

#[derive(Args, Clone)]
pub struct CertFilterArgs {
    /// Only certificates expiring within this time from now (e.g. 30d).
    #[arg(long, value_parser = humantime::parse_duration)]
    expiring_within: Option<Duration>,
    #[arg(long)]
    template: Option<String>,
    /// Template major version.
    #[arg(long)]
    major: Option<u32>,
    /// issued, renewed, revoked, signing.
    #[arg(long)]
    state: Option<CertState>,
    /// One device or several (comma-separated or repeated); exact names.
    #[arg(long, value_delimiter = ',')]
    device: Vec<String>,
    /// Only certificates issued before this time (RFC 3339, e.g. 2026-11-01T00:00:00Z).
    #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
    issued_before: Option<std::time::SystemTime>,
    #[arg(long, default_value_t = 1000)]
    limit: i64,
}

impl CertFilterArgs {
    fn filter(&self) -> CertificateFilter {
        let now = SystemClock.now();
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        CertificateFilter {
            expiring_before: self.expiring_within.map(|d| now.plus_secs(secs(d))),
            // "Expiring within" means still valid now, not expired (and renewed away) already.
            expiring_after: self.expiring_within.map(|_| now),
            template: self.template.clone(),
            template_major: self.major,
            state: self.state,
            devices: self.device.clone(),
            issued_before: self
                .issued_before
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| UnixTime(secs(d))),
            limit: self.limit,
        }
    }
}

#[derive(Subcommand)]
pub enum RequestCommand {
    /// Requests waiting for approval (or in another status), oldest first.
    List {
        #[command(flatten)]
        common: Common,
        /// pending (default), received, signing, issued or denied.
        #[arg(long, default_value = "pending")]
        status: String,
        #[arg(long, default_value = "100")]
        limit: i64,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Issue a pending request.
    Approve {
        #[command(flatten)]
        common: Common,
        id: i64,
    },
    /// Refuse a pending request.
    Deny {
        #[command(flatten)]
        common: Common,
        id: i64,
        #[arg(long, default_value = "denied by an administrator")]
        reason: String,
    },
}

#[derive(Subcommand)]
pub enum ReportCommand {
    /// Certificates whose renewal is overdue, with the device's last refusal: what is stuck and why.
    Stuck {
        #[command(flatten)]
        common: Common,
        /// How long past its renewal time a certificate counts as stuck. Default: a day, or a
        /// tenth of the certificate's lifetime when that is shorter.
        #[arg(long, value_parser = humantime::parse_duration)]
        overdue: Option<Duration>,
        #[arg(long, default_value_t = 1000)]
        limit: i64,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
}

#[derive(Args)]
pub struct AuditArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, default_value_t = 50)]
    limit: i64,
    /// Only events of this action (e.g. renew, issue, checkin, cert.revoke).
    #[arg(long)]
    action: Option<String>,
    /// Only events about this subject (a device, a serial, a template).
    #[arg(long)]
    subject: Option<String>,
    /// Only events of this actor (e.g. admin, admin:ops, account:alice, server).
    #[arg(long)]
    actor: Option<String>,
    /// Only events with this outcome (ok, issued, pending, refused).
    #[arg(long)]
    outcome: Option<autoenroll_core::model::AuditOutcome>,
    /// Only events within this long before now (e.g. 24h, 7d).
    #[arg(long, value_parser = humantime::parse_duration)]
    since: Option<std::time::Duration>,
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

fn print_certs(certs: &[Certificate]) {
    let rows: Vec<Vec<String>> = certs
        .iter()
        .map(|c| {
            vec![
                c.serial.clone(),
                cell(&c.device),
                cell(&c.template),
                format!("{}.{}", c.template_major, c.template_minor),
                time(c.not_after),
                opt_time(c.renew_after),
                c.state.to_string(),
            ]
        })
        .collect();
    output::table(&["SERIAL", "DEVICE", "TEMPLATE", "VERSION", "NOT AFTER", "RENEWS", "STATE"], &rows);
}

pub async fn device(cmd: DeviceCommand) -> Result<i32> {
    match cmd {
        DeviceCommand::Block { common, name, revoke, reason } => {
            let ra = common.open().await?;
            if revoke {
                let n = ra.block_and_revoke(LOCAL_ADMIN, &name, reason).await?;
                println!("blocked {name}, revoked {n} certificates ({reason})");
            } else {
                ra.set_device_state(LOCAL_ADMIN, &name, DeviceState::Blocked).await?;
                println!("blocked {name}");
            }
        }
        DeviceCommand::Unblock { common, name } => {
            common.open().await?.set_device_state(LOCAL_ADMIN, &name, DeviceState::Active).await?;
            println!("unblocked {name}");
        }
        DeviceCommand::Remove { common, name } => {
            common.open().await?.remove_device(&name).await?;
            println!("removed {name}");
        }
        DeviceCommand::List { common, limit, output } => {
            let devices = common.open().await?.devices(limit).await?;
            match output {
                Output::Json => output::json(&views::list::<_, DeviceJson>(&devices))?,
                Output::Table => {
                    let rows: Vec<Vec<String>> = devices
                        .iter()
                        .map(|d| {
                            vec![
                                cell(&d.name),
                                if d.state == DeviceState::Blocked { "yes" } else { "no" }.to_string(),
                                d.certificates.to_string(),
                                opt_time(d.next_renewal),
                                time(d.last_seen),
                            ]
                        })
                        .collect();
                    output::table(&["DEVICE", "BLOCKED", "CERTS", "NEXT RENEWAL", "LAST SEEN"], &rows);
                }
            }
        }
        DeviceCommand::Show { common, name, output } => {
            let ra = common.open().await?;
            let (device, groups) = ra.device(&name).await?;
            let filter = CertificateFilter { devices: vec![name.clone()], limit: 1000, ..Default::default() };
            let certs = ra.certificates_matching(&filter).await?;
            match output {
                Output::Json => output::json(&serde_json::json!({
                    "device": {
                        "name": device.name,
                        "blocked": device.is_blocked(),
                        "owner": device.owner,
                        "groups": groups,
                        "created_at": device.created_at.0,
                        "last_seen": device.last_seen.0,
                    },
                    "certificates": views::list::<_, CertificateJson>(&certs),
                }))?,
                Output::Table => {
                    println!("device:       {}", cell(&device.name));
                    println!("blocked:      {}", device.is_blocked());
                    println!("bound to:     {}", cell(device.owner.as_deref().unwrap_or("(nobody yet)")));
                    println!("groups:       {}", cell(&groups.join(",")));
                    println!("first seen:   {}", time(device.created_at));
                    println!("last seen:    {}", time(device.last_seen));
                    print_certs(&certs);
                }
            }
        }
        DeviceCommand::Rebind { common, name, owner, unbind: _ } => {
            common.open().await?.rebind_device(LOCAL_ADMIN, &name, owner.as_deref()).await?;
            match owner {
                Some(o) => println!("{name} bound to {}", cell(&o)),
                None => println!("{name} unbound"),
            }
        }
    }
    Ok(0)
}

pub async fn device_group(cmd: DeviceGroupCommand) -> Result<i32> {
    match cmd {
        DeviceGroupCommand::Add { common, group, devices } => {
            let n = common.open().await?.add_to_device_group(LOCAL_ADMIN, &group, &devices).await?;
            println!("added {n} devices to {group}");
        }
        DeviceGroupCommand::Remove { common, group, devices } => {
            let n = common.open().await?.remove_from_device_group(LOCAL_ADMIN, &group, &devices).await?;
            println!("removed {n} devices from {group}");
        }
        DeviceGroupCommand::List { common, group } => {
            for d in common.open().await?.device_group_members(&group).await? {
                println!("{}", cell(&d));
            }
        }
    }
    Ok(0)
}

pub async fn cert(cmd: CertCommand) -> Result<i32> {
    match cmd {
        CertCommand::Revoke { common, serial, reason } => {
            common.open().await?.revoke(LOCAL_ADMIN, &serial, reason).await?;
            println!("revoked {serial} ({reason})");
        }
        CertCommand::List { common, filter, output } => {
            let certs = common.open().await?.certificates_matching(&filter.filter()).await?;
            match output {
                Output::Json => output::json(&views::list::<_, CertificateJson>(&certs))?,
                Output::Table => print_certs(&certs),
            }
        }
        CertCommand::RenewNow { common, filter } => {
            let n = common.open().await?.renew_now(LOCAL_ADMIN, &filter.filter()).await?;
            println!("{n} certificates may renew now");
        }
    }
    Ok(0)
}

pub async fn request(cmd: RequestCommand) -> Result<i32> {
    match cmd {
        RequestCommand::List { common, status, limit, output } => {
            let status: autoenroll_core::model::RequestStatus =
                status.parse().map_err(|e| anyhow::anyhow!("--status: {e}"))?;
            let rows = common.open().await?.requests(status, limit).await?;
            match output {
                Output::Json => output::json(&views::list::<_, RequestJson>(&rows))?,
                Output::Table => {
                    let rows: Vec<Vec<String>> = rows
                        .iter()
                        .map(|r| {
                            vec![
                                r.id.to_string(),
                                cell(&r.device),
                                cell(&r.template),
                                r.kind.to_string(),
                                time(r.created_at),
                                cell(&r.requester),
                                cell(&r.detail),
                            ]
                        })
                        .collect();
                    output::table(&["ID", "DEVICE", "TEMPLATE", "KIND", "SINCE", "REQUESTER", "DETAIL"], &rows);
                }
            }
        }
        RequestCommand::Approve { common, id } => {
            let issued = common.open().await?.approve(LOCAL_ADMIN, id).await?;
            println!("request {id} approved: serial {}", issued.serial);
        }
        RequestCommand::Deny { common, id, reason } => {
            common.open().await?.deny(LOCAL_ADMIN, id, &reason).await?;
            println!("request {id} denied");
        }
    }
    Ok(0)
}

pub async fn report(cmd: ReportCommand) -> Result<i32> {
    let ReportCommand::Stuck { common, overdue, limit, output } = cmd;
    let overdue = overdue.map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let rows = common.open().await?.stuck(overdue, limit).await?;
    match output {
        Output::Json => output::json(&views::list::<_, StuckJson>(&rows))?,
        Output::Table => {
            let rows: Vec<Vec<String>> = rows
                .into_iter()
                .map(|r| {
                    let device = if r.device_blocked { format!("{} (blocked)", r.device) } else { r.device };
                    vec![
                        cell(&device),
                        cell(&r.template),
                        r.serial,
                        time(r.renew_after),
                        cell(r.last_error.as_deref().unwrap_or("-")),
                    ]
                })
                .collect();
            output::table(&["DEVICE", "TEMPLATE", "SERIAL", "DUE SINCE", "LAST ERROR"], &rows);
        }
    }
    Ok(0)
}

/// SCEP transaction ids can be 77-digit decimal numbers (certmonger): the table shows their
/// start and end (`--output json` has them whole).
fn short_actor(actor: &str) -> String {
    match actor.strip_prefix("scep:") {
        Some(id) if id.chars().count() > 24 => {
            let chars: Vec<char> = id.chars().collect();
            let head: String = chars[..10].iter().collect();
            let tail: String = chars[chars.len() - 6..].iter().collect();
            format!("scep:{head}…{tail}")
        }
        _ => actor.to_string(),
    }
}

pub async fn audit(a: AuditArgs) -> Result<i32> {
    let ra = a.common.open().await?;
    let since = a.since.map(|d| ra.now().minus_secs(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)));
    let filter =
        AuditFilter { action: a.action, subject: a.subject, actor: a.actor, outcome: a.outcome, since, limit: a.limit };
    let events = ra.audit_events(&filter).await?;
    match a.output {
        Output::Json => output::json(&views::list::<_, AuditJson>(&events))?,
        Output::Table => {
            let rows: Vec<Vec<String>> = events
                .iter()
                .map(|e| {
                    vec![
                        time(e.at),
                        cell(&short_actor(&e.actor)),
                        cell(&e.action),
                        e.outcome.to_string(),
                        cell(&e.subject),
                        cell(&e.detail),
                    ]
                })
                .collect();
            output::table(&["TIME", "ACTOR", "ACTION", "OUTCOME", "SUBJECT", "DETAIL"], &rows);
        }
    }
    Ok(0)
}
