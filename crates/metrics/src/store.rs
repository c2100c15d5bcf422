//! `<prefix>_store_operation_duration_seconds` and `<prefix>_store_errors_total`: the
//! calls of a service's store by operation and backend, and the failed ones by
//! operation and kind (history's message store, presence's store).

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Labels of the operation latency.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// The store method.
    pub op: &'static str,
    /// The backend, e.g. `embedded`, `mongo`, `memory`, `redis`.
    pub backend: &'static str,
}

/// Labels of the store errors.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The store method.
    pub op: &'static str,
    /// `unavailable` or `internal`.
    pub kind: &'static str,
}

/// The two families; cheap to clone. [`Default`]: registered nowhere.
#[derive(Debug, Clone)]
pub struct StoreCallMetrics {
    operations: Family<OperationLabels, Histogram, fn() -> Histogram>,
    errors: Family<ErrorLabels, Counter>,
}

impl Default for StoreCallMetrics {
    fn default() -> Self {
        Self {
            operations: Family::new_with_constructor(crate::buckets::rpc_histogram),
            errors: Family::default(),
        }
    }
}

impl StoreCallMetrics {
    /// Registers `store_operation_duration` (seconds) in `registry` with `help`.
    pub fn register_duration(&self, registry: &mut Registry, help: &str) {
        registry.register_with_unit(
            "store_operation_duration",
            help,
            Unit::Seconds,
            self.operations.clone(),
        );
    }

    /// Registers `store_errors` in `registry` with `help`.
    pub fn register_errors(&self, registry: &mut Registry, help: &str) {
        registry.register("store_errors", help, self.errors.clone());
    }

    /// Records a call of `op` on `backend` that started at `start`.
    pub fn observe(&self, op: &'static str, backend: &'static str, start: Instant) {
        self.operations
            .get_or_create(&OperationLabels { op, backend })
            .observe(start.elapsed().as_secs_f64());
    }

    /// Counts a failed call of `op` (`kind`: `unavailable` or `internal`).
    pub fn error(&self, op: &'static str, kind: &'static str) {
        self.errors.get_or_create(&ErrorLabels { op, kind }).inc();
    }
}
