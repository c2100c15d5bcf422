//! `chat`: the whole chat in one process. `cargo run --release`, then open
//! <http://localhost:8000>. Configuration: see `.example_env`.

use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    chat_runtime::init_tracing();
    let shutdown = CancellationToken::new();
    let chat = chat::AllInOne::from_env(shutdown.clone()).await?;
    tokio::spawn(chat_runtime::cancel_on_signal(shutdown));
    chat.run().await
}
