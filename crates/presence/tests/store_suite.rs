//! The behaviour every `PresenceStore` backend must show, run against each of them by
//! `chat_testkit::backend_suite!`: `memory::*` in process, `redis::*` on a private
//! `redis-server` per test, `redis_cluster::*` on a private 3-master Redis Cluster per
//! test (64 buckets over 3 shards).
//!
//! Leases are short ([`TTL`]) so that expiry is seen quickly; gateways heartbeat every
//! ttl / 3 as in production. Waits poll with deadlines; the only sleeps are the heartbeat
//! cadence itself.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_model::{RoomId, UserId};
use chat_presence::store::memory::MemoryPresence;
use chat_presence::store::redis::RedisPresence;
use chat_presence::{PresenceStats, PresenceStore, RoomExit};
use chat_testkit::process::eventually;
use chat_testkit::redis::RedisServer;
use chat_testkit::redis_cluster::RedisCluster;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The lease in these tests.
const TTL: Duration = Duration::from_millis(600);
/// How often live gateways heartbeat: ttl / 3, as the proto asks.
const INTERVAL: Duration = Duration::from_millis(200);
/// Scheduling slack on a busy test machine, on top of the promised bounds.
const SLACK: Duration = Duration::from_millis(300);

/// A store plus whatever must outlive it.
struct Fixture {
    store: Arc<dyn PresenceStore>,
    /// The Redis server of a Redis store.
    redis: Option<RedisServer>,
    /// The Redis Cluster of a Redis store on a cluster.
    cluster: Option<RedisCluster>,
}

impl Fixture {
    /// Another presence replica on the same backend (the same store in memory, which is
    /// only ever shared within one process).
    async fn replica(&self) -> Arc<dyn PresenceStore> {
        let url = match (&self.redis, &self.cluster) {
            (Some(server), _) => server.url(),
            (None, Some(cluster)) => cluster.url(),
            (None, None) => return Arc::clone(&self.store),
        };
        Arc::new(
            RedisPresence::connect(&url, TTL)
                .await
                .expect("connect second replica"),
        )
    }
}

async fn open_memory() -> Fixture {
    Fixture {
        store: Arc::new(MemoryPresence::new(TTL)),
        redis: None,
        cluster: None,
    }
}

async fn open_redis() -> Fixture {
    let server = RedisServer::start().await.expect("start redis-server");
    let store = RedisPresence::connect(&server.url(), TTL)
        .await
        .expect("connect redis store");
    Fixture {
        store: Arc::new(store),
        redis: Some(server),
        cluster: None,
    }
}

async fn open_redis_cluster() -> Fixture {
    let cluster = RedisCluster::start(3).await.expect("start redis cluster");
    let store = RedisPresence::connect(&cluster.url(), TTL)
        .await
        .expect("connect redis store to the cluster");
    assert_eq!(
        store.buckets(),
        chat_presence::store::redis::CLUSTER_BUCKETS
    );
    Fixture {
        store: Arc::new(store),
        redis: None,
        cluster: Some(cluster),
    }
}

fn uid(s: &str) -> UserId {
    UserId::parse(s).expect("valid user")
}

fn rid(s: &str) -> RoomId {
    RoomId::parse(s).expect("valid room")
}

fn exit(room: &str, user: &str) -> RoomExit {
    RoomExit {
        room: rid(room),
        user: uid(user),
    }
}

async fn assert_all_offline(store: &dyn PresenceStore, users: &[UserId]) {
    let online = store.online(users).await.expect("online");
    assert!(online.iter().all(|o| !o), "still online: {online:?}");
}

async fn online(store: &dyn PresenceStore, user: &str) -> bool {
    let reply = store.online(&[uid(user)]).await.expect("online");
    assert_eq!(reply.len(), 1);
    reply[0]
}

/// Waits (at most 3 ttl) until `expired` holds and then a sweep finds no expired gateway
/// left. Neither a lease that ran out (`stats` counts only live ones) nor a status key
/// that expired says the gateway was swept: only a sweep that starts after them does.
async fn swept_after<F, Fut>(store: &dyn PresenceStore, what: &str, expired: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually(TTL * 3, what, || async {
        (expired().await && !store.sweep().await.expect("sweep")).then_some(())
    })
    .await
    .expect(what);
}

/// A live gateway: heartbeats every [`INTERVAL`], then sweeps and claims exits as the
/// service's `TakeExits` does, acknowledging each batch with the next claim, and
/// collects the exits it is handed.
struct Heartbeats {
    stop: CancellationToken,
    task: JoinHandle<()>,
    exits: Arc<Mutex<Vec<RoomExit>>>,
    /// Heartbeat-and-sweep rounds completed.
    rounds: Arc<AtomicUsize>,
}

impl Heartbeats {
    fn start(store: Arc<dyn PresenceStore>, gateway: &str, users: &[&str]) -> Self {
        let stop = CancellationToken::new();
        let exits = Arc::new(Mutex::new(Vec::new()));
        let rounds = Arc::new(AtomicUsize::new(0));
        let gateway = gateway.to_owned();
        let users: Vec<UserId> = users.iter().map(|u| uid(u)).collect();
        let task = tokio::spawn({
            let (stop, exits, rounds) = (stop.clone(), Arc::clone(&exits), Arc::clone(&rounds));
            async move {
                let mut tick = tokio::time::interval(INTERVAL);
                let mut ack = 0;
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    // Failures (Redis restarting) are retried at the next tick.
                    if store.heartbeat(&gateway, &users).await.is_ok()
                        && store.sweep().await.is_ok()
                        && let Ok(batch) = store.take_exits(&gateway, ack, 1000).await
                    {
                        exits.lock().expect("exits").extend(batch.exits);
                        ack = batch.claim;
                        rounds.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        });
        Self {
            stop,
            task,
            exits,
            rounds,
        }
    }

    /// Waits until `n` more rounds completed.
    async fn wait_beats(&self, n: usize) {
        let target = self.rounds.load(Ordering::SeqCst) + n;
        eventually(INTERVAL * (n as u32 + 5), "heartbeat rounds", || async {
            (self.rounds.load(Ordering::SeqCst) >= target).then_some(())
        })
        .await
        .expect("heartbeats keep coming");
    }

    fn exits(&self) -> Vec<RoomExit> {
        self.exits.lock().expect("exits").clone()
    }

    /// A few more rounds (in which nothing more may come), then stops: the exits handed
    /// out, each of them once.
    async fn stop_after_quiet(self) -> BTreeSet<RoomExit> {
        self.wait_beats(3).await;
        let exits = self.stop().await;
        let got: BTreeSet<_> = exits.iter().cloned().collect();
        assert_eq!(got.len(), exits.len(), "an exit came twice: {exits:?}");
        got
    }

    async fn stop(self) -> Vec<RoomExit> {
        self.stop.cancel();
        let Self { task, exits, .. } = self;
        task.await.expect("heartbeat task");
        exits.lock().expect("exits").clone()
    }
}

/// A gateway silent since `died` was released within the promised ttl + one interval.
fn assert_released_in_time(died: Instant) {
    let took = died.elapsed();
    assert!(
        took <= TTL + INTERVAL + SLACK,
        "released after {took:?}, promised ttl + interval = {:?}",
        TTL + INTERVAL
    );
}

// ---- the behaviours ----

async fn online_with_one_connection(fx: Fixture) {
    let store = &*fx.store;
    assert!(!online(store, "alice").await);
    assert!(store.connect("gw1", &uid("alice")).await.expect("connect"));
    assert!(online(store, "alice").await);
    // Repeating the call is no new transition.
    assert!(!store.connect("gw1", &uid("alice")).await.expect("again"));
    let many = store
        .online(&[uid("bob"), uid("alice"), uid("carol"), uid("alice")])
        .await
        .expect("online");
    assert_eq!(many, vec![false, true, false, true]);
    assert!(store.online(&[]).await.expect("nobody").is_empty());
    store.ping().await.expect("ping");
}

async fn second_device_keeps_user_online(fx: Fixture) {
    let store = &*fx.store;
    let alice = uid("alice");
    assert!(store.connect("gw1", &alice).await.expect("connect 1"));
    assert!(!store.connect("gw2", &alice).await.expect("connect 2"));
    assert!(
        store
            .disconnect("gw1", &alice)
            .await
            .expect("disconnect 1")
            .is_none()
    );
    assert!(online(store, "alice").await, "still on gw2");
    assert!(
        store
            .disconnect("gw2", &alice)
            .await
            .expect("disconnect 2")
            .is_some()
    );
    assert!(!online(store, "alice").await, "offline at once");
    // Repeats and strangers change nothing.
    assert!(
        store
            .disconnect("gw2", &alice)
            .await
            .expect("repeat")
            .is_none()
    );
    assert!(
        store
            .disconnect("gw3", &uid("bob"))
            .await
            .expect("stranger")
            .is_none()
    );
    // And back.
    assert!(store.connect("gw2", &alice).await.expect("reconnect"));
    assert!(online(store, "alice").await);
}

/// Each room is told once per online period that the user is online, whichever gateway
/// reports the entry and however often the user leaves and joins again; when the period
/// ends the last disconnect returns every room told, once.
async fn rooms_told_once_per_online_period(fx: Fixture) {
    let store = &*fx.store;
    let (alice, room, dm) = (uid("alice"), rid("general"), rid("dm:alice:bob"));
    for gw in ["gw1", "gw2"] {
        store.connect(gw, &alice).await.expect("connect");
    }
    assert!(
        store
            .enter_room("gw1", &alice, &room)
            .await
            .expect("enter 1")
    );
    assert!(
        !store
            .enter_room("gw1", &alice, &room)
            .await
            .expect("repeat")
    );
    assert!(
        !store
            .enter_room("gw2", &alice, &room)
            .await
            .expect("enter 2")
    );
    assert!(store.enter_room("gw2", &alice, &dm).await.expect("dm"));
    // Rooms are per user.
    assert!(
        store
            .enter_room("gw1", &uid("bob"), &dm)
            .await
            .expect("bob")
    );
    // One device goes: she is still online, nobody is told anything.
    assert!(
        store
            .disconnect("gw1", &alice)
            .await
            .expect("gw1")
            .is_none()
    );
    assert!(!store.enter_room("gw2", &alice, &room).await.expect("again"));
    // The last one: every room of the period, also the one entered through gw1.
    let mut rooms = store
        .disconnect("gw2", &alice)
        .await
        .expect("gw2")
        .expect("went offline");
    rooms.sort();
    assert_eq!(rooms, vec![rid("dm:alice:bob"), rid("general")]);
    assert!(
        store
            .disconnect("gw2", &alice)
            .await
            .expect("repeat")
            .is_none()
    );
    // A new period: told again.
    store.connect("gw1", &alice).await.expect("back");
    assert!(
        store
            .enter_room("gw1", &alice, &room)
            .await
            .expect("new period")
    );
    assert_eq!(
        store.disconnect("gw1", &alice).await.expect("gone"),
        Some(vec![rid("general")])
    );
}

/// A gateway stops heartbeating (killed); another keeps going. Within ttl + one interval
/// its user is offline and the live gateway is handed her offline events exactly once; a
/// user the live gateway also holds stays online, and nobody is told otherwise.
async fn dead_gateway_is_released(fx: Fixture) {
    let store = &fx.store;
    let (alice, bob, carol) = (uid("alice"), uid("bob"), uid("carol"));
    // alice only on the doomed gateway, bob on both, carol only on the live one.
    for user in [&alice, &bob] {
        store.connect("doomed", user).await.expect("connect");
    }
    for user in [&bob, &carol] {
        store.connect("live", user).await.expect("connect");
    }
    for (gw, user, room) in [
        ("doomed", &alice, "r1"),
        ("doomed", &alice, "r2"),
        ("doomed", &bob, "r1"),
        ("live", &bob, "r1"),
        ("live", &carol, "r2"),
    ] {
        store
            .enter_room(gw, user, &rid(room))
            .await
            .expect("enter room");
    }
    let live = Heartbeats::start(Arc::clone(store), "live", &["bob", "carol"]);
    store
        .heartbeat("doomed", &[alice.clone(), bob.clone()])
        .await
        .expect("last heartbeat");
    // From here on, "doomed" is silent.
    let died = Instant::now();

    eventually(TTL * 3, "alice offline and her exits swept", || {
        let (store, live) = (Arc::clone(store), &live);
        async move {
            let gone = !online(&*store, "alice").await;
            (gone && live.exits().len() >= 2).then_some(())
        }
    })
    .await
    .expect("released");
    assert_released_in_time(died);
    // A few more heartbeats and sweeps: nothing more comes, bob and carol are untouched.
    let got = live.stop_after_quiet().await;
    assert_eq!(
        got,
        BTreeSet::from([exit("r1", "alice"), exit("r2", "alice")])
    );
    assert!(!store.sweep().await.expect("sweep"));
    assert_eq!(
        store.take_exits("live", 0, 1000).await.expect("take"),
        Default::default()
    );
    assert!(online(&**store, "bob").await);
    assert!(online(&**store, "carol").await);
    // bob's period goes on: r1 hears when it ends.
    assert_eq!(
        store.disconnect("live", &bob).await.expect("bob leaves"),
        Some(vec![rid("r1")])
    );
    // And alice's period is over: entering tells the room again.
    store.connect("live", &alice).await.expect("alice back");
    assert!(
        store
            .enter_room("live", &alice, &rid("r1"))
            .await
            .expect("enter")
    );
}

/// Heartbeats every ttl / 3 keep a user online at every check for 3 × ttl, and sweeping
/// meanwhile releases nothing.
async fn no_flapping_while_heartbeats_arrive(fx: Fixture) {
    let store = &fx.store;
    let alice = uid("alice");
    store.connect("gw1", &alice).await.expect("connect");
    store
        .enter_room("gw1", &alice, &rid("general"))
        .await
        .expect("enter");
    let beats = Heartbeats::start(Arc::clone(store), "gw1", &["alice"]);
    let start = Instant::now();
    let mut checks = 0;
    let mut poll = tokio::time::interval(Duration::from_millis(50));
    while start.elapsed() < TTL * 3 {
        poll.tick().await;
        assert!(
            online(&**store, "alice").await,
            "offline after {:?}",
            start.elapsed()
        );
        checks += 1;
    }
    assert!(checks >= 20, "only {checks} checks");
    assert!(!store.sweep().await.expect("sweep"));
    assert!(
        store
            .take_exits("gw2", 0, 1000)
            .await
            .expect("take")
            .exits
            .is_empty()
    );
    assert_eq!(beats.stop().await, Vec::new());
}

/// Two presence replicas sweep the same dead gateway at once, and two gateways (one on
/// each replica) claim its exits at once: every exit is handed out exactly once in total.
async fn replicas_hand_out_each_exit_once(fx: Fixture) {
    const USERS: usize = 600;
    const ROOMS: usize = 4;
    let store = &fx.store;
    let mut expected = BTreeSet::new();
    for u in 0..USERS {
        let user = uid(&format!("u{u}"));
        store.connect("doomed", &user).await.expect("connect");
        for r in 0..ROOMS {
            let room = rid(&format!("room{r}"));
            store
                .enter_room("doomed", &user, &room)
                .await
                .expect("enter");
            expected.insert(RoomExit {
                room,
                user: user.clone(),
            });
        }
    }
    let users: Vec<UserId> = (0..USERS).map(|u| uid(&format!("u{u}"))).collect();
    // Connecting them all may take longer than a lease: wait for the last renewal's end.
    eventually(TTL * 3, "the lease to expire", || async {
        (store.stats().await.expect("stats").gateways == 0).then_some(())
    })
    .await
    .expect("expired");
    let replicas = [Arc::clone(store), fx.replica().await];
    let workers = replicas.into_iter().enumerate().map(|(i, replica)| {
        tokio::spawn(async move {
            let gateway = format!("live{i}");
            let (mut mine, mut ack, mut idle) = (Vec::new(), 0, 0);
            // Claims of 50 while sweeping, until both are idle a few times in a row.
            while idle < 3 {
                let more = replica.sweep().await.expect("sweep");
                let batch = replica.take_exits(&gateway, ack, 50).await.expect("take");
                assert!(batch.exits.len() <= 50);
                idle = if batch.exits.is_empty() && !more {
                    idle + 1
                } else {
                    0
                };
                ack = batch.claim;
                mine.extend(batch.exits);
            }
            mine
        })
    });
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.expect("worker"));
    }
    let got: BTreeSet<_> = all.iter().cloned().collect();
    assert_eq!(got.len(), all.len(), "some exit was handed out twice");
    assert_eq!(got, expected);
    assert_all_offline(&**store, &users).await;
}

/// A batch whose reply was lost (the gateway acknowledges an older claim) is handed out
/// again, until acknowledged; a batch claimed by a gateway that then dies goes back to
/// be claimed by another. Exits of a user who is online again by then are not handed
/// out: their rooms join the new period and hear when it ends.
async fn exits_are_handed_out_until_acknowledged(fx: Fixture) {
    let store = &*fx.store;
    let (alice, bob) = (uid("alice"), uid("bob"));
    for user in [&alice, &bob] {
        store.connect("doomed", user).await.expect("connect");
        store
            .enter_room("doomed", user, &rid("r1"))
            .await
            .expect("enter");
    }
    // claimer: live now, silent later (it dies holding a claim).
    store.heartbeat("claimer", &[]).await.expect("heartbeat");
    swept_after(store, "doomed swept", || async {
        store.heartbeat("claimer", &[]).await.expect("heartbeat");
        !online(store, "alice").await && !online(store, "bob").await
    })
    .await;
    // bob is back before anyone announced his exit.
    store.connect("live", &bob).await.expect("bob back");
    let first = store.take_exits("claimer", 0, 1000).await.expect("take");
    assert_eq!(first.exits, vec![exit("r1", "alice")]);
    assert_ne!(first.claim, 0);
    // The reply was lost: the same batch again, whatever else is queued.
    let again = store.take_exits("claimer", 0, 1000).await.expect("take");
    assert_eq!(again, first);
    // The claimer dies without acknowledging: the sweep queues the batch again.
    eventually(TTL * 3, "claimer swept", || async {
        store
            .heartbeat("live", std::slice::from_ref(&bob))
            .await
            .expect("heartbeat");
        store.sweep().await.expect("sweep");
        let batch = store.take_exits("live", 0, 1000).await.expect("take");
        (!batch.exits.is_empty()).then_some(batch)
    })
    .await
    .map(|batch| {
        assert_eq!(batch.exits, vec![exit("r1", "alice")]);
        let done = batch.claim;
        async move {
            let next = store.take_exits("live", done, 1000).await.expect("ack");
            assert_eq!(next, Default::default(), "acknowledged: nothing more");
        }
    })
    .expect("handed to live")
    .await;
    // bob's r1 is part of his new period.
    assert_eq!(
        store.disconnect("live", &bob).await.expect("bob leaves"),
        Some(vec![rid("r1")])
    );
}

/// A gateway's first heartbeat reports a lost lease also right after `connect` started
/// its lease: only heartbeats count (the gateway must report its rooms).
async fn first_heartbeat_after_connect_reports_a_lost_lease(fx: Fixture) {
    let store = &*fx.store;
    let alice = uid("alice");
    store.connect("gw1", &alice).await.expect("connect");
    store
        .enter_room("gw1", &alice, &rid("general"))
        .await
        .expect("enter");
    let beat = || store.heartbeat("gw1", std::slice::from_ref(&alice));
    assert!(
        beat().await.expect("first heartbeat"),
        "first: lease unknown"
    );
    assert!(!beat().await.expect("second"), "renewed in time: kept");
}

/// A room entry from a gateway whose connect was lost (presence was unreachable for a
/// moment) registers the connection as the connect would have: the room was told the user
/// is online, so the disconnect must end the period and return it, and nothing of the
/// period may outlive it. A late entry reordered after the disconnect registers nothing.
async fn room_entry_after_a_lost_connect_registers_the_user(fx: Fixture) {
    let store = &*fx.store;
    let (alice, room) = (uid("alice"), rid("general"));
    assert!(store.enter_room("gw1", &alice, &room).await.expect("enter"));
    assert!(online(store, "alice").await, "a joined user is online");
    assert_eq!(
        store.disconnect("gw1", &alice).await.expect("disconnect"),
        Some(vec![room.clone()]),
        "the room told online hears she went offline"
    );
    // An entry that arrives after the disconnect (sent before it, reordered) is stale.
    assert!(!store.enter_room("gw1", &alice, &room).await.expect("late"));
    assert!(!online(store, "alice").await, "a stale entry revived her");
    // A new period announces the room again and ends with it.
    store.connect("gw2", &alice).await.expect("back");
    assert!(store.enter_room("gw2", &alice, &room).await.expect("again"));
    assert_eq!(
        store.disconnect("gw2", &alice).await.expect("gone"),
        Some(vec![room])
    );
}

/// A disconnect reported after the gateway was swept is remembered all the same: a
/// heartbeat sent before it does not bring the user back.
async fn disconnect_after_sweep_is_remembered(fx: Fixture) {
    let store = &*fx.store;
    let alice = uid("alice");
    store.connect("gw1", &alice).await.expect("connect");
    swept_after(store, "gw1 swept", || async {
        store.stats().await.expect("stats").gateways == 0 && !online(store, "alice").await
    })
    .await;
    assert!(
        store
            .disconnect("gw1", &alice)
            .await
            .expect("late")
            .is_none()
    );
    assert!(
        store
            .heartbeat("gw1", std::slice::from_ref(&alice))
            .await
            .expect("stale")
    );
    assert!(
        !online(store, "alice").await,
        "a stale heartbeat revived her"
    );
}

/// A heartbeat computed before a disconnect but arriving after it must not bring the
/// user back; a ttl after the disconnect, a heartbeat naming the user is believed again.
async fn late_heartbeat_does_not_revive(fx: Fixture) {
    let store = &*fx.store;
    let alice = uid("alice");
    store.connect("gw1", &alice).await.expect("connect");
    assert!(
        store
            .disconnect("gw1", &alice)
            .await
            .expect("disconnect")
            .is_some()
    );
    store
        .heartbeat("gw1", std::slice::from_ref(&alice))
        .await
        .expect("stale heartbeat");
    assert!(!online(store, "alice").await);
    // Another gateway's heartbeat is not affected by gw1's disconnect.
    store
        .heartbeat("gw2", std::slice::from_ref(&alice))
        .await
        .expect("gw2 heartbeat");
    assert!(online(store, "alice").await);
    assert!(
        store
            .disconnect("gw2", &alice)
            .await
            .expect("disconnect gw2")
            .is_some()
    );
    let start = Instant::now();
    eventually(TTL * 3, "gw1's heartbeat to count again", || async {
        store
            .heartbeat("gw1", std::slice::from_ref(&alice))
            .await
            .expect("heartbeat");
        online(store, "alice").await.then_some(())
    })
    .await
    .expect("registered again");
    assert!(
        start.elapsed() + SLACK >= TTL,
        "too early: {:?}",
        start.elapsed()
    );
    assert!(
        store
            .disconnect("gw1", &alice)
            .await
            .expect("disconnect")
            .is_some()
    );
}

/// A gateway that was silent for longer than its lease is swept as dead; when it turns
/// out to be alive, its next heartbeat brings its users back, and they can leave cleanly.
async fn silent_gateway_comes_back(fx: Fixture) {
    let store = &*fx.store;
    let alice = uid("alice");
    store.connect("gw1", &alice).await.expect("connect");
    store
        .enter_room("gw1", &alice, &rid("general"))
        .await
        .expect("enter");
    let exits = eventually(TTL * 3, "gw1 swept", || async {
        store.sweep().await.expect("sweep");
        let batch = store.take_exits("gw2", 0, 1000).await.expect("take");
        (!batch.exits.is_empty()).then_some(batch.exits)
    })
    .await
    .expect("swept");
    assert_eq!(exits, vec![exit("general", "alice")]);
    assert!(!online(store, "alice").await);
    assert!(
        store
            .heartbeat("gw1", std::slice::from_ref(&alice))
            .await
            .expect("heartbeat"),
        "the lease was lost"
    );
    assert!(online(store, "alice").await, "back with the heartbeat");
    // Re-reporting the room tells it again: it heard she went offline.
    assert!(
        store
            .enter_room("gw1", &alice, &rid("general"))
            .await
            .expect("re-enter")
    );
    assert!(
        store
            .disconnect("gw1", &alice)
            .await
            .expect("disconnect")
            .is_some()
    );
    assert!(!online(store, "alice").await);
}

/// A heartbeat registers users the gateway holds but presence does not know (their
/// connect was lost), in chunks as large as the Redis backend uses (1000).
async fn heartbeat_registers_unknown_users(fx: Fixture) {
    let store = &*fx.store;
    let users: Vec<UserId> = (0..2500).map(|u| uid(&format!("user{u}"))).collect();
    assert!(store.connect("gw1", &users[0]).await.expect("connect"));
    store.heartbeat("gw1", &users).await.expect("heartbeat");
    let online = store.online(&users).await.expect("online");
    assert_eq!(online.len(), users.len());
    assert!(online.iter().all(|o| *o));
    assert!(!store.connect("gw1", &users[2499]).await.expect("connect"));
    assert!(
        store
            .disconnect("gw1", &users[2499])
            .await
            .expect("disconnect")
            .is_some()
    );
    assert!(
        store
            .disconnect("gw1", &users[1234])
            .await
            .expect("disconnect")
            .is_some()
    );
    assert_eq!(
        store
            .online(&[users[1233].clone(), users[1234].clone()])
            .await
            .expect("online"),
        vec![true, false]
    );
}

/// A heartbeat says when the store has no record of the gateway's previous one within
/// the lease (its first, or after a silence): the gateway must then re-enter its rooms.
async fn heartbeat_reports_a_lost_lease(fx: Fixture) {
    let store = &*fx.store;
    let alice = uid("alice");
    let beat = || store.heartbeat("gw1", std::slice::from_ref(&alice));
    assert!(
        beat().await.expect("first heartbeat"),
        "first: lease unknown"
    );
    assert!(!beat().await.expect("heartbeat"), "renewed in time: kept");
    assert!(!beat().await.expect("heartbeat"), "renewed in time: kept");
    // The fault under test is silence itself: let the lease lapse.
    tokio::time::sleep(TTL + SLACK).await;
    assert!(
        beat().await.expect("late heartbeat"),
        "after a silence: lost"
    );
    assert!(!beat().await.expect("heartbeat"), "renewed again: kept");
}

async fn stats_count_live_gateways_and_their_users(fx: Fixture) {
    let store = &*fx.store;
    let stats = |gateways, users| PresenceStats { gateways, users };
    assert_eq!(store.stats().await.expect("stats"), stats(0, 0));
    for (gw, user) in [("gw1", "alice"), ("gw1", "bob"), ("gw2", "alice")] {
        store.connect(gw, &uid(user)).await.expect("connect");
    }
    // alice counts once per gateway holding her.
    assert_eq!(store.stats().await.expect("stats"), stats(2, 3));
    store
        .disconnect("gw1", &uid("bob"))
        .await
        .expect("disconnect");
    assert_eq!(store.stats().await.expect("stats"), stats(2, 2));
    // gw2 falls silent: once its lease is over it no longer counts, before any sweep.
    let gw1 = Heartbeats::start(Arc::clone(&fx.store), "gw1", &["alice"]);
    eventually(TTL + SLACK, "gw2's lease to end", || async {
        (store.stats().await.expect("stats") == stats(1, 1)).then_some(())
    })
    .await
    .expect("only gw1 is live");
    gw1.stop().await;
}

chat_testkit::backend_suite! {
    backends: {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        memory => open_memory,
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        redis => open_redis,
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        redis_cluster => open_redis_cluster,
    },
    cases: [
        online_with_one_connection,
        second_device_keeps_user_online,
        rooms_told_once_per_online_period,
        dead_gateway_is_released,
        no_flapping_while_heartbeats_arrive,
        replicas_hand_out_each_exit_once,
        exits_are_handed_out_until_acknowledged,
        first_heartbeat_after_connect_reports_a_lost_lease,
        room_entry_after_a_lost_connect_registers_the_user,
        disconnect_after_sweep_is_remembered,
        late_heartbeat_does_not_revive,
        silent_gateway_comes_back,
        heartbeat_registers_unknown_users,
        heartbeat_reports_a_lost_lease,
        stats_count_live_gateways_and_their_users,
    ],
}

// ---- backend-specific behaviour ----
//
// Plain tests, not suite cases: each needs what only the Redis backend has (its keys,
// a server to restart, MGET).

/// Every `presence:*` key in the fixture's Redis.
async fn redis_presence_keys(fx: &Fixture) -> Vec<String> {
    let url = fx.redis.as_ref().expect("redis fixture").url();
    let args = ["-u", &url, "--scan", "--pattern", "presence:*"];
    let out = chat_testkit::redis_cluster::redis_cli(args.map(String::from).to_vec())
        .await
        .expect("redis-cli");
    out.lines().map(str::to_owned).collect()
}

/// Nothing of a gateway outlives it in Redis: after its sweep, a disconnect it reports
/// late (its `:left` entry, needed for a ttl against stale heartbeats) expires with the
/// ttl, and then no presence key is left at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_nothing_of_a_swept_gateway_outlives_the_ttl() {
    let fx = open_redis().await;
    let store = &*fx.store;
    let alice = uid("alice");
    store.connect("gw1", &alice).await.expect("connect");
    store
        .enter_room("gw1", &alice, &rid("general"))
        .await
        .expect("enter");
    swept_after(store, "gw1 swept", || async {
        store.stats().await.expect("stats").gateways == 0
    })
    .await;
    let taken = store.take_exits("gw2", 0, 100).await.expect("take");
    assert_eq!(taken.exits, vec![exit("general", "alice")]);
    store
        .take_exits("gw2", taken.claim, 100)
        .await
        .expect("ack");
    assert!(
        store
            .disconnect("gw1", &alice)
            .await
            .expect("late")
            .is_none()
    );
    let left = eventually(TTL + SLACK, "no presence key left", || async {
        redis_presence_keys(&fx).await.is_empty().then_some(())
    })
    .await;
    assert!(
        left.is_ok(),
        "left behind: {:?}",
        redis_presence_keys(&fx).await
    );
}

/// Redis dies and comes back empty: the gateway's heartbeats restore online status within
/// one interval of Redis answering again, and the restored state is consistent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_heartbeats_restore_online() {
    let mut fx = open_redis().await;
    let store = Arc::clone(&fx.store);
    let alice = uid("alice");
    for gw in ["gw1", "gw2"] {
        store.connect(gw, &alice).await.expect("connect");
    }
    // A gateway whose lease is current before the restart...
    let bob = uid("bob");
    store
        .heartbeat("gw3", std::slice::from_ref(&bob))
        .await
        .expect("heartbeat");
    assert!(
        !store
            .heartbeat("gw3", std::slice::from_ref(&bob))
            .await
            .expect("heartbeat")
    );
    let beats = [
        Heartbeats::start(Arc::clone(&store), "gw1", &["alice"]),
        Heartbeats::start(Arc::clone(&store), "gw2", &["alice"]),
    ];
    fx.redis
        .as_mut()
        .expect("redis fixture")
        .restart()
        .await
        .expect("restart redis");
    // Redis is up again; the client reconnects with backoff (at most 2 s between tries).
    let back = Instant::now();
    eventually(Duration::from_secs(5), "Redis answering", || async {
        store.ping().await.ok()
    })
    .await
    .expect("redis back");
    let answering = back.elapsed();
    // ...is told on its next heartbeat that presence forgot it: Redis came back empty.
    assert!(
        store
            .heartbeat("gw3", std::slice::from_ref(&bob))
            .await
            .expect("heartbeat after the restart"),
        "lease lost with Redis's data"
    );
    eventually(INTERVAL + SLACK, "alice online again", || async {
        online(&*store, "alice").await.then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e} (Redis answered after {answering:?})"));
    // Both gateways re-registered her: one leaving keeps her online.
    for b in beats {
        assert!(b.stop().await.is_empty());
    }
    assert!(
        store
            .disconnect("gw1", &alice)
            .await
            .expect("disconnect 1")
            .is_none()
    );
    assert!(online(&*store, "alice").await);
    assert!(
        store
            .disconnect("gw2", &alice)
            .await
            .expect("disconnect 2")
            .is_some()
    );
    assert!(!online(&*store, "alice").await);
}

/// The store answers MGET for one key and for 500 keys with one value each, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_query_of_500_users() {
    let fx = open_redis().await;
    let store = &*fx.store;
    let users: Vec<UserId> = (0..500).map(|u| uid(&format!("u{u}"))).collect();
    for user in users.iter().step_by(3) {
        store.connect("gw1", user).await.expect("connect");
    }
    let online = store.online(&users).await.expect("online");
    let expected: Vec<bool> = (0..500).map(|u| u % 3 == 0).collect();
    assert_eq!(online, expected);
}

// ---- on a Redis Cluster ----

/// A private 3-master cluster and a presence store on it, typed (for its key names).
async fn cluster_store() -> (RedisCluster, Arc<RedisPresence>) {
    let cluster = RedisCluster::start(3).await.expect("start redis cluster");
    let store = RedisPresence::connect(&cluster.url(), TTL)
        .await
        .expect("connect redis store to the cluster");
    (cluster, Arc::new(store))
}

/// Every `presence:*` key on every node of `cluster`, as `"<node> <key>"`.
async fn cluster_presence_keys(cluster: &RedisCluster) -> Vec<String> {
    let mut keys = Vec::new();
    for node in cluster.addrs() {
        let out = cluster
            .command(node, &["--scan", "--pattern", "presence:*"])
            .await
            .expect("redis-cli --scan");
        keys.extend(out.lines().map(|k| format!("{node} {k}")));
    }
    keys
}

/// Users `<prefix><n>` whose keys sit on each node of `cluster`, `per_node` per node.
async fn users_on_every_node(
    cluster: &RedisCluster,
    store: &RedisPresence,
    prefix: &str,
    per_node: usize,
) -> Vec<Vec<UserId>> {
    let nodes = cluster.addrs();
    let mut found = vec![Vec::new(); nodes.len()];
    for n in 0.. {
        if found.iter().all(|f: &Vec<UserId>| f.len() >= per_node) {
            break;
        }
        let user = uid(&format!("{prefix}{n}"));
        let node = cluster
            .node_of(&store.status_key(&user))
            .await
            .expect("node of key");
        let at = nodes.iter().position(|a| *a == node).expect("a known node");
        if found[at].len() < per_node {
            found[at].push(user);
        }
    }
    found
}

/// A gateway whose users' keys sit on all three shards stops heartbeating (killed with
/// no goodbye): every user it alone held is offline, and the live gateway is handed each
/// offline event once, within ttl + one heartbeat interval, from every shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_dead_gateway_with_users_on_every_shard() {
    let (cluster, store) = cluster_store().await;
    let users: Vec<UserId> = users_on_every_node(&cluster, &store, "doomed", 3)
        .await
        .concat();
    let mut expected = BTreeSet::new();
    for (i, user) in users.iter().enumerate() {
        store.connect("doomed", user).await.expect("connect");
        let room = rid(&format!("room{}", i % 2));
        assert!(
            store
                .enter_room("doomed", user, &room)
                .await
                .expect("enter")
        );
        expected.insert(RoomExit {
            room,
            user: user.clone(),
        });
    }
    let live = Heartbeats::start(store.clone(), "live", &[]);
    store
        .heartbeat("doomed", &users)
        .await
        .expect("last heartbeat");
    let died = Instant::now();
    eventually(TTL * 3, "every exit handed out", || async {
        (live.exits().len() >= expected.len()).then_some(())
    })
    .await
    .expect("released");
    assert_released_in_time(died);
    let got = live.stop_after_quiet().await;
    assert_eq!(got, expected);
    assert_all_offline(&*store, &users).await;
}

/// The slot of a bucket moves to another shard while users of that bucket connect,
/// enter a room and disconnect, a live gateway heartbeats and a dead one is swept: no
/// call fails, each period tells its room `online` once and `offline` once, every exit
/// of the dead gateway is handed out once, and afterwards no key is left on any node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_slot_move_during_traffic() {
    let (cluster, store) = cluster_store().await;
    // Users of one bucket: their status keys share the bucket's slot.
    let first = uid("mover0");
    let slot = chat_testkit::redis_cluster::key_slot(store.status_key(&first).as_bytes());
    let in_bucket =
        |u: &UserId| chat_testkit::redis_cluster::key_slot(store.status_key(u).as_bytes()) == slot;
    let movers: Vec<UserId> = (0..)
        .map(|n| uid(&format!("mover{n}")))
        .filter(|u| in_bucket(u))
        .take(8)
        .collect();
    let doomed: Vec<UserId> = (0..)
        .map(|n| uid(&format!("doomed{n}")))
        .filter(|u| in_bucket(u))
        .take(20)
        .collect();
    for user in &doomed {
        store.connect("doomed", user).await.expect("connect");
        store
            .enter_room("doomed", user, &rid("lobby"))
            .await
            .expect("enter");
    }
    store.heartbeat("doomed", &doomed).await.expect("heartbeat");
    let live = Heartbeats::start(store.clone(), "live", &[]);

    // Traffic: each mover connects, enters its room, disconnects, over and over, on a
    // gateway that heartbeats.
    let gw = Heartbeats::start(store.clone(), "gw", &[]);
    let stop = CancellationToken::new();
    let done = Arc::new(AtomicUsize::new(0));
    let traffic: Vec<JoinHandle<usize>> = movers
        .iter()
        .cloned()
        .map(|user| {
            let (store, stop, done) = (store.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                let room = rid(&format!("room-{user}"));
                let mut periods = 0;
                while !stop.is_cancelled() {
                    assert!(store.connect("gw", &user).await.expect("connect"));
                    assert!(store.enter_room("gw", &user, &room).await.expect("enter"));
                    assert!(!store.enter_room("gw", &user, &room).await.expect("again"));
                    assert_eq!(
                        store.disconnect("gw", &user).await.expect("disconnect"),
                        Some(vec![room.clone()]),
                        "period {periods}"
                    );
                    periods += 1;
                    done.fetch_add(1, Ordering::SeqCst);
                }
                periods
            })
        })
        .collect();
    let periods_done = |n: usize| {
        let done = done.clone();
        eventually(Duration::from_secs(10), "traffic periods", move || {
            let done = done.clone();
            async move { (done.load(Ordering::SeqCst) >= n).then_some(()) }
        })
    };
    periods_done(movers.len() * 5)
        .await
        .expect("traffic before the move");
    let from = cluster
        .node_of(&store.status_key(&first))
        .await
        .expect("owner");
    let to = *cluster
        .addrs()
        .iter()
        .find(|a| **a != from)
        .expect("another node");
    cluster.move_slot(slot, to).await.expect("move the slot");
    assert_eq!(
        cluster
            .node_of(&store.status_key(&first))
            .await
            .expect("owner"),
        to
    );
    let after = done.load(Ordering::SeqCst) + movers.len() * 5;
    periods_done(after).await.expect("traffic after the move");
    stop.cancel();
    for task in traffic {
        let periods = task.await.expect("traffic task");
        assert!(periods >= 2, "only {periods} periods");
    }
    assert!(gw.stop().await.is_empty());
    // The dead gateway's exits, once each, also those swept after the move.
    eventually(TTL * 3, "the dead gateway's exits", || async {
        (live.exits().len() >= doomed.len()).then_some(())
    })
    .await
    .expect("exits");
    let got = live.stop_after_quiet().await;
    let expected: BTreeSet<_> = doomed.iter().map(|u| exit("lobby", u.as_str())).collect();
    assert_eq!(got, expected);
    // Nothing stale: once the live gateway's lease and the disconnect marks ran out and
    // it was swept, no presence key is left anywhere.
    let left = eventually(TTL * 4, "no presence key left", || async {
        store.sweep().await.expect("sweep");
        cluster_presence_keys(&cluster)
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    assert!(
        left.is_ok(),
        "left behind: {:?}",
        cluster_presence_keys(&cluster).await
    );
}
