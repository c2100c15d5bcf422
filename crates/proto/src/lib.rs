//! gRPC types and clients/servers generated from `proto/`, and their conversions to the
//! [`chat_model`] types.
//!
//! # Layout
//!
//! - [`history`]: `chat.history.v1`, the history service.
//! - [`presence`]: `chat.presence.v1`, the presence service.
//! - [`accounts`]: `chat.accounts.v1`, the accounts service, with [`accounts::ErrorDetail`]
//!   helpers to attach a refusal's reason to a status and to read it back, and a
//!   redacted `Debug` for every message holding a password or token.
//! - [`verify`]: verifying access tokens with the keys accounts publishes (the gateway on
//!   every connect, accounts on its Bearer calls).
//! - [`auth`]: the shared-secret token of the internal calls (`CHAT_INTERNAL_TOKEN`),
//!   checked by the services and attached by their clients.
//! - [`MessageConversionError`] and the `TryFrom` impls: the one place where wire data from
//!   another service is validated back into model types.

pub mod auth;
pub mod verify;

use chat_model::{ClientMsgId, Message, RoomId, Timestamp, UserId};

/// `chat.history.v1`.
#[allow(missing_debug_implementations, clippy::all)]
pub mod history {
    tonic::include_proto!("chat.history.v1");
}

/// `chat.presence.v1`.
#[allow(missing_debug_implementations, clippy::all)]
pub mod presence {
    tonic::include_proto!("chat.presence.v1");
}

/// `chat.accounts.v1`.
#[allow(missing_debug_implementations, clippy::all)]
pub mod accounts {
    tonic::include_proto!("chat.accounts.v1");
}

mod accounts_ext;

/// A `StoredMessage` from another service that does not hold valid model values.
#[derive(Debug, thiserror::Error)]
#[error("invalid stored message field `{field}`: {reason}")]
pub struct MessageConversionError {
    pub field: &'static str,
    pub reason: String,
}

fn field<T, E: std::fmt::Display>(
    field: &'static str,
    r: Result<T, E>,
) -> Result<T, MessageConversionError> {
    r.map_err(|e| MessageConversionError {
        field,
        reason: e.to_string(),
    })
}

impl TryFrom<history::StoredMessage> for Message {
    type Error = MessageConversionError;

    fn try_from(m: history::StoredMessage) -> Result<Self, Self::Error> {
        Ok(Message {
            room: field("room", RoomId::parse(&m.room))?,
            seq: m.seq,
            id: m.id,
            from: field("sender", UserId::parse(&m.sender))?,
            body: m.body,
            ts: Timestamp(m.ts_ms),
            client_id: field("client_id", ClientMsgId::parse(&m.client_id))?,
        })
    }
}

impl From<&Message> for history::StoredMessage {
    fn from(m: &Message) -> Self {
        Self {
            room: m.room.to_string(),
            seq: m.seq,
            id: m.id.clone(),
            sender: m.from.to_string(),
            body: m.body.clone(),
            ts_ms: m.ts.millis(),
            client_id: m.client_id.to_string(),
        }
    }
}
