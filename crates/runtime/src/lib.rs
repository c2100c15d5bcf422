//! What every chat binary (`chat`, `chat-gateway`, `chat-history`, `chat-presence`)
//! does the same way: settings from `CHAT_*` variables ([`env`]), logging from
//! `RUST_LOG`, shutdown on SIGINT or SIGTERM through one [`CancellationToken`] the whole
//! process watches; and for the gRPC services, serving with health, internal token,
//! metrics and drain ([`grpc`], [`health`]), and the whole life of their binary
//! ([`run_service`]).
//!
//! # Layout
//!
//! - [`env`]: typed reading of environment variables with errors that name the
//!   variable, the secret wrapper, and the settings every gRPC service shares.
//! - [`grpc`]: [`grpc::GrpcServer`], bind + serve one gRPC service with health, token
//!   check, metrics and the NOT_SERVING-then-drain shutdown; the same routes in process
//!   ([`grpc::LocalService`]) and [`grpc::Transport`], a client's way to either.
//! - [`health`]: the health reporter behind it, and the shutdown timings.
//! - [`store`]: what the services with a database share: [`store::StoreError`] (and its
//!   gRPC status), opening the backend [`env::StoreSettings`] choose, and behind the
//!   features `mongodb` and `redb` connecting to MongoDB and creating the redb file.
//!
//! A new gRPC service is its service implementation, its `Settings` (an
//! [`env::ServiceSettings`] plus its own variables) and a `main` of a few lines: bind a
//! [`grpc::GrpcServer`] through the service's server type, then [`run_service`].

pub mod env;
pub mod grpc;
pub mod health;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use chat_metrics::Metrics;
use chat_metrics::serve::{HealthCheck, MetricsEndpoint};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// How long a service's background task (presence's sweeper, accounts' purge) may take
/// to stop once told to, before [`join_background`] aborts it.
pub const BACKGROUND_STOP: Duration = Duration::from_secs(2);

/// After the shutdown signal, how long a gRPC service's binary may take to exit before
/// [`run_service`] ends the process anyway (exit code 1): more than its drain
/// ([`health::NOT_SERVING_LEAD`] + [`health::DRAIN_GRACE`]) and [`BACKGROUND_STOP`]
/// together, and less than the 20 s docker-compose and the 30 s Kubernetes give it
/// before SIGKILL (docs/deployment.md).
pub const EXIT_DEADLINE: Duration = Duration::from_secs(18);

/// Logs to stdout, filtered by `RUST_LOG` (tracing's `EnvFilter` syntax; `info` when
/// unset or invalid).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
}

/// The life of a gRPC service binary once its server is bound: `/metrics` and
/// `/healthz` (`health`) on `metrics_addr`, then `serve` until SIGINT or SIGTERM, whose
/// result is returned after the metrics listener has stopped too. A process that has
/// not exited [`EXIT_DEADLINE`] after the signal (something awaited a dead backend
/// without a bound) logs so and exits with code 1, from a thread of its own, so even
/// a runtime whose workers are all stuck cannot keep it alive.
pub async fn run_service<F, Fut>(
    metrics_addr: SocketAddr,
    metrics: Metrics,
    health: HealthCheck,
    serve: F,
) -> anyhow::Result<()>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let deadline = shutdown.clone();
    tokio::spawn(async move {
        deadline.cancelled().await;
        exit_after(EXIT_DEADLINE);
    });
    let endpoint = MetricsEndpoint::start(
        metrics_addr,
        metrics,
        health,
        shutdown.clone().cancelled_owned(),
    )
    .await?;
    let result = serve(shutdown).await;
    endpoint.finish().await;
    result
}

/// Ends the process (exit code 1) `deadline` from now unless it has exited by then;
/// watched by a thread of its own, not a task of the runtime.
fn exit_after(deadline: Duration) {
    let watchdog = std::thread::Builder::new()
        .name("exit-deadline".into())
        .spawn(move || {
            std::thread::sleep(deadline);
            tracing::error!("still running {deadline:?} after the shutdown signal: exiting");
            std::process::exit(1);
        });
    if let Err(e) = watchdog {
        tracing::warn!(error = %e, "cannot start the exit deadline's thread");
    }
}

/// Awaits `task`, a background task of a service that has been told to stop, for at
/// most [`BACKGROUND_STOP`], then aborts it: a store call stuck on a backend that went
/// away must not hold up the shutdown. Logs a task that failed or had to be aborted.
pub async fn join_background(name: &str, mut task: JoinHandle<()>) {
    match tokio::time::timeout(BACKGROUND_STOP, &mut task).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "{name} task failed"),
        Err(_) => {
            task.abort();
            tracing::warn!("{name} task did not stop within {BACKGROUND_STOP:?}: aborted");
        }
    }
}

/// Runs `work` at once and then every `period` until `stop`: a service's periodic
/// background job (presence's sweeper and stats sampler, accounts' purge and key
/// reload). A run that overruns its period delays the next one instead of bunching
/// them up. Each run is raced with `stop`: a run waiting on a backend that went away is
/// dropped where it waits, so the job ends as soon as it is told to (a job whose step
/// is cut short must be safe to repeat).
pub async fn every<F, Fut>(period: Duration, stop: &CancellationToken, mut work: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = work() => {}
        }
    }
}

/// Cancels `shutdown` on the first SIGINT or SIGTERM. If one of the two cannot be
/// listened for, the other still works (and the failure is logged).
pub async fn cancel_on_signal(shutdown: CancellationToken) {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT; only SIGTERM stops");
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = interrupt => {}
        () = terminate() => {}
    }
    tracing::info!("shutdown signal received");
    shutdown.cancel();
}

#[cfg(unix)]
async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut sigterm) => {
            sigterm.recv().await;
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; only SIGINT stops");
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(not(unix))]
async fn terminate() {
    std::future::pending::<()>().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{DRAIN_GRACE, NOT_SERVING_LEAD};

    #[test]
    fn exit_deadline_covers_the_drain_and_fits_the_orchestrators_grace() {
        assert!(EXIT_DEADLINE > NOT_SERVING_LEAD + DRAIN_GRACE + BACKGROUND_STOP);
        // docker-compose's stop_grace_period for the gRPC services (docs/deployment.md).
        assert!(EXIT_DEADLINE < Duration::from_secs(20));
    }

    /// Set in the child process of the test below.
    const STUCK_CHILD: &str = "CHAT_RUNTIME_TEST_STUCK_CHILD";

    /// A process whose every thread is stuck still ends at the deadline, with code 1:
    /// this test runs itself again as a child process that starts the deadline's
    /// thread and then blocks its main thread for good.
    #[test]
    fn a_stuck_process_exits_with_code_1_at_the_deadline() {
        let deadline = Duration::from_millis(300);
        if std::env::var_os(STUCK_CHILD).is_some() {
            exit_after(deadline);
            std::thread::sleep(Duration::from_secs(60));
            return;
        }
        let started = std::time::Instant::now();
        let status = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "tests::a_stuck_process_exits_with_code_1_at_the_deadline",
                "--nocapture",
            ])
            .env(STUCK_CHILD, "1")
            .status()
            .expect("run the child");
        let took = started.elapsed();
        assert_eq!(status.code(), Some(1), "child ended with {status}");
        assert!(took >= deadline, "ended after {took:?}");
        assert!(took < Duration::from_secs(10), "ended after {took:?}");
    }

    #[tokio::test]
    async fn a_background_task_that_does_not_stop_is_aborted_after_the_bound() {
        let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel::<()>();
        let stuck = tokio::spawn(async move {
            let _dropped_when_aborted = dropped_tx;
            std::future::pending::<()>().await;
        });
        let started = tokio::time::Instant::now();
        join_background("stuck", stuck).await;
        let took = started.elapsed();
        assert!(took >= BACKGROUND_STOP, "returned after {took:?}");
        assert!(
            took < BACKGROUND_STOP + Duration::from_secs(1),
            "took {took:?}"
        );
        // Aborted: its future (and what it holds) is dropped.
        tokio::time::timeout(Duration::from_secs(1), dropped_rx)
            .await
            .expect("the stuck task is dropped")
            .expect_err("its sender is dropped, never used");
    }

    #[tokio::test]
    async fn a_background_task_that_stops_is_joined_at_once() {
        let started = tokio::time::Instant::now();
        join_background("quick", tokio::spawn(async {})).await;
        assert!(started.elapsed() < BACKGROUND_STOP);
    }

    /// The job runs at once, again after its period, and a run stuck on its backend is
    /// dropped where it waits when the stop comes.
    #[tokio::test]
    async fn a_periodic_job_repeats_and_stops_in_the_middle_of_a_run() {
        let stop = CancellationToken::new();
        let (started_tx, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
        let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel::<()>();
        let mut dropped_tx = Some(dropped_tx);
        let mut runs = 0;
        let job = every(Duration::from_millis(20), &stop, || {
            runs += 1;
            started_tx.send(runs).expect("the test listens");
            // The second run hangs, holding what it would drop when cut short.
            let held = if runs == 2 { dropped_tx.take() } else { None };
            async move {
                if let Some(_dropped_when_cut) = held {
                    std::future::pending::<()>().await;
                }
            }
        });
        let watch = async {
            assert_eq!(started_rx.recv().await, Some(1));
            assert_eq!(started_rx.recv().await, Some(2));
            stop.cancel();
        };
        tokio::time::timeout(Duration::from_secs(5), async { tokio::join!(job, watch) })
            .await
            .expect("the job ends once stopped");
        dropped_rx
            .await
            .expect_err("the stuck run is dropped, its sender never used");
        assert_eq!(runs, 2, "no run after the stop");
    }
}
