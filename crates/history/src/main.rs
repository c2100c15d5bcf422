//! `chat-history`: the history service binary. Configuration: see [`chat_history::Settings`].

use anyhow::Context as _;
use chat_history::{HistoryServer, Settings, open_store};
use chat_metrics::Metrics;
use chat_metrics::serve::{MetricsEndpoint, health_check};
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
    let shutdown = CancellationToken::new();
    tokio::spawn(chat_runtime::cancel_on_signal(shutdown.clone()));
    // /healthz: the store answers a ping.
    let health = health_check(move || {
        let store = store.clone();
        async move { store.ping().await.map_err(|e| e.to_string()) }
    });
    let endpoint = MetricsEndpoint::start(
        settings.metrics_addr,
        metrics,
        health,
        shutdown.clone().cancelled_owned(),
    )
    .await?;
    let result = server.run(shutdown).await;
    endpoint.finish().await;
    result
}
