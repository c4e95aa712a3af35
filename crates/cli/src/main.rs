//! The `autoenroll` command: clap definitions and glue only.
#![forbid(unsafe_code)]

mod agent_cmd;
mod bench;
mod signals;
pub use signals::shutdown_signal;
mod bench_fleet;
mod bench_scep;
mod bench_soak;
mod generated_docs;
mod server_cmd;

use clap::{CommandFactory, Parser, Subcommand};

// The server allocates per request (DER, XML, TLS records) from many threads; glibc's malloc and
// free were a tenth of the server's CPU per issuance under load (docs/benchmarks.md). The
// device agent (`autoenroll-agent`) keeps the system allocator: it is idle and small.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::io::IsTerminal;

#[derive(Parser)]
#[command(name = "autoenroll", version, about = "Certificate autoenrollment: server (CA, MS-XCEP/MS-WSTEP) and agent")]
struct Cli {
    /// Log lines as text (default) or as one JSON object per line (for log shippers).
    #[arg(long, global = true, value_enum, default_value_t, env = "AUTOENROLL_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Default, clap::ValueEnum)]
enum LogFormat {
    #[default]
    Text,
    Json,
}

// Parsed once per process; the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// The enrollment server and its administration.
    Server {
        #[command(subcommand)]
        command: server_cmd::ServerCommand,
    },
    /// The enrollment agent.
    Agent {
        #[command(subcommand)]
        command: agent_cmd::AgentCommand,
    },
    /// Benchmarks that print figures.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    #[command(flatten)]
    Docs(generated_docs::DocsCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// WSTEP issuance throughput and latency at several concurrency levels.
    Issue(bench::IssueBench),
    /// SCEP PKCSReq issuance throughput and latency (ours, or any SCEP server with --url).
    Scep(bench_scep::ScepBench),
    /// The WSTEP issuance load against a cfssl server's sign endpoint (the peer comparison).
    Cfssl(bench::CfsslBench),
    /// Fleet renewal spreading: devices issued at the same moment, each deciding its renewal
    /// time from check-in as the agent does; prints the busiest minute against the mean.
    Fleet(bench_fleet::FleetBench),
    /// Legitimate load for a long time under slowloris and password guessing: errors, p99 and
    /// memory per interval.
    Soak(bench_soak::SoakBench),
}

fn main() {
    signals::exit_quietly_on_broken_pipe();
    let cli = Cli::parse();
    if let Command::Docs(d) = &cli.command {
        d.run(Cli::command());
    }
    // Benchmarks run a server in-process: a log line per issuance would be measured too.
    let default_level = if matches!(cli.command, Command::Bench { .. }) { "warn" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("AUTOENROLL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        use tracing_subscriber::Layer;
        let text = matches!(cli.log_format, LogFormat::Text);
        let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
        let logs = if text { logs.with_ansi(std::io::stderr().is_terminal()).boxed() } else { logs.json().boxed() };
        // Benchmarks count the database statements sqlx reports (at debug, whatever the filter).
        // Evaluated per event (dynamic), so outside the counting run sqlx formats nothing.
        let counter = matches!(cli.command, Command::Bench { .. }).then(|| {
            bench::StatementCounter.with_filter(
                tracing_subscriber::filter::dynamic_filter_fn(|m, _| {
                    bench::COUNTING.load(std::sync::atomic::Ordering::Relaxed) && m.target() == "sqlx::query"
                })
                .with_max_level_hint(tracing_subscriber::filter::LevelFilter::DEBUG),
            )
        });
        tracing_subscriber::registry().with(logs.with_filter(filter)).with(counter).init();
    }

    // The agent is a small daemon: one thread is plenty and keeps its footprint low.
    let mut builder = match cli.command {
        Command::Agent { .. } => tokio::runtime::Builder::new_current_thread(),
        Command::Server { .. } | Command::Bench { .. } | Command::Docs(_) => {
            tokio::runtime::Builder::new_multi_thread()
        }
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(2);
        }
    };
    let code = runtime.block_on(async {
        let result = match cli.command {
            Command::Server { command } => server_cmd::run(command).await,
            Command::Agent { command } => agent_cmd::run(command).await,
            Command::Bench { command: BenchCommand::Issue(b) } => bench::issue(b).await,
            Command::Bench { command: BenchCommand::Scep(b) } => bench_scep::scep(b).await,
            Command::Bench { command: BenchCommand::Cfssl(b) } => bench::cfssl(b).await,
            Command::Bench { command: BenchCommand::Fleet(b) } => bench_fleet::fleet(b).await,
            Command::Bench { command: BenchCommand::Soak(b) } => bench_soak::soak(b).await,
            Command::Docs(_) => Ok(0),
        };
        match result {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                2
            }
        }
    });
    std::process::exit(code);
}
