//! Redis pub/sub fan-out: one channel per room (`chat:room:<room>`), one publishing and
//! one subscribing connection per gateway. Reconnects by itself, resubscribes every room,
//! then asks the rooms to resync from history (events published while disconnected are
//! lost by Redis).

use std::time::Duration;

use async_trait::async_trait;
use bytestring::ByteString;
use chat_model::RoomId;
use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::types::Builder;
use fred::types::config::{Config, ReconnectPolicy};
use tokio::sync::{Mutex, broadcast, mpsc};
use tokio::task::JoinHandle;

use super::{FanOut, FanOutError, SIGNAL_QUEUE, Signal, SubscriptionCounts};

/// Prefix of every room channel.
const CHANNEL_PREFIX: &str = "chat:room:";
/// Subscribe/unsubscribe of one room are serialised through one of these locks, so a
/// quick leave-then-join cannot reach Redis as subscribe-then-unsubscribe.
const SUBSCRIPTION_STRIPES: usize = 64;
/// Redis command timeout; a publish that takes longer fails as unavailable.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Pub/sub messages buffered inside the client before the reader falls behind.
const MESSAGE_BUFFER: usize = 4096;

/// Fan-out through a single Redis server (or a replica set behind one address).
#[derive(Debug)]
pub struct RedisFanOut {
    /// Publishes events; a connection of its own so publishing never waits behind the
    /// subscriber's traffic.
    publisher: Client,
    /// Holds the room subscriptions; fred remembers them for resubscribing.
    subscriber: SubscriberClient,
    subscriptions: SubscriptionCounts,
    stripes: Vec<Mutex<()>>,
    /// The reader and reconnect tasks, stopped when the fan-out is dropped.
    tasks: Vec<JoinHandle<()>>,
}

fn channel(room: &RoomId) -> String {
    format!("{CHANNEL_PREFIX}{room}")
}

fn unavailable(e: fred::error::Error) -> FanOutError {
    FanOutError::Unavailable(e.to_string())
}

impl RedisFanOut {
    /// Connects both connections to `url` (`redis://host:port[/db]`). Fails when Redis is
    /// unreachable at start; later outages are retried forever.
    pub async fn connect(url: &str) -> Result<(Self, mpsc::Receiver<Signal>), FanOutError> {
        let config = Config::from_url(url).map_err(unavailable)?;
        let mut builder = Builder::from_config(config);
        builder
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(5);
                c.internal_command_timeout = COMMAND_TIMEOUT;
            })
            .with_performance_config(|p| {
                p.default_command_timeout = COMMAND_TIMEOUT;
                p.broadcast_channel_capacity = MESSAGE_BUFFER;
            })
            // max_attempts 0 = retry forever; 50 ms doubling up to 2 s.
            .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2));
        let publisher = builder.build().map_err(unavailable)?;
        let subscriber = builder.build_subscriber_client().map_err(unavailable)?;
        publisher.init().await.map_err(unavailable)?;
        subscriber.init().await.map_err(unavailable)?;

        let (tx, rx) = mpsc::channel(SIGNAL_QUEUE);
        let reader = tokio::spawn(read_messages(subscriber.message_rx(), tx.clone()));
        let resubscriber = tokio::spawn(resubscribe_on_reconnect(subscriber.clone(), tx));
        let fanout = Self {
            publisher,
            subscriber,
            subscriptions: SubscriptionCounts::default(),
            stripes: (0..SUBSCRIPTION_STRIPES).map(|_| Mutex::new(())).collect(),
            tasks: vec![reader, resubscriber],
        };
        Ok((fanout, rx))
    }

    /// SUBSCRIBE, then wait until Redis has processed it. fred resolves SUBSCRIBE as
    /// soon as it is written (its confirmation arrives out of band), so a publish right
    /// after could reach Redis first and be lost. Redis answers one connection's
    /// commands in order: when the PING after it is answered, the subscription is live.
    async fn subscribe_confirmed(&self, room: &RoomId) -> Result<(), FanOutError> {
        self.subscriber
            .subscribe(channel(room))
            .await
            .map_err(unavailable)?;
        let _pong: fred::types::Value = self.subscriber.ping(None).await.map_err(unavailable)?;
        Ok(())
    }

    fn stripe(&self, room: &RoomId) -> &Mutex<()> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(room.as_str());
        &self.stripes[(hash % SUBSCRIPTION_STRIPES as u64) as usize]
    }
}

async fn read_messages(
    mut rx: broadcast::Receiver<fred::types::Message>,
    tx: mpsc::Sender<Signal>,
) {
    loop {
        let signal = match rx.recv().await {
            Ok(message) => {
                let Some(room) = message
                    .channel
                    .strip_prefix(CHANNEL_PREFIX)
                    .and_then(|r| RoomId::parse(r).ok())
                else {
                    continue;
                };
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
                Signal::Resync
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if tx.send(signal).await.is_err() {
            return;
        }
    }
}

async fn resubscribe_on_reconnect(subscriber: SubscriberClient, tx: mpsc::Sender<Signal>) {
    let mut reconnects = subscriber.reconnect_rx();
    while reconnects.recv().await.is_ok() {
        tracing::info!("redis fan-out reconnected; resubscribing");
        if let Err(e) = subscriber.resubscribe_all().await {
            tracing::warn!(error = %e, "resubscribing after reconnect failed");
        }
        // As in subscribe_confirmed: the rooms' history reads must come after the
        // subscriptions are live, or a message published in between would be missed.
        let _: Result<fred::types::Value, _> = subscriber.ping(None).await;
        // Whatever was published while we were away is only in history now.
        if tx.send(Signal::Resync).await.is_err() {
            return;
        }
    }
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
        let _order = self.stripe(room).lock().await;
        if self.subscriptions.add(room)
            && let Err(e) = self.subscribe_confirmed(room).await
        {
            self.subscriptions.remove(room);
            return Err(e);
        }
        Ok(())
    }

    async fn unsubscribe(&self, room: &RoomId) -> Result<(), FanOutError> {
        let _order = self.stripe(room).lock().await;
        if self.subscriptions.remove(room) {
            self.subscriber
                .unsubscribe(channel(room))
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    async fn publish(&self, room: &RoomId, payload: ByteString) -> Result<(), FanOutError> {
        let _receivers: i64 = self
            .publisher
            .publish(channel(room), payload.to_string())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    fn is_connected(&self) -> bool {
        self.publisher.is_connected() && self.subscriber.is_connected()
    }
}
