//! One behaviour suite for every `FanOut` backend (`chat_testkit::backend_suite!`):
//! in-process, Redis pub/sub against a real `redis-server`, and sharded pub/sub against a
//! real 3-master Redis Cluster, each started for each test.

use std::time::Duration;

use bytestring::ByteString;
use chat_gateway::fanout::memory::InProcessBus;
use chat_gateway::fanout::redis::{PubSubMode, RedisFanOut};
use chat_gateway::fanout::{FanOut, Signal};
use chat_gateway::metrics::RedisFanOutMetrics;
use chat_model::RoomId;
use chat_testkit::redis::RedisServer;
use chat_testkit::redis_cluster::RedisCluster;
use tokio::sync::mpsc;

type Node = (Box<dyn FanOut>, mpsc::Receiver<Signal>);

/// Builds connected fan-out nodes ("gateways") of one backend.
trait Backend {
    async fn node(&mut self) -> Node;
}

struct Memory(InProcessBus);

impl Backend for Memory {
    async fn node(&mut self) -> Node {
        let (f, rx) = self.0.attach();
        (Box::new(f), rx)
    }
}

struct Redis(RedisServer);

impl Backend for Redis {
    async fn node(&mut self) -> Node {
        let (f, rx) = RedisFanOut::connect(&self.0.url(), RedisFanOutMetrics::default())
            .await
            .expect("redis fan-out connects");
        (Box::new(f), rx)
    }
}

struct Cluster(RedisCluster);

impl Backend for Cluster {
    async fn node(&mut self) -> Node {
        let (f, rx) = RedisFanOut::connect(&self.0.url(), RedisFanOutMetrics::default())
            .await
            .expect("redis cluster fan-out connects");
        assert_eq!(f.mode(), PubSubMode::Sharded);
        (Box::new(f), rx)
    }
}

async fn open_memory() -> Memory {
    Memory(InProcessBus::new())
}

async fn open_redis() -> Redis {
    Redis(RedisServer::start().await.expect("redis-server starts"))
}

async fn open_cluster() -> Cluster {
    Cluster(RedisCluster::start(3).await.expect("redis cluster starts"))
}

fn room(name: &str) -> RoomId {
    RoomId::parse(name).expect("valid room")
}

/// Round `i` of a subscribe-is-live test: on a fresh connection to `url` and a fresh
/// room, a message published right after `subscribe` returns is delivered.
async fn assert_live_when_subscribed(url: &str, i: usize) {
    let (a, mut rx) = RedisFanOut::connect(url, RedisFanOutMetrics::default())
        .await
        .expect("connects");
    let r = room(&format!("fresh{i}"));
    a.subscribe(&r).await.expect("subscribe");
    a.publish(&r, ByteString::from("first"))
        .await
        .expect("publish");
    let got = tokio::time::timeout(Duration::from_secs(2), next_event(&mut rx)).await;
    assert!(
        got.is_ok(),
        "event published right after subscribe was lost (round {i})"
    );
}

/// The next event, skipping resync hints.
async fn next_event(rx: &mut mpsc::Receiver<Signal>) -> (String, String) {
    loop {
        let signal = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("an event within 10 s")
            .expect("signal channel open");
        if let Signal::Event { room, payload } = signal {
            return (room.to_string(), payload.to_string());
        }
    }
}

/// Asserts nothing but resyncs arrives for a short while.
async fn assert_silent(rx: &mut mpsc::Receiver<Signal>) {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
    while let Ok(Some(signal)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        assert_eq!(signal, Signal::Resync, "unexpected event");
    }
}

async fn delivers_to_every_subscriber_including_the_publisher(mut b: impl Backend) {
    let (a, mut a_rx) = b.node().await;
    let (c, mut c_rx) = b.node().await;
    a.subscribe(&room("r")).await.expect("subscribe");
    c.subscribe(&room("r")).await.expect("subscribe");
    a.publish(&room("r"), ByteString::from("one"))
        .await
        .expect("publish");
    assert_eq!(next_event(&mut a_rx).await, ("r".into(), "one".into()));
    assert_eq!(next_event(&mut c_rx).await, ("r".into(), "one".into()));
    assert_silent(&mut a_rx).await;
    assert_silent(&mut c_rx).await;
}

async fn only_subscribed_rooms_are_delivered(mut b: impl Backend) {
    let (a, mut a_rx) = b.node().await;
    let (c, _c_rx) = b.node().await;
    a.subscribe(&room("mine")).await.expect("subscribe");
    c.publish(&room("other"), ByteString::from("x"))
        .await
        .expect("publish");
    c.publish(&room("mine"), ByteString::from("y"))
        .await
        .expect("publish");
    assert_eq!(next_event(&mut a_rx).await, ("mine".into(), "y".into()));
    assert_silent(&mut a_rx).await;
}

async fn subscriptions_are_counted(mut b: impl Backend) {
    let (a, mut a_rx) = b.node().await;
    let r = room("counted");
    a.subscribe(&r).await.expect("subscribe");
    a.subscribe(&r).await.expect("subscribe");
    a.unsubscribe(&r).await.expect("unsubscribe");
    a.publish(&r, ByteString::from("still"))
        .await
        .expect("publish");
    assert_eq!(next_event(&mut a_rx).await.1, "still");
    a.unsubscribe(&r).await.expect("unsubscribe");
    a.publish(&r, ByteString::from("gone"))
        .await
        .expect("publish");
    assert_silent(&mut a_rx).await;
    // Resubscribing works after the last unsubscribe.
    a.subscribe(&r).await.expect("subscribe");
    a.publish(&r, ByteString::from("back"))
        .await
        .expect("publish");
    assert_eq!(next_event(&mut a_rx).await.1, "back");
}

async fn one_publisher_keeps_its_order(mut b: impl Backend) {
    let (a, _a_rx) = b.node().await;
    let (c, mut c_rx) = b.node().await;
    c.subscribe(&room("ordered")).await.expect("subscribe");
    for i in 0..500 {
        a.publish(&room("ordered"), ByteString::from(i.to_string()))
            .await
            .expect("publish");
    }
    for i in 0..500 {
        assert_eq!(next_event(&mut c_rx).await.1, i.to_string());
    }
}

async fn payloads_round_trip_unchanged(mut b: impl Backend) {
    let (a, mut a_rx) = b.node().await;
    a.subscribe(&room("utf8")).await.expect("subscribe");
    let payload = r#"{"type":"message","body":"héllo \"wörld\" 🎉\n"}"#;
    a.publish(&room("utf8"), ByteString::from(payload))
        .await
        .expect("publish");
    assert_eq!(next_event(&mut a_rx).await.1, payload);
    assert!(a.is_connected());
}

chat_testkit::backend_suite! {
    backends: {
        #[tokio::test]
        memory => open_memory,
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        redis => open_redis,
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        redis_cluster => open_cluster,
    },
    cases: [
        delivers_to_every_subscriber_including_the_publisher,
        only_subscribed_rooms_are_delivered,
        subscriptions_are_counted,
        one_publisher_keeps_its_order,
        payloads_round_trip_unchanged,
    ],
}

// ---- backend-specific behaviour ----
//
// Plain tests, not suite cases: reconnects, subscription barriers, shard channels and
// slot moves are properties of the Redis backends (a server or a cluster node to
// restart, Redis's own view of the subscriptions); the in-process bus has no
// counterpart to restart or inspect.

/// Redis only: after Redis dies and comes back, the fan-out reconnects by itself,
/// resubscribes every room, and signals a resync (events published meanwhile are lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_reconnects_resubscribes_and_signals_resync() {
    let mut server = RedisServer::start().await.expect("redis-server starts");
    let (a, mut a_rx) = RedisFanOut::connect(&server.url(), RedisFanOutMetrics::default())
        .await
        .expect("connects");
    let (c, _c_rx) = RedisFanOut::connect(&server.url(), RedisFanOutMetrics::default())
        .await
        .expect("connects");
    a.subscribe(&room("survivor")).await.expect("subscribe");
    server.restart().await.expect("redis restarts");

    // A resync arrives once the subscriber is back.
    let resynced = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if let Some(Signal::Resync) = a_rx.recv().await {
                return;
            }
        }
    })
    .await;
    assert!(resynced.is_ok(), "no resync after reconnect");

    // The subscription is back: publish until one arrives (the publisher reconnects on
    // its own schedule).
    let delivered = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let _ = c
                .publish(&room("survivor"), ByteString::from("after"))
                .await;
            if let Ok(Some(Signal::Event { payload, .. })) =
                tokio::time::timeout(Duration::from_millis(200), a_rx.recv()).await
            {
                return payload.to_string();
            }
        }
    })
    .await
    .expect("events flow again after the restart");
    assert_eq!(delivered, "after");
    assert!(a.is_connected() && c.is_connected());
}

/// Redis only: `subscribe` returns only once the subscription is live, so an event
/// published right after it is delivered. (fred resolves SUBSCRIBE when written; this
/// lost about one event in eight on fresh servers before the PING barrier.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_subscribe_is_live_when_it_returns() {
    for i in 0..40 {
        let server = RedisServer::start().await.expect("redis-server starts");
        assert_live_when_subscribed(&server.url(), i).await;
    }
}

/// Redis only: resubscribing after a reconnect sends Redis nothing it refuses (an empty
/// `SUBSCRIBE`/`PSUBSCRIBE` is answered with an error that the client would pair with
/// the reply of a later command), and a room subscribed after the reconnect is live
/// when `subscribe` returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_resubscribes_cleanly_after_reconnect() {
    let mut server = RedisServer::start().await.expect("redis-server starts");
    let (a, mut a_rx) = RedisFanOut::connect(&server.url(), RedisFanOutMetrics::default())
        .await
        .expect("connects");
    let (idle, mut idle_rx) = RedisFanOut::connect(&server.url(), RedisFanOutMetrics::default())
        .await
        .expect("connects");
    a.subscribe(&room("before")).await.expect("subscribe");
    server.restart().await.expect("redis restarts");
    for rx in [&mut a_rx, &mut idle_rx] {
        let resynced = tokio::time::timeout(Duration::from_secs(15), async {
            while !matches!(rx.recv().await, Some(Signal::Resync)) {}
        })
        .await;
        assert!(resynced.is_ok(), "no resync after reconnect");
    }
    for i in 0..20 {
        let r = room(&format!("after{i}"));
        a.subscribe(&r).await.expect("subscribe after reconnect");
        idle.publish(&r, ByteString::from("x"))
            .await
            .expect("publish");
        let got = tokio::time::timeout(Duration::from_secs(2), next_event(&mut a_rx)).await;
        assert_eq!(got.expect("event right after subscribe").0, r.to_string());
    }
    let stats = redis_info(&server, "stats").await;
    assert!(
        stats.contains("total_error_replies:0"),
        "redis answered commands with errors: {stats}"
    );
}

/// `INFO <section>` of a test server.
async fn redis_info(server: &RedisServer, section: &str) -> String {
    chat_testkit::redis_cluster::redis_cli(vec![
        "-p".into(),
        server.addr().port().to_string(),
        "info".into(),
        section.into(),
    ])
    .await
    .expect("redis-cli info")
}

/// Rooms whose channels land on every master of `cluster` (at least one room each).
async fn rooms_on_every_shard(cluster: &RedisCluster) -> Vec<RoomId> {
    let mut rooms = Vec::new();
    let mut covered = std::collections::HashSet::new();
    for i in 0..200 {
        let r = room(&format!("shard{i}"));
        let node = cluster
            .node_of(&format!("chat:room:{r}"))
            .await
            .expect("slot owner");
        if covered.insert(node) {
            rooms.push(r);
        }
        if covered.len() == cluster.addrs().len() {
            return rooms;
        }
    }
    panic!("200 rooms did not cover every shard");
}

/// Cluster: two gateways' fan-outs exchange events of rooms served by different shards;
/// each room's channel is a shard channel subscribed on the master owning its slot (so
/// `SPUBLISH` reaches it without crossing the cluster bus), and nothing is subscribed
/// with classic pub/sub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_fans_out_across_shards() {
    let cluster = RedisCluster::start(3).await.expect("redis cluster starts");
    let rooms = rooms_on_every_shard(&cluster).await;
    let (a, mut a_rx) = RedisFanOut::connect(&cluster.url(), RedisFanOutMetrics::default())
        .await
        .expect("connects");
    // The other one is given one node only, in the plain form plus cluster mode: it
    // discovers the rest.
    let url = chat_gateway::settings::redis_url(Some(cluster.plain_url()), true).expect("a url");
    let (b, mut b_rx) = RedisFanOut::connect(&url, RedisFanOutMetrics::default())
        .await
        .expect("connects");
    assert_eq!(b.mode(), PubSubMode::Sharded);
    for r in &rooms {
        a.subscribe(r).await.expect("subscribe");
        b.subscribe(r).await.expect("subscribe");
    }
    for r in &rooms {
        let channel = format!("chat:room:{r}");
        let owner = cluster.node_of(&channel).await.expect("slot owner");
        let numsub = cluster
            .command(owner, &["pubsub", "shardnumsub", &channel])
            .await
            .expect("pubsub shardnumsub");
        assert_eq!(
            numsub.split_whitespace().nth(1),
            Some("2"),
            "both fan-outs subscribed {channel} on its shard: {numsub}"
        );
    }
    for node in cluster.addrs() {
        let channels = cluster
            .command(node, &["pubsub", "channels"])
            .await
            .expect("pubsub channels");
        assert!(
            channels.trim().is_empty(),
            "classic subscriptions: {channels}"
        );
    }
    // Both publish to every room, in turns; each side gets every event, per room in
    // publish order.
    const N: usize = 30;
    for i in 0..N {
        for r in &rooms {
            let (publisher, who) = if i % 2 == 0 { (&a, "a") } else { (&b, "b") };
            publisher
                .publish(r, ByteString::from(format!("{who}{i}")))
                .await
                .expect("publish");
        }
    }
    for rx in [&mut a_rx, &mut b_rx] {
        let mut got: std::collections::HashMap<String, Vec<String>> = Default::default();
        for _ in 0..N * rooms.len() {
            let (r, payload) = next_event(rx).await;
            got.entry(r).or_default().push(payload);
        }
        for r in &rooms {
            let expected: Vec<String> = (0..N)
                .map(|i| format!("{}{i}", if i % 2 == 0 { "a" } else { "b" }))
                .collect();
            assert_eq!(got.get(r.as_str()), Some(&expected), "room {r}");
        }
        assert_silent(rx).await;
    }
    // Leaving a room unsubscribes its shard channel on its shard.
    a.unsubscribe(&rooms[0]).await.expect("unsubscribe");
    b.publish(&rooms[0], ByteString::from("after-leave"))
        .await
        .expect("publish");
    assert_eq!(next_event(&mut b_rx).await.1, "after-leave");
    assert_silent(&mut a_rx).await;
    let channel = format!("chat:room:{}", rooms[0]);
    let owner = cluster.node_of(&channel).await.expect("slot owner");
    chat_testkit::process::eventually(Duration::from_secs(5), "SUNSUBSCRIBE on the shard", || {
        let (cluster, channel) = (&cluster, &channel);
        async move {
            let numsub = cluster
                .command(owner, &["pubsub", "shardnumsub", channel])
                .await
                .ok()?;
            (numsub.split_whitespace().nth(1) == Some("1")).then_some(())
        }
    })
    .await
    .expect("one subscriber left");
}

/// Cluster: `subscribe` returns only once the shard subscription is live (fred awaits
/// the `SSUBSCRIBE` confirmation from the owning shard), so an event published right
/// after it is delivered, on fresh connections and fresh channels every round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_subscribe_is_live_when_it_returns() {
    let cluster = RedisCluster::start(3).await.expect("redis cluster starts");
    for i in 0..40 {
        assert_live_when_subscribed(&cluster.url(), i).await;
    }
}

/// Cluster: when the shard holding a room's channel crashes and comes back, the fan-out
/// reconnects, subscribes the room again on it, and signals a resync; rooms on the
/// other shards keep flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_resubscribes_after_a_shard_restarts() {
    let mut cluster = RedisCluster::start(3).await.expect("redis cluster starts");
    let rooms = rooms_on_every_shard(&cluster).await;
    let (a, mut a_rx) = RedisFanOut::connect(&cluster.url(), RedisFanOutMetrics::default())
        .await
        .expect("connects");
    let (c, _c_rx) = RedisFanOut::connect(&cluster.url(), RedisFanOutMetrics::default())
        .await
        .expect("connects");
    for r in &rooms {
        a.subscribe(r).await.expect("subscribe");
    }
    let victim = cluster
        .node_of(&format!("chat:room:{}", rooms[0]))
        .await
        .expect("slot owner");
    let index = cluster
        .addrs()
        .iter()
        .position(|n| *n == victim)
        .expect("a node of the cluster");
    cluster.restart_node(index).await.expect("node restarts");

    let resynced = tokio::time::timeout(Duration::from_secs(20), async {
        while !matches!(a_rx.recv().await, Some(Signal::Resync)) {}
    })
    .await;
    assert!(resynced.is_ok(), "no resync after the shard came back");
    // Every room flows again (the publisher reconnects on its own schedule).
    for r in &rooms {
        let delivered = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let _ = c.publish(r, ByteString::from(format!("after-{r}"))).await;
                if let Ok(Some(Signal::Event { room, payload })) =
                    tokio::time::timeout(Duration::from_millis(200), a_rx.recv()).await
                    && room == *r
                {
                    return payload.to_string();
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("room {r} flows again after the shard restart"));
        assert_eq!(delivered, format!("after-{r}"));
    }
    // Connection state settles once fred has re-synced the cluster (it may still be
    // reconnecting some connection right after the first events flow).
    chat_testkit::process::eventually(Duration::from_secs(15), "both fan-outs connected", || {
        let ready = a.is_connected() && c.is_connected();
        async move { ready.then_some(()) }
    })
    .await
    .expect("connected again");
}

/// Cluster: when a room's slot moves to another shard (resharding), the old owner drops
/// the shard subscription without any reconnect. A gateway that only receives the room
/// (the one that publishes is redirected at once) finds the move in the slot map,
/// subscribes again on the new owner and signals a resync; events published from then on
/// reach it live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_follows_a_room_whose_slot_moves() {
    let cluster = RedisCluster::start(3).await.expect("redis cluster starts");
    let (receiver, mut receiver_rx) =
        RedisFanOut::connect(&cluster.url(), RedisFanOutMetrics::default())
            .await
            .expect("connects");
    let (sender, _sender_rx) = RedisFanOut::connect(&cluster.url(), RedisFanOutMetrics::default())
        .await
        .expect("connects");
    let r = room("moving");
    let channel = format!("chat:room:{r}");
    receiver.subscribe(&r).await.expect("subscribe");
    sender
        .publish(&r, ByteString::from("before"))
        .await
        .expect("publish");
    assert_eq!(next_event(&mut receiver_rx).await.1, "before");

    let from = cluster.node_of(&channel).await.expect("slot owner");
    let to = cluster
        .addrs()
        .into_iter()
        .find(|n| *n != from)
        .expect("another master");
    let slot = chat_testkit::redis_cluster::key_slot(channel.as_bytes());
    cluster.move_slot(slot, to).await.expect("slot moves");
    // Redis dropped the subscription on the old owner.
    let numsub = |node| {
        let (cluster, channel) = (&cluster, &channel);
        async move {
            let out = cluster
                .command(node, &["pubsub", "shardnumsub", channel])
                .await
                .ok()?;
            out.split_whitespace().nth(1).map(str::to_owned)
        }
    };
    assert_eq!(numsub(from).await.as_deref(), Some("0"), "old owner");

    // Within a slot check or two, the receiver is subscribed on the new owner and asks
    // its rooms to resync from history.
    let resynced = tokio::time::timeout(
        chat_gateway::fanout::redis::SLOT_CHECK_INTERVAL * 3,
        async { while !matches!(receiver_rx.recv().await, Some(Signal::Resync)) {} },
    )
    .await;
    assert!(resynced.is_ok(), "no resync after the slot moved");
    assert_eq!(numsub(to).await.as_deref(), Some("1"), "new owner");
    // The resync came after the new subscription was live: the next event arrives.
    for i in 0..3 {
        sender
            .publish(&r, ByteString::from(format!("after{i}")))
            .await
            .expect("publish after the move");
        assert_eq!(next_event(&mut receiver_rx).await.1, format!("after{i}"));
    }
    assert_silent(&mut receiver_rx).await;
}
