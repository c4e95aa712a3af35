//! The autoenroll agent: reads enrollment policy, enrolls what is missing, keeps keys and
//! certificates in a local store with atomic swaps. It never links the CA or the store.
#![forbid(unsafe_code)]

pub mod config;
pub mod cycle;
pub mod fault;
pub mod hooks;
pub mod https;
pub mod localstore;
pub mod policy;

pub use config::AgentConfig;
pub use cycle::{run_cycle, run_forever, CycleReport, Force, Jitter, SystemJitter};

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

impl From<autoenroll_proto::ProtoError> for AgentError {
    fn from(e: autoenroll_proto::ProtoError) -> Self {
        AgentError::Protocol(e.to_string())
    }
}

/// The wall clock, truncated to whole seconds.
pub struct SystemClock;

impl autoenroll_core::clock::Clock for SystemClock {
    fn now(&self) -> autoenroll_core::UnixTime {
        let secs =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        autoenroll_core::UnixTime(secs)
    }
}
