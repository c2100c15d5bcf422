//! The correctness smoke test: the all-in-one in this process on port 0 (embedded store,
//! in-process fan-out, dev auth), driven by chat-bench's library entry point. A healthy
//! system must show nothing missing, duplicated or out of order.

use std::net::Ipv4Addr;
use std::time::Duration;

use chat_bench::{Auth, Plan, Protocol, RunOptions};
use chat_gateway::AuthMode;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_all_in_one_loses_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // Start from the environment's defaults, then pin what this test relies on.
    let mut gateway = chat_gateway::Settings::from_env(AuthMode::Dev)?;
    gateway.http_addr = (Ipv4Addr::LOCALHOST, 0).into();
    gateway.redis_url = None;
    gateway.auth_mode = AuthMode::Dev;
    gateway.workers = 2;
    gateway.shutdown_grace_secs = 1;
    let shutdown = CancellationToken::new();
    let chat = chat::AllInOne::build_embedded(dir.path(), gateway, shutdown.clone()).await?;
    let addr = chat.http_addr()?;
    let server = tokio::spawn(chat.run());

    let plan = Plan {
        targets: vec![format!("ws://{addr}")],
        protocol: Protocol::Chat,
        auth: Auth::Dev,
        connections: 50,
        rooms: 5,
        members_per_room: None,
        body_size: 64,
        sources: vec![Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2)],
        run_id: chat_bench::cli::run_id(),
        connect_concurrency: 16,
        connect_timeout_ms: 10_000,
        quiet_ms: 300,
        drain_max_ms: 5_000,
    };
    let report = chat_bench::run(&RunOptions {
        plan,
        rate: 200.0,
        duration: Duration::from_secs(2),
        workers: 0,
        ramp: None,
    })
    .await?;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;

    println!("{}", chat_bench::report::table(&report));
    assert_eq!(report.connect.ok, 50, "{:?}", report.connect.errors);
    let round = &report.rounds[0];
    assert!(round.sent >= 390, "sent only {}", round.sent);
    assert_eq!(round.acked, round.sent);
    assert!(round.deliveries > 0);
    // Every message reaches its room's 10 members.
    assert_eq!(round.expected_deliveries, round.acked * 10);
    let c = &round.correctness;
    assert_eq!(
        (c.missing, c.duplicates, c.out_of_order),
        (0, 0, 0),
        "{c:?}"
    );
    assert_eq!(round.deliveries, round.expected_deliveries);
    assert!(report.is_clean(), "{report:?}");
    Ok(())
}
