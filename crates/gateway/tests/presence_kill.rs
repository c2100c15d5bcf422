//! Guarantee 5 (docs/architecture.md) with a real crash: a gateway process killed with SIGKILL says no goodbye,
//! yet its users go offline within the presence TTL plus one heartbeat interval, and the
//! members of their rooms get the offline event from a surviving gateway.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_gateway::{Gateway, Settings};
use chat_testkit::process::{ChildGuard, eventually, free_port, wait_for_port};
use chat_testkit::redis::RedisServer;
use chat_testkit::ws::WsClient;
use serde_json::json;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "presence-kill-test-secret-0123456789";
const TTL: Duration = Duration::from_millis(1500);

fn token(user: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        + 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": user, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).expect("non-empty secret"),
    )
    .expect("encodes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_gateway_users_go_offline_within_ttl_plus_one_heartbeat() -> anyhow::Result<()> {
    let backends = Backends::start().await?;
    // bob's client is kept (bound) until the kill: dropping it would close him politely.
    let Victim {
        process: mut victim,
        mut alice,
        bob: _bob,
        presence_url: _,
        addr: _,
    } = backends.victim_watched_by_alice().await?;
    let online = alice
        .request(json!({"type": "presence", "users": ["bob"]}))
        .await?;
    assert_eq!(online["users"]["bob"], true);

    victim.kill();
    let killed_at = Instant::now();
    let event = loop {
        let frame = alice.recv().await?;
        if frame["type"] == "presence" {
            break frame;
        }
    };
    let took = killed_at.elapsed();
    assert_eq!(
        event,
        json!({"type": "presence", "room": "watch", "user": "bob", "online": false})
    );
    // TTL + one heartbeat interval (TTL / 3), plus scheduling slack for a loaded 2-core box.
    let bound = TTL + TTL / 3 + Duration::from_millis(700);
    eprintln!("offline event {took:?} after SIGKILL (TTL {TTL:?}, bound {bound:?})");
    assert!(
        took <= bound,
        "offline event after {took:?}, bound {bound:?}"
    );
    let offline = alice
        .request(json!({"type": "presence", "users": ["bob", "alice"]}))
        .await?;
    assert_eq!(offline["users"], json!({"bob": false, "alice": true}));
    // Exactly one event.
    tokio::time::sleep(TTL).await;
    alice.request(json!({"type": "ping"})).await?;
    assert!(
        !alice
            .drain_backlog()
            .iter()
            .any(|f| f["type"] == "presence")
    );
    Ok(())
}

/// Redis and a history service (embedded store) for one test, stopped when dropped.
struct Backends {
    redis: RedisServer,
    history_url: String,
    /// Cancelled when the test ends: stops every in-process server of the test.
    stop: CancellationToken,
    _stop_all: tokio_util::sync::DropGuard,
    _dir: tempfile::TempDir,
}

impl Backends {
    async fn start() -> anyhow::Result<Self> {
        let redis = RedisServer::start().await?;
        let dir = tempfile::tempdir()?;
        let stop = CancellationToken::new();
        let store = chat_history::open_store(&chat_history::Settings {
            data_dir: dir.path().to_owned(),
            ..Default::default()
        })
        .await?;
        let history = chat_history::HistoryServer::bind(
            ([127, 0, 0, 1], 0).into(),
            store,
            &mut chat_metrics::Metrics::new("test"),
        )
        .await?;
        let history_url = format!("http://{}", history.local_addr());
        tokio::spawn(history.run(stop.clone()));
        Ok(Self {
            redis,
            history_url,
            _stop_all: stop.clone().drop_guard(),
            stop,
            _dir: dir,
        })
    }

    /// A presence service on Redis with `ttl`, bound to `addr`, until `stop`.
    async fn start_presence(
        &self,
        ttl: Duration,
        addr: std::net::SocketAddr,
        stop: CancellationToken,
    ) -> anyhow::Result<(
        std::net::SocketAddr,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    )> {
        let store: Arc<dyn chat_presence::PresenceStore> = Arc::new(
            chat_presence::store::redis::RedisPresence::connect(&self.redis.url(), ttl).await?,
        );
        let server = chat_presence::PresenceServer::bind(
            addr,
            store,
            &mut chat_metrics::Metrics::new("test"),
        )
        .await?;
        let addr = server.local_addr();
        Ok((addr, tokio::spawn(server.run(stop))))
    }

    /// An in-process gateway `id` using `presence_url`, until the test ends.
    async fn start_gateway(
        &self,
        id: &str,
        presence_url: &str,
    ) -> anyhow::Result<std::net::SocketAddr> {
        let settings = Settings {
            http_addr: ([127, 0, 0, 1], 0).into(),
            history_url: self.history_url.clone(),
            presence_url: presence_url.to_owned(),
            redis_url: Some(self.redis.url()),
            jwt_secret: Some(chat_gateway::settings::Secret::new(SECRET)),
            gateway_id: id.into(),
            workers: 1,
            shutdown_grace_secs: 1,
            ..Default::default()
        };
        let gateway = Gateway::build(
            &settings,
            self.stop.clone(),
            chat_metrics::Metrics::new("gateway"),
        )
        .await?;
        let addr = gateway.local_addr()?;
        tokio::spawn(gateway.run());
        Ok(addr)
    }

    /// A real `chat-gateway` process with the id `victim` on `addr`, once it listens.
    async fn spawn_victim(
        &self,
        addr: std::net::SocketAddr,
        presence_url: &str,
    ) -> anyhow::Result<ChildGuard> {
        let mut victim = ChildGuard::spawn(
            "chat-gateway",
            Command::new(env!("CARGO_BIN_EXE_chat-gateway"))
                .env("CHAT_HTTP_ADDR", addr.to_string())
                .env("CHAT_HISTORY_URL", &self.history_url)
                .env("CHAT_PRESENCE_URL", presence_url)
                .env("CHAT_REDIS_URL", self.redis.url())
                .env("CHAT_AUTH_MODE", "jwt")
                .env("CHAT_JWT_SECRET", SECRET)
                .env("CHAT_GATEWAY_ID", "victim")
                .env("CHAT_HTTP_WORKERS", "1")
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null()),
        )?;
        wait_for_port(addr, Duration::from_secs(20), &mut victim).await?;
        Ok(victim)
    }
}

/// The scene of the kill tests: presence (TTL [`TTL`]), a survivor gateway in this
/// process, and the victim, a `chat-gateway` process, with bob on it watched by alice.
struct Victim {
    presence_url: String,
    /// Where the victim listens (and a successor may listen again).
    addr: std::net::SocketAddr,
    process: ChildGuard,
    alice: WsClient,
    bob: WsClient,
}

impl Backends {
    async fn victim_watched_by_alice(&self) -> anyhow::Result<Victim> {
        let (presence_addr, _) = self
            .start_presence(TTL, ([127, 0, 0, 1], 0).into(), self.stop.clone())
            .await?;
        let presence_url = format!("http://{presence_addr}");
        let survivor = self.start_gateway("survivor", &presence_url).await?;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let process = self.spawn_victim(addr, &presence_url).await?;
        let (alice, bob) = alice_watches_bob(survivor, addr, 2 * TTL).await?;
        Ok(Victim {
            presence_url,
            addr,
            process,
            alice,
            bob,
        })
    }
}

/// alice on gateway `alice_at` and bob on `bob_at` in room `watch`, once alice heard bob
/// come online (within `within`). alice joins first, so that bob's online event proves
/// his room entry reached presence (`joined` is answered before the entry is reported):
/// killed before that, nobody would have been told anything.
async fn alice_watches_bob(
    alice_at: std::net::SocketAddr,
    bob_at: std::net::SocketAddr,
    within: Duration,
) -> anyhow::Result<(WsClient, WsClient)> {
    let mut alice =
        WsClient::connect(&format!("ws://{alice_at}/v1/ws?token={}", token("alice"))).await?;
    alice.join("watch", None).await?;
    let mut bob = WsClient::connect(&format!("ws://{bob_at}/v1/ws?token={}", token("bob"))).await?;
    bob.join("watch", None).await?;
    assert_eq!(
        next_presence(&mut alice, within).await?,
        json!({"type": "presence", "room": "watch", "user": "bob", "online": true})
    );
    Ok((alice, bob))
}

/// The next `presence` event, waiting at most `within`.
async fn next_presence(
    client: &mut WsClient,
    within: Duration,
) -> anyhow::Result<serde_json::Value> {
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

/// A `Detach` that fails because presence is down at that moment is retried once presence
/// answers again: the user's online period ends and the room told `online` hears
/// `offline` exactly once. (The gateway's lease never lapses here, so no sweep steps in:
/// without the retry nobody would ever tell the room.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_detach_is_retried_when_presence_is_back() -> anyhow::Result<()> {
    const TTL: Duration = Duration::from_secs(4);
    let backends = Backends::start().await?;
    let presence_stop = CancellationToken::new();
    let (presence_addr, presence) = backends
        .start_presence(TTL, ([127, 0, 0, 1], 0).into(), presence_stop.clone())
        .await?;
    let gateway_addr = backends
        .start_gateway("gw-retry", &format!("http://{presence_addr}"))
        .await?;
    let (mut alice, bob) = alice_watches_bob(gateway_addr, gateway_addr, 2 * TTL).await?;

    // Presence goes away; bob's last connection closes meanwhile.
    presence_stop.cancel();
    presence.await??;
    bob.close().await;
    let metrics = format!("http://{gateway_addr}/metrics");
    eventually(2 * TTL, "bob's Detach to fail", || async {
        let text = reqwest::get(&metrics).await.ok()?.text().await.ok()?;
        (failed_detaches(&text) >= 1.0).then_some(())
    })
    .await?;

    // Presence is back on the same address, well within the gateway's lease.
    let presence_stop = CancellationToken::new();
    let _stop_presence = presence_stop.clone().drop_guard();
    let (_, _presence) = eventually(TTL, "presence to bind again", || async {
        backends
            .start_presence(TTL, presence_addr, presence_stop.clone())
            .await
            .ok()
    })
    .await?;
    assert_eq!(
        next_presence(&mut alice, 2 * TTL).await?,
        json!({"type": "presence", "room": "watch", "user": "bob", "online": false})
    );
    let status = alice
        .request(json!({"type": "presence", "users": ["bob", "alice"]}))
        .await?;
    assert_eq!(status["users"], json!({"bob": false, "alice": true}));
    // Exactly one event: let another heartbeat pass.
    tokio::time::sleep(TTL / 2).await;
    alice.request(json!({"type": "ping"})).await?;
    assert!(
        !alice
            .drain_backlog()
            .iter()
            .any(|f| f["type"] == "presence")
    );
    Ok(())
}

/// A gateway process killed and restarted under the same id (as a container restarted in
/// its pod, whose name is the id) must not keep the dead process's users online in
/// presence: they go offline and their rooms hear it, as for any killed gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_restarted_under_its_id_does_not_keep_its_dead_users() -> anyhow::Result<()> {
    let backends = Backends::start().await?;
    let Victim {
        presence_url,
        addr: victim_addr,
        process: mut victim,
        mut alice,
        bob: _bob,
    } = backends.victim_watched_by_alice().await?;

    // The victim dies and a new process takes its place under the same id within the
    // lease (a container restarted in its pod keeps the pod name), heartbeating at once.
    victim.kill();
    let killed_at = Instant::now();
    let _reborn = backends.spawn_victim(victim_addr, &presence_url).await?;
    // bob's connection died with the old process: he is offline, and the room hears it
    // as from any killed gateway.
    let event = next_presence(&mut alice, 2 * TTL + Duration::from_secs(2)).await?;
    assert_eq!(
        event,
        json!({"type": "presence", "room": "watch", "user": "bob", "online": false})
    );
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
    const USERS: usize = 200;
    let backends = Backends::start().await?;

    // Accepts and holds every connection, reads nothing, answers nothing.
    let hung = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let hung_addr = hung.local_addr()?;
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = hung.accept().await {
            sockets.push(socket);
        }
    });
    let _stop_hung = AbortOnDrop(held);

    let gateway_addr = backends
        .start_gateway("gw-hung", &format!("http://{hung_addr}"))
        .await?;

    // Each Attach waits out the call deadline (2 s); all of them at once.
    let started = Instant::now();
    let clients = futures_util::future::try_join_all((0..USERS).map(|u| {
        let url = format!(
            "ws://{gateway_addr}/v1/ws?token={}",
            token(&format!("user{u}"))
        );
        async move { WsClient::connect(&url).await }
    }))
    .await?;
    let took = started.elapsed();
    eprintln!("{USERS} hellos with presence hung: {took:?}");
    assert_eq!(clients.len(), USERS);
    // One deadline, plus slack for 200 handshakes on a loaded 2-core box; users queued
    // behind each other would take several deadlines.
    assert!(
        took < Duration::from_secs(5),
        "{USERS} hellos took {took:?}"
    );
    Ok(())
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
