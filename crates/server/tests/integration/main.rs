//! The server's integration tests, one binary: each of these files used to link the whole stack
//! on its own (~50 MB each, 14 links per build). One module per area.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;

mod acme;
mod admin_api;
mod agent_est;
mod agent_renewal;
mod attacks;
mod checkin;
mod console;
mod est;
mod fleet;
mod hostile;
mod lifecycle;
mod mdm;
mod renewal;
mod revocation;
mod scep;
mod templates;
mod tls;
mod wstep;
mod xcep_conformance;
