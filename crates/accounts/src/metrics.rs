//! The accounts service's own metrics (prefix `chat_accounts`):
//!
//! - `chat_accounts_signups_total{result}`: `ok`, `rejected` (invalid, weak password,
//!   name taken), `throttled`, `unavailable`.
//! - `chat_accounts_logins_total{result}`: `ok`, `invalid` (unknown user or wrong
//!   password: a spike is credential stuffing), `throttled`, `unavailable`.
//! - `chat_accounts_refreshes_total{result}`: `ok`, `invalid`, `reused` (a rotated
//!   refresh token presented after the grace: the session was ended; any is worth an
//!   alert), `unavailable`.
//! - `chat_accounts_password_hash_duration_seconds{op}`: one argon2id `hash` or `verify`
//!   on the hashing pool (not the wait before it).
//! - `chat_accounts_password_hash_queue_depth`: hashes admitted and waiting for a pool
//!   thread; at its bound (`CHAT_HASH_QUEUE`) further ones are refused `unavailable`.
//! - `chat_accounts_sessions_active`: stored sessions, sampled after each purge.
//! - `chat_accounts_revocations_total{result}`: announcements of ended sessions to the
//!   gateways: `published`, `failed` (Redis unreachable: those sessions' access tokens
//!   stay usable at gateways until they expire; the call itself succeeded).
//! - `chat_accounts_throttle_failures_total`: throttle calls that failed (Redis
//!   unreachable); the attempt went ahead unthrottled (fail open).
//! - `chat_accounts_redis_connected`, `chat_accounts_redis_reconnects_total`: the Redis
//!   connection, when `CHAT_REDIS_URL` is set.
//!
//! gRPC request counts and latencies are the shared `grpc_server_*` families.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// An outcome label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// See the module documentation.
    pub result: &'static str,
}

/// The hashing operation label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    /// `hash` or `verify`.
    pub op: &'static str,
}

/// The accounts families; cheap to clone (every handle shares the same series).
#[derive(Debug, Clone)]
pub struct AccountsMetrics {
    signups: Family<ResultLabels, Counter>,
    logins: Family<ResultLabels, Counter>,
    refreshes: Family<ResultLabels, Counter>,
    hash_duration: Family<OpLabels, Histogram, fn() -> Histogram>,
    /// Hashes admitted to the pool and not yet running.
    pub hash_queue_depth: Gauge,
    /// Stored sessions at the last purge.
    pub sessions_active: Gauge,
    revocations: Family<ResultLabels, Counter>,
    /// Throttle calls that failed and were let through.
    pub throttle_failures: Counter,
}

const SIGNUP_RESULTS: [&str; 4] = ["ok", "rejected", "throttled", "unavailable"];
const LOGIN_RESULTS: [&str; 4] = ["ok", "invalid", "throttled", "unavailable"];
const REFRESH_RESULTS: [&str; 4] = ["ok", "invalid", "reused", "unavailable"];
const REVOCATION_RESULTS: [&str; 2] = ["published", "failed"];

impl Default for AccountsMetrics {
    /// Families registered nowhere (tests that do not look).
    fn default() -> Self {
        let metrics = Self {
            signups: Family::default(),
            logins: Family::default(),
            refreshes: Family::default(),
            hash_duration: Family::new_with_constructor(chat_metrics::buckets::rpc_histogram),
            hash_queue_depth: Gauge::default(),
            sessions_active: Gauge::default(),
            revocations: Family::default(),
            throttle_failures: Counter::default(),
        };
        // Every outcome is present from the start, so ratios and alerts have series.
        for (family, results) in [
            (&metrics.signups, &SIGNUP_RESULTS[..]),
            (&metrics.logins, &LOGIN_RESULTS[..]),
            (&metrics.refreshes, &REFRESH_RESULTS[..]),
            (&metrics.revocations, &REVOCATION_RESULTS[..]),
        ] {
            for &result in results {
                let _ = family.get_or_create(&ResultLabels { result });
            }
        }
        metrics
    }
}

impl AccountsMetrics {
    /// Registers the families in `registry` (give it the `chat_accounts` prefix).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "signups",
            "Sign-ups by result: ok, rejected (invalid, weak password, name taken), throttled, unavailable",
            metrics.signups.clone(),
        );
        registry.register(
            "logins",
            "Log-ins by result: ok, invalid (unknown user or wrong password), throttled, unavailable",
            metrics.logins.clone(),
        );
        registry.register(
            "refreshes",
            "Refresh-token exchanges by result: ok, invalid, reused (session ended), unavailable",
            metrics.refreshes.clone(),
        );
        registry.register_with_unit(
            "password_hash_duration",
            "Time of one argon2id hash or verify on the hashing pool, by op",
            Unit::Seconds,
            metrics.hash_duration.clone(),
        );
        registry.register(
            "password_hash_queue_depth",
            "Password hashes waiting for a thread of the hashing pool",
            metrics.hash_queue_depth.clone(),
        );
        registry.register(
            "sessions_active",
            "Stored log-in sessions, sampled after each purge of expired ones",
            metrics.sessions_active.clone(),
        );
        registry.register(
            "revocations",
            "Announcements of ended sessions to the gateways by result: published, failed",
            metrics.revocations.clone(),
        );
        registry.register(
            "throttle_failures",
            "Throttle calls that failed (Redis unreachable); the attempt went ahead unthrottled",
            metrics.throttle_failures.clone(),
        );
        metrics
    }

    /// Counts a sign-up outcome (one of the module's `result` values).
    pub fn signup(&self, result: &'static str) {
        self.signups.get_or_create(&ResultLabels { result }).inc();
    }

    /// Counts a log-in outcome.
    pub fn login(&self, result: &'static str) {
        self.logins.get_or_create(&ResultLabels { result }).inc();
    }

    /// Counts a refresh outcome.
    pub fn refresh(&self, result: &'static str) {
        self.refreshes.get_or_create(&ResultLabels { result }).inc();
    }

    /// Counts a revocation's announcement: `published` or `failed`.
    pub fn revocation(&self, result: &'static str) {
        self.revocations
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// How many revocations had `result` (for tests).
    pub fn revocations(&self, result: &'static str) -> u64 {
        self.revocations
            .get_or_create(&ResultLabels { result })
            .get()
    }

    /// Records one hashing operation's duration.
    pub fn hashed(&self, op: &'static str, seconds: f64) {
        self.hash_duration
            .get_or_create(&OpLabels { op })
            .observe(seconds);
    }
}
