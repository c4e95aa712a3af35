//! Process signals shared by the `autoenroll` and `autoenroll-agent` binaries.

/// Waits for Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// `autoenroll ... | head` must end quietly when the reader goes away: Rust ignores SIGPIPE, so a
/// write to a closed pipe panics inside println!. That one panic exits with 141, the status a
/// process killed by SIGPIPE has; every other panic reports as usual.
pub fn exit_quietly_on_broken_pipe() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message =
            payload.downcast_ref::<String>().map(String::as_str).or_else(|| payload.downcast_ref::<&str>().copied());
        if message.is_some_and(|m| m.contains("Broken pipe") || m.contains("BrokenPipe")) {
            std::process::exit(141);
        }
        report(info);
    }));
}
