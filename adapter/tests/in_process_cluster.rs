//! Multi-node behaviour inside one process: several nodes (socketioxide servers, each with its
//! own `Cluster`) joined by a `MemoryBus` instead of Redis, with in-process sockets. These run
//! in milliseconds; the cluster tests with real Redis and real node processes stay the proof.

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use ioscale_adapter::MemoryBus;
use socketioxide::socket::Sid;
use socketioxide_core::{Uid, adapter::BroadcastOptions};
use tokio::time::timeout;

use support::*;

#[tokio::test]
async fn a_broadcast_to_rooms_reaches_each_member_on_every_node_once() {
    let (_bus, a, b, c) = three_nodes().await;
    let mut a1 = a.client(&["r1"]).await;
    let mut b1 = b.client(&["r1", "r2"]).await;
    let mut c1 = c.client(&["r2"]).await;
    let mut c2 = c.client(&[]).await;
    a.io.to(["r1", "r2"]).emit("ev", &1).await.unwrap();
    for s in [&mut a1, &mut b1, &mut c1] {
        assert_eq!(s.next().await, r#"2["ev",1]"#);
        s.quiet().await;
    }
    c2.quiet().await;
    // `except` on another node's membership: b1 is in r2, so only a1 gets it.
    a.io.to("r1").except("r2").emit("ev", &2).await.unwrap();
    assert_eq!(a1.next().await, r#"2["ev",2]"#);
    b1.quiet().await;
}

#[tokio::test]
async fn acks_come_back_from_sockets_on_every_node() {
    let (_bus, a, b, c) = three_nodes().await;
    let mut b1 = b.client(&[]).await;
    let mut c1 = c.client(&[]).await;
    let mut acks =
        a.io.timeout(Duration::from_secs(2))
            .emit_with_ack::<_, String>("q", &())
            .await
            .unwrap();
    b1.answer_ack("from-b").await;
    c1.answer_ack("from-c").await;
    let mut got = Vec::new();
    while let Ok(Some((_, r))) = timeout(WAIT, acks.next()).await {
        got.push(r.expect("an answer"));
    }
    got.sort();
    assert_eq!(got, ["from-b", "from-c"]);
}

#[tokio::test]
async fn fetch_sockets_lists_every_node_and_join_leave_disconnect_apply_everywhere() {
    let (_bus, a, b, c) = three_nodes().await;
    let _a1 = a.client(&[]).await;
    let mut b1 = b.client(&[]).await;
    let mut c1 = c.client(&[]).await;
    assert_eq!(a.io.fetch_sockets().await.unwrap().len(), 3);

    // A join made from node A applies to B's and C's sockets before it returns.
    a.io.broadcast().join("late").await.unwrap();
    a.io.to("late").emit("ev", &1).await.unwrap();
    assert_eq!(b1.next().await, r#"2["ev",1]"#);
    assert_eq!(c1.next().await, r#"2["ev",1]"#);
    a.io.broadcast().leave("late").await.unwrap();
    a.io.to("late").emit("ev", &2).await.unwrap();
    b1.quiet().await;

    a.io.disconnect().await.unwrap();
    assert_eq!(b1.next().await, "1");
    assert_eq!(c1.next().await, "1");
    assert!(a.io.fetch_sockets().await.unwrap().is_empty());
}

/// Issue: a cluster-wide disconnect (or join, or leave) applied its local part only after the
/// other nodes had answered, to whatever sockets matched by then: a client's newer connection
/// restored meanwhile was disconnected by the call meant for its older one.
#[tokio::test]
async fn a_cluster_wide_disconnect_acts_on_the_sockets_there_are_when_it_is_called() {
    let (bus, a, _b, _c) = three_nodes().await;
    let mut old = a.client(&["u"]).await;
    let sender = a.client(&[]).await;
    // C stops being heard by A: A waits for it until its heartbeats are overdue.
    bus.cut("c", "a");
    let socket = a.io.get_socket(sender.sid).expect("sender");
    let call = tokio::spawn(async move { socket.to("u").disconnect().await });
    // While A waits for C, the same client comes back (a newer connection in the room).
    let mut newer = a.client(&["u"]).await;
    let disconnected = timeout(QUIET, next_message(&mut old.rx)).await;
    assert_eq!(
        disconnected.ok().flatten().as_deref(),
        Some("1"),
        "the socket there was is disconnected at once"
    );
    timeout(REQUEST_TIMEOUT * 2, call)
        .await
        .expect("the call ends")
        .expect("no panic")
        .expect("disconnected");
    // The same for a join.
    let joined = a.io.get_socket(sender.sid).expect("sender");
    let join = tokio::spawn(async move { joined.to("u").join("v").await });
    let mut newest = a.client(&["u"]).await;
    timeout(REQUEST_TIMEOUT * 2, join)
        .await
        .expect("the call ends")
        .expect("no panic")
        .expect("joined");
    newer.quiet().await;
    assert!(a.io.get_socket(newer.sid).is_some(), "the newer one stays");
    a.io.to("v").emit("ev", &1).await.unwrap();
    assert_eq!(
        newer.next().await,
        r#"2["ev",1]"#,
        "it was there when asked"
    );
    newest.quiet().await;
}

#[tokio::test]
async fn a_node_that_falls_silent_is_not_waited_for() {
    let (bus, a, b, c) = three_nodes().await;
    let _b1 = b.client(&[]).await;
    let _c1 = c.client(&[]).await;
    // C stops being heard by A (its process died, as far as A can tell).
    bus.cut("c", "a");
    let started = Instant::now();
    let report = a
        .handle()
        .fetch_sockets_report(ioscale_adapter::all_sockets())
        .await
        .unwrap();
    // A stops waiting for C once its heartbeats are overdue, well before the request timeout.
    assert!(
        started.elapsed() < REQUEST_TIMEOUT / 2,
        "waited {:?}",
        started.elapsed()
    );
    assert!(report.missing_nodes.is_empty(), "{report:?}");
    let nodes: Vec<&str> = report.sockets.iter().map(|s| s.node.as_str()).collect();
    assert_eq!(nodes, ["b"], "{report:?}");
}

/// Issue: with no live peer known (a node just started, or after a broker outage longer than
/// the heartbeat timeout), a broadcast was not published at all, and peers that were there
/// missed it silently.
#[tokio::test]
async fn a_broadcast_is_published_even_when_no_peer_is_known_yet() {
    let bus = MemoryBus::new();
    let a = Node::start(&bus, "a").await;
    // B hears A but A never hears B: A knows no live peer.
    bus.cut("b", "a");
    let b = Node::start(&bus, "b").await;
    let mut b1 = b.client(&[]).await;
    assert!(a.handle().nodes().len() == 1, "A must not know B");
    a.io.emit("ev", &1).await.unwrap();
    assert_eq!(b1.next().await, r#"2["ev",1]"#);
    let handle = a.handle();
    let report = handle.server_side_emit("hi".into(), serde_json::json!(1), None);
    assert!(report.await.unwrap().complete);
}

/// Issue: a request for a server id no live node has fell back to every node; only the owner
/// answers, so it waited its whole timeout and reported innocent nodes as missing.
#[tokio::test]
async fn a_request_for_an_unknown_server_id_waits_for_nobody() {
    let (_bus, a, _b, _c) = three_nodes().await;
    let mut opts = BroadcastOptions::default();
    opts.sid = Some(Sid::new());
    opts.server_id = Some(Uid::new());
    let started = Instant::now();
    let report = a.handle().fetch_sockets_report(opts).await.unwrap();
    assert!(
        started.elapsed() < REQUEST_TIMEOUT / 2,
        "waited {:?}",
        started.elapsed()
    );
    assert!(report.missing_nodes.is_empty(), "{report:?}");
    assert!(report.sockets.is_empty(), "{report:?}");
}
