//! The gateway's configuration, from environment variables (see `.example_env`).

use std::net::SocketAddr;
use std::time::Duration;

use chat_proto::auth::{InternalToken, TOKEN_VAR};

use crate::limits::{Limits, parse_origins};

/// A secret that never prints.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// How clients authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// JWT HS256 only.
    Jwt,
    /// `?user=` accepted without a token (and tokens too when a secret is set).
    Dev,
}

/// Everything a gateway needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `CHAT_HTTP_ADDR`: WebSocket and HTTP listen address.
    pub http_addr: SocketAddr,
    /// `CHAT_HISTORY_URL`: the history service.
    pub history_url: String,
    /// `CHAT_PRESENCE_URL`: the presence service.
    pub presence_url: String,
    /// `CHAT_REDIS_URL`: Redis for fan-out; `None` = in-process (one gateway only).
    /// A `redis-cluster://` URL (or `CHAT_REDIS_CLUSTER=true`, which turns `redis://`
    /// into `redis-cluster://` here) selects Redis Cluster with sharded pub/sub.
    pub redis_url: Option<String>,
    /// `CHAT_AUTH_MODE`.
    pub auth_mode: AuthMode,
    /// `CHAT_JWT_SECRET`: required in JWT mode.
    pub jwt_secret: Option<Secret>,
    /// `CHAT_INTERNAL_TOKEN`: sent on every history and presence call (`authorization:
    /// Bearer`), as those services require when they have one. Never printed.
    pub internal_token: Option<InternalToken>,
    /// `CHAT_GATEWAY_ID`: this instance's id (default: `gw-` and 8 random hex digits).
    pub gateway_id: String,
    /// `CHAT_HTTP_WORKERS`: HTTP worker threads (default: available cores).
    pub workers: usize,
    /// `CHAT_SHUTDOWN_GRACE_SECS`: how long in-flight work may take on shutdown (10).
    pub shutdown_grace_secs: u64,
    /// Connection count, send rate and origin limits.
    pub limits: Limits,
}

/// A variable with a bad value.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {reason}")]
pub struct SettingsError {
    pub var: &'static str,
    pub reason: String,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parse<T: std::str::FromStr>(name: &'static str, default: T) -> Result<T, SettingsError>
where
    T::Err: std::fmt::Display,
{
    match var(name) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|e: T::Err| SettingsError {
            var: name,
            reason: format!("cannot parse {v:?}: {e}"),
        }),
    }
}

/// A yes/no variable: `true`/`false` (also `1`/`0`, `yes`/`no`); unset = false.
fn parse_flag(name: &'static str) -> Result<bool, SettingsError> {
    match var(name).map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("false" | "0" | "no") => Ok(false),
        Some("true" | "1" | "yes") => Ok(true),
        Some(other) => Err(SettingsError {
            var: name,
            reason: format!("must be true or false, not {other:?}"),
        }),
    }
}

/// `CHAT_REDIS_URL` as the fan-out uses it: with `CHAT_REDIS_CLUSTER=true` a `redis://`
/// (`rediss://`) URL becomes `redis-cluster://` (`rediss-cluster://`), which selects
/// Redis Cluster with sharded pub/sub. A URL that already names its kind is kept.
pub fn redis_url(url: Option<String>, cluster: bool) -> Option<String> {
    let url = url?;
    if !cluster {
        return Some(url);
    }
    for (plain, clustered) in [
        ("redis://", "redis-cluster://"),
        ("rediss://", "rediss-cluster://"),
    ] {
        if let Some(rest) = url.strip_prefix(plain) {
            return Some(format!("{clustered}{rest}"));
        }
    }
    Some(url)
}

/// The limits from `CHAT_MAX_CONNECTIONS`, `CHAT_SEND_RATE`, `CHAT_SEND_BURST` and
/// `CHAT_ALLOWED_ORIGINS`.
fn limits_from_env() -> Result<Limits, SettingsError> {
    let defaults = Limits::default();
    Ok(Limits {
        max_connections: parse("CHAT_MAX_CONNECTIONS", defaults.max_connections)?,
        frames_per_sec: parse("CHAT_SEND_RATE", defaults.frames_per_sec)?,
        burst: parse("CHAT_SEND_BURST", defaults.burst)?,
        ping_interval: Duration::from_secs(parse(
            "CHAT_PING_INTERVAL_SECS",
            defaults.ping_interval.as_secs(),
        )?),
        idle_timeout: Duration::from_secs(parse(
            "CHAT_IDLE_TIMEOUT_SECS",
            defaults.idle_timeout.as_secs(),
        )?),
        allowed_origins: var("CHAT_ALLOWED_ORIGINS")
            .map(|v| parse_origins(&v))
            .transpose()
            .map_err(|reason| SettingsError {
                var: "CHAT_ALLOWED_ORIGINS",
                reason,
            })?,
    })
}

/// `CHAT_INTERNAL_TOKEN`, validated, if set.
fn internal_token(value: Option<String>) -> Result<Option<InternalToken>, SettingsError> {
    value
        .map(|v| InternalToken::parse(&v))
        .transpose()
        .map_err(|e| SettingsError {
            var: TOKEN_VAR,
            reason: e.to_string(),
        })
}

/// `CHAT_AUTH_MODE`, or when it is unset: JWT if a secret is configured, else `default`.
fn auth_mode(
    mode: Option<&str>,
    secret_set: bool,
    default: AuthMode,
) -> Result<AuthMode, SettingsError> {
    match mode.map(str::trim) {
        None if secret_set => Ok(AuthMode::Jwt),
        None => Ok(default),
        Some("jwt") => Ok(AuthMode::Jwt),
        Some("dev") => Ok(AuthMode::Dev),
        Some(other) => Err(SettingsError {
            var: "CHAT_AUTH_MODE",
            reason: format!("must be jwt or dev, not {other:?}"),
        }),
    }
}

/// A random instance id, `gw-` and 8 hex digits.
pub fn random_gateway_id() -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("gw-{}", &id[id.len() - 8..])
}

impl Settings {
    /// Reads the environment, with `default_auth` when `CHAT_AUTH_MODE` is unset, except
    /// that a configured `CHAT_JWT_SECRET` then means JWT mode: dev mode (`?user=`) is
    /// only ever on when nothing says the operator wants tokens, or when asked for by name.
    pub fn from_env(default_auth: AuthMode) -> Result<Self, SettingsError> {
        let jwt_secret = var("CHAT_JWT_SECRET").map(Secret::new);
        let auth_mode = auth_mode(
            var("CHAT_AUTH_MODE").as_deref(),
            jwt_secret.is_some(),
            default_auth,
        )?;
        let settings = Self {
            http_addr: parse("CHAT_HTTP_ADDR", SocketAddr::from(([0, 0, 0, 0], 8000)))?,
            history_url: var("CHAT_HISTORY_URL").unwrap_or_else(|| "http://127.0.0.1:50051".into()),
            presence_url: var("CHAT_PRESENCE_URL")
                .unwrap_or_else(|| "http://127.0.0.1:50052".into()),
            redis_url: redis_url(var("CHAT_REDIS_URL"), parse_flag("CHAT_REDIS_CLUSTER")?),
            auth_mode,
            jwt_secret,
            internal_token: internal_token(var(TOKEN_VAR))?,
            gateway_id: var("CHAT_GATEWAY_ID").unwrap_or_else(random_gateway_id),
            workers: parse(
                "CHAT_HTTP_WORKERS",
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            )?,
            shutdown_grace_secs: parse("CHAT_SHUTDOWN_GRACE_SECS", 10)?,
            limits: limits_from_env()?,
        };
        settings.validate()?;
        Ok(settings)
    }

    /// Checks combinations of values.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.auth_mode == AuthMode::Jwt && self.jwt_secret.is_none() {
            return Err(SettingsError {
                var: "CHAT_JWT_SECRET",
                reason:
                    "required when CHAT_AUTH_MODE=jwt (or set CHAT_AUTH_MODE=dev for local use)"
                        .into(),
            });
        }
        let id = &self.gateway_id;
        let id_ok = (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
        if !id_ok {
            return Err(SettingsError {
                var: "CHAT_GATEWAY_ID",
                reason: format!("{id:?} must be 1-64 characters of [A-Za-z0-9_.:-]"),
            });
        }
        for (var, value) in [
            ("CHAT_MAX_CONNECTIONS", self.limits.max_connections),
            ("CHAT_SEND_RATE", self.limits.frames_per_sec as usize),
            ("CHAT_SEND_BURST", self.limits.burst as usize),
        ] {
            if value == 0 {
                return Err(SettingsError {
                    var,
                    reason: "must be at least 1".into(),
                });
            }
        }
        if self.limits.ping_interval.is_zero()
            || self.limits.idle_timeout <= self.limits.ping_interval
        {
            return Err(SettingsError {
                var: "CHAT_IDLE_TIMEOUT_SECS",
                reason: format!(
                    "must be longer than CHAT_PING_INTERVAL_SECS ({} s), which must be at least 1",
                    self.limits.ping_interval.as_secs()
                ),
            });
        }
        if self.workers == 0 {
            return Err(SettingsError {
                var: "CHAT_HTTP_WORKERS",
                reason: "must be at least 1".into(),
            });
        }
        Ok(())
    }

    /// The authenticator these settings describe.
    pub fn authenticator(&self) -> Result<crate::auth::Authenticator, SettingsError> {
        if let Some(secret) = &self.jwt_secret
            && chat_proto::auth::is_placeholder(secret.expose())
        {
            tracing::warn!(
                "CHAT_JWT_SECRET is still a placeholder of .example_env or deploy/k8s: anyone \
                 who has read them can mint tokens for any user; generate one with \
                 `openssl rand -hex 32`"
            );
        }
        let secret = self.jwt_secret.as_ref().map(|s| s.expose().as_bytes());
        let auth = match (self.auth_mode, secret) {
            (AuthMode::Jwt, Some(secret)) => crate::auth::Authenticator::jwt(secret),
            (AuthMode::Jwt, None) => {
                return Err(SettingsError {
                    var: "CHAT_JWT_SECRET",
                    reason: "required when CHAT_AUTH_MODE=jwt".into(),
                });
            }
            (AuthMode::Dev, secret) => crate::auth::Authenticator::dev(secret),
        };
        auth.map_err(|e| SettingsError {
            var: "CHAT_JWT_SECRET",
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{AuthMode, auth_mode, internal_token, redis_url};

    #[test]
    fn internal_token_is_validated_without_echoing_it() {
        assert_eq!(internal_token(None).expect("unset is fine"), None);
        let token = "gateway-test-token-0123456789";
        let parsed = internal_token(Some(token.into())).expect("valid");
        assert!(parsed.is_some());
        assert!(!format!("{parsed:?}").contains(token));
        for bad in [
            "too-short",
            "has a space in it, so no",
            "non-ascii-token-ééééééé",
        ] {
            let err = internal_token(Some(bad.into())).expect_err(bad);
            assert_eq!(err.var, "CHAT_INTERNAL_TOKEN");
            assert!(
                err.to_string().starts_with("CHAT_INTERNAL_TOKEN: "),
                "{err}"
            );
            assert!(!err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn a_jwt_secret_turns_the_dev_default_off() {
        let mode = |m, secret| auth_mode(m, secret, AuthMode::Dev).expect("valid");
        assert_eq!(mode(None, false), AuthMode::Dev);
        assert_eq!(mode(None, true), AuthMode::Jwt);
        assert_eq!(mode(Some("dev"), true), AuthMode::Dev);
        assert_eq!(mode(Some(" jwt "), false), AuthMode::Jwt);
        assert_eq!(
            auth_mode(None, false, AuthMode::Jwt).expect("valid"),
            AuthMode::Jwt
        );
        assert!(auth_mode(Some("none"), false, AuthMode::Dev).is_err());
    }

    #[test]
    fn redis_cluster_flag_selects_the_cluster_scheme() {
        let url = |u: &str| Some(u.to_owned());
        assert_eq!(redis_url(None, true), None);
        assert_eq!(
            redis_url(url("redis://r:6379"), false),
            url("redis://r:6379")
        );
        assert_eq!(
            redis_url(url("redis://r:7000?node=s:7001"), true),
            url("redis-cluster://r:7000?node=s:7001")
        );
        assert_eq!(
            redis_url(url("rediss://:pw@r:7000"), true),
            url("rediss-cluster://:pw@r:7000")
        );
        assert_eq!(
            redis_url(url("redis-cluster://r:7000"), true),
            url("redis-cluster://r:7000")
        );
        assert_eq!(
            redis_url(url("redis-cluster://r:7000"), false),
            url("redis-cluster://r:7000")
        );
    }
}
