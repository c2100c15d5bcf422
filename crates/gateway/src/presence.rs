//! The gateway's side of presence: it counts its own connections per user and per
//! (room, user), and tells the presence service only about transitions (first/last
//! connection of a user, first connection of a user in a room), plus heartbeats listing
//! every user it holds ([`run_heartbeats`], one loop per gateway).
//!
//! Events (see `docs/protocol.md`): `online: true` when presence says a room was not yet
//! told of the user's online period ([`PresenceTracker::entered`]); `online: false` to
//! every room told, when the user's last connection anywhere closes
//! ([`PresenceTracker::disconnected`]) or when presence hands out the users of a dead
//! gateway ([`PresenceTracker::heartbeat`]). A `leave` tells nobody.
//!
//! Presence is best effort: when the presence service is down, chat goes on; a failed
//! report is logged and the next heartbeat restores the users' online status. A failed
//! `Detach` is remembered and retried after each successful heartbeat
//! ([`PresenceTracker::retry_detaches`]), so the rooms told `online` still hear `offline`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chat_metrics::GrpcMetrics;
use chat_model::{RoomId, UserId};
use chat_proto::auth::{AttachToken, InternalToken};
use chat_proto::presence::presence_client::PresenceClient as Grpc;
use chat_proto::presence::{
    HeartbeatRequest, QueryRequest, RoomRequest, TakeExitsRequest, UserRequest,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;

use crate::counts::RefCounts;
use crate::error::{Backend, GatewayError};
use crate::history::BackendChannel;
use crate::rooms::Hub;
use chat_runtime::grpc::Transport;

/// Deadline of one presence call on a connection's path (connect, join, leave).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Heartbeat interval until the presence service has told us its TTL.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);
/// The presence service hands back at most this many offline events per claim; a full
/// reply means more are waiting.
const MAX_EXITS_PER_CLAIM: usize = 10_000;
/// Users per `Heartbeat` call: 5,000 ids of at most 64 bytes are about 0.35 MB, far below
/// the 4 MiB gRPC message limit, and one call is a few milliseconds of Redis work.
pub const HEARTBEAT_CHUNK: usize = 5_000;
/// `EnterRoom` calls in flight when re-reporting every membership after a lost lease.
const REENTER_CONCURRENCY: usize = 64;
/// Longest wait before retrying a failed heartbeat (shorter when the heartbeat interval
/// is).
const HEARTBEAT_RETRY: Duration = Duration::from_secs(1);
/// Heartbeat interval while a dead gateway's exits are still being handed out.
const DRAIN_HEARTBEAT: Duration = Duration::from_millis(100);
/// Failed `Detach`es remembered for a retry. Past this many (presence down while a
/// crowd disconnects) more are only logged: those users' status still expires with the
/// TTL, and if presence stays down past the TTL its sweep releases them with events anyway.
const MAX_PENDING_DETACHES: usize = 100_000;

/// A failed presence call, for the client. Presence is best effort, so whatever the
/// status the client is told `unavailable` (and may ask again later).
fn unavailable(status: tonic::Status) -> GatewayError {
    GatewayError::unavailable_backend(Backend::Presence, &status)
}

/// One lock per user with transitions in progress (an entry lives while someone holds
/// or awaits it).
#[derive(Debug, Default)]
struct UserLocks {
    locks: std::sync::Mutex<HashMap<UserId, Arc<tokio::sync::Mutex<()>>>>,
}

/// Holds `user`'s lock; drops the map entry when nobody else wants it.
struct UserLock<'a> {
    locks: &'a UserLocks,
    user: UserId,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl UserLocks {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, Arc<tokio::sync::Mutex<()>>>> {
        self.locks.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn lock(&self, user: &UserId) -> UserLock<'_> {
        let lock = Arc::clone(self.map().entry(user.clone()).or_default());
        UserLock {
            locks: self,
            user: user.clone(),
            guard: Some(lock.lock_owned().await),
        }
    }
}

impl Drop for UserLock<'_> {
    fn drop(&mut self) {
        // Our guard holds a reference; waiters hold theirs (taken under the map lock).
        drop(self.guard.take());
        let mut map = self.locks.map();
        if map
            .get(&self.user)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            map.remove(&self.user);
        }
    }
}

/// The name under which this process holds its presence lease: `gateway_id`, cut to fit,
/// then `:` and 8 random hex digits (at most 64 bytes, the presence service's limit).
/// Per process, not per id: a gateway restarted under the same id (a container restarted
/// in its pod, named after the pod) must not take over its dead predecessor's record, or
/// presence would keep the dead process's users held, their period never ending and
/// their rooms never told `offline`. Under its own name the predecessor's lease lapses
/// and is swept as any killed gateway's.
fn lease_id(gateway_id: &str) -> String {
    const SUFFIX: usize = 9;
    let mut keep = gateway_id.len().min(64 - SUFFIX);
    while !gateway_id.is_char_boundary(keep) {
        keep -= 1;
    }
    let random = crate::settings::random_gateway_id();
    let hex = random.strip_prefix("gw-").unwrap_or(&random);
    format!("{}:{hex}", &gateway_id[..keep])
}

/// This gateway's presence bookkeeping and its client of the presence service.
#[derive(Debug)]
pub struct PresenceTracker {
    /// Every call carries the internal token and is counted and timed (`grpc_client_*`).
    grpc: Grpc<BackendChannel>,
    /// This process's name at the presence service ([`lease_id`]): the gateway id plus a
    /// per-process suffix.
    gateway_id: String,
    /// Open connections per user on this gateway.
    users: RefCounts<UserId>,
    /// `chat_gateway_online_users`: the users counted in `users`.
    online_users: Gauge,
    /// Connections per (room, user) on this gateway that joined the room.
    rooms: RefCounts<(RoomId, UserId)>,
    /// Transitions of one user are serialised (a quick disconnect-then-connect must not
    /// reach presence reversed), and only those: with presence hung, each call waits out
    /// its deadline, and a user must not wait behind other users' calls too.
    order: UserLocks,
    /// When the last heartbeat succeeded and the lease length it reported: a gap longer
    /// than the lease means presence may have swept this gateway.
    lease: std::sync::Mutex<Option<(std::time::Instant, Duration)>>,
    /// Whether the last heartbeat attempt succeeded and found the lease lapsed (so it
    /// re-established it, and the memberships were reported again).
    reestablished: AtomicBool,
    /// The claim of the last batch of offline events announced, acknowledged by the next
    /// `TakeExits` (0: none). A batch not acknowledged is handed out again.
    announced: std::sync::Mutex<u64>,
    /// Users whose last connection here closed while presence was unreachable: presence
    /// still counts them as held here, so their online period would never end and the
    /// rooms told `online` would never hear `offline`. Retried after each successful
    /// heartbeat; dropped when the user connects here again (presence is right again).
    undetached: std::sync::Mutex<HashSet<UserId>>,
}

/// Offline events of dead gateways' users to announce, and when to heartbeat next.
#[derive(Debug)]
pub struct Beat {
    pub next_in: Duration,
    /// (room, user): announce the user offline in the room, then
    /// [`PresenceTracker::announced`] with `claim`.
    pub expired: Vec<(RoomId, UserId)>,
    /// Names the batch `expired` came from (0: none).
    pub claim: u64,
    /// This gateway went a whole lease without a successful heartbeat, so presence may
    /// have swept it and announced its members' room exits: report the memberships again
    /// ([`PresenceTracker::reenter_rooms`]) and announce the ones that come back. Users
    /// come back by the heartbeat itself.
    pub lease_lost: bool,
    /// Presence had no record of this gateway's lease although its heartbeats succeeded
    /// (its first heartbeat, or Redis restarted empty between two): it forgot the room
    /// memberships without anyone being told they ended. Report them again so that
    /// later exits are announced, but announce nothing now: nobody left.
    pub forgotten: bool,
}

impl PresenceTracker {
    /// A tracker for gateway `gateway_id` reporting to the presence service through
    /// `transport` ([`crate::history::transport`]), recording every call in `grpc` and
    /// the number of distinct users connected here in `online_users`, and sending
    /// `token` (`CHAT_INTERNAL_TOKEN`) on every call.
    pub fn new(
        transport: Transport,
        gateway_id: &str,
        grpc: &GrpcMetrics,
        online_users: Gauge,
        token: Option<&InternalToken>,
    ) -> Self {
        Self {
            grpc: Grpc::new(InterceptedService::new(
                grpc.client_channel(transport),
                AttachToken::new(token),
            )),
            gateway_id: lease_id(gateway_id),
            users: RefCounts::default(),
            online_users,
            rooms: RefCounts::default(),
            order: UserLocks::default(),
            lease: std::sync::Mutex::new(None),
            reestablished: AtomicBool::new(false),
            announced: std::sync::Mutex::new(0),
            undetached: std::sync::Mutex::new(HashSet::new()),
        }
    }

    fn user_request(&self, user: &UserId) -> UserRequest {
        UserRequest {
            gateway: self.gateway_id.clone(),
            user: user.to_string(),
        }
    }

    fn room_request(&self, user: &UserId, room: &RoomId) -> RoomRequest {
        RoomRequest {
            gateway: self.gateway_id.clone(),
            user: user.to_string(),
            room: room.to_string(),
        }
    }

    /// A connection of `user` opened here.
    pub async fn connected(&self, user: &UserId) {
        let _order = self.order.lock(user).await;
        if !self.users.add(user) {
            return;
        }
        self.online_users.inc();
        // A detach that failed earlier is moot: presence holds the user here, rightly now.
        self.undetached().remove(user);
        if let Err(e) = self.grpc.clone().attach(self.user_request(user)).await {
            tracing::warn!(%user, error = %e.message(), "presence connect not reported");
        }
    }

    /// A connection of `user` closed here. Returns the rooms to tell that the user went
    /// offline: when this was their last connection anywhere, every room told during their
    /// online period; otherwise none.
    pub async fn disconnected(&self, user: &UserId) -> Vec<RoomId> {
        let _order = self.order.lock(user).await;
        if !self.users.remove(user) {
            return Vec::new();
        }
        self.online_users.dec();
        match self.grpc.clone().detach(self.user_request(user)).await {
            Ok(reply) => {
                let reply = reply.into_inner();
                if !reply.changed {
                    return Vec::new();
                }
                reply
                    .rooms
                    .iter()
                    .filter_map(|room| RoomId::parse(room).ok())
                    .collect()
            }
            Err(e) => {
                let mut undetached = self.undetached();
                if undetached.len() < MAX_PENDING_DETACHES {
                    undetached.insert(user.clone());
                    tracing::warn!(%user, error = %e.message(), "presence disconnect not reported; will retry");
                } else {
                    tracing::warn!(%user, error = %e.message(), "presence disconnect not reported; too many to retry");
                }
                Vec::new()
            }
        }
    }

    fn undetached(&self) -> std::sync::MutexGuard<'_, HashSet<UserId>> {
        self.undetached.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reports again the `Detach`es that failed, for users still without a connection
    /// here. Returns (room, user) to announce offline: the periods they ended. Stops at
    /// the first failure (presence is unreachable again; the rest wait for the next
    /// successful heartbeat). A retry after presence swept this gateway, or while
    /// another gateway holds the user, returns nothing: no duplicate.
    pub async fn retry_detaches(&self) -> Vec<(RoomId, UserId)> {
        let pending: Vec<UserId> = self.undetached().iter().cloned().collect();
        let mut offline = Vec::new();
        for user in pending {
            let _order = self.order.lock(&user).await;
            if self.users.contains(&user) || !self.undetached().contains(&user) {
                self.undetached().remove(&user);
                continue;
            }
            match self.grpc.clone().detach(self.user_request(&user)).await {
                Ok(reply) => {
                    self.undetached().remove(&user);
                    let reply = reply.into_inner();
                    if reply.changed {
                        offline.extend(
                            reply
                                .rooms
                                .iter()
                                .filter_map(|room| RoomId::parse(room).ok())
                                .map(|room| (room, user.clone())),
                        );
                    }
                }
                Err(e) => {
                    tracing::warn!(%user, error = %e.message(), "presence disconnect retry failed");
                    break;
                }
            }
        }
        offline
    }

    /// A connection of `user` joined `room`. True when the room was not yet told of the
    /// user's online period: announce it.
    pub async fn entered(&self, user: &UserId, room: &RoomId) -> bool {
        let _order = self.order.lock(user).await;
        if !self.rooms.add(&(room.clone(), user.clone())) {
            return false;
        }
        match self
            .grpc
            .clone()
            .enter_room(self.room_request(user, room))
            .await
        {
            Ok(reply) => reply.into_inner().changed,
            Err(e) => {
                tracing::warn!(%user, %room, error = %e.message(), "presence enter not reported");
                false
            }
        }
    }

    /// A connection of `user` left `room` (or closed). Only counted here: the user is
    /// still online, and the room is told when they go offline.
    pub async fn left(&self, user: &UserId, room: &RoomId) {
        let _order = self.order.lock(user).await;
        self.rooms.remove(&(room.clone(), user.clone()));
    }

    /// Whether each user is online anywhere.
    pub async fn query(&self, users: &[UserId]) -> Result<Vec<bool>, GatewayError> {
        let reply = self
            .grpc
            .clone()
            .query(QueryRequest {
                users: users.iter().map(ToString::to_string).collect(),
            })
            .await
            .map_err(unavailable)?
            .into_inner();
        if reply.online.len() != users.len() {
            return Err(GatewayError::Internal(
                "presence answered a different number of users".into(),
            ));
        }
        Ok(reply.online)
    }

    /// Renews this gateway's lease and its users' online status, in calls of at most
    /// [`HEARTBEAT_CHUNK`] users (the first tells whether the lease was lost), then
    /// acknowledges the last batch of offline events announced and claims the next.
    pub async fn heartbeat(&self) -> Result<Beat, GatewayError> {
        let users = self.users.keys();
        let sent_at = std::time::Instant::now();
        // Cleared first, so that a failed attempt leaves it false.
        let reestablished = self.reestablished.swap(false, Ordering::Relaxed);
        let mut first = None;
        let mut chunks = users.chunks(HEARTBEAT_CHUNK);
        // An empty gateway still renews its lease: one call without users.
        let mut next: Option<&[UserId]> = Some(chunks.next().unwrap_or(&[]));
        while let Some(chunk) = next {
            let reply = self
                .grpc
                .clone()
                .heartbeat(HeartbeatRequest {
                    gateway: self.gateway_id.clone(),
                    users: chunk.iter().map(ToString::to_string).collect(),
                })
                .await
                .map_err(unavailable)?
                .into_inner();
            first.get_or_insert(reply);
            next = chunks.next();
        }
        let Some(reply) = first else {
            return Err(GatewayError::Internal("no heartbeat sent".into()));
        };
        let ack = *self.announced.lock().unwrap_or_else(|p| p.into_inner());
        let exits = self
            .grpc
            .clone()
            .take_exits(TakeExitsRequest {
                gateway: self.gateway_id.clone(),
                ack,
            })
            .await
            .map_err(unavailable)?
            .into_inner();
        let expired = exits
            .exits
            .iter()
            .filter_map(|exit| {
                Some((
                    RoomId::parse(&exit.room).ok()?,
                    UserId::parse(&exit.user).ok()?,
                ))
            })
            .collect();
        let ttl = Duration::from_millis(reply.ttl_ms);
        let next_in = if exits.exits.len() >= MAX_EXITS_PER_CLAIM {
            DRAIN_HEARTBEAT
        } else {
            regular_interval(Some(ttl))
        };
        let lease_lost = {
            let mut lease = self.lease.lock().unwrap_or_else(|p| p.into_inner());
            let lapsed = lease.is_some_and(|(ok_at, ttl)| sent_at.duration_since(ok_at) >= ttl);
            *lease = Some((sent_at, ttl));
            // Our clock counts from when the previous heartbeat was sent. When that one
            // re-established a lapsed lease it may have been held up by the outage for
            // longer than the lease, and presence renewed the lease only when it arrived:
            // if presence still holds the lease now, the lapse is the one already
            // reported (and the memberships already reported again).
            lapsed && (!reestablished || reply.lease_lost)
        };
        self.reestablished.store(lease_lost, Ordering::Relaxed);
        // Our own clock only sees failed heartbeats. Presence also says when it lost track
        // of us although every heartbeat succeeded: Redis restarted empty between two of
        // them, so it forgot our room memberships and nobody would be told when those
        // members leave.
        Ok(Beat {
            next_in,
            expired,
            claim: exits.claim,
            lease_lost,
            forgotten: reply.lease_lost && !lease_lost,
        })
    }

    /// The batch `claim` ([`Beat::claim`]) was announced: the next heartbeat acknowledges
    /// it. Until then presence hands it out again.
    pub fn announced(&self, claim: u64) {
        if claim != 0 {
            *self.announced.lock().unwrap_or_else(|p| p.into_inner()) = claim;
        }
    }

    /// How long after a failed heartbeat to try again: soon, since the lease is a few
    /// heartbeats long, and within one regular heartbeat of the last lease presence
    /// reported, so that online status converges within one heartbeat once the link is
    /// back.
    pub fn retry_in(&self) -> Duration {
        let lease = *self.lease.lock().unwrap_or_else(|p| p.into_inner());
        regular_interval(lease.map(|(_, ttl)| ttl)).min(HEARTBEAT_RETRY)
    }

    /// Reports every room membership this gateway holds again, after a lost lease, with
    /// up to [`REENTER_CONCURRENCY`] calls in flight: one at a time, 100k memberships
    /// would take longer than the lease they are meant to restore.
    /// Returns the memberships that presence had released: announce them as entered.
    pub async fn reenter_rooms(&self) -> Vec<(RoomId, UserId)> {
        use futures_util::StreamExt as _;
        futures_util::stream::iter(self.rooms.keys())
            .map(|(room, user)| async move {
                let _order = self.order.lock(&user).await;
                if !self.rooms.contains(&(room.clone(), user.clone())) {
                    return None;
                }
                match self
                    .grpc
                    .clone()
                    .enter_room(self.room_request(&user, &room))
                    .await
                {
                    Ok(reply) if reply.get_ref().changed => Some((room, user)),
                    Ok(_) => None,
                    Err(e) => {
                        tracing::warn!(%user, %room, error = %e.message(), "presence re-enter failed");
                        None
                    }
                }
            })
            .buffer_unordered(REENTER_CONCURRENCY)
            .filter_map(std::future::ready)
            .collect()
            .await
    }
}

/// The heartbeat interval for a lease of `ttl`: a third of it ([`DEFAULT_HEARTBEAT`]
/// before presence has reported one, or when it reports none).
fn regular_interval(ttl: Option<Duration>) -> Duration {
    match ttl {
        Some(ttl) if !ttl.is_zero() => ttl / 3,
        _ => DEFAULT_HEARTBEAT,
    }
}

/// Renews this gateway's presence lease until shutdown, and announces the offline events
/// of dead gateways' users that the presence service hands out (acknowledged by the next
/// heartbeat, so a batch whose reply was lost is handed out again). Counts each lapse of
/// the lease it finds in `lapses`.
pub async fn run_heartbeats(
    presence: Arc<PresenceTracker>,
    hub: Hub,
    lapses: Counter,
    shutdown: CancellationToken,
) {
    let mut next = Duration::ZERO;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(next) => {}
        }
        match presence.heartbeat().await {
            Ok(beat) => {
                next = beat.next_in;
                for (room, user) in beat.expired {
                    hub.announce_presence(&room, &user, false).await;
                }
                presence.announced(beat.claim);
                // Presence answers again: report the disconnects it missed meanwhile.
                for (room, user) in presence.retry_detaches().await {
                    hub.announce_presence(&room, &user, false).await;
                }
                if beat.lease_lost {
                    lapses.inc();
                    tracing::warn!("presence lease lapsed; reporting room memberships again");
                    for (room, user) in presence.reenter_rooms().await {
                        hub.announce_presence(&room, &user, true).await;
                    }
                } else if beat.forgotten {
                    // Also on the first heartbeat (presence had never seen one from us),
                    // when there is usually nothing to report.
                    tracing::info!(
                        "presence had no record of this gateway; reporting room memberships again"
                    );
                    // Silently: the members never left, so an `online` event would be
                    // news to nobody (and a storm after a Redis restart).
                    let _ = presence.reenter_rooms().await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "presence heartbeat failed; retrying");
                next = presence.retry_in();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::lease_id;

    #[test]
    fn lease_ids_are_per_process_and_fit() {
        let (a, b) = (lease_id("gw-1"), lease_id("gw-1"));
        assert_ne!(a, b, "a restart under the same id gets another lease");
        assert!(
            a.starts_with("gw-1:") && a.len() == "gw-1:".len() + 8,
            "{a}"
        );
        let long = "p".repeat(64);
        let id = lease_id(&long);
        assert_eq!(id.len(), 64);
        assert!(chat_presence_id_ok(&id), "{id}");
    }

    #[tokio::test]
    async fn user_locks_serialise_one_user_and_are_forgotten() {
        use chat_model::UserId;
        let locks = super::UserLocks::default();
        let (alice, bob) = (
            UserId::parse("alice").expect("id"),
            UserId::parse("bob").expect("id"),
        );
        let held = locks.lock(&alice).await;
        // Another user is not held up.
        let other = locks.lock(&bob).await;
        drop(other);
        // The same user waits.
        let mut waiter = Box::pin(locks.lock(&alice));
        assert!(futures_util::poll!(waiter.as_mut()).is_pending());
        drop(held);
        assert!(locks.map().contains_key(&alice), "kept for the waiter");
        drop(waiter.await);
        assert!(
            locks.map().is_empty(),
            "nothing left once nobody holds a lock"
        );
    }

    fn chat_presence_id_ok(id: &str) -> bool {
        id.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
    }
}
