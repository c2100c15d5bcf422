//! The coordinator's side of the workers: starting them (tasks in this process, or
//! `chat-bench worker` child processes), sending each round to all of them at once, and
//! gathering their reports.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::plan::{Plan, Share};
use crate::worker::{self, Command, ConnectReport, Event, RoundReport, WorkerInit};

/// Where workers run.
#[derive(Debug, Clone)]
pub enum Spawn {
    /// As tasks of this process (one process's descriptor limit applies to all).
    InProcess,
    /// As child processes running `<exe> worker`.
    Processes { exe: PathBuf },
}

impl Spawn {
    /// Child processes of the running executable.
    pub fn processes() -> anyhow::Result<Self> {
        Ok(Self::Processes {
            exe: std::env::current_exe().context("finding chat-bench's own executable")?,
        })
    }
}

enum Link {
    Local {
        commands: mpsc::Sender<Command>,
        events: mpsc::Receiver<Event>,
        task: JoinHandle<()>,
    },
    Process(Box<ProcessLink>),
}

struct ProcessLink {
    child: Child,
    stdin: ChildStdin,
    events: Lines<BufReader<ChildStdout>>,
}

impl Link {
    async fn send(&mut self, command: Command) -> anyhow::Result<()> {
        match self {
            Link::Local { commands, .. } => commands
                .send(command)
                .await
                .map_err(|_| anyhow::anyhow!("worker stopped")),
            Link::Process(p) => {
                let mut line = serde_json::to_vec(&command)?;
                line.push(b'\n');
                p.stdin.write_all(&line).await?;
                p.stdin.flush().await?;
                Ok(())
            }
        }
    }

    async fn recv(&mut self) -> anyhow::Result<Event> {
        match self {
            Link::Local { events, .. } => events
                .recv()
                .await
                .ok_or_else(|| anyhow::anyhow!("worker stopped")),
            Link::Process(p) => {
                let line = p
                    .events
                    .next_line()
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("worker process exited"))?;
                serde_json::from_str(&line).with_context(|| format!("worker said {line:?}"))
            }
        }
    }

    async fn stop(self) {
        match self {
            Link::Local { commands, task, .. } => {
                drop(commands);
                let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
            }
            Link::Process(p) => {
                let ProcessLink {
                    mut child, stdin, ..
                } = *p;
                drop(stdin);
                if tokio::time::timeout(Duration::from_secs(15), child.wait())
                    .await
                    .is_err()
                {
                    let _ = child.kill().await;
                }
            }
        }
    }
}

/// A set of started workers.
pub struct Fleet {
    links: Vec<Link>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("workers", &self.links.len())
            .finish()
    }
}

impl Fleet {
    /// Starts one worker per share and waits until every one has connected.
    pub async fn start(
        plan: &Arc<Plan>,
        shares: &[Share],
        spawn: &Spawn,
    ) -> anyhow::Result<(Self, Vec<ConnectReport>)> {
        let mut links = Vec::with_capacity(shares.len());
        for &share in shares {
            links.push(match spawn {
                Spawn::InProcess => {
                    let (command_tx, command_rx) = mpsc::channel(16);
                    let (event_tx, event_rx) = mpsc::channel(16);
                    let task = tokio::spawn(worker::run(plan.clone(), share, command_rx, event_tx));
                    Link::Local {
                        commands: command_tx,
                        events: event_rx,
                        task,
                    }
                }
                Spawn::Processes { exe } => {
                    let mut child = tokio::process::Command::new(exe)
                        .arg("worker")
                        .stdin(Stdio::piped())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::inherit())
                        .kill_on_drop(true)
                        .spawn()
                        .with_context(|| format!("starting {}", exe.display()))?;
                    let mut stdin = child.stdin.take().context("worker stdin")?;
                    let stdout = child.stdout.take().context("worker stdout")?;
                    let init = WorkerInit {
                        plan: (**plan).clone(),
                        share,
                    };
                    let mut line = serde_json::to_vec(&init)?;
                    line.push(b'\n');
                    stdin.write_all(&line).await?;
                    stdin.flush().await?;
                    Link::Process(Box::new(ProcessLink {
                        child,
                        stdin,
                        events: BufReader::new(stdout).lines(),
                    }))
                }
            });
        }
        let mut fleet = Self { links };
        let mut reports = Vec::with_capacity(shares.len());
        for link in &mut fleet.links {
            match link.recv().await? {
                Event::Ready(report) => reports.push(report),
                Event::Failed(e) => anyhow::bail!("a worker failed to start: {e}"),
                Event::Round(_) => anyhow::bail!("a worker reported a round before starting"),
            }
        }
        Ok((fleet, reports))
    }

    /// Runs one round on every worker, `rate` being the total over all of them, split
    /// by each worker's share of the sender slots (`weights`).
    pub async fn round(
        &mut self,
        round: u32,
        rate: f64,
        duration: Duration,
        weights: &[f64],
    ) -> anyhow::Result<Vec<RoundReport>> {
        // Everyone starts at the same instant, a little ahead so the commands arrive.
        let start_at_us = crate::now_micros() + 200_000;
        let total: f64 = weights.iter().sum();
        for (link, weight) in self.links.iter_mut().zip(weights) {
            let share = if total > 0.0 { weight / total } else { 0.0 };
            link.send(Command::Round {
                round,
                rate: rate * share,
                duration_ms: duration.as_millis() as u64,
                start_at_us,
            })
            .await?;
        }
        let mut reports = Vec::with_capacity(self.links.len());
        for link in &mut self.links {
            match link.recv().await? {
                Event::Round(report) => reports.push(*report),
                Event::Failed(e) => anyhow::bail!("a worker failed: {e}"),
                Event::Ready(_) => anyhow::bail!("unexpected ready from a worker"),
            }
        }
        Ok(reports)
    }

    /// Closes every connection and stops the workers.
    pub async fn stop(self) {
        for link in self.links {
            link.stop().await;
        }
    }
}
