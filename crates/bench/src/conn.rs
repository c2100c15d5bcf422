//! One bench connection: opening it (bound to a chosen source address, WebSocket upgrade,
//! protocol handshake, joins) and the task that drives it afterwards.
//!
//! The task owns the socket and its room state, so nothing per connection is shared or
//! locked; the worker talks to it through a small command channel and collects its
//! findings at the end of each round.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::check::{Emitted, ReceiverRound, ReceiverTrack};
use crate::latency::Latency;
use crate::plan::{Plan, Protocol, room_index};
use crate::wire::{self, Inbound};

/// A client WebSocket over a plain TCP stream.
pub type Ws = WebSocketStream<TcpStream>;

/// Samples a connection buffers before adding them to the worker's histogram, so the
/// histogram lock is taken once per batch, not once per delivery.
const LATENCY_BATCH: usize = 128;
/// Commands a connection may have queued; the scheduler drops sends beyond it (and
/// reports them) rather than letting the client fall behind silently.
pub const COMMAND_QUEUE: usize = 4096;

/// State the connections of one worker share.
#[derive(Debug, Default)]
pub struct Shared {
    /// End-to-end latency of every delivery.
    pub latency: Mutex<Latency>,
    /// Chat only: send to ack.
    pub ack_latency: Mutex<Latency>,
    /// Deliveries before this instant (µs since the epoch) count as "in the window".
    pub window_end_us: AtomicU64,
    /// Every delivery, for the drain phase to see when traffic has stopped.
    pub deliveries: AtomicU64,
    /// Sends dispatched but not yet acked (chat) or written (peers).
    pub pending: AtomicI64,
}

/// A connection that completed its handshake and joins.
#[derive(Debug)]
pub struct Opened {
    pub ws: Ws,
    /// Each joined room with the `last_seq` it was joined at.
    pub joined: Vec<(u32, u64)>,
    /// TCP connect + upgrade + protocol handshake.
    pub connect_time: Duration,
}

/// Opens connection `conn` of `plan` to `target`.
pub async fn open(plan: &Plan, conn: u32, target: SocketAddr) -> anyhow::Result<Opened> {
    let rooms = plan.rooms_of(conn);
    if plan.protocol == Protocol::Raw && rooms.len() > 1 {
        anyhow::bail!("raw connections are in one room each; lower --members-per-room");
    }
    let url = wire::url(plan, conn, rooms.first().copied())?;
    let started = Instant::now();
    let socket = match target.ip() {
        IpAddr::V4(_) => {
            let socket = TcpSocket::new_v4()?;
            let source = plan.source(conn);
            if !source.is_unspecified() {
                socket
                    .bind(SocketAddr::new(source.into(), 0))
                    .with_context(|| format!("binding to {source}"))?;
            }
            socket
        }
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    let stream = socket
        .connect(target)
        .await
        .with_context(|| format!("connecting to {target}"))?;
    stream.set_nodelay(true)?;
    // Small buffers: 128 KiB each by default would cost gigabytes at 18k connections.
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .context("WebSocket upgrade")?;
    match plan.protocol {
        Protocol::Chat => {
            let hello = next_text(&mut ws).await?;
            anyhow::ensure!(hello.contains(r#""hello""#), "expected hello, got {hello}");
        }
        Protocol::Socketio => {
            let open = next_text(&mut ws).await?;
            anyhow::ensure!(open.starts_with('0'), "expected engine.io open, got {open}");
            ws.send(WsMessage::text("40")).await?;
            loop {
                let reply = next_text(&mut ws).await?;
                if reply.starts_with("40") {
                    break;
                }
                anyhow::ensure!(!reply.starts_with("44"), "socket.io refused: {reply}");
            }
        }
        Protocol::Raw => {}
    }
    let connect_time = started.elapsed();
    let mut joined = Vec::with_capacity(rooms.len());
    for (reference, room) in rooms.iter().enumerate() {
        let Some(frame) = wire::join_frame(plan.protocol, &plan.room_name(*room), reference as u32)
        else {
            joined.push((*room, 0));
            continue;
        };
        ws.send(WsMessage::text(frame)).await?;
        loop {
            let text = next_text(&mut ws).await?;
            match wire::parse_inbound(plan.protocol, &text) {
                Inbound::Joined {
                    reference: r,
                    last_seq,
                } if r == reference as u32 => {
                    joined.push((*room, last_seq));
                    break;
                }
                Inbound::Error { code } => anyhow::bail!("join refused: {code} ({text})"),
                Inbound::Answer(answer) => ws.send(WsMessage::text(answer)).await?,
                _ => {}
            }
        }
    }
    Ok(Opened {
        ws,
        joined,
        connect_time,
    })
}

/// The next text frame, skipping control frames.
async fn next_text(ws: &mut Ws) -> anyhow::Result<String> {
    loop {
        match ws.next().await {
            Some(Ok(WsMessage::Text(text))) => return Ok(text.as_str().to_owned()),
            Some(Ok(WsMessage::Close(frame))) => anyhow::bail!("closed by the server: {frame:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => anyhow::bail!("connection ended"),
        }
    }
}

/// What the worker asks of a connection.
#[derive(Debug)]
pub enum ConnCmd {
    /// Send the next message to `room`, stamped with when it was due.
    Send { room: u32, due_us: u64 },
    /// Hand over this round's findings.
    Collect(oneshot::Sender<ConnRound>),
}

/// One connection's findings for one round.
#[derive(Debug, Default)]
pub struct ConnRound {
    pub receivers: Vec<ReceiverRound>,
    pub emitted: Vec<Emitted>,
    pub sent: u64,
    pub acked: u64,
    /// `error` replies to sends (chat).
    pub errors: u64,
    pub deliveries: u64,
    pub deliveries_in_window: u64,
    /// Why the connection ended, if it did.
    pub disconnected: Option<String>,
}

#[derive(Debug)]
struct RoomState {
    room: u32,
    name: String,
    /// Messages this connection sent to the room.
    counter: u64,
    track: ReceiverTrack,
    acked: crate::rangeset::RangeSet,
    written: u64,
}

/// A running connection's task.
#[derive(Debug)]
pub struct ConnTask {
    conn: u32,
    protocol: Protocol,
    body_size: usize,
    shared: Arc<Shared>,
    rooms: Vec<RoomState>,
    /// Chat: due times of sends awaiting their ack (acks come in send order).
    awaiting_ack: VecDeque<u64>,
    latency: Vec<u64>,
    ack_latency: Vec<u64>,
    round: ConnRound,
}

impl ConnTask {
    /// A task for connection `conn`, opened as `opened`.
    pub fn new(plan: &Plan, conn: u32, joined: &[(u32, u64)], shared: Arc<Shared>) -> Self {
        Self {
            conn,
            protocol: plan.protocol,
            body_size: plan.body_size,
            shared,
            rooms: joined
                .iter()
                .map(|&(room, floor)| RoomState {
                    room,
                    name: plan.room_name(room),
                    counter: 0,
                    track: ReceiverTrack::new(floor),
                    acked: Default::default(),
                    written: 0,
                })
                .collect(),
            awaiting_ack: VecDeque::new(),
            latency: Vec::with_capacity(LATENCY_BATCH),
            ack_latency: Vec::new(),
            round: ConnRound::default(),
        }
    }

    /// Runs until the command channel closes, then closes the WebSocket.
    pub async fn run(mut self, mut ws: Ws, mut commands: mpsc::Receiver<ConnCmd>) {
        let mut open = true;
        loop {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(ConnCmd::Send { room, due_us }) => {
                        if open && let Err(e) = self.send(&mut ws, room, due_us).await {
                            self.ended(format!("send failed: {e}"));
                            open = false;
                        } else if !open {
                            self.shared.pending.fetch_sub(1, Ordering::Relaxed);
                        }
                    }
                    Some(ConnCmd::Collect(reply)) => {
                        let _ = reply.send(self.take_round());
                    }
                    None => break,
                },
                frame = ws.next(), if open => match frame {
                    Some(Ok(WsMessage::Text(text))) => {
                        if let Err(e) = self.receive(&mut ws, text.as_str()).await {
                            self.ended(format!("answer failed: {e}"));
                            open = false;
                        }
                    }
                    Some(Ok(WsMessage::Close(frame))) => {
                        self.ended(format!("closed by the server: {frame:?}"));
                        open = false;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        self.ended(format!("read failed: {e}"));
                        open = false;
                    }
                    None => {
                        self.ended("connection ended".into());
                        open = false;
                    }
                },
            }
        }
        if open {
            let _ = ws.close(None).await;
        }
    }

    fn ended(&mut self, why: String) {
        if self.round.disconnected.is_none() {
            self.round.disconnected = Some(why);
        }
        // Nothing awaited on this connection will come now.
        let lost = self.awaiting_ack.len() as i64;
        self.awaiting_ack.clear();
        self.shared.pending.fetch_sub(lost, Ordering::Relaxed);
    }

    async fn send(&mut self, ws: &mut Ws, room: u32, due_us: u64) -> anyhow::Result<()> {
        let conn = self.conn;
        let Some(state) = self.rooms.iter_mut().find(|r| r.room == room) else {
            self.shared.pending.fetch_sub(1, Ordering::Relaxed);
            return Ok(());
        };
        state.counter += 1;
        let body = wire::body(conn, state.counter, due_us, self.body_size);
        let client_id = format!("{conn}-{}", state.counter);
        let frame = wire::send_frame(self.protocol, &state.name, &body, &client_id);
        if self.protocol == Protocol::Chat {
            self.awaiting_ack.push_back(due_us);
        }
        if let Err(e) = ws.send(WsMessage::text(frame)).await {
            // Chat sends are settled by `ended` (they wait for an ack); peers' here.
            if self.protocol != Protocol::Chat {
                self.shared.pending.fetch_sub(1, Ordering::Relaxed);
            }
            return Err(e.into());
        }
        self.round.sent += 1;
        if self.protocol != Protocol::Chat {
            state.written += 1;
            self.shared.pending.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn receive(&mut self, ws: &mut Ws, text: &str) -> anyhow::Result<()> {
        match wire::parse_inbound(self.protocol, text) {
            Inbound::Delivery { room, seq, body } => {
                let now = crate::now_micros();
                let Some(header) = wire::parse_body(&body) else {
                    return Ok(());
                };
                let state = match room {
                    Some(name) => {
                        let index = room_index(&name);
                        self.rooms.iter_mut().find(|r| Some(r.room) == index)
                    }
                    None => self.rooms.first_mut(),
                };
                let Some(state) = state else { return Ok(()) };
                match seq {
                    Some(seq) => state.track.on_seq(seq),
                    None => state.track.on_counter(header.sender, header.counter),
                }
                self.round.deliveries += 1;
                if now <= self.shared.window_end_us.load(Ordering::Relaxed) {
                    self.round.deliveries_in_window += 1;
                }
                self.shared.deliveries.fetch_add(1, Ordering::Relaxed);
                self.latency.push(now.saturating_sub(header.sent_at_us));
                if self.latency.len() >= LATENCY_BATCH {
                    self.flush_latency();
                }
            }
            Inbound::Ack { room, seq } => {
                if let Some(due) = self.awaiting_ack.pop_front() {
                    self.ack_latency
                        .push(crate::now_micros().saturating_sub(due));
                    self.shared.pending.fetch_sub(1, Ordering::Relaxed);
                }
                self.round.acked += 1;
                let index = room.as_deref().and_then(room_index);
                if let Some(state) = self.rooms.iter_mut().find(|r| Some(r.room) == index) {
                    state.acked.insert(seq);
                }
            }
            Inbound::Error { .. } => {
                // Replies come in request order: this answers the oldest send.
                if self.awaiting_ack.pop_front().is_some() {
                    self.shared.pending.fetch_sub(1, Ordering::Relaxed);
                }
                self.round.errors += 1;
            }
            Inbound::Answer(answer) => ws.send(WsMessage::text(answer)).await?,
            Inbound::Joined { .. } | Inbound::Other => {}
        }
        Ok(())
    }

    fn flush_latency(&mut self) {
        if !self.latency.is_empty() {
            let mut hist = self
                .shared
                .latency
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for v in self.latency.drain(..) {
                hist.record_micros(v);
            }
        }
        if !self.ack_latency.is_empty() {
            let mut hist = self
                .shared
                .ack_latency
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for v in self.ack_latency.drain(..) {
                hist.record_micros(v);
            }
        }
    }

    fn take_round(&mut self) -> ConnRound {
        self.flush_latency();
        let mut round = std::mem::take(&mut self.round);
        for state in &mut self.rooms {
            round
                .receivers
                .push(state.track.take_round(self.conn, state.room));
            let acked = std::mem::take(&mut state.acked);
            let written = std::mem::take(&mut state.written);
            if !acked.is_empty() || written > 0 {
                round.emitted.push(Emitted {
                    room: state.room,
                    acked,
                    written,
                });
            }
        }
        // A dead connection stays dead: keep reporting it.
        self.round.disconnected = round.disconnected.clone();
        round
    }
}
