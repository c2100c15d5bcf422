//! `chat`: the whole chat in one process. `cargo run --release`, then open
//! <http://localhost:8000>. Configuration: see `.example_env`.

use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let shutdown = CancellationToken::new();
    let chat = chat::AllInOne::from_env(shutdown.clone()).await?;
    tokio::spawn(chat_gateway::shutdown_on_signal(shutdown));
    chat.run().await
}
