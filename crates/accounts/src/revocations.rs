//! Announcing ended sessions to the gateways, so they close those sessions' WebSockets
//! and refuse their access tokens at once instead of when the tokens expire.
//!
//! [`Accounts`](crate::Accounts) publishes one [`Revocation`] after the store has ended
//! the sessions (log-out, log-out everywhere, password change or reset, deletion,
//! disabling, a reused refresh token). A failed publish never fails the call: the
//! sessions are ended in the store already, and their access tokens expire within
//! minutes; it is logged and counted (`chat_accounts_revocations_total{result}`).
//!
//! - [`RedisRevocations`]: `PUBLISH` of [`Revocation::to_json`] on
//!   [`REVOCATION_CHANNEL`] (classic pub/sub, also on a Redis Cluster, where it reaches
//!   subscribers on every node); what `chat-accounts` uses when `CHAT_REDIS_URL` is set.
//! - [`LocalRevocations`]: a [`tokio::sync::broadcast`] sender, for the all-in-one,
//!   whose gateway holds a receiver.
//! - [`NoRevocations`]: nobody to tell (a single accounts process without Redis); logs
//!   at debug.

use std::fmt;

use async_trait::async_trait;
use chat_model::revocation::{REVOCATION_CHANNEL, Revocation};
use fred::clients::Client;
use fred::interfaces::PubsubInterface;
use tokio::sync::broadcast;

/// Why a revocation could not be published (Redis unreachable, mostly).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("publishing a revocation failed: {0}")]
pub struct PublishError(pub String);

/// Where ended sessions are announced.
#[async_trait]
pub trait RevocationSink: Send + Sync + fmt::Debug + 'static {
    /// A short name of the backend (`redis`, `local`, `none`), for the start-up log.
    fn backend(&self) -> &'static str;

    /// Announces `revocation`. An error means that gateways may not have heard of it.
    async fn publish(&self, revocation: &Revocation) -> Result<(), PublishError>;
}

/// In-process revocations: the all-in-one creates a broadcast channel, gives the sender
/// to accounts (through this) and a receiver to its gateway.
#[derive(Debug, Clone)]
pub struct LocalRevocations {
    sender: broadcast::Sender<Revocation>,
}

impl LocalRevocations {
    /// Publishes on `sender`.
    pub fn new(sender: broadcast::Sender<Revocation>) -> Self {
        Self { sender }
    }
}

#[async_trait]
impl RevocationSink for LocalRevocations {
    fn backend(&self) -> &'static str {
        "local"
    }

    async fn publish(&self, revocation: &Revocation) -> Result<(), PublishError> {
        // No receiver means no gateway holds a connection to close: nothing is lost.
        if self.sender.send(revocation.clone()).is_err() {
            tracing::debug!(user = %revocation.user, "revocation: no local receiver");
        }
        Ok(())
    }
}

/// Revocations through Redis pub/sub: every gateway subscribed to
/// [`REVOCATION_CHANNEL`] receives them.
#[derive(Clone)]
pub struct RedisRevocations {
    client: Client,
}

impl fmt::Debug for RedisRevocations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRevocations").finish_non_exhaustive()
    }
}

impl RedisRevocations {
    /// Publishes through `client` (see [`crate::redis::connect`]; the throttle may share
    /// it).
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl RevocationSink for RedisRevocations {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn publish(&self, revocation: &Revocation) -> Result<(), PublishError> {
        let _receivers: i64 = self
            .client
            .publish(REVOCATION_CHANNEL, revocation.to_json())
            .await
            .map_err(|e| PublishError(e.to_string()))?;
        Ok(())
    }
}

/// No one to tell: ended sessions' access tokens stay valid at gateways until they
/// expire (at most `CHAT_ACCESS_TOKEN_TTL_SECS`).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRevocations;

#[async_trait]
impl RevocationSink for NoRevocations {
    fn backend(&self) -> &'static str {
        "none"
    }

    async fn publish(&self, revocation: &Revocation) -> Result<(), PublishError> {
        tracing::debug!(
            user = %revocation.user,
            sessions = revocation.sessions.len(),
            reason = ?revocation.reason,
            "revocation not published (no CHAT_REDIS_URL)"
        );
        Ok(())
    }
}
