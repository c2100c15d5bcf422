//! The operator sub-commands of the real `chat-accounts` binary, against an embedded
//! store in a temporary directory: a user is signed up in-process first, the store is
//! closed, the command runs, and its effect is checked through the store and the
//! accounts API.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chat_accounts::AccountsError;
use chat_accounts::Settings;
use chat_accounts::accounts::{Accounts, Issued};
use chat_accounts::metrics::AccountsMetrics;
use chat_accounts::password::{HashParams, Password};
use chat_accounts::revocations::NoRevocations;
use chat_accounts::store::AccountStore;
use chat_accounts::store::embedded::EmbeddedStore;
use chat_accounts::throttle::{MemoryThrottle, Policies};
use chat_model::revocation::{REVOCATION_CHANNEL, Revocation, RevocationReason};
use chat_testkit::redis::RedisServer;
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};

const PASSWORD: &str = "correct horse battery staple";

/// Opens accounts over the store in `dir` (closed again when dropped).
async fn accounts(dir: &Path) -> Accounts {
    let settings = Settings {
        hash_params: HashParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        },
        hash_threads: 1,
        ..Settings::default()
    };
    let store: Arc<dyn AccountStore> = Arc::new(EmbeddedStore::open(dir).expect("open store"));
    Accounts::new(
        &settings,
        store,
        Arc::new(MemoryThrottle::new(Policies::default())),
        Arc::new(NoRevocations),
        AccountsMetrics::default(),
    )
    .await
    .expect("accounts")
}

/// Signs `username` up and logs in `extra` more times; returns every session's tokens.
async fn sign_up(dir: &Path, username: &str, extra: usize) -> Vec<Issued> {
    let accounts = accounts(dir).await;
    let mut issued = vec![
        accounts
            .sign_up(username, &Password::new(PASSWORD), "", None)
            .await
            .expect("sign up"),
    ];
    for _ in 0..extra {
        issued.push(
            accounts
                .log_in(username, &Password::new(PASSWORD), None)
                .await
                .expect("log in"),
        );
    }
    issued
}

/// Runs `chat-accounts <args>` on the store in `dir`, with `stdin` as its input.
fn run(dir: &Path, args: &[&str], stdin: &str, redis: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chat-accounts"));
    command
        .args(args)
        .env("CHAT_DATA_DIR", dir)
        .env_remove("CHAT_MONGODB_URL")
        .env_remove("CHAT_REDIS_CLUSTER")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match redis {
        Some(url) => command.env("CHAT_REDIS_URL", url),
        None => command.env_remove("CHAT_REDIS_URL"),
    };
    let mut child = command.spawn().expect("spawn chat-accounts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("chat-accounts ran")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "status {:?}, stderr: {}",
        output.status,
        text(&output.stderr)
    );
    text(&output.stdout)
}

async fn log_in(dir: &Path, username: &str, password: &str) -> Result<Issued, AccountsError> {
    accounts(dir)
        .await
        .log_in(username, &Password::new(password), None)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_password_generates_one_and_ends_every_session() {
    let dir = tempfile::tempdir().expect("tempdir");
    let issued = sign_up(dir.path(), "alice", 1).await;
    let out = succeeded(&run(dir.path(), &["reset-password", "alice"], "", None));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "only the password on stdout: {out:?}");
    let generated = lines[0];
    assert!(generated.len() >= 20, "{generated}");
    let accounts = accounts(dir.path()).await;
    for session in &issued {
        assert!(accounts.authenticate(&session.access_token).await.is_err());
    }
    drop(accounts);
    assert_eq!(
        log_in(dir.path(), "alice", PASSWORD)
            .await
            .expect_err("old password"),
        AccountsError::InvalidCredentials
    );
    log_in(dir.path(), "alice", generated)
        .await
        .expect("new password");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_password_from_stdin_checks_the_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    sign_up(dir.path(), "alice", 0).await;
    let weak = run(
        dir.path(),
        &["reset-password", "--stdin", "alice"],
        "password\n",
        None,
    );
    assert_eq!(weak.status.code(), Some(1), "{}", text(&weak.stderr));
    log_in(dir.path(), "alice", PASSWORD)
        .await
        .expect("unchanged");
    let chosen = "marble otter juggles seventeen kites";
    let out = succeeded(&run(
        dir.path(),
        &["reset-password", "--stdin", "alice"],
        &format!("{chosen}\n"),
        None,
    ));
    assert_eq!(out, "", "nothing to print: the operator chose it");
    log_in(dir.path(), "alice", chosen)
        .await
        .expect("chosen password");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_and_enable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let issued = sign_up(dir.path(), "bob", 1).await;
    let out = succeeded(&run(dir.path(), &["disable", "bob"], "", None));
    assert_eq!(out, "bob disabled; 2 session(s) ended\n");
    {
        let accounts = accounts(dir.path()).await;
        assert!(
            accounts
                .authenticate(&issued[1].access_token)
                .await
                .is_err()
        );
        assert!(
            accounts
                .store()
                .user_sessions(&issued[0].user.id)
                .await
                .expect("list")
                .is_empty()
        );
        // The name stays reserved.
        assert_eq!(
            accounts
                .sign_up("bob", &Password::new(PASSWORD), "", None)
                .await
                .expect_err("taken"),
            AccountsError::UsernameTaken
        );
    }
    assert_eq!(
        log_in(dir.path(), "bob", PASSWORD)
            .await
            .expect_err("disabled"),
        AccountsError::InvalidCredentials
    );
    succeeded(&run(dir.path(), &["enable", "bob"], "", None));
    log_in(dir.path(), "bob", PASSWORD).await.expect("enabled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_listed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let issued = sign_up(dir.path(), "carol", 2).await;
    let out = succeeded(&run(dir.path(), &["sessions", "carol"], "", None));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    for session in &issued {
        let id = session.refresh_token.split_once('.').expect("sid").0;
        let line = lines
            .iter()
            .find(|l| l.starts_with(&format!("{id} ")))
            .unwrap_or_else(|| panic!("{id} listed in {out}"));
        for field in ["created=", "last_used=", "expires="] {
            assert!(line.contains(field), "{line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_signing_key_prints_the_published_kids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let before = {
        let accounts = accounts(dir.path()).await;
        accounts.signing_keys().await.expect("keys")
    };
    assert_eq!(before.len(), 1);
    let out = succeeded(&run(dir.path(), &["rotate-signing-key"], "", None));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines.contains(&format!("{} retiring", before[0].key.kid).as_str()),
        "{out}"
    );
    let active = lines
        .iter()
        .find_map(|l| l.strip_suffix(" active"))
        .expect("an active key");
    assert_ne!(active, before[0].key.kid);
    let after = accounts(dir.path()).await;
    let signing = after.signing_keys().await.expect("keys");
    assert!(signing.iter().any(|k| k.active && k.key.kid == active));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_and_bad_usage_have_their_exit_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    sign_up(dir.path(), "dave", 0).await;
    let unknown = run(dir.path(), &["disable", "nobody"], "", None);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        text(&unknown.stderr).contains("nobody"),
        "{}",
        text(&unknown.stderr)
    );
    for bad in [
        &["frobnicate"][..],
        &["disable"],
        &["sessions", "a", "b"],
        &["enable", "--force", "x"],
    ] {
        let output = run(dir.path(), bad, "", None);
        assert_eq!(output.status.code(), Some(2), "{bad:?}");
        assert!(text(&output.stderr).contains("usage:"), "{bad:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_the_ended_sessions_are_announced() {
    let server = RedisServer::start().await.expect("redis-server");
    let subscriber = fred::types::Builder::from_config(
        fred::types::config::Config::from_url(&server.url()).expect("url"),
    )
    .build_subscriber_client()
    .expect("subscriber");
    subscriber.init().await.expect("connect");
    let mut messages = subscriber.message_rx();
    subscriber
        .subscribe(REVOCATION_CHANNEL)
        .await
        .expect("subscribe");
    let dir = tempfile::tempdir().expect("tempdir");
    let issued = sign_up(dir.path(), "erin", 0).await;
    succeeded(&run(
        dir.path(),
        &["disable", "erin"],
        "",
        Some(&server.url()),
    ));
    let message = tokio::time::timeout(Duration::from_secs(10), messages.recv())
        .await
        .expect("a message within 10 s")
        .expect("message");
    let json: String = message.value.convert().expect("text");
    let revocation = Revocation::from_json(&json).expect("json");
    assert_eq!(revocation.reason, RevocationReason::AccountDisabled);
    assert_eq!(revocation.user, issued[0].user.id.to_string());
    assert_eq!(revocation.sessions.len(), 1);
}
