//! What every chat binary (`chat`, `chat-gateway`, `chat-history`, `chat-presence`)
//! does the same way: settings from `CHAT_*` variables ([`env`]), logging from
//! `RUST_LOG`, shutdown on SIGINT or SIGTERM through one [`CancellationToken`] the whole
//! process watches; and for the gRPC services, serving with health, internal token,
//! metrics and drain ([`grpc`], [`health`]), and the whole life of their binary
//! ([`run_service`]).
//!
//! # Layout
//!
//! - [`env`]: typed reading of environment variables with errors that name the
//!   variable, the secret wrapper, and the settings every gRPC service shares.
//! - [`grpc`]: [`grpc::GrpcServer`], bind + serve one gRPC service with health, token
//!   check, metrics and the NOT_SERVING-then-drain shutdown.
//! - [`health`]: the health reporter behind it, and the shutdown timings.
//! - [`store`]: what the services with a database share: [`store::StoreError`] (and its
//!   gRPC status), opening the backend [`env::StoreSettings`] choose, and behind the
//!   features `mongodb` and `redb` connecting to MongoDB and creating the redb file.
//!
//! A new gRPC service is its service implementation, its `Settings` (an
//! [`env::ServiceSettings`] plus its own variables) and a `main` of a few lines: bind a
//! [`grpc::GrpcServer`] through the service's server type, then [`run_service`].

pub mod env;
pub mod grpc;
pub mod health;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;

use chat_metrics::Metrics;
use chat_metrics::serve::{HealthCheck, MetricsEndpoint};
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

/// The life of a gRPC service binary once its server is bound: `/metrics` and
/// `/healthz` (`health`) on `metrics_addr`, then `serve` until SIGINT or SIGTERM, whose
/// result is returned after the metrics listener has stopped too.
pub async fn run_service<F, Fut>(
    metrics_addr: SocketAddr,
    metrics: Metrics,
    health: HealthCheck,
    serve: F,
) -> anyhow::Result<()>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let endpoint = MetricsEndpoint::start(
        metrics_addr,
        metrics,
        health,
        shutdown.clone().cancelled_owned(),
    )
    .await?;
    let result = serve(shutdown).await;
    endpoint.finish().await;
    result
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
