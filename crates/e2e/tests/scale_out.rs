//! The compose topology with real processes: real nginx (the repo's proxy settings) in
//! front of 3 `chat-gateway` processes, 2 `chat-history` replicas on one MongoDB-wire
//! store, 2 `chat-presence` replicas, one real `redis-server`. Clients connect only
//! through nginx. Mid-traffic one gateway gets SIGTERM: its clients must get close 1001,
//! reconnect through nginx to a surviving gateway, resume with `join since` and resend
//! their unacked message with the same `client_id`; the checker then finds no message
//! lost, duplicated or out of order, for every client.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chat_e2e::{Harness, Participant, Service, check, probe, wait_ready};
use chat_testkit::mongo::{MongoServer, unique_db_name};
use chat_testkit::redis::RedisServer;

const ROOMS: [&str; 2] = ["lobby", "ops"];
const CLIENTS: usize = 6;
const SENDS_PER_CLIENT: usize = 40;
/// SIGTERM goes out once this share of all sends was acked.
const KILL_AFTER: usize = CLIENTS * SENDS_PER_CLIENT * 2 / 5;
const GRACE_SECS: u64 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateways_behind_nginx_scale_out_and_drain_without_loss() -> anyhow::Result<()> {
    let harness = Harness::new("scale-out")?;
    let outcome = tokio::time::timeout(Duration::from_secs(180), scenario(&harness)).await;
    let result = outcome.unwrap_or_else(|_| Err(anyhow::anyhow!("scale-out test took over 180 s")));
    if result.is_err() {
        harness.dump_logs();
    }
    result
}

async fn scenario(h: &Harness) -> anyhow::Result<()> {
    let started = Instant::now();
    let redis = RedisServer::start().await?;
    let mongo = MongoServer::start().await?;
    let db = unique_db_name();

    let mut histories = Vec::new();
    for i in 0..2 {
        let env = [
            ("CHAT_MONGODB_URL", mongo.url()),
            ("CHAT_MONGODB_DB", db.clone()),
            ("CHAT_METRICS_ADDR", "127.0.0.1:0".to_owned()),
        ];
        histories.push(
            h.spawn(
                &format!("history-{i}"),
                "chat-history",
                "CHAT_GRPC_ADDR",
                &env,
            )
            .await?,
        );
    }
    let mut presences = Vec::new();
    for i in 0..2 {
        let env = [
            ("CHAT_REDIS_URL", redis.url()),
            ("CHAT_METRICS_ADDR", "127.0.0.1:0".to_owned()),
        ];
        presences.push(
            h.spawn(
                &format!("presence-{i}"),
                "chat-presence",
                "CHAT_GRPC_ADDR",
                &env,
            )
            .await?,
        );
    }
    let mut gateways: Vec<Service> = Vec::new();
    for i in 0..3 {
        // Gateways spread over the history and presence replicas.
        let env = [
            ("CHAT_HISTORY_URL", histories[i % 2].url()),
            ("CHAT_PRESENCE_URL", presences[i % 2].url()),
            ("CHAT_REDIS_URL", redis.url()),
            ("CHAT_AUTH_MODE", "dev".to_owned()),
            ("CHAT_GATEWAY_ID", format!("gw-{i}")),
            ("CHAT_HTTP_WORKERS", "1".to_owned()),
            ("CHAT_SHUTDOWN_GRACE_SECS", GRACE_SECS.to_string()),
        ];
        gateways.push(
            h.spawn(
                &format!("gateway-{i}"),
                "chat-gateway",
                "CHAT_HTTP_ADDR",
                &env,
            )
            .await?,
        );
    }
    for gateway in &gateways {
        wait_ready(gateway.addr, Duration::from_secs(30)).await?;
    }
    let addrs: Vec<_> = gateways.iter().map(|g| g.addr).collect();
    let nginx = h.nginx(&addrs).await?;
    wait_ready(nginx.addr, Duration::from_secs(10)).await?;
    let booted = started.elapsed();

    // The HEALTHCHECK probes of the images agree with the running services.
    let gateway_health = format!("{}/healthz", gateways[0].url());
    anyhow::ensure!(
        probe(&[&gateway_health])?,
        "chat-probe {gateway_health} failed"
    );
    for service in histories.iter().chain(&presences) {
        let url = format!("grpc://{}", service.addr);
        anyhow::ensure!(probe(&[&url])?, "chat-probe {url} failed");
    }

    // Every client joins every room before anyone sends, so each must see every message.
    let mut participants = Vec::new();
    for i in 0..CLIENTS {
        let user = format!("user{i}");
        participants.push(Participant::join(&user, &nginx.ws_url(&user), &ROOMS).await?);
    }
    let served: std::collections::BTreeSet<_> =
        participants.iter().map(|p| p.gateway.clone()).collect();
    anyhow::ensure!(
        served.len() == 3,
        "nginx spread {CLIENTS} clients over {served:?}, expected all 3 gateways"
    );
    let victim_id = participants[0].gateway.clone();
    let victim_index: usize = victim_id.trim_start_matches("gw-").parse()?;
    let victim_users: Vec<String> = participants
        .iter()
        .filter(|p| p.gateway == victim_id)
        .map(|p| p.user.clone())
        .collect();

    // Traffic: every client sends to both rooms in turns.
    let acked = Arc::new(AtomicUsize::new(0));
    let traffic_started = Instant::now();
    let mut tasks = Vec::new();
    for mut p in participants {
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..SENDS_PER_CLIENT {
                let room = ROOMS[i % ROOMS.len()];
                let client_id = format!("{}-{i}", p.user);
                p.send(room, &client_id, &format!("hello {i} from {}", p.user))
                    .await?;
                acked.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            anyhow::Ok(p)
        }));
    }

    // Mid-traffic: drain one gateway.
    chat_testkit::process::eventually(
        Duration::from_secs(60),
        "traffic to reach the kill point",
        || {
            let acked = acked.clone();
            async move { (acked.load(Ordering::Relaxed) >= KILL_AFTER).then_some(()) }
        },
    )
    .await?;
    let victim = &mut gateways[victim_index];
    victim.terminate()?;
    let terminated_at = Instant::now();
    let acked_at_kill = acked.load(Ordering::Relaxed);
    let status = victim
        .wait_exit(Duration::from_secs(GRACE_SECS + 10))
        .await?
        .ok_or_else(|| anyhow::anyhow!("{victim_id} still running after SIGTERM + grace"))?;
    let drained_in = terminated_at.elapsed();
    anyhow::ensure!(
        status.success(),
        "{victim_id} exited with {status} after SIGTERM"
    );
    anyhow::ensure!(
        !probe(&[&format!("{}/healthz", gateways[victim_index].url())])?,
        "the drained gateway still answers its health probe"
    );

    let mut participants = Vec::new();
    for task in tasks {
        participants.push(task.await??);
    }
    let traffic_took = traffic_started.elapsed();

    // Everyone catches up to the end of every room.
    let mut targets = BTreeMap::new();
    for p in &participants {
        for ack in &p.acks {
            let last = targets.entry(ack.room.clone()).or_insert(0);
            *last = ack.seq.max(*last);
        }
    }
    for p in &mut participants {
        p.wait_for(&targets, Duration::from_secs(30)).await?;
    }

    // The drained gateway's clients: closed with 1001, back on a survivor, resumed.
    for p in participants
        .iter()
        .filter(|p| victim_users.contains(&p.user))
    {
        anyhow::ensure!(
            p.closes == [Some(1001)],
            "{} on the drained gateway saw closes {:?}, expected one 1001",
            p.user,
            p.closes
        );
        anyhow::ensure!(
            p.gateway != victim_id && p.gateways.len() == 2,
            "{} reconnected to {:?}",
            p.user,
            p.gateways
        );
        anyhow::ensure!(
            p.reconnects.iter().all(|t| *t < Duration::from_secs(10)),
            "{} reconnect took {:?}",
            p.user,
            p.reconnects
        );
    }
    for p in participants
        .iter()
        .filter(|p| !victim_users.contains(&p.user))
    {
        anyhow::ensure!(
            p.closes.is_empty(),
            "{} (not on the drained gateway) lost its connection: {:?}",
            p.user,
            p.closes
        );
    }

    let verdict = check(&participants);
    let resends = participants
        .iter()
        .flat_map(|p| &p.acks)
        .filter(|a| a.duplicate)
        .count();
    eprintln!(
        "scale-out: boot {booted:?}; traffic {traffic_took:?}; SIGTERM after {acked_at_kill} acks, \
         {victim_id} drained in {drained_in:?}; {} clients moved ({:?}); messages {:?}; \
         {} deliveries; duplicate acks {resends}; lost {}, duplicated {}, out of order {}",
        victim_users.len(),
        participants
            .iter()
            .flat_map(|p| &p.reconnects)
            .collect::<Vec<_>>(),
        verdict.messages,
        verdict.deliveries,
        verdict.lost,
        verdict.duplicated,
        verdict.out_of_order,
    );
    anyhow::ensure!(
        verdict.problems.is_empty(),
        "checker: {:#?}",
        verdict.problems
    );
    anyhow::ensure!(
        verdict.messages.values().sum::<u64>() == (CLIENTS * SENDS_PER_CLIENT) as u64,
        "expected {} messages, got {:?}",
        CLIENTS * SENDS_PER_CLIENT,
        verdict.messages
    );

    // History and presence drain on SIGTERM too: they stop within their grace period
    // with a clean exit, while the other replica keeps serving.
    for service in [&mut histories[1], &mut presences[1]] {
        service.terminate()?;
        let status = service
            .wait_exit(Duration::from_secs(15))
            .await?
            .ok_or_else(|| anyhow::anyhow!("{} still running after SIGTERM", service.name))?;
        anyhow::ensure!(status.success(), "{} exited with {status}", service.name);
    }
    for p in participants {
        p.leave().await;
    }
    Ok(())
}
