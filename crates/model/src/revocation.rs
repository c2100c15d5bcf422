//! Ended sessions, as accounts announces them to every gateway.
//!
//! When a session ends before its access tokens expire (log-out, log-out everywhere, a
//! password change, an account deleted or disabled, a refresh token reused), the
//! accounts service publishes one [`Revocation`]: on the Redis channel
//! [`REVOCATION_CHANNEL`] when `CHAT_REDIS_URL` is set, in-process in the all-in-one.
//! A gateway closes the WebSockets of those sessions with close code 4003 and refuses
//! their access tokens until they would have expired anyway (docs/protocol.md).

use serde::{Deserialize, Serialize};

/// The Redis pub/sub channel revocations travel on (JSON of [`Revocation`]).
pub const REVOCATION_CHANNEL: &str = "chat:revocations";

/// Why sessions ended; the reason a client is told in its 4003 close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationReason {
    /// The session's own log-out.
    LogOut,
    /// Log-out everywhere.
    LogOutAll,
    /// The password changed (every session but the changer's ends).
    PasswordChanged,
    /// The account was deleted or an operator disabled it.
    AccountDisabled,
    /// A rotated refresh token was presented again: the session is presumed stolen.
    RefreshReused,
}

impl RevocationReason {
    /// A sentence for the client (the 4003 close reason, at most 123 bytes).
    pub fn message(self) -> &'static str {
        match self {
            Self::LogOut => "signed out",
            Self::LogOutAll => "signed out everywhere",
            Self::PasswordChanged => "password changed; sign in again",
            Self::AccountDisabled => "account disabled",
            Self::RefreshReused => "session ended: its refresh token was reused",
        }
    }
}

/// Sessions of one user that ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// The user (`sub` of the sessions' tokens).
    pub user: String,
    /// The ended sessions (`sid` of their tokens); never empty.
    pub sessions: Vec<String>,
    /// Why.
    pub reason: RevocationReason,
}

impl Revocation {
    /// The JSON published on [`REVOCATION_CHANNEL`].
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a revocation always serialises")
    }

    /// Parses what [`Revocation::to_json`] wrote.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_names_reasons_in_snake_case() {
        let r = Revocation {
            user: "u1".into(),
            sessions: vec!["s1".into(), "s2".into()],
            reason: RevocationReason::PasswordChanged,
        };
        let json = r.to_json();
        assert!(json.contains("\"password_changed\""), "{json}");
        assert_eq!(Revocation::from_json(&json).expect("parses"), r);
        assert!(Revocation::from_json("{\"user\":1}").is_err());
        for reason in [
            RevocationReason::LogOut,
            RevocationReason::LogOutAll,
            RevocationReason::PasswordChanged,
            RevocationReason::AccountDisabled,
            RevocationReason::RefreshReused,
        ] {
            assert!(reason.message().len() <= 123);
        }
    }
}
