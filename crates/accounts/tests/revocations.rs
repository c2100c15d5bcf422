//! Every operation that ends sessions announces exactly those sessions with its reason;
//! announcing through Redis reaches a subscriber; a failing Redis (throttle or
//! revocations) fails no call, and is counted.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chat_accounts::accounts::{Accounts, Caller, Issued};
use chat_accounts::metrics::AccountsMetrics;
use chat_accounts::password::{HashParams, Password};
use chat_accounts::revocations::{
    LocalRevocations, PublishError, RedisRevocations, RevocationSink,
};
use chat_accounts::store::StoreError;
use chat_accounts::store::embedded::EmbeddedStore;
use chat_accounts::throttle::{ClientAddr, MemoryThrottle, Policies, Throttle, ThrottleKey};
use chat_accounts::{AccountsError, Settings};
use chat_model::revocation::{REVOCATION_CHANNEL, Revocation, RevocationReason};
use chat_testkit::redis::RedisServer;
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use tokio::sync::broadcast;

const PASSWORD: &str = "correct horse battery staple";
const NEW_PASSWORD: &str = "violet lantern quietly orbits";

/// Accounts over an embedded store with cheap hashing, announcing to `sink`.
struct World {
    accounts: Accounts,
    metrics: AccountsMetrics,
    _dir: tempfile::TempDir,
}

async fn world(throttle: Arc<dyn Throttle>, sink: Arc<dyn RevocationSink>) -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = Settings {
        hash_params: HashParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        },
        hash_threads: 2,
        ..Settings::default()
    };
    let store = Arc::new(EmbeddedStore::open(dir.path()).expect("open store"));
    let metrics = AccountsMetrics::default();
    let accounts = Accounts::new(&settings, store, throttle, sink, metrics.clone())
        .await
        .expect("accounts");
    World {
        accounts,
        metrics,
        _dir: dir,
    }
}

async fn local_world() -> (World, broadcast::Receiver<Revocation>) {
    let (tx, rx) = broadcast::channel(16);
    let throttle = Arc::new(MemoryThrottle::new(Policies::default()));
    (
        world(throttle, Arc::new(LocalRevocations::new(tx))).await,
        rx,
    )
}

fn sid(issued: &Issued) -> String {
    issued
        .refresh_token
        .split_once('.')
        .expect("session.secret")
        .0
        .to_owned()
}

impl World {
    async fn sign_up(&self, username: &str) -> Issued {
        self.accounts
            .sign_up(username, &Password::new(PASSWORD), "", None)
            .await
            .expect("sign up")
    }

    async fn log_in(&self, username: &str, password: &str) -> Result<Issued, AccountsError> {
        self.accounts
            .log_in(username, &Password::new(password), None)
            .await
    }

    async fn caller(&self, issued: &Issued) -> Caller {
        self.accounts
            .authenticate(&issued.access_token)
            .await
            .expect("authenticate")
    }
}

/// The next revocation, which must come at once (published before the call returned).
fn next(rx: &mut broadcast::Receiver<Revocation>) -> Revocation {
    rx.try_recv().expect("a revocation was published")
}

fn nothing_more(rx: &mut broadcast::Receiver<Revocation>) {
    assert!(
        matches!(rx.try_recv(), Err(broadcast::error::TryRecvError::Empty)),
        "no other revocation"
    );
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_out_revokes_that_session() {
    let (w, mut rx) = local_world().await;
    let first = w.sign_up("alice").await;
    let second = w.log_in("alice", PASSWORD).await.expect("log in");
    let caller = w.caller(&second).await;
    w.accounts.log_out(&caller, "").await.expect("log out");
    let r = next(&mut rx);
    assert_eq!(r.user, first.user.id.to_string());
    assert_eq!(r.sessions, [sid(&second)]);
    assert_eq!(r.reason, RevocationReason::LogOut);
    nothing_more(&mut rx);
    assert_eq!(w.metrics.revocations("published"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_out_all_revokes_every_session() {
    let (w, mut rx) = local_world().await;
    let a = w.sign_up("alice").await;
    let b = w.log_in("alice", PASSWORD).await.expect("log in");
    let c = w.log_in("alice", PASSWORD).await.expect("log in");
    let other = w.sign_up("bob").await;
    let caller = w.caller(&b).await;
    assert_eq!(w.accounts.log_out_all(&caller).await.expect("all"), 3);
    let r = next(&mut rx);
    assert_eq!(r.reason, RevocationReason::LogOutAll);
    assert_eq!(r.user, a.user.id.to_string());
    assert_eq!(sorted(r.sessions), sorted(vec![sid(&a), sid(&b), sid(&c)]));
    nothing_more(&mut rx);
    // Bob's session is untouched.
    w.caller(&other).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_revokes_the_other_sessions() {
    let (w, mut rx) = local_world().await;
    let a = w.sign_up("alice").await;
    let b = w.log_in("alice", PASSWORD).await.expect("log in");
    let c = w.log_in("alice", PASSWORD).await.expect("log in");
    let caller = w.caller(&b).await;
    w.accounts
        .change_password(
            &caller,
            &Password::new(PASSWORD),
            &Password::new(NEW_PASSWORD),
        )
        .await
        .expect("change");
    let r = next(&mut rx);
    assert_eq!(r.reason, RevocationReason::PasswordChanged);
    assert_eq!(sorted(r.sessions), sorted(vec![sid(&a), sid(&c)]));
    nothing_more(&mut rx);
    w.caller(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_account_revokes_every_session() {
    let (w, mut rx) = local_world().await;
    let a = w.sign_up("alice").await;
    let b = w.log_in("alice", PASSWORD).await.expect("log in");
    let caller = w.caller(&a).await;
    w.accounts
        .delete(&caller, &Password::new(PASSWORD))
        .await
        .expect("delete");
    let r = next(&mut rx);
    assert_eq!(r.reason, RevocationReason::AccountDisabled);
    assert_eq!(sorted(r.sessions), sorted(vec![sid(&a), sid(&b)]));
    nothing_more(&mut rx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_refresh_token_revokes_its_session() {
    let (w, mut rx) = local_world().await;
    let a = w.sign_up("alice").await;
    let b = w.log_in("alice", PASSWORD).await.expect("log in");
    let r1 = w.accounts.refresh(&a.refresh_token).await.expect("refresh");
    let _r2 = w
        .accounts
        .refresh(&r1.refresh_token)
        .await
        .expect("refresh");
    nothing_more(&mut rx);
    // Two rotations old: not in any grace, the session is presumed stolen.
    w.accounts
        .refresh(&a.refresh_token)
        .await
        .expect_err("reused");
    let r = next(&mut rx);
    assert_eq!(r.reason, RevocationReason::RefreshReused);
    assert_eq!(r.sessions, [sid(&a)]);
    nothing_more(&mut rx);
    // Presenting it again ends nothing more.
    w.accounts
        .refresh(&a.refresh_token)
        .await
        .expect_err("gone");
    nothing_more(&mut rx);
    w.caller(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_disabling_revokes_every_session_and_refuses_log_ins() {
    let (w, mut rx) = local_world().await;
    let a = w.sign_up("alice").await;
    let b = w.log_in("alice", PASSWORD).await.expect("log in");
    assert_eq!(
        w.accounts
            .set_disabled("Alice", true)
            .await
            .expect("disable"),
        2
    );
    let r = next(&mut rx);
    assert_eq!(r.reason, RevocationReason::AccountDisabled);
    assert_eq!(r.user, a.user.id.to_string());
    assert_eq!(sorted(r.sessions), sorted(vec![sid(&a), sid(&b)]));
    nothing_more(&mut rx);
    assert_eq!(
        w.log_in("alice", PASSWORD).await.expect_err("disabled"),
        AccountsError::InvalidCredentials
    );
    // Enabling ends nothing, and log-ins work again.
    assert_eq!(
        w.accounts
            .set_disabled("alice", false)
            .await
            .expect("enable"),
        0
    );
    nothing_more(&mut rx);
    w.log_in("alice", PASSWORD).await.expect("log in");
    // An operator's password reset ends every session too.
    let ended = w
        .accounts
        .reset_password("alice", &Password::new(NEW_PASSWORD), true)
        .await
        .expect("reset");
    assert_eq!(ended, 1);
    assert_eq!(next(&mut rx).reason, RevocationReason::PasswordChanged);
    assert_eq!(
        w.accounts
            .set_disabled("nobody", true)
            .await
            .expect_err("unknown")
            .to_string(),
        "no user named \"nobody\""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_revocations_reach_a_subscriber_as_json() {
    let server = RedisServer::start().await.expect("redis-server");
    let subscriber = fred::types::Builder::from_config(
        fred::types::config::Config::from_url(&server.url()).expect("url"),
    )
    .build_subscriber_client()
    .expect("subscriber");
    subscriber.init().await.expect("connect");
    let mut messages = subscriber.message_rx();
    subscriber
        .subscribe(REVOCATION_CHANNEL)
        .await
        .expect("subscribe");

    let client = chat_accounts::redis::connect(&server.url())
        .await
        .expect("connect");
    let throttle = Arc::new(MemoryThrottle::new(Policies::default()));
    let w = world(throttle, Arc::new(RedisRevocations::new(client))).await;
    let a = w.sign_up("alice").await;
    let caller = w.caller(&a).await;
    w.accounts.log_out(&caller, "").await.expect("log out");

    let message = tokio::time::timeout(Duration::from_secs(10), messages.recv())
        .await
        .expect("a message within 10 s")
        .expect("message");
    assert_eq!(&*message.channel, REVOCATION_CHANNEL);
    let json: String = message.value.convert().expect("text");
    assert_eq!(
        Revocation::from_json(&json).expect("json"),
        Revocation {
            user: a.user.id.to_string(),
            sessions: vec![sid(&a)],
            reason: RevocationReason::LogOut,
        }
    );
    assert_eq!(w.metrics.revocations("published"), 1);
}

/// A sink whose Redis is down.
#[derive(Debug)]
struct Broken;

#[async_trait]
impl RevocationSink for Broken {
    fn backend(&self) -> &'static str {
        "broken"
    }

    async fn publish(&self, _: &Revocation) -> Result<(), PublishError> {
        Err(PublishError("redis is not connected".into()))
    }
}

#[async_trait]
impl Throttle for Broken {
    async fn wait(&self, _: &ThrottleKey) -> Result<Duration, StoreError> {
        Err(StoreError::Unavailable("redis is not connected".into()))
    }

    async fn record(&self, _: &ThrottleKey) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("redis is not connected".into()))
    }

    async fn reset(&self, _: &ThrottleKey) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("redis is not connected".into()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_redis_fails_no_call_and_is_counted() {
    let w = world(Arc::new(Broken), Arc::new(Broken)).await;
    let client = Some(ClientAddr::new("192.0.2.3".parse::<IpAddr>().expect("ip")));
    let a = w
        .accounts
        .sign_up("alice", &Password::new(PASSWORD), "", client)
        .await
        .expect("sign-up goes ahead unthrottled");
    // A wrong password is still refused; a right one still works.
    assert_eq!(
        w.accounts
            .log_in("alice", &Password::new("wrong password"), client)
            .await
            .expect_err("wrong"),
        AccountsError::InvalidCredentials
    );
    w.accounts
        .log_in("alice", &Password::new(PASSWORD), client)
        .await
        .expect("log in");
    assert!(w.metrics.throttle_failures.get() >= 3);
    let caller = w.caller(&a).await;
    w.accounts
        .log_out(&caller, "")
        .await
        .expect("log out stands");
    assert!(w.accounts.authenticate(&a.access_token).await.is_err());
    assert_eq!(w.metrics.revocations("failed"), 1);
    assert_eq!(w.metrics.revocations("published"), 0);
}
