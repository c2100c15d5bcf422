//! A silent partition between one gateway and Redis (issue-level behaviour in
//! docs/architecture.md, "Failure modes"): packets dropped both ways, nothing reset.
//! The cut-off gateway must notice within a few seconds (`/readyz`, the degraded gauge),
//! keep its members receiving the other gateway's messages by reading history, ack its
//! own users' sends without waiting on Redis, and after the heal get back to pub/sub,
//! with the messages of its users reaching the other gateway. No message is lost,
//! duplicated or reordered for anyone.

mod common;

use std::time::{Duration, Instant};

use chat_testkit::fault_proxy::{Fault, FaultProxy};
use chat_testkit::process::eventually;
use chat_testkit::ws::WsClient;
use common::{Cluster, Store};

const ROOM: &str = "partitioned";

/// Seqs a client received in `ROOM`, checked for gaps and duplicates as they come, and
/// the `presence` events of `ROOM` seen on the way.
#[derive(Default)]
struct Ledger {
    last: u64,
    presence: Vec<serde_json::Value>,
}

impl Ledger {
    /// The next message of `ROOM` on `client`: its seq must follow the previous one.
    async fn next(
        &mut self,
        client: &mut WsClient,
        who: &str,
    ) -> anyhow::Result<serde_json::Value> {
        let m = loop {
            let frame = client.recv().await?;
            match frame["type"].as_str() {
                Some("message") if frame["room"] == ROOM => break frame,
                Some("presence") if frame["room"] == ROOM => self.presence.push(frame),
                Some("message" | "typing" | "presence") => {}
                _ => anyhow::bail!("{who} expected a message of {ROOM}, got {frame}"),
            }
        };
        let seq = m["seq"].as_u64().unwrap_or(0);
        anyhow::ensure!(
            seq == self.last + 1,
            "{who} got seq {seq} after {} (lost, duplicated or out of order)",
            self.last
        );
        self.last = seq;
        Ok(m)
    }
}

/// What gateway 1 reaches through the proxy.
enum Link {
    Redis,
    History,
    Presence,
}

/// A cluster whose gateway 1 reaches Redis or history through a `FaultProxy` (gateway 0
/// directly), with alice on gateway 1 and bob on gateway 0 in `ROOM`, and their ledgers.
struct Partitioned {
    cluster: Cluster,
    proxy: FaultProxy,
    alice: WsClient,
    bob: WsClient,
    alice_seen: Ledger,
    bob_seen: Ledger,
}

impl Partitioned {
    async fn start(link: Link) -> anyhow::Result<Self> {
        let mut cluster = Cluster::start(Store::Embedded, 1).await?;
        let mut settings = cluster.gateway_settings();
        let proxy = match link {
            Link::Redis => {
                let proxy = FaultProxy::start(cluster.redis.addr()).await?;
                settings.redis_url = Some(format!("redis://{}", proxy.addr()));
                proxy
            }
            Link::History => {
                let proxy = FaultProxy::start(cluster.history_addr).await?;
                settings.history_url = format!("http://{}", proxy.addr());
                proxy
            }
            Link::Presence => {
                let proxy = FaultProxy::start(cluster.presence_addr).await?;
                settings.presence_url = format!("http://{}", proxy.addr());
                proxy
            }
        };
        cluster.add_gateway_with(&settings).await?;
        let mut alice = cluster.client(1, "alice").await?; // behind the proxy
        let mut bob = cluster.client(0, "bob").await?;
        alice.join(ROOM, None).await?;
        bob.join(ROOM, None).await?;
        Ok(Self {
            cluster,
            proxy,
            alice,
            bob,
            alice_seen: Ledger::default(),
            bob_seen: Ledger::default(),
        })
    }
}

async fn gauge(cluster: &Cluster, gw: usize, name: &str) -> anyhow::Result<f64> {
    let text = reqwest::get(format!("{}/metrics", cluster.http_url(gw)))
        .await?
        .text()
        .await?;
    chat_testkit::prometheus::sample(&text, name)
        .ok_or_else(|| anyhow::anyhow!("{name} not in /metrics"))
}

async fn ready(cluster: &Cluster, gw: usize) -> anyhow::Result<(u16, String)> {
    let reply = reqwest::get(format!("{}/readyz", cluster.http_url(gw))).await?;
    Ok((reply.status().as_u16(), reply.text().await?))
}

fn p99(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    let i = (samples.len() * 99).div_ceil(100).saturating_sub(1);
    samples[i]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_cut_off_from_redis_keeps_delivering() -> anyhow::Result<()> {
    // gw 0 talks to Redis directly, gw 1 through the proxy.
    let mut parts = Partitioned::start(Link::Redis).await?;
    let Partitioned {
        cluster,
        proxy,
        alice,
        bob,
        alice_seen,
        bob_seen,
    } = &mut parts;

    // Normal service first.
    for i in 0..3 {
        bob.send_message(ROOM, "before", &format!("b-before-{i}"))
            .await?;
        alice_seen.next(alice, "alice").await?;
        bob_seen.next(bob, "bob").await?;
    }
    assert_eq!(gauge(cluster, 1, "chat_gateway_redis_degraded").await?, 0.0);

    // Cut: nothing forwarded either way, nothing closed.
    proxy.set(Fault::Blackhole);
    let cut = Instant::now();
    // Sent right after the cut, before anything noticed it: it reaches alice from
    // history as soon as a ping is late (SUSPECT_AFTER, within 1.5 s of the cut), not
    // after the detection (2 to 2.5 s).
    let ack = bob.send_message(ROOM, "at the cut", "b-cut").await?;
    assert_eq!(ack["type"], "ack", "{ack}");
    bob_seen.next(bob, "bob").await?;
    alice_seen.next(alice, "alice").await?;
    let first = cut.elapsed();
    assert!(
        first <= Duration::from_millis(2500),
        "the cut's first message reached the island after {first:?}"
    );
    eventually(Duration::from_secs(10), "the cut detected", || async {
        let degraded = gauge(cluster, 1, "chat_gateway_redis_degraded")
            .await
            .ok()?
            == 1.0;
        let (status, body) = ready(cluster, 1).await.ok()?;
        (degraded && status == 503 && body.contains("fan-out")).then_some(())
    })
    .await?;
    let detected = cut.elapsed();
    // Two pings a second with a 2 s timeout: 2.5 s at worst, plus scheduling slack.
    assert!(
        detected <= Duration::from_secs(5),
        "detected after {detected:?}"
    );
    assert_eq!(
        ready(cluster, 0).await?.0,
        200,
        "the other gateway stays ready"
    );

    // While cut: bob's messages reach alice by history polling.
    let mut latencies = Vec::new();
    for i in 0..12 {
        let sent = Instant::now();
        let ack = bob
            .send_message(ROOM, "during", &format!("b-during-{i}"))
            .await?;
        assert_eq!(ack["type"], "ack", "{ack}");
        bob_seen.next(bob, "bob").await?;
        alice_seen.next(alice, "alice").await?;
        latencies.push(sent.elapsed());
    }
    let during_p99 = p99(latencies.clone());
    // Rooms read history every second while degraded.
    assert!(
        during_p99 <= Duration::from_secs(2),
        "p99 {during_p99:?} during the cut: {latencies:?}"
    );

    // Alice's own sends are acked without waiting on Redis, and delivered to her.
    for i in 0..3 {
        let sent = Instant::now();
        let ack = alice
            .send_message(ROOM, "from the island", &format!("a-during-{i}"))
            .await?;
        assert_eq!(ack["type"], "ack", "{ack}");
        assert!(
            sent.elapsed() < Duration::from_secs(1),
            "ack took {:?}",
            sent.elapsed()
        );
        alice_seen.next(alice, "alice").await?;
    }

    // Heal: back to pub/sub within a few seconds, and bob gets alice's messages.
    proxy.set(Fault::Pass);
    let healed = Instant::now();
    eventually(Duration::from_secs(10), "the heal seen", || async {
        let degraded = gauge(cluster, 1, "chat_gateway_redis_degraded")
            .await
            .ok()?;
        let (status, _) = ready(cluster, 1).await.ok()?;
        (degraded == 0.0 && status == 200).then_some(())
    })
    .await?;
    let recovered = healed.elapsed();
    assert!(
        recovered <= Duration::from_secs(5),
        "recovered after {recovered:?}"
    );
    for _ in 0..3 {
        let m = bob_seen.next(bob, "bob").await?;
        assert_eq!(m["from"], "alice", "{m}");
    }
    let caught_up = healed.elapsed();

    // Normal latency again, both ways.
    let mut after = Vec::new();
    for i in 0..5 {
        let sent = Instant::now();
        bob.send_message(ROOM, "after", &format!("b-after-{i}"))
            .await?;
        bob_seen.next(bob, "bob").await?;
        alice_seen.next(alice, "alice").await?;
        after.push(sent.elapsed());
        alice
            .send_message(ROOM, "after", &format!("a-after-{i}"))
            .await?;
        alice_seen.next(alice, "alice").await?;
        bob_seen.next(bob, "bob").await?;
    }
    let after_max = after.iter().max().copied().unwrap_or_default();
    assert!(
        after_max < Duration::from_millis(900),
        "after the heal: {after:?}"
    );
    println!(
        "partition: first message after {first:?}; detected after {detected:?}; \
         p99 during the cut {during_p99:?}; \
         ready again {recovered:?} and island messages delivered {caught_up:?} after the heal; \
         max latency after {after_max:?}; proxy connections {}",
        proxy.connections_accepted()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_link_neither_storms_nor_loses() -> anyhow::Result<()> {
    let mut parts = Partitioned::start(Link::Redis).await?;
    let Partitioned {
        cluster,
        proxy,
        alice,
        bob,
        alice_seen,
        bob_seen,
    } = &mut parts;

    let before = proxy.connections_accepted();
    proxy.flap(
        Duration::from_secs(1),
        Duration::from_secs(1),
        Duration::from_secs(12),
    );
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < Duration::from_secs(12) {
        bob.send_message(ROOM, "flap", &format!("b-flap-{i}"))
            .await?;
        bob_seen.next(bob, "bob").await?;
        alice_seen.next(alice, "alice").await?;
        i += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    proxy.set(Fault::Pass);
    eventually(Duration::from_secs(10), "flapping over", || async {
        (gauge(cluster, 1, "chat_gateway_redis_degraded")
            .await
            .ok()?
            == 0.0)
            .then_some(())
    })
    .await?;
    // Two clients (publisher, subscriber): a reconnect storm would open far more
    // connections than the flaps could justify (fred backs off up to 2 s).
    let opened = proxy.connections_accepted() - before;
    assert!(opened <= 30, "{opened} connections in 12 s of flapping");
    let reconnects = gauge(cluster, 1, "chat_gateway_redis_reconnects_total").await?;
    bob.send_message(ROOM, "steady", "b-steady").await?;
    bob_seen.next(bob, "bob").await?;
    alice_seen.next(alice, "alice").await?;
    println!("flapping: {i} messages, {opened} new connections, {reconnects} reconnects");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_link_is_not_a_partition() -> anyhow::Result<()> {
    let mut parts = Partitioned::start(Link::Redis).await?;
    let Partitioned {
        cluster,
        proxy,
        alice,
        bob,
        alice_seen,
        bob_seen,
    } = &mut parts;

    // 200 ms each way between gateway 1 and Redis, for longer than the liveness timeout.
    proxy.set(Fault::Latency(Duration::from_millis(200)));
    let start = Instant::now();
    let mut latencies = Vec::new();
    let mut i = 0;
    while start.elapsed() < Duration::from_secs(6) {
        let sent = Instant::now();
        let ack = alice
            .send_message(ROOM, "slow", &format!("a-slow-{i}"))
            .await?;
        assert_eq!(ack["type"], "ack", "{ack}");
        alice_seen.next(alice, "alice").await?;
        bob_seen.next(bob, "bob").await?;
        latencies.push(sent.elapsed());
        assert_eq!(
            gauge(cluster, 1, "chat_gateway_redis_degraded").await?,
            0.0,
            "a slow link was taken for a dead one"
        );
        i += 1;
    }
    assert_eq!(ready(cluster, 1).await?.0, 200);
    let slowest = latencies.iter().max().copied().unwrap_or_default();
    // The publish crosses the slow link once each way: ~400 ms, far from any timeout.
    assert!(slowest < Duration::from_secs(2), "{latencies:?}");
    println!("slow link: {i} messages, slowest delivery {slowest:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_cut_off_from_history_answers_unavailable_and_recovers() -> anyhow::Result<()> {
    let mut parts = Partitioned::start(Link::History).await?;
    let Partitioned {
        cluster,
        proxy,
        alice,
        bob,
        alice_seen,
        bob_seen,
    } = &mut parts;
    alice.send_message(ROOM, "before", "a-before").await?;
    alice_seen.next(alice, "alice").await?;
    bob_seen.next(bob, "bob").await?;

    proxy.set(Fault::Blackhole);
    let cut = Instant::now();
    // A send is answered within the 5 s call deadline, never left hanging.
    let reply = alice.send_message(ROOM, "cut", "a-cut").await?;
    let answered = cut.elapsed();
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], "unavailable", "{reply}");
    assert!(
        answered <= Duration::from_secs(7),
        "answered after {answered:?}"
    );
    eventually(Duration::from_secs(10), "gateway 1 unready", || async {
        (ready(cluster, 1).await.ok()?.0 == 503).then_some(())
    })
    .await?;
    let unready = cut.elapsed();

    proxy.set(Fault::Pass);
    let healed = Instant::now();
    // The client resends with the same client_id until acked: stored once.
    let ack = loop {
        let reply = alice.send_message(ROOM, "cut", "a-cut").await?;
        if reply["type"] == "ack" {
            break reply;
        }
        assert_eq!(reply["code"], "unavailable", "{reply}");
        assert!(
            healed.elapsed() < Duration::from_secs(15),
            "no ack after the heal"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let acked = healed.elapsed();
    assert!(
        acked <= Duration::from_secs(5),
        "acked {acked:?} after the heal"
    );
    alice_seen.next(alice, "alice").await?;
    let m = bob_seen.next(bob, "bob").await?;
    assert_eq!(m["client_id"], "a-cut", "{m}");
    eventually(Duration::from_secs(10), "gateway 1 ready", || async {
        (ready(cluster, 1).await.ok()?.0 == 200).then_some(())
    })
    .await?;
    // Nothing stored twice: the next message follows at once.
    alice.send_message(ROOM, "after", "a-after").await?;
    alice_seen.next(alice, "alice").await?;
    bob_seen.next(bob, "bob").await?;
    println!(
        "history cut: unavailable after {answered:?}, unready after {unready:?}; \
         acked {acked:?} after the heal (duplicate: {})",
        ack["duplicate"]
    );
    Ok(())
}

/// Whether gateway `gw` reports `user` online (`GET /v1/presence`).
async fn online(cluster: &Cluster, gw: usize, user: &str) -> anyhow::Result<bool> {
    let body: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/v1/presence?users={user}", cluster.http_url(gw)))
        .bearer_auth(common::token("carol"))
        .send()
        .await?
        .json()
        .await?;
    body["users"][user]
        .as_bool()
        .ok_or_else(|| anyhow::anyhow!("no status of {user}: {body}"))
}

/// Gateway 1 cut off from presence for longer than the lease (and than HTTP/2 keep-alive
/// takes to drop the connection): chat goes on both ways; presence declares gateway 1
/// dead, so alice's room hears `offline`; after the heal the next heartbeat brings her
/// back: one `online`, within the 1 s retry of a failed heartbeat (a third of the
/// default 30 s lease is 10 s), and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_cut_off_from_presence_past_the_lease_converges() -> anyhow::Result<()> {
    let mut parts = Partitioned::start(Link::Presence).await?;
    let Partitioned {
        cluster,
        proxy,
        alice,
        bob,
        alice_seen,
        bob_seen,
    } = &mut parts;
    // Heartbeats every third of the lease.
    let heartbeat = common::PRESENCE_TTL / 3;
    assert!(online(cluster, 0, "alice").await?);
    // Alice's `online` may reach bob after his join: let it come, then count afresh.
    tokio::time::sleep(Duration::from_millis(300)).await;
    bob.send_message(ROOM, "before", "b-before").await?;
    bob_seen.next(bob, "bob").await?;
    alice_seen.next(alice, "alice").await?;
    bob_seen.presence.clear();

    proxy.set(Fault::Blackhole);
    let cut = Instant::now();
    let cut_for = Duration::from_secs(10);
    let mut i = 0;
    let mut offline_after = None;
    while cut.elapsed() < cut_for {
        let started = Instant::now();
        for (from, id) in [
            ("bob", format!("b-cut-{i}")),
            ("alice", format!("a-cut-{i}")),
        ] {
            let sender = if from == "bob" {
                &mut *bob
            } else {
                &mut *alice
            };
            let ack = sender.send_message(ROOM, "cut", &id).await?;
            assert_eq!(ack["type"], "ack", "{ack}");
            bob_seen.next(bob, "bob").await?;
            alice_seen.next(alice, "alice").await?;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "chat slowed by the cut: {:?}",
            started.elapsed()
        );
        if offline_after.is_none() && !bob_seen.presence.is_empty() {
            offline_after = Some(cut.elapsed());
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let offline_after =
        offline_after.ok_or_else(|| anyhow::anyhow!("no presence event during the cut"))?;
    assert_eq!(
        bob_seen.presence,
        [serde_json::json!({"type": "presence", "room": ROOM, "user": "alice", "online": false})],
        "the room hears that alice went offline, once"
    );
    assert!(!online(cluster, 0, "alice").await?, "declared dead");

    proxy.set(Fault::Pass);
    let healed = Instant::now();
    let mut j = 0;
    while bob_seen.presence.len() < 2 {
        anyhow::ensure!(
            healed.elapsed() < Duration::from_secs(10),
            "alice not back online after the heal: {:?}",
            bob_seen.presence
        );
        bob.send_message(ROOM, "heal", &format!("b-heal-{j}"))
            .await?;
        bob_seen.next(bob, "bob").await?;
        alice_seen.next(alice, "alice").await?;
        j += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let online_after = healed.elapsed();
    assert!(online(cluster, 0, "alice").await?, "online again");
    // Several leases later: still online, and no other event.
    tokio::time::sleep(common::PRESENCE_TTL * 2).await;
    bob.send_message(ROOM, "steady", "b-steady").await?;
    bob_seen.next(bob, "bob").await?;
    alice_seen.next(alice, "alice").await?;
    assert!(online(cluster, 0, "alice").await?, "still online");
    let alice_events = |online| serde_json::json!({"type": "presence", "room": ROOM, "user": "alice", "online": online});
    assert_eq!(
        bob_seen.presence,
        [alice_events(false), alice_events(true)],
        "one offline/online pair"
    );
    // One lapse, reported (and the memberships reported again) once: the heartbeat held
    // by the cut and answered at the heal was sent long before presence renewed the
    // lease, which must not make the next heartbeat see a second lapse.
    assert_eq!(
        gauge(cluster, 1, "chat_gateway_presence_lease_lapses_total").await?,
        1.0,
        "lease lapses seen by gateway 1"
    );
    assert_eq!(
        gauge(cluster, 0, "chat_gateway_presence_lease_lapses_total").await?,
        0.0,
        "lease lapses seen by gateway 0"
    );
    // The next heartbeat (a held one answered at the heal, or the retry of a failed one
    // a second later) registers her again and reports her room.
    assert!(
        online_after <= Duration::from_millis(1500),
        "online {online_after:?} after the heal (heartbeat {heartbeat:?})"
    );
    println!(
        "presence cut: {i} rounds of messages both ways during {cut_for:?}; offline \
         announced {offline_after:?} after the cut; online again {online_after:?} after \
         the heal (heartbeat {heartbeat:?})"
    );
    Ok(())
}
