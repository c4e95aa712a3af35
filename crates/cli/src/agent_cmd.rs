use anyhow::Result;
use autoenroll_agent::localstore::LocalStore;
use autoenroll_agent::{AgentConfig, SystemClock};
use autoenroll_core::clock::Clock;
use autoenroll_core::renewal::renew_at;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum AgentCommand {
    /// Enroll and renew per policy; keeps running unless --once.
    Run {
        #[arg(long, default_value = "agent.toml")]
        config: PathBuf,
        /// Run one cycle and exit: 0 all certificates held, 1 some template failed,
        /// 2 configuration error, 3 no policy server answered.
        #[arg(long)]
        once: bool,
    },
    /// Show the certificates held, their renewal times and the last errors.
    Status {
        #[arg(long, default_value = "agent.toml")]
        config: PathBuf,
    },
}

pub async fn run(cmd: AgentCommand) -> Result<i32> {
    match cmd {
        AgentCommand::Run { config, once } => {
            let cfg = AgentConfig::load(&config)?;
            if once {
                return Ok(match autoenroll_agent::run_cycle(&cfg, &SystemClock).await {
                    Ok(r) => {
                        for (t, s) in &r.enrolled {
                            println!("enrolled {t} serial {s}");
                        }
                        for t in &r.kept {
                            println!("kept {t}");
                        }
                        for (t, e) in &r.failed {
                            println!("failed {t}: {e}");
                        }
                        r.exit_code()
                    }
                    Err(e @ autoenroll_agent::AgentError::Config(_)) => {
                        eprintln!("error: {e}");
                        2
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        3
                    }
                });
            }
            autoenroll_agent::run_forever(&cfg, &SystemClock, crate::shutdown_signal()).await;
            Ok(0)
        }
        AgentCommand::Status { config } => {
            let cfg = AgentConfig::load(&config)?;
            let store = LocalStore::open(&cfg.state_dir, cfg.archive_keep)?;
            let state = store.load_state()?;
            let now = SystemClock.now();
            println!(
                "{:<14} {:<34} {:<8} {:<21} {:<21} {:<8} LAST ERROR",
                "TEMPLATE", "SERIAL", "VERSION", "NOT AFTER", "RENEW AT", "STATE"
            );
            let mut names = store.live_templates()?;
            for t in state.templates.keys() {
                if !names.contains(t) {
                    names.push(t.clone());
                }
            }
            for name in names {
                let held = store.current(&name)?;
                let policy = state.policy.iter().find(|p| p.name == name);
                let error = state.templates.get(&name).and_then(|s| s.last_error.clone()).unwrap_or_default();
                match held {
                    Some(h) => {
                        let f = &h.facts;
                        let renew = policy
                            .map(|p| renew_at(f.not_before, f.not_after, p.renewal_secs).to_string())
                            .unwrap_or_else(|| "-".into());
                        let version = f
                            .template
                            .as_ref()
                            .map(|t| format!("{}.{}", t.major, t.minor))
                            .unwrap_or_else(|| "-".into());
                        let st = if now >= f.not_after { "expired" } else { "valid" };
                        println!(
                            "{:<14} {:<34} {:<8} {:<21} {:<21} {:<8} {}",
                            name,
                            f.serial,
                            version,
                            f.not_after.to_string(),
                            renew,
                            st,
                            error
                        );
                    }
                    None => println!(
                        "{:<14} {:<34} {:<8} {:<21} {:<21} {:<8} {}",
                        name, "-", "-", "-", "-", "missing", error
                    ),
                }
            }
            Ok(0)
        }
    }
}
