//! The gRPC server: Presence plus the standard gRPC health service, served by the shared
//! [`GrpcServer`] (bound before serving, so callers and tests on port 0 know the address
//! up front), and the background sweeper of expired gateways.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use chat_metrics::Metrics;
use chat_metrics::serve::ping_check;
use chat_proto::auth::RequireToken;
use chat_proto::presence::presence_server::{PresenceServer as PresenceGrpc, SERVICE_NAME};
use chat_runtime::grpc::GrpcServer;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

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
    // Each burst is raced with the stop: a sweep waiting on a Redis that went away must
    // not hold up the shutdown (a step cut short is repeated by the next sweeper).
    chat_runtime::every(sweep_interval(store.ttl()), &stop, || {
        sweep_burst(store.as_ref())
    })
    .await;
}

/// Sweep steps back to back until nothing is left, a step fails, or
/// [`SWEEP_STEPS_PER_TICK`].
async fn sweep_burst(store: &dyn PresenceStore) {
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

/// A bound, not yet serving, presence gRPC server.
#[derive(Debug)]
pub struct PresenceServer {
    /// Listener, health, token check, call metrics and drain.
    grpc: GrpcServer,
    /// The backend every call goes to (timed and counted).
    store: Arc<dyn PresenceStore>,
    /// Its gauges of online users and gateways are sampled while serving.
    metrics: PresenceMetrics,
}

impl PresenceServer {
    /// Binds `addr` (port 0 picks a free port) and logs `grpc listening on <addr>`;
    /// registers the `chat_presence_*` families in `metrics` and records calls in its
    /// shared `grpc_server_*` ones (tests that do not look pass a fresh
    /// `Metrics::new("test")`).
    pub async fn bind(
        addr: SocketAddr,
        store: Arc<dyn PresenceStore>,
        metrics: &mut Metrics,
    ) -> io::Result<Self> {
        let presence =
            PresenceMetrics::register(metrics.registry.sub_registry_with_prefix("chat_presence"));
        let store: Arc<dyn PresenceStore> = Arc::new(MeteredPresence::new(store, presence.clone()));
        let grpc = GrpcServer::bind(
            addr,
            SERVICE_NAME,
            ping_check(Arc::clone(&store), |s| async move { s.ping().await }),
            metrics.grpc.clone(),
        )
        .await?;
        Ok(Self {
            grpc,
            store,
            metrics: presence,
        })
    }

    chat_runtime::grpc_server_methods!();

    /// What it serves: Presence over its store, behind the token check it is given.
    fn routes(&self) -> impl FnOnce(RequireToken) -> Routes + use<> {
        let service = PresenceService::new(Arc::clone(&self.store));
        |auth| Routes::new(PresenceGrpc::with_interceptor(service, auth))
    }

    /// Serves Presence and `grpc.health.v1.Health` until `shutdown` is cancelled, then
    /// drains (see [`GrpcServer::serve`]). Health is SERVING while the store answers
    /// pings. Meanwhile background tasks sweep expired gateways every
    /// [`sweep_interval`] and sample the online gauges; they stop with the shutdown
    /// (within [`chat_runtime::BACKGROUND_STOP`] even when the store is unreachable).
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let stop = shutdown.child_token();
        let stats_task = tokio::spawn(sample_stats(
            Arc::clone(&self.store),
            self.metrics.clone(),
            stop.clone(),
        ));
        let sweep_task = tokio::spawn(sweep_expired(Arc::clone(&self.store), stop.clone()));
        let routes = self.routes();
        let result = self.grpc.serve(routes, shutdown).await;
        stop.cancel();
        chat_runtime::join_background("presence stats", stats_task).await;
        chat_runtime::join_background("presence sweeper", sweep_task).await;
        result
    }
}
