//! What the services with a database (history, accounts) share about their store: the
//! error every store call returns, the settings that choose the backend
//! ([`StoreSettings`]), opening the chosen backend ([`open`]), and, behind the cargo
//! features `mongodb` and `redb`, connecting to MongoDB ([`mongo`]) and creating the
//! embedded redb file ([`embedded`]).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use tonic::Status;

use crate::env::StoreSettings;

/// Why the store could not serve a request.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend is unreachable or timed out; the caller may retry.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be read back, or another unexpected failure.
    #[error("store failure: {0}")]
    Internal(String),
}

/// The one place where store errors become gRPC statuses.
impl From<StoreError> for Status {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(msg) => {
                tracing::warn!(error = %msg, "store unavailable");
                Status::unavailable(msg)
            }
            StoreError::Internal(msg) => {
                tracing::error!(error = %msg, "store failure");
                Status::internal(msg)
            }
        }
    }
}

/// Opens the store `settings` choose: MongoDB (through `mongo(url, db)`) when
/// `mongodb_url` is set, else the embedded store in `data_dir` (through
/// `embedded(dir)`, on a blocking thread, which returns the store's file and the store). Logs
/// `<what>: MongoDB` or `<what>: embedded` (`what`: e.g. `message store`).
pub async fn open<T, M, E>(
    settings: &StoreSettings,
    what: &str,
    mongo: impl FnOnce(String, String) -> M,
    embedded: E,
) -> anyhow::Result<Arc<T>>
where
    T: ?Sized + Send + Sync + 'static,
    M: Future<Output = Result<Arc<T>, StoreError>>,
    E: FnOnce(PathBuf) -> Result<(PathBuf, Arc<T>), StoreError> + Send + 'static,
{
    if let Some(url) = &settings.mongodb_url {
        let store = mongo(url.clone(), settings.mongodb_db.clone())
            .await
            .context("cannot use the MongoDB store")?;
        tracing::info!(db = %settings.mongodb_db, "{what}: MongoDB");
        Ok(store)
    } else {
        let dir = settings.data_dir.clone();
        let (path, store) = tokio::task::spawn_blocking(move || embedded(dir))
            .await
            .context("opening the embedded store panicked")?
            .context("cannot open the embedded store")?;
        tracing::info!(path = %path.display(), "{what}: embedded");
        Ok(store)
    }
}

/// Connecting to MongoDB the same way in every service.
#[cfg(feature = "mongodb")]
pub mod mongo {
    use std::time::Duration;

    use mongodb::options::ClientOptions;

    use super::StoreError;

    /// The client options of `url` with `app_name` and 5 s server selection and connect
    /// timeouts unless the URL sets them. An invalid URL is [`StoreError::Internal`]
    /// naming only the kind of error: the URL may hold a password.
    pub async fn client_options(url: &str, app_name: &str) -> Result<ClientOptions, StoreError> {
        let mut options = ClientOptions::parse(url).await.map_err(|e| {
            // Only the kind: the URL may hold a password, and the kind says what is wrong.
            StoreError::Internal(format!("invalid MongoDB URL: {}", e.kind))
        })?;
        options.app_name.get_or_insert_with(|| app_name.into());
        options
            .server_selection_timeout
            .get_or_insert(Duration::from_secs(5));
        options
            .connect_timeout
            .get_or_insert(Duration::from_secs(5));
        Ok(options)
    }
}

/// Creating the embedded redb file the same way in every service.
#[cfg(feature = "redb")]
pub mod embedded {
    use std::path::{Path, PathBuf};

    use super::StoreError;

    /// Opens (or creates) `<dir>/<file_name>`, creating `dir` if needed, and creates the
    /// tables up front in one transaction (`create_tables`), so that readers never meet
    /// a missing table. Errors of redb itself go through `db_error`. Blocks on file I/O.
    pub fn open(
        dir: &Path,
        file_name: &str,
        db_error: impl Fn(redb::Error) -> StoreError,
        create_tables: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::TableError>,
    ) -> Result<(redb::Database, PathBuf), StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Internal(format!("cannot create data dir {}: {e}", dir.display()))
        })?;
        let path = dir.join(file_name);
        let db = redb::Database::create(&path)
            .map_err(|e| StoreError::Internal(format!("cannot open {}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(|e| db_error(e.into()))?;
        create_tables(&txn).map_err(|e| db_error(e.into()))?;
        txn.commit().map_err(|e| db_error(e.into()))?;
        Ok((db, path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_statuses() {
        assert_eq!(
            Status::from(StoreError::Unavailable("down".into())).code(),
            tonic::Code::Unavailable
        );
        assert_eq!(
            Status::from(StoreError::Internal("bug".into())).code(),
            tonic::Code::Internal
        );
    }
}
