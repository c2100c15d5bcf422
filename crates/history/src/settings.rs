//! Configuration from the environment, and choosing the store backend from it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use chat_proto::auth::{InternalToken, TOKEN_VAR};

use crate::store::MessageStore;
use crate::store::embedded::EmbeddedStore;
use crate::store::mongo::MongoStore;

/// Everything the history service reads from its environment.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// `CHAT_GRPC_ADDR`: where gRPC listens (`0.0.0.0:50051`; port 0 picks a free port).
    pub grpc_addr: SocketAddr,
    /// `CHAT_METRICS_ADDR`: where `/metrics` and `/healthz` will listen (`0.0.0.0:9100`).
    pub metrics_addr: SocketAddr,
    /// `CHAT_MONGODB_URL`: MongoDB connection string; unset or empty = embedded store.
    /// May hold a password, so `Debug` never prints it.
    pub mongodb_url: Option<String>,
    /// `CHAT_MONGODB_DB`: database name (`chat`).
    pub mongodb_db: String,
    /// `CHAT_DATA_DIR`: the embedded store's directory (`./data`).
    pub data_dir: PathBuf,
    /// `CHAT_INTERNAL_TOKEN`: when set, every History call must carry it (see
    /// [`chat_proto::auth`]); unset = no check. Never printed.
    pub internal_token: Option<InternalToken>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            grpc_addr: SocketAddr::from(([0, 0, 0, 0], 50051)),
            metrics_addr: SocketAddr::from(([0, 0, 0, 0], 9100)),
            mongodb_url: None,
            mongodb_db: "chat".into(),
            data_dir: PathBuf::from("./data"),
            internal_token: None,
        }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("grpc_addr", &self.grpc_addr)
            .field("metrics_addr", &self.metrics_addr)
            .field(
                "mongodb_url",
                &self.mongodb_url.as_ref().map(|_| "<redacted>"),
            )
            .field("mongodb_db", &self.mongodb_db)
            .field("data_dir", &self.data_dir)
            .field("internal_token", &self.internal_token)
            .finish()
    }
}

impl Settings {
    /// Reads the `CHAT_*` variables over the defaults.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Like [`Settings::from_env`] with any source of variables (tests, config files).
    /// Empty values count as unset, as `.env` files often leave them.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let get = |key: &str| lookup(key).filter(|v| !v.trim().is_empty());
        let addr = |key: &str, default: SocketAddr| -> anyhow::Result<SocketAddr> {
            get(key).map_or(Ok(default), |v| {
                v.trim()
                    .parse()
                    .with_context(|| format!("{key}={v:?} is not an address like 0.0.0.0:50051"))
            })
        };
        let defaults = Self::default();
        Ok(Self {
            grpc_addr: addr("CHAT_GRPC_ADDR", defaults.grpc_addr)?,
            metrics_addr: addr("CHAT_METRICS_ADDR", defaults.metrics_addr)?,
            mongodb_url: get("CHAT_MONGODB_URL"),
            mongodb_db: get("CHAT_MONGODB_DB").unwrap_or(defaults.mongodb_db),
            data_dir: get("CHAT_DATA_DIR").map_or(defaults.data_dir, PathBuf::from),
            internal_token: internal_token(&get)?,
        })
    }
}

/// `CHAT_INTERNAL_TOKEN`, validated, if set.
fn internal_token(get: &impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<InternalToken>> {
    get(TOKEN_VAR)
        .map(|v| InternalToken::parse(&v).map_err(|e| anyhow::anyhow!("{TOKEN_VAR} {e}")))
        .transpose()
}

/// Opens the store the settings choose: MongoDB when `mongodb_url` is set, else the
/// embedded store in `data_dir`.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn MessageStore>> {
    if let Some(url) = &settings.mongodb_url {
        let store = MongoStore::connect(url, &settings.mongodb_db)
            .await
            .context("cannot use the MongoDB store")?;
        tracing::info!(db = %settings.mongodb_db, "message store: MongoDB");
        Ok(Arc::new(store))
    } else {
        let dir = settings.data_dir.clone();
        let store = tokio::task::spawn_blocking(move || EmbeddedStore::open(dir))
            .await
            .context("opening the embedded store panicked")?
            .context("cannot open the embedded store")?;
        tracing::info!(path = %store.path().display(), "message store: embedded");
        Ok(Arc::new(store))
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
        let token = "history-test-token-0123456789abcdef";
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
            ("CHAT_MONGODB_URL", "mongodb://u:secret@db:27017"),
            ("CHAT_MONGODB_DB", "chat_test"),
            ("CHAT_DATA_DIR", "/var/lib/chat"),
            ("CHAT_METRICS_ADDR", ""),
        ])
        .expect("valid");
        assert_eq!(s.grpc_addr, SocketAddr::from(([127, 0, 0, 1], 0)));
        assert_eq!(s.metrics_addr, Settings::default().metrics_addr);
        assert_eq!(s.mongodb_db, "chat_test");
        assert_eq!(s.data_dir, PathBuf::from("/var/lib/chat"));
        assert!(!format!("{s:?}").contains("secret"));
    }

    #[test]
    fn bad_address_is_named() {
        let err = from(&[("CHAT_GRPC_ADDR", "nope")]).expect_err("invalid");
        assert!(err.to_string().contains("CHAT_GRPC_ADDR"));
    }
}
