//! A gRPC server of the workspace, bound on port 0 and served by a test until dropped,
//! and the clients' side of it: a connected [`Channel`], and its health status.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A bound server running on a task; cancelled on drop, or cancelled and awaited by
/// [`Served::stop`].
#[derive(Debug)]
pub struct Served {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// Spawns `run(shutdown)` (a bound server's `run`) for the server listening on `addr`.
pub fn serve<F, Fut>(addr: SocketAddr, run: F) -> Served
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    assert_ne!(addr.port(), 0, "serve a bound server");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run(shutdown.clone()));
    Served {
        addr,
        shutdown,
        task: Some(task),
    }
}

impl Served {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A channel connected to the server.
    pub async fn channel(&self) -> Channel {
        connect(self.addr).await
    }

    /// Cancels the server (which starts its graceful shutdown) without waiting for it.
    pub fn cancel(&self) {
        self.shutdown.cancel();
    }

    /// Cancels the server and fails unless it stops cleanly within 15 s.
    pub async fn stop(self) {
        tokio::time::timeout(Duration::from_secs(15), self.join())
            .await
            .expect("server stops within the grace period");
    }

    /// Cancels the server and fails unless it stops cleanly, however long that takes
    /// (a server whose store is gone may first wait out the store's timeouts).
    pub async fn join(mut self) {
        self.shutdown.cancel();
        let task = self.task.take().expect("running");
        task.await
            .expect("server task")
            .expect("server ran cleanly");
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A channel connected to the gRPC server at `addr`.
pub async fn connect(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("valid url")
        .connect()
        .await
        .expect("connect")
}

/// Whether `service` ("" for the server as a whole) reports `want` on the standard
/// health service of `channel`: `None` if it does not or the call fails, for
/// [`crate::process::eventually`].
pub async fn health_is(channel: &Channel, service: &str, want: ServingStatus) -> Option<()> {
    let reply = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .ok()?
        .into_inner();
    (reply.status == want as i32).then_some(())
}

/// Waits up to `within` until `service` reports `want` on `channel`.
pub async fn wait_health(
    channel: &Channel,
    service: &str,
    want: ServingStatus,
    within: Duration,
) -> anyhow::Result<()> {
    let what = format!("health of {service:?} {}", want.as_str_name());
    crate::process::eventually(within, &what, || health_is(channel, service, want)).await
}

/// Fails unless `service` and the server as a whole report SERVING (within 10 s), and
/// the health service answers NOT_FOUND for a service it does not know.
pub async fn assert_health_serving(channel: &Channel, service: &str) {
    for service in [service, ""] {
        wait_health(
            channel,
            service,
            ServingStatus::Serving,
            Duration::from_secs(10),
        )
        .await
        .expect("serving");
    }
    let unknown = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: "nope".into(),
        })
        .await
        .expect_err("unknown service");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}

/// Fails unless `service` reports SERVING while `backend` (the server's store, named
/// `what`) runs, and NOT_SERVING once it is dropped (within 20 s: the store's own
/// timeouts, 5 s, come first).
pub async fn assert_health_follows<B>(channel: &Channel, service: &str, backend: B, what: &str) {
    let mut backend = Some(backend);
    for (want, within, state) in [
        (ServingStatus::Serving, 10, "up"),
        (ServingStatus::NotServing, 20, "down"),
    ] {
        if want == ServingStatus::NotServing {
            drop(backend.take());
        }
        if let Err(e) = wait_health(channel, service, want, Duration::from_secs(within)).await {
            panic!("{} while {what} is {state}: {e}", want.as_str_name());
        }
    }
}

/// Fails unless `result` is UNAUTHENTICATED with a message that starts with `what` and
/// names `CHAT_INTERNAL_TOKEN`, and holds none of `tokens` (a refusal never echoes one).
pub fn assert_unauthenticated<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    what: &str,
    tokens: &[&str],
) {
    let status = result.expect_err(what);
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    let message = status.message();
    assert!(message.starts_with(what), "{message}");
    assert!(message.contains("CHAT_INTERNAL_TOKEN"), "{message}");
    assert!(tokens.iter().all(|t| !message.contains(t)), "{message}");
}

/// A health check of `service` ("" for the server as a whole).
pub fn health_check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.into(),
    }
}
