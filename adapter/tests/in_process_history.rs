//! The broadcast history inside one process (nodes joined by a `MemoryBus`): recovering
//! sockets get recorded broadcasts once, in stream order, with their offsets; a socket
//! restored on another node gets exactly what it missed, then the live ones; a trimmed history
//! says so; a node whose subscription was down catches up without loss or duplicates.

mod support;

use ioscale_adapter::{MemoryBus, Offset, RestoreError};
use support::*;
use tokio::time::timeout;

async fn history_nodes(ids: &[&str], max_len: usize) -> (MemoryBus, Vec<Node>) {
    nodes_with(ids, |c| c.with_room_channels(true).with_history(max_len)).await
}

/// A recovering socket on `node` in `rooms`, live (restored from nothing).
async fn recovering(node: &Node, rooms: &[&'static str]) -> Client {
    let c = node.client(&[]).await;
    node.handle().recovery_begin(c.sid);
    join(node, &c, rooms).await;
    timeout(WAIT, node.handle().restore(c.sid, None, vec![]))
        .await
        .expect("restore in time")
        .expect("nothing to restore");
    c
}

async fn join(node: &Node, c: &Client, rooms: &[&'static str]) {
    let socket = node.io.get_socket(c.sid).expect("socket");
    socket.join(rooms.to_vec());
    let rooms = rooms.iter().map(|r| r.to_string()).collect();
    timeout(WAIT, node.cluster.rooms_joined("/", rooms))
        .await
        .expect("joined in time");
}

async fn publish(node: &Node, room: &'static str, n: u64) {
    node.io.to(room).emit("news", &n).await.expect("broadcast");
}

/// `(n, offset)` of a `news` event: the number and, for a recovering socket, its offset.
fn parse(msg: &str) -> (u64, Option<Offset>) {
    let json = msg
        .strip_prefix('2')
        .unwrap_or_else(|| panic!("not an event: {msg}"));
    let v: serde_json::Value = serde_json::from_str(json).expect("event json");
    assert_eq!(v[0], "news", "{msg}");
    let n = v[1].as_u64().expect("number");
    let offset = v.get(2).map(|o| {
        o["ioscale_offset"]
            .as_str()
            .expect("offset")
            .parse()
            .expect("offset shape")
    });
    (n, offset)
}

async fn take(c: &mut Client, count: usize) -> Vec<(u64, Option<Offset>)> {
    let mut got = Vec::new();
    for _ in 0..count {
        got.push(parse(&c.next().await));
    }
    got
}

#[tokio::test]
async fn recovering_sockets_get_each_broadcast_once_with_increasing_offsets() {
    let (_bus, nodes) = history_nodes(&["a", "b"], 1000).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut rec_a = recovering(a, &["r"]).await;
    let mut rec_b = recovering(b, &["r"]).await;
    let mut plain_a = a.client(&["r"]).await;
    let mut plain_b = b.client(&["r"]).await;
    for n in 0..20 {
        publish(if n % 2 == 0 { a } else { b }, "r", n).await;
    }
    for c in [&mut rec_a, &mut rec_b] {
        let got = take(c, 20).await;
        let numbers: Vec<u64> = got.iter().map(|(n, _)| *n).collect();
        assert_eq!(numbers, (0..20).collect::<Vec<_>>());
        let offsets: Vec<Offset> = got.iter().map(|(_, o)| o.expect("an offset")).collect();
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
        c.quiet().await;
    }
    for c in [&mut plain_a, &mut plain_b] {
        let got = take(c, 20).await;
        assert!(
            got.iter().all(|(_, o)| o.is_none()),
            "plain sockets see no offsets"
        );
        c.quiet().await;
    }
}

#[tokio::test]
async fn a_socket_restored_on_another_node_gets_exactly_what_it_missed() {
    let (_bus, nodes) = history_nodes(&["a", "b", "c"], 1000).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let mut first = recovering(b, &["r"]).await;
    for n in 0..5 {
        publish(a, "r", n).await;
    }
    let got = take(&mut first, 5).await;
    let last = got[4].1.expect("offset");
    b.handle().recovery_end(first.sid);
    b.io.get_socket(first.sid)
        .expect("socket")
        .disconnect()
        .expect("disconnect");
    for n in 5..12 {
        publish(a, "r", n).await;
    }
    // The same client, reconnected to node c: restored before it goes live.
    let mut again = c.client(&[]).await;
    c.handle().recovery_begin(again.sid);
    join(c, &again, &["r"]).await;
    publish(a, "r", 12).await; // arrives live while the restore reads the history
    let given = timeout(
        WAIT,
        c.handle().restore(again.sid, Some(last), vec![first.sid]),
    )
    .await
    .expect("restore in time")
    .expect("restored");
    assert!(given >= 7, "given {given}");
    publish(a, "r", 13).await;
    let numbers: Vec<u64> = take(&mut again, 9).await.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, (5..14).collect::<Vec<_>>());
    again.quiet().await;
}

#[tokio::test]
async fn a_trimmed_history_is_reported() {
    let (_bus, nodes) = history_nodes(&["a", "b"], 3).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut first = recovering(b, &["r"]).await;
    publish(a, "r", 0).await;
    let (_, offset) = parse(&first.next().await);
    for n in 1..10 {
        publish(a, "r", n).await;
    }
    let again = b.client(&[]).await;
    b.handle().recovery_begin(again.sid);
    join(b, &again, &["r"]).await;
    let restored = timeout(WAIT, b.handle().restore(again.sid, offset, vec![])).await;
    assert_eq!(restored.expect("in time"), Err(RestoreError::Trimmed));
}

#[tokio::test]
async fn a_node_whose_subscription_was_down_catches_up_in_order() {
    let (bus, nodes) = history_nodes(&["a", "b"], 1000).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut rec = recovering(b, &["r"]).await;
    let mut plain = b.client(&["r"]).await;
    publish(a, "r", 0).await;
    assert_eq!(take(&mut rec, 1).await[0].0, 0);
    assert_eq!(take(&mut plain, 1).await[0].0, 0);
    bus.disconnect("b");
    for n in 1..6 {
        publish(a, "r", n).await;
    }
    bus.reconnect("b");
    for n in 6..9 {
        publish(a, "r", n).await;
    }
    for c in [&mut rec, &mut plain] {
        let numbers: Vec<u64> = take(c, 8).await.iter().map(|(n, _)| *n).collect();
        assert_eq!(numbers, (1..9).collect::<Vec<_>>());
        c.quiet().await;
    }
    assert_eq!(
        b.metric("ioscale_adapter_dropped_total", r#"reason="history_gap""#),
        0
    );
}

#[tokio::test]
async fn broadcasts_to_this_node_only_are_not_recorded() {
    let (_bus, nodes) = history_nodes(&["a", "b"], 1000).await;
    let b = &nodes[1];
    let mut rec = recovering(b, &["r"]).await;
    b.io.local()
        .to("r")
        .emit("news", &1)
        .await
        .expect("local broadcast");
    let (n, offset) = parse(&rec.next().await);
    assert_eq!((n, offset), (1, None));
}

#[tokio::test]
async fn a_node_counts_exactly_the_recorded_broadcasts_it_never_received() {
    let (bus, nodes) = history_nodes(&["a", "b"], 1000).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut plain = b.client(&["r"]).await;
    publish(a, "r", 0).await;
    assert_eq!(take(&mut plain, 1).await[0].0, 0);
    // Three broadcasts never reach B, and nothing tells it (no lost subscription).
    bus.cut("a", "b");
    for n in 1..4 {
        publish(a, "r", n).await;
    }
    bus.heal("a", "b");
    publish(a, "r", 4).await;
    assert_eq!(take(&mut plain, 1).await[0].0, 4);
    plain.quiet().await;
    let gap = r#"reason="sequence_gap""#;
    assert_eq!(b.metric("ioscale_adapter_dropped_total", gap), 3);
    assert_eq!(a.metric("ioscale_adapter_dropped_total", gap), 0);
}

#[tokio::test]
async fn what_a_broker_that_lost_its_data_took_with_it_is_counted_exactly() {
    let (bus, nodes) = history_nodes(&["a", "b"], 1000).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut plain = b.client(&["r"]).await;
    publish(a, "r", 0).await;
    assert_eq!(take(&mut plain, 1).await[0].0, 0);
    // B's subscription is down while four are published, then the broker loses its history
    // (Redis restarted without persistence): B cannot catch up and says so once, and the next
    // broadcast tells it exactly how many it missed.
    bus.disconnect("b");
    for n in 1..5 {
        publish(a, "r", n).await;
    }
    bus.lose_history();
    // A restarted Redis numbers its new stream from its clock, past the old ids.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    bus.reconnect("b");
    publish(a, "r", 5).await;
    assert_eq!(take(&mut plain, 1).await[0].0, 5);
    plain.quiet().await;
    let gap = r#"reason="sequence_gap""#;
    assert_eq!(b.metric("ioscale_adapter_dropped_total", gap), 4);
}

#[tokio::test]
async fn a_room_channel_subscribed_again_starts_afresh() {
    let (_bus, nodes) = nodes_with(&["a", "b"], |c| {
        c.with_room_channels(true)
            .with_history(1000)
            .with_room_unsubscribe_delay(std::time::Duration::ZERO)
    })
    .await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut first = b.client(&["r"]).await;
    publish(a, "r", 0).await;
    assert_eq!(take(&mut first, 1).await[0].0, 0);
    // B's only member leaves: B stops receiving on the room's channel, and what is published
    // meanwhile is none of its business.
    let socket = b.io.get_socket(first.sid).expect("socket");
    socket.leave("r");
    b.cluster.rooms_left("/", vec!["r".to_owned()]);
    tokio::time::sleep(QUIET).await;
    for n in 1..4 {
        publish(a, "r", n).await;
    }
    let mut second = b.client(&["r"]).await;
    publish(a, "r", 4).await;
    assert_eq!(take(&mut second, 1).await[0].0, 4);
    let gap = r#"reason="sequence_gap""#;
    assert_eq!(b.metric("ioscale_adapter_dropped_total", gap), 0);
}
