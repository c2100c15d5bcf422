//! The gateway's limits through the public protocol (guarantee 6 of docs/architecture.md): the send
//! rate limit (`rate_limited`, then close 1008 for a flood), the slow consumer (close
//! 1013, and the session released even when the client never reads again), the
//! connection limit (HTTP 503 on upgrade), the `Origin` allow-list (HTTP 403), the idle
//! timeout, and the room limit per connection. Each with the metric it moves. Also the
//! heartbeat's pings and the answers to a client's pings.

mod common;

use std::time::Duration;

use chat_gateway::limits::Limits;
use chat_testkit::process::eventually;
use chat_testkit::prometheus::sample;
use chat_testkit::ws::{Closed, WsClient};
use common::{Cluster, Store};
use serde_json::{Value, json};

/// A cluster of one gateway with `limits`.
async fn gateway_with(limits: Limits) -> anyhow::Result<Cluster> {
    let mut cluster = Cluster::start(Store::Embedded, 0).await?;
    let mut settings = cluster.gateway_settings();
    settings.limits = limits;
    cluster.add_gateway_with(&settings).await?;
    Ok(cluster)
}

/// The value of one series (`name{labels} value`) on the gateway's `/metrics`.
async fn metric(cluster: &Cluster, series: &str) -> anyhow::Result<f64> {
    let text = reqwest::get(format!("{}/metrics", cluster.http_url(0)))
        .await?
        .text()
        .await?;
    sample(&text, series).ok_or_else(|| anyhow::anyhow!("no series {series} in /metrics"))
}

/// Waits until `series` reads `value`.
async fn metric_reaches(cluster: &Cluster, series: &str, value: f64) -> anyhow::Result<()> {
    eventually(Duration::from_secs(15), series, || async {
        (metric(cluster, series).await.ok()? == value).then_some(())
    })
    .await
}

fn close_code(e: &anyhow::Error) -> Option<u16> {
    e.downcast_ref::<Closed>().and_then(|c| c.code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_over_the_rate_are_refused_and_a_flood_is_closed_with_1008() -> anyhow::Result<()> {
    let cluster = gateway_with(Limits {
        frames_per_sec: 5,
        burst: 10,
        ..Limits::default()
    })
    .await?;
    let mut alice = cluster.client(0, "alice").await?;
    alice.join("r", None).await?;

    // The burst: 9 more frames are handled, the 11th is refused with its ref echoed.
    for i in 0..9 {
        alice
            .send_json(&json!({"type": "ping", "ref": format!("p{i}")}))
            .await?;
    }
    alice
        .send_json(&json!({"type": "send", "room": "r", "body": "over", "client_id": "c-over", "ref": "over"}))
        .await?;
    let mut replies = Vec::new();
    for _ in 0..10 {
        replies.push(alice.recv().await?);
    }
    assert!(
        replies[..9].iter().all(|r| r["type"] == "pong"),
        "{replies:?}"
    );
    assert_eq!(replies[9]["type"], "error", "{replies:?}");
    assert_eq!(replies[9]["code"], "rate_limited");
    assert_eq!(replies[9]["ref"], "over");

    // Not handled: nothing was stored. The connection stays; after a pause it works.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let page = alice
        .request(json!({"type": "history", "room": "r"}))
        .await?;
    assert_eq!(page["messages"], json!([]), "a refused send is not stored");
    let ack = alice.send_message("r", "fine now", "c-later").await?;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert!(metric(&cluster, "chat_gateway_rate_limited_frames_total").await? >= 1.0);

    // A client that ignores the refusals and keeps going is disconnected.
    for i in 0..200 {
        if alice
            .send_json(&json!({"type": "ping", "ref": format!("f{i}")}))
            .await
            .is_err()
        {
            break;
        }
    }
    let closed = alice.closed().await?;
    assert_eq!(closed.code, Some(1008), "{closed}");
    metric_reaches(
        &cluster,
        "chat_gateway_disconnects_total{reason=\"rate_limited\"}",
        1.0,
    )
    .await?;

    // Others were never affected.
    let mut bob = cluster.client(0, "bob").await?;
    assert_eq!(bob.request(json!({"type": "ping"})).await?["type"], "pong");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_closed_with_1013_and_released() -> anyhow::Result<()> {
    // Senders may go as fast as they like: the point is the reader.
    let cluster = gateway_with(Limits {
        frames_per_sec: 1_000_000,
        burst: 1_000_000,
        ..Limits::default()
    })
    .await?;
    // Two members that stop reading after `joined`: one reads again after it was cut
    // off (it must find the close frame), the other never does (the gateway must let
    // it go anyway).
    let mut late_reader = cluster.client(0, "late").await?;
    late_reader.join("flood", None).await?;
    let mut never_reader = cluster.client(0, "never").await?;
    never_reader.join("flood", None).await?;

    // 16 KiB bodies overflow the socket buffers and then the 1024-frame queue.
    let body = "x".repeat(16 * 1024 - 64);
    let mut senders = Vec::new();
    for s in 0..4 {
        let mut sender = cluster.client(0, &format!("sender{s}")).await?;
        let body = body.clone();
        senders.push(tokio::spawn(async move {
            for i in 0..750 {
                let ack = sender
                    .send_message("flood", &body, &format!("s{s}-{i}"))
                    .await?;
                anyhow::ensure!(ack["type"] == "ack", "{ack}");
            }
            Ok::<_, anyhow::Error>(sender)
        }));
    }
    metric_reaches(
        &cluster,
        "chat_gateway_slow_consumer_disconnects_total",
        2.0,
    )
    .await?;

    // The one that reads again (within the gateway's 5 s close timeout) gets what was
    // already in flight, then 1013.
    let closed = loop {
        match late_reader.recv().await {
            Ok(frame) => anyhow::ensure!(
                frame["type"] == "message" || frame["type"] == "presence",
                "{frame}"
            ),
            Err(e) => {
                break close_code(&e).ok_or_else(|| anyhow::anyhow!("not a close frame: {e}"))?;
            }
        }
    };
    assert_eq!(closed, 1013);
    let mut connected_senders = Vec::new();
    for sender in senders {
        connected_senders.push(sender.await??);
    }

    // The one that never reads is released all the same: only the senders remain.
    metric_reaches(&cluster, "ws_connections_active", 4.0).await?;
    drop(never_reader);

    // The senders were never held up by the slow members.
    for mut sender in connected_senders {
        assert_eq!(
            sender.request(json!({"type": "ping"})).await?["type"],
            "pong"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_past_the_connection_limit_get_503() -> anyhow::Result<()> {
    let cluster = gateway_with(Limits {
        max_connections: 2,
        ..Limits::default()
    })
    .await?;
    let first = cluster.client(0, "alice").await?;
    let _second = cluster.client(0, "bob").await?;
    let refused = WsClient::connect_with_headers(&cluster.ws_url(0, "carol"), &[])
        .await?
        .expect_err("a third connection is over the limit");
    assert_eq!(refused.status, 503);
    assert_eq!(
        refused.body["error"]["code"], "unavailable",
        "{}",
        refused.body
    );
    assert!(refused.retry_after.is_some(), "503 says when to retry");
    assert_eq!(
        metric(
            &cluster,
            "chat_gateway_upgrades_refused_total{reason=\"at_capacity\"}"
        )
        .await?,
        1.0
    );

    // A place frees up when a connection closes.
    first.close().await;
    eventually(Duration::from_secs(10), "a free place", || async {
        WsClient::connect(&cluster.ws_url(0, "carol")).await.ok()
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_origins_may_open_a_websocket() -> anyhow::Result<()> {
    let cluster = gateway_with(Limits {
        allowed_origins: Some(vec!["https://chat.example.com".into()]),
        ..Limits::default()
    })
    .await?;
    let url = cluster.ws_url(0, "alice");
    let refused = WsClient::connect_with_headers(&url, &[("Origin", "https://evil.example")])
        .await?
        .expect_err("a foreign origin is refused");
    assert_eq!(refused.status, 403);
    assert_eq!(
        refused.body["error"]["code"], "forbidden",
        "{}",
        refused.body
    );
    assert!(
        WsClient::connect_with_headers(&url, &[("Origin", "https://chat.example.com")])
            .await?
            .is_ok(),
        "the allowed origin connects"
    );
    assert!(
        WsClient::connect_with_headers(&url, &[]).await?.is_ok(),
        "a client that sends no Origin (not a browser) connects"
    );
    assert_eq!(
        metric(
            &cluster,
            "chat_gateway_upgrades_refused_total{reason=\"origin\"}"
        )
        .await?,
        1.0
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_at_the_idle_timeout() -> anyhow::Result<()> {
    let cluster = gateway_with(Limits {
        ping_interval: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(2),
        ..Limits::default()
    })
    .await?;
    // Reading answers the server's pings (the client library pongs), so a connection
    // that reads stays open although it sends nothing.
    let mut alive = cluster.client(0, "alice").await?;
    let mut silent = cluster.client(0, "bob").await?;
    let quiet = tokio::time::timeout(Duration::from_secs(5), alive.recv()).await;
    assert!(quiet.is_err(), "nothing to read, and no close: {quiet:?}");

    // The one that did not read (no pongs) was closed meanwhile.
    assert_eq!(
        metric(&cluster, "chat_gateway_disconnects_total{reason=\"idle\"}").await?,
        1.0
    );
    // Its close frame waits in its socket behind the pings. Reading them makes the
    // client library send pongs to a socket the server has shut, and the reset that
    // comes back may discard the close frame: either is the end of the connection.
    let closed = silent.closed().await?;
    if closed.code.is_some() {
        assert_eq!(closed.code, Some(1000), "{closed}");
        assert_eq!(closed.reason, "idle timeout");
    }
    assert_eq!(
        alive.request(json!({"type": "ping"})).await?["type"],
        "pong"
    );
    Ok(())
}

/// WebSocket control frames: the server pings every `ping_interval`, and answers a
/// client's ping with its payload, also while room frames are being written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_pings_and_answers_pings() -> anyhow::Result<()> {
    let cluster = gateway_with(Limits {
        ping_interval: Duration::from_millis(300),
        ..Limits::default()
    })
    .await?;
    let mut alice = cluster.client(0, "alice").await?;
    let mut bob = cluster.client(0, "bob").await?;
    alice.join("pings", None).await?;
    bob.join("pings", None).await?;
    assert_eq!(alice.server_ping().await?, b"");
    assert_eq!(alice.server_ping().await?, b"", "pings keep coming");
    for i in 0..20 {
        bob.send_message("pings", "hi", &format!("c{i}")).await?;
        let payload = format!("p{i}");
        assert_eq!(alice.ping(payload.as_bytes()).await?, payload.as_bytes());
    }
    // The room's frames are all there, in order, around the pongs.
    for i in 1..=20 {
        assert_eq!(alice.next_message("pings").await?["seq"], i);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_joins_at_most_256_rooms() -> anyhow::Result<()> {
    let cluster = gateway_with(Limits::default()).await?;
    let mut alice = cluster.client(0, "alice").await?;
    for i in 0..256 {
        let joined = alice.join(&format!("room{i}"), None).await?;
        assert_eq!(joined["type"], "joined", "{joined}");
    }
    let refused: Value = alice
        .request(json!({"type": "join", "room": "one-too-many"}))
        .await?;
    assert_eq!(refused["code"], "bad_request", "{refused}");
    // Re-joining one it is in is fine; leaving one makes room.
    assert_eq!(alice.join("room0", None).await?["type"], "joined");
    alice
        .request(json!({"type": "leave", "room": "room1"}))
        .await?;
    assert_eq!(alice.join("one-too-many", None).await?["type"], "joined");
    Ok(())
}
