//! Man pages and shell completions generated from the command-line definitions, so they never
//! drift from the program (shared by `autoenroll` and `autoenroll-agent`).
use std::path::Path;

/// Writes one man page per command and subcommand (`autoenroll-server-run.1`, ...) to `out`.
pub fn man(cmd: clap::Command, out: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(out)?;
    clap_mangen::generate_to(cmd, out)?;
    let mut n = 0;
    for e in std::fs::read_dir(out)? {
        if e?.path().extension().is_some_and(|x| x == "1") {
            n += 1;
        }
    }
    println!("wrote {n} man pages to {}", out.display());
    Ok(())
}

/// Prints the completion script for `shell` on stdout.
pub fn completions(mut cmd: clap::Command, shell: clap_complete::Shell) {
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, &mut cmd, name, &mut std::io::stdout());
}

/// The two commands both binaries have.
#[derive(clap::Subcommand)]
pub enum DocsCommand {
    /// Write man pages for every command to a directory.
    Man {
        #[arg(long, default_value = "man")]
        out: std::path::PathBuf,
    },
    /// Print a shell completion script: `autoenroll completions bash > /etc/bash_completion.d/autoenroll`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

impl DocsCommand {
    /// Runs it for the binary whose definitions are `cmd`, and ends the process.
    pub fn run(&self, cmd: clap::Command) -> ! {
        match self {
            DocsCommand::Man { out } => match man(cmd, out) {
                Ok(()) => std::process::exit(0),
                Err(e) => {
                    eprintln!("error: writing man pages to {}: {e}", out.display());
                    std::process::exit(2);
                }
            },
            DocsCommand::Completions { shell } => {
                completions(cmd, *shell);
                std::process::exit(0);
            }
        }
    }
}
