//! `chat-probe`: a health probe for images without a shell or curl (the runtime image is
//! distroless). Exit code 0 = healthy, 1 = unhealthy, 2 = usage error.
//!
//! ```text
//! chat-probe http://127.0.0.1:8000/healthz       # healthy when the answer is HTTP 200
//! chat-probe grpc://127.0.0.1:50051 [service]    # healthy when grpc.health.v1 says SERVING
//! ```
//!
//! The gRPC form asks the standard health service for `service` (default `""`, the
//! whole server); history and presence report SERVING only while their store answers.
//! Every probe gives up after 3 s.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(3);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some(url) if url.starts_with("http://") && args.len() == 1 => probe_http(url),
        Some(url) if url.starts_with("grpc://") && args.len() <= 2 => {
            probe_grpc(url, args.get(1).map_or("", String::as_str))
        }
        _ => {
            eprintln!(
                "usage: chat-probe http://HOST:PORT/PATH | chat-probe grpc://HOST:PORT [SERVICE]"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("unhealthy: {e}");
            ExitCode::from(1)
        }
    }
}

/// `GET` over HTTP/1.0; healthy on status 200.
fn probe_http(url: &str) -> Result<(), String> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority} has no address"))?;
    let mut stream =
        TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = stream.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let status_line = String::from_utf8_lossy(&head);
    let status_line = status_line.lines().next().unwrap_or_default();
    match status_line.split_whitespace().nth(1) {
        Some("200") => Ok(()),
        _ => Err(format!("{url} answered {status_line:?}")),
    }
}

/// `grpc.health.v1.Health/Check`; healthy on SERVING.
fn probe_grpc(url: &str, service: &str) -> Result<(), String> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let endpoint = format!("http://{}", url.trim_start_matches("grpc://"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let check = async {
            let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())
                .map_err(|e| format!("bad address {url}: {e}"))?
                .connect_timeout(TIMEOUT)
                .connect()
                .await
                .map_err(|e| format!("connect {url}: {e}"))?;
            let reply = HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: service.to_owned(),
                })
                .await
                .map_err(|e| format!("health check: {e}"))?;
            match reply.into_inner().status() {
                ServingStatus::Serving => Ok(()),
                other => Err(format!("{url} reports {}", other.as_str_name())),
            }
        };
        tokio::time::timeout(TIMEOUT, check)
            .await
            .map_err(|_| format!("no answer from {url} within {TIMEOUT:?}"))?
    })
}
