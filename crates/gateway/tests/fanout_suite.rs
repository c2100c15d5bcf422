//! One behaviour suite for every `FanOut` backend: in-process, and Redis pub/sub against
//! a real `redis-server` started for each test.

use std::time::Duration;

use bytestring::ByteString;
use chat_gateway::fanout::memory::InProcessBus;
use chat_gateway::fanout::redis::RedisFanOut;
use chat_gateway::fanout::{FanOut, Signal};
use chat_model::RoomId;
use chat_testkit::redis::RedisServer;
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
        let (f, rx) = RedisFanOut::connect(&self.0.url())
            .await
            .expect("redis fan-out connects");
        (Box::new(f), rx)
    }
}

fn room(name: &str) -> RoomId {
    RoomId::parse(name).expect("valid room")
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

macro_rules! suite {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::Memory(super::InProcessBus::new())).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let server = chat_testkit::redis::RedisServer::start().await.expect("redis-server starts");
                    super::$test(super::Redis(server)).await;
                }
            )*
        }
    };
}

suite!(
    delivers_to_every_subscriber_including_the_publisher,
    only_subscribed_rooms_are_delivered,
    subscriptions_are_counted,
    one_publisher_keeps_its_order,
    payloads_round_trip_unchanged,
);

/// Redis only: after Redis dies and comes back, the fan-out reconnects by itself,
/// resubscribes every room, and signals a resync (events published meanwhile are lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_reconnects_resubscribes_and_signals_resync() {
    let mut server = RedisServer::start().await.expect("redis-server starts");
    let (a, mut a_rx) = RedisFanOut::connect(&server.url()).await.expect("connects");
    let (c, _c_rx) = RedisFanOut::connect(&server.url()).await.expect("connects");
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
        let (a, mut rx) = RedisFanOut::connect(&server.url()).await.expect("connects");
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
}
