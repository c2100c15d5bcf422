//! Throttling log-ins and sign-ups with growing delays, never a permanent lock.
//!
//! Each [`ThrottleKey`] counts events (failed log-ins for a username or from an
//! address; sign-ups from an address). The first `free` events cost nothing; after that
//! the next attempt must wait `first_delay`, doubling with each further event up to
//! `max_delay`, counted from the last event. An attempt made too early is refused
//! (`rate_limited` with the wait) without being counted or costing a password hash. The
//! count is forgotten after `forget_after` without events, and a successful log-in
//! resets its username's count (not its address's: an attacker with one valid account
//! could otherwise reset the address count between guesses).
//!
//! With the log-in policy ([`Policies::default`]: 5 free, 1 s doubling to 60 s), one
//! account sees at most about 70 failed log-ins an hour however they are spread (ASVS:
//! at most 100), and its owner is never locked out for longer than a minute.
//!
//! [`Throttle`] is the seam for sharing the counts between replicas: [`MemoryThrottle`]
//! keeps them in this process (one replica), [`RedisThrottle`] in Redis, shared by every
//! replica. Both pass the same behaviour suite (`tests/throttle_suite.rs`).
//!
//! A throttle that fails (Redis unreachable) fails *open*: [`crate::Accounts`] logs a
//! warning, counts it in `chat_accounts_throttle_failures_total` and lets the attempt
//! through, still costing a full password hash, so log-ins keep working while Redis is
//! away and guessing stays as slow as hashing (and the hashing pool's bound) makes it.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use fred::clients::Client;
use fred::interfaces::{ClientLike, HashesInterface, KeysInterface, LuaInterface};

use crate::store::StoreError;

/// What is counted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ThrottleKey {
    /// Failed log-ins (and password checks) of a username.
    LogInUser(String),
    /// Failed log-ins from a client address.
    LogInAddr(ClientAddr),
    /// Sign-ups from a client address.
    SignUpAddr(ClientAddr),
}

/// A client address as throttled: an IPv4 address, or the /64 network of an IPv6 one
/// (one host usually holds a whole /64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(IpAddr);

impl ClientAddr {
    /// The throttled form of `addr`.
    pub fn new(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(v4) => Self(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(IpAddr::V4(v4)),
                None => {
                    let network = u128::from(v6) & !((1u128 << 64) - 1);
                    Self(IpAddr::V6(network.into()))
                }
            },
        }
    }
}

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// The delays of one kind of key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Events allowed before any delay.
    pub free: u32,
    /// The delay after the first event beyond `free`.
    pub first_delay: Duration,
    /// The longest delay.
    pub max_delay: Duration,
    /// A count is forgotten after this long without events.
    pub forget_after: Duration,
}

impl Policy {
    /// How long after the last of `events` events the next attempt must wait.
    pub fn delay(&self, events: u32) -> Duration {
        let Some(beyond) = events.checked_sub(self.free).filter(|n| *n > 0) else {
            return Duration::ZERO;
        };
        let doublings = (beyond - 1).min(31);
        self.first_delay
            .saturating_mul(1 << doublings)
            .min(self.max_delay)
    }
}

/// The policy of each kind of key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policies {
    /// [`ThrottleKey::LogInUser`].
    pub log_in_user: Policy,
    /// [`ThrottleKey::LogInAddr`]: more free attempts (many people may share an address).
    pub log_in_addr: Policy,
    /// [`ThrottleKey::SignUpAddr`].
    pub sign_up_addr: Policy,
}

impl Default for Policies {
    fn default() -> Self {
        let hour = Duration::from_secs(3600);
        Self {
            log_in_user: Policy {
                free: 5,
                first_delay: Duration::from_secs(1),
                max_delay: Duration::from_secs(60),
                forget_after: hour,
            },
            log_in_addr: Policy {
                free: 20,
                first_delay: Duration::from_secs(1),
                max_delay: Duration::from_secs(60),
                forget_after: hour,
            },
            sign_up_addr: Policy {
                free: 5,
                first_delay: Duration::from_secs(10),
                max_delay: Duration::from_secs(600),
                forget_after: hour,
            },
        }
    }
}

impl Policies {
    /// The policy of `key`.
    pub fn of(&self, key: &ThrottleKey) -> &Policy {
        match key {
            ThrottleKey::LogInUser(_) => &self.log_in_user,
            ThrottleKey::LogInAddr(_) => &self.log_in_addr,
            ThrottleKey::SignUpAddr(_) => &self.sign_up_addr,
        }
    }
}

/// Counts events per key; shared by every request of a replica (and, with a shared
/// backend, by every replica).
#[async_trait]
pub trait Throttle: Send + Sync + fmt::Debug + 'static {
    /// How long an attempt under `key` must still wait; zero: go ahead.
    async fn wait(&self, key: &ThrottleKey) -> Result<Duration, StoreError>;

    /// Counts one event under `key`.
    async fn record(&self, key: &ThrottleKey) -> Result<(), StoreError>;

    /// Forgets `key`'s count (a successful log-in).
    async fn reset(&self, key: &ThrottleKey) -> Result<(), StoreError>;
}

/// The longest wait among `keys` (zero: go ahead).
pub async fn longest_wait(
    throttle: &dyn Throttle,
    keys: &[ThrottleKey],
) -> Result<Duration, StoreError> {
    let mut longest = Duration::ZERO;
    for key in keys {
        longest = longest.max(throttle.wait(key).await?);
    }
    Ok(longest)
}

/// One key's count.
#[derive(Debug, Clone, Copy)]
struct Count {
    events: u32,
    last: Instant,
}

/// Keys one process remembers at most; beyond, forgotten counts are dropped first, then
/// the stalest.
pub const MAX_KEYS: usize = 100_000;

/// A time source, replaceable in tests.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// The in-process [`Throttle`]: correct for one accounts replica.
pub struct MemoryThrottle {
    policies: Policies,
    counts: Mutex<HashMap<ThrottleKey, Count>>,
    clock: Clock,
}

impl fmt::Debug for MemoryThrottle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryThrottle")
            .field("policies", &self.policies)
            .finish_non_exhaustive()
    }
}

impl MemoryThrottle {
    /// A throttle with `policies` on the system clock.
    pub fn new(policies: Policies) -> Self {
        Self::with_clock(policies, Arc::new(Instant::now))
    }

    /// A throttle reading the time from `clock`.
    pub fn with_clock(policies: Policies, clock: Clock) -> Self {
        Self {
            policies,
            counts: Mutex::new(HashMap::new()),
            clock,
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<ThrottleKey, Count>> {
        // Counts are plain values: a panic elsewhere leaves them usable.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The count of `key` at `now`, if not forgotten.
    fn current(
        &self,
        counts: &HashMap<ThrottleKey, Count>,
        key: &ThrottleKey,
        now: Instant,
    ) -> Option<Count> {
        let policy = self.policies.of(key);
        counts
            .get(key)
            .filter(|c| now.saturating_duration_since(c.last) < policy.forget_after)
            .copied()
    }

    /// Makes room for one more key.
    fn make_room(&self, counts: &mut HashMap<ThrottleKey, Count>, now: Instant) {
        if counts.len() < MAX_KEYS {
            return;
        }
        counts.retain(|key, c| {
            now.saturating_duration_since(c.last) < self.policies.of(key).forget_after
        });
        if counts.len() >= MAX_KEYS
            && let Some(stalest) = counts
                .iter()
                .min_by_key(|(_, c)| c.last)
                .map(|(k, _)| k.clone())
        {
            counts.remove(&stalest);
        }
    }
}

#[async_trait]
impl Throttle for MemoryThrottle {
    async fn wait(&self, key: &ThrottleKey) -> Result<Duration, StoreError> {
        let now = (self.clock)();
        let counts = self.counts();
        Ok(self.current(&counts, key, now).map_or(Duration::ZERO, |c| {
            let ready = c.last + self.policies.of(key).delay(c.events);
            ready.saturating_duration_since(now)
        }))
    }

    async fn record(&self, key: &ThrottleKey) -> Result<(), StoreError> {
        let now = (self.clock)();
        let mut counts = self.counts();
        let events = self.current(&counts, key, now).map_or(0, |c| c.events);
        if !counts.contains_key(key) {
            self.make_room(&mut counts, now);
        }
        counts.insert(
            key.clone(),
            Count {
                events: events.saturating_add(1),
                last: now,
            },
        );
        Ok(())
    }

    async fn reset(&self, key: &ThrottleKey) -> Result<(), StoreError> {
        self.counts().remove(key);
        Ok(())
    }
}

/// A wall-clock time source, replaceable in tests; replicas compare its readings, so it
/// must be the real time in production (NTP-synchronised hosts differ by milliseconds,
/// the delays are seconds).
pub type WallClock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Counts one event atomically: `KEYS[1]` is the count, a hash `{n, last}`; `ARGV[1]`
/// is now (ms since the epoch), `ARGV[2]` the policy's `forget_after` (ms). A count
/// whose last event is `forget_after` old starts again from zero; `last` never moves
/// back (replicas' clocks differ slightly). The key expires `forget_after` after its
/// last event, so nothing is kept longer than it matters. Returns the new count.
const RECORD_SCRIPT: &str = r#"
local now = tonumber(ARGV[1])
local found = redis.call('HMGET', KEYS[1], 'n', 'last')
local n = tonumber(found[1]) or 0
local last = tonumber(found[2])
if last == nil or now - last >= tonumber(ARGV[2]) then n = 0 end
if last == nil or now >= last then redis.call('HSET', KEYS[1], 'last', ARGV[1]) end
n = n + 1
redis.call('HSET', KEYS[1], 'n', n)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return n
"#;

/// The Redis key prefix of every count.
pub const REDIS_KEY_PREFIX: &str = "chat:throttle:";

/// The [`Throttle`] every accounts replica shares, in Redis: one hash per key,
/// `chat:throttle:login-user:<username>`, `chat:throttle:login-addr:<address>` or
/// `chat:throttle:signup-addr:<address>`, holding the count and the time of the last
/// event (never a password), expiring `forget_after` after its last event. A count is one
/// `EVAL` (atomic, one round trip); a check is one `HMGET`; a reset one `DEL`. Works on
/// a Redis Cluster too (each call touches one key).
///
/// Calls fail at once while the client is disconnected, else after
/// [`crate::redis::COMMAND_TIMEOUT`]; the caller fails open (see the module
/// documentation).
pub struct RedisThrottle {
    client: Client,
    policies: Policies,
    clock: WallClock,
}

impl fmt::Debug for RedisThrottle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisThrottle")
            .field("policies", &self.policies)
            .finish_non_exhaustive()
    }
}

fn unix_millis(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl RedisThrottle {
    /// A throttle with `policies` through `client` (see [`crate::redis::connect`]), on
    /// the system clock.
    pub fn new(client: Client, policies: Policies) -> Self {
        Self::with_clock(client, policies, Arc::new(SystemTime::now))
    }

    /// A throttle reading the time from `clock`.
    pub fn with_clock(client: Client, policies: Policies, clock: WallClock) -> Self {
        Self {
            client,
            policies,
            clock,
        }
    }

    /// The Redis key of `key`.
    pub fn redis_key(key: &ThrottleKey) -> String {
        match key {
            ThrottleKey::LogInUser(name) => format!("{REDIS_KEY_PREFIX}login-user:{name}"),
            ThrottleKey::LogInAddr(addr) => format!("{REDIS_KEY_PREFIX}login-addr:{addr}"),
            ThrottleKey::SignUpAddr(addr) => format!("{REDIS_KEY_PREFIX}signup-addr:{addr}"),
        }
    }

    fn connected(&self) -> Result<(), StoreError> {
        if self.client.is_connected() {
            Ok(())
        } else {
            Err(StoreError::Unavailable(
                "throttle: redis is not connected".into(),
            ))
        }
    }
}

fn redis_failed(e: fred::error::Error) -> StoreError {
    StoreError::Unavailable(format!("throttle: redis: {e}"))
}

#[async_trait]
impl Throttle for RedisThrottle {
    async fn wait(&self, key: &ThrottleKey) -> Result<Duration, StoreError> {
        self.connected()?;
        let policy = self.policies.of(key);
        let found: Vec<Option<i64>> = self
            .client
            .hmget(Self::redis_key(key), vec!["n", "last"])
            .await
            .map_err(redis_failed)?;
        let (Some(Some(events)), Some(Some(last))) = (found.first(), found.get(1)) else {
            return Ok(Duration::ZERO);
        };
        let now = unix_millis((self.clock)());
        if now.saturating_sub(*last) >= duration_millis(policy.forget_after) {
            return Ok(Duration::ZERO);
        }
        let events = u32::try_from(*events).unwrap_or(u32::MAX);
        let ready = last.saturating_add(duration_millis(policy.delay(events)));
        Ok(Duration::from_millis(
            u64::try_from(ready.saturating_sub(now)).unwrap_or(0),
        ))
    }

    async fn record(&self, key: &ThrottleKey) -> Result<(), StoreError> {
        self.connected()?;
        let forget = duration_millis(self.policies.of(key).forget_after).max(1);
        let now = unix_millis((self.clock)());
        let _events: i64 = self
            .client
            .eval(
                RECORD_SCRIPT,
                Self::redis_key(key),
                vec![now.to_string(), forget.to_string()],
            )
            .await
            .map_err(redis_failed)?;
        Ok(())
    }

    async fn reset(&self, key: &ThrottleKey) -> Result<(), StoreError> {
        self.connected()?;
        let _deleted: i64 = self
            .client
            .del(Self::redis_key(key))
            .await
            .map_err(redis_failed)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_are_capped() {
        let policy = Policies::default().log_in_user;
        let delays: Vec<u64> = (0..=13).map(|n| policy.delay(n).as_secs()).collect();
        assert_eq!(delays, [0, 0, 0, 0, 0, 0, 1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(policy.delay(u32::MAX), policy.max_delay);
    }

    /// ASVS: at most 100 failed log-ins per hour per account, whatever the pace.
    #[test]
    fn at_most_100_failures_an_hour() {
        let policy = Policies::default().log_in_user;
        let (mut t, mut failures) = (Duration::ZERO, 0u32);
        while t < Duration::from_secs(3600) {
            failures += 1;
            t += policy.delay(failures);
        }
        assert!(failures <= 100, "{failures}");
    }

    #[test]
    fn ipv6_is_throttled_by_its_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(ClientAddr::new(a), ClientAddr::new(b));
        assert_ne!(ClientAddr::new(a), ClientAddr::new(c));
        assert_eq!(ClientAddr::new(a).to_string(), "2001:db8:1:2::/64");
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("ip");
        assert_eq!(ClientAddr::new(mapped).to_string(), "192.0.2.1");
    }
}
