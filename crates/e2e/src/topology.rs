//! One way to start a topology of real processes for a test.
//!
//! [`Topology`] declares what runs: gateways (how many, environment per gateway),
//! history replicas and their store (embedded, or a MongoDB-wire server), presence (how
//! many, its lease), accounts (none, or replicas on their own store), Redis (one
//! `redis-server`, or a 3-master Redis Cluster), nginx in front or not, the internal
//! token, the JWT secret, extra environment, and which links (a gateway's to Redis,
//! history or presence, a history replica's to its MongoDB-wire store) run through a
//! `FaultProxy` ([`Link`], to cut them silently, slow them or make them flap).
//! [`Topology::start`] starts the backends and the service binaries as processes
//! through a [`Harness`] on free ports, waits until every gateway is ready, and gives
//! back a [`Running`]: typed access to each process (kill -9, SIGTERM, restart on the
//! same address, pause and resume: see [`Service`]) and to the addresses clients use.
//!
//! ```no_run
//! # async fn doc() -> anyhow::Result<()> {
//! use chat_e2e::{Harness, Store, Topology};
//! let h = Harness::new("example")?;
//! let mut running = Topology::new()
//!     .gateways(3)
//!     .history(2, Store::Mongo)
//!     .nginx()
//!     .start(&h)
//!     .await?;
//! let url = running.nginx()?.ws_url("alice");
//! running.gateways[0].kill();
//! running.histories[1].restart().await?;
//! # Ok(()) }
//! ```
//!
//! The services as tasks of the test process instead (port 0, no binaries):
//! `crates/chat/tests/common/mod.rs`; docs/testing.md says which way suits what.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chat_testkit::fault_proxy::FaultProxy;
use chat_testkit::mongo::{MongoServer, unique_db_name};
use chat_testkit::redis::RedisServer;
use chat_testkit::redis_cluster::RedisCluster;

use crate::harness::{Harness, Nginx, Service};
use crate::http::wait_ready;

/// How long [`Topology::start`] waits for a gateway or nginx to be ready.
const READY: Duration = Duration::from_secs(30);

/// Masters of the Redis Cluster of [`Redis::Cluster`].
const CLUSTER_MASTERS: usize = 3;

/// Which message store history runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// Its embedded store, in a directory of the harness (one replica only: the store is
    /// one process's).
    Embedded,
    /// A MongoDB-wire server ([`MongoServer`]: `nx-27017`, or `CHAT_TEST_MONGODB_URL`),
    /// one fresh database shared by every replica.
    Mongo,
}

/// Which Redis the gateways fan out through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redis {
    /// One `redis-server` ([`RedisServer`]), also presence's store.
    Single,
    /// A 3-master Redis Cluster ([`RedisCluster`], sharded pub/sub). Gateways get its
    /// `redis-cluster://` URL, or its plain URL when their environment sets
    /// `CHAT_REDIS_CLUSTER` (the other way to ask for a cluster). Presence and accounts
    /// keep their keys on the cluster too (`redis-cluster://` URL).
    Cluster,
}

/// A link of one gateway or one history replica (its index) that
/// [`Topology::proxied`] runs through a [`FaultProxy`] in the test process, for
/// [`Running::proxy`] to break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Link {
    /// Gateway `i` ↔ Redis (both its connections; [`Redis::Single`] only).
    Redis(usize),
    /// Gateway `i` ↔ its history replica.
    History(usize),
    /// Gateway `i` ↔ its presence replica.
    Presence(usize),
    /// History replica `i` ↔ the MongoDB-wire store ([`Store::Mongo`], our own
    /// `nx-27017`).
    Mongo(usize),
}

impl Link {
    /// The gateway whose link this is, if it is a gateway's.
    fn gateway(self) -> Option<usize> {
        match self {
            Self::Redis(i) | Self::History(i) | Self::Presence(i) => Some(i),
            Self::Mongo(_) => None,
        }
    }
}

/// What to start; see the module doc. Every setter returns the topology, to chain them.
#[derive(Debug, Clone)]
pub struct Topology {
    gateways: usize,
    /// `(gateway or every gateway, variable, value)`, in the order given.
    gateway_env: Vec<(Option<usize>, String, String)>,
    /// Gateways neither waited on for readiness nor behind nginx.
    outside: BTreeSet<usize>,
    histories: usize,
    store: Store,
    presences: usize,
    presence_ttl: Option<Duration>,
    /// A presence service that is not ours (no presence process is started).
    presence_url: Option<String>,
    /// `chat-accounts` replicas (none by default) and their store.
    accounts: usize,
    accounts_store: Store,
    redis: Redis,
    nginx: bool,
    internal_token: Option<String>,
    jwt_secret: Option<String>,
    /// For every service process.
    env: Vec<(String, String)>,
    /// Gateway links through a [`FaultProxy`].
    proxied: BTreeSet<Link>,
}

impl Default for Topology {
    /// One gateway (dev auth), one history on its embedded store, one presence, one
    /// `redis-server`, no nginx, no internal token.
    fn default() -> Self {
        Self {
            gateways: 1,
            gateway_env: Vec::new(),
            outside: BTreeSet::new(),
            histories: 1,
            store: Store::Embedded,
            presences: 1,
            presence_ttl: None,
            presence_url: None,
            accounts: 0,
            accounts_store: Store::Embedded,
            redis: Redis::Single,
            nginx: false,
            internal_token: None,
            jwt_secret: None,
            env: Vec::new(),
            proxied: BTreeSet::new(),
        }
    }
}

impl Topology {
    /// [`Topology::default`].
    pub fn new() -> Self {
        Self::default()
    }

    /// `n` gateways, `gw-<i>` (`CHAT_GATEWAY_ID`; the [`Service`] has that name), gateway
    /// `i` using history replica `i % replicas` and presence replica `i % replicas`, one
    /// HTTP worker each.
    pub fn gateways(self, n: usize) -> Self {
        Self {
            gateways: n,
            ..self
        }
    }

    /// Sets `key` for gateway `i` only (after everything else: it overrides).
    pub fn gateway_env(mut self, i: usize, key: &str, value: impl Into<String>) -> Self {
        self.gateway_env
            .push((Some(i), key.to_owned(), value.into()));
        self
    }

    /// Sets `key` for every gateway (overriding the topology's own settings).
    pub fn gateways_env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.gateway_env.push((None, key.to_owned(), value.into()));
        self
    }

    /// Gateway `i` is meant to be broken (a wrong internal token, say): [`start`] waits
    /// only until it listens, not until it is ready, and nginx does not send clients to
    /// it.
    ///
    /// [`start`]: Topology::start
    pub fn outside(mut self, i: usize) -> Self {
        self.outside.insert(i);
        self
    }

    /// `replicas` history processes on `store`.
    pub fn history(self, replicas: usize, store: Store) -> Self {
        Self {
            histories: replicas,
            store,
            ..self
        }
    }

    /// `replicas` presence processes (on the topology's Redis or Redis Cluster).
    pub fn presences(self, replicas: usize) -> Self {
        Self {
            presences: replicas,
            ..self
        }
    }

    /// The presence lease (`CHAT_PRESENCE_TTL_MS`; gateways heartbeat every third of it).
    pub fn presence_ttl(self, ttl: Duration) -> Self {
        Self {
            presence_ttl: Some(ttl),
            ..self
        }
    }

    /// No presence process: the gateways use the presence service at `url` (one the
    /// test runs itself, e.g. a listener that never answers).
    pub fn presence_at(self, url: impl Into<String>) -> Self {
        Self {
            presence_url: Some(url.into()),
            ..self
        }
    }

    /// `replicas` accounts processes (`accounts-<i>`) on `store` (a database of their
    /// own on the MongoDB-wire server with [`Store::Mongo`]), with the topology's Redis
    /// for their throttle counts and revocations. Gateway `i` uses replica
    /// `i % replicas` (`CHAT_ACCOUNTS_URL`) and, unless [`Topology::jwt_secret`] or its
    /// own environment says otherwise, runs in token mode (`CHAT_AUTH_MODE=jwt`).
    pub fn accounts(self, replicas: usize, store: Store) -> Self {
        Self {
            accounts: replicas,
            accounts_store: store,
            ..self
        }
    }

    /// Which Redis ([`Redis::Single`] unless set).
    pub fn redis(self, redis: Redis) -> Self {
        Self { redis, ..self }
    }

    /// Real nginx in front of the gateways, with the repo's proxy settings
    /// ([`Harness::nginx`]).
    pub fn nginx(self) -> Self {
        Self {
            nginx: true,
            ..self
        }
    }

    /// `CHAT_INTERNAL_TOKEN` of every service.
    pub fn internal_token(self, token: impl Into<String>) -> Self {
        Self {
            internal_token: Some(token.into()),
            ..self
        }
    }

    /// Gateways in JWT mode with this secret (dev auth, `?user=`, without it).
    pub fn jwt_secret(self, secret: impl Into<String>) -> Self {
        Self {
            jwt_secret: Some(secret.into()),
            ..self
        }
    }

    /// Sets `key` for every service process (`RUST_LOG`, say), over the topology's own
    /// settings.
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    /// Runs `link` through a [`FaultProxy`] (passing everything until told otherwise:
    /// [`Running::proxy`]).
    pub fn proxied(mut self, link: Link) -> Self {
        self.proxied.insert(link);
        self
    }

    /// Starts the backends, then history, presence and the gateways as processes on free
    /// ports (logs in `h`'s directory), waits until every gateway (but those
    /// [`outside`](Topology::outside)) answers `/readyz`, then starts nginx if asked and
    /// waits until it does too.
    pub async fn start(&self, h: &Harness) -> anyhow::Result<Running> {
        self.validate()?;
        let (redis, redis_cluster) = match self.redis {
            Redis::Single => (Some(RedisServer::start().await?), None),
            Redis::Cluster => (None, Some(RedisCluster::start(CLUSTER_MASTERS).await?)),
        };
        let uses_mongo = self.store == Store::Mongo
            || (self.accounts > 0 && self.accounts_store == Store::Mongo);
        let mongo = if uses_mongo {
            Some(MongoServer::start().await?)
        } else {
            None
        };
        let db = unique_db_name();

        let mut histories = Vec::new();
        let mut proxies = BTreeMap::new();
        for i in 0..self.histories {
            let store = match mongo.as_ref().filter(|_| self.store == Store::Mongo) {
                Some(mongo) => {
                    let mut url = mongo.url();
                    if self.proxied.contains(&Link::Mongo(i)) {
                        let addr = mongo.addr().ok_or_else(|| {
                            anyhow::anyhow!("Link::Mongo needs our own nx-27017, not a URL")
                        })?;
                        let proxy = FaultProxy::start(addr).await?;
                        url = format!("mongodb://{}", proxy.addr());
                        proxies.insert(Link::Mongo(i), proxy);
                    }
                    vars([("CHAT_MONGODB_URL", url), ("CHAT_MONGODB_DB", db.clone())])
                }
                None => {
                    let dir = h.dir().join(format!("history-{i}-data"));
                    vars([("CHAT_DATA_DIR", dir.display().to_string())])
                }
            };
            histories.push(self.grpc_service(h, "history", i, store).await?);
        }

        let mut presences = Vec::new();
        let replicas = match self.presence_url {
            Some(_) => 0,
            None => self.presences,
        };
        for i in 0..replicas {
            let mut env = redis_env(&redis, &redis_cluster);
            if let Some(ttl) = self.presence_ttl {
                let millis = ttl.as_millis().to_string();
                env.extend(vars([("CHAT_PRESENCE_TTL_MS", millis)]));
            }
            presences.push(self.grpc_service(h, "presence", i, env).await?);
        }

        let mut accounts = Vec::new();
        let accounts_db = unique_db_name();
        for i in 0..self.accounts {
            let mut env = match mongo
                .as_ref()
                .filter(|_| self.accounts_store == Store::Mongo)
            {
                Some(mongo) => vars([
                    ("CHAT_MONGODB_URL", mongo.url()),
                    ("CHAT_MONGODB_DB", accounts_db.clone()),
                ]),
                None => {
                    let dir = h.dir().join(format!("accounts-{i}-data"));
                    vars([("CHAT_DATA_DIR", dir.display().to_string())])
                }
            };
            env.extend(redis_env(&redis, &redis_cluster));
            accounts.push(self.grpc_service(h, "accounts", i, env).await?);
        }

        let mut gateways = Vec::new();
        for i in 0..self.gateways {
            let own: Vec<(String, String)> = self
                .gateway_env
                .iter()
                .filter(|(at, _, _)| at.is_none_or(|at| at == i))
                .map(|(_, key, value)| (key.clone(), value.clone()))
                .collect();
            let set = |key: &str| own.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v);
            let mut redis_url = match (&redis, &redis_cluster) {
                (Some(redis), _) => redis.url(),
                (None, Some(cluster)) if set("CHAT_REDIS_CLUSTER").is_some() => cluster.plain_url(),
                (None, Some(cluster)) => cluster.url(),
                (None, None) => anyhow::bail!("no Redis started"),
            };
            let mut presence_url = match &self.presence_url {
                Some(url) => url.clone(),
                None => presences[i % presences.len()].url(),
            };
            if self.proxied.contains(&Link::Presence(i)) {
                let upstream = presences
                    .get(i % presences.len().max(1))
                    .ok_or_else(|| anyhow::anyhow!("Link::Presence needs our own presence"))?;
                let proxy = FaultProxy::start(upstream.addr).await?;
                presence_url = format!("http://{}", proxy.addr());
                proxies.insert(Link::Presence(i), proxy);
            }
            let mut history_url = histories[i % histories.len()].url();
            if self.proxied.contains(&Link::History(i)) {
                let proxy = FaultProxy::start(histories[i % histories.len()].addr).await?;
                history_url = format!("http://{}", proxy.addr());
                proxies.insert(Link::History(i), proxy);
            }
            if let (true, Some(redis)) = (self.proxied.contains(&Link::Redis(i)), &redis) {
                let proxy = FaultProxy::start(redis.addr()).await?;
                redis_url = format!("redis://{}", proxy.addr());
                proxies.insert(Link::Redis(i), proxy);
            }
            let id = set("CHAT_GATEWAY_ID").cloned().unwrap_or(format!("gw-{i}"));
            let mut env = vars([
                ("CHAT_HISTORY_URL", history_url),
                ("CHAT_PRESENCE_URL", presence_url),
                ("CHAT_REDIS_URL", redis_url),
                ("CHAT_GATEWAY_ID", id.clone()),
                ("CHAT_HTTP_WORKERS", "1".to_owned()),
            ]);
            if !accounts.is_empty() {
                let url = accounts[i % accounts.len()].url();
                env.extend(vars([("CHAT_ACCOUNTS_URL", url)]));
            }
            match &self.jwt_secret {
                Some(secret) => env.extend(vars([
                    ("CHAT_AUTH_MODE", "jwt".to_owned()),
                    ("CHAT_JWT_SECRET", secret.clone()),
                ])),
                None if !accounts.is_empty() => {
                    env.extend(vars([("CHAT_AUTH_MODE", "jwt".to_owned())]));
                }
                None => env.extend(vars([("CHAT_AUTH_MODE", "dev".to_owned())])),
            }
            let mut env = self.common(env);
            env.extend(own);
            gateways.push(h.spawn(&id, "chat-gateway", "CHAT_HTTP_ADDR", env).await?);
        }
        let inside: Vec<_> = gateways
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.outside.contains(i))
            .map(|(_, g)| g.addr)
            .collect();
        for addr in &inside {
            wait_ready(*addr, READY).await?;
        }

        let nginx = if self.nginx {
            let nginx = h.nginx(&inside).await?;
            wait_ready(nginx.addr, READY).await?;
            Some(nginx)
        } else {
            None
        };
        Ok(Running {
            nginx,
            proxies,
            gateways,
            histories,
            presences,
            accounts,
            redis,
            redis_cluster,
            mongo,
        })
    }

    /// Refuses what cannot work, before anything starts.
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.gateways >= 1, "a topology needs a gateway");
        anyhow::ensure!(self.histories >= 1, "a topology needs a history replica");
        anyhow::ensure!(
            self.store == Store::Mongo || self.histories == 1,
            "the embedded store is one process's: {} history replicas need Store::Mongo",
            self.histories
        );
        anyhow::ensure!(
            self.accounts_store == Store::Mongo || self.accounts <= 1,
            "the embedded store is one process's: {} accounts replicas need Store::Mongo",
            self.accounts
        );
        if self.presence_url.is_none() {
            anyhow::ensure!(self.presences >= 1, "a topology needs presence");
        }
        anyhow::ensure!(
            self.redis == Redis::Single
                || !self.proxied.iter().any(|l| matches!(l, Link::Redis(_))),
            "a proxied Redis link needs Redis::Single"
        );
        let named = self.gateway_env.iter().filter_map(|(at, _, _)| *at);
        let proxied = self.proxied.iter().filter_map(|link| link.gateway());
        if let Some(i) = named
            .chain(self.outside.iter().copied())
            .chain(proxied)
            .max()
        {
            anyhow::ensure!(
                i < self.gateways,
                "gateway {i} is configured, but there are {} gateways",
                self.gateways
            );
        }
        for link in &self.proxied {
            if let Link::Mongo(i) = *link {
                anyhow::ensure!(
                    self.store == Store::Mongo && i < self.histories,
                    "{link:?} needs Store::Mongo and history replica {i}"
                );
            }
        }
        Ok(())
    }

    /// `chat-<kind>` as `<kind>-<i>`, with `own` environment and its metrics on a free
    /// port.
    async fn grpc_service(
        &self,
        h: &Harness,
        kind: &str,
        i: usize,
        own: Vec<(String, String)>,
    ) -> anyhow::Result<Service> {
        let mut env = vars([("CHAT_METRICS_ADDR", "127.0.0.1:0".to_owned())]);
        env.extend(own);
        let (name, bin) = (format!("{kind}-{i}"), format!("chat-{kind}"));
        h.spawn(&name, &bin, "CHAT_GRPC_ADDR", self.common(env))
            .await
    }

    /// `own`, then the internal token and the topology's extra environment.
    fn common(&self, mut own: Vec<(String, String)>) -> Vec<(String, String)> {
        if let Some(token) = &self.internal_token {
            own.extend(vars([("CHAT_INTERNAL_TOKEN", token.clone())]));
        }
        own.extend(self.env.iter().cloned());
        own
    }
}

fn vars<const N: usize>(pairs: [(&str, String); N]) -> Vec<(String, String)> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// A started [`Topology`]: every process, each killed when this is dropped (nginx first,
/// then the gateways, history, presence and accounts, then Redis and the store).
#[derive(Debug)]
pub struct Running {
    /// nginx, when the topology has it ([`Running::nginx`] says so in an error).
    pub nginx: Option<Nginx>,
    /// The [`Topology::proxied`] links ([`Running::proxy`]).
    proxies: BTreeMap<Link, FaultProxy>,
    /// In the order declared: `gw-<i>` unless given another `CHAT_GATEWAY_ID`.
    pub gateways: Vec<Service>,
    /// `history-<i>`.
    pub histories: Vec<Service>,
    /// `presence-<i>` (none with [`Topology::presence_at`]).
    pub presences: Vec<Service>,
    /// `accounts-<i>` (none unless [`Topology::accounts`]).
    pub accounts: Vec<Service>,
    redis: Option<RedisServer>,
    redis_cluster: Option<RedisCluster>,
    mongo: Option<MongoServer>,
}

impl Running {
    /// nginx, when the topology has it.
    pub fn nginx(&self) -> anyhow::Result<&Nginx> {
        self.nginx
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("this topology has no nginx"))
    }

    /// The proxy of a [`Topology::proxied`] link, to break and heal it.
    pub fn proxy(&mut self, link: Link) -> anyhow::Result<&mut FaultProxy> {
        self.proxies
            .get_mut(&link)
            .ok_or_else(|| anyhow::anyhow!("{link:?} is not proxied in this topology"))
    }

    /// The gateway whose id (`CHAT_GATEWAY_ID`, as in `hello`) is `id`.
    pub fn gateway(&self, id: &str) -> anyhow::Result<&Service> {
        self.gateways
            .iter()
            .find(|g| g.name == id)
            .ok_or_else(|| anyhow::anyhow!("no gateway {id}"))
    }

    /// [`Running::gateway`], to kill or signal it.
    pub fn gateway_mut(&mut self, id: &str) -> anyhow::Result<&mut Service> {
        self.gateways
            .iter_mut()
            .find(|g| g.name == id)
            .ok_or_else(|| anyhow::anyhow!("no gateway {id}"))
    }

    /// The `redis-server` of [`Redis::Single`].
    pub fn redis(&self) -> anyhow::Result<&RedisServer> {
        self.redis
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("this topology has no single Redis"))
    }

    /// [`Running::redis`], to restart it.
    pub fn redis_mut(&mut self) -> anyhow::Result<&mut RedisServer> {
        self.redis
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("this topology has no single Redis"))
    }

    /// The Redis Cluster of [`Redis::Cluster`].
    pub fn redis_cluster(&self) -> anyhow::Result<&RedisCluster> {
        self.redis_cluster
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("this topology has no Redis Cluster"))
    }

    /// The MongoDB-wire server of [`Store::Mongo`].
    pub fn mongo(&self) -> anyhow::Result<&MongoServer> {
        self.mongo
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("this topology has no MongoDB-wire server"))
    }
}

/// `CHAT_REDIS_URL` of a service that keeps keys in the topology's Redis (presence,
/// accounts): the single server's URL, or the cluster's `redis-cluster://` one.
fn redis_env(redis: &Option<RedisServer>, cluster: &Option<RedisCluster>) -> Vec<(String, String)> {
    match (redis, cluster) {
        (Some(redis), _) => vars([("CHAT_REDIS_URL", redis.url())]),
        (None, Some(cluster)) => vars([("CHAT_REDIS_URL", cluster.url())]),
        (None, None) => Vec::new(),
    }
}
