//! Histogram bucket upper bounds, in seconds. Buckets are fixed at registration and
//! shared by every replica, so `histogram_quantile` can aggregate across them.

/// `http_request_duration_seconds`: Prometheus' default buckets (5 ms to 10 s).
pub const HTTP_DURATION: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// `ws_message_latency_seconds`: `[0.1, 0.5, 1, 2, 5, 10]`, the buckets of the original
/// design, kept like the names of the eight compatibility metrics (docs/observability.md),
/// plus finer buckets below 0.1 s, where a healthy system spends its time (an
/// embedded-store append with its fsync is around a millisecond).
pub const WS_MESSAGE_LATENCY: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// gRPC calls and store operations: 0.5 ms to 10 s.
pub const RPC_DURATION: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram with [`RPC_DURATION`] buckets: the constructor of labelled latency
/// families (`Family::new_with_constructor`).
pub fn rpc_histogram() -> prometheus_client::metrics::histogram::Histogram {
    prometheus_client::metrics::histogram::Histogram::new(RPC_DURATION)
}

/// A histogram with [`HTTP_DURATION`] buckets.
pub fn http_histogram() -> prometheus_client::metrics::histogram::Histogram {
    prometheus_client::metrics::histogram::Histogram::new(HTTP_DURATION)
}
