//! Forged messages on the bus (anything with access to Redis can publish): each refusal is
//! counted under its reason and the node keeps serving.

mod support;

use ioscale_adapter::{MAX_ACK_TIMEOUT_MS, MemoryBus, all_nodes_channel};
use support::Node;

const DROPPED: &str = "ioscale_adapter_dropped_total";

/// A msgpack map of `(key, value)` pairs, written by hand: the wire types are private, and a
/// forger would not use them either.
fn map(pairs: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![0x80 | pairs.len() as u8];
    for (k, v) in pairs {
        out.push(0xa0 | k.len() as u8);
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(v);
    }
    out
}

fn str_(s: &str) -> Vec<u8> {
    let mut out = vec![0xd9, s.len() as u8];
    out.extend_from_slice(s.as_bytes());
    out
}

fn u64_(n: u64) -> Vec<u8> {
    let mut out = vec![0xcf];
    out.extend_from_slice(&n.to_be_bytes());
    out
}

fn envelope(origin: &str, body: Vec<u8>) -> Vec<u8> {
    map(&[("v", vec![1]), ("origin", str_(origin)), ("body", body)])
}

fn heartbeat(uid: &str, sockets: u64) -> Vec<u8> {
    map(&[(
        "Heartbeat",
        map(&[("uid", str_(uid)), ("sockets", u64_(sockets))]),
    )])
}

#[tokio::test]
async fn forged_messages_are_refused_and_counted_by_reason() {
    let bus = MemoryBus::new();
    let a = Node::start(&bus, "a").await;
    let chan = all_nodes_channel("ioscale", "/");
    let count = |reason: &str| a.metric(DROPPED, &format!("reason=\"{reason}\""));

    // Five bytes declaring a 4-billion-element array, and a 4 GiB string.
    bus.forge(&chan, &[0xdd, 0xff, 0xff, 0xff, 0xff]);
    bus.forge(&chan, &[0x81, 0xa1, b'v', 0xdb, 0xff, 0xff, 0xff, 0xff]);
    assert_eq!(count("decode"), 2);

    // Valid shape, values out of range: a forged node id, a socket count, an ack wait.
    bus.forge(&chan, &envelope("b#room", heartbeat("u", 1)));
    bus.forge(&chan, &envelope("b", heartbeat("u", u64::from(u32::MAX))));
    let with_ack = map(&[(
        "BroadcastWithAck",
        map(&[
            ("req", vec![1]),
            ("packet", map(&[("ns", str_("/")), ("kind", vec![2])])),
            (
                "opts",
                map(&[
                    ("flags", vec![0]),
                    ("rooms", vec![0x90]),
                    ("except", vec![0x90]),
                ]),
            ),
            ("timeout_ms", u64_(MAX_ACK_TIMEOUT_MS + 1)),
        ]),
    )]);
    bus.forge(&chan, &envelope("b", with_ack));
    assert_eq!(count("out_of_range"), 3);
    assert!(
        a.handle().nodes().iter().all(|n| n.id == "a"),
        "no phantom node"
    );

    // A well-formed heartbeat from a new node is still taken.
    bus.forge(&chan, &envelope("b", heartbeat("u", 1)));
    assert!(a.handle().nodes().iter().any(|n| n.id == "b"));
}
