//! `autoenroll-agent`: the agent alone (`autoenroll agent ...` without the server, CA and
//! database code), so a device maps only what it runs: a smaller resident footprint. Its own
//! package, so that building it never compiles the server side; the command definitions are
//! shared with `autoenroll` (`crates/cli/src/agent_cmd.rs`). Built small with
//! `cargo build --profile agent -p autoenroll-agent-bin`.
#![forbid(unsafe_code)]
#[path = "../../cli/src/agent_cmd.rs"]
mod agent_cmd;
#[path = "../../cli/src/generated_docs.rs"]
mod generated_docs;
#[path = "../../cli/src/signals.rs"]
mod signals;
use signals::shutdown_signal;

use clap::{CommandFactory, Parser, Subcommand};
use std::io::IsTerminal;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Parser)]
#[command(name = "autoenroll-agent", version, about = "autoenroll certificate enrollment agent")]
struct Cli {
    #[command(subcommand)]
    command: Top,
}

#[derive(Subcommand)]
enum Top {
    #[command(flatten)]
    Agent(agent_cmd::AgentCommand),
    #[command(flatten)]
    Docs(generated_docs::DocsCommand),
}

fn main() {
    signals::exit_quietly_on_broken_pipe();
    let cli = Cli::parse();
    let command = match cli.command {
        Top::Agent(c) => c,
        Top::Docs(d) => d.run(Cli::command()),
    };
    // AUTOENROLL_LOG as `level` or `target=level,...` (no regex, unlike the server's filter).
    let filter = std::env::var("AUTOENROLL_LOG")
        .ok()
        .and_then(|s| s.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal()))
        .with(filter)
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
        match agent_cmd::run(command).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                2
            }
        }
    });
    std::process::exit(code);
}
