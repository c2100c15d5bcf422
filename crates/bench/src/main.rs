//! `chat-bench`: see the library documentation and `docs/benchmarks.md`.

use std::path::Path;

use chat_bench::cli::{Cli, Cmd};
use clap::Parser as _;
use serde::Serialize;

/// Prints the report (JSON or table) and writes the JSON to `out` if asked.
fn emit<T: Serialize>(
    report: &T,
    json: bool,
    out: Option<&Path>,
    table: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    if let Some(out) = out {
        std::fs::write(out, format!("{text}\n"))?;
    }
    if json {
        println!("{text}");
    } else {
        print!("{}", table(report));
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Worker => chat_bench::worker::process_main().await,
        Cmd::Run(args) => {
            let report = chat_bench::run(&args.options()?).await?;
            emit(
                &report,
                args.conn.json,
                args.conn.out.as_deref(),
                chat_bench::report::table,
            )?;
            // A ramp ends on a failing round by design; it fails only without any pass.
            let ok = match report.p99_limit_ms {
                Some(_) => report.best_round.is_some(),
                None => report.is_clean(),
            };
            if !ok {
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Idle(args) => {
            let report = chat_bench::idle::run(&args.options()?).await?;
            emit(
                &report,
                args.conn.json,
                args.conn.out.as_deref(),
                chat_bench::idle::table,
            )
        }
        Cmd::Append(args) => {
            let report = chat_bench::append::run(&args.options()?).await?;
            emit(
                &report,
                args.json,
                args.out.as_deref(),
                chat_bench::append::table,
            )
        }
        Cmd::Logins(args) => {
            let report = chat_bench::logins::run(&args.options()).await?;
            emit(
                &report,
                args.json,
                args.out.as_deref(),
                chat_bench::logins::table,
            )?;
            if report.failed > 0 || report.ok == 0 {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
