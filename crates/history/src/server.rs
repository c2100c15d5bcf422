//! The gRPC server: History plus the standard gRPC health service, on a listener bound
//! before serving so that callers (and tests on port 0) know the address up front.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use chat_metrics::{GrpcMetrics, Metrics};
use chat_proto::auth::{InternalToken, RequireToken};
use chat_proto::history::history_server::{HistoryServer as HistoryGrpc, SERVICE_NAME};
use chat_runtime::health::{report_health, set_health, stop_serving};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use crate::metrics::{MeteredStore, StoreMetrics};
use crate::service::HistoryService;
use crate::store::MessageStore;

pub use chat_runtime::health::{DRAIN_GRACE, HEALTH_INTERVAL, NOT_SERVING_LEAD};

/// A bound, not yet serving, history gRPC server.
#[derive(Debug)]
pub struct HistoryServer {
    /// Bound in [`HistoryServer::bind`], so the port is known before serving.
    listener: TcpListener,
    /// The actual address (differs from the requested one for port 0).
    local_addr: SocketAddr,
    /// The backend every call goes to (timed and counted), also pinged for health.
    store: Arc<dyn MessageStore>,
    /// Counts and times every gRPC call served.
    grpc: GrpcMetrics,
    /// `CHAT_INTERNAL_TOKEN`: when set, History calls must carry it (health need not).
    token: Option<InternalToken>,
}

impl HistoryServer {
    /// Binds `addr` (port 0 picks a free port) and logs `grpc listening on <addr>`. Its
    /// metrics are recorded but exposed nowhere; see [`HistoryServer::bind_with_metrics`].
    pub async fn bind(addr: SocketAddr, store: Arc<dyn MessageStore>) -> io::Result<Self> {
        let mut registry = chat_metrics::Registry::default();
        let store = Arc::new(MeteredStore::new(
            store,
            StoreMetrics::register(&mut registry),
        ));
        Self::bind_metered(addr, store, GrpcMetrics::default()).await
    }

    /// Like [`HistoryServer::bind`], registering the `chat_history_*` families in the
    /// process's registry and recording gRPC calls in its shared `grpc_server_*` ones.
    pub async fn bind_with_metrics(
        addr: SocketAddr,
        store: Arc<dyn MessageStore>,
        metrics: &mut Metrics,
    ) -> io::Result<Self> {
        let store_metrics =
            StoreMetrics::register(metrics.registry.sub_registry_with_prefix("chat_history"));
        let store = Arc::new(MeteredStore::new(store, store_metrics));
        Self::bind_metered(addr, store, metrics.grpc.clone()).await
    }

    async fn bind_metered(
        addr: SocketAddr,
        store: Arc<dyn MessageStore>,
        grpc: GrpcMetrics,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        tracing::info!("grpc listening on {local_addr}");
        Ok(Self {
            listener,
            local_addr,
            store,
            grpc,
            token: None,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Requires `token` (`authorization: Bearer <token>`) on every History call; calls
    /// without it or with another end `UNAUTHENTICATED`. The health service answers
    /// callers without a token, and refuses a wrong one. `None` (the default): no check.
    /// See [`chat_proto::auth`].
    pub fn with_internal_token(mut self, token: Option<InternalToken>) -> Self {
        self.token = token;
        self
    }

    /// Serves History and `grpc.health.v1.Health` (with the internal token checked as
    /// [`HistoryServer::with_internal_token`] says) until `shutdown` is cancelled, then
    /// reports NOT_SERVING, keeps serving for [`NOT_SERVING_LEAD`], stops accepting and
    /// lets in-flight calls finish (at most [`DRAIN_GRACE`]).
    ///
    /// Health (for the service `chat.history.v1.History` and the whole server `""`) is
    /// SERVING while the store answers pings, NOT_SERVING otherwise.
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

        // Small request/reply messages: without TCP_NODELAY, Nagle plus delayed ACKs can
        // add tens of milliseconds per call.
        let incoming = TcpIncoming::from(self.listener).with_nodelay(Some(true));
        let auth = RequireToken::new(self.token);
        if auth.is_enabled() {
            tracing::info!("History calls require the internal token");
        } else {
            tracing::info!("History calls are not authenticated (no CHAT_INTERNAL_TOKEN)");
        }
        // The metrics layer wraps the router, so refused calls are counted (code
        // UNAUTHENTICATED) under the methods they were routed to.
        let serve = Server::builder()
            .layer(self.grpc.server_layer())
            .add_service(InterceptedService::new(health_service, auth.for_health()))
            .add_service(HistoryGrpc::with_interceptor(
                HistoryService::new(self.store),
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
        tracing::info!(addr = %self.local_addr, "grpc server stopped");
        result
    }
}
