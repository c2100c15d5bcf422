//! `chat-bench`: a load generator with a correctness checker, for this chat and for the
//! stacks users migrate from (Socket.IO, raw WebSocket relays), measured by the same
//! client so comparisons are fair.
//!
//! A run opens N WebSocket connections (bound to several 127.0.0.x source addresses, so
//! large counts fit in the ephemeral port range; spread over worker processes, as one
//! process may hold 20,000 descriptors here), joins them to rooms, sends at a target
//! aggregate rate, and reports connect rate, end-to-end latency (the due time travels in
//! the body; HdrHistogram percentiles), delivered msg/s, and per receiver and room the
//! missing, duplicate and out-of-order messages.
//!
//! # Layout
//!
//! - [`cli`]: the command line (`run`, `idle`, `append`, internal `worker`).
//! - [`plan`]: who is who: connections, rooms, users, source addresses, worker shares.
//! - [`wire`]: the three client protocols (chat v1, raw, Socket.IO v4) and message bodies.
//! - [`conn`]: opening one connection and the task that drives it.
//! - [`worker`]: a share of the connections driven through rounds; also the worker
//!   process's JSON-lines loop.
//! - [`fleet`]: the coordinator's handle on its workers (in-process or child processes).
//! - [`run`]: a fixed-rate run or a ramp to the best rate under a p99 limit.
//! - [`idle`]: server RSS per idle connection, as a slope between steps.
//! - [`append`]: history store append throughput, driven directly.
//! - [`check`]: the correctness checker; [`rangeset`]: compact seq sets for it.
//! - [`latency`]: histograms that cross process boundaries; [`report`]: merging and
//!   printing.

pub mod append;
pub mod check;
pub mod cli;
pub mod conn;
pub mod fleet;
pub mod idle;
pub mod latency;
pub mod logins;
pub mod plan;
pub mod rangeset;
pub mod report;
pub mod run;
pub mod wire;
pub mod worker;

pub use plan::{Auth, Plan, Protocol};
pub use report::Report;
pub use run::{Ramp, RunOptions, run};

/// Microseconds since the Unix epoch: the clock every process of a run shares.
pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
