//! Fan-out of room events between gateway replicas.
//!
//! One trait, one module per backend: [`memory`] (in-process, for a single gateway) and
//! [`redis`] (Redis pub/sub, for any number of replicas: classic pub/sub on one Redis
//! server, sharded pub/sub on a Redis Cluster). All pass the same behaviour suite
//! (`tests/fanout_suite.rs`).
//!
//! Payloads are server frames (`message`, `typing`, `presence`) exactly as clients receive
//! them, so a receiving gateway forwards the bytes it got without re-encoding them.
//! Fan-out is best effort: a backend may drop events (Redis reconnecting, a slow
//! receiver). The gateway's rooms notice a missing `seq` and fill it from history, and
//! a [`Signal::Resync`] tells them to check even when no later message arrives.

use async_trait::async_trait;
use bytestring::ByteString;
use chat_model::RoomId;

pub mod memory;
pub mod redis;

/// What a fan-out backend hands to its gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// An event published to a room this gateway subscribed to.
    Event { room: RoomId, payload: ByteString },
    /// Events may have been lost (the backend reconnected, or the receiver lagged): every
    /// room should compare its last seq with history.
    Resync,
}

/// Why a fan-out operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FanOutError {
    #[error("fan-out backend unavailable: {0}")]
    Unavailable(String),
    /// The backend is known to be down and kept the event to publish on recovery; the
    /// outage was logged once, so callers need not log each such event.
    #[error("fan-out degraded: {0}")]
    Deferred(String),
}

/// Sends room events to every gateway subscribed to the room, this one included.
#[async_trait]
pub trait FanOut: Send + Sync + std::fmt::Debug + 'static {
    /// Starts delivering `room`'s events as [`Signal::Event`]. Subscriptions are counted:
    /// after `n` subscribes the room is delivered until `n` unsubscribes. The subscription
    /// is active when this returns, so an event published afterwards is delivered.
    async fn subscribe(&self, room: &RoomId) -> Result<(), FanOutError>;

    /// Drops one subscription of `room`.
    async fn unsubscribe(&self, room: &RoomId) -> Result<(), FanOutError>;

    /// Publishes an event to every subscriber of `room`, at most once each.
    async fn publish(&self, room: &RoomId, payload: ByteString) -> Result<(), FanOutError>;

    /// Whether the backend is connected (for readiness).
    fn is_connected(&self) -> bool;
}

/// Capacity of the signal channel from a backend to its gateway. When the gateway falls
/// this far behind, events are dropped and a [`Signal::Resync`] follows.
pub const SIGNAL_QUEUE: usize = 16 * 1024;
