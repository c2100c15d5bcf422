//! The all-in-one chat: the history service, the presence service and a gateway in one
//! process, for a single machine. Defaults: embedded on-disk store in `CHAT_DATA_DIR`,
//! in-memory presence, in-process fan-out, dev auth (`?user=`), HTTP on `0.0.0.0:8000`.
//! The same `CHAT_*` variables as the split services select MongoDB or Redis instead.
//!
//! History and presence listen on loopback ports of their own and the gateway calls them
//! over gRPC, exactly as in the split deployment, so both run one code path.
//!
//! Internal token: the loopback ports are open to every local user, so history and
//! presence require a token from the gateway as in the split deployment:
//! `CHAT_INTERNAL_TOKEN` when set, else a random one made at start (32 bytes from the
//! OS, never printed or stored), which no other process can know.
//!
//! Metrics: one registry for the process (`build_info{service="chat"}`), into which
//! history and presence register their families; the gateway serves it on its
//! `/metrics`. `CHAT_METRICS_ADDR` is not used here.

use std::net::SocketAddr;

use anyhow::Context as _;
use chat_gateway::{AuthMode, Gateway};
use chat_history::HistoryServer;
use chat_metrics::Metrics;
use chat_presence::PresenceServer;
use chat_proto::auth::InternalToken;
use chat_runtime::env::FromEnv as _;
use tokio_util::sync::CancellationToken;

/// The all-in-one, bound and ready to run.
#[derive(Debug)]
pub struct AllInOne {
    history: HistoryServer,
    presence: PresenceServer,
    gateway: Gateway,
    shutdown: CancellationToken,
}

impl AllInOne {
    /// Opens the store and binds both services, from the environment.
    pub async fn from_env(shutdown: CancellationToken) -> anyhow::Result<Self> {
        let history = chat_history::Settings::from_env()?;
        let presence = chat_presence::Settings::from_env()?;
        let gateway = chat_gateway::Settings::from_env(AuthMode::Dev)?;
        // Its WebSockets need file descriptors like a standalone gateway's.
        chat_gateway::open_files::raise_open_file_limit(gateway.limits.max_connections);
        Self::build(history, presence, gateway, shutdown).await
    }

    /// Binds both services over an embedded store in `data_dir` (presence on its default
    /// settings) and the gateway from `gateway_settings`, as [`AllInOne::build`] does.
    pub async fn build_embedded(
        data_dir: &std::path::Path,
        gateway_settings: chat_gateway::Settings,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let history = chat_history::Settings {
            data_dir: data_dir.to_owned(),
            ..Default::default()
        };
        let presence = chat_presence::Settings::default();
        Self::build(history, presence, gateway_settings, shutdown).await
    }

    /// Binds history and presence on private loopback ports and points the gateway at
    /// them. The gateway settings' `internal_token` (or, when `None`, a random one)
    /// protects both services; that of the history and presence settings is not used.
    pub async fn build(
        history_settings: chat_history::Settings,
        presence_settings: chat_presence::Settings,
        mut gateway_settings: chat_gateway::Settings,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let token = match gateway_settings.internal_token.clone() {
            Some(token) => token,
            None => random_token()?,
        };
        gateway_settings.internal_token = Some(token.clone());
        let mut metrics = Metrics::new("chat");
        let store = chat_history::open_store(&history_settings).await?;
        let history = HistoryServer::bind(loopback, store, &mut metrics)
            .await
            .context("binding the in-process history service")?
            .with_internal_token(Some(token.clone()));
        let presence_store = chat_presence::open_store(&presence_settings, &mut metrics).await?;
        let presence = PresenceServer::bind(loopback, presence_store, &mut metrics)
            .await
            .context("binding the in-process presence service")?
            .with_internal_token(Some(token));
        gateway_settings.history_url = format!("http://{}", history.local_addr());
        gateway_settings.presence_url = format!("http://{}", presence.local_addr());
        let gateway = Gateway::build(&gateway_settings, shutdown.clone(), metrics).await?;
        Ok(Self {
            history,
            presence,
            gateway,
            shutdown,
        })
    }

    /// The gateway's HTTP address.
    pub fn http_addr(&self) -> std::io::Result<SocketAddr> {
        self.gateway.local_addr()
    }

    /// The loopback gRPC address of the in-process history service.
    pub fn history_addr(&self) -> SocketAddr {
        self.history.local_addr()
    }

    /// The loopback gRPC address of the in-process presence service.
    pub fn presence_addr(&self) -> SocketAddr {
        self.presence.local_addr()
    }

    /// Runs until the shutdown token is cancelled. The gateway drains first; history and
    /// presence stop after it, so in-flight sends still get stored and acked and closing
    /// connections still report their presence.
    pub async fn run(self) -> anyhow::Result<()> {
        let backends_stop = CancellationToken::new();
        let history = tokio::spawn(self.history.run(backends_stop.clone()));
        let presence = tokio::spawn(self.presence.run(backends_stop.clone()));
        let gateway_result = self.gateway.run().await;
        backends_stop.cancel();
        let history_result = history.await.context("history task panicked")?;
        let presence_result = presence.await.context("presence task panicked")?;
        drop(self.shutdown);
        gateway_result.and(history_result).and(presence_result)
    }
}

/// A fresh internal token: 32 random bytes from the OS, in hex.
fn random_token() -> anyhow::Result<InternalToken> {
    let mut bytes = [0_u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("no randomness for the internal token: {e}"))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    InternalToken::parse(&hex).context("the random internal token")
}
