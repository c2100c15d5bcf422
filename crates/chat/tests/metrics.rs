//! The all-in-one's `/metrics`: one registry for the whole process, served by the
//! gateway, with the eight compatibility metrics (docs/observability.md) exactly, history's, presence's and the gateway's
//! families, no family twice, and values that chat traffic moves.

use chat_metrics::missing_lines;
use chat_testkit::process::eventually;
use chat_testkit::ws::WsClient;
use tokio_util::sync::CancellationToken;

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_in_one_serves_one_registry() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let chat =
        chat::AllInOne::build_embedded(dir.path(), common::all_in_one_gateway(), shutdown.clone())
            .await?;
    let addr = chat.http_addr()?;
    tokio::spawn(chat.run());
    let http = reqwest::Client::new();
    let scrape = || async {
        http.get(format!("http://{addr}/metrics"))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await
    };

    // Before any traffic: the eight compatibility metrics, once each.
    let text = scrape().await?;
    for name in [
        "http_requests_total counter",
        "http_request_duration_seconds histogram",
        "ws_connections_active gauge",
        "ws_connections_total counter",
        "ws_messages_total counter",
        "ws_message_latency_seconds histogram",
        "cpu_usage_percent gauge",
        "memory_usage_percent gauge",
    ] {
        let line = format!("# TYPE {name}");
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    let mut types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    let all = types.len();
    types.sort_unstable();
    types.dedup();
    assert_eq!(all, types.len(), "a family is exposed twice:\n{text}");

    // Traffic: two users in a room, a few messages, a resend, a 404.
    let mut alice = WsClient::join_as(addr, "alice", "general").await?;
    let mut bob = WsClient::join_as(addr, "bob", "general").await?;
    for i in 0..3 {
        let ack = alice
            .send_message("general", &format!("hello {i}"), &format!("c{i}"))
            .await?;
        assert_eq!(ack["type"], "ack", "{ack}");
        bob.next_message("general").await?;
    }
    let again = alice.send_message("general", "hello 0", "c0").await?;
    assert_eq!(again["duplicate"], true, "{again}");
    let missing = http
        .get(format!("http://{addr}/no/such/page"))
        .send()
        .await?;
    assert_eq!(missing.status(), 404);

    let expected = r#"build_info{service="chat",version="0.1.0",git_commit="unknown"} 1
ws_connections_active 2
ws_connections_total 2
ws_message_latency_seconds_count 4
ws_message_latency_seconds_bucket{le="10"} 4
http_requests_total{method="GET",endpoint="/v1/ws",status="101"} 2
http_requests_total{method="GET",endpoint="unmatched",status="404"} 1
chat_gateway_online_users 2
chat_gateway_rooms_active 1
chat_history_appends_total{result="stored"} 3
chat_history_appends_total{result="duplicate"} 1
grpc_server_requests_total{service="chat.history.v1.History",method="Append",code="OK"} 4
grpc_client_requests_total{service="chat.history.v1.History",method="Append",code="OK"} 4
grpc_server_requests_total{service="chat.presence.v1.Presence",method="Attach",code="OK"} 2
grpc_client_requests_total{service="chat.presence.v1.Presence",method="Attach",code="OK"} 2"#;
    let expected = expected.replace("0.1.0", env!("CARGO_PKG_VERSION"));
    // Server-side gRPC calls are recorded as their responses end: poll briefly.
    let last = std::sync::Mutex::new(String::new());
    let seen = eventually(std::time::Duration::from_secs(5), "metrics", || async {
        let text = scrape().await.ok()?;
        let done = missing_lines(&text, &expected).is_empty();
        *last.lock().ok()? = text;
        done.then_some(())
    })
    .await;
    if let Err(e) = seen {
        let text = last.lock().map(|t| t.clone()).unwrap_or_default();
        anyhow::bail!(
            "{e}: missing {:?} in\n{text}",
            missing_lines(&text, &expected)
        );
    }
    // Frames: hello, joined and acks out to alice; messages in to bob; a few in each way.
    let text = scrape().await?;
    for direction in ["in", "out"] {
        let prefix = format!(r#"ws_messages_total{{direction="{direction}"}} "#);
        let count: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(count >= 6, "{direction}: {count}\n{text}");
    }
    alice.close().await;
    bob.close().await;
    Ok(())
}
