//! `chat-gateway`: one gateway replica. Configuration: see `.example_env`.

use chat_gateway::{AuthMode, Gateway, Settings};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let settings = Settings::from_env(AuthMode::Jwt)?;
    let shutdown = CancellationToken::new();
    let gateway = Gateway::build(&settings, shutdown.clone()).await?;
    tokio::spawn(chat_gateway::shutdown_on_signal(shutdown));
    gateway.run().await
}
