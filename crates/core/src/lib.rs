//! Pure domain code shared by the server and the agent: no async, no I/O, no clock, no RNG.
//! Time and randomness come in as arguments (rule R1 in ARCHITECTURE.md).
#![forbid(unsafe_code)]

pub mod clock;
pub mod error;
pub mod model;
pub mod oids;
pub mod pki;
pub mod refusal;
pub mod renewal;
pub mod spread;

pub use error::Kind;
pub use model::{Serial, TemplateRef, Thumbprint, UnixTime};
pub use refusal::{Refusal, RefusalCode};
