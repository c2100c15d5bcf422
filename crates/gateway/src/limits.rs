//! Per-gateway and per-connection limits: how many WebSockets a gateway holds, how fast
//! one connection may send, and which browser origins may open one.

use std::time::{Duration, Instant};

/// Limits a gateway enforces (see `.example_env` for the variables).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// `CHAT_MAX_CONNECTIONS`: WebSockets this gateway holds at once; upgrades past it
    /// are answered 503 so the load balancer or client tries another instance.
    pub max_connections: usize,
    /// `CHAT_SEND_RATE`: frames per second one connection may send, sustained.
    pub frames_per_sec: u32,
    /// `CHAT_SEND_BURST`: frames one connection may send at once after a quiet spell.
    pub burst: u32,
    /// `CHAT_ALLOWED_ORIGINS`: browser origins allowed to open a WebSocket; `None`
    /// allows every origin.
    pub allowed_origins: Option<Vec<String>>,
    /// `CHAT_PING_INTERVAL_SECS`: how often the server pings each connection.
    pub ping_interval: Duration,
    /// `CHAT_IDLE_TIMEOUT_SECS`: a connection with no inbound traffic at all (frames or
    /// pongs) for this long is closed (1000, "idle timeout").
    pub idle_timeout: Duration,
    /// `CHAT_TOKEN_EXPIRY_GRACE_SECS`: how long after its access token's `exp` a socket
    /// that sent no `auth` frame with a fresh token stays open before it is closed with
    /// 4001 ("token expired"). Covers a renewal delayed by a slow refresh or clock skew.
    pub token_expiry_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 100_000,
            frames_per_sec: 20,
            // Room for a client that reconnects and re-joins all its rooms at once
            // (at most 256, `session::MAX_ROOMS_PER_CONN`).
            burst: 300,
            allowed_origins: None,
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            token_expiry_grace: Duration::from_secs(30),
        }
    }
}

impl Limits {
    /// A fresh send-rate limiter for one connection.
    pub fn send_rate(&self, now: Instant) -> SendRate {
        SendRate::new(self.frames_per_sec, self.burst, now)
    }

    /// Whether a WebSocket upgrade carrying this `Origin` header may proceed. Requests
    /// without one (clients that are not browsers) always may: the allow-list protects
    /// browser users from other sites opening sockets in their name, and a non-browser
    /// client can send any `Origin` it likes anyway.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match (&self.allowed_origins, origin) {
            (None, _) | (_, None) => true,
            (Some(allowed), Some(origin)) => {
                let origin = origin.trim_end_matches('/');
                allowed.iter().any(|a| a.eq_ignore_ascii_case(origin))
            }
        }
    }
}

/// Parses `CHAT_ALLOWED_ORIGINS`: comma-separated `scheme://host[:port]` origins.
pub fn parse_origins(value: &str) -> Result<Vec<String>, String> {
    let origins: Vec<String> = value
        .split(',')
        .map(|o| o.trim().trim_end_matches('/').to_owned())
        .filter(|o| !o.is_empty())
        .collect();
    if origins.is_empty() {
        return Err("list at least one origin, or leave it unset to allow all".into());
    }
    for origin in &origins {
        let Some((scheme, host)) = origin.split_once("://") else {
            return Err(format!("{origin:?} is not scheme://host[:port]"));
        };
        if !matches!(scheme, "http" | "https") || host.is_empty() || host.contains('/') {
            return Err(format!(
                "{origin:?} is not an origin like https://chat.example.com (no path)"
            ));
        }
    }
    Ok(origins)
}

/// What the limiter says about one inbound frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Handle it.
    Allow,
    /// Refuse it with `rate_limited`; the connection stays.
    Refuse,
    /// Refuse it and close the connection (1008): the client keeps flooding.
    Disconnect,
}

/// A token bucket of frames for one connection, and a second bucket of patience for
/// refused frames, of the same size and refill rate. A client a little over the rate
/// gets some frames refused and keeps its connection; one that keeps sending at more
/// than twice the rate drains the patience too (after about `burst` / (its rate - 2 ×
/// `frames_per_sec`) seconds) and is disconnected.
#[derive(Debug, Clone)]
pub struct SendRate {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    /// Refusals still tolerated; refills like `tokens`.
    patience: f64,
    last: Instant,
}

impl SendRate {
    /// A full bucket.
    pub fn new(frames_per_sec: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            per_sec: f64::from(frames_per_sec.max(1)),
            burst,
            tokens: burst,
            patience: burst,
            last: now,
        }
    }

    /// Accounts for one inbound frame at `now`.
    pub fn check(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        self.patience = (self.patience + elapsed * self.per_sec).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Allow;
        }
        self.patience -= 1.0;
        if self.patience < 0.0 {
            Verdict::Disconnect
        } else {
            Verdict::Refuse
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn a_burst_passes_then_frames_are_refused() {
        let start = Instant::now();
        let mut rate = SendRate::new(10, 5, start);
        for _ in 0..5 {
            assert_eq!(rate.check(start), Verdict::Allow);
        }
        assert_eq!(rate.check(start), Verdict::Refuse);
        // 100 ms at 10/s buys one frame.
        assert_eq!(rate.check(at(start, 100)), Verdict::Allow);
        assert_eq!(rate.check(at(start, 100)), Verdict::Refuse);
    }

    #[test]
    fn the_sustained_rate_is_never_refused() {
        let start = Instant::now();
        let mut rate = SendRate::new(20, 1, start);
        for i in 1..=1_000 {
            assert_eq!(rate.check(at(start, i * 50)), Verdict::Allow, "frame {i}");
        }
    }

    #[test]
    fn flooding_past_the_patience_disconnects() {
        let start = Instant::now();
        let mut rate = SendRate::new(10, 5, start);
        let verdicts: Vec<Verdict> = (0..11).map(|_| rate.check(start)).collect();
        assert_eq!(&verdicts[..5], &[Verdict::Allow; 5]);
        assert_eq!(&verdicts[5..10], &[Verdict::Refuse; 5]);
        assert_eq!(verdicts[10], Verdict::Disconnect);
    }

    #[test]
    fn slightly_over_the_rate_is_refused_not_closed() {
        let start = Instant::now();
        // 19 frames/s against 10/s, for a minute: 9 refusals a second, while patience
        // refills at 10 a second.
        let mut rate = SendRate::new(10, 5, start);
        let mut refused = 0;
        for i in 1..=19 * 60u64 {
            match rate.check(at(start, i * 1_000 / 19)) {
                Verdict::Allow => {}
                Verdict::Refuse => refused += 1,
                Verdict::Disconnect => panic!("closed at frame {i}"),
            }
        }
        assert!(refused > 400, "19/s against 10/s: {refused} refused");
    }

    #[test]
    fn three_times_the_rate_is_closed_within_seconds() {
        let start = Instant::now();
        let mut rate = SendRate::new(10, 5, start);
        let closed_at = (1..=600u64)
            .find(|i| rate.check(at(start, i * 1_000 / 30)) == Verdict::Disconnect)
            .map(|i| i * 1_000 / 30);
        let closed_at = closed_at.expect("30/s against 10/s is flooding");
        assert!(closed_at <= 2_000, "closed after {closed_at} ms");
    }

    #[test]
    fn origins() {
        let limits = Limits {
            allowed_origins: Some(
                parse_origins("https://chat.example.com, http://localhost:8000/")
                    .expect("valid origins"),
            ),
            ..Limits::default()
        };
        assert!(limits.origin_allowed(None));
        assert!(limits.origin_allowed(Some("https://chat.example.com")));
        assert!(limits.origin_allowed(Some("HTTPS://Chat.Example.com")));
        assert!(limits.origin_allowed(Some("http://localhost:8000")));
        assert!(!limits.origin_allowed(Some("https://evil.example.com")));
        assert!(!limits.origin_allowed(Some("https://chat.example.com.evil.com")));
        assert!(!limits.origin_allowed(Some("null")));
        assert!(Limits::default().origin_allowed(Some("https://anything.example")));

        assert!(parse_origins("").is_err());
        assert!(parse_origins(" , ").is_err());
        assert!(parse_origins("chat.example.com").is_err());
        assert!(parse_origins("https://chat.example.com/app").is_err());
        assert!(parse_origins("ftp://chat.example.com").is_err());
    }
}
