//! One WebSocket connection as the rest of the gateway sees it: an identity, a bounded
//! outbound queue, and a way to close it with a reason.

use std::sync::{Arc, OnceLock};

use actix_ws::CloseCode;
use bytestring::ByteString;
use chat_model::UserId;
use chat_model::revocation::RevocationReason;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// Gateway-local connection number.
pub type ConnId = u64;

/// Frames queued for one connection before it counts as a slow consumer and is closed
/// with 1013. Sized for bursts (a catch-up page is 200) while bounding memory at
/// roughly this many shared frames per connection.
pub const OUTBOUND_QUEUE: usize = 1024;

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

/// A connection's shared half: rooms deliver into it, the session drains it.
#[derive(Debug)]
pub struct Conn {
    pub id: ConnId,
    pub user: UserId,
    /// Frames to write, in order. Bounded: see [`OUTBOUND_QUEUE`].
    outbound: mpsc::Sender<ByteString>,
    /// Cancelled when the connection must close; the writer then closes the socket.
    closing: CancellationToken,
    /// The first close reason wins.
    reason: OnceLock<Disconnect>,
}

/// The connection is closing; nothing more can be sent.
#[derive(Debug, Clone, Copy)]
pub struct Closed;

impl Conn {
    /// A new connection and the receiving end of its outbound queue.
    pub fn new(id: ConnId, user: UserId) -> (Arc<Self>, mpsc::Receiver<ByteString>) {
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        let conn = Arc::new(Self {
            id,
            user,
            outbound: tx,
            closing: CancellationToken::new(),
            reason: OnceLock::new(),
        });
        (conn, rx)
    }

    /// Queues a frame without waiting (room deliveries). A full queue closes the
    /// connection as a slow consumer; returns false then.
    pub fn try_deliver(&self, frame: &ByteString) -> bool {
        match self.outbound.try_send(frame.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.close(Disconnect::SlowConsumer);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Queues a frame, waiting for room (direct replies, catch-up pages).
    pub async fn send(&self, frame: ByteString) -> Result<(), Closed> {
        tokio::select! {
            biased;
            _ = self.closing.cancelled() => Err(Closed),
            sent = self.outbound.send(frame) => sent.map_err(|_| Closed),
        }
    }

    /// Asks the session to close the connection.
    pub fn close(&self, reason: Disconnect) {
        let _ = self.reason.set(reason);
        self.closing.cancel();
    }

    /// Completes when the connection must close.
    pub fn closing(&self) -> WaitForCancellationFuture<'_> {
        self.closing.cancelled()
    }

    /// Why it is closing, once it is.
    pub fn reason(&self) -> Option<Disconnect> {
        self.reason.get().copied()
    }
}
