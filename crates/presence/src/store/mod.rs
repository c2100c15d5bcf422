//! Online status: who is connected anywhere, and who is in which room on some gateway.
//!
//! One trait, one module per backend: [`memory`] (in-process, the single-machine
//! default) and [`redis`] (Redis strings with TTL and a few sets; any number of presence
//! replicas). Both pass the same behaviour suite (`tests/store_suite.rs`).
//!
//! Gateways report *transitions*: their first/last connection of a user, their first/last
//! connection of a user in a room. Every gateway holds a lease that its heartbeats renew;
//! a gateway that stops renewing (killed) has everything it held released by [`sweep`],
//! exactly once across all presence replicas.
//!
//! [`sweep`]: PresenceStore::sweep

use std::time::Duration;

use async_trait::async_trait;
use chat_model::{IdError, RoomId, UserId};

pub mod memory;
pub mod redis;

/// A gateway instance id, as sent in `hello`. Valid ids pass [`check_gateway_id`].
pub type GatewayId = str;

/// Longest gateway id, in bytes.
pub const GATEWAY_ID_MAX: usize = 64;

/// Validates a gateway id: 1 to [`GATEWAY_ID_MAX`] characters of `[A-Za-z0-9_.:-]`
/// (room-id characters; `gw-1a2b3c4d`, host and pod names fit). Stores take any string,
/// the gRPC service refuses others; a gateway may check its own id at start-up.
pub fn check_gateway_id(id: &str) -> Result<(), IdError> {
    if id.is_empty() || id.len() > GATEWAY_ID_MAX {
        return Err(IdError::Length {
            what: "gateway id",
            max: GATEWAY_ID_MAX,
        });
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-');
    if !id.bytes().all(allowed) {
        return Err(IdError::Charset {
            what: "gateway id",
            allowed: "[A-Za-z0-9_.:-]",
        });
    }
    Ok(())
}

/// A user who left a room because their gateway's lease expired.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RoomExit {
    /// The room the user is in on no gateway any more.
    pub room: RoomId,
    /// The user, to be announced offline in `room`.
    pub user: UserId,
}

/// Gauges of a store, for monitoring ([`PresenceStore::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PresenceStats {
    /// Gateways whose lease is live.
    pub gateways: u64,
    /// Users held by live gateways, a user once per gateway holding them: the number of
    /// distinct online users, unless some users are connected through several gateways
    /// at once (then an upper bound).
    pub users: u64,
}

/// Why the store could not serve a request.
#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    /// The backend is unreachable or timed out; retry.
    #[error("presence store unavailable: {0}")]
    Unavailable(String),
    /// Unexpected data or failure.
    #[error("presence store failure: {0}")]
    Internal(String),
}

/// The contract every backend keeps. `ttl` is the store's lease length, fixed when it is
/// built (`CHAT_PRESENCE_TTL_SECS`).
#[async_trait]
pub trait PresenceStore: Send + Sync + std::fmt::Debug + 'static {
    /// The lease length: a user or gateway not renewed for this long is gone.
    fn ttl(&self) -> Duration;

    /// A short name of the backend (`memory`, `redis`), the `backend` label of the store
    /// metrics.
    fn backend(&self) -> &'static str {
        "other"
    }

    /// `gateway` holds its first connection of `user`; the user is online now, and the
    /// gateway's lease starts or is renewed. Returns true when the user was offline
    /// everywhere before (a transition to online); a repeat returns false.
    async fn connect(&self, gateway: &GatewayId, user: &UserId) -> Result<bool, PresenceError>;

    /// `gateway` closed its last connection of `user`. Returns true when no gateway holds
    /// the user any more (a transition to offline); the user is offline at once. Gateways
    /// whose lease expired do not count as holding anyone. Returns false when `gateway`
    /// did not hold the user (a repeat).
    async fn disconnect(&self, gateway: &GatewayId, user: &UserId) -> Result<bool, PresenceError>;

    /// `gateway`'s first connection of `user` joined `room`. Returns true when the user
    /// was in the room on no gateway before. Repeating the call changes nothing. Starts or
    /// renews the gateway's lease, so that the membership ends if the gateway dies.
    async fn enter_room(
        &self,
        gateway: &GatewayId,
        user: &UserId,
        room: &RoomId,
    ) -> Result<bool, PresenceError>;

    /// `gateway`'s last connection of `user` left `room`. Returns true when the user is in
    /// the room on no gateway any more. Repeating the call changes nothing.
    async fn leave_room(
        &self,
        gateway: &GatewayId,
        user: &UserId,
        room: &RoomId,
    ) -> Result<bool, PresenceError>;

    /// Renews `gateway`'s lease and keeps every user in `users` online for another
    /// `ttl()`. A gateway must heartbeat at least every `ttl() / 3`, including when it
    /// holds no users.
    ///
    /// A user named that is not registered on `gateway` is registered as by `connect`
    /// (its connect was lost, Redis lost its data, or the gateway was swept as dead after
    /// a silence of `ttl()`), except a user `gateway` disconnected within the last
    /// `ttl()`: this heartbeat may have been sent before that disconnect, and must not
    /// bring the user back. Room memberships are not restored this way: returns true when
    /// the store has no record of `gateway`'s previous heartbeat within `ttl()` (its
    /// first one, a lapsed lease, or the store lost its data), and the gateway must then
    /// repeat `enter_room` for what it holds (it is idempotent).
    async fn heartbeat(&self, gateway: &GatewayId, users: &[UserId])
    -> Result<bool, PresenceError>;

    /// Releases what gateways whose lease expired held: their users go offline unless
    /// another gateway holds them, their room memberships end. Returns at most `limit`
    /// room exits that ended everywhere (the caller announces them); call again while it
    /// returns `limit`. Each exit is returned once, across concurrent callers (and
    /// presence replicas). Work per call is bounded, so a huge dead gateway may take
    /// several calls.
    async fn sweep(&self, limit: usize) -> Result<Vec<RoomExit>, PresenceError>;

    /// Whether each user is online, in the order asked.
    async fn online(&self, users: &[UserId]) -> Result<Vec<bool>, PresenceError>;

    /// Live gateways and the users they hold (see [`PresenceStats`]). Costs O(gateways),
    /// never a scan of user keys, so it may be sampled every few seconds.
    async fn stats(&self) -> Result<PresenceStats, PresenceError>;

    /// Whether the backend answers; the gRPC health status follows it. The default asks
    /// [`online`](Self::online) for nobody, which is right for in-process backends only.
    async fn ping(&self) -> Result<(), PresenceError> {
        self.online(&[]).await.map(drop)
    }
}
