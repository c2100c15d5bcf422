//! Scale check of the Redis presence store (not a timed test; numbers are printed):
//!
//! - `Query` of 500 users: one MGET; median and p99 of 200 runs;
//! - heartbeat of 100k users held by one gateway (chunks of 1000 users per EVALSHA);
//! - Redis commands per heartbeat interval with 100k users, ttl 30 s, interval 10 s,
//!   from `INFO commandstats` before and after (commands run inside scripts are counted
//!   by Redis too, so both round trips and total commands are shown);
//! - the same heartbeat through gRPC as a gateway sends it: 100k users with 64-character
//!   ids (the longest) in calls of 5,000 users, to a `PresenceServer` on port 0;
//! - releasing a dead gateway that held 100k users, each told in one room: background
//!   sweep steps, then claims of the offline events;
//! - throughput on 1 primary vs a 3-master Redis Cluster (64 buckets): connect +
//!   disconnect, heartbeats of 4 gateways at once, and the sweep of a dead gateway
//!   (medians of [`RUNS`]).
//!
//! Run: `cargo bench -p chat-presence --bench presence_scale` (starts its own
//! `redis-server` on a free port, and its own cluster of three;
//! `CHAT_TEST_REDIS_SERVER` / `CHAT_TEST_REDIS_CLI` pick the executables).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chat_model::{RoomId, UserId};
use chat_presence::PresenceStore;
use chat_presence::store::memory::MemoryPresence;
use chat_presence::store::redis::RedisPresence;
use chat_testkit::redis::RedisServer;
use chat_testkit::redis_cluster::RedisCluster;
use fred::clients::Client;
use fred::interfaces::ClientLike;
use fred::types::config::Config;
use fred::types::{Builder, InfoKind};
use futures_util::future::join_all;

const USERS: usize = 100_000;
const QUERY_USERS: usize = 500;
const QUERY_RUNS: usize = 200;
const TTL: Duration = Duration::from_secs(30);
const INTERVAL: Duration = Duration::from_secs(10);
/// Users per gRPC heartbeat call, as the gateway sends them.
const GRPC_CHUNK: usize = 5_000;
/// Connections opened at once in the attach measurement.
const IN_FLIGHT: usize = 64;
/// Runs of each 1-primary-vs-cluster measurement; the median is shown.
const RUNS: usize = 3;
/// Users connected and disconnected in the throughput comparison.
const CHURN_USERS: usize = 10_000;
/// Gateways heartbeating at once in the throughput comparison, each with
/// `USERS / HEARTBEAT_GATEWAYS` users.
const HEARTBEAT_GATEWAYS: usize = 4;
/// Users of the dead gateway in the sweep comparison, each told in one room.
const SWEPT_USERS: usize = 20_000;

fn user(i: usize) -> UserId {
    UserId::parse(&format!("user{i}")).unwrap_or_else(|e| panic!("user id: {e}"))
}

fn median_and_p99(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let p99 = samples[(samples.len() * 99 / 100).min(samples.len() - 1)];
    (samples[samples.len() / 2], p99)
}

/// `INFO commandstats` as command -> calls (without INFO itself).
async fn command_calls(client: &Client) -> anyhow::Result<BTreeMap<String, u64>> {
    let text: String = client.info(Some(InfoKind::CommandStats)).await?;
    let mut calls = BTreeMap::new();
    for line in text.lines() {
        let Some((name, stats)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        let n = stats
            .split(',')
            .find_map(|kv| kv.strip_prefix("calls="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if name != "info" {
            calls.insert(name.to_owned(), n);
        }
    }
    Ok(calls)
}

fn diff(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

fn describe(calls: &BTreeMap<String, u64>) -> String {
    calls
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn used_memory(client: &Client) -> anyhow::Result<String> {
    let text: String = client.info(Some(InfoKind::Memory)).await?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("used_memory_human:"))
        .unwrap_or("?")
        .trim()
        .to_owned())
}

struct Table(Vec<(String, String)>);

impl Table {
    fn row(&mut self, what: impl Into<String>, value: impl Into<String>) {
        let (what, value) = (what.into(), value.into());
        println!("  {what}: {value}");
        self.0.push((what, value));
    }

    fn print(&self) {
        let width = self.0.iter().map(|(w, _)| w.len()).max().unwrap_or(0);
        println!("\n| {:width$} | result |", "measurement");
        println!("|{}|--------|", "-".repeat(width + 2));
        for (what, value) in &self.0 {
            println!("| {what:width$} | {value} |");
        }
    }
}

async fn query_latency(store: &dyn PresenceStore) -> anyhow::Result<(Duration, Duration)> {
    // Every 7th user asked, across the whole population; half of them online or not
    // does not matter to MGET.
    let asked: Vec<UserId> = (0..QUERY_USERS).map(|i| user(i * 7 % USERS)).collect();
    let mut samples = Vec::with_capacity(QUERY_RUNS);
    for _ in 0..QUERY_RUNS {
        let start = Instant::now();
        let online = store.online(&asked).await?;
        samples.push(start.elapsed());
        anyhow::ensure!(online.len() == QUERY_USERS);
    }
    Ok(median_and_p99(samples))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut table = Table(Vec::new());
    let server = RedisServer::start().await?;
    let store = RedisPresence::connect(&server.url(), TTL).await?;
    let admin = Builder::from_config(Config::from_url(&server.url())?).build()?;
    admin.init().await?;
    let users: Vec<UserId> = (0..USERS).map(user).collect();
    println!("presence scale check: {USERS} users, ttl {TTL:?}, heartbeat every {INTERVAL:?}");

    // Attach throughput (not the main question, but what a reconnect storm costs).
    let start = Instant::now();
    let attach_users = &users[..10_000];
    for batch in attach_users.chunks(IN_FLIGHT) {
        let calls = batch.iter().map(|u| store.connect("gw-attach", u));
        for result in join_all(calls).await {
            result?;
        }
    }
    let took = start.elapsed();
    table.row(
        format!("attach 10k users, {IN_FLIGHT} in flight"),
        format!(
            "{:.0} ms ({:.0} attach/s)",
            took.as_secs_f64() * 1e3,
            10_000.0 / took.as_secs_f64()
        ),
    );

    // One gateway holding 100k users: its first heartbeat registers them.
    let start = Instant::now();
    store.heartbeat("gw-1", &users).await?;
    table.row(
        "first heartbeat, 100k users (registers them)",
        format!("{:.0} ms", start.elapsed().as_secs_f64() * 1e3),
    );
    let mut beats = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        store.heartbeat("gw-1", &users).await?;
        beats.push(start.elapsed());
    }
    let (median, _) = median_and_p99(beats);
    table.row(
        "heartbeat, 100k users, steady state (median of 5)",
        format!("{:.0} ms", median.as_secs_f64() * 1e3),
    );

    let (median, p99) = query_latency(&store).await?;
    table.row(
        format!("query {QUERY_USERS} users, median / p99 of {QUERY_RUNS}"),
        format!(
            "{:.3} ms / {:.3} ms",
            median.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        ),
    );
    let before = command_calls(&admin).await?;
    store.online(&users[..QUERY_USERS]).await?;
    let calls = diff(&before, &command_calls(&admin).await?);
    table.row(
        format!("Redis commands per query of {QUERY_USERS}"),
        describe(&calls),
    );

    // One heartbeat interval: the gateway heartbeats once and claims exits once (which
    // runs one sweep step); the service's background sweeper ticks every second (nothing
    // expired).
    let sweeps_per_interval =
        (INTERVAL.as_millis() / chat_presence::server::sweep_interval(TTL).as_millis()).max(1);
    let before = command_calls(&admin).await?;
    store.heartbeat("gw-1", &users).await?;
    anyhow::ensure!(!store.sweep().await?);
    anyhow::ensure!(store.take_exits("gw-1", 0, 10_000).await?.exits.is_empty());
    for _ in 0..sweeps_per_interval {
        anyhow::ensure!(!store.sweep().await?);
    }
    let calls = diff(&before, &command_calls(&admin).await?);
    let total: u64 = calls.values().sum();
    let round_trips = calls.get("evalsha").copied().unwrap_or(0);
    table.row(
        format!(
            "Redis commands per {INTERVAL:?} interval, 100k users, 1 gateway \
             (heartbeat, TakeExits, {sweeps_per_interval} background sweeps)"
        ),
        format!("{round_trips} EVALSHA round trips; {total} commands incl. in-script"),
    );
    table.row("  of which", describe(&calls));
    table.row(
        "  per second",
        format!(
            "{:.0} round trips/s, {:.0} commands/s",
            round_trips as f64 / INTERVAL.as_secs_f64(),
            total as f64 / INTERVAL.as_secs_f64()
        ),
    );
    table.row(
        "Redis used_memory, 100k users online",
        used_memory(&admin).await?,
    );

    // The gRPC path: a gateway's heartbeat of 100k long ids in calls of 5,000.
    let long: Vec<String> = (0..USERS).map(|i| format!("{i:0>64}")).collect();
    let grpc_store: std::sync::Arc<dyn PresenceStore> =
        std::sync::Arc::new(RedisPresence::connect(&server.url(), TTL).await?);
    let grpc_server = chat_presence::PresenceServer::bind(
        ([127, 0, 0, 1], 0).into(),
        grpc_store,
        &mut chat_metrics::Metrics::new("test"),
    )
    .await?;
    let url = format!("http://{}", grpc_server.local_addr());
    let stop = tokio_util::sync::CancellationToken::new();
    let serving = tokio::spawn(grpc_server.run(stop.clone()));
    let mut client = chat_proto::presence::presence_client::PresenceClient::connect(url).await?;
    let mut grpc_beats = Vec::new();
    for _ in 0..6 {
        let start = Instant::now();
        for chunk in long.chunks(GRPC_CHUNK) {
            client
                .heartbeat(chat_proto::presence::HeartbeatRequest {
                    gateway: "gw-grpc".into(),
                    users: chunk.to_vec(),
                })
                .await?;
        }
        grpc_beats.push(start.elapsed());
    }
    // The first registered the users; the steady state is the rest.
    let (median, _) = median_and_p99(grpc_beats.split_off(1));
    table.row(
        format!(
            "gRPC heartbeat, 100k users with 64-char ids, {} calls of {GRPC_CHUNK} (median of 5)",
            USERS / GRPC_CHUNK
        ),
        format!(
            "{:.0} ms (first, registering: {:.0} ms)",
            median.as_secs_f64() * 1e3,
            grpc_beats[0].as_secs_f64() * 1e3
        ),
    );
    stop.cancel();
    drop(client);
    let _ = serving.await;

    // A gateway dies holding 100k users, each told in one room: how long releasing it
    // takes (background sweep steps), and handing out its 100k offline events.
    let short = RedisPresence::connect(&server.url(), Duration::from_secs(1)).await?;
    let rooms: Vec<RoomId> = (0..100)
        .map(|r| RoomId::parse(&format!("room{r}")).unwrap_or_else(|e| panic!("room: {e}")))
        .collect();
    // Users of its own: the ones above are held by live gateways and would stay online.
    let doomed: Vec<UserId> = (0..USERS)
        .map(|i| UserId::parse(&format!("dead{i}")).unwrap_or_else(|e| panic!("user id: {e}")))
        .collect();
    short.heartbeat("gw-doomed", &doomed).await?;
    for (chunk_no, chunk) in doomed.chunks(IN_FLIGHT).enumerate() {
        let calls = chunk.iter().enumerate().map(|(i, u)| {
            short.enter_room(
                "gw-doomed",
                u,
                &rooms[(chunk_no * IN_FLIGHT + i) % rooms.len()],
            )
        });
        for result in join_all(calls).await {
            result?;
        }
    }
    // Let its lease run out (the gateway "died" after its last call).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = command_calls(&admin).await?;
    let start = Instant::now();
    let mut sweeps = 1;
    while short.sweep().await? {
        sweeps += 1;
    }
    let swept = start.elapsed();
    let calls = diff(&before, &command_calls(&admin).await?);
    table.row(
        "sweep of a dead gateway, 100k users each told in 1 room",
        format!(
            "{:.0} ms in {sweeps} sweep steps ({} EVALSHA)",
            swept.as_secs_f64() * 1e3,
            calls.get("evalsha").copied().unwrap_or(0)
        ),
    );
    let start = Instant::now();
    let (mut exits, mut claims, mut ack) = (0, 0, 0);
    loop {
        let batch = short.take_exits("gw-live", ack, 10_000).await?;
        if batch.exits.is_empty() {
            break;
        }
        exits += batch.exits.len();
        claims += 1;
        ack = batch.claim;
    }
    table.row(
        "  then claiming its offline events",
        format!(
            "{:.0} ms, {exits} exits in {claims} claims of ≤ 10,000",
            start.elapsed().as_secs_f64() * 1e3
        ),
    );

    // The in-process store, for comparison.
    let memory = MemoryPresence::new(TTL);
    memory.heartbeat("gw-1", &users).await?;
    let start = Instant::now();
    memory.heartbeat("gw-1", &users).await?;
    table.row(
        "memory store: heartbeat, 100k users",
        format!("{:.1} ms", start.elapsed().as_secs_f64() * 1e3),
    );
    let (median, _) = query_latency(&memory).await?;
    table.row(
        format!("memory store: query {QUERY_USERS} users, median"),
        format!("{:.3} ms", median.as_secs_f64() * 1e3),
    );

    // 1 primary vs a 3-master cluster, each fresh.
    let (fresh, cluster) = (RedisServer::start().await?, RedisCluster::start(3).await?);
    for (label, url) in [
        ("1 primary", fresh.url()),
        ("3-master cluster", cluster.url()),
    ] {
        let store = RedisPresence::connect(&url, TTL).await?;
        let short = RedisPresence::connect(&url, Duration::from_secs(1)).await?;
        throughput(&mut table, label, &store, &short).await?;
    }

    table.print();
    let _ = admin.quit().await;
    Ok(())
}

fn per_second(n: usize, took: Duration) -> f64 {
    n as f64 / took.as_secs_f64()
}

fn median(mut rates: Vec<f64>) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

/// Connect + disconnect, heartbeats of several gateways at once, and sweeping a dead
/// gateway, on `store` (ttl 30 s) and `short` (ttl 1 s, for the sweep), as rates.
async fn throughput(
    table: &mut Table,
    label: &str,
    store: &RedisPresence,
    short: &RedisPresence,
) -> anyhow::Result<()> {
    let (mut churn, mut beats, mut sweeps) = (Vec::new(), Vec::new(), Vec::new());
    let room = RoomId::parse("lobby").unwrap_or_else(|e| panic!("room: {e}"));
    for run in 0..RUNS {
        let users: Vec<UserId> = (0..CHURN_USERS)
            .map(|i| UserId::parse(&format!("churn{run}x{i}")).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        let start = Instant::now();
        for batch in users.chunks(IN_FLIGHT) {
            for result in join_all(batch.iter().map(|u| store.connect("gw-churn", u))).await {
                result?;
            }
        }
        for batch in users.chunks(IN_FLIGHT) {
            for result in join_all(batch.iter().map(|u| store.disconnect("gw-churn", u))).await {
                result?;
            }
        }
        churn.push(per_second(2 * CHURN_USERS, start.elapsed()));

        let per_gateway = USERS / HEARTBEAT_GATEWAYS;
        let gateways: Vec<(String, Vec<UserId>)> = (0..HEARTBEAT_GATEWAYS)
            .map(|g| {
                let users = (0..per_gateway)
                    .map(|i| user(g * per_gateway + i))
                    .collect();
                (format!("gw-beat{g}"), users)
            })
            .collect();
        // The first heartbeat registers the users; the next one is the steady state.
        for first in [true, false] {
            let start = Instant::now();
            for result in join_all(gateways.iter().map(|(g, u)| store.heartbeat(g, u))).await {
                result?;
            }
            if !first {
                beats.push(per_second(USERS, start.elapsed()));
            }
        }

        let doomed: Vec<UserId> = (0..SWEPT_USERS)
            .map(|i| UserId::parse(&format!("swept{run}x{i}")).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        let gateway = format!("gw-dead{run}");
        short.heartbeat(&gateway, &doomed).await?;
        for batch in doomed.chunks(IN_FLIGHT) {
            for result in join_all(batch.iter().map(|u| short.enter_room(&gateway, u, &room))).await
            {
                result?;
            }
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let start = Instant::now();
        while short.sweep().await? {}
        sweeps.push(per_second(SWEPT_USERS, start.elapsed()));
        let mut ack = 0;
        loop {
            let batch = short.take_exits("gw-live", ack, 10_000).await?;
            if batch.exits.is_empty() {
                break;
            }
            ack = batch.claim;
        }
    }
    table.row(
        format!("{label}: connect + disconnect, {IN_FLIGHT} in flight (median of {RUNS})"),
        format!("{:.0} calls/s", median(churn)),
    );
    table.row(
        format!("{label}: heartbeat, {HEARTBEAT_GATEWAYS} gateways x {}k users at once, steady state (median of {RUNS})", USERS / HEARTBEAT_GATEWAYS / 1000),
        format!("{:.0} users/s", median(beats)),
    );
    table.row(
        format!(
            "{label}: sweep of a dead gateway, {}k users each in 1 room (median of {RUNS})",
            SWEPT_USERS / 1000
        ),
        format!("{:.0} users/s", median(sweeps)),
    );
    Ok(())
}
