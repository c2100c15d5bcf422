//! In-process presence: the single-machine default. The same model as the Redis backend
//! (see [`super::redis`]), kept in maps behind one mutex: a per-user online deadline (the
//! user key's TTL), the gateways holding each user, per-room counts, and per gateway its
//! lease deadline and what it holds. Expiry is by deadlines compared on read and in
//! [`sweep`](PresenceStore::sweep), on [`tokio::time::Instant`] so that tests may pause
//! time.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chat_model::{RoomId, UserId};
use tokio::time::Instant;

use super::{GatewayId, PresenceError, PresenceStats, PresenceStore, RoomExit};

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
    /// Per room, on how many gateways each user is in it (`presence:room:<room>`).
    rooms: HashMap<RoomId, HashMap<UserId, u32>>,
    /// Every gateway with a lease (`presence:gateways` and `presence:gw:<gw>:*`).
    gateways: HashMap<Arc<str>, Gateway>,
}

#[derive(Debug)]
struct Gateway {
    /// The lease ends here; after it the gateway counts as dead and is swept.
    deadline: Instant,
    /// Users it holds, to release them when it dies.
    users: HashSet<UserId>,
    /// Room memberships it holds, to end them when it dies.
    rooms: HashSet<RoomExit>,
    /// Users it disconnected within the last ttl, and when: a heartbeat naming one of
    /// them may have been sent before the disconnect, so it does not re-register them.
    left: HashMap<UserId, Instant>,
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

/// Starts or renews `gw`'s lease.
fn renew_lease<'a>(
    gateways: &'a mut HashMap<Arc<str>, Gateway>,
    gw: &str,
    now: Instant,
    ttl: Duration,
) -> &'a mut Gateway {
    let gateway = gateways.entry(gw.into()).or_insert_with(|| Gateway {
        deadline: now,
        users: HashSet::new(),
        rooms: HashSet::new(),
        left: HashMap::new(),
    });
    gateway.deadline = now + ttl;
    gateway
}

impl State {
    fn renew_lease(&mut self, gw: &str, now: Instant, ttl: Duration) -> &mut Gateway {
        renew_lease(&mut self.gateways, gw, now, ttl)
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

    /// Counts one gateway less for `exit`; returns whether no gateway has it any more.
    fn leave(&mut self, exit: &RoomExit) -> bool {
        let Some(members) = self.rooms.get_mut(&exit.room) else {
            return true;
        };
        let gone = match members.get_mut(&exit.user) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            _ => {
                members.remove(&exit.user);
                true
            }
        };
        if members.is_empty() {
            self.rooms.remove(&exit.room);
        }
        gone
    }

    fn set_online(&mut self, user: &UserId, now: Instant, ttl: Duration) {
        self.online_until.insert(user.clone(), now + ttl);
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
        let gw = st.renew_lease(gateway, now, self.ttl);
        gw.left.remove(user);
        gw.users.insert(user.clone());
        st.holders
            .entry(user.clone())
            .or_default()
            .insert(gateway.into());
        let was_online = st.online_until.get(user).is_some_and(|&t| t > now);
        st.set_online(user, now, self.ttl);
        Ok(!was_online)
    }

    async fn disconnect(&self, gateway: &GatewayId, user: &UserId) -> Result<bool, PresenceError> {
        let now = Instant::now();
        let mut st = self.lock();
        if let Some(gw) = st.gateways.get_mut(gateway) {
            gw.users.remove(user);
            gw.left.insert(user.clone(), now);
        }
        if !st.drop_holder(user, gateway) || st.held_live(user, now) {
            return Ok(false);
        }
        st.online_until.remove(user);
        Ok(true)
    }

    async fn enter_room(
        &self,
        gateway: &GatewayId,
        user: &UserId,
        room: &RoomId,
    ) -> Result<bool, PresenceError> {
        let now = Instant::now();
        let mut st = self.lock();
        let entry = RoomExit {
            room: room.clone(),
            user: user.clone(),
        };
        if !st.renew_lease(gateway, now, self.ttl).rooms.insert(entry) {
            return Ok(false);
        }
        let n = st
            .rooms
            .entry(room.clone())
            .or_default()
            .entry(user.clone())
            .or_insert(0);
        *n += 1;
        Ok(*n == 1)
    }

    async fn leave_room(
        &self,
        gateway: &GatewayId,
        user: &UserId,
        room: &RoomId,
    ) -> Result<bool, PresenceError> {
        let mut st = self.lock();
        let entry = RoomExit {
            room: room.clone(),
            user: user.clone(),
        };
        let held = st
            .gateways
            .get_mut(gateway)
            .is_some_and(|gw| gw.rooms.remove(&entry));
        Ok(held && st.leave(&entry))
    }

    async fn heartbeat(
        &self,
        gateway: &GatewayId,
        users: &[UserId],
    ) -> Result<bool, PresenceError> {
        let now = Instant::now();
        let ttl = self.ttl;
        let mut guard = self.lock();
        let State {
            online_until,
            holders,
            gateways,
            ..
        } = &mut *guard;
        // This store loses nothing while it runs: only an unknown or lapsed lease means
        // the gateway's room memberships may be gone.
        let lost = gateways.get(gateway).is_none_or(|gw| gw.deadline < now);
        let gw = renew_lease(gateways, gateway, now, ttl);
        gw.left.retain(|_, at| *at + ttl >= now);
        for user in users {
            if !gw.users.contains(user) {
                if gw.left.contains_key(user) {
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
        Ok(lost)
    }

    async fn sweep(&self, limit: usize) -> Result<Vec<RoomExit>, PresenceError> {
        let now = Instant::now();
        let mut st = self.lock();
        let mut exits = Vec::new();
        while exits.len() < limit {
            let Some(id) = st
                .gateways
                .iter()
                .find(|(_, gw)| gw.deadline < now)
                .map(|(id, _)| Arc::clone(id))
            else {
                break;
            };
            let Some(mut gw) = st.gateways.remove(&id) else {
                break;
            };
            while exits.len() < limit {
                let Some(entry) = gw.rooms.iter().next().cloned() else {
                    break;
                };
                gw.rooms.remove(&entry);
                if st.leave(&entry) {
                    exits.push(entry);
                }
            }
            for user in std::mem::take(&mut gw.users) {
                st.drop_holder(&user, &id);
                if !st.held_live(&user, now) {
                    st.online_until.remove(&user);
                }
            }
            if !gw.rooms.is_empty() {
                // The limit was reached; the rest is released by the next call.
                st.gateways.insert(id, gw);
            }
        }
        Ok(exits)
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
