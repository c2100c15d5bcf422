//! Online status: who is connected anywhere, and who is in which room on some gateway.
//!
//! One trait, one module per backend: [`memory`] (in-process, the single-machine
//! default) and [`redis`] (Redis strings with TTL and a few sets; any number of presence
//! replicas). Both pass the same behaviour suite (`tests/store_suite.rs`).
//!
//! Gateways report *transitions*: their first/last connection of a user, and the first
//! connection of a user in a room. A user's *online period* runs from the moment some
//! gateway holds them until none does; during it the store remembers every room told that
//! the user is online, and when the period ends each of those rooms is told once that the
//! user went offline (a `leave` tells nobody: the user is still online).
//!
//! Every gateway holds a lease that its heartbeats renew; a gateway that stops renewing
//! (killed) has everything it held released by [`sweep`]. The offline events that this
//! causes wait in the store until a live gateway claims them with [`take_exits`] and
//! acknowledges them with its next claim: a batch whose reply was lost is handed out
//! again (at least once), a batch claimed by a gateway that then died goes back to be
//! claimed by another.
//!
//! [`sweep`]: PresenceStore::sweep
//! [`take_exits`]: PresenceStore::take_exits

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

/// An offline event to announce: `user` went offline, and `room` had been told they
/// were online.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RoomExit {
    /// A room told during the user's online period that the user was online.
    pub room: RoomId,
    /// The user, to be announced offline in `room`.
    pub user: UserId,
}

/// Offline events claimed by one gateway ([`PresenceStore::take_exits`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExitBatch {
    /// Names this batch: the gateway passes it back as `ack` once it announced the
    /// exits. 0 when `exits` is empty (nothing to acknowledge).
    pub claim: u64,
    /// The events to announce.
    pub exits: Vec<RoomExit>,
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

    /// `gateway` closed its last connection of `user`. When no gateway holds the user any
    /// more (a transition to offline; the user is offline at once) returns the rooms told
    /// during this online period that the user was online, each to be told now that the
    /// user went offline; the store forgets them. Gateways whose lease expired do not
    /// count as holding anyone. Returns `None` while another gateway holds the user, and
    /// when `gateway` did not hold the user (a repeat, or it was swept meanwhile). Either
    /// way the disconnect is remembered for a `ttl()` (see [`heartbeat`](Self::heartbeat)).
    async fn disconnect(
        &self,
        gateway: &GatewayId,
        user: &UserId,
    ) -> Result<Option<Vec<RoomId>>, PresenceError>;

    /// A connection of `user` on `gateway` joined `room`. Returns true when `room` was not
    /// yet told, during the user's online period, that the user is online: the caller
    /// announces it, and the room is told when the period ends. A repeat (from any
    /// gateway, also after the user left the room and joined it again) returns false.
    /// A gateway enters rooms only for users it holds: one it has no record of is
    /// registered as by `connect` (its connect was lost), except a user `gateway`
    /// disconnected within the last `ttl()`, whose entry is stale (sent before that
    /// disconnect): then nothing changes and it returns false.
    async fn enter_room(
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
    /// bring the user back. Rooms are not restored this way: returns true when the store
    /// has no record of `gateway`'s previous *heartbeat* within `ttl()` (its first one,
    /// also right after `connect`, a lapsed lease, or the store lost its data), and the
    /// gateway must then repeat `enter_room` for what it holds (it is idempotent).
    async fn heartbeat(&self, gateway: &GatewayId, users: &[UserId])
    -> Result<bool, PresenceError>;

    /// One bounded step of releasing what gateways whose lease expired held: their users
    /// go offline unless another live gateway holds them, and the offline events of those
    /// who did (one per room told of their online period) are queued for
    /// [`take_exits`](Self::take_exits); exits such a gateway had claimed and not
    /// acknowledged are queued again. Returns true when it stopped early (call again).
    /// Safe to run concurrently from any number of presence replicas.
    async fn sweep(&self) -> Result<bool, PresenceError>;

    /// Claims offline events for `gateway` to announce. First acknowledges the batch
    /// named `ack` (the `claim` of the last batch the gateway announced; 0 for none) if
    /// it is the gateway's outstanding one. If a batch is still outstanding (its reply
    /// was lost, or the gateway restarted) it is returned again; otherwise up to `limit`
    /// queued events are claimed. An event whose user is online again by now is not
    /// returned: its room is added to the user's current period instead, so it is told
    /// when that one ends.
    async fn take_exits(
        &self,
        gateway: &GatewayId,
        ack: u64,
        limit: usize,
    ) -> Result<ExitBatch, PresenceError>;

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
