//! `autoenroll-agent`: the agent alone (`autoenroll agent ...` without the server, CA and
//! database code), so a device maps only what it runs: a smaller resident footprint.
#[path = "../agent_cmd.rs"]
mod agent_cmd;
#[path = "../signals.rs"]
mod signals;
use signals::shutdown_signal;

use clap::Parser;
use std::io::IsTerminal;

#[derive(Parser)]
#[command(name = "autoenroll-agent", version, about = "autoenroll certificate enrollment agent")]
struct Cli {
    #[command(subcommand)]
    command: agent_cmd::AgentCommand,
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AUTOENROLL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    // One thread is plenty for a daemon that mostly sleeps.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(2);
        }
    };
    let code = runtime.block_on(async {
        match agent_cmd::run(cli.command).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                2
            }
        }
    });
    std::process::exit(code);
}
