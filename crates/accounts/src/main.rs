//! `chat-accounts`: the accounts service binary. Configuration: see
//! [`chat_accounts::Settings`].

use std::sync::Arc;

use chat_accounts::throttle::{MemoryThrottle, Policies};
use chat_accounts::{AccountsServer, Settings, open_store};
use chat_metrics::Metrics;
use chat_runtime::env::FromEnv as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    chat_runtime::init_tracing();
    let settings = Settings::from_env()?;
    tracing::debug!(?settings, "starting");
    let mut metrics = Metrics::new("accounts");
    let store = open_store(&settings).await?;
    let throttle = Arc::new(MemoryThrottle::new(Policies::default()));
    let server = AccountsServer::bind(&settings, store, throttle, &mut metrics).await?;
    let health = server.health();
    chat_runtime::run_service(settings.service.metrics_addr, metrics, health, |stop| {
        server.run(stop)
    })
    .await
}
