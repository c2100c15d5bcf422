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

use chat_e2e::{Harness, Participant, Store, Topology, check, probe};

const ROOMS: [&str; 2] = ["lobby", "ops"];
const CLIENTS: usize = 6;
const SENDS_PER_CLIENT: usize = 40;
/// SIGTERM goes out once this share of all sends was acked.
const KILL_AFTER: usize = CLIENTS * SENDS_PER_CLIENT * 2 / 5;
const GRACE_SECS: u64 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateways_behind_nginx_scale_out_and_drain_without_loss() -> anyhow::Result<()> {
    Harness::run("scale-out", Duration::from_secs(180), scenario).await
}

async fn scenario(h: &Harness) -> anyhow::Result<()> {
    let started = Instant::now();
    // Gateways spread over the history and presence replicas.
    let mut running = Topology::new()
        .gateways(3)
        .gateways_env("CHAT_SHUTDOWN_GRACE_SECS", GRACE_SECS.to_string())
        .history(2, Store::Mongo)
        .presences(2)
        .nginx()
        .start(h)
        .await?;
    let nginx = running.nginx()?;
    let booted = started.elapsed();

    // The HEALTHCHECK probes of the images agree with the running services.
    let gateway_health = format!("{}/healthz", running.gateways[0].url());
    anyhow::ensure!(
        probe(&[&gateway_health])?,
        "chat-probe {gateway_health} failed"
    );
    for service in running.histories.iter().chain(&running.presences) {
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
    let victim = &mut running.gateways[victim_index];
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
        !probe(&[&format!("{}/healthz", running.gateways[victim_index].url())])?,
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
    for service in [&mut running.histories[1], &mut running.presences[1]] {
        service.stop(Duration::from_secs(15)).await?;
    }
    for p in participants {
        p.leave().await;
    }
    Ok(())
}
