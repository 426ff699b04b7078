//! Process signals: SIGTERM and SIGINT start the graceful drain (contract §1).

/// Resolves when SIGTERM or SIGINT arrives (Ctrl-C on other platforms).
///
/// # Panics
/// If the signal handlers cannot be installed (only at startup, outside a runtime).
pub async fn shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
        tokio::select! {
            // systemd and Kubernetes send SIGTERM to stop.
            _ = term.recv() => tracing::info!("SIGTERM received, draining"),
            // Ctrl-C in a terminal behaves the same.
            _ = int.recv() => tracing::info!("SIGINT received, draining"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("Ctrl-C received, draining");
    }
}
