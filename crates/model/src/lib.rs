//! Shared domain model of the chat backend.
//!
//! Every service depends on this crate; it does no I/O, so it is cheap to test and to
//! fuzz.
//!
//! # Layout
//!
//! - [`ids`]: validated identifiers (`UserId`, `RoomId`, `ClientMsgId`) and the `dm:` rules.
//! - [`message`]: a stored room [`Message`] and its server-assigned [`Timestamp`].
//! - [`frame`]: the client protocol v1 (see `docs/protocol.md`): parsing and validating
//!   client frames, serialising server frames.
//! - [`error`]: the protocol's error codes.
//! - [`limits`]: size limits shared by the gateway and its clients.
//! - [`revocation`]: ended sessions, as accounts announces them to the gateways.

pub mod error;
pub mod frame;
pub mod ids;
pub mod limits;
pub mod message;
pub mod revocation;

pub use error::ErrorCode;
pub use ids::{ClientMsgId, IdError, RoomId, Seq, UserId};
pub use message::{Message, Timestamp};

/// The protocol version announced in `hello`.
pub const PROTOCOL_VERSION: u32 = 1;
