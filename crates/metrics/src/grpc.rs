//! gRPC request counts and latencies, server and client side, as a tower layer.
//!
//! - `grpc_server_requests_total{service,method,code}`,
//!   `grpc_server_request_duration_seconds{service,method,code}`: calls this process
//!   served, timed from the request's arrival to the end of the response (its status).
//! - `grpc_client_requests_total{service,method,code}`,
//!   `grpc_client_request_duration_seconds{service,method,code}`: calls this process made,
//!   as the caller saw them, including connecting and waiting for the channel.
//!
//! Both families of a side have the same labels, so the latency of failures (a timeout,
//! a fast `UNAVAILABLE`) can be told from that of successes; sum over `code` for the
//! latency of all calls.
//!
//! `service` and `method` come from the request path (`/chat.history.v1.History/Append`
//! → `chat.history.v1.History`, `Append`); `code` is the gRPC status name (`OK`,
//! `INVALID_ARGUMENT`, `UNAVAILABLE`, ...), read from the response headers (trailers-only
//! responses, i.e. errors) or trailers. Label values stay bounded: a server labels calls
//! that end `UNIMPLEMENTED` (unknown service or method, so a path any client may invent)
//! as `unknown`/`unknown`. Calls that end without a status are `CANCELLED` when the
//! caller gave up (the response was dropped unread) and `UNKNOWN` when the stream broke;
//! a client call that never got a response is `DEADLINE_EXCEEDED` on the channel's
//! timeout (tonic hands the caller `CANCELLED` then) and `UNAVAILABLE` otherwise.
//!
//! Servers: `Server::builder().layer(metrics.server_layer())`, or
//! `metrics.server_service(routes)` for routes called in process. Clients:
//! `HistoryClient::new(metrics.client_channel(channel))`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tower_layer::Layer;
use tower_service::Service;

use crate::buckets::rpc_histogram;

/// Labels of the request counters and latency histograms.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// The fully qualified gRPC service, e.g. `chat.history.v1.History`.
    pub service: String,
    /// The method, e.g. `Append`.
    pub method: String,
    /// The gRPC status code name, e.g. `OK`.
    pub code: &'static str,
}

/// One side's families.
#[derive(Debug, Clone)]
struct Side {
    requests: Family<CallLabels, Counter>,
    duration: Family<CallLabels, Histogram, fn() -> Histogram>,
    /// Servers label `UNIMPLEMENTED` calls `unknown`: their paths come from anyone.
    server: bool,
}

impl Side {
    fn new(server: bool) -> Self {
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(rpc_histogram),
            server,
        }
    }
}

/// The server and client families; cheap to clone (clones share the series).
#[derive(Debug, Clone)]
pub struct GrpcMetrics {
    server: Side,
    client: Side,
}

impl Default for GrpcMetrics {
    /// Families registered nowhere (for components built without a registry).
    fn default() -> Self {
        Self {
            server: Side::new(true),
            client: Side::new(false),
        }
    }
}

impl GrpcMetrics {
    /// Registers the four families in `registry` (given the `grpc` prefix by
    /// [`crate::Metrics`]).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "server_requests",
            "gRPC requests served by this process, by service, method and status code",
            metrics.server.requests.clone(),
        );
        registry.register_with_unit(
            "server_request_duration",
            "Time from receiving a gRPC request to the end of its response, by service, method and status code",
            Unit::Seconds,
            metrics.server.duration.clone(),
        );
        registry.register(
            "client_requests",
            "gRPC requests made by this process, by service, method and the status code it got",
            metrics.client.requests.clone(),
        );
        registry.register_with_unit(
            "client_request_duration",
            "Time from starting a gRPC call to the end of its response, as the caller saw it, by service, method and the status code it got",
            Unit::Seconds,
            metrics.client.duration.clone(),
        );
        metrics
    }

    /// The layer of a tonic server (`Server::builder().layer(...)`).
    pub fn server_layer(&self) -> GrpcLayer {
        GrpcLayer {
            side: self.server.clone(),
        }
    }

    /// The layer of a client channel.
    pub fn client_layer(&self) -> GrpcLayer {
        GrpcLayer {
            side: self.client.clone(),
        }
    }

    /// `channel` (a tonic channel, or any service of gRPC requests), with every call it
    /// carries counted and timed as a client call.
    pub fn client_channel<S>(&self, channel: S) -> Metered<S> {
        self.client_layer().layer(channel)
    }

    /// `service` (a server's routes), with every call it serves counted and timed as a
    /// server call: what [`GrpcMetrics::server_layer`] does to a tonic server's routes.
    pub fn server_service<S>(&self, service: S) -> Metered<S> {
        self.server_layer().layer(service)
    }
}

/// Counts and times every gRPC call through the service it wraps.
#[derive(Debug, Clone)]
pub struct GrpcLayer {
    side: Side,
}

impl<S> Layer<S> for GrpcLayer {
    type Service = Metered<S>;

    fn layer(&self, inner: S) -> Metered<S> {
        Metered {
            inner,
            side: self.side.clone(),
        }
    }
}

/// A service whose calls are counted and timed; see the module doc.
#[derive(Debug, Clone)]
pub struct Metered<S> {
    inner: S,
    side: Side,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Metered<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Error: std::error::Error + 'static,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = MeteredFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let (service, method) = split_path(request.uri().path());
        let call = Call {
            side: self.side.clone(),
            service,
            method,
            start: Instant::now(),
            done: false,
        };
        MeteredFuture {
            inner: self.inner.call(request),
            call: Some(call),
        }
    }
}

/// `/package.Service/Method` → (`package.Service`, `Method`).
fn split_path(path: &str) -> (String, String) {
    path.strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .filter(|(service, method)| {
            !service.is_empty() && !method.is_empty() && !method.contains('/')
        })
        .map_or_else(
            || ("unknown".to_owned(), "unknown".to_owned()),
            |(service, method)| (service.to_owned(), method.to_owned()),
        )
}

/// One call in flight. Recorded exactly once: with its status, or as `CANCELLED` when
/// dropped before one was seen.
#[derive(Debug)]
struct Call {
    side: Side,
    service: String,
    method: String,
    start: Instant,
    done: bool,
}

impl Call {
    fn finish(mut self, code: &'static str) {
        self.record(code);
    }

    fn record(&mut self, code: &'static str) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let elapsed = self.start.elapsed().as_secs_f64();
        let (service, method) = if self.side.server && code == "UNIMPLEMENTED" {
            ("unknown".to_owned(), "unknown".to_owned())
        } else {
            (
                std::mem::take(&mut self.service),
                std::mem::take(&mut self.method),
            )
        };
        let labels = CallLabels {
            service,
            method,
            code,
        };
        self.side.duration.get_or_create(&labels).observe(elapsed);
        self.side.requests.get_or_create(&labels).inc();
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.record("CANCELLED");
    }
}

pin_project_lite::pin_project! {
    /// The response future of a [`Metered`] service.
    #[derive(Debug)]
    pub struct MeteredFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

impl<F, B, E> Future for MeteredFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    E: std::error::Error + 'static,
{
    type Output = Result<http::Response<MeteredBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let call = this.call.take();
        Poll::Ready(match result {
            Ok(response) => {
                let call = match (call, header_code(&response)) {
                    (Some(call), Some(code)) => {
                        call.finish(code);
                        None
                    }
                    (call, _) => call,
                };
                Ok(response.map(|inner| MeteredBody { inner, call }))
            }
            Err(e) => {
                if let Some(call) = call {
                    call.finish(error_code(&e));
                }
                Err(e)
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that records its call when the status arrives in the trailers.
    #[derive(Debug)]
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }
}

impl<B: Body> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        let code = match &frame {
            Some(Ok(frame)) => frame
                .trailers_ref()
                .map(|trailers| status_code(trailers).unwrap_or("UNKNOWN")),
            // The stream broke, or ended without a status.
            Some(Err(_)) | None => Some("UNKNOWN"),
        };
        if let Some(code) = code
            && let Some(call) = this.call.take()
        {
            call.finish(code);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The status of a response known from its headers: a trailers-only response (errors),
/// or an HTTP failure that carries no gRPC status (mapped as the gRPC spec says).
fn header_code<B>(response: &http::Response<B>) -> Option<&'static str> {
    if let Some(code) = status_code(response.headers()) {
        return Some(code);
    }
    match response.status().as_u16() {
        200 => None,
        400 => Some("INTERNAL"),
        401 => Some("UNAUTHENTICATED"),
        403 => Some("PERMISSION_DENIED"),
        404 => Some("UNIMPLEMENTED"),
        429 | 502 | 503 | 504 => Some("UNAVAILABLE"),
        _ => Some("UNKNOWN"),
    }
}

/// The `grpc-status` header or trailer, by name.
fn status_code(headers: &http::HeaderMap) -> Option<&'static str> {
    let value = headers.get("grpc-status")?;
    let code = value.to_str().ok()?.trim().parse::<u8>().ok();
    Some(code.map_or("UNKNOWN", code_name))
}

/// The canonical name of a gRPC status code.
pub fn code_name(code: u8) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

/// The status of a call that failed before any response (client side: the transport).
fn error_code(error: &(dyn std::error::Error + 'static)) -> &'static str {
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(status) = e.downcast_ref::<tonic::Status>() {
            return u8::try_from(status.code() as i32).map_or("UNKNOWN", code_name);
        }
        if e.is::<tonic::TimeoutExpired>() {
            return "DEADLINE_EXCEEDED";
        }
        if e.is::<tonic::ConnectError>() {
            return "UNAVAILABLE";
        }
        source = e.source();
    }
    "UNAVAILABLE"
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::convert::Infallible;

    use super::*;

    /// A body of prepared frames.
    struct Frames(VecDeque<Frame<&'static [u8]>>);

    impl Body for Frames {
        type Data = &'static [u8];
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    /// Answers `OK` in trailers, or `grpc-status` in headers when the path says so.
    #[derive(Clone)]
    struct Fake;

    impl Service<http::Request<()>> for Fake {
        type Response = http::Response<Frames>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<()>) -> Self::Future {
            let response = if request.uri().path().ends_with("/Missing") {
                http::Response::builder()
                    .header("grpc-status", "12")
                    .body(Frames(VecDeque::new()))
            } else if request.uri().path().ends_with("/Fail") {
                http::Response::builder()
                    .header("grpc-status", "14")
                    .body(Frames(VecDeque::new()))
            } else {
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                http::Response::builder().body(Frames(VecDeque::from([
                    Frame::data(&b"reply"[..]),
                    Frame::trailers(trailers),
                ])))
            };
            std::future::ready(Ok(response.expect("valid response")))
        }
    }

    async fn drain<B: Body + Unpin>(mut body: B) {
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            assert!(frame.is_ok());
        }
    }

    async fn call(svc: &mut Metered<Fake>, path: &str) -> MeteredBody<Frames> {
        let request = http::Request::builder()
            .uri(path)
            .body(())
            .expect("valid request");
        match svc.call(request).await {
            Ok(response) => response.into_body(),
            Err(never) => match never {},
        }
    }

    #[tokio::test]
    async fn exposition_lines() {
        let mut registry = Registry::default();
        let metrics = GrpcMetrics::register(registry.sub_registry_with_prefix("grpc"));
        let mut server = metrics.server_layer().layer(Fake);
        let mut client = metrics.client_layer().layer(Fake);
        drain(call(&mut server, "/chat.history.v1.History/Append").await).await;
        drain(call(&mut server, "/chat.history.v1.History/Fail").await).await;
        drain(call(&mut server, "/made.up.Service/Missing").await).await;
        drain(call(&mut client, "/chat.presence.v1.Presence/Heartbeat").await).await;
        // A caller that drops the response before its trailers: CANCELLED.
        drop(call(&mut client, "/chat.presence.v1.Presence/Query").await);
        let text = crate::exposition(&registry);
        // Every HELP and TYPE line; every bucket of one series per histogram (an instant
        // call falls in the first); the duration series carry the code like the counts.
        let expected = r#"# HELP grpc_server_requests_total gRPC requests served by this process, by service, method and status code.
# TYPE grpc_server_requests_total counter
grpc_server_requests_total{service="chat.history.v1.History",method="Append",code="OK"} 1
grpc_server_requests_total{service="chat.history.v1.History",method="Fail",code="UNAVAILABLE"} 1
grpc_server_requests_total{service="unknown",method="unknown",code="UNIMPLEMENTED"} 1
# HELP grpc_server_request_duration_seconds Time from receiving a gRPC request to the end of its response, by service, method and status code.
# TYPE grpc_server_request_duration_seconds histogram
grpc_server_request_duration_seconds_count{service="chat.history.v1.History",method="Append",code="OK"} 1
grpc_server_request_duration_seconds_bucket{service="chat.history.v1.History",method="Append",code="OK",le="0.0005"} 1
grpc_server_request_duration_seconds_bucket{service="chat.history.v1.History",method="Append",code="OK",le="0.001"} 1
grpc_server_request_duration_seconds_bucket{service="chat.history.v1.History",method="Append",code="OK",le="0.0025"} 1
grpc_server_request_duration_seconds_bucket{service="chat.history.v1.History",method="Append",code="OK",le="0.005"} 1
grpc_server_request_duration_seconds_bucket{service="chat.history.v1.History",method="Append",code="OK",le="0.01"} 1
grpc_server_request_duration_seconds_bucket{service="chat.history.v1.History",method="Append",code="OK",le="0.025"} 1
grpc_server_request_duration_seconds_bucket{service="chat.history.v1.History",method="Append",code="OK",le="0.05"} 1
grpc_server_request_duration_seconds_bucket{service="chat.history.v1.History",method="Append",code="OK",le="0.1"} 1
grpc_server_request_duration_seconds_bucket{service="chat.history.v1.History",method="Append",code="OK",le="0.25"} 1
grpc_server_request_duration_seconds_bucket{service="chat.history.v1.History",method="Append",code="OK",le="0.5"} 1
grpc_server_request_duration_seconds_bucket{service="chat.history.v1.History",method="Append",code="OK",le="1"} 1
grpc_server_request_duration_seconds_bucket{service="chat.history.v1.History",method="Append",code="OK",le="2.5"} 1
grpc_server_request_duration_seconds_bucket{service="chat.history.v1.History",method="Append",code="OK",le="5"} 1
grpc_server_request_duration_seconds_bucket{service="chat.history.v1.History",method="Append",code="OK",le="10"} 1
grpc_server_request_duration_seconds_bucket{service="chat.history.v1.History",method="Append",code="OK",le="+Inf"} 1
grpc_server_request_duration_seconds_count{service="chat.history.v1.History",method="Fail",code="UNAVAILABLE"} 1
grpc_server_request_duration_seconds_count{service="unknown",method="unknown",code="UNIMPLEMENTED"} 1
# HELP grpc_client_requests_total gRPC requests made by this process, by service, method and the status code it got.
# TYPE grpc_client_requests_total counter
grpc_client_requests_total{service="chat.presence.v1.Presence",method="Heartbeat",code="OK"} 1
grpc_client_requests_total{service="chat.presence.v1.Presence",method="Query",code="CANCELLED"} 1
# HELP grpc_client_request_duration_seconds Time from starting a gRPC call to the end of its response, as the caller saw it, by service, method and the status code it got.
# TYPE grpc_client_request_duration_seconds histogram
grpc_client_request_duration_seconds_count{service="chat.presence.v1.Presence",method="Heartbeat",code="OK"} 1
grpc_client_request_duration_seconds_bucket{service="chat.presence.v1.Presence",method="Heartbeat",code="OK",le="0.0005"} 1
grpc_client_request_duration_seconds_bucket{service="chat.presence.v1.Presence",method="Heartbeat",code="OK",le="0.001"} 1
grpc_client_request_duration_seconds_bucket{service="chat.presence.v1.Presence",method="Heartbeat",code="OK",le="0.0025"} 1
grpc_client_request_duration_seconds_bucket{service="chat.presence.v1.Presence",method="Heartbeat",code="OK",le="0.005"} 1
grpc_client_request_duration_seconds_bucket{service="chat.presence.v1.Presence",method="Heartbeat",code="OK",le="0.01"} 1
grpc_client_request_duration_seconds_bucket{service="chat.presence.v1.Presence",method="Heartbeat",code="OK",le="0.025"} 1
grpc_client_request_duration_seconds_bucket{service="chat.presence.v1.Presence",method="Heartbeat",code="OK",le="0.05"} 1
grpc_client_request_duration_seconds_bucket{service="chat.presence.v1.Presence",method="Heartbeat",code="OK",le="0.1"} 1
grpc_client_request_duration_seconds_bucket{service="chat.presence.v1.Presence",method="Heartbeat",code="OK",le="0.25"} 1
grpc_client_request_duration_seconds_bucket{service="chat.presence.v1.Presence",method="Heartbeat",code="OK",le="0.5"} 1
grpc_client_request_duration_seconds_bucket{service="chat.presence.v1.Presence",method="Heartbeat",code="OK",le="1"} 1
grpc_client_request_duration_seconds_bucket{service="chat.presence.v1.Presence",method="Heartbeat",code="OK",le="2.5"} 1
grpc_client_request_duration_seconds_bucket{service="chat.presence.v1.Presence",method="Heartbeat",code="OK",le="5"} 1
grpc_client_request_duration_seconds_bucket{service="chat.presence.v1.Presence",method="Heartbeat",code="OK",le="10"} 1
grpc_client_request_duration_seconds_bucket{service="chat.presence.v1.Presence",method="Heartbeat",code="OK",le="+Inf"} 1
grpc_client_request_duration_seconds_count{service="chat.presence.v1.Presence",method="Query",code="CANCELLED"} 1"#;
        assert_eq!(
            crate::missing_lines(&text, expected),
            Vec::<&str>::new(),
            "{text}"
        );
        assert!(!text.contains("made.up"), "invented paths make no series");
    }

    #[test]
    fn paths_and_codes() {
        assert_eq!(
            split_path("/chat.history.v1.History/List"),
            ("chat.history.v1.History".into(), "List".into())
        );
        for bad in ["", "/", "/x", "//m", "/s/", "/s/m/extra"] {
            assert_eq!(
                split_path(bad),
                ("unknown".into(), "unknown".into()),
                "{bad}"
            );
        }
        assert_eq!(code_name(0), "OK");
        assert_eq!(code_name(16), "UNAUTHENTICATED");
        assert_eq!(code_name(99), "UNKNOWN");
        let timeout: Box<dyn std::error::Error + Send + Sync> = Box::new(tonic::TimeoutExpired(()));
        assert_eq!(error_code(timeout.as_ref()), "DEADLINE_EXCEEDED");
        let status = tonic::Status::not_found("gone");
        assert_eq!(error_code(&status), "NOT_FOUND");
    }
}
