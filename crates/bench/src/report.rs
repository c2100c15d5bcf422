//! The coordinator's report: workers' findings merged into one summary per round, as
//! JSON (`--json`) or a human table.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::check::{self, Correctness};
use crate::latency::{Latency, Percentiles};
use crate::plan::{Plan, Protocol};
use crate::worker::{ConnectReport, RoundReport};

/// A whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub protocol: Protocol,
    pub targets: Vec<String>,
    pub connections: u32,
    pub workers: u32,
    pub rooms: u32,
    /// Members of the largest room.
    pub members_per_room: u32,
    pub connect: ConnectSummary,
    pub rounds: Vec<RoundSummary>,
    /// Ramp runs: the p99 limit, and the index of the best round that met it.
    pub p99_limit_ms: Option<f64>,
    pub best_round: Option<usize>,
}

impl Report {
    /// Every connection opened and every round was clean and complete.
    pub fn is_clean(&self) -> bool {
        self.connect.failed == 0 && self.rounds.iter().all(RoundSummary::is_clean)
    }
}

/// The connect phase over all workers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectSummary {
    pub ok: u32,
    pub failed: u32,
    pub seconds: f64,
    /// Connections opened per second (handshake and joins included).
    pub per_sec: f64,
    pub latency_ms: Percentiles,
    pub errors: Vec<String>,
}

impl ConnectSummary {
    /// Merges the workers' connect reports (they connect concurrently).
    pub fn merge(reports: &[ConnectReport]) -> Self {
        let mut latency = Latency::new();
        let mut s = Self::default();
        for r in reports {
            s.ok += r.ok;
            s.failed += r.failed;
            s.seconds = s.seconds.max(r.elapsed_ms / 1000.0);
            latency.merge(&Latency::from_buckets(&r.latency));
            s.errors
                .extend(r.errors.iter().take(5 - s.errors.len().min(5)).cloned());
        }
        s.per_sec = if s.seconds > 0.0 {
            f64::from(s.ok) / s.seconds
        } else {
            0.0
        };
        s.latency_ms = latency.percentiles();
        s
    }
}

/// One round over all workers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RoundSummary {
    /// Target send rate (msg/s in).
    pub rate: f64,
    pub duration_s: f64,
    pub sent: u64,
    pub sent_per_sec: f64,
    /// Chat: acks received.
    pub acked: u64,
    /// Chat: `error` replies to sends.
    pub errors: u64,
    /// Sends the client itself could not queue (client overloaded).
    pub dropped: u64,
    /// Every delivery, drain included.
    pub deliveries: u64,
    /// Deliveries that arrived within the send window, per second of it.
    pub delivered_per_sec: f64,
    /// Deliveries the checker expected (every member, every stored message).
    pub expected_deliveries: u64,
    /// Send (due time) to receipt, every delivery.
    pub latency_ms: Percentiles,
    /// Chat: send (due time) to ack.
    pub ack_latency_ms: Option<Percentiles>,
    pub correctness: Correctness,
    pub disconnected: u32,
    pub disconnect_reasons: Vec<String>,
    /// Longest drain of any worker.
    pub drain_ms: f64,
}

impl RoundSummary {
    /// Merges the workers' reports of one round.
    pub fn merge(plan: &Plan, rate: f64, duration_s: f64, reports: &[RoundReport]) -> Self {
        let mut latency = Latency::new();
        let mut ack_latency = Latency::new();
        let mut s = Self {
            rate,
            duration_s,
            ..Self::default()
        };
        for r in reports {
            s.sent += r.sent;
            s.acked += r.acked;
            s.errors += r.errors;
            s.dropped += r.dropped;
            s.deliveries += r.deliveries;
            s.delivered_per_sec += r.deliveries_in_window as f64;
            s.disconnected += r.disconnected;
            s.disconnect_reasons
                .extend(r.disconnect_reasons.iter().cloned());
            s.drain_ms = s.drain_ms.max(r.drain_ms);
            latency.merge(&Latency::from_buckets(&r.latency));
            ack_latency.merge(&Latency::from_buckets(&r.ack_latency));
        }
        s.disconnect_reasons.truncate(5);
        if duration_s > 0.0 {
            s.delivered_per_sec /= duration_s;
            s.sent_per_sec = s.sent as f64 / duration_s;
        } else {
            s.delivered_per_sec = 0.0;
        }
        s.latency_ms = latency.percentiles();
        if plan.protocol == Protocol::Chat {
            s.ack_latency_ms = Some(ack_latency.percentiles());
        }
        s.correctness = check::check(
            plan.protocol,
            reports.iter().flat_map(|r| &r.emitted),
            reports.iter().flat_map(|r| &r.receivers),
        );
        s.expected_deliveries = s.correctness.expected;
        s
    }

    /// Clean: nothing missing, duplicated, out of order, dropped, refused or cut off.
    pub fn is_clean(&self) -> bool {
        self.correctness.is_clean()
            && self.dropped == 0
            && self.errors == 0
            && self.disconnected == 0
    }
}

/// The human-readable form of a report.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    let c = &report.connect;
    let _ = writeln!(
        out,
        "chat-bench: {:?} on {} | {} connections in {} worker(s), {} rooms (up to {} members)",
        report.protocol,
        report.targets.join(", "),
        report.connections,
        report.workers,
        report.rooms,
        report.members_per_room,
    );
    let _ = writeln!(
        out,
        "connect: {} ok, {} failed in {:.2} s = {:.0} conn/s; handshake p50 {:.2} ms, p99 {:.2} ms",
        c.ok, c.failed, c.seconds, c.per_sec, c.latency_ms.p50, c.latency_ms.p99
    );
    for e in &c.errors {
        let _ = writeln!(out, "  error: {e}");
    }
    if report.rounds.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "{:>3} {:>8} {:>9} {:>11} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>6} {:>5} {:>5}",
        "#",
        "rate/s",
        "sent/s",
        "deliv/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9",
        "max ms",
        "ack p99",
        "missing",
        "dup",
        "ooo",
        "disc"
    );
    for (i, r) in report.rounds.iter().enumerate() {
        let l = &r.latency_ms;
        let ack = r
            .ack_latency_ms
            .map_or_else(|| "-".to_owned(), |a| format!("{:.2}", a.p99));
        let best = if report.best_round == Some(i) {
            " <- best"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{:>3} {:>8.0} {:>9.0} {:>11.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8} {:>9} {:>6} {:>5} {:>5}{best}",
            i,
            r.rate,
            r.sent_per_sec,
            r.delivered_per_sec,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            ack,
            r.correctness.missing,
            r.correctness.duplicates,
            r.correctness.out_of_order,
            r.disconnected,
        );
    }
    for (i, r) in report.rounds.iter().enumerate() {
        let k = &r.correctness;
        let _ = writeln!(
            out,
            "round {i}: {} deliveries of {} expected over {} receiver-rooms; {} acked, {} errors, {} dropped by the client, drain {:.0} ms; {}",
            r.deliveries,
            r.expected_deliveries,
            k.receivers,
            r.acked,
            r.errors,
            r.dropped,
            r.drain_ms,
            if r.is_clean() { "CLEAN" } else { "PROBLEMS" }
        );
        for p in &k.examples {
            let _ = writeln!(
                out,
                "  conn {} room {}: {} missing, {} duplicates, {} out of order",
                p.conn, p.room, p.missing, p.duplicates, p.out_of_order
            );
        }
        for why in &r.disconnect_reasons {
            let _ = writeln!(out, "  disconnected: {why}");
        }
    }
    if let Some(limit) = report.p99_limit_ms {
        match report.best_round {
            Some(i) => {
                let _ = writeln!(
                    out,
                    "best with p99 <= {limit} ms and clean: round {i}, {:.0} deliveries/s at {:.0} msg/s in",
                    report.rounds[i].delivered_per_sec, report.rounds[i].rate
                );
            }
            None => {
                let _ = writeln!(out, "no round met p99 <= {limit} ms cleanly");
            }
        }
    }
    out
}
