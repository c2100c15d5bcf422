//! The rooms of one gateway: per-room ordering, gap filling and catch-up (guarantees 3
//! and 4 of docs/architecture.md).
//!
//! Each room with local members has one task, its *sequencer*, that owns the room's
//! state; everything reaches it through its mailbox, so there are no locks around room
//! state. The sequencer keeps `head`, the highest seq it has delivered; a message with
//! `seq == head + 1` is delivered at once, a later one waits in `pending` while the gap
//! before it is read from history, an older one is a duplicate and dropped. Each member
//! has a `cursor` (the last seq it was sent), so a connection never sees a seq twice.
//!
//! Joining with `since` behind `head` is a catch-up: the member is registered but not
//! live, the joining session copies `since+1..` from history into the connection's queue,
//! then asks the sequencer to go live at its cursor; if `head` moved on meanwhile it
//! reads again. Because the sequencer handles "go live" between two deliveries, the
//! switch-over has no gap and no duplicate.
//!
//! A sequencer does not queue frames into its members' connections itself: it hands
//! each frame once to each HTTP worker that has live members, with the list of them
//! there (a [`crate::lane::Lane`]); the worker queues it for each. The list is kept per
//! worker and rebuilt only when membership changes.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytestring::ByteString;
use chat_model::frame::ServerFrame;
use chat_model::{Message, RoomId, Seq, UserId};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use crate::conn::{Conn, ConnId};
use crate::error::GatewayError;
use crate::fanout::{FanOut, Signal};
use crate::history::HistoryClient;
use crate::lane::{Batch, Lane};
use crate::metrics::RoomMetrics;

/// Commands a sequencer may have queued before senders wait (joins) or drop and resync
/// (fan-out events).
const ROOM_MAILBOX: usize = 4096;
/// Out-of-order messages a sequencer holds while filling a gap; later ones are dropped
/// and re-read from history.
const MAX_PENDING: usize = 4096;
/// Messages per history read when filling gaps or catching up.
const PAGE: u32 = 200;
/// Pause before retrying a failed gap fill, or one that brought nothing new.
const FILL_RETRY: Duration = Duration::from_millis(500);
/// Fills in a row that may bring nothing new while messages wait past the gap; then the
/// waiting ones history does not have are dropped (an event for a room history never
/// stored: a foreign publisher on a shared Redis, or a store reset under running
/// gateways) instead of being asked for forever.
const MAX_STALLED_FILLS: u32 = 10;
/// Pause before asking history again when a catch-up finds the room's sequencer ahead
/// of what history just returned.
const BEHIND_RETRY: Duration = Duration::from_millis(20);
/// Attempts to reach a room whose sequencer is retiring at the same moment.
const JOIN_ATTEMPTS: usize = 8;

/// The gateway's rooms; cheap to clone.
#[derive(Debug, Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

#[derive(Debug)]
struct HubInner {
    rooms: Mutex<HashMap<RoomId, RoomHandle>>,
    fanout: Arc<dyn FanOut>,
    history: HistoryClient,
    /// Where sequencers run: the main runtime, not an HTTP worker's, so they outlive any
    /// one worker.
    runtime: tokio::runtime::Handle,
    /// Active rooms, gap fills, resyncs and catch-up.
    metrics: RoomMetrics,
}

#[derive(Debug, Clone)]
struct RoomHandle {
    tx: mpsc::Sender<RoomCmd>,
    /// Set when an event could not be queued; the sequencer then resyncs from history.
    dropped: Arc<AtomicBool>,
}

#[derive(Debug)]
enum RoomCmd {
    Join {
        conn: Arc<Conn>,
        since: Option<Seq>,
        reply: oneshot::Sender<Result<JoinState, GatewayError>>,
    },
    GoLive {
        conn: ConnId,
        cursor: Seq,
        reply: oneshot::Sender<GoLive>,
    },
    Leave {
        conn: ConnId,
    },
    Message {
        seq: Seq,
        frame: ByteString,
    },
    /// `typing` or a `presence` event: to live members, except `from`'s own connections.
    Ephemeral {
        from: UserId,
        frame: ByteString,
    },
    Filled(Result<crate::history::Page, GatewayError>),
    Resync,
}

#[derive(Debug, Clone, Copy)]
struct JoinState {
    head: Seq,
    live: bool,
}

#[derive(Debug, Clone, Copy)]
enum GoLive {
    Live(Seq),
    Behind,
    Gone,
}

/// The fields of a fan-out payload the sequencer needs.
#[derive(Deserialize)]
struct EventHead<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    seq: Option<Seq>,
    #[serde(borrow)]
    user: Option<std::borrow::Cow<'a, str>>,
}

impl Hub {
    /// A hub delivering the events of `signals` (from `fanout`) to local members,
    /// recording the rooms' work in `metrics`. Must be called inside the runtime that
    /// will run the sequencers.
    pub fn new(
        fanout: Arc<dyn FanOut>,
        history: HistoryClient,
        signals: mpsc::Receiver<Signal>,
        metrics: RoomMetrics,
    ) -> Self {
        let hub = Self {
            inner: Arc::new(HubInner {
                rooms: Mutex::new(HashMap::new()),
                fanout,
                history,
                runtime: tokio::runtime::Handle::current(),
                metrics,
            }),
        };
        let weak = Arc::downgrade(&hub.inner);
        hub.inner.runtime.spawn(dispatch(weak, signals));
        hub
    }

    /// The fan-out backend.
    pub fn fanout(&self) -> &Arc<dyn FanOut> {
        &self.inner.fanout
    }

    /// The history client.
    pub fn history(&self) -> &HistoryClient {
        &self.inner.history
    }

    /// Rooms with local members.
    pub fn room_count(&self) -> usize {
        self.inner.rooms_lock().len()
    }

    /// Makes `conn` a member of `room`. With `since`, first copies every message after
    /// `since` into the connection's queue. Returns the room's last seq for `joined`.
    pub async fn join(
        &self,
        conn: &Arc<Conn>,
        room: &RoomId,
        since: Option<Seq>,
    ) -> Result<Seq, GatewayError> {
        let (handle, state) = self.register(conn, room, since).await?;
        let Some(mut cursor) = since.filter(|_| !state.live) else {
            return Ok(state.head);
        };
        let caught_up = async {
            let mut behind_without_progress = false;
            loop {
                if behind_without_progress {
                    tokio::time::sleep(BEHIND_RETRY).await;
                }
                let page = self
                    .inner
                    .history
                    .list(room, None, Some(cursor), PAGE)
                    .await?;
                behind_without_progress = false;
                if cursor > page.last_seq {
                    // `since` is past the room's last message (a client that kept its
                    // position across a store reset, or a made-up one): resume from the
                    // real end, and `joined.last_seq` below `since` tells the client.
                    cursor = page.last_seq;
                }
                for m in &page.messages {
                    if m.seq > cursor {
                        conn.send(message_frame(m))
                            .await
                            .map_err(|_| GatewayError::Unavailable("connection closing".into()))?;
                        self.inner.metrics.catchup_messages.inc();
                        cursor = m.seq;
                    }
                }
                if page.has_more {
                    continue;
                }
                let (reply, rx) = oneshot::channel();
                let asked = RoomCmd::GoLive {
                    conn: conn.id,
                    cursor,
                    reply,
                };
                if handle.tx.send(asked).await.is_err() {
                    return Err(GatewayError::Internal("room closed during catch-up".into()));
                }
                match rx.await {
                    Ok(GoLive::Live(last)) => return Ok(last),
                    Ok(GoLive::Behind) => {
                        behind_without_progress = page.messages.is_empty();
                        continue;
                    }
                    Ok(GoLive::Gone) | Err(_) => {
                        return Err(GatewayError::Internal("left during catch-up".into()));
                    }
                }
            }
        };
        let result = caught_up.await;
        if result.is_err() {
            self.leave(conn.id, room);
        }
        result
    }

    async fn register(
        &self,
        conn: &Arc<Conn>,
        room: &RoomId,
        since: Option<Seq>,
    ) -> Result<(RoomHandle, JoinState), GatewayError> {
        for _ in 0..JOIN_ATTEMPTS {
            let handle = self.room(room);
            let (reply, rx) = oneshot::channel();
            let join = RoomCmd::Join {
                conn: conn.clone(),
                since,
                reply,
            };
            // A send or reply failure means the sequencer retired between our lookup and
            // our send: look up again, which starts a new one.
            if handle.tx.send(join).await.is_err() {
                continue;
            }
            if let Ok(state) = rx.await {
                return Ok((handle, state?));
            }
        }
        Err(GatewayError::Internal(format!("room {room} kept closing")))
    }

    /// Removes `conn` from `room`'s members (idempotent).
    pub fn leave(&self, conn: ConnId, room: &RoomId) {
        if let Some(handle) = self.inner.rooms_lock().get(room).cloned() {
            handle.send_or_flag(RoomCmd::Leave { conn });
        }
    }

    /// Delivers a stored message to local members now, without waiting for fan-out.
    pub fn deliver_local(&self, message: &Message) -> ByteString {
        let frame = message_frame(message);
        if let Some(handle) = self.inner.rooms_lock().get(&message.room).cloned() {
            handle.send_or_flag(RoomCmd::Message {
                seq: message.seq,
                frame: frame.clone(),
            });
        }
        frame
    }

    /// Tells every member of `room`, on every gateway, that `user` is online or went
    /// offline (when to is [`crate::presence`]'s call). Best effort, like all ephemeral
    /// events.
    pub async fn announce_presence(&self, room: &RoomId, user: &UserId, online: bool) {
        let frame = ServerFrame::PresenceEvent { room, user, online }.to_json();
        if let Err(e) = self.inner.fanout.publish(room, frame.into()).await {
            tracing::debug!(%room, error = %e, "presence event not published");
        }
    }

    /// The room's sequencer, started if the room has none.
    fn room(&self, room: &RoomId) -> RoomHandle {
        let mut rooms = self.inner.rooms_lock();
        if let Some(handle) = rooms.get(room)
            && !handle.tx.is_closed()
        {
            return handle.clone();
        }
        let (tx, rx) = mpsc::channel(ROOM_MAILBOX);
        let handle = RoomHandle {
            tx: tx.clone(),
            dropped: Arc::new(AtomicBool::new(false)),
        };
        rooms.insert(room.clone(), handle.clone());
        let sequencer = Sequencer {
            room: room.clone(),
            hub: self.inner.clone(),
            handle: handle.clone(),
            head: 0,
            pending: BTreeMap::new(),
            filling: false,
            stalled_fills: 0,
            members: HashMap::new(),
            by_lane: None,
            subscribed: false,
        };
        // Decremented when the sequencer ends.
        self.inner.metrics.active.inc();
        self.inner.runtime.spawn(sequencer.run(rx));
        handle
    }
}

impl HubInner {
    fn rooms_lock(&self) -> std::sync::MutexGuard<'_, HashMap<RoomId, RoomHandle>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl RoomHandle {
    /// Queues a command without waiting; if the mailbox is full the command is dropped
    /// and the sequencer resyncs from history when it gets to its mailbox again.
    fn send_or_flag(&self, cmd: RoomCmd) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(cmd) {
            self.dropped.store(true, Ordering::Release);
        }
    }
}

/// The serialised `message` frame of a stored message.
pub fn message_frame(message: &Message) -> ByteString {
    ServerFrame::Message(message).to_json().into()
}

/// Routes fan-out signals to the rooms' sequencers.
async fn dispatch(hub: std::sync::Weak<HubInner>, mut signals: mpsc::Receiver<Signal>) {
    while let Some(signal) = signals.recv().await {
        let Some(hub) = hub.upgrade() else { return };
        match signal {
            Signal::Event { room, payload } => {
                let Some(handle) = hub.rooms_lock().get(&room).cloned() else {
                    continue;
                };
                let Ok(head) = serde_json::from_str::<EventHead<'_>>(&payload) else {
                    tracing::warn!(%room, "ignoring an unreadable fan-out event");
                    continue;
                };
                let cmd = match (&*head.kind, head.seq, head.user.as_deref()) {
                    ("message", Some(seq), _) => RoomCmd::Message {
                        seq,
                        frame: payload.clone(),
                    },
                    ("typing" | "presence", _, Some(user)) => match UserId::parse(user) {
                        Ok(from) => RoomCmd::Ephemeral {
                            from,
                            frame: payload.clone(),
                        },
                        Err(_) => continue,
                    },
                    _ => {
                        tracing::warn!(%room, kind = %head.kind, "ignoring an unknown fan-out event");
                        continue;
                    }
                };
                handle.send_or_flag(cmd);
            }
            Signal::Resync => {
                hub.metrics.resyncs.inc();
                let handles: Vec<RoomHandle> = hub.rooms_lock().values().cloned().collect();
                for handle in handles {
                    handle.send_or_flag(RoomCmd::Resync);
                }
            }
        }
    }
}

#[derive(Debug)]
struct Member {
    conn: Arc<Conn>,
    /// The last seq this member was sent.
    cursor: Seq,
    /// False while the joining session copies catch-up pages from history.
    live: bool,
}

/// The task owning one room's state; see the module doc.
struct Sequencer {
    room: RoomId,
    hub: Arc<HubInner>,
    /// Our own handle, for gap-fill tasks to report back and for retiring.
    handle: RoomHandle,
    /// Highest seq delivered to live members; every seq up to it was delivered in order.
    head: Seq,
    /// Messages that arrived ahead of a gap, by seq.
    pending: BTreeMap<Seq, ByteString>,
    /// Whether a history read for the gap is in flight.
    filling: bool,
    /// Fills in a row that delivered nothing while messages waited in `pending`.
    stalled_fills: u32,
    members: HashMap<ConnId, Member>,
    /// The live members, by the lane of their socket's worker; `None` after a change of
    /// membership, rebuilt at the next delivery.
    by_lane: Option<Vec<LaneMembers>>,
    subscribed: bool,
}

/// Some of a room's members, all on one lane.
struct LaneMembers {
    lane: Arc<Lane>,
    conns: Arc<[Arc<Conn>]>,
}

/// `members` grouped by the lane of their socket's worker.
fn by_lane<'a>(members: impl Iterator<Item = &'a Member>) -> Vec<LaneMembers> {
    let mut lanes: Vec<(Arc<Lane>, Vec<Arc<Conn>>)> = Vec::new();
    for member in members {
        let lane = member.conn.lane();
        match lanes.iter_mut().find(|(l, _)| Arc::ptr_eq(l, lane)) {
            Some((_, conns)) => conns.push(member.conn.clone()),
            None => lanes.push((lane.clone(), vec![member.conn.clone()])),
        }
    }
    lanes
        .into_iter()
        .map(|(lane, conns)| LaneMembers {
            lane,
            conns: conns.into(),
        })
        .collect()
}

/// Hands `frame` to each lane for its members, except `except`'s connections. Each lane
/// after the first gets its own copy, so that a frame's reference count is only ever
/// touched by the worker it is written on (and the sequencer).
fn hand_over(groups: &[LaneMembers], frame: &ByteString, except: Option<&UserId>) {
    for (i, group) in groups.iter().enumerate() {
        let frame = if i == 0 {
            frame.clone()
        } else {
            ByteString::from(String::from(&**frame))
        };
        group.lane.deliver(Batch {
            frame,
            to: group.conns.clone(),
            except: except.cloned(),
        });
    }
}

impl Sequencer {
    async fn run(mut self, mut rx: mpsc::Receiver<RoomCmd>) {
        if let Err(e) = self.start().await {
            tracing::warn!(room = %self.room, error = %e, "cannot open room");
            self.refuse_queued_joins(&mut rx, &e);
        } else {
            // The first command is the join that started the room, so checking for
            // retirement after each command never retires a room before its first member.
            while let Some(cmd) = rx.recv().await {
                self.handle(cmd);
                if self.handle.dropped.swap(false, Ordering::AcqRel) {
                    self.fill();
                }
                if self.members.is_empty() && self.retire(&mut rx) {
                    break;
                }
            }
        }
        self.forget(&mut rx);
        if self.subscribed
            && let Err(e) = self.hub.fanout.unsubscribe(&self.room).await
        {
            tracing::warn!(room = %self.room, error = %e, "unsubscribe failed");
        }
        self.hub.metrics.active.dec();
    }

    /// Subscribes first, then reads the head: a message stored after the read is
    /// published after the subscription is active, so none falls between the two.
    async fn start(&mut self) -> Result<(), GatewayError> {
        self.hub
            .fanout
            .subscribe(&self.room)
            .await
            .map_err(|e| GatewayError::Unavailable(e.to_string()))?;
        self.subscribed = true;
        let page = self.hub.history.list(&self.room, None, None, 1).await?;
        self.head = page.last_seq;
        Ok(())
    }

    fn refuse_queued_joins(&mut self, rx: &mut mpsc::Receiver<RoomCmd>, error: &GatewayError) {
        rx.close();
        while let Ok(cmd) = rx.try_recv() {
            if let RoomCmd::Join { reply, .. } = cmd {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }

    /// With no members and nothing queued, removes the room from the hub. Checked under
    /// the hub's lock, which joins also take to find the room, so no join is lost.
    fn retire(&self, rx: &mut mpsc::Receiver<RoomCmd>) -> bool {
        let _rooms = self.hub.rooms_lock();
        if !rx.is_empty() || self.filling {
            return false;
        }
        rx.close();
        true
    }

    /// Removes this sequencer's entry from the hub (not a successor's).
    fn forget(&self, rx: &mut mpsc::Receiver<RoomCmd>) {
        rx.close();
        let mut rooms = self.hub.rooms_lock();
        if rooms
            .get(&self.room)
            .is_some_and(|h| Arc::ptr_eq(&h.dropped, &self.handle.dropped))
        {
            rooms.remove(&self.room);
        }
    }

    fn handle(&mut self, cmd: RoomCmd) {
        match cmd {
            RoomCmd::Join { conn, since, reply } => {
                let cursor = since.unwrap_or(self.head);
                // Ahead of our head (`since` > head) is not live either: the joining
                // session asks history whether the room really is there (a message we
                // have not heard of yet) or the client is ahead of the store.
                let live = cursor == self.head;
                let state = JoinState {
                    head: self.head,
                    live,
                };
                // Answered through the joiner's lane: whatever this room handed that lane
                // before (a frame from before a `leave`, say) is queued ahead of anything
                // the join sends (catch-up pages, `joined`).
                conn.lane().then(move || {
                    let _ = reply.send(Ok(state));
                });
                self.members.insert(conn.id, Member { conn, cursor, live });
                self.by_lane = None;
            }
            RoomCmd::GoLive {
                conn,
                cursor,
                reply,
            } => {
                let answer = match self.members.get_mut(&conn) {
                    None => GoLive::Gone,
                    Some(_) if cursor < self.head => GoLive::Behind,
                    Some(member) => {
                        member.cursor = cursor;
                        member.live = true;
                        self.by_lane = None;
                        GoLive::Live(cursor.max(self.head))
                    }
                };
                let _ = reply.send(answer);
            }
            RoomCmd::Leave { conn } => {
                if self.members.remove(&conn).is_some() {
                    self.by_lane = None;
                }
            }
            RoomCmd::Message { seq, frame } => self.on_message(seq, frame),
            RoomCmd::Ephemeral { from, frame } => {
                hand_over(self.live_by_lane(), &frame, Some(&from));
            }
            RoomCmd::Filled(result) => self.on_filled(result),
            RoomCmd::Resync => self.fill(),
        }
    }

    fn on_message(&mut self, seq: Seq, frame: ByteString) {
        if seq <= self.head {
            return;
        }
        if seq == self.head + 1 {
            self.deliver(seq, &frame);
            self.drain_pending();
            return;
        }
        if self.pending.len() < MAX_PENDING {
            self.pending.insert(seq, frame);
        }
        self.fill();
    }

    fn drain_pending(&mut self) {
        while let Some((&seq, _)) = self.pending.first_key_value() {
            if seq > self.head + 1 {
                break;
            }
            if let Some((seq, frame)) = self.pending.pop_first()
                && seq == self.head + 1
            {
                self.deliver(seq, &frame);
            }
        }
    }

    /// Sends the next message in order to every live member that has not had it. (A
    /// slow consumer is closed by its lane and leaves when its session ends.)
    fn deliver(&mut self, seq: Seq, frame: &ByteString) {
        debug_assert_eq!(seq, self.head + 1);
        self.head = seq;
        // A member whose catch-up read past `head` already has this seq; rare, so the
        // usual case reuses the cached grouping.
        if self.members.values().any(|m| m.live && m.cursor >= seq) {
            let to = by_lane(self.members.values().filter(|m| m.live && m.cursor < seq));
            hand_over(&to, frame, None);
        } else {
            hand_over(self.live_by_lane(), frame, None);
        }
        for member in self.members.values_mut() {
            if member.live && member.cursor < seq {
                member.cursor = seq;
            }
        }
    }

    /// The live members by lane, rebuilt if membership changed since the last use.
    fn live_by_lane(&mut self) -> &[LaneMembers] {
        let members = &self.members;
        self.by_lane
            .get_or_insert_with(|| by_lane(members.values().filter(|m| m.live)))
    }

    /// Starts reading the messages after `head` from history, unless a read is running.
    fn fill(&mut self) {
        if self.filling {
            return;
        }
        self.filling = true;
        self.hub.metrics.gap_fill_reads.inc();
        let history = self.hub.history.clone();
        let room = self.room.clone();
        let after = self.head;
        let tx = self.handle.tx.clone();
        self.hub.runtime.spawn(async move {
            let result = history.list(&room, None, Some(after), PAGE).await;
            let _ = tx.send(RoomCmd::Filled(result)).await;
        });
    }

    fn on_filled(&mut self, result: Result<crate::history::Page, GatewayError>) {
        self.filling = false;
        match result {
            Ok(page) => {
                let head_before = self.head;
                for m in &page.messages {
                    if m.seq == self.head + 1 {
                        self.deliver(m.seq, &message_frame(m));
                        self.hub.metrics.gap_filled_messages.inc();
                        self.drain_pending();
                    }
                }
                self.drain_pending();
                if self.head > head_before || self.pending.is_empty() {
                    self.stalled_fills = 0;
                } else {
                    self.stalled_fills += 1;
                }
                if self.stalled_fills >= MAX_STALLED_FILLS {
                    let unknown = self.pending.split_off(&(page.last_seq + 1));
                    tracing::warn!(
                        room = %self.room,
                        dropped = unknown.len(),
                        last_seq = page.last_seq,
                        "dropping fan-out messages history does not have"
                    );
                    self.stalled_fills = 0;
                }
                if self.stalled_fills > 0 {
                    // Nothing new yet: ask again after a pause, not in a tight loop.
                    self.retry_fill_later();
                } else if self.head < page.last_seq || !self.pending.is_empty() {
                    self.fill();
                }
            }
            Err(e) => {
                tracing::warn!(room = %self.room, error = %e, "gap fill failed; retrying");
                self.hub.metrics.gap_fill_failures.inc();
                self.retry_fill_later();
            }
        }
    }

    /// Asks for a resync (a fill) after [`FILL_RETRY`].
    fn retry_fill_later(&self) {
        let tx = self.handle.tx.clone();
        self.hub.runtime.spawn(async move {
            tokio::time::sleep(FILL_RETRY).await;
            let _ = tx.send(RoomCmd::Resync).await;
        });
    }
}
