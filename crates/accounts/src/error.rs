//! What the accounts logic refuses with. Each variant is one reason of
//! `proto/accounts.proto`; `service.rs` turns them into gRPC statuses in one place.

use std::time::Duration;

use crate::store::StoreError;

/// A refusal or failure of an accounts operation. Messages are for people and never
/// hold a password, token or hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountsError {
    /// A malformed or out-of-range field.
    #[error("{0}")]
    BadRequest(String),
    /// The new password is too short or too easy to guess; the message says how to fix it.
    #[error("{0}")]
    WeakPassword(String),
    /// Sign-up with a username someone has (or had: deleted accounts keep theirs).
    #[error("that username is taken")]
    UsernameTaken,
    /// Unknown user, disabled user or wrong password: deliberately one answer.
    #[error("wrong username or password")]
    InvalidCredentials,
    /// An access or refresh token that is malformed, expired, revoked or reused.
    #[error("the token is invalid or has expired; log in again")]
    InvalidToken,
    /// Too many attempts; try again after the duration.
    #[error("too many attempts; try again in {} s", whole_secs(*.0))]
    RateLimited(Duration),
    /// Busy or the store is unreachable; try again after the duration.
    #[error("{message}")]
    Unavailable {
        /// What is unavailable.
        message: String,
        /// When to try again.
        retry_after: Duration,
    },
    /// A bug or corrupt data.
    #[error("internal error: {0}")]
    Internal(String),
}

/// A wait in whole seconds, at least 1 (what `Retry-After` says).
pub fn whole_secs(wait: Duration) -> u32 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    u32::try_from(secs.max(1)).unwrap_or(u32::MAX)
}

/// How long a client should wait after the store was unreachable.
const STORE_RETRY_AFTER: Duration = Duration::from_secs(2);

impl From<StoreError> for AccountsError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(message) => Self::Unavailable {
                message,
                retry_after: STORE_RETRY_AFTER,
            },
            StoreError::Internal(message) => Self::Internal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(whole_secs(Duration::ZERO), 1);
        assert_eq!(whole_secs(Duration::from_millis(1)), 1);
        assert_eq!(whole_secs(Duration::from_millis(1001)), 2);
        assert_eq!(whole_secs(Duration::from_secs(60)), 60);
        assert_eq!(
            AccountsError::RateLimited(Duration::from_millis(2500)).to_string(),
            "too many attempts; try again in 3 s"
        );
    }
}
