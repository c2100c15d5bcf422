//! Presence over WebSockets: room presence events once per transition, the `presence`
//! query and `GET /v1/presence` agreeing, typing relayed but never echoed or stored.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_get_one_event_per_room_transition() -> anyhow::Result<()> {
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

    // A second device, on the other gateway: bob was already in the room.
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

    // One device leaves: bob is still in the room.
    bob_phone.close().await;
    assert!(
        presence_events(&mut alice).await?.is_empty(),
        "one of two devices left: no event"
    );

    // The last one leaves the room (explicitly this time).
    let left = bob_laptop
        .request(json!({"type": "leave", "room": "lobby"}))
        .await?;
    assert_eq!(left["type"], "left");
    let event = next_presence(&mut alice).await?;
    assert_eq!(
        event,
        json!({"type": "presence", "room": "lobby", "user": "bob", "online": false})
    );
    assert!(
        presence_events(&mut alice).await?.is_empty(),
        "exactly one offline event"
    );

    // Back in, then gone by closing the connection.
    bob_laptop.join("lobby", None).await?;
    assert_eq!(next_presence(&mut alice).await?["online"], true);
    bob_laptop.close().await;
    assert_eq!(next_presence(&mut alice).await?["online"], false);
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
