//! Secrets never reach a log. Every service runs with `RUST_LOG=debug` and
//! recognisable secrets (the JWT secret, the internal gRPC token, MongoDB and Redis
//! passwords in their URLs), clients connect through the repo's nginx config with their
//! token in the query string, and the paths where secrets are most likely to leak are
//! exercised: refused tokens, a gateway holding the wrong internal token, history and
//! presence failing to reach a backend that refuses their credentials, and accounts:
//! sign-up, a wrong and a right log-in, a refresh, a password change and a WebSocket
//! opened with an access token, all through nginx. Then no log file (the services'
//! output, nginx's access log, and its error log at the level the repo's nginx config
//! writes) may contain any of them: nor a password, an access or refresh token, or an
//! argon2 hash (`$argon2id$`).

use std::time::Duration;

use chat_e2e::{Harness, Store, Topology, binary, jwt};
use chat_testkit::accounts_http::{AccountsHttp, access_token, refresh_token};
use chat_testkit::process::ChildGuard;
use chat_testkit::ws::WsClient;
use serde_json::json;

const JWT_SECRET: &str = "jwt-secret-SENTINEL-9d41c07be35a";
const INTERNAL_TOKEN: &str = "internal-token-SENTINEL-52aa0f6e1c";
const WRONG_INTERNAL_TOKEN: &str = "wrong-internal-SENTINEL-b7e3190d4f";
const MONGO_PASSWORD: &str = "mongo-pw-SENTINEL-0c8e2d";
const REDIS_PASSWORD: &str = "redis-pw-SENTINEL-f19a7b";
const USER_PASSWORD: &str = "user-pw-SENTINEL-Quiet-Harbor-71";
const NEW_USER_PASSWORD: &str = "new-user-pw-SENTINEL-Amber-Kite-38";
const WRONG_USER_PASSWORD: &str = "wrong-user-pw-SENTINEL-Slate-Fern-55";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_a_log() -> anyhow::Result<()> {
    Harness::run("secrets", Duration::from_secs(120), scenario).await
}

async fn scenario(h: &Harness) -> anyhow::Result<()> {
    let debug = ("RUST_LOG", "debug".to_owned());
    // Gateway 1 holds the wrong internal token: never ready, and not behind nginx.
    let mut running = Topology::new()
        .gateways(2)
        .gateway_env(1, "CHAT_INTERNAL_TOKEN", WRONG_INTERNAL_TOKEN)
        .outside(1)
        .history(1, Store::Mongo)
        .accounts(1, Store::Mongo)
        .internal_token(INTERNAL_TOKEN)
        .jwt_secret(JWT_SECRET)
        .env(debug.0, debug.1.clone())
        .nginx()
        .start(h)
        .await?;
    let (gateway, impostor) = (&running.gateways[0], &running.gateways[1]);
    let nginx = running.nginx()?;

    // A real session through nginx, token in the query string.
    let alice_token = jwt(JWT_SECRET, "alice", 3600)?;
    let url = format!("ws://{}/v1/ws?token={alice_token}", nginx.addr);
    let mut alice = WsClient::connect(&url).await?;
    alice.join("vault", None).await?;
    let ack = alice.send_message("vault", "hello", "c1").await?;
    anyhow::ensure!(ack["type"] == "ack", "send through nginx failed: {ack}");
    alice.close().await;

    // Accounts through nginx: every call that carries a password or a token.
    let api = AccountsHttp::new(format!("http://{}", nginx.addr));
    let signed = api.sign_up("carol", USER_PASSWORD).await?;
    let wrong = api
        .post(
            "/v1/auth/login",
            None,
            &json!({"username": "carol", "password": WRONG_USER_PASSWORD}),
        )
        .await?;
    anyhow::ensure!(
        wrong.status == 401,
        "wrong password answered {}",
        wrong.status
    );
    let logged = api.log_in("carol", USER_PASSWORD).await?;
    let carol_token = access_token(&logged)?;
    let refreshed = api
        .post(
            "/v1/auth/refresh",
            None,
            &json!({"refresh_token": refresh_token(&logged)?}),
        )
        .await?
        .expect(200)?
        .body;
    api.post(
        "/v1/auth/password",
        Some(&access_token(&refreshed)?),
        &json!({"current_password": USER_PASSWORD, "new_password": NEW_USER_PASSWORD}),
    )
    .await?
    .expect(204)?;
    let url = format!("ws://{}/v1/ws?token={carol_token}", nginx.addr);
    if let Ok(carol) = WsClient::connect(&url).await {
        carol.close().await;
    }
    let user_secrets = [
        USER_PASSWORD.to_owned(),
        NEW_USER_PASSWORD.to_owned(),
        WRONG_USER_PASSWORD.to_owned(),
        access_token(&signed)?,
        refresh_token(&signed)?,
        carol_token.clone(),
        refresh_token(&logged)?,
        access_token(&refreshed)?,
        refresh_token(&refreshed)?,
        "$argon2id$".to_owned(),
    ];

    // Refused tokens, through nginx and directly.
    let forged = jwt("not-the-secret-0123456789abcdef", "mallory", 3600)?;
    let expired = jwt(JWT_SECRET, "alice", -3600)?;
    for bad in [forged.as_str(), expired.as_str(), "not.a.jwt"] {
        for base in [nginx.addr, gateway.addr] {
            let status =
                WsClient::refused_status(&format!("ws://{base}/v1/ws?token={bad}")).await?;
            anyhow::ensure!(status == Some(401), "bad token answered {status:?}");
        }
    }

    // The gateway with the wrong internal token: its calls are refused and it says so.
    let url = format!(
        "ws://{}/v1/ws?token={}",
        impostor.addr,
        jwt(JWT_SECRET, "bob", 3600)?
    );
    if let Ok(mut bob) = WsClient::connect(&url).await {
        let _ = bob.join("vault", None).await;
        let reply = bob
            .request(json!({"type": "send", "room": "vault", "body": "x", "client_id": "c2"}))
            .await?;
        anyhow::ensure!(reply["type"] == "error", "wrong internal token got {reply}");
    }

    // Backends refusing credentials: the stand-in has no auth, so the driver's SCRAM
    // handshake fails; Redis has no password, so AUTH fails. Each service gets a few
    // seconds to log what it logs, then is stopped.
    let mongo_with_password = running.mongo()?.url().replacen(
        "mongodb://",
        &format!("mongodb://chat:{MONGO_PASSWORD}@"),
        1,
    );
    let redis_with_password =
        running
            .redis()?
            .url()
            .replacen("redis://", &format!("redis://:{REDIS_PASSWORD}@"), 1);
    let failing = [
        (
            "history-bad-credentials",
            "chat-history",
            vec![
                debug.clone(),
                ("CHAT_MONGODB_URL", mongo_with_password),
                ("CHAT_METRICS_ADDR", "127.0.0.1:0".to_owned()),
            ],
        ),
        (
            "presence-bad-credentials",
            "chat-presence",
            vec![
                debug.clone(),
                ("CHAT_REDIS_URL", redis_with_password.clone()),
                ("CHAT_METRICS_ADDR", "127.0.0.1:0".to_owned()),
            ],
        ),
        (
            "gateway-bad-credentials",
            "chat-gateway",
            vec![
                debug.clone(),
                ("CHAT_AUTH_MODE", "dev".to_owned()),
                ("CHAT_REDIS_URL", redis_with_password),
            ],
        ),
    ];
    for (name, bin, env) in failing {
        run_briefly(h, name, bin, &env, Duration::from_secs(4)).await?;
    }
    drop(running.nginx.take());

    // Every log of the run.
    let mut checked = 0;
    let mut leaks = Vec::new();
    for path in log_files(h.dir())? {
        let mut text = String::from_utf8_lossy(&std::fs::read(&path)?).into_owned();
        if path.ends_with("nginx/error.log") {
            text = at_production_level(&text);
        }
        checked += text.len();
        for secret in [
            JWT_SECRET,
            INTERNAL_TOKEN,
            WRONG_INTERNAL_TOKEN,
            MONGO_PASSWORD,
            REDIS_PASSWORD,
            alice_token.as_str(),
            forged.as_str(),
            expired.as_str(),
        ]
        .into_iter()
        .chain(user_secrets.iter().map(String::as_str))
        {
            if let Some(at) = text.find(secret) {
                let line = text[..at].lines().count();
                leaks.push(format!("{} line {line}", path.display()));
            }
        }
    }
    anyhow::ensure!(
        checked > 10_000,
        "only {checked} bytes of logs: nothing was logged?"
    );
    anyhow::ensure!(leaks.is_empty(), "secrets in logs: {leaks:#?}");
    Ok(())
}

/// Runs `bin` for `how_long` with its output in `<name>.log` of the harness directory
/// (whether or not it manages to start), then stops it.
async fn run_briefly(
    h: &Harness,
    name: &str,
    bin: &str,
    env: &[(&str, String)],
    how_long: Duration,
) -> anyhow::Result<()> {
    let log = std::fs::File::create(h.dir().join(format!("{name}.log")))?;
    let mut cmd = std::process::Command::new(binary(bin)?);
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    for var in ["CHAT_GRPC_ADDR", "CHAT_HTTP_ADDR"] {
        cmd.env(var, "127.0.0.1:0");
    }
    let mut child = ChildGuard::spawn(name, &mut cmd)?;
    let _ = child.wait_exit(how_long).await?;
    child.kill();
    Ok(())
}

/// The lines of an nginx error log that `deploy/nginx/nginx.conf` (`error_log ...
/// warn`) would write: the harness runs nginx at `info`, whose connection-level lines
/// (a client resetting an upgraded connection, say) quote the request line with its
/// `?token=`. Lines at `warn` and above stay checked; docs/deployment.md says which of
/// them can still quote a token (a failed upstream connection).
fn at_production_level(log: &str) -> String {
    log.lines()
        .filter(|line| {
            !["[debug]", "[info]", "[notice]"]
                .iter()
                .any(|l| line.contains(l))
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

/// Every file under `dir`, recursively.
fn log_files(dir: &std::path::Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(log_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "log") {
            files.push(path);
        }
    }
    Ok(files)
}
