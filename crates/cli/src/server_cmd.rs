use anyhow::{bail, Context, Result};
use autoenroll_server::config::RawConfig;
use autoenroll_server::ra::{AccountSpec, Ra, TemplateSpec, TokenSpec};
use autoenroll_server::{app, SystemClock};
use clap::{Args, Subcommand, ValueEnum};
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args, Clone, Default)]
pub struct Common {
    /// TOML configuration file (command-line flags override it).
    #[arg(long, env = "AUTOENROLL_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (CA, database, listener TLS identity). Default ./autoenroll-data
    #[arg(long, env = "AUTOENROLL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Database URL. Default sqlite://<data-dir>/autoenroll.db
    #[arg(long, env = "AUTOENROLL_DATABASE")]
    database: Option<String>,
}

impl Common {
    fn raw(&self) -> Result<RawConfig> {
        let file = match &self.config {
            Some(p) => RawConfig::from_file(p)?,
            None => RawConfig::default(),
        };
        Ok(file.merge(RawConfig {
            data_dir: self.data_dir.clone(),
            database: self.database.clone(),
            ..Default::default()
        }))
    }

    /// Opens an existing data directory (administration never creates a CA by accident).
    async fn open(&self) -> Result<Ra> {
        let cfg = self.raw()?.validate()?;
        if !autoenroll_server::ra::ca_exists(&cfg.ra.data_dir) {
            bail!(
                "{} holds no CA: run `autoenroll server init` or `autoenroll server run` first (or pass --data-dir)",
                cfg.ra.data_dir.display()
            );
        }
        Ok(Ra::open(cfg.ra, Arc::new(SystemClock)).await?)
    }
}

// Parsed once per process; the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum ServerCommand {
    /// Create the CA hierarchy, database and default templates.
    Init {
        #[command(flatten)]
        common: Common,
        /// CA key algorithm: p256 (default), p384, rsa2048, rsa3072, rsa4096.
        #[arg(long)]
        key_algorithm: Option<String>,
        /// Organization name in the CA certificates.
        #[arg(long)]
        organization: Option<String>,
    },
    /// Run the HTTPS server (initialises the data directory on first run).
    Run {
        #[command(flatten)]
        common: Common,
        /// Address to listen on. Default 127.0.0.1:8443 (port 0 picks a free port).
        #[arg(long)]
        listen: Option<String>,
        /// DNS name for the listener certificate (repeatable). Default localhost.
        #[arg(long = "hostname")]
        hostnames: Vec<String>,
        /// Base URL advertised to clients, e.g. https://ca.example.com:8443
        #[arg(long)]
        public_url: Option<String>,
        /// Also serve SCEP over plain HTTP on this address, e.g. 0.0.0.0:8080 (port 0 picks one).
        #[arg(long)]
        scep_http_listen: Option<String>,
        /// Accept DES/3DES SCEP envelopes and SHA-1 signatures from old clients.
        #[arg(long)]
        scep_legacy_ciphers: bool,
    },
    /// SCEP challenges: one-time dynamic ones, and static per-template ones.
    Challenge {
        #[command(subcommand)]
        command: ChallengeCommand,
    },
    /// Certificate templates.
    Template {
        #[command(subcommand)]
        command: TemplateCommand,
    },
    /// Enrollment accounts (WS-Security username/password).
    Account {
        #[command(subcommand)]
        command: AccountCommand,
    },
    /// One-time bootstrap tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Issued certificates.
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
    /// Devices in the inventory.
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// Requests held for approval.
    Request {
        #[command(subcommand)]
        command: RequestCommand,
    },
    /// Tokens for the admin REST API (/admin/v1).
    AdminToken {
        #[command(subcommand)]
        command: AdminTokenCommand,
    },
    /// Fleet reports.
    Report {
        #[command(subcommand)]
        command: ReportCommand,
    },
    /// The audit log, newest first: issuances, renewals, refusals with their reason, admin actions.
    Audit {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
}

#[derive(Subcommand)]
pub enum ChallengeCommand {
    /// Create a one-time challenge bound to a device, a template and the expected request;
    /// prints the challenge.
    Create {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        device: String,
        #[arg(long)]
        template: String,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
        ttl: Duration,
        /// Expected subject (default CN=<device>).
        #[arg(long)]
        subject: Option<String>,
        /// Expected DNS names, comma-separated (default: none).
        #[arg(long, value_delimiter = ',')]
        dns: Vec<String>,
        /// Expected IP addresses, comma-separated (default: none).
        #[arg(long, value_delimiter = ',')]
        ip: Vec<std::net::IpAddr>,
        /// Minimum RSA key size (default: the template's, at least 2048).
        #[arg(long)]
        min_key_bits: Option<i64>,
        /// EKUs the request may ask for, comma-separated (default: the template's).
        #[arg(long, value_delimiter = ',')]
        eku: Option<Vec<String>>,
    },
    /// Set a template's static challenge (read from standard input), or clear it.
    Static {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        template: String,
        #[arg(long)]
        clear: bool,
    },
}

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
        reason: String,
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
    /// One device and its certificates.
    Show {
        #[command(flatten)]
        common: Common,
        name: String,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    Unblock {
        #[command(flatten)]
        common: Common,
        name: String,
    },
}

#[derive(Subcommand)]
pub enum RequestCommand {
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

#[derive(Clone, Copy, ValueEnum, Default)]
pub enum Output {
    #[default]
    Table,
    Json,
}

#[derive(Subcommand)]
pub enum TemplateCommand {
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
    },
    Create {
        #[command(flatten)]
        common: Common,
        name: String,
        #[command(flatten)]
        fields: TemplateFields,
    },
    /// Change a template: bumps the minor version, or set --major higher to make holders re-enroll.
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
    /// Minimum RSA key size accepted (EC keys must be P-256 or P-384).
    #[arg(long)]
    min_key_bits: Option<i64>,
    /// Comma-separated key usages, e.g. digitalSignature,keyEncipherment.
    #[arg(long)]
    key_usage: Option<String>,
    /// Comma-separated EKUs: serverAuth, clientAuth or dotted OIDs.
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
    /// Major version (higher than the current one makes every holder re-enroll).
    #[arg(long)]
    major: Option<i64>,
    /// Accept renewals this long before the renewal window opens (early manual renewal).
    #[arg(long, value_parser = humantime::parse_duration)]
    renewal_grace: Option<Duration>,
    /// Hold every new enrollment for approval (`server request approve ID`).
    #[arg(long)]
    pend_all: Option<bool>,
    /// MDM RetryInterval: how often Windows devices retry a failed renewal (default 7d).
    #[arg(long, value_parser = humantime::parse_duration)]
    retry_interval: Option<Duration>,
}

impl TemplateFields {
    fn spec(&self) -> TemplateSpec {
        TemplateSpec {
            oid: self.oid.clone(),
            description: self.description.clone(),
            validity_secs: self.validity.map(|d| d.as_secs() as i64),
            renewal_secs: self.renewal_period.map(|d| d.as_secs() as i64),
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
            renewal_grace_secs: self.renewal_grace.map(|d| d.as_secs() as i64),
            pend_all: self.pend_all,
            retry_interval_secs: self.retry_interval.map(|d| d.as_secs() as i64),
        }
    }
}

#[derive(Subcommand)]
pub enum AccountCommand {
    /// Create an account; the password comes from --password-file or standard input.
    Create {
        #[command(flatten)]
        common: Common,
        name: String,
        /// File holding the password (otherwise it is read from standard input).
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Comma-separated templates the account may enroll (default: all enrollable).
        #[arg(long, value_delimiter = ',')]
        templates: Vec<String>,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a one-time bootstrap token for a device; prints the token.
    Create {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        device: String,
        #[arg(long)]
        template: Option<String>,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
        ttl: Duration,
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
        reason: String,
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
    /// "Renew now" for a cohort: their renewals are accepted from now on (moves the server's
    /// renewal time of the matching issued certificates to now).
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
    major: Option<i64>,
    /// issued, renewed, revoked, signing.
    #[arg(long)]
    state: Option<String>,
    /// One device or several (comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    device: Vec<String>,
    /// Only certificates issued before this time (RFC 3339, e.g. 2026-11-01T00:00:00Z).
    #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
    issued_before: Option<std::time::SystemTime>,
    #[arg(long, default_value_t = 1000)]
    limit: i64,
}

impl CertFilterArgs {
    fn filter(&self) -> autoenroll_server::ra::CertificateFilter {
        let now = autoenroll_core::clock::Clock::now(&SystemClock).0;
        autoenroll_server::ra::CertificateFilter {
            expiring_before: self.expiring_within.map(|d| now + d.as_secs() as i64),
            template: self.template.clone(),
            template_major: self.major,
            state: self.state.clone(),
            device: (!self.device.is_empty()).then(|| self.device.join(",")),
            issued_before: self
                .issued_before
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs() as i64),
            limit: self.limit,
        }
    }
}

#[derive(Subcommand)]
pub enum AdminTokenCommand {
    /// Create a token (printed once; only its hash is stored).
    Create {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        name: String,
    },
    /// Revoke every token of that name.
    Revoke {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
pub enum ReportCommand {
    /// Certificates whose renewal is overdue, with the device's last refusal: what is stuck and why.
    Stuck {
        #[command(flatten)]
        common: Common,
        /// How long past its renewal time a certificate counts as stuck.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1d")]
        overdue: Duration,
        #[arg(long, default_value_t = 1000)]
        limit: i64,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
}

fn days(secs: i64) -> String {
    if secs % 86_400 == 0 {
        format!("{}d", secs / 86_400)
    } else {
        format!("{}s", secs)
    }
}

fn print_template(t: &autoenroll_server::ra::PolicyTemplate) {
    println!("name:              {}", t.name);
    println!("oid:               {}", t.oid);
    println!("version:           {}.{}", t.major, t.minor);
    println!("description:       {}", t.description);
    println!("validity:          {}", days(t.validity_secs));
    println!("renewal period:    {}", days(t.renewal_secs));
    println!("key algorithm:     {} (RSA minimum {} bits)", t.key_algorithm, t.min_key_bits);
    println!("key usage:         {}", t.key_usage);
    println!(
        "extended key usage:{}",
        if t.ext_key_usage.is_empty() { String::new() } else { format!(" {}", t.ext_key_usage) }
    );
    println!("subject from:      {}", t.subject_from);
    println!("allow SAN:         {}", t.allow_san);
    println!("enroll/autoenroll: {}/{}", t.enroll, t.autoenroll);
    println!("same-key renewal:  {}", t.same_key_renewal);
    println!("supersedes:        {}", t.superseded);
}

pub async fn run(cmd: ServerCommand) -> Result<i32> {
    match cmd {
        ServerCommand::Init { common, key_algorithm, organization } => {
            let mut raw = common.raw()?;
            raw.key_algorithm = key_algorithm.or(raw.key_algorithm);
            raw.organization = organization.or(raw.organization);
            let cfg = raw.validate()?;
            let dir = cfg.ra.data_dir.clone();
            if autoenroll_server::ra::ca_exists(&dir) {
                bail!("{} already holds a CA; refusing to overwrite it", dir.display());
            }
            let ra = Ra::open(cfg.ra, Arc::new(SystemClock)).await?;
            println!("initialised {}", dir.display());
            println!("root CA certificate: {}", dir.join("ca/root.pem").display());
            println!(
                "templates: {}",
                ra.templates().await?.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
            );
            Ok(0)
        }
        ServerCommand::Run { common, listen, hostnames, public_url, scep_http_listen, scep_legacy_ciphers } => {
            let mut raw = common.raw()?;
            raw.listen = listen.or(raw.listen);
            if scep_http_listen.is_some() || scep_legacy_ciphers {
                let mut scep = raw.scep.take().unwrap_or_default();
                scep.http_listen = scep_http_listen.or(scep.http_listen);
                if scep_legacy_ciphers {
                    scep.legacy_ciphers = Some(true);
                }
                raw.scep = Some(scep);
            }
            if !hostnames.is_empty() {
                raw.hostnames = Some(hostnames);
            }
            raw.public_url = public_url.or(raw.public_url);
            let cfg = raw.validate()?;
            let ra = Arc::new(Ra::open(cfg.ra.clone(), Arc::new(SystemClock)).await?);
            let server = app::Server::bind(ra, &cfg).await?;
            // Printed on stdout so scripts and tests can find a port chosen with :0. A closed
            // stdout must not stop the server, so write errors are ignored.
            {
                use std::io::Write;
                let mut banner = format!(
                    "autoenroll server listening on {base}\npolicy (MS-XCEP):      {base}/xcep\nenrollment (MS-WSTEP): {base}/wstep\nSCEP:                  {base}/scep\n",
                    base = server.base_url
                );
                if let Some(u) = &server.scep_http_url {
                    banner.push_str(&format!("SCEP over HTTP:        {u}\n"));
                }
                banner.push_str(&format!(
                    "SCEP RA certificate:   {} (SHA-256 {})\n",
                    cfg.ra.data_dir.join("ca/scep-ra.pem").display(),
                    server.scep_ra_fingerprint
                ));
                // Last line: scripts and tests read the banner up to here.
                banner.push_str(&format!("root CA certificate:   {}\n", cfg.ra.data_dir.join("ca/root.pem").display()));
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(banner.as_bytes()).and_then(|_| out.flush());
            }
            server.serve(crate::shutdown_signal()).await;
            Ok(0)
        }
        ServerCommand::Template { command } => template(command).await,
        ServerCommand::AdminToken { command: AdminTokenCommand::Create { common, name } } => {
            let token = common.open().await?.create_admin_token(&name).await?;
            eprintln!("admin API token for {name} (send it as Authorization: Bearer ...)");
            println!("{token}");
            Ok(0)
        }
        ServerCommand::AdminToken { command: AdminTokenCommand::Revoke { common, name } } => {
            let n = common.open().await?.revoke_admin_token(&name).await?;
            println!("revoked {n} admin tokens named {name}");
            Ok(0)
        }
        ServerCommand::Audit { common, limit, output } => {
            let events = common.open().await?.audit_events(limit).await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&events)?),
                Output::Table => {
                    println!("{:<21} {:<28} {:<18} {:<9} DETAIL", "TIME", "ACTOR", "ACTION", "OUTCOME");
                    for e in events {
                        println!(
                            "{:<21} {:<28} {:<18} {:<9} {} {}",
                            autoenroll_core::UnixTime(e.at).to_string(),
                            e.actor,
                            e.action,
                            e.outcome,
                            e.subject,
                            e.detail
                        );
                    }
                }
            }
            Ok(0)
        }
        ServerCommand::Challenge {
            command: ChallengeCommand::Create { common, device, template, ttl, subject, dns, ip, min_key_bits, eku },
        } => {
            let ra = common.open().await?;
            let spec = autoenroll_server::ra::ChallengeSpec {
                device: device.clone(),
                template,
                ttl_secs: ttl.as_secs() as i64,
                subject,
                dns_names: dns,
                ip_addrs: ip,
                min_key_bits,
                ext_key_usage: eku,
            };
            let (challenge, expires) = ra.create_challenge(&spec).await?;
            eprintln!("one-time SCEP challenge for {device}, expires {}", autoenroll_core::UnixTime(expires));
            println!("{challenge}");
            Ok(0)
        }
        ServerCommand::Challenge { command: ChallengeCommand::Static { common, template, clear } } => {
            let ra = common.open().await?;
            if clear {
                ra.set_static_challenge(&template, None).await?;
                println!("static challenge of {template} cleared");
            } else {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s).context("reading the challenge from standard input")?;
                ra.set_static_challenge(&template, Some(s.trim_end_matches(['\r', '\n']))).await?;
                println!("static challenge of {template} set");
            }
            Ok(0)
        }
        ServerCommand::Cert { command: CertCommand::Revoke { common, serial, reason } } => {
            common.open().await?.revoke(&serial, &reason).await?;
            println!("revoked {serial} ({reason})");
            Ok(0)
        }
        ServerCommand::Device { command: DeviceCommand::Block { common, name, revoke, reason } } => {
            let ra = common.open().await?;
            if revoke {
                let n = ra.block_and_revoke(&name, &reason).await?;
                println!("blocked {name}, revoked {n} certificates ({reason})");
            } else {
                ra.set_device_blocked(&name, true).await?;
                println!("blocked {name}");
            }
            Ok(0)
        }
        ServerCommand::Device { command: DeviceCommand::Remove { common, name } } => {
            common.open().await?.remove_device(&name).await?;
            println!("removed {name}");
            Ok(0)
        }
        ServerCommand::Device { command: DeviceCommand::List { common, limit, output } } => {
            let devices = common.open().await?.devices(limit).await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&devices)?),
                Output::Table => {
                    println!("{:<32} {:<8} {:>5} {:<21} LAST SEEN", "DEVICE", "BLOCKED", "CERTS", "NEXT RENEWAL");
                    for d in devices {
                        println!(
                            "{:<32} {:<8} {:>5} {:<21} {}",
                            d.name,
                            if d.blocked { "yes" } else { "no" },
                            d.certificates,
                            d.next_renewal
                                .map(|t| autoenroll_core::UnixTime(t).to_string())
                                .unwrap_or_else(|| "-".into()),
                            autoenroll_core::UnixTime(d.last_seen)
                        );
                    }
                }
            }
            Ok(0)
        }
        ServerCommand::Device { command: DeviceCommand::Show { common, name, output } } => {
            let ra = common.open().await?;
            let device = ra.devices(i64::MAX).await?.into_iter().find(|d| d.name == name);
            let Some(device) = device else { bail!("no device {name}") };
            let filter = autoenroll_server::ra::CertificateFilter {
                device: Some(name.clone()),
                limit: 1000,
                ..Default::default()
            };
            let certs = ra.certificates_matching(&filter).await?;
            match output {
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "device": device, "certificates": certs }))?
                ),
                Output::Table => {
                    println!("device:       {}", device.name);
                    println!("blocked:      {}", device.blocked);
                    println!("first seen:   {}", autoenroll_core::UnixTime(device.created_at));
                    println!("last seen:    {}", autoenroll_core::UnixTime(device.last_seen));
                    print_certs(&certs);
                }
            }
            Ok(0)
        }
        ServerCommand::Report { command: ReportCommand::Stuck { common, overdue, limit, output } } => {
            let rows = common.open().await?.stuck(overdue.as_secs() as i64, limit).await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
                Output::Table => {
                    println!("{:<28} {:<14} {:<34} {:<21} LAST ERROR", "DEVICE", "TEMPLATE", "SERIAL", "DUE SINCE");
                    for r in rows {
                        let device = if r.blocked { format!("{} (blocked)", r.device) } else { r.device };
                        println!(
                            "{:<28} {:<14} {:<34} {:<21} {}",
                            device,
                            r.template,
                            r.serial,
                            autoenroll_core::UnixTime(r.renew_after).to_string(),
                            r.last_error.unwrap_or_else(|| "-".into())
                        );
                    }
                }
            }
            Ok(0)
        }
        ServerCommand::Cert { command: CertCommand::RenewNow { common, filter } } => {
            let n = common.open().await?.renew_now(&filter.filter()).await?;
            println!("{n} certificates may renew now");
            Ok(0)
        }
        ServerCommand::Device { command: DeviceCommand::Unblock { common, name } } => {
            common.open().await?.set_device_blocked(&name, false).await?;
            println!("unblocked {name}");
            Ok(0)
        }
        ServerCommand::Request { command: RequestCommand::Approve { common, id } } => {
            let issued = common.open().await?.approve(id).await?;
            println!("request {id} approved: serial {}", issued.serial);
            Ok(0)
        }
        ServerCommand::Request { command: RequestCommand::Deny { common, id, reason } } => {
            common.open().await?.deny(id, &reason).await?;
            println!("request {id} denied");
            Ok(0)
        }
        ServerCommand::Account { command: AccountCommand::Create { common, name, password_file, templates } } => {
            let password = match password_file {
                Some(p) => std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?,
                None => {
                    let mut s = String::new();
                    std::io::stdin().read_to_string(&mut s).context("reading the password from standard input")?;
                    s
                }
            };
            let password = password.trim_end_matches(['\r', '\n']);
            let ra = common.open().await?;
            ra.create_account(&AccountSpec { name: &name, password, templates }).await?;
            println!("account {name} created");
            Ok(0)
        }
        ServerCommand::Token { command: TokenCommand::Create { common, device, template, ttl } } => {
            let ra = common.open().await?;
            let (token, expires) = ra
                .create_token(&TokenSpec {
                    device: &device,
                    template: template.as_deref(),
                    ttl_secs: ttl.as_secs() as i64,
                })
                .await?;
            eprintln!("one-time bootstrap token for {device}, expires {}", autoenroll_core::UnixTime(expires));
            println!("{token}");
            Ok(0)
        }
        ServerCommand::Cert { command: CertCommand::List { common, filter, output } } => {
            let certs = common.open().await?.certificates_matching(&filter.filter()).await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&certs)?),
                Output::Table => print_certs(&certs),
            }
            Ok(0)
        }
    }
}

async fn template(cmd: TemplateCommand) -> Result<i32> {
    match cmd {
        TemplateCommand::List { common, output } => {
            let ra = common.open().await?;
            let ts = ra.templates().await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&ts)?),
                Output::Table => {
                    println!(
                        "{:<16} {:<8} {:<9} {:<9} {:<10} {:<11} {:<9} OID",
                        "NAME", "VERSION", "VALIDITY", "RENEWAL", "KEY", "EKU", "AUTO"
                    );
                    for t in ts {
                        println!(
                            "{:<16} {:<8} {:<9} {:<9} {:<10} {:<11} {:<9} {}",
                            t.name,
                            format!("{}.{}", t.major, t.minor),
                            days(t.validity_secs),
                            days(t.renewal_secs),
                            t.key_algorithm,
                            t.ext_key_usage,
                            t.autoenroll,
                            t.oid
                        );
                    }
                }
            }
        }
        TemplateCommand::Show { common, name } => print_template(&common.open().await?.template(&name).await?),
        TemplateCommand::Create { common, name, fields } => {
            let t = common.open().await?.create_template(&name, &fields.spec()).await?;
            print_template(&t);
        }
        TemplateCommand::Update { common, name, fields } => {
            let t = common.open().await?.update_template(&name, &fields.spec()).await?;
            print_template(&t);
        }
    }
    Ok(0)
}

fn print_certs(certs: &[autoenroll_server::ra::CertificateRow]) {
    println!(
        "{:<34} {:<24} {:<14} {:<8} {:<21} {:<21} STATE",
        "SERIAL", "DEVICE", "TEMPLATE", "VERSION", "NOT AFTER", "RENEWS"
    );
    for c in certs {
        println!(
            "{:<34} {:<24} {:<14} {:<8} {:<21} {:<21} {}",
            c.serial,
            c.device,
            c.template,
            format!("{}.{}", c.template_major, c.template_minor),
            autoenroll_core::UnixTime(c.not_after).to_string(),
            c.renew_after.map(|t| autoenroll_core::UnixTime(t).to_string()).unwrap_or_else(|| "-".into()),
            c.state
        );
    }
}
