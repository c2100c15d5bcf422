//! Configuration from the environment, and choosing the store backend from it.

use std::path::PathBuf;
use std::sync::Arc;

use chat_runtime::env::{Env, EnvError, FromEnv, ServiceSettings, StoreSettings};

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
        Self::new(
            ServiceSettings::with_port(DEFAULT_GRPC_PORT),
            StoreSettings::default(),
        )
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("service", &self.service)
            .field("store", &self.store())
            .finish()
    }
}

impl FromEnv for Settings {
    fn read(env: &Env<'_>, defaults: Self) -> Result<Self, EnvError> {
        let store = defaults.store().read(env);
        Ok(Self::new(defaults.service.read(env)?, store))
    }
}

impl Settings {
    fn new(service: ServiceSettings, store: StoreSettings) -> Self {
        let StoreSettings {
            mongodb_url,
            mongodb_db,
            data_dir,
        } = store;
        Self {
            service,
            mongodb_url,
            mongodb_db,
            data_dir,
        }
    }

    /// The store part (`CHAT_MONGODB_URL`, `CHAT_MONGODB_DB`, `CHAT_DATA_DIR`).
    pub fn store(&self) -> StoreSettings {
        StoreSettings {
            mongodb_url: self.mongodb_url.clone(),
            mongodb_db: self.mongodb_db.clone(),
            data_dir: self.data_dir.clone(),
        }
    }
}

/// Opens the store the settings choose: MongoDB when `mongodb_url` is set, else the
/// embedded store in `data_dir`.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn MessageStore>> {
    let mongo =
        async |url: String, db: String| Ok(Arc::new(MongoStore::connect(&url, &db).await?) as _);
    let embedded = |dir| EmbeddedStore::open(dir).map(|s| (s.path().to_owned(), Arc::new(s) as _));
    chat_runtime::store::open(&settings.store(), "message store", mongo, embedded).await
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
            ("CHAT_MONGODB_URL", "mongodb://u:secret@db:27017"),
            ("CHAT_MONGODB_DB", "chat_test"),
            ("CHAT_DATA_DIR", "/var/lib/chat"),
        ])
        .expect("valid");
        assert_eq!(s.mongodb_db, "chat_test");
        assert_eq!(s.data_dir, PathBuf::from("/var/lib/chat"));
        assert!(!format!("{s:?}").contains("secret"));
    }

    #[test]
    fn bad_address_is_named() {
        let err = Settings::from_pairs(&[("CHAT_GRPC_ADDR", "nope")]).expect_err("invalid");
        assert_eq!(err.var, "CHAT_GRPC_ADDR");
        assert!(
            err.to_string().starts_with("CHAT_GRPC_ADDR=\"nope\": "),
            "{err}"
        );
    }
}
