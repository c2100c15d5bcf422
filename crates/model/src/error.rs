//! Error codes of the `error` frame.

use serde::{Deserialize, Serialize};

/// Why a request failed. The wire form is the snake_case name (`bad_request`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed JSON, unknown frame type, missing or invalid field.
    BadRequest,
    /// A frame or body over its size limit.
    TooLarge,
    /// The user may not use this room (someone else's `dm:` room).
    Forbidden,
    /// Too many requests; slow down.
    RateLimited,
    /// The request needs a joined room.
    NotJoined,
    /// A backend is down; the client may retry the same request.
    Unavailable,
    /// A bug or an unexpected failure on the server.
    Internal,
}

impl ErrorCode {
    /// The wire name of the code.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::TooLarge => "too_large",
            Self::Forbidden => "forbidden",
            Self::RateLimited => "rate_limited",
            Self::NotJoined => "not_joined",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
