//! One WebSocket session: a reader that handles the client's frames in order; the
//! connection's response body ([`crate::conn::ConnBody`]) writes its bounded outbound
//! queue into the socket.
//!
//! The reader handles one request at a time, so a client's sends are stored in the order
//! it sent them. Replies and room deliveries share the outbound queue, so they reach the
//! client in the order they were queued.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_ws::{AggregatedMessage, ProtocolError};
use chat_model::frame::{ClientFrame, Request, ServerFrame, parse_client_frame};
use chat_model::{ClientMsgId, ErrorCode, RoomId, Seq};
use tokio::time::Sleep;

use crate::auth::{AuthError, Identity};
use crate::conn::{Conn, Disconnect};
use crate::error::GatewayError;
use crate::fanout::FanOutError;
use crate::limits::{SendRate, Verdict};
use crate::metrics::Renewal;
use crate::state::{Admitted, AppState};

/// Frames above this size close the connection with 1009; frames between the protocol
/// limit (64 KiB) and this are answered with `too_large` and the connection stays.
pub const HARD_FRAME_LIMIT: usize = 1024 * 1024;
/// How long a closing session waits for its close frame to be written to a client that
/// does not read; then its queue is dropped.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Rooms one connection may have joined at once.
pub const MAX_ROOMS_PER_CONN: usize = 256;
/// Typing notices relayed per room per connection at most this often; extra ones are
/// dropped silently (they are ephemeral).
pub const TYPING_MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Runs a session until the client leaves, the connection is closed, or the gateway
/// shuts down. Runs on an HTTP worker (the message stream is not `Send`).
///
/// The socket runs on `identity`'s token until an `auth` frame replaces it; past the
/// token's `exp` plus `CHAT_TOKEN_EXPIRY_GRACE_SECS` it is closed with 4001. An accounts
/// session's socket is registered under its session id, so that a revocation closes it
/// (4003).
pub async fn serve(
    state: Arc<AppState>,
    identity: Identity,
    conn: Arc<Conn>,
    stream: actix_ws::MessageStream,
    admitted: Admitted,
) {
    let _admitted = admitted;
    let _active = state.metrics.ws.connection_opened();
    // Revoked between the token's check and now: the socket never opens for real.
    if let Some(sid) = &identity.session
        && let Err(reason) = state.revocations.register(sid, &conn)
    {
        conn.close(Disconnect::Revoked(reason));
    }
    let mut session = Session {
        conn_name: format!("{}-{}", state.gateway_id, conn.id),
        rate: state.limits.send_rate(Instant::now()),
        deadline: expiry_deadline(identity.expires_at, state.limits.token_expiry_grace),
        state,
        conn,
        joined: HashMap::new(),
        received: Instant::now(),
        identity,
    };
    session.run(stream).await;
    session.conn.close(Disconnect::Normal);
    if let Some(sid) = &session.identity.session {
        session.state.revocations.unregister(sid, session.conn.id);
    }
    let reason = session.conn.reason().unwrap_or(Disconnect::Normal);
    session.state.metrics.sessions.disconnected(reason);
    let Session {
        state,
        conn,
        joined,
        ..
    } = session;
    for room in joined.keys() {
        state.hub.leave(conn.id, room);
        state.presence.left(&conn.user, room).await;
    }
    // Only the user's last connection anywhere going away is news: every room told of
    // their online period hears it.
    for room in state.presence.disconnected(&conn.user).await {
        state.hub.announce_presence(&room, &conn.user, false).await;
    }
    conn.finish(CLOSE_TIMEOUT).await;
}

/// When a socket whose token expires at `exp` (Unix seconds) must close: `grace` after
/// it, as an [`Instant`]. `None` for tokens without `exp` (and dev mode).
fn expiry_deadline(exp: Option<u64>, grace: Duration) -> Option<Instant> {
    let exp = exp?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let left = Duration::from_secs(exp).saturating_sub(now) + grace;
    Some(Instant::now() + left)
}

/// Completes when `timer` fires; never without one.
async fn expired(timer: &mut Option<Pin<Box<Sleep>>>) {
    match timer {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}

struct Session {
    state: Arc<AppState>,
    conn: Arc<Conn>,
    /// `<gateway>-<n>`, the `conn` of `hello`.
    conn_name: String,
    /// Joined rooms, with when this connection last relayed `typing` there.
    joined: HashMap<RoomId, Option<Instant>>,
    /// When the frame being handled was read: the start of `ws_message_latency_seconds`.
    received: Instant,
    /// The send rate limit: every text or binary frame from the client counts.
    rate: SendRate,
    /// Who the socket speaks for: its current token's user, session and `exp`.
    identity: Identity,
    /// When the socket closes with 4001 unless renewed (`exp` + grace); `None`: never.
    deadline: Option<Instant>,
}

impl Session {
    async fn run(&mut self, stream: actix_ws::MessageStream) {
        let mut stream = stream
            .max_frame_size(HARD_FRAME_LIMIT)
            .aggregate_continuations()
            .max_continuation_size(HARD_FRAME_LIMIT);
        let hello = ServerFrame::Hello {
            user: &self.conn.user,
            conn: &self.conn_name,
            gateway: &self.state.gateway_id,
            protocol: chat_model::PROTOCOL_VERSION,
        };
        // Online before `hello`: a client that has its `hello` is visible to everyone's
        // `presence` query, on every gateway.
        self.state.presence.connected(&self.conn.user).await;
        if self.reply(hello).await.is_err() {
            return;
        }
        let limits = &self.state.limits;
        let (ping_interval, idle_timeout) = (limits.ping_interval, limits.idle_timeout);
        let mut heartbeat = tokio::time::interval(ping_interval);
        heartbeat.tick().await;
        let mut last_seen = Instant::now();
        let shutdown = self.state.shutdown.clone();
        // Boxed and only for sockets whose token expires: one timer, moved by renewals.
        let mut expiry: Option<Pin<Box<Sleep>>> = None;
        loop {
            self.sync_expiry(&mut expiry);
            tokio::select! {
                biased;
                _ = self.conn.closing() => return,
                _ = shutdown.cancelled() => {
                    self.conn.close(Disconnect::GoingAway);
                    return;
                }
                _ = expired(&mut expiry) => {
                    self.conn.close(Disconnect::TokenExpired);
                    return;
                }
                _ = heartbeat.tick() => {
                    if last_seen.elapsed() > idle_timeout {
                        self.conn.close(Disconnect::Idle);
                        return;
                    }
                    self.conn.ping();
                }
                item = stream.recv() => {
                    last_seen = Instant::now();
                    if let Some(Ok(AggregatedMessage::Text(_) | AggregatedMessage::Binary(_))) = &item {
                        match self.rate.check(last_seen) {
                            Verdict::Allow => {}
                            Verdict::Refuse => {
                                if Box::pin(self.refuse_rate_limited(item)).await.is_err() {
                                    return;
                                }
                                continue;
                            }
                            Verdict::Disconnect => {
                                self.state.metrics.sessions.rate_limited();
                                self.conn.close(Disconnect::Flooding);
                                return;
                            }
                        }
                    }
                    let disconnect = match item {
                        Some(Ok(AggregatedMessage::Text(text))) => {
                            self.state.metrics.ws.message_in();
                            self.received = last_seen;
                            // Boxed: the request future is large and rarely alive; keeping it out
                            // of the session future saves ~0.8 KiB per idle connection.
                            if Box::pin(self.on_text(&text)).await.is_err() {
                                return;
                            }
                            continue;
                        }
                        Some(Ok(AggregatedMessage::Binary(_))) => {
                            let refused = ServerFrame::Error {
                                code: ErrorCode::BadRequest,
                                message: "binary frames are not supported; send JSON text frames",
                                reference: None,
                            };
                            if self.reply(refused).await.is_err() {
                                return;
                            }
                            continue;
                        }
                        Some(Ok(AggregatedMessage::Ping(payload))) => {
                            self.conn.pong(payload);
                            continue;
                        }
                        Some(Ok(AggregatedMessage::Pong(_))) => continue,
                        Some(Ok(AggregatedMessage::Close(_))) | None => Disconnect::Normal,
                        Some(Err(ProtocolError::Overflow)) => Disconnect::TooBig,
                        Some(Err(e)) => {
                            tracing::debug!(conn = %self.conn_name, error = %e, "websocket protocol error");
                            Disconnect::Policy
                        }
                    };
                    self.conn.close(disconnect);
                    return;
                }
            }
        }
    }

    /// Points `timer` at [`Session::deadline`] (after a renewal moved or removed it).
    fn sync_expiry(&self, timer: &mut Option<Pin<Box<Sleep>>>) {
        match (self.deadline, timer.as_mut()) {
            (None, _) => *timer = None,
            (Some(deadline), Some(sleep)) => {
                let deadline = tokio::time::Instant::from_std(deadline);
                if sleep.deadline() != deadline {
                    sleep.as_mut().reset(deadline);
                }
            }
            (Some(deadline), None) => {
                *timer = Some(Box::pin(tokio::time::sleep_until(
                    tokio::time::Instant::from_std(deadline),
                )));
            }
        }
    }

    /// An `auth` frame: the socket continues on `token` if it verifies and names the
    /// same user; otherwise it keeps its current token (and expiry).
    async fn renew(&mut self, token: &str) -> Result<Option<u64>, GatewayError> {
        let tokens = &self.state.metrics.tokens;
        let identity = match self.state.auth.verify(token).await {
            Ok(identity) => identity,
            Err(e) => {
                tokens.renewal(match e {
                    AuthError::Expired => Renewal::Expired,
                    AuthError::Revoked => Renewal::Revoked,
                    _ => Renewal::Invalid,
                });
                return Err(GatewayError::Forbidden(format!(
                    "token refused, the connection keeps its current one: {e}"
                )));
            }
        };
        if identity.user != self.conn.user {
            tokens.renewal(Renewal::OtherUser);
            return Err(GatewayError::Forbidden(format!(
                "token refused: it is for another user than this connection's ({})",
                self.conn.user
            )));
        }
        if identity.session != self.identity.session {
            let revocations = &self.state.revocations;
            if let Some(sid) = &identity.session
                && revocations.register(sid, &self.conn).is_err()
            {
                tokens.renewal(Renewal::Revoked);
                return Err(GatewayError::Forbidden(format!(
                    "token refused, the connection keeps its current one: {}",
                    AuthError::Revoked
                )));
            }
            if let Some(old) = &self.identity.session {
                revocations.unregister(old, self.conn.id);
            }
        }
        tokens.renewal(Renewal::Ok);
        self.deadline = expiry_deadline(identity.expires_at, self.state.limits.token_expiry_grace);
        let exp = identity.expires_at;
        self.identity = identity;
        Ok(exp)
    }

    /// Answers a frame over the send rate limit with `rate_limited` (echoing its `ref`
    /// when it has one) without handling it.
    async fn refuse_rate_limited(
        &self,
        item: Option<Result<AggregatedMessage, ProtocolError>>,
    ) -> Result<(), crate::conn::Closed> {
        self.state.metrics.sessions.rate_limited();
        let reference = match &item {
            Some(Ok(AggregatedMessage::Text(text))) => {
                parse_client_frame(text).ok().and_then(|f| f.reference)
            }
            _ => None,
        };
        let limits = &self.state.limits;
        let message = format!(
            "sending too fast: at most {} frames per second, bursts of {}; this frame was not handled, retry it later",
            limits.frames_per_sec, limits.burst
        );
        self.reply(ServerFrame::Error {
            code: ErrorCode::RateLimited,
            message: &message,
            reference: reference.as_deref(),
        })
        .await
    }

    /// Queues a direct reply, waiting for room in the queue.
    async fn reply(&self, frame: ServerFrame<'_>) -> Result<(), crate::conn::Closed> {
        self.conn.send(frame.to_json().into()).await
    }

    async fn on_text(&mut self, text: &str) -> Result<(), crate::conn::Closed> {
        let ClientFrame { reference, request } = match parse_client_frame(text) {
            Ok(frame) => frame,
            Err(refused) => return self.reply(refused.to_frame()).await,
        };
        let reference = reference.as_deref();
        match self.handle(request, reference).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let message = e.to_string();
                self.reply(ServerFrame::Error {
                    code: e.code(),
                    message: &message,
                    reference,
                })
                .await
            }
        }
    }

    async fn handle(
        &mut self,
        request: Request,
        reference: Option<&str>,
    ) -> Result<(), GatewayError> {
        let closed = |_| GatewayError::Internal("connection closing".into());
        match request {
            Request::Join { room, since } => {
                let newly_joined = !self.joined.contains_key(&room);
                let last_seq = self.join(&room, since).await?;
                self.reply(ServerFrame::Joined {
                    room: &room,
                    last_seq,
                    reference,
                })
                .await
                .map_err(closed)?;
                let user = &self.conn.user;
                if newly_joined && self.state.presence.entered(user, &room).await {
                    self.state.hub.announce_presence(&room, user, true).await;
                }
                Ok(())
            }
            Request::Leave { room } => {
                if self.joined.remove(&room).is_none() {
                    return Err(GatewayError::NotJoined(format!("not a member of {room}")));
                }
                self.state.hub.leave(self.conn.id, &room);
                self.reply(ServerFrame::Left {
                    room: &room,
                    reference,
                })
                .await
                .map_err(closed)?;
                // No event: the user is still online (the room hears when they go offline).
                self.state.presence.left(&self.conn.user, &room).await;
                Ok(())
            }
            Request::Send {
                room,
                body,
                client_id,
            } => self.send(room, body, client_id, reference).await,
            Request::History {
                room,
                before,
                limit,
            } => {
                self.check_admitted(&room)?;
                let page = self
                    .state
                    .hub
                    .history()
                    .list(&room, before, None, limit)
                    .await?;
                self.reply(ServerFrame::History {
                    room: &room,
                    messages: &page.messages,
                    has_more: page.has_more,
                    reference,
                })
                .await
                .map_err(closed)
            }
            Request::Typing { room } => self.typing(room).await,
            Request::Presence { users } => {
                let online = self.state.presence.query(&users).await?;
                let users = users.into_iter().zip(online).collect();
                self.reply(ServerFrame::PresenceReply {
                    users: &users,
                    reference,
                })
                .await
                .map_err(closed)
            }
            Request::Ping => self
                .reply(ServerFrame::Pong { reference })
                .await
                .map_err(closed),
            Request::Auth { token } => {
                let exp = self.renew(&token).await?;
                self.reply(ServerFrame::Authed { exp, reference })
                    .await
                    .map_err(closed)
            }
        }
    }

    fn check_admitted(&self, room: &RoomId) -> Result<(), GatewayError> {
        if room.admits(&self.conn.user) {
            Ok(())
        } else {
            Err(GatewayError::forbidden_room(room))
        }
    }

    async fn join(&mut self, room: &RoomId, since: Option<Seq>) -> Result<Seq, GatewayError> {
        self.check_admitted(room)?;
        if !self.joined.contains_key(room) && self.joined.len() >= MAX_ROOMS_PER_CONN {
            return Err(GatewayError::BadRequest(format!(
                "at most {MAX_ROOMS_PER_CONN} rooms per connection; leave one first"
            )));
        }
        match self.state.hub.join(&self.conn, room, since).await {
            Ok(last_seq) => {
                self.joined.entry(room.clone()).or_insert(None);
                Ok(last_seq)
            }
            Err(e) => {
                // The hub dropped the membership, also one this join was renewing: the
                // connection is no longer in the room, so it must not look joined
                // (typing, leave) or keep the user counted in it.
                if self.joined.remove(room).is_some() {
                    self.state.presence.left(&self.conn.user, room).await;
                }
                Err(e)
            }
        }
    }

    async fn send(
        &mut self,
        room: RoomId,
        body: String,
        client_id: ClientMsgId,
        reference: Option<&str>,
    ) -> Result<(), GatewayError> {
        self.check_admitted(&room)?;
        let hub = &self.state.hub;
        let (message, duplicate) = hub
            .history()
            .append(&room, &self.conn.user, &client_id, &body)
            .await?;
        // Local members get it now; other gateways through fan-out. A duplicate is
        // published again too: the first attempt may have died before publishing, and
        // receivers drop seqs they already delivered.
        let frame = hub.deliver_local(&message);
        let ack = ServerFrame::Ack {
            room: &room,
            client_id: &client_id,
            seq: message.seq,
            id: &message.id,
            ts: message.ts,
            duplicate,
            reference,
        };
        let acked = self.reply(ack).await;
        if acked.is_ok() {
            self.state.metrics.ws.observe_send(self.received.elapsed());
        }
        match hub.fanout().publish(&room, frame).await {
            // Stored and acked: other gateways fill the gap from history on their next
            // message or resync.
            Err(e @ FanOutError::Unavailable(_)) => {
                tracing::warn!(%room, error = %e, "fan-out publish failed");
            }
            // The outage is logged once by the fan-out, not once per message.
            Err(e @ FanOutError::Deferred(_)) => {
                tracing::debug!(%room, error = %e, "fan-out publish deferred");
            }
            Ok(()) => {}
        }
        acked.map_err(|_| GatewayError::Internal("connection closing".into()))
    }

    async fn typing(&mut self, room: RoomId) -> Result<(), GatewayError> {
        let Some(last) = self.joined.get_mut(&room) else {
            return Err(GatewayError::NotJoined(format!(
                "join {room} before typing there"
            )));
        };
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < TYPING_MIN_INTERVAL) {
            self.state.metrics.sessions.typing_throttled();
            return Ok(());
        }
        *last = Some(now);
        let frame = ServerFrame::Typing {
            room: &room,
            user: &self.conn.user,
        };
        // Fan-out echoes to this gateway too, which relays to local members.
        if let Err(e) = self
            .state
            .hub
            .fanout()
            .publish(&room, frame.to_json().into())
            .await
        {
            tracing::debug!(%room, error = %e, "typing relay failed");
        }
        Ok(())
    }
}
