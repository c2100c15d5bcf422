//! The account store: users, sessions and signing keys, shared by every accounts replica.
//!
//! One trait, one module per backend: [`embedded`] (a redb file, the single-machine
//! default) and [`mongo`] (MongoDB, for several replicas). Both pass the same behaviour
//! suite (`tests/store_suite.rs`). The store keeps no rules of its own beyond uniqueness
//! and atomic compare-and-set: validation, expiry and token logic are the caller's
//! ([`crate::accounts`]). Times are milliseconds since the Unix epoch, passed in by the
//! caller, so every replica uses its own clock the same way and tests can move time.

use std::fmt;

use async_trait::async_trait;
use chat_model::UserId;
use serde::{Deserialize, Serialize};

pub mod embedded;
pub mod mongo;

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// A SHA-256 digest (of a refresh token's secret).
pub type Digest = [u8; 32];

/// A user as stored. `Debug` leaves out the password hash.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// Server-generated, stable.
    #[serde(rename = "_id")]
    pub id: UserId,
    /// Lower-case, unique (also among disabled users: names stay reserved).
    pub username: String,
    /// Free text, validated by the caller.
    pub display_name: String,
    /// The argon2id PHC string.
    pub password_hash: String,
    /// When the user signed up.
    pub created_at: Millis,
    /// A deleted account: it cannot log in and is left out of lookups and searches.
    #[serde(deserialize_with = "flag")]
    pub disabled: bool,
}

impl fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserRecord")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("display_name", &self.display_name)
            .field("created_at", &self.created_at)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// A boolean also when a store hands it back as 0 or 1 (the MongoDB wire stand-in of
/// the tests does, for a value written by `$set`).
fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Int(i64),
    }
    Ok(match Flag::deserialize(d)? {
        Flag::Bool(b) => b,
        Flag::Int(i) => i != 0,
    })
}

/// One change to a user.
#[derive(Clone, PartialEq, Eq)]
pub enum UserUpdate {
    /// A new password hash (a password change, or a re-hash with new parameters).
    PasswordHash(String),
    /// A new display name.
    DisplayName(String),
    /// Disable (true) or enable (false) the account.
    Disabled(bool),
}

impl fmt::Debug for UserUpdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PasswordHash(_) => f.write_str("PasswordHash(<redacted>)"),
            Self::DisplayName(name) => f.debug_tuple("DisplayName").field(name).finish(),
            Self::Disabled(disabled) => f.debug_tuple("Disabled").field(disabled).finish(),
        }
    }
}

/// A log-in session, as stored. `Debug` leaves out the token digests and the sealed
/// token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Server-generated; also the first part of every refresh token of the session.
    #[serde(rename = "_id")]
    pub id: String,
    /// Whose session.
    pub user_id: UserId,
    /// SHA-256 of the current refresh token's secret.
    #[serde(with = "crate::hex::serde")]
    pub refresh_hash: Digest,
    /// SHA-256 of the refresh token the last rotation retired (none before the first).
    #[serde(with = "crate::hex::option")]
    pub previous_hash: Option<Digest>,
    /// The current refresh token's secret, sealed with a key only the retired token
    /// derives: what a second use of the retired token within the grace gets again.
    #[serde(with = "crate::hex::option")]
    pub sealed_next: Option<Vec<u8>>,
    /// When the last rotation happened.
    pub rotated_at: Option<Millis>,
    /// When the session was opened (its absolute lifetime counts from here).
    pub created_at: Millis,
    /// When the session ends unless refreshed before: the idle lifetime from its last
    /// use, capped by the absolute lifetime.
    pub expires_at: Millis,
}

impl fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionRecord")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("rotated_at", &self.rotated_at)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// What a rotation writes, if the session's current digest is still the expected one.
#[derive(Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The digest the caller presented (becomes `previous_hash`).
    pub expected: Digest,
    /// The new current digest.
    pub refresh_hash: Digest,
    /// The new secret, sealed for the grace (see [`SessionRecord::sealed_next`]).
    pub sealed_next: Vec<u8>,
    /// Now.
    pub rotated_at: Millis,
    /// The new expiry.
    pub expires_at: Millis,
}

impl fmt::Debug for Rotation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rotation")
            .field("rotated_at", &self.rotated_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// An access-token signing key, as stored. `Debug` leaves out the private key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKeyRecord {
    /// 1 for the first key, one more for each rotation; unique, so two replicas cannot
    /// both create the first key or both rotate to the same generation. The newest
    /// generation signs.
    #[serde(rename = "_id")]
    pub generation: u64,
    /// The JWT `kid`.
    pub kid: String,
    /// The Ed25519 secret key (32 bytes).
    #[serde(with = "crate::hex::serde")]
    pub private_key: Vec<u8>,
    /// The Ed25519 public key (32 bytes).
    #[serde(with = "crate::hex::serde")]
    pub public_key: Vec<u8>,
    /// When the key was created, which is when it replaced the previous generation.
    pub created_at: Millis,
}

impl fmt::Debug for SigningKeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeyRecord")
            .field("generation", &self.generation)
            .field("kid", &self.kid)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

pub use chat_runtime::store::StoreError;

/// The contract every backend keeps.
#[async_trait]
pub trait AccountStore: Send + Sync + fmt::Debug + 'static {
    /// A short name of the backend (`embedded`, `mongo`).
    fn backend(&self) -> &'static str;

    /// Stores a new user. `Ok(false)`: the username is taken (by an enabled or disabled
    /// user), also when another replica stores the same username at the same moment.
    async fn create_user(&self, user: &UserRecord) -> Result<bool, StoreError>;

    /// A user by id, disabled ones included.
    async fn user(&self, id: &UserId) -> Result<Option<UserRecord>, StoreError>;

    /// A user by (lower-case) username, disabled ones included.
    async fn user_by_username(&self, username: &str) -> Result<Option<UserRecord>, StoreError>;

    /// The enabled users among `ids`, in any order; unknown ids are left out.
    async fn users(&self, ids: &[UserId]) -> Result<Vec<UserRecord>, StoreError>;

    /// At most `limit` enabled users whose username or lower-cased display name starts
    /// with `prefix` (already lower-case), ordered by username.
    async fn search_users(&self, prefix: &str, limit: usize)
    -> Result<Vec<UserRecord>, StoreError>;

    /// Applies `update` to a user. `Ok(false)`: no such user.
    async fn update_user(&self, id: &UserId, update: UserUpdate) -> Result<bool, StoreError>;

    /// Stores a new session.
    async fn create_session(&self, session: &SessionRecord) -> Result<(), StoreError>;

    /// A session by id, expired or not.
    async fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError>;

    /// Rotates a session's refresh token if its current digest is `rotation.expected`
    /// (compare-and-set: of two concurrent rotations with the same token exactly one
    /// succeeds). `Ok(false)`: the session is gone or its digest is another.
    async fn rotate_session(&self, id: &str, rotation: &Rotation) -> Result<bool, StoreError>;

    /// Ends a session. `Ok(false)`: there was none.
    async fn delete_session(&self, id: &str) -> Result<bool, StoreError>;

    /// Ends every session of `user` except `keep`; returns the ids of the sessions it
    /// ended (to be announced as revoked), in any order.
    async fn delete_user_sessions(
        &self,
        user: &UserId,
        keep: Option<&str>,
    ) -> Result<Vec<String>, StoreError>;

    /// The sessions of `user` (for operators), expired ones included.
    async fn user_sessions(&self, user: &UserId) -> Result<Vec<SessionRecord>, StoreError>;

    /// Deletes the sessions that expired before `now`; returns how many.
    async fn purge_sessions(&self, now: Millis) -> Result<u64, StoreError>;

    /// How many sessions are stored (for the active-sessions gauge, after a purge).
    async fn count_sessions(&self) -> Result<u64, StoreError>;

    /// Every stored signing key, in any order.
    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>, StoreError>;

    /// Stores a signing key. `Ok(false)`: its generation exists already (another
    /// replica created or rotated first).
    async fn insert_signing_key(&self, key: &SigningKeyRecord) -> Result<bool, StoreError>;

    /// Deletes the signing key of `generation` (no longer published).
    async fn delete_signing_key(&self, generation: u64) -> Result<(), StoreError>;

    /// Whether the backend is reachable (for readiness and gRPC health).
    async fn ping(&self) -> Result<(), StoreError>;
}
