//! Child processes and ports for tests.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// A port that was free a moment ago. Servers that cannot bind port 0 themselves (redis,
/// nx-27017) get one of these; the caller retries if another process took it meanwhile.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A child process that is killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
    /// What the process is, for messages.
    name: String,
}

impl ChildGuard {
    /// Spawns `cmd`.
    pub fn spawn(name: &str, cmd: &mut Command) -> anyhow::Result<Self> {
        let child = cmd
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {name} ({cmd:?}): {e}"))?;
        Ok(Self {
            child: Some(child),
            name: name.to_owned(),
        })
    }

    /// The process id.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Fails if the process has already exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(child) = &mut self.child
            && let Some(status) = child.try_wait()?
        {
            anyhow::bail!("{} exited early: {status}", self.name);
        }
        Ok(())
    }

    /// Asks the process to stop (SIGTERM). Does nothing if it already exited.
    pub fn terminate(&mut self) -> anyhow::Result<()> {
        if let Some(child) = &mut self.child
            && child.try_wait()?.is_none()
        {
            signal(child.id(), "TERM")
                .map_err(|e| anyhow::anyhow!("stopping {}: {e}", self.name))?;
        }
        Ok(())
    }

    /// Waits up to `timeout` for the process to exit; returns its exit status, or `None`
    /// if it is still running (it is then left running).
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            match &mut self.child {
                None => anyhow::bail!("{} was already killed", self.name),
                Some(child) => {
                    if let Some(status) = child.try_wait()? {
                        return Ok(Some(status));
                    }
                }
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the process now (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends signal `name` (`TERM`, `STOP`, `CONT`, ...) to process `pid`, through `kill(1)`:
/// the workspace has no unsafe code for `libc::kill`.
pub fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -{name} {pid} failed: {status}");
    Ok(())
}

/// Polls `probe` every 20 ms until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until something accepts TCP connections on `addr`.
pub async fn wait_for_port(
    addr: SocketAddr,
    timeout: Duration,
    child: &mut ChildGuard,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        child.check_running()?;
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!("{} did not listen on {addr} within {timeout:?}", child.name);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
