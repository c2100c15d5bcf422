//! The embedded store: one [redb] file (`accounts.redb`) inside the accounts process, the
//! single-machine default.
//!
//! Account writes are rare next to chat messages (a sign-up, a log-in, a refresh every
//! few minutes per client), so each is its own write transaction, durable (fsynced) when
//! it returns; redb runs one write transaction at a time, which makes every
//! check-then-write below (username uniqueness, the session compare-and-set, the key
//! generation) atomic. Calls run on tokio's blocking pool. The file is locked: one
//! accounts process per directory.
//!
//! # Tables
//!
//! - `users`: id -> the user (JSON).
//! - `usernames`: username -> id (uniqueness, and the username prefix search).
//! - `display_names`: (lower-cased display name, id) -> () (the display-name search).
//! - `sessions`: id -> the session (JSON).
//! - `user_sessions`: (user id, session id) -> () (log-out everywhere).
//! - `signing_keys`: generation -> the key (JSON).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use chat_model::UserId;
use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, WriteTransaction,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{
    AccountStore, Millis, Rotation, SessionRecord, SigningKeyRecord, StoreError, UserRecord,
    UserUpdate,
};

/// The file inside the data directory.
pub const FILE_NAME: &str = "accounts.redb";

const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
const USERNAMES: TableDefinition<&str, &str> = TableDefinition::new("usernames");
const DISPLAY_NAMES: TableDefinition<(&str, &str), ()> = TableDefinition::new("display_names");
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
const USER_SESSIONS: TableDefinition<(&str, &str), ()> = TableDefinition::new("user_sessions");
const SIGNING_KEYS: TableDefinition<u64, &[u8]> = TableDefinition::new("signing_keys");

/// The redb-backed [`AccountStore`].
#[derive(Debug)]
pub struct EmbeddedStore {
    /// Shared with the calls running on the blocking pool.
    db: Arc<Database>,
    /// The database file, for messages.
    path: PathBuf,
}

/// redb's errors: I/O (disk full, read-only) may pass once the operator fixed it; the
/// rest is a bug or corruption.
fn failed(e: impl Into<redb::Error>) -> StoreError {
    let e = e.into();
    if matches!(e, redb::Error::Io(_) | redb::Error::PreviousIo) {
        StoreError::Unavailable(format!("accounts store I/O: {e}"))
    } else {
        StoreError::Internal(format!("accounts store: {e}"))
    }
}

fn encode(value: &impl Serialize) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Internal(format!("cannot encode: {e}")))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|e| StoreError::Internal(format!("undecodable stored record: {e}")))
}

impl EmbeddedStore {
    /// Opens (or creates) `<dir>/accounts.redb`, creating `dir` if needed. Blocks on file
    /// I/O: call it at start-up or on a blocking thread.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let (db, path) =
            chat_runtime::store::embedded::open(dir.as_ref(), FILE_NAME, failed, |txn| {
                txn.open_table(USERS)?;
                txn.open_table(USERNAMES)?;
                txn.open_table(DISPLAY_NAMES)?;
                txn.open_table(SESSIONS)?;
                txn.open_table(USER_SESSIONS)?;
                txn.open_table(SIGNING_KEYS)?;
                Ok(())
            })?;
        Ok(Self {
            db: Arc::new(db),
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in a read transaction on the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || f(&db.begin_read().map_err(failed)?))
            .await
            .map_err(|e| StoreError::Internal(format!("store task failed: {e}")))?
    }

    /// Runs `f` in a write transaction on the blocking pool and commits it (durably)
    /// when `f` succeeds.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_write().map_err(failed)?;
            let value = f(&txn)?;
            txn.commit().map_err(failed)?;
            Ok(value)
        })
        .await
        .map_err(|e| StoreError::Internal(format!("store task failed: {e}")))?
    }
}

fn get_json<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<T>, StoreError> {
    table
        .get(key)
        .map_err(failed)?
        .map(|v| decode(v.value()))
        .transpose()
}

fn put_user(txn: &WriteTransaction, user: &UserRecord) -> Result<(), StoreError> {
    txn.open_table(USERS)
        .map_err(failed)?
        .insert(user.id.as_str(), encode(user)?.as_slice())
        .map_err(failed)?;
    Ok(())
}

fn delete_session_in(txn: &WriteTransaction, id: &str) -> Result<bool, StoreError> {
    let mut sessions = txn.open_table(SESSIONS).map_err(failed)?;
    let Some(session) = get_json::<SessionRecord>(&sessions, id)? else {
        return Ok(false);
    };
    sessions.remove(id).map_err(failed)?;
    txn.open_table(USER_SESSIONS)
        .map_err(failed)?
        .remove((session.user_id.as_str(), id))
        .map_err(failed)?;
    Ok(true)
}

/// The keys of `table` starting with `prefix`, in order.
fn with_prefix<V: redb::Value + 'static>(
    table: &impl ReadableTable<(&'static str, &'static str), V>,
    prefix: &str,
) -> Result<Vec<(String, String)>, StoreError> {
    let mut found = Vec::new();
    for entry in table.range((prefix, "")..).map_err(failed)? {
        let (key, _) = entry.map_err(failed)?;
        let (first, second) = key.value();
        if !first.starts_with(prefix) {
            break;
        }
        found.push((first.to_owned(), second.to_owned()));
    }
    Ok(found)
}

#[async_trait]
impl AccountStore for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn create_user(&self, user: &UserRecord) -> Result<bool, StoreError> {
        let user = user.clone();
        self.write(move |txn| {
            let mut names = txn.open_table(USERNAMES).map_err(failed)?;
            if names.get(user.username.as_str()).map_err(failed)?.is_some() {
                return Ok(false);
            }
            names
                .insert(user.username.as_str(), user.id.as_str())
                .map_err(failed)?;
            txn.open_table(DISPLAY_NAMES)
                .map_err(failed)?
                .insert(
                    (user.display_name.to_lowercase().as_str(), user.id.as_str()),
                    (),
                )
                .map_err(failed)?;
            put_user(txn, &user)?;
            Ok(true)
        })
        .await
    }

    async fn user(&self, id: &UserId) -> Result<Option<UserRecord>, StoreError> {
        let id = id.clone();
        self.read(move |txn| get_json(&txn.open_table(USERS).map_err(failed)?, id.as_str()))
            .await
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        let username = username.to_owned();
        self.read(move |txn| {
            let id = txn
                .open_table(USERNAMES)
                .map_err(failed)?
                .get(username.as_str())
                .map_err(failed)?
                .map(|v| v.value().to_owned());
            match id {
                Some(id) => get_json(&txn.open_table(USERS).map_err(failed)?, &id),
                None => Ok(None),
            }
        })
        .await
    }

    async fn users(&self, ids: &[UserId]) -> Result<Vec<UserRecord>, StoreError> {
        let ids = ids.to_vec();
        self.read(move |txn| {
            let users = txn.open_table(USERS).map_err(failed)?;
            let mut found = Vec::new();
            for id in &ids {
                if let Some(user) = get_json::<UserRecord>(&users, id.as_str())?
                    && !user.disabled
                {
                    found.push(user);
                }
            }
            Ok(found)
        })
        .await
    }

    async fn search_users(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<UserRecord>, StoreError> {
        let prefix = prefix.to_owned();
        self.read(move |txn| {
            let users = txn.open_table(USERS).map_err(failed)?;
            let mut ids = Vec::new();
            let names = txn.open_table(USERNAMES).map_err(failed)?;
            for entry in names.range(prefix.as_str()..).map_err(failed)? {
                let (name, id) = entry.map_err(failed)?;
                if !name.value().starts_with(&prefix) {
                    break;
                }
                ids.push(id.value().to_owned());
            }
            let display = txn.open_table(DISPLAY_NAMES).map_err(failed)?;
            ids.extend(
                with_prefix(&display, &prefix)?
                    .into_iter()
                    .map(|(_, id)| id),
            );
            // By username; a user matching both ways counts once.
            let mut matches = BTreeMap::new();
            for id in ids {
                if let Some(user) = get_json::<UserRecord>(&users, &id)?
                    && !user.disabled
                {
                    matches.insert(user.username.clone(), user);
                }
            }
            Ok(matches.into_values().take(limit).collect())
        })
        .await
    }

    async fn update_user(&self, id: &UserId, update: UserUpdate) -> Result<bool, StoreError> {
        let id = id.clone();
        self.write(move |txn| {
            let Some(mut user) =
                get_json::<UserRecord>(&txn.open_table(USERS).map_err(failed)?, id.as_str())?
            else {
                return Ok(false);
            };
            match update {
                UserUpdate::PasswordHash(hash) => user.password_hash = hash,
                UserUpdate::Disabled(disabled) => user.disabled = disabled,
                UserUpdate::DisplayName(name) => {
                    let mut display = txn.open_table(DISPLAY_NAMES).map_err(failed)?;
                    display
                        .remove((user.display_name.to_lowercase().as_str(), id.as_str()))
                        .map_err(failed)?;
                    display
                        .insert((name.to_lowercase().as_str(), id.as_str()), ())
                        .map_err(failed)?;
                    user.display_name = name;
                }
            }
            put_user(txn, &user)?;
            Ok(true)
        })
        .await
    }

    async fn create_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        let session = session.clone();
        self.write(move |txn| {
            txn.open_table(SESSIONS)
                .map_err(failed)?
                .insert(session.id.as_str(), encode(&session)?.as_slice())
                .map_err(failed)?;
            txn.open_table(USER_SESSIONS)
                .map_err(failed)?
                .insert((session.user_id.as_str(), session.id.as_str()), ())
                .map_err(failed)?;
            Ok(())
        })
        .await
    }

    async fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let id = id.to_owned();
        self.read(move |txn| get_json(&txn.open_table(SESSIONS).map_err(failed)?, &id))
            .await
    }

    async fn rotate_session(&self, id: &str, rotation: &Rotation) -> Result<bool, StoreError> {
        let id = id.to_owned();
        let rotation = rotation.clone();
        self.write(move |txn| {
            let mut sessions = txn.open_table(SESSIONS).map_err(failed)?;
            let Some(mut session) = get_json::<SessionRecord>(&sessions, &id)? else {
                return Ok(false);
            };
            if session.refresh_hash != rotation.expected {
                return Ok(false);
            }
            session.previous_hash = Some(rotation.expected);
            session.refresh_hash = rotation.refresh_hash;
            session.sealed_next = Some(rotation.sealed_next);
            session.rotated_at = Some(rotation.rotated_at);
            session.expires_at = rotation.expires_at;
            sessions
                .insert(id.as_str(), encode(&session)?.as_slice())
                .map_err(failed)?;
            Ok(true)
        })
        .await
    }

    async fn delete_session(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.write(move |txn| delete_session_in(txn, &id)).await
    }

    async fn delete_user_sessions(
        &self,
        user: &UserId,
        keep: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let user = user.clone();
        let keep = keep.map(str::to_owned);
        self.write(move |txn| {
            let ids = with_prefix(
                &txn.open_table(USER_SESSIONS).map_err(failed)?,
                user.as_str(),
            )?;
            let mut ended = Vec::new();
            for (owner, id) in ids {
                if owner == user.as_str()
                    && keep.as_deref() != Some(id.as_str())
                    && delete_session_in(txn, &id)?
                {
                    ended.push(id);
                }
            }
            Ok(ended)
        })
        .await
    }

    async fn user_sessions(&self, user: &UserId) -> Result<Vec<SessionRecord>, StoreError> {
        let user = user.clone();
        self.read(move |txn| {
            let sessions = txn.open_table(SESSIONS).map_err(failed)?;
            let mut found = Vec::new();
            let ids = with_prefix(
                &txn.open_table(USER_SESSIONS).map_err(failed)?,
                user.as_str(),
            )?;
            for (owner, id) in ids {
                if owner == user.as_str()
                    && let Some(session) = get_json(&sessions, &id)?
                {
                    found.push(session);
                }
            }
            Ok(found)
        })
        .await
    }

    async fn purge_sessions(&self, now: Millis) -> Result<u64, StoreError> {
        self.write(move |txn| {
            // A full scan: fine for the single-machine store, which runs it every few
            // minutes at most.
            let mut expired = Vec::new();
            for entry in txn
                .open_table(SESSIONS)
                .map_err(failed)?
                .iter()
                .map_err(failed)?
            {
                let (id, value) = entry.map_err(failed)?;
                if decode::<SessionRecord>(value.value())?.expires_at <= now {
                    expired.push(id.value().to_owned());
                }
            }
            let mut purged = 0;
            for id in expired {
                if delete_session_in(txn, &id)? {
                    purged += 1;
                }
            }
            Ok(purged)
        })
        .await
    }

    async fn count_sessions(&self) -> Result<u64, StoreError> {
        self.read(|txn| {
            txn.open_table(SESSIONS)
                .map_err(failed)?
                .len()
                .map_err(failed)
        })
        .await
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        self.read(|txn| {
            let mut keys = Vec::new();
            let table = txn.open_table(SIGNING_KEYS).map_err(failed)?;
            for entry in table.iter().map_err(failed)? {
                let (_, value) = entry.map_err(failed)?;
                keys.push(decode(value.value())?);
            }
            Ok(keys)
        })
        .await
    }

    async fn insert_signing_key(&self, key: &SigningKeyRecord) -> Result<bool, StoreError> {
        let key = key.clone();
        self.write(move |txn| {
            let mut keys = txn.open_table(SIGNING_KEYS).map_err(failed)?;
            if keys.get(key.generation).map_err(failed)?.is_some() {
                return Ok(false);
            }
            keys.insert(key.generation, encode(&key)?.as_slice())
                .map_err(failed)?;
            Ok(true)
        })
        .await
    }

    async fn delete_signing_key(&self, generation: u64) -> Result<(), StoreError> {
        self.write(move |txn| {
            txn.open_table(SIGNING_KEYS)
                .map_err(failed)?
                .remove(generation)
                .map_err(failed)?;
            Ok(())
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|_| Ok(())).await
    }
}
