//! Serving one gRPC service the way every chat gRPC service does: a listener bound
//! before serving (so callers, and tests on port 0, know the address up front), the
//! standard `grpc.health.v1.Health` service following the backend's health, the
//! internal token checked on the service's calls, every call counted and timed, and the
//! NOT_SERVING-then-drain shutdown. A service crate adds only its own service
//! ([`GrpcServer::serve`]).

use std::io;
use std::net::SocketAddr;

use anyhow::Context as _;
use chat_metrics::GrpcMetrics;
pub use chat_metrics::serve::HealthCheck;
pub use chat_proto::auth::InternalToken;
use chat_proto::auth::RequireToken;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use crate::health::{DRAIN_GRACE, NOT_SERVING_LEAD, report_health, set_health, stop_serving};

/// A bound, not yet serving, gRPC server of one service.
pub struct GrpcServer {
    /// Bound in [`GrpcServer::bind`], so the port is known before serving.
    listener: TcpListener,
    /// The actual address (differs from the requested one for port 0).
    local_addr: SocketAddr,
    /// The service's full name (`chat.history.v1.History`), whose health is reported.
    service: &'static str,
    /// The short name used in logs (`History`).
    label: &'static str,
    /// Pinged every few seconds: the service is SERVING while it passes.
    health: HealthCheck,
    /// Counts and times every call served (also those refused for their token).
    metrics: GrpcMetrics,
    /// `CHAT_INTERNAL_TOKEN`: when set, the service's calls must carry it.
    token: Option<InternalToken>,
}

impl std::fmt::Debug for GrpcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcServer")
            .field("local_addr", &self.local_addr)
            .field("service", &self.service)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl GrpcServer {
    /// Binds `addr` (port 0 picks a free port) for the service named `service` (its
    /// generated `SERVICE_NAME`) and logs `grpc listening on <addr>`. `health` is the
    /// backend's check; `metrics` the process's `grpc_server_*` families.
    pub async fn bind(
        addr: SocketAddr,
        service: &'static str,
        health: HealthCheck,
        metrics: GrpcMetrics,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        tracing::info!("grpc listening on {local_addr}");
        Ok(Self {
            listener,
            local_addr,
            service,
            label: service.rsplit('.').next().unwrap_or(service),
            health,
            metrics,
            token: None,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The health check given at bind (also served on `/healthz`).
    pub fn health(&self) -> HealthCheck {
        self.health.clone()
    }

    /// Requires `token` (`authorization: Bearer <token>`) on every call of the service;
    /// calls without it or with another end `UNAUTHENTICATED`. The health service
    /// answers callers without a token, and refuses a wrong one. `None` (the default):
    /// no check. See [`chat_proto::auth`].
    pub fn with_internal_token(mut self, token: Option<InternalToken>) -> Self {
        self.token = token;
        self
    }

    /// Serves the routes `service` makes (the generated server wrapped with the
    /// interceptor it is given, e.g. `Routes::new(HistoryServer::with_interceptor(svc,
    /// auth))`) and `grpc.health.v1.Health` until `shutdown` is cancelled; then reports
    /// NOT_SERVING, keeps serving for [`NOT_SERVING_LEAD`] so health-checking clients
    /// and balancers move away, stops accepting and lets in-flight calls finish (at most
    /// [`DRAIN_GRACE`]).
    ///
    /// Health (for the service and the whole server `""`) is NOT_SERVING until the
    /// first check passes, then follows the check every few seconds.
    pub async fn serve(
        self,
        service: impl FnOnce(RequireToken) -> Routes,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let (reporter, health_service) = tonic_health::server::health_reporter();
        set_health(&reporter, self.service, ServingStatus::NotServing).await;
        let stop_health = shutdown.child_token();
        let health_task = {
            let check = self.health.clone();
            let stop = stop_health.clone();
            let name = self.service;
            tokio::spawn(async move {
                report_health(name, || check(), reporter, stop).await;
            })
        };

        // Small request/reply messages: without TCP_NODELAY, Nagle plus delayed ACKs can
        // add tens of milliseconds per call.
        let incoming = TcpIncoming::from(self.listener).with_nodelay(Some(true));
        let auth = RequireToken::new(self.token);
        let label = self.label;
        if auth.is_enabled() {
            tracing::info!("{label} calls require the internal token");
        } else {
            tracing::info!("{label} calls are not authenticated (no CHAT_INTERNAL_TOKEN)");
        }
        let health_service = InterceptedService::new(health_service, auth.for_health());
        let routes = service(auth).add_service(health_service);
        // The metrics layer wraps the router, so refused calls are counted (code
        // UNAUTHENTICATED) under the methods they were routed to.
        let serve = Server::builder()
            .layer(self.metrics.server_layer())
            .add_routes(routes)
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

/// The methods every service's server type (a struct with a `grpc: GrpcServer` field)
/// exposes of its [`GrpcServer`], written once: `local_addr`, `health` and
/// `with_internal_token`. Invoke it inside the type's `impl` block.
#[macro_export]
macro_rules! grpc_server_methods {
    () => {
        /// The bound address.
        pub fn local_addr(&self) -> ::std::net::SocketAddr {
            self.grpc.local_addr()
        }

        /// The service's health: its backend answers (gRPC health and `/healthz`).
        pub fn health(&self) -> $crate::grpc::HealthCheck {
            self.grpc.health()
        }

        /// Requires `token` on every call of the service (see
        /// [`GrpcServer::with_internal_token`](chat_runtime::grpc::GrpcServer::with_internal_token)).
        pub fn with_internal_token(mut self, token: Option<$crate::grpc::InternalToken>) -> Self {
            self.grpc = self.grpc.with_internal_token(token);
            self
        }
    };
}
