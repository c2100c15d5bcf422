//! Ended sessions: closing their WebSockets and refusing their tokens.
//!
//! When accounts ends sessions early (log-out, log-out everywhere, a password change, a
//! disabled account, a reused refresh token) it announces a
//! [`Revocation`]: on the Redis channel [`REVOCATION_CHANNEL`] (classic pub/sub) when
//! `CHAT_REDIS_URL` is set, through a `tokio::sync::broadcast` channel in the all-in-one.
//! [`Revocations`] receives them ([`Revocations::subscribe_redis`],
//! [`Revocations::follow_local`]) and
//!
//! - closes every socket of this gateway whose session is listed, with 4003 and the
//!   reason's message ([`Disconnect::Revoked`]);
//! - remembers the session ids for [`REVOKED_RETENTION`] (the longest access-token
//!   lifetime), at most [`MAX_REVOKED`] of them, oldest forgotten first (counted), so that
//!   [`crate::auth::Authenticator::verify`] refuses their tokens on every path (WebSocket
//!   connect, the `auth` frame, the HTTP endpoints).
//!
//! Sockets register under their session id ([`Revocations::register`]); a map lookup per
//! announcement, nothing scans every socket.
//!
//! A missed announcement (the in-process receiver lagged, or the Redis subscriber was
//! disconnected) is logged and counted in `chat_gateway_revocation_gaps_total{cause}`:
//! the sockets of those sessions then stay open until their token expires (at most
//! `CHAT_ACCESS_TOKEN_TTL_SECS`, 15 min, plus the expiry grace), since accounts refuses
//! to refresh an ended session and so no renewal can come.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chat_model::revocation::{REVOCATION_CHANNEL, Revocation, RevocationReason};
use fred::clients::SubscriberClient;
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::conn::{Conn, ConnId, Disconnect};
use crate::metrics::TokenMetrics;

/// How long a revoked session id is remembered: the longest access-token lifetime
/// accounts allows (`CHAT_ACCESS_TOKEN_TTL_SECS` ≤ 900), after which every token of the
/// session has expired anyway.
pub const REVOKED_RETENTION: Duration = Duration::from_secs(15 * 60);
/// Most revoked session ids remembered at once (about 100 bytes each); past it the
/// oldest is forgotten first and counted in `chat_gateway_revoked_sessions_evicted_total`.
pub const MAX_REVOKED: usize = 100_000;

/// The sockets of each session on this gateway, and the recently revoked sessions.
#[derive(Debug)]
pub struct Revocations {
    inner: Mutex<Inner>,
    metrics: TokenMetrics,
}

#[derive(Debug, Default)]
struct Inner {
    /// Open sockets by session id.
    live: HashMap<String, Vec<Arc<Conn>>>,
    /// Revoked session id → when and why it was revoked.
    revoked: HashMap<String, (Instant, RevocationReason)>,
    /// The same ids, oldest first, for expiry and eviction.
    order: VecDeque<(Instant, String)>,
}

impl Inner {
    /// Forgets revocations older than [`REVOKED_RETENTION`].
    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < REVOKED_RETENTION {
                break;
            }
            if let Some((at, sid)) = self.order.pop_front()
                && self.revoked.get(&sid).map(|e| e.0) == Some(at)
            {
                self.revoked.remove(&sid);
            }
        }
    }

    fn revoked(&self, sid: &str, now: Instant) -> Option<RevocationReason> {
        self.revoked
            .get(sid)
            .filter(|(at, _)| now.duration_since(*at) < REVOKED_RETENTION)
            .map(|(_, reason)| *reason)
    }
}

impl Revocations {
    /// An empty set recording into `metrics`.
    pub fn new(metrics: TokenMetrics) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether session `sid` was revoked within [`REVOKED_RETENTION`].
    pub fn is_revoked(&self, sid: &str) -> bool {
        self.lock().revoked(sid, Instant::now()).is_some()
    }

    /// Registers `conn` as a socket of session `sid`, unless the session was revoked
    /// meanwhile (between the token's check and now): then registers nothing and
    /// returns why it was revoked.
    pub fn register(&self, sid: &str, conn: &Arc<Conn>) -> Result<(), RevocationReason> {
        let mut inner = self.lock();
        if let Some(reason) = inner.revoked(sid, Instant::now()) {
            return Err(reason);
        }
        inner
            .live
            .entry(sid.to_owned())
            .or_default()
            .push(conn.clone());
        Ok(())
    }

    /// Removes socket `conn` from session `sid`.
    pub fn unregister(&self, sid: &str, conn: ConnId) {
        let mut inner = self.lock();
        if let Some(conns) = inner.live.get_mut(sid) {
            conns.retain(|c| c.id != conn);
            if conns.is_empty() {
                inner.live.remove(sid);
            }
        }
    }

    /// Applies an announcement: remembers its sessions as revoked and closes their
    /// sockets with 4003. Returns how many sockets it closed.
    pub fn apply(&self, revocation: &Revocation) -> usize {
        self.metrics.revocations_received.inc();
        let now = Instant::now();
        let mut closed = Vec::new();
        {
            let mut inner = self.lock();
            inner.expire(now);
            for sid in &revocation.sessions {
                if inner
                    .revoked
                    .insert(sid.clone(), (now, revocation.reason))
                    .is_none()
                {
                    while inner.revoked.len() > MAX_REVOKED {
                        let Some((at, old)) = inner.order.pop_front() else {
                            break;
                        };
                        if inner.revoked.get(&old).map(|e| e.0) == Some(at) {
                            inner.revoked.remove(&old);
                            self.metrics.revoked_evicted.inc();
                        }
                    }
                }
                inner.order.push_back((now, sid.clone()));
                if let Some(conns) = inner.live.remove(sid) {
                    closed.extend(conns);
                }
            }
            // An id revoked twice has two entries in `order`; bound it like the map.
            while inner.order.len() > 2 * MAX_REVOKED {
                if let Some((at, old)) = inner.order.pop_front()
                    && inner.revoked.get(&old).map(|e| e.0) == Some(at)
                {
                    inner.revoked.remove(&old);
                    self.metrics.revoked_evicted.inc();
                }
            }
            self.metrics
                .revoked_sessions
                .set(i64::try_from(inner.revoked.len()).unwrap_or(i64::MAX));
        }
        for conn in &closed {
            conn.close(Disconnect::Revoked(revocation.reason));
        }
        if !closed.is_empty() {
            tracing::info!(
                user = %revocation.user,
                sessions = revocation.sessions.len(),
                sockets = closed.len(),
                reason = ?revocation.reason,
                "closed revoked sessions' sockets"
            );
        }
        closed.len()
    }

    /// Applies the announcements of an in-process accounts (the all-in-one) until
    /// `shutdown` or until the sender is dropped.
    pub async fn follow_local(
        self: Arc<Self>,
        mut rx: broadcast::Receiver<Revocation>,
        shutdown: CancellationToken,
    ) {
        loop {
            let received = tokio::select! {
                _ = shutdown.cancelled() => return,
                received = rx.recv() => received,
            };
            match received {
                Ok(revocation) => {
                    self.apply(&revocation);
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(
                        missed = n,
                        "revocation receiver lagged: sockets of the missed sessions stay open until their tokens expire"
                    );
                    self.metrics.gap("lagged");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Subscribes to [`REVOCATION_CHANNEL`] on `url` (the gateway's `CHAT_REDIS_URL`,
    /// same forms as the fan-out's) with a client of its own, and applies what arrives.
    /// Fails when Redis is unreachable now; later outages are retried forever, and each
    /// reconnect is logged and counted as a possible gap.
    pub async fn subscribe_redis(
        self: Arc<Self>,
        url: &str,
    ) -> Result<Vec<JoinHandle<()>>, fred::error::Error> {
        let (builder, _) = crate::fanout::redis::builder(url)?;
        let subscriber = builder.build_subscriber_client()?;
        subscriber.init().await?;
        subscribe_live(&subscriber).await?;
        let reader = tokio::spawn(read(subscriber.message_rx(), self.clone()));
        let resubscriber = tokio::spawn(resubscribe_on_reconnect(subscriber, self));
        tracing::info!(channel = REVOCATION_CHANNEL, "revocations subscribed");
        Ok(vec![reader, resubscriber])
    }
}

/// `SUBSCRIBE`, then a `PING` answered after it: the subscription is live when this
/// returns (see the fan-out's `subscribe_live`).
async fn subscribe_live(subscriber: &SubscriberClient) -> Result<(), fred::error::Error> {
    subscriber.subscribe(REVOCATION_CHANNEL).await?;
    let _pong: fred::types::Value = subscriber.ping(None).await?;
    Ok(())
}

async fn read(mut rx: broadcast::Receiver<fred::types::Message>, revocations: Arc<Revocations>) {
    loop {
        match rx.recv().await {
            Ok(message) => {
                if message.channel != REVOCATION_CHANNEL {
                    continue;
                }
                let Some(text) = message.value.as_str() else {
                    tracing::warn!("ignoring a non-text revocation");
                    continue;
                };
                match Revocation::from_json(&text) {
                    Ok(revocation) => {
                        revocations.apply(&revocation);
                    }
                    Err(e) => tracing::warn!(error = %e, "ignoring a malformed revocation"),
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "revocation reader lagged: sockets of the missed sessions stay open until their tokens expire"
                );
                revocations.metrics.gap("lagged");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

async fn resubscribe_on_reconnect(subscriber: SubscriberClient, revocations: Arc<Revocations>) {
    let mut reconnects = subscriber.reconnect_rx();
    while reconnects.recv().await.is_ok() {
        revocations.metrics.gap("reconnect");
        tracing::warn!(
            "revocation subscriber reconnected: revocations published meanwhile were missed; \
             those sessions' sockets stay open until their tokens expire"
        );
        if let Err(e) = subscribe_live(&subscriber).await {
            tracing::warn!(error = %e, "resubscribing to revocations failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use chat_model::UserId;

    use super::*;
    use crate::lane::Lane;

    fn revocation(sessions: &[&str]) -> Revocation {
        Revocation {
            user: "u1".into(),
            sessions: sessions.iter().map(|s| (*s).to_owned()).collect(),
            reason: RevocationReason::LogOutAll,
        }
    }

    #[test]
    fn closes_listed_sessions_and_remembers_them() {
        let revocations = Revocations::new(TokenMetrics::default());
        let user = UserId::parse("u1").expect("valid");
        let a = Conn::new(1, user.clone(), Lane::new());
        let b = Conn::new(2, user.clone(), Lane::new());
        let c = Conn::new(3, user, Lane::new());
        assert_eq!(revocations.register("s1", &a), Ok(()));
        assert_eq!(revocations.register("s1", &b), Ok(()));
        assert_eq!(revocations.register("s2", &c), Ok(()));
        revocations.unregister("s1", b.id);
        assert_eq!(revocations.apply(&revocation(&["s1", "s9"])), 1);
        assert_eq!(
            a.reason(),
            Some(Disconnect::Revoked(RevocationReason::LogOutAll))
        );
        assert_eq!(b.reason(), None, "unregistered before the revocation");
        assert_eq!(c.reason(), None, "another session");
        assert!(revocations.is_revoked("s1") && revocations.is_revoked("s9"));
        assert!(!revocations.is_revoked("s2"));
        // A socket of a revoked session cannot register (revoked between check and use).
        let d = Conn::new(4, UserId::parse("u1").expect("valid"), Lane::new());
        assert_eq!(
            revocations.register("s1", &d),
            Err(RevocationReason::LogOutAll)
        );
        assert_eq!(revocations.metrics.revoked_sessions.get(), 2);
        assert_eq!(revocations.metrics.revocations_received.get(), 1);
    }

    #[test]
    fn forgets_the_oldest_past_the_cap() {
        let revocations = Revocations::new(TokenMetrics::default());
        let ids: Vec<String> = (0..=MAX_REVOKED).map(|i| format!("s{i}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        revocations.apply(&revocation(&refs));
        assert!(!revocations.is_revoked("s0"), "the oldest was evicted");
        assert!(revocations.is_revoked("s1"));
        assert!(revocations.is_revoked(&format!("s{MAX_REVOKED}")));
        assert_eq!(revocations.metrics.revoked_evicted.get(), 1);
        assert_eq!(
            revocations.metrics.revoked_sessions.get(),
            i64::try_from(MAX_REVOKED).expect("fits")
        );
    }

    #[tokio::test]
    async fn a_lagging_receiver_is_counted_and_goes_on() {
        let revocations = Arc::new(Revocations::new(TokenMetrics::default()));
        let (tx, rx) = broadcast::channel(1);
        for sid in ["s1", "s2", "s3"] {
            tx.send(revocation(&[sid])).expect("a receiver");
        }
        drop(tx);
        // Returns when the channel closes, after reading what was left.
        revocations
            .clone()
            .follow_local(rx, CancellationToken::new())
            .await;
        assert_eq!(revocations.metrics.gaps("lagged"), 1);
        assert!(!revocations.is_revoked("s1"), "dropped by the lag");
        assert!(revocations.is_revoked("s3"));
    }
}
