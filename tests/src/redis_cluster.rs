//! A Redis Cluster of real `redis-server` processes: N masters with R replicas each, its
//! topology as `CLUSTER NODES` shows it, and slot arithmetic to place a channel on a master.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};

use crate::logs::TestLogs;
use crate::redis::{RedisServer, command};

/// A Redis Cluster of N masters, each with R replicas (none by default).
#[derive(Debug)]
pub struct RedisCluster {
    /// Every server, masters first (as `redis-cli --cluster create` assigns them); a
    /// failover makes a replica a master without reordering.
    nodes: Vec<RedisServer>,
}

/// One line of `CLUSTER NODES`: who a server is and which slots it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    /// The node's cluster id.
    pub id: String,
    /// Its client port.
    pub port: u16,
    /// Whether it is a master (`false`: a replica).
    pub master: bool,
    /// Whether the cluster flags it as failed (`fail` or `fail?`).
    pub failed: bool,
    /// For a replica, the id of its master.
    pub master_id: Option<String>,
    /// Slot ranges served (masters only), inclusive.
    pub slots: Vec<(u16, u16)>,
}

/// `CLUSTER NODES` as seen by the server on `port`.
///
/// # Errors
/// If the server does not answer or the answer is not text.
pub async fn cluster_nodes(port: u16) -> Result<Vec<ClusterNode>> {
    let r = command(port, &["CLUSTER", "NODES"]).await?;
    let text = r
        .as_text()
        .with_context(|| format!("CLUSTER NODES answered {r:?}"))?;
    Ok(text.lines().filter_map(parse_cluster_node).collect())
}

fn parse_cluster_node(line: &str) -> Option<ClusterNode> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 8 {
        return None;
    }
    let addr = f[1].split('@').next()?;
    let port = addr.rsplit(':').next()?.parse().ok()?;
    let flags: Vec<&str> = f[2].split(',').collect();
    let slots = f[8..]
        .iter()
        .filter(|s| !s.starts_with('['))
        .filter_map(|s| match s.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => s.parse().ok().map(|n| (n, n)),
        })
        .collect();
    Some(ClusterNode {
        id: f[0].to_owned(),
        port,
        master: flags.contains(&"master"),
        failed: flags.iter().any(|fl| fl.starts_with("fail")),
        master_id: (f[3] != "-").then(|| f[3].to_owned()),
        slots,
    })
}

impl RedisCluster {
    /// Starts `masters` servers in cluster mode, joins them with
    /// `redis-cli --cluster create` and waits for `cluster_state:ok` on all.
    ///
    /// # Errors
    /// If a server does not start or the cluster does not become ok within 30 s.
    pub async fn start(masters: usize) -> Result<Self> {
        Self::start_in(&TestLogs::for_current_test()?, masters).await
    }

    /// Like [`RedisCluster::start`], logging into `logs`.
    ///
    /// # Errors
    /// If a server does not start or the cluster does not become ok within 30 s.
    pub async fn start_in(logs: &TestLogs, masters: usize) -> Result<Self> {
        Self::start_with_replicas_in(logs, masters, 0).await
    }

    /// `masters` masters with `replicas` replicas each, for failover tests: a replica takes
    /// over when its master has been unreachable for the 2 s node timeout (and always may:
    /// `cluster-replica-validity-factor 0`).
    ///
    /// # Errors
    /// If a server does not start or the cluster does not become ok within 30 s.
    pub async fn start_with_replicas_in(
        logs: &TestLogs,
        masters: usize,
        replicas: usize,
    ) -> Result<Self> {
        ensure!(
            masters >= 3,
            "redis-cli --cluster create needs at least 3 masters"
        );
        let mut nodes = Vec::with_capacity(masters * (1 + replicas));
        for i in 0..masters * (1 + replicas) {
            let conf = format!("nodes-{i}.conf");
            // The config file path is relative to --dir, which is per server.
            let server = RedisServer::start_with(
                logs,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &conf,
                    "--cluster-node-timeout",
                    "2000",
                    "--cluster-replica-validity-factor",
                    "0",
                ],
            )
            .await?;
            nodes.push(server);
        }
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(nodes.iter().map(RedisServer::addr));
        args.extend(["--cluster-replicas".into(), replicas.to_string()]);
        args.push("--cluster-yes".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // Slot assignment plus the config epoch handshake takes a few seconds.
        let mut cmd = tokio::process::Command::new("redis-cli");
        cmd.args(&args).stdin(Stdio::null()).kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .context("redis-cli --cluster create timed out")??;
        ensure!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self { nodes };
        cluster.wait_ok(Duration::from_secs(30)).await?;
        if replicas > 0 {
            cluster
                .wait_replicas(masters * replicas, Duration::from_secs(30))
                .await?;
        }
        Ok(cluster)
    }

    /// Waits until every running server sees `want` replicas in sync with a master: a
    /// replica that has not finished its first sync cannot take over.
    async fn wait_replicas(&self, want: usize, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut synced = 0;
            for n in &self.nodes {
                let info = command(n.port(), &["INFO", "replication"])
                    .await
                    .ok()
                    .and_then(|r| r.as_text())
                    .unwrap_or_default();
                if info.lines().any(|l| l.trim() == "master_link_status:up") {
                    synced += 1;
                }
            }
            if synced >= want {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("only {synced} of {want} replicas in sync after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `CLUSTER INFO` reports `cluster_state:ok` on every running server (a
    /// killed one is skipped).
    ///
    /// # Errors
    /// If that does not happen within `timeout`.
    pub async fn wait_ok(&self, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut all_ok = true;
            let mut states = Vec::new();
            for n in self.nodes.iter().filter(|n| n.pid().is_some()) {
                let info = command(n.port(), &["CLUSTER", "INFO"])
                    .await
                    .ok()
                    .and_then(|r| r.as_text())
                    .unwrap_or_default();
                let ok = info.lines().any(|l| l.trim() == "cluster_state:ok");
                all_ok &= ok;
                states.push((n.port(), ok));
            }
            if all_ok {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("redis cluster not ok after {timeout:?}: {states:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// fred's cluster URL: `redis-cluster://127.0.0.1:p1?node=127.0.0.1:p2&node=127.0.0.1:p3`.
    pub fn url(&self) -> String {
        let mut url = format!("redis-cluster://{}", self.nodes[0].addr());
        for (i, n) in self.nodes[1..].iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str("node=");
            url.push_str(&n.addr());
        }
        url
    }

    /// Every server (masters first, as started; without replicas, all are masters).
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Every server, mutably (to kill or restart one).
    pub fn nodes_mut(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// Every server's port.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    /// The server with client port `port`, mutably.
    pub fn by_port_mut(&mut self, port: u16) -> Option<&mut RedisServer> {
        self.nodes.iter_mut().find(|n| n.port() == port)
    }

    /// `CLUSTER NODES` as the first running server other than `except` sees it.
    ///
    /// # Errors
    /// If no running server answers.
    pub async fn topology(&self, except: Option<u16>) -> Result<Vec<ClusterNode>> {
        let mut last = None;
        for n in &self.nodes {
            if n.pid().is_none() || Some(n.port()) == except {
                continue;
            }
            match cluster_nodes(n.port()).await {
                Ok(t) => return Ok(t),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no running server")))
    }
}

impl RedisCluster {
    /// After the master on `old_port` was killed: polls until a running server other than it
    /// serves `slot` as a master that is not failed and every running server reports
    /// `cluster_state:ok`; returns when that was first seen and the new master's port.
    ///
    /// # Errors
    /// If that does not happen within `limit`.
    pub async fn wait_failover(
        &self,
        slot: u16,
        old_port: u16,
        limit: Duration,
    ) -> Result<(std::time::Instant, u16)> {
        let started = std::time::Instant::now();
        loop {
            let topology = self.topology(Some(old_port)).await.unwrap_or_default();
            let new = slot_master(&topology, slot)
                .filter(|m| m.port != old_port && !m.failed)
                .map(|m| m.port);
            if let Some(port) = new
                && self.wait_ok(Duration::ZERO).await.is_ok()
            {
                return Ok((std::time::Instant::now(), port));
            }
            if started.elapsed() > limit {
                bail!(
                    "no replica took over slot {slot} from {old_port} within {limit:?}: {topology:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The master serving `slot` in `topology`, if any (a failed one counts until replaced).
pub fn slot_master(topology: &[ClusterNode], slot: u16) -> Option<&ClusterNode> {
    topology
        .iter()
        .find(|n| n.master && n.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
}

/// The slot of `key` (CRC16/XMODEM of the key, or of its `{hash tag}`, mod 16384), as
/// Redis Cluster computes it.
pub fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let hashed = match key.find('{') {
        Some(open) => match key[open + 1..].find('}') {
            Some(len) if len > 0 => &bytes[open + 1..open + 1 + len],
            _ => bytes,
        },
        None => bytes,
    };
    let mut crc: u16 = 0;
    for &b in hashed {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16_384
}

#[cfg(test)]
mod tests {
    use super::{key_slot, parse_cluster_node};

    #[test]
    fn slots_match_redis() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(key_slot("foo"), 12_182);
        assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
        // The CRC16/XMODEM check value of "123456789".
        assert_eq!(key_slot("123456789"), 0x31C3);
    }

    #[test]
    fn parses_cluster_nodes_lines() {
        let m = parse_cluster_node(
            "07c3 127.0.0.1:30004@40004 myself,master - 0 0 1 connected 0-5460 5462",
        )
        .expect("a master line");
        assert!(m.master && !m.failed && m.master_id.is_none());
        assert_eq!(
            (m.port, m.slots.clone()),
            (30_004, vec![(0, 5460), (5462, 5462)])
        );
        let r = parse_cluster_node("e7d1 127.0.0.1:30005@40005 slave,fail 07c3 0 0 1 connected")
            .expect("a replica line");
        assert!(!r.master && r.failed && r.master_id.as_deref() == Some("07c3"));
    }
}
