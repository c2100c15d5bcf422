//! The all-in-one chat: the history service and a gateway in one process, for a single
//! machine. Defaults: embedded on-disk store in `CHAT_DATA_DIR`, in-process fan-out,
//! dev auth (`?user=`), HTTP on `0.0.0.0:8000`. The same `CHAT_*` variables as the
//! split services select MongoDB or Redis instead.
//!
//! History listens on a loopback port of its own and the gateway calls it over gRPC,
//! exactly as in the split deployment, so both run one code path.

use std::net::SocketAddr;

use anyhow::Context as _;
use chat_gateway::{AuthMode, Gateway};
use chat_history::HistoryServer;
use tokio_util::sync::CancellationToken;

/// The all-in-one, bound and ready to run.
#[derive(Debug)]
pub struct AllInOne {
    history: HistoryServer,
    gateway: Gateway,
    shutdown: CancellationToken,
}

impl AllInOne {
    /// Opens the store and binds both services, from the environment.
    pub async fn from_env(shutdown: CancellationToken) -> anyhow::Result<Self> {
        let history_settings = chat_history::Settings::from_env()?;
        let gateway_settings = chat_gateway::Settings::from_env(AuthMode::Dev)?;
        Self::build(history_settings, gateway_settings, shutdown).await
    }

    /// Binds history on a private loopback port and points the gateway at it.
    pub async fn build(
        history_settings: chat_history::Settings,
        mut gateway_settings: chat_gateway::Settings,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let store = chat_history::open_store(&history_settings).await?;
        let history = HistoryServer::bind(SocketAddr::from(([127, 0, 0, 1], 0)), store)
            .await
            .context("binding the in-process history service")?;
        gateway_settings.history_url = format!("http://{}", history.local_addr());
        let gateway = Gateway::build(&gateway_settings, shutdown.clone()).await?;
        Ok(Self {
            history,
            gateway,
            shutdown,
        })
    }

    /// The gateway's HTTP address.
    pub fn http_addr(&self) -> std::io::Result<SocketAddr> {
        self.gateway.local_addr()
    }

    /// Runs until the shutdown token is cancelled. The gateway drains first; history
    /// stops after it, so in-flight sends still get stored and acked.
    pub async fn run(self) -> anyhow::Result<()> {
        let history_stop = CancellationToken::new();
        let history = tokio::spawn(self.history.run(history_stop.clone()));
        let gateway_result = self.gateway.run().await;
        history_stop.cancel();
        let history_result = history.await.context("history task panicked")?;
        drop(self.shutdown);
        gateway_result.and(history_result)
    }
}
