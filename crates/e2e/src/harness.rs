//! The process harness: where the service binaries and nginx are, a [`Harness`] (one
//! test's directory of configs and logs), the [`Service`] processes it starts and the
//! [`Nginx`] in front of them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use chat_testkit::process::{ChildGuard, free_port, signal, wait_for_port};

/// The repository root (deploy/, the nginx includes).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where the service binaries are: `CHAT_BIN_DIR`, else the directory above the test
/// executable's `deps/` (that is, `target/debug`).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CHAT_BIN_DIR") {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| repo_root().join("target/debug"))
}

/// The path of binary `name`, or an error saying how to build it.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let path = bin_dir().join(name);
    anyhow::ensure!(
        path.is_file(),
        "{} not found: build the binaries first (`cargo build --bins`, as scripts/test.sh \
         does), or point CHAT_BIN_DIR at them",
        path.display()
    );
    Ok(path)
}

/// nginx: `CHAT_TEST_NGINX`, else the PATH, else the usual sbin directories.
pub fn nginx_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("CHAT_TEST_NGINX") {
        return Ok(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "nginx not found (CHAT_TEST_NGINX, PATH, /usr/sbin): install it \
                 (`apt-get install nginx-light`; scripts/test-deps.sh does)"
            )
        })
}

/// A temporary directory for one test's configs and process logs.
#[derive(Debug)]
pub struct Harness {
    dir: tempfile::TempDir,
}

/// One running service process, killed on drop.
#[derive(Debug)]
pub struct Service {
    pub name: String,
    pub addr: SocketAddr,
    child: ChildGuard,
    /// How it was started, for [`Service::restart`].
    launch: Launch,
}

/// How a service process is started: its binary, environment and log file.
#[derive(Debug)]
struct Launch {
    name: String,
    bin: PathBuf,
    /// The variable that tells it where to listen.
    addr_var: String,
    envs: Vec<(String, String)>,
    log: PathBuf,
}

impl Launch {
    /// Spawns the process listening on `addr` and waits until it accepts connections.
    async fn at(&self, addr: SocketAddr) -> anyhow::Result<ChildGuard> {
        let (out, err) = append_to(&self.log)?;
        let mut cmd = Command::new(&self.bin);
        cmd.env(&self.addr_var, addr.to_string())
            .env(
                "RUST_LOG",
                std::env::var("CHAT_E2E_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let mut child = ChildGuard::spawn(&self.name, &mut cmd)?;
        wait_for_port(addr, Duration::from_secs(30), &mut child).await?;
        Ok(child)
    }
}

/// Standard output and error of a process, both appended to `log`.
fn append_to(log: &Path) -> anyhow::Result<(Stdio, Stdio)> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    Ok((log.try_clone()?.into(), log.into()))
}

impl Service {
    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `ws://<addr>/v1/ws?user=<user>` (a gateway in dev auth).
    pub fn ws_url(&self, user: &str) -> String {
        format!("ws://{}/v1/ws?user={user}", self.addr)
    }

    /// Sends SIGTERM.
    pub fn terminate(&mut self) -> anyhow::Result<()> {
        self.child.terminate()
    }

    /// The process id, while it runs (for tests that signal it).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kills the process with SIGKILL (no shutdown code runs) and reaps it.
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// Freezes the process (SIGSTOP): its sockets stay open, nothing is answered.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("STOP")
    }

    /// Lets a paused process go on (SIGCONT).
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("CONT")
    }

    fn signal(&self, name: &str) -> anyhow::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| anyhow::anyhow!("{} is not running", self.name))?;
        signal(pid, name)
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
        self.child.wait_exit(timeout).await
    }

    /// SIGTERM, then waits up to `timeout` for a clean exit (status 0).
    pub async fn stop(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.terminate()?;
        let status = self
            .wait_exit(timeout)
            .await?
            .ok_or_else(|| anyhow::anyhow!("{} still running after SIGTERM", self.name))?;
        anyhow::ensure!(status.success(), "{} exited with {status}", self.name);
        Ok(())
    }

    /// Starts the process again (killing it first if it still runs) on the same address
    /// and with the same environment, so its clients find it again, appending to its
    /// log. Retries for a while in case the port is not free again yet.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.child.kill();
        let mut last_err = None;
        for _ in 0..20 {
            match self.launch.at(self.addr).await {
                Ok(child) => {
                    self.child = child;
                    return Ok(());
                }
                Err(e) => last_err = Some(e),
            }
            // A back-off between attempts to bind, not a wait for something to happen.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("{} did not restart", self.name)))
    }
}

/// nginx in front of a fixed set of gateways, killed on drop.
#[derive(Debug)]
pub struct Nginx {
    pub addr: SocketAddr,
    /// `master_process off`: one process, so killing it leaves no orphaned workers.
    _child: ChildGuard,
}

impl Nginx {
    /// `ws://<addr>/v1/ws?user=<user>` (dev auth).
    pub fn ws_url(&self, user: &str) -> String {
        format!("ws://{}/v1/ws?user={user}", self.addr)
    }
}

impl Harness {
    pub fn new(test: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("chat-e2e-{test}-"))
            .tempdir()?;
        // nginx workers may run as another user: they need to reach the temp paths.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        }
        let mut dir = dir;
        if std::env::var_os("CHAT_E2E_KEEP").is_some() {
            dir.disable_cleanup(true);
            eprintln!("e2e: keeping logs in {}", dir.path().display());
        }
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs one test: `case` on a new harness for `test`, for at most `timeout`; when it
    /// fails or overruns, prints the end of every log of the test first.
    pub async fn run(
        test: &str,
        timeout: Duration,
        case: impl AsyncFnOnce(&Harness) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let h = Self::new(test)?;
        let result = tokio::time::timeout(timeout, case(&h))
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("{test} took over {timeout:?}")));
        if result.is_err() {
            h.dump_logs();
        }
        result
    }

    /// Starts binary `bin` as `name` with `envs`, listening where `addr_var` says (a
    /// free loopback port), its output in `<name>.log`; retries on another port if it
    /// exits early (port taken).
    pub async fn spawn(
        &self,
        name: &str,
        bin: &str,
        addr_var: &str,
        envs: Vec<(String, String)>,
    ) -> anyhow::Result<Service> {
        let launch = Launch {
            name: name.to_owned(),
            bin: binary(bin)?,
            addr_var: addr_var.to_owned(),
            envs,
            log: self.dir.path().join(format!("{name}.log")),
        };
        let mut last_err = None;
        for _ in 0..3 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
            match launch.at(addr).await {
                Ok(child) => {
                    return Ok(Service {
                        name: name.to_owned(),
                        addr,
                        child,
                        launch,
                    });
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("{name} did not start")))
    }

    /// Starts nginx on a free port with the repo's shared settings
    /// (`deploy/nginx/chat-http.conf`, `deploy/nginx/chat-proxy.conf`), balancing over
    /// `gateways` instead of Docker DNS.
    pub async fn nginx(&self, gateways: &[SocketAddr]) -> anyhow::Result<Nginx> {
        let bin = nginx_binary()?;
        let includes = repo_root().join("deploy/nginx").canonicalize()?;
        let dir = self.dir.path().join("nginx");
        std::fs::create_dir_all(&dir)?;
        let mut last_err = None;
        for _ in 0..3 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
            let servers: String = gateways
                .iter()
                .map(|g| format!("        server {g} max_fails=1 fail_timeout=10s;\n"))
                .collect();
            let d = dir.display();
            let conf = format!(
                "# Generated by crates/e2e for one test: deploy/nginx/nginx.conf with the
# gateways as a static upstream instead of Docker DNS.
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 1024; }}
http {{
    include {inc}/chat-http.conf;
    access_log {d}/access.log chat;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream chat_gateways {{
{servers}    }}
    server {{
        listen {addr};
        set $chat_upstream chat_gateways;
        include {inc}/chat-proxy.conf;
    }}
}}
",
                inc = includes.display(),
            );
            let conf_path = dir.join("nginx.conf");
            std::fs::write(&conf_path, conf)?;
            let (out, err) = append_to(&self.dir.path().join("nginx.log"))?;
            let mut child = ChildGuard::spawn(
                "nginx",
                Command::new(&bin)
                    .arg("-p")
                    .arg(&dir)
                    .arg("-e")
                    .arg(dir.join("error.log"))
                    .arg("-c")
                    .arg(&conf_path)
                    .stdin(Stdio::null())
                    .stdout(out)
                    .stderr(err),
            )?;
            match wait_for_port(addr, Duration::from_secs(10), &mut child).await {
                Ok(()) => {
                    return Ok(Nginx {
                        addr,
                        _child: child,
                    });
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("nginx did not start")))
    }

    /// Prints the end of every log of this test (processes, nginx) to stderr.
    pub fn dump_logs(&self) {
        let mut logs: Vec<PathBuf> = [self.dir.path().to_owned(), self.dir.path().join("nginx")]
            .iter()
            .filter_map(|d| std::fs::read_dir(d).ok())
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        for log in logs {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            eprintln!("===== {} (last {} lines)", log.display(), tail.len());
            for line in tail {
                eprintln!("{line}");
            }
        }
    }
}
