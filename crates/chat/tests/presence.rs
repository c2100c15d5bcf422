//! Presence over WebSockets: presence events once per online/offline transition, the
//! `presence` query and `GET /v1/presence` agreeing, typing relayed (rate limited) but
//! never echoed or stored.
//! History + presence (Redis store) + two gateways + a private redis-server.

mod common;

use std::time::Duration;

use chat_testkit::process::eventually;
use chat_testkit::ws::WsClient;
use common::{Cluster, Store};
use serde_json::{Value, json};

/// How long a negative check waits for events that must not come. Events travel through
/// Redis in well under a millisecond here; 300 ms is a wide margin.
const SETTLE: Duration = Duration::from_millis(300);

/// The `presence` events received before a ping's `pong`, after letting in-flight
/// events arrive.
async fn presence_events(client: &mut WsClient) -> anyhow::Result<Vec<Value>> {
    tokio::time::sleep(SETTLE).await;
    client.request(json!({"type": "ping"})).await?;
    Ok(client
        .drain_backlog()
        .into_iter()
        .filter(|f| f["type"] == "presence")
        .collect())
}

async fn next_presence(client: &mut WsClient) -> anyhow::Result<Value> {
    loop {
        let frame = client.recv().await?;
        if frame["type"] == "presence" {
            return Ok(frame);
        }
    }
}

/// Events follow the user's online status, not room membership: `online: true` when a
/// room is first joined during the user's online period, `online: false` to that room
/// once, when the last connection anywhere closes. A `leave`, or one of several devices
/// (on another gateway) closing, tells nobody: the user is still online.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_get_one_event_per_transition() -> anyhow::Result<()> {
    let cluster = Cluster::start(Store::Embedded, 2).await?;
    let mut alice = cluster.client(0, "alice").await?;
    alice.join("lobby", None).await?;
    assert!(
        presence_events(&mut alice).await?.is_empty(),
        "no event for oneself"
    );

    let mut bob_phone = cluster.client(1, "bob").await?;
    bob_phone.join("lobby", None).await?;
    let event = next_presence(&mut alice).await?;
    assert_eq!(
        event,
        json!({"type": "presence", "room": "lobby", "user": "bob", "online": true})
    );

    // A second device, on the other gateway: the room already knows bob is online.
    let mut bob_laptop = cluster.client(0, "bob").await?;
    bob_laptop.join("lobby", None).await?;
    assert!(
        presence_events(&mut alice).await?.is_empty(),
        "second device: no event"
    );
    assert!(
        presence_events(&mut bob_laptop).await?.is_empty(),
        "bob is not told about himself"
    );

    // The device on the other gateway closes: bob is still online.
    bob_phone.close().await;
    assert!(
        presence_events(&mut alice).await?.is_empty(),
        "one of two devices closed: no event"
    );

    // The last device leaves the room but stays connected: bob is still online.
    let left = bob_laptop
        .request(json!({"type": "leave", "room": "lobby"}))
        .await?;
    assert_eq!(left["type"], "left");
    assert!(
        presence_events(&mut alice).await?.is_empty(),
        "leave while connected: no event"
    );
    let http = reqwest::Client::new();
    let body: Value = http
        .get(format!("{}/v1/presence?users=bob", cluster.http_url(1)))
        .bearer_auth(common::token("carol"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(body["users"]["bob"], true, "and presence agrees");

    // Back in during the same online period: the room already knows.
    bob_laptop.join("lobby", None).await?;
    assert!(
        presence_events(&mut alice).await?.is_empty(),
        "rejoin while online: no event"
    );

    // The last connection anywhere closes: exactly one offline event.
    bob_laptop.close().await;
    let event = next_presence(&mut alice).await?;
    assert_eq!(
        event,
        json!({"type": "presence", "room": "lobby", "user": "bob", "online": false})
    );
    assert!(
        presence_events(&mut alice).await?.is_empty(),
        "exactly one offline event"
    );

    // A new online period.
    let mut bob = cluster.client(1, "bob").await?;
    bob.join("lobby", None).await?;
    assert_eq!(next_presence(&mut alice).await?["online"], true);
    bob.close().await;
    assert_eq!(next_presence(&mut alice).await?["online"], false);
    assert!(presence_events(&mut alice).await?.is_empty());
    Ok(())
}

/// A room the user left is still told when they go offline: its members were told they
/// were online, and nothing since said otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_reaches_every_room_of_the_online_period() -> anyhow::Result<()> {
    let cluster = Cluster::start(Store::Embedded, 2).await?;
    let mut alice = cluster.client(0, "alice").await?;
    alice.join("one", None).await?;
    alice.join("two", None).await?;
    let mut bob = cluster.client(1, "bob").await?;
    bob.join("one", None).await?;
    bob.join("two", None).await?;
    let mut online = Vec::new();
    for _ in 0..2 {
        let event = next_presence(&mut alice).await?;
        assert_eq!(event["online"], true);
        online.push(event["room"].clone());
    }
    online.sort_by_key(ToString::to_string);
    assert_eq!(online, [json!("one"), json!("two")]);
    bob.request(json!({"type": "leave", "room": "two"})).await?;
    assert!(presence_events(&mut alice).await?.is_empty());
    bob.close().await;
    let mut offline = Vec::new();
    for _ in 0..2 {
        let event = next_presence(&mut alice).await?;
        assert_eq!(event["online"], false);
        offline.push(event["room"].clone());
    }
    offline.sort_by_key(ToString::to_string);
    assert_eq!(offline, [json!("one"), json!("two")]);
    assert!(presence_events(&mut alice).await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_query_and_http_endpoint_agree() -> anyhow::Result<()> {
    let cluster = Cluster::start(Store::Embedded, 2).await?;
    let mut alice = cluster.client(0, "alice").await?;
    let bob = cluster.client(1, "bob").await?;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/presence?users=alice,bob,carol", cluster.http_url(1));

    let expect = json!({"alice": true, "bob": true, "carol": false});
    let reply = alice
        .request(json!({"type": "presence", "users": ["alice", "bob", "carol"]}))
        .await?;
    assert_eq!(reply["type"], "presence");
    assert_eq!(reply["users"], expect);
    let body: Value = http
        .get(&url)
        .bearer_auth(common::token("carol"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(body["users"], expect);

    bob.close().await;
    let expect = json!({"alice": true, "bob": false, "carol": false});
    eventually(Duration::from_secs(5), "bob offline over HTTP", || async {
        let body: Value = http
            .get(&url)
            .bearer_auth(common::token("carol"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (body["users"] == expect).then_some(())
    })
    .await?;
    let reply = alice
        .request(json!({"type": "presence", "users": ["alice", "bob", "carol"]}))
        .await?;
    assert_eq!(reply["users"], expect);

    // Limits and validation.
    let too_many: Vec<String> = (0..501).map(|i| format!("u{i}")).collect();
    let reply = alice
        .request(json!({"type": "presence", "users": too_many}))
        .await?;
    assert_eq!(reply["code"], "bad_request");
    let status = http
        .get(format!("{}/v1/presence?users=a%20b", cluster.http_url(0)))
        .bearer_auth(common::token("carol"))
        .send()
        .await?
        .status();
    assert_eq!(status, 400);
    let status = http.get(&url).send().await?.status();
    assert_eq!(status, 401);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_is_relayed_to_others_not_echoed_not_stored() -> anyhow::Result<()> {
    let cluster = Cluster::start(Store::Embedded, 2).await?;
    let mut alice = cluster.client(0, "alice").await?;
    let mut alice_tab = cluster.client(1, "alice").await?;
    let mut bob = cluster.client(1, "bob").await?;
    for c in [&mut alice, &mut alice_tab, &mut bob] {
        c.join("desk", None).await?;
    }
    alice
        .send_json(&json!({"type": "typing", "room": "desk"}))
        .await?;
    let typing = loop {
        let f = bob.recv().await?;
        if f["type"] == "typing" {
            break f;
        }
    };
    assert_eq!(
        typing,
        json!({"type": "typing", "room": "desk", "user": "alice"})
    );
    for c in [&mut alice, &mut alice_tab] {
        tokio::time::sleep(SETTLE).await;
        c.request(json!({"type": "ping"})).await?;
        assert!(
            !c.drain_backlog().iter().any(|f| f["type"] == "typing"),
            "typing is not echoed to the typer's own connections"
        );
    }
    let page = bob
        .request(json!({"type": "history", "room": "desk"}))
        .await?;
    assert_eq!(page["messages"], json!([]), "typing is never stored");
    assert_eq!(bob.join("desk", None).await?["last_seq"], 0);
    Ok(())
}

/// `typing` is relayed at most once per second per room per connection: a second one
/// within the second is dropped silently and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_is_rate_limited_per_room() -> anyhow::Result<()> {
    let cluster = Cluster::start(Store::Embedded, 1).await?;
    let mut alice = cluster.client(0, "alice").await?;
    let mut bob = cluster.client(0, "bob").await?;
    for c in [&mut alice, &mut bob] {
        c.join("desk", None).await?;
    }
    let metrics_url = format!("{}/metrics", cluster.http_url(0));
    let throttled = || async {
        let text = reqwest::get(&metrics_url).await?.text().await?;
        anyhow::Ok(
            chat_testkit::prometheus::sample(&text, "chat_gateway_typing_throttled_total")
                .unwrap_or(0.0),
        )
    };
    let before = throttled().await?;
    let typing = json!({"type": "typing", "room": "desk"});
    alice.send_json(&typing).await?;
    alice.send_json(&typing).await?;
    // Both were handled once alice's ping is answered (one reader, in order).
    alice.request(json!({"type": "ping"})).await?;
    tokio::time::sleep(SETTLE).await;
    bob.request(json!({"type": "ping"})).await?;
    let relayed = bob
        .drain_backlog()
        .into_iter()
        .filter(|f| f["type"] == "typing")
        .count();
    assert_eq!(
        relayed, 1,
        "the second typing within a second is not relayed"
    );
    assert_eq!(throttled().await? - before, 1.0, "and it is counted");
    Ok(())
}
