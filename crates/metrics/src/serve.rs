//! Encoding a registry for a scrape, and the small HTTP server that history and presence
//! run on `CHAT_METRICS_ADDR` (the gateway serves `/metrics` on its own HTTP port).
//!
//! The format is the Prometheus text format 0.0.4, whatever the scraper asks for: it is
//! the format docs/observability.md specifies, every Prometheus reads it, and it keeps histogram bounds as
//! Prometheus writes them itself (`le="10"`; OpenMetrics would store `le="10.0"` in
//! Prometheus 2, and queries or rules naming a bucket would then depend on the format).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, header};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::Registry;

use crate::HttpMetrics;

/// The Content-Type of the Prometheus text format, `text/plain; version=0.0.4; ...`.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;
/// How long `/healthz` waits for the health check.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// A scrape's body: `registry` in the Prometheus text format (served as [`CONTENT_TYPE`]).
pub fn encode(registry: &Registry) -> String {
    crate::exposition(registry)
}

/// What `/healthz` asks: `Ok` when the service can do its work, else why not.
pub type HealthCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// A health check that pings `backend` (a service's store): `ping` gets a clone of it
/// each time, so the future it returns owns what it uses.
pub fn ping_check<B, F, Fut, E>(backend: B, ping: F) -> HealthCheck
where
    B: Clone + Send + Sync + 'static,
    F: Fn(B) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    health_check(move || {
        let pinged = ping(backend.clone());
        async move { pinged.await.map_err(|e| e.to_string()) }
    })
}

/// A health check from an async closure.
pub fn health_check<F, Fut>(check: F) -> HealthCheck
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    Arc::new(move || Box::pin(check()))
}

struct ServerState {
    registry: Arc<Registry>,
    http: HttpMetrics,
    health: HealthCheck,
}

/// Serves `GET /metrics` (the registry) and `GET /healthz` (200 `ok` when `health`
/// passes within [`HEALTH_TIMEOUT`], else 503 with the reason) on `listener` until
/// `shutdown` completes. Its own requests are counted in `http`, which should be in
/// `registry`.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    http: HttpMetrics,
    health: HealthCheck,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Present from the first scrape on, at 0.
    http.declare("GET", "/metrics", 200);
    http.declare("GET", "/healthz", 200);
    let state = Arc::new(ServerState {
        registry,
        http,
        health,
    });
    let app = axum::Router::new().fallback(handle).with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The `/metrics` + `/healthz` listener of a gRPC service binary (history, presence),
/// serving in a task of its own beside the gRPC server.
#[derive(Debug)]
pub struct MetricsEndpoint {
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl MetricsEndpoint {
    /// Binds `addr` (logging `metrics listening on <addr>`, the line scripts and tests wait for)
    /// and serves `metrics` and `health` as [`serve_metrics`] does until `shutdown`
    /// completes. Fails only when the address cannot be bound.
    pub async fn start(
        addr: std::net::SocketAddr,
        metrics: crate::Metrics,
        health: HealthCheck,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        tracing::info!("metrics listening on {}", listener.local_addr()?);
        let task = tokio::spawn(serve_metrics(
            listener,
            Arc::new(metrics.registry),
            metrics.http,
            health,
            shutdown,
        ));
        Ok(Self { task })
    }

    /// Waits for the server to stop (after `shutdown`), logging how it failed if it did:
    /// metrics are not worth failing the service's exit for.
    pub async fn finish(self) {
        match self.task.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "metrics server failed"),
            Err(e) => tracing::warn!(error = %e, "metrics server panicked"),
            Ok(Ok(())) => {}
        }
    }
}

/// Every request: two routes, each counted with its template; anything else is
/// `unmatched`.
async fn handle(State(state): State<Arc<ServerState>>, request: Request) -> Response {
    let start = Instant::now();
    let method = request.method().clone();
    let readable = method == Method::GET || method == Method::HEAD;
    let (endpoint, response) = match request.uri().path() {
        "/metrics" if readable => {
            let response = (
                [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
                encode(&state.registry),
            )
                .into_response();
            (Some("/metrics"), response)
        }
        "/healthz" if readable => {
            let response = match tokio::time::timeout(HEALTH_TIMEOUT, (state.health)()).await {
                Ok(Ok(())) => (StatusCode::OK, "ok\n".to_owned()),
                Ok(Err(problem)) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("unavailable: {problem}\n"),
                ),
                Err(_) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable: health check timed out\n".to_owned(),
                ),
            };
            (Some("/healthz"), response.into_response())
        }
        path @ ("/metrics" | "/healthz") => {
            let endpoint = if path == "/metrics" {
                "/metrics"
            } else {
                "/healthz"
            };
            let response = (
                StatusCode::METHOD_NOT_ALLOWED,
                [(header::ALLOW, HeaderValue::from_static("GET, HEAD"))],
            )
                .into_response();
            (Some(endpoint), response)
        }
        _ => (None, StatusCode::NOT_FOUND.into_response()),
    };
    state.http.observe(
        method.as_str(),
        endpoint,
        response.status().as_u16(),
        start.elapsed(),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Metrics;

    #[tokio::test]
    async fn serves_metrics_and_health() -> Result<(), Box<dyn std::error::Error>> {
        let metrics = Metrics::new("test");
        let http = metrics.http.clone();
        let registry = Arc::new(metrics.registry);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let healthy = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = healthy.clone();
        let health = health_check(move || {
            let healthy = flag.load(std::sync::atomic::Ordering::Relaxed);
            async move {
                if healthy {
                    Ok(())
                } else {
                    Err("store down".to_owned())
                }
            }
        });
        let stop = tokio_util::sync::CancellationToken::new();
        let server = tokio::spawn(serve_metrics(
            listener,
            registry,
            http,
            health,
            stop.clone().cancelled_owned(),
        ));
        let client = reqwest::Client::new();

        let first = client.get(format!("{base}/metrics")).send().await?;
        assert_eq!(first.status(), 200);
        assert_eq!(first.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        let text = first.text().await?;
        assert!(
            text.lines()
                .any(|l| l
                    == r#"http_requests_total{method="GET",endpoint="/metrics",status="200"} 0"#),
            "declared at 0 before the first scrape is counted:\n{text}"
        );
        assert!(text.contains("# TYPE cpu_usage_percent gauge\n"));

        // Prometheus asks for OpenMetrics first; it gets the Prometheus text format.
        let scrape = client
            .get(format!("{base}/metrics"))
            .header(
                header::ACCEPT,
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
            )
            .send()
            .await?;
        assert_eq!(scrape.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        let text = scrape.text().await?;
        assert!(!text.contains("# EOF"));
        assert!(text.lines().any(
            |l| l == r#"http_requests_total{method="GET",endpoint="/metrics",status="200"} 1"#
        ));

        assert_eq!(
            client.get(format!("{base}/healthz")).send().await?.status(),
            200
        );
        healthy.store(false, std::sync::atomic::Ordering::Relaxed);
        let sick = client.get(format!("{base}/healthz")).send().await?;
        assert_eq!(sick.status(), 503);
        assert_eq!(sick.text().await?, "unavailable: store down\n");
        assert_eq!(
            client.get(format!("{base}/nope")).send().await?.status(),
            404
        );
        assert_eq!(
            client
                .post(format!("{base}/metrics"))
                .send()
                .await?
                .status(),
            405
        );

        let text = client
            .get(format!("{base}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        for line in [
            r#"http_requests_total{method="GET",endpoint="/healthz",status="200"} 1"#,
            r#"http_requests_total{method="GET",endpoint="/healthz",status="503"} 1"#,
            r#"http_requests_total{method="GET",endpoint="unmatched",status="404"} 1"#,
            r#"http_requests_total{method="POST",endpoint="/metrics",status="405"} 1"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing in:\n{text}"
            );
        }
        stop.cancel();
        server.await??;
        Ok(())
    }
}
