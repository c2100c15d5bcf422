//! The all-in-one chat: the history, presence and accounts services and a gateway in one
//! process, for a single machine. Defaults: embedded on-disk stores in `CHAT_DATA_DIR`,
//! in-memory presence, in-process fan-out, accounts' tokens (sign up on the page; dev
//! auth `?user=` only with `CHAT_AUTH_MODE=dev`), HTTP on `0.0.0.0:8000`. The same
//! `CHAT_*` variables as the split services select MongoDB or Redis instead.
//!
//! History, presence and accounts are the split deployment's gRPC services, and the
//! gateway calls them with the same gRPC clients, but in process: each call runs the
//! service's routes directly (`chat_runtime::grpc::LocalService`: the same encoding,
//! token check and `grpc_*` metrics, no HTTP/2 and no socket; docs/benchmarks.md has what
//! that saves). They also listen on loopback ports of their own, as in the split
//! deployment, for tools and probes. The gateway always uses this process's accounts
//! (`CHAT_ACCOUNTS_URL` is not read).
//!
//! Revocations: without `CHAT_REDIS_URL`, accounts announces ended sessions on an
//! in-process channel (`LocalRevocations`) whose receiver the gateway holds; with it,
//! through Redis as in the split deployment.
//!
//! Internal token: the loopback ports are open to every local user, so the services
//! require a token as in the split deployment (the gateway's in-process calls carry it
//! too):
//! `CHAT_INTERNAL_TOKEN` when set, else a random one made at start (32 bytes from the
//! OS, never printed or stored), which no other process can know.
//!
//! Metrics: one registry for the process (`build_info{service="chat"}`), into which
//! history and presence register their families; the gateway serves it on its
//! `/metrics`. `CHAT_METRICS_ADDR` is not used here.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use chat_accounts::AccountsServer;
use chat_accounts::revocations::LocalRevocations;
use chat_gateway::{AuthMode, Gateway, InProcess};
use chat_history::HistoryServer;
use chat_metrics::Metrics;
use chat_presence::PresenceServer;
use chat_proto::auth::InternalToken;
use chat_runtime::env::FromEnv as _;
use tokio_util::sync::CancellationToken;

/// What `CHAT_ACCOUNTS_URL` reads as while the gateway's settings are read from the
/// environment; [`AllInOne::build`] replaces it with the in-process service's address.
const IN_PROCESS_ACCOUNTS: &str = "http://127.0.0.1:0";

/// Revocations the in-process channel holds for a gateway that has not read them yet;
/// past it the gateway's receiver lags (logged, counted in
/// `chat_gateway_revocation_gaps_total`).
const REVOCATION_QUEUE: usize = 1024;

/// The all-in-one, bound and ready to run.
#[derive(Debug)]
pub struct AllInOne {
    history: HistoryServer,
    presence: PresenceServer,
    accounts: AccountsServer,
    gateway: Gateway,
    shutdown: CancellationToken,
}

impl AllInOne {
    /// Opens the stores and binds the services, from the environment.
    pub async fn from_env(shutdown: CancellationToken) -> anyhow::Result<Self> {
        let history = chat_history::Settings::from_env()?;
        let presence = chat_presence::Settings::from_env()?;
        let accounts = chat_accounts::Settings::from_env()?;
        // The gateway's accounts is this process's: its URL stands here for token mode's
        // requirement until `build` knows the real loopback address.
        let gateway = chat_gateway::Settings::from_lookup(
            |var| match var {
                "CHAT_ACCOUNTS_URL" => Some(IN_PROCESS_ACCOUNTS.to_owned()),
                _ => chat_runtime::env::process_env(var),
            },
            AuthMode::Jwt,
        )?;
        // Its WebSockets need file descriptors like a standalone gateway's.
        chat_gateway::open_files::raise_open_file_limit(gateway.limits.max_connections);
        Self::build(history, presence, accounts, gateway, shutdown).await
    }

    /// Binds the services over embedded stores in `data_dir` (presence and accounts on
    /// their default settings otherwise) and the gateway from `gateway_settings`, as
    /// [`AllInOne::build`] does.
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
        let mut accounts = chat_accounts::Settings::default();
        accounts.store.data_dir = data_dir.to_owned();
        Self::build(history, presence, accounts, gateway_settings, shutdown).await
    }

    /// Binds history, presence and accounts on private loopback ports and has the gateway
    /// call them in process. The gateway settings' `internal_token` (or, when `None`, a random
    /// one) protects the services; that of their own settings is not used. The gateway
    /// verifies the tokens of this accounts (its issuer and audience).
    pub async fn build(
        history_settings: chat_history::Settings,
        presence_settings: chat_presence::Settings,
        mut accounts_settings: chat_accounts::Settings,
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
            .with_internal_token(Some(token.clone()));
        accounts_settings.service.grpc_addr = loopback;
        accounts_settings.service.internal_token = Some(token);
        let accounts_store = chat_accounts::open_store(&accounts_settings).await?;
        let mut backends = chat_accounts::cli::backends(&accounts_settings).await?;
        // Without Redis, ended sessions reach this process's gateway in-process; with it,
        // through Redis like every other gateway's.
        let local_revocations = if backends.redis.is_none() {
            let (tx, rx) = tokio::sync::broadcast::channel(REVOCATION_QUEUE);
            backends.revocations = Arc::new(LocalRevocations::new(tx));
            Some(rx)
        } else {
            None
        };
        let accounts = AccountsServer::bind(
            &accounts_settings,
            accounts_store,
            backends.throttle,
            backends.revocations,
            &mut metrics,
        )
        .await
        .context("binding the in-process accounts service")?;
        // What the gateway's settings name (and its token mode requires): the loopback
        // ports. Its calls go in process.
        gateway_settings.history_url = format!("http://{}", history.local_addr());
        gateway_settings.presence_url = format!("http://{}", presence.local_addr());
        gateway_settings.accounts_url = Some(format!("http://{}", accounts.local_addr()));
        gateway_settings
            .token_issuer
            .clone_from(&accounts_settings.token_issuer);
        gateway_settings
            .token_audience
            .clone_from(&accounts_settings.token_audience);
        let services = InProcess {
            history: history.in_process(),
            presence: presence.in_process(),
            accounts: accounts.in_process(),
            revocations: local_revocations,
        };
        let gateway =
            Gateway::build_in_process(&gateway_settings, shutdown.clone(), metrics, services)
                .await?;
        Ok(Self {
            history,
            presence,
            accounts,
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

    /// The loopback gRPC address of the in-process accounts service.
    pub fn accounts_addr(&self) -> SocketAddr {
        self.accounts.local_addr()
    }

    /// Runs until the shutdown token is cancelled. The gateway drains first; the
    /// services stop after it, so in-flight sends still get stored and acked and closing
    /// connections still report their presence.
    pub async fn run(self) -> anyhow::Result<()> {
        let backends_stop = CancellationToken::new();
        let history = tokio::spawn(self.history.run(backends_stop.clone()));
        let presence = tokio::spawn(self.presence.run(backends_stop.clone()));
        let accounts = tokio::spawn(self.accounts.run(backends_stop.clone()));
        let gateway_result = self.gateway.run().await;
        backends_stop.cancel();
        let history_result = history.await.context("history task panicked")?;
        let presence_result = presence.await.context("presence task panicked")?;
        let accounts_result = accounts.await.context("accounts task panicked")?;
        drop(self.shutdown);
        gateway_result
            .and(history_result)
            .and(presence_result)
            .and(accounts_result)
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
