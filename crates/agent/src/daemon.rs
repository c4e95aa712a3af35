//! The daemon loop: a cycle, then sleep until the next decision time (no polling, no CPU in
//! between), until stopped.
use crate::config::AgentConfig;
use crate::cycle::{run_cycle, Force, Jitter};
use autoenroll_core::clock::Clock;
use autoenroll_core::UnixTime;
use std::sync::Arc;

/// How soon a failed cycle (no policy server answered) is retried: 30 to 90 s, jittered so that
/// a fleet does not come back in one wave when the server returns.
const CYCLE_RETRY_MIN_SECS: i64 = 30;
const CYCLE_RETRY_SPREAD_SECS: f64 = 60.0;

/// Retry jitter from the system's random number generator.
pub struct SystemJitter;

impl Jitter for SystemJitter {
    fn next(&self) -> f64 {
        let b = autoenroll_keys::random_bytes(8).unwrap_or_else(|_| vec![0; 8]);
        let n = u64::from_be_bytes(b.try_into().unwrap_or([0; 8]));
        (n >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Runs cycles until `stop`, sleeping until the next decision time.
pub async fn run_forever(cfg: &AgentConfig, clock: Arc<dyn Clock>, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        let wake = daemon_cycle(cfg, clock.clone()).await;
        if sleep_until(clock.as_ref(), wake, &mut stop).await == Slept::Stopped {
            return;
        }
    }
}

/// One daemon cycle (with its metrics textfile and log line); returns when the next one is due.
pub async fn daemon_cycle(cfg: &AgentConfig, clock: Arc<dyn Clock>) -> UnixTime {
    let now = clock.now();
    let result = run_cycle(cfg, clock.clone(), &SystemJitter, &Force::None).await;
    let ok = matches!(&result, Ok(r) if r.failed.is_empty());
    if let Err(e) = crate::textfile::write(cfg, clock.now(), ok) {
        tracing::warn!(%e, "could not write the metrics textfile");
    }
    match result {
        Ok(r) => {
            tracing::info!(
                enrolled = r.enrolled.len(),
                renewed = r.renewed.len(),
                reenrolled = r.reenrolled.len(),
                kept = r.kept.len(),
                waiting = r.waiting.len(),
                failed = r.failed.len(),
                "cycle done"
            );
            r.next_wake.unwrap_or(now.plus_secs(3600))
        }
        Err(e) => {
            tracing::warn!(%e, "cycle failed");
            now.plus_secs(CYCLE_RETRY_MIN_SECS + (SystemJitter.next() * CYCLE_RETRY_SPREAD_SECS) as i64)
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Slept {
    Woke,
    Stopped,
}

/// Sleeps until `wake` (at most a day at a time: a wall clock set forward is noticed), or
/// until `stop`.
pub async fn sleep_until(
    clock: &dyn Clock,
    wake: UnixTime,
    stop: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> Slept {
    tracing::info!(next = %wake, "sleeping");
    loop {
        let secs = wake.0 - clock.now().0;
        if secs <= 0 {
            return Slept::Woke;
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(secs.min(24 * 3600) as u64)) => {}
            _ = stop.as_mut() => return Slept::Stopped,
        }
    }
}
