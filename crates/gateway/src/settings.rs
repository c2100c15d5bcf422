//! The gateway's configuration, from environment variables (see `.example_env`), read
//! the way every service reads its own ([`chat_runtime::env`]).

use std::net::SocketAddr;

use chat_proto::auth::InternalToken;
use chat_runtime::env::{Env, EnvError, process_env};

pub use chat_runtime::env::Secret;

use crate::client_addr::TrustedProxies;
use crate::limits::{Limits, parse_origins};

/// How clients authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Tokens only (`CHAT_AUTH_MODE=jwt`): accounts' EdDSA tokens when
    /// `CHAT_ACCOUNTS_URL` is set, an external issuer's HS256 tokens when
    /// `CHAT_JWT_SECRET` is set, both when both are.
    Jwt,
    /// `?user=` accepted without a token (and tokens too, as in [`AuthMode::Jwt`]).
    Dev,
}

/// Everything a gateway needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `CHAT_HTTP_ADDR`: WebSocket and HTTP listen address (`0.0.0.0:8000`).
    pub http_addr: SocketAddr,
    /// `CHAT_HISTORY_URL`: the history service (`http://127.0.0.1:50051`).
    pub history_url: String,
    /// `CHAT_PRESENCE_URL`: the presence service (`http://127.0.0.1:50052`).
    pub presence_url: String,
    /// `CHAT_REDIS_URL`: Redis for fan-out; `None` = in-process (one gateway only).
    /// A `redis-cluster://` URL (or `CHAT_REDIS_CLUSTER=true`, which turns `redis://`
    /// into `redis-cluster://` here) selects Redis Cluster with sharded pub/sub.
    pub redis_url: Option<String>,
    /// `CHAT_ACCOUNTS_URL`: the accounts service (`http://accounts:50053`), whose
    /// tokens are then verified and whose `/v1/auth` and `/v1/users` endpoints are
    /// served. `None`: no accounts (external tokens or dev mode only).
    pub accounts_url: Option<String>,
    /// `CHAT_TOKEN_ISSUER` / `CHAT_TOKEN_AUDIENCE`: the `iss` and `aud` accounts' tokens
    /// must carry (`chat-accounts`, `chat`: accounts' own defaults).
    pub token_issuer: String,
    pub token_audience: String,
    /// `CHAT_AUTH_MODE` (when unset: tokens only if a secret or accounts is configured,
    /// else the binary's default, tokens for `chat-gateway`).
    pub auth_mode: AuthMode,
    /// `CHAT_JWT_SECRET`: an external issuer's HS256 key. In token mode this or
    /// `CHAT_ACCOUNTS_URL` is required.
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
    /// `CHAT_TRUSTED_PROXIES`: proxies (IPs or CIDR networks, comma-separated) whose
    /// `X-Forwarded-For` and `X-Forwarded-Proto` are believed; none by default.
    pub trusted_proxies: TrustedProxies,
}

impl Default for Settings {
    /// The values when no variable is set, for the `chat-gateway` binary: JWT mode
    /// (which needs a secret to start), a fresh random id.
    fn default() -> Self {
        Self {
            http_addr: SocketAddr::from(([0, 0, 0, 0], 8000)),
            history_url: "http://127.0.0.1:50051".into(),
            presence_url: "http://127.0.0.1:50052".into(),
            redis_url: None,
            accounts_url: None,
            token_issuer: "chat-accounts".into(),
            token_audience: "chat".into(),
            auth_mode: AuthMode::Jwt,
            jwt_secret: None,
            internal_token: None,
            gateway_id: random_gateway_id(),
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            shutdown_grace_secs: 10,
            limits: Limits::default(),
            trusted_proxies: TrustedProxies::default(),
        }
    }
}

/// `CHAT_REDIS_URL` with `CHAT_REDIS_CLUSTER` applied: the one rule every Redis client
/// of the workspace uses (accounts too).
pub use chat_runtime::env::redis_url;

/// The limits from `CHAT_MAX_CONNECTIONS`, `CHAT_SEND_RATE`, `CHAT_SEND_BURST`,
/// `CHAT_PING_INTERVAL_SECS`, `CHAT_IDLE_TIMEOUT_SECS`, `CHAT_TOKEN_EXPIRY_GRACE_SECS` and
/// `CHAT_ALLOWED_ORIGINS`.
fn limits(env: &Env<'_>) -> Result<Limits, EnvError> {
    let defaults = Limits::default();
    Ok(Limits {
        max_connections: env.parse("CHAT_MAX_CONNECTIONS", defaults.max_connections)?,
        frames_per_sec: env.parse("CHAT_SEND_RATE", defaults.frames_per_sec)?,
        burst: env.parse("CHAT_SEND_BURST", defaults.burst)?,
        ping_interval: env.secs("CHAT_PING_INTERVAL_SECS", defaults.ping_interval)?,
        idle_timeout: env.secs("CHAT_IDLE_TIMEOUT_SECS", defaults.idle_timeout)?,
        token_expiry_grace: env
            .secs("CHAT_TOKEN_EXPIRY_GRACE_SECS", defaults.token_expiry_grace)?,
        allowed_origins: env.optional("CHAT_ALLOWED_ORIGINS", parse_origins)?,
    })
}

/// `CHAT_AUTH_MODE`, or when it is unset: tokens only if a token issuer is configured
/// (a secret or accounts), else `default`.
fn auth_mode(
    mode: Option<&str>,
    issuer_set: bool,
    default: AuthMode,
) -> Result<AuthMode, EnvError> {
    match mode.map(str::trim) {
        None if issuer_set => Ok(AuthMode::Jwt),
        None => Ok(default),
        Some("jwt") => Ok(AuthMode::Jwt),
        Some("dev") => Ok(AuthMode::Dev),
        Some(other) => Err(EnvError::invalid(
            "CHAT_AUTH_MODE",
            other,
            "must be jwt or dev",
        )),
    }
}

/// A random instance id, `gw-` and 8 hex digits.
pub fn random_gateway_id() -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("gw-{}", &id[id.len() - 8..])
}

impl Settings {
    /// Reads the environment, with `default_auth` when `CHAT_AUTH_MODE` is unset, except
    /// that a configured `CHAT_JWT_SECRET` or `CHAT_ACCOUNTS_URL` then means token mode:
    /// dev mode (`?user=`) is only ever on when nothing says the operator wants tokens,
    /// or when asked for by name.
    pub fn from_env(default_auth: AuthMode) -> Result<Self, EnvError> {
        Self::from_lookup(process_env, default_auth)
    }

    /// Like [`Settings::from_env`] with any source of variables (tests, the all-in-one).
    /// Empty values count as unset, as `.env` files often leave them.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        default_auth: AuthMode,
    ) -> Result<Self, EnvError> {
        let env = Env::new(&lookup);
        let defaults = Self::default();
        let jwt_secret = env.secret("CHAT_JWT_SECRET");
        let accounts_url = env.get("CHAT_ACCOUNTS_URL");
        let settings = Self {
            http_addr: env.addr("CHAT_HTTP_ADDR", defaults.http_addr)?,
            history_url: env.string("CHAT_HISTORY_URL", &defaults.history_url),
            presence_url: env.string("CHAT_PRESENCE_URL", &defaults.presence_url),
            redis_url: redis_url(
                env.get("CHAT_REDIS_URL"),
                env.flag("CHAT_REDIS_CLUSTER", false)?,
            ),
            auth_mode: auth_mode(
                env.get("CHAT_AUTH_MODE").as_deref(),
                jwt_secret.is_some() || accounts_url.is_some(),
                default_auth,
            )?,
            accounts_url,
            token_issuer: env.string("CHAT_TOKEN_ISSUER", &defaults.token_issuer),
            token_audience: env.string("CHAT_TOKEN_AUDIENCE", &defaults.token_audience),
            jwt_secret,
            internal_token: env.internal_token()?,
            gateway_id: env.get("CHAT_GATEWAY_ID").unwrap_or(defaults.gateway_id),
            workers: env.parse("CHAT_HTTP_WORKERS", defaults.workers)?,
            shutdown_grace_secs: env
                .parse("CHAT_SHUTDOWN_GRACE_SECS", defaults.shutdown_grace_secs)?,
            limits: limits(&env)?,
            trusted_proxies: env
                .optional("CHAT_TRUSTED_PROXIES", TrustedProxies::parse)?
                .unwrap_or_default(),
        };
        settings.validate()?;
        Ok(settings)
    }

    /// Checks combinations of values.
    pub fn validate(&self) -> Result<(), EnvError> {
        if self.auth_mode == AuthMode::Jwt
            && self.jwt_secret.is_none()
            && self.accounts_url.is_none()
        {
            return Err(EnvError::new(
                "CHAT_ACCOUNTS_URL",
                "CHAT_ACCOUNTS_URL (accounts' tokens) or CHAT_JWT_SECRET (an external \
                 issuer's) is required when CHAT_AUTH_MODE=jwt (or set CHAT_AUTH_MODE=dev \
                 for local use)",
            ));
        }
        let id = &self.gateway_id;
        let id_ok = (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
        if !id_ok {
            return Err(EnvError::invalid(
                "CHAT_GATEWAY_ID",
                id,
                "must be 1-64 characters of [A-Za-z0-9_.:-]",
            ));
        }
        for (var, value) in [
            ("CHAT_MAX_CONNECTIONS", self.limits.max_connections),
            ("CHAT_SEND_RATE", self.limits.frames_per_sec as usize),
            ("CHAT_SEND_BURST", self.limits.burst as usize),
            ("CHAT_HTTP_WORKERS", self.workers),
        ] {
            if value == 0 {
                return Err(EnvError::invalid(var, "0", "must be at least 1"));
            }
        }
        if self.limits.ping_interval.is_zero()
            || self.limits.idle_timeout <= self.limits.ping_interval
        {
            return Err(EnvError::new(
                "CHAT_IDLE_TIMEOUT_SECS",
                format!(
                    "must be longer than CHAT_PING_INTERVAL_SECS ({} s), which must be at least 1",
                    self.limits.ping_interval.as_secs()
                ),
            ));
        }
        Ok(())
    }

    /// The authenticator these settings describe, verifying accounts' tokens with
    /// `accounts` (the key cache of the accounts client, when `CHAT_ACCOUNTS_URL` is set).
    pub fn authenticator(
        &self,
        accounts: Option<std::sync::Arc<crate::accounts::KeyCache>>,
    ) -> Result<crate::auth::Authenticator, EnvError> {
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
        crate::auth::Authenticator::new(self.auth_mode == AuthMode::Dev, secret, accounts)
            .map_err(|e| EnvError::new("CHAT_JWT_SECRET", e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::{AuthMode, EnvError, Settings, auth_mode, redis_url};

    fn from(vars: &[(&str, &str)]) -> Result<Settings, EnvError> {
        Settings::from_lookup(chat_runtime::env::lookup(vars), AuthMode::Dev)
    }

    #[test]
    fn defaults_and_overrides() {
        let s = from(&[]).expect("defaults");
        assert_eq!(s.http_addr, Settings::default().http_addr);
        assert_eq!(s.auth_mode, AuthMode::Dev);
        assert!(s.gateway_id.starts_with("gw-"));
        let s = from(&[
            ("CHAT_HTTP_ADDR", "127.0.0.1:0"),
            ("CHAT_REDIS_URL", "redis://r:6379"),
            ("CHAT_REDIS_CLUSTER", "true"),
            ("CHAT_GATEWAY_ID", "gw-a"),
            ("CHAT_IDLE_TIMEOUT_SECS", "90"),
            ("CHAT_ALLOWED_ORIGINS", "https://chat.example.com"),
            ("CHAT_JWT_SECRET", "gateway-test-secret"),
        ])
        .expect("valid");
        assert_eq!(s.http_addr, SocketAddr::from(([127, 0, 0, 1], 0)));
        assert_eq!(s.redis_url.as_deref(), Some("redis-cluster://r:6379"));
        assert_eq!(s.gateway_id, "gw-a");
        assert_eq!(s.limits.idle_timeout, Duration::from_secs(90));
        assert_eq!(s.auth_mode, AuthMode::Jwt);
        assert!(s.trusted_proxies.is_empty());
        let s = from(&[("CHAT_TRUSTED_PROXIES", "172.30.80.10,10.0.0.0/8")]).expect("valid");
        assert!(s.trusted_proxies.contains([10, 1, 2, 3].into()));
        assert!(!format!("{s:?}").contains("gateway-test-secret"));
    }

    #[test]
    fn bad_values_are_named() {
        for (var, value) in [
            ("CHAT_HTTP_ADDR", "nope"),
            ("CHAT_MAX_CONNECTIONS", "many"),
            ("CHAT_SEND_RATE", "0"),
            ("CHAT_REDIS_CLUSTER", "perhaps"),
            ("CHAT_AUTH_MODE", "none"),
            ("CHAT_GATEWAY_ID", "has space"),
            ("CHAT_ALLOWED_ORIGINS", "chat.example.com"),
            ("CHAT_HTTP_WORKERS", "0"),
            ("CHAT_TRUSTED_PROXIES", "nginx"),
        ] {
            let err = from(&[(var, value)]).expect_err(value);
            assert_eq!(err.var, var, "{err}");
        }
        let err = from(&[("CHAT_IDLE_TIMEOUT_SECS", "5")]).expect_err("shorter than pings");
        assert_eq!(err.var, "CHAT_IDLE_TIMEOUT_SECS");
    }

    #[test]
    fn internal_token_is_validated_without_echoing_it() {
        let token = "gateway-test-token-0123456789";
        let parsed = from(&[("CHAT_INTERNAL_TOKEN", token)])
            .expect("valid")
            .internal_token;
        assert!(parsed.is_some());
        assert!(!format!("{parsed:?}").contains(token));
        // Which tokens are refused, and that errors never repeat them: chat_runtime::env.
        let err = from(&[("CHAT_INTERNAL_TOKEN", "too-short")]).expect_err("too short");
        assert_eq!(err.var, "CHAT_INTERNAL_TOKEN");
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
