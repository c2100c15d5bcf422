//! A real Prometheus scrapes the services: a gateway (Redis fan-out), history and presence
//! as their binaries run them, each with its own registry and `/metrics` on a free port
//! (the three run in this test process, so their process CPU and memory are this
//! process's). Prometheus runs the shipped `prometheus/prometheus.yml` (its jobs, scrape
//! settings and rule files; only the service discovery is replaced by this test's
//! addresses, and the intervals shortened), so a renamed or added job fails here. The
//! test waits until every target is up, drives chat traffic over WebSockets, then asserts
//! that the eight compatibility metrics have series on every job and non-zero values where traffic
//! moves them, that every rule evaluates cleanly, and that every Grafana dashboard query
//! runs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chat_gateway::{AuthMode, Gateway};
use chat_history::HistoryServer;
use chat_metrics::Metrics;
use chat_metrics::serve::{HealthCheck, health_check, serve_metrics};
use chat_presence::PresenceServer;
use chat_testkit::process::eventually;
use chat_testkit::prometheus::{PrometheusServer, SELF_ADDR};
use chat_testkit::redis::RedisServer;
use chat_testkit::ws::WsClient;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// The eight compatibility metrics (docs/observability.md), as Prometheus stores them (histograms by their buckets).
const COMPAT: [&str; 8] = [
    "http_requests_total",
    "http_request_duration_seconds_bucket",
    "ws_connections_active",
    "ws_connections_total",
    "ws_messages_total",
    "ws_message_latency_seconds_bucket",
    "cpu_usage_percent",
    "memory_usage_percent",
];

/// How long a check may take to see data: scrapes and rule evaluations are every second.
const DEADLINE: Duration = Duration::from_secs(30);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Serves `metrics` on a free port, as `chat-history` and `chat-presence` do on
/// `CHAT_METRICS_ADDR`.
async fn metrics_server(
    metrics: Metrics,
    health: HealthCheck,
    stop: &CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve_metrics(
        listener,
        Arc::new(metrics.registry),
        metrics.http,
        health,
        stop.clone().cancelled_owned(),
    ));
    Ok(addr)
}

/// `shipped` (prometheus/prometheus.yml) as this test runs it, and its job names in
/// order. Kept as shipped: the jobs and their scrape settings, the rule files (made
/// absolute). Replaced: each job's targets (its `*_sd_configs` or `static_configs` block)
/// by a static target from `targets` (a job the test has no address for is an error),
/// and the global scrape and evaluation intervals by 1 s, so that the test sees data in
/// seconds rather than minutes.
fn test_config(
    shipped: &str,
    targets: &BTreeMap<&str, String>,
) -> anyhow::Result<(String, Vec<String>)> {
    fn indent(line: &str) -> usize {
        line.len() - line.trim_start().len()
    }
    let rules_dir = repo().join("prometheus").canonicalize()?;
    let mut out = String::new();
    let mut jobs = Vec::new();
    let mut section = "";
    let mut lines = shipped.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim();
        if indent(line) == 0 && !trimmed.is_empty() && !trimmed.starts_with('#') {
            section = trimmed.trim_end_matches(':');
        }
        match section {
            "global" if indent(line) == 2 && trimmed.contains(':') => {
                let (key, _) = trimmed.split_once(':').unwrap_or_default();
                let value = match key {
                    "scrape_interval" | "evaluation_interval" | "scrape_timeout" => "1s",
                    _ => trimmed.split_once(':').map_or("", |(_, v)| v.trim()),
                };
                out.push_str(&format!("  {key}: {value}\n"));
            }
            "rule_files" if trimmed.starts_with("- ") => {
                let path = rules_dir.join(trimmed.trim_start_matches("- ").trim());
                out.push_str(&format!("  - \"{}\"\n", path.display()));
            }
            "scrape_configs" if trimmed.starts_with("- job_name:") => {
                let job = trimmed.trim_start_matches("- job_name:").trim();
                jobs.push(job.to_owned());
                out.push_str(line);
                out.push('\n');
            }
            "scrape_configs"
                if indent(line) == 4
                    && (trimmed.ends_with("_sd_configs:")
                        || trimmed.starts_with("static_configs:")) =>
            {
                // The whole block: this line and the more indented ones under it.
                while lines
                    .peek()
                    .is_some_and(|l| indent(l) > 4 || l.trim().is_empty())
                {
                    lines.next();
                }
                let job = jobs.last().map_or("", String::as_str);
                let target = targets
                    .get(job)
                    .ok_or_else(|| anyhow::anyhow!("no test address for job {job:?}"))?;
                out.push_str(&format!(
                    "    static_configs: [{{targets: [\"{target}\"]}}]\n\n"
                ));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    Ok((out, jobs))
}

/// Every PromQL query of the dashboards, with Grafana's variables given values.
fn dashboard_queries() -> anyhow::Result<Vec<(String, String)>> {
    fn walk(node: &Value, at: &str, out: &mut Vec<(String, String)>) {
        match node {
            Value::Object(map) => {
                if let Some(Value::String(expr)) = map.get("expr") {
                    out.push((at.to_owned(), expr.clone()));
                }
                if let (Some(Value::String(kind)), Some(Value::String(query))) =
                    (map.get("type"), map.get("query"))
                    && kind == "query"
                    && let Some(inner) = query
                        .strip_prefix("label_values(")
                        .and_then(|q| q.rsplit_once(','))
                        .map(|(selector, _)| selector)
                {
                    out.push((format!("{at} (variable)"), inner.to_owned()));
                }
                for (key, value) in map {
                    walk(value, &format!("{at}.{key}"), out);
                }
            }
            Value::Array(items) => {
                for (i, value) in items.iter().enumerate() {
                    walk(value, &format!("{at}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut queries = Vec::new();
    for entry in std::fs::read_dir(repo().join("grafana/dashboards"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let board: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            walk(&board, &name.unwrap_or_default(), &mut queries);
        }
    }
    for (_, expr) in &mut queries {
        for (var, value) in [
            ("$__rate_interval", "1m"),
            ("$__interval", "1m"),
            ("$__range", "1h"),
            ("$instance", ".*"),
        ] {
            *expr = expr.replace(var, value);
        }
    }
    Ok(queries)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_every_service() -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let redis = RedisServer::start().await?;
    let dir = tempfile::tempdir()?;
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));

    // history, as chat-history runs it.
    let mut metrics = Metrics::new("history");
    let store = chat_history::open_store(&chat_history::Settings {
        data_dir: dir.path().to_owned(),
        ..Default::default()
    })
    .await?;
    let history = HistoryServer::bind(loopback, store.clone(), &mut metrics).await?;
    let history_url = format!("http://{}", history.local_addr());
    let health = health_check(move || {
        let store = store.clone();
        async move { store.ping().await.map_err(|e| e.to_string()) }
    });
    let history_metrics = metrics_server(metrics, health, &stop).await?;
    tokio::spawn(history.run(stop.clone()));

    // presence, on Redis.
    let mut metrics = Metrics::new("presence");
    let settings = chat_presence::Settings {
        redis_url: Some(redis.url()),
        ttl: Duration::from_secs(30),
        ..Default::default()
    };
    let store = chat_presence::open_store(&settings, &mut metrics).await?;
    let presence = PresenceServer::bind(loopback, store, &mut metrics).await?;
    let presence_url = format!("http://{}", presence.local_addr());
    let presence_metrics =
        metrics_server(metrics, health_check(|| async { Ok(()) }), &stop).await?;
    tokio::spawn(presence.run(stop.clone()));

    // accounts, embedded store, as chat-accounts runs it.
    let mut metrics = Metrics::new("accounts");
    let mut accounts_settings = chat_accounts::Settings::default();
    accounts_settings.service.grpc_addr = loopback;
    accounts_settings.store.data_dir = dir.path().to_owned();
    let accounts_store = chat_accounts::open_store(&accounts_settings).await?;
    let backends = chat_accounts::cli::backends(&accounts_settings).await?;
    let accounts = chat_accounts::AccountsServer::bind(
        &accounts_settings,
        accounts_store,
        backends.throttle,
        backends.revocations,
        &mut metrics,
    )
    .await?;
    let accounts_url = format!("http://{}", accounts.local_addr());
    let accounts_metrics = metrics_server(metrics, accounts.health(), &stop).await?;
    tokio::spawn(accounts.run(stop.clone()));

    // A gateway with Redis fan-out; /metrics on its HTTP port.
    let settings = chat_gateway::Settings {
        http_addr: loopback,
        history_url,
        presence_url,
        accounts_url: Some(accounts_url),
        redis_url: Some(redis.url()),
        auth_mode: AuthMode::Dev,
        workers: 1,
        shutdown_grace_secs: 1,
        ..Default::default()
    };
    let gateway = Gateway::build(
        &settings,
        stop.clone(),
        chat_metrics::Metrics::new("gateway"),
    )
    .await?;
    let gateway_addr = gateway.local_addr()?;
    tokio::spawn(gateway.run());

    // Prometheus: the shipped prometheus/prometheus.yml, its service discovery replaced by
    // this test's addresses.
    let targets = BTreeMap::from([
        ("accounts", accounts_metrics.to_string()),
        ("gateway", gateway_addr.to_string()),
        ("history", history_metrics.to_string()),
        ("presence", presence_metrics.to_string()),
        ("prometheus", SELF_ADDR.to_owned()),
    ]);
    let shipped = std::fs::read_to_string(repo().join("prometheus/prometheus.yml"))?;
    let (config, mut jobs) = test_config(&shipped, &targets)?;
    jobs.sort_unstable();
    assert_eq!(
        jobs,
        targets
            .keys()
            .map(|job| job.to_string())
            .collect::<Vec<_>>(),
        "the jobs of prometheus/prometheus.yml are the ones this test serves:\n{config}"
    );
    let prometheus = PrometheusServer::start(&config).await?;
    prometheus.wait_targets_up(targets.len(), DEADLINE).await?;

    // Chat traffic: two users, a room, messages both ways, a history page over HTTP.
    let mut alice = WsClient::join_as(gateway_addr, "alice", "general").await?;
    let mut bob = WsClient::join_as(gateway_addr, "bob", "general").await?;
    for i in 0..5 {
        let (from, to) = if i % 2 == 0 {
            (&mut alice, &mut bob)
        } else {
            (&mut bob, &mut alice)
        };
        let ack = from
            .send_message("general", &format!("hello {i}"), &format!("c{i}"))
            .await?;
        anyhow::ensure!(ack["type"] == "ack", "{ack}");
        to.next_message("general").await?;
    }
    let page = reqwest::get(format!(
        "http://{gateway_addr}/v1/rooms/general/messages?user=alice"
    ))
    .await?;
    anyhow::ensure!(page.status() == 200, "history page: {}", page.status());

    // Every job exposes the eight compatibility metrics.
    let names = COMPAT.join("|");
    for job in ["gateway", "history", "presence"] {
        let expr = format!(r#"count by (__name__) ({{job="{job}", __name__=~"{names}"}})"#);
        let found = eventually(DEADLINE, "compatibility metrics", || async {
            let series = prometheus.query(&expr).await.ok()?;
            (series.len() == COMPAT.len()).then_some(series)
        })
        .await
        .map_err(|e| anyhow::anyhow!("{job}: {e}: {expr}"))?;
        assert_eq!(found.len(), COMPAT.len(), "{job}: {found:?}");
    }

    // Traffic shows: each query has a series with a value above 0.
    for expr in [
        r#"sum(http_requests_total{job="gateway", endpoint="/v1/rooms/{room}/messages", status="200"})"#,
        r#"sum(http_request_duration_seconds_count{job="gateway", endpoint="/v1/ws"})"#,
        r#"sum(http_requests_total{job="history", endpoint="/metrics"})"#,
        r#"ws_connections_active{job="gateway"}"#,
        r#"ws_connections_total{job="gateway"}"#,
        r#"ws_messages_total{job="gateway", direction="in"}"#,
        r#"ws_messages_total{job="gateway", direction="out"}"#,
        r#"ws_message_latency_seconds_count{job="gateway"}"#,
        r#"ws_message_latency_seconds_bucket{job="gateway", le="10"}"#,
        r#"cpu_usage_percent{job="gateway"}"#,
        r#"memory_usage_percent{job="history"}"#,
        r#"chat_gateway_redis_connected{job="gateway"}"#,
        r#"chat_presence_redis_connected{job="presence"}"#,
        r#"up{job="prometheus"}"#,
        r#"sum(grpc_server_requests_total{job="history", method="Append", code="OK"})"#,
        r#"sum(grpc_client_requests_total{job="gateway", method="Append", code="OK"})"#,
        r#"sum(chat_history_appends_total{job="history", result="stored"})"#,
        r#"job:ws_messages:rate5m{job="gateway", direction="in"}"#,
    ] {
        eventually(DEADLINE, expr, || async {
            let series = prometheus.query(expr).await.ok()?;
            let positive = series.iter().any(|s| {
                s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(|v| v > 0.0)
            });
            positive.then_some(())
        })
        .await?;
    }

    // Every rule of prometheus/rules evaluates cleanly against real data, and no alert
    // fires on a healthy system.
    eventually(DEADLINE, "every rule evaluated", || async {
        let data = prometheus.api("rules", &[]).await.ok()?;
        let rules: Vec<&Value> = data["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        let evaluated = !rules.is_empty()
            && rules.iter().all(|r| {
                r["health"] == "ok"
                    && r["lastEvaluation"]
                        .as_str()
                        .is_some_and(|t| !t.starts_with("0001"))
            });
        evaluated.then_some(())
    })
    .await?;
    let firing = prometheus.query(r#"ALERTS{alertstate="firing"}"#).await?;
    assert!(firing.is_empty(), "alerts firing: {firing:?}");

    // Every dashboard query runs.
    let queries = dashboard_queries()?;
    assert!(
        queries.len() > 50,
        "only {} dashboard queries",
        queries.len()
    );
    for (at, expr) in &queries {
        prometheus
            .query(expr)
            .await
            .map_err(|e| anyhow::anyhow!("{at}: {expr}: {e}"))?;
    }

    alice.close().await;
    bob.close().await;
    Ok(())
}
