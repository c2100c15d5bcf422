//! The behaviour every `Throttle` backend must show, run against each of them:
//! `memory::*` in this process, `redis::*` on a private `redis-server`. Time is a test
//! clock both backends read, moved by the cases. Beside the suite: Redis-only tests (two
//! replicas sharing the counts, key names and expiry, an unreachable Redis).

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use chat_accounts::redis::connect;
use chat_accounts::throttle::{
    ClientAddr, MemoryThrottle, Policies, RedisThrottle, Throttle, ThrottleKey, WallClock,
};
use chat_testkit::redis::RedisServer;
use fred::interfaces::{HashesInterface, KeysInterface, ServerInterface};

/// A clock the cases move; each backend reads it in its own form.
#[derive(Debug)]
struct TestTime {
    instant: Instant,
    system: SystemTime,
    offset: Mutex<Duration>,
}

impl TestTime {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            instant: Instant::now(),
            system: SystemTime::now(),
            offset: Mutex::new(Duration::ZERO),
        })
    }

    fn advance(&self, by: Duration) {
        *self.offset.lock().expect("clock") += by;
    }

    fn offset(&self) -> Duration {
        *self.offset.lock().expect("clock")
    }

    fn wall_clock(self: &Arc<Self>) -> WallClock {
        let time = Arc::clone(self);
        Arc::new(move || time.system + time.offset())
    }
}

/// A throttle, its clock, and the server it may run on.
struct Fixture {
    throttle: Arc<dyn Throttle>,
    time: Arc<TestTime>,
    _redis: Option<RedisServer>,
}

async fn open_memory() -> Fixture {
    let time = TestTime::new();
    let clock = {
        let time = Arc::clone(&time);
        Arc::new(move || time.instant + time.offset())
    };
    Fixture {
        throttle: Arc::new(MemoryThrottle::with_clock(Policies::default(), clock)),
        time,
        _redis: None,
    }
}

async fn open_redis() -> Fixture {
    let server = RedisServer::start().await.expect("redis-server");
    let time = TestTime::new();
    let client = connect(&server.url()).await.expect("connect");
    Fixture {
        throttle: Arc::new(RedisThrottle::with_clock(
            client,
            Policies::default(),
            time.wall_clock(),
        )),
        time,
        _redis: Some(server),
    }
}

chat_testkit::backend_suite! {
    backends: {
        #[tokio::test]
        memory => open_memory,
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        redis => open_redis,
    },
    cases: [
        waits_grow_reset_and_are_forgotten,
        each_kind_has_its_policy,
        delays_stop_growing_at_the_maximum,
    ],
}

fn addr(s: &str) -> ClientAddr {
    ClientAddr::new(s.parse::<IpAddr>().expect("ip"))
}

async fn wait(throttle: &dyn Throttle, key: &ThrottleKey) -> Duration {
    throttle.wait(key).await.expect("wait")
}

async fn record(throttle: &dyn Throttle, key: &ThrottleKey, times: usize) {
    for _ in 0..times {
        throttle.record(key).await.expect("record");
    }
}

// ---- the behaviours ----

async fn waits_grow_reset_and_are_forgotten(fx: Fixture) {
    let throttle = &*fx.throttle;
    let alice = ThrottleKey::LogInUser("alice".into());
    let bob = ThrottleKey::LogInUser("bob".into());
    for _ in 0..5 {
        assert_eq!(wait(throttle, &alice).await, Duration::ZERO);
        record(throttle, &alice, 1).await;
    }
    assert_eq!(wait(throttle, &alice).await, Duration::ZERO);
    record(throttle, &alice, 1).await;
    assert_eq!(wait(throttle, &alice).await, Duration::from_secs(1));
    fx.time.advance(Duration::from_millis(400));
    assert_eq!(wait(throttle, &alice).await, Duration::from_millis(600));
    fx.time.advance(Duration::from_millis(600));
    assert_eq!(wait(throttle, &alice).await, Duration::ZERO);
    record(throttle, &alice, 1).await;
    assert_eq!(wait(throttle, &alice).await, Duration::from_secs(2));
    // Other keys are not affected.
    assert_eq!(wait(throttle, &bob).await, Duration::ZERO);
    // A success resets.
    throttle.reset(&alice).await.expect("reset");
    assert_eq!(wait(throttle, &alice).await, Duration::ZERO);
    record(throttle, &alice, 1).await;
    assert_eq!(
        wait(throttle, &alice).await,
        Duration::ZERO,
        "counts from zero"
    );
    // An hour of quiet forgets.
    record(throttle, &bob, 10).await;
    assert!(wait(throttle, &bob).await > Duration::ZERO);
    fx.time.advance(Duration::from_secs(3600));
    assert_eq!(wait(throttle, &bob).await, Duration::ZERO);
    record(throttle, &bob, 1).await;
    assert_eq!(
        wait(throttle, &bob).await,
        Duration::ZERO,
        "counts from zero"
    );
}

async fn each_kind_has_its_policy(fx: Fixture) {
    let throttle = &*fx.throttle;
    let ip = addr("192.0.2.1");
    let log_in = ThrottleKey::LogInAddr(ip);
    let sign_up = ThrottleKey::SignUpAddr(ip);
    // Log-ins from an address: 20 free, then 1 s.
    record(throttle, &log_in, 20).await;
    assert_eq!(wait(throttle, &log_in).await, Duration::ZERO);
    record(throttle, &log_in, 1).await;
    assert_eq!(wait(throttle, &log_in).await, Duration::from_secs(1));
    // Sign-ups from the same address are counted apart: 5 free, then 10 s.
    assert_eq!(wait(throttle, &sign_up).await, Duration::ZERO);
    record(throttle, &sign_up, 6).await;
    assert_eq!(wait(throttle, &sign_up).await, Duration::from_secs(10));
    // A neighbour in the same IPv6 /64 shares its count; another /64 does not.
    let a = ThrottleKey::SignUpAddr(addr("2001:db8:1:2::a"));
    let b = ThrottleKey::SignUpAddr(addr("2001:db8:1:2::b"));
    let c = ThrottleKey::SignUpAddr(addr("2001:db8:1:3::a"));
    record(throttle, &a, 6).await;
    assert_eq!(wait(throttle, &b).await, Duration::from_secs(10));
    assert_eq!(wait(throttle, &c).await, Duration::ZERO);
}

async fn delays_stop_growing_at_the_maximum(fx: Fixture) {
    let throttle = &*fx.throttle;
    let carol = ThrottleKey::LogInUser("carol".into());
    record(throttle, &carol, 30).await;
    assert_eq!(wait(throttle, &carol).await, Duration::from_secs(60));
    fx.time.advance(Duration::from_secs(60));
    assert_eq!(wait(throttle, &carol).await, Duration::ZERO, "never locked");
}

// ---- Redis only ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_the_counts() {
    let server = RedisServer::start().await.expect("redis-server");
    let time = TestTime::new();
    let replica = || async {
        let client = connect(&server.url()).await.expect("connect");
        RedisThrottle::with_clock(client, Policies::default(), time.wall_clock())
    };
    let (a, b) = (replica().await, replica().await);
    let dave = ThrottleKey::LogInUser("dave".into());
    // Failures spread over both replicas add up.
    record(&a, &dave, 3).await;
    record(&b, &dave, 3).await;
    assert_eq!(wait(&a, &dave).await, Duration::from_secs(1));
    assert_eq!(wait(&b, &dave).await, Duration::from_secs(1));
    // Concurrent failures on both are each counted once (the count is atomic).
    let tasks: Vec<_> = [a, b]
        .into_iter()
        .map(|t| {
            let key = dave.clone();
            tokio::spawn(async move {
                for _ in 0..25 {
                    t.record(&key).await.expect("record");
                }
                t
            })
        })
        .collect();
    let mut replicas = Vec::new();
    for task in tasks {
        replicas.push(task.await.expect("task"));
    }
    // 56 events: capped at 60 s.
    assert_eq!(wait(&replicas[0], &dave).await, Duration::from_secs(60));
    let client = connect(&server.url()).await.expect("connect");
    let events: i64 = client
        .hget(RedisThrottle::redis_key(&dave), "n")
        .await
        .expect("hget");
    assert_eq!(events, 56);
    // A success on one replica resets the other's view.
    replicas[1].reset(&dave).await.expect("reset");
    assert_eq!(wait(&replicas[0], &dave).await, Duration::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_prefixed_expire_and_hold_no_secret() {
    let server = RedisServer::start().await.expect("redis-server");
    let client = connect(&server.url()).await.expect("connect");
    let throttle = RedisThrottle::new(client.clone(), Policies::default());
    let keys = [
        ThrottleKey::LogInUser("erin".into()),
        ThrottleKey::LogInAddr(addr("192.0.2.9")),
        ThrottleKey::SignUpAddr(addr("2001:db8::1")),
    ];
    for key in &keys {
        record(&throttle, key, 1).await;
    }
    let names = [
        "chat:throttle:login-user:erin",
        "chat:throttle:login-addr:192.0.2.9",
        "chat:throttle:signup-addr:2001:db8::/64",
    ];
    let stored: i64 = client.dbsize().await.expect("dbsize");
    assert_eq!(stored, 3, "one key per count, nothing else");
    for name in names {
        let ttl: i64 = client.pttl(name).await.expect("pttl");
        assert!(ttl > 3_590_000 && ttl <= 3_600_000, "{name}: {ttl}");
        let fields: std::collections::BTreeMap<String, String> =
            client.hgetall(name).await.expect("hgetall");
        assert_eq!(
            fields.keys().map(String::as_str).collect::<Vec<_>>(),
            ["last", "n"],
            "a count and a time, nothing else"
        );
    }
    // A reset deletes the key.
    throttle.reset(&keys[0]).await.expect("reset");
    let left: i64 = client
        .exists(RedisThrottle::redis_key(&keys[0]))
        .await
        .expect("exists");
    assert_eq!(left, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_is_an_error_not_a_hang() {
    let server = RedisServer::start().await.expect("redis-server");
    let client = connect(&server.url()).await.expect("connect");
    let throttle = RedisThrottle::new(client, Policies::default());
    let key = ThrottleKey::LogInUser("frank".into());
    record(&throttle, &key, 1).await;
    drop(server);
    let started = Instant::now();
    assert!(throttle.wait(&key).await.is_err());
    assert!(throttle.record(&key).await.is_err());
    assert!(throttle.reset(&key).await.is_err());
    // At most a command timeout (1 s) each, not the reconnect loop's forever.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
