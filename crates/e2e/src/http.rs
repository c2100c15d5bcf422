//! Talking to running services from outside: plain HTTP GETs (status, body, a metric,
//! stored history, presence), readiness, the `chat-probe` health check, and the JWTs
//! clients present.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::binary;

/// Runs `chat-probe` (the containers' HEALTHCHECK) with `args`; true when it exits 0.
pub fn probe(args: &[&str]) -> anyhow::Result<bool> {
    let status = Command::new(binary("chat-probe")?)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    Ok(status.success())
}

/// A plain HTTP/1.0 GET; returns the status code.
pub async fn http_status(addr: SocketAddr, path: &str) -> anyhow::Result<u16> {
    Ok(http_get(addr, path).await?.0)
}

/// Waits until `GET /readyz` of `addr` answers 200.
pub async fn wait_ready(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    chat_testkit::process::eventually(timeout, &format!("{addr}/readyz to be 200"), || async {
        (http_status(addr, "/readyz").await.ok()? == 200).then_some(())
    })
    .await
}

/// A plain HTTP/1.0 GET; returns the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await?;
        let text = String::from_utf8_lossy(&reply);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow::anyhow!("no HTTP header from {addr}{path}: {text}"))?;
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no HTTP status from {addr}{path}: {head}"))?;
        anyhow::Ok((code, body.to_owned()))
    };
    tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .map_err(|_| anyhow::anyhow!("GET {addr}{path} timed out"))?
}

/// The value of an unlabelled Prometheus sample `name` in `/metrics` of `addr`.
pub async fn metric(addr: SocketAddr, name: &str) -> anyhow::Result<f64> {
    let (code, body) = http_get(addr, "/metrics").await?;
    anyhow::ensure!(code == 200, "GET {addr}/metrics: {code}");
    chat_testkit::prometheus::sample(&body, name)
        .ok_or_else(|| anyhow::anyhow!("{addr}/metrics has no sample {name}"))
}

/// Every message stored in `room`, oldest first, paged backwards through
/// `GET /v1/rooms/{room}/messages` of the gateway at `addr` as dev-mode user `user`.
pub async fn stored_messages(
    addr: SocketAddr,
    user: &str,
    room: &str,
) -> anyhow::Result<Vec<Value>> {
    let mut messages: Vec<Value> = Vec::new();
    let mut before: Option<u64> = None;
    loop {
        let mut path = format!("/v1/rooms/{room}/messages?user={user}&limit=200");
        if let Some(before) = before {
            path.push_str(&format!("&before={before}"));
        }
        let (code, body) = http_get(addr, &path).await?;
        anyhow::ensure!(code == 200, "GET {path}: {code} {body}");
        let page: Value = serde_json::from_str(&body)?;
        let batch = page["messages"].as_array().cloned().unwrap_or_default();
        before = batch.first().and_then(|m| m["seq"].as_u64());
        let more = page["has_more"] == true && before.is_some();
        messages.splice(0..0, batch);
        if !more {
            return Ok(messages);
        }
    }
}

/// Each of `users`' online status as `GET /v1/presence?users=...` of the gateway at
/// `addr` reports it (asked as dev-mode user `asker`).
pub async fn presence(
    addr: SocketAddr,
    asker: &str,
    users: &[&str],
) -> anyhow::Result<BTreeMap<String, bool>> {
    let path = format!("/v1/presence?user={asker}&users={}", users.join(","));
    let (code, body) = http_get(addr, &path).await?;
    anyhow::ensure!(code == 200, "GET {path}: {code} {body}");
    let reply: Value = serde_json::from_str(&body)?;
    users
        .iter()
        .map(|user| {
            let online = reply["users"][*user]
                .as_bool()
                .ok_or_else(|| anyhow::anyhow!("GET {path}: no status of {user}: {body}"))?;
            Ok(((*user).to_owned(), online))
        })
        .collect()
}

/// An HS256 token for `user` signed with `secret`, expiring `expires_in` seconds from
/// now (negative: already expired).
pub fn jwt(secret: &str, user: &str, expires_in: i64) -> anyhow::Result<String> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let exp = now.as_secs() as i64 + expires_in;
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": user, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes())?,
    )?)
}
