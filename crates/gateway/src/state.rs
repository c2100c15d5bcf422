//! The state every route and session shares ([`AppState`]), and a WebSocket's place
//! under the connection limit ([`Admitted`]). Its own module so that `http` (which
//! admits connections and starts sessions) and `session` (which runs them) both depend
//! on it rather than on each other.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use chat_metrics::Registry;
use tokio_util::sync::CancellationToken;

use crate::accounts::AccountsClient;
use crate::auth::Authenticator;
use crate::conn::ConnId;
use crate::limits::Limits;
use crate::metrics::GatewayMetrics;
use crate::presence::PresenceTracker;
use crate::revocations::Revocations;
use crate::rooms::Hub;

/// State shared by every route and session.
#[derive(Debug)]
pub struct AppState {
    pub hub: Hub,
    pub presence: Arc<PresenceTracker>,
    pub auth: Authenticator,
    /// The accounts service (`CHAT_ACCOUNTS_URL`), behind `/v1/auth` and `/v1/users`.
    pub accounts: Option<AccountsClient>,
    /// This instance's id, sent in `hello` and used in connection ids.
    pub gateway_id: String,
    /// Cancelled on SIGTERM: readiness turns false, upgrades are refused, sessions close
    /// with 1001.
    pub shutdown: CancellationToken,
    /// What the gateway records (sessions, rooms, requests).
    pub metrics: GatewayMetrics,
    /// The process's registry, served on `/metrics` (in the all-in-one it also holds
    /// history's and presence's families).
    pub registry: Arc<Registry>,
    /// Connection count, send rate and origin limits.
    pub limits: Limits,
    /// Sockets by accounts session, and the recently revoked sessions (shared with
    /// [`Authenticator`], which refuses their tokens).
    pub revocations: Arc<Revocations>,
    /// Open WebSockets, for [`Limits::max_connections`].
    open: Arc<AtomicUsize>,
    next_conn: AtomicU64,
}

impl AppState {
    /// State for a gateway.
    pub fn new(
        hub: Hub,
        presence: Arc<PresenceTracker>,
        auth: Authenticator,
        gateway_id: String,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            hub,
            presence,
            auth,
            accounts: None,
            gateway_id,
            shutdown,
            metrics: GatewayMetrics::default(),
            registry: Arc::new(Registry::default()),
            limits: Limits::default(),
            revocations: Arc::new(Revocations::new(Default::default())),
            open: Arc::new(AtomicUsize::new(0)),
            next_conn: AtomicU64::new(1),
        }
    }

    /// Records into `metrics` and serves `registry` (which should hold them) on
    /// `/metrics`.
    pub fn with_metrics(mut self, metrics: GatewayMetrics, registry: Arc<Registry>) -> Self {
        self.metrics = metrics;
        self.registry = registry;
        self
    }

    /// Serves the accounts endpoints with `accounts`.
    pub fn with_accounts(mut self, accounts: Option<AccountsClient>) -> Self {
        self.accounts = accounts;
        self
    }

    /// Closes sockets of the sessions `revocations` is told about (give the same set to
    /// the [`Authenticator`]).
    pub fn with_revocations(mut self, revocations: Arc<Revocations>) -> Self {
        self.revocations = revocations;
        self
    }

    /// Enforces `limits` instead of the defaults.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Takes one of the [`Limits::max_connections`] places, if one is free.
    pub fn admit(&self) -> Option<Admitted> {
        let open = self.open.fetch_add(1, Ordering::AcqRel);
        if open >= self.limits.max_connections {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Admitted(self.open.clone()))
    }

    /// A fresh connection number.
    pub fn next_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }
}

/// One WebSocket's place under [`Limits::max_connections`], given back on drop.
#[derive(Debug)]
pub struct Admitted(Arc<AtomicUsize>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
