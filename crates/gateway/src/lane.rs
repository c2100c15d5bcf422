//! A worker's delivery lane: where a room's frames cross from its sequencer to the HTTP
//! worker that owns the recipients' sockets.
//!
//! Sequencers run on the main runtime, sockets on actix's per-worker runtimes. Queuing a
//! frame into every recipient's [`Conn`] from the sequencer's thread would cost, per
//! recipient, a wake-up across threads and a reference count shared by both threads.
//! Instead a sequencer hands each worker one [`Batch`] per frame (the frame, each lane
//! its own copy, and the recipients on that worker), and the lane's task, on the worker,
//! queues it for each of them: one cross-thread hand-over per worker and frame.
//!
//! Order: a lane is first in, first out, and a room answers a join through the joiner's
//! lane ([`Lane::then`]), so whatever the room handed a connection's lane before it took
//! the join is queued for the connection before the join's own frames (catch-up pages,
//! `joined`).
//!
//! Bounded: a lane holds at most [`LANE_QUEUE`] frames. Past that its worker has stopped
//! draining, and the recipients of a frame that does not fit are closed as slow
//! consumers (1013), as a full connection queue would close them; they resume with
//! `since` on reconnect.

use std::cell::OnceCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use bytestring::ByteString;
use chat_model::UserId;

use crate::conn::{Conn, Disconnect, park, unpark};

/// Frames a lane holds before the recipients of the next one are closed as slow
/// consumers (the bound of a room's mailbox).
pub const LANE_QUEUE: usize = 4096;

/// One HTTP worker's delivery lane; see the module doc.
#[derive(Debug, Default)]
pub struct Lane {
    queue: Mutex<LaneQueue>,
}

#[derive(Default)]
struct LaneQueue {
    items: VecDeque<Item>,
    /// Of `items`, how many are frames (the bounded part).
    frames: usize,
    /// The lane's task while it waits for work.
    waker: Option<Waker>,
}

impl std::fmt::Debug for LaneQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaneQueue")
            .field("items", &self.items.len())
            .field("frames", &self.frames)
            .finish()
    }
}

enum Item {
    Frame(Batch),
    /// Runs once everything queued before it has been queued for its connections.
    Then(Box<dyn FnOnce() + Send>),
}

/// A frame for some of a room's members on one worker.
#[derive(Debug)]
pub struct Batch {
    pub frame: ByteString,
    pub to: Arc<[Arc<Conn>]>,
    /// Skip this user's connections (a `typing` or `presence` event's own user).
    pub except: Option<UserId>,
}

thread_local! {
    static WORKER_LANE: OnceCell<Arc<Lane>> = const { OnceCell::new() };
}

impl Lane {
    /// A lane nobody drains yet; run [`Lane::run`] where its connections' sockets are.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The lane of the HTTP worker this is called on; the first call on a worker starts
    /// the lane's task there. Call only on an actix worker (the WebSocket route).
    pub fn for_this_worker() -> Arc<Self> {
        WORKER_LANE.with(|lane| {
            lane.get_or_init(|| {
                let lane = Self::new();
                actix_web::rt::spawn(lane.clone().run());
                lane
            })
            .clone()
        })
    }

    fn queue(&self) -> MutexGuard<'_, LaneQueue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands `batch` to the lane; a full lane closes its recipients as slow consumers.
    pub fn deliver(&self, batch: Batch) {
        let mut q = self.queue();
        if q.frames >= LANE_QUEUE {
            drop(q);
            for conn in batch.to.iter() {
                conn.close(Disconnect::SlowConsumer);
            }
            return;
        }
        q.frames += 1;
        q.items.push_back(Item::Frame(batch));
        unpark(q, |q| &mut q.waker);
    }

    /// Runs `then` on the lane's task once everything handed to the lane before has been
    /// queued for its connections. Never refused for a full lane.
    pub fn then(&self, then: impl FnOnce() + Send + 'static) {
        let mut q = self.queue();
        q.items.push_back(Item::Then(Box::new(then)));
        unpark(q, |q| &mut q.waker);
    }

    /// The lane's task: queues every batch for its connections, in order, for as long as
    /// the worker runs.
    pub async fn run(self: Arc<Self>) {
        let mut taken = VecDeque::new();
        loop {
            poll_fn(|cx| {
                let mut q = self.queue();
                if q.items.is_empty() {
                    park(&mut q.waker, cx.waker());
                    return Poll::Pending;
                }
                std::mem::swap(&mut q.items, &mut taken);
                q.frames = 0;
                Poll::Ready(())
            })
            .await;
            for item in taken.drain(..) {
                match item {
                    Item::Frame(batch) => {
                        for conn in batch.to.iter() {
                            if batch.except.as_ref() != Some(&conn.user) {
                                conn.try_deliver(&batch.frame);
                            }
                        }
                    }
                    Item::Then(then) => then(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn user(name: &str) -> UserId {
        UserId::parse(name).expect("valid id")
    }

    fn batch(text: &'static str, to: &[Arc<Conn>], except: Option<UserId>) -> Batch {
        Batch {
            frame: ByteString::from_static(text),
            to: to.into(),
            except,
        }
    }

    /// Frames reach their connections in the order handed over, the excepted user's
    /// connections skipped, and a `then` runs only after what came before it is queued.
    #[tokio::test]
    async fn batches_are_queued_in_order_and_then_runs_after_them() {
        let lane = Lane::new();
        let alice = Conn::new(1, user("alice"), lane.clone());
        let bob = Conn::new(2, user("bob"), lane.clone());
        let both = [alice.clone(), bob.clone()];
        lane.deliver(batch("1", &both, None));
        lane.deliver(batch("2", &both, Some(user("alice"))));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (a, b) = (alice.clone(), bob.clone());
        lane.then(move || {
            let _ = tx.send((a.queued(), b.queued()));
        });
        lane.deliver(batch("3", &both, None));
        let task = tokio::spawn(lane.clone().run());
        let at_then = tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .expect("then ran")
            .expect("answered");
        assert_eq!(at_then.0, vec!["1"], "alice at the then");
        assert_eq!(at_then.1, vec!["1", "2"], "bob at the then");
        tokio::time::timeout(Duration::from_secs(5), async {
            while alice.queued().len() < 2 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("frame 3 queued");
        assert_eq!(alice.queued(), vec!["1", "3"]);
        assert_eq!(bob.queued(), vec!["1", "2", "3"]);
        task.abort();
    }

    /// A lane that is not drained holds [`LANE_QUEUE`] frames; the recipients of the next
    /// are closed as slow consumers, and a `then` is still accepted.
    #[test]
    fn a_full_lane_closes_the_next_frames_recipients() {
        let lane = Lane::new();
        let alice = Conn::new(1, user("alice"), lane.clone());
        let bob = Conn::new(2, user("bob"), lane.clone());
        for _ in 0..LANE_QUEUE {
            lane.deliver(batch("x", std::slice::from_ref(&alice), None));
        }
        assert_eq!(alice.reason(), None);
        lane.deliver(batch("x", std::slice::from_ref(&bob), None));
        assert_eq!(bob.reason(), Some(Disconnect::SlowConsumer));
        assert_eq!(alice.reason(), None, "only the frame that did not fit");
        lane.then(|| {});
        assert_eq!(lane.queue().items.len(), LANE_QUEUE + 1);
    }
}
