//! A MongoDB wire-protocol server per test.
//!
//! No registry reachable from the build machines ships `mongod`, so by default this starts
//! `nx-27017` (a MongoDB wire-protocol server on SQLite, in memory; see `docs/testing.md`
//! and `scripts/test-deps.sh`). Set `CHAT_TEST_MONGODB_URL` to run the same tests against
//! a real MongoDB instead; give each test its own [`unique_db_name`] either way.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::process::{ChildGuard, free_port, wait_for_port};

/// Where the server came from.
#[derive(Debug)]
enum Backing {
    /// `CHAT_TEST_MONGODB_URL`: someone else's server, left alone.
    External(String),
    /// Our own `nx-27017`.
    Process {
        /// Kept for its Drop: the server lives as long as this value.
        _child: ChildGuard,
        addr: SocketAddr,
        /// Holds the pid and log files; removed after the process is killed (fields drop
        /// in declaration order).
        _dir: tempfile::TempDir,
    },
}

/// A MongoDB-compatible server for one test, killed on drop when it is our own process.
#[derive(Debug)]
pub struct MongoServer {
    backing: Backing,
}

/// Finds the `nx-27017` executable: `CHAT_TEST_NX27017`, else the PATH.
fn nx_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("CHAT_TEST_NX27017") {
        let path = PathBuf::from(path);
        anyhow::ensure!(
            path.is_file(),
            "CHAT_TEST_NX27017={} is not a file; run scripts/test-deps.sh to install nx-27017",
            path.display()
        );
        return Ok(path);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("nx-27017"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "nx-27017 not found (neither CHAT_TEST_NX27017 nor PATH): run \
                 scripts/test-deps.sh, or set CHAT_TEST_MONGODB_URL to a MongoDB server"
            )
        })
}

impl MongoServer {
    /// Uses `CHAT_TEST_MONGODB_URL` if set, else starts `nx-27017 --db memory` on a free
    /// loopback port and waits until it accepts connections.
    pub async fn start() -> anyhow::Result<Self> {
        if let Ok(url) = std::env::var("CHAT_TEST_MONGODB_URL")
            && !url.trim().is_empty()
        {
            return Ok(Self {
                backing: Backing::External(url),
            });
        }
        let bin = nx_binary()?;
        let mut last_err = None;
        // Another process may grab the free port before nx-27017 binds it: retry.
        for _ in 0..5 {
            let dir = tempfile::Builder::new().prefix("nx27017-").tempdir()?;
            let port = free_port()?;
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let mut child = ChildGuard::spawn(
                "nx-27017",
                Command::new(&bin)
                    .args([
                        "--db",
                        "memory",
                        "--host",
                        "127.0.0.1",
                        "-p",
                        &port.to_string(),
                    ])
                    .arg("--log-file")
                    .arg(dir.path().join("nx.log"))
                    .arg("--pid-file")
                    .arg(dir.path().join("nx.pid"))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            )?;
            match wait_for_port(addr, Duration::from_secs(30), &mut child).await {
                Ok(()) => {
                    return Ok(Self {
                        backing: Backing::Process {
                            _child: child,
                            addr,
                            _dir: dir,
                        },
                    });
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("nx-27017 did not start")))
    }

    /// The server's process id, when it is our own `nx-27017` (for tests that pause or
    /// kill it); `None` for `CHAT_TEST_MONGODB_URL`.
    pub fn pid(&self) -> Option<u32> {
        match &self.backing {
            Backing::External(_) => None,
            Backing::Process { _child: child, .. } => child.id(),
        }
    }

    /// The server's address, when it is our own `nx-27017` (for tests that put a
    /// `FaultProxy` in front of it); `None` for `CHAT_TEST_MONGODB_URL`.
    pub fn addr(&self) -> Option<SocketAddr> {
        match &self.backing {
            Backing::External(_) => None,
            Backing::Process { addr, .. } => Some(*addr),
        }
    }

    /// The connection string, e.g. `mongodb://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        match &self.backing {
            Backing::External(url) => url.clone(),
            Backing::Process { addr, .. } => format!("mongodb://{addr}"),
        }
    }
}

/// A database name no other test (in this or a parallel test binary) uses, so tests on a
/// shared server stay independent.
pub fn unique_db_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "chat_test_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
