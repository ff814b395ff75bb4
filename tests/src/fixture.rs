//! Scenario helpers shared by the cross-node tests: clients spread over the
//! nodes, and exact delivery assertions.
//!
//! Absence can only be asserted after waiting. The helpers first wait for every
//! expected delivery (the positive control), then wait [`SETTLE`] more before
//! counting, so a wrongly delivered or duplicated event that was in flight is
//! still caught, and a test never waits longer than it needs to pass.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Result, ensure};
use serde_json::Value;

use crate::agent::{Agent, ConnectOpts};
use crate::cluster::Cluster;
use crate::{EVENT_TIMEOUT, Transport};

/// Extra wait after the positive control, before asserting absence.
pub const SETTLE: Duration = Duration::from_millis(300);

/// One client of the agent, connected to a node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// The agent's name for it.
    pub name: String,
    /// Its public id (what the node's `whoami` answers, and what other clients and the
    /// server API see); its `socket.id` is the session id, which only it knows.
    pub id: String,
    /// Index of the node it is connected to.
    pub node: usize,
    /// Its namespace.
    pub namespace: String,
}

/// Connects `count` clients named `{prefix}0…` to `namespace`, client `i` on
/// node `i % nodes`, so consecutive clients land on different nodes.
///
/// # Errors
/// If a connection fails.
pub async fn connect_spread(
    cluster: &Cluster,
    agent: &Agent,
    transport: Transport,
    namespace: &str,
    prefix: &str,
    count: usize,
) -> Result<Vec<Client>> {
    let mut clients = Vec::with_capacity(count);
    for i in 0..count {
        let node = i % cluster.nodes().len();
        let name = format!("{prefix}{i}");
        let opts = ConnectOpts::new(transport).namespace(namespace);
        let id = agent
            .connect(&name, &cluster.node(node).url(), &opts)
            .await?;
        clients.push(Client {
            name,
            id,
            node,
            namespace: namespace.to_owned(),
        });
    }
    Ok(clients)
}

/// Asserts that exactly the clients in `receivers` get `event` once each (with
/// `payload` as arguments, when given), and the other `clients` never get it.
///
/// # Errors
/// On a missing, duplicated, unexpected or wrong delivery.
pub async fn expect_delivery(
    agent: &Agent,
    clients: &[Client],
    receivers: &[&Client],
    event: &str,
    payload: Option<&[Value]>,
) -> Result<()> {
    for r in receivers {
        agent.wait_count(&r.name, event, 1, EVENT_TIMEOUT).await?;
    }
    tokio::time::sleep(SETTLE).await;
    let expected: BTreeSet<&str> = receivers.iter().map(|c| c.name.as_str()).collect();
    let mut got = BTreeMap::new();
    for c in clients {
        got.insert(c.name.as_str(), agent.events(&c.name, event).await?);
    }
    let counts: BTreeMap<&str, usize> = got.iter().map(|(k, v)| (*k, v.len())).collect();
    let want: BTreeMap<&str, usize> = clients
        .iter()
        .map(|c| {
            let n = usize::from(expected.contains(c.name.as_str()));
            (c.name.as_str(), n)
        })
        .collect();
    ensure!(
        counts == want,
        "deliveries of {event:?} per client differ.\n  expected: {want:?}\n  got:      {counts:?}"
    );
    if let Some(payload) = payload {
        for (name, payloads) in &got {
            for p in payloads {
                ensure!(
                    p.as_slice() == payload,
                    "client {name} got {event:?} with {p:?}, expected {payload:?}"
                );
            }
        }
    }
    Ok(())
}

/// Asserts that none of `clients` has received `event`, after [`SETTLE`].
///
/// # Errors
/// If any did.
pub async fn expect_none(agent: &Agent, clients: &[Client], event: &str) -> Result<()> {
    tokio::time::sleep(SETTLE).await;
    for c in clients {
        let got = agent.events(&c.name, event).await?;
        ensure!(
            got.is_empty(),
            "client {} unexpectedly got {event:?}: {got:?}",
            c.name
        );
    }
    Ok(())
}

/// Public ids of `clients`, sorted.
pub fn sids(clients: &[&Client]) -> BTreeSet<String> {
    clients.iter().map(|c| c.id.clone()).collect()
}

/// `/pubsub` across two nodes: a client on `from` and one on `to` join room `r`, the first
/// publishes `data`, and the second must receive it (each ack `{ok: true}`).
///
/// # Errors
/// A refused join or publish, or nothing received within [`EVENT_TIMEOUT`].
pub async fn pubsub_crosses(agent: &Agent, from: &str, to: &str, data: Value) -> Result<()> {
    let opts = ConnectOpts::new(Transport::Websocket).namespace("/pubsub");
    agent.connect("cross-from", from, &opts).await?;
    agent.connect("cross-to", to, &opts).await?;
    let ok = [serde_json::json!({"ok": true})];
    for c in ["cross-from", "cross-to"] {
        let room = vec![serde_json::json!("r")];
        let ack = agent.emit_with_ack(c, "join", room, EVENT_TIMEOUT).await?;
        ensure!(ack == ok, "{c} join: {ack:?}");
    }
    let publish = serde_json::json!({"room": "r", "data": data});
    let ack = agent
        .emit_with_ack("cross-from", "publish", vec![publish], EVENT_TIMEOUT)
        .await?;
    ensure!(ack == ok, "publish: {ack:?}");
    let got = agent
        .wait_count("cross-to", "msg", 1, EVENT_TIMEOUT)
        .await?;
    ensure!(got[0][0]["data"] == data, "received {got:?}, sent {data}");
    Ok(())
}

/// Waits until `node` answers `/readyz` with 200.
///
/// # Errors
/// After `limit`, with the node's log.
pub async fn wait_ready(node: &crate::NodeProc, limit: Duration) -> Result<()> {
    let api = node.api();
    let ready = || async { Ok((api.readyz().await? == 200).then_some(())) };
    crate::extra::wait_until(limit, Duration::from_millis(100), "ready", ready)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "{} never became ready: {e:#}\n{}",
                node.node_id(),
                node.log()
            )
        })
}
