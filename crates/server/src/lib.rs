//! The autoenroll server as a library: the registration authority (`ra`, the only module that
//! touches the store and the CA), protocol front ends, configuration and the HTTPS listener.
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod conn;
pub mod frontends;
pub mod metrics;
pub mod probe;
pub mod ra;

pub use config::ServerConfig;
pub use ra::Ra;

pub use autoenroll_keys::time::SystemClock;
