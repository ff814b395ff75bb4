//! Room channels inside one process (nodes joined by a `MemoryBus`): a room's broadcasts reach
//! only the nodes with a member of it, channels follow the first join and the last leave
//! (after the delay, without churn), operator joins subscribe the members' nodes, and several
//! rooms at once still deliver once. The Redis and real-process proofs are in `tests/`.

mod support;

use std::time::Duration;

use ioscale_adapter::{AdapterConfig, MemoryBus, room_channel};
use tokio::time::{sleep, timeout};

use support::*;

const DELAY: Duration = Duration::from_millis(200);

fn chan(room: &str) -> String {
    room_channel("ioscale", "/", room)
}

async fn nodes_with_delay(ids: &[&str]) -> (MemoryBus, Vec<Node>) {
    nodes_with(ids, |c| {
        c.with_room_channels(true)
            .with_room_unsubscribe_delay(DELAY)
    })
    .await
}

fn broadcasts_in(n: &Node) -> u64 {
    n.metric("ioscale_adapter_messages_in_total", r#"kind="broadcast""#)
}

fn unsubscribes(n: &Node) -> u64 {
    n.metric(
        "ioscale_adapter_room_channel_ops_total",
        r#"op="unsubscribe""#,
    )
}

fn untargeted(n: &Node) -> u64 {
    n.metric("ioscale_adapter_broadcasts_untargeted_total", "")
}

fn room_channels(n: &Node) -> u64 {
    n.metric("ioscale_adapter_room_channels", "")
}

/// Waits until `channel`'s subscribers are `want`, or fails after `limit`.
async fn wait_subscribers(bus: &MemoryBus, channel: &str, want: &[&str], limit: Duration) {
    let got = timeout(limit, async {
        loop {
            if bus.subscribers(channel) == want {
                return;
            }
            sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        got.is_ok(),
        "{channel}: subscribers {:?} after {limit:?}, want {want:?}",
        bus.subscribers(channel)
    );
}

#[tokio::test]
async fn a_node_without_a_member_receives_none_of_a_rooms_broadcasts() {
    let (bus, nodes) = nodes_with_delay(&["a", "b", "c"]).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let mut a1 = a.client(&["r"]).await;
    let mut b1 = b.client(&["r"]).await;
    let mut c1 = c.client(&["other"]).await;
    assert_eq!(bus.subscribers(&chan("r")), ["a", "b"]);
    let before = broadcasts_in(c);
    for i in 0..20 {
        a.io.to("r").emit("ev", &i).await.unwrap();
    }
    for i in 0..20 {
        assert_eq!(b1.next().await, format!(r#"2["ev",{i}]"#));
        assert_eq!(a1.next().await, format!(r#"2["ev",{i}]"#));
    }
    c1.quiet().await;
    assert_eq!(broadcasts_in(c), before, "C has no member of r");
    assert_eq!(broadcasts_in(b), 20);
    for n in [a, b, c] {
        assert_eq!(untargeted(n), 0);
    }
    // A broadcast to everyone still reaches every node.
    a.io.emit("all", &1).await.unwrap();
    assert_eq!(c1.next().await, r#"2["all",1]"#);
}

#[tokio::test]
async fn the_last_leave_unsubscribes_after_the_delay_and_a_quick_rejoin_does_not() {
    let (bus, nodes) = nodes_with_delay(&["a", "b"]).await;
    let b = &nodes[1];
    let b1 = b.client(&["r"]).await;
    let socket = b.io.get_socket(b1.sid).unwrap();
    assert_eq!(bus.subscribers(&chan("r")), ["b"]);
    assert_eq!(room_channels(b), 1);

    // Leave and join again within the delay: the channel stays, nothing is unsubscribed.
    socket.leave("r");
    b.cluster.rooms_left("/", vec!["r".into()]);
    sleep(DELAY / 2).await;
    socket.join("r");
    b.cluster.rooms_joined("/", vec!["r".into()]).await;
    sleep(DELAY * 2).await;
    assert_eq!(bus.subscribers(&chan("r")), ["b"]);
    assert_eq!(unsubscribes(b), 0);

    // The last leave: unsubscribed once the delay has passed, not before.
    socket.leave("r");
    b.cluster.rooms_left("/", vec!["r".into()]);
    sleep(DELAY / 2).await;
    assert_eq!(bus.subscribers(&chan("r")), ["b"], "unsubscribed too early");
    wait_subscribers(&bus, &chan("r"), &[], DELAY * 2).await;
    assert_eq!(unsubscribes(b), 1);
    assert_eq!(room_channels(b), 0);
}

#[tokio::test]
async fn a_disconnected_sockets_rooms_are_unsubscribed_without_a_hint() {
    let (bus, nodes) = nodes_with_delay(&["a", "b"]).await;
    let b = &nodes[1];
    let b1 = b.client(&["r"]).await;
    assert_eq!(bus.subscribers(&chan("r")), ["b"]);
    // Nobody tells the adapter: the periodic sweep of every room finds it empty.
    b.io.get_socket(b1.sid).unwrap().disconnect().unwrap();
    wait_subscribers(&bus, &chan("r"), &[], DELAY * 10).await;
}

#[tokio::test]
async fn an_operator_join_subscribes_the_nodes_of_the_matched_sockets_only() {
    let (bus, nodes) = nodes_with_delay(&["a", "b", "c"]).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let mut b1 = b.client(&["src"]).await;
    let _c1 = c.client(&[]).await;
    // socketsJoin from A: B's socket in `src` joins `dst`; C has no such socket.
    a.io.within("src").join("dst").await.unwrap();
    assert_eq!(bus.subscribers(&chan("dst")), ["b"]);
    a.io.to("dst").emit("ev", &1).await.unwrap();
    assert_eq!(b1.next().await, r#"2["ev",1]"#);
    // socketsLeave from A: B's channel goes after the delay.
    a.io.within("src").leave("dst").await.unwrap();
    wait_subscribers(&bus, &chan("dst"), &[], DELAY * 3).await;
}

#[tokio::test]
async fn a_socket_in_several_targeted_rooms_gets_a_broadcast_once() {
    let (_bus, nodes) = nodes_with_delay(&["a", "b"]).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut both = b.client(&["r1", "r2", "r3"]).await;
    let mut one = b.client(&["r3"]).await;
    let mut out = b.client(&["r2", "x"]).await;
    a.io.to(["r1", "r2", "r3", "r2"])
        .emit("ev", &1)
        .await
        .unwrap();
    a.io.to(["r2", "r3"])
        .except("x")
        .emit("ev", &2)
        .await
        .unwrap();
    assert_eq!(both.next().await, r#"2["ev",1]"#);
    assert_eq!(both.next().await, r#"2["ev",2]"#);
    assert_eq!(one.next().await, r#"2["ev",1]"#);
    assert_eq!(one.next().await, r#"2["ev",2]"#);
    assert_eq!(out.next().await, r#"2["ev",1]"#);
    for s in [&mut both, &mut one, &mut out] {
        s.quiet().await;
    }
}

#[tokio::test]
async fn with_room_channels_off_every_node_receives_every_broadcast() {
    let bus = MemoryBus::new();
    let mut nodes = Vec::new();
    for id in ["a", "b"] {
        let config = AdapterConfig::new("")
            .with_node_id(id)
            .with_room_channels(false);
        nodes.push(Node::start_with(&bus, config).await);
    }
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut b1 = b.client(&["r"]).await;
    let _b2 = b.client(&[]).await;
    assert!(bus.subscribers(&chan("r")).is_empty());
    a.io.to("r").emit("ev", &1).await.unwrap();
    assert_eq!(b1.next().await, r#"2["ev",1]"#);
    a.io.to("nobody-here").emit("ev", &2).await.unwrap();
    sleep(QUIET).await;
    assert_eq!(untargeted(b), 1);
}
