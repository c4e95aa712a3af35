//! The autoenroll agent: reads enrollment policy, enrolls what is missing, keeps keys and
//! certificates in a local store with atomic swaps. It never links the CA or the store.
#![forbid(unsafe_code)]

pub mod attempt;
pub mod config;
pub mod credentials;
pub mod cycle;
pub mod daemon;
pub mod est;
pub mod fault;
pub mod hooks;
pub mod https;
pub mod localstore;
pub mod policy;
pub mod textfile;
pub mod transport;

pub use autoenroll_keys::time::SystemClock;
pub use config::AgentConfig;
pub use cycle::{run_cycle, CycleReport, Force, Jitter};
pub use daemon::{daemon_cycle, run_forever, sleep_until, Slept, SystemJitter};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("{url}: {message}")]
    Transport { url: String, message: String },
    #[error("server refused: {reason} ({code})")]
    Refused { code: String, reason: String },
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("local store {path}: {message}")]
    Store { path: String, message: String },
    #[error("key: {0}")]
    Key(#[from] autoenroll_keys::KeyError),
}

impl AgentError {
    /// Whether the server said no for good to what was asked (denied, not allowed, a bad
    /// request), as opposed to "not now" (locked out for a while, busy, another request in
    /// progress): only a final refusal ends an attempt and lets its key go.
    pub fn is_final_refusal(&self) -> bool {
        matches!(self, AgentError::Refused { code, .. } if !transient_refusal(code))
    }
}

/// Refusal codes that mean "not now" rather than "no" (`RequestInProgress`: servers before
/// 2026-12 sent it while a request was being signed).
pub fn transient_refusal(code: &str) -> bool {
    matches!(code, "TooManyAttempts" | "ServerBusy" | "RequestInProgress" | "RenewalInProgress" | "Internal")
}

impl From<autoenroll_proto::ProtoError> for AgentError {
    fn from(e: autoenroll_proto::ProtoError) -> Self {
        AgentError::Protocol(e.to_string())
    }
}
