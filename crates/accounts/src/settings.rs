//! Configuration from the environment, and choosing the store backend from it.

use std::sync::Arc;
use std::time::Duration;

use chat_runtime::env::{Env, EnvError, FromEnv, ServiceSettings, StoreSettings};

use crate::password::{HashParams, HashPriority};
use crate::store::AccountStore;
use crate::store::embedded::EmbeddedStore;
use crate::store::mongo::MongoStore;

/// Accounts' default gRPC port (`CHAT_GRPC_ADDR`).
pub const DEFAULT_GRPC_PORT: u16 = 50053;

/// The longest access-token lifetime allowed (OWASP: short-lived; the issue: 15 min).
pub const MAX_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

const DAY: Duration = Duration::from_secs(24 * 3600);

/// Everything the accounts service reads from its environment.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// `CHAT_GRPC_ADDR` (`0.0.0.0:50053`), `CHAT_METRICS_ADDR`, `CHAT_INTERNAL_TOKEN`.
    pub service: ServiceSettings,
    /// `CHAT_MONGODB_URL` (unset = embedded store; never printed), `CHAT_MONGODB_DB`
    /// (`chat`), `CHAT_DATA_DIR` (the embedded store's directory, `./data`, file
    /// `accounts.redb`).
    pub store: StoreSettings,
    /// `CHAT_ACCESS_TOKEN_TTL_SECS`: access-token lifetime (600 s; 1 to 900).
    pub access_token_ttl: Duration,
    /// `CHAT_SESSION_IDLE_DAYS`: a session unused this long ends (30 days).
    pub session_idle: Duration,
    /// `CHAT_SESSION_MAX_DAYS`: a session ends this long after its log-in, used or not
    /// (90 days; at least the idle lifetime).
    pub session_max: Duration,
    /// `CHAT_REFRESH_REUSE_GRACE_SECS`: a rotated refresh token presented again within
    /// this long gets the same new token instead of ending the session (10 s).
    pub refresh_reuse_grace: Duration,
    /// `CHAT_TOKEN_ISSUER`: the `iss` of access tokens (`chat-accounts`).
    pub token_issuer: String,
    /// `CHAT_TOKEN_AUDIENCE`: the `aud` of access tokens (`chat`).
    pub token_audience: String,
    /// `CHAT_HASH_THREADS`: password hashes running at once (the number of cores).
    pub hash_threads: usize,
    /// `CHAT_HASH_PRIORITY`: the hashing threads' scheduling priority, `low` (the
    /// default: nice 10), `idle` (`SCHED_IDLE`: deliveries and every other request go
    /// first whenever they want the CPU) or `normal` (Linux; elsewhere only `normal`).
    pub hash_priority: HashPriority,
    /// `CHAT_HASH_QUEUE`: password hashes waiting at most; beyond, log-ins are refused
    /// `unavailable` at once (64).
    pub hash_queue: usize,
    /// `CHAT_SESSION_PURGE_SECS`: how often expired sessions are deleted (300 s).
    pub purge_interval: Duration,
    /// argon2id parameters: OWASP's, not configurable (tests use cheaper ones).
    pub hash_params: HashParams,
    /// `CHAT_REDIS_URL` (unset: none; never printed), made a `redis-cluster://` URL by
    /// `CHAT_REDIS_CLUSTER=true`: where the throttle counts are shared and revocations
    /// published. Unset: an in-memory throttle per replica and no revocations.
    pub redis_url: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            service: ServiceSettings::with_port(DEFAULT_GRPC_PORT),
            store: StoreSettings::default(),
            access_token_ttl: Duration::from_secs(600),
            session_idle: 30 * DAY,
            session_max: 90 * DAY,
            refresh_reuse_grace: Duration::from_secs(10),
            token_issuer: "chat-accounts".into(),
            token_audience: "chat".into(),
            hash_threads: std::thread::available_parallelism().map_or(1, usize::from),
            hash_priority: HashPriority::Low,
            hash_queue: 64,
            purge_interval: Duration::from_secs(300),
            hash_params: HashParams::OWASP,
            redis_url: None,
        }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("service", &self.service)
            .field("store", &self.store)
            .field("access_token_ttl", &self.access_token_ttl)
            .field("session_idle", &self.session_idle)
            .field("session_max", &self.session_max)
            .field("refresh_reuse_grace", &self.refresh_reuse_grace)
            .field("token_issuer", &self.token_issuer)
            .field("token_audience", &self.token_audience)
            .field("hash_threads", &self.hash_threads)
            .field("hash_priority", &self.hash_priority)
            .field("hash_queue", &self.hash_queue)
            .field("purge_interval", &self.purge_interval)
            .field("hash_params", &self.hash_params)
            .field("redis_url", &self.redis_url.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl FromEnv for Settings {
    fn read(env: &Env<'_>, d: Self) -> Result<Self, EnvError> {
        let days = |var: &str, default: Duration| -> Result<Duration, EnvError> {
            let n = env.number_at_least(var, default.as_secs() / DAY.as_secs(), 1)?;
            Ok(DAY.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX)))
        };
        let access_token_ttl = env.secs("CHAT_ACCESS_TOKEN_TTL_SECS", d.access_token_ttl)?;
        if access_token_ttl.is_zero() || access_token_ttl > MAX_ACCESS_TOKEN_TTL {
            return Err(EnvError::invalid(
                "CHAT_ACCESS_TOKEN_TTL_SECS",
                &access_token_ttl.as_secs().to_string(),
                format!("must be 1 to {}", MAX_ACCESS_TOKEN_TTL.as_secs()),
            ));
        }
        let session_idle = days("CHAT_SESSION_IDLE_DAYS", d.session_idle)?;
        let session_max = days("CHAT_SESSION_MAX_DAYS", d.session_max)?;
        if session_max < session_idle {
            return Err(EnvError::new(
                "CHAT_SESSION_MAX_DAYS",
                "must be at least CHAT_SESSION_IDLE_DAYS",
            ));
        }
        Ok(Self {
            service: d.service.read(env)?,
            store: d.store.read(env),
            access_token_ttl,
            session_idle,
            session_max,
            refresh_reuse_grace: env
                .secs("CHAT_REFRESH_REUSE_GRACE_SECS", d.refresh_reuse_grace)?,
            token_issuer: env.string("CHAT_TOKEN_ISSUER", &d.token_issuer),
            token_audience: env.string("CHAT_TOKEN_AUDIENCE", &d.token_audience),
            hash_threads: env.number_at_least("CHAT_HASH_THREADS", d.hash_threads, 1)?,
            hash_priority: env.parse("CHAT_HASH_PRIORITY", d.hash_priority)?,
            hash_queue: env.parse("CHAT_HASH_QUEUE", d.hash_queue)?,
            purge_interval: Duration::from_secs(env.number_at_least(
                "CHAT_SESSION_PURGE_SECS",
                d.purge_interval.as_secs(),
                1,
            )?),
            hash_params: d.hash_params,
            redis_url: env.redis_url()?.or(d.redis_url),
        })
    }
}

/// Opens the account store: MongoDB when `CHAT_MONGODB_URL` is set, else the embedded
/// store (`accounts.redb` in `CHAT_DATA_DIR`).
pub async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn AccountStore>> {
    let mongo =
        async |url: String, db: String| Ok(Arc::new(MongoStore::connect(&url, &db).await?) as _);
    let embedded = |dir| EmbeddedStore::open(dir).map(|s| (s.path().to_owned(), Arc::new(s) as _));
    chat_runtime::store::open(&settings.store, "account store", mongo, embedded).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let d = Settings::from_pairs(&[]).expect("defaults");
        assert_eq!(d, Settings::default());
        assert_eq!(d.service.grpc_addr.port(), 50053);
        let s = Settings::from_pairs(&[
            ("CHAT_MONGODB_URL", "mongodb://u:secret@db:27017"),
            ("CHAT_ACCESS_TOKEN_TTL_SECS", "900"),
            ("CHAT_SESSION_IDLE_DAYS", "7"),
            ("CHAT_SESSION_MAX_DAYS", "7"),
            ("CHAT_REFRESH_REUSE_GRACE_SECS", "3"),
            ("CHAT_TOKEN_ISSUER", "https://chat.example"),
            ("CHAT_TOKEN_AUDIENCE", "chat-web"),
            ("CHAT_HASH_THREADS", "2"),
            ("CHAT_HASH_PRIORITY", "normal"),
            ("CHAT_HASH_QUEUE", "0"),
            ("CHAT_SESSION_PURGE_SECS", "60"),
            ("CHAT_REDIS_URL", "redis://:secret@r:6379"),
            ("CHAT_REDIS_CLUSTER", "true"),
        ])
        .expect("valid");
        assert_eq!(s.access_token_ttl, Duration::from_secs(900));
        assert_eq!(s.session_idle, 7 * DAY);
        assert_eq!(s.session_max, 7 * DAY);
        assert_eq!(s.refresh_reuse_grace, Duration::from_secs(3));
        assert_eq!(s.token_issuer, "https://chat.example");
        assert_eq!(s.token_audience, "chat-web");
        assert_eq!(
            (s.hash_threads, s.hash_priority, s.hash_queue),
            (2, HashPriority::Normal, 0)
        );
        assert_eq!(s.purge_interval, Duration::from_secs(60));
        assert_eq!(
            s.redis_url.as_deref(),
            Some("redis-cluster://:secret@r:6379")
        );
        assert!(!format!("{s:?}").contains("secret"));
    }

    #[test]
    fn out_of_range_values_are_named() {
        for (var, value) in [
            ("CHAT_ACCESS_TOKEN_TTL_SECS", "901"),
            ("CHAT_ACCESS_TOKEN_TTL_SECS", "0"),
            ("CHAT_SESSION_IDLE_DAYS", "0"),
            ("CHAT_HASH_THREADS", "0"),
            ("CHAT_HASH_PRIORITY", "10"),
            ("CHAT_HASH_PRIORITY", "IDLE"),
            ("CHAT_REDIS_CLUSTER", "maybe"),
        ] {
            let err = Settings::from_pairs(&[(var, value)]).expect_err(var);
            assert_eq!(err.var, var, "{err}");
        }
        let err =
            Settings::from_pairs(&[("CHAT_SESSION_IDLE_DAYS", "100")]).expect_err("max < idle");
        assert_eq!(err.var, "CHAT_SESSION_MAX_DAYS");
    }
}
