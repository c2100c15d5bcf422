//! In-process presence: the single-machine default. The same model as the Redis backend
//! (see [`super::redis`]), kept in maps behind one mutex: a per-user online deadline (the
//! user key's TTL), the gateways holding each user, the rooms told of each user's online
//! period, per gateway its lease deadline and users, and the queued and claimed offline
//! events. Expiry is by deadlines compared on read and in
//! [`sweep`](PresenceStore::sweep), on [`tokio::time::Instant`] so that tests may pause
//! time.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chat_model::{RoomId, UserId};
use tokio::time::Instant;

use super::{ExitBatch, GatewayId, PresenceError, PresenceStats, PresenceStore, RoomExit};

/// Users and exits one [`PresenceStore::sweep`] call touches about, as in Redis.
const SWEEP_BUDGET: usize = 1000;

/// Presence for one process (every gateway of it shares the store).
#[derive(Debug)]
pub struct MemoryPresence {
    /// The lease length of gateways and users.
    ttl: Duration,
    /// Everything, under one lock: every operation is a few map updates, never I/O.
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When each user goes offline unless refreshed (Redis: `presence:user:<uid>`).
    online_until: HashMap<UserId, Instant>,
    /// The gateways holding a connection of each user (`presence:user:<uid>:gws`).
    holders: HashMap<UserId, HashSet<Arc<str>>>,
    /// Rooms told during each user's online period (`presence:user:<uid>:rooms`).
    told: HashMap<UserId, HashSet<RoomId>>,
    /// Every gateway with a lease (`presence:gateways`, `presence:gw:<gw>:users`).
    gateways: HashMap<Arc<str>, Gateway>,
    /// Per gateway, users it disconnected within the last ttl, and when
    /// (`presence:gw:<gw>:left`): kept apart from the lease, like the Redis key, so a
    /// disconnect after the gateway was swept is remembered too.
    left: HashMap<Arc<str>, HashMap<UserId, Instant>>,
    /// Per gateway, until when its last heartbeat counts (`presence:gw:<gw>:beat`): only
    /// heartbeats set it, so a lease started by `connect` does not hide a first heartbeat.
    beats: HashMap<Arc<str>, Instant>,
    /// Offline events of swept users, not yet claimed (`presence:exits`).
    exits: HashSet<RoomExit>,
    /// Per gateway, its unacknowledged batch (`presence:gw:<gw>:claim` and `:claimed`).
    claimed: HashMap<Arc<str>, ExitBatch>,
    /// The last claim handed out: claims only increase.
    last_claim: u64,
}

#[derive(Debug)]
struct Gateway {
    /// The lease ends here; after it the gateway counts as dead and is swept.
    deadline: Instant,
    /// Users it holds, to release them when it dies.
    users: HashSet<UserId>,
}

impl MemoryPresence {
    /// An empty store whose users and gateways expire `ttl` after their last renewal.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the maps consistent before anything can panic, so
        // a poisoned lock still holds usable state.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl State {
    /// Starts or renews `gw`'s lease.
    fn renew_lease(&mut self, gw: &str, now: Instant, ttl: Duration) -> &mut Gateway {
        let gateway = self.gateways.entry(gw.into()).or_insert_with(|| Gateway {
            deadline: now,
            users: HashSet::new(),
        });
        gateway.deadline = now + ttl;
        gateway
    }

    /// Whether a gateway with a valid lease holds `user`.
    fn held_live(&self, user: &UserId, now: Instant) -> bool {
        self.holders.get(user).is_some_and(|gws| {
            gws.iter()
                .any(|gw| self.gateways.get(gw).is_some_and(|g| g.deadline >= now))
        })
    }

    /// Removes `gw` from `user`'s holders; returns whether it was one.
    fn drop_holder(&mut self, user: &UserId, gw: &str) -> bool {
        let Some(gws) = self.holders.get_mut(user) else {
            return false;
        };
        let removed = gws.remove(gw);
        if gws.is_empty() {
            self.holders.remove(user);
        }
        removed
    }

    /// `user` went offline: forgets the status and returns the rooms told of the period.
    fn go_offline(&mut self, user: &UserId) -> Vec<RoomId> {
        self.online_until.remove(user);
        self.told
            .remove(user)
            .map(|rooms| rooms.into_iter().collect())
            .unwrap_or_default()
    }

    fn is_online(&self, user: &UserId, now: Instant) -> bool {
        self.online_until.get(user).is_some_and(|&t| t > now)
    }

    /// Users `gw` disconnected within the last ttl (expired entries dropped).
    fn recently_left(
        &mut self,
        gw: &str,
        now: Instant,
        ttl: Duration,
    ) -> &mut HashMap<UserId, Instant> {
        let left = self.left.entry(gw.into()).or_default();
        left.retain(|_, at| *at + ttl >= now);
        left
    }
}

#[async_trait]
impl PresenceStore for MemoryPresence {
    fn ttl(&self) -> Duration {
        self.ttl
    }

    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn connect(&self, gateway: &GatewayId, user: &UserId) -> Result<bool, PresenceError> {
        let now = Instant::now();
        let mut st = self.lock();
        st.renew_lease(gateway, now, self.ttl)
            .users
            .insert(user.clone());
        if let Some(left) = st.left.get_mut(gateway) {
            left.remove(user);
        }
        st.holders
            .entry(user.clone())
            .or_default()
            .insert(gateway.into());
        let was_online = st.is_online(user, now);
        st.online_until.insert(user.clone(), now + self.ttl);
        Ok(!was_online)
    }

    async fn disconnect(
        &self,
        gateway: &GatewayId,
        user: &UserId,
    ) -> Result<Option<Vec<RoomId>>, PresenceError> {
        let now = Instant::now();
        let mut st = self.lock();
        if let Some(gw) = st.gateways.get_mut(gateway) {
            gw.users.remove(user);
        }
        // Remembered whether or not the gateway still has a lease, as in Redis.
        st.left
            .entry(gateway.into())
            .or_default()
            .insert(user.clone(), now);
        if !st.drop_holder(user, gateway) || st.held_live(user, now) {
            return Ok(None);
        }
        Ok(Some(st.go_offline(user)))
    }

    async fn enter_room(
        &self,
        gateway: &GatewayId,
        user: &UserId,
        room: &RoomId,
    ) -> Result<bool, PresenceError> {
        let now = Instant::now();
        let ttl = self.ttl;
        let mut st = self.lock();
        let held = st
            .gateways
            .get(gateway)
            .is_some_and(|gw| gw.users.contains(user));
        if !held {
            // Its connect was lost: register the user as connect would (else the room is
            // told `online` and never `offline`), unless gw disconnected them within the
            // last ttl (this entry was sent before that): stale, ignored. As in Redis.
            if st.recently_left(gateway, now, ttl).contains_key(user) {
                return Ok(false);
            }
            st.renew_lease(gateway, now, ttl).users.insert(user.clone());
            st.holders
                .entry(user.clone())
                .or_default()
                .insert(gateway.into());
            st.online_until.insert(user.clone(), now + ttl);
        }
        Ok(st
            .told
            .entry(user.clone())
            .or_default()
            .insert(room.clone()))
    }

    async fn heartbeat(
        &self,
        gateway: &GatewayId,
        users: &[UserId],
    ) -> Result<bool, PresenceError> {
        let now = Instant::now();
        let ttl = self.ttl;
        let mut st = self.lock();
        // Only a heartbeat within the last ttl counts: a lease started by connect does
        // not say that room memberships were reported.
        let lost = st.beats.get(gateway).is_none_or(|&until| until < now);
        st.beats.insert(gateway.into(), now + ttl);
        st.renew_lease(gateway, now, ttl);
        let left = std::mem::take(st.recently_left(gateway, now, ttl));
        let State {
            online_until,
            holders,
            gateways,
            ..
        } = &mut *st;
        let Some(gw) = gateways.get_mut(gateway) else {
            return Err(PresenceError::Internal("lease vanished".into()));
        };
        for user in users {
            if !gw.users.contains(user) {
                if left.contains_key(user) {
                    // Disconnected within the last ttl: this heartbeat may have been sent
                    // before that, and must not bring the user back.
                    continue;
                }
                // Held but unknown here (a lost connect, or swept after a silence).
                gw.users.insert(user.clone());
                holders
                    .entry(user.clone())
                    .or_default()
                    .insert(gateway.into());
            }
            online_until.insert(user.clone(), now + ttl);
        }
        st.left.insert(gateway.into(), left);
        Ok(lost)
    }

    async fn sweep(&self) -> Result<bool, PresenceError> {
        let now = Instant::now();
        let ttl = self.ttl;
        let mut st = self.lock();
        // Per-gateway memories that expire in Redis by themselves: the disconnects of a
        // gateway swept before it reported them, the heartbeat markers of dead gateways.
        st.left.retain(|_, left| {
            left.retain(|_, at| *at + ttl >= now);
            !left.is_empty()
        });
        st.beats.retain(|_, until| *until >= now);
        let mut budget = SWEEP_BUDGET;
        while budget > 0 {
            let Some(id) = st
                .gateways
                .iter()
                .find(|(_, gw)| gw.deadline < now)
                .map(|(id, _)| Arc::clone(id))
            else {
                return Ok(false);
            };
            if let Some(batch) = st.claimed.remove(&id) {
                budget = budget.saturating_sub(batch.exits.len());
                st.exits.extend(batch.exits);
            }
            let users: Vec<UserId> = match st.gateways.get_mut(&id) {
                Some(gw) => {
                    let take: Vec<UserId> = gw.users.iter().take(budget.max(1)).cloned().collect();
                    for user in &take {
                        gw.users.remove(user);
                    }
                    take
                }
                None => Vec::new(),
            };
            budget = budget.saturating_sub(users.len());
            for user in users {
                st.drop_holder(&user, &id);
                if !st.held_live(&user, now) {
                    let rooms = st.go_offline(&user);
                    budget = budget.saturating_sub(rooms.len());
                    st.exits.extend(rooms.into_iter().map(|room| RoomExit {
                        room,
                        user: user.clone(),
                    }));
                }
            }
            if st.gateways.get(&id).is_some_and(|gw| gw.users.is_empty()) {
                // Fully released: forget the gateway (its next heartbeat, if it was alive
                // after all, registers its users again).
                st.gateways.remove(&id);
                st.left.remove(&id);
            }
        }
        Ok(true)
    }

    async fn take_exits(
        &self,
        gateway: &GatewayId,
        ack: u64,
        limit: usize,
    ) -> Result<ExitBatch, PresenceError> {
        let now = Instant::now();
        let mut st = self.lock();
        if st.claimed.get(gateway).is_some_and(|b| b.claim == ack) {
            st.claimed.remove(gateway);
        }
        if let Some(batch) = st.claimed.get(gateway) {
            // Not acknowledged: its reply was lost, or the gateway restarted.
            return Ok(batch.clone());
        }
        let popped: Vec<RoomExit> = st.exits.iter().take(limit).cloned().collect();
        let mut exits = Vec::new();
        for exit in popped {
            st.exits.remove(&exit);
            if st.is_online(&exit.user, now) {
                // Online again before this was announced: told when the new period ends.
                st.told.entry(exit.user).or_default().insert(exit.room);
            } else {
                exits.push(exit);
            }
        }
        if exits.is_empty() {
            return Ok(ExitBatch::default());
        }
        st.last_claim += 1;
        let batch = ExitBatch {
            claim: st.last_claim,
            exits,
        };
        st.claimed.insert(gateway.into(), batch.clone());
        Ok(batch)
    }

    async fn online(&self, users: &[UserId]) -> Result<Vec<bool>, PresenceError> {
        let now = Instant::now();
        let mut st = self.lock();
        Ok(users
            .iter()
            .map(|user| match st.online_until.get(user) {
                Some(&until) if until > now => true,
                Some(_) => {
                    // Expired: forget it, as Redis forgets an expired key.
                    st.online_until.remove(user);
                    false
                }
                None => false,
            })
            .collect())
    }

    async fn stats(&self) -> Result<PresenceStats, PresenceError> {
        let now = Instant::now();
        let st = self.lock();
        let live = st.gateways.values().filter(|gw| gw.deadline >= now);
        let (gateways, users) = live.fold((0, 0), |(g, u), gw| (g + 1, u + gw.users.len() as u64));
        Ok(PresenceStats { gateways, users })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_testkit::process::eventually;

    /// Nothing of a swept gateway stays in memory once its entries are a ttl old, also a
    /// disconnect it reported after its sweep (as the Redis keys expire).
    #[tokio::test]
    async fn nothing_of_a_swept_gateway_outlives_the_ttl() {
        let ttl = Duration::from_millis(100);
        let store = MemoryPresence::new(ttl);
        let alice = UserId::parse("alice").expect("user id");
        store.connect("gw1", &alice).await.expect("connect");
        store.heartbeat("gw1", &[]).await.expect("heartbeat");
        eventually(ttl * 20, "gw1 swept", || async {
            while store.sweep().await.expect("sweep") {}
            store.lock().gateways.is_empty().then_some(())
        })
        .await
        .expect("swept");
        assert!(
            store
                .disconnect("gw1", &alice)
                .await
                .expect("late")
                .is_none()
        );
        let gone = eventually(ttl * 20, "gw1 forgotten", || async {
            while store.sweep().await.expect("sweep") {}
            let st = store.lock();
            (st.left.is_empty() && st.beats.is_empty()).then_some(())
        })
        .await;
        let st = store.lock();
        assert!(gone.is_ok(), "left {:?}, beats {:?}", st.left, st.beats);
        assert!(st.gateways.is_empty() && st.holders.is_empty() && st.told.is_empty());
    }
}
