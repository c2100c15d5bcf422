//! The gateway's client of the accounts service, and the cache of the public keys that
//! verify accounts' access tokens ([`KeyCache`]).
//!
//! A gateway never holds a signing key and never asks accounts whether a token is
//! good: it verifies tokens itself with the published public keys, so open sockets and
//! new connects keep working while accounts is down. The keys are fetched at start (lazily:
//! the first verification that needs them), re-read every [`KEY_REFRESH_INTERVAL`], and
//! re-read at once when a token names a `kid` the cache does not know (a key rotated
//! in after the last read): one fetch at a time (the others wait for it and use its
//! result), and at most one per [`UNKNOWN_KID_COOLDOWN`], so a flood of forged `kid`s
//! costs accounts one call per cooldown, not one per token.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chat_metrics::GrpcMetrics;
use chat_proto::accounts::Empty;
use chat_proto::accounts::accounts_client::AccountsClient as Grpc;
use chat_proto::auth::{AttachToken, InternalToken};
use chat_proto::verify::{PublicKey, Verified, Verifier, VerifyError};
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;

use crate::error::{Backend, GatewayError};
use crate::history::BackendChannel;
use chat_runtime::grpc::Transport;

/// How long one accounts call may take. Password hashing is bounded by accounts' own
/// queue, which answers `unavailable` at once when full, so a call that takes longer
/// than this is a sick service.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the signing keys are re-read while nothing asks for a new one (retired
/// keys leave the cache within this after accounts stops publishing them).
pub const KEY_REFRESH_INTERVAL: Duration = Duration::from_secs(60);
/// The least time between two fetches caused by an unknown `kid`, after one that worked
/// (the periodic reads do not count).
pub const UNKNOWN_KID_COOLDOWN: Duration = Duration::from_secs(5);
/// The least time between two fetches after one that failed (accounts still starting
/// or down), and how soon the background refresh tries again then.
pub const FAILED_FETCH_RETRY: Duration = Duration::from_secs(1);

/// The gRPC client type, for the routes that call accounts.
pub type AccountsGrpc = Grpc<BackendChannel>;

/// Calls the accounts service; cheap to clone (one shared HTTP/2 channel, or the
/// service in this process).
#[derive(Debug, Clone)]
pub struct AccountsClient {
    grpc: AccountsGrpc,
    keys: Arc<KeyCache>,
}

impl AccountsClient {
    /// A client calling through `transport` ([`crate::history::transport`]: a channel
    /// connects lazily and reconnects by itself, so the gateway starts while accounts is
    /// still starting), recording every call in `metrics`, sending `token`
    /// (`CHAT_INTERNAL_TOKEN`) on every call and verifying tokens from `issuer` for
    /// `audience`.
    pub fn new(
        transport: Transport,
        metrics: &GrpcMetrics,
        token: Option<&InternalToken>,
        issuer: &str,
        audience: &str,
    ) -> Self {
        let grpc = Grpc::new(InterceptedService::new(
            metrics.client_channel(transport),
            AttachToken::new(token),
        ));
        let keys = Arc::new(KeyCache::new(grpc.clone(), issuer, audience));
        Self { grpc, keys }
    }

    /// A client of the accounts gRPC API (a clone of the shared one).
    pub fn grpc(&self) -> AccountsGrpc {
        self.grpc.clone()
    }

    /// The cache of the public keys.
    pub fn keys(&self) -> &Arc<KeyCache> {
        &self.keys
    }
}

/// The public keys tokens are verified with, and when they were last read.
#[derive(Debug)]
pub struct KeyCache {
    grpc: AccountsGrpc,
    issuer: String,
    audience: String,
    /// The keys of the last successful read (none before it).
    verifier: RwLock<Arc<Verifier>>,
    /// The published keys as last read, for `/.well-known/jwks.json`.
    published: RwLock<Arc<Vec<PublicKey>>>,
    /// Held by the one fetch in flight; holds when the last fetch caused by an unknown
    /// `kid` started and whether it worked (the periodic reads do not count: a rotation
    /// right after one must not wait out a cooldown).
    fetch: tokio::sync::Mutex<Option<(Instant, bool)>>,
}

impl KeyCache {
    fn new(grpc: AccountsGrpc, issuer: &str, audience: &str) -> Self {
        Self {
            verifier: RwLock::new(Arc::new(Verifier::new(issuer, audience, []))),
            published: RwLock::new(Arc::new(Vec::new())),
            grpc,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            fetch: tokio::sync::Mutex::new(None),
        }
    }

    fn current(&self) -> Arc<Verifier> {
        self.verifier
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The keys as last read from accounts.
    pub fn published(&self) -> Arc<Vec<PublicKey>> {
        self.published
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Verifies an access token. A `kid` the cache does not know makes it re-read the
    /// keys first (see the module's documentation); when accounts cannot be reached
    /// then, the token is refused as signed by an unknown key.
    pub async fn verify(&self, token: &str) -> Result<Verified, VerifyError> {
        let before = self.current();
        match before.verify(token) {
            Err(VerifyError::UnknownKey(kid)) => {
                self.refetch(&before).await;
                let after = self.current();
                if Arc::ptr_eq(&before, &after) {
                    return Err(VerifyError::UnknownKey(kid));
                }
                after.verify(token)
            }
            other => other,
        }
    }

    /// Re-reads the keys unless another caller did since `seen` was current, or the
    /// last fetch started less than [`UNKNOWN_KID_COOLDOWN`] ago (less than
    /// [`FAILED_FETCH_RETRY`] when it failed).
    async fn refetch(&self, seen: &Arc<Verifier>) {
        let mut last = self.fetch.lock().await;
        if !Arc::ptr_eq(seen, &self.current()) {
            return;
        }
        if let Some((at, ok)) = *last {
            let cooldown = if ok {
                UNKNOWN_KID_COOLDOWN
            } else {
                FAILED_FETCH_RETRY
            };
            if at.elapsed() < cooldown {
                return;
            }
        }
        let started = Instant::now();
        let result = self.load().await;
        if let Err(e) = &result {
            tracing::warn!(error = %e, "reading the signing keys from accounts failed");
        }
        *last = Some((started, result.is_ok()));
    }

    /// Reads the published keys from accounts and verifies with them from now on.
    pub async fn load(&self) -> Result<usize, GatewayError> {
        let reply = self
            .grpc
            .clone()
            .signing_keys(Empty {})
            .await
            .map_err(|status| GatewayError::from_status(Backend::Accounts, &status))?
            .into_inner();
        let keys: Vec<PublicKey> = reply.keys.into_iter().map(PublicKey::from).collect();
        let count = keys.len();
        let verifier = Verifier::new(&self.issuer, &self.audience, keys.iter().cloned());
        *self
            .verifier
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(verifier);
        *self
            .published
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(keys);
        Ok(count)
    }

    /// Reads the keys at once, then every [`KEY_REFRESH_INTERVAL`] (every
    /// [`FAILED_FETCH_RETRY`] while reading fails), until `stop`. Spawned by
    /// [`crate::Gateway::build`]. Failures before the first success (accounts still
    /// starting) are logged at debug level, later ones as warnings.
    pub async fn run_refresh(self: Arc<Self>, stop: CancellationToken) {
        let mut loaded_once = false;
        loop {
            let ok = {
                let _single_flight = self.fetch.lock().await;
                let result = self.load().await;
                match &result {
                    Ok(count) => tracing::debug!(count, "signing keys read"),
                    Err(e) if loaded_once => tracing::warn!(
                        error = %e,
                        "reading the signing keys failed; keeping the last ones"
                    ),
                    Err(e) => tracing::debug!(error = %e, "accounts not reachable yet"),
                }
                result.is_ok()
            };
            loaded_once |= ok;
            let wait = if ok {
                KEY_REFRESH_INTERVAL
            } else {
                FAILED_FETCH_RETRY
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}
