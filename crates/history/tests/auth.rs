//! The internal token (`CHAT_INTERNAL_TOKEN`) on a real `HistoryServer`: History calls
//! need it, the health service does not (but refuses a wrong one), refusals are counted
//! and never echo a token, and the `chat-history` binary never logs it.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chat_history::HistoryServer;
use chat_history::store::embedded::EmbeddedStore;
use chat_metrics::Metrics;
use chat_proto::auth::{AttachToken, InternalToken};
use chat_proto::history::history_client::HistoryClient;
use chat_proto::history::{AppendRequest, ListRequest};
use chat_testkit::grpc;
use chat_testkit::process::{ChildGuard, eventually, free_port, wait_for_port};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const TOKEN: &str = "history-auth-test-token-5f0c2a9e";
const WRONG: &str = "history-auth-wrong-token-77d1b3c4";

fn token(value: &str) -> InternalToken {
    InternalToken::parse(value).expect("valid token")
}

/// `channel` with `token` (or none) on every call.
fn with_token(channel: &Channel, value: Option<&str>) -> InterceptedService<Channel, AttachToken> {
    InterceptedService::new(channel.clone(), AttachToken::new(value.map(token).as_ref()))
}

fn append(client_id: &str) -> AppendRequest {
    AppendRequest {
        room: "general".into(),
        sender: "alice".into(),
        client_id: client_id.into(),
        body: "hello".into(),
    }
}

/// Fails unless `result` is `UNAUTHENTICATED` saying `what` (without any token in it).
fn assert_refused<T: std::fmt::Debug>(result: Result<T, tonic::Status>, what: &str) {
    grpc::assert_unauthenticated(result, what, &[TOKEN, WRONG]);
}

#[tokio::test]
async fn history_calls_need_the_token_health_does_not() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(EmbeddedStore::open(dir.path())?);
    let mut metrics = Metrics::new("history");
    let server = HistoryServer::bind(([127, 0, 0, 1], 0).into(), store, &mut metrics)
        .await?
        .with_internal_token(Some(token(TOKEN)));
    let served = grpc::serve(server.local_addr(), |shutdown| server.run(shutdown));
    let channel = served.channel().await;

    // Health without a token: probes (kubelet, chat-probe) carry none.
    eventually(Duration::from_secs(10), "SERVING without a token", || {
        grpc::health_is(&channel, "", ServingStatus::Serving)
    })
    .await?;
    let mut open_health = HealthClient::new(channel.clone());
    open_health.check(grpc::health_check("")).await?;

    // No token, a wrong token: refused before the store is touched.
    let mut anonymous = HistoryClient::new(channel.clone());
    assert_refused(anonymous.append(append("c1")).await, "missing");
    let mut wrong = HistoryClient::new(with_token(&channel, Some(WRONG)));
    assert_refused(wrong.append(append("c1")).await, "wrong");
    assert_refused(
        wrong
            .list(ListRequest {
                room: "general".into(),
                ..Default::default()
            })
            .await,
        "wrong",
    );
    // Health refuses a wrong token (the gateway's readiness check relies on it).
    assert_refused(
        HealthClient::new(with_token(&channel, Some(WRONG)))
            .check(grpc::health_check(""))
            .await,
        "wrong",
    );

    // The right token: served, and nothing refused was stored.
    let mut client = HistoryClient::new(with_token(&channel, Some(TOKEN)));
    let reply = client.append(append("c1")).await?.into_inner();
    assert!(!reply.duplicate, "the refused appends stored nothing");
    assert_eq!(reply.message.map(|m| m.seq), Some(1));
    HealthClient::new(with_token(&channel, Some(TOKEN)))
        .check(grpc::health_check(""))
        .await?;

    // Refusals are counted by the gRPC server metrics, under the real method names.
    let text = chat_metrics::exposition(&metrics.registry);
    let missing = chat_metrics::missing_lines(
        &text,
        r#"grpc_server_requests_total{service="chat.history.v1.History",method="Append",code="UNAUTHENTICATED"} 2
grpc_server_requests_total{service="chat.history.v1.History",method="List",code="UNAUTHENTICATED"} 1
grpc_server_requests_total{service="grpc.health.v1.Health",method="Check",code="UNAUTHENTICATED"} 1
grpc_server_requests_total{service="chat.history.v1.History",method="Append",code="OK"} 1"#,
    );
    assert!(missing.is_empty(), "missing {missing:?} in:\n{text}");

    served.stop().await;
    Ok(())
}

/// Without a token configured, calls need none (and a token sent anyway is ignored).
#[tokio::test]
async fn no_token_configured_means_no_check() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(EmbeddedStore::open(dir.path())?);
    let server = HistoryServer::bind(
        ([127, 0, 0, 1], 0).into(),
        store,
        &mut chat_metrics::Metrics::new("test"),
    )
    .await?;
    let served = grpc::serve(server.local_addr(), |shutdown| server.run(shutdown));
    let channel = served.channel().await;
    HistoryClient::new(channel.clone())
        .append(append("c1"))
        .await?;
    HistoryClient::new(with_token(&channel, Some(WRONG)))
        .append(append("c2"))
        .await?;
    Ok(())
}

/// The `chat-history` binary at the most verbose log level, called with the right token
/// and a wrong one: neither token shows up in its output, and the refusal is logged.
#[tokio::test]
async fn the_binary_never_logs_a_token() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log_path = dir.path().join("history.log");
    let log = std::fs::File::create(&log_path)?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let mut child = ChildGuard::spawn(
        "chat-history",
        Command::new(env!("CARGO_BIN_EXE_chat-history"))
            .env_clear()
            .env("RUST_LOG", "trace")
            .env("CHAT_GRPC_ADDR", addr.to_string())
            .env("CHAT_METRICS_ADDR", "127.0.0.1:0")
            .env("CHAT_DATA_DIR", dir.path().join("data"))
            .env("CHAT_INTERNAL_TOKEN", TOKEN)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log),
    )?;
    wait_for_port(addr, Duration::from_secs(20), &mut child).await?;
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    HistoryClient::new(with_token(&channel, Some(TOKEN)))
        .append(append("c1"))
        .await?;
    assert_refused(
        HistoryClient::new(with_token(&channel, Some(WRONG)))
            .append(append("c2"))
            .await,
        "wrong",
    );
    HealthClient::new(with_token(&channel, Some(TOKEN)))
        .check(grpc::health_check(""))
        .await?;
    child.terminate()?;
    child.wait_exit(Duration::from_secs(20)).await?;

    let output = std::fs::read_to_string(&log_path)?;
    // Every HTTP/2 frame is traced, so a header that leaked would be here.
    assert!(
        output.contains("h2::"),
        "trace level not in effect:\n{output}"
    );
    assert!(
        output.contains("refused a gRPC call: wrong internal token"),
        "refusal not logged:\n{output}"
    );
    assert!(output.contains("History calls require the internal token"));
    for secret in [TOKEN, WRONG] {
        assert!(
            !output.contains(secret),
            "{secret} appears in the log:\n{output}"
        );
    }
    Ok(())
}
