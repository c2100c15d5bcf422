//! The gRPC health status of a service whose health is its backend's (history: the
//! message store, presence: its store), and the drain that goes with it on shutdown;
//! used by [`crate::grpc::GrpcServer`].

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// How often the backend is pinged to keep the health status current.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(3);

/// A ping slower than this counts as a failure.
pub const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// On shutdown, how long the server keeps serving after reporting NOT_SERVING.
pub const NOT_SERVING_LEAD: Duration = Duration::from_secs(1);

/// After the server stops accepting, how long in-flight calls may take before the
/// server's `run` returns anyway.
pub const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// Sets the status of `service` and of the whole server (`""`).
pub async fn set_health(reporter: &HealthReporter, service: &str, status: ServingStatus) {
    reporter.set_service_status(service, status).await;
    reporter.set_service_status("", status).await;
}

/// Pings the backend every [`HEALTH_INTERVAL`] and reports the outcome as the health of
/// `service` until `stop`, then reports NOT_SERVING. Logs each change of status once.
pub async fn report_health<P, F, E>(
    service: &'static str,
    ping: P,
    reporter: HealthReporter,
    stop: CancellationToken,
) where
    P: Fn() -> F,
    F: Future<Output = Result<(), E>>,
    E: Display,
{
    let mut tick = tokio::time::interval(HEALTH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut serving = None;
    loop {
        let pinged = async {
            tick.tick().await;
            tokio::time::timeout(PING_TIMEOUT, ping()).await
        };
        let healthy = tokio::select! {
            () = stop.cancelled() => break,
            pinged = pinged => match pinged {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    if serving != Some(false) {
                        tracing::warn!(error = %e, "store ping failed: NOT_SERVING");
                    }
                    false
                }
                Err(_) => {
                    if serving != Some(false) {
                        tracing::warn!("store ping timed out after {PING_TIMEOUT:?}: NOT_SERVING");
                    }
                    false
                }
            },
        };
        if serving != Some(healthy) {
            if healthy {
                tracing::info!("store reachable: SERVING");
            }
            let status = if healthy {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            set_health(&reporter, service, status).await;
            serving = Some(healthy);
        }
    }
    set_health(&reporter, service, ServingStatus::NotServing).await;
}

/// What stops a gRPC server: `shutdown`, then NOT_SERVING in health (by cancelling
/// `stop_health`, which ends [`report_health`]), then [`NOT_SERVING_LEAD`] more of
/// serving, so health-checking clients and balancers move away before connections are
/// refused.
pub fn stop_serving(
    shutdown: &CancellationToken,
    stop_health: &CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    let shutdown = shutdown.clone();
    let stop_health = stop_health.clone();
    async move {
        shutdown.cancelled().await;
        stop_health.cancel();
        tokio::time::sleep(NOT_SERVING_LEAD).await;
    }
}
