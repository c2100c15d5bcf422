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
    /// A backend (history, Redis) is down or timed out; the client may retry.
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

impl From<tonic::Status> for GatewayError {
    fn from(status: tonic::Status) -> Self {
        use tonic::Code;
        match status.code() {
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Cancelled => {
                Self::Unavailable(format!("history unavailable: {}", status.message()))
            }
            // A configuration fault (CHAT_INTERNAL_TOKEN differs) that clients can only
            // wait out, e.g. on another gateway; `/readyz` reports it to the operator.
            Code::Unauthenticated => Self::Unavailable(
                "history unavailable: it refused this gateway's internal token".into(),
            ),
            _ => Self::Internal(format!(
                "history failed ({:?}): {}",
                status.code(),
                status.message()
            )),
        }
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
