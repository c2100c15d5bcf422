//! `chat-gateway`: one gateway replica. Configuration: see `.example_env`.

use chat_gateway::{AuthMode, Gateway, Settings};
use chat_metrics::Metrics;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    chat_runtime::init_tracing();
    let settings = Settings::from_env(AuthMode::Jwt)?;
    chat_gateway::open_files::raise_open_file_limit(settings.limits.max_connections);
    let shutdown = CancellationToken::new();
    let gateway = Gateway::build(&settings, shutdown.clone(), Metrics::new("gateway")).await?;
    tokio::spawn(chat_runtime::cancel_on_signal(shutdown));
    gateway.run().await
}
