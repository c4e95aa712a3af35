//! Post-install hooks: argv (no shell), a timeout, the paths and serials in the environment;
//! the outcome is recorded in the state file and the log.
use crate::localstore::HookOutcome;
use std::path::Path;
use std::time::Duration;

pub struct HookEnv<'a> {
    pub template: &'a str,
    /// `enroll` or `renew`.
    pub event: &'a str,
    pub serial: &'a str,
    pub old_serial: Option<&'a str>,
    /// The live directory (`cert.pem`, `key.pem`, `chain.pem`, `fullchain.pem`).
    pub live_dir: &'a Path,
}

pub async fn run(argv: &[String], env: &HookEnv<'_>, timeout: Duration, now: i64) -> HookOutcome {
    let command = argv.join(" ");
    let Some((program, args)) = argv.split_first() else {
        return HookOutcome { at: now, command, result: "empty command".into(), ok: false };
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env("AUTOENROLL_TEMPLATE", env.template)
        .env("AUTOENROLL_EVENT", env.event)
        .env("AUTOENROLL_SERIAL", env.serial)
        .env("AUTOENROLL_OLD_SERIAL", env.old_serial.unwrap_or(""))
        .env("AUTOENROLL_CERT", env.live_dir.join("cert.pem"))
        .env("AUTOENROLL_KEY", env.live_dir.join("key.pem"))
        .env("AUTOENROLL_CHAIN", env.live_dir.join("chain.pem"))
        .env("AUTOENROLL_FULLCHAIN", env.live_dir.join("fullchain.pem"))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let (result, ok) = match cmd.spawn() {
        Err(e) => (format!("failed to start: {e}"), false),
        Ok(mut child) => match tokio::time::timeout(timeout, child.wait()).await {
            Ok(Ok(status)) => match status.code() {
                Some(c) => (format!("exit {c}"), c == 0),
                None => ("killed by a signal".to_string(), false),
            },
            Ok(Err(e)) => (format!("wait failed: {e}"), false),
            Err(_) => {
                let _ = child.kill().await;
                (format!("timed out after {}s", timeout.as_secs()), false)
            }
        },
    };
    if ok {
        tracing::info!(template = env.template, %command, %result, "hook ran");
    } else {
        tracing::warn!(template = env.template, %command, %result, "hook failed");
    }
    HookOutcome { at: now, command, result, ok }
}
