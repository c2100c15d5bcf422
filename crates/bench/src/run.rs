//! Load runs: connect, then one round at a fixed rate, or a ramp that searches for the
//! highest delivered rate whose p99 stays under a limit.

use std::sync::Arc;
use std::time::Duration;

use crate::fleet::{Fleet, Spawn};
use crate::plan::{Plan, Share, shares};
use crate::report::{ConnectSummary, Report, RoundSummary};

/// A load run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub plan: Plan,
    /// Messages per second in, over all senders.
    pub rate: f64,
    /// Send phase of each round.
    pub duration: Duration,
    /// Worker processes; 0 runs one worker inside this process.
    pub workers: u32,
    /// Search for the best rate instead of one round.
    pub ramp: Option<Ramp>,
}

/// How to search for the highest rate that meets a p99 limit.
#[derive(Debug, Clone, Copy)]
pub struct Ramp {
    pub p99_limit_ms: f64,
    /// Each passing round multiplies the rate by this.
    pub factor: f64,
    /// Rounds of geometric growth at most.
    pub max_rounds: u32,
    /// Bisection rounds between the last pass and the first failure.
    pub bisect: u32,
    /// Never go above this rate.
    pub max_rate: f64,
}

/// Runs the load described by `opts` and reports.
pub async fn run(opts: &RunOptions) -> anyhow::Result<Report> {
    let plan = Arc::new(opts.plan.clone());
    let (shares, spawn) = if opts.workers == 0 {
        (
            vec![Share {
                first: 0,
                count: plan.connections,
            }],
            Spawn::InProcess,
        )
    } else {
        (
            shares(0, plan.connections, opts.workers),
            Spawn::processes()?,
        )
    };
    // A worker's part of the rate is its part of the sender slots (memberships).
    let weights: Vec<f64> = shares
        .iter()
        .map(|s| {
            (s.first..s.first + s.count)
                .map(|c| plan.rooms_of(c).len() as f64)
                .sum()
        })
        .collect();
    let (mut fleet, connect) = Fleet::start(&plan, &shares, &spawn).await?;
    let mut report = Report {
        protocol: plan.protocol,
        targets: plan.targets.clone(),
        connections: plan.connections,
        workers: shares.len() as u32,
        rooms: plan.rooms,
        members_per_room: plan.members().into_iter().max().unwrap_or(0),
        connect: ConnectSummary::merge(&connect),
        rounds: Vec::new(),
        p99_limit_ms: opts.ramp.map(|r| r.p99_limit_ms),
        best_round: None,
    };
    let outcome = drive(opts, &plan, &mut fleet, &weights, &mut report).await;
    fleet.stop().await;
    outcome?;
    Ok(report)
}

async fn drive(
    opts: &RunOptions,
    plan: &Plan,
    fleet: &mut Fleet,
    weights: &[f64],
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut n = 0u32;
    let mut round = async |rate: f64| {
        let reports = fleet.round(n, rate, opts.duration, weights).await?;
        n += 1;
        anyhow::Ok(RoundSummary::merge(
            plan,
            rate,
            opts.duration.as_secs_f64(),
            &reports,
        ))
    };
    let Some(ramp) = opts.ramp else {
        let summary = round(opts.rate).await?;
        report.rounds.push(summary);
        return Ok(());
    };
    let passes = |r: &RoundSummary| {
        r.is_clean() && r.latency_ms.p99 <= ramp.p99_limit_ms && r.sent_per_sec >= 0.97 * r.rate
    };
    let mut results: Vec<(f64, bool, RoundSummary)> = Vec::new();
    let mut rate = opts.rate;
    let (mut good, mut bad) = (None::<f64>, None::<f64>);
    for _ in 0..ramp.max_rounds {
        let summary = round(rate).await?;
        let ok = passes(&summary);
        eprintln!(
            "round at {rate:.0} msg/s: delivered {:.0}/s, p99 {:.2} ms, {}",
            summary.delivered_per_sec,
            summary.latency_ms.p99,
            if ok { "pass" } else { "fail" }
        );
        results.push((rate, ok, summary));
        if !ok {
            bad = Some(rate);
            break;
        }
        good = Some(rate);
        if rate >= ramp.max_rate {
            break;
        }
        rate = (rate * ramp.factor).min(ramp.max_rate);
    }
    if let (Some(mut lo), Some(mut hi)) = (good, bad) {
        for _ in 0..ramp.bisect {
            let mid = (lo + hi) / 2.0;
            let summary = round(mid).await?;
            let ok = passes(&summary);
            eprintln!(
                "round at {mid:.0} msg/s: delivered {:.0}/s, p99 {:.2} ms, {}",
                summary.delivered_per_sec,
                summary.latency_ms.p99,
                if ok { "pass" } else { "fail" }
            );
            results.push((mid, ok, summary));
            if ok { lo = mid } else { hi = mid }
        }
    }
    report.best_round = results
        .iter()
        .enumerate()
        .filter(|(_, (_, ok, _))| *ok)
        .max_by(|a, b| a.1.2.delivered_per_sec.total_cmp(&b.1.2.delivered_per_sec))
        .map(|(i, _)| i);
    report.rounds = results.into_iter().map(|(_, _, s)| s).collect();
    Ok(())
}
