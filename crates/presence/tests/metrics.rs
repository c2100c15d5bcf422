//! The presence service's metrics, end to end: a real server registered in a process
//! registry, driven over gRPC, then the registry encoded and its exposition lines checked.

use std::sync::Arc;
use std::time::Duration;

use chat_metrics::{Metrics, exposition, missing_lines};
use chat_presence::PresenceServer;
use chat_presence::store::memory::MemoryPresence;
use chat_proto::presence::presence_client::PresenceClient;
use chat_proto::presence::{HeartbeatRequest, QueryRequest, UserRequest};
use chat_testkit::process::eventually;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn grpc_and_store_families() -> anyhow::Result<()> {
    let mut metrics = Metrics::new("presence");
    let store = Arc::new(MemoryPresence::new(Duration::from_secs(30)));
    let server = PresenceServer::bind(([127, 0, 0, 1], 0).into(), store, &mut metrics).await?;
    let url = format!("http://{}", server.local_addr());
    let stop = CancellationToken::new();
    let task = tokio::spawn(server.run(stop.clone()));

    let mut client = PresenceClient::connect(url).await?;
    client
        .attach(UserRequest {
            gateway: "gw1".into(),
            user: "alice".into(),
        })
        .await?;
    client
        .heartbeat(HeartbeatRequest {
            gateway: "gw1".into(),
            users: vec!["alice".into()],
        })
        .await?;
    client
        .query(QueryRequest {
            users: vec!["alice".into(), "bob".into()],
        })
        .await?;
    let refused = client
        .query(QueryRequest {
            users: vec!["not valid".into()],
        })
        .await
        .expect_err("invalid user");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    let expected = r#"# TYPE chat_presence_store_operation_duration_seconds histogram
chat_presence_store_operation_duration_seconds_count{op="connect",backend="memory"} 1
chat_presence_store_operation_duration_seconds_count{op="heartbeat",backend="memory"} 1
chat_presence_store_operation_duration_seconds_count{op="sweep",backend="memory"} 1
chat_presence_store_operation_duration_seconds_count{op="online",backend="memory"} 1
chat_presence_sweeps_total 1
chat_presence_expired_exits_total 0
grpc_server_requests_total{service="chat.presence.v1.Presence",method="Attach",code="OK"} 1
grpc_server_requests_total{service="chat.presence.v1.Presence",method="Heartbeat",code="OK"} 1
grpc_server_requests_total{service="chat.presence.v1.Presence",method="Query",code="OK"} 1
grpc_server_requests_total{service="chat.presence.v1.Presence",method="Query",code="INVALID_ARGUMENT"} 1
grpc_server_request_duration_seconds_count{service="chat.presence.v1.Presence",method="Query",code="OK"} 1
grpc_server_request_duration_seconds_count{service="chat.presence.v1.Presence",method="Query",code="INVALID_ARGUMENT"} 1"#;
    // (The online-users and gateways gauges are sampled every 10 s: see the unit test
    // in src/metrics.rs.)
    let registry = &metrics.registry;
    eventually(Duration::from_secs(5), "metrics", || async {
        missing_lines(&exposition(registry), expected)
            .is_empty()
            .then_some(())
    })
    .await
    .map_err(|e| {
        let text = exposition(registry);
        anyhow::anyhow!(
            "{e}: missing {:?} in\n{text}",
            missing_lines(&text, expected)
        )
    })?;

    stop.cancel();
    task.await??;
    Ok(())
}

/// `chat_presence_redis_*`: registered for a Redis store only; `connected` follows the
/// client, and a reconnect (Redis restarted) is counted once the client is back.
#[tokio::test]
async fn redis_connection_families() -> anyhow::Result<()> {
    let mut metrics = Metrics::new("presence");
    let _memory =
        chat_presence::open_store(&chat_presence::Settings::default(), &mut metrics).await?;
    let text = exposition(&metrics.registry);
    assert!(!text.contains("chat_presence_redis"), "{text}");

    let mut redis = chat_testkit::redis::RedisServer::start().await?;
    let mut metrics = Metrics::new("presence");
    let settings = chat_presence::Settings {
        redis_url: Some(redis.url()),
        ..Default::default()
    };
    let _store = chat_presence::open_store(&settings, &mut metrics).await?;
    let expected = r#"# HELP chat_presence_redis_reconnects_total Reconnections of the presence store's Redis connection (fred reconnects by itself after a failure).
# TYPE chat_presence_redis_reconnects_total counter
chat_presence_redis_reconnects_total 0
# HELP chat_presence_redis_connected 1 while the presence store's Redis connection is up, else 0.
# TYPE chat_presence_redis_connected gauge
chat_presence_redis_connected 1"#;
    let text = exposition(&metrics.registry);
    assert_eq!(missing_lines(&text, expected), Vec::<&str>::new(), "{text}");

    redis.restart().await?;
    let registry = &metrics.registry;
    let back = "chat_presence_redis_reconnects_total 1\nchat_presence_redis_connected 1";
    eventually(Duration::from_secs(10), "reconnect counted", || async {
        missing_lines(&exposition(registry), back)
            .is_empty()
            .then_some(())
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}:\n{}", exposition(registry)))?;
    Ok(())
}
