//! The in-process multi-node harness: nodes (socketioxide servers, each with its own
//! `Cluster`) joined by a `MemoryBus`, and in-process sockets that read their packets.
#![allow(dead_code, reason = "each test file uses part of the harness")]

use std::{
    str::FromStr as _,
    time::{Duration, Instant},
};

use engineioxide::Packet as EioPacket;
use ioscale_adapter::{
    AdapterConfig, Cluster, MemoryBus, Metrics, NamespaceHandle, RedisAdapter, prometheus,
};
use socketioxide::{SocketIo, adapter::Emitter, extract::SocketRef, socket::Sid};
use tokio::{
    sync::mpsc::{Receiver, Sender},
    time::timeout,
};

pub type Adapter = RedisAdapter<Emitter>;

/// Generous for anything that must happen, short next to the request timeout.
pub const WAIT: Duration = Duration::from_secs(2);
/// How long "nothing arrives" is watched for.
pub const QUIET: Duration = Duration::from_millis(200);
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
pub const HEARTBEAT: Duration = Duration::from_millis(100);

pub struct Node {
    pub io: SocketIo<Adapter>,
    pub cluster: Cluster,
    /// Where this node's adapter metrics are registered, read as a scrape would.
    pub registry: prometheus::Registry,
}

impl Node {
    pub async fn start(bus: &MemoryBus, id: &str) -> Self {
        Self::start_with(bus, AdapterConfig::new("").with_node_id(id)).await
    }

    /// A node with `config`, its heartbeat and request timeout set for tests.
    pub async fn start_with(bus: &MemoryBus, config: AdapterConfig) -> Self {
        let registry = prometheus::Registry::new();
        let config = config
            .with_heartbeat_interval(HEARTBEAT)
            .with_request_timeout(REQUEST_TIMEOUT)
            .with_metrics(Metrics::new(&registry).expect("metrics register"));
        let cluster = Cluster::in_memory(config, bus).expect("cluster");
        let (_svc, io) = SocketIo::builder()
            .with_adapter::<Adapter>(cluster.clone())
            .build_svc();
        timeout(WAIT, io.ns("/", async |_: SocketRef<Adapter>| {}))
            .await
            .expect("namespace init timed out")
            .expect("namespace init");
        Self {
            io,
            cluster,
            registry,
        }
    }

    /// The value of the series `name{labels}` in this node's scrape (labels as the text
    /// format prints them, e.g. `kind="broadcast"`; empty for none); 0 when it is absent.
    pub fn metric(&self, name: &str, labels: &str) -> u64 {
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .expect("metrics encode");
        let series = if labels.is_empty() {
            format!("{name} ")
        } else {
            format!("{name}{{{labels}}} ")
        };
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .map_or(0, |v| v.trim().parse::<f64>().expect("metric value") as u64)
    }

    pub fn handle(&self) -> std::sync::Arc<dyn NamespaceHandle> {
        self.cluster.namespace("/").expect("namespace registered")
    }

    /// A socket on this node, in `rooms` (joined as an application does: `socket.join`, then
    /// the cluster told so).
    pub async fn client(&self, rooms: &[&'static str]) -> Client {
        let (tx, mut rx) = self.io.new_dummy_sock("/", ()).await;
        let connect = next_message(&mut rx).await.expect("connect packet");
        let json = connect.strip_prefix('0').expect("a connect packet");
        let v: serde_json::Value = serde_json::from_str(json).expect("connect json");
        let sid = Sid::from_str(v["sid"].as_str().expect("sid")).expect("sid");
        let socket = self.io.get_socket(sid).expect("socket on its node");
        socket.join(rooms.to_vec());
        let rooms = rooms.iter().map(|r| r.to_string()).collect();
        timeout(WAIT, self.cluster.rooms_joined("/", rooms))
            .await
            .expect("rooms subscribed in time");
        Client { tx, rx, sid }
    }
}

pub struct Client {
    pub tx: Sender<EioPacket>,
    pub rx: Receiver<EioPacket>,
    pub sid: Sid,
}

impl Client {
    pub async fn next(&mut self) -> String {
        next_message(&mut self.rx)
            .await
            .unwrap_or_else(|| panic!("socket {} got nothing in {WAIT:?}", self.sid))
    }

    /// Asserts nothing arrives for a while.
    pub async fn quiet(&mut self) {
        if let Ok(Some(p)) = timeout(QUIET, self.rx.recv()).await {
            panic!("socket {} should get nothing, got {p:?}", self.sid);
        }
    }

    pub async fn answer_ack(&mut self, reply: &str) {
        let event = self.next().await;
        // `2<id>[...]`: an event asking for an ack.
        let id: String = event[1..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        assert!(
            !id.is_empty(),
            "expected an event with an ack id, got {event}"
        );
        let ack = EioPacket::Message(format!("3{id}[\"{reply}\"]").into());
        self.tx.send(ack).await.expect("ack sent");
    }
}

pub async fn next_message(rx: &mut Receiver<EioPacket>) -> Option<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match timeout(left, rx.recv()).await.ok()?? {
            EioPacket::Message(m) => return Some(m.as_str().to_owned()),
            _ => continue,
        }
    }
}

/// Nodes named `ids` on one bus, each configured by `configure`.
pub async fn nodes_with(
    ids: &[&str],
    configure: impl Fn(AdapterConfig) -> AdapterConfig,
) -> (MemoryBus, Vec<Node>) {
    let bus = MemoryBus::new();
    let mut nodes = Vec::new();
    for id in ids {
        let config = configure(AdapterConfig::new("").with_node_id(*id));
        nodes.push(Node::start_with(&bus, config).await);
    }
    (bus, nodes)
}

pub async fn three_nodes() -> (MemoryBus, Node, Node, Node) {
    let bus = MemoryBus::new();
    let a = Node::start(&bus, "a").await;
    let b = Node::start(&bus, "b").await;
    let c = Node::start(&bus, "c").await;
    (bus, a, b, c)
}
