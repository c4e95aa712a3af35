//! `server account|token|admin-token|challenge`: who may enroll, and the secrets they use.
use super::Common;
use anyhow::{Context, Result};
use autoenroll_core::model::Eku;
use autoenroll_core::UnixTime;
use autoenroll_server::ra::{AccountSpec, ChallengeSpec, TokenSpec, LOCAL_ADMIN};
use clap::Subcommand;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

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
        /// Comma-separated templates the account may enroll (default: all its grants allow).
        #[arg(long, value_delimiter = ',')]
        templates: Vec<String>,
        /// Comma-separated groups the account is in (templates grant `account-group:NAME`).
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// Comma-separated device-name patterns the account may enroll for, e.g. `web-*`
        /// (default: any name; a device stays bound to the account that first enrolled it).
        #[arg(long, value_delimiter = ',')]
        devices: Vec<String>,
    },
    /// Disable an account: its password and sign-in tokens stop working at once (certificates
    /// it enrolled stay valid until revoked).
    Disable {
        #[command(flatten)]
        common: Common,
        name: String,
    },
    /// Enable a disabled account again.
    Enable {
        #[command(flatten)]
        common: Common,
        name: String,
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
        min_key_bits: Option<u32>,
        /// EKUs the request may ask for, comma-separated names or OIDs (default: the template's).
        #[arg(long, value_delimiter = ',')]
        eku: Option<Vec<Eku>>,
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
pub enum AcmeCommand {
    /// Make an external account binding key for an account: an ACME client registers with it
    /// (certbot --eab-kid KID --eab-hmac-key KEY) and acts as that account (its grants and
    /// device patterns). Single use; prints the key id, then the MAC key.
    Eab {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        account: String,
        #[arg(long, value_parser = humantime::parse_duration, default_value = "7d")]
        ttl: Duration,
    },
    /// ACME accounts, newest first: id, enrollment account, key thumbprint, binding key,
    /// created, deactivated.
    List {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Deactivate an ACME account (a leaked account key): final; its certificates stay.
    Deactivate {
        #[command(flatten)]
        common: Common,
        id: i64,
    },
}

fn ttl(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn read_stdin(what: &str) -> Result<String> {
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s).with_context(|| format!("reading the {what} from standard input"))?;
    Ok(s)
}

pub async fn account(cmd: AccountCommand) -> Result<i32> {
    let disable = matches!(cmd, AccountCommand::Disable { .. });
    let (common, name, password_file, templates, groups, devices) = match cmd {
        AccountCommand::Create { common, name, password_file, templates, groups, devices } => {
            (common, name, password_file, templates, groups, devices)
        }
        AccountCommand::Disable { common, name } | AccountCommand::Enable { common, name } => {
            common.open().await?.set_account_disabled(&name, disable).await?;
            println!("account {name} {}", if disable { "disabled" } else { "enabled" });
            return Ok(0);
        }
    };
    let password = match password_file {
        Some(p) => std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?,
        None => read_stdin("password")?,
    };
    let password = password.trim_end_matches(['\r', '\n']);
    common.open().await?.create_account(&AccountSpec { name: &name, password, templates, groups, devices }).await?;
    println!("account {name} created");
    Ok(0)
}

pub async fn token(cmd: TokenCommand) -> Result<i32> {
    let TokenCommand::Create { common, device, template, ttl: t } = cmd;
    let spec = TokenSpec { device: &device, template: template.as_deref(), ttl_secs: ttl(t) };
    let (token, expires) = common.open().await?.create_token(&spec).await?;
    eprintln!("one-time bootstrap token for {device}, expires {}", UnixTime(expires));
    println!("{token}");
    Ok(0)
}

pub async fn acme(cmd: AcmeCommand) -> Result<i32> {
    match cmd {
        AcmeCommand::Eab { common, account, ttl: t } => {
            let (kid, key) = common.open().await?.acme_binding_key(LOCAL_ADMIN, &account, ttl(t)).await?;
            eprintln!("external account binding for account {account} (single use): key id, then MAC key");
            println!("{kid}");
            println!("{key}");
        }
        AcmeCommand::List { common, limit } => {
            println!(
                "{:<6} {:<20} {:<44} {:<22} {:<21} DEACTIVATED",
                "ID", "ACCOUNT", "KEY THUMBPRINT", "BINDING", "CREATED"
            );
            for a in common.open().await?.acme_accounts(limit).await? {
                let deactivated = a.deactivated_at.map(|t| t.to_string()).unwrap_or_else(|| "-".into());
                println!(
                    "{:<6} {:<20} {:<44} {:<22} {:<21} {deactivated}",
                    a.id,
                    a.account,
                    a.thumbprint,
                    a.eab_kid,
                    a.created_at.to_string()
                );
            }
        }
        AcmeCommand::Deactivate { common, id } => {
            common.open().await?.deactivate_acme_account(LOCAL_ADMIN, id).await?;
            println!("ACME account {id} deactivated");
        }
    }
    Ok(0)
}

pub async fn admin_token(cmd: AdminTokenCommand) -> Result<i32> {
    match cmd {
        AdminTokenCommand::Create { common, name } => {
            let token = common.open().await?.create_admin_token(&name).await?;
            eprintln!("admin API token for {name} (send it as Authorization: Bearer ...)");
            println!("{token}");
        }
        AdminTokenCommand::Revoke { common, name } => {
            let n = common.open().await?.revoke_admin_token(&name).await?;
            println!("revoked {n} admin tokens named {name}");
        }
    }
    Ok(0)
}

pub async fn challenge(cmd: ChallengeCommand) -> Result<i32> {
    match cmd {
        ChallengeCommand::Create { common, device, template, ttl: t, subject, dns, ip, min_key_bits, eku } => {
            let spec = ChallengeSpec {
                device: device.clone(),
                template,
                ttl_secs: ttl(t),
                subject,
                dns_names: dns,
                ip_addrs: ip,
                min_key_bits,
                ext_key_usage: eku,
            };
            let (challenge, expires) = common.open().await?.create_challenge(LOCAL_ADMIN, &spec).await?;
            eprintln!("one-time SCEP challenge for {device}, expires {}", UnixTime(expires));
            println!("{challenge}");
        }
        ChallengeCommand::Static { common, template, clear } => {
            let ra = common.open().await?;
            if clear {
                ra.set_static_challenge(&template, None).await?;
                println!("static challenge of {template} cleared");
            } else {
                let s = read_stdin("challenge")?;
                ra.set_static_challenge(&template, Some(s.trim_end_matches(['\r', '\n']))).await?;
                println!("static challenge of {template} set");
            }
        }
    }
    Ok(0)
}
