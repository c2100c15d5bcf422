//! `chat-history`: the history service binary. Configuration: see [`chat_history::Settings`].

use anyhow::Context as _;
use chat_history::{HistoryServer, Settings, open_store};
use chat_metrics::Metrics;
use chat_runtime::env::FromEnv as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    chat_runtime::init_tracing();
    let settings = Settings::from_env()?;
    tracing::debug!(?settings, "starting");
    let mut metrics = Metrics::new("history");
    let store = open_store(&settings).await?;
    let addr = settings.service.grpc_addr;
    let server = HistoryServer::bind(addr, store, &mut metrics)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?
        .with_internal_token(settings.service.internal_token.clone());
    let health = server.health();
    chat_runtime::run_service(settings.service.metrics_addr, metrics, health, |stop| {
        server.run(stop)
    })
    .await
}
