//! The gRPC server: History plus the standard gRPC health service, served by the shared
//! [`GrpcServer`] (bound before serving, so callers and tests on port 0 know the address
//! up front).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use chat_metrics::Metrics;
use chat_metrics::serve::ping_check;
use chat_proto::auth::RequireToken;
use chat_proto::history::history_server::{HistoryServer as HistoryGrpc, SERVICE_NAME};
use chat_runtime::grpc::GrpcServer;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::metrics::{MeteredStore, StoreMetrics};
use crate::service::HistoryService;
use crate::store::MessageStore;

pub use chat_runtime::health::{DRAIN_GRACE, HEALTH_INTERVAL, NOT_SERVING_LEAD};

/// A bound, not yet serving, history gRPC server.
#[derive(Debug)]
pub struct HistoryServer {
    /// Listener, health, token check, call metrics and drain.
    grpc: GrpcServer,
    /// The backend every call goes to (timed and counted).
    store: Arc<dyn MessageStore>,
}

impl HistoryServer {
    /// Binds `addr` (port 0 picks a free port) and logs `grpc listening on <addr>`;
    /// registers the `chat_history_*` families in `metrics` and records calls in its
    /// shared `grpc_server_*` ones (tests that do not look pass a fresh
    /// `Metrics::new("test")`).
    pub async fn bind(
        addr: SocketAddr,
        store: Arc<dyn MessageStore>,
        metrics: &mut Metrics,
    ) -> io::Result<Self> {
        let store_metrics =
            StoreMetrics::register(metrics.registry.sub_registry_with_prefix("chat_history"));
        let store: Arc<dyn MessageStore> = Arc::new(MeteredStore::new(store, store_metrics));
        let grpc = GrpcServer::bind(
            addr,
            SERVICE_NAME,
            ping_check(Arc::clone(&store), |s| async move { s.ping().await }),
            metrics.grpc.clone(),
        )
        .await?;
        Ok(Self { grpc, store })
    }

    chat_runtime::grpc_server_methods!();

    /// What it serves: History over its store, behind the token check it is given.
    fn routes(&self) -> impl FnOnce(RequireToken) -> Routes + use<> {
        let service = HistoryService::new(Arc::clone(&self.store));
        |auth| Routes::new(HistoryGrpc::with_interceptor(service, auth))
    }

    /// Serves History and `grpc.health.v1.Health` until `shutdown` is cancelled, then
    /// drains (see [`GrpcServer::serve`]). Health is SERVING while the store answers
    /// pings.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let routes = self.routes();
        self.grpc.serve(routes, shutdown).await
    }
}
