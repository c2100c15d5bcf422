//! `chat-history`: the history service binary. Configuration: see [`chat_history::Settings`].

use std::sync::Arc;

use anyhow::Context as _;
use chat_history::{HistoryServer, Settings, open_store};
use chat_metrics::Metrics;
use chat_metrics::serve::{health_check, serve_metrics};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    chat_runtime::init_tracing();
    let settings = Settings::from_env()?;
    tracing::debug!(?settings, "starting");
    let mut metrics = Metrics::new("history");
    let store = open_store(&settings).await?;
    let server = HistoryServer::bind_with_metrics(settings.grpc_addr, store.clone(), &mut metrics)
        .await
        .with_context(|| format!("cannot listen on {}", settings.grpc_addr))?
        .with_internal_token(settings.internal_token.clone());
    let metrics_listener = tokio::net::TcpListener::bind(settings.metrics_addr)
        .await
        .with_context(|| format!("cannot listen on {}", settings.metrics_addr))?;
    tracing::info!("metrics listening on {}", metrics_listener.local_addr()?);
    let shutdown = CancellationToken::new();
    tokio::spawn(chat_runtime::cancel_on_signal(shutdown.clone()));
    // /healthz: the store answers a ping.
    let health = health_check(move || {
        let store = store.clone();
        async move { store.ping().await.map_err(|e| e.to_string()) }
    });
    let metrics_server = tokio::spawn(serve_metrics(
        metrics_listener,
        Arc::new(metrics.registry),
        metrics.http,
        health,
        shutdown.clone().cancelled_owned(),
    ));
    let result = server.run(shutdown).await;
    match metrics_server.await {
        Ok(Err(e)) => tracing::warn!(error = %e, "metrics server failed"),
        Err(e) => tracing::warn!(error = %e, "metrics server panicked"),
        Ok(Ok(())) => {}
    }
    result
}
