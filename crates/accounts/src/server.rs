//! The gRPC server: Accounts plus the standard gRPC health service, served by the shared
//! [`GrpcServer`], and the background housekeeping of the replica (purging expired
//! sessions, re-reading the signing keys).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use chat_metrics::Metrics;
use chat_metrics::serve::ping_check;
use chat_proto::accounts::accounts_server::{AccountsServer as AccountsGrpc, SERVICE_NAME};
use chat_proto::auth::RequireToken;
use chat_runtime::grpc::GrpcServer;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::accounts::Accounts;
use crate::metrics::AccountsMetrics;
use crate::revocations::RevocationSink;
use crate::service::AccountsService;
use crate::settings::Settings;
use crate::store::AccountStore;
use crate::throttle::Throttle;
use crate::tokens::KEY_RELOAD_INTERVAL;

/// A bound, not yet serving, accounts gRPC server.
#[derive(Debug)]
pub struct AccountsServer {
    /// Listener, health, token check, call metrics and drain.
    grpc: GrpcServer,
    /// The logic every call goes to.
    accounts: Arc<Accounts>,
    /// How often expired sessions are purged.
    purge_interval: Duration,
}

impl AccountsServer {
    /// Loads (or creates) the signing keys, starts the hashing pool, binds `addr` (port
    /// 0 picks a free port) and logs `grpc listening on <addr>`; registers the
    /// `chat_accounts_*` families in `metrics`. Ended sessions are announced through
    /// `revocations` ([`crate::revocations`]: Redis, in-process, or nowhere).
    pub async fn bind(
        settings: &Settings,
        store: Arc<dyn AccountStore>,
        throttle: Arc<dyn Throttle>,
        revocations: Arc<dyn RevocationSink>,
        metrics: &mut Metrics,
    ) -> anyhow::Result<Self> {
        let own =
            AccountsMetrics::register(metrics.registry.sub_registry_with_prefix("chat_accounts"));
        let accounts = Arc::new(Accounts::new(settings, store, throttle, revocations, own).await?);
        let grpc = GrpcServer::bind(
            settings.service.grpc_addr,
            SERVICE_NAME,
            ping_check(
                Arc::clone(accounts.store()),
                |s| async move { s.ping().await },
            ),
            metrics.grpc.clone(),
        )
        .await
        .map_err(|e: io::Error| {
            anyhow::anyhow!("cannot listen on {}: {e}", settings.service.grpc_addr)
        })?
        .with_internal_token(settings.service.internal_token.clone());
        Ok(Self {
            grpc,
            accounts,
            purge_interval: settings.purge_interval,
        })
    }

    chat_runtime::grpc_server_methods!();

    /// What it serves: Accounts, behind the token check it is given.
    fn routes(&self) -> impl FnOnce(RequireToken) -> Routes + use<> {
        let service = AccountsService::new(Arc::clone(&self.accounts));
        |auth| Routes::new(AccountsGrpc::with_interceptor(service, auth))
    }

    /// The accounts logic (for tests).
    pub fn accounts(&self) -> &Arc<Accounts> {
        &self.accounts
    }

    /// Serves Accounts and `grpc.health.v1.Health` until `shutdown` is cancelled, then
    /// drains (see [`GrpcServer::serve`]); meanwhile purges expired sessions and
    /// re-reads the signing keys in the background.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let housekeeping = tokio::spawn(housekeeping(
            Arc::clone(&self.accounts),
            self.purge_interval,
            shutdown.clone(),
        ));
        let routes = self.routes();
        let served = self.grpc.serve(routes, shutdown).await;
        chat_runtime::join_background("accounts housekeeping", housekeeping).await;
        served
    }
}

/// Purges expired sessions every `purge_interval` and re-reads the signing keys every
/// [`KEY_RELOAD_INTERVAL`], until `stop` (which cuts a run short: both are safe to
/// repeat). Every replica runs one; the store makes that safe.
async fn housekeeping(accounts: Arc<Accounts>, purge_interval: Duration, stop: CancellationToken) {
    let purge = chat_runtime::every(purge_interval, &stop, || async {
        match accounts.purge_sessions().await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "expired sessions purged"),
            Err(e) => tracing::warn!(error = %e, "purging expired sessions failed"),
        }
    });
    let reload = chat_runtime::every(KEY_RELOAD_INTERVAL, &stop, || async {
        if let Err(e) = accounts.reload_keys().await {
            tracing::warn!(error = %e, "re-reading the signing keys failed");
        }
    });
    tokio::join!(purge, reload);
}
