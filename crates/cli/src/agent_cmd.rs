use anyhow::Result;
use autoenroll_agent::cycle::{renewal_time, Schedule};
use autoenroll_agent::localstore::LocalStore;
use autoenroll_agent::{AgentConfig, AgentError, CycleReport, Force, Slept, SystemClock, SystemJitter};
use autoenroll_core::clock::Clock;
use autoenroll_core::UnixTime;
use clap::Subcommand;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Subcommand)]
pub enum AgentCommand {
    /// Enroll and renew per policy; keeps running unless --once.
    Run {
        #[arg(long, default_value = "agent.toml")]
        config: PathBuf,
        /// Run one cycle and exit: 0 all certificates held, 1 some template failed (each
        /// template on its own), 2 configuration error, 3 no policy server answered or the
        /// server refused the policy request, 4 the local state directory is unusable.
        #[arg(long)]
        once: bool,
        /// Sleep until this Unix time before the first cycle: how the daemon resumes in the
        /// fresh process image it rests in between cycles.
        #[arg(long, hide = true)]
        resume_at: Option<i64>,
    },
    /// Renew held certificates now, regardless of their renewal time (one cycle, exit codes as
    /// `run --once`). The server still decides whether it is inside the renewal window.
    Renew {
        #[arg(long, default_value = "agent.toml")]
        config: PathBuf,
        #[arg(long, required = true)]
        now: bool,
        /// Only these templates (repeatable; default all).
        #[arg(long = "template")]
        templates: Vec<String>,
    },
    /// Show the certificates held, their renewal times and the last errors.
    Status {
        #[arg(long, default_value = "agent.toml")]
        config: PathBuf,
    },
}

fn print_report(r: &CycleReport) {
    for (t, s) in &r.enrolled {
        println!("enrolled {t} serial {s}");
    }
    for (t, old, new) in &r.renewed {
        println!("renewed {t} {old} -> {new}");
    }
    for (t, old, new) in &r.reenrolled {
        println!("re-enrolled {t} {old} -> {new}");
    }
    for t in &r.kept {
        println!("kept {t}");
    }
    for (t, until) in &r.waiting {
        println!("waiting {t} until {until}");
    }
    for (t, e) in &r.failed {
        println!("failed {t}: {e}");
    }
}

async fn one_cycle(cfg: &AgentConfig, force: Force) -> i32 {
    let result = autoenroll_agent::run_cycle(cfg, Arc::new(SystemClock), &SystemJitter, &force).await;
    let ok = matches!(&result, Ok(r) if r.failed.is_empty());
    if let Err(e) = autoenroll_agent::textfile::write(cfg, SystemClock.now(), ok) {
        eprintln!("warning: could not write the metrics textfile: {e}");
    }
    match result {
        Ok(r) => {
            print_report(&r);
            r.exit_code()
        }
        Err(e @ AgentError::Config(_)) => {
            eprintln!("error: {e}");
            2
        }
        Err(e @ (AgentError::Store { .. } | AgentError::Key(_))) => {
            eprintln!("error: {e}");
            4
        }
        Err(e) => {
            eprintln!("error: {e}");
            3
        }
    }
}

/// Whether `stop` has completed already (polled once, never waited for).
async fn futures_stopped(stop: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>) -> bool {
    tokio::select! {
        biased;
        _ = stop.as_mut() => true,
        _ = std::future::ready(()) => false,
    }
}

/// Replaces this process's image (same PID: systemd, logs and the pid file see no change) with
/// a fresh one of the same program and arguments that sleeps until `wake` and then goes on.
/// The pages a cycle touched (TLS, parsing, the policy's peak) are not kept resident for the
/// hours between cycles, and an upgraded binary takes over at the next cycle. Returns only if
/// the exec failed.
fn rest_in_fresh_process(wake: UnixTime) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        // An upgrade replaced the file: its new version is at the same path.
        Ok(p) => match p.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
            Some(path) => PathBuf::from(path),
            None => p,
        },
        Err(e) => return e,
    };
    let mut args = Vec::new();
    let mut given = std::env::args_os().skip(1);
    while let Some(a) = given.next() {
        if a == "--resume-at" {
            given.next();
        } else if !a.to_string_lossy().starts_with("--resume-at=") {
            args.push(a);
        }
    }
    args.push("--resume-at".into());
    args.push(wake.0.to_string().into());
    tracing::info!(next = %wake, "resting in a fresh process image until the next cycle");
    std::process::Command::new(exe).args(args).exec()
}

fn time(t: Option<i64>) -> String {
    t.map(|t| UnixTime(t).to_string()).unwrap_or_else(|| "-".into())
}

pub async fn run(cmd: AgentCommand) -> Result<i32> {
    match cmd {
        AgentCommand::Run { config, once, resume_at } => {
            let cfg = AgentConfig::load(&config)?;
            if once {
                return Ok(one_cycle(&cfg, Force::None).await);
            }
            // systemd (Type=notify): the configuration is good; cycles follow. (A resumed image
            // says it again: the same PID, and systemd ignores a second READY.)
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            let clock: Arc<dyn Clock> = Arc::new(SystemClock);
            let stop = crate::shutdown_signal();
            tokio::pin!(stop);
            if let Some(at) = resume_at {
                if autoenroll_agent::sleep_until(clock.as_ref(), UnixTime(at), &mut stop).await == Slept::Stopped {
                    return Ok(0);
                }
            }
            if !cfg.rest_in_fresh_process {
                autoenroll_agent::run_forever(&cfg, clock, stop).await;
                return Ok(0);
            }
            loop {
                let wake = autoenroll_agent::daemon_cycle(&cfg, clock.clone()).await;
                // A stop that arrived during the cycle was taken by our handler: honour it
                // here, since a new image would not know of it.
                if futures_stopped(&mut stop).await {
                    return Ok(0);
                }
                let e = rest_in_fresh_process(wake);
                tracing::warn!(%e, "cannot rest in a fresh process image; sleeping in this one");
                if autoenroll_agent::sleep_until(clock.as_ref(), wake, &mut stop).await == Slept::Stopped {
                    return Ok(0);
                }
            }
        }
        AgentCommand::Renew { config, now: _, templates } => {
            let cfg = AgentConfig::load(&config)?;
            let force = if templates.is_empty() { Force::All } else { Force::Templates(templates) };
            Ok(one_cycle(&cfg, force).await)
        }
        AgentCommand::Status { config } => {
            let cfg = AgentConfig::load(&config)?;
            let store = LocalStore::open(&cfg.state_dir, cfg.archive_keep)?;
            let state = store.load_state()?;
            let now = SystemClock.now();
            if let Some(at) = state.checked_in_at {
                let verdict = if state.blocked { "BLOCKED by the server" } else { "ok" };
                println!("last check-in: {} ({verdict})", UnixTime(at));
            }
            let device = cfg.device_name();
            println!(
                "{:<12} {:<34} {:<7} {:<20} {:<29} {:<8} {:<20} {:<20} {:<9} LAST ERROR",
                "TEMPLATE", "SERIAL", "VERSION", "NOT AFTER", "RENEW AT", "STATE", "LAST ATTEMPT", "NEXT RETRY", "HOOK"
            );
            let mut names = store.live_templates()?;
            for t in state.templates.keys() {
                if !names.contains(t) {
                    names.push(t.clone());
                }
            }
            for name in names {
                // Whatever state the directory is in, status shows what it can.
                let held = store.current(&name).unwrap_or_else(|e| {
                    println!("{name}: live certificate unreadable: {e}");
                    None
                });
                let policy = state.policy.iter().find(|p| p.name == name);
                let st = state.templates.get(&name).cloned().unwrap_or_default();
                let hook = st.last_hook.as_ref().map(|h| if h.ok { "ok".to_string() } else { h.result.clone() });
                let pending = store.pending(&name).ok().flatten().map(|p| match p.meta.request_id {
                    Some(id) => format!("pending (request {id})"),
                    None => "attempt in progress".to_string(),
                });
                let (serial, version, not_after, renew, state_word) = match &held {
                    Some(h) => {
                        let f = &h.facts;
                        (
                            f.serial.0.clone(),
                            f.template
                                .as_ref()
                                .map(|t| format!("{}.{}", t.major, t.minor))
                                .unwrap_or_else(|| "-".into()),
                            f.not_after.to_string(),
                            policy
                                .map(|p| {
                                    let (at, source) = renewal_time(f, p.renewal_secs, st.server.as_ref(), &device);
                                    let by = match source {
                                        Schedule::Server => "server",
                                        Schedule::Local => "local",
                                    };
                                    format!("{at} ({by})")
                                })
                                .unwrap_or_else(|| "-".into()),
                            if now >= f.not_after { "expired" } else { "valid" },
                        )
                    }
                    None => ("-".into(), "-".into(), "-".into(), "-".into(), "missing"),
                };
                let error = [pending, st.last_error.clone()].into_iter().flatten().collect::<Vec<_>>().join("; ");
                println!(
                    "{:<12} {:<34} {:<7} {:<20} {:<29} {:<8} {:<20} {:<20} {:<9} {}",
                    name,
                    serial,
                    version,
                    not_after,
                    renew,
                    state_word,
                    time(st.last_attempt),
                    time(st.retry_at),
                    hook.unwrap_or_else(|| "-".into()),
                    error
                );
            }
            Ok(0)
        }
    }
}
