//! Fault injection for crash-safety tests: `AUTOENROLL_FAULT=<point>` aborts the process at
//! that point (after-keygen, after-submit, after-receive, mid-write), as a power cut would.
pub fn point(name: &str) {
    if std::env::var("AUTOENROLL_FAULT").is_ok_and(|v| v == name) {
        eprintln!("AUTOENROLL_FAULT: aborting at {name}");
        std::process::abort();
    }
}
