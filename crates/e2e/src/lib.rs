//! End-to-end harness: the real service binaries (`chat-gateway`, `chat-history`,
//! `chat-presence`, `chat-probe`) as child processes (killed, restarted on the same
//! address, or signalled by the chaos tests), real nginx in front of them, and clients
//! that keep a ledger of everything they were acked and received, checked for loss,
//! duplicates and order at the end by [`check`] and by chat-bench's checker
//! ([`bench_check`]).
//!
//! The binaries are not built by `cargo test` for this package (cargo only builds the
//! binaries of the package under test): `scripts/test.sh` runs `cargo build --bins` first.
//! They are looked up in `CHAT_BIN_DIR`, else next to the test executable
//! (`target/<profile>/`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chat_testkit::process::{ChildGuard, free_port, wait_for_port};
use chat_testkit::ws::{Closed, WsClient};
use serde_json::Value;

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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await?;
        let text = String::from_utf8_lossy(&reply);
        let code = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no HTTP status from {addr}{path}: {text}"))?;
        anyhow::Ok(code)
    };
    tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .map_err(|_| anyhow::anyhow!("GET {addr}{path} timed out"))?
}

/// Waits until `GET /readyz` of `addr` answers 200.
pub async fn wait_ready(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    chat_testkit::process::eventually(timeout, &format!("{addr}/readyz to be 200"), || async {
        (http_status(addr, "/readyz").await.ok()? == 200).then_some(())
    })
    .await
}

/// An acknowledged send.
#[derive(Debug, Clone)]
pub struct Ack {
    pub room: String,
    pub client_id: String,
    pub seq: u64,
    pub duplicate: bool,
    /// When the ack arrived.
    pub at: Instant,
}

/// Counters of one participant that another task can read while the participant is
/// busy (for tests that wait for traffic to reach a point).
#[derive(Debug, Default)]
pub struct Progress {
    /// Sends acked.
    pub acks: AtomicUsize,
    /// Sends attempted again with the same `client_id` (after an `unavailable` or
    /// `rate_limited` reply, or on a new connection).
    pub resends: AtomicUsize,
    /// Successful reconnects.
    pub reconnects: AtomicUsize,
    /// The send waiting for its ack, if any.
    in_flight: std::sync::Mutex<Option<InFlight>>,
}

/// A send waiting for its ack.
#[derive(Debug, Clone)]
pub struct InFlight {
    pub room: String,
    pub client_id: String,
    /// When it was first sent.
    pub since: Instant,
}

impl Progress {
    pub fn acks(&self) -> usize {
        self.acks.load(Ordering::Relaxed)
    }

    pub fn resends(&self) -> usize {
        self.resends.load(Ordering::Relaxed)
    }

    pub fn reconnects(&self) -> usize {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// The send waiting for its ack, if any.
    pub fn in_flight(&self) -> Option<InFlight> {
        self.in_flight_lock().clone()
    }

    fn in_flight_lock(&self) -> std::sync::MutexGuard<'_, Option<InFlight>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One chat client and everything it saw: it resends until acked, reconnects (through
/// whatever URL it was given) when its connection ends, and resumes every room with
/// `join since`.
#[derive(Debug)]
pub struct Participant {
    pub user: String,
    url: String,
    rooms: Vec<String>,
    client: WsClient,
    /// The gateway serving the current connection (from `hello`).
    pub gateway: String,
    /// Every gateway that served this participant, in order.
    pub gateways: Vec<String>,
    /// Highest seq received per room.
    last_seen: HashMap<String, u64>,
    /// The first seq this participant must receive per room (`last_seq` of its first
    /// `joined` + 1).
    first_expected: HashMap<String, u64>,
    /// `(seq, client_id)` of every `message` received, per room, in arrival order.
    pub received: HashMap<String, Vec<(u64, String)>>,
    pub acks: Vec<Ack>,
    /// Close codes of the connections that ended under it (`None`: no close frame).
    pub closes: Vec<Option<u16>>,
    /// How long each reconnect took, until every room was joined again.
    pub reconnects: Vec<Duration>,
    /// Replies that were retried (`unavailable`, `rate_limited`).
    pub retried_errors: usize,
    /// Live counters, shared with whoever holds [`Participant::progress`].
    progress: Arc<Progress>,
}

/// How long a participant keeps trying to reconnect or get one send acked.
const PATIENCE: Duration = Duration::from_secs(30);

impl Participant {
    /// Connects to `url` (a `ws://` URL with the user in it) and joins `rooms`.
    pub async fn join(user: &str, url: &str, rooms: &[&str]) -> anyhow::Result<Self> {
        let client = WsClient::connect(url).await?;
        let gateway = client.hello["gateway"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut me = Self {
            user: user.to_owned(),
            url: url.to_owned(),
            rooms: rooms.iter().map(|r| (*r).to_owned()).collect(),
            client,
            gateway: gateway.clone(),
            gateways: vec![gateway],
            last_seen: HashMap::new(),
            first_expected: HashMap::new(),
            received: HashMap::new(),
            acks: Vec::new(),
            closes: Vec::new(),
            reconnects: Vec::new(),
            retried_errors: 0,
            progress: Arc::default(),
        };
        for room in rooms {
            let joined = me.client.join(room, None).await?;
            let head = joined["last_seq"].as_u64().unwrap_or(0);
            me.last_seen.insert((*room).to_owned(), head);
            me.first_expected.insert((*room).to_owned(), head + 1);
            let backlog = me.client.drain_backlog();
            me.absorb(backlog);
        }
        Ok(me)
    }

    /// Live counters of this participant, to watch it from another task.
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// The rooms this participant is in.
    pub fn rooms(&self) -> &[String] {
        &self.rooms
    }

    fn absorb(&mut self, frames: Vec<Value>) {
        for frame in frames {
            if frame["type"] != "message" {
                continue;
            }
            let (Some(room), Some(seq)) = (frame["room"].as_str(), frame["seq"].as_u64()) else {
                continue;
            };
            let client_id = frame["client_id"].as_str().unwrap_or_default().to_owned();
            self.received
                .entry(room.to_owned())
                .or_default()
                .push((seq, client_id));
            let last = self.last_seen.entry(room.to_owned()).or_insert(0);
            *last = (*last).max(seq);
        }
    }

    /// Sends one message and returns its ack: resends the same `client_id` after
    /// `unavailable`/`rate_limited`, and after reconnecting when the connection ends.
    pub async fn send(&mut self, room: &str, client_id: &str, body: &str) -> anyhow::Result<Ack> {
        let deadline = Instant::now() + PATIENCE;
        *self.progress.in_flight_lock() = Some(InFlight {
            room: room.to_owned(),
            client_id: client_id.to_owned(),
            since: Instant::now(),
        });
        let mut first = true;
        loop {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{}: {client_id} not acked within {PATIENCE:?}",
                self.user
            );
            if !std::mem::take(&mut first) {
                self.progress.resends.fetch_add(1, Ordering::Relaxed);
            }
            match self.client.send_message(room, body, client_id).await {
                Ok(reply) if reply["type"] == "ack" => {
                    let backlog = self.client.drain_backlog();
                    self.absorb(backlog);
                    let ack = Ack {
                        room: room.to_owned(),
                        client_id: client_id.to_owned(),
                        seq: reply["seq"]
                            .as_u64()
                            .ok_or_else(|| anyhow::anyhow!("ack without seq: {reply}"))?,
                        duplicate: reply["duplicate"] == true,
                        at: Instant::now(),
                    };
                    self.acks.push(ack.clone());
                    self.progress.acks.fetch_add(1, Ordering::Relaxed);
                    *self.progress.in_flight_lock() = None;
                    return Ok(ack);
                }
                Ok(reply)
                    if reply["type"] == "error"
                        && matches!(
                            reply["code"].as_str(),
                            Some("unavailable" | "rate_limited")
                        ) =>
                {
                    let backlog = self.client.drain_backlog();
                    self.absorb(backlog);
                    self.retried_errors += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(reply) => anyhow::bail!("{}: unexpected reply to send: {reply}", self.user),
                Err(e) => {
                    let code = match e.downcast_ref::<Closed>() {
                        Some(closed) => closed.code,
                        // A write or read error: a close frame may still be waiting.
                        None => tokio::time::timeout(Duration::from_secs(2), self.client.closed())
                            .await
                            .ok()
                            .and_then(Result::ok)
                            .and_then(|c| c.code),
                    };
                    self.closes.push(code);
                    self.reconnect().await?;
                }
            }
        }
    }

    /// Connects again (through the same URL) and resumes every room from the last seq
    /// received. A failed attempt (no gateway reachable yet, a `join` refused while a
    /// backend is down) is dropped and the whole sequence tried again, for up to
    /// [`PATIENCE`].
    pub async fn reconnect(&mut self) -> anyhow::Result<()> {
        let backlog = self.client.drain_backlog();
        self.absorb(backlog);
        let started = Instant::now();
        loop {
            match self.resume().await {
                Ok(()) => break,
                Err(e) if started.elapsed() > PATIENCE => {
                    anyhow::bail!("{}: no reconnect within {PATIENCE:?}: {e:#}", self.user)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        self.gateways.push(self.gateway.clone());
        self.reconnects.push(started.elapsed());
        self.progress.reconnects.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// One attempt of [`Participant::reconnect`].
    async fn resume(&mut self) -> anyhow::Result<()> {
        self.client = WsClient::connect(&self.url).await?;
        self.gateway = self.client.hello["gateway"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        for room in self.rooms.clone() {
            let since = self.last_seen.get(&room).copied().unwrap_or(0);
            let joined = self.client.join(&room, Some(since)).await;
            // Catch-up frames that came before a failed join's error are still good: they
            // move `last_seen`, so the next attempt resumes after them.
            let backlog = self.client.drain_backlog();
            self.absorb(backlog);
            joined?;
        }
        Ok(())
    }

    /// Reads until every room in `targets` was received up to its seq.
    pub async fn wait_for(
        &mut self,
        targets: &BTreeMap<String, u64>,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let behind = targets
                .iter()
                .find(|(room, seq)| self.last_seen.get(*room).copied().unwrap_or(0) < **seq);
            let Some((room, seq)) = behind else {
                return Ok(());
            };
            anyhow::ensure!(
                Instant::now() < deadline,
                "{}: {room} received up to {:?}, expected {seq}",
                self.user,
                self.last_seen.get(room)
            );
            let frame = self.client.recv().await?;
            self.absorb(vec![frame]);
        }
    }

    /// Closes the connection politely.
    pub async fn leave(self) {
        self.client.close().await;
    }
}

/// What the checker counted.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Distinct messages acked, per room (= the room's last seq).
    pub messages: BTreeMap<String, u64>,
    /// Messages received over all participants and rooms.
    pub deliveries: usize,
    /// Acked messages a participant that was joined never received.
    pub lost: usize,
    /// Messages a participant received more than once.
    pub duplicated: usize,
    /// Messages received after a higher seq of the same room.
    pub out_of_order: usize,
    /// Human-readable findings, empty when all is well.
    pub problems: Vec<String>,
}

/// Checks the ledgers: acks are consistent (one seq per client_id, one client_id per
/// seq, seqs 1..n per room with no gap), and every participant received every room's
/// messages from its first expected seq to the room's last, each once, in order, with the
/// client_id that was acked for that seq.
pub fn check(participants: &[Participant]) -> Verdict {
    let mut verdict = Verdict::default();
    // room -> seq -> client_id, and room -> client_id -> seq
    let mut by_seq: HashMap<String, BTreeMap<u64, String>> = HashMap::new();
    let mut by_id: HashMap<(String, String), u64> = HashMap::new();
    for p in participants {
        for ack in &p.acks {
            let key = (ack.room.clone(), ack.client_id.clone());
            if let Some(seq) = by_id.insert(key, ack.seq)
                && seq != ack.seq
            {
                verdict.problems.push(format!(
                    "{} acked twice with different seqs ({seq}, {})",
                    ack.client_id, ack.seq
                ));
            }
            let seqs = by_seq.entry(ack.room.clone()).or_default();
            if let Some(other) = seqs.insert(ack.seq, ack.client_id.clone())
                && other != ack.client_id
            {
                verdict.problems.push(format!(
                    "{} seq {} acked for {other} and {}",
                    ack.room, ack.seq, ack.client_id
                ));
            }
        }
    }
    for (room, seqs) in &by_seq {
        let last = seqs.keys().next_back().copied().unwrap_or(0);
        if seqs.len() as u64 != last {
            verdict.problems.push(format!(
                "{room}: {} messages acked but the last seq is {last}",
                seqs.len()
            ));
        }
        verdict.messages.insert(room.clone(), last);
    }
    for p in participants {
        for (room, seqs) in &by_seq {
            let last = verdict.messages[room];
            let first = p.first_expected.get(room).copied().unwrap_or(1);
            let got = p.received.get(room).map(Vec::as_slice).unwrap_or_default();
            verdict.deliveries += got.len();
            let mut seen = HashSet::new();
            let mut highest = 0;
            for (seq, client_id) in got {
                if !seen.insert(*seq) {
                    verdict.duplicated += 1;
                }
                if *seq < highest {
                    verdict.out_of_order += 1;
                }
                highest = highest.max(*seq);
                match seqs.get(seq) {
                    Some(acked) if acked == client_id => {}
                    acked => verdict.problems.push(format!(
                        "{}: {room} seq {seq} received as {client_id}, acked as {acked:?}",
                        p.user
                    )),
                }
            }
            let missing: Vec<u64> = (first..=last).filter(|s| !seen.contains(s)).collect();
            verdict.lost += missing.len();
            if !missing.is_empty() {
                verdict.problems.push(format!(
                    "{}: {room} never received seqs {missing:?}",
                    p.user
                ));
            }
        }
    }
    if verdict.duplicated > 0 {
        verdict
            .problems
            .push(format!("{} duplicate deliveries", verdict.duplicated));
    }
    if verdict.out_of_order > 0 {
        verdict
            .problems
            .push(format!("{} out-of-order deliveries", verdict.out_of_order));
    }
    verdict
}

/// The participants' ledgers through chat-bench's correctness checker
/// ([`chat_bench::check`], the one `chat-bench run` reports with), so end-to-end tests
/// and load runs count missing, duplicate and out-of-order deliveries the same way: every
/// participant is a receiver of each of its rooms from the `last_seq` of its first
/// `joined`, and every acked seq (from any participant) is expected above that floor.
///
/// chat-bench's senders never resend, so that checker takes acks as given; whether the
/// acks themselves are consistent (one seq per `client_id`, one `client_id` per seq, no
/// gap) is [`check`]'s part.
pub fn bench_check(participants: &[Participant]) -> chat_bench::check::Correctness {
    use chat_bench::check::{Emitted, ReceiverTrack};
    use chat_bench::rangeset::RangeSet;

    let rooms: BTreeSet<&str> = participants
        .iter()
        .flat_map(|p| p.rooms.iter().map(String::as_str))
        .collect();
    let index = |room: &str| rooms.iter().position(|r| *r == room).unwrap_or(0) as u32;
    let mut emitted: BTreeMap<u32, RangeSet> = BTreeMap::new();
    for ack in participants.iter().flat_map(|p| &p.acks) {
        emitted.entry(index(&ack.room)).or_default().insert(ack.seq);
    }
    let emitted: Vec<Emitted> = emitted
        .into_iter()
        .map(|(room, acked)| Emitted {
            room,
            acked,
            written: 0,
        })
        .collect();
    let mut receivers = Vec::new();
    for (conn, p) in participants.iter().enumerate() {
        for room in &p.rooms {
            let floor = p.first_expected.get(room).map_or(0, |first| first - 1);
            let mut track = ReceiverTrack::new(floor);
            for (seq, _) in p.received.get(room).map(Vec::as_slice).unwrap_or_default() {
                track.on_seq(*seq);
            }
            receivers.push(track.take_round(conn as u32, index(room)));
        }
    }
    chat_bench::check::check(chat_bench::Protocol::Chat, &emitted, &receivers)
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
