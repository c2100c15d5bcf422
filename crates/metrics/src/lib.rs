//! Metrics shared by every chat service, in the Prometheus data model
//! ([`prometheus-client`](prometheus_client)).
//!
//! One [`Registry`] per process: `main` (or the all-in-one) creates a [`Metrics`], which
//! registers the families every service exposes at the root of the registry (the eight
//! compatibility metrics of docs/observability.md carry no prefix, so they are exactly
//! the names dashboards and alerts use); each
//! component then registers its own family struct under
//! [`Registry::sub_registry_with_prefix`] (`chat_gateway_...`, `chat_history_...`,
//! `chat_presence_...`), and the process serves the registry on `/metrics`. Every metric is
//! listed in `docs/observability.md`.
//!
//! # Layout
//!
//! - [`Metrics`] (here): a process's registry with the shared families already in it.
//! - [`process`]: `cpu_usage_percent` and `memory_usage_percent` of this process, the
//!   host's as `host_cpu_usage_percent` and `host_memory_usage_percent` (sysinfo, sampled
//!   in the background), and `build_info`.
//! - [`http_metrics`]: `http_requests_total` and `http_request_duration_seconds`, fed by
//!   the gateway's actix middleware and by the metrics server below.
//! - [`ws`]: `ws_connections_active`, `ws_connections_total`, `ws_messages_total`,
//!   `ws_message_latency_seconds` (fed by the gateway; zero elsewhere).
//! - [`grpc`]: gRPC request counts and latencies by service, method and code, as a tower
//!   layer for tonic servers and for client channels.
//! - [`redis`]: `<service>_redis_connected` and `<service>_redis_reconnects_total`, the
//!   state of a service's Redis connections (gateway fan-out, presence store).
//! - [`serve`]: encoding (the Prometheus text format) and the `/metrics` + `/healthz`
//!   server of history and presence.
//! - [`store`]: `<service>_store_operation_duration_seconds` and
//!   `<service>_store_errors_total` (history, presence).
//! - [`buckets`]: histogram bucket bounds.

pub mod buckets;
pub mod grpc;
pub mod http_metrics;
pub mod process;
pub mod redis;
pub mod serve;
pub mod store;
pub mod ws;

pub use prometheus_client;
pub use prometheus_client::registry::Registry;

pub use crate::grpc::{GrpcLayer, GrpcMetrics, Metered};
pub use crate::http_metrics::HttpMetrics;
pub use crate::process::ProcessMetrics;
pub use crate::redis::RedisConnectionMetrics;
pub use crate::serve::{encode, serve_metrics};
pub use crate::ws::WsMetrics;

/// The metrics of one process: its registry, holding `build_info`, the process
/// collector, and the families several components share. Made once in `main` (or in the
/// all-in-one, for all three services) and passed down by `&mut`; once every component
/// has registered, the registry is moved into the `/metrics` server.
#[derive(Debug)]
pub struct Metrics {
    /// Everything this process exposes.
    pub registry: Registry,
    /// `http_requests_total`, `http_request_duration_seconds`.
    pub http: HttpMetrics,
    /// The `ws_*` compatibility families; only the gateway moves them.
    pub ws: WsMetrics,
    /// `grpc_server_*` and `grpc_client_*`: one set per process, so the in-process
    /// history and presence of the all-in-one share it instead of registering twice.
    pub grpc: GrpcMetrics,
}

impl Metrics {
    /// A registry for a process running `service` (`gateway`, `history`, `presence`,
    /// `chat`), with `build_info`, process CPU and memory (refreshed by a background task
    /// when called inside a Tokio runtime, see [`ProcessMetrics`]), and the shared
    /// families.
    pub fn new(service: &str) -> Self {
        let mut registry = Registry::default();
        process::register_build_info(&mut registry, service);
        ProcessMetrics::register(&mut registry);
        let http = HttpMetrics::register(&mut registry);
        let ws = WsMetrics::register(&mut registry);
        let grpc = GrpcMetrics::register(registry.sub_registry_with_prefix("grpc"));
        Self {
            registry,
            http,
            ws,
            grpc,
        }
    }
}

/// The registry in the Prometheus text format, for tests that assert exposition lines.
pub fn exposition(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, registry);
    text
}

/// The lines of `expected` that are not lines of `text`; for tests that assert on
/// exposition lines (series order within a family is not fixed, so compare lines).
pub fn missing_lines<'a>(text: &str, expected: &'a str) -> Vec<&'a str> {
    expected
        .lines()
        .filter(|line| !text.lines().any(|l| l == *line))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The eight compatibility metrics (docs/observability.md), under their exact
    /// names, on every service.
    #[tokio::test]
    async fn every_process_exposes_the_compatibility_names() {
        let metrics = Metrics::new("test");
        // Labelled families appear with their first series; servers declare their routes.
        metrics.http.declare("GET", "/metrics", 200);
        let text = exposition(&metrics.registry);
        for line in [
            "# TYPE http_requests_total counter",
            "# TYPE http_request_duration_seconds histogram",
            "# TYPE ws_connections_active gauge",
            "# TYPE ws_connections_total counter",
            "# TYPE ws_messages_total counter",
            "# TYPE ws_message_latency_seconds histogram",
            "# TYPE cpu_usage_percent gauge",
            "# TYPE memory_usage_percent gauge",
            "# TYPE host_cpu_usage_percent gauge",
            "# TYPE host_memory_usage_percent gauge",
            "# TYPE build_info gauge",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in:\n{text}"
            );
        }
        let version = env!("CARGO_PKG_VERSION");
        let commit = process::GIT_COMMIT;
        let build =
            format!(r#"build_info{{service="test",version="{version}",git_commit="{commit}"}} 1"#);
        assert!(
            text.lines().any(|l| l == build),
            "{build} missing in:\n{text}"
        );
        // Each family once: Prometheus refuses a scrape with a repeated family.
        let mut types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
        let all = types.len();
        types.sort_unstable();
        types.dedup();
        assert_eq!(types.len(), all, "a family is registered twice:\n{text}");
    }
}
