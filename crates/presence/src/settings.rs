//! Configuration from the environment, and choosing the store backend from it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chat_runtime::env::{Env, EnvError, FromEnv, ServiceSettings};

use crate::metrics::register_redis_connection;
use crate::store::PresenceStore;
use crate::store::memory::MemoryPresence;
use crate::store::redis::RedisPresence;

/// Presence's default gRPC port (`CHAT_GRPC_ADDR`).
pub const DEFAULT_GRPC_PORT: u16 = 50052;

/// The default lease of users and gateways (`CHAT_PRESENCE_TTL_SECS`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// The shortest lease `CHAT_PRESENCE_TTL_MS` accepts: heartbeats come every ttl / 3, and
/// below this network jitter alone would flap users.
pub const MIN_TTL: Duration = Duration::from_millis(100);

/// Everything the presence service reads from its environment.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// `CHAT_GRPC_ADDR` (`0.0.0.0:50052`), `CHAT_METRICS_ADDR`, `CHAT_INTERNAL_TOKEN`.
    pub service: ServiceSettings,
    /// `CHAT_REDIS_URL`: Redis holding the online status; unset or empty = in-memory
    /// store (correct for one presence process only). A `redis-cluster://` URL (or
    /// `CHAT_REDIS_CLUSTER=true`, which turns `redis://` into `redis-cluster://` as for
    /// the gateway's fan-out) selects a Redis Cluster. May hold a password, so `Debug`
    /// never prints it.
    pub redis_url: Option<String>,
    /// How long a user or gateway stays without a heartbeat before it is gone:
    /// `CHAT_PRESENCE_TTL_SECS` (whole seconds, ≥ 1, default 30) or, taking precedence,
    /// `CHAT_PRESENCE_TTL_MS` (milliseconds, ≥ 100; for tests that must see expiry fast).
    /// Gateways heartbeat every ttl / 3.
    pub ttl: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            service: ServiceSettings::with_port(DEFAULT_GRPC_PORT),
            redis_url: None,
            ttl: DEFAULT_TTL,
        }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("service", &self.service)
            .field("redis_url", &self.redis_url.as_ref().map(|_| "<redacted>"))
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl FromEnv for Settings {
    fn read(env: &Env<'_>, defaults: Self) -> Result<Self, EnvError> {
        Ok(Self {
            service: defaults.service.read(env)?,
            redis_url: env.redis_url()?,
            ttl: ttl(env)?.unwrap_or(defaults.ttl),
        })
    }
}

/// The lease from `CHAT_PRESENCE_TTL_MS` or `CHAT_PRESENCE_TTL_SECS`, if either is set.
fn ttl(env: &Env<'_>) -> Result<Option<Duration>, EnvError> {
    if let Some(ttl) = env.optional_millis("CHAT_PRESENCE_TTL_MS")? {
        if ttl < MIN_TTL {
            return Err(EnvError::invalid(
                "CHAT_PRESENCE_TTL_MS",
                &ttl.as_millis().to_string(),
                format!("too short; it must be at least {}", MIN_TTL.as_millis()),
            ));
        }
        return Ok(Some(ttl));
    }
    match env.optional_secs("CHAT_PRESENCE_TTL_SECS")? {
        Some(Duration::ZERO) => Err(EnvError::invalid(
            "CHAT_PRESENCE_TTL_SECS",
            "0",
            "must be at least 1",
        )),
        ttl => Ok(ttl),
    }
}

/// Opens the store the settings choose: Redis when `redis_url` is set (fails when Redis
/// is unreachable now), else the in-memory store. A Redis store reports its connection
/// in `metrics` (`chat_presence_redis_*`, registered only then).
pub async fn open_store(
    settings: &Settings,
    metrics: &mut chat_metrics::Metrics,
) -> anyhow::Result<Arc<dyn PresenceStore>> {
    if let Some(url) = &settings.redis_url {
        let store = RedisPresence::connect(url, settings.ttl)
            .await
            .context("cannot use the Redis presence store")?;
        store.watch_connection(&register_redis_connection(
            metrics
                .registry
                .sub_registry_with_prefix("chat_presence_redis"),
        ));
        tracing::info!(ttl = ?settings.ttl, "presence store: Redis");
        Ok(Arc::new(store))
    } else {
        tracing::info!(ttl = ?settings.ttl, "presence store: in-memory (one presence process only)");
        Ok(Arc::new(MemoryPresence::new(settings.ttl)))
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn defaults_and_overrides() {
        assert_eq!(
            Settings::from_pairs(&[]).expect("defaults"),
            Settings::default()
        );
        let s = Settings::from_pairs(&[
            ("CHAT_REDIS_URL", "redis://:secret@redis:6379"),
            ("CHAT_PRESENCE_TTL_SECS", "12"),
        ])
        .expect("valid");
        assert_eq!(s.ttl, Duration::from_secs(12));
        assert_eq!(s.redis_url.as_deref(), Some("redis://:secret@redis:6379"));
        assert!(!format!("{s:?}").contains("secret"));
        let s = Settings::from_pairs(&[
            ("CHAT_REDIS_URL", "redis://r:7000"),
            ("CHAT_REDIS_CLUSTER", "true"),
        ])
        .expect("valid");
        assert_eq!(s.redis_url.as_deref(), Some("redis-cluster://r:7000"));
    }

    #[test]
    fn ttl_in_milliseconds_wins() {
        let s = Settings::from_pairs(&[
            ("CHAT_PRESENCE_TTL_SECS", "30"),
            ("CHAT_PRESENCE_TTL_MS", "600"),
        ])
        .expect("valid");
        assert_eq!(s.ttl, Duration::from_millis(600));
    }

    #[test]
    fn bad_values_are_named() {
        for (var, value) in [
            ("CHAT_GRPC_ADDR", "nope"),
            ("CHAT_PRESENCE_TTL_SECS", "0"),
            ("CHAT_PRESENCE_TTL_SECS", "1.5"),
            ("CHAT_PRESENCE_TTL_MS", "99"),
            ("CHAT_PRESENCE_TTL_MS", "-1"),
            ("CHAT_REDIS_CLUSTER", "perhaps"),
        ] {
            let err = Settings::from_pairs(&[(var, value)]).expect_err(value);
            assert_eq!(err.var, var, "{err}");
            assert!(err.to_string().contains(value), "{err}");
        }
    }
}
