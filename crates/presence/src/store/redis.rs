//! Presence in Redis: an online-status string per user, with a TTL, plus the sets
//! that make it correct for many connections per user on many gateways and self-healing
//! when a gateway dies. Any number of presence replicas may share one Redis.
//!
//! # Keys
//!
//! All keys start with `presence:`; user, room and gateway ids never contain a space.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `presence:user:<uid>` | string `online`, `PX ttl` | the online status: present = online |
//! | `presence:user:<uid>:gws` | set | gateways holding ≥ 1 connection of the user |
//! | `presence:user:<uid>:rooms` | set | rooms told during the user's online period that the user is online; told offline when it ends |
//! | `presence:gw:<gw>:users` | set | users the gateway holds (released when it dies) |
//! | `presence:gw:<gw>:left` | sorted set | uid → when the gateway disconnected it (ms); kept for a ttl |
//! | `presence:gw:<gw>:beat` | string, `PX ttl` | set by heartbeats only: its absence is a lost lease (first heartbeat, silence, Redis lost its data) |
//! | `presence:gw:<gw>:claim` | string | the claim of the gateway's unacknowledged batch of exits |
//! | `presence:gw:<gw>:claimed` | set | `"<room> <uid>"` exits of that batch (queued again if the gateway dies) |
//! | `presence:gateways` | sorted set | gateway → lease deadline (unix ms, Redis clock) |
//! | `presence:exits` | set | `"<room> <uid>"` offline events of swept users, not yet claimed |
//!
//! Every operation is one Lua script (`src/store/lua/`), so it is atomic and costs one
//! round trip; lease deadlines come from Redis `TIME`, so replicas agree on them. Scripts
//! are loaded at connect and called with `EVALSHA`; after `NOSCRIPT` (Redis restarted)
//! they are loaded again and the call is repeated.
//!
//! A heartbeat refreshes the users registered on its gateway and registers the others it
//! names (their connect was lost, Redis lost its data, or the gateway was swept after a
//! silence), except users the gateway disconnected within the last ttl: the heartbeat
//! may have been sent before that disconnect, and must not bring them back.

use std::time::Duration;

use async_trait::async_trait;
use chat_model::{RoomId, UserId};
use fred::clients::Client;
use fred::error::{Error as RedisError, ErrorKind};
use fred::interfaces::{ClientLike, KeysInterface, LuaInterface};
use fred::types::Builder;
use fred::types::config::{Config, ReconnectPolicy};

use super::{ExitBatch, GatewayId, PresenceError, PresenceStats, PresenceStore, RoomExit};

/// Redis command timeout: a call that takes longer fails as unavailable.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Users per heartbeat script call: large enough to amortise the round trip, small
/// enough that one call blocks Redis for about a millisecond.
pub const HEARTBEAT_CHUNK: usize = 1000;
/// Entries (users, exits) one sweep script call touches about, for the same reason.
const SWEEP_BUDGET: usize = 1000;

/// One Lua script: its source (to load it again after a Redis restart) and SHA-1.
#[derive(Debug)]
struct Script {
    /// Its file name, for errors.
    name: &'static str,
    source: String,
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
            Ok(Script {
                name,
                source: source.to_owned(),
                sha,
            })
        }
        Ok(Self {
            connect: one(client, script!("lua/connect.lua")).await?,
            disconnect: one(client, script!("lua/disconnect.lua")).await?,
            enter_room: one(client, script!("lua/enter_room.lua")).await?,
            heartbeat: one(client, script!("lua/heartbeat.lua")).await?,
            sweep: one(client, script!("lua/sweep.lua")).await?,
            take_exits: one(client, script!("lua/take_exits.lua")).await?,
            stats: one(client, script!("lua/stats.lua")).await?,
        })
    }
}

/// Presence through one Redis server (or a primary behind one address).
#[derive(Debug)]
pub struct RedisPresence {
    /// One multiplexed connection: commands are pipelined, and Redis runs them one at a
    /// time anyway. Reconnects by itself.
    client: Client,
    /// The lease length of gateways and users.
    ttl: Duration,
    scripts: Scripts,
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

impl RedisPresence {
    /// Connects to `url` (`redis://host:port[/db]`) and loads the scripts. Fails when
    /// Redis is unreachable now; later outages are retried forever (calls meanwhile fail
    /// as unavailable after 5 s). `ttl` is the lease of users and gateways.
    pub async fn connect(url: &str, ttl: Duration) -> Result<Self, PresenceError> {
        let config = Config::from_url(url).map_err(|e| error(e, "url"))?;
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

    fn ttl_ms(&self) -> String {
        self.ttl.as_millis().max(1).to_string()
    }

    /// `EVALSHA`, loading the script again when Redis no longer has it.
    async fn run<R: fred::types::FromValue>(
        &self,
        script: &Script,
        args: Vec<String>,
    ) -> Result<R, PresenceError> {
        let keys: Vec<String> = Vec::new();
        match self
            .client
            .evalsha(script.sha.as_str(), keys.clone(), args.clone())
            .await
        {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                tracing::info!(
                    script = script.name,
                    "redis lost the presence scripts; loading"
                );
                let _sha: String = self
                    .client
                    .script_load(script.source.as_str())
                    .await
                    .map_err(|e| error(e, script.name))?;
                self.client
                    .evalsha(script.sha.as_str(), keys, args)
                    .await
                    .map_err(|e| error(e, script.name))
            }
            result => result.map_err(|e| error(e, script.name)),
        }
    }

    async fn run_flag(&self, script: &Script, args: Vec<String>) -> Result<bool, PresenceError> {
        let flag: i64 = self.run(script, args).await?;
        Ok(flag == 1)
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

fn user_key(user: &UserId) -> String {
    format!("presence:user:{user}")
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
        self.run_flag(&self.scripts.connect, args).await
    }

    async fn disconnect(
        &self,
        gateway: &GatewayId,
        user: &UserId,
    ) -> Result<Option<Vec<RoomId>>, PresenceError> {
        let args = vec![gateway.to_owned(), user.to_string(), self.ttl_ms()];
        let reply: Vec<String> = self.run(&self.scripts.disconnect, args).await?;
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
        self.run_flag(&self.scripts.enter_room, args).await
    }

    async fn heartbeat(
        &self,
        gateway: &GatewayId,
        users: &[UserId],
    ) -> Result<bool, PresenceError> {
        let ttl = self.ttl_ms();
        let chunks: Vec<&[UserId]> = if users.is_empty() {
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
            args.extend(chunk.iter().map(UserId::to_string));
            let chunk_lost: i64 = self.run(&self.scripts.heartbeat, args).await?;
            lost.get_or_insert(chunk_lost == 1);
        }
        Ok(lost.unwrap_or(false))
    }

    async fn sweep(&self) -> Result<bool, PresenceError> {
        let args = vec![SWEEP_BUDGET.to_string()];
        self.run_flag(&self.scripts.sweep, args).await
    }

    async fn take_exits(
        &self,
        gateway: &GatewayId,
        ack: u64,
        limit: usize,
    ) -> Result<ExitBatch, PresenceError> {
        let args = vec![gateway.to_owned(), ack.to_string(), limit.to_string()];
        let reply: Vec<String> = self.run(&self.scripts.take_exits, args).await?;
        let (claim, entries) = reply
            .split_first()
            .ok_or_else(|| PresenceError::Internal("empty take_exits reply".into()))?;
        let claim = claim
            .parse()
            .map_err(|_| PresenceError::Internal(format!("malformed claim {claim:?}")))?;
        let exits = entries
            .iter()
            .map(|e| parse_exit(e))
            .collect::<Result<_, _>>()?;
        Ok(ExitBatch { claim, exits })
    }

    async fn online(&self, users: &[UserId]) -> Result<Vec<bool>, PresenceError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = users.iter().map(user_key).collect();
        let values: Vec<Option<String>> =
            self.client.mget(keys).await.map_err(|e| error(e, "MGET"))?;
        if values.len() != users.len() {
            return Err(PresenceError::Internal(format!(
                "MGET of {} keys returned {} values",
                users.len(),
                values.len()
            )));
        }
        Ok(values.iter().map(Option::is_some).collect())
    }

    async fn stats(&self) -> Result<PresenceStats, PresenceError> {
        let reply: Vec<i64> = self.run(&self.scripts.stats, Vec::new()).await?;
        let count = |i: usize| reply.get(i).map_or(0, |&n| u64::try_from(n).unwrap_or(0));
        Ok(PresenceStats {
            gateways: count(0),
            users: count(1),
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
