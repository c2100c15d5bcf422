//! A cluster for integration tests: one history service and several gateways, all in
//! this process on port 0, with a private `redis-server` for fan-out and either the
//! embedded store or a MongoDB-wire server.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use chat_gateway::{Gateway, Settings as GatewaySettings};
use chat_history::{HistoryServer, MessageStore};
use chat_testkit::mongo::MongoServer;
use chat_testkit::redis::RedisServer;
use chat_testkit::ws::WsClient;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Presence lease of test clusters: short, so expiry tests are quick.
pub const PRESENCE_TTL: std::time::Duration = std::time::Duration::from_millis(1500);

/// HS256 secret of every test gateway.
pub const SECRET: &str = "integration-test-secret-0123456789";

/// Which message store history runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Embedded,
    Mongo,
}

/// A running gateway.
pub struct RunningGateway {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
}

/// History + gateways + Redis; everything stops when dropped.
pub struct Cluster {
    pub redis: RedisServer,
    pub mongo: Option<MongoServer>,
    pub history_addr: SocketAddr,
    pub presence_addr: SocketAddr,
    pub store: Arc<dyn MessageStore>,
    pub gateways: Vec<RunningGateway>,
    history_stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts history on `store` and `gateways` gateways sharing one Redis.
    pub async fn start(store: Store, gateways: usize) -> anyhow::Result<Self> {
        let _ = tracing_subscriber_init();
        let dir = tempfile::tempdir()?;
        let redis = RedisServer::start().await?;
        let (store_impl, mongo): (Arc<dyn MessageStore>, _) = match store {
            Store::Embedded => {
                let settings = chat_history::Settings {
                    data_dir: dir.path().to_owned(),
                    ..Default::default()
                };
                (chat_history::open_store(&settings).await?, None)
            }
            Store::Mongo => {
                let mongo = MongoServer::start().await?;
                let settings = chat_history::Settings {
                    mongodb_url: Some(mongo.url()),
                    mongodb_db: chat_testkit::mongo::unique_db_name(),
                    ..Default::default()
                };
                (chat_history::open_store(&settings).await?, Some(mongo))
            }
        };
        let history = HistoryServer::bind(
            ([127, 0, 0, 1], 0).into(),
            store_impl.clone(),
            &mut chat_metrics::Metrics::new("test"),
        )
        .await?;
        let history_addr = history.local_addr();
        let history_stop = CancellationToken::new();
        tokio::spawn(history.run(history_stop.clone()));
        let presence_store: Arc<dyn chat_presence::PresenceStore> = Arc::new(
            chat_presence::store::redis::RedisPresence::connect(&redis.url(), PRESENCE_TTL).await?,
        );
        let presence = chat_presence::PresenceServer::bind(
            ([127, 0, 0, 1], 0).into(),
            presence_store,
            &mut chat_metrics::Metrics::new("test"),
        )
        .await?;
        let presence_addr = presence.local_addr();
        tokio::spawn(presence.run(history_stop.clone()));
        let mut cluster = Self {
            redis,
            mongo,
            history_addr,
            presence_addr,
            store: store_impl,
            gateways: Vec::new(),
            history_stop,
            _dir: dir,
        };
        for _ in 0..gateways {
            cluster.add_gateway().await?;
        }
        Ok(cluster)
    }

    /// Settings of a test gateway: JWT mode, Redis fan-out, one worker, port 0.
    pub fn gateway_settings(&self) -> GatewaySettings {
        GatewaySettings {
            http_addr: ([127, 0, 0, 1], 0).into(),
            history_url: format!("http://{}", self.history_addr),
            presence_url: format!("http://{}", self.presence_addr),
            redis_url: Some(self.redis.url()),
            jwt_secret: Some(chat_gateway::settings::Secret::new(SECRET)),
            workers: 1,
            shutdown_grace_secs: 5,
            ..Default::default()
        }
    }

    /// Starts one more gateway; returns its index.
    pub async fn add_gateway(&mut self) -> anyhow::Result<usize> {
        let settings = self.gateway_settings();
        self.add_gateway_with(&settings).await
    }

    /// Starts one more gateway with `settings` (start from [`Self::gateway_settings`]);
    /// returns its index.
    pub async fn add_gateway_with(&mut self, settings: &GatewaySettings) -> anyhow::Result<usize> {
        let shutdown = CancellationToken::new();
        let gateway = Gateway::build(
            settings,
            shutdown.clone(),
            chat_metrics::Metrics::new("gateway"),
        )
        .await?;
        let addr = gateway.local_addr()?;
        let task = tokio::spawn(gateway.run());
        self.gateways.push(RunningGateway {
            addr,
            shutdown,
            task,
        });
        Ok(self.gateways.len() - 1)
    }

    /// Starts an accounts service (embedded store in the cluster's directory, cheap
    /// hashing, access tokens valid `access_token_ttl`) that announces ended sessions on
    /// the cluster's Redis; returns its address for the gateways' `accounts_url`.
    pub async fn start_accounts(
        &self,
        access_token_ttl: std::time::Duration,
    ) -> anyhow::Result<SocketAddr> {
        let mut settings = cheap_accounts(self._dir.path(), access_token_ttl);
        settings.redis_url = Some(self.redis.url());
        let store = chat_accounts::open_store(&settings).await?;
        let backends = chat_accounts::cli::backends(&settings).await?;
        let accounts = chat_accounts::AccountsServer::bind(
            &settings,
            store,
            backends.throttle,
            backends.revocations,
            &mut chat_metrics::Metrics::new("test"),
        )
        .await?;
        let addr = accounts.local_addr();
        tokio::spawn(accounts.run(self.history_stop.clone()));
        Ok(addr)
    }

    /// `ws://` URL of gateway `gw` with a valid token for `user`.
    pub fn ws_url(&self, gw: usize, user: &str) -> String {
        format!(
            "ws://{}/v1/ws?token={}",
            self.gateways[gw].addr,
            token(user)
        )
    }

    /// `http://` base URL of gateway `gw`.
    /// Publishes `payload` on `room`'s fan-out channel behind the gateways' backs, as a
    /// lost, late or foreign publisher would.
    pub async fn publish_raw(&self, room: &str, payload: String) -> anyhow::Result<()> {
        use fred::interfaces::{ClientLike, PubsubInterface};
        let redis = fred::clients::Client::new(
            fred::types::config::Config::from_url(&self.redis.url())?,
            None,
            None,
            None,
        );
        redis.init().await?;
        let _: i64 = redis.publish(format!("chat:room:{room}"), payload).await?;
        redis.quit().await?;
        Ok(())
    }

    pub fn http_url(&self, gw: usize) -> String {
        format!("http://{}", self.gateways[gw].addr)
    }

    /// A connected client of `user` on gateway `gw`.
    pub async fn client(&self, gw: usize, user: &str) -> anyhow::Result<WsClient> {
        WsClient::connect(&self.ws_url(gw, user)).await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for gw in &self.gateways {
            gw.shutdown.cancel();
        }
        self.history_stop.cancel();
    }
}

/// Settings of an all-in-one's gateway: port 0 on loopback, dev auth, one worker, a
/// one-second shutdown grace (history_url and presence_url are filled in by
/// `AllInOne::build` with its private loopback ports).
pub fn all_in_one_gateway() -> GatewaySettings {
    GatewaySettings {
        http_addr: ([127, 0, 0, 1], 0).into(),
        auth_mode: chat_gateway::AuthMode::Dev,
        workers: 1,
        shutdown_grace_secs: 1,
        ..Default::default()
    }
}

/// Accounts settings for tests: loopback port 0, embedded store in `dir`, argon2id made
/// cheap, access tokens valid `access_token_ttl`.
pub fn cheap_accounts(
    dir: &std::path::Path,
    access_token_ttl: std::time::Duration,
) -> chat_accounts::Settings {
    let mut settings = chat_accounts::Settings {
        access_token_ttl,
        hash_params: chat_accounts::password::HashParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        },
        hash_threads: 2,
        ..Default::default()
    };
    settings.service.grpc_addr = ([127, 0, 0, 1], 0).into();
    settings.store.data_dir = dir.to_owned();
    settings
}

/// A token for `user`, valid for an hour.
pub fn token(user: &str) -> String {
    token_with(
        serde_json::json!({ "sub": user, "exp": now() + 3600 }),
        SECRET,
    )
}

/// A token with any claims and secret.
pub fn token_with(claims: serde_json::Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).expect("non-empty secret"),
    )
    .expect("HS256 encoding cannot fail")
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn tracing_subscriber_init() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init()
}

/// Seqs of `count` messages of `room` read from `client`, in arrival order.
pub async fn collect_seqs(
    client: &mut WsClient,
    room: &str,
    count: usize,
) -> anyhow::Result<Vec<u64>> {
    let mut seqs = Vec::with_capacity(count);
    while seqs.len() < count {
        let m = client.next_message(room).await?;
        seqs.push(
            m["seq"]
                .as_u64()
                .ok_or_else(|| anyhow::anyhow!("no seq in {m}"))?,
        );
    }
    Ok(seqs)
}
