//! Real `chat-gateway` processes against history and presence that require the internal
//! token (`CHAT_INTERNAL_TOKEN`): with the right token chat works end to end; with a
//! wrong one `/readyz` says so and client requests answer `unavailable`; without one
//! requests answer `unavailable` too. At trace level, no token reaches the logs.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chat_proto::auth::InternalToken;
use chat_testkit::process::{ChildGuard, eventually, free_port, wait_for_port};
use chat_testkit::ws::WsClient;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "gateway-auth-test-token-c0ffee42d1";
const WRONG: &str = "gateway-auth-wrong-token-0badf00d77";

/// A `chat-gateway` process in dev auth mode, logging everything to `log`.
async fn spawn_gateway(
    history_url: &str,
    presence_url: &str,
    token: Option<&str>,
    log: &Path,
) -> anyhow::Result<(ChildGuard, SocketAddr)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let log = std::fs::File::create(log)?;
    let mut command = Command::new(env!("CARGO_BIN_EXE_chat-gateway"));
    command
        .env_clear()
        .env("RUST_LOG", "trace")
        .env("CHAT_HTTP_ADDR", addr.to_string())
        .env("CHAT_HISTORY_URL", history_url)
        .env("CHAT_PRESENCE_URL", presence_url)
        .env("CHAT_AUTH_MODE", "dev")
        .env("CHAT_HTTP_WORKERS", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if let Some(token) = token {
        command.env("CHAT_INTERNAL_TOKEN", token);
    }
    let mut child = ChildGuard::spawn("chat-gateway", &mut command)?;
    wait_for_port(addr, Duration::from_secs(20), &mut child).await?;
    Ok((child, addr))
}

/// `/readyz` of the gateway at `addr`: status code and body.
async fn readyz(addr: SocketAddr) -> Option<(u16, Value)> {
    let response = reqwest::get(format!("http://{addr}/readyz")).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_with_right_wrong_and_no_token() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let stop = CancellationToken::new();
    let _stop_all = stop.clone().drop_guard();
    let token = InternalToken::parse(TOKEN)?;

    let store = chat_history::open_store(&chat_history::Settings {
        data_dir: dir.path().join("data"),
        ..Default::default()
    })
    .await?;
    let history = chat_history::HistoryServer::bind(
        ([127, 0, 0, 1], 0).into(),
        store,
        &mut chat_metrics::Metrics::new("test"),
    )
    .await?
    .with_internal_token(Some(token.clone()));
    let history_url = format!("http://{}", history.local_addr());
    tokio::spawn(history.run(stop.clone()));
    let presence_store = Arc::new(chat_presence::store::memory::MemoryPresence::new(
        Duration::from_secs(30),
    ));
    let presence = chat_presence::PresenceServer::bind(
        ([127, 0, 0, 1], 0).into(),
        presence_store,
        &mut chat_metrics::Metrics::new("test"),
    )
    .await?
    .with_internal_token(Some(token));
    let presence_url = format!("http://{}", presence.local_addr());
    tokio::spawn(presence.run(stop.clone()));

    let logs = [
        dir.path().join("right.log"),
        dir.path().join("wrong.log"),
        dir.path().join("none.log"),
    ];
    let (mut right, right_addr) =
        spawn_gateway(&history_url, &presence_url, Some(TOKEN), &logs[0]).await?;
    let (mut wrong, wrong_addr) =
        spawn_gateway(&history_url, &presence_url, Some(WRONG), &logs[1]).await?;
    let (mut none, none_addr) = spawn_gateway(&history_url, &presence_url, None, &logs[2]).await?;

    // The right token: ready, and messages and presence go through.
    eventually(
        Duration::from_secs(20),
        "right-token gateway ready",
        || async { (readyz(right_addr).await?.0 == 200).then_some(()) },
    )
    .await?;
    let mut alice = WsClient::connect(&format!("ws://{right_addr}/v1/ws?user=alice")).await?;
    alice.join("general", None).await?;
    let ack = alice.send_message("general", "hello", "c1").await?;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["seq"], 1, "{ack}");
    let online = alice
        .request(json!({"type": "presence", "users": ["alice"]}))
        .await?;
    assert_eq!(online["users"]["alice"], true, "{online}");

    // A wrong token: /readyz names the problem; requests answer `unavailable`.
    let (status, body) = eventually(
        Duration::from_secs(20),
        "wrong-token gateway reports its token",
        || async {
            let (status, body) = readyz(wrong_addr).await?;
            body.to_string()
                .contains("wrong internal token")
                .then_some((status, body))
        },
    )
    .await?;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "not ready", "{body}");
    for (addr, what) in [(wrong_addr, "wrong"), (none_addr, "missing")] {
        let mut bob = WsClient::connect(&format!("ws://{addr}/v1/ws?user=bob")).await?;
        let reply = bob
            .request(json!({"type": "join", "room": "general"}))
            .await?;
        assert_eq!(reply["type"], "error", "{what}: {reply}");
        assert_eq!(reply["code"], "unavailable", "{what}: {reply}");
        let reply = bob
            .request(json!({"type": "presence", "users": ["alice"]}))
            .await?;
        assert_eq!(reply["code"], "unavailable", "{what}: {reply}");
        assert!(
            reply
                .to_string()
                .contains(&format!("{what} internal token")),
            "{what}: {reply}"
        );
    }

    // The health check cannot tell a missing token (it answers token-less probes), but
    // the refused calls above made the token-less gateway unready too.
    let (status, body) = readyz(none_addr)
        .await
        .ok_or_else(|| anyhow::anyhow!("no /readyz answer"))?;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.to_string()
            .contains("refused this gateway's internal token"),
        "{body}"
    );

    for child in [&mut right, &mut wrong, &mut none] {
        child.terminate()?;
        child.wait_exit(Duration::from_secs(20)).await?;
    }
    for log in &logs {
        let output = std::fs::read_to_string(log)?;
        // Every HTTP/2 frame is traced, so a header that leaked would be here.
        assert!(
            output.contains("h2::"),
            "trace level not in effect:\n{output}"
        );
        for secret in [TOKEN, WRONG] {
            assert!(
                !output.contains(secret),
                "{secret} appears in {}:\n{output}",
                log.display()
            );
        }
    }
    Ok(())
}
