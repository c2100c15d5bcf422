//! The accounts operations, over a store, the hashing pool, the signing keys and the
//! throttle; `service.rs` is only their gRPC face.
//!
//! # Sessions
//!
//! A log-in (or sign-up) opens a session: an id, the digest of its current refresh
//! token, its creation time and its expiry (idle lifetime from its last use, capped by
//! the absolute lifetime from its creation). A refresh presenting the current token
//! rotates it (compare-and-set in the store). Presenting the token the last rotation
//! retired, within the reuse grace, returns the same new token again (unsealed from the
//! rotation, see [`RefreshToken::seal`]) with a fresh access token: two tabs refreshing
//! at once both end up holding the session's one current token. Presenting any other
//! token of the session (a retired one after the grace, an older one, a forged one)
//! ends the session and counts as `reused`. Bearer calls check that the access token's
//! session still exists, so an ended session stops them at once; gateways learn of it
//! through the [`Revocation`] published after the store ended it (see
//! [`crate::revocations`]).
//!
//! # Operators
//!
//! [`Accounts::reset_password`], [`Accounts::set_disabled`],
//! [`Accounts::sessions_of`] and [`Accounts::rotate_signing_key`] are what the
//! `chat-accounts` sub-commands call (`src/cli.rs`).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chat_model::revocation::{Revocation, RevocationReason};
use chat_model::{Timestamp, UserId};

use crate::error::AccountsError;
use crate::metrics::AccountsMetrics;
use crate::names;
use crate::password::{self, Password, PasswordHasher, Verified};
use crate::revocations::RevocationSink;
use crate::settings::Settings;
use crate::store::{AccountStore, Millis, Rotation, SessionRecord, UserRecord, UserUpdate};
use crate::throttle::{ClientAddr, Throttle, ThrottleKey, longest_wait};
use crate::tokens::{Keys, Published, RefreshToken, millis};

/// Most ids one `users` call may ask for.
pub const MAX_USER_IDS: usize = 500;
/// Most users one search returns.
pub const MAX_SEARCH_LIMIT: usize = 50;
/// A search's size when none is asked for.
pub const DEFAULT_SEARCH_LIMIT: usize = 20;
/// Longest search query, in characters.
pub const MAX_QUERY_CHARS: usize = 64;

/// A session's tokens, as handed to the client. `Debug` leaves the tokens out.
#[derive(Clone)]
pub struct Issued {
    /// The session's user.
    pub user: UserRecord,
    /// The JWT.
    pub access_token: String,
    /// Its lifetime.
    pub expires_in: Duration,
    /// The opaque refresh token.
    pub refresh_token: String,
    /// How long the refresh token stays valid unless used.
    pub refresh_expires_in: Duration,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("user", &self.user)
            .field("expires_in", &self.expires_in)
            .field("refresh_expires_in", &self.refresh_expires_in)
            .finish_non_exhaustive()
    }
}

/// The verified caller of a Bearer call.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user, enabled.
    pub user: UserRecord,
    /// The access token's session, still open.
    pub session: String,
}

/// The lifetimes the operations apply.
#[derive(Debug, Clone, Copy)]
struct Lifetimes {
    idle: Duration,
    max: Duration,
    reuse_grace: Duration,
}

/// Why a refresh failed: reuse is counted apart.
enum Refused {
    /// A token of the session that is not its current one: the session was ended.
    Reused,
    /// Anything else.
    Error(AccountsError),
}

impl<E: Into<AccountsError>> From<E> for Refused {
    fn from(e: E) -> Self {
        Self::Error(e.into())
    }
}

/// The accounts logic of one replica.
#[derive(Debug)]
pub struct Accounts {
    store: Arc<dyn AccountStore>,
    hasher: PasswordHasher,
    keys: Keys,
    throttle: Arc<dyn Throttle>,
    revocations: Arc<dyn RevocationSink>,
    metrics: AccountsMetrics,
    lifetimes: Lifetimes,
}

fn now() -> Millis {
    Timestamp::now().millis()
}

/// The `result` label of a sign-up or log-in; `refused` for a refusal of the request
/// itself.
fn outcome(result: &Result<Issued, AccountsError>, refused: &'static str) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(AccountsError::RateLimited(_)) => "throttled",
        Err(AccountsError::Unavailable { .. } | AccountsError::Internal(_)) => "unavailable",
        Err(_) => refused,
    }
}

/// The optional client address of a request.
pub fn client_addr(raw: &str) -> Result<Option<ClientAddr>, AccountsError> {
    if raw.is_empty() {
        return Ok(None);
    }
    raw.parse::<IpAddr>()
        .map(|ip| Some(ClientAddr::new(ip)))
        .map_err(|_| AccountsError::BadRequest("client_addr is not an IP address".into()))
}

impl Accounts {
    /// Loads (or creates) the signing keys and starts the hashing pool. Ended sessions
    /// are announced through `revocations`.
    pub async fn new(
        settings: &Settings,
        store: Arc<dyn AccountStore>,
        throttle: Arc<dyn Throttle>,
        revocations: Arc<dyn RevocationSink>,
        metrics: AccountsMetrics,
    ) -> Result<Self, AccountsError> {
        let keys = Keys::load(
            Arc::clone(&store),
            &settings.token_issuer,
            &settings.token_audience,
            settings.access_token_ttl,
            now(),
        )
        .await?;
        let (params, threads, priority, queue) = (
            settings.hash_params,
            settings.hash_threads,
            settings.hash_priority,
            settings.hash_queue,
        );
        let pool_metrics = metrics.clone();
        let hasher = tokio::task::spawn_blocking(move || {
            PasswordHasher::new(params, threads, priority, queue, pool_metrics)
        })
        .await
        .map_err(|e| AccountsError::Internal(format!("starting the hashing pool: {e}")))??;
        Ok(Self {
            store,
            hasher,
            keys,
            throttle,
            revocations,
            metrics,
            lifetimes: Lifetimes {
                idle: settings.session_idle,
                max: settings.session_max,
                reuse_grace: settings.refresh_reuse_grace,
            },
        })
    }

    /// The store (for health checks).
    pub fn store(&self) -> &Arc<dyn AccountStore> {
        &self.store
    }

    /// The signing keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Announces that `sessions` of `user` ended (nothing when there are none). A
    /// failure is logged and counted, never returned: the store has ended the sessions
    /// already and their access tokens expire within minutes.
    async fn revoke(&self, user: &UserId, sessions: Vec<String>, reason: RevocationReason) {
        if sessions.is_empty() {
            return;
        }
        let revocation = Revocation {
            user: user.to_string(),
            sessions,
            reason,
        };
        match self.revocations.publish(&revocation).await {
            Ok(()) => self.metrics.revocation("published"),
            Err(e) => {
                self.metrics.revocation("failed");
                tracing::warn!(
                    user = %user,
                    sessions = revocation.sessions.len(),
                    reason = ?reason,
                    error = %e,
                    "ended sessions not announced to the gateways; their access tokens \
                     stay usable there until they expire"
                );
            }
        }
    }

    /// Counts a throttle failure; the attempt goes ahead (fail open).
    fn throttle_failed(&self, e: &crate::store::StoreError) {
        self.metrics.throttle_failures.inc();
        tracing::warn!(error = %e, "throttle unavailable; attempt let through unthrottled");
    }

    /// The longest wait among `keys`; zero when the throttle fails.
    async fn throttle_wait(&self, keys: &[ThrottleKey]) -> Duration {
        longest_wait(&*self.throttle, keys)
            .await
            .unwrap_or_else(|e| {
                self.throttle_failed(&e);
                Duration::ZERO
            })
    }

    /// Counts an event under each of `keys`.
    async fn throttle_record(&self, keys: &[ThrottleKey]) {
        for key in keys {
            if let Err(e) = self.throttle.record(key).await {
                self.throttle_failed(&e);
            }
        }
    }

    /// Forgets `key`'s count.
    async fn throttle_reset(&self, key: &ThrottleKey) {
        if let Err(e) = self.throttle.reset(key).await {
            self.throttle_failed(&e);
        }
    }

    /// Creates a user and opens its first session.
    pub async fn sign_up(
        &self,
        username: &str,
        password: &Password,
        display_name: &str,
        client: Option<ClientAddr>,
    ) -> Result<Issued, AccountsError> {
        let result: Result<Issued, AccountsError> = async {
            let throttled: Vec<ThrottleKey> =
                client.map(ThrottleKey::SignUpAddr).into_iter().collect();
            let wait = self.throttle_wait(&throttled).await;
            if !wait.is_zero() {
                return Err(AccountsError::RateLimited(wait));
            }
            let username = names::username(username)?;
            let display_name = if display_name.trim().is_empty() {
                username.clone()
            } else {
                names::display_name(display_name)?
            };
            password::check_policy(password, &[&username, &display_name])?;
            self.throttle_record(&throttled).await;
            if self.store.user_by_username(&username).await?.is_some() {
                return Err(AccountsError::UsernameTaken);
            }
            let user = UserRecord {
                id: names::new_user_id()?,
                username,
                display_name,
                password_hash: self.hasher.hash(password).await?,
                created_at: now(),
                disabled: false,
            };
            if !self.store.create_user(&user).await? {
                return Err(AccountsError::UsernameTaken);
            }
            tracing::info!(user = %user.id, "signed up");
            self.open_session(user).await
        }
        .await;
        self.metrics.signup(outcome(&result, "rejected"));
        result
    }

    /// Checks a username and password and opens a session.
    pub async fn log_in(
        &self,
        username: &str,
        password: &Password,
        client: Option<ClientAddr>,
    ) -> Result<Issued, AccountsError> {
        let result = self.log_in_inner(username, password, client).await;
        self.metrics.login(outcome(&result, "invalid"));
        result
    }

    async fn log_in_inner(
        &self,
        username: &str,
        password: &Password,
        client: Option<ClientAddr>,
    ) -> Result<Issued, AccountsError> {
        // No valid username has other characters, so the lower-cased input is the
        // stored form of any name that exists; nothing else is worth a check.
        let username = username.to_ascii_lowercase();
        if username.is_empty()
            || username.len() > 256
            || password.expose().len() > password::MAX_BYTES
        {
            return Err(AccountsError::InvalidCredentials);
        }
        let mut throttled = vec![ThrottleKey::LogInUser(username.clone())];
        throttled.extend(client.map(ThrottleKey::LogInAddr));
        let user = self.check_password(&username, password, &throttled).await?;
        self.open_session(user).await
    }

    /// The password check of log-ins and of the Bearer calls that ask for the password:
    /// throttled under `throttled`, the same answer and cost for an unknown user, a
    /// disabled one and a wrong password; a right password resets the username's count
    /// and replaces a hash made with older parameters.
    async fn check_password(
        &self,
        username: &str,
        password: &Password,
        throttled: &[ThrottleKey],
    ) -> Result<UserRecord, AccountsError> {
        let wait = self.throttle_wait(throttled).await;
        if !wait.is_zero() {
            return Err(AccountsError::RateLimited(wait));
        }
        let user = self
            .store
            .user_by_username(username)
            .await?
            .filter(|u| !u.disabled);
        let verified = self
            .hasher
            .verify(password, user.as_ref().map(|u| u.password_hash.as_str()))
            .await?;
        let (Some(user), Verified::Right { rehash }) = (user, verified) else {
            self.throttle_record(throttled).await;
            return Err(AccountsError::InvalidCredentials);
        };
        self.throttle_reset(&ThrottleKey::LogInUser(user.username.clone()))
            .await;
        if rehash {
            let updated = match self.hasher.hash(password).await {
                Ok(hash) => self
                    .store
                    .update_user(&user.id, UserUpdate::PasswordHash(hash))
                    .await
                    .map_err(AccountsError::from),
                Err(e) => Err(e),
            };
            match updated {
                Ok(_) => {
                    tracing::info!(user = %user.id, "password re-hashed with the current parameters")
                }
                // The log-in stands; the next one tries again.
                Err(e) => {
                    tracing::warn!(user = %user.id, error = %e, "re-hashing a password failed")
                }
            }
        }
        Ok(user)
    }

    async fn open_session(&self, user: UserRecord) -> Result<Issued, AccountsError> {
        let now = now();
        let id = names::new_session_id()?;
        let refresh = RefreshToken::generate(&id)?;
        let session = SessionRecord {
            id,
            user_id: user.id.clone(),
            refresh_hash: refresh.digest(),
            previous_hash: None,
            sealed_next: None,
            rotated_at: None,
            created_at: now,
            expires_at: now.saturating_add(millis(self.lifetimes.idle.min(self.lifetimes.max))),
        };
        self.store.create_session(&session).await?;
        self.issue(user, &session, &refresh, now)
    }

    fn issue(
        &self,
        user: UserRecord,
        session: &SessionRecord,
        refresh: &RefreshToken,
        now: Millis,
    ) -> Result<Issued, AccountsError> {
        let access_token = self.keys.sign(&user.id, &session.id, now)?;
        let left = u64::try_from(session.expires_at.saturating_sub(now)).unwrap_or(0);
        Ok(Issued {
            user,
            access_token,
            expires_in: self.keys.access_ttl(),
            refresh_token: refresh.encode(),
            refresh_expires_in: Duration::from_millis(left),
        })
    }

    /// Exchanges a refresh token (see the module documentation).
    pub async fn refresh(&self, token: &str) -> Result<Issued, AccountsError> {
        let result = self.refresh_inner(token).await;
        self.metrics.refresh(match &result {
            Ok(_) => "ok",
            Err(Refused::Reused) => "reused",
            Err(Refused::Error(AccountsError::Unavailable { .. } | AccountsError::Internal(_))) => {
                "unavailable"
            }
            Err(Refused::Error(_)) => "invalid",
        });
        result.map_err(|refused| match refused {
            Refused::Reused => AccountsError::InvalidToken,
            Refused::Error(e) => e,
        })
    }

    async fn refresh_inner(&self, token: &str) -> Result<Issued, Refused> {
        let presented = RefreshToken::parse(token).ok_or(AccountsError::InvalidToken)?;
        let digest = presented.digest();
        let now = now();
        // A lost compare-and-set means a concurrent refresh with the same token: read
        // the session again, which then takes the grace path.
        for _ in 0..3 {
            let Some(session) = self.store.session(presented.session()).await? else {
                return Err(AccountsError::InvalidToken.into());
            };
            if session.expires_at <= now {
                self.store.delete_session(&session.id).await?;
                return Err(AccountsError::InvalidToken.into());
            }
            if session.refresh_hash == digest {
                let next = RefreshToken::generate(&session.id)?;
                let expires_at = now.saturating_add(millis(self.lifetimes.idle)).min(
                    session
                        .created_at
                        .saturating_add(millis(self.lifetimes.max)),
                );
                let rotation = Rotation {
                    expected: digest,
                    refresh_hash: next.digest(),
                    sealed_next: presented.seal(&next),
                    rotated_at: now,
                    expires_at,
                };
                if self.store.rotate_session(&session.id, &rotation).await? {
                    let session = SessionRecord {
                        expires_at,
                        ..session
                    };
                    return Ok(self.issue_for(&session, &next, now).await?);
                }
                continue;
            }
            let in_grace = session.previous_hash == Some(digest)
                && session
                    .rotated_at
                    .is_some_and(|at| now.saturating_sub(at) <= millis(self.lifetimes.reuse_grace));
            if in_grace
                && let Some(next) = session
                    .sealed_next
                    .as_deref()
                    .and_then(|s| presented.unseal(s))
            {
                return Ok(self.issue_for(&session, &next, now).await?);
            }
            if self.store.delete_session(&session.id).await? {
                self.revoke(
                    &session.user_id,
                    vec![session.id.clone()],
                    RevocationReason::RefreshReused,
                )
                .await;
            }
            tracing::warn!(user = %session.user_id, session = %session.id, "refresh token reused: session ended");
            return Err(Refused::Reused);
        }
        Err(Refused::Error(AccountsError::Unavailable {
            message: "the session is being refreshed elsewhere; try again".into(),
            retry_after: Duration::from_secs(1),
        }))
    }

    /// Tokens for a session of a user that must still be enabled.
    async fn issue_for(
        &self,
        session: &SessionRecord,
        refresh: &RefreshToken,
        now: Millis,
    ) -> Result<Issued, AccountsError> {
        match self.store.user(&session.user_id).await? {
            Some(user) if !user.disabled => self.issue(user, session, refresh, now),
            _ => {
                self.store.delete_session(&session.id).await?;
                Err(AccountsError::InvalidToken)
            }
        }
    }

    /// Verifies a Bearer call's access token: signature and claims, an open session of
    /// the token's user, and an enabled user.
    pub async fn authenticate(&self, access_token: &str) -> Result<Caller, AccountsError> {
        let now = now();
        let verified = self.keys.verify(access_token, now).await.map_err(|e| {
            tracing::debug!(error = %e, "access token refused");
            AccountsError::InvalidToken
        })?;
        let session = self
            .store
            .session(&verified.session)
            .await?
            .filter(|s| s.user_id == verified.user && s.expires_at > now)
            .ok_or(AccountsError::InvalidToken)?;
        let user = self
            .store
            .user(&verified.user)
            .await?
            .filter(|u| !u.disabled)
            .ok_or(AccountsError::InvalidToken)?;
        Ok(Caller {
            user,
            session: session.id,
        })
    }

    /// Ends the caller's session; `refresh_token`, if given, must be one of it.
    pub async fn log_out(&self, caller: &Caller, refresh_token: &str) -> Result<(), AccountsError> {
        if !refresh_token.is_empty()
            && RefreshToken::parse(refresh_token).is_none_or(|t| t.session() != caller.session)
        {
            return Err(AccountsError::InvalidToken);
        }
        if self.store.delete_session(&caller.session).await? {
            self.revoke(
                &caller.user.id,
                vec![caller.session.clone()],
                RevocationReason::LogOut,
            )
            .await;
        }
        Ok(())
    }

    /// Ends every session of the caller; returns how many ended.
    pub async fn log_out_all(&self, caller: &Caller) -> Result<usize, AccountsError> {
        let ended = self
            .store
            .delete_user_sessions(&caller.user.id, None)
            .await?;
        let count = ended.len();
        self.revoke(&caller.user.id, ended, RevocationReason::LogOutAll)
            .await;
        Ok(count)
    }

    /// Replaces the caller's password and ends their other sessions.
    pub async fn change_password(
        &self,
        caller: &Caller,
        current: &Password,
        new: &Password,
    ) -> Result<(), AccountsError> {
        let user = &caller.user;
        password::check_policy(new, &[&user.username, &user.display_name])?;
        let throttled = [ThrottleKey::LogInUser(user.username.clone())];
        self.check_password(&user.username, current, &throttled)
            .await?;
        let hash = self.hasher.hash(new).await?;
        self.store
            .update_user(&user.id, UserUpdate::PasswordHash(hash))
            .await?;
        let ended = self
            .store
            .delete_user_sessions(&user.id, Some(&caller.session))
            .await?;
        tracing::info!(user = %user.id, ended = ended.len(), "password changed");
        self.revoke(&user.id, ended, RevocationReason::PasswordChanged)
            .await;
        Ok(())
    }

    /// Renames the caller.
    pub async fn rename(
        &self,
        caller: &Caller,
        display_name: &str,
    ) -> Result<UserRecord, AccountsError> {
        let display_name = names::display_name(display_name)?;
        self.store
            .update_user(
                &caller.user.id,
                UserUpdate::DisplayName(display_name.clone()),
            )
            .await?;
        Ok(UserRecord {
            display_name,
            ..caller.user.clone()
        })
    }

    /// Disables the caller after checking the password, and ends every session.
    pub async fn delete(&self, caller: &Caller, password: &Password) -> Result<(), AccountsError> {
        let user = &caller.user;
        let throttled = [ThrottleKey::LogInUser(user.username.clone())];
        self.check_password(&user.username, password, &throttled)
            .await?;
        self.store
            .update_user(&user.id, UserUpdate::Disabled(true))
            .await?;
        let ended = self.store.delete_user_sessions(&user.id, None).await?;
        tracing::info!(user = %user.id, "account disabled");
        self.revoke(&user.id, ended, RevocationReason::AccountDisabled)
            .await;
        Ok(())
    }

    /// Enabled users by id, in request order (each once); unknown ids are left out.
    pub async fn users(&self, ids: &[String]) -> Result<Vec<UserRecord>, AccountsError> {
        if ids.len() > MAX_USER_IDS {
            return Err(AccountsError::BadRequest(format!(
                "at most {MAX_USER_IDS} ids at a time"
            )));
        }
        let ids = ids
            .iter()
            .map(|id| UserId::parse(id).map_err(|e| AccountsError::BadRequest(format!("ids: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let mut found: HashMap<UserId, UserRecord> = self
            .store
            .users(&ids)
            .await?
            .into_iter()
            .map(|u| (u.id.clone(), u))
            .collect();
        Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
    }

    /// Enabled users whose username or display name starts with `query`.
    pub async fn search(&self, query: &str, limit: u32) -> Result<Vec<UserRecord>, AccountsError> {
        let query = query.trim().to_lowercase();
        if query.is_empty() || query.chars().count() > MAX_QUERY_CHARS {
            return Err(AccountsError::BadRequest(format!(
                "a search is 1 to {MAX_QUERY_CHARS} characters long"
            )));
        }
        let limit = match usize::try_from(limit).unwrap_or(usize::MAX) {
            0 => DEFAULT_SEARCH_LIMIT,
            n if n <= MAX_SEARCH_LIMIT => n,
            _ => {
                return Err(AccountsError::BadRequest(format!(
                    "limit is 1 to {MAX_SEARCH_LIMIT} (0 means {DEFAULT_SEARCH_LIMIT})"
                )));
            }
        };
        Ok(self.store.search_users(&query, limit).await?)
    }

    /// The published signing keys.
    pub async fn signing_keys(&self) -> Result<Vec<Published>, AccountsError> {
        self.keys.published(now()).await
    }

    /// Rotates the signing key.
    pub async fn rotate_signing_key(&self) -> Result<Vec<Published>, AccountsError> {
        self.keys.rotate(now()).await
    }

    /// Deletes expired sessions and samples the active-sessions gauge.
    pub async fn purge_sessions(&self) -> Result<u64, AccountsError> {
        let purged = self.store.purge_sessions(now()).await?;
        let active = self.store.count_sessions().await?;
        self.metrics
            .sessions_active
            .set(i64::try_from(active).unwrap_or(i64::MAX));
        Ok(purged)
    }

    /// The user named `username` (any case), disabled or not; an error naming it when
    /// there is none.
    pub async fn user_named(&self, username: &str) -> Result<UserRecord, AccountsError> {
        self.store
            .user_by_username(&username.to_ascii_lowercase())
            .await?
            .ok_or_else(|| AccountsError::BadRequest(format!("no user named {username:?}")))
    }

    /// Operators: gives `username` the password `new` (checked against the policy when
    /// `check_policy`; a generated one need not be), ends every session of the user and
    /// forgets the username's failed log-ins. Returns the sessions ended.
    pub async fn reset_password(
        &self,
        username: &str,
        new: &Password,
        check_policy: bool,
    ) -> Result<usize, AccountsError> {
        let user = self.user_named(username).await?;
        if check_policy {
            password::check_policy(new, &[&user.username, &user.display_name])?;
        }
        let hash = self.hasher.hash(new).await?;
        self.store
            .update_user(&user.id, UserUpdate::PasswordHash(hash))
            .await?;
        let ended = self.store.delete_user_sessions(&user.id, None).await?;
        let count = ended.len();
        tracing::info!(user = %user.id, ended = count, "password reset by an operator");
        self.revoke(&user.id, ended, RevocationReason::PasswordChanged)
            .await;
        self.throttle_reset(&ThrottleKey::LogInUser(user.username))
            .await;
        Ok(count)
    }

    /// Operators: disables `username` (`disabled`: it can no longer log in, its
    /// sessions end, its name stays reserved) or enables it again. Returns the sessions
    /// ended.
    pub async fn set_disabled(
        &self,
        username: &str,
        disabled: bool,
    ) -> Result<usize, AccountsError> {
        let user = self.user_named(username).await?;
        self.store
            .update_user(&user.id, UserUpdate::Disabled(disabled))
            .await?;
        if !disabled {
            tracing::info!(user = %user.id, "account enabled by an operator");
            return Ok(0);
        }
        let ended = self.store.delete_user_sessions(&user.id, None).await?;
        let count = ended.len();
        tracing::info!(user = %user.id, ended = count, "account disabled by an operator");
        self.revoke(&user.id, ended, RevocationReason::AccountDisabled)
            .await;
        Ok(count)
    }

    /// Operators: the sessions of `username`, oldest first.
    pub async fn sessions_of(&self, username: &str) -> Result<Vec<SessionRecord>, AccountsError> {
        let user = self.user_named(username).await?;
        let mut sessions = self.store.user_sessions(&user.id).await?;
        sessions.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(sessions)
    }

    /// Re-reads the signing keys (a rotation by another replica).
    pub async fn reload_keys(&self) -> Result<(), AccountsError> {
        self.keys.reload(now()).await
    }
}
