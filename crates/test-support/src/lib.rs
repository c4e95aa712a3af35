//! Test helpers (dev-only): a fake clock, test data paths, and external-tool checks that fail
//! with instructions instead of skipping.
#![forbid(unsafe_code)]
// Dev-only: a test helper that cannot do its job panics, which fails the test that called it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod bin;
pub mod browser;
pub mod pg;

use autoenroll_core::clock::Clock;
use autoenroll_core::UnixTime;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// A clock that only moves when told to.
#[derive(Clone)]
pub struct FakeClock(Arc<AtomicI64>);

impl FakeClock {
    pub fn at(t: i64) -> FakeClock {
        FakeClock(Arc::new(AtomicI64::new(t)))
    }
    /// Starts at the real current time (TLS certificates are checked against real time).
    pub fn now_real() -> FakeClock {
        let t =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        FakeClock::at(t)
    }
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
    pub fn set(&self, t: i64) {
        self.0.store(t, Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> UnixTime {
        UnixTime(self.0.load(Ordering::SeqCst))
    }
}

/// The repository's shared test data (`testdata/` at the workspace root).
pub fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(rel)
}

/// Panics with an install hint when an external tool the test needs is missing: interop tests
/// never skip silently.
pub fn require_tool(tool: &str, debian_package: &str) {
    let found =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file())).unwrap_or(false);
    assert!(
        found,
        "this test needs `{tool}`: install it with `apt-get install -y {debian_package}` (scripts/test.sh does this)"
    );
}
