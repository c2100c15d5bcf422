//! Log-in throughput of the accounts service over gRPC, against the floor the issue sets
//! it: raw argon2id hashes per second per core with the same parameters (OWASP's, the
//! service's defaults, so the floor is exactly the hash a log-in must do). Signs up `users` users first, then `concurrency` callers log in round-robin
//! over them and over the `targets` (accounts replicas) for `seconds`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chat_accounts::password::HashParams;
use chat_proto::accounts::accounts_client::AccountsClient;
use chat_proto::accounts::error_detail::Reason;
use chat_proto::accounts::{ErrorDetail, LogInRequest, SignUpRequest};
use chat_proto::auth::{AttachToken, InternalToken};
use serde::{Deserialize, Serialize};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::latency::{Latency, Percentiles};

/// A log-in benchmark.
#[derive(Debug, Clone)]
pub struct LoginOptions {
    /// Accounts replicas (`http://host:port`), called round-robin.
    pub targets: Vec<String>,
    /// `CHAT_INTERNAL_TOKEN` of the replicas, if they have one.
    pub internal_token: Option<String>,
    /// Users signed up before the measurement.
    pub users: u32,
    /// Log-ins in flight at once.
    pub concurrency: u32,
    /// How long to measure.
    pub seconds: f64,
    /// How long to measure the hash floor (0: skip it).
    pub floor_seconds: f64,
}

/// The outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginReport {
    pub replicas: usize,
    pub concurrency: u32,
    pub users: u32,
    pub seconds: f64,
    /// Successful log-ins per second.
    pub per_sec: f64,
    pub ok: u64,
    /// Refused `rate_limited` (should be 0: every log-in is right).
    pub rate_limited: u64,
    /// Refused `unavailable` (the hashing queue was full).
    pub unavailable: u64,
    /// Anything else (a wrong answer: the run is not clean).
    pub failed: u64,
    /// Latency of successful log-ins.
    pub latency_ms: Percentiles,
    /// argon2id hashes per second on one core, measured in this process before the run.
    pub hash_floor_per_core: Option<f64>,
}

type Client = AccountsClient<InterceptedService<Channel, AttachToken>>;

/// Measures how many argon2id hashes (OWASP parameters) one core computes per second:
/// raw argon2id on one thread, into one memory block allocated once. (Through the
/// service's hasher, which allocates its 19 MiB per hash, this process measured a third
/// fewer: its allocator returned the block to the kernel after each hash, so every hash
/// also paid ~4,900 page faults that a busy service does not.)
pub async fn hash_floor(seconds: f64) -> anyhow::Result<f64> {
    tokio::task::spawn_blocking(move || raw_hashes_per_sec(HashParams::OWASP, seconds)).await?
}

fn raw_hashes_per_sec(params: HashParams, seconds: f64) -> anyhow::Result<f64> {
    use argon2::{Algorithm, Argon2, Block, Params, Version};
    let params = Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        Some(32),
    )
    .map_err(|e| anyhow::anyhow!("argon2 parameters: {e}"))?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut memory = vec![Block::default(); params.block_count()];
    let mut out = [0_u8; 32];
    let salt = *b"chat-bench-floor";
    let started = Instant::now();
    let mut hashes = 0_u64;
    while started.elapsed().as_secs_f64() < seconds {
        argon
            .hash_password_into_with_memory(
                b"correct horse battery staple 42",
                &salt,
                &mut out,
                &mut memory,
            )
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
        hashes += 1;
    }
    Ok(hashes as f64 / started.elapsed().as_secs_f64())
}

async fn connect(target: &str, token: Option<&InternalToken>) -> anyhow::Result<Client> {
    let channel = Channel::from_shared(target.to_owned())?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to {target}: {e}"))?;
    Ok(AccountsClient::new(InterceptedService::new(
        channel,
        AttachToken::new(token),
    )))
}

/// Runs the benchmark.
pub async fn run(opts: &LoginOptions) -> anyhow::Result<LoginReport> {
    anyhow::ensure!(!opts.targets.is_empty(), "at least one --target");
    let hash_floor_per_core = if opts.floor_seconds > 0.0 {
        Some(hash_floor(opts.floor_seconds).await?)
    } else {
        None
    };
    let token = opts
        .internal_token
        .as_deref()
        .map(InternalToken::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("internal token: {e}"))?;
    let mut clients = Vec::new();
    for target in &opts.targets {
        clients.push(connect(target, token.as_ref()).await?);
    }
    let run = crate::cli::run_id();
    let password = format!("{run}-Quiet-Harbor-Lantern-93");
    let names: Vec<String> = (0..opts.users.max(1))
        .map(|i| format!("{run}.u{i}"))
        .collect();
    for (i, name) in names.iter().enumerate() {
        clients[i % clients.len()]
            .clone()
            .sign_up(SignUpRequest {
                username: name.clone(),
                password: password.clone(),
                display_name: String::new(),
                client_addr: String::new(),
            })
            .await
            .map_err(|s| anyhow::anyhow!("sign-up of {name}: {}", s.message()))?;
    }
    let names = Arc::new(names);
    let clients = Arc::new(clients);
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(opts.seconds);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..opts.concurrency.max(1) {
        let (names, clients, next, password) = (
            names.clone(),
            clients.clone(),
            next.clone(),
            password.clone(),
        );
        tasks.spawn(async move {
            let mut counts = [0_u64; 4];
            let mut latency = Latency::new();
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let t = Instant::now();
                let reply = clients[i % clients.len()]
                    .clone()
                    .log_in(LogInRequest {
                        username: names[i % names.len()].clone(),
                        password: password.clone(),
                        client_addr: String::new(),
                    })
                    .await;
                match reply {
                    Ok(_) => {
                        counts[0] += 1;
                        latency.record_micros(t.elapsed().as_micros() as u64);
                    }
                    Err(status) => {
                        let reason = ErrorDetail::from_status(&status).map(|d| d.reason());
                        match reason {
                            Some(Reason::RateLimited) => counts[1] += 1,
                            Some(Reason::Unavailable) => {
                                counts[2] += 1;
                                // Back off like a client told to retry.
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                            _ => counts[3] += 1,
                        }
                    }
                }
            }
            (counts, latency)
        });
    }
    let mut counts = [0_u64; 4];
    let mut latency = Latency::new();
    while let Some(done) = tasks.join_next().await {
        let (c, l) = done?;
        for (total, n) in counts.iter_mut().zip(c) {
            *total += n;
        }
        latency.merge(&l);
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(LoginReport {
        replicas: opts.targets.len(),
        concurrency: opts.concurrency,
        users: opts.users,
        seconds,
        per_sec: counts[0] as f64 / seconds,
        ok: counts[0],
        rate_limited: counts[1],
        unavailable: counts[2],
        failed: counts[3],
        latency_ms: latency.percentiles(),
        hash_floor_per_core,
    })
}

/// The human-readable form.
pub fn table(r: &LoginReport) -> String {
    let floor = r.hash_floor_per_core.map_or(String::new(), |f| {
        format!(
            "; hash floor {f:.1}/s per core (log-ins/s = {:.2} x floor)",
            r.per_sec / f
        )
    });
    format!(
        "{} replica(s), {} callers: {} log-ins in {:.1} s = {:.1}/s, p50 {:.1} ms, \
         p99 {:.1} ms; rate_limited {}, unavailable {}, failed {}{floor}\n",
        r.replicas,
        r.concurrency,
        r.ok,
        r.seconds,
        r.per_sec,
        r.latency_ms.p50,
        r.latency_ms.p99,
        r.rate_limited,
        r.unavailable,
        r.failed,
    )
}
