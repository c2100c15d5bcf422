//! The history service: the only component that talks to the message store. It stores each
//! message once (idempotent on `(room, sender, client_id)`), assigns every room's gapless
//! `seq` (1, 2, 3, ... across all replicas), and serves paging and catch-up over gRPC
//! (`proto/history.proto`).
//!
//! # Layout
//!
//! - [`store`]: the [`MessageStore`] trait and its contract, with one module per backend:
//!   [`store::embedded`] (redb file, group commit; the single-machine default) and
//!   [`store::mongo`] (MongoDB; several replicas). Both pass `tests/store_suite.rs`.
//! - [`service`]: the generated gRPC `History` trait implemented on any store; request
//!   validation (`StoreError` -> `tonic::Status` is `chat_runtime::store`'s).
//! - [`server`]: [`HistoryServer`], which binds its listener first (port 0 works) and then
//!   serves History plus gRPC health until a shutdown token is cancelled.
//! - [`metrics`]: the `chat_history_*` families and [`metrics::MeteredStore`], which
//!   records them around any store; gRPC metrics come from `chat-metrics`.
//! - [`settings`]: [`Settings`] from `CHAT_*` environment variables, and [`open_store`],
//!   which picks the backend from them.
//!
//! `main.rs` only wires these together and serves `/metrics` and `/healthz` on
//! `CHAT_METRICS_ADDR`; the all-in-one binary does the same in-process (its metrics are
//! on the gateway's `/metrics`).

pub mod metrics;
pub mod server;
pub mod service;
pub mod settings;
pub mod store;

pub use server::HistoryServer;
pub use service::HistoryService;
pub use settings::{Settings, open_store};
pub use store::{Appended, Listed, MessageStore, NewMessage, Page, StoreError};
