//! What `chat.accounts.v1` needs beyond the generated code: the reason of a refusal,
//! carried in the status details (see the table in `proto/accounts.proto`; attached by
//! the accounts service, read by the gateway), and `Debug` for the messages that hold a
//! password or a token, which shows every other field and never the secret.

use std::fmt;

use prost::Message as _;
use tonic::{Code, Status};

use crate::accounts::error_detail::Reason;
use crate::accounts::{
    AuthReply, BearerRequest, ChangePasswordRequest, DeleteAccountRequest, ErrorDetail,
    GetUsersRequest, LogInRequest, LogOutRequest, RefreshRequest, SearchUsersRequest,
    SignUpRequest, UpdateDisplayNameRequest,
};

/// `Debug` showing the listed fields; the type's other fields (its secrets) are left out
/// (printed as `..`).
macro_rules! redacted_debug {
    ($($ty:ident { $($field:ident),* }),+ $(,)?) => {
        $(
            impl fmt::Debug for $ty {
                fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.debug_struct(stringify!($ty))
                        $(.field(stringify!($field), &self.$field))*
                        .finish_non_exhaustive()
                }
            }
        )+
    };
}

redacted_debug!(
    SignUpRequest {
        username,
        display_name,
        client_addr
    },
    LogInRequest {
        username,
        client_addr
    },
    RefreshRequest {},
    AuthReply {
        user,
        expires_in,
        refresh_expires_in
    },
    BearerRequest {},
    LogOutRequest {},
    ChangePasswordRequest {},
    UpdateDisplayNameRequest { display_name },
    DeleteAccountRequest {},
    GetUsersRequest { ids },
    SearchUsersRequest { query, limit },
);

impl Reason {
    /// The gRPC code a refusal for this reason carries.
    pub fn code(self) -> Code {
        match self {
            Self::BadRequest | Self::WeakPassword => Code::InvalidArgument,
            Self::UsernameTaken => Code::AlreadyExists,
            Self::InvalidCredentials | Self::InvalidToken => Code::Unauthenticated,
            Self::RateLimited => Code::ResourceExhausted,
            Self::Unavailable => Code::Unavailable,
            Self::Unspecified => Code::Internal,
        }
    }

    /// The public error code of the gateway's HTTP API (`{"error":{"code"}}`).
    pub fn public_code(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::WeakPassword => "weak_password",
            Self::UsernameTaken => "username_taken",
            Self::InvalidCredentials => "invalid_credentials",
            Self::InvalidToken => "invalid_token",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::Unspecified => "internal",
        }
    }
}

impl ErrorDetail {
    /// A refusal for `reason` (`retry_after_secs` only for RATE_LIMITED and UNAVAILABLE).
    pub fn new(reason: Reason, retry_after_secs: u32) -> Self {
        Self {
            reason: reason as i32,
            retry_after_secs,
        }
    }

    /// The status that carries this detail, with `message` for people.
    pub fn into_status(self, message: impl Into<String>) -> Status {
        let code = self.reason().code();
        Status::with_details(code, message, self.encode_to_vec().into())
    }

    /// The detail of a status from the accounts service; `None` when it carries none
    /// (the call failed before reaching the accounts logic) or an undecodable one.
    pub fn from_status(status: &Status) -> Option<Self> {
        if status.details().is_empty() {
            return None;
        }
        Self::decode(status.details()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_round_trip_with_their_code() {
        let status = ErrorDetail::new(Reason::RateLimited, 7).into_status("slow down");
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.message(), "slow down");
        let detail = ErrorDetail::from_status(&status).expect("detail");
        assert_eq!(detail.reason(), Reason::RateLimited);
        assert_eq!(detail.retry_after_secs, 7);
        assert_eq!(detail.reason().public_code(), "rate_limited");
        assert_eq!(
            ErrorDetail::from_status(&Status::unauthenticated("token")),
            None
        );
    }

    #[test]
    fn secrets_are_not_in_debug() {
        let login = LogInRequest {
            username: "alice".into(),
            password: "hunter2-secret".into(),
            client_addr: "192.0.2.1".into(),
        };
        let shown = format!("{login:?}");
        assert!(
            shown.contains("alice") && shown.contains("192.0.2.1"),
            "{shown}"
        );
        let reply = AuthReply {
            user: None,
            access_token: "eyJ-access-secret".into(),
            expires_in: 600,
            refresh_token: "s_1.refresh-secret".into(),
            refresh_expires_in: 60,
        };
        let change = ChangePasswordRequest {
            access_token: "eyJ-access-secret".into(),
            current_password: "hunter2-secret".into(),
            new_password: "hunter2-secret".into(),
        };
        for shown in [shown, format!("{reply:?}"), format!("{change:?}")] {
            assert!(!shown.contains("secret"), "{shown}");
        }
    }
}
