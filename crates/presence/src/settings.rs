//! Configuration from the environment, and choosing the store backend from it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chat_proto::auth::{InternalToken, TOKEN_VAR};

use crate::metrics::RedisConnectionMetrics;
use crate::store::PresenceStore;
use crate::store::memory::MemoryPresence;
use crate::store::redis::RedisPresence;

/// The default lease of users and gateways (`CHAT_PRESENCE_TTL_SECS`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// The shortest lease `CHAT_PRESENCE_TTL_MS` accepts: heartbeats come every ttl / 3, and
/// below this network jitter alone would flap users.
pub const MIN_TTL: Duration = Duration::from_millis(100);

/// Everything the presence service reads from its environment.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// `CHAT_GRPC_ADDR`: where gRPC listens (`0.0.0.0:50052`; port 0 picks a free port).
    pub grpc_addr: SocketAddr,
    /// `CHAT_METRICS_ADDR`: where `/metrics` and `/healthz` will listen (`0.0.0.0:9100`).
    pub metrics_addr: SocketAddr,
    /// `CHAT_REDIS_URL`: Redis holding the online status; unset or empty = in-memory
    /// store (correct for one presence process only). May hold a password, so `Debug`
    /// never prints it.
    pub redis_url: Option<String>,
    /// How long a user or gateway stays without a heartbeat before it is gone:
    /// `CHAT_PRESENCE_TTL_SECS` (whole seconds, ≥ 1, default 30) or, taking precedence,
    /// `CHAT_PRESENCE_TTL_MS` (milliseconds, ≥ 100; for tests that must see expiry fast).
    /// Gateways heartbeat every ttl / 3.
    pub ttl: Duration,
    /// `CHAT_INTERNAL_TOKEN`: when set, every Presence call must carry it (see
    /// [`chat_proto::auth`]); unset = no check. Never printed.
    pub internal_token: Option<InternalToken>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            grpc_addr: SocketAddr::from(([0, 0, 0, 0], 50052)),
            metrics_addr: SocketAddr::from(([0, 0, 0, 0], 9100)),
            redis_url: None,
            ttl: DEFAULT_TTL,
            internal_token: None,
        }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("grpc_addr", &self.grpc_addr)
            .field("metrics_addr", &self.metrics_addr)
            .field("redis_url", &self.redis_url.as_ref().map(|_| "<redacted>"))
            .field("ttl", &self.ttl)
            .field("internal_token", &self.internal_token)
            .finish()
    }
}

impl Settings {
    /// Reads the `CHAT_*` variables over the defaults.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Like [`Settings::from_env`] with any source of variables (tests, config files, the
    /// all-in-one). Empty values count as unset, as `.env` files often leave them.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let get = |key: &str| lookup(key).filter(|v| !v.trim().is_empty());
        let addr = |key: &str, default: SocketAddr| -> anyhow::Result<SocketAddr> {
            get(key).map_or(Ok(default), |v| {
                v.trim()
                    .parse()
                    .with_context(|| format!("{key}={v:?} is not an address like 0.0.0.0:50052"))
            })
        };
        let defaults = Self::default();
        Ok(Self {
            grpc_addr: addr("CHAT_GRPC_ADDR", defaults.grpc_addr)?,
            metrics_addr: addr("CHAT_METRICS_ADDR", defaults.metrics_addr)?,
            redis_url: get("CHAT_REDIS_URL"),
            ttl: ttl(&get)?.unwrap_or(defaults.ttl),
            internal_token: internal_token(&get)?,
        })
    }
}

/// The lease from `CHAT_PRESENCE_TTL_MS` or `CHAT_PRESENCE_TTL_SECS`, if either is set.
fn ttl(get: &impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<Duration>> {
    let number = |key: &str| -> anyhow::Result<Option<u64>> {
        get(key)
            .map(|v| {
                v.trim()
                    .parse::<u64>()
                    .with_context(|| format!("{key}={v:?} is not a whole number"))
            })
            .transpose()
    };
    if let Some(ms) = number("CHAT_PRESENCE_TTL_MS")? {
        let ttl = Duration::from_millis(ms);
        anyhow::ensure!(
            ttl >= MIN_TTL,
            "CHAT_PRESENCE_TTL_MS={ms} is too short; it must be at least {}",
            MIN_TTL.as_millis()
        );
        return Ok(Some(ttl));
    }
    match number("CHAT_PRESENCE_TTL_SECS")? {
        Some(0) => anyhow::bail!("CHAT_PRESENCE_TTL_SECS must be at least 1"),
        Some(secs) => Ok(Some(Duration::from_secs(secs))),
        None => Ok(None),
    }
}

/// `CHAT_INTERNAL_TOKEN`, validated, if set.
fn internal_token(get: &impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<InternalToken>> {
    get(TOKEN_VAR)
        .map(|v| InternalToken::parse(&v).map_err(|e| anyhow::anyhow!("{TOKEN_VAR} {e}")))
        .transpose()
}

/// Opens the store the settings choose: Redis when `redis_url` is set (fails when Redis
/// is unreachable now), else the in-memory store.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn PresenceStore>> {
    open(settings, None).await
}

/// [`open_store`], reporting a Redis store's connection in `metrics`
/// (`chat_presence_redis_*`, registered only when the store is Redis).
pub async fn open_store_with_metrics(
    settings: &Settings,
    metrics: &mut chat_metrics::Metrics,
) -> anyhow::Result<Arc<dyn PresenceStore>> {
    open(settings, Some(&mut metrics.registry)).await
}

async fn open(
    settings: &Settings,
    registry: Option<&mut chat_metrics::Registry>,
) -> anyhow::Result<Arc<dyn PresenceStore>> {
    if let Some(url) = &settings.redis_url {
        let store = RedisPresence::connect(url, settings.ttl)
            .await
            .context("cannot use the Redis presence store")?;
        if let Some(registry) = registry {
            store.watch_connection(&RedisConnectionMetrics::register(
                registry.sub_registry_with_prefix("chat_presence_redis"),
            ));
        }
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

    fn from(vars: &[(&str, &str)]) -> anyhow::Result<Settings> {
        Settings::from_lookup(|k| {
            vars.iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn internal_token_is_validated_and_never_printed() {
        let token = "presence-test-token-0123456789abcdef";
        let s = from(&[("CHAT_INTERNAL_TOKEN", token)]).expect("valid");
        assert_eq!(
            s.internal_token,
            Some(InternalToken::parse(token).expect("valid"))
        );
        assert!(!format!("{s:?}").contains(token));
        for bad in ["too-short", "has a space in it, so no"] {
            let err = from(&[("CHAT_INTERNAL_TOKEN", bad)]).expect_err(bad);
            assert!(err.to_string().contains("CHAT_INTERNAL_TOKEN"), "{err}");
            assert!(!err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn defaults_and_overrides() {
        assert_eq!(from(&[]).expect("defaults"), Settings::default());
        let s = from(&[
            ("CHAT_GRPC_ADDR", "127.0.0.1:0"),
            ("CHAT_REDIS_URL", "redis://:secret@redis:6379"),
            ("CHAT_PRESENCE_TTL_SECS", "12"),
            ("CHAT_METRICS_ADDR", ""),
        ])
        .expect("valid");
        assert_eq!(s.grpc_addr, SocketAddr::from(([127, 0, 0, 1], 0)));
        assert_eq!(s.metrics_addr, Settings::default().metrics_addr);
        assert_eq!(s.ttl, Duration::from_secs(12));
        assert_eq!(s.redis_url.as_deref(), Some("redis://:secret@redis:6379"));
        assert!(!format!("{s:?}").contains("secret"));
    }

    #[test]
    fn ttl_in_milliseconds_wins() {
        let s = from(&[
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
        ] {
            let err = from(&[(var, value)]).expect_err(value);
            assert!(err.to_string().contains(var), "{err}");
        }
    }
}
