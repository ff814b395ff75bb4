//! A whole test cluster: one Redis (standalone or cluster, or none) plus N nodes.

use std::time::Duration;

use anyhow::{Result, bail};

use crate::http::Api;
use crate::logs::TestLogs;
use crate::node::{NodeOpts, NodeProc};
use crate::redis::{RedisCluster, RedisServer};
use crate::sentinel::RedisSentinel;

/// API key every cluster node gets unless told otherwise, so the bearer-token
/// path is exercised by every test.
pub const DEFAULT_API_KEY: &str = "test-api-key";

/// How long [`Cluster::wait_nodes_visible`] waits.
pub const NODES_VISIBLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which Redis the nodes share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisKind {
    /// No Redis: every node runs alone, in memory.
    None,
    /// One standalone `redis-server`.
    Standalone,
    /// A Redis Cluster of 3 masters.
    Cluster,
    /// A Redis Cluster of 3 masters with one replica each (failover tests).
    ClusterWithReplicas,
    /// A master, a replica and a Sentinel (failover tests).
    Sentinel,
}

/// The running Redis of a [`Cluster`].
#[derive(Debug)]
pub enum RedisBackend {
    None,
    Standalone(RedisServer),
    Cluster(RedisCluster),
    /// Boxed: three servers, much larger than the other variants.
    Sentinel(Box<RedisSentinel>),
}

impl RedisBackend {
    /// The URL nodes connect to.
    pub fn url(&self) -> Option<String> {
        match self {
            RedisBackend::None => None,
            RedisBackend::Standalone(s) => Some(s.url()),
            RedisBackend::Cluster(c) => Some(c.url()),
            RedisBackend::Sentinel(s) => Some(s.url()),
        }
    }

    /// The standalone server.
    ///
    /// # Panics
    /// If this is not a standalone Redis.
    pub fn standalone(&mut self) -> &mut RedisServer {
        match self {
            RedisBackend::Standalone(s) => s,
            other => panic!("not a standalone redis: {other:?}"),
        }
    }

    /// The Redis Cluster.
    ///
    /// # Panics
    /// If this is not a Redis Cluster.
    pub fn cluster(&mut self) -> &mut RedisCluster {
        match self {
            RedisBackend::Cluster(c) => c,
            other => panic!("not a redis cluster: {other:?}"),
        }
    }

    /// The Sentinel deployment.
    ///
    /// # Panics
    /// If this is not a Sentinel deployment.
    pub fn sentinel(&mut self) -> &mut RedisSentinel {
        match self {
            RedisBackend::Sentinel(s) => s,
            other => panic!("not a sentinel deployment: {other:?}"),
        }
    }
}

/// Builder for [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    nodes: usize,
    redis: RedisKind,
    api_key: Option<String>,
    heartbeat_ms: Option<u64>,
    extra_args: Vec<String>,
    env: Vec<(String, String)>,
    redis_args: Vec<String>,
    wait_visible: bool,
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        Self {
            nodes: 3,
            redis: RedisKind::Standalone,
            api_key: Some(DEFAULT_API_KEY.to_owned()),
            heartbeat_ms: None,
            extra_args: Vec::new(),
            env: Vec::new(),
            redis_args: Vec::new(),
            wait_visible: true,
        }
    }
}

impl ClusterBuilder {
    /// Extra `redis-server` arguments for a standalone Redis (e.g. `--appendonly yes`).
    pub fn redis_args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.redis_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Number of nodes (3 by default).
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n;
        self
    }

    /// Which Redis (standalone by default).
    pub fn redis(mut self, kind: RedisKind) -> Self {
        self.redis = kind;
        self
    }

    /// API key (`None` runs the nodes without one).
    pub fn api_key(mut self, key: Option<&str>) -> Self {
        self.api_key = key.map(str::to_owned);
        self
    }

    /// `--heartbeat-interval-ms` for every node (the node default otherwise).
    pub fn heartbeat_ms(mut self, ms: u64) -> Self {
        self.heartbeat_ms = Some(ms);
        self
    }

    /// Extra arguments for every node.
    pub fn node_args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Extra environment variable for every node.
    pub fn node_env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_owned(), v.to_owned()));
        self
    }

    /// Do not wait for the nodes to see each other.
    pub fn no_wait(mut self) -> Self {
        self.wait_visible = false;
        self
    }

    /// Starts Redis, then the nodes, then (unless `no_wait`) waits until every
    /// node lists all of them.
    ///
    /// # Errors
    /// If anything fails to start or the nodes do not see each other in 10 s.
    pub async fn start(self) -> Result<Cluster> {
        let logs = TestLogs::for_current_test()?;
        let redis = match self.redis {
            RedisKind::None => RedisBackend::None,
            RedisKind::Standalone => {
                let args: Vec<&str> = self.redis_args.iter().map(String::as_str).collect();
                RedisBackend::Standalone(RedisServer::start_with(&logs, &args).await?)
            }
            RedisKind::Cluster => RedisBackend::Cluster(RedisCluster::start_in(&logs, 3).await?),
            RedisKind::ClusterWithReplicas => {
                RedisBackend::Cluster(RedisCluster::start_with_replicas_in(&logs, 3, 1).await?)
            }
            RedisKind::Sentinel => {
                RedisBackend::Sentinel(Box::new(RedisSentinel::start_in(&logs).await?))
            }
        };
        let mut cluster = Cluster {
            logs,
            redis,
            nodes: Vec::new(),
            template: self.clone(),
        };
        // Started concurrently: a node's startup is mostly waiting on Redis
        // round trips, so this cuts a test's setup time by about two thirds.
        let mut starting = tokio::task::JoinSet::new();
        for i in 0..self.nodes {
            let (logs, opts) = (cluster.logs.clone(), cluster.node_opts(i));
            starting.spawn(async move { (i, NodeProc::start_in(&logs, opts).await) });
        }
        let mut started = Vec::new();
        while let Some(joined) = starting.join_next().await {
            let (i, node) = joined?;
            started.push((i, node?));
        }
        started.sort_by_key(|(i, _)| *i);
        cluster.nodes = started.into_iter().map(|(_, n)| n).collect();
        if self.wait_visible && self.redis != RedisKind::None {
            cluster.wait_nodes_visible(self.nodes).await?;
        }
        Ok(cluster)
    }
}

/// Redis plus N `ioscale-node` processes. Dropping it kills everything.
#[derive(Debug)]
pub struct Cluster {
    // Field order matters for Drop: nodes go first, then Redis, so nodes do
    // not log a Redis outage while the test is being torn down.
    nodes: Vec<NodeProc>,
    redis: RedisBackend,
    template: ClusterBuilder,
    logs: TestLogs,
}

/// Node names: `node-a`, `node-b`, …
pub fn node_name(i: usize) -> String {
    let letter = u8::try_from(i % 26).expect("i % 26 fits in u8");
    let mut name = format!("node-{}", char::from(b'a' + letter));
    if i >= 26 {
        name.push_str(&(i / 26).to_string());
    }
    name
}

impl Cluster {
    /// Configure a cluster (3 nodes, standalone Redis, API key by default).
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// `n` nodes on one standalone Redis, all seeing each other.
    ///
    /// # Errors
    /// As for [`ClusterBuilder::start`].
    pub async fn start(n: usize) -> Result<Self> {
        Self::builder().nodes(n).start().await
    }

    /// Options the cluster would start node `i` with.
    pub fn node_opts(&self, i: usize) -> NodeOpts {
        let t = &self.template;
        let mut opts = NodeOpts::new(node_name(i)).with_args(t.extra_args.clone());
        if let Some(url) = self.redis.url() {
            opts = opts.with_redis(url);
        }
        if let Some(key) = &t.api_key {
            opts = opts.with_api_key(key.clone());
        }
        if let Some(ms) = t.heartbeat_ms {
            opts = opts.with_heartbeat_ms(ms);
        }
        for (k, v) in &t.env {
            opts = opts.with_env(k.clone(), v.clone());
        }
        opts
    }

    /// Starts one more node with the cluster's options; returns its index.
    ///
    /// # Errors
    /// If it does not start.
    pub async fn add_node(&mut self) -> Result<usize> {
        let i = self.nodes.len();
        let opts = self.node_opts(i);
        self.add_node_with(opts).await
    }

    /// Starts one more node with custom options; returns its index.
    ///
    /// # Errors
    /// If it does not start.
    pub async fn add_node_with(&mut self, opts: NodeOpts) -> Result<usize> {
        let node = NodeProc::start_in(&self.logs, opts).await?;
        self.nodes.push(node);
        Ok(self.nodes.len() - 1)
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &NodeProc {
        &self.nodes[i]
    }

    /// Node `i`, mutably (to kill or restart it).
    pub fn node_mut(&mut self, i: usize) -> &mut NodeProc {
        &mut self.nodes[i]
    }

    /// All nodes.
    pub fn nodes(&self) -> &[NodeProc] {
        &self.nodes
    }

    /// Node ids, in index order.
    pub fn node_ids(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.node_id().to_owned()).collect()
    }

    /// HTTP API of node `i`.
    pub fn api(&self, i: usize) -> Api {
        self.nodes[i].api()
    }

    /// The Redis the nodes share.
    pub fn redis(&self) -> &RedisBackend {
        &self.redis
    }

    /// The Redis the nodes share, mutably (to kill or restart it).
    pub fn redis_mut(&mut self) -> &mut RedisBackend {
        &mut self.redis
    }

    /// The test's log directory.
    pub fn logs(&self) -> &TestLogs {
        &self.logs
    }

    /// Waits until every node lists exactly `n` nodes in `GET /api/v1/nodes`.
    ///
    /// # Errors
    /// If that does not happen within 10 s.
    pub async fn wait_nodes_visible(&self, n: usize) -> Result<()> {
        let all: Vec<usize> = (0..self.nodes.len()).collect();
        self.wait_nodes_visible_from(&all, n).await
    }

    /// Waits until each node in `from` lists exactly `n` nodes.
    ///
    /// # Errors
    /// If that does not happen within 10 s.
    pub async fn wait_nodes_visible_from(&self, from: &[usize], n: usize) -> Result<()> {
        let deadline = tokio::time::Instant::now() + NODES_VISIBLE_TIMEOUT;
        loop {
            let mut seen = Vec::new();
            for &i in from {
                let ids = match self.nodes[i].api().nodes().await {
                    Ok(nodes) => nodes.into_iter().map(|n| n.id).collect::<Vec<_>>(),
                    Err(e) => vec![format!("error: {e:#}")],
                };
                seen.push((self.nodes[i].node_id().to_owned(), ids));
            }
            if seen.iter().all(|(_, ids)| ids.len() == n) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "nodes did not all see {n} nodes within {NODES_VISIBLE_TIMEOUT:?} (logs: {}): {seen:?}",
                    self.logs.dir().display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::node_name;

    #[test]
    fn node_names() {
        assert_eq!(node_name(0), "node-a");
        assert_eq!(node_name(2), "node-c");
        assert_eq!(node_name(27), "node-b1");
    }
}
