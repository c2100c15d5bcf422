//! One WebSocket connection as the rest of the gateway sees it: an identity, a bounded
//! outbound queue, and a way to close it with a reason.
//!
//! The queue is drained by the connection's response body, [`ConnBody`]: actix-http's
//! dispatcher polls it whenever it can write, so a delivery is a push under the queue's
//! lock and, when the socket's worker is idle, one wake-up of it. No task of our own and
//! no second channel sit between a room and the socket: rooms deliver through the
//! socket's worker's [`Lane`], and the heartbeat's pings and the answers to the client's
//! pings go through the same queue. A client that does not read stops the dispatcher
//! polling, the queue fills, and the next delivery closes it as a slow consumer (1013).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};

use actix_http::ws::{CloseReason, OpCode, Parser};
use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::web::{Bytes, BytesMut};
use actix_ws::CloseCode;
use bytestring::ByteString;
use chat_metrics::WsMetrics;
use chat_model::UserId;
use chat_model::revocation::RevocationReason;
use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::lane::Lane;

/// Gateway-local connection number.
pub type ConnId = u64;

/// Frames queued for one connection before it counts as a slow consumer and is closed
/// with 1013. Sized for bursts (a catch-up page is 200) while bounding memory at
/// roughly this many shared frames per connection.
pub const OUTBOUND_QUEUE: usize = 1024;
/// Encoded bytes [`ConnBody`] hands the dispatcher at most per poll (actix-http's own
/// write buffer limit), so a long queue is written in slices, not copied at once.
const BODY_CHUNK: usize = 32 * 1024;

/// Why the server closes a connection; each maps to a WebSocket close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    /// The client closed, or the connection broke.
    Normal,
    /// The gateway is shutting down: reconnect elsewhere (1001).
    GoingAway,
    /// The outbound queue overflowed: the client does not read fast enough (1013).
    SlowConsumer,
    /// The client broke a rule repeatedly (1008).
    Policy,
    /// The client kept sending past its rate limit after being refused (1008).
    Flooding,
    /// A frame above the hard limit (1009).
    TooBig,
    /// No traffic, not even pongs, within the idle timeout (1000 with a reason).
    Idle,
    /// The access token expired and no `auth` frame renewed it within the grace (4001).
    TokenExpired,
    /// Accounts ended the connection's session (4003, with the reason's message).
    Revoked(RevocationReason),
}

/// Close code of [`Disconnect::TokenExpired`]: sign in again or refresh, then reconnect.
pub const CLOSE_TOKEN_EXPIRED: u16 = 4001;
/// Close code of [`Disconnect::Revoked`]: the session ended; sign in again.
pub const CLOSE_REVOKED: u16 = 4003;

impl Disconnect {
    /// The WebSocket close code sent to the client.
    pub fn close_code(self) -> CloseCode {
        match self {
            Self::Normal | Self::Idle => CloseCode::Normal,
            Self::GoingAway => CloseCode::Away,
            Self::SlowConsumer => CloseCode::Again,
            Self::Policy | Self::Flooding => CloseCode::Policy,
            Self::TooBig => CloseCode::Size,
            Self::TokenExpired => CloseCode::Other(CLOSE_TOKEN_EXPIRED),
            Self::Revoked(_) => CloseCode::Other(CLOSE_REVOKED),
        }
    }

    /// The close reason text.
    pub fn description(self) -> &'static str {
        match self {
            Self::Normal => "bye",
            Self::GoingAway => "server shutting down, reconnect and resume with since",
            Self::SlowConsumer => "outbound queue full: client too slow",
            Self::Policy => "policy violation",
            Self::Flooding => "rate limit exceeded repeatedly",
            Self::TooBig => "frame too large",
            Self::Idle => "idle timeout",
            Self::TokenExpired => "token expired",
            Self::Revoked(reason) => reason.message(),
        }
    }
}

/// Keeps `waker` in `slot` for whoever gives its task work ([`unpark`]); no clone when
/// it is the waker already there.
pub(crate) fn park(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(parked) if parked.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}

/// Releases `guard` and then wakes the task parked in its `slot` ([`park`]), if any, so
/// that the task never wakes into a lock still held.
pub(crate) fn unpark<T>(
    mut guard: MutexGuard<'_, T>,
    slot: impl FnOnce(&mut T) -> &mut Option<Waker>,
) {
    let waker = slot(&mut guard).take();
    drop(guard);
    if let Some(waker) = waker {
        waker.wake();
    }
}

/// A connection's shared half: rooms deliver into it, its [`ConnBody`] drains it.
#[derive(Debug)]
pub struct Conn {
    pub id: ConnId,
    pub user: UserId,
    /// The delivery lane of the HTTP worker that owns the socket.
    lane: Arc<Lane>,
    /// Frames to write, in order. Bounded: see [`OUTBOUND_QUEUE`].
    outbound: Mutex<Outbound>,
    /// Told when a full queue has room again (senders of replies wait for it).
    room: Notify,
    /// Told when the body has finished: close frame encoded, or socket gone.
    finished: Notify,
    /// Cancelled when the connection must close; the body then writes the close frame.
    closing: CancellationToken,
    /// The first close reason wins.
    reason: OnceLock<Disconnect>,
}

#[derive(Debug, Default)]
struct Outbound {
    frames: VecDeque<ByteString>,
    /// A ping to send (the heartbeat's), ahead of the frames.
    ping: bool,
    /// The payload of the client's latest unanswered ping, answered ahead of the frames
    /// (only the latest needs an answer, RFC 6455 5.5.3).
    pong: Option<Bytes>,
    /// The body's waker while it waits for frames (or the close).
    writer: Option<Waker>,
    /// The body is done (close frame encoded, or dropped): nothing more is queued.
    gone: bool,
}

/// The connection is closing; nothing more can be sent.
#[derive(Debug, Clone, Copy)]
pub struct Closed;

impl Conn {
    /// A new connection with an empty outbound queue, whose socket is on `lane`'s
    /// worker.
    pub fn new(id: ConnId, user: UserId, lane: Arc<Lane>) -> Arc<Self> {
        Arc::new(Self {
            id,
            user,
            lane,
            outbound: Mutex::new(Outbound::default()),
            room: Notify::new(),
            finished: Notify::new(),
            closing: CancellationToken::new(),
            reason: OnceLock::new(),
        })
    }

    fn outbound(&self) -> MutexGuard<'_, Outbound> {
        self.outbound.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The delivery lane of the socket's worker.
    pub fn lane(&self) -> &Arc<Lane> {
        &self.lane
    }

    /// Asks the body to send a ping (the heartbeat).
    pub fn ping(&self) {
        self.control(|q| q.ping = true);
    }

    /// Asks the body to answer the client's ping carrying `payload`.
    pub fn pong(&self, payload: Bytes) {
        self.control(move |q| q.pong = Some(payload));
    }

    /// Queues a control frame ahead of the text frames, unless the body is done.
    fn control(&self, set: impl FnOnce(&mut Outbound)) {
        let mut q = self.outbound();
        if q.gone {
            return;
        }
        set(&mut q);
        unpark(q, |q| &mut q.writer);
    }

    /// Queues `frame` if there is room: `Ok(true)` queued, `Ok(false)` full.
    fn push(&self, frame: &ByteString) -> Result<bool, Closed> {
        let mut q = self.outbound();
        if q.gone || self.closing.is_cancelled() {
            return Err(Closed);
        }
        if q.frames.len() >= OUTBOUND_QUEUE {
            return Ok(false);
        }
        q.frames.push_back(frame.clone());
        unpark(q, |q| &mut q.writer);
        Ok(true)
    }

    /// Queues a frame without waiting (room deliveries). A full queue closes the
    /// connection as a slow consumer; returns false then.
    pub fn try_deliver(&self, frame: &ByteString) -> bool {
        match self.push(frame) {
            Ok(true) => true,
            Ok(false) => {
                self.close(Disconnect::SlowConsumer);
                false
            }
            Err(Closed) => false,
        }
    }

    /// Queues a frame, waiting for room (direct replies, catch-up pages).
    pub async fn send(&self, frame: ByteString) -> Result<(), Closed> {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if self.push(&frame)? {
                return Ok(());
            }
            tokio::select! {
                biased;
                _ = self.closing.cancelled() => return Err(Closed),
                _ = room => {}
            }
        }
    }

    /// Asks the body to close the connection: after what is queued, or at once for a
    /// slow consumer (its queue is dropped).
    pub fn close(&self, reason: Disconnect) {
        let _ = self.reason.set(reason);
        self.closing.cancel();
        let mut q = self.outbound();
        if self.reason() == Some(Disconnect::SlowConsumer) {
            q.frames = VecDeque::new();
        }
        unpark(q, |q| &mut q.writer);
    }

    /// Completes when the connection must close.
    pub fn closing(&self) -> WaitForCancellationFuture<'_> {
        self.closing.cancelled()
    }

    /// Why it is closing, once it is.
    pub fn reason(&self) -> Option<Disconnect> {
        self.reason.get().copied()
    }

    /// Completes once the body has written the close frame or the socket is gone; then
    /// drops whatever is still queued. Waits at most `timeout`: a client that does not
    /// read keeps the body from being polled, and must not keep its queue alive.
    pub async fn finish(&self, timeout: std::time::Duration) {
        let _ = tokio::time::timeout(timeout, self.finished.notified()).await;
        let mut q = self.outbound();
        q.gone = true;
        q.frames = VecDeque::new();
    }
}

/// The WebSocket response body of a connection: pending control frames (ping, pong)
/// first, then the connection's queued text frames, then the close frame.
#[derive(Debug)]
pub struct ConnBody {
    conn: Arc<Conn>,
    /// actix-ws's own response body, never polled: dropping it (with this body, when
    /// the socket is gone) is what tells actix-ws's message stream that the connection
    /// closed.
    _closed_signal: BoxBody,
    buf: BytesMut,
    metrics: WsMetrics,
    done: bool,
}

impl ConnBody {
    /// The body writing `conn`'s queue, holding actix-ws's own body (`closed_signal`)
    /// until the socket is gone.
    pub fn new(conn: Arc<Conn>, closed_signal: BoxBody, metrics: WsMetrics) -> Self {
        Self {
            conn,
            _closed_signal: closed_signal,
            buf: BytesMut::new(),
            metrics,
            done: false,
        }
    }

    /// Encodes queued frames (up to [`BODY_CHUNK`]), or the close frame once closing and
    /// drained; registers for a wake-up when there is nothing to write.
    fn fill(&mut self, cx: &mut Context<'_>) {
        let conn = &*self.conn;
        let mut q = conn.outbound();
        let was_full = q.frames.len() >= OUTBOUND_QUEUE;
        if let Some(payload) = q.pong.take() {
            Parser::write_message(&mut self.buf, payload, OpCode::Pong, true, false);
        }
        if std::mem::take(&mut q.ping) {
            Parser::write_message(&mut self.buf, &b""[..], OpCode::Ping, true, false);
        }
        let mut written = 0;
        while self.buf.len() < BODY_CHUNK {
            let Some(frame) = q.frames.pop_front() else {
                break;
            };
            Parser::write_message(&mut self.buf, frame.as_bytes(), OpCode::Text, true, false);
            written += 1;
        }
        if q.frames.is_empty() {
            if let Some(reason) = conn.reason() {
                q.gone = true;
                self.done = true;
                Parser::write_close(
                    &mut self.buf,
                    Some(CloseReason {
                        code: reason.close_code(),
                        description: Some(reason.description().to_owned()),
                    }),
                    false,
                );
            } else if self.buf.is_empty() {
                park(&mut q.writer, cx.waker());
            }
        }
        drop(q);
        if was_full && written > 0 {
            conn.room.notify_waiters();
        }
        if written > 0 {
            self.metrics.messages_out(written);
        }
        if self.done {
            conn.finished.notify_one();
        }
    }
}

#[cfg(test)]
impl Conn {
    /// The text frames queued, oldest first.
    pub(crate) fn queued(&self) -> Vec<String> {
        let q = self.outbound();
        q.frames.iter().map(|f| f.to_string()).collect()
    }
}

impl MessageBody for ConnBody {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        if this.done && this.buf.is_empty() {
            return Poll::Ready(None);
        }
        if !this.done {
            this.fill(cx);
        }
        if this.buf.is_empty() {
            return if this.done {
                Poll::Ready(None)
            } else {
                Poll::Pending
            };
        }
        Poll::Ready(Some(Ok(this.buf.split().freeze())))
    }
}

impl Drop for ConnBody {
    fn drop(&mut self) {
        self.conn.outbound().gone = true;
        // The socket is gone: the session ends too.
        self.conn.close(Disconnect::Normal);
        self.conn.finished.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Arc<Conn> {
        Conn::new(1, UserId::parse("alice").expect("valid id"), Lane::new())
    }

    fn queued(conn: &Conn) -> usize {
        conn.queued().len()
    }

    /// Once a close is asked for, nothing more is queued: the close frame is the last
    /// frame the client gets.
    #[test]
    fn nothing_is_queued_once_closing() {
        let conn = conn();
        let frame = ByteString::from_static("{}");
        assert!(conn.try_deliver(&frame));
        conn.close(Disconnect::Normal);
        assert!(!conn.try_deliver(&frame), "queued after the close");
        assert_eq!(
            queued(&conn),
            1,
            "what was queued before stays, to be written"
        );
    }

    /// A full queue closes the connection as a slow consumer and drops what it held.
    #[test]
    fn a_full_queue_closes_as_a_slow_consumer() {
        let conn = conn();
        let frame = ByteString::from_static("{}");
        for _ in 0..OUTBOUND_QUEUE {
            assert!(conn.try_deliver(&frame));
        }
        assert!(!conn.try_deliver(&frame), "past the bound");
        assert_eq!(conn.reason(), Some(Disconnect::SlowConsumer));
        assert_eq!(queued(&conn), 0, "a slow consumer's queue is dropped");
        assert!(!conn.try_deliver(&frame));
    }
}
