//! A Redis Sentinel deployment of real processes: a master, one replica and one Sentinel that
//! fails over after 1 s without an answer (quorum 1), for failover tests.
//!
//! Nodes connect with `redis-sentinel://127.0.0.1:SENTINEL_PORT/0?sentinelServiceName=mymaster`
//! and learn the master's address from the Sentinel.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::logs::TestLogs;
use crate::redis::{RedisServer, Resp, command};

/// The service name the Sentinel monitors.
pub const SERVICE: &str = "mymaster";
/// Sentinel's `down-after-milliseconds`: how long the master may be silent before it is
/// considered down.
pub const DOWN_AFTER: Duration = Duration::from_millis(1_000);

/// Master, replica and Sentinel. Dropping it kills all three.
#[derive(Debug)]
pub struct RedisSentinel {
    // Dropped first, so it does not fail over while the servers go.
    sentinel: RedisServer,
    master: RedisServer,
    replica: RedisServer,
}

impl RedisSentinel {
    /// Starts the master, a replica of it, and the Sentinel, and waits until the replica is
    /// in sync and the Sentinel knows it (a Sentinel can only promote a replica it knows).
    ///
    /// # Errors
    /// If a process does not start or the setup is not complete within 20 s.
    pub async fn start_in(logs: &TestLogs) -> Result<Self> {
        let master = RedisServer::start_with(logs, &[]).await?;
        let port = master.port().to_string();
        let replica = RedisServer::start_with(logs, &["--replicaof", "127.0.0.1", &port]).await?;
        let conf = format!(
            "sentinel monitor {SERVICE} 127.0.0.1 {port} 1\n\
             sentinel down-after-milliseconds {SERVICE} {}\n\
             sentinel failover-timeout {SERVICE} 5000\n\
             sentinel parallel-syncs {SERVICE} 1\n",
            DOWN_AFTER.as_millis()
        );
        let sentinel = RedisServer::start_sentinel(logs, &conf).await?;
        let me = Self {
            sentinel,
            master,
            replica,
        };
        me.wait_ready(Duration::from_secs(20)).await?;
        Ok(me)
    }

    async fn wait_ready(&self, limit: Duration) -> Result<()> {
        let started = Instant::now();
        loop {
            let synced = command(self.replica.port(), &["INFO", "replication"])
                .await
                .ok()
                .and_then(|r| r.as_text())
                .is_some_and(|t| t.lines().any(|l| l.trim() == "master_link_status:up"));
            let known = self.sentinel_knows_replica().await.unwrap_or(false);
            if synced && known {
                return Ok(());
            }
            if started.elapsed() > limit {
                bail!(
                    "sentinel setup incomplete after {limit:?}: replica synced {synced}, known to the sentinel {known}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn sentinel_knows_replica(&self) -> Result<bool> {
        let r = command(self.sentinel.port(), &["SENTINEL", "REPLICAS", SERVICE]).await?;
        let Resp::Array(Some(replicas)) = r else {
            bail!("SENTINEL REPLICAS answered {r:?}");
        };
        let want = self.replica.port().to_string();
        Ok(replicas.iter().any(|entry| {
            let Resp::Array(Some(fields)) = entry else {
                return false;
            };
            let text: Vec<String> = fields.iter().filter_map(Resp::as_text).collect();
            let field = |k: &str| {
                text.chunks(2)
                    .find(|kv| kv[0] == k)
                    .and_then(|kv| kv.get(1).cloned())
            };
            field("port").as_deref() == Some(want.as_str())
                && field("flags").is_some_and(|f| !f.contains("disconnected"))
        }))
    }

    /// The URL nodes connect with.
    pub fn url(&self) -> String {
        format!(
            "redis-sentinel://127.0.0.1:{}/0?sentinelServiceName={SERVICE}",
            self.sentinel.port()
        )
    }

    /// The master's port according to the Sentinel.
    ///
    /// # Errors
    /// If the Sentinel does not answer with an address.
    pub async fn master_port(&self) -> Result<u16> {
        let r = command(
            self.sentinel.port(),
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE],
        )
        .await?;
        let Resp::Array(Some(addr)) = &r else {
            bail!("SENTINEL GET-MASTER-ADDR-BY-NAME answered {r:?}");
        };
        addr.get(1)
            .and_then(Resp::as_text)
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("no port in {r:?}"))
    }

    /// Polls until the Sentinel names the replica as master and the replica says it is one;
    /// returns when that was first seen.
    ///
    /// # Errors
    /// If that does not happen within `limit`.
    pub async fn wait_promoted(&self, limit: Duration) -> Result<Instant> {
        let started = Instant::now();
        loop {
            let named = self.master_port().await.ok() == Some(self.replica.port());
            let role = command(self.replica.port(), &["ROLE"]).await.ok();
            let is_master = matches!(&role, Some(Resp::Array(Some(items)))
                if items.first().and_then(Resp::as_text).as_deref() == Some("master"));
            if named && is_master {
                return Ok(Instant::now());
            }
            if started.elapsed() > limit {
                bail!(
                    "the sentinel did not promote the replica within {limit:?} (named {named}, role {role:?}); sentinel log: {}",
                    self.sentinel.log_path().display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The master (the one started as master, whatever the Sentinel did since).
    pub fn master_mut(&mut self) -> &mut RedisServer {
        &mut self.master
    }

    /// The replica (the one started as replica).
    pub fn replica(&self) -> &RedisServer {
        &self.replica
    }

    /// The Sentinel process.
    pub fn sentinel(&self) -> &RedisServer {
        &self.sentinel
    }
}
