//! The gRPC server: Presence plus the standard gRPC health service, on a listener bound
//! before serving so that callers (and tests on port 0) know the address up front.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use chat_metrics::{GrpcMetrics, Metrics};
use chat_proto::auth::{InternalToken, RequireToken};
use chat_proto::presence::presence_server::{PresenceServer as PresenceGrpc, SERVICE_NAME};
use chat_runtime::health::{report_health, set_health, stop_serving};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use crate::metrics::{MeteredPresence, PresenceMetrics, sample_stats};
use crate::service::PresenceService;
use crate::store::PresenceStore;

pub use chat_runtime::health::{DRAIN_GRACE, HEALTH_INTERVAL, NOT_SERVING_LEAD};

/// Sweep steps the background sweeper runs back to back at most before it waits for its
/// next tick (each step is bounded: about 1,000 users or exits).
const SWEEP_STEPS_PER_TICK: usize = 1000;

/// How often the background sweeper looks for expired gateways: a tenth of the lease,
/// between 50 ms and 1 s, so offline events are queued soon after a lease ends.
pub fn sweep_interval(ttl: std::time::Duration) -> std::time::Duration {
    (ttl / 10).clamp(
        std::time::Duration::from_millis(50),
        std::time::Duration::from_secs(1),
    )
}

/// Releases expired gateways every [`sweep_interval`] until `stop`, off the path of any
/// gateway's call. Every presence replica runs one; the store makes that safe.
async fn sweep_expired(store: Arc<dyn PresenceStore>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(sweep_interval(store.ttl()));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        for _ in 0..SWEEP_STEPS_PER_TICK {
            match store.sweep().await {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "sweeping expired gateways failed");
                    break;
                }
            }
        }
    }
}

/// A bound, not yet serving, presence gRPC server.
#[derive(Debug)]
pub struct PresenceServer {
    /// Bound in [`PresenceServer::bind`], so the port is known before serving.
    listener: TcpListener,
    /// The actual address (differs from the requested one for port 0).
    local_addr: SocketAddr,
    /// The backend every call goes to (timed and counted), also pinged for health.
    store: Arc<dyn PresenceStore>,
    /// Counts and times every gRPC call served.
    grpc: GrpcMetrics,
    /// Its gauges of online users and gateways are sampled while serving.
    metrics: PresenceMetrics,
    /// `CHAT_INTERNAL_TOKEN`: when set, Presence calls must carry it (health need not).
    token: Option<InternalToken>,
}

impl PresenceServer {
    /// Binds `addr` (port 0 picks a free port) and logs `grpc listening on <addr>`. Its
    /// metrics are recorded but exposed nowhere; see [`PresenceServer::bind_with_metrics`].
    pub async fn bind(addr: SocketAddr, store: Arc<dyn PresenceStore>) -> io::Result<Self> {
        let mut registry = chat_metrics::Registry::default();
        let metrics = PresenceMetrics::register(&mut registry);
        Self::bind_metered(addr, store, GrpcMetrics::default(), metrics).await
    }

    /// Like [`PresenceServer::bind`], registering the `chat_presence_*` families in the
    /// process's registry and recording gRPC calls in its shared `grpc_server_*` ones.
    pub async fn bind_with_metrics(
        addr: SocketAddr,
        store: Arc<dyn PresenceStore>,
        metrics: &mut Metrics,
    ) -> io::Result<Self> {
        let presence =
            PresenceMetrics::register(metrics.registry.sub_registry_with_prefix("chat_presence"));
        Self::bind_metered(addr, store, metrics.grpc.clone(), presence).await
    }

    async fn bind_metered(
        addr: SocketAddr,
        store: Arc<dyn PresenceStore>,
        grpc: GrpcMetrics,
        metrics: PresenceMetrics,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        tracing::info!("grpc listening on {local_addr}");
        Ok(Self {
            listener,
            local_addr,
            store: Arc::new(MeteredPresence::new(store, metrics.clone())),
            grpc,
            metrics,
            token: None,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Requires `token` (`authorization: Bearer <token>`) on every Presence call; calls
    /// without it or with another end `UNAUTHENTICATED`. The health service answers
    /// callers without a token, and refuses a wrong one. `None` (the default): no check.
    /// See [`chat_proto::auth`].
    pub fn with_internal_token(mut self, token: Option<InternalToken>) -> Self {
        self.token = token;
        self
    }

    /// Serves Presence and `grpc.health.v1.Health` (with the internal token checked as
    /// [`PresenceServer::with_internal_token`] says) until `shutdown` is cancelled, then
    /// reports NOT_SERVING, keeps serving for [`NOT_SERVING_LEAD`], stops accepting and
    /// lets in-flight calls finish (at most [`DRAIN_GRACE`]).
    ///
    /// Health (for the service `chat.presence.v1.Presence` and the whole server `""`) is
    /// SERVING while the store answers pings, NOT_SERVING otherwise. Meanwhile a
    /// background task sweeps expired gateways every [`sweep_interval`].
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let (reporter, health_service) = tonic_health::server::health_reporter();
        // Not ready until the first ping succeeds.
        set_health(&reporter, SERVICE_NAME, ServingStatus::NotServing).await;
        let stop_health = shutdown.child_token();
        let health_task = {
            let store = Arc::clone(&self.store);
            let stop = stop_health.clone();
            tokio::spawn(async move {
                report_health(SERVICE_NAME, || store.ping(), reporter, stop).await;
            })
        };
        let stats_task = tokio::spawn(sample_stats(
            Arc::clone(&self.store),
            self.metrics.clone(),
            stop_health.clone(),
        ));
        let sweep_task = tokio::spawn(sweep_expired(Arc::clone(&self.store), stop_health.clone()));

        // Small request/reply messages: without TCP_NODELAY, Nagle plus delayed ACKs can
        // add tens of milliseconds per call.
        let incoming = TcpIncoming::from(self.listener).with_nodelay(Some(true));
        let auth = RequireToken::new(self.token);
        if auth.is_enabled() {
            tracing::info!("Presence calls require the internal token");
        } else {
            tracing::info!("Presence calls are not authenticated (no CHAT_INTERNAL_TOKEN)");
        }
        // The metrics layer wraps the router, so refused calls are counted (code
        // UNAUTHENTICATED) under the methods they were routed to.
        let serve = Server::builder()
            .layer(self.grpc.server_layer())
            .add_service(InterceptedService::new(health_service, auth.for_health()))
            .add_service(PresenceGrpc::with_interceptor(
                PresenceService::new(self.store),
                auth,
            ))
            .serve_with_incoming_shutdown(incoming, stop_serving(&shutdown, &stop_health));
        let grace = async {
            shutdown.cancelled().await;
            tokio::time::sleep(NOT_SERVING_LEAD + DRAIN_GRACE).await;
        };
        let result = tokio::select! {
            served = serve => served.context("grpc server failed"),
            () = grace => {
                tracing::warn!("grpc calls still open after {DRAIN_GRACE:?}; stopping anyway");
                Ok(())
            }
        };
        stop_health.cancel();
        if let Err(e) = health_task.await {
            tracing::error!(error = %e, "health reporter task failed");
        }
        if let Err(e) = stats_task.await {
            tracing::error!(error = %e, "presence stats task failed");
        }
        if let Err(e) = sweep_task.await {
            tracing::error!(error = %e, "presence sweeper task failed");
        }
        tracing::info!(addr = %self.local_addr, "grpc server stopped");
        result
    }
}
