//! Gateways on a Redis Cluster (sharded pub/sub), as real processes: two `chat-gateway`s
//! on a local 3-master cluster (one given a `redis-cluster://` URL, the other a plain URL
//! and `CHAT_REDIS_CLUSTER=true`), one `chat-history`, one `chat-presence` (its keys on
//! the same cluster). Clients on both gateways exchange messages in rooms whose channels
//! live on different shards; the checker finds nothing lost, duplicated or out of order,
//! and Redis shows each room as a shard channel subscribed by both gateways on the
//! master that owns its slot.
//!
//! Then one room's slot moves to another master (resharding), which drops both
//! gateways' subscriptions of it on the old owner without any reconnect. Only clients of
//! the first gateway send to it afterwards: the second gateway's clients still get every
//! message, and both gateways are subscribed on the new owner.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use chat_e2e::{Harness, Participant, Redis, Store, Topology, check};
use chat_testkit::process::eventually;
use chat_testkit::redis_cluster::{RedisCluster, key_slot};

const CLIENTS_PER_GATEWAY: usize = 2;
const SENDS_PER_CLIENT: usize = 12;
/// Messages each client of the first gateway sends to the room whose slot moved.
const SENDS_AFTER_MOVE: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_fan_out_over_a_redis_cluster() -> anyhow::Result<()> {
    Harness::run("redis-cluster", Duration::from_secs(120), scenario).await
}

/// Room names whose channels cover every master of the cluster.
async fn rooms_on_every_shard(cluster: &RedisCluster) -> anyhow::Result<Vec<String>> {
    let mut rooms = Vec::new();
    let mut covered = HashSet::new();
    for i in 0..200 {
        let room = format!("team{i}");
        if covered.insert(cluster.node_of(&format!("chat:room:{room}")).await?) {
            rooms.push(room);
        }
        if covered.len() == cluster.addrs().len() {
            return Ok(rooms);
        }
    }
    anyhow::bail!("200 rooms did not cover every shard")
}

async fn scenario(h: &Harness) -> anyhow::Result<()> {
    let started = Instant::now();
    // Gateway 0 gets the cluster's `redis-cluster://` URL, gateway 1 its plain URL and
    // `CHAT_REDIS_CLUSTER=true`. Presence keeps its keys on the same cluster (its users
    // split over 64 buckets spread over the masters, docs/architecture.md).
    let running = Topology::new()
        .gateways(2)
        .gateway_env(1, "CHAT_REDIS_CLUSTER", "true")
        .history(1, Store::Embedded)
        .redis(Redis::Cluster)
        .start(h)
        .await?;
    let (cluster, gateways) = (running.redis_cluster()?, &running.gateways);
    let rooms = rooms_on_every_shard(cluster).await?;
    let room_refs: Vec<&str> = rooms.iter().map(String::as_str).collect();

    let mut participants = Vec::new();
    for (g, gateway) in gateways.iter().enumerate() {
        for c in 0..CLIENTS_PER_GATEWAY {
            let user = format!("u{g}x{c}");
            let p = Participant::join(&user, &gateway.ws_url(&user), &room_refs).await?;
            anyhow::ensure!(p.gateway == format!("gw-{g}"), "{user} on {}", p.gateway);
            participants.push(p);
        }
    }

    // Both gateways hold every room as a shard channel on the owning master, and no room
    // uses classic pub/sub: the one classic channel is the revocations', low-traffic and
    // needed on every gateway whatever the shard.
    for room in &rooms {
        let channel = format!("chat:room:{room}");
        let owner = cluster.node_of(&channel).await?;
        let numsub = cluster
            .command(owner, &["pubsub", "shardnumsub", &channel])
            .await?;
        anyhow::ensure!(
            numsub.split_whitespace().nth(1) == Some("2"),
            "{channel} on {owner}: {numsub}"
        );
    }
    for node in cluster.addrs() {
        let classic = cluster.command(node, &["pubsub", "channels"]).await?;
        let others: Vec<&str> = classic
            .split_whitespace()
            .filter(|c| *c != chat_model::revocation::REVOCATION_CHANNEL)
            .collect();
        anyhow::ensure!(others.is_empty(), "classic channels on {node}: {classic}");
    }

    let mut tasks = Vec::new();
    for mut p in participants {
        let rooms = rooms.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..SENDS_PER_CLIENT {
                let room = &rooms[i % rooms.len()];
                p.send(room, &format!("{}-{i}", p.user), "hi").await?;
            }
            anyhow::Ok(p)
        }));
    }
    let mut participants = Vec::new();
    for task in tasks {
        participants.push(task.await??);
    }
    let mut targets = BTreeMap::new();
    for ack in participants.iter().flat_map(|p| &p.acks) {
        let last = targets.entry(ack.room.clone()).or_insert(0);
        *last = ack.seq.max(*last);
    }
    for p in &mut participants {
        p.wait_for(&targets, Duration::from_secs(30)).await?;
    }
    // Messages crossed gateways: everyone received something sent on the other one.
    for p in &participants {
        let other = if p.gateway == "gw-0" { "u1x" } else { "u0x" };
        let crossed = p
            .received
            .values()
            .flatten()
            .filter(|(_, client_id)| client_id.starts_with(other))
            .count();
        anyhow::ensure!(crossed > 0, "{} got nothing from the other gateway", p.user);
    }

    // Resharding: move the first room's slot to another master. Only gw-0's clients send
    // to it from now on, so gw-1 learns of the move only from the slot map.
    let moved = &rooms[0];
    let channel = format!("chat:room:{moved}");
    let from = cluster.node_of(&channel).await?;
    let to = cluster
        .addrs()
        .into_iter()
        .find(|n| *n != from)
        .ok_or_else(|| anyhow::anyhow!("no other master"))?;
    cluster.move_slot(key_slot(channel.as_bytes()), to).await?;
    for p in participants.iter_mut().filter(|p| p.gateway == "gw-0") {
        for i in 0..SENDS_AFTER_MOVE {
            let client_id = format!("{}-moved-{i}", p.user);
            p.send(moved, &client_id, "after the move").await?;
        }
    }
    for ack in participants.iter().flat_map(|p| &p.acks) {
        let last = targets.entry(ack.room.clone()).or_insert(0);
        *last = ack.seq.max(*last);
    }
    for p in &mut participants {
        p.wait_for(&targets, Duration::from_secs(30)).await?;
    }
    // Both gateways are subscribed on the new owner again (live, not only resynced).
    eventually(
        Duration::from_secs(30),
        "both gateways subscribed on the new owner",
        || async {
            let numsub = cluster
                .command(to, &["pubsub", "shardnumsub", &channel])
                .await
                .ok()?;
            (numsub.split_whitespace().nth(1) == Some("2")).then_some(())
        },
    )
    .await?;

    let verdict = check(&participants);
    eprintln!(
        "redis-cluster: {:?} total; rooms {rooms:?}, {moved} moved {from} -> {to}; \
         messages {:?}; {} deliveries; lost {}, duplicated {}, out of order {}",
        started.elapsed(),
        verdict.messages,
        verdict.deliveries,
        verdict.lost,
        verdict.duplicated,
        verdict.out_of_order
    );
    anyhow::ensure!(
        verdict.problems.is_empty(),
        "checker: {:#?}",
        verdict.problems
    );
    anyhow::ensure!(
        verdict.messages.values().sum::<u64>()
            == (2 * CLIENTS_PER_GATEWAY * SENDS_PER_CLIENT + CLIENTS_PER_GATEWAY * SENDS_AFTER_MOVE)
                as u64
    );
    for p in participants {
        p.leave().await;
    }
    Ok(())
}
