//! A private `redis-server` per test.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::{ChildGuard, free_port, wait_for_port};

/// A `redis-server` on a free loopback port, with no persistence, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    /// Kept for its Drop: the server lives as long as this value.
    child: ChildGuard,
    addr: SocketAddr,
}

impl RedisServer {
    /// Starts a server. Needs `redis-server` on the PATH (or `CHAT_TEST_REDIS_SERVER`).
    pub async fn start() -> anyhow::Result<Self> {
        let mut last_err = None;
        // Another process may grab the free port before redis binds it: retry a few times.
        for _ in 0..5 {
            let addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
            match spawn_on(addr).await {
                Ok(child) => return Ok(Self { child, addr }),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("redis-server did not start")))
    }

    /// Kills the server (SIGKILL, losing everything) and starts a fresh one on the same
    /// port, as a crashed-and-restarted Redis looks to its clients.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.child.kill();
        let mut last_err = None;
        // The port can linger for a moment after the kill.
        for _ in 0..50 {
            match spawn_on(self.addr).await {
                Ok(child) => {
                    self.child = child;
                    return Ok(());
                }
                Err(e) => last_err = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("redis-server did not restart")))
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's process id (for tests that kill or pause it).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

async fn spawn_on(addr: SocketAddr) -> anyhow::Result<ChildGuard> {
    let bin = std::env::var("CHAT_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    let mut child = ChildGuard::spawn(
        "redis-server",
        Command::new(&bin)
            .args(["--port", &addr.port().to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    wait_until_ours(addr, &mut child).await?;
    Ok(child)
}

/// Waits until `child`, a redis-server spawned to listen on `addr`, accepts connections.
/// Another test's server may already own the port (the "free" port was taken between
/// our check and redis binding it; our server then exits): fails unless it is ours.
pub(crate) async fn wait_until_ours(
    addr: SocketAddr,
    child: &mut ChildGuard,
) -> anyhow::Result<()> {
    wait_for_port(addr, Duration::from_secs(10), child).await?;
    let pid = server_pid(addr).await?;
    anyhow::ensure!(
        Some(pid) == child.id(),
        "port {} belongs to another redis-server (pid {pid})",
        addr.port()
    );
    Ok(())
}

/// The `process_id` a Redis server reports.
pub(crate) async fn server_pid(addr: SocketAddr) -> anyhow::Result<u32> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(b"INFO server\r\n").await?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf)).await??;
        anyhow::ensure!(n > 0, "redis closed the connection during INFO");
        reply.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&reply);
        if let Some(pid) = text
            .lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|p| p.trim().parse().ok())
        {
            return Ok(pid);
        }
    }
}
