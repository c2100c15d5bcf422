//! The ledger client: a [`Participant`] resends until acked, reconnects and resumes on
//! its own, and records every ack and delivery for the checkers of [`crate::verdict`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chat_testkit::ws::{Closed, WsClient};
use serde_json::Value;

/// An acknowledged send.
#[derive(Debug, Clone)]
pub struct Ack {
    pub room: String,
    pub client_id: String,
    pub seq: u64,
    pub duplicate: bool,
    /// When the ack arrived.
    pub at: Instant,
}

/// Counters of one participant that another task can read while the participant is
/// busy (for tests that wait for traffic to reach a point).
#[derive(Debug, Default)]
pub struct Progress {
    /// Sends acked.
    pub acks: AtomicUsize,
    /// Sends attempted again with the same `client_id` (after an `unavailable` or
    /// `rate_limited` reply, or on a new connection).
    pub resends: AtomicUsize,
    /// Successful reconnects.
    pub reconnects: AtomicUsize,
    /// The send waiting for its ack, if any.
    in_flight: std::sync::Mutex<Option<InFlight>>,
}

/// A send waiting for its ack.
#[derive(Debug, Clone)]
pub struct InFlight {
    pub room: String,
    pub client_id: String,
    /// When it was first sent.
    pub since: Instant,
}

impl Progress {
    pub fn acks(&self) -> usize {
        self.acks.load(Ordering::Relaxed)
    }

    pub fn resends(&self) -> usize {
        self.resends.load(Ordering::Relaxed)
    }

    pub fn reconnects(&self) -> usize {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// The send waiting for its ack, if any.
    pub fn in_flight(&self) -> Option<InFlight> {
        self.in_flight_lock().clone()
    }

    fn in_flight_lock(&self) -> std::sync::MutexGuard<'_, Option<InFlight>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One chat client and everything it saw: it resends until acked, reconnects (through
/// whatever URL it was given) when its connection ends, and resumes every room with
/// `join since`.
#[derive(Debug)]
pub struct Participant {
    pub user: String,
    url: String,
    pub(crate) rooms: Vec<String>,
    client: WsClient,
    /// The gateway serving the current connection (from `hello`).
    pub gateway: String,
    /// Every gateway that served this participant, in order.
    pub gateways: Vec<String>,
    /// Highest seq received per room.
    last_seen: HashMap<String, u64>,
    /// The first seq this participant must receive per room (`last_seq` of its first
    /// `joined` + 1).
    pub(crate) first_expected: HashMap<String, u64>,
    /// `(seq, client_id)` of every `message` received, per room, in arrival order.
    pub received: HashMap<String, Vec<(u64, String)>>,
    /// `(room, seq, when)` of every `message` received, in arrival order; `when` is when
    /// this participant read it, at most one send's wait after it came.
    pub arrivals: Vec<(String, u64, Instant)>,
    pub acks: Vec<Ack>,
    /// Close codes of the connections that ended under it (`None`: no close frame).
    pub closes: Vec<Option<u16>>,
    /// How long each reconnect took, until every room was joined again.
    pub reconnects: Vec<Duration>,
    /// Replies that were retried (`unavailable`, `rate_limited`).
    pub retried_errors: usize,
    /// Live counters, shared with whoever holds [`Participant::progress`].
    progress: Arc<Progress>,
}

/// How long a participant keeps trying to reconnect or get one send acked: longer than
/// the longest outage a chaos case makes (a 30 s cut between a gateway and history).
const PATIENCE: Duration = Duration::from_secs(60);

impl Participant {
    /// Connects to `url` (a `ws://` URL with the user in it) and joins `rooms`.
    pub async fn join(user: &str, url: &str, rooms: &[&str]) -> anyhow::Result<Self> {
        let client = WsClient::connect(url).await?;
        let gateway = client.hello["gateway"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut me = Self {
            user: user.to_owned(),
            url: url.to_owned(),
            rooms: rooms.iter().map(|r| (*r).to_owned()).collect(),
            client,
            gateway: gateway.clone(),
            gateways: vec![gateway],
            last_seen: HashMap::new(),
            first_expected: HashMap::new(),
            received: HashMap::new(),
            arrivals: Vec::new(),
            acks: Vec::new(),
            closes: Vec::new(),
            reconnects: Vec::new(),
            retried_errors: 0,
            progress: Arc::default(),
        };
        for room in rooms {
            let joined = me.client.join(room, None).await?;
            let head = joined["last_seq"].as_u64().unwrap_or(0);
            me.last_seen.insert((*room).to_owned(), head);
            me.first_expected.insert((*room).to_owned(), head + 1);
            let backlog = me.client.drain_backlog();
            me.absorb(backlog);
        }
        Ok(me)
    }

    /// Live counters of this participant, to watch it from another task.
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// The rooms this participant is in.
    pub fn rooms(&self) -> &[String] {
        &self.rooms
    }

    fn absorb(&mut self, frames: Vec<Value>) {
        for frame in frames {
            if frame["type"] != "message" {
                continue;
            }
            let (Some(room), Some(seq)) = (frame["room"].as_str(), frame["seq"].as_u64()) else {
                continue;
            };
            let client_id = frame["client_id"].as_str().unwrap_or_default().to_owned();
            self.received
                .entry(room.to_owned())
                .or_default()
                .push((seq, client_id));
            self.arrivals.push((room.to_owned(), seq, Instant::now()));
            let last = self.last_seen.entry(room.to_owned()).or_insert(0);
            *last = (*last).max(seq);
        }
    }

    /// Sends one message and returns its ack: resends the same `client_id` after
    /// `unavailable`/`rate_limited`, and after reconnecting when the connection ends.
    pub async fn send(&mut self, room: &str, client_id: &str, body: &str) -> anyhow::Result<Ack> {
        let deadline = Instant::now() + PATIENCE;
        *self.progress.in_flight_lock() = Some(InFlight {
            room: room.to_owned(),
            client_id: client_id.to_owned(),
            since: Instant::now(),
        });
        let mut first = true;
        loop {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{}: {client_id} not acked within {PATIENCE:?}",
                self.user
            );
            if !std::mem::take(&mut first) {
                self.progress.resends.fetch_add(1, Ordering::Relaxed);
            }
            match self.client.send_message(room, body, client_id).await {
                Ok(reply) if reply["type"] == "ack" => {
                    let backlog = self.client.drain_backlog();
                    self.absorb(backlog);
                    let ack = Ack {
                        room: room.to_owned(),
                        client_id: client_id.to_owned(),
                        seq: reply["seq"]
                            .as_u64()
                            .ok_or_else(|| anyhow::anyhow!("ack without seq: {reply}"))?,
                        duplicate: reply["duplicate"] == true,
                        at: Instant::now(),
                    };
                    self.acks.push(ack.clone());
                    self.progress.acks.fetch_add(1, Ordering::Relaxed);
                    *self.progress.in_flight_lock() = None;
                    return Ok(ack);
                }
                Ok(reply)
                    if reply["type"] == "error"
                        && matches!(
                            reply["code"].as_str(),
                            Some("unavailable" | "rate_limited")
                        ) =>
                {
                    let backlog = self.client.drain_backlog();
                    self.absorb(backlog);
                    self.retried_errors += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(reply) => anyhow::bail!("{}: unexpected reply to send: {reply}", self.user),
                Err(e) => {
                    let code = match e.downcast_ref::<Closed>() {
                        Some(closed) => closed.code,
                        // A write or read error: a close frame may still be waiting.
                        None => tokio::time::timeout(Duration::from_secs(2), self.client.closed())
                            .await
                            .ok()
                            .and_then(Result::ok)
                            .and_then(|c| c.code),
                    };
                    self.closes.push(code);
                    self.reconnect().await?;
                }
            }
        }
    }

    /// Connects again (through the same URL) and resumes every room from the last seq
    /// received. A failed attempt (no gateway reachable yet, a `join` refused while a
    /// backend is down) is dropped and the whole sequence tried again, for up to
    /// [`PATIENCE`].
    pub async fn reconnect(&mut self) -> anyhow::Result<()> {
        let backlog = self.client.drain_backlog();
        self.absorb(backlog);
        let started = Instant::now();
        loop {
            match self.resume().await {
                Ok(()) => break,
                Err(e) if started.elapsed() > PATIENCE => {
                    anyhow::bail!("{}: no reconnect within {PATIENCE:?}: {e:#}", self.user)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        self.gateways.push(self.gateway.clone());
        self.reconnects.push(started.elapsed());
        self.progress.reconnects.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// One attempt of [`Participant::reconnect`].
    async fn resume(&mut self) -> anyhow::Result<()> {
        self.client = WsClient::connect(&self.url).await?;
        self.gateway = self.client.hello["gateway"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        for room in self.rooms.clone() {
            let since = self.last_seen.get(&room).copied().unwrap_or(0);
            let joined = self.client.join(&room, Some(since)).await;
            // Catch-up frames that came before a failed join's error are still good: they
            // move `last_seen`, so the next attempt resumes after them.
            let backlog = self.client.drain_backlog();
            self.absorb(backlog);
            joined?;
        }
        Ok(())
    }

    /// Reads until every room in `targets` was received up to its seq.
    pub async fn wait_for(
        &mut self,
        targets: &BTreeMap<String, u64>,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let behind = targets
                .iter()
                .find(|(room, seq)| self.last_seen.get(*room).copied().unwrap_or(0) < **seq);
            let Some((room, seq)) = behind else {
                return Ok(());
            };
            anyhow::ensure!(
                Instant::now() < deadline,
                "{}: {room} received up to {:?}, expected {seq}",
                self.user,
                self.last_seen.get(room)
            );
            let frame = self.client.recv().await?;
            self.absorb(vec![frame]);
        }
    }

    /// Closes the connection politely.
    pub async fn leave(self) {
        self.client.close().await;
    }
}
