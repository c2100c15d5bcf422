//! The gateway: the clients' front door.
//!
//! It terminates WebSockets and HTTP, authenticates, enforces room rules and limits,
//! asks history to store messages, and fans them out to every gateway replica. It holds
//! no durable state: any replica can die and its clients resume on another.
//!
//! # Layout
//!
//! - [`settings`]: configuration from the environment.
//! - [`auth`]: JWT HS256 and dev-mode identities.
//! - [`http`]: routes (`/v1/ws`, `/v1/rooms/{room}/messages`, `/healthz`, `/readyz`).
//! - [`session`]: one WebSocket connection: reading frames, writing the outbound queue.
//! - [`conn`]: a connection's shared half: bounded outbound queue and close reasons.
//! - [`rooms`]: per-room sequencers: ordering, gap fill from history, catch-up.
//! - [`fanout`]: the [`fanout::FanOut`] trait, in-process and Redis backends.
//! - [`history`]: the gRPC client of the history service.
//! - [`error`]: [`error::GatewayError`] and its mapping to protocol codes and HTTP.

pub mod auth;
pub mod conn;
pub mod error;
pub mod fanout;
pub mod history;
pub mod http;
pub mod rooms;
pub mod session;
pub mod settings;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpServer, web};
use tokio_util::sync::CancellationToken;

use crate::fanout::FanOut;
use crate::fanout::memory::InProcessFanOut;
use crate::fanout::redis::RedisFanOut;
use crate::history::HistoryClient;
use crate::http::AppState;
use crate::rooms::Hub;
pub use crate::settings::{AuthMode, Settings};

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
    /// which will also run the room sequencers.
    pub async fn build(settings: &Settings, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let (fanout, signals): (Arc<dyn FanOut>, _) = match &settings.redis_url {
            Some(url) => {
                let (fanout, signals) = RedisFanOut::connect(url).await?;
                (Arc::new(fanout), signals)
            }
            None => {
                let (fanout, signals) = InProcessFanOut::standalone();
                (Arc::new(fanout), signals)
            }
        };
        let history = HistoryClient::connect_lazy(&settings.history_url)?;
        let hub = Hub::new(fanout, history, signals);
        let listener = TcpListener::bind(settings.http_addr)?;
        listener.set_nonblocking(true)?;
        let state = AppState::new(
            hub,
            settings.authenticator()?,
            settings.gateway_id.clone(),
            shutdown,
        );
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
        let data = web::Data::from(self.state.clone());
        let server =
            HttpServer::new(move || App::new().app_data(data.clone()).configure(http::routes))
                .workers(self.workers)
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

/// Cancels `shutdown` on SIGINT or SIGTERM.
pub async fn shutdown_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutdown signal received; draining");
    shutdown.cancel();
}
