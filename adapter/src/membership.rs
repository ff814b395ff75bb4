//! Node discovery by heartbeats: which other nodes serve a namespace and are alive.
//!
//! A node is alive while it has been heard from (any message, heartbeat or not) within the
//! heartbeat timeout, and until it says it leaves. Subscriber counts are never used, so a stray
//! `SUBSCRIBE` on our channels changes nothing. Requests wait only for live nodes, and stop
//! waiting for a node as soon as it is pruned (the `changed` watch wakes them).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use tokio::sync::watch;

/// Most other nodes one namespace keeps track of. Clusters are tens of nodes; the bound is what
/// a stream of forged node ids can cost (the table, and requests waiting for phantom nodes
/// until they expire), not a size anyone should reach.
pub const MAX_NODES: usize = 1024;

#[derive(Debug, Clone)]
struct Member {
    uid: Option<String>,
    sockets: u32,
    last_seen: Instant,
}

/// What the API shows of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node id.
    pub id: String,
    /// Sockets connected to the namespace on that node, as of its last heartbeat.
    pub sockets: u32,
    /// Age of the node's last heartbeat (zero for this node).
    pub last_seen: Duration,
}

/// The live other nodes of one namespace.
#[derive(Debug)]
pub(crate) struct Membership {
    nodes: Mutex<HashMap<String, Member>>,
    timeout: Duration,
    changed: watch::Sender<u64>,
}

impl Membership {
    pub(crate) fn new(timeout: Duration) -> Self {
        Self {
            nodes: Mutex::new(HashMap::new()),
            timeout,
            changed: watch::channel(0).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Member>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a message from `node` may be taken: it is known, or there is room for it.
    pub(crate) fn admits(&self, node: &str) -> bool {
        let nodes = self.lock();
        nodes.len() < MAX_NODES || nodes.contains_key(node)
    }

    /// Records that `node` was heard from. Returns true if it was not known.
    pub(crate) fn seen(&self, node: &str, uid: Option<&str>, sockets: Option<u32>) -> bool {
        let mut nodes = self.lock();
        let now = Instant::now();
        match nodes.get_mut(node) {
            Some(m) => {
                m.last_seen = now;
                if let Some(uid) = uid {
                    m.uid = Some(uid.to_owned());
                }
                if let Some(s) = sockets {
                    m.sockets = s;
                }
                false
            }
            None => {
                nodes.insert(
                    node.to_owned(),
                    Member {
                        uid: uid.map(str::to_owned),
                        sockets: sockets.unwrap_or(0),
                        last_seen: now,
                    },
                );
                drop(nodes);
                self.changed.send_modify(|g| *g += 1);
                true
            }
        }
    }

    /// Forgets `node` (it said it leaves). Returns true if it was known.
    pub(crate) fn remove(&self, node: &str) -> bool {
        let removed = self.lock().remove(node).is_some();
        if removed {
            self.changed.send_modify(|g| *g += 1);
        }
        removed
    }

    /// Drops the nodes not heard from within the timeout; returns their ids.
    pub(crate) fn sweep(&self) -> Vec<String> {
        let mut nodes = self.lock();
        let dead: Vec<String> = nodes
            .iter()
            .filter(|(_, m)| m.last_seen.elapsed() > self.timeout)
            .map(|(k, _)| k.clone())
            .collect();
        for d in &dead {
            nodes.remove(d);
        }
        drop(nodes);
        if !dead.is_empty() {
            self.changed.send_modify(|g| *g += 1);
        }
        dead
    }

    /// The ids of the live nodes.
    pub(crate) fn live(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, m)| m.last_seen.elapsed() <= self.timeout)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Whether `node` is alive.
    pub(crate) fn is_alive(&self, node: &str) -> bool {
        self.lock()
            .get(node)
            .is_some_and(|m| m.last_seen.elapsed() <= self.timeout)
    }

    /// The node whose socketioxide server id is `uid`.
    pub(crate) fn node_of_uid(&self, uid: &str) -> Option<String> {
        self.lock()
            .iter()
            .find(|(_, m)| m.uid.as_deref() == Some(uid))
            .map(|(k, _)| k.clone())
    }

    /// The socketioxide server id of `node`, once its heartbeat told it.
    pub(crate) fn uid_of(&self, node: &str) -> Option<String> {
        self.lock().get(node).and_then(|m| m.uid.clone())
    }

    /// The live nodes, for the API.
    pub(crate) fn snapshot(&self) -> Vec<NodeInfo> {
        self.lock()
            .iter()
            .filter(|(_, m)| m.last_seen.elapsed() <= self.timeout)
            .map(|(k, m)| NodeInfo {
                id: k.clone(),
                sockets: m.sockets,
                last_seen: m.last_seen.elapsed(),
            })
            .collect()
    }

    /// A receiver woken whenever a node appears or disappears.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_expire_and_leave() {
        let m = Membership::new(Duration::from_millis(50));
        let mut rx = m.subscribe();
        assert!(m.seen("a", Some("uid-a"), Some(3)));
        assert!(!m.seen("a", None, None));
        assert!(m.seen("b", None, None));
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        assert_eq!(m.node_of_uid("uid-a").as_deref(), Some("a"));
        assert!(m.remove("b"));
        assert!(rx.has_changed().unwrap());
        std::thread::sleep(Duration::from_millis(60));
        assert!(m.live().is_empty());
        assert_eq!(m.sweep(), vec!["a".to_owned()]);
        assert!(!m.is_alive("a"));
    }

    #[test]
    fn a_full_table_admits_known_nodes_only() {
        let m = Membership::new(Duration::from_secs(5));
        for i in 0..MAX_NODES {
            assert!(m.admits(&format!("n{i}")));
            m.seen(&format!("n{i}"), None, None);
        }
        assert!(m.admits("n0"));
        assert!(!m.admits("phantom"));
    }
}
