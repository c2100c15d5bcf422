//! `chat-accounts`: the accounts service binary. Configuration: see
//! [`chat_accounts::Settings`].

use std::sync::Arc;

use chat_accounts::revocations::{NoRevocations, RedisRevocations, RevocationSink};
use chat_accounts::throttle::{MemoryThrottle, Policies, RedisThrottle, Throttle};
use chat_accounts::{AccountsServer, Settings, open_store};
use chat_metrics::{Metrics, RedisConnectionMetrics};
use chat_runtime::env::FromEnv as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    chat_runtime::init_tracing();
    let settings = Settings::from_env()?;
    tracing::debug!(?settings, "starting");
    let mut metrics = Metrics::new("accounts");
    let store = open_store(&settings).await?;
    let (throttle, revocations): (Arc<dyn Throttle>, Arc<dyn RevocationSink>) =
        match &settings.redis_url {
            Some(url) => {
                let client = chat_accounts::redis::connect(url).await?;
                let connection = RedisConnectionMetrics::register(
                    metrics
                        .registry
                        .sub_registry_with_prefix("chat_accounts_redis"),
                    "1 while the accounts service's Redis connection is up, else 0.",
                    "Reconnections of the accounts service's Redis connection",
                );
                chat_accounts::redis::watch_connection(&client, &connection);
                tracing::info!("throttle and revocations through Redis");
                (
                    Arc::new(RedisThrottle::new(client.clone(), Policies::default())),
                    Arc::new(RedisRevocations::new(client)),
                )
            }
            None => {
                tracing::info!("CHAT_REDIS_URL unset: in-memory throttle, no revocations");
                (
                    Arc::new(MemoryThrottle::new(Policies::default())),
                    Arc::new(NoRevocations),
                )
            }
        };
    let server =
        AccountsServer::bind(&settings, store, throttle, revocations, &mut metrics).await?;
    let health = server.health();
    chat_runtime::run_service(settings.service.metrics_addr, metrics, health, |stop| {
        server.run(stop)
    })
    .await
}
