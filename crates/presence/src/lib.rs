//! The presence service: the only component that talks to the online-status keys. A user
//! is online while at least one gateway holds a connection of theirs; gateways renew a
//! lease with heartbeats, and when a gateway dies without saying goodbye its users expire
//! with the lease and a background sweep queues their offline events, which live gateways
//! claim, announce and acknowledge (`proto/presence.proto`).
//!
//! # Layout
//!
//! - [`store`]: the [`PresenceStore`] trait and its contract, with one module per backend:
//!   [`store::memory`] (maps in the process; the single-machine default) and
//!   [`store::redis`] (a Redis string with TTL per user plus a few sets, changed by Lua
//!   scripts; any number of presence replicas). The key scheme is documented there. Both
//!   pass `tests/store_suite.rs`.
//! - [`service`]: the generated gRPC `Presence` trait implemented on any store; request
//!   validation and the one `PresenceError` -> `tonic::Status` conversion.
//! - [`server`]: [`PresenceServer`], which binds its listener first (port 0 works) and
//!   then serves Presence plus gRPC health until a shutdown token is cancelled.
//! - [`metrics`]: the `chat_presence_*` families and [`metrics::MeteredPresence`], which
//!   records them around any store; gRPC metrics come from `chat-metrics`.
//! - [`settings`]: [`Settings`] from `CHAT_*` environment variables, and [`open_store`],
//!   which picks the backend from them.
//!
//! `main.rs` only wires these together and serves `/metrics` and `/healthz` on
//! `CHAT_METRICS_ADDR`; the all-in-one binary does the same in-process (its metrics are
//! on the gateway's `/metrics`).
//! `benches/presence_scale.rs` measures query and heartbeat cost against a real Redis.

pub mod metrics;
pub mod server;
pub mod service;
pub mod settings;
pub mod store;

pub use server::PresenceServer;
pub use service::PresenceService;
pub use settings::{Settings, open_store};
pub use store::{
    ExitBatch, GatewayId, PresenceError, PresenceStats, PresenceStore, RoomExit, check_gateway_id,
};
