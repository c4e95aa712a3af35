//! `autoenroll server ...`: one module per command group. Each opens the data directory through
//! `Common` and calls the RA; output is a table for people or JSON (`--output json`, the admin
//! API's shapes).
mod credentials;
mod fleet;
mod output;
mod run;
mod templates;

use anyhow::{bail, Result};
use autoenroll_server::config::RawConfig;
use autoenroll_server::ra::{ChainUpkeep, Ra};
use autoenroll_server::SystemClock;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;

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
    Init(run::InitArgs),
    /// Run the HTTPS server (initialises the data directory on first run).
    Run(run::RunArgs),
    /// SCEP challenges: one-time dynamic ones, and static per-template ones.
    Challenge {
        #[command(subcommand)]
        command: credentials::ChallengeCommand,
    },
    /// Certificate templates.
    Template {
        #[command(subcommand)]
        command: templates::TemplateCommand,
    },
    /// Enrollment accounts (WS-Security username/password).
    Account {
        #[command(subcommand)]
        command: credentials::AccountCommand,
    },
    /// One-time bootstrap tokens.
    Token {
        #[command(subcommand)]
        command: credentials::TokenCommand,
    },
    /// ACME: external account binding keys and accounts.
    Acme {
        #[command(subcommand)]
        command: credentials::AcmeCommand,
    },
    /// Tokens for the admin REST API (/admin/v1).
    AdminToken {
        #[command(subcommand)]
        command: credentials::AdminTokenCommand,
    },
    /// Issued certificates.
    Cert {
        #[command(subcommand)]
        command: fleet::CertCommand,
    },
    /// Devices in the inventory.
    Device {
        #[command(subcommand)]
        command: fleet::DeviceCommand,
    },
    /// Device groups (templates grant `device-group:NAME`).
    DeviceGroup {
        #[command(subcommand)]
        command: fleet::DeviceGroupCommand,
    },
    /// Requests held for approval.
    Request {
        #[command(subcommand)]
        command: fleet::RequestCommand,
    },
    /// Fleet reports.
    Report {
        #[command(subcommand)]
        command: fleet::ReportCommand,
    },
    /// The audit log, newest first: issuances, renewals, refusals with their reason, admin actions.
    Audit(fleet::AuditArgs),
    /// The CA hierarchy's own upkeep.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Back up while the server runs: an online snapshot of the SQLite database plus the CA
    /// and listener files, into a new directory (0700). PostgreSQL: use pg_dump for the database.
    Backup {
        #[command(flatten)]
        common: Common,
        /// A directory that does not exist yet.
        #[arg(long)]
        out: PathBuf,
    },
    /// The configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Check a configuration before (re)starting with it: it parses and validates, the data
    /// directory is usable, the listen addresses are free, operator TLS files load, and the
    /// database opens with valid templates. Exit 0 when all is well, 1 otherwise.
    Check(run::RunArgs),
}

#[derive(Subcommand)]
pub enum CaCommand {
    /// With the root key: make the issuing CA certificate name the root certificate (AIA) and
    /// the root's CRL (CDP) at the recorded public base, and re-sign the root's CRL when it is
    /// missing or within 60 days of expiry. The server does this itself while `ca/root.key` is
    /// in the data directory; run this where an offline root key is, at least once a year.
    Upkeep {
        #[command(flatten)]
        common: Common,
        /// The root's private key (PKCS#8 PEM). Default: `<data-dir>/ca/root.key`.
        #[arg(long)]
        root_key: Option<PathBuf>,
    },
    /// Move the root's private key out of the data directory (to keep it offline).
    ExportRootKey {
        #[command(flatten)]
        common: Common,
        /// Where it goes (0600; an existing file is never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
}

pub async fn run(cmd: ServerCommand) -> Result<i32> {
    match cmd {
        ServerCommand::Init(a) => run::init(a).await,
        ServerCommand::Run(a) => run::run(a).await,
        ServerCommand::Template { command } => templates::run(command).await,
        ServerCommand::Challenge { command } => credentials::challenge(command).await,
        ServerCommand::Account { command } => credentials::account(command).await,
        ServerCommand::Token { command } => credentials::token(command).await,
        ServerCommand::AdminToken { command } => credentials::admin_token(command).await,
        ServerCommand::Acme { command } => credentials::acme(command).await,
        ServerCommand::Cert { command } => fleet::cert(command).await,
        ServerCommand::Device { command } => fleet::device(command).await,
        ServerCommand::DeviceGroup { command } => fleet::device_group(command).await,
        ServerCommand::Request { command } => fleet::request(command).await,
        ServerCommand::Report { command } => fleet::report(command).await,
        ServerCommand::Audit(a) => fleet::audit(a).await,
        ServerCommand::Backup { common, out } => {
            let ra = common.open().await?;
            for f in ra.backup(&out).await? {
                println!("{}", out.join(&f).display());
            }
            println!("backup written to {} (restore: stop the server, put the files back, same owner)", out.display());
            Ok(0)
        }
        ServerCommand::Config { command: ConfigCommand::Check(a) } => run::check(a).await,
        ServerCommand::Ca { command: CaCommand::ExportRootKey { common, out } } => {
            common.open().await?.export_root_key(&out)?;
            println!("root CA private key moved to {}: keep it offline", out.display());
            Ok(0)
        }
        ServerCommand::Ca { command: CaCommand::Upkeep { common, root_key } } => {
            let ra = common.open().await?;
            match ra.chain_upkeep(root_key.as_deref()).await? {
                ChainUpkeep::Current => println!("the issuing CA certificate and the root CRL are current"),
                ChainUpkeep::Done { recertified, root_crl_until, .. } => {
                    if recertified {
                        println!("issuing CA re-certified (running servers take it within 30 minutes)");
                    }
                    println!("root CRL signed, valid until {root_crl_until}");
                }
                ChainUpkeep::NeedsRootKey { .. } => {
                    eprintln!("the root key is not at hand: pass --root-key FILE");
                    return Ok(2);
                }
            }
            Ok(0)
        }
    }
}
