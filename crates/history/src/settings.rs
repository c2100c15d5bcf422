//! Configuration from the environment, and choosing the store backend from it.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use chat_runtime::env::{Env, EnvError, ServiceSettings, process_env};

use crate::store::MessageStore;
use crate::store::embedded::EmbeddedStore;
use crate::store::mongo::MongoStore;

/// History's default gRPC port (`CHAT_GRPC_ADDR`).
pub const DEFAULT_GRPC_PORT: u16 = 50051;

/// Everything the history service reads from its environment.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// `CHAT_GRPC_ADDR` (`0.0.0.0:50051`), `CHAT_METRICS_ADDR`, `CHAT_INTERNAL_TOKEN`.
    pub service: ServiceSettings,
    /// `CHAT_MONGODB_URL`: MongoDB connection string; unset or empty = embedded store.
    /// May hold a password, so `Debug` never prints it.
    pub mongodb_url: Option<String>,
    /// `CHAT_MONGODB_DB`: database name (`chat`).
    pub mongodb_db: String,
    /// `CHAT_DATA_DIR`: the embedded store's directory (`./data`).
    pub data_dir: PathBuf,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            service: ServiceSettings::with_port(DEFAULT_GRPC_PORT),
            mongodb_url: None,
            mongodb_db: "chat".into(),
            data_dir: PathBuf::from("./data"),
        }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("service", &self.service)
            .field(
                "mongodb_url",
                &self.mongodb_url.as_ref().map(|_| "<redacted>"),
            )
            .field("mongodb_db", &self.mongodb_db)
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

impl Settings {
    /// Reads the `CHAT_*` variables over the defaults.
    pub fn from_env() -> Result<Self, EnvError> {
        Self::from_lookup(process_env)
    }

    /// Like [`Settings::from_env`] with any source of variables (tests, the all-in-one).
    /// Empty values count as unset, as `.env` files often leave them.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        let env = Env::new(&lookup);
        let defaults = Self::default();
        Ok(Self {
            service: defaults.service.read(&env)?,
            mongodb_url: env.get("CHAT_MONGODB_URL"),
            mongodb_db: env.string("CHAT_MONGODB_DB", &defaults.mongodb_db),
            data_dir: env
                .get("CHAT_DATA_DIR")
                .map_or(defaults.data_dir, PathBuf::from),
        })
    }
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
    use std::net::SocketAddr;

    use chat_proto::auth::InternalToken;

    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<Settings, EnvError> {
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
            s.service.internal_token,
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
        assert_eq!(s.service.grpc_addr, SocketAddr::from(([127, 0, 0, 1], 0)));
        assert_eq!(
            s.service.metrics_addr,
            Settings::default().service.metrics_addr
        );
        assert_eq!(s.mongodb_db, "chat_test");
        assert_eq!(s.data_dir, PathBuf::from("/var/lib/chat"));
        assert!(!format!("{s:?}").contains("secret"));
    }

    #[test]
    fn bad_address_is_named() {
        let err = from(&[("CHAT_GRPC_ADDR", "nope")]).expect_err("invalid");
        assert_eq!(err.var, "CHAT_GRPC_ADDR");
        assert!(
            err.to_string().starts_with("CHAT_GRPC_ADDR=\"nope\": "),
            "{err}"
        );
    }
}
