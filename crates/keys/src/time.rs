//! The wall clock and the TLS stack's view of it, once for the server and the agent. Decision
//! code never reads the clock: it gets `now` from a `Clock` these provide (tests inject a fake).
use autoenroll_core::clock::Clock;
use autoenroll_core::UnixTime;
use std::sync::Arc;

/// The wall clock, truncated to whole seconds.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixTime {
        let secs =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        UnixTime(secs)
    }
}

/// rustls judges certificate validity with this clock, so TLS agrees with every other decision
/// on what "now" is (and tests can move it).
pub struct TlsTime(pub Arc<dyn Clock>);

impl std::fmt::Debug for TlsTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsTime")
    }
}

impl rustls::time_provider::TimeProvider for TlsTime {
    fn current_time(&self) -> Option<rustls_pki_types::UnixTime> {
        let secs = u64::try_from(self.0.now().0).ok()?;
        Some(rustls_pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs)))
    }
}
