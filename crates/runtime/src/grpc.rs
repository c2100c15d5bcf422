//! Serving one gRPC service the way every chat gRPC service does: a listener bound
//! before serving (so callers, and tests on port 0, know the address up front), the
//! standard `grpc.health.v1.Health` service following the backend's health, the
//! internal token checked on the service's calls, every call counted and timed, and the
//! NOT_SERVING-then-drain shutdown. A service crate adds only its own service
//! ([`GrpcServer::serve`]).
//!
//! The same routes can also be called in this process without a network
//! ([`GrpcServer::in_process`]): the all-in-one's gateway reaches its services that way,
//! through a [`Transport`], the one client type for both.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
pub use chat_metrics::serve::HealthCheck;
use chat_metrics::{GrpcMetrics, Metered};
pub use chat_proto::auth::InternalToken;
use chat_proto::auth::RequireToken;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::codegen::http::{Request, Response};
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

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
    /// The statuses `grpc.health.v1.Health` answers with, on the port and in process.
    reporter: HealthReporter,
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
        let reporter = HealthReporter::new();
        set_health(&reporter, service, ServingStatus::NotServing).await;
        Ok(Self {
            listener,
            local_addr,
            service,
            label: service.rsplit('.').next().unwrap_or(service),
            health,
            metrics,
            token: None,
            reporter,
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

    /// The routes `service` makes (the generated server wrapped with the interceptor it
    /// is given, e.g. `Routes::new(HistoryServer::with_interceptor(svc, auth))`) plus
    /// `grpc.health.v1.Health`, with the internal token required as configured.
    fn routes(&self, service: impl FnOnce(RequireToken) -> Routes) -> Routes {
        let auth = RequireToken::new(self.token.clone());
        let health = HealthServer::new(HealthService::from_health_reporter(self.reporter.clone()));
        let health = InterceptedService::new(health, auth.for_health());
        service(auth).add_service(health)
    }

    /// The routes `service` makes (see [`GrpcServer::serve`]), callable in this process:
    /// the same token check, health service and `grpc_server_*` metrics as on the port,
    /// but no HTTP/2, no socket and no drain (the caller stops calling first). For the
    /// all-in-one, whose gateway would otherwise call its own services over loopback
    /// (docs/benchmarks.md, "CPU per connect"). Works before and after
    /// [`GrpcServer::serve`], and whether it runs or not.
    pub fn in_process(&self, service: impl FnOnce(RequireToken) -> Routes) -> LocalService {
        LocalService::new(self.metrics.server_service(self.routes(service)))
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
        let routes = self.routes(service);
        let stop_health = shutdown.child_token();
        let health_task = {
            let check = self.health.clone();
            let stop = stop_health.clone();
            let name = self.service;
            let reporter = self.reporter.clone();
            tokio::spawn(async move {
                report_health(name, || check(), reporter, stop).await;
            })
        };

        // Small request/reply messages: without TCP_NODELAY, Nagle plus delayed ACKs can
        // add tens of milliseconds per call.
        let incoming = TcpIncoming::from(self.listener).with_nodelay(Some(true));
        let label = self.label;
        if self.token.is_some() {
            tracing::info!("{label} calls require the internal token");
        } else {
            tracing::info!("{label} calls are not authenticated (no CHAT_INTERNAL_TOKEN)");
        }
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

type LocalCall = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

/// One gRPC service of this process ([`GrpcServer::in_process`]): a call runs the
/// service's routes directly, request and response bodies passed as they are (encoded,
/// as on the wire, but no HTTP/2 framing, no socket, no connection task). Cheap to
/// clone.
#[derive(Clone)]
pub struct LocalService(Arc<dyn Fn(Request<Body>) -> LocalCall + Send + Sync>);

impl std::fmt::Debug for LocalService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalService")
    }
}

impl LocalService {
    fn new(service: Metered<Routes>) -> Self {
        Self(Arc::new(move |request| {
            let mut service = service.clone();
            Box::pin(async move {
                // The router is always ready, and fails no call: errors are responses.
                let ready: Result<(), Infallible> = std::future::poll_fn(|cx| {
                    Service::<Request<Body>>::poll_ready(&mut service, cx)
                })
                .await;
                let Ok(()) = ready;
                let Ok(response) = service.call(request).await;
                response.map(Body::new)
            })
        }))
    }
}

/// How a client reaches a gRPC service: a channel to its address, or the service itself
/// in this process. Either way calls have a deadline: the channel's (its endpoint's
/// timeout), or `timeout` here, after which the call ends `DEADLINE_EXCEEDED`.
#[derive(Debug, Clone)]
pub enum Transport {
    /// Over the network (a lazily connecting, reconnecting HTTP/2 channel).
    Remote(Channel),
    /// In this process.
    Local {
        service: LocalService,
        timeout: Duration,
    },
}

impl Service<Request<Body>> for Transport {
    type Response = Response<Body>;
    type Error = tonic::transport::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self {
            Self::Remote(channel) => channel.poll_ready(cx),
            Self::Local { .. } => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        match self {
            Self::Remote(channel) => Box::pin(channel.call(request)),
            Self::Local { service, timeout } => {
                let call = (service.0)(request);
                let timeout = *timeout;
                Box::pin(async move {
                    // The message a channel's timeout gives, as the status code the
                    // metrics give it (`DEADLINE_EXCEEDED`).
                    Ok(tokio::time::timeout(timeout, call)
                        .await
                        .unwrap_or_else(|_| {
                            tonic::Status::deadline_exceeded("Timeout expired").into_http()
                        }))
                })
            }
        }
    }
}

/// The methods every service's server type (a struct with a `grpc: GrpcServer` field
/// and a method `routes(&self) -> impl FnOnce(RequireToken) -> Routes`, what it serves)
/// exposes of its [`GrpcServer`], written once: `local_addr`, `health`,
/// `with_internal_token` and `in_process`. Invoke it inside the type's `impl` block.
#[macro_export]
macro_rules! grpc_server_methods {
    () => {
        /// The service, callable in this process (see
        /// [`GrpcServer::in_process`](chat_runtime::grpc::GrpcServer::in_process)).
        pub fn in_process(&self) -> $crate::grpc::LocalService {
            self.grpc.in_process(self.routes())
        }

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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chat_metrics::Metrics;
    use chat_proto::auth::AttachToken;
    use tonic::server::NamedService;
    use tonic_health::pb::health_client::HealthClient;

    use super::*;

    /// A service that never answers: a backend hung on its store.
    #[derive(Clone)]
    struct Hung;

    impl NamedService for Hung {
        const NAME: &'static str = "test.Hung";
    }

    impl Service<Request<Body>> for Hung {
        type Response = Response<Body>;
        type Error = Infallible;
        type Future = std::future::Pending<Result<Response<Body>, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<Body>) -> Self::Future {
            std::future::pending()
        }
    }

    async fn server(metrics: &Metrics, token: Option<&str>) -> GrpcServer {
        let healthy: HealthCheck = Arc::new(|| Box::pin(async { Ok(()) }));
        GrpcServer::bind(
            ([127, 0, 0, 1], 0).into(),
            "test.Hung",
            healthy,
            metrics.grpc.clone(),
        )
        .await
        .expect("bind")
        .with_internal_token(token.map(|t| InternalToken::parse(t).expect("token")))
    }

    fn hung_call() -> Request<Body> {
        let mut request = Request::new(Body::empty());
        *request.uri_mut() = "/test.Hung/Call".parse().expect("path");
        request
    }

    /// An in-process call the service never answers ends at the transport's deadline,
    /// `DEADLINE_EXCEEDED`, as a channel's call ends at its endpoint's timeout; the
    /// server's metrics see the call (and, the caller having given up, `CANCELLED`).
    #[tokio::test]
    async fn an_in_process_call_ends_at_its_deadline() {
        let metrics = Metrics::new("test");
        let server = server(&metrics, None).await;
        let timeout = Duration::from_millis(200);
        let mut transport = Transport::Local {
            service: server.in_process(|_| Routes::new(Hung)),
            timeout,
        };
        let started = tokio::time::Instant::now();
        let response = transport.call(hung_call()).await.expect("a response");
        let took = started.elapsed();
        let status = tonic::Status::from_header_map(response.headers()).expect("a status");
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        assert!(took >= timeout, "ended after {took:?}");
        assert!(took < Duration::from_secs(5), "ended after {took:?}");
        let text = chat_metrics::exposition(&metrics.registry);
        assert!(
            text.contains(
                r#"grpc_server_requests_total{service="test.Hung",method="Call",code="CANCELLED"} 1"#
            ),
            "{text}"
        );
    }

    /// In process, the health service is there, and the token is required as on the port.
    #[tokio::test]
    async fn in_process_calls_reach_health_and_need_the_token() {
        const TOKEN: &str = "in-process-test-token-0123456789abcdef";
        let metrics = Metrics::new("test");
        let server = server(&metrics, Some(TOKEN)).await;
        let service = server.in_process(|auth| Routes::new(InterceptedService::new(Hung, auth)));
        let transport = Transport::Local {
            service,
            timeout: Duration::from_secs(5),
        };
        let token = InternalToken::parse(TOKEN).expect("token");
        let mut health = HealthClient::new(InterceptedService::new(
            transport.clone(),
            AttachToken::new(Some(&token)),
        ));
        let reply = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "test.Hung".into(),
            })
            .await
            .expect("health answers in process")
            .into_inner();
        // Not served on the port yet: NOT_SERVING until the first check passes there.
        assert_eq!(
            reply.status,
            tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
        );
        // Without the token the service refuses before the call reaches it (no hang).
        let response = transport
            .clone()
            .call(hung_call())
            .await
            .expect("a response");
        let status = tonic::Status::from_header_map(response.headers()).expect("a status");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }
}
