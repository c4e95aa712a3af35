use anyhow::Result;
use autoenroll_agent::cycle::{renewal_time, Schedule};
use autoenroll_agent::localstore::LocalStore;
use autoenroll_agent::{AgentConfig, AgentError, CycleReport, Force, SystemClock, SystemJitter};
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

fn time(t: Option<i64>) -> String {
    t.map(|t| UnixTime(t).to_string()).unwrap_or_else(|| "-".into())
}

pub async fn run(cmd: AgentCommand) -> Result<i32> {
    match cmd {
        AgentCommand::Run { config, once } => {
            let cfg = AgentConfig::load(&config)?;
            if once {
                return Ok(one_cycle(&cfg, Force::None).await);
            }
            // systemd (Type=notify): the configuration is good; cycles follow.
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            autoenroll_agent::run_forever(&cfg, Arc::new(SystemClock), crate::shutdown_signal()).await;
            Ok(0)
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
