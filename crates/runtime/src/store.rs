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

    /// How often the driver checks each server (`heartbeatFrequencyMS`; its default is
    /// 10 s, its minimum 500 ms). The driver has no socket timeout: what ends an
    /// operation stuck on a link that went silent is a check that gets no answer within
    /// [`CONNECT_TIMEOUT`], which marks the server unknown and interrupts every
    /// operation in flight on its connections. So a silent cut fails calls within
    /// 500 ms + 2 s, and a retried write then waits [`SERVER_SELECTION_TIMEOUT`] at most:
    /// 4.5 s in all, inside the gateway's 5 s call deadline. A check costs one `hello`
    /// round trip.
    pub const HEARTBEAT_FREQUENCY: Duration = Duration::from_millis(500);

    /// TCP connect and handshake timeout (`connectTimeoutMS`; default 10 s), also the
    /// time a server check may take before the server counts as unreachable: 2 s is far
    /// above a round trip inside a data centre (or the 200 ms links the tests add), and
    /// keeps detection inside the call deadline.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

    /// How long an operation waits for a reachable server (`serverSelectionTimeoutMS`;
    /// default 30 s) before failing with `unavailable`: while the store is cut off or
    /// electing a primary, calls fail fast and clients resend (appends are idempotent)
    /// instead of holding the caller past its deadline. Health checks recover as soon
    /// as a check succeeds again (within [`HEARTBEAT_FREQUENCY`] of the heal).
    pub const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(2);

    /// The client options of `url` with `app_name` and the timeouts above, unless the URL
    /// sets them (`heartbeatFrequencyMS`, `connectTimeoutMS`, `serverSelectionTimeoutMS`).
    /// An invalid URL is [`StoreError::Internal`] naming only the kind of error: the
    /// URL may hold a password.
    pub async fn client_options(url: &str, app_name: &str) -> Result<ClientOptions, StoreError> {
        let mut options = ClientOptions::parse(url).await.map_err(|e| {
            // Only the kind: the URL may hold a password, and the kind says what is wrong.
            StoreError::Internal(format!("invalid MongoDB URL: {}", e.kind))
        })?;
        options.app_name.get_or_insert_with(|| app_name.into());
        options.heartbeat_freq.get_or_insert(HEARTBEAT_FREQUENCY);
        options
            .server_selection_timeout
            .get_or_insert(SERVER_SELECTION_TIMEOUT);
        options.connect_timeout.get_or_insert(CONNECT_TIMEOUT);
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
