//! A private Prometheus per test: the real server (Debian package `prometheus`), on a
//! free loopback port, with a config the test writes, and its HTTP API.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::process::{ChildGuard, eventually, free_port};

/// Stands for the server's own `host:port` in a config given to
/// [`PrometheusServer::start`].
pub const SELF_ADDR: &str = "$PROMETHEUS_SELF_ADDR";

/// How long Prometheus may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A `prometheus` process with its own storage, killed on drop.
#[derive(Debug)]
pub struct PrometheusServer {
    /// Kept for its Drop: the server lives as long as this value.
    child: ChildGuard,
    addr: SocketAddr,
    http: reqwest::Client,
    /// Config, storage and log.
    dir: tempfile::TempDir,
}

impl PrometheusServer {
    /// Starts Prometheus with `config` (the YAML of `prometheus.yml`; relative paths in
    /// it resolve against a temporary directory, so use absolute ones) and waits until
    /// it is ready. [`SELF_ADDR`] in `config` is replaced by the server's own address
    /// (for a job that scrapes Prometheus itself). Needs `prometheus` on the PATH (or
    /// `CHAT_TEST_PROMETHEUS`); `scripts/test-deps.sh` installs it.
    pub async fn start(config: &str) -> anyhow::Result<Self> {
        let mut dir = tempfile::tempdir()?;
        let config_path = dir.path().join("prometheus.yml");
        let binary =
            std::env::var("CHAT_TEST_PROMETHEUS").unwrap_or_else(|_| "prometheus".to_owned());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let mut last_err = None;
        // Another process may take the free port before Prometheus binds it: retry.
        for attempt in 0..5 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
            std::fs::write(&config_path, config.replace(SELF_ADDR, &addr.to_string()))?;
            let log = std::fs::File::create(dir.path().join(format!("prometheus-{attempt}.log")))?;
            let child = ChildGuard::spawn(
                "prometheus",
                Command::new(&binary)
                    .arg(format!("--config.file={}", config_path.display()))
                    .arg(format!(
                        "--storage.tsdb.path={}",
                        dir.path().join(format!("data-{attempt}")).display()
                    ))
                    .arg(format!("--web.listen-address={addr}"))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(log),
            )
            .map_err(|e| anyhow::anyhow!("{e} (install it with scripts/test-deps.sh)"))?;
            let mut server = Self {
                child,
                addr,
                http: http.clone(),
                dir,
            };
            match server.wait_ready().await {
                Ok(()) => return Ok(server),
                Err(e) => {
                    last_err = Some(anyhow::anyhow!("{e}; log:\n{}", server.log()));
                    server.child.kill();
                    dir = server.dir;
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("prometheus did not start")))
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let url = format!("{}/-/ready", self.url());
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            self.child.check_running()?;
            if let Ok(reply) = self.http.get(&url).send().await
                && reply.status().is_success()
            {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "prometheus not ready within {READY_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What Prometheus logged so far (for failure messages).
    pub fn log(&self) -> String {
        let mut logs: Vec<_> = std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        logs.last()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// `GET /api/v1/<path>` with query parameters; the `data` of a `success` answer, else
    /// an error carrying Prometheus' `error`.
    pub async fn api(&self, path: &str, params: &[(&str, &str)]) -> anyhow::Result<Value> {
        let reply: Value = self
            .http
            .get(format!("{}/api/v1/{path}", self.url()))
            .query(params)
            .send()
            .await?
            .json()
            .await?;
        anyhow::ensure!(
            reply["status"] == "success",
            "{path} {params:?}: {} {}",
            reply["errorType"],
            reply["error"]
        );
        Ok(reply["data"].clone())
    }

    /// The result vector of an instant query.
    pub async fn query(&self, expr: &str) -> anyhow::Result<Vec<Value>> {
        let data = self.api("query", &[("query", expr)]).await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// Waits until every active target is up and there are `count` of them.
    pub async fn wait_targets_up(&self, count: usize, timeout: Duration) -> anyhow::Result<()> {
        let up = eventually(timeout, "every target up", || async {
            let data = self.api("targets", &[("state", "active")]).await.ok()?;
            let targets = data["activeTargets"].as_array()?;
            (targets.len() == count && targets.iter().all(|t| t["health"] == "up")).then_some(())
        })
        .await;
        if let Err(e) = up {
            let targets = self.api("targets", &[]).await.unwrap_or_default();
            anyhow::bail!("{e}; targets: {targets}");
        }
        Ok(())
    }
}

/// The value of one sample in a `/metrics` text: `series` is the name with its labels
/// exactly as exposed (`chat_gateway_disconnects_total{reason="idle"}`), or the bare name
/// of an unlabelled metric.
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == series).then(|| value.trim().parse().ok()).flatten()
    })
}
