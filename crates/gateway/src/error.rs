//! The gateway's error type, converted to the wire (protocol error code, HTTP status) in
//! one place.

use actix_web::http::StatusCode;
use chat_model::ErrorCode;

/// Why a client request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotJoined(String),
    /// A backend (history, presence, Redis) is down or timed out; the client may retry.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl GatewayError {
    /// The protocol error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::BadRequest(_) => ErrorCode::BadRequest,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::NotJoined(_) => ErrorCode::NotJoined,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The HTTP status for the same failure on the HTTP endpoints.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotJoined(_) => StatusCode::CONFLICT,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The refusal for a room the user may not use.
    pub fn forbidden_room(room: &chat_model::RoomId) -> Self {
        Self::Forbidden(format!(
            "room {room} is a direct conversation of other users"
        ))
    }
}

/// A service the gateway calls over gRPC, named in the errors its failures become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    History,
    Presence,
    Accounts,
}

impl Backend {
    /// The service's name as messages say it.
    pub fn name(self) -> &'static str {
        match self {
            Self::History => "history",
            Self::Presence => "presence",
            Self::Accounts => "accounts",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl GatewayError {
    /// A failed call to `backend`, as its status tells: `unavailable` when the client
    /// may retry (the backend is down, slow, overloaded or refuses this gateway's
    /// internal token), `internal` otherwise. The message names the backend.
    pub fn from_status(backend: Backend, status: &tonic::Status) -> Self {
        use tonic::Code;
        match status.code() {
            // `Unknown` is how tonic reports a connection that broke under a call (the
            // backend was killed mid-call: "transport error"): the outcome is unknown, and
            // a send is idempotent on its client_id, so the client should resend.
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Cancelled
            | Code::Unknown => Self::unavailable_backend(backend, status),
            // A configuration fault (CHAT_INTERNAL_TOKEN differs) that clients can only
            // wait out, e.g. on another gateway; `/readyz` reports it to the operator.
            Code::Unauthenticated => Self::Unavailable(format!(
                "{backend} unavailable: it refused this gateway's internal token"
            )),
            _ => Self::Internal(format!(
                "{backend} failed ({:?}): {}",
                status.code(),
                status.message()
            )),
        }
    }

    /// A failed call to `backend` that the client can only wait out, whatever its status:
    /// for presence, which is best effort. The message names the backend and carries the
    /// status's message.
    pub fn unavailable_backend(backend: Backend, status: &tonic::Status) -> Self {
        Self::Unavailable(format!("{backend} unavailable: {}", status.message()))
    }
}

/// JSON error body of the HTTP endpoints: `{"error":{"code":"...","message":"..."}}`.
pub fn json_error(code: ErrorCode, message: &str) -> serde_json::Value {
    serde_json::json!({ "error": { "code": code, "message": message } })
}

impl actix_web::ResponseError for GatewayError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> actix_web::HttpResponse {
        actix_web::HttpResponse::build(self.status())
            .json(json_error(self.code(), &self.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::StatusCode;
    use chat_model::ErrorCode;
    use tonic::{Code, Status};

    use super::{Backend, GatewayError};

    #[test]
    fn a_failed_call_names_its_backend() {
        for backend in [Backend::History, Backend::Presence, Backend::Accounts] {
            let name = backend.name();
            for code in [
                Code::Unavailable,
                Code::DeadlineExceeded,
                Code::ResourceExhausted,
                Code::Aborted,
                Code::Cancelled,
                Code::Unknown,
            ] {
                let e = GatewayError::from_status(backend, &Status::new(code, "down"));
                assert_eq!(e.code(), ErrorCode::Unavailable, "{code:?}");
                assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
                assert_eq!(e.to_string(), format!("{name} unavailable: down"));
            }
            let e = GatewayError::from_status(
                backend,
                &Status::unauthenticated("wrong internal token"),
            );
            assert_eq!(e.code(), ErrorCode::Unavailable);
            assert_eq!(
                e.to_string(),
                format!("{name} unavailable: it refused this gateway's internal token")
            );
            let e = GatewayError::from_status(backend, &Status::invalid_argument("bad room"));
            assert_eq!(e.code(), ErrorCode::Internal);
            assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(
                e.to_string(),
                format!("{name} failed (InvalidArgument): bad room")
            );
        }
    }

    #[test]
    fn a_best_effort_backend_is_only_ever_unavailable() {
        for status in [
            Status::unavailable("down"),
            Status::unauthenticated("wrong internal token"),
            Status::internal("broken"),
        ] {
            let e = GatewayError::unavailable_backend(Backend::Presence, &status);
            assert_eq!(e.code(), ErrorCode::Unavailable);
            assert_eq!(
                e.to_string(),
                format!("presence unavailable: {}", status.message())
            );
        }
    }
}
