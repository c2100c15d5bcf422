//! The state of a service's Redis connections, as every Redis user reports it (the
//! gateway's fan-out under `chat_gateway_redis`, presence's store under
//! `chat_presence_redis`): `connected`, asked of the client at scrape time, and
//! `reconnects_total`, counted from the client's reconnect notifications.

use std::sync::{Arc, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// Whether the connections are up, asked at scrape time.
type ConnectedProbe = Box<dyn Fn() -> bool + Send + Sync>;

/// `connected` and `reconnects_total` under the prefix of the registry given to
/// [`RedisConnectionMetrics::register`]; registered only by a service that uses Redis,
/// so one that does not has no `connected` series to alert on.
#[derive(Clone, Default)]
pub struct RedisConnectionMetrics {
    reconnects: Counter,
    /// Set once by [`RedisConnectionMetrics::watch`]; `connected` reads 0 until then.
    probe: Arc<OnceLock<ConnectedProbe>>,
}

impl std::fmt::Debug for RedisConnectionMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnectionMetrics")
            .field("reconnects", &self.reconnects)
            .finish_non_exhaustive()
    }
}

impl RedisConnectionMetrics {
    /// Registers `reconnects` and `connected` in `registry` (give it the service's
    /// `..._redis` prefix), with help texts saying which connections they are about.
    pub fn register(
        registry: &mut Registry,
        connected_help: &'static str,
        reconnects_help: &'static str,
    ) -> Self {
        let metrics = Self::default();
        registry.register("reconnects", reconnects_help, metrics.reconnects.clone());
        registry.register_collector(Box::new(Connected {
            probe: metrics.probe.clone(),
            help: connected_help,
        }));
        metrics
    }

    /// Tells `connected` how to know. The first call wins: it returns `false` (and
    /// changes nothing) when a probe was already set.
    pub fn watch(&self, connected: impl Fn() -> bool + Send + Sync + 'static) -> bool {
        self.probe.set(Box::new(connected)).is_ok()
    }

    /// One reconnect, seen by the caller itself.
    pub fn reconnected(&self) {
        self.reconnects.inc();
    }

    /// Counts the reconnects a client's notifications report (fred's `reconnect_rx`)
    /// until the client is gone. The task holds the counter only, so it keeps nothing
    /// else alive. Subscribe after the first connection, or it counts as a reconnect.
    pub fn count_reconnects<T: Clone + Send + 'static>(
        &self,
        mut notifications: tokio::sync::broadcast::Receiver<T>,
    ) {
        use tokio::sync::broadcast::error::RecvError;
        let reconnects = self.reconnects.clone();
        tokio::spawn(async move {
            loop {
                match notifications.recv().await {
                    Ok(_) => {
                        reconnects.inc();
                    }
                    Err(RecvError::Lagged(missed)) => {
                        reconnects.inc_by(missed);
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
    }
}

/// `<prefix>_connected`, read when scraped.
struct Connected {
    probe: Arc<OnceLock<ConnectedProbe>>,
    help: &'static str,
}

impl std::fmt::Debug for Connected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connected").finish_non_exhaustive()
    }
}

impl Collector for Connected {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let up = self.probe.get().is_some_and(|connected| connected());
        let gauge = ConstGauge::new(i64::from(up));
        // Collector help texts are written as is (no full stop added).
        let metric =
            encoder.encode_descriptor("connected", self.help, None, gauge.metric_type())?;
        gauge.encode(metric)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connected_follows_the_probe_and_reconnects_are_counted() {
        let mut registry = Registry::default();
        let metrics = RedisConnectionMetrics::register(
            registry.sub_registry_with_prefix("svc_redis"),
            "1 while up.",
            "Reconnections",
        );
        let text = crate::exposition(&registry);
        assert!(text.contains("\nsvc_redis_connected 0\n"), "{text}");
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let probe = up.clone();
        assert!(metrics.watch(move || probe.load(std::sync::atomic::Ordering::Relaxed)));
        assert!(!metrics.watch(|| false), "the first probe wins");
        let (tx, rx) = tokio::sync::broadcast::channel(4);
        metrics.count_reconnects(rx);
        tx.send(()).expect("listening");
        tx.send(()).expect("listening");
        metrics.reconnected();
        drop(tx);
        let expected = "# HELP svc_redis_connected 1 while up.\n# TYPE svc_redis_connected gauge\nsvc_redis_connected 1\n# HELP svc_redis_reconnects_total Reconnections.\n# TYPE svc_redis_reconnects_total counter\nsvc_redis_reconnects_total 3";
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let text = crate::exposition(&registry);
            if crate::missing_lines(&text, expected).is_empty() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{text}");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        up.store(false, std::sync::atomic::Ordering::Relaxed);
        assert!(crate::exposition(&registry).contains("\nsvc_redis_connected 0\n"));
    }
}
