//! The history service's own metrics (prefix `chat_history`), recorded by
//! [`MeteredStore`], a [`MessageStore`] that times and counts every call of the store it
//! wraps:
//!
//! - `chat_history_store_operation_duration_seconds{op,backend}`: time of each store
//!   call, `op` = `append` | `list`, `backend` = `embedded` | `mongo`. An embedded
//!   append includes waiting for its group commit and fsync; a MongoDB append includes
//!   seq conflicts retried and the majority write.
//! - `chat_history_appends_total{result}`: appends by outcome, `stored` (a new
//!   message), `duplicate` (a resend, answered with the original) or `error`.
//! - `chat_history_store_errors_total{op,kind}`: failed store calls, `kind` =
//!   `unavailable` (the client may retry) | `internal`.
//!
//! gRPC request counts and latencies are the shared `grpc_server_*` families
//! ([`chat_metrics::grpc`]).

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use chat_metrics::store::StoreCallMetrics;
use chat_model::RoomId;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::store::{Appended, Listed, MessageStore, NewMessage, Page, StoreError};

pub use chat_metrics::store::{ErrorLabels, OperationLabels};

/// Labels of the append outcomes.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppendLabels {
    /// `stored`, `duplicate` or `error`.
    pub result: &'static str,
}

/// The history families; cheap to clone.
#[derive(Debug, Clone)]
pub struct StoreMetrics {
    calls: StoreCallMetrics,
    appends: Family<AppendLabels, Counter>,
}

impl Default for StoreMetrics {
    /// Families registered nowhere.
    fn default() -> Self {
        let metrics = Self {
            calls: StoreCallMetrics::default(),
            appends: Family::default(),
        };
        // Every outcome is present from the start, so ratios and alerts have series.
        for result in ["stored", "duplicate", "error"] {
            let _ = metrics.appends.get_or_create(&AppendLabels { result });
        }
        metrics
    }
}

impl StoreMetrics {
    /// Registers the families in `registry` (give it the `chat_history` prefix).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        metrics.calls.register_duration(
            registry,
            "Time of each message store call, by operation (append, list) and backend (embedded, mongo)",
        );
        registry.register(
            "appends",
            "Messages appended, by result: stored (new), duplicate (a resend answered with the original) or error",
            metrics.appends.clone(),
        );
        metrics.calls.register_errors(
            registry,
            "Failed message store calls, by operation and kind (unavailable: retryable; internal)",
        );
        metrics
    }

    fn observe(&self, op: &'static str, backend: &'static str, start: Instant) {
        self.calls.observe(op, backend, start);
    }

    fn error(&self, op: &'static str, error: &StoreError) {
        let kind = match error {
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Internal(_) => "internal",
        };
        self.calls.error(op, kind);
    }
}

/// A store whose calls are timed and counted; otherwise exactly the store it wraps.
#[derive(Debug)]
pub struct MeteredStore {
    inner: Arc<dyn MessageStore>,
    metrics: StoreMetrics,
}

impl MeteredStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn MessageStore>, metrics: StoreMetrics) -> Self {
        Self { inner, metrics }
    }
}

#[async_trait]
impl MessageStore for MeteredStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn append(&self, msg: NewMessage) -> Result<Appended, StoreError> {
        let start = Instant::now();
        let result = self.inner.append(msg).await;
        self.metrics.observe("append", self.inner.backend(), start);
        let outcome = match &result {
            Ok(appended) if appended.duplicate => "duplicate",
            Ok(_) => "stored",
            Err(e) => {
                self.metrics.error("append", e);
                "error"
            }
        };
        self.metrics
            .appends
            .get_or_create(&AppendLabels { result: outcome })
            .inc();
        result
    }

    async fn list(&self, room: &RoomId, page: Page, limit: u32) -> Result<Listed, StoreError> {
        let start = Instant::now();
        let result = self.inner.list(room, page, limit).await;
        self.metrics.observe("list", self.inner.backend(), start);
        if let Err(e) = &result {
            self.metrics.error("list", e);
        }
        result
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}
