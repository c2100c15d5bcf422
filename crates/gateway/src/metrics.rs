//! The gateway's metrics. The eight compatibility metrics (docs/observability.md) and
//! the gRPC client families come from `chat-metrics`; the gateway's own are under the
//! `chat_gateway` prefix:
//!
//! - `chat_gateway_disconnects_total{reason}`: WebSocket sessions ended, by why:
//!   `normal` (the client closed or the connection broke), `going_away` (shutdown, 1001),
//!   `slow_consumer` (outbound queue full, 1013), `policy` (protocol violation, 1008),
//!   `rate_limited` (kept flooding past the send rate limit, 1008), `too_big` (1009),
//!   `idle` (no traffic for 60 s), `token_expired` (4001: the access token expired and
//!   was not renewed), `revoked` (4003: accounts ended the session).
//! - `chat_gateway_upgrades_refused_total{reason}`: WebSocket upgrades answered with an
//!   error before any session started: `at_capacity` (503, `CHAT_MAX_CONNECTIONS`
//!   reached), `origin` (403, not in `CHAT_ALLOWED_ORIGINS`), `shutting_down` (503).
//!   Refused tokens show as 401 in `http_requests_total{endpoint="/v1/ws"}`.
//! - `chat_gateway_slow_consumer_disconnects_total`: the `slow_consumer` ones alone, the
//!   number to alert on.
//! - `chat_gateway_rate_limited_frames_total`: frames refused with `rate_limited` by the
//!   per-connection send rate limit.
//! - `chat_gateway_typing_throttled_total`: `typing` frames dropped because the same
//!   connection relayed one to the same room less than a second before.
//! - `chat_gateway_online_users`: distinct users with at least one WebSocket on this
//!   gateway (the sum over gateways counts a user once per gateway they are on).
//! - `chat_gateway_presence_lease_lapses_total`: heartbeats that found the gateway's
//!   presence lease lapsed (presence declared it dead, its users offline) and reported
//!   its room memberships again.
//! - `chat_gateway_rooms_active`: rooms with a sequencer (local members) on this gateway.
//! - `chat_gateway_gap_fill_reads_total`: history reads a room made to fill a gap in
//!   seqs or to check after a resync; `chat_gateway_gap_filled_messages_total`: messages
//!   those reads delivered (missed by fan-out); `chat_gateway_gap_fill_failures_total`:
//!   such reads that failed (retried after 500 ms).
//! - `chat_gateway_resyncs_total`: resync signals from fan-out (reconnects, lag).
//! - `chat_gateway_catchup_messages_total`: messages replayed to joins with `since`.
//! - `chat_gateway_token_renewals_total{result}`: `auth` frames: `ok`, `invalid`,
//!   `expired`, `revoked`, `other_user` (see [`Renewal`]).
//! - `chat_gateway_revocations_received_total`, `chat_gateway_revoked_sessions` (the
//!   remembered revoked session ids), `chat_gateway_revoked_sessions_evicted_total` (forgotten
//!   early, the set being full), `chat_gateway_revocation_gaps_total{cause}` (`lagged`,
//!   `reconnect`: announcements may have been missed). See [`crate::revocations`].
//! - `chat_gateway_redis_*` (Redis fan-out only, see [`RedisFanOutMetrics`]):
//!   `publishes_total{result}`, `received_total`, `reconnects_total` (publisher and
//!   subscriber), `reader_lagged_total`, and `connected` (1 while both Redis connections
//!   are up, read at scrape time).

use chat_metrics::{GrpcMetrics, HttpMetrics, Metrics, RedisConnectionMetrics, WsMetrics};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::conn::Disconnect;

/// Every metric the gateway moves; cheap to clone (clones share the series).
#[derive(Debug, Clone, Default)]
pub struct GatewayMetrics {
    /// `http_requests_total`, `http_request_duration_seconds` (the actix middleware).
    pub http: HttpMetrics,
    /// The `ws_*` compatibility families (sessions).
    pub ws: WsMetrics,
    /// `grpc_client_*` (the history and presence clients).
    pub grpc: GrpcMetrics,
    /// Session ends and frame limits.
    pub sessions: SessionMetrics,
    /// Room sequencers.
    pub rooms: RoomMetrics,
    /// `chat_gateway_online_users` (the presence tracker).
    pub online_users: Gauge,
    /// `chat_gateway_presence_lease_lapses_total` (the presence heartbeats).
    pub presence_lease_lapses: Counter,
    /// Token renewals on open sockets and revoked sessions.
    pub tokens: TokenMetrics,
}

impl GatewayMetrics {
    /// Takes the shared families of `metrics` and registers the gateway's own under the
    /// `chat_gateway` prefix.
    pub fn register(metrics: &mut Metrics) -> Self {
        let registry = metrics.registry.sub_registry_with_prefix("chat_gateway");
        let online_users = Gauge::default();
        registry.register(
            "online_users",
            "Distinct users with at least one WebSocket connection on this gateway",
            online_users.clone(),
        );
        let presence_lease_lapses = Counter::default();
        registry.register(
            "presence_lease_lapses",
            "Heartbeats that found this gateway's presence lease lapsed (presence declared \
             it dead and its users offline) and reported its room memberships again",
            presence_lease_lapses.clone(),
        );
        let gateway = Self {
            http: metrics.http.clone(),
            ws: metrics.ws.clone(),
            grpc: metrics.grpc.clone(),
            sessions: SessionMetrics::register(registry),
            rooms: RoomMetrics::register(registry),
            online_users,
            presence_lease_lapses,
            tokens: TokenMetrics::register(registry),
        };
        // Routes every gateway serves, present from the first scrape.
        for (endpoint, status) in [
            ("/v1/ws", 101),
            ("/healthz", 200),
            ("/readyz", 200),
            ("/metrics", 200),
        ] {
            gateway.http.declare("GET", endpoint, status);
        }
        gateway
    }
}

/// Labels of the disconnect counter.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// See [`Disconnect`].
    pub reason: &'static str,
}

/// The label value of a close reason.
fn reason_label(reason: Disconnect) -> &'static str {
    match reason {
        Disconnect::Normal => "normal",
        Disconnect::GoingAway => "going_away",
        Disconnect::SlowConsumer => "slow_consumer",
        Disconnect::Policy => "policy",
        Disconnect::Flooding => "rate_limited",
        Disconnect::TooBig => "too_big",
        Disconnect::Idle => "idle",
        Disconnect::TokenExpired => "token_expired",
        Disconnect::Revoked(_) => "revoked",
    }
}

/// Why a WebSocket upgrade was refused before a session started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `CHAT_MAX_CONNECTIONS` reached (503).
    AtCapacity,
    /// `Origin` not in `CHAT_ALLOWED_ORIGINS` (403).
    Origin,
    /// The gateway is draining (503).
    ShuttingDown,
}

impl Refusal {
    const ALL: [Self; 3] = [Self::AtCapacity, Self::Origin, Self::ShuttingDown];

    fn label(self) -> &'static str {
        match self {
            Self::AtCapacity => "at_capacity",
            Self::Origin => "origin",
            Self::ShuttingDown => "shutting_down",
        }
    }
}

/// How sessions end, upgrades refused, and frames refused by limits.
#[derive(Debug, Clone)]
pub struct SessionMetrics {
    disconnects: Family<ReasonLabels, Counter>,
    upgrades_refused: Family<ReasonLabels, Counter>,
    slow_consumers: Counter,
    rate_limited: Counter,
    typing_throttled: Counter,
}

impl Default for SessionMetrics {
    fn default() -> Self {
        let metrics = Self {
            disconnects: Family::default(),
            upgrades_refused: Family::default(),
            slow_consumers: Counter::default(),
            rate_limited: Counter::default(),
            typing_throttled: Counter::default(),
        };
        for reason in [
            Disconnect::Normal,
            Disconnect::GoingAway,
            Disconnect::SlowConsumer,
            Disconnect::Policy,
            Disconnect::Flooding,
            Disconnect::TooBig,
            Disconnect::Idle,
            Disconnect::TokenExpired,
            Disconnect::Revoked(chat_model::revocation::RevocationReason::LogOut),
        ] {
            let _ = metrics.disconnects.get_or_create(&ReasonLabels {
                reason: reason_label(reason),
            });
        }
        for refusal in Refusal::ALL {
            let _ = metrics.upgrades_refused.get_or_create(&ReasonLabels {
                reason: refusal.label(),
            });
        }
        metrics
    }
}

impl SessionMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "disconnects",
            "WebSocket sessions ended, by reason: normal, going_away (1001), slow_consumer (1013), policy (1008), rate_limited (1008), too_big (1009), idle, token_expired (4001), revoked (4003)",
            metrics.disconnects.clone(),
        );
        registry.register(
            "upgrades_refused",
            "WebSocket upgrades refused before a session started, by reason: at_capacity (503), origin (403), shutting_down (503)",
            metrics.upgrades_refused.clone(),
        );
        registry.register(
            "slow_consumer_disconnects",
            "WebSocket sessions closed with 1013 because their outbound queue was full",
            metrics.slow_consumers.clone(),
        );
        registry.register(
            "rate_limited_frames",
            "Frames refused by the per-connection send rate limit",
            metrics.rate_limited.clone(),
        );
        registry.register(
            "typing_throttled",
            "Typing frames dropped because the connection relayed one to the room less than a second before",
            metrics.typing_throttled.clone(),
        );
        metrics
    }

    /// A session ended for `reason`.
    pub fn disconnected(&self, reason: Disconnect) {
        self.disconnects
            .get_or_create(&ReasonLabels {
                reason: reason_label(reason),
            })
            .inc();
        if reason == Disconnect::SlowConsumer {
            self.slow_consumers.inc();
        }
    }

    /// A WebSocket upgrade was refused.
    pub fn upgrade_refused(&self, refusal: Refusal) {
        self.upgrades_refused
            .get_or_create(&ReasonLabels {
                reason: refusal.label(),
            })
            .inc();
    }

    /// A frame was refused with `rate_limited`.
    pub fn rate_limited(&self) {
        self.rate_limited.inc();
    }

    /// A `typing` frame was dropped by the per-room interval.
    pub fn typing_throttled(&self) {
        self.typing_throttled.inc();
    }
}

/// Room sequencers, gap fills and catch-up.
#[derive(Debug, Clone, Default)]
pub struct RoomMetrics {
    /// Rooms with a running sequencer.
    pub active: Gauge,
    /// History reads started to fill a gap or check after a resync.
    pub gap_fill_reads: Counter,
    /// Messages delivered from those reads.
    pub gap_filled_messages: Counter,
    /// Those reads that failed.
    pub gap_fill_failures: Counter,
    /// `Resync` signals received from fan-out.
    pub resyncs: Counter,
    /// Messages replayed to joins with `since`.
    pub catchup_messages: Counter,
}

impl RoomMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "rooms_active",
            "Rooms with local members, each with its sequencer, on this gateway",
            metrics.active.clone(),
        );
        registry.register(
            "gap_fill_reads",
            "History reads made by rooms to fill a gap in seqs or to check after a resync",
            metrics.gap_fill_reads.clone(),
        );
        registry.register(
            "gap_filled_messages",
            "Messages delivered from gap-fill reads, i.e. missed by fan-out",
            metrics.gap_filled_messages.clone(),
        );
        registry.register(
            "gap_fill_failures",
            "Gap-fill reads that failed (retried after 500 ms)",
            metrics.gap_fill_failures.clone(),
        );
        registry.register(
            "resyncs",
            "Resync signals from fan-out (after a reconnect or a lagging receiver); each makes every room check history",
            metrics.resyncs.clone(),
        );
        registry.register(
            "catchup_messages",
            "Messages replayed from history to joins with since",
            metrics.catchup_messages.clone(),
        );
        metrics
    }
}

/// Labels of the revocation gap counter.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabels {
    /// `lagged` or `reconnect`.
    pub cause: &'static str,
}

/// How an `auth` frame ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Accepted: the socket runs on the new token.
    Ok,
    /// The token did not verify (bad signature, unknown key, malformed, too large).
    Invalid,
    /// The token had expired already.
    Expired,
    /// The token's session was revoked.
    Revoked,
    /// A valid token of another user.
    OtherUser,
}

impl Renewal {
    const ALL: [Self; 5] = [
        Self::Ok,
        Self::Invalid,
        Self::Expired,
        Self::Revoked,
        Self::OtherUser,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Invalid => "invalid",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
            Self::OtherUser => "other_user",
        }
    }
}

/// Access tokens on live sockets: renewals, revocations, the revoked-session set.
#[derive(Debug, Clone, Default)]
pub struct TokenMetrics {
    renewals: Family<ResultLabels, Counter>,
    /// Revocation announcements received (one per ended-sessions event).
    pub revocations_received: Counter,
    /// Session ids currently remembered as revoked.
    pub revoked_sessions: Gauge,
    /// Revoked session ids forgotten early because the set was full.
    pub revoked_evicted: Counter,
    gaps: Family<CauseLabels, Counter>,
}

impl TokenMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        for renewal in Renewal::ALL {
            let _ = metrics.renewals.get_or_create(&ResultLabels {
                result: renewal.label(),
            });
        }
        for cause in ["lagged", "reconnect"] {
            let _ = metrics.gaps.get_or_create(&CauseLabels { cause });
        }
        registry.register(
            "token_renewals",
            "auth frames on open WebSockets, by result: ok, invalid, expired, revoked, other_user",
            metrics.renewals.clone(),
        );
        registry.register(
            "revocations_received",
            "Announcements of ended sessions received from accounts (Redis or in-process)",
            metrics.revocations_received.clone(),
        );
        registry.register(
            "revoked_sessions",
            "Session ids remembered as revoked (their tokens are refused for 15 min)",
            metrics.revoked_sessions.clone(),
        );
        registry.register(
            "revoked_sessions_evicted",
            "Revoked session ids forgotten before 15 min because the set was full",
            metrics.revoked_evicted.clone(),
        );
        registry.register(
            "revocation_gaps",
            "Times revocations may have been missed, by cause: lagged (in-process receiver fell behind), reconnect (Redis subscriber reconnected)",
            metrics.gaps.clone(),
        );
        metrics
    }

    /// An `auth` frame ended with `result`.
    pub fn renewal(&self, result: Renewal) {
        self.renewals
            .get_or_create(&ResultLabels {
                result: result.label(),
            })
            .inc();
    }

    /// Revocations may have been missed (`lagged` or `reconnect`).
    pub fn gap(&self, cause: &'static str) {
        self.gaps.get_or_create(&CauseLabels { cause }).inc();
    }

    /// How many gaps of `cause` were counted.
    #[cfg(test)]
    pub(crate) fn gaps(&self, cause: &'static str) -> u64 {
        self.gaps.get_or_create(&CauseLabels { cause }).get()
    }
}

/// Labels of the publish counter.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `error`.
    pub result: &'static str,
}

/// The Redis fan-out's metrics (prefix `chat_gateway_redis`); registered only when the
/// gateway uses Redis, so an in-process gateway has no `connected` series to alert on.
#[derive(Debug, Clone, Default)]
pub struct RedisFanOutMetrics {
    publishes: Family<ResultLabels, Counter>,
    received: Counter,
    lagged: Counter,
    degraded: Gauge,
    /// `connected` (publisher and subscriber both up) and `reconnects_total`.
    pub connection: RedisConnectionMetrics,
}

impl RedisFanOutMetrics {
    /// Registers the families in `registry` (give it the `chat_gateway_redis` prefix).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        for result in ["ok", "error"] {
            let _ = metrics.publishes.get_or_create(&ResultLabels { result });
        }
        registry.register(
            "publishes",
            "Room events published to Redis, by result (ok, error)",
            metrics.publishes.clone(),
        );
        registry.register(
            "received",
            "Room events received from Redis pub/sub",
            metrics.received.clone(),
        );
        registry.register(
            "reader_lagged",
            "Events dropped because this gateway read Redis pub/sub too slowly (a resync follows)",
            metrics.lagged.clone(),
        );
        registry.register(
            "degraded",
            "1 while Redis does not answer the fan-out's pings (rooms then read history every second instead of waiting for pub/sub), else 0",
            metrics.degraded.clone(),
        );
        Self {
            connection: RedisConnectionMetrics::register(
                registry,
                "1 while the Redis fan-out's publishing and subscribing connections are both up, else 0.",
                "Reconnections of the Redis publisher and subscriber (a subscriber reconnect is followed by resubscribing and a resync)",
            ),
            ..metrics
        }
    }

    /// A publish finished.
    pub fn published(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.publishes.get_or_create(&ResultLabels { result }).inc();
    }

    /// An event arrived from Redis.
    pub fn received(&self) {
        self.received.inc();
    }

    /// The subscriber reconnected.
    pub fn reconnected(&self) {
        self.connection.reconnected();
    }

    /// The fan-out became degraded (Redis silent) or recovered.
    pub fn set_degraded(&self, degraded: bool) {
        self.degraded.set(i64::from(degraded));
    }

    /// The reader fell behind and `n` events were dropped.
    pub fn lagged(&self, n: u64) {
        self.lagged.inc_by(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_lines() {
        let mut metrics = Metrics::new("gateway");
        let gateway = GatewayMetrics::register(&mut metrics);
        let redis = RedisFanOutMetrics::register(
            metrics
                .registry
                .sub_registry_with_prefix("chat_gateway_redis"),
        );
        gateway.sessions.disconnected(Disconnect::SlowConsumer);
        gateway.sessions.disconnected(Disconnect::Normal);
        gateway.sessions.disconnected(Disconnect::Flooding);
        gateway.sessions.disconnected(Disconnect::Revoked(
            chat_model::revocation::RevocationReason::PasswordChanged,
        ));
        gateway.tokens.renewal(Renewal::Ok);
        gateway.tokens.renewal(Renewal::OtherUser);
        gateway.tokens.gap("reconnect");
        gateway.tokens.revocations_received.inc();
        gateway.sessions.upgrade_refused(Refusal::AtCapacity);
        gateway.sessions.rate_limited();
        gateway.sessions.typing_throttled();
        gateway.rooms.active.inc();
        gateway.rooms.gap_fill_reads.inc();
        gateway.rooms.gap_filled_messages.inc_by(3);
        gateway.online_users.inc();
        redis.published(true);
        redis.received();
        let text = chat_metrics::exposition(&metrics.registry);
        let expected = r#"# HELP chat_gateway_disconnects_total WebSocket sessions ended, by reason: normal, going_away (1001), slow_consumer (1013), policy (1008), rate_limited (1008), too_big (1009), idle, token_expired (4001), revoked (4003).
# TYPE chat_gateway_disconnects_total counter
chat_gateway_disconnects_total{reason="normal"} 1
chat_gateway_disconnects_total{reason="going_away"} 0
chat_gateway_disconnects_total{reason="slow_consumer"} 1
chat_gateway_disconnects_total{reason="policy"} 0
chat_gateway_disconnects_total{reason="rate_limited"} 1
chat_gateway_disconnects_total{reason="too_big"} 0
chat_gateway_disconnects_total{reason="idle"} 0
chat_gateway_disconnects_total{reason="token_expired"} 0
chat_gateway_disconnects_total{reason="revoked"} 1
# TYPE chat_gateway_upgrades_refused_total counter
chat_gateway_upgrades_refused_total{reason="at_capacity"} 1
chat_gateway_upgrades_refused_total{reason="origin"} 0
chat_gateway_upgrades_refused_total{reason="shutting_down"} 0
# TYPE chat_gateway_slow_consumer_disconnects_total counter
chat_gateway_slow_consumer_disconnects_total 1
# HELP chat_gateway_rate_limited_frames_total Frames refused by the per-connection send rate limit.
# TYPE chat_gateway_rate_limited_frames_total counter
chat_gateway_rate_limited_frames_total 1
chat_gateway_typing_throttled_total 1
# TYPE chat_gateway_online_users gauge
chat_gateway_online_users 1
# TYPE chat_gateway_presence_lease_lapses_total counter
chat_gateway_presence_lease_lapses_total 0
# TYPE chat_gateway_rooms_active gauge
chat_gateway_rooms_active 1
chat_gateway_gap_fill_reads_total 1
chat_gateway_gap_filled_messages_total 3
chat_gateway_gap_fill_failures_total 0
chat_gateway_resyncs_total 0
chat_gateway_catchup_messages_total 0
chat_gateway_token_renewals_total{result="ok"} 1
chat_gateway_token_renewals_total{result="invalid"} 0
chat_gateway_token_renewals_total{result="expired"} 0
chat_gateway_token_renewals_total{result="revoked"} 0
chat_gateway_token_renewals_total{result="other_user"} 1
chat_gateway_revocations_received_total 1
chat_gateway_revoked_sessions 0
chat_gateway_revoked_sessions_evicted_total 0
chat_gateway_revocation_gaps_total{cause="lagged"} 0
chat_gateway_revocation_gaps_total{cause="reconnect"} 1
# TYPE chat_gateway_redis_publishes_total counter
chat_gateway_redis_publishes_total{result="ok"} 1
chat_gateway_redis_publishes_total{result="error"} 0
chat_gateway_redis_received_total 1
chat_gateway_redis_reconnects_total 0
chat_gateway_redis_reader_lagged_total 0
# HELP chat_gateway_redis_connected 1 while the Redis fan-out's publishing and subscribing connections are both up, else 0.
# TYPE chat_gateway_redis_connected gauge
chat_gateway_redis_connected 0
http_requests_total{method="GET",endpoint="/v1/ws",status="101"} 0
http_requests_total{method="GET",endpoint="/metrics",status="200"} 0
# TYPE ws_connections_active gauge
# TYPE ws_message_latency_seconds histogram"#;
        assert_eq!(
            chat_metrics::missing_lines(&text, expected),
            Vec::<&str>::new(),
            "{text}"
        );
        // Every HELP and TYPE line of the gateway's own families (the shared ones are
        // checked in chat-metrics).
        let described = r#"# HELP chat_gateway_online_users Distinct users with at least one WebSocket connection on this gateway.
# TYPE chat_gateway_online_users gauge
# HELP chat_gateway_presence_lease_lapses_total Heartbeats that found this gateway's presence lease lapsed (presence declared it dead and its users offline) and reported its room memberships again.
# HELP chat_gateway_disconnects_total WebSocket sessions ended, by reason: normal, going_away (1001), slow_consumer (1013), policy (1008), rate_limited (1008), too_big (1009), idle, token_expired (4001), revoked (4003).
# TYPE chat_gateway_disconnects_total counter
# HELP chat_gateway_upgrades_refused_total WebSocket upgrades refused before a session started, by reason: at_capacity (503), origin (403), shutting_down (503).
# TYPE chat_gateway_upgrades_refused_total counter
# HELP chat_gateway_slow_consumer_disconnects_total WebSocket sessions closed with 1013 because their outbound queue was full.
# TYPE chat_gateway_slow_consumer_disconnects_total counter
# HELP chat_gateway_rate_limited_frames_total Frames refused by the per-connection send rate limit.
# TYPE chat_gateway_rate_limited_frames_total counter
# HELP chat_gateway_typing_throttled_total Typing frames dropped because the connection relayed one to the room less than a second before.
# TYPE chat_gateway_typing_throttled_total counter
# HELP chat_gateway_rooms_active Rooms with local members, each with its sequencer, on this gateway.
# TYPE chat_gateway_rooms_active gauge
# HELP chat_gateway_gap_fill_reads_total History reads made by rooms to fill a gap in seqs or to check after a resync.
# TYPE chat_gateway_gap_fill_reads_total counter
# HELP chat_gateway_gap_filled_messages_total Messages delivered from gap-fill reads, i.e. missed by fan-out.
# TYPE chat_gateway_gap_filled_messages_total counter
# HELP chat_gateway_gap_fill_failures_total Gap-fill reads that failed (retried after 500 ms).
# TYPE chat_gateway_gap_fill_failures_total counter
# HELP chat_gateway_resyncs_total Resync signals from fan-out (after a reconnect or a lagging receiver); each makes every room check history.
# TYPE chat_gateway_resyncs_total counter
# HELP chat_gateway_catchup_messages_total Messages replayed from history to joins with since.
# TYPE chat_gateway_catchup_messages_total counter
# HELP chat_gateway_token_renewals_total auth frames on open WebSockets, by result: ok, invalid, expired, revoked, other_user.
# TYPE chat_gateway_token_renewals_total counter
# HELP chat_gateway_revocations_received_total Announcements of ended sessions received from accounts (Redis or in-process).
# TYPE chat_gateway_revocations_received_total counter
# HELP chat_gateway_revoked_sessions Session ids remembered as revoked (their tokens are refused for 15 min).
# TYPE chat_gateway_revoked_sessions gauge
# HELP chat_gateway_revoked_sessions_evicted_total Revoked session ids forgotten before 15 min because the set was full.
# TYPE chat_gateway_revoked_sessions_evicted_total counter
# HELP chat_gateway_revocation_gaps_total Times revocations may have been missed, by cause: lagged (in-process receiver fell behind), reconnect (Redis subscriber reconnected).
# TYPE chat_gateway_revocation_gaps_total counter
# HELP chat_gateway_redis_publishes_total Room events published to Redis, by result (ok, error).
# TYPE chat_gateway_redis_publishes_total counter
# HELP chat_gateway_redis_received_total Room events received from Redis pub/sub.
# TYPE chat_gateway_redis_received_total counter
# HELP chat_gateway_redis_reconnects_total Reconnections of the Redis publisher and subscriber (a subscriber reconnect is followed by resubscribing and a resync).
# TYPE chat_gateway_redis_reconnects_total counter
# HELP chat_gateway_redis_reader_lagged_total Events dropped because this gateway read Redis pub/sub too slowly (a resync follows).
# TYPE chat_gateway_redis_reader_lagged_total counter
# HELP chat_gateway_redis_connected 1 while the Redis fan-out's publishing and subscribing connections are both up, else 0.
# TYPE chat_gateway_redis_connected gauge"#;
        assert_eq!(
            chat_metrics::missing_lines(&text, described),
            Vec::<&str>::new(),
            "{text}"
        );
        redis.connection.watch(|| true);
        let text = chat_metrics::exposition(&metrics.registry);
        assert!(
            text.contains("\nchat_gateway_redis_connected 1\n"),
            "{text}"
        );
    }
}
