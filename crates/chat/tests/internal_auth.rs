//! The all-in-one's loopback gRPC ports are open to every local user, so without
//! `CHAT_INTERNAL_TOKEN` it makes a random token of its own: other processes are refused,
//! its own gateway gets through, and it does so in process: no connection to those ports
//! is open while it chats.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use chat_proto::accounts::Empty;
use chat_proto::accounts::accounts_client::AccountsClient;
use chat_proto::history::AppendRequest;
use chat_proto::history::history_client::HistoryClient;
use chat_proto::presence::UserRequest;
use chat_proto::presence::presence_client::PresenceClient;
use chat_testkit::process::{ChildGuard, eventually, free_port, wait_for_port};
use chat_testkit::ws::WsClient;
use tonic::Code;

/// The addresses logged as `grpc listening on <addr>`, in order (history, presence,
/// accounts).
fn grpc_addrs(log: &str) -> Vec<SocketAddr> {
    log.match_indices("grpc listening on ")
        .filter_map(|(at, found)| {
            let rest = &log[at + found.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
                .unwrap_or(rest.len());
            rest[..end].parse().ok()
        })
        .collect()
}

/// How many established IPv4 TCP connections have one of `ports` as their local port
/// (the server's side of a connection to that port), from `/proc/net/tcp`.
fn established_to(ports: &[u16]) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields
                .get(1)
                .and_then(|local| local.rsplit_once(':'))
                .and_then(|(_, port)| u16::from_str_radix(port, 16).ok());
            // State 01: ESTABLISHED.
            fields.get(3) == Some(&"01") && local_port.is_some_and(|p| ports.contains(&p))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_services_refuse_other_processes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log_path = dir.path().join("chat.log");
    let log = std::fs::File::create(&log_path)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let mut chat = ChildGuard::spawn(
        "chat",
        Command::new(env!("CARGO_BIN_EXE_chat"))
            .env_clear()
            .env("RUST_LOG", "info")
            .env("CHAT_HTTP_ADDR", addr.to_string())
            .env("CHAT_DATA_DIR", dir.path().join("data"))
            .env("CHAT_HTTP_WORKERS", "1")
            // `?user=` below; accounts still runs (and guards its port) in dev mode.
            .env("CHAT_AUTH_MODE", "dev")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log),
    )?;
    wait_for_port(addr, Duration::from_secs(20), &mut chat).await?;
    let addrs = eventually(
        Duration::from_secs(10),
        "the three grpc addresses logged",
        || {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            async move { Some(grpc_addrs(&log)).filter(|a| a.len() == 3) }
        },
    )
    .await?;

    // Another local process, without the token: refused by both services.
    let history = chat_testkit::grpc::connect(addrs[0]).await;
    let refused = HistoryClient::new(history)
        .append(AppendRequest {
            room: "general".into(),
            sender: "mallory".into(),
            client_id: "c1".into(),
            body: "injected".into(),
        })
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let presence = chat_testkit::grpc::connect(addrs[1]).await;
    let refused = PresenceClient::new(presence)
        .attach(UserRequest {
            gateway: "fake".into(),
            user: "mallory".into(),
        })
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let accounts = chat_testkit::grpc::connect(addrs[2]).await;
    let refused = AccountsClient::new(accounts)
        .signing_keys(Empty {})
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");

    // The built-in gateway has the token: chat works, and nothing was injected.
    let mut alice = WsClient::connect(&format!("ws://{addr}/v1/ws?user=alice")).await?;
    let joined = alice.join("general", None).await?;
    assert_eq!(joined["last_seq"], 0, "{joined}");
    let ack = alice.send_message("general", "hello", "c1").await?;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["seq"], 1, "{ack}");

    // Its gateway called history (join, send), presence (connect, join) and accounts
    // in process: once the test's own refused connections are gone, nothing is
    // connected to the three ports (a gRPC channel would hold its connection open).
    let ports: Vec<u16> = addrs.iter().map(SocketAddr::port).collect();
    eventually(
        Duration::from_secs(10),
        "no connection to the loopback gRPC ports",
        || async { (established_to(&ports) == 0).then_some(()) },
    )
    .await?;

    chat.terminate()?;
    chat.wait_exit(Duration::from_secs(30)).await?;
    Ok(())
}
