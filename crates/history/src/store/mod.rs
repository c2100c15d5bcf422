//! The message store: the durable home of every room's messages.
//!
//! One trait, one module per backend: [`embedded`] (an on-disk store inside the process,
//! the single-machine default) and [`mongo`] (MongoDB, for several history replicas).
//! Both pass the same behaviour suite (`tests/store_suite.rs`).

use async_trait::async_trait;
use chat_model::{ClientMsgId, Message, RoomId, Seq, UserId};

pub mod embedded;
pub mod mongo;

/// A message to store; history assigns `seq`, `id` and `ts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// The room to post to.
    pub room: RoomId,
    /// The authenticated sender.
    pub from: UserId,
    /// The sender's idempotency key.
    pub client_id: ClientMsgId,
    /// The text (size limits are enforced before the store).
    pub body: String,
}

/// What [`MessageStore::append`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The stored message: the new one, or the original on a duplicate.
    pub message: Message,
    /// True when `(room, from, client_id)` had been stored before; nothing new was stored.
    pub duplicate: bool,
}

/// Which part of a room to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// The newest messages.
    Latest,
    /// The newest messages with `seq < before` (paging back).
    Before(Seq),
    /// Messages with `seq > after`, ascending from `after + 1` (catch-up).
    After(Seq),
}

/// A page of a room, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Listed {
    /// At most `limit` messages, ascending by seq.
    pub messages: Vec<Message>,
    /// `After`: more messages follow the last one. `Latest`/`Before`: older ones precede
    /// the first one.
    pub has_more: bool,
    /// The room's newest seq when the page was read (0 for an empty room).
    pub last_seq: Seq,
}

pub use chat_runtime::store::StoreError;

/// The contract every backend keeps.
#[async_trait]
pub trait MessageStore: Send + Sync + std::fmt::Debug + 'static {
    /// A short name of the backend (`embedded`, `mongo`), the `backend` label of the
    /// store metrics.
    fn backend(&self) -> &'static str {
        "other"
    }

    /// Stores a message once and assigns the room's next seq.
    ///
    /// - Idempotent on `(room, from, client_id)`: a repeat stores nothing and returns the
    ///   original message with `duplicate: true`.
    /// - Seqs are gapless: 1, 2, 3, ... per room, also with several processes appending to
    ///   the same room through the same backend.
    /// - Durable when it returns `Ok`: a crash of this process right after cannot lose it.
    async fn append(&self, msg: NewMessage) -> Result<Appended, StoreError>;

    /// Reads at most `limit` messages of a room, oldest first (`limit` is already
    /// validated by the caller, 1 to 1000). An unknown room is an empty page with
    /// `last_seq` 0, not an error. `last_seq` is never below a seq the page holds.
    async fn list(&self, room: &RoomId, page: Page, limit: u32) -> Result<Listed, StoreError>;

    /// Whether the backend is reachable (for readiness and gRPC health).
    async fn ping(&self) -> Result<(), StoreError>;
}
