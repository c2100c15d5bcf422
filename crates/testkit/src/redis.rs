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
        let bin = std::env::var("CHAT_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let mut last_err = None;
        // Another process may grab the free port before redis binds it: retry a few times.
        for _ in 0..5 {
            let port = free_port()?;
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let mut child = ChildGuard::spawn(
                "redis-server",
                Command::new(&bin)
                    .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            )?;
            match wait_for_port(addr, Duration::from_secs(10), &mut child).await {
                Ok(()) => return Ok(Self { child, addr }),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("redis-server did not start")))
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
