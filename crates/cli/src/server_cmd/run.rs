//! `server init` and `server run`.
use super::Common;
use anyhow::{bail, Result};
use autoenroll_server::ra::Ra;
use autoenroll_server::{app, SystemClock};
use clap::Args;
use std::sync::Arc;

#[derive(Args)]
pub struct InitArgs {
    #[command(flatten)]
    common: Common,
    /// CA key algorithm: p256 (default), p384, rsa2048, rsa3072, rsa4096.
    #[arg(long)]
    key_algorithm: Option<String>,
    /// Organization name in the CA certificates.
    #[arg(long)]
    organization: Option<String>,
    /// Where the root CA's private key goes (0600, never overwritten): out of the data
    /// directory, to be kept offline. Default: autoenroll-root.key beside the data directory.
    #[arg(long)]
    root_key_out: Option<std::path::PathBuf>,
    /// Leave the root key in the data directory (labs; the server then re-signs the root CRL
    /// itself).
    #[arg(long, conflicts_with = "root_key_out")]
    keep_root_online: bool,
    /// Base URL advertised to clients (the chain is certified for its host), e.g. https://ca.example.com
    #[arg(long)]
    public_url: Option<String>,
    /// The plain-HTTP listener the server will run (its URL goes into the issuing CA certificate).
    #[arg(long)]
    scep_http_listen: Option<String>,
}

#[derive(Args, Clone)]
pub struct RunArgs {
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
    /// The plain-HTTP listener (SCEP, CRL, CA certificates, OCSP), e.g. 0.0.0.0:8080 (port 0
    /// picks one; "off" turns it off). Default: the HTTPS address, port 8080.
    #[arg(long)]
    scep_http_listen: Option<String>,
    /// Accept DES/3DES SCEP envelopes and SHA-1 signatures from old clients.
    #[arg(long)]
    scep_legacy_ciphers: bool,
    /// A plain-HTTP listener serving only /metrics, without a token, e.g. 127.0.0.1:9464
    /// (`/metrics` on the HTTPS listener takes an admin token). Default: off.
    #[arg(long)]
    metrics_listen: Option<String>,
}

pub async fn init(a: InitArgs) -> Result<i32> {
    let mut raw = a.common.raw()?;
    raw.public_url = a.public_url.or(raw.public_url);
    if let Some(l) = a.scep_http_listen {
        let mut scep = raw.scep.take().unwrap_or_default();
        scep.http_listen = Some(l);
        raw.scep = Some(scep);
    }
    raw.key_algorithm = a.key_algorithm.or(raw.key_algorithm);
    raw.organization = a.organization.or(raw.organization);
    let cfg = raw.validate()?;
    let dir = cfg.ra.data_dir.clone();
    if autoenroll_server::ra::ca_exists(&dir) {
        bail!("{} already holds a CA; refusing to overwrite it", dir.display());
    }
    // Beside the data directory by default, never inside it; never over an existing file.
    let root_key_out = a.root_key_out.clone().unwrap_or_else(|| {
        dir.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."))
            .join("autoenroll-root.key")
    });
    if !a.keep_root_online && root_key_out.exists() {
        bail!("{} already exists: choose another --root-key-out (nothing was created)", root_key_out.display());
    }
    // Before the CA exists: a key that cannot be written would leave the CA made with its root
    // key online and `init` refusing to run again.
    if !a.keep_root_online {
        let parent = root_key_out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        let probe = parent.join(".autoenroll-write-test");
        let writable = std::fs::create_dir_all(parent)
            .and_then(|()| std::fs::write(&probe, b""))
            .and_then(|()| std::fs::remove_file(&probe));
        if let Err(e) = writable {
            bail!(
                "cannot write the root key to {}: {e}; choose a writable --root-key-out outside the data directory \
                 (nothing was created)",
                root_key_out.display()
            );
        }
    }
    let ra = Ra::open(cfg.ra.clone(), Arc::new(SystemClock)).await?;
    println!("initialised {}", dir.display());
    println!("root CA certificate: {}", dir.join("ca/root.pem").display());
    // While the root key is at hand: the issuing CA certificate names the root and its CRL at
    // the URLs the server will publish, and the root CRL is signed (valid a year).
    match cfg.planned_public_base() {
        Some(base) => {
            ra.publish_base(&base).await?;
            // The server only logs upkeep failures; here they stop the ceremony.
            match ra.chain_upkeep(None).await? {
                autoenroll_server::ra::ChainUpkeep::Done { .. } | autoenroll_server::ra::ChainUpkeep::Current => {
                    println!("issuing CA certified for {base} (AIA {base}/ca/root.crt, CDP {base}/crl/root)")
                }
                other => bail!("the CA chain could not be certified for {base}: {other:?}"),
            }
        }
        None => println!(
            "the public URL is not known before the server runs (port 0): run `server ca upkeep --root-key FILE` \
             once it does"
        ),
    }
    if a.keep_root_online {
        println!("root CA private key: {} (online: --keep-root-online)", dir.join("ca/root.key").display());
    } else {
        let out = root_key_out;
        ra.export_root_key(&out)?;
        println!(
            "root CA private key: {} — move it offline now; it is needed only for `server ca upkeep --root-key` \
             (the root CRL, yearly) and for a new issuing CA",
            out.display()
        );
    }
    let names: Vec<String> = ra.templates().await?.valid.into_iter().map(|t| t.name).collect();
    println!("templates: {}", names.join(", "));
    Ok(0)
}

/// The configuration `server run` serves with: the file (read again on SIGHUP), then flags.
fn run_config(a: &RunArgs) -> Result<autoenroll_server::config::ServerConfig> {
    let a = a.clone();
    let mut raw = a.common.raw()?;
    raw.listen = a.listen.or(raw.listen);
    if a.scep_http_listen.is_some() || a.scep_legacy_ciphers {
        let mut scep = raw.scep.take().unwrap_or_default();
        scep.http_listen = a.scep_http_listen.or(scep.http_listen);
        if a.scep_legacy_ciphers {
            scep.legacy_ciphers = Some(true);
        }
        raw.scep = Some(scep);
    }
    if !a.hostnames.is_empty() {
        raw.hostnames = Some(a.hostnames);
    }
    raw.public_url = a.public_url.or(raw.public_url);
    if let Some(l) = a.metrics_listen {
        raw.metrics = Some(autoenroll_server::config::RawMetrics { listen: Some(l) });
    }
    Ok(raw.validate()?)
}

pub async fn run(a: RunArgs) -> Result<i32> {
    let cfg = run_config(&a)?;
    let ra = Arc::new(Ra::open(cfg.ra.clone(), Arc::new(SystemClock)).await?);
    if cfg.ra.data_dir.join("ca/root.key").exists() {
        tracing::warn!(
            "the root CA key is online in {}: fine for a lab; otherwise `autoenroll server ca export-root-key --out FILE` \
             and keep FILE offline",
            cfg.ra.data_dir.join("ca/root.key").display()
        );
    }
    let server = app::Server::bind(ra.clone(), &cfg).await?;
    // Printed on stdout so scripts and tests can find a port chosen with :0. A closed stdout
    // must not stop the server, so write errors are ignored.
    {
        use std::io::Write;
        let mut banner = format!(
            "autoenroll server listening on {base}\npolicy (MS-XCEP):      {base}/xcep\n\
             enrollment (MS-WSTEP): {base}/wstep\nSCEP:                  {base}/scep\n",
            base = server.base_url
        );
        if let Some(u) = &server.scep_http_url {
            banner.push_str(&format!("SCEP over HTTP:        {u}\n"));
        }
        banner.push_str(&format!("web console:           {}/ui/\n", server.base_url));
        if let Some(m) = server.metrics_addr {
            banner.push_str(&format!("metrics:               http://{m}/metrics\n"));
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
    // systemd (Type=notify): ready once the listeners are bound and the banner is out.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status("serving")]);
    let reloads = tokio::spawn(reload_on_sighup(a, cfg, ra, server.tls_reloader()));
    server
        .serve(async {
            crate::shutdown_signal().await;
            tracing::info!("stopping: draining connections");
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        })
        .await;
    reloads.abort();
    Ok(0)
}

/// SIGHUP: read the configuration again and apply what a running server can change (the
/// listener certificate: new names, new operator files), check the templates, and say which
/// changed settings wait for a restart. A configuration that does not validate is reported
/// and the running one stays.
async fn reload_on_sighup(
    a: RunArgs,
    mut running: autoenroll_server::config::ServerConfig,
    ra: Arc<Ra>,
    tls: app::TlsReloader,
) {
    use sd_notify::NotifyState;
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload by restarting");
        return;
    };
    while hup.recv().await.is_some() {
        let mut states = vec![NotifyState::Reloading];
        states.extend(NotifyState::monotonic_usec_now().ok());
        let _ = sd_notify::notify(&states);
        match reload(&a, &running, &ra, &tls).await {
            Ok(cfg) => running = cfg,
            Err(e) => tracing::error!("reload failed, the running configuration stays: {e:#}"),
        }
        let _ = sd_notify::notify(&[NotifyState::Ready]);
    }
}

async fn reload(
    a: &RunArgs,
    running: &autoenroll_server::config::ServerConfig,
    ra: &Ra,
    tls: &app::TlsReloader,
) -> Result<autoenroll_server::config::ServerConfig> {
    let cfg = run_config(a)?;
    let restart: Vec<&str> = [
        ("listen", format!("{:?}", cfg.listen) != format!("{:?}", running.listen)),
        ("scep.http_listen", cfg.scep_http_listen != running.scep_http_listen),
        ("metrics.listen", cfg.metrics_listen != running.metrics_listen),
        ("public_url", cfg.public_url != running.public_url),
        (
            "database / data_dir",
            cfg.ra.database_url != running.ra.database_url || cfg.ra.data_dir != running.ra.data_dir,
        ),
        ("limits", format!("{:?}", cfg.limits) != format!("{:?}", running.limits)),
        ("ra settings", format!("{:?}", cfg.ra) != format!("{:?}", running.ra)),
        (
            "mdm",
            cfg.mdm_provider_id != running.mdm_provider_id
                || cfg.mdm_management_url != running.mdm_management_url
                || cfg.mdm_sign_in_return != running.mdm_sign_in_return,
        ),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect();
    if !restart.is_empty() {
        tracing::warn!(settings = %restart.join(", "), "changed settings take effect at the next restart");
    }
    tls.reload_with(&cfg).await?;
    let templates = ra.templates().await?;
    for bad in &templates.invalid {
        tracing::error!(template = %bad.name, reason = %bad.reason, "template is invalid and not served");
    }
    tracing::info!(templates = templates.valid.len(), invalid = templates.invalid.len(), "configuration reloaded");
    Ok(cfg)
}

/// `server config check`: each check on a line, `ok` or what is wrong and what to do.
pub async fn check(a: RunArgs) -> Result<i32> {
    let mut problems = 0;
    let mut report = |what: &str, result: std::result::Result<String, String>| match result {
        Ok(detail) => println!("ok       {what}: {detail}"),
        Err(e) => {
            problems += 1;
            println!("PROBLEM  {what}: {e}");
        }
    };
    let cfg = match run_config(&a) {
        Ok(cfg) => {
            report("configuration", Ok("parses and validates".into()));
            cfg
        }
        Err(e) => {
            report("configuration", Err(format!("{e:#}")));
            return Ok(1);
        }
    };
    let dir = &cfg.ra.data_dir;
    report(
        "data directory",
        if dir.is_file() {
            Err(format!("{} is a file, not a directory", dir.display()))
        } else if dir.is_dir() {
            let probe = dir.join(".autoenroll-write-test");
            std::fs::write(&probe, b"")
                .and_then(|()| std::fs::remove_file(&probe))
                .map(|()| format!("{} is writable", dir.display()))
                .map_err(|e| format!("{} is not writable by this user: {e}", dir.display()))
        } else {
            Ok(format!("{} will be created at the first start", dir.display()))
        },
    );
    let mut listeners = vec![("listen", cfg.listen)];
    listeners.extend(cfg.scep_http_listen.map(|l| ("scep.http_listen", l)));
    listeners.extend(cfg.metrics_listen.map(|l| ("metrics.listen", l)));
    for (name, addr) in listeners {
        report(
            name,
            match std::net::TcpListener::bind(addr) {
                Ok(_) => Ok(format!("{addr} is free")),
                Err(e) if addr.port() == 0 => Err(format!("{addr}: {e}")),
                Err(e) => Err(format!("{addr}: {e} (a running server holds it? then this is expected)")),
            },
        );
    }
    if let Some((cert, key)) = &cfg.tls_files {
        let loaded = app::check_tls_files(cert, key);
        report(
            "tls",
            loaded
                .map(|n| format!("{} and {} load ({n} certificates)", cert.display(), key.display()))
                .map_err(|e| e.to_string()),
        );
    }
    if autoenroll_server::ra::ca_exists(dir) {
        match Ra::open(cfg.ra.clone(), Arc::new(SystemClock)).await {
            Ok(ra) => {
                report("database", Ok(cfg.ra.database_url.split('@').next_back().unwrap_or_default().to_string()));
                match ra.templates().await {
                    Ok(t) if t.invalid.is_empty() => report("templates", Ok(format!("{} valid", t.valid.len()))),
                    Ok(t) => {
                        for bad in t.invalid {
                            report(&format!("template {}", bad.name), Err(bad.reason));
                        }
                    }
                    Err(e) => report("templates", Err(e.to_string())),
                }
            }
            Err(e) => report("database", Err(e.to_string())),
        }
    } else {
        report("CA", Ok("none yet: `server init` (or the first start) creates it".into()));
    }
    Ok(if problems == 0 { 0 } else { 1 })
}
