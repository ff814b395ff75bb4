//! An in-process broker: several nodes (each a [`crate::Cluster`]) inside one process,
//! joined by a [`MemoryBus`] instead of Redis. It keeps the guarantees the adapter relies on
//! (per-publisher order, every subscriber of a channel gets every message, the sender too),
//! so multi-node behaviour can be tested in milliseconds; the real-process tests on Redis stay
//! the proof. Links between two nodes can be cut one way, to test a node that does not hear
//! another.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex, RwLock, Weak},
};

use bytes::Bytes;
use futures_util::{FutureExt as _, future::BoxFuture};
use tokio::sync::mpsc;

use super::{Broker, Entry, Hub, Recorded, sequence::ChannelSeqs};
use crate::{
    error::Result,
    history::{self, Offset, Seq},
};

/// Joins the nodes of one process. Clone it to hand it to each node's
/// [`crate::Cluster::in_memory`].
#[derive(Clone, Default)]
pub struct MemoryBus {
    inner: Arc<BusInner>,
}

impl std::fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBus").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct BusInner {
    nodes: RwLock<Vec<Weak<Endpoint>>>,
    /// `(from, to)` node ids whose messages are not carried.
    cut: Mutex<HashSet<(String, String)>>,
    streams: Mutex<HashMap<String, Stream>>,
}

/// A history stream, as Redis keeps one: ids from the clock, never going back.
#[derive(Default)]
struct Stream {
    last: Option<Offset>,
    entries: VecDeque<Entry>,
}

impl Stream {
    fn append(&mut self, max_len: usize, seq: Seq, payload: Bytes) -> Offset {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let id = match self.last {
            Some(last) if last >= Offset::new(now, 0) => last.next(),
            _ => Offset::new(now, 0),
        };
        self.last = Some(id);
        self.entries.push_back(Entry {
            offset: id,
            seq: Some(seq),
            payload,
        });
        while self.entries.len() > max_len.max(1) {
            self.entries.pop_front();
        }
        id
    }
}

/// One node on the bus.
struct Endpoint {
    node: String,
    hub: Weak<Hub>,
    channels: RwLock<HashSet<String>>,
    inbox: mpsc::UnboundedSender<(String, Bytes)>,
}

impl MemoryBus {
    /// A bus with no nodes yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stops carrying messages from node `from` to node `to` (one way).
    pub fn cut(&self, from: &str, to: &str) {
        self.lock_cut().insert((from.to_owned(), to.to_owned()));
    }

    /// Carries messages from `from` to `to` again.
    pub fn heal(&self, from: &str, to: &str) {
        self.lock_cut().remove(&(from.to_owned(), to.to_owned()));
    }

    /// The nodes subscribed to `channel` now, sorted: which nodes receive its messages.
    pub fn subscribers(&self, channel: &str) -> Vec<String> {
        let nodes = self.inner.nodes.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<String> = nodes
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|n| {
                let channels = n.channels.read().unwrap_or_else(|e| e.into_inner());
                channels.contains(channel)
            })
            .map(|n| n.node.clone())
            .collect();
        out.sort();
        out
    }

    /// Takes `node`'s subscription down, as a lost Redis connection would: nothing reaches
    /// it until [`MemoryBus::reconnect`].
    pub fn disconnect(&self, node: &str) {
        for from in self.node_ids() {
            self.cut(&from, node);
        }
        if let Some(hub) = self.endpoint(node).and_then(|e| e.hub.upgrade()) {
            hub.subscription_lost();
        }
    }

    /// Brings `node`'s subscription back and tells its namespaces, as a reconnection would.
    pub fn reconnect(&self, node: &str) {
        for from in self.node_ids() {
            self.heal(&from, node);
        }
        if let Some(hub) = self.endpoint(node).and_then(|e| e.hub.upgrade()) {
            hub.resubscribed();
            hub.reconnected();
        }
    }

    fn node_ids(&self) -> Vec<String> {
        let nodes = self.inner.nodes.read().unwrap_or_else(|e| e.into_inner());
        nodes
            .iter()
            .filter_map(Weak::upgrade)
            .map(|n| n.node.clone())
            .collect()
    }

    fn endpoint(&self, node: &str) -> Option<Arc<Endpoint>> {
        let nodes = self.inner.nodes.read().unwrap_or_else(|e| e.into_inner());
        nodes
            .iter()
            .filter_map(Weak::upgrade)
            .find(|n| n.node == node)
    }

    /// Hands `payload` to every node subscribed to `channel`, as a forged `PUBLISH` by anyone
    /// with access to Redis would: for tests of what a node does with hostile input.
    pub fn forge(&self, channel: &str, payload: &[u8]) {
        let nodes = self.inner.nodes.read().unwrap_or_else(|e| e.into_inner());
        for hub in nodes.iter().filter_map(Weak::upgrade).filter_map(|n| {
            let channels = n.channels.read().unwrap_or_else(|e| e.into_inner());
            channels
                .contains(channel)
                .then(|| n.hub.upgrade())
                .flatten()
        }) {
            hub.deliver(channel, payload);
        }
    }

    /// Forgets every history stream, as a Redis restarted without persistence would.
    pub fn lose_history(&self) {
        self.lock_streams().clear();
    }

    fn lock_streams(&self) -> std::sync::MutexGuard<'_, HashMap<String, Stream>> {
        self.inner.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_cut(&self) -> std::sync::MutexGuard<'_, HashSet<(String, String)>> {
        self.inner.cut.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Attaches node `node`, whose inbound messages go to `hub`.
    pub(crate) fn attach(&self, node: &str, hub: Arc<Hub>) -> MemoryBroker {
        let (tx, mut rx) = mpsc::unbounded_channel::<(String, Bytes)>();
        let endpoint = Arc::new(Endpoint {
            node: node.to_owned(),
            hub: Arc::downgrade(&hub),
            channels: RwLock::new(HashSet::new()),
            inbox: tx,
        });
        // One dispatcher per node, in arrival order, like the Redis subscriber's.
        let inbound = hub.clone();
        tokio::spawn(async move {
            while let Some((channel, payload)) = rx.recv().await {
                inbound.deliver(&channel, &payload);
            }
        });
        let mut nodes = self.inner.nodes.write().unwrap_or_else(|e| e.into_inner());
        nodes.retain(|n| n.strong_count() > 0);
        nodes.push(Arc::downgrade(&endpoint));
        MemoryBroker {
            bus: self.clone(),
            endpoint,
            hub,
            channel_seqs: ChannelSeqs::default(),
        }
    }

    fn carry(&self, from: &str, channel: &str, payload: &Bytes) {
        let cut = self.lock_cut();
        let nodes = self.inner.nodes.read().unwrap_or_else(|e| e.into_inner());
        for to in nodes.iter().filter_map(Weak::upgrade) {
            let subscribed = to
                .channels
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .contains(channel);
            let is_cut = || cut.contains(&(from.to_owned(), to.node.clone()));
            if subscribed && (cut.is_empty() || !is_cut()) {
                // A node whose dispatcher has ended is gone; nothing to deliver to.
                let _ = to.inbox.send((channel.to_owned(), payload.clone()));
            }
        }
    }
}

/// A node's connection to a [`MemoryBus`].
pub(crate) struct MemoryBroker {
    bus: MemoryBus,
    endpoint: Arc<Endpoint>,
    hub: Arc<Hub>,
    /// The numbers of this node's recorded broadcasts, per channel, as the Redis broker's.
    channel_seqs: ChannelSeqs,
}

impl MemoryBroker {
    fn channels(&self) -> std::sync::RwLockWriteGuard<'_, HashSet<String>> {
        self.endpoint
            .channels
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }
}

impl Broker for MemoryBroker {
    fn publish(
        &self,
        channel: String,
        payload: Vec<u8>,
        kind: &'static str,
    ) -> BoxFuture<'_, Result<()>> {
        let metrics = &self.hub.metrics;
        metrics.messages_out.with_label_values(&[kind]).inc();
        let bytes = metrics.bytes_out.with_label_values(&[kind]);
        bytes.inc_by(payload.len() as u64);
        // Carried synchronously: one publisher's messages enter every inbox in call order.
        self.bus
            .carry(&self.endpoint.node, &channel, &Bytes::from(payload));
        async { Ok(()) }.boxed()
    }

    fn subscribe(&self, channels: Vec<String>) -> BoxFuture<'static, Result<()>> {
        self.channels().extend(channels);
        async { Ok(()) }.boxed()
    }

    fn unsubscribe(&self, channels: Vec<String>) -> BoxFuture<'static, Result<()>> {
        let mut subscribed = self.channels();
        for channel in &channels {
            subscribed.remove(channel);
        }
        async { Ok(()) }.boxed()
    }

    fn record(
        &self,
        stream: String,
        max_len: usize,
        message: Recorded,
    ) -> BoxFuture<'_, Result<()>> {
        let metrics = &self.hub.metrics;
        metrics
            .messages_out
            .with_label_values(&[message.kind])
            .inc();
        let bytes = metrics.bytes_out.with_label_values(&[message.kind]);
        bytes.inc_by(message.payload.len() as u64);
        // Appended and carried under the streams' lock, as Redis runs the script: every
        // subscriber sees the ids in stream order.
        let mut streams = self.bus.lock_streams();
        let payload = Bytes::from(message.payload);
        let seq = self.channel_seqs.next(&message.channel);
        let id = streams
            .entry(stream)
            .or_default()
            .append(max_len, seq, payload.clone());
        let framed = Bytes::from(history::stamp(id, Some(seq), &payload));
        self.bus
            .carry(&self.endpoint.node, &message.channel, &framed);
        async { Ok(()) }.boxed()
    }

    fn range(
        &self,
        stream: String,
        start: Offset,
        count: usize,
    ) -> BoxFuture<'static, Result<Vec<Entry>>> {
        let entries = self
            .bus
            .lock_streams()
            .get(&stream)
            .map_or_else(Vec::new, |s| {
                s.entries
                    .iter()
                    .filter(|e| e.offset >= start)
                    .take(count)
                    .cloned()
                    .collect()
            });
        async { Ok(entries) }.boxed()
    }

    fn keeps_history(&self) -> bool {
        true
    }

    fn is_connected(&self) -> bool {
        true
    }

    fn reaches_peers(&self) -> bool {
        true
    }

    fn quit(&self) -> BoxFuture<'_, ()> {
        self.channels().clear();
        async {}.boxed()
    }
}
