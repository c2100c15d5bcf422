//! The gateway: the clients' front door.
//!
//! It terminates WebSockets and HTTP, authenticates, enforces room rules and limits,
//! asks history to store messages, and fans them out to every gateway replica. It holds
//! no durable state: any replica can die and its clients resume on another.
//!
//! # Layout
//!
//! - [`settings`]: configuration from the environment.
//! - [`auth`]: who a request speaks for: accounts' EdDSA tokens, an external issuer's
//!   HS256 tokens, dev-mode `?user=`.
//! - [`accounts`]: the gRPC client of the accounts service and the cache of its public
//!   signing keys.
//! - [`account_api`]: the public accounts API (`/v1/auth/*`, `/v1/users/*`,
//!   `/.well-known/jwks.json`) in front of the accounts service.
//! - [`client_addr`]: the client's address and scheme behind trusted proxies
//!   (`CHAT_TRUSTED_PROXIES`).
//! - [`http`]: routes (`/v1/ws`, `/v1/rooms/{room}/messages`, `/v1/presence`,
//!   `/healthz`, `/readyz`, `/metrics`) and the request-metrics middleware.
//! - [`state`]: [`state::AppState`], shared by every route and session, and
//!   [`state::Admitted`], a connection's place under the connection limit.
//! - [`metrics`]: the gateway's metric families (`chat_gateway_*`); the eight
//!   compatibility metrics come from `chat-metrics`. All listed in
//!   `docs/observability.md`.
//! - [`session`]: one WebSocket connection: reading frames, writing the outbound queue.
//! - [`conn`]: a connection's shared half: bounded outbound queue and close reasons.
//! - [`rooms`]: per-room sequencers: ordering, gap fill from history, catch-up.
//! - [`lane`]: each HTTP worker's delivery lane, through which rooms hand frames to
//!   the worker's sockets.
//! - [`fanout`]: the [`fanout::FanOut`] trait, in-process and Redis backends.
//! - [`history`]: the gRPC client of the history service.
//! - [`presence`]: connection counting and the gRPC client of the presence service;
//!   the heartbeat loop ([`presence::run_heartbeats`], spawned by [`Gateway::build`]),
//!   which renews the lease and announces dead gateways' users offline.
//! - [`revocations`]: sockets by accounts session; closes those of ended sessions (4003)
//!   and remembers them so their tokens are refused; fed by Redis or in-process.
//! - [`counts`]: first/last reference counts shared by fan-out and presence.
//! - [`open_files`]: raising the open-file limit for `CHAT_MAX_CONNECTIONS` at start.
//! - [`error`]: [`error::GatewayError`] and its mapping to protocol codes and HTTP; a
//!   failed gRPC call becomes one naming its [`error::Backend`].
//! - [`web`]: the browser client (`web/`), embedded and served at `/` and `/assets/`.

pub mod account_api;
pub mod accounts;
pub mod auth;
pub mod client_addr;
pub mod conn;
pub mod counts;
pub mod error;
pub mod fanout;
pub mod history;
pub mod http;
pub mod lane;
pub mod limits;
pub mod metrics;
pub mod open_files;
pub mod presence;
pub mod revocations;
pub mod rooms;
pub mod session;
pub mod settings;
pub mod state;
pub mod web;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpServer};
use chat_metrics::Metrics;
use chat_model::revocation::Revocation;
use chat_runtime::grpc::LocalService;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::accounts::AccountsClient;
use crate::fanout::FanOut;
use crate::fanout::memory::InProcessFanOut;
use crate::fanout::redis::RedisFanOut;
use crate::history::{HistoryClient, transport};
use crate::metrics::{GatewayMetrics, RedisFanOutMetrics};
use crate::presence::PresenceTracker;
use crate::revocations::Revocations;
use crate::rooms::Hub;
pub use crate::settings::{AuthMode, Settings};
use crate::state::AppState;

/// Connections the kernel completes and queues before the gateway accepts them (capped
/// by `net.core.somaxconn`). Std's `TcpListener::bind` uses 128, which a reconnect storm
/// (every client of a dead gateway at once) overflows: the SYNs dropped then wait for
/// the client's retransmission, a second or more.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Connections each HTTP worker may hold beyond `CHAT_MAX_CONNECTIONS`: room for plain
/// HTTP requests, and for upgrades past the limit to be answered 503 instead of left
/// waiting unaccepted.
const CONNECTION_HEADROOM: usize = 1024;

/// Binds the listening socket, non-blocking, with [`LISTEN_BACKLOG`].
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)?.into_std()
}

/// The services of this process a gateway calls in process instead of at the URLs of
/// its settings (the all-in-one: no loopback gRPC, see docs/benchmarks.md).
#[derive(Debug)]
pub struct InProcess {
    pub history: LocalService,
    pub presence: LocalService,
    pub accounts: LocalService,
    /// The receiving end of the channel this process's accounts announces ended
    /// sessions on (`LocalRevocations`), when not through Redis.
    pub revocations: Option<broadcast::Receiver<Revocation>>,
}

/// A bound, not yet running gateway.
#[derive(Debug)]
pub struct Gateway {
    listener: TcpListener,
    state: Arc<AppState>,
    workers: usize,
    grace: Duration,
}

impl Gateway {
    /// Connects the backends and binds the listener. Must run inside a Tokio runtime,
    /// which will also run the room sequencers. `metrics` are the process's
    /// (`Metrics::new("gateway")` for a gateway of its own): the gateway registers its
    /// families in it, records into its shared ones, and serves the whole registry on
    /// `/metrics` (so the all-in-one registers history and presence first).
    ///
    /// Ended accounts sessions are learnt from Redis (`chat:revocations`) when
    /// `CHAT_REDIS_URL` is set; see [`Gateway::build_in_process`] for services in this
    /// process.
    pub async fn build(
        settings: &Settings,
        shutdown: CancellationToken,
        metrics: Metrics,
    ) -> anyhow::Result<Self> {
        Self::build_with(settings, shutdown, metrics, None).await
    }

    /// [`Gateway::build`], calling history, presence and accounts in this process
    /// (their URLs in `settings` are not used), and learning ended sessions from
    /// `services.revocations` instead of Redis when it is given.
    pub async fn build_in_process(
        settings: &Settings,
        shutdown: CancellationToken,
        metrics: Metrics,
        services: InProcess,
    ) -> anyhow::Result<Self> {
        Self::build_with(settings, shutdown, metrics, Some(services)).await
    }

    async fn build_with(
        settings: &Settings,
        shutdown: CancellationToken,
        mut metrics: Metrics,
        mut services: Option<InProcess>,
    ) -> anyhow::Result<Self> {
        settings.validate()?;
        let gateway_metrics = GatewayMetrics::register(&mut metrics);
        let (fanout, signals): (Arc<dyn FanOut>, _) = match &settings.redis_url {
            Some(url) => {
                let redis_metrics = RedisFanOutMetrics::register(
                    metrics
                        .registry
                        .sub_registry_with_prefix("chat_gateway_redis"),
                );
                let (fanout, signals) = RedisFanOut::connect(url, redis_metrics).await?;
                (Arc::new(fanout), signals)
            }
            None => {
                let (fanout, signals) = InProcessFanOut::standalone();
                (Arc::new(fanout), signals)
            }
        };
        let local_revocations = services.as_mut().and_then(|s| s.revocations.take());
        let history = HistoryClient::new(
            transport(
                &settings.history_url,
                services.as_ref().map(|s| &s.history),
                history::CALL_TIMEOUT,
            )?,
            &gateway_metrics.grpc,
            settings.internal_token.as_ref(),
        );
        let hub = Hub::new(fanout, history, signals, gateway_metrics.rooms.clone());
        let presence = Arc::new(PresenceTracker::new(
            transport(
                &settings.presence_url,
                services.as_ref().map(|s| &s.presence),
                presence::CALL_TIMEOUT,
            )?,
            &settings.gateway_id,
            &gateway_metrics.grpc,
            gateway_metrics.online_users.clone(),
            settings.internal_token.as_ref(),
        ));
        tokio::spawn(crate::presence::run_heartbeats(
            presence.clone(),
            hub.clone(),
            gateway_metrics.presence_lease_lapses.clone(),
            shutdown.clone(),
        ));
        let local_accounts = services.as_ref().map(|s| &s.accounts);
        let accounts = match (local_accounts, settings.accounts_url.as_deref()) {
            (None, None) => None,
            (local, url) => Some(transport(
                url.unwrap_or_default(),
                local,
                accounts::CALL_TIMEOUT,
            )?),
        }
        .map(|transport| {
            AccountsClient::new(
                transport,
                &gateway_metrics.grpc,
                settings.internal_token.as_ref(),
                &settings.token_issuer,
                &settings.token_audience,
            )
        });
        if let Some(accounts) = &accounts {
            tokio::spawn(accounts.keys().clone().run_refresh(shutdown.clone()));
        }
        let revocations = Arc::new(Revocations::new(gateway_metrics.tokens.clone()));
        match (local_revocations, &settings.redis_url) {
            (Some(rx), _) => {
                tokio::spawn(revocations.clone().follow_local(rx, shutdown.clone()));
            }
            (None, Some(url)) => {
                let tasks = revocations
                    .clone()
                    .subscribe_redis(url)
                    .await
                    .map_err(|e| anyhow::anyhow!("subscribing to revocations on Redis: {e}"))?;
                let stop = shutdown.clone();
                tokio::spawn(async move {
                    stop.cancelled().await;
                    tasks.iter().for_each(tokio::task::JoinHandle::abort);
                });
            }
            (None, None) => {}
        }
        let auth = settings
            .authenticator(accounts.as_ref().map(|a| a.keys().clone()))?
            .with_revocations(revocations.clone());
        let listener = bind(settings.http_addr)?;
        let state = AppState::new(hub, presence, auth, settings.gateway_id.clone(), shutdown)
            .with_accounts(accounts)
            .with_revocations(revocations)
            .with_metrics(gateway_metrics, Arc::new(metrics.registry))
            .with_limits(settings.limits.clone())
            .with_trusted_proxies(settings.trusted_proxies.clone());
        Ok(Self {
            listener,
            state: Arc::new(state),
            workers: settings.workers,
            grace: Duration::from_secs(settings.shutdown_grace_secs),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the shutdown token is cancelled, then drains: readiness turns
    /// false, upgrades are refused, WebSockets close with 1001, and in-flight requests
    /// get the grace period to finish.
    pub async fn run(self) -> anyhow::Result<()> {
        let addr = self.local_addr()?;
        let data = actix_web::web::Data::from(self.state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .wrap(actix_web::middleware::from_fn(http::record_request))
                .configure(http::routes)
        })
        .workers(self.workers)
        // A sender gets its `message` and its `ack` back to back; with Nagle on, the
        // second frame waits for the client's delayed ACK (up to 40 ms). See
        // docs/benchmarks.md.
        .tcp_nodelay(true)
        // actix stops accepting at 25k connections per worker by default, which would
        // cap a 2-core gateway at 50k whatever CHAT_MAX_CONNECTIONS says. Any worker may
        // end up holding most connections, so each may hold the whole limit.
        .max_connections(self.state.limits.max_connections + CONNECTION_HEADROOM)
        .backlog(LISTEN_BACKLOG)
        .disable_signals()
        .shutdown_timeout(self.grace.as_secs())
        .listen(self.listener)?
        .run();
        tracing::info!(gateway = %self.state.gateway_id, "http listening on {addr}");
        let handle = server.handle();
        let shutdown = self.state.shutdown.clone();
        let stopper = tokio::spawn(async move {
            shutdown.cancelled().await;
            // Sessions see the same token and close with 1001; give their close frames
            // a moment to be written before the workers stop.
            tokio::time::sleep(Duration::from_millis(200)).await;
            handle.stop(true).await;
        });
        server.await?;
        stopper.abort();
        Ok(())
    }
}
