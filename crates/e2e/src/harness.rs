//! The process harness: where the service binaries and nginx are, a [`Harness`] (one
//! test's directory of configs and logs), the [`Service`] processes it starts and the
//! [`Nginx`] in front of them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use chat_testkit::process::{ChildGuard, free_port, wait_for_port};

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
    /// How it was started, for [`Harness::restart`].
    bin: PathBuf,
    addr_var: String,
    envs: Vec<(String, String)>,
}

impl Service {
    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
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

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
        self.child.wait_exit(timeout).await
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

    fn log_file(&self, name: &str) -> anyhow::Result<(Stdio, Stdio)> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{name}.log")))?;
        Ok((log.try_clone()?.into(), log.into()))
    }

    /// Starts binary `bin` as `name` with `envs`, listening where `addr_var` says (a
    /// free loopback port); retries on another port if it exits early (port taken).
    pub async fn spawn(
        &self,
        name: &str,
        bin: &str,
        addr_var: &str,
        envs: &[(&str, String)],
    ) -> anyhow::Result<Service> {
        let path = binary(bin)?;
        let envs: Vec<(String, String)> = envs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let mut last_err = None;
        for _ in 0..3 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
            match self.start(name, &path, addr_var, &envs, addr).await {
                Ok(child) => {
                    return Ok(Service {
                        name: name.to_owned(),
                        addr,
                        child,
                        bin: path,
                        addr_var: addr_var.to_owned(),
                        envs,
                    });
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("{name} did not start")))
    }

    /// Starts `service` again, after it exited or was killed, on the same address and
    /// with the same environment (so its clients find it again), appending to its log.
    /// Retries for a while in case the port is not free again yet.
    pub async fn restart(&self, service: &mut Service) -> anyhow::Result<()> {
        service.child.kill();
        let mut last_err = None;
        for _ in 0..20 {
            match self
                .start(
                    &service.name,
                    &service.bin,
                    &service.addr_var,
                    &service.envs,
                    service.addr,
                )
                .await
            {
                Ok(child) => {
                    service.child = child;
                    return Ok(());
                }
                Err(e) => last_err = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("{} did not restart", service.name)))
    }

    /// Spawns one process listening on `addr` and waits until it accepts connections.
    async fn start(
        &self,
        name: &str,
        path: &Path,
        addr_var: &str,
        envs: &[(String, String)],
        addr: SocketAddr,
    ) -> anyhow::Result<ChildGuard> {
        let (out, err) = self.log_file(name)?;
        let mut cmd = Command::new(path);
        cmd.env(addr_var, addr.to_string())
            .env(
                "RUST_LOG",
                std::env::var("CHAT_E2E_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (key, value) in envs {
            cmd.env(key, value);
        }
        let mut child = ChildGuard::spawn(name, &mut cmd)?;
        wait_for_port(addr, Duration::from_secs(30), &mut child).await?;
        Ok(child)
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
            let (out, err) = self.log_file("nginx")?;
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
