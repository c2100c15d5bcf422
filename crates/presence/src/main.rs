//! `chat-presence`: the presence service binary. Configuration: see [`chat_presence::Settings`].

use anyhow::Context as _;
use chat_metrics::Metrics;
use chat_presence::{PresenceServer, Settings, open_store};
use chat_runtime::env::FromEnv as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    chat_runtime::init_tracing();
    let settings = Settings::from_env()?;
    tracing::debug!(?settings, "starting");
    let mut metrics = Metrics::new("presence");
    let store = open_store(&settings, &mut metrics).await?;
    let addr = settings.service.grpc_addr;
    let server = PresenceServer::bind(addr, store, &mut metrics)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?
        .with_internal_token(settings.service.internal_token.clone());
    let health = server.health();
    chat_runtime::run_service(settings.service.metrics_addr, metrics, health, |stop| {
        server.run(stop)
    })
    .await
}
