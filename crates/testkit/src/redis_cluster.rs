//! A private Redis Cluster per test: a few masters (no replicas) on free loopback ports,
//! joined with `redis-cli --cluster create`, killed on drop.
//!
//! Needs `redis-server` ≥ 7 (sharded pub/sub, `--cluster-port`) and `redis-cli` on the
//! PATH, or `CHAT_TEST_REDIS_SERVER` / `CHAT_TEST_REDIS_CLI`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::{ChildGuard, eventually, free_port};
use crate::redis::wait_until_ours;

/// Hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// One master of the cluster.
#[derive(Debug)]
struct Node {
    /// Kept for its Drop: the server lives as long as this value.
    child: ChildGuard,
    addr: SocketAddr,
    /// The cluster bus port (chosen explicitly: the default, port + 10000, may be taken).
    bus_port: u16,
}

/// A Redis Cluster of masters on loopback, every slot assigned, killed on drop.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<Node>,
    /// Node config files; removed after the servers are killed (fields drop in
    /// declaration order).
    dir: tempfile::TempDir,
}

fn redis_server_bin() -> String {
    std::env::var("CHAT_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

fn redis_cli_bin() -> String {
    std::env::var("CHAT_TEST_REDIS_CLI").unwrap_or_else(|_| "redis-cli".into())
}

/// Runs `redis-cli` with `args`; returns its standard output, or fails with both outputs.
pub async fn redis_cli(args: Vec<String>) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        let output = Command::new(redis_cli_bin())
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| anyhow::anyhow!("cannot run redis-cli {args:?}: {e}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        anyhow::ensure!(
            output.status.success(),
            "redis-cli {args:?} failed ({}): {stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(stdout)
    })
    .await?
}

impl RedisCluster {
    /// Starts `masters` servers (at least 3, as `redis-cli --cluster create` requires),
    /// joins them into one cluster with the slots split evenly, and waits until every
    /// node reports `cluster_state:ok`.
    pub async fn start(masters: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(masters >= 3, "a Redis Cluster needs at least 3 masters");
        let dir = tempfile::Builder::new()
            .prefix("redis-cluster-")
            .tempdir()?;
        let mut nodes = Vec::with_capacity(masters);
        for _ in 0..masters {
            nodes.push(start_node(dir.path()).await?);
        }
        let mut args = vec!["--cluster".to_owned(), "create".to_owned()];
        args.extend(nodes.iter().map(|n| n.addr.to_string()));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"].map(String::from));
        redis_cli(args).await?;
        let cluster = Self { nodes, dir };
        cluster.wait_ok().await?;
        Ok(cluster)
    }

    /// `redis-cluster://<first>?node=<second>&node=...`: every node, although one is
    /// enough for a client to discover the rest.
    pub fn url(&self) -> String {
        let mut url = format!("redis-cluster://{}", self.nodes[0].addr);
        for (i, node) in self.nodes.iter().enumerate().skip(1) {
            url.push(if i == 1 { '?' } else { '&' });
            url.push_str(&format!("node={}", node.addr));
        }
        url
    }

    /// `redis://<first node>`: the plain form, for settings that add cluster mode
    /// themselves (`CHAT_REDIS_CLUSTER=true`).
    pub fn plain_url(&self) -> String {
        format!("redis://{}", self.nodes[0].addr)
    }

    /// The nodes' client addresses.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.addr).collect()
    }

    /// Runs a command on one node through `redis-cli`; returns its output.
    pub async fn command(&self, node: SocketAddr, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec![
            "-h".to_owned(),
            node.ip().to_string(),
            "-p".to_owned(),
            node.port().to_string(),
        ];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        redis_cli(all).await
    }

    /// Moves hash slot `slot` to the master at `to`, as `redis-cli --cluster reshard` does
    /// for each slot: `SETSLOT IMPORTING` on the target, `SETSLOT MIGRATING` on the
    /// owner, `MIGRATE` of its keys, then `SETSLOT NODE` on the target, the owner and the
    /// other masters. Waits until every node names `to` as the slot's owner. On the old
    /// owner, Redis drops the slot's shard-channel subscriptions (clients get a
    /// `sunsubscribe` push).
    pub async fn move_slot(&self, slot: u16, to: SocketAddr) -> anyhow::Result<()> {
        let from = self.owner_of_slot(self.nodes[0].addr, slot).await?;
        anyhow::ensure!(from != to, "slot {slot} is already on {to}");
        let (from_id, to_id) = (self.node_id(from).await?, self.node_id(to).await?);
        let slot_arg = slot.to_string();
        self.set_slot(to, &slot_arg, "importing", &from_id).await?;
        self.set_slot(from, &slot_arg, "migrating", &to_id).await?;
        loop {
            let keys = self
                .command(from, &["cluster", "getkeysinslot", &slot_arg, "100"])
                .await?;
            let keys: Vec<&str> = keys.split_whitespace().collect();
            if keys.is_empty() {
                break;
            }
            let (host, port) = (to.ip().to_string(), to.port().to_string());
            let mut args = vec!["migrate", &host, &port, "", "0", "5000", "keys"];
            args.extend(keys);
            self.command(from, &args).await?;
        }
        // The target first, then the old owner (the order redis-cli uses), then the rest
        // so that no node redirects to the old owner.
        self.set_slot(to, &slot_arg, "node", &to_id).await?;
        self.set_slot(from, &slot_arg, "node", &to_id).await?;
        for node in self.addrs() {
            if node != to && node != from {
                self.set_slot(node, &slot_arg, "node", &to_id).await?;
            }
        }
        eventually(
            Duration::from_secs(30),
            "every node to agree on the moved slot",
            || async {
                for node in self.addrs() {
                    if self.owner_of_slot(node, slot).await.ok()? != to {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await
    }

    /// `CLUSTER SETSLOT <slot> <state> <id>` on `node`.
    async fn set_slot(
        &self,
        node: SocketAddr,
        slot: &str,
        state: &str,
        id: &str,
    ) -> anyhow::Result<()> {
        self.command(node, &["cluster", "setslot", slot, state, id])
            .await?;
        Ok(())
    }

    /// `CLUSTER MYID` of the node at `node`.
    async fn node_id(&self, node: SocketAddr) -> anyhow::Result<String> {
        Ok(self
            .command(node, &["cluster", "myid"])
            .await?
            .trim()
            .to_owned())
    }

    /// The master that serves `key`'s slot now (from `CLUSTER NODES`).
    pub async fn node_of(&self, key: &str) -> anyhow::Result<SocketAddr> {
        self.owner_of_slot(self.nodes[0].addr, key_slot(key.as_bytes()))
            .await
    }

    /// The master serving `slot` according to the `CLUSTER NODES` of `asked`.
    async fn owner_of_slot(&self, asked: SocketAddr, slot: u16) -> anyhow::Result<SocketAddr> {
        let nodes = self.command(asked, &["cluster", "nodes"]).await?;
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 || !fields[2].contains("master") {
                continue;
            }
            // `ip:port@bus[,hostname]`
            let addr = fields[1]
                .split('@')
                .next()
                .ok_or_else(|| anyhow::anyhow!("odd CLUSTER NODES line: {line}"))?;
            for range in &fields[8..] {
                if range.starts_with('[') {
                    continue; // a slot being migrated or imported
                }
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                if (lo.parse::<u16>()?..=hi.parse::<u16>()?).contains(&slot) {
                    return Ok(addr.parse()?);
                }
            }
        }
        anyhow::bail!("{asked} knows no master serving slot {slot}: {nodes}")
    }

    /// Kills node `index` (SIGKILL) and starts it again on the same ports with the same
    /// cluster config, as a crashed-and-restarted shard looks to clients; waits until
    /// the cluster is ok again. Pub/sub subscriptions on that node are gone.
    pub async fn restart_node(&mut self, index: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[index];
        node.child.kill();
        let (addr, bus_port) = (node.addr, node.bus_port);
        let mut last_err = None;
        // The port can linger for a moment after the kill.
        for _ in 0..50 {
            match spawn_node(self.dir.path(), addr, bus_port).await {
                Ok(child) => {
                    self.nodes[index].child = child;
                    last_err = None;
                    break;
                }
                Err(e) => last_err = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if let Some(e) = last_err {
            return Err(e.context("cluster node did not restart"));
        }
        self.wait_ok().await
    }

    /// Waits until every node reports `cluster_state:ok` and knows every other node.
    async fn wait_ok(&self) -> anyhow::Result<()> {
        let known = format!("cluster_known_nodes:{}", self.nodes.len());
        eventually(
            Duration::from_secs(30),
            "the Redis Cluster to be ok",
            || async {
                for node in &self.nodes {
                    let info = self.command(node.addr, &["cluster", "info"]).await.ok()?;
                    if !info.contains("cluster_state:ok") || !info.contains(&known) {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await
    }
}

async fn start_node(dir: &Path) -> anyhow::Result<Node> {
    let mut last_err = None;
    // Another process may grab a free port before redis binds it: retry a few times.
    for _ in 0..5 {
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let bus_port = free_port()?;
        if bus_port == addr.port() {
            continue;
        }
        match spawn_node(dir, addr, bus_port).await {
            Ok(child) => {
                return Ok(Node {
                    child,
                    addr,
                    bus_port,
                });
            }
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| anyhow::anyhow!("cluster node did not start")))
}

fn config_file(dir: &Path, port: u16) -> PathBuf {
    dir.join(format!("nodes-{port}.conf"))
}

async fn spawn_node(dir: &Path, addr: SocketAddr, bus_port: u16) -> anyhow::Result<ChildGuard> {
    let mut child = ChildGuard::spawn(
        "redis-server (cluster node)",
        Command::new(redis_server_bin())
            .args(["--port", &addr.port().to_string(), "--bind", "127.0.0.1"])
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus_port.to_string(),
            ])
            .arg("--cluster-config-file")
            .arg(config_file(dir, addr.port()))
            // Long enough that a quick restart of a node does not mark it failed.
            .args(["--cluster-node-timeout", "5000"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    wait_until_ours(addr, &mut child).await?;
    Ok(child)
}

/// The cluster hash slot of `key`: CRC16 (XMODEM) of the key, or of its hash tag (the
/// part between the first `{` and the next `}`, when not empty), modulo 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16_xmodem(hashed) % SLOTS
}

fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::key_slot;

    #[test]
    fn slots_match_redis() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"foo{bar}"), 5061);
        assert_eq!(key_slot(b"foo{}{bar}"), 8363);
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b"chat:room:lobby"), 8782);
    }
}
