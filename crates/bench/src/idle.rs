//! Idle connections: the server's resident memory per connection, as the slope of its
//! RSS between connection counts (e.g. 2k and 18k).
//!
//! Each step starts new workers for the connections it adds (earlier steps keep theirs
//! open), waits for them, lets the server settle, then reads `VmRSS` of the server
//! process from `/proc/<pid>/status`. The slope between the first and last step excludes
//! the fixed cost of the process.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::fleet::{Fleet, Spawn};
use crate::plan::{Plan, shares, workers_for};
use crate::report::ConnectSummary;

/// An idle measurement.
#[derive(Debug, Clone)]
pub struct IdleOptions {
    /// `connections` is ignored: the steps say how many.
    pub plan: Plan,
    /// Cumulative connection counts, ascending.
    pub steps: Vec<u32>,
    /// The server process to measure.
    pub pid: Option<u32>,
    /// Wait after each step before reading RSS.
    pub settle: Duration,
    /// Connections per worker process at most; 0 runs workers in this process.
    pub per_worker: u32,
}

/// One step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdleStep {
    pub connections: u32,
    pub rss_kib: Option<u64>,
    pub connect: ConnectSummary,
}

/// The outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdleReport {
    pub pid: Option<u32>,
    /// RSS before the first connection.
    pub baseline_rss_kib: Option<u64>,
    pub steps: Vec<IdleStep>,
    /// (RSS at the last step - RSS at the first) / (connections added between them).
    pub kib_per_connection: Option<f64>,
}

/// `VmRSS` of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The median of three RSS readings half a second apart.
async fn settled_rss(pid: Option<u32>) -> Option<u64> {
    let pid = pid?;
    let mut samples = Vec::with_capacity(3);
    for i in 0..3 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        samples.push(rss_kib(pid)?);
    }
    samples.sort_unstable();
    Some(samples[1])
}

/// Runs the steps, then closes every connection.
pub async fn run(opts: &IdleOptions) -> anyhow::Result<IdleReport> {
    let mut plan = opts.plan.clone();
    plan.connections = opts.steps.iter().copied().max().unwrap_or(0);
    // Default membership (one room each) does not depend on the total, so the steps'
    // connections are the same as one run's would be.
    plan.members_per_room = None;
    let plan = Arc::new(plan);
    let spawn = if opts.per_worker == 0 {
        Spawn::InProcess
    } else {
        Spawn::processes()?
    };
    let mut report = IdleReport {
        pid: opts.pid,
        baseline_rss_kib: settled_rss(opts.pid).await,
        steps: Vec::new(),
        kib_per_connection: None,
    };
    let mut fleets = Vec::new();
    let mut have = 0u32;
    let mut outcome = Ok(());
    for &step in &opts.steps {
        if step <= have {
            continue;
        }
        let add = step - have;
        let workers = if opts.per_worker == 0 {
            1
        } else {
            workers_for(add, opts.per_worker)
        };
        let started = Fleet::start(&plan, &shares(have, add, workers), &spawn).await;
        let (fleet, connect) = match started {
            Ok(started) => started,
            Err(e) => {
                outcome = Err(e);
                break;
            }
        };
        fleets.push(fleet);
        have = step;
        tokio::time::sleep(opts.settle).await;
        let rss = settled_rss(opts.pid).await;
        let connect = ConnectSummary::merge(&connect);
        eprintln!(
            "{step} connections ({} failed in this step): RSS {} KiB",
            connect.failed,
            rss.map_or_else(|| "?".into(), |r| r.to_string())
        );
        report.steps.push(IdleStep {
            connections: step,
            rss_kib: rss,
            connect,
        });
    }
    for fleet in fleets {
        fleet.stop().await;
    }
    outcome?;
    if let (Some(first), Some(last)) = (report.steps.first(), report.steps.last())
        && let (Some(a), Some(b)) = (first.rss_kib, last.rss_kib)
        && last.connections > first.connections
    {
        let opened = |s: &IdleStep| f64::from(s.connections) - f64::from(s.connect.failed);
        report.kib_per_connection = Some((b as f64 - a as f64) / (opened(last) - opened(first)));
    }
    Ok(report)
}

/// The human-readable form.
pub fn table(report: &IdleReport) -> String {
    let mut out = format!(
        "idle connections, server pid {}: baseline RSS {} KiB\n{:>12} {:>12} {:>8} {:>10}\n",
        report.pid.map_or_else(|| "?".into(), |p| p.to_string()),
        report
            .baseline_rss_kib
            .map_or_else(|| "?".into(), |r| r.to_string()),
        "connections",
        "RSS KiB",
        "failed",
        "conn/s"
    );
    for s in &report.steps {
        out.push_str(&format!(
            "{:>12} {:>12} {:>8} {:>10.0}\n",
            s.connections,
            s.rss_kib.map_or_else(|| "?".into(), |r| r.to_string()),
            s.connect.failed,
            s.connect.per_sec
        ));
    }
    if let Some(slope) = report.kib_per_connection {
        out.push_str(&format!(
            "slope: {slope:.2} KiB per idle connection (target <= 8)\n"
        ));
    }
    out
}
