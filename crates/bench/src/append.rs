//! History append throughput: many concurrent appenders driving a
//! [`chat_history::MessageStore`] directly (no gRPC, no gateway), then a check that
//! every room's seqs are exactly 1..n.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chat_history::store::embedded::EmbeddedStore;
use chat_history::store::mongo::MongoStore;
use chat_history::{MessageStore, NewMessage, Page};
use chat_model::{ClientMsgId, RoomId, UserId};
use serde::{Deserialize, Serialize};

use crate::latency::{Latency, Percentiles};

/// Which store to drive.
#[derive(Debug, Clone)]
pub enum StoreKind {
    /// The embedded redb store in this directory (created if missing).
    Embedded(PathBuf),
    /// A MongoDB server and database.
    Mongo { url: String, db: String },
}

/// An append benchmark.
#[derive(Debug, Clone)]
pub struct AppendOptions {
    pub store: StoreKind,
    /// Concurrent appenders (each waits for its append before the next, like a gateway
    /// connection).
    pub appenders: u32,
    pub messages: u64,
    pub rooms: u32,
    pub body_size: usize,
}

/// The outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppendReport {
    pub store: String,
    pub appenders: u32,
    pub rooms: u32,
    pub messages: u64,
    pub seconds: f64,
    pub per_sec: f64,
    pub latency_ms: Percentiles,
    /// Every room holds seqs 1..n with no gap and the counts add up.
    pub seqs_gapless: bool,
}

/// Runs the benchmark.
pub async fn run(opts: &AppendOptions) -> anyhow::Result<AppendReport> {
    let (store, name): (Arc<dyn MessageStore>, String) = match &opts.store {
        StoreKind::Embedded(dir) => {
            let dir = dir.clone();
            let store = tokio::task::spawn_blocking(move || EmbeddedStore::open(dir)).await??;
            (Arc::new(store), "embedded".into())
        }
        StoreKind::Mongo { url, db } => (
            Arc::new(MongoStore::connect(url, db).await?),
            "mongodb".into(),
        ),
    };
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let run_id = &run_id[run_id.len() - 8..];
    let rooms: Arc<Vec<RoomId>> = Arc::new(
        (0..opts.rooms.max(1))
            .map(|r| RoomId::parse(&format!("append-{run_id}-{r}")))
            .collect::<Result<_, _>>()?,
    );
    let body = "x".repeat(opts.body_size);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for a in 0..opts.appenders.max(1) {
        let (store, rooms, next, body) = (store.clone(), rooms.clone(), next.clone(), body.clone());
        let total = opts.messages;
        let from = UserId::parse(&format!("appender-{a}"))?;
        tasks.spawn(async move {
            let mut latency = Latency::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let msg = NewMessage {
                    room: rooms[(i % rooms.len() as u64) as usize].clone(),
                    from: from.clone(),
                    client_id: ClientMsgId::parse(&format!("c{i}"))?,
                    body: body.clone(),
                };
                let t = Instant::now();
                store.append(msg).await?;
                latency.record_micros(t.elapsed().as_micros() as u64);
            }
            anyhow::Ok(latency)
        });
    }
    let mut latency = Latency::new();
    while let Some(done) = tasks.join_next().await {
        latency.merge(&done??);
    }
    let seconds = started.elapsed().as_secs_f64();
    // Read every room back: seqs must be exactly 1..n, and the n must add up.
    let mut stored = 0;
    let mut gapless = true;
    for room in rooms.iter() {
        let mut after = 0;
        loop {
            let page = store.list(room, Page::After(after), 1000).await?;
            for m in &page.messages {
                gapless &= m.seq == after + 1;
                after = m.seq;
            }
            if !page.has_more || page.messages.is_empty() {
                gapless &= after == page.last_seq;
                break;
            }
        }
        stored += after;
    }
    gapless &= stored == opts.messages;
    drop(store);
    // Let the embedded writer thread finish before the directory may be removed.
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(AppendReport {
        store: name,
        appenders: opts.appenders,
        rooms: opts.rooms,
        messages: opts.messages,
        seconds,
        per_sec: opts.messages as f64 / seconds,
        latency_ms: latency.percentiles(),
        seqs_gapless: gapless,
    })
}

/// The human-readable form.
pub fn table(r: &AppendReport) -> String {
    format!(
        "{} store: {} appends by {} appenders over {} rooms in {:.2} s = {:.0} msg/s; \
         append p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; seqs gapless: {}\n",
        r.store,
        r.messages,
        r.appenders,
        r.rooms,
        r.seconds,
        r.per_sec,
        r.latency_ms.p50,
        r.latency_ms.p99,
        r.latency_ms.max,
        r.seqs_gapless
    )
}
