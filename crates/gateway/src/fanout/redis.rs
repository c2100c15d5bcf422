//! Redis fan-out: one channel per room (`chat:room:<room>`), one publishing and one
//! subscribing client per gateway. Reconnects by itself, resubscribes every room, then
//! asks the rooms to resync from history (events published while disconnected are lost
//! by Redis).
//!
//! Two modes, chosen by the URL (see [`PubSubMode`]):
//!
//! - **classic** pub/sub (`SUBSCRIBE` / `PUBLISH`) on one Redis server, for
//!   `redis://host:port`;
//! - **sharded** pub/sub (`SSUBSCRIBE` / `SPUBLISH`, Redis 7) on a Redis Cluster, for
//!   `redis-cluster://host:port[?node=host2:port2...]`. A room's channel lives on the
//!   shard that owns its hash slot, so each event crosses one shard instead of being
//!   broadcast over the whole cluster bus (classic `PUBLISH` on a cluster reaches every
//!   node), and fan-out capacity grows with the number of shards.
//!
//! **Silent partitions.** A link that drops packets without resetting anything leaves a
//! subscribing connection silent and healthy-looking (it sends nothing by itself, so the
//! kernel never notices). Each client therefore has fred's unresponsive-connection check
//! ([`UNRESPONSIVE_AFTER`]), and a watch task pings both every [`LIVENESS_INTERVAL`]: an
//! answer missing for [`LIVENESS_TIMEOUT`] marks the fan-out *degraded* (logged once,
//! `chat_gateway_redis_degraded` = 1, `/readyz` unready). While degraded, publishes fail
//! at once instead of waiting for their timeout (the newest frame per room is kept), and
//! every room reads history every [`DEGRADED_POLL_INTERVAL`] (a [`Signal::Resync`]), so
//! members here still get other gateways' messages. The polling starts earlier, as soon
//! as an answer is [`SUSPECT_AFTER`] late (the link is *suspect*: nothing reported, no
//! publish held back), so the messages of a cut's first seconds do not wait for its
//! detection. When both answer again: a resync, the kept frames published (receivers
//! fill any gap before them from history), gauge 0.
//!
//! On a cluster, slots also move between shards (resharding, scaling the cluster). The
//! old owner then drops the moved slots' shard subscriptions with a `sunsubscribe` push,
//! which fred swallows, and no reconnect follows. So a sharded fan-out re-reads the slot
//! map every [`SLOT_CHECK_INTERVAL`] (and at once when its publisher is redirected),
//! subscribes again every room whose slot changed owner, and asks for a resync; every
//! [`FULL_RESUBSCRIBE_INTERVAL`] it subscribes every room again regardless, as a safety
//! net for a drop it could not see.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytestring::ByteString;
use chat_model::RoomId;
use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{ClientLike, ClusterInterface, EventInterface, PubsubInterface};
use fred::types::cluster::ClusterRouting;
use fred::types::config::{Config, ReconnectPolicy, UnresponsiveConfig};
use fred::types::{Builder, ClusterStateChange};
use tokio::sync::{Mutex, broadcast, mpsc};
use tokio::task::JoinHandle;

use super::{FanOut, FanOutError, SIGNAL_QUEUE, Signal};
use crate::counts::RefCounts;
use crate::metrics::RedisFanOutMetrics;

/// Prefix of every room channel.
const CHANNEL_PREFIX: &str = "chat:room:";
/// Subscribe/unsubscribe of one room are serialised through one of these locks, so a
/// quick leave-then-join cannot reach Redis as subscribe-then-unsubscribe.
const SUBSCRIPTION_STRIPES: usize = 64;
/// Redis command timeout; a publish that takes longer fails as unavailable.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Pub/sub messages buffered inside the client before the reader falls behind.
const MESSAGE_BUFFER: usize = 4096;
/// How often the watch task pings the publisher and the subscriber.
pub const LIVENESS_INTERVAL: Duration = Duration::from_millis(500);
/// A ping unanswered for this long marks the fan-out degraded: with two pings a second,
/// a silent link is noticed within 2.5 s, while 200 ms of added latency each way stays
/// far below it.
pub const LIVENESS_TIMEOUT: Duration = Duration::from_secs(2);
/// A ping unanswered for this long makes the link suspect: rooms start reading history
/// (as while degraded) but nothing else changes, so a slow answer costs one history
/// read per room and no false alarm. 2.5 times the round trip of a link with 200 ms
/// added each way; with [`LIVENESS_INTERVAL`], a cut's messages reach members here from
/// history within about 1.5 s of it instead of waiting for the detection.
pub const SUSPECT_AFTER: Duration = Duration::from_secs(1);
/// fred closes and reconnects a connection on which a command has waited this long
/// (checked every [`UNRESPONSIVE_CHECK`]), so a dead link is replaced, not waited on.
pub const UNRESPONSIVE_AFTER: Duration = Duration::from_secs(2);
/// How often fred looks for unresponsive connections (under half of the above).
const UNRESPONSIVE_CHECK: Duration = Duration::from_millis(500);
/// While degraded, how often every room reads history for what it missed: bounds the
/// extra delay of other gateways' messages to about a second.
pub const DEGRADED_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Rooms whose newest unpublished frame is kept while degraded; past this, frames of
/// further rooms are not kept (their members catch up on the next message or resync).
const UNPUBLISHED_ROOMS: usize = 10_000;

/// Sharded mode: how often the slot map is re-read to find rooms whose slot moved to
/// another shard. Bounds how long a moved room goes without other gateways' events
/// (the resync that follows fills what was published meanwhile). One `CLUSTER SLOTS`.
pub const SLOT_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// Sharded mode: how often every room is subscribed again, whatever the slot map says,
/// followed by a resync: the safety net for a dropped shard subscription that neither a
/// reconnect nor a slot move revealed. One `SSUBSCRIBE` per room.
pub const FULL_RESUBSCRIBE_INTERVAL: Duration = Duration::from_secs(600);

/// Which pub/sub commands carry the rooms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubSubMode {
    /// `SUBSCRIBE` / `PUBLISH` on a single Redis server (or a primary behind one address).
    Classic,
    /// `SSUBSCRIBE` / `SPUBLISH` on a Redis Cluster: each room's channel is served by the
    /// shard owning its slot.
    Sharded,
}

/// Fan-out through Redis: a single server (classic pub/sub) or a Redis Cluster (sharded
/// pub/sub).
#[derive(Debug)]
pub struct RedisFanOut {
    /// Publishes events; a connection of its own so publishing never waits behind the
    /// subscriber's traffic.
    publisher: Client,
    /// Holds the room subscriptions (in cluster mode, one connection per primary).
    subscriber: SubscriberClient,
    mode: PubSubMode,
    /// Shared with the reconnect task, which resubscribes the counted rooms.
    rooms: Arc<Rooms>,
    /// The reader and reconnect tasks, stopped when the fan-out is dropped.
    tasks: Vec<JoinHandle<()>>,
    /// Publishes, receptions, reconnects and whether connected (`chat_gateway_redis_*`).
    metrics: RedisFanOutMetrics,
    /// Whether Redis answers, as the watch task last found.
    liveness: Arc<Liveness>,
}

/// What the watch task learns about the link to Redis, and what publishing leaves for it.
#[derive(Debug, Default)]
struct Liveness {
    /// Set while a ping of the publisher or the subscriber goes unanswered.
    degraded: AtomicBool,
    /// Set while a ping has waited [`SUSPECT_AFTER`] and not yet [`LIVENESS_TIMEOUT`].
    suspect: AtomicBool,
    /// The newest frame per room whose publish failed, published again on recovery.
    unpublished: std::sync::Mutex<HashMap<RoomId, ByteString>>,
}

impl Liveness {
    fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    /// Whether rooms should read history: degraded, or a ping late enough to suspect.
    fn should_poll(&self) -> bool {
        self.is_degraded() || self.suspect.load(Ordering::Relaxed)
    }

    /// Keeps `frame` as `room`'s newest unpublished one (frames of one room are
    /// published in seq order by the session, so the last one is the newest).
    fn keep(&self, room: &RoomId, frame: ByteString) {
        let mut kept = self
            .unpublished
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if kept.len() < UNPUBLISHED_ROOMS || kept.contains_key(room) {
            kept.insert(room.clone(), frame);
        }
    }

    fn take_unpublished(&self) -> HashMap<RoomId, ByteString> {
        std::mem::take(
            &mut *self
                .unpublished
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// The rooms this gateway subscribed to, and the per-room ordering locks.
#[derive(Debug)]
struct Rooms {
    counts: RefCounts<RoomId>,
    stripes: Vec<Mutex<()>>,
}

impl Rooms {
    fn stripe(&self, room: &RoomId) -> &Mutex<()> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(room.as_str());
        &self.stripes[(hash % SUBSCRIPTION_STRIPES as u64) as usize]
    }
}

fn channel(room: &RoomId) -> String {
    format!("{CHANNEL_PREFIX}{room}")
}

fn unavailable(e: fred::error::Error) -> FanOutError {
    FanOutError::Unavailable(e.to_string())
}

/// A fred builder for `url` with the gateway's connection settings (timeouts, the
/// unresponsive-connection check, reconnecting forever with backoff), and the pub/sub
/// mode the URL selects. Shared by the fan-out and the revocation subscriber
/// ([`crate::revocations`]).
pub(crate) fn builder(url: &str) -> Result<(Builder, PubSubMode), fred::error::Error> {
    let config = Config::from_url(url)?;
    let mode = if config.server.is_clustered() {
        PubSubMode::Sharded
    } else {
        PubSubMode::Classic
    };
    let mut builder = Builder::from_config(config);
    builder
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(5);
            c.internal_command_timeout = COMMAND_TIMEOUT;
            c.unresponsive = UnresponsiveConfig {
                max_timeout: Some(UNRESPONSIVE_AFTER),
                interval: UNRESPONSIVE_CHECK,
            };
        })
        .with_performance_config(|p| {
            p.default_command_timeout = COMMAND_TIMEOUT;
            p.broadcast_channel_capacity = MESSAGE_BUFFER;
        })
        // max_attempts 0 = retry forever; 50 ms doubling up to 2 s.
        .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2));
    Ok((builder, mode))
}

impl RedisFanOut {
    /// Connects to `url`: `redis://host:port[/db]` for a single server (classic pub/sub),
    /// `redis-cluster://host:port[?node=host2:port2&...]` for a Redis Cluster (sharded
    /// pub/sub; one reachable node is enough, the others are discovered). `rediss` and
    /// `rediss-cluster` are the TLS forms where fred was built with TLS. Fails when Redis
    /// is unreachable at start; later outages are retried forever. Its work is recorded
    /// in `metrics` (`RedisFanOutMetrics::default()`: recorded, exposed nowhere).
    pub async fn connect(
        url: &str,
        metrics: RedisFanOutMetrics,
    ) -> Result<(Self, mpsc::Receiver<Signal>), FanOutError> {
        let (builder, mode) = builder(url).map_err(unavailable)?;
        let publisher = builder.build().map_err(unavailable)?;
        let subscriber = builder.build_subscriber_client().map_err(unavailable)?;
        publisher.init().await.map_err(unavailable)?;
        subscriber.init().await.map_err(unavailable)?;
        metrics.connection.watch({
            let (publisher, subscriber) = (publisher.clone(), subscriber.clone());
            move || publisher.is_connected() && subscriber.is_connected()
        });
        // After init, so the first connection is not counted; the subscriber's reconnects
        // are counted by `resubscribe_on_reconnect`.
        metrics
            .connection
            .count_reconnects(publisher.reconnect_rx());

        let rooms = Arc::new(Rooms {
            counts: RefCounts::default(),
            stripes: (0..SUBSCRIPTION_STRIPES).map(|_| Mutex::new(())).collect(),
        });
        let (tx, rx) = mpsc::channel(SIGNAL_QUEUE);
        let reader = tokio::spawn(read_messages(
            subscriber.message_rx(),
            rooms.clone(),
            tx.clone(),
            metrics.clone(),
        ));
        let resubscriber = tokio::spawn(resubscribe_on_reconnect(
            subscriber.clone(),
            mode,
            rooms.clone(),
            tx.clone(),
            metrics.clone(),
        ));
        let liveness = Arc::new(Liveness::default());
        let watcher = tokio::spawn(watch_liveness(
            publisher.clone(),
            subscriber.clone(),
            mode,
            liveness.clone(),
            tx.clone(),
            metrics.clone(),
        ));
        let mut tasks = vec![reader, resubscriber, watcher];
        if mode == PubSubMode::Sharded {
            tasks.push(tokio::spawn(follow_slot_moves(
                subscriber.clone(),
                publisher.cluster_change_rx(),
                rooms.clone(),
                tx,
            )));
        }
        tracing::info!(?mode, "redis fan-out connected");
        let fanout = Self {
            publisher,
            subscriber,
            mode,
            rooms,
            tasks,
            metrics,
            liveness,
        };
        Ok((fanout, rx))
    }

    /// The pub/sub mode the URL selected.
    pub fn mode(&self) -> PubSubMode {
        self.mode
    }
}

/// Subscribes `room` and returns once Redis has processed the subscription, so an event
/// published afterwards is delivered.
///
/// - Classic: fred resolves `SUBSCRIBE` as soon as it is written (its confirmation
///   arrives out of band), so a publish right after could reach Redis first and be lost.
///   Redis answers one connection's commands in order: when the `PING` after it is
///   answered, the subscription is live.
/// - Sharded: fred waits for the `SSUBSCRIBE` confirmation itself (it treats it as a
///   reply, to follow `MOVED` redirections; it never pipelines `SSUBSCRIBE`), and the
///   confirmation comes from the shard that owns the channel, the one `SPUBLISH` goes to.
///   A `PING` would prove nothing there: it may go to another node. One channel per
///   command: a multi-channel `SSUBSCRIBE` gets one confirmation per channel, and fred
///   would take the extra ones for the replies of later commands.
async fn subscribe_live(
    subscriber: &SubscriberClient,
    mode: PubSubMode,
    room: &RoomId,
) -> Result<(), fred::error::Error> {
    match mode {
        PubSubMode::Classic => {
            subscriber.subscribe(channel(room)).await?;
            let _pong: fred::types::Value = subscriber.ping(None).await?;
        }
        PubSubMode::Sharded => subscriber.ssubscribe(channel(room)).await?,
    }
    Ok(())
}

/// Forwards the events of counted rooms. `UNSUBSCRIBE`/`SUNSUBSCRIBE` take effect in
/// Redis a moment after `unsubscribe` returns (fred resolves them when written), so an
/// event of a room just left may still arrive: it is dropped here, as the in-process bus
/// would never have delivered it.
async fn read_messages(
    mut rx: broadcast::Receiver<fred::types::Message>,
    rooms: Arc<Rooms>,
    tx: mpsc::Sender<Signal>,
    metrics: RedisFanOutMetrics,
) {
    loop {
        // Classic messages arrive with kind `Message`, sharded ones with `SMessage`; the
        // channel name is all that matters.
        let signal = match rx.recv().await {
            Ok(message) => {
                metrics.received();
                let Some(room) = message
                    .channel
                    .strip_prefix(CHANNEL_PREFIX)
                    .and_then(|r| RoomId::parse(r).ok())
                else {
                    continue;
                };
                if !rooms.counts.contains(&room) {
                    continue;
                }
                let Some(payload) = message.value.into_string() else {
                    tracing::warn!(%room, "ignoring a non-text fan-out payload");
                    continue;
                };
                Signal::Event {
                    room,
                    payload: payload.into(),
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(dropped = n, "fan-out reader lagged; resyncing rooms");
                metrics.lagged(n);
                Signal::Resync
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if tx.send(signal).await.is_err() {
            return;
        }
    }
}

/// After every reconnect (of the server, or of any cluster node), subscribes every
/// counted room again, then signals `Resync`.
///
/// This does not use fred's `resubscribe_all`: that sends `SUBSCRIBE`/`PSUBSCRIBE` even
/// with nothing to subscribe (Redis answers those with errors, which fred then pairs
/// with the replies of later commands), and groups shard channels of one slot into one
/// `SSUBSCRIBE` (see [`subscribe_live`]).
async fn resubscribe_on_reconnect(
    subscriber: SubscriberClient,
    mode: PubSubMode,
    rooms: Arc<Rooms>,
    tx: mpsc::Sender<Signal>,
    metrics: RedisFanOutMetrics,
) {
    let mut reconnects = subscriber.reconnect_rx();
    while reconnects.recv().await.is_ok() {
        metrics.reconnected();
        // Several nodes reconnecting at once need one pass, not one each; a reconnect
        // during the pass queues another.
        while reconnects.try_recv().is_ok() {
            metrics.reconnected();
        }
        tracing::info!("redis fan-out reconnected; resubscribing");
        let result = match mode {
            PubSubMode::Classic => resubscribe_classic(&subscriber, &rooms).await,
            PubSubMode::Sharded => resubscribe_sharded(&subscriber, &rooms).await,
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "resubscribing after reconnect failed");
        }
        // The rooms' history reads must come after the subscriptions are live (ensured
        // above), or a message published in between would be missed. Whatever was
        // published while we were away is only in history now.
        if tx.send(Signal::Resync).await.is_err() {
            return;
        }
    }
}

/// One `SUBSCRIBE` with every room and a `PING` barrier. A room left while this ran may
/// have been subscribed again by it: such rooms are unsubscribed afterwards, under their
/// stripe lock.
async fn resubscribe_classic(
    subscriber: &SubscriberClient,
    rooms: &Rooms,
) -> Result<(), fred::error::Error> {
    let counted = rooms.counts.keys();
    if counted.is_empty() {
        return Ok(());
    }
    let channels: Vec<String> = counted.iter().map(channel).collect();
    subscriber.subscribe(channels).await?;
    let _pong: fred::types::Value = subscriber.ping(None).await?;
    for room in &counted {
        let _order = rooms.stripe(room).lock().await;
        if !rooms.counts.contains(room) {
            subscriber.unsubscribe(channel(room)).await?;
        }
    }
    Ok(())
}

/// One `SSUBSCRIBE` per room, each under the room's stripe lock and only while the room
/// is still counted. Rooms that failed (their shard may still be failing over) are tried
/// again a few times; after that the next reconnect of their node retries them.
async fn resubscribe_sharded(
    subscriber: &SubscriberClient,
    rooms: &Rooms,
) -> Result<(), fred::error::Error> {
    resubscribe_rooms(subscriber, rooms, rooms.counts.keys()).await
}

/// [`resubscribe_sharded`] for the rooms in `todo` only.
async fn resubscribe_rooms(
    subscriber: &SubscriberClient,
    rooms: &Rooms,
    mut todo: Vec<RoomId>,
) -> Result<(), fred::error::Error> {
    const PASSES: usize = 4;
    const PAUSE: Duration = Duration::from_secs(1);
    for pass in 1..=PASSES {
        let mut failed = Vec::new();
        let mut last_error = None;
        for room in todo {
            let _order = rooms.stripe(&room).lock().await;
            if !rooms.counts.contains(&room) {
                continue;
            }
            if let Err(e) = subscribe_live(subscriber, PubSubMode::Sharded, &room).await {
                last_error = Some(e);
                failed.push(room.clone());
            }
        }
        match last_error {
            None => return Ok(()),
            Some(e) if pass == PASSES => {
                tracing::warn!(failed = failed.len(), "rooms not resubscribed");
                return Err(e);
            }
            Some(_) => {}
        }
        todo = failed;
        tokio::time::sleep(PAUSE).await;
    }
    Ok(())
}

/// Sharded mode: keeps the shard subscriptions on the shards that own the rooms' slots.
///
/// Every [`SLOT_CHECK_INTERVAL`], and at once when the publisher's slot map changed (an
/// `SPUBLISH` redirected with `MOVED` after a slot moved), refreshes the subscriber's slot
/// map and compares it with the one of the previous check: rooms whose slot changed
/// owner are subscribed again (fred routes the `SSUBSCRIBE` to the new owner), then a
/// `Resync` lets the rooms fetch from history what was published between the move and
/// the new subscription. Every [`FULL_RESUBSCRIBE_INTERVAL`] every room is subscribed
/// again and a `Resync` follows, moved or not.
///
/// The subscriber's own cluster-change events are not followed: fred broadcasts one
/// (`Rebalance`) on every refresh, including the ones made here.
async fn follow_slot_moves(
    subscriber: SubscriberClient,
    mut publisher_changes: broadcast::Receiver<Vec<ClusterStateChange>>,
    rooms: Arc<Rooms>,
    tx: mpsc::Sender<Signal>,
) {
    let mut known = subscriber.cached_cluster_state();
    let mut check = tokio::time::interval(SLOT_CHECK_INTERVAL);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let start = tokio::time::Instant::now() + FULL_RESUBSCRIBE_INTERVAL;
    let mut full = tokio::time::interval_at(start, FULL_RESUBSCRIBE_INTERVAL);
    full.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let everything = tokio::select! {
            _ = check.tick() => false,
            _ = full.tick() => true,
            changed = publisher_changes.recv() => match changed {
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Several redirections in a row need one check.
                    while publisher_changes.try_recv().is_ok() {}
                    false
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        if let Err(e) = subscriber.sync_cluster().await {
            tracing::warn!(error = %e, "cannot refresh the cluster slot map");
            continue;
        }
        let current = subscriber.cached_cluster_state();
        let todo: Vec<RoomId> = if everything {
            rooms.counts.keys()
        } else {
            rooms
                .counts
                .keys()
                .into_iter()
                .filter(|room| owner(known.as_ref(), room) != owner(current.as_ref(), room))
                .collect()
        };
        if todo.is_empty() {
            known = current;
            continue;
        }
        if everything {
            tracing::debug!(rooms = todo.len(), "periodic shard resubscription");
        } else {
            tracing::info!(
                rooms = todo.len(),
                "room slots moved to other shards; resubscribing"
            );
        }
        match resubscribe_rooms(&subscriber, &rooms, todo).await {
            Ok(()) => known = current,
            // Keep the old map: the next check finds the same rooms moved and retries.
            Err(e) => tracing::warn!(error = %e, "resubscribing moved rooms failed"),
        }
        // As after a reconnect: the subscriptions are live, so history now has
        // everything that the dropped subscriptions missed.
        if tx.send(Signal::Resync).await.is_err() {
            return;
        }
    }
}

/// Pings the publisher and the subscriber every [`LIVENESS_INTERVAL`] and keeps
/// [`Liveness::degraded`] (and its gauge) true while either misses an answer for
/// [`LIVENESS_TIMEOUT`]. While degraded, or while a ping has waited [`SUSPECT_AFTER`],
/// it asks every room to read history every [`DEGRADED_POLL_INTERVAL`] (at once when
/// either begins); on recovery it asks once more and publishes the newest frame of every
/// room whose publish failed. Logs the transitions only, so a flapping link writes two
/// lines per flap at most.
async fn watch_liveness(
    publisher: Client,
    subscriber: SubscriberClient,
    mode: PubSubMode,
    liveness: Arc<Liveness>,
    tx: mpsc::Sender<Signal>,
    metrics: RedisFanOutMetrics,
) {
    // Polling runs on its own clock: a probe waits up to LIVENESS_TIMEOUT for its pongs.
    let poll = async {
        let mut tick = tokio::time::interval(DEGRADED_POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if liveness.should_poll() && tx.send(Signal::Resync).await.is_err() {
                return;
            }
        }
    };
    let probe = async {
        let mut tick = tokio::time::interval(LIVENESS_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut since = tokio::time::Instant::now();
        loop {
            tick.tick().await;
            let pings = async {
                tokio::join!(
                    answers(publisher.ping::<fred::types::Value>(None)),
                    answers(subscriber.ping::<fred::types::Value>(None)),
                )
            };
            tokio::pin!(pings);
            let (published, subscribed) = tokio::select! {
                answered = &mut pings => answered,
                () = tokio::time::sleep(SUSPECT_AFTER) => {
                    // Late: read history now rather than after the detection. (While
                    // degraded the polling runs anyway.)
                    let newly = !liveness.suspect.swap(true, Ordering::Relaxed);
                    if newly && !liveness.is_degraded() {
                        tracing::debug!("redis ping late; rooms read history until it answers");
                        if tx.send(Signal::Resync).await.is_err() {
                            return;
                        }
                    }
                    pings.await
                }
            };
            liveness.suspect.store(false, Ordering::Relaxed);
            let alive =
                published && subscribed && publisher.is_connected() && subscriber.is_connected();
            match (liveness.degraded.swap(!alive, Ordering::Relaxed), alive) {
                (false, false) => {
                    since = tokio::time::Instant::now();
                    metrics.set_degraded(true);
                    tracing::warn!(
                        publisher = published,
                        subscriber = subscribed,
                        "redis fan-out unresponsive; rooms read history every \
                         {DEGRADED_POLL_INTERVAL:?} until it answers"
                    );
                    // Poll at once rather than at the next tick.
                    if tx.send(Signal::Resync).await.is_err() {
                        return;
                    }
                }
                (true, true) => {
                    metrics.set_degraded(false);
                    let kept = liveness.take_unpublished();
                    tracing::info!(
                        after = ?since.elapsed(),
                        republished = kept.len(),
                        "redis fan-out answers again"
                    );
                    // What the outage hid from pub/sub is in history now.
                    if tx.send(Signal::Resync).await.is_err() {
                        return;
                    }
                    for (room, frame) in kept {
                        let published: Result<i64, _> = match mode {
                            PubSubMode::Classic => {
                                publisher.publish(channel(&room), frame.to_string()).await
                            }
                            PubSubMode::Sharded => {
                                publisher.spublish(channel(&room), frame.to_string()).await
                            }
                        };
                        metrics.published(published.is_ok());
                    }
                }
                _ => {}
            }
        }
    };
    tokio::select! {
        () = poll => {}
        () = probe => {}
    }
}

/// Whether `ping` is answered within [`LIVENESS_TIMEOUT`].
async fn answers<T>(
    ping: impl std::future::Future<Output = Result<T, fred::error::Error>>,
) -> bool {
    matches!(
        tokio::time::timeout(LIVENESS_TIMEOUT, ping).await,
        Ok(Ok(_))
    )
}

/// The primary serving `room`'s channel in `map`, if it is known.
fn owner(map: Option<&ClusterRouting>, room: &RoomId) -> Option<fred::types::config::Server> {
    let slot = ClusterRouting::hash_key(channel(room).as_bytes());
    map?.get_server(slot).cloned()
}

impl Drop for RedisFanOut {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        let publisher = self.publisher.clone();
        let subscriber = self.subscriber.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = subscriber.quit().await;
                let _ = publisher.quit().await;
            });
        }
    }
}

#[async_trait]
impl FanOut for RedisFanOut {
    async fn subscribe(&self, room: &RoomId) -> Result<(), FanOutError> {
        let _order = self.rooms.stripe(room).lock().await;
        if self.rooms.counts.add(room)
            && let Err(e) = subscribe_live(&self.subscriber, self.mode, room).await
        {
            self.rooms.counts.remove(room);
            return Err(unavailable(e));
        }
        Ok(())
    }

    async fn unsubscribe(&self, room: &RoomId) -> Result<(), FanOutError> {
        let _order = self.rooms.stripe(room).lock().await;
        if self.rooms.counts.remove(room) {
            match self.mode {
                PubSubMode::Classic => self.subscriber.unsubscribe(channel(room)).await,
                PubSubMode::Sharded => self.subscriber.sunsubscribe(channel(room)).await,
            }
            .map_err(unavailable)?;
        }
        Ok(())
    }

    async fn publish(&self, room: &RoomId, payload: ByteString) -> Result<(), FanOutError> {
        if self.liveness.is_degraded() {
            // Waiting out the command timeout would hold up the sender's next message;
            // the frame goes out when Redis answers again.
            self.metrics.published(false);
            self.liveness.keep(room, payload);
            return Err(FanOutError::Deferred(
                "redis unresponsive; published when it answers again".into(),
            ));
        }
        let publish = async {
            match self.mode {
                PubSubMode::Classic => {
                    self.publisher
                        .publish::<i64, _, _>(channel(room), payload.to_string())
                        .await
                }
                PubSubMode::Sharded => {
                    self.publisher
                        .spublish::<i64, _, _>(channel(room), payload.to_string())
                        .await
                }
            }
            .map_err(unavailable)
        };
        // A publish unanswered for as long as a ping may be means the same as an
        // unanswered ping: the link is down. Waiting out the command timeout (5 s) would
        // hold up the sender's next message until then; the frame is kept instead.
        let published = match tokio::time::timeout(LIVENESS_TIMEOUT, publish).await {
            Ok(published) => published,
            Err(_) => Err(FanOutError::Unavailable(format!(
                "redis did not answer a publish within {LIVENESS_TIMEOUT:?}"
            ))),
        };
        self.metrics.published(published.is_ok());
        if published.is_err() {
            self.liveness.keep(room, payload);
        }
        published.map(|_| ())
    }

    fn is_connected(&self) -> bool {
        self.publisher.is_connected()
            && self.subscriber.is_connected()
            && !self.liveness.is_degraded()
    }
}
