//! The accounts service: the only owner of users, sessions and the access-token signing
//! keys. Sign-up and log-in with argon2id-hashed passwords, EdDSA access tokens, rotating
//! refresh tokens with reuse detection, throttling, over gRPC (`proto/accounts.proto`).
//! Design and operator steps: docs/architecture.md, "Accounts".
//!
//! # Layout
//!
//! - [`store`]: the [`AccountStore`] trait (users, sessions, signing keys) with
//!   [`store::embedded`] (redb file) and [`store::mongo`] (MongoDB). Both pass
//!   `tests/store_suite.rs`.
//! - [`accounts`]: [`Accounts`], the operations (sign-up, log-in, refresh, sessions,
//!   users), the session lifecycle.
//! - [`password`]: the password policy and argon2id on a bounded pool.
//! - [`tokens`]: signing keys and their rotation, access-token signing, refresh tokens.
//! - [`verify`]: verifying access tokens with the published keys only (no store), the
//!   module `chat_proto::verify` the gateway uses too.
//! - [`throttle`]: growing delays for log-ins and sign-ups, behind the [`Throttle`] trait
//!   (in memory, or in Redis shared by every replica).
//! - [`revocations`]: announcing ended sessions to the gateways ([`RevocationSink`]:
//!   Redis pub/sub, in-process, or nowhere); [`redis`]: the Redis connection.
//! - [`cli`]: the operator sub-commands of the `chat-accounts` binary.
//! - [`service`]: the gRPC implementation and the one error → status mapping.
//! - [`server`]: [`AccountsServer`] (gRPC + health + housekeeping), [`settings`]
//!   ([`Settings`], [`open_store`]), [`metrics`] (`chat_accounts_*`).

pub mod accounts;
pub mod cli;
pub mod error;
pub mod hex;
pub mod metrics;
pub mod names;
pub mod password;
pub mod redis;
pub mod revocations;
pub mod server;
pub mod service;
pub mod settings;
pub mod store;
pub mod throttle;
pub mod tokens;

pub use accounts::Accounts;
/// Verifying access tokens lives in `chat-proto`, shared with the gateway.
pub use chat_proto::verify;
pub use error::AccountsError;
pub use revocations::RevocationSink;
pub use server::AccountsServer;
pub use settings::{Settings, open_store};
pub use store::{AccountStore, StoreError};
pub use throttle::Throttle;
