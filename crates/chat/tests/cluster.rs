//! The messaging core end to end: history + two gateways + Redis, all on port 0, driven
//! over real WebSockets. Every test runs once on the embedded store and once on a
//! MongoDB-wire server.

mod common;

use std::collections::HashSet;

use chat_testkit::ws::WsClient;
use common::{Cluster, Store, collect_seqs, now, token_with};
use serde_json::json;

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> anyhow::Result<()> {
                    super::$name(super::Store::Embedded).await
                }
            )*
        }
        mod mongo {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> anyhow::Result<()> {
                    super::$name(super::Store::Mongo).await
                }
            )*
        }
    };
}

on_both_stores!(
    cross_gateway_delivery,
    concurrent_senders_on_two_gateways_see_gapless_order,
    resend_with_same_client_id_is_stored_once,
    join_since_on_another_gateway_resumes_exactly,
    resume_while_messages_keep_coming_has_no_gap_or_duplicate,
    gap_in_fan_out_is_filled_from_history,
    dm_rooms_refuse_third_users,
    bad_input_is_answered_and_connection_survives,
    invalid_or_missing_jwt_is_refused_with_401,
    history_paging_over_websocket_and_http,
    shutdown_closes_websockets_with_1001,
);

/// Senders' messages per test; the MongoDB stand-in stores ~1k messages/s.
fn volume(store: Store) -> usize {
    match store {
        Store::Embedded => 150,
        Store::Mongo => 40,
    }
}

async fn cross_gateway_delivery(store: Store) -> anyhow::Result<()> {
    let cluster = Cluster::start(store, 2).await?;
    let mut alice = cluster.client(0, "alice").await?;
    let mut bob = cluster.client(1, "bob").await?;
    assert_eq!(alice.hello["user"], "alice");
    assert_eq!(alice.hello["protocol"], 1);
    assert_ne!(alice.hello["gateway"], bob.hello["gateway"]);
    assert_eq!(alice.join("general", None).await?["last_seq"], 0);
    bob.join("general", None).await?;

    let ack = alice.send_message("general", "hello bob", "c1").await?;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["seq"], 1);
    assert_eq!(ack["duplicate"], false);
    assert_eq!(ack["client_id"], "c1");

    let got = bob.next_message("general").await?;
    assert_eq!(got["seq"], 1);
    assert_eq!(got["from"], "alice");
    assert_eq!(got["body"], "hello bob");
    assert_eq!(got["id"], ack["id"]);
    assert_eq!(got["ts"], ack["ts"]);
    let ts = got["ts"].as_str().unwrap_or_default();
    assert!(
        ts.ends_with('Z') && ts.len() == 24,
        "RFC 3339 with ms: {ts}"
    );
    // The sender's own connection gets the message too.
    assert_eq!(alice.next_message("general").await?["seq"], 1);
    Ok(())
}

async fn concurrent_senders_on_two_gateways_see_gapless_order(store: Store) -> anyhow::Result<()> {
    let cluster = Cluster::start(store, 2).await?;
    let n = volume(store);
    let mut receivers = Vec::new();
    for gw in [0, 1] {
        let mut r = cluster.client(gw, &format!("reader{gw}")).await?;
        r.join("busy", None).await?;
        receivers.push(r);
    }
    let mut senders = Vec::new();
    for gw in [0, 1] {
        let mut s = cluster.client(gw, &format!("writer{gw}")).await?;
        senders.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..n {
                let ack = s
                    .send_message("busy", &format!("m{i}"), &format!("w{gw}-{i}"))
                    .await?;
                anyhow::ensure!(ack["type"] == "ack", "send failed: {ack}");
                seqs.push(ack["seq"].as_u64().unwrap_or_default());
            }
            Ok::<_, anyhow::Error>(seqs)
        }));
    }
    let mut acked = Vec::new();
    for s in senders {
        acked.extend(s.await??);
    }
    acked.sort_unstable();
    let expected: Vec<u64> = (1..=2 * n as u64).collect();
    assert_eq!(acked, expected, "acked seqs are exactly 1..=2n");
    for r in &mut receivers {
        assert_eq!(
            collect_seqs(r, "busy", 2 * n).await?,
            expected,
            "in order, no gap"
        );
    }
    Ok(())
}

async fn resend_with_same_client_id_is_stored_once(store: Store) -> anyhow::Result<()> {
    let cluster = Cluster::start(store, 2).await?;
    let mut alice = cluster.client(0, "alice").await?;
    let mut bob = cluster.client(1, "bob").await?;
    bob.join("r", None).await?;
    let first = alice.send_message("r", "once", "same-id").await?;
    assert_eq!(first["duplicate"], false);
    // The ack "was lost": resend, on the other gateway this time.
    let mut alice2 = cluster.client(1, "alice").await?;
    let again = alice2.send_message("r", "once", "same-id").await?;
    assert_eq!(again["type"], "ack");
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["seq"], first["seq"]);
    assert_eq!(again["id"], first["id"]);
    // Another user may use the same client_id: it is per sender.
    assert_eq!(bob.send_message("r", "mine", "same-id").await?["seq"], 2);
    let next = alice.send_message("r", "next", "other-id").await?;
    assert_eq!(next["seq"], 3);
    assert_eq!(
        collect_seqs(&mut bob, "r", 3).await?,
        vec![1, 2, 3],
        "seen once each"
    );
    Ok(())
}

async fn join_since_on_another_gateway_resumes_exactly(store: Store) -> anyhow::Result<()> {
    let cluster = Cluster::start(store, 2).await?;
    let mut alice = cluster.client(0, "alice").await?;
    let mut bob = cluster.client(1, "bob").await?;
    bob.join("resume", None).await?;
    for i in 1..=3 {
        alice
            .send_message("resume", &format!("m{i}"), &format!("a{i}"))
            .await?;
    }
    assert_eq!(collect_seqs(&mut bob, "resume", 3).await?, vec![1, 2, 3]);
    bob.close().await;
    for i in 4..=6 {
        alice
            .send_message("resume", &format!("m{i}"), &format!("a{i}"))
            .await?;
    }
    // Back, on the other gateway, from the last seq seen.
    let mut bob = cluster.client(0, "bob").await?;
    let joined = bob.join("resume", Some(3)).await?;
    assert_eq!(joined["last_seq"], 6);
    assert_eq!(collect_seqs(&mut bob, "resume", 3).await?, vec![4, 5, 6]);
    alice.send_message("resume", "live", "a7").await?;
    assert_eq!(collect_seqs(&mut bob, "resume", 1).await?, vec![7]);
    // since = the last seq: nothing to replay.
    let mut carol = cluster.client(1, "carol").await?;
    assert_eq!(carol.join("resume", Some(7)).await?["last_seq"], 7);
    alice.send_message("resume", "after", "a8").await?;
    assert_eq!(collect_seqs(&mut carol, "resume", 1).await?, vec![8]);
    // since past the room's end (a position kept across a store reset): joined says
    // where the room really is, and the next messages arrive instead of being skipped
    // as already seen.
    let mut dave = cluster.client(0, "dave").await?;
    assert_eq!(dave.join("resume", Some(1000)).await?["last_seq"], 8);
    alice.send_message("resume", "next", "a9").await?;
    assert_eq!(collect_seqs(&mut dave, "resume", 1).await?, vec![9]);
    Ok(())
}

async fn resume_while_messages_keep_coming_has_no_gap_or_duplicate(
    store: Store,
) -> anyhow::Result<()> {
    let cluster = Cluster::start(store, 2).await?;
    let n = volume(store);
    let mut alice = cluster.client(0, "alice").await?;
    for i in 0..n / 2 {
        alice.send_message("flow", "x", &format!("pre{i}")).await?;
    }
    let sender = tokio::spawn(async move {
        for i in 0..n / 2 {
            let ack = alice.send_message("flow", "y", &format!("live{i}")).await?;
            anyhow::ensure!(ack["type"] == "ack", "{ack}");
        }
        Ok::<_, anyhow::Error>(())
    });
    // Join from the start while the sender is busy: catch-up then live, seamlessly.
    let mut bob = cluster.client(1, "bob").await?;
    bob.join("flow", Some(0)).await?;
    let total = 2 * (n / 2);
    sender.await??;
    let seqs = collect_seqs(&mut bob, "flow", total).await?;
    assert_eq!(seqs, (1..=total as u64).collect::<Vec<_>>());
    Ok(())
}

/// Messages stored without being published reach members once a later seq shows the gap.
async fn gap_in_fan_out_is_filled_from_history(store: Store) -> anyhow::Result<()> {
    use chat_proto::history::AppendRequest;
    use chat_proto::history::history_client::HistoryClient;

    let cluster = Cluster::start(store, 1).await?;
    let mut bob = cluster.client(0, "bob").await?;
    bob.join("gappy", None).await?;
    let mut alice = cluster.client(0, "alice").await?;
    alice.send_message("gappy", "first", "g1").await?;
    assert_eq!(collect_seqs(&mut bob, "gappy", 1).await?, vec![1]);

    // Store 2..=5 behind the gateway's back, then publish only 5, as if Redis had lost 2..=4.
    let mut history = HistoryClient::connect(format!("http://{}", cluster.history_addr)).await?;
    let mut last = None;
    for i in 2..=5 {
        let reply = history
            .append(AppendRequest {
                room: "gappy".into(),
                sender: "alice".into(),
                client_id: format!("g{i}"),
                body: format!("m{i}"),
            })
            .await?
            .into_inner();
        last = reply.message;
    }
    let last = chat_model::Message::try_from(last.ok_or_else(|| anyhow::anyhow!("no message"))?)?;
    assert_eq!(last.seq, 5);
    let frame = chat_model::frame::ServerFrame::Message(&last).to_json();
    cluster.publish_raw("gappy", frame).await?;

    let got: Vec<_> = {
        let mut v = Vec::new();
        for _ in 2..=5 {
            let m = bob.next_message("gappy").await?;
            v.push((
                m["seq"].as_u64().unwrap_or_default(),
                m["body"].as_str().unwrap_or_default().to_owned(),
            ));
        }
        v
    };
    assert_eq!(
        got,
        (2..=5).map(|i| (i, format!("m{i}"))).collect::<Vec<_>>(),
        "the gap 2..=4 is filled before 5"
    );
    // And live delivery continues after the fill.
    alice.send_message("gappy", "six", "g6").await?;
    assert_eq!(collect_seqs(&mut bob, "gappy", 1).await?, vec![6]);
    Ok(())
}

/// An event for a seq history does not have (a foreign publisher on a shared Redis, a
/// store reset under running gateways) must not make the room ask history in a loop:
/// it is retried at a pause and then dropped, and delivery goes on meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_history_never_stored_is_given_up() -> anyhow::Result<()> {
    let cluster = Cluster::start(Store::Embedded, 1).await?;
    let mut bob = cluster.client(0, "bob").await?;
    bob.join("haunted", None).await?;
    let mut alice = cluster.client(0, "alice").await?;
    alice.send_message("haunted", "first", "h1").await?;
    assert_eq!(collect_seqs(&mut bob, "haunted", 1).await?, vec![1]);

    let ghost = serde_json::json!({
        "type": "message", "room": "haunted", "seq": 100, "id": "ghost", "from": "mallory",
        "body": "boo", "ts": "2026-11-30T00:00:00.000Z", "client_id": "g",
    });
    cluster.publish_raw("haunted", ghost.to_string()).await?;
    // Live delivery is not held up by the ghost.
    alice.send_message("haunted", "second", "h2").await?;
    assert_eq!(collect_seqs(&mut bob, "haunted", 1).await?, vec![2]);

    let fill_reads = || async {
        let text = reqwest::get(format!("{}/metrics", cluster.http_url(0)))
            .await?
            .text()
            .await?;
        anyhow::Ok(
            chat_testkit::prometheus::sample(&text, "chat_gateway_gap_fill_reads_total")
                .unwrap_or_default(),
        )
    };
    // Ten fills at 500 ms pauses, then the ghost is dropped and the reads stop.
    // A quiet window longer than the retry pause: the reads have stopped.
    let reads = chat_testkit::process::eventually(
        std::time::Duration::from_secs(20),
        "gap-fill reads to stop",
        || async {
            let before = fill_reads().await.ok()?;
            tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
            let after = fill_reads().await.ok()?;
            (after == before).then_some(after)
        },
    )
    .await?;
    assert!(reads <= 15.0, "{reads} history reads for one ghost event");
    alice.send_message("haunted", "third", "h3").await?;
    assert_eq!(collect_seqs(&mut bob, "haunted", 1).await?, vec![3]);
    Ok(())
}

async fn dm_rooms_refuse_third_users(store: Store) -> anyhow::Result<()> {
    let cluster = Cluster::start(store, 2).await?;
    let mut alice = cluster.client(0, "alice").await?;
    let mut bob = cluster.client(1, "bob").await?;
    let mut carol = cluster.client(1, "carol").await?;
    alice.join("dm:alice:bob", None).await?;
    bob.join("dm:alice:bob", None).await?;
    alice.send_message("dm:alice:bob", "psst", "d1").await?;
    assert_eq!(bob.next_message("dm:alice:bob").await?["body"], "psst");

    for frame in [
        json!({"type": "join", "room": "dm:alice:bob"}),
        json!({"type": "send", "room": "dm:alice:bob", "body": "hi", "client_id": "x"}),
        json!({"type": "history", "room": "dm:alice:bob"}),
    ] {
        let reply = carol.request(frame.clone()).await?;
        assert_eq!(reply["type"], "error", "{frame} -> {reply}");
        assert_eq!(reply["code"], "forbidden", "{frame} -> {reply}");
    }
    // Malformed dm rooms are refused as bad requests, not treated as open rooms.
    let reply = carol
        .request(json!({"type": "join", "room": "dm:bob:alice"}))
        .await?;
    assert_eq!(reply["code"], "bad_request");
    let status = reqwest::Client::new()
        .get(format!(
            "{}/v1/rooms/dm:alice:bob/messages",
            cluster.http_url(0)
        ))
        .bearer_auth(common::token("carol"))
        .send()
        .await?
        .status();
    assert_eq!(status, 403);
    // Carol's connection still works, and nobody else saw anything odd.
    assert_eq!(
        carol.request(json!({"type": "ping"})).await?["type"],
        "pong"
    );
    Ok(())
}

async fn bad_input_is_answered_and_connection_survives(store: Store) -> anyhow::Result<()> {
    let cluster = Cluster::start(store, 1).await?;
    let mut eve = cluster.client(0, "eve").await?;
    let mut bystander = cluster.client(0, "bob").await?;
    bystander.join("calm", None).await?;

    let cases: Vec<(String, &str)> = vec![
        ("{not json".into(), "bad_request"),
        ("[1,2]".into(), "bad_request"),
        (json!({"type": "teleport", "ref": "t1"}).to_string(), "bad_request"),
        (json!({"type": "join"}).to_string(), "bad_request"),
        (json!({"type": "join", "room": "no spaces"}).to_string(), "bad_request"),
        (json!({"type": "join", "room": "x".repeat(129)}).to_string(), "bad_request"),
        (json!({"type": "send", "room": "calm", "body": "x".repeat(16 * 1024 + 1), "client_id": "big"}).to_string(), "too_large"),
        (json!({"type": "ping", "pad": "x".repeat(65 * 1024)}).to_string(), "too_large"),
        (json!({"type": "history", "room": "calm", "limit": 0}).to_string(), "bad_request"),
        (json!({"type": "leave", "room": "never-joined"}).to_string(), "not_joined"),
        (json!({"type": "typing", "room": "never-joined"}).to_string(), "not_joined"),
    ];
    for (text, code) in &cases {
        eve.send_text(text.clone()).await?;
        let reply = eve.recv().await?;
        assert_eq!(reply["type"], "error", "{text:.80} -> {reply}");
        assert_eq!(reply["code"], *code, "{text:.80} -> {reply}");
        assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()));
        // Still alive after each one.
        assert_eq!(eve.request(json!({"type": "ping"})).await?["type"], "pong");
    }
    // The ref is echoed even on refusals.
    let reply = eve.request(json!({"type": "teleport"})).await?;
    assert_eq!(reply["code"], "bad_request");
    // Nothing was stored and the bystander's connection is untouched.
    assert_eq!(
        bystander.send_message("calm", "still here", "b1").await?["seq"],
        1
    );
    assert_eq!(bystander.next_message("calm").await?["body"], "still here");
    Ok(())
}

async fn invalid_or_missing_jwt_is_refused_with_401(store: Store) -> anyhow::Result<()> {
    let cluster = Cluster::start(store, 1).await?;
    let base = format!("ws://{}/v1/ws", cluster.gateways[0].addr);
    let expired = token_with(json!({"sub": "alice", "exp": now() - 3600}), common::SECRET);
    let wrong_secret = token_with(
        json!({"sub": "alice", "exp": now() + 3600}),
        "not-the-secret",
    );
    let no_sub = token_with(json!({"exp": now() + 3600}), common::SECRET);
    let bad_sub = token_with(json!({"sub": "a/b", "exp": now() + 3600}), common::SECRET);
    // Right secret, wrong algorithm: only HS256 is accepted.
    let hs384 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS384),
        &json!({"sub": "alice", "exp": now() + 3600}),
        &jsonwebtoken::EncodingKey::from_secret(common::SECRET.as_bytes())?,
    )?;
    // Valid in every other way, but over the 4 KiB token limit.
    let oversized = token_with(
        json!({"sub": "alice", "exp": now() + 3600, "pad": "x".repeat(5000)}),
        common::SECRET,
    );
    for url in [
        base.clone(),
        format!("{base}?user=alice"),
        format!("{base}?token=garbage"),
        format!("{base}?token={expired}"),
        format!("{base}?token={wrong_secret}"),
        format!("{base}?token={no_sub}"),
        format!("{base}?token={bad_sub}"),
        format!("{base}?token=eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9."),
        format!("{base}?token={hs384}"),
        format!("{base}?token={oversized}"),
    ] {
        assert_eq!(WsClient::refused_status(&url).await?, Some(401), "{url}");
    }
    assert_eq!(
        WsClient::refused_status(&cluster.ws_url(0, "alice")).await?,
        None
    );
    let http = reqwest::Client::new();
    let url = format!("{}/v1/rooms/general/messages", cluster.http_url(0));
    assert_eq!(http.get(&url).send().await?.status(), 401);
    assert_eq!(
        http.get(&url).bearer_auth(&expired).send().await?.status(),
        401
    );
    assert_eq!(
        http.get(&url)
            .bearer_auth(common::token("alice"))
            .send()
            .await?
            .status(),
        200
    );
    Ok(())
}

async fn history_paging_over_websocket_and_http(store: Store) -> anyhow::Result<()> {
    let cluster = Cluster::start(store, 1).await?;
    let mut alice = cluster.client(0, "alice").await?;
    for i in 1..=7 {
        alice
            .send_message("log", &format!("m{i}"), &format!("h{i}"))
            .await?;
    }
    let page = alice
        .request(json!({"type": "history", "room": "log", "limit": 3}))
        .await?;
    assert_eq!(page["type"], "history");
    let seqs = |p: &serde_json::Value| -> Vec<u64> {
        p["messages"]
            .as_array()
            .map(|a| a.iter().filter_map(|m| m["seq"].as_u64()).collect())
            .unwrap_or_default()
    };
    assert_eq!(seqs(&page), vec![5, 6, 7], "newest page, oldest first");
    assert_eq!(page["has_more"], true);
    let page = alice
        .request(json!({"type": "history", "room": "log", "before": 5, "limit": 3}))
        .await?;
    assert_eq!(seqs(&page), vec![2, 3, 4]);
    let page = alice
        .request(json!({"type": "history", "room": "log", "before": 2}))
        .await?;
    assert_eq!(seqs(&page), vec![1]);
    assert_eq!(page["has_more"], false);

    let body: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{}/v1/rooms/log/messages?before=7&limit=2",
            cluster.http_url(0)
        ))
        .bearer_auth(common::token("bob"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(seqs(&body), vec![5, 6]);
    assert_eq!(body["has_more"], true);
    assert_eq!(body["messages"][0]["body"], "m5");
    let ids: HashSet<_> = body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| m["id"].to_string())
        .collect();
    assert_eq!(ids.len(), 2);

    // The protocol's template with empty values: both absent (newest page, limit 50).
    let get = |query: &'static str| {
        reqwest::Client::new()
            .get(format!(
                "{}/v1/rooms/log/messages{query}",
                cluster.http_url(0)
            ))
            .bearer_auth(common::token("bob"))
            .send()
    };
    let body: serde_json::Value = get("?before=&limit=").await?.json().await?;
    assert_eq!(seqs(&body), (1..=7).collect::<Vec<_>>());
    assert_eq!(body["has_more"], false);
    for bad in ["?limit=0", "?limit=201", "?before=x", "?before=-1"] {
        assert_eq!(get(bad).await?.status(), 400, "{bad}");
    }
    Ok(())
}

async fn shutdown_closes_websockets_with_1001(store: Store) -> anyhow::Result<()> {
    let cluster = Cluster::start(store, 2).await?;
    let mut alice = cluster.client(0, "alice").await?;
    let mut bob = cluster.client(1, "bob").await?;
    alice.join("bye", None).await?;
    bob.join("bye", None).await?;
    cluster.gateways[0].shutdown.cancel();
    let closed = alice.closed().await?;
    assert_eq!(closed.code, Some(1001), "{closed:?}");
    // The other gateway is unaffected, and alice resumes there.
    bob.send_message("bye", "still up", "s1").await?;
    let mut alice = cluster.client(1, "alice").await?;
    alice.join("bye", Some(0)).await?;
    assert_eq!(alice.next_message("bye").await?["body"], "still up");
    Ok(())
}
