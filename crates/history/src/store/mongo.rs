//! The MongoDB store, for running several history replicas against one database.
//!
//! # Documents and indexes
//!
//! Collection `messages`, one document per message:
//! `{_id: <uuid v7>, room, seq, from, body, ts: <BSON date>, client_id}`, with two unique
//! indexes created at start-up: `{room: 1, seq: 1}` (one message per seq) and
//! `{room: 1, from: 1, client_id: 1}` (idempotency). Both start with `room`, so a cluster
//! sharded on `room` keeps them enforceable.
//!
//! # Gapless seqs across replicas
//!
//! There is no counter document: a counter incremented before the insert leaves a hole
//! whenever the insert then fails or the process dies in between. Instead a seq exists only
//! as a successfully inserted message, and the unique `{room, seq}` index arbitrates:
//!
//! 1. Each process keeps a hint of every recently used room's newest seq (cold rooms read
//!    it with one `find` sorted by seq, descending, limit 1).
//! 2. Insert with `seq = hint + 1`. Success: that seq is ours, and it is the room's next
//!    because the hint is never above the real head (seqs are never deleted).
//! 3. Duplicate key (11000): either this `(room, from, client_id)` is already stored, which
//!    the idempotency lookup finds and returns with `duplicate: true`, or another replica
//!    took the seq: re-read the head and retry, up to [`MAX_ATTEMPTS`] times.
//!
//! Appends to one room are serialised inside the process (striped mutexes that also guard
//! the hints), so only different replicas ever race for a seq. A retried append whose first
//! attempt's reply was lost finds its own message through the idempotency index.
//!
//! Writes use write concern `majority` with journaling, so an acknowledged message
//! survives a failover and is never rolled back; pages are read with read concern
//! `majority` so nobody sees a message that might still be rolled back.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use async_trait::async_trait;
use chat_model::{Message, RoomId, Seq, Timestamp};
use chat_proto::history::StoredMessage;
use futures_util::TryStreamExt;
use mongodb::bson::{DateTime, Document, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{
    Acknowledgment, CollectionOptions, IndexOptions, ReadConcern, WriteConcern,
};
use mongodb::{Client, Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::{Appended, Listed, MessageStore, NewMessage, Page, StoreError};

/// The collection holding every message.
pub const COLLECTION: &str = "messages";

/// How often one append may lose the race for a seq to other replicas before giving up.
pub const MAX_ATTEMPTS: u32 = 100;

/// Mutex stripes serialising appends by room hash: enough that unrelated rooms rarely wait
/// for each other, few enough to allocate up front.
const STRIPES: usize = 256;

/// Rooms whose head one stripe remembers; a full stripe forgets all of its hints (about
/// 128k rooms in total), which costs one head query per room on its next append.
const HINTS_PER_STRIPE: usize = 512;

/// MongoDB's duplicate key error code.
const DUPLICATE_KEY: i32 = 11000;

/// Server error codes meaning "not now" (failover, shutdown, timeouts) rather than a bug.
const TRANSIENT_CODES: &[i32] = &[
    6,     // HostUnreachable
    7,     // HostNotFound
    50,    // MaxTimeMSExpired
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    189,   // PrimarySteppedDown
    262,   // ExceededTimeLimit
    9001,  // SocketException
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11602, // InterruptedDueToReplStateChange
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
];

/// The stored form of a message.
#[derive(Debug, Serialize, Deserialize)]
struct MessageDoc {
    #[serde(rename = "_id")]
    id: String,
    room: String,
    /// Read through serde so that both Int64 and Int32 (small values from some servers)
    /// are accepted.
    seq: i64,
    from: String,
    body: String,
    ts: DateTime,
    client_id: String,
}

/// Only a document's seq, for head queries.
#[derive(Debug, Deserialize)]
struct SeqOnly {
    seq: i64,
}

impl MessageDoc {
    fn into_message(self) -> Result<Message, StoreError> {
        let seq = u64::try_from(self.seq)
            .map_err(|_| StoreError::Internal(format!("negative seq {} stored", self.seq)))?;
        Message::try_from(StoredMessage {
            room: self.room,
            seq,
            id: self.id,
            sender: self.from,
            body: self.body,
            ts_ms: self.ts.timestamp_millis(),
            client_id: self.client_id,
        })
        .map_err(|e| StoreError::Internal(e.to_string()))
    }
}

/// A seq as MongoDB stores it. Seqs beyond `i64::MAX` cannot be stored, so saturating is
/// exact for queries.
fn seq_to_i64(seq: Seq) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// The MongoDB-backed [`MessageStore`].
#[derive(Debug)]
pub struct MongoStore {
    /// For `ping`.
    db: Database,
    /// `messages`, with write concern majority + journal.
    messages: Collection<MessageDoc>,
    /// Per-stripe lock over the stripe's rooms' head hints; holding it is what serialises
    /// appends to one room within this process.
    stripes: Box<[Mutex<HashMap<RoomId, Seq>>]>,
}

impl MongoStore {
    /// Connects to `url`, uses database `db_name`, and creates the indexes if missing.
    ///
    /// Fails with [`StoreError::Unavailable`] when no server answers within the server
    /// selection timeout (2 s unless the URL sets `serverSelectionTimeoutMS`).
    pub async fn connect(url: &str, db_name: &str) -> Result<Self, StoreError> {
        let options = chat_runtime::store::mongo::client_options(url, "chat-history").await?;
        let client = Client::with_options(options).map_err(map_error)?;
        let db = client.database(db_name);
        let durable = WriteConcern::builder()
            .w(Acknowledgment::Majority)
            .journal(true)
            .build();
        let messages = db.collection_with_options(
            COLLECTION,
            CollectionOptions::builder().write_concern(durable).build(),
        );
        let unique = |name: &str| {
            IndexOptions::builder()
                .unique(true)
                .name(name.to_owned())
                .build()
        };
        messages
            .create_indexes([
                IndexModel::builder()
                    .keys(doc! { "room": 1, "seq": 1 })
                    .options(unique("room_seq"))
                    .build(),
                IndexModel::builder()
                    .keys(doc! { "room": 1, "from": 1, "client_id": 1 })
                    .options(unique("room_from_client_id"))
                    .build(),
            ])
            .await
            .map_err(map_error)?;
        let stripes = (0..STRIPES).map(|_| Mutex::new(HashMap::new())).collect();
        Ok(Self {
            db,
            messages,
            stripes,
        })
    }

    fn stripe(&self, room: &RoomId) -> &Mutex<HashMap<RoomId, Seq>> {
        let mut hasher = std::hash::DefaultHasher::new();
        room.hash(&mut hasher);
        // The modulo keeps the index below STRIPES, so the cast cannot truncate.
        &self.stripes[(hasher.finish() % STRIPES as u64) as usize]
    }

    /// The room's newest seq (0 when empty).
    async fn head(&self, room: &RoomId, read_concern: ReadConcern) -> Result<Seq, StoreError> {
        let newest = self
            .messages
            .clone_with_type::<SeqOnly>()
            .find_one(doc! { "room": room.as_str() })
            .sort(doc! { "seq": -1 })
            .projection(doc! { "_id": 0, "seq": 1 })
            .read_concern(read_concern)
            .await
            .map_err(map_error)?;
        Ok(newest.map_or(0, |d| u64::try_from(d.seq).unwrap_or(0)))
    }

    /// The stored message with this idempotency key, if any.
    async fn find_original(&self, msg: &NewMessage) -> Result<Option<Message>, StoreError> {
        let filter = doc! {
            "room": msg.room.as_str(),
            "from": msg.from.as_str(),
            "client_id": msg.client_id.as_str(),
        };
        self.messages
            .find_one(filter)
            .await
            .map_err(map_error)?
            .map(MessageDoc::into_message)
            .transpose()
    }
}

/// Remembers a room's head, forgetting the stripe's other rooms when it is full.
fn remember(hints: &mut HashMap<RoomId, Seq>, room: &RoomId, head: Seq) {
    if hints.len() >= HINTS_PER_STRIPE && !hints.contains_key(room) {
        hints.clear();
    }
    hints.insert(room.clone(), head);
}

fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    match &*e.kind {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        ErrorKind::Command(c) => c.code == DUPLICATE_KEY,
        _ => false,
    }
}

/// Driver errors to store errors: what a retry may fix is `Unavailable`.
fn map_error(e: mongodb::error::Error) -> StoreError {
    use mongodb::error::{RETRYABLE_WRITE_ERROR, TRANSIENT_TRANSACTION_ERROR};
    let transient = match &*e.kind {
        ErrorKind::Io(_)
        | ErrorKind::ServerSelection { .. }
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::DnsResolve { .. }
        | ErrorKind::Shutdown
        | ErrorKind::Write(WriteFailure::WriteConcernError(_)) => true,
        ErrorKind::Command(c) => TRANSIENT_CODES.contains(&c.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => TRANSIENT_CODES.contains(&w.code),
        _ => false,
    } || e.contains_label(RETRYABLE_WRITE_ERROR)
        || e.contains_label(TRANSIENT_TRANSACTION_ERROR);
    if transient {
        StoreError::Unavailable(format!("mongodb: {}", e.kind))
    } else {
        StoreError::Internal(format!("mongodb: {}", e.kind))
    }
}

#[async_trait]
impl MessageStore for MongoStore {
    fn backend(&self) -> &'static str {
        "mongo"
    }

    async fn append(&self, msg: NewMessage) -> Result<Appended, StoreError> {
        let mut hints = self.stripe(&msg.room).lock().await;
        let mut head = match hints.get(&msg.room) {
            Some(&seq) => seq,
            None => self.head(&msg.room, ReadConcern::local()).await?,
        };
        for _ in 0..MAX_ATTEMPTS {
            let seq = head + 1;
            let doc = MessageDoc {
                id: uuid::Uuid::now_v7().to_string(),
                room: msg.room.to_string(),
                seq: i64::try_from(seq)
                    .map_err(|_| StoreError::Internal(format!("room {} is full", msg.room)))?,
                from: msg.from.to_string(),
                body: msg.body.clone(),
                ts: DateTime::from_millis(Timestamp::now().millis()),
                client_id: msg.client_id.to_string(),
            };
            match self.messages.insert_one(&doc).await {
                Ok(_) => {
                    remember(&mut hints, &msg.room, seq);
                    return Ok(Appended {
                        message: doc.into_message()?,
                        duplicate: false,
                    });
                }
                Err(e) if is_duplicate_key(&e) => {
                    if let Some(message) = self.find_original(&msg).await? {
                        return Ok(Appended {
                            message,
                            duplicate: true,
                        });
                    }
                    tracing::debug!(room = %msg.room, seq, "seq taken by another replica");
                    // Another replica stored `seq` first: catch up with the room. No
                    // `max(seq)` here: if `seq` is not visibly taken, trying it again is
                    // safe, skipping it would leave a hole.
                    head = self.head(&msg.room, ReadConcern::local()).await?;
                    remember(&mut hints, &msg.room, head);
                }
                // The hint stays valid even if the insert did happen: it is still not above
                // the real head, and a collision corrects it.
                Err(e) => return Err(map_error(e)),
            }
        }
        Err(StoreError::Unavailable(format!(
            "room {}: lost the race for a seq {MAX_ATTEMPTS} times",
            msg.room
        )))
    }

    async fn list(&self, room: &RoomId, page: Page, limit: u32) -> Result<Listed, StoreError> {
        let r = room.as_str();
        let (filter, newest_first) = match page {
            Page::Latest => (doc! { "room": r }, true),
            Page::Before(before) => (
                doc! { "room": r, "seq": { "$lt": seq_to_i64(before) } },
                true,
            ),
            Page::After(after) => (
                doc! { "room": r, "seq": { "$gt": seq_to_i64(after) } },
                false,
            ),
        };
        let docs: Vec<MessageDoc> = self
            .messages
            .find(filter)
            .sort(doc! { "seq": if newest_first { -1 } else { 1 } })
            // One more than asked tells whether more follow.
            .limit(i64::from(limit) + 1)
            .read_concern(ReadConcern::majority())
            .await
            .map_err(map_error)?
            .try_collect()
            .await
            .map_err(map_error)?;
        let has_more = docs.len() > limit as usize;
        // Every document read is a real seq, so the largest bounds last_seq from below.
        let page_newest = docs.iter().map(|d| d.seq).max().unwrap_or(0);
        let page_newest = u64::try_from(page_newest).unwrap_or(0);
        let mut messages = docs
            .into_iter()
            .take(limit as usize)
            .map(MessageDoc::into_message)
            .collect::<Result<Vec<_>, _>>()?;
        if newest_first {
            messages.reverse();
        }
        let last_seq = match page {
            // A Latest page starts at the head.
            Page::Latest => page_newest,
            // Read after the page, so last_seq is never below a seq the page holds.
            Page::Before(_) | Page::After(_) => self
                .head(room, ReadConcern::majority())
                .await?
                .max(page_newest),
        };
        Ok(Listed {
            messages,
            has_more,
            last_seq,
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.db
            .run_command(doc! { "ping": 1 })
            .await
            .map(drop::<Document>)
            .map_err(map_error)
    }
}
