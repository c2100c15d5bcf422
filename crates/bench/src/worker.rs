//! A worker: holds a share of the connections and drives them through rounds.
//!
//! The same engine runs inside the coordinator (`--workers 0`, and the tests) or in a
//! `chat-bench worker` child process, which speaks JSON lines: the coordinator writes a
//! [`WorkerInit`] then [`Command`]s to its stdin, it answers with [`Event`]s on stdout.
//! Closing stdin stops it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::check::{Emitted, ReceiverRound};
use crate::conn::{self, COMMAND_QUEUE, ConnCmd, ConnTask, Shared};
use crate::latency::{Buckets, Latency};
use crate::plan::{Plan, Share};

/// The first line a worker process reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerInit {
    pub plan: Plan,
    pub share: Share,
}

/// What the coordinator asks of a worker.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum Command {
    /// Send at `rate` msg/s (this worker's part of the total) from `start_at_us` (µs
    /// since the epoch, the same instant for every worker) for `duration_ms`, drain,
    /// then report.
    Round {
        round: u32,
        rate: f64,
        duration_ms: u64,
        start_at_us: u64,
    },
}

/// What a worker reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Event {
    /// Every connection of the share was tried; the worker waits for commands.
    Ready(ConnectReport),
    /// A round's findings.
    Round(Box<RoundReport>),
    /// The worker cannot go on.
    Failed(String),
}

/// How the connect phase went.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectReport {
    pub ok: u32,
    pub failed: u32,
    /// From the first connect to the last one done.
    pub elapsed_ms: f64,
    /// Per connection: TCP connect, upgrade, handshake (µs).
    pub latency: Buckets,
    /// The first few errors.
    pub errors: Vec<String>,
}

/// One worker's findings for one round.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RoundReport {
    pub round: u32,
    pub sent: u64,
    pub acked: u64,
    pub errors: u64,
    /// Sends the scheduler could not queue because a connection was that far behind.
    pub dropped: u64,
    pub deliveries: u64,
    pub deliveries_in_window: u64,
    /// Connections that ended during the run, and a few reasons.
    pub disconnected: u32,
    pub disconnect_reasons: Vec<String>,
    /// How long the drain after the send phase took.
    pub drain_ms: f64,
    pub latency: Buckets,
    pub ack_latency: Buckets,
    pub emitted: Vec<Emitted>,
    pub receivers: Vec<ReceiverRound>,
}

/// Errors and reasons kept per report.
const EXAMPLES: usize = 5;

struct Handle {
    commands: mpsc::Sender<ConnCmd>,
    rooms: Vec<u32>,
}

/// Runs one worker until `commands` closes.
pub async fn run(
    plan: Arc<Plan>,
    share: Share,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
) {
    let shared = Arc::new(Shared::default());
    let mut tasks = JoinSet::new();
    let handles = match connect_all(&plan, share, &shared, &mut tasks).await {
        Ok((handles, report)) => {
            if events.send(Event::Ready(report)).await.is_err() {
                return;
            }
            handles
        }
        Err(e) => {
            let _ = events.send(Event::Failed(format!("{e:#}"))).await;
            return;
        }
    };
    while let Some(command) = commands.recv().await {
        let Command::Round {
            round,
            rate,
            duration_ms,
            start_at_us,
        } = command;
        let report = run_round(
            &plan,
            &shared,
            &handles,
            round,
            rate,
            Duration::from_millis(duration_ms),
            start_at_us,
        )
        .await;
        if events.send(Event::Round(Box::new(report))).await.is_err() {
            break;
        }
    }
    // Dropping the handles closes every connection's channel; its task then closes the
    // WebSocket.
    drop(handles);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
}

/// `ws://host:port[/prefix]` -> a socket address (IPv4 preferred, to match sources).
async fn resolve(target: &str) -> anyhow::Result<SocketAddr> {
    let rest = target
        .strip_prefix("ws://")
        .or_else(|| target.strip_prefix("http://"))
        .ok_or_else(|| anyhow::anyhow!("{target}: only ws:// targets are supported"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let host_port = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&host_port)
        .await
        .with_context(|| format!("resolving {host_port}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| anyhow::anyhow!("{host_port} has no address"))
}

async fn connect_all(
    plan: &Arc<Plan>,
    share: Share,
    shared: &Arc<Shared>,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<(Vec<Handle>, ConnectReport)> {
    let mut targets = Vec::with_capacity(plan.targets.len());
    for target in &plan.targets {
        targets.push(resolve(target).await?);
    }
    let timeout = Duration::from_millis(plan.connect_timeout_ms);
    let started = Instant::now();
    let mut attempts = futures_util::stream::iter(share.first..share.first + share.count)
        .map(|conn| {
            let target = targets[plan.target(conn)];
            async move {
                let opened = tokio::time::timeout(timeout, conn::open(plan, conn, target)).await;
                (conn, opened)
            }
        })
        .buffer_unordered(plan.connect_concurrency.max(1));
    let mut report = ConnectReport::default();
    let mut latency = Latency::new();
    let mut handles = Vec::with_capacity(share.count as usize);
    while let Some((conn, opened)) = attempts.next().await {
        let opened = match opened {
            Ok(Ok(opened)) => opened,
            Ok(Err(e)) => {
                report.failed += 1;
                if report.errors.len() < EXAMPLES {
                    report.errors.push(format!("connection {conn}: {e:#}"));
                }
                continue;
            }
            Err(_) => {
                report.failed += 1;
                if report.errors.len() < EXAMPLES {
                    report.errors.push(format!("connection {conn}: timed out"));
                }
                continue;
            }
        };
        report.ok += 1;
        latency.record_micros(opened.connect_time.as_micros() as u64);
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let task = ConnTask::new(plan, conn, &opened.joined, shared.clone());
        tasks.spawn(task.run(opened.ws, rx));
        handles.push(Handle {
            commands: tx,
            rooms: opened.joined.iter().map(|&(room, _)| room).collect(),
        });
    }
    report.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    report.latency = latency.to_buckets();
    // Deterministic order so the senders' interleaving does not depend on timing.
    Ok((handles, report))
}

async fn run_round(
    plan: &Plan,
    shared: &Arc<Shared>,
    handles: &[Handle],
    round: u32,
    rate: f64,
    duration: Duration,
    start_at_us: u64,
) -> RoundReport {
    let window_end = start_at_us + duration.as_micros() as u64;
    shared.window_end_us.store(window_end, Ordering::Relaxed);
    let now = crate::now_micros();
    if start_at_us > now {
        tokio::time::sleep(Duration::from_micros(start_at_us - now)).await;
    }
    // One slot per membership; consecutive slots are different connections (and, with
    // the default membership, different rooms).
    let slots: Vec<(usize, u32)> = handles
        .iter()
        .enumerate()
        .flat_map(|(i, h)| h.rooms.iter().map(move |&room| (i, room)))
        .collect();
    let mut dropped = 0;
    let started = Instant::now();
    if rate > 0.0 && !slots.is_empty() {
        let total = (rate * duration.as_secs_f64()).floor() as u64;
        let mut sent = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        while sent < total {
            tick.tick().await;
            // Message k is due at start + k / rate. Time is measured from the agreed
            // start, so a worker that woke up late catches up instead of shifting.
            let elapsed = crate::now_micros().saturating_sub(start_at_us) as f64 / 1e6;
            let due = ((elapsed * rate).floor() as u64 + 1).min(total);
            while sent < due {
                let (i, room) = slots[(sent % slots.len() as u64) as usize];
                // Stamped with when it was due, not when it went out: a client that
                // falls behind shows up as latency (no coordinated omission).
                let due_us = start_at_us + (sent as f64 * 1e6 / rate) as u64;
                shared.pending.fetch_add(1, Ordering::Relaxed);
                if handles[i]
                    .commands
                    .try_send(ConnCmd::Send { room, due_us })
                    .is_err()
                {
                    shared.pending.fetch_sub(1, Ordering::Relaxed);
                    dropped += 1;
                }
                sent += 1;
            }
        }
    }
    let elapsed = started.elapsed();
    if elapsed < duration {
        tokio::time::sleep(duration - elapsed).await;
    }
    let drain_ms = drain(plan, shared).await;

    let mut report = RoundReport {
        round,
        dropped,
        drain_ms,
        ..RoundReport::default()
    };
    let mut replies = Vec::with_capacity(handles.len());
    for h in handles {
        let (tx, rx) = oneshot::channel();
        if h.commands.send(ConnCmd::Collect(tx)).await.is_ok() {
            replies.push(rx);
        }
    }
    for reply in replies {
        let Ok(c) = reply.await else { continue };
        report.sent += c.sent;
        report.acked += c.acked;
        report.errors += c.errors;
        report.deliveries += c.deliveries;
        report.deliveries_in_window += c.deliveries_in_window;
        if let Some(why) = c.disconnected {
            report.disconnected += 1;
            if report.disconnect_reasons.len() < EXAMPLES {
                report.disconnect_reasons.push(why);
            }
        }
        report.emitted.extend(c.emitted);
        report.receivers.extend(c.receivers);
    }
    let take = |m: &std::sync::Mutex<Latency>| {
        std::mem::take(&mut *m.lock().unwrap_or_else(|p| p.into_inner())).to_buckets()
    };
    report.latency = take(&shared.latency);
    report.ack_latency = take(&shared.ack_latency);
    report
}

/// Waits until every send is answered and nothing arrived for `quiet_ms`, or
/// `drain_max_ms`; returns how long it waited.
async fn drain(plan: &Plan, shared: &Shared) -> f64 {
    let started = Instant::now();
    let quiet = Duration::from_millis(plan.quiet_ms);
    let max = Duration::from_millis(plan.drain_max_ms);
    let mut last = shared.deliveries.load(Ordering::Relaxed);
    let mut last_change = Instant::now();
    while started.elapsed() < max {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = shared.deliveries.load(Ordering::Relaxed);
        if now != last {
            last = now;
            last_change = Instant::now();
        } else if shared.pending.load(Ordering::Relaxed) <= 0 && last_change.elapsed() >= quiet {
            break;
        }
    }
    started.elapsed().as_secs_f64() * 1000.0
}

/// `chat-bench worker`: a worker process speaking JSON lines on stdin and stdout.
pub async fn process_main() -> anyhow::Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let init = lines
        .next_line()
        .await?
        .ok_or_else(|| anyhow::anyhow!("no init line on stdin"))?;
    let init: WorkerInit = serde_json::from_str(&init).context("reading the init line")?;
    let (command_tx, command_rx) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            match serde_json::from_str::<Command>(&line) {
                Ok(command) => {
                    if command_tx.send(command).await.is_err() {
                        break;
                    }
                }
                Err(e) => eprintln!("chat-bench worker: ignoring command {line:?}: {e}"),
            }
        }
        // EOF: the channel closes and the worker stops.
    });
    let (event_tx, mut event_rx) = mpsc::channel(16);
    let worker = tokio::spawn(run(Arc::new(init.plan), init.share, command_rx, event_tx));
    let mut stdout = tokio::io::stdout();
    while let Some(event) = event_rx.recv().await {
        let mut line = serde_json::to_vec(&event)?;
        line.push(b'\n');
        stdout.write_all(&line).await?;
        stdout.flush().await?;
    }
    worker.await?;
    Ok(())
}
