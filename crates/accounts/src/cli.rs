//! The `chat-accounts` binary: without arguments it serves; with one of the operator
//! sub-commands it opens the same store (same `CHAT_*` variables) and Redis, does one
//! thing and exits. Exit codes: 0 done, 1 failed (unknown user, weak password, store
//! unreachable), 2 bad usage.
//!
//! With the embedded store, stop the service first: its file is open by one process at
//! a time (the command then fails saying so). With MongoDB, run it anywhere the service
//! runs; with `CHAT_REDIS_URL` set, the sessions it ends are announced to the gateways.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use chat_metrics::{Metrics, RedisConnectionMetrics};
use chat_model::Timestamp;
use chat_runtime::env::FromEnv as _;

use crate::accounts::Accounts;
use crate::metrics::AccountsMetrics;
use crate::password::{self, Password};
use crate::revocations::{NoRevocations, RedisRevocations, RevocationSink};
use crate::server::AccountsServer;
use crate::settings::{Settings, open_store};
use crate::throttle::{MemoryThrottle, Policies, RedisThrottle, Throttle};

/// What `chat-accounts --help` prints.
pub const USAGE: &str = "\
usage: chat-accounts                        serve (configuration: CHAT_* variables)
       chat-accounts reset-password [--stdin] <username>
                                            set a new password (generated and printed
                                            once on stdout; --stdin: read it from stdin,
                                            policy-checked) and end every session
       chat-accounts disable <username>     end every session; no more log-ins; the
                                            name stays reserved
       chat-accounts enable <username>      allow log-ins again
       chat-accounts rotate-signing-key     start signing with a new key; prints the
                                            published kids (active one marked)
       chat-accounts sessions <username>    one line per session: id, created, last
                                            used, expires
exit status: 0 done, 1 failed, 2 bad usage
";

/// One invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// No argument: run the service.
    Serve,
    /// `-h`, `--help`, `help`.
    Help,
    /// `reset-password [--stdin] <username>`.
    ResetPassword {
        /// Whose.
        username: String,
        /// Read the new password from stdin instead of generating one.
        from_stdin: bool,
    },
    /// `disable <username>`.
    Disable {
        /// Whom.
        username: String,
    },
    /// `enable <username>`.
    Enable {
        /// Whom.
        username: String,
    },
    /// `rotate-signing-key`.
    RotateSigningKey,
    /// `sessions <username>`.
    Sessions {
        /// Whose.
        username: String,
    },
}

/// Arguments that do not make a command (exit code 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, UsageError> {
    let Some((name, rest)) = args.split_first() else {
        return Ok(Command::Serve);
    };
    let mut from_stdin = false;
    let mut operands = Vec::new();
    for arg in rest {
        match arg.as_str() {
            "--stdin" if name == "reset-password" => from_stdin = true,
            flag if flag.starts_with('-') => {
                return Err(UsageError(format!("{name}: unknown option {flag:?}")));
            }
            operand => operands.push(operand.to_owned()),
        }
    }
    let username = |operands: Vec<String>| match <[String; 1]>::try_from(operands) {
        Ok([username]) => Ok(username),
        Err(given) => Err(UsageError(format!(
            "{name} takes one username, got {}",
            given.len()
        ))),
    };
    match name.as_str() {
        "-h" | "--help" | "help" if rest.is_empty() => Ok(Command::Help),
        "reset-password" => Ok(Command::ResetPassword {
            username: username(operands)?,
            from_stdin,
        }),
        "disable" => Ok(Command::Disable {
            username: username(operands)?,
        }),
        "enable" => Ok(Command::Enable {
            username: username(operands)?,
        }),
        "sessions" => Ok(Command::Sessions {
            username: username(operands)?,
        }),
        "rotate-signing-key" if operands.is_empty() => Ok(Command::RotateSigningKey),
        "rotate-signing-key" => Err(UsageError("rotate-signing-key takes no argument".into())),
        other => Err(UsageError(format!("unknown command {other:?}"))),
    }
}

/// The throttle and the revocation sink the settings choose, and the Redis client
/// behind them if any.
#[derive(Debug)]
pub struct Backends {
    /// [`RedisThrottle`] with `CHAT_REDIS_URL`, else [`MemoryThrottle`].
    pub throttle: Arc<dyn Throttle>,
    /// [`RedisRevocations`] with `CHAT_REDIS_URL`, else [`NoRevocations`].
    pub revocations: Arc<dyn RevocationSink>,
    /// The connection both share.
    pub redis: Option<fred::clients::Client>,
}

/// Connects to Redis when `CHAT_REDIS_URL` is set (failing when it is unreachable now)
/// and picks the backends; logs which.
pub async fn backends(settings: &Settings) -> anyhow::Result<Backends> {
    let policies = Policies::default();
    let Some(url) = &settings.redis_url else {
        tracing::info!(
            throttle = "memory",
            revocations = "none",
            "CHAT_REDIS_URL unset: throttle counts are this replica's own, ended sessions \
             are not announced to gateways"
        );
        return Ok(Backends {
            throttle: Arc::new(MemoryThrottle::new(policies)),
            revocations: Arc::new(NoRevocations),
            redis: None,
        });
    };
    // The error may name the URL's host, never its password (fred does not print it).
    let client = crate::redis::connect(url)
        .await
        .context("cannot connect to CHAT_REDIS_URL")?;
    tracing::info!(
        throttle = "redis",
        revocations = "redis",
        "throttle counts shared in Redis, ended sessions announced on Redis pub/sub"
    );
    Ok(Backends {
        throttle: Arc::new(RedisThrottle::new(client.clone(), policies)),
        revocations: Arc::new(RedisRevocations::new(client.clone())),
        redis: Some(client),
    })
}

/// Runs the binary with `args` (those after the program name).
pub async fn main(args: Vec<String>) -> ExitCode {
    let command = match parse(&args) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("chat-accounts: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match command {
        Command::Help => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Command::Serve => {
            chat_runtime::init_tracing();
            serve().await
        }
        command => {
            // Logs go to stderr (warnings only, unless RUST_LOG says otherwise): stdout
            // is the command's answer.
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
                )
                .init();
            operate(command).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat-accounts: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The service, until SIGINT or SIGTERM.
async fn serve() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    tracing::debug!(?settings, "starting");
    let mut metrics = Metrics::new("accounts");
    let store = open_store(&settings).await?;
    let backends = backends(&settings).await?;
    if let Some(client) = &backends.redis {
        let connection = RedisConnectionMetrics::register(
            metrics
                .registry
                .sub_registry_with_prefix("chat_accounts_redis"),
            "1 while the accounts service's Redis connection (throttle, revocations) is up, else 0.",
            "Reconnections of the accounts service's Redis connection (fred reconnects by itself after a failure)",
        );
        crate::redis::watch_connection(client, &connection);
    }
    let server = AccountsServer::bind(
        &settings,
        store,
        backends.throttle,
        backends.revocations,
        &mut metrics,
    )
    .await?;
    let health = server.health();
    chat_runtime::run_service(settings.service.metrics_addr, metrics, health, |stop| {
        server.run(stop)
    })
    .await
}

/// One operator command.
async fn operate(command: Command) -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let embedded = settings.store.mongodb_url.is_none();
    let store = open_store(&settings).await.with_context(|| {
        if embedded {
            "the embedded store is open by one process at a time: stop the service first"
        } else {
            "opening the store"
        }
    })?;
    let backends = backends(&settings).await?;
    let accounts = Accounts::new(
        &settings,
        store,
        backends.throttle,
        backends.revocations,
        AccountsMetrics::default(),
    )
    .await?;
    let mut out = std::io::stdout().lock();
    match command {
        Command::ResetPassword {
            username,
            from_stdin,
        } => {
            let (password, generated) = if from_stdin {
                (read_password().await?, false)
            } else {
                (password::generate()?, true)
            };
            let ended = accounts
                .reset_password(&username, &password, !generated)
                .await?;
            if generated {
                writeln!(out, "{}", password.expose())?;
            }
            eprintln!("password of {username} reset; {ended} session(s) ended");
        }
        Command::Disable { username } => {
            let ended = accounts.set_disabled(&username, true).await?;
            writeln!(out, "{username} disabled; {ended} session(s) ended")?;
        }
        Command::Enable { username } => {
            accounts.set_disabled(&username, false).await?;
            writeln!(out, "{username} enabled")?;
        }
        Command::RotateSigningKey => {
            for published in accounts.rotate_signing_key().await? {
                let state = if published.active {
                    "active"
                } else {
                    "retiring"
                };
                writeln!(out, "{} {state}", published.key.kid)?;
            }
        }
        Command::Sessions { username } => {
            let at = |ms| Timestamp(ms).to_rfc3339();
            for s in accounts.sessions_of(&username).await? {
                writeln!(
                    out,
                    "{} created={} last_used={} expires={}",
                    s.id,
                    at(s.created_at),
                    at(s.rotated_at.unwrap_or(s.created_at)),
                    at(s.expires_at),
                )?;
            }
        }
        Command::Serve | Command::Help => unreachable!("handled by main"),
    }
    out.flush()?;
    Ok(())
}

/// The first line of stdin, without its line ending.
async fn read_password() -> anyhow::Result<Password> {
    let line = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await?
    .context("reading the new password from stdin")?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    anyhow::ensure!(!password.is_empty(), "no password on stdin");
    Ok(Password::new(password))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn commands_parse() {
        assert_eq!(parse(&[]), Ok(Command::Serve));
        assert_eq!(parse(&args("--help")), Ok(Command::Help));
        assert_eq!(
            parse(&args("reset-password alice")),
            Ok(Command::ResetPassword {
                username: "alice".into(),
                from_stdin: false
            })
        );
        assert_eq!(
            parse(&args("reset-password --stdin alice")),
            Ok(Command::ResetPassword {
                username: "alice".into(),
                from_stdin: true
            })
        );
        assert_eq!(
            parse(&args("disable bob")),
            Ok(Command::Disable {
                username: "bob".into()
            })
        );
        assert_eq!(
            parse(&args("rotate-signing-key")),
            Ok(Command::RotateSigningKey)
        );
    }

    #[test]
    fn bad_usage_is_refused() {
        for bad in [
            "frobnicate",
            "disable",
            "disable a b",
            "enable --stdin a",
            "rotate-signing-key now",
            "sessions --all a",
            "--help me",
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad}");
        }
    }
}
