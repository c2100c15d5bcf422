//! The presence service's own metrics (prefix `chat_presence`):
//!
//! - `chat_presence_store_operation_duration_seconds{op,backend}`: time of each store
//!   call (`op` = `connect`, `disconnect`, `enter_room`, `heartbeat`, `sweep`,
//!   `take_exits`, `online`; `backend` = `memory` | `redis`).
//! - `chat_presence_store_errors_total{op,kind}`: failed store calls, `kind` =
//!   `unavailable` | `internal`.
//! - `chat_presence_sweeps_total`: sweep steps run (the background sweeper's, and one per
//!   `TakeExits` call); `chat_presence_expired_exits_total`: offline events of users of
//!   dead gateways handed to live gateways to announce (a batch handed out again because
//!   it was not acknowledged counts again).
//! - `chat_presence_online_users`, `chat_presence_gateways`: sampled every
//!   [`STATS_INTERVAL`] from [`PresenceStore::stats`], never at scrape time: gateways
//!   with a live lease, and the users they hold (a user once per gateway holding them,
//!   so an upper bound when users are connected through several gateways at once). Every
//!   presence replica reports the same global values: aggregate with `max`, not `sum`.
//! - `chat_presence_redis_connected`, `chat_presence_redis_reconnects_total` (Redis store
//!   only, see [`register_redis_connection`]): whether the store's Redis connection is up,
//!   read at scrape time, and how often fred reconnected it.
//!
//! gRPC request counts and latencies are the shared `grpc_server_*` families.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chat_metrics::RedisConnectionMetrics;
use chat_metrics::store::StoreCallMetrics;
use chat_model::{RoomId, UserId};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::store::{ExitBatch, GatewayId, PresenceError, PresenceStats, PresenceStore};

/// How often the online users and live gateways are sampled.
pub const STATS_INTERVAL: Duration = Duration::from_secs(10);

pub use chat_metrics::store::{ErrorLabels, OperationLabels};

/// The presence families; cheap to clone.
#[derive(Debug, Clone)]
pub struct PresenceMetrics {
    calls: StoreCallMetrics,
    sweeps: Counter,
    expired_exits: Counter,
    online_users: Gauge,
    gateways: Gauge,
}

impl Default for PresenceMetrics {
    /// Families registered nowhere.
    fn default() -> Self {
        Self {
            calls: StoreCallMetrics::default(),
            sweeps: Counter::default(),
            expired_exits: Counter::default(),
            online_users: Gauge::default(),
            gateways: Gauge::default(),
        }
    }
}

impl PresenceMetrics {
    /// Registers the families in `registry` (give it the `chat_presence` prefix).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        metrics.calls.register_duration(
            registry,
            "Time of each presence store call, by operation and backend (memory, redis)",
        );
        metrics.calls.register_errors(
            registry,
            "Failed presence store calls, by operation and kind (unavailable: retryable; internal)",
        );
        registry.register(
            "sweeps",
            "Sweep steps for gateways whose lease expired (background, and one per TakeExits call)",
            metrics.sweeps.clone(),
        );
        registry.register(
            "expired_exits",
            "Offline events of users of dead gateways handed to live gateways to announce (re-sent batches count again)",
            metrics.expired_exits.clone(),
        );
        registry.register(
            "online_users",
            "Users held by gateways with a live lease, once per gateway holding them (sampled every 10 s; the same on every presence replica)",
            metrics.online_users.clone(),
        );
        registry.register(
            "gateways",
            "Gateways with a live presence lease (sampled every 10 s; the same on every presence replica)",
            metrics.gateways.clone(),
        );
        metrics
    }

    fn observe(&self, op: &'static str, backend: &'static str, start: Instant) {
        self.calls.observe(op, backend, start);
    }

    fn record<T>(
        &self,
        op: &'static str,
        backend: &'static str,
        start: Instant,
        result: Result<T, PresenceError>,
    ) -> Result<T, PresenceError> {
        self.observe(op, backend, start);
        if let Err(e) = &result {
            let kind = match e {
                PresenceError::Unavailable(_) => "unavailable",
                PresenceError::Internal(_) => "internal",
            };
            self.calls.error(op, kind);
        }
        result
    }

    fn set_stats(&self, stats: PresenceStats) {
        self.online_users
            .set(i64::try_from(stats.users).unwrap_or(i64::MAX));
        self.gateways
            .set(i64::try_from(stats.gateways).unwrap_or(i64::MAX));
    }
}

/// Samples [`PresenceStore::stats`] into the gauges every [`STATS_INTERVAL`] until `stop`.
pub async fn sample_stats(
    store: Arc<dyn PresenceStore>,
    metrics: PresenceMetrics,
    stop: CancellationToken,
) {
    chat_runtime::every(STATS_INTERVAL, &stop, || async {
        match store.stats().await {
            Ok(stats) => metrics.set_stats(stats),
            Err(e) => tracing::debug!(error = %e, "presence stats not sampled"),
        }
    })
    .await;
}

/// A store whose calls are timed and counted; otherwise exactly the store it wraps.
#[derive(Debug)]
pub struct MeteredPresence {
    inner: Arc<dyn PresenceStore>,
    metrics: PresenceMetrics,
}

impl MeteredPresence {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn PresenceStore>, metrics: PresenceMetrics) -> Self {
        Self { inner, metrics }
    }
}

#[async_trait]
impl PresenceStore for MeteredPresence {
    fn ttl(&self) -> Duration {
        self.inner.ttl()
    }

    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn connect(&self, gateway: &GatewayId, user: &UserId) -> Result<bool, PresenceError> {
        let start = Instant::now();
        let result = self.inner.connect(gateway, user).await;
        self.metrics
            .record("connect", self.backend(), start, result)
    }

    async fn disconnect(
        &self,
        gateway: &GatewayId,
        user: &UserId,
    ) -> Result<Option<Vec<RoomId>>, PresenceError> {
        let start = Instant::now();
        let result = self.inner.disconnect(gateway, user).await;
        self.metrics
            .record("disconnect", self.backend(), start, result)
    }

    async fn enter_room(
        &self,
        gateway: &GatewayId,
        user: &UserId,
        room: &RoomId,
    ) -> Result<bool, PresenceError> {
        let start = Instant::now();
        let result = self.inner.enter_room(gateway, user, room).await;
        self.metrics
            .record("enter_room", self.backend(), start, result)
    }

    async fn heartbeat(
        &self,
        gateway: &GatewayId,
        users: &[UserId],
    ) -> Result<bool, PresenceError> {
        let start = Instant::now();
        let result = self.inner.heartbeat(gateway, users).await;
        self.metrics
            .record("heartbeat", self.backend(), start, result)
    }

    async fn sweep(&self) -> Result<bool, PresenceError> {
        let start = Instant::now();
        let result = self.inner.sweep().await;
        if result.is_ok() {
            self.metrics.sweeps.inc();
        }
        self.metrics.record("sweep", self.backend(), start, result)
    }

    async fn take_exits(
        &self,
        gateway: &GatewayId,
        ack: u64,
        limit: usize,
    ) -> Result<ExitBatch, PresenceError> {
        let start = Instant::now();
        let result = self.inner.take_exits(gateway, ack, limit).await;
        if let Ok(batch) = &result {
            self.metrics.expired_exits.inc_by(batch.exits.len() as u64);
        }
        self.metrics
            .record("take_exits", self.backend(), start, result)
    }

    async fn online(&self, users: &[UserId]) -> Result<Vec<bool>, PresenceError> {
        let start = Instant::now();
        let result = self.inner.online(users).await;
        self.metrics.record("online", self.backend(), start, result)
    }

    async fn stats(&self) -> Result<PresenceStats, PresenceError> {
        self.inner.stats().await
    }

    async fn ping(&self) -> Result<(), PresenceError> {
        self.inner.ping().await
    }
}

/// The Redis store's connection (prefix `chat_presence_redis`): `connected` and
/// `reconnects_total`; registered only when presence uses Redis.
pub fn register_redis_connection(registry: &mut Registry) -> RedisConnectionMetrics {
    RedisConnectionMetrics::register(
        registry,
        "1 while the presence store's Redis connection is up, else 0.",
        "Reconnections of the presence store's Redis connection (fred reconnects by itself after a failure)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryPresence;

    #[tokio::test]
    async fn exposition_lines() {
        let mut registry = Registry::default();
        let metrics = PresenceMetrics::register(registry.sub_registry_with_prefix("chat_presence"));
        let store = MeteredPresence::new(
            Arc::new(MemoryPresence::new(Duration::from_secs(30))),
            metrics.clone(),
        );
        let alice = UserId::parse("alice").expect("valid");
        store.connect("gw1", &alice).await.expect("connect");
        store.heartbeat("gw1", &[alice]).await.expect("heartbeat");
        store.sweep().await.expect("sweep");
        metrics.set_stats(store.stats().await.expect("stats"));
        let text = chat_metrics::exposition(&registry);
        let expected = r#"# HELP chat_presence_store_operation_duration_seconds Time of each presence store call, by operation and backend (memory, redis).
# TYPE chat_presence_store_operation_duration_seconds histogram
chat_presence_store_operation_duration_seconds_count{op="connect",backend="memory"} 1
chat_presence_store_operation_duration_seconds_count{op="heartbeat",backend="memory"} 1
chat_presence_store_operation_duration_seconds_count{op="sweep",backend="memory"} 1
chat_presence_store_operation_duration_seconds_bucket{op="connect",backend="memory",le="0.0005"} 1
chat_presence_store_operation_duration_seconds_bucket{op="connect",backend="memory",le="0.001"} 1
chat_presence_store_operation_duration_seconds_bucket{op="connect",backend="memory",le="0.0025"} 1
chat_presence_store_operation_duration_seconds_bucket{op="connect",backend="memory",le="0.005"} 1
chat_presence_store_operation_duration_seconds_bucket{op="connect",backend="memory",le="0.01"} 1
chat_presence_store_operation_duration_seconds_bucket{op="connect",backend="memory",le="0.025"} 1
chat_presence_store_operation_duration_seconds_bucket{op="connect",backend="memory",le="0.05"} 1
chat_presence_store_operation_duration_seconds_bucket{op="connect",backend="memory",le="0.1"} 1
chat_presence_store_operation_duration_seconds_bucket{op="connect",backend="memory",le="0.25"} 1
chat_presence_store_operation_duration_seconds_bucket{op="connect",backend="memory",le="0.5"} 1
chat_presence_store_operation_duration_seconds_bucket{op="connect",backend="memory",le="1"} 1
chat_presence_store_operation_duration_seconds_bucket{op="connect",backend="memory",le="2.5"} 1
chat_presence_store_operation_duration_seconds_bucket{op="connect",backend="memory",le="5"} 1
chat_presence_store_operation_duration_seconds_bucket{op="connect",backend="memory",le="10"} 1
chat_presence_store_operation_duration_seconds_bucket{op="connect",backend="memory",le="+Inf"} 1
# HELP chat_presence_sweeps_total Sweep steps for gateways whose lease expired (background, and one per TakeExits call).
# TYPE chat_presence_sweeps_total counter
chat_presence_sweeps_total 1
# HELP chat_presence_expired_exits_total Offline events of users of dead gateways handed to live gateways to announce (re-sent batches count again).
# TYPE chat_presence_expired_exits_total counter
chat_presence_expired_exits_total 0
# HELP chat_presence_online_users Users held by gateways with a live lease, once per gateway holding them (sampled every 10 s; the same on every presence replica).
# TYPE chat_presence_online_users gauge
chat_presence_online_users 1
# HELP chat_presence_gateways Gateways with a live presence lease (sampled every 10 s; the same on every presence replica).
# TYPE chat_presence_gateways gauge
chat_presence_gateways 1"#;
        assert_eq!(
            chat_metrics::missing_lines(&text, expected),
            Vec::<&str>::new(),
            "{text}"
        );
        // No errors yet: the family has no series and is left out.
        assert!(!text.contains("chat_presence_store_errors_total"));
    }
}
