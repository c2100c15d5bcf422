//! The command line: `chat-bench run | idle | append | logins`, plus the internal
//! `worker`.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::append::{AppendOptions, StoreKind};
use crate::idle::IdleOptions;
use crate::plan::{Auth, Plan, Protocol, workers_for};
use crate::run::{Ramp, RunOptions};

/// Load generator with a correctness checker for the chat and for peer stacks.
#[derive(Debug, Parser)]
#[command(name = "chat-bench", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Connect, join rooms, send at a rate, measure latency, throughput and correctness.
    Run(RunArgs),
    /// Hold idle connections in steps and report the server's RSS per connection.
    Idle(IdleArgs),
    /// Append throughput of a history store, driven directly (no gRPC).
    Append(AppendArgs),
    /// Log-ins per second of accounts replicas over gRPC, against the argon2id floor.
    Logins(LoginArgs),
    /// Internal: a worker process (JSON lines on stdin/stdout).
    #[command(hide = true)]
    Worker,
}

/// Who to connect to and how.
#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    /// Base URL of a target (`ws://host:port`); repeat or comma-separate for several
    /// gateways (connections are spread round-robin). nginx is just another URL.
    #[arg(long, value_delimiter = ',', default_value = "ws://127.0.0.1:8000")]
    pub target: Vec<String>,
    /// Client protocol: chat (`/v1/ws`), raw (`/ws/<room>`) or socketio.
    #[arg(long, value_enum, default_value_t = Protocol::Chat)]
    pub protocol: Protocol,
    /// Mint HS256 tokens (`sub`, `exp`) with this secret; without it, dev mode `?user=`.
    #[arg(long, env = "CHAT_BENCH_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Rooms; 0 = join nothing.
    #[arg(long, default_value_t = 10)]
    pub rooms: u32,
    /// Members per room (default: every connection joins exactly one room).
    #[arg(long)]
    pub members_per_room: Option<u32>,
    /// Bytes per message body.
    #[arg(long, default_value_t = 64)]
    pub body_size: usize,
    /// Bind client sockets to 127.0.0.1 ..= 127.0.0.N (each has its own ephemeral
    /// port range).
    #[arg(long, default_value_t = 4)]
    pub sources: u8,
    /// Explicit source addresses instead of --sources.
    #[arg(long, value_delimiter = ',')]
    pub source_ip: Vec<Ipv4Addr>,
    /// Connections each worker opens at once.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Seconds one connection may take to connect, handshake and join.
    #[arg(long, default_value_t = 30.0)]
    pub connect_timeout: f64,
    /// Connections per worker process at most (a process may hold 20,000 descriptors).
    #[arg(long, default_value_t = 15_000)]
    pub per_worker: u32,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Connections.
    #[arg(long, default_value_t = 1000)]
    pub connections: u32,
    /// Messages per second in, over all senders (every member sends, round-robin).
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Seconds of sending per round.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// After sending: stop draining once nothing arrived for this many ms...
    #[arg(long, default_value_t = 500)]
    pub quiet_ms: u64,
    /// ... or after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    pub drain_max: f64,
    /// Worker processes (default: enough for --per-worker; 0 = inside this process).
    #[arg(long)]
    pub workers: Option<u32>,
    /// Search for the highest delivered rate with p99 <= --p99-limit-ms, starting at
    /// --rate and growing by --ramp-factor, then bisecting.
    #[arg(long)]
    pub ramp: bool,
    #[arg(long, default_value_t = 50.0)]
    pub p99_limit_ms: f64,
    #[arg(long, default_value_t = 1.5)]
    pub ramp_factor: f64,
    #[arg(long, default_value_t = 12)]
    pub ramp_rounds: u32,
    #[arg(long, default_value_t = 2)]
    pub bisect: u32,
    #[arg(long, default_value_t = 1_000_000.0)]
    pub max_rate: f64,
}

#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Cumulative connection counts at which to read the server's RSS.
    #[arg(long, value_delimiter = ',', default_value = "2000,18000")]
    pub steps: Vec<u32>,
    /// The server process whose VmRSS is read.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Seconds to wait after each step before reading RSS.
    #[arg(long, default_value_t = 5.0)]
    pub settle: f64,
    /// Run the workers inside this process (small counts only).
    #[arg(long)]
    pub in_process: bool,
}

#[derive(Debug, Clone, Args)]
pub struct AppendArgs {
    /// Directory of the embedded store (created; a fresh one gives comparable numbers).
    #[arg(long, conflicts_with = "mongodb_url")]
    pub dir: Option<PathBuf>,
    /// Drive a MongoDB store instead.
    #[arg(long)]
    pub mongodb_url: Option<String>,
    #[arg(long, default_value = "chat_bench")]
    pub mongodb_db: String,
    /// Concurrent appenders.
    #[arg(long, default_value_t = 256)]
    pub appenders: u32,
    /// Appends in total.
    #[arg(long, default_value_t = 100_000)]
    pub messages: u64,
    #[arg(long, default_value_t = 100)]
    pub rooms: u32,
    #[arg(long, default_value_t = 64)]
    pub body_size: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct LoginArgs {
    /// Accounts replicas (`http://host:port`), repeat or comma-separate; called
    /// round-robin.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:50053")]
    pub target: Vec<String>,
    /// The replicas' internal token.
    #[arg(long, env = "CHAT_INTERNAL_TOKEN", hide_env_values = true)]
    pub internal_token: Option<String>,
    /// Users signed up first (log-ins go round-robin over them).
    #[arg(long, default_value_t = 100)]
    pub users: u32,
    /// Log-ins in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: u32,
    /// Seconds to measure.
    #[arg(long, default_value_t = 20.0)]
    pub seconds: f64,
    /// Seconds to measure the argon2id floor (hashes per second on one core) first; 0
    /// skips it.
    #[arg(long, default_value_t = 5.0)]
    pub floor_seconds: f64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

impl LoginArgs {
    /// The benchmark's options.
    pub fn options(&self) -> crate::logins::LoginOptions {
        crate::logins::LoginOptions {
            targets: self.target.clone(),
            internal_token: self.internal_token.clone(),
            users: self.users,
            concurrency: self.concurrency,
            seconds: self.seconds,
            floor_seconds: self.floor_seconds,
        }
    }
}

/// A fresh run id: room and user names start with it.
pub fn run_id() -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("b{}", &id[id.len() - 8..])
}

impl ConnArgs {
    /// The plan for `connections` connections.
    pub fn plan(&self, connections: u32, quiet_ms: u64, drain_max: f64) -> anyhow::Result<Plan> {
        anyhow::ensure!(!self.target.is_empty(), "at least one --target");
        let sources = if self.source_ip.is_empty() {
            (1..=self.sources.max(1))
                .map(|k| Ipv4Addr::new(127, 0, 0, k))
                .collect()
        } else {
            self.source_ip.clone()
        };
        Ok(Plan {
            targets: self.target.clone(),
            protocol: self.protocol,
            auth: match &self.jwt_secret {
                Some(secret) => Auth::Jwt {
                    secret: secret.clone(),
                },
                None => Auth::Dev,
            },
            connections,
            rooms: self.rooms,
            members_per_room: self.members_per_room,
            body_size: self.body_size,
            sources,
            run_id: run_id(),
            connect_concurrency: self.connect_concurrency,
            connect_timeout_ms: (self.connect_timeout * 1000.0) as u64,
            quiet_ms,
            drain_max_ms: (drain_max * 1000.0) as u64,
        })
    }
}

impl RunArgs {
    /// The run these arguments describe.
    pub fn options(&self) -> anyhow::Result<RunOptions> {
        anyhow::ensure!(
            self.rate >= 0.0 && self.duration > 0.0,
            "bad --rate/--duration"
        );
        let plan = self
            .conn
            .plan(self.connections, self.quiet_ms, self.drain_max)?;
        Ok(RunOptions {
            plan,
            rate: self.rate,
            duration: Duration::from_secs_f64(self.duration),
            workers: self
                .workers
                .unwrap_or_else(|| workers_for(self.connections, self.conn.per_worker)),
            ramp: self.ramp.then_some(Ramp {
                p99_limit_ms: self.p99_limit_ms,
                factor: self.ramp_factor.max(1.01),
                max_rounds: self.ramp_rounds,
                bisect: self.bisect,
                max_rate: self.max_rate,
            }),
        })
    }
}

impl IdleArgs {
    /// The measurement these arguments describe.
    pub fn options(&self) -> anyhow::Result<IdleOptions> {
        let mut steps = self.steps.clone();
        steps.sort_unstable();
        let top = steps.last().copied().unwrap_or(0);
        Ok(IdleOptions {
            plan: self.conn.plan(top, 100, 1.0)?,
            steps,
            pid: self.pid,
            settle: Duration::from_secs_f64(self.settle),
            per_worker: if self.in_process {
                0
            } else {
                self.conn.per_worker
            },
        })
    }
}

impl AppendArgs {
    /// The benchmark these arguments describe.
    pub fn options(&self) -> anyhow::Result<AppendOptions> {
        let store = match (&self.dir, &self.mongodb_url) {
            (_, Some(url)) => StoreKind::Mongo {
                url: url.clone(),
                db: self.mongodb_db.clone(),
            },
            (Some(dir), None) => StoreKind::Embedded(dir.clone()),
            (None, None) => anyhow::bail!("give --dir (embedded store) or --mongodb-url"),
        };
        Ok(AppendOptions {
            store,
            appenders: self.appenders,
            messages: self.messages,
            rooms: self.rooms,
            body_size: self.body_size,
        })
    }
}
