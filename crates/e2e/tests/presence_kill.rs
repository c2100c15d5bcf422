//! Guarantee 5 (docs/architecture.md) with real crashes, every service a process: a
//! gateway killed with SIGKILL says no goodbye, yet its users go offline within the
//! presence TTL plus one heartbeat interval, and the members of their rooms get the
//! offline event from a surviving gateway. Also: a `Detach` that failed while presence
//! was down is retried once presence is back; a gateway killed and restarted at once
//! under the same id does not keep its dead users online; a hung presence service holds
//! up no user's `hello` behind another's.
//!
//! The kill is also run on a 3-master Redis Cluster, with the victim's users' presence
//! keys on every master (presence splits users over buckets spread over the masters).
//!
//! Every case runs history on its embedded store, gateways in JWT mode, one
//! `redis-server` (or the cluster), and presence on Redis with a short lease
//! (`CHAT_PRESENCE_TTL_MS`), or a listener that never answers in its place.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chat_e2e::{Harness, Redis, Running, Service, Topology, http_get, jwt};
use chat_testkit::process::eventually;
use chat_testkit::ws::WsClient;
use serde_json::{Value, json};

const SECRET: &str = "presence-kill-test-secret-0123456789";
const TTL: Duration = Duration::from_millis(1500);
/// The whole case, setup included.
const CASE_TIMEOUT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_gateway_users_go_offline_within_ttl_plus_one_heartbeat() -> anyhow::Result<()> {
    run("presence-gateway-kill9", gateway_kill9).await
}

async fn gateway_kill9(h: &Harness) -> anyhow::Result<()> {
    // The scene keeps bob's client until the kill: dropping it would close him politely.
    let mut scene = Scene::start(h).await?;
    let alice = &mut scene.alice;
    let online = alice
        .request(json!({"type": "presence", "users": ["bob"]}))
        .await?;
    anyhow::ensure!(online["users"]["bob"] == true, "bob not online: {online}");

    scene.running.gateways[VICTIM].kill();
    let killed_at = Instant::now();
    let event = loop {
        let frame = alice.recv().await?;
        if frame["type"] == "presence" {
            break frame;
        }
    };
    let took = killed_at.elapsed();
    bob_event(&event, false)?;
    // TTL + one heartbeat interval (TTL / 3), plus scheduling slack for a loaded 2-core box.
    let bound = TTL + TTL / 3 + Duration::from_millis(700);
    eprintln!("offline event {took:?} after SIGKILL (TTL {TTL:?}, bound {bound:?})");
    anyhow::ensure!(
        took <= bound,
        "offline event after {took:?}, bound {bound:?}"
    );
    // Exactly one event: no second one within another lease.
    bob_offline_once(alice, TTL).await
}

/// The kill on a Redis Cluster (fan-out and presence): the victim holds users whose
/// presence keys sit on every master, and each of them goes offline within the TTL plus
/// one heartbeat, once, told to the room by the survivor. (Every bucket sweeps its own
/// copy of the dead gateway's lease: no step may wait on another shard's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_gateway_users_on_every_cluster_shard_go_offline() -> anyhow::Result<()> {
    run("presence-gateway-kill9-cluster", gateway_kill9_cluster).await
}

async fn gateway_kill9_cluster(h: &Harness) -> anyhow::Result<()> {
    /// Users on the victim. Fixed names, so where their keys land is fixed too; the
    /// test checks that they cover every master rather than trusting it.
    const VICTIMS: [&str; 9] = [
        "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
    ];
    let mut running = kill_topology().redis(Redis::Cluster).start(h).await?;
    let mut alice = WsClient::connect(&ws_url(&running.gateways[0], "alice")?).await?;
    alice.join("watch", None).await?;
    // Kept until the kill: dropping a client would close it politely.
    let mut victims = Vec::new();
    for user in VICTIMS {
        let mut client = WsClient::connect(&ws_url(&running.gateways[VICTIM], user)?).await?;
        client.join("watch", None).await?;
        let event = next_presence(&mut alice, 2 * TTL).await?;
        user_event(&event, user, true)?;
        victims.push(client);
    }

    // Where each user's online status lives: every master holds some of them.
    let cluster = running.redis_cluster()?;
    let mut shard_of = BTreeMap::new();
    for node in cluster.addrs() {
        let keys = cluster
            .command(node, &["--scan", "--pattern", "presence:*user:*"])
            .await?;
        for key in keys.split_whitespace() {
            // `<prefix>user:<uid>`, not its `:gws` and `:rooms` sets.
            match key.rsplit_once(":user:") {
                Some((_, user)) if !user.contains(':') => {
                    shard_of.insert(user.to_owned(), node);
                }
                _ => {}
            }
        }
    }
    let shards: BTreeSet<_> = VICTIMS.iter().filter_map(|u| shard_of.get(*u)).collect();
    anyhow::ensure!(
        shards.len() == cluster.addrs().len(),
        "the victim's users' keys are on {} of {} masters: {shard_of:?}",
        shards.len(),
        cluster.addrs().len()
    );

    eprintln!("the victim's users' status keys by master: {shard_of:?}");

    running.gateways[VICTIM].kill();
    let killed_at = Instant::now();
    // TTL + one heartbeat interval (TTL / 3), plus scheduling slack for a loaded 2-core box.
    let bound = TTL + TTL / 3 + Duration::from_millis(700);
    let mut offline = BTreeMap::new();
    while offline.len() < VICTIMS.len() {
        let event = next_presence(&mut alice, 2 * bound).await?;
        let user = event["user"].as_str().unwrap_or_default().to_owned();
        anyhow::ensure!(
            VICTIMS.contains(&user.as_str()),
            "event for {user}: {event}"
        );
        user_event(&event, &user, false)?;
        anyhow::ensure!(
            offline.insert(user, killed_at.elapsed()).is_none(),
            "a second offline event: {event}"
        );
    }
    drop(victims);
    eprintln!("offline events after SIGKILL (TTL {TTL:?}, bound {bound:?}): {offline:?}");
    let late: Vec<_> = offline.iter().filter(|(_, took)| **took > bound).collect();
    anyhow::ensure!(
        late.is_empty(),
        "offline events later than {bound:?}: {late:?}"
    );

    // A query agrees, and nothing more arrives within another lease.
    let mut asked: Vec<&str> = VICTIMS.to_vec();
    asked.push("alice");
    let status = alice
        .request(json!({"type": "presence", "users": asked}))
        .await?;
    let mut expected: serde_json::Map<String, Value> = VICTIMS
        .iter()
        .map(|u| ((*u).to_owned(), json!(false)))
        .collect();
    expected.insert("alice".to_owned(), json!(true));
    anyhow::ensure!(
        status["users"] == Value::Object(expected),
        "presence after the events: {status}"
    );
    no_presence_within(&mut alice, TTL).await
}

/// A `Detach` that fails because presence is down at that moment is retried once presence
/// answers again: the user's online period ends and the room told `online` hears
/// `offline` exactly once. (The gateway's lease never lapses here, so no sweep steps in:
/// without the retry nobody would ever tell the room.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_detach_is_retried_when_presence_is_back() -> anyhow::Result<()> {
    run("presence-detach-retry", detach_retry).await
}

async fn detach_retry(h: &Harness) -> anyhow::Result<()> {
    const TTL: Duration = Duration::from_secs(4);
    let mut running = Topology::new()
        .gateway_env(0, "CHAT_GATEWAY_ID", "gw-retry")
        .presence_ttl(TTL)
        .jwt_secret(SECRET)
        .start(h)
        .await?;
    let gateway = &running.gateways[0];
    let gateway_addr = gateway.addr;
    let (mut alice, bob) = alice_watches_bob(gateway, gateway, 2 * TTL).await?;

    // Presence goes away; bob's last connection closes meanwhile.
    running.presences[0].stop(TTL).await?;
    bob.close().await;
    eventually(2 * TTL, "bob's Detach to fail", || async {
        let (_, text) = http_get(gateway_addr, "/metrics").await.ok()?;
        (failed_detaches(&text) >= 1.0).then_some(())
    })
    .await?;

    // Presence is back on the same address, well within the gateway's lease.
    tokio::time::timeout(TTL, running.presences[0].restart())
        .await
        .map_err(|_| anyhow::anyhow!("presence did not bind again within {TTL:?}"))??;
    let event = next_presence(&mut alice, 2 * TTL).await?;
    bob_event(&event, false)?;
    // Exactly one event: let another heartbeat pass.
    bob_offline_once(&mut alice, TTL / 2).await
}

/// A gateway process killed and restarted under the same id (as a container restarted in
/// its pod, whose name is the id) must not keep the dead process's users online in
/// presence: they go offline and their rooms hear it, as for any killed gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_restarted_under_its_id_does_not_keep_its_dead_users() -> anyhow::Result<()> {
    run("presence-gateway-restart", gateway_restart).await
}

async fn gateway_restart(h: &Harness) -> anyhow::Result<()> {
    let mut scene = Scene::start(h).await?;
    // The victim dies and a new process takes its place under the same id within the
    // lease (a container restarted in its pod keeps the pod name), heartbeating at once.
    let victim = &mut scene.running.gateways[VICTIM];
    victim.kill();
    let killed_at = Instant::now();
    victim.restart().await?;
    // bob's connection died with the old process: he is offline, and the room hears it
    // as from any killed gateway.
    let event = next_presence(&mut scene.alice, 2 * TTL + Duration::from_secs(2)).await?;
    bob_event(&event, false)?;
    eprintln!(
        "offline event {:?} after SIGKILL and restart",
        killed_at.elapsed()
    );
    Ok(())
}

/// A presence service that accepts connections and never answers (its host hung, or a
/// network drop): every presence call of the gateway waits out its deadline. Chat goes
/// on: one user's slow call must not hold up other users' connections, whose `hello`
/// waits only for their own `Attach`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_presence_delays_no_user_behind_another() -> anyhow::Result<()> {
    run("presence-hung", hung_presence).await
}

async fn hung_presence(h: &Harness) -> anyhow::Result<()> {
    const USERS: usize = 200;
    // Accepts and holds every connection, reads nothing, answers nothing. (The task ends
    // with the test's runtime.)
    let hung = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let hung_addr = hung.local_addr()?;
    tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = hung.accept().await {
            sockets.push(socket);
        }
    });
    let running = Topology::new()
        .gateway_env(0, "CHAT_GATEWAY_ID", "gw-hung")
        .presence_at(format!("http://{hung_addr}"))
        .jwt_secret(SECRET)
        .start(h)
        .await?;
    let gateway = &running.gateways[0];

    // Each Attach waits out the call deadline (2 s); all of them at once.
    let urls = (0..USERS)
        .map(|u| ws_url(gateway, &format!("user{u}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let started = Instant::now();
    let mut connects = tokio::task::JoinSet::new();
    for url in urls {
        connects.spawn(async move { WsClient::connect(&url).await });
    }
    let clients = connects
        .join_all()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    let took = started.elapsed();
    eprintln!("{USERS} hellos with presence hung: {took:?}");
    anyhow::ensure!(clients.len() == USERS, "{} clients", clients.len());
    // One deadline, plus slack for 200 handshakes on a loaded 2-core box; users queued
    // behind each other would take several deadlines.
    anyhow::ensure!(
        took < Duration::from_secs(5),
        "{USERS} hellos took {took:?}"
    );
    Ok(())
}

/// Runs one case on its own harness with [`CASE_TIMEOUT`] ([`Harness::run`]).
async fn run(
    test: &str,
    body: impl AsyncFnOnce(&Harness) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    Harness::run(test, CASE_TIMEOUT, body).await
}

/// Index of the `victim` gateway in a [`Scene`].
const VICTIM: usize = 1;

/// The topology of the kill tests: presence with lease [`TTL`], gateway `survivor` and
/// gateway `victim` (index [`VICTIM`]), JWT mode.
fn kill_topology() -> Topology {
    Topology::new()
        .gateways(2)
        .gateway_env(0, "CHAT_GATEWAY_ID", "survivor")
        .gateway_env(VICTIM, "CHAT_GATEWAY_ID", "victim")
        .presence_ttl(TTL)
        .jwt_secret(SECRET)
}

/// The scene of the kill tests: presence (lease [`TTL`]), gateway `survivor` and gateway
/// `victim`, with alice on the survivor watching bob on the victim.
struct Scene {
    running: Running,
    alice: WsClient,
    /// Kept until the scene ends: dropping it would close bob's connection politely.
    _bob: WsClient,
}

impl Scene {
    async fn start(h: &Harness) -> anyhow::Result<Self> {
        let running = kill_topology().start(h).await?;
        let (alice, bob) =
            alice_watches_bob(&running.gateways[0], &running.gateways[VICTIM], 2 * TTL).await?;
        Ok(Self {
            running,
            alice,
            _bob: bob,
        })
    }
}

/// The WebSocket URL of `gateway` for `user`, with a token.
fn ws_url(gateway: &Service, user: &str) -> anyhow::Result<String> {
    Ok(format!(
        "ws://{}/v1/ws?token={}",
        gateway.addr,
        jwt(SECRET, user, 3600)?
    ))
}

/// alice on gateway `alice_at` and bob on `bob_at` in room `watch`, once alice heard bob
/// come online (within `within`). alice joins first, so that bob's online event proves
/// his room entry reached presence (`joined` is answered before the entry is reported):
/// killed before that, nobody would have been told anything.
async fn alice_watches_bob(
    alice_at: &Service,
    bob_at: &Service,
    within: Duration,
) -> anyhow::Result<(WsClient, WsClient)> {
    let mut alice = WsClient::connect(&ws_url(alice_at, "alice")?).await?;
    alice.join("watch", None).await?;
    let mut bob = WsClient::connect(&ws_url(bob_at, "bob")?).await?;
    bob.join("watch", None).await?;
    let event = next_presence(&mut alice, within).await?;
    bob_event(&event, true)?;
    Ok((alice, bob))
}

/// The next `presence` event, waiting at most `within`.
async fn next_presence(client: &mut WsClient, within: Duration) -> anyhow::Result<Value> {
    let next = async {
        loop {
            let frame = client.recv().await?;
            if frame["type"] == "presence" {
                return anyhow::Ok(frame);
            }
        }
    };
    tokio::time::timeout(within, next).await?
}

/// `event` is the one saying that bob went online (or offline) in `watch`.
fn bob_event(event: &Value, online: bool) -> anyhow::Result<()> {
    user_event(event, "bob", online)
}

/// `event` is the one saying that `user` went online (or offline) in `watch`.
fn user_event(event: &Value, user: &str, online: bool) -> anyhow::Result<()> {
    let expected = json!({"type": "presence", "room": "watch", "user": user, "online": online});
    anyhow::ensure!(*event == expected, "expected {expected}, got {event}");
    Ok(())
}

/// After bob's offline event: a presence query agrees (bob offline, alice online), and no
/// second event arrives within `quiet` (the wait is the check: nothing may happen in it).
async fn bob_offline_once(alice: &mut WsClient, quiet: Duration) -> anyhow::Result<()> {
    let status = alice
        .request(json!({"type": "presence", "users": ["bob", "alice"]}))
        .await?;
    anyhow::ensure!(
        status["users"] == json!({"bob": false, "alice": true}),
        "presence after the event: {status}"
    );
    no_presence_within(alice, quiet).await
}

/// No presence event reaches `client` within `quiet` (the wait is the check: nothing may
/// happen in it).
async fn no_presence_within(client: &mut WsClient, quiet: Duration) -> anyhow::Result<()> {
    tokio::time::sleep(quiet).await;
    // A ping's answer comes after anything already sent.
    client.request(json!({"type": "ping"})).await?;
    let backlog = client.drain_backlog();
    anyhow::ensure!(
        !backlog.iter().any(|f| f["type"] == "presence"),
        "a second presence event: {backlog:?}"
    );
    Ok(())
}

/// The gateway's series `grpc_client_requests_total` for presence `Detach` calls that
/// did not end OK.
fn failed_detaches(exposition: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| {
            l.starts_with(
                r#"grpc_client_requests_total{service="chat.presence.v1.Presence",method="Detach","#,
            ) && !l.contains(r#"code="OK""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
