//! What every chat binary (`chat`, `chat-gateway`, `chat-history`, `chat-presence`)
//! does the same way at start and at the end: logging from `RUST_LOG`, and shutdown on
//! SIGINT or SIGTERM through one [`CancellationToken`] the whole process watches; and
//! for the two gRPC services, health from their backend and the drain ([`health`]).

pub mod health;

use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Logs to stdout, filtered by `RUST_LOG` (tracing's `EnvFilter` syntax; `info` when
/// unset or invalid).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
}

/// Cancels `shutdown` on the first SIGINT or SIGTERM. If one of the two cannot be
/// listened for, the other still works (and the failure is logged).
pub async fn cancel_on_signal(shutdown: CancellationToken) {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT; only SIGTERM stops");
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = interrupt => {}
        () = terminate() => {}
    }
    tracing::info!("shutdown signal received");
    shutdown.cancel();
}

#[cfg(unix)]
async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut sigterm) => {
            sigterm.recv().await;
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; only SIGINT stops");
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(not(unix))]
async fn terminate() {
    std::future::pending::<()>().await;
}
