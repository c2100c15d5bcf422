//! Presence in Redis: an online-status string per user, with a TTL, plus the sets
//! that make it correct for many connections per user on many gateways and self-healing
//! when a gateway dies. Any number of presence replicas may share one Redis, or one
//! Redis Cluster.
//!
//! # Buckets
//!
//! Users are split over [`buckets`](RedisPresence::buckets) by a hash of their id: a
//! bucket is a complete presence store for its users, and every script works inside one
//! bucket. On a single Redis there is one bucket, prefix `presence:`. On a Redis Cluster
//! (a `redis-cluster://` URL) there are [`CLUSTER_BUCKETS`], each under its own hash tag
//! (`presence:{<tag>}:`, tags chosen so the buckets' slots are spread evenly over the
//! slot space), so each bucket sits in one hash slot and the buckets spread over the
//! primaries. Gateway keys exist in every bucket: a gateway heartbeats every bucket
//! (its lease, and its users there), and each bucket sweeps its own dead gateways.
//! No operation spans two buckets in one step, so every guarantee holds per bucket, and
//! a crash between two calls of a multi-bucket operation leaves each bucket consistent.
//!
//! Slot moves: scripts declare no keys (Redis would answer `ASK` for them during a
//! move, and fred's handling of `ASK` can drop other commands in flight); they are sent
//! to the node serving the bucket's slot, and their prelude first touches two absent
//! keys of the bucket (`<p>fence:a`, `<p>fence:b`), which fails while the slot is
//! migrating, importing, or already served elsewhere. The script then returns
//! `TRYAGAIN` before writing anything, and the call is repeated after a short pause,
//! with the slot map re-read; once the slot is stable, every key of the bucket is on the
//! node that runs the script.
//!
//! # Keys
//!
//! All keys start with the bucket's prefix `<p>` (`presence:` on a single Redis); user,
//! room and gateway ids never contain a space.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `<p>user:<uid>` | string `online`, `PX ttl` | the online status: present = online |
//! | `<p>user:<uid>:gws` | set | gateways holding ≥ 1 connection of the user |
//! | `<p>user:<uid>:rooms` | set | rooms told during the user's online period that the user is online; told offline when it ends |
//! | `<p>gw:<gw>:users` | set | users of this bucket the gateway holds (released when it dies) |
//! | `<p>gw:<gw>:left` | sorted set | uid → when the gateway disconnected it (ms); kept for a ttl |
//! | `<p>gw:<gw>:beat` | string, `PX ttl` | set by heartbeats only: its absence is a lost lease (first heartbeat, silence, Redis lost its data) |
//! | `<p>gw:<gw>:claim` | string | the claim of the gateway's unacknowledged batch of exits from this bucket |
//! | `<p>gw:<gw>:claimed` | set | `"<room> <uid>"` exits of that batch (queued again if the gateway dies) |
//! | `<p>gateways` | sorted set | gateway → lease deadline (unix ms, Redis clock) |
//! | `<p>exits` | set | `"<room> <uid>"` offline events of swept users, not yet claimed |
//!
//! Every operation on a bucket is one Lua script (`src/store/lua/`), so it is atomic and
//! costs one round trip; lease deadlines come from Redis `TIME`, so replicas agree on
//! them. Scripts are loaded at connect and called with `EVALSHA`; after `NOSCRIPT` (Redis
//! restarted, or a cluster node that never saw them) the call is repeated as `EVAL`,
//! which caches the script on that node.
//!
//! A heartbeat refreshes the users registered on its gateway and registers the others it
//! names (their connect was lost, Redis lost its data, or the gateway was swept after a
//! silence), except users the gateway disconnected within the last ttl: the heartbeat
//! may have been sent before that disconnect, and must not bring them back.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use chat_model::{RoomId, UserId};
use fred::clients::Client;
use fred::error::{Error as RedisError, ErrorKind};
use fred::interfaces::{ClientLike, ClusterInterface, LuaInterface};
use fred::types::config::{Config, ReconnectPolicy};
use fred::types::{Builder, ClusterHash, CustomCommand};
use fred::util::redis_keyslot;
use futures_util::future::try_join_all;

use super::{ExitBatch, GatewayId, PresenceError, PresenceStats, PresenceStore, RoomExit};

/// Redis command timeout: a call that takes longer fails as unavailable.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Users per heartbeat script call: large enough to amortise the round trip, small
/// enough that one call blocks Redis for about a millisecond.
pub const HEARTBEAT_CHUNK: usize = 1000;
/// Entries (users, exits) one sweep script call touches about, for the same reason.
const SWEEP_BUDGET: usize = 1000;
/// Buckets on a Redis Cluster: each is one hash slot, so this bounds how many primaries
/// presence can use, and a slot move stalls 1/64 of the users for as long as it takes.
/// Every gateway heartbeats every bucket (64 small calls per interval). Fixed: every
/// replica must agree on it, and changing it would move every user.
pub const CLUSTER_BUCKETS: usize = 64;
/// Hash slots of a Redis Cluster.
const SLOTS: usize = 16384;
/// Pause before repeating a call refused while its bucket's slot moves (doubling).
const MIGRATION_RETRY: Duration = Duration::from_millis(5);

/// One Lua script: its source (to run it with `EVAL` where it is not cached) and SHA-1.
#[derive(Debug)]
struct Script {
    /// Its file name, for errors.
    name: &'static str,
    source: &'static str,
    /// Returned by `SCRIPT LOAD` at connect; the same for the same source on any server.
    sha: String,
}

macro_rules! script {
    ($file:literal) => {
        (
            $file,
            concat!(include_str!("lua/prelude.lua"), include_str!($file)),
        )
    };
}

/// The scripts, each with the shared prelude in front.
#[derive(Debug)]
struct Scripts {
    connect: Script,
    disconnect: Script,
    enter_room: Script,
    heartbeat: Script,
    sweep: Script,
    take_exits: Script,
    stats: Script,
    online: Script,
}

impl Scripts {
    async fn load(client: &Client) -> Result<Self, PresenceError> {
        async fn one(
            client: &Client,
            (name, source): (&'static str, &'static str),
        ) -> Result<Script, PresenceError> {
            let sha: String = client
                .script_load(source)
                .await
                .map_err(|e| error(e, name))?;
            Ok(Script { name, source, sha })
        }
        Ok(Self {
            connect: one(client, script!("lua/connect.lua")).await?,
            disconnect: one(client, script!("lua/disconnect.lua")).await?,
            enter_room: one(client, script!("lua/enter_room.lua")).await?,
            heartbeat: one(client, script!("lua/heartbeat.lua")).await?,
            sweep: one(client, script!("lua/sweep.lua")).await?,
            take_exits: one(client, script!("lua/take_exits.lua")).await?,
            stats: one(client, script!("lua/stats.lua")).await?,
            online: one(client, script!("lua/online.lua")).await?,
        })
    }
}

/// One bucket: a complete presence store for the users hashed to it.
#[derive(Debug)]
struct Bucket {
    /// Prefix of all its keys, the first argument of every script.
    prefix: String,
    /// Its hash slot: scripts declare no keys (so Redis never redirects them while the
    /// slot moves, see the prelude), and are sent to the node serving it.
    slot: u16,
}

impl Bucket {
    fn new(prefix: String) -> Self {
        let slot = redis_keyslot(prefix.as_bytes());
        Self { prefix, slot }
    }
}

/// The buckets of a single Redis (one, `presence:`) or of a Redis Cluster
/// ([`CLUSTER_BUCKETS`], bucket `i` under the first tag `b<i>.<n>` whose slot falls in
/// the `i`-th of as many equal slot ranges: the buckets spread over the primaries as
/// evenly as the slots do).
fn buckets(clustered: bool) -> Vec<Bucket> {
    if !clustered {
        return vec![Bucket::new("presence:".to_owned())];
    }
    let width = SLOTS / CLUSTER_BUCKETS;
    (0..CLUSTER_BUCKETS)
        .map(|i| {
            let range = i * width..(i + 1) * width;
            let tag = (0..)
                .map(|n| format!("b{i}.{n}"))
                .find(|tag| range.contains(&usize::from(redis_keyslot(tag.as_bytes()))))
                .unwrap_or_default();
            Bucket::new(format!("presence:{{{tag}}}:"))
        })
        .collect()
}

/// Presence through one Redis server (or a primary behind one address), or a Redis
/// Cluster.
#[derive(Debug)]
pub struct RedisPresence {
    /// One multiplexed connection (one per primary on a cluster): commands are
    /// pipelined, and Redis runs them one at a time anyway. Reconnects by itself.
    client: Client,
    /// The lease length of gateways and users.
    ttl: Duration,
    scripts: Scripts,
    buckets: Vec<Bucket>,
}

/// Sorts a Redis failure into retryable or not.
fn error(e: RedisError, what: &str) -> PresenceError {
    let transient = matches!(
        e.kind(),
        ErrorKind::IO
            | ErrorKind::Timeout
            | ErrorKind::Canceled
            | ErrorKind::Backpressure
            | ErrorKind::Routing
            | ErrorKind::Cluster
    ) || ["LOADING", "BUSY", "MASTERDOWN", "READONLY", "TRYAGAIN"]
        .iter()
        .any(|code| e.details().starts_with(code));
    let msg = format!("redis {what}: {e}");
    if transient {
        PresenceError::Unavailable(msg)
    } else {
        PresenceError::Internal(msg)
    }
}

/// Whether a script refused to run because its bucket's slot is moving (the prelude's
/// `TRYAGAIN`: nothing was written).
fn migrating(e: &RedisError) -> bool {
    e.details().starts_with("TRYAGAIN")
}

impl RedisPresence {
    /// Connects to `url` and loads the scripts: `redis://host:port[/db]` for a single
    /// server, `redis-cluster://host:port[?node=host2:port2&...]` for a Redis Cluster
    /// (one reachable node is enough; `rediss` and `rediss-cluster` are the TLS forms
    /// where fred was built with TLS). Fails when Redis is unreachable now; later outages
    /// are retried forever (calls meanwhile fail as unavailable after 5 s). `ttl` is the
    /// lease of users and gateways.
    pub async fn connect(url: &str, ttl: Duration) -> Result<Self, PresenceError> {
        let config = Config::from_url(url).map_err(|e| error(e, "url"))?;
        let buckets = buckets(config.server.is_clustered());
        let mut builder = Builder::from_config(config);
        builder
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(5);
                c.internal_command_timeout = COMMAND_TIMEOUT;
            })
            .with_performance_config(|p| {
                p.default_command_timeout = COMMAND_TIMEOUT;
            })
            // max_attempts 0 = retry forever; 50 ms doubling up to 2 s.
            .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2));
        let client = builder.build().map_err(|e| error(e, "client"))?;
        client.init().await.map_err(|e| error(e, "connect"))?;
        let scripts = Scripts::load(&client).await?;
        Ok(Self {
            client,
            ttl,
            scripts,
            buckets,
        })
    }

    /// Reports this store's Redis connection in `metrics` (`chat_presence_redis_*`):
    /// `connected` asks the client at scrape time, and its reconnects are counted (fred
    /// also reports the first connection as a reconnect, to whoever listens then, so
    /// call this once connected). The first call wins.
    pub fn watch_connection(&self, metrics: &chat_metrics::RedisConnectionMetrics) {
        use fred::interfaces::{ClientLike, EventInterface};
        let probe = self.client.clone();
        if metrics.watch(move || probe.is_connected()) {
            metrics.count_reconnects(self.client.reconnect_rx());
        }
    }

    /// How many buckets the users are split over: 1 on a single Redis,
    /// [`CLUSTER_BUCKETS`] on a Redis Cluster.
    pub fn buckets(&self) -> usize {
        self.buckets.len()
    }

    /// The key of `user`'s online status (present = online), for operators and tests.
    pub fn status_key(&self, user: &UserId) -> String {
        format!("{}user:{user}", self.bucket_of(user).prefix)
    }

    fn bucket_index(&self, user: &UserId) -> usize {
        usize::from(redis_keyslot(user.as_str().as_bytes())) % self.buckets.len()
    }

    fn bucket_of(&self, user: &UserId) -> &Bucket {
        &self.buckets[self.bucket_index(user)]
    }

    fn ttl_ms(&self) -> String {
        self.ttl.as_millis().max(1).to_string()
    }

    /// Runs `script` in `bucket`: `EVALSHA`, or `EVAL` where the node does not have the
    /// script (Redis restarted, or a cluster node never saw it); repeated while the
    /// bucket's slot moves (the script refuses to run then, before writing anything).
    async fn run<R: fred::types::FromValue>(
        &self,
        bucket: &Bucket,
        script: &Script,
        args: Vec<String>,
    ) -> Result<R, PresenceError> {
        // `<sha or source> 0 <prefix> <args...>`: no keys, sent to the bucket's slot.
        let call = |verb: &'static str, body: &str| {
            let mut all = Vec::with_capacity(3 + args.len());
            all.extend([body.to_owned(), "0".to_owned(), bucket.prefix.clone()]);
            all.extend(args.iter().cloned());
            let cmd = CustomCommand::new_static(verb, ClusterHash::Custom(bucket.slot), false);
            self.client.custom::<R, String>(cmd, all)
        };
        let deadline = tokio::time::Instant::now() + COMMAND_TIMEOUT;
        let mut pause = MIGRATION_RETRY;
        loop {
            let result = match call("EVALSHA", &script.sha).await {
                Err(e) if e.details().starts_with("NOSCRIPT") => {
                    tracing::info!(script = script.name, "redis lacks a presence script");
                    call("EVAL", script.source).await
                }
                result => result,
            };
            match result {
                Err(e) if migrating(&e) && tokio::time::Instant::now() + pause < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(200));
                    if self.client.is_clustered() {
                        // It may have moved already: learn the new owner.
                        if let Err(e) = self.client.sync_cluster().await {
                            tracing::debug!(error = %e, "re-reading the cluster's slots");
                        }
                    }
                }
                result => return result.map_err(|e| error(e, script.name)),
            }
        }
    }

    async fn run_flag(
        &self,
        bucket: &Bucket,
        script: &Script,
        args: Vec<String>,
    ) -> Result<bool, PresenceError> {
        let flag: i64 = self.run(bucket, script, args).await?;
        Ok(flag == 1)
    }

    /// One bucket's part of a heartbeat; true when it did not know the previous one.
    async fn heartbeat_bucket(
        &self,
        bucket: &Bucket,
        gateway: &GatewayId,
        users: &[&UserId],
    ) -> Result<bool, PresenceError> {
        let ttl = self.ttl_ms();
        let chunks: Vec<&[&UserId]> = if users.is_empty() {
            vec![&[]]
        } else {
            users.chunks(HEARTBEAT_CHUNK).collect()
        };
        // One after another: each call renews the lease, then refreshes its users. The
        // first call tells whether the previous heartbeat was known.
        let mut lost = None;
        for chunk in chunks {
            let mut args = Vec::with_capacity(2 + chunk.len());
            args.push(gateway.to_owned());
            args.push(ttl.clone());
            args.extend(chunk.iter().map(|u| u.to_string()));
            let chunk_lost: i64 = self.run(bucket, &self.scripts.heartbeat, args).await?;
            lost.get_or_insert(chunk_lost == 1);
        }
        Ok(lost.unwrap_or(false))
    }

    /// Claims exits of one bucket under `claim`.
    async fn take_exits_bucket(
        &self,
        bucket: &Bucket,
        gateway: &GatewayId,
        ack: u64,
        limit: usize,
        claim: u64,
    ) -> Result<Vec<RoomExit>, PresenceError> {
        let args = vec![
            gateway.to_owned(),
            ack.to_string(),
            limit.to_string(),
            claim.to_string(),
        ];
        let reply: Vec<String> = self.run(bucket, &self.scripts.take_exits, args).await?;
        reply
            .iter()
            .skip(1)
            .map(|e| parse_exit(e))
            .collect::<Result<_, _>>()
    }
}

/// The claim of the batch handed out after `ack`: a hash of the gateway and `ack`, never
/// 0 nor `ack`. Every presence replica computes the same, so a call repeated after a
/// lost reply (the same `ack`) names its batch as before; the next `ack` then names a
/// new one. Claims are compared for equality only.
fn next_claim(gateway: &GatewayId, ack: u64) -> u64 {
    // FNV-1a, then SplitMix64's finaliser.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in gateway.bytes().chain(ack.to_le_bytes()) {
        h = (h ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    match h {
        0 => 1,
        h if h == ack => h.wrapping_add(2) | 1,
        h => h,
    }
}

impl Drop for RedisPresence {
    fn drop(&mut self) {
        let client = self.client.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = client.quit().await;
            });
        }
    }
}

/// Parses a queued exit, `"<room> <uid>"`.
fn parse_exit(entry: &str) -> Result<RoomExit, PresenceError> {
    let bad = || PresenceError::Internal(format!("malformed room membership {entry:?}"));
    let (room, user) = entry.split_once(' ').ok_or_else(bad)?;
    Ok(RoomExit {
        room: RoomId::parse(room).map_err(|_| bad())?,
        user: UserId::parse(user).map_err(|_| bad())?,
    })
}

#[async_trait]
impl PresenceStore for RedisPresence {
    fn ttl(&self) -> Duration {
        self.ttl
    }

    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn connect(&self, gateway: &GatewayId, user: &UserId) -> Result<bool, PresenceError> {
        let args = vec![gateway.to_owned(), user.to_string(), self.ttl_ms()];
        self.run_flag(self.bucket_of(user), &self.scripts.connect, args)
            .await
    }

    async fn disconnect(
        &self,
        gateway: &GatewayId,
        user: &UserId,
    ) -> Result<Option<Vec<RoomId>>, PresenceError> {
        let args = vec![gateway.to_owned(), user.to_string(), self.ttl_ms()];
        let reply: Vec<String> = self
            .run(self.bucket_of(user), &self.scripts.disconnect, args)
            .await?;
        match reply.split_first() {
            Some((flag, rooms)) if flag == "1" => rooms
                .iter()
                .map(|r| {
                    RoomId::parse(r)
                        .map_err(|_| PresenceError::Internal(format!("malformed room {r:?}")))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Ok(None),
            None => Err(PresenceError::Internal("empty disconnect reply".into())),
        }
    }

    async fn enter_room(
        &self,
        gateway: &GatewayId,
        user: &UserId,
        room: &RoomId,
    ) -> Result<bool, PresenceError> {
        let args = vec![
            gateway.to_owned(),
            user.to_string(),
            room.to_string(),
            self.ttl_ms(),
        ];
        self.run_flag(self.bucket_of(user), &self.scripts.enter_room, args)
            .await
    }

    async fn heartbeat(
        &self,
        gateway: &GatewayId,
        users: &[UserId],
    ) -> Result<bool, PresenceError> {
        // Every bucket, also those where the gateway holds nobody: its lease and
        // heartbeat marker live in each.
        let mut by_bucket: Vec<Vec<&UserId>> = vec![Vec::new(); self.buckets.len()];
        for user in users {
            by_bucket[self.bucket_index(user)].push(user);
        }
        let lost = try_join_all(
            self.buckets
                .iter()
                .zip(&by_bucket)
                .map(|(bucket, users)| self.heartbeat_bucket(bucket, gateway, users)),
        )
        .await?;
        Ok(lost.into_iter().any(|l| l))
    }

    async fn sweep(&self) -> Result<bool, PresenceError> {
        let args = vec![SWEEP_BUDGET.to_string()];
        let more = try_join_all(
            self.buckets
                .iter()
                .map(|bucket| self.run_flag(bucket, &self.scripts.sweep, args.clone())),
        )
        .await?;
        Ok(more.into_iter().any(|m| m))
    }

    /// Every bucket in turn, with the same `ack` and the same new claim
    /// ([`next_claim`]), which so names the whole batch: the next `ack` acknowledges it
    /// in every bucket. New events are claimed while fewer than `limit` are in the batch; a
    /// bucket's outstanding batch is returned again in any case (so a batch re-sent after
    /// a lost reply may exceed `limit` by what was new in it).
    async fn take_exits(
        &self,
        gateway: &GatewayId,
        ack: u64,
        limit: usize,
    ) -> Result<ExitBatch, PresenceError> {
        let claim = next_claim(gateway, ack);
        let n = self.buckets.len();
        // Starting where the claim says, so no bucket is always served last.
        let first = usize::try_from(claim % n as u64).unwrap_or(0);
        let mut exits = Vec::new();
        for i in 0..n {
            let bucket = &self.buckets[(first + i) % n];
            let room = limit.saturating_sub(exits.len());
            exits.extend(
                self.take_exits_bucket(bucket, gateway, ack, room, claim)
                    .await?,
            );
        }
        Ok(if exits.is_empty() {
            ExitBatch::default()
        } else {
            ExitBatch { claim, exits }
        })
    }

    async fn online(&self, users: &[UserId]) -> Result<Vec<bool>, PresenceError> {
        let mut by_bucket: Vec<Vec<usize>> = vec![Vec::new(); self.buckets.len()];
        for (i, user) in users.iter().enumerate() {
            by_bucket[self.bucket_index(user)].push(i);
        }
        // One script per bucket with users asked, at once.
        let asked: Vec<(usize, &Vec<usize>)> = by_bucket
            .iter()
            .enumerate()
            .filter(|(_, asked)| !asked.is_empty())
            .collect();
        let replies: Vec<Vec<i64>> = try_join_all(asked.iter().map(|(b, asked)| {
            let args = asked.iter().map(|&i| users[i].to_string()).collect();
            self.run(&self.buckets[*b], &self.scripts.online, args)
        }))
        .await?;
        let mut online = vec![false; users.len()];
        for ((_, asked), values) in asked.iter().zip(replies) {
            if values.len() != asked.len() {
                return Err(PresenceError::Internal(format!(
                    "online of {} users returned {} values",
                    asked.len(),
                    values.len()
                )));
            }
            for (&i, value) in asked.iter().zip(values) {
                online[i] = value == 1;
            }
        }
        Ok(online)
    }

    async fn stats(&self) -> Result<PresenceStats, PresenceError> {
        let replies: Vec<Vec<String>> = try_join_all(
            self.buckets
                .iter()
                .map(|bucket| self.run(bucket, &self.scripts.stats, Vec::new())),
        )
        .await?;
        let (mut users, mut gateways) = (0, HashSet::new());
        for reply in &replies {
            let (count, live) = reply
                .split_first()
                .ok_or_else(|| PresenceError::Internal("empty stats reply".into()))?;
            users += count.parse::<u64>().unwrap_or(0);
            gateways.extend(live);
        }
        Ok(PresenceStats {
            gateways: gateways.len() as u64,
            users,
        })
    }

    async fn ping(&self) -> Result<(), PresenceError> {
        let _pong: fred::types::Value =
            self.client.ping(None).await.map_err(|e| error(e, "PING"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_parse() {
        let exit = parse_exit("dm:a:b alice").expect("valid");
        assert_eq!(exit.room.as_str(), "dm:a:b");
        assert_eq!(exit.user.as_str(), "alice");
        assert!(parse_exit("general").is_err());
        assert!(parse_exit("general al ice").is_err());
    }
}
