//! The autoenroll server as a library: the registration authority (`ra`, the only module that
//! touches the store and the CA), protocol front ends, configuration and the HTTPS listener.
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod frontends;
pub mod ra;

pub use config::ServerConfig;
pub use ra::Ra;

/// The wall clock, truncated to whole seconds.
pub struct SystemClock;

impl autoenroll_core::clock::Clock for SystemClock {
    fn now(&self) -> autoenroll_core::UnixTime {
        let secs =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        autoenroll_core::UnixTime(secs)
    }
}
