//! The WebSocket families of the eight compatibility metrics (docs/observability.md).
//! Only the gateway moves them; every service registers them (at 0 elsewhere) so that
//! each scrape shows all eight names.
//!
//! - `ws_connections_active`: WebSocket sessions open now.
//! - `ws_connections_total`: WebSocket sessions opened (upgrades accepted).
//! - `ws_messages_total{direction}`: WebSocket text frames, `in` = read from clients,
//!   `out` = written to clients (control and binary frames are not counted).
//! - `ws_message_latency_seconds`: for each `send` frame that is acked, the time from
//!   the gateway reading the frame to the `ack` being queued on the connection: frame
//!   parsing and checks, the history `Append` call (the durable store, including its
//!   fsync or MongoDB majority write), handing the message to local delivery, and
//!   queuing the `ack`: when the connection's outbound queue is full, that includes
//!   waiting for room in it (`Conn::send` waits rather than drop a reply). It excludes the
//!   client's network, the time the queued `ack` then waits behind earlier frames until
//!   it is written, and the fan-out publish (which happens after the ack).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::buckets::WS_MESSAGE_LATENCY;

/// Which way a frame went.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    /// `in` (client to server) or `out` (server to client).
    pub direction: &'static str,
}

const IN: DirectionLabels = DirectionLabels { direction: "in" };
const OUT: DirectionLabels = DirectionLabels { direction: "out" };

/// The `ws_*` families; cheap to clone (clones share the series).
#[derive(Debug, Clone)]
pub struct WsMetrics {
    active: Gauge,
    opened: Counter,
    messages: Family<DirectionLabels, Counter>,
    /// `messages{direction="out"}`, held so that counting a frame needs no family lookup.
    out: Counter,
    latency: Histogram,
}

impl Default for WsMetrics {
    /// Families registered nowhere.
    fn default() -> Self {
        let messages = Family::<DirectionLabels, Counter>::default();
        // Both directions exist from the start, at 0.
        let _ = messages.get_or_create(&IN);
        let out = messages.get_or_create(&OUT).clone();
        Self {
            active: Gauge::default(),
            opened: Counter::default(),
            messages,
            out,
            latency: Histogram::new(WS_MESSAGE_LATENCY),
        }
    }
}

impl WsMetrics {
    /// Registers the four families in `registry` (the root: no prefix).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "ws_connections_active",
            "WebSocket connections open now",
            metrics.active.clone(),
        );
        registry.register(
            "ws_connections",
            "WebSocket connections opened (upgrades accepted)",
            metrics.opened.clone(),
        );
        registry.register(
            "ws_messages",
            "WebSocket text frames, in = read from clients, out = written to clients",
            metrics.messages.clone(),
        );
        registry.register_with_unit(
            "ws_message_latency",
            "Time from reading a send frame to queuing its ack: checks, the durable history append, local delivery and any wait for room in a full outbound queue (not the time the ack then spends in the queue)",
            Unit::Seconds,
            metrics.latency.clone(),
        );
        metrics
    }

    /// A connection opened; it counts as active until the returned guard drops.
    pub fn connection_opened(&self) -> ActiveConnection {
        self.opened.inc();
        self.active.inc();
        ActiveConnection {
            active: self.active.clone(),
        }
    }

    /// A text frame read from a client.
    pub fn message_in(&self) {
        self.messages.get_or_create(&IN).inc();
    }

    /// `n` text frames written to a client.
    pub fn messages_out(&self, n: u64) {
        self.out.inc_by(n);
    }

    /// The latency of one acked `send` (see the module doc).
    pub fn observe_send(&self, elapsed: std::time::Duration) {
        self.latency.observe(elapsed.as_secs_f64());
    }
}

/// Keeps `ws_connections_active` up by one while it lives.
#[derive(Debug)]
pub struct ActiveConnection {
    active: Gauge,
}

impl Drop for ActiveConnection {
    fn drop(&mut self) {
        self.active.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_lines() {
        let mut registry = Registry::default();
        let ws = WsMetrics::register(&mut registry);
        let first = ws.connection_opened();
        let second = ws.connection_opened();
        drop(first);
        ws.message_in();
        ws.messages_out(2);
        ws.observe_send(std::time::Duration::from_micros(1800));
        let text = crate::exposition(&registry);
        let expected = r#"# HELP ws_connections_active WebSocket connections open now.
# TYPE ws_connections_active gauge
ws_connections_active 1
# HELP ws_connections_total WebSocket connections opened (upgrades accepted).
# TYPE ws_connections_total counter
ws_connections_total 2
# HELP ws_messages_total WebSocket text frames, in = read from clients, out = written to clients.
# TYPE ws_messages_total counter
ws_messages_total{direction="in"} 1
ws_messages_total{direction="out"} 2
# HELP ws_message_latency_seconds Time from reading a send frame to queuing its ack: checks, the durable history append, local delivery and any wait for room in a full outbound queue (not the time the ack then spends in the queue).
# TYPE ws_message_latency_seconds histogram
ws_message_latency_seconds_sum 0.0018
ws_message_latency_seconds_count 1
ws_message_latency_seconds_bucket{le="0.0005"} 0
ws_message_latency_seconds_bucket{le="0.001"} 0
ws_message_latency_seconds_bucket{le="0.0025"} 1
ws_message_latency_seconds_bucket{le="0.005"} 1
ws_message_latency_seconds_bucket{le="0.01"} 1
ws_message_latency_seconds_bucket{le="0.025"} 1
ws_message_latency_seconds_bucket{le="0.05"} 1
ws_message_latency_seconds_bucket{le="0.1"} 1
ws_message_latency_seconds_bucket{le="0.5"} 1
ws_message_latency_seconds_bucket{le="1"} 1
ws_message_latency_seconds_bucket{le="2"} 1
ws_message_latency_seconds_bucket{le="5"} 1
ws_message_latency_seconds_bucket{le="10"} 1
ws_message_latency_seconds_bucket{le="+Inf"} 1
"#;
        // Series order within a family is not fixed; the lines are.
        fn sorted(s: &str) -> Vec<&str> {
            let mut lines: Vec<&str> = s.lines().collect();
            lines.sort_unstable();
            lines
        }
        assert_eq!(sorted(&text), sorted(expected), "{text}");
        drop(second);
    }
}
