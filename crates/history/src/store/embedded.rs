//! The embedded store: one [redb] file inside the history process, the single-machine
//! default.
//!
//! # Why redb, and how writes work
//!
//! redb is a pure-Rust, ACID, copy-on-write B-tree store: no C toolchain, no second process,
//! and a commit with [`Durability::Immediate`] has been fsynced when it returns, which is
//! what "acked = durable" needs. Its cost is one fsync per write transaction, so writes are
//! **group-committed**: a single writer thread owns every write transaction, drains all
//! queued appends (up to [`MAX_BATCH`]) into one transaction, commits once, then answers
//! each of them. Under load one fsync covers many messages; an idle store still commits a
//! lone append immediately (no timer, no added latency).
//!
//! The single writer also makes seqs trivially gapless: it reads the room's head, adds one
//! and writes both in the same transaction, and a duplicate is detected before a seq is
//! assigned, so it never consumes one. A duplicate inside one batch sees the earlier job's
//! write because both run in the same transaction.
//!
//! Reads run on read transactions (MVCC snapshots that never block the writer) on tokio's
//! blocking pool.
//!
//! # Tables
//!
//! - `messages`: `(room, seq)` -> the message encoded as protobuf `StoredMessage` (the
//!   gRPC wire type, so the encoding is versioned by the proto file).
//! - `idempotency`: `(room, sender, client_id)` -> seq.
//! - `heads`: room -> its newest seq.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use async_trait::async_trait;
use chat_model::{Message, RoomId, Seq, Timestamp};
use chat_proto::history::StoredMessage;
use prost::Message as _;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use super::{Appended, Listed, MessageStore, NewMessage, Page, StoreError};

/// The file inside the data directory.
pub const FILE_NAME: &str = "history.redb";

/// Most appends committed by one write transaction (one fsync).
pub const MAX_BATCH: usize = 1024;

/// Appends that may wait for the writer; further callers wait for room in the queue, which
/// pushes back on the gRPC handlers instead of growing memory.
const QUEUE_CAPACITY: usize = 4 * MAX_BATCH;

const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
const IDEMPOTENCY: TableDefinition<(&str, &str, &str), u64> = TableDefinition::new("idempotency");
const HEADS: TableDefinition<&str, u64> = TableDefinition::new("heads");

/// One append waiting for the writer thread.
struct AppendJob {
    msg: NewMessage,
    /// Where the writer sends the outcome once the batch is committed.
    reply: oneshot::Sender<Result<Appended, StoreError>>,
}

/// The redb-backed [`MessageStore`]. Dropping it stops the writer thread after it has
/// finished the appends already queued.
pub struct EmbeddedStore {
    /// Shared with the writer thread and with reads on the blocking pool.
    db: Arc<Database>,
    /// The writer's queue. An `Option` only so that `Drop` can close it before joining.
    jobs: Option<mpsc::Sender<AppendJob>>,
    /// Joined on drop, so the file lock is released when the store is gone (a reopen of the
    /// same directory right after succeeds).
    writer: Option<JoinHandle<()>>,
    /// The database file, for messages.
    path: PathBuf,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// An I/O failure (disk full, read-only file system) is `Unavailable`: nothing was
/// stored and a retry may succeed once the operator fixed it. Anything else is a bug or
/// corruption.
fn db_error(e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::Io(e) => StoreError::Unavailable(format!("embedded store I/O: {e}")),
        // redb refuses work after an I/O failure until the database is reopened.
        redb::Error::PreviousIo => StoreError::Unavailable(
            "embedded store failed an earlier write; restart history".into(),
        ),
        e => StoreError::Internal(format!("embedded store: {e}")),
    }
}

impl EmbeddedStore {
    /// Opens (or creates) `<dir>/history.redb`, creating `dir` if needed, and starts the
    /// writer thread. Blocks on file I/O: call it at start-up or on a blocking thread.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let (db, path) =
            chat_runtime::store::embedded::open(dir.as_ref(), FILE_NAME, db_error, |txn| {
                txn.open_table(MESSAGES)?;
                txn.open_table(IDEMPOTENCY)?;
                txn.open_table(HEADS)?;
                Ok(())
            })?;

        let db = Arc::new(db);
        let (jobs, queue) = mpsc::channel(QUEUE_CAPACITY);
        let writer = std::thread::Builder::new()
            .name("history-writer".into())
            .spawn({
                let db = Arc::clone(&db);
                move || run_writer(&db, queue)
            })
            .map_err(|e| StoreError::Internal(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            db,
            jobs: Some(jobs),
            writer: Some(writer),
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // Closing the queue ends the writer's loop once it has drained what is queued.
        drop(self.jobs.take());
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!("history writer thread panicked");
        }
    }
}

/// The writer thread: one write transaction per batch of queued appends.
fn run_writer(db: &Database, mut queue: mpsc::Receiver<AppendJob>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = queue.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        match write_batch(db, &batch) {
            Ok(outcomes) => {
                for (job, outcome) in batch.drain(..).zip(outcomes) {
                    // The caller may have given up (request cancelled); the message is
                    // stored regardless, and a resend will find it as a duplicate.
                    let _ = job.reply.send(outcome);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, appends = batch.len(), "embedded store commit failed");
                for job in batch.drain(..) {
                    let again = match &e {
                        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
                        StoreError::Internal(m) => StoreError::Internal(m.clone()),
                    };
                    let _ = job.reply.send(Err(again));
                }
            }
        }
    }
}

/// Applies a batch in one transaction. The outer error aborts the whole batch (nothing was
/// committed); an inner error concerns one job only.
fn write_batch(
    db: &Database,
    batch: &[AppendJob],
) -> Result<Vec<Result<Appended, StoreError>>, StoreError> {
    let mut txn = db.begin_write().map_err(db_error)?;
    // The default, stated because acked = durable depends on it.
    txn.set_durability(Durability::Immediate)
        .map_err(db_error)?;
    let mut outcomes = Vec::with_capacity(batch.len());
    {
        let mut messages = txn.open_table(MESSAGES).map_err(db_error)?;
        let mut idempotency = txn.open_table(IDEMPOTENCY).map_err(db_error)?;
        let mut heads = txn.open_table(HEADS).map_err(db_error)?;
        for AppendJob { msg, .. } in batch {
            let room = msg.room.as_str();
            let key = (room, msg.from.as_str(), msg.client_id.as_str());
            let seen = idempotency.get(key).map_err(db_error)?.map(|g| g.value());
            if let Some(seq) = seen {
                let original = messages
                    .get((room, seq))
                    .map_err(db_error)?
                    .ok_or_else(|| {
                        StoreError::Internal(format!(
                            "idempotency entry of {room} points to missing seq {seq}"
                        ))
                    })
                    .and_then(|bytes| decode(bytes.value()));
                outcomes.push(original.map(|message| Appended {
                    message,
                    duplicate: true,
                }));
                continue;
            }
            let seq = heads.get(room).map_err(db_error)?.map_or(0, |g| g.value()) + 1;
            let message = Message {
                room: msg.room.clone(),
                seq,
                id: uuid::Uuid::now_v7().to_string(),
                from: msg.from.clone(),
                body: msg.body.clone(),
                ts: Timestamp::now(),
                client_id: msg.client_id.clone(),
            };
            let encoded = StoredMessage::from(&message).encode_to_vec();
            messages
                .insert((room, seq), encoded.as_slice())
                .map_err(db_error)?;
            idempotency.insert(key, seq).map_err(db_error)?;
            heads.insert(room, seq).map_err(db_error)?;
            outcomes.push(Ok(Appended {
                message,
                duplicate: false,
            }));
        }
    }
    txn.commit().map_err(db_error)?;
    Ok(outcomes)
}

fn decode(bytes: &[u8]) -> Result<Message, StoreError> {
    let stored = StoredMessage::decode(bytes)
        .map_err(|e| StoreError::Internal(format!("undecodable stored message: {e}")))?;
    Message::try_from(stored).map_err(|e| StoreError::Internal(e.to_string()))
}

/// Reads one page from a consistent snapshot.
fn read_page(db: &Database, room: &str, page: Page, limit: u32) -> Result<Listed, StoreError> {
    let txn = db.begin_read().map_err(db_error)?;
    let last_seq = txn
        .open_table(HEADS)
        .map_err(db_error)?
        .get(room)
        .map_err(db_error)?
        .map_or(0, |g| g.value());
    let messages = txn.open_table(MESSAGES).map_err(db_error)?;
    // One more than asked tells whether more follow.
    let want = usize::try_from(limit)
        .unwrap_or(usize::MAX)
        .saturating_add(1);
    let (range, newest_first) = match page {
        Page::After(after) if after < Seq::MAX => (
            Some(messages.range((room, after + 1)..=(room, Seq::MAX))),
            false,
        ),
        Page::Before(before) if before > 1 => {
            (Some(messages.range((room, 1)..(room, before))), true)
        }
        Page::Latest => (Some(messages.range((room, 1)..=(room, Seq::MAX))), true),
        // Nothing can follow Seq::MAX or precede seq 1.
        Page::After(_) | Page::Before(_) => (None, false),
    };
    let mut rows = Vec::new();
    if let Some(range) = range {
        let range = range.map_err(db_error)?;
        let entries: Box<dyn Iterator<Item = _>> = if newest_first {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };
        for entry in entries.take(want) {
            let (_, value) = entry.map_err(db_error)?;
            rows.push(decode(value.value())?);
        }
    }
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    if newest_first {
        rows.reverse();
    }
    Ok(Listed {
        messages: rows,
        has_more,
        last_seq,
    })
}

#[async_trait]
impl MessageStore for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn append(&self, msg: NewMessage) -> Result<Appended, StoreError> {
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| StoreError::Internal("embedded store is closed".into()))?;
        let (reply, outcome) = oneshot::channel();
        jobs.send(AppendJob { msg, reply })
            .await
            .map_err(|_| StoreError::Internal("embedded store writer stopped".into()))?;
        outcome
            .await
            .map_err(|_| StoreError::Internal("embedded store writer stopped".into()))?
    }

    async fn list(&self, room: &RoomId, page: Page, limit: u32) -> Result<Listed, StoreError> {
        let db = Arc::clone(&self.db);
        let room = room.clone();
        tokio::task::spawn_blocking(move || read_page(&db, room.as_str(), page, limit))
            .await
            .map_err(|e| StoreError::Internal(format!("read task failed: {e}")))?
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if self.jobs.as_ref().is_none_or(mpsc::Sender::is_closed) {
            return Err(StoreError::Internal("embedded store writer stopped".into()));
        }
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || db.begin_read().map(drop).map_err(db_error))
            .await
            .map_err(|e| StoreError::Internal(format!("read task failed: {e}")))?
    }
}
