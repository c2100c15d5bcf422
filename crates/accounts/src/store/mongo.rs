//! The MongoDB store, for running several accounts replicas against one database.
//!
//! # Collections and indexes (created at start-up)
//!
//! - `users`: `{_id: <user id>, username, display_name, display_lower, password_hash,
//!   created_at, disabled}`; unique index `{username: 1}` (stored lower-cased, so
//!   usernames are unique ignoring case, arbitrated by the server also between replicas),
//!   index `{display_lower: 1}` for the search.
//! - `sessions`: `{_id: <session id>, user_id, refresh_hash, previous_hash, sealed_next,
//!   rotated_at, created_at, expires_at}` (digests in hex); indexes `{user_id: 1}` (log
//!   out everywhere) and `{expires_at: 1}` (the purge). A session is found by its id,
//!   which every refresh token carries; a rotation is one `update_one` filtered on the
//!   id *and* the expected digest, so of two concurrent rotations one matches.
//! - `signing_keys`: `{_id: <generation>, kid, private_key, public_key, created_at}`:
//!   the generation is the `_id`, so two replicas creating the first key or rotating at
//!   once cannot both win.
//!
//! Writes use write concern `majority` with journaling: a session or user acknowledged
//! is not rolled back by a failover.

use async_trait::async_trait;
use chat_model::UserId;
use futures_util::TryStreamExt;
use mongodb::bson::{Document, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{Acknowledgment, IndexOptions, WriteConcern};
use mongodb::{Client, Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};

use super::{
    AccountStore, Millis, Rotation, SessionRecord, SigningKeyRecord, StoreError, UserRecord,
    UserUpdate,
};

/// Rounds of find-and-delete one `delete_user_sessions` makes at most (sessions keep
/// being opened for the user meanwhile only under attack).
const MAX_DELETE_ROUNDS: usize = 5;

/// MongoDB's duplicate key error code.
const DUPLICATE_KEY: i32 = 11000;

/// A user with the lower-cased display name the search reads.
#[derive(Debug, Serialize, Deserialize)]
struct UserDoc {
    #[serde(flatten)]
    user: UserRecord,
    display_lower: String,
}

impl From<&UserRecord> for UserDoc {
    fn from(user: &UserRecord) -> Self {
        Self {
            display_lower: user.display_name.to_lowercase(),
            user: user.clone(),
        }
    }
}

/// The MongoDB-backed [`AccountStore`].
#[derive(Debug)]
pub struct MongoStore {
    /// For `ping`.
    db: Database,
    users: Collection<UserDoc>,
    sessions: Collection<SessionRecord>,
    keys: Collection<SigningKeyRecord>,
}

/// Driver errors: a request that could not be encoded or a reply that could not be read
/// is a bug (`Internal`); anything else (network, server selection, a primary stepping
/// down, a write concern not met) may pass, so the caller is told to retry.
fn failed(e: mongodb::error::Error) -> StoreError {
    match &*e.kind {
        ErrorKind::InvalidArgument { .. }
        | ErrorKind::BsonDeserialization(_)
        | ErrorKind::BsonSerialization(_)
        | ErrorKind::InvalidResponse { .. } => StoreError::Internal(format!("mongodb: {}", e.kind)),
        _ => StoreError::Unavailable(format!("mongodb: {}", e.kind)),
    }
}

fn is_duplicate(e: &mongodb::error::Error) -> bool {
    matches!(&*e.kind, ErrorKind::Write(WriteFailure::WriteError(w)) if w.code == DUPLICATE_KEY)
        || matches!(&*e.kind, ErrorKind::Command(c) if c.code == DUPLICATE_KEY)
}

/// An insert's outcome: `Ok(false)` when a unique index refused it.
fn inserted<T>(result: Result<T, mongodb::error::Error>) -> Result<bool, StoreError> {
    match result {
        Ok(_) => Ok(true),
        Err(e) if is_duplicate(&e) => Ok(false),
        Err(e) => Err(failed(e)),
    }
}

/// A filter matching strings that start with `prefix` (a range, so an index serves it).
fn starts_with(field: &str, prefix: &str) -> Document {
    doc! { field: { "$gte": prefix, "$lt": format!("{prefix}\u{10FFFF}") } }
}

impl MongoStore {
    /// Connects to `url`, uses database `db_name`, and creates the indexes if missing.
    /// Fails with [`StoreError::Unavailable`] when no server answers within the server
    /// selection timeout (2 s unless the URL sets `serverSelectionTimeoutMS`).
    pub async fn connect(url: &str, db_name: &str) -> Result<Self, StoreError> {
        let mut options = chat_runtime::store::mongo::client_options(url, "chat-accounts").await?;
        options.write_concern.get_or_insert(
            WriteConcern::builder()
                .w(Acknowledgment::Majority)
                .journal(true)
                .build(),
        );
        let db = Client::with_options(options)
            .map_err(failed)?
            .database(db_name);
        let index = |keys: Document, name: &str, unique: bool| {
            IndexModel::builder()
                .keys(keys)
                .options(
                    IndexOptions::builder()
                        .name(name.to_owned())
                        .unique(unique)
                        .build(),
                )
                .build()
        };
        for (collection, indexes) in [
            (
                "users",
                [
                    index(doc! { "username": 1 }, "username", true),
                    index(doc! { "display_lower": 1 }, "display_lower", false),
                ],
            ),
            (
                "sessions",
                [
                    index(doc! { "user_id": 1 }, "user_id", false),
                    index(doc! { "expires_at": 1 }, "expires_at", false),
                ],
            ),
        ] {
            db.collection::<Document>(collection)
                .create_indexes(indexes)
                .await
                .map_err(failed)?;
        }
        Ok(Self {
            users: db.collection("users"),
            sessions: db.collection("sessions"),
            keys: db.collection("signing_keys"),
            db,
        })
    }

    /// The users `filter` matches; with `first`, only that many, by username.
    async fn find_users(
        &self,
        filter: Document,
        first: Option<usize>,
    ) -> Result<Vec<UserRecord>, StoreError> {
        let mut find = self.users.find(filter);
        if let Some(n) = first {
            find = find
                .sort(doc! { "username": 1 })
                .limit(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let docs: Vec<UserDoc> = find
            .await
            .map_err(failed)?
            .try_collect()
            .await
            .map_err(failed)?;
        Ok(docs.into_iter().map(|d| d.user).collect())
    }
}

#[async_trait]
impl AccountStore for MongoStore {
    fn backend(&self) -> &'static str {
        "mongo"
    }

    async fn create_user(&self, user: &UserRecord) -> Result<bool, StoreError> {
        inserted(self.users.insert_one(UserDoc::from(user)).await)
    }

    async fn user(&self, id: &UserId) -> Result<Option<UserRecord>, StoreError> {
        let found = self.users.find_one(doc! { "_id": id.as_str() }).await;
        Ok(found.map_err(failed)?.map(|d| d.user))
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        let found = self.users.find_one(doc! { "username": username }).await;
        Ok(found.map_err(failed)?.map(|d| d.user))
    }

    async fn users(&self, ids: &[UserId]) -> Result<Vec<UserRecord>, StoreError> {
        let ids: Vec<&str> = ids.iter().map(UserId::as_str).collect();
        self.find_users(doc! { "_id": { "$in": ids }, "disabled": false }, None)
            .await
    }

    async fn search_users(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<UserRecord>, StoreError> {
        let filter = doc! {
            "disabled": false,
            "$or": [starts_with("username", prefix), starts_with("display_lower", prefix)],
        };
        self.find_users(filter, Some(limit)).await
    }

    async fn update_user(&self, id: &UserId, update: UserUpdate) -> Result<bool, StoreError> {
        let set = match update {
            UserUpdate::PasswordHash(hash) => doc! { "password_hash": hash },
            UserUpdate::DisplayName(name) => {
                doc! { "display_lower": name.to_lowercase(), "display_name": name }
            }
            UserUpdate::Disabled(disabled) => doc! { "disabled": disabled },
        };
        let result = self
            .users
            .update_one(doc! { "_id": id.as_str() }, doc! { "$set": set })
            .await
            .map_err(failed)?;
        Ok(result.matched_count == 1)
    }

    async fn create_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        self.sessions
            .insert_one(session)
            .await
            .map(drop)
            .map_err(failed)
    }

    async fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.sessions
            .find_one(doc! { "_id": id })
            .await
            .map_err(failed)
    }

    async fn rotate_session(&self, id: &str, rotation: &Rotation) -> Result<bool, StoreError> {
        let expected = crate::hex::encode(&rotation.expected);
        let set = doc! {
            "refresh_hash": crate::hex::encode(&rotation.refresh_hash),
            "previous_hash": &expected,
            "sealed_next": crate::hex::encode(&rotation.sealed_next),
            "rotated_at": rotation.rotated_at,
            "expires_at": rotation.expires_at,
        };
        let result = self
            .sessions
            .update_one(
                doc! { "_id": id, "refresh_hash": &expected },
                doc! { "$set": set },
            )
            .await
            .map_err(failed)?;
        Ok(result.matched_count == 1)
    }

    async fn delete_session(&self, id: &str) -> Result<bool, StoreError> {
        let result = self
            .sessions
            .delete_one(doc! { "_id": id })
            .await
            .map_err(failed)?;
        Ok(result.deleted_count == 1)
    }

    async fn delete_user_sessions(
        &self,
        user: &UserId,
        keep: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let mut filter = doc! { "user_id": user.as_str() };
        if let Some(keep) = keep {
            filter.insert("_id", doc! { "$ne": keep });
        }
        // Find, then delete what was found, until nothing is left: the ids are what the
        // caller announces, and a session opened meanwhile is caught by the next round.
        let mut ended = Vec::new();
        for _ in 0..MAX_DELETE_ROUNDS {
            let found: Vec<String> = self
                .sessions
                .find(filter.clone())
                .await
                .map_err(failed)?
                .map_ok(|s| s.id)
                .try_collect()
                .await
                .map_err(failed)?;
            if found.is_empty() {
                break;
            }
            let mut round = filter.clone();
            round.insert("_id", doc! { "$in": &found });
            self.sessions.delete_many(round).await.map_err(failed)?;
            ended.extend(found);
        }
        Ok(ended)
    }

    async fn user_sessions(&self, user: &UserId) -> Result<Vec<SessionRecord>, StoreError> {
        self.sessions
            .find(doc! { "user_id": user.as_str() })
            .await
            .map_err(failed)?
            .try_collect()
            .await
            .map_err(failed)
    }

    async fn purge_sessions(&self, now: Millis) -> Result<u64, StoreError> {
        let result = self
            .sessions
            .delete_many(doc! { "expires_at": { "$lte": now } })
            .await
            .map_err(failed)?;
        Ok(result.deleted_count)
    }

    async fn count_sessions(&self) -> Result<u64, StoreError> {
        self.sessions.count_documents(doc! {}).await.map_err(failed)
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError> {
        self.keys
            .find(doc! {})
            .await
            .map_err(failed)?
            .try_collect()
            .await
            .map_err(failed)
    }

    async fn insert_signing_key(&self, key: &SigningKeyRecord) -> Result<bool, StoreError> {
        inserted(self.keys.insert_one(key).await)
    }

    async fn delete_signing_key(&self, generation: u64) -> Result<(), StoreError> {
        let id = i64::try_from(generation)
            .map_err(|_| StoreError::Internal(format!("generation {generation} too large")))?;
        self.keys
            .delete_one(doc! { "_id": id })
            .await
            .map(drop)
            .map_err(failed)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.db
            .run_command(doc! { "ping": 1 })
            .await
            .map(drop)
            .map_err(failed)
    }
}
