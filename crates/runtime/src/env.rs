//! Reading a service's settings from `CHAT_*` environment variables, one way for every
//! service: each `Settings` has `Default` (the values when nothing is set) and
//! `from_lookup` (most through [`FromEnv`]), which reads the variables through an
//! [`Env`] over any source of variables (the process environment in `main`, a slice of
//! pairs in tests, [`lookup`]). Every
//! variable is described in `.example_env`.
//!
//! Rules every service follows alike:
//! - an empty or blank value counts as unset (`.env` files often leave them so);
//! - surrounding white space is ignored;
//! - an error names the variable and the value it could not use, except for secrets,
//!   whose value never appears in an error or a log ([`Secret`], [`InternalToken`]).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use chat_proto::auth::{InternalToken, TOKEN_VAR};

/// A variable whose value cannot be used. Names the variable, and the value unless it
/// is a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}{}: {reason}", .value.as_ref().map(|v| format!("={v:?}")).unwrap_or_default())]
pub struct EnvError {
    /// The variable, e.g. `CHAT_GRPC_ADDR`.
    pub var: String,
    /// What it was set to; `None` for secrets (and for errors about a combination).
    pub value: Option<String>,
    /// What is wrong, and what would be right.
    pub reason: String,
}

impl EnvError {
    /// An error about `var` that does not repeat its value (a secret, or a value that is
    /// wrong only together with another one).
    pub fn new(var: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            var: var.into(),
            value: None,
            reason: reason.into(),
        }
    }

    /// `var` is set to `value`, which cannot be used.
    pub fn invalid(var: impl Into<String>, value: &str, reason: impl Into<String>) -> Self {
        Self {
            var: var.into(),
            value: Some(value.to_owned()),
            reason: reason.into(),
        }
    }
}

/// A secret value (a JWT key, a password in a URL): `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
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

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The process environment, as [`Env::new`] takes it.
pub fn process_env(var: &str) -> Option<String> {
    std::env::var(var).ok()
}

/// Typed access to the variables of one lookup.
#[derive(Clone, Copy)]
pub struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl fmt::Debug for Env<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Env")
    }
}

impl<'a> Env<'a> {
    /// Reads variables through `lookup` ([`process_env`] in `main`).
    pub fn new(lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self { lookup }
    }

    /// The value of `var`, trimmed; `None` when unset, empty or blank.
    pub fn get(&self, var: &str) -> Option<String> {
        (self.lookup)(var)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// The value of `var`, or `default`.
    pub fn string(&self, var: &str, default: &str) -> String {
        self.get(var).unwrap_or_else(|| default.to_owned())
    }

    /// `var` parsed with `parse` (whose error says what is wrong), if set.
    pub fn optional<T, E: fmt::Display>(
        &self,
        var: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<Option<T>, EnvError> {
        self.get(var)
            .map(|v| parse(&v).map_err(|e| EnvError::invalid(var, &v, e.to_string())))
            .transpose()
    }

    /// `var` parsed as `T` ([`FromStr`]), or `default` when unset.
    pub fn parse<T: FromStr>(&self, var: &str, default: T) -> Result<T, EnvError>
    where
        T::Err: fmt::Display,
    {
        Ok(self.optional(var, str::parse::<T>)?.unwrap_or(default))
    }

    /// A whole number of at least `min`, or `default` when unset.
    pub fn number_at_least<T>(&self, var: &str, default: T, min: T) -> Result<T, EnvError>
    where
        T: FromStr + PartialOrd + fmt::Display + Copy,
        T::Err: fmt::Display,
    {
        let value = self.parse(var, default)?;
        if value < min {
            return Err(EnvError::invalid(
                var,
                &value.to_string(),
                format!("must be at least {min}"),
            ));
        }
        Ok(value)
    }

    /// A socket address like `0.0.0.0:50051` (port 0 picks a free port), or `default`.
    pub fn addr(&self, var: &str, default: SocketAddr) -> Result<SocketAddr, EnvError> {
        Ok(self
            .optional(var, |v| {
                v.parse::<SocketAddr>()
                    .map_err(|_| "not an address like 0.0.0.0:8000 (IP and port)")
            })?
            .unwrap_or(default))
    }

    /// A duration in whole seconds, or `default` when unset.
    pub fn secs(&self, var: &str, default: Duration) -> Result<Duration, EnvError> {
        Ok(self.optional_secs(var)?.unwrap_or(default))
    }

    /// A duration in whole seconds, if set.
    pub fn optional_secs(&self, var: &str) -> Result<Option<Duration>, EnvError> {
        self.optional(var, |v| {
            v.parse::<u64>()
                .map(Duration::from_secs)
                .map_err(|_| "not a whole number of seconds")
        })
    }

    /// A duration in whole milliseconds, if set.
    pub fn optional_millis(&self, var: &str) -> Result<Option<Duration>, EnvError> {
        self.optional(var, |v| {
            v.parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| "not a whole number of milliseconds")
        })
    }

    /// A yes/no variable: `true`/`false` (also `1`/`0`, `yes`/`no`, any case), or
    /// `default` when unset.
    pub fn flag(&self, var: &str, default: bool) -> Result<bool, EnvError> {
        Ok(self
            .optional(var, |v| match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(true),
                "false" | "0" | "no" => Ok(false),
                _ => Err("must be true or false"),
            })?
            .unwrap_or(default))
    }

    /// A secret, if set; never printed.
    pub fn secret(&self, var: &str) -> Option<Secret> {
        self.get(var).map(Secret::new)
    }

    /// `CHAT_REDIS_URL`, if set, turned into a cluster URL by `CHAT_REDIS_CLUSTER=true`
    /// (see [`redis_url`]). May hold a password: never print it.
    pub fn redis_url(&self) -> Result<Option<String>, EnvError> {
        Ok(redis_url(
            self.get("CHAT_REDIS_URL"),
            self.flag("CHAT_REDIS_CLUSTER", false)?,
        ))
    }

    /// `CHAT_INTERNAL_TOKEN`, validated, if set. The error never repeats the token.
    pub fn internal_token(&self) -> Result<Option<InternalToken>, EnvError> {
        self.get(TOKEN_VAR)
            .map(|v| InternalToken::parse(&v).map_err(|e| EnvError::new(TOKEN_VAR, e.to_string())))
            .transpose()
    }
}

/// A service's `Settings`: its `Default` (the values when nothing is set) and how it
/// reads its variables over them; `from_env` and `from_lookup` come with it.
pub trait FromEnv: Default {
    /// Reads the variables through `env` over `defaults`.
    fn read(env: &Env<'_>, defaults: Self) -> Result<Self, EnvError>;

    /// Reads the `CHAT_*` variables over the defaults.
    fn from_env() -> Result<Self, EnvError> {
        Self::from_lookup(process_env)
    }

    /// Like [`FromEnv::from_env`] with any source of variables (tests, the all-in-one).
    /// Empty values count as unset, as `.env` files often leave them.
    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        Self::read(&Env::new(&lookup), Self::default())
    }

    /// Like [`FromEnv::from_lookup`] over `(variable, value)` pairs (tests, examples).
    fn from_pairs(vars: &[(&str, &str)]) -> Result<Self, EnvError> {
        Self::from_lookup(lookup(vars))
    }
}

/// Where a gRPC service listens and whom it serves: the part of the settings that
/// history, presence (and every gRPC service after them) share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSettings {
    /// `CHAT_GRPC_ADDR`: where gRPC listens (port 0 picks a free port).
    pub grpc_addr: SocketAddr,
    /// `CHAT_METRICS_ADDR`: where `/metrics` and `/healthz` listen (`0.0.0.0:9100`).
    pub metrics_addr: SocketAddr,
    /// `CHAT_INTERNAL_TOKEN`: when set, every call of the service must carry it (see
    /// [`chat_proto::auth`]); unset = no check. Never printed.
    pub internal_token: Option<InternalToken>,
}

/// The default `CHAT_METRICS_ADDR` of the gRPC services.
pub const DEFAULT_METRICS_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 9100);

impl ServiceSettings {
    /// The defaults of a service whose gRPC port is `grpc_port` (history 50051, presence
    /// 50052), on every interface.
    pub fn with_port(grpc_port: u16) -> Self {
        Self {
            grpc_addr: SocketAddr::from(([0, 0, 0, 0], grpc_port)),
            metrics_addr: DEFAULT_METRICS_ADDR,
            internal_token: None,
        }
    }

    /// `CHAT_GRPC_ADDR`, `CHAT_METRICS_ADDR` and `CHAT_INTERNAL_TOKEN` over `self`.
    pub fn read(self, env: &Env<'_>) -> Result<Self, EnvError> {
        Ok(Self {
            grpc_addr: env.addr("CHAT_GRPC_ADDR", self.grpc_addr)?,
            metrics_addr: env.addr("CHAT_METRICS_ADDR", self.metrics_addr)?,
            internal_token: match env.internal_token()? {
                Some(token) => Some(token),
                None => self.internal_token,
            },
        })
    }
}

/// Where a service with a database keeps it: the part of the settings that history and
/// accounts share. `Debug` never prints the MongoDB URL (it may hold a password).
#[derive(Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// `CHAT_MONGODB_URL`: MongoDB connection string; unset or empty = embedded store.
    pub mongodb_url: Option<String>,
    /// `CHAT_MONGODB_DB`: database name (`chat`).
    pub mongodb_db: String,
    /// `CHAT_DATA_DIR`: the embedded store's directory (`./data`).
    pub data_dir: PathBuf,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            mongodb_url: None,
            mongodb_db: "chat".into(),
            data_dir: PathBuf::from("./data"),
        }
    }
}

impl fmt::Debug for StoreSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreSettings")
            .field(
                "mongodb_url",
                &self.mongodb_url.as_ref().map(|_| "<redacted>"),
            )
            .field("mongodb_db", &self.mongodb_db)
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

impl StoreSettings {
    /// `CHAT_MONGODB_URL`, `CHAT_MONGODB_DB` and `CHAT_DATA_DIR` over `self`.
    pub fn read(self, env: &Env<'_>) -> Self {
        Self {
            mongodb_url: env.get("CHAT_MONGODB_URL").or(self.mongodb_url),
            mongodb_db: env.string("CHAT_MONGODB_DB", &self.mongodb_db),
            data_dir: env
                .get("CHAT_DATA_DIR")
                .map_or(self.data_dir, PathBuf::from),
        }
    }
}

/// `CHAT_REDIS_URL` as the Redis clients use it: with `CHAT_REDIS_CLUSTER=true` a
/// `redis://` (`rediss://`) URL becomes `redis-cluster://` (`rediss-cluster://`), which
/// selects Redis Cluster. A URL that already names its kind is kept.
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

/// A source of variables over a slice of pairs, for tests:
/// `Settings::from_lookup(lookup(&[("CHAT_GRPC_ADDR", "127.0.0.1:0")]))`.
pub fn lookup<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |k| {
        vars.iter()
            .find(|(key, _)| *key == k)
            .map(|(_, v)| (*v).to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with<R>(vars: &[(&str, &str)], f: impl FnOnce(Env<'_>) -> R) -> R {
        f(Env::new(&lookup(vars)))
    }

    #[test]
    fn blank_is_unset_and_values_are_trimmed() {
        with(&[("A", "  "), ("B", " x ")], |env| {
            assert_eq!(env.get("A"), None);
            assert_eq!(env.get("B").as_deref(), Some("x"));
            assert_eq!(env.string("A", "d"), "d");
            assert_eq!(env.get("C"), None);
        });
    }

    #[test]
    fn errors_name_the_variable_and_the_value() {
        with(
            &[
                ("ADDR", "nope"),
                ("N", "1.5"),
                ("F", "maybe"),
                ("S", "-3"),
                ("MIN", "0"),
            ],
            |env| {
                let default = SocketAddr::from(([0, 0, 0, 0], 1));
                let e = env.addr("ADDR", default).expect_err("bad address");
                assert_eq!(e.var, "ADDR");
                assert!(e.to_string().starts_with("ADDR=\"nope\": "), "{e}");
                let e = env.parse::<u32>("N", 3).expect_err("bad number");
                assert!(e.to_string().starts_with("N=\"1.5\": "), "{e}");
                let e = env.flag("F", false).expect_err("bad flag");
                assert_eq!(e.to_string(), "F=\"maybe\": must be true or false");
                let e = env.secs("S", Duration::ZERO).expect_err("bad secs");
                assert!(e.to_string().contains("whole number of seconds"), "{e}");
                let e = env.number_at_least("MIN", 5_u32, 1).expect_err("too small");
                assert_eq!(e.to_string(), "MIN=\"0\": must be at least 1");
            },
        );
    }

    #[test]
    fn typed_values_and_defaults() {
        with(
            &[
                ("ADDR", "127.0.0.1:0"),
                ("SECS", "12"),
                ("MS", "250"),
                ("YES", "Yes"),
                ("NO", "0"),
            ],
            |env| {
                let default = SocketAddr::from(([0, 0, 0, 0], 1));
                assert_eq!(
                    env.addr("ADDR", default).expect("valid"),
                    SocketAddr::from(([127, 0, 0, 1], 0))
                );
                assert_eq!(env.addr("UNSET", default).expect("default"), default);
                assert_eq!(
                    env.secs("SECS", Duration::ZERO).expect("valid"),
                    Duration::from_secs(12)
                );
                assert_eq!(
                    env.optional_millis("MS").expect("valid"),
                    Some(Duration::from_millis(250))
                );
                assert!(env.flag("YES", false).expect("valid"));
                assert!(!env.flag("NO", true).expect("valid"));
                assert!(env.flag("UNSET", true).expect("default"));
            },
        );
    }

    #[test]
    fn secrets_never_print() {
        let token = "service-test-token-0123456789abcdef";
        with(&[("CHAT_INTERNAL_TOKEN", token), ("K", "hunter2")], |env| {
            let secret = env.secret("K").expect("set");
            assert_eq!(secret.expose(), "hunter2");
            assert!(!format!("{secret:?}").contains("hunter2"));
            let parsed = env.internal_token().expect("valid").expect("set");
            assert!(!format!("{parsed:?}").contains(token));
        });
        for bad in [
            "too-short",
            "has a space in it, so no",
            "non-ascii-token-ééééééé",
        ] {
            with(&[("CHAT_INTERNAL_TOKEN", bad)], |env| {
                let err = env.internal_token().expect_err(bad);
                assert_eq!(err.var, "CHAT_INTERNAL_TOKEN");
                assert!(
                    err.to_string().starts_with("CHAT_INTERNAL_TOKEN: "),
                    "{err}"
                );
                assert!(!err.to_string().contains(bad), "{err}");
            });
        }
    }

    #[test]
    fn store_settings_over_defaults_and_never_print_the_url() {
        with(&[], |env| {
            assert_eq!(
                StoreSettings::default().read(&env),
                StoreSettings::default()
            );
        });
        with(
            &[
                ("CHAT_MONGODB_URL", "mongodb://u:secret@db:27017"),
                ("CHAT_MONGODB_DB", "chat_test"),
                ("CHAT_DATA_DIR", "/var/lib/chat"),
            ],
            |env| {
                let s = StoreSettings::default().read(&env);
                assert_eq!(
                    s.mongodb_url.as_deref(),
                    Some("mongodb://u:secret@db:27017")
                );
                assert_eq!(s.mongodb_db, "chat_test");
                assert_eq!(s.data_dir, PathBuf::from("/var/lib/chat"));
                assert!(!format!("{s:?}").contains("secret"));
            },
        );
    }

    #[test]
    fn service_settings_over_defaults() {
        with(&[], |env| {
            assert_eq!(
                ServiceSettings::with_port(50051)
                    .read(&env)
                    .expect("defaults"),
                ServiceSettings::with_port(50051)
            );
        });
        with(
            &[("CHAT_GRPC_ADDR", "127.0.0.1:0"), ("CHAT_METRICS_ADDR", "")],
            |env| {
                let s = ServiceSettings::with_port(50052).read(&env).expect("valid");
                assert_eq!(s.grpc_addr, SocketAddr::from(([127, 0, 0, 1], 0)));
                assert_eq!(s.metrics_addr, DEFAULT_METRICS_ADDR);
                assert_eq!(s.internal_token, None);
            },
        );
        with(&[("CHAT_METRICS_ADDR", "nope")], |env| {
            let e = ServiceSettings::with_port(1).read(&env).expect_err("bad");
            assert_eq!(e.var, "CHAT_METRICS_ADDR");
        });
        let token = "service-test-token-0123456789abcdef";
        with(&[("CHAT_INTERNAL_TOKEN", token)], |env| {
            let s = ServiceSettings::with_port(1).read(&env).expect("valid");
            assert_eq!(
                s.internal_token,
                Some(InternalToken::parse(token).expect("valid"))
            );
            assert!(!format!("{s:?}").contains(token));
        });
        with(&[("CHAT_INTERNAL_TOKEN", "too-short")], |env| {
            let e = ServiceSettings::with_port(1).read(&env).expect_err("bad");
            assert_eq!(e.var, "CHAT_INTERNAL_TOKEN");
            assert!(!e.to_string().contains("too-short"), "{e}");
        });
    }

    #[test]
    fn redis_url_turns_cluster_with_the_flag() {
        let url = |u: &str| Some(u.to_owned());
        assert_eq!(redis_url(None, true), None);
        assert_eq!(
            redis_url(url("redis://r:6379"), false),
            url("redis://r:6379")
        );
        assert_eq!(
            redis_url(url("rediss://:pw@r:7000"), true),
            url("rediss-cluster://:pw@r:7000")
        );
        assert_eq!(
            redis_url(url("redis-cluster://r:7000"), false),
            url("redis-cluster://r:7000")
        );
        with(
            &[
                ("CHAT_REDIS_URL", "redis://r:1"),
                ("CHAT_REDIS_CLUSTER", "true"),
            ],
            |env| assert_eq!(env.redis_url().expect("valid"), url("redis-cluster://r:1")),
        );
        with(&[("CHAT_REDIS_CLUSTER", "perhaps")], |env| {
            assert_eq!(env.redis_url().expect_err("bad").var, "CHAT_REDIS_CLUSTER");
        });
    }
}
