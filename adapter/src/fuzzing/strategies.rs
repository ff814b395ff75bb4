//! Generators of the adapter's fuzz targets: valid envelopes of every kind, hostile ones whose
//! fields straddle their bounds, byte mutations, Socket.IO values and packets, and JSON.

use std::{collections::VecDeque, str::FromStr as _};

use bytes::Bytes;
use proptest::{collection::vec, option, prelude::*, sample::Index};
use serde_bytes::ByteBuf;
use socketioxide_core::{
    Sid, Str, Uid, Value,
    adapter::{BroadcastFlags, BroadcastOptions},
    packet::{Packet, PacketData},
};

use crate::{
    bounds::{MAX_ACK_TIMEOUT_MS, MAX_EVENT_NAME_BYTES, MAX_ID_BYTES, MAX_SOCKETS_PER_NODE},
    wire::{Body, Envelope, WIRE_VERSION, WirePacket, WireSocket, WireValue},
};

fn id() -> impl Strategy<Value = String> {
    "[a-z0-9.:-]{1,12}"
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,12}"
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..max)
}

fn sid() -> impl Strategy<Value = Sid> {
    "[A-Za-z0-9_-]{16}".prop_map(|s| Sid::from_str(&s).unwrap_or(Sid::ZERO))
}

fn uid() -> impl Strategy<Value = Uid> {
    "[A-Za-z0-9_-]{16}".prop_map(|s| Uid::from_str(&s).unwrap_or(Uid::ZERO))
}

fn wire_value() -> impl Strategy<Value = WireValue> {
    prop_oneof![
        (text(), vec(bytes(16).prop_map(ByteBuf::from), 0..3))
            .prop_map(|(s, b)| WireValue::Str(s, b)),
        bytes(32).prop_map(|b| WireValue::Bytes(ByteBuf::from(b))),
    ]
}

fn wire_packet() -> impl Strategy<Value = WirePacket> {
    (
        "/[a-z]{0,6}",
        0u8..8,
        option::of(wire_value()),
        option::of(any::<i64>()),
        option::of(text()),
    )
        .prop_map(|(ns, kind, data, ack, message)| WirePacket {
            ns,
            kind,
            data,
            ack,
            message,
        })
}

fn opts() -> impl Strategy<Value = BroadcastOptions> {
    let rooms = || vec(text(), 0..3);
    (
        0u8..8,
        rooms(),
        rooms(),
        option::of(sid()),
        option::of(uid()),
    )
        .prop_map(|(flags, rooms, except, sid, server_id)| {
            let mut o = BroadcastOptions::default();
            for f in [
                BroadcastFlags::Local,
                BroadcastFlags::Broadcast,
                BroadcastFlags::Volatile,
            ] {
                if flags & f as u8 != 0 {
                    o.add_flag(f);
                }
            }
            o.rooms = rooms.into_iter().map(Into::into).collect();
            o.except = except.into_iter().map(Into::into).collect();
            o.sid = sid;
            o.server_id = server_id;
            o
        })
}

fn socket() -> impl Strategy<Value = WireSocket> {
    (id(), id(), id(), vec(text(), 0..3), bytes(16)).prop_map(|(id, node, uid, rooms, data)| {
        WireSocket {
            id,
            node,
            uid,
            rooms,
            data,
        }
    })
}

/// Bodies that act on sockets: broadcasts, joins, leaves, disconnects and their requests.
fn socket_body() -> impl Strategy<Value = Body> {
    let req = || option::of(any::<u64>());
    prop_oneof![
        (wire_packet(), opts(), any::<u64>(), option::of(text())).prop_map(
            |(packet, opts, sent_at_us, trace)| Body::Broadcast {
                packet,
                opts,
                sent_at_us,
                trace,
            }
        ),
        (any::<u64>(), wire_packet(), opts(), 0..=MAX_ACK_TIMEOUT_MS).prop_map(
            |(req, packet, opts, timeout_ms)| Body::BroadcastWithAck {
                req,
                packet,
                opts,
                timeout_ms,
            }
        ),
        (opts(), vec(text(), 0..3), req()).prop_map(|(opts, rooms, req)| Body::AddSockets {
            opts,
            rooms,
            req
        }),
        (opts(), vec(text(), 0..3), req()).prop_map(|(opts, rooms, req)| Body::DelSockets {
            opts,
            rooms,
            req
        }),
        (opts(), req()).prop_map(|(opts, req)| Body::DisconnectSockets { opts, req }),
        (any::<u64>(), opts()).prop_map(|(req, opts)| Body::FetchSockets { req, opts }),
        (any::<u64>(), opts()).prop_map(|(req, opts)| Body::AllRooms { req, opts }),
    ]
}

/// Responses, server events and membership messages.
fn other_body() -> impl Strategy<Value = Body> {
    let ack = prop_oneof![
        wire_value().prop_map(Ok),
        bytes(8).prop_map(|b| Err(ByteBuf::from(b)))
    ];
    prop_oneof![
        (any::<u64>(), 0..=MAX_SOCKETS_PER_NODE)
            .prop_map(|(req, count)| Body::AckCount { req, count }),
        (any::<u64>(), id(), ack).prop_map(|(req, sid, result)| Body::Ack { req, sid, result }),
        any::<u64>().prop_map(|req| Body::Applied { req }),
        (any::<u64>(), vec(socket(), 0..3))
            .prop_map(|(req, sockets)| Body::FetchSocketsResponse { req, sockets }),
        (any::<u64>(), vec(text(), 0..3))
            .prop_map(|(req, rooms)| Body::AllRoomsResponse { req, rooms }),
        (option::of(any::<u64>()), "[a-z:]{1,12}", bytes(16))
            .prop_map(|(req, event, args)| Body::ServerEvent { req, event, args }),
        (any::<u64>(), bytes(16))
            .prop_map(|(req, response)| Body::ServerEventResponse { req, response }),
        (id(), 0..=MAX_SOCKETS_PER_NODE)
            .prop_map(|(uid, sockets)| Body::Heartbeat { uid, sockets }),
        (id(), 0..=MAX_SOCKETS_PER_NODE).prop_map(|(uid, sockets)| Body::Hello { uid, sockets }),
        Just(Body::Leave),
    ]
}

/// Valid envelopes of every kind, with in-range fields.
pub(super) fn envelope() -> impl Strategy<Value = Envelope> {
    (
        0..=WIRE_VERSION,
        id(),
        prop_oneof![socket_body(), other_body()],
    )
        .prop_map(|(v, origin, body)| Envelope { v, origin, body })
}

/// Ids on both sides of their bounds: empty, with `#`, with control characters, around
/// [`MAX_ID_BYTES`], any printable text.
fn hostile_id() -> impl Strategy<Value = String> {
    prop_oneof![
        id(),
        Just(String::new()),
        "[a-z]{0,3}#[a-z]{0,3}",
        "[a-z]{0,3}[\\x00-\\x1f\\x7f][a-z]{0,3}",
        (MAX_ID_BYTES - 2..MAX_ID_BYTES + 3).prop_map(|n| "n".repeat(n)),
        "\\PC{1,8}",
    ]
}

fn hostile_u32(max: u32) -> impl Strategy<Value = u32> {
    prop_oneof![0..=max, max - 2..=max.saturating_add(2), any::<u32>()]
}

/// Valid-shaped envelopes whose fields may be out of range.
pub(super) fn hostile_envelope() -> impl Strategy<Value = Envelope> {
    let timeout = prop_oneof![
        0..=MAX_ACK_TIMEOUT_MS,
        MAX_ACK_TIMEOUT_MS - 2..=MAX_ACK_TIMEOUT_MS + 2,
        any::<u64>()
    ];
    let event = prop_oneof![
        "[a-z]{0,8}",
        (MAX_EVENT_NAME_BYTES - 1..MAX_EVENT_NAME_BYTES + 2).prop_map(|n| "e".repeat(n))
    ];
    let socket =
        (hostile_id(), hostile_id(), hostile_id()).prop_map(|(id, node, uid)| WireSocket {
            id,
            node,
            uid,
            rooms: vec![],
            data: b"null".to_vec(),
        });
    let body = prop_oneof![
        (wire_packet(), opts(), timeout).prop_map(|(packet, opts, timeout_ms)| {
            Body::BroadcastWithAck {
                req: 1,
                packet,
                opts,
                timeout_ms,
            }
        }),
        hostile_u32(MAX_SOCKETS_PER_NODE).prop_map(|count| Body::AckCount { req: 1, count }),
        hostile_id().prop_map(|sid| Body::Ack {
            req: 1,
            sid,
            result: Err(ByteBuf::new())
        }),
        vec(socket, 0..3).prop_map(|sockets| Body::FetchSocketsResponse { req: 1, sockets }),
        event.prop_map(|event| Body::ServerEvent {
            req: None,
            event,
            args: b"[]".to_vec()
        }),
        (hostile_id(), hostile_u32(MAX_SOCKETS_PER_NODE))
            .prop_map(|(uid, sockets)| Body::Heartbeat { uid, sockets }),
        (hostile_id(), hostile_u32(MAX_SOCKETS_PER_NODE))
            .prop_map(|(uid, sockets)| Body::Hello { uid, sockets }),
        Just(Body::Leave),
    ];
    (hostile_id(), body).prop_map(|(origin, body)| Envelope {
        v: WIRE_VERSION,
        origin,
        body,
    })
}

/// The field the range check must name for `env`, worked out from the bounds' documentation.
pub(super) fn out_of_range(env: &Envelope) -> Option<&'static str> {
    let bad_id = |s: &str| {
        s.is_empty() || s.len() > MAX_ID_BYTES || s.chars().any(|c| c == '#' || c.is_control())
    };
    if bad_id(&env.origin) {
        return Some("origin");
    }
    match &env.body {
        Body::BroadcastWithAck { timeout_ms, .. } => {
            (*timeout_ms > MAX_ACK_TIMEOUT_MS).then_some("timeout_ms")
        }
        Body::AckCount { count, .. } => (*count > MAX_SOCKETS_PER_NODE).then_some("count"),
        Body::Ack { sid, .. } => bad_id(sid).then_some("sid"),
        Body::FetchSocketsResponse { sockets, .. } => sockets.iter().find_map(|s| {
            [
                ("socket.id", &s.id),
                ("socket.node", &s.node),
                ("socket.uid", &s.uid),
            ]
            .into_iter()
            .find_map(|(name, v)| bad_id(v).then_some(name))
        }),
        Body::ServerEvent { event, .. } => {
            (event.is_empty() || event.len() > MAX_EVENT_NAME_BYTES).then_some("event")
        }
        Body::Heartbeat { uid, sockets } | Body::Hello { uid, sockets } => {
            if bad_id(uid) {
                Some("uid")
            } else {
                (*sockets > MAX_SOCKETS_PER_NODE).then_some("sockets")
            }
        }
        _ => None,
    }
}

/// Headers declaring far more than any input holds: arrays, maps, strings, binaries, extensions.
const HUGE_HEADERS: [&[u8]; 7] = [
    &[0xdd, 0xff, 0xff, 0xff, 0xff],
    &[0xdf, 0xff, 0xff, 0xff, 0xff],
    &[0xdb, 0xff, 0xff, 0xff, 0xff],
    &[0xc6, 0xff, 0xff, 0xff, 0xff],
    &[0xc9, 0xff, 0xff, 0xff, 0xff],
    &[0xdc, 0xff, 0xff],
    &[0xde, 0xff, 0xff],
];

/// One change to an encoded envelope.
#[derive(Debug, Clone)]
pub(super) enum Mutation {
    /// XOR a byte.
    Flip(Index, u8),
    /// Cut the input there.
    Truncate(Index),
    /// Insert bytes there.
    Insert(Index, Vec<u8>),
    /// Copy a range of the input to another place (a field repeated, a header moved).
    Splice(Index, Index, Index),
    /// Replace a byte by a header declaring a huge length.
    HugeLength(Index, usize),
}

impl Mutation {
    pub(super) fn list() -> impl Strategy<Value = Vec<Mutation>> {
        let one = prop_oneof![
            (any::<Index>(), 1u8..).prop_map(|(i, x)| Mutation::Flip(i, x)),
            any::<Index>().prop_map(Mutation::Truncate),
            (any::<Index>(), bytes(6)).prop_map(|(i, b)| Mutation::Insert(i, b)),
            (any::<Index>(), any::<Index>(), any::<Index>())
                .prop_map(|(a, b, c)| Mutation::Splice(a, b, c)),
            (any::<Index>(), 0..HUGE_HEADERS.len()).prop_map(|(i, h)| Mutation::HugeLength(i, h)),
        ];
        vec(one, 1..4)
    }

    pub(super) fn apply(&self, b: &mut Vec<u8>) {
        if b.is_empty() {
            return;
        }
        let len = b.len();
        match self {
            Mutation::Flip(i, x) => b[i.index(len)] ^= x,
            Mutation::Truncate(i) => b.truncate(i.index(len)),
            Mutation::Insert(i, bytes) => {
                let at = i.index(len + 1);
                b.splice(at..at, bytes.iter().copied());
            }
            Mutation::Splice(from, span, to) => {
                let start = from.index(len);
                let end = start + span.index(len - start + 1);
                let piece = b[start..end].to_vec();
                let at = to.index(len + 1);
                b.splice(at..at, piece);
            }
            Mutation::HugeLength(i, h) => {
                let at = i.index(len);
                b.splice(at..=at, HUGE_HEADERS[*h].iter().copied());
            }
        }
    }
}

/// Socket.IO values as the codec keeps them: attachments only when there are some.
pub(super) fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        (text(), vec(bytes(16), 0..3)).prop_map(|(s, bins)| {
            let bins: VecDeque<Bytes> = bins.into_iter().map(Bytes::from).collect();
            Value::Str(Str::from(s), (!bins.is_empty()).then_some(bins))
        }),
        bytes(32).prop_map(|b| Value::Bytes(Bytes::from(b))),
    ]
}

/// Packets of every type.
pub(super) fn packet() -> impl Strategy<Value = Packet> {
    let inner = prop_oneof![
        option::of(value()).prop_map(PacketData::Connect),
        Just(PacketData::Disconnect),
        (value(), option::of(any::<i64>())).prop_map(|(v, a)| PacketData::Event(v, a)),
        (value(), any::<i64>()).prop_map(|(v, a)| PacketData::EventAck(v, a)),
        text().prop_map(PacketData::ConnectError),
        (value(), option::of(any::<i64>())).prop_map(|(v, a)| PacketData::BinaryEvent(v, a)),
        (value(), any::<i64>()).prop_map(|(v, a)| PacketData::BinaryAck(v, a)),
    ];
    ("/[a-z]{0,6}", inner).prop_map(|(ns, inner)| Packet {
        inner,
        ns: Str::from(ns),
    })
}

/// JSON with any finite number.
pub(super) fn json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value as J;
    let leaf = prop_oneof![
        Just(J::Null),
        any::<bool>().prop_map(J::Bool),
        any::<i64>().prop_map(J::from),
        any::<f64>().prop_filter_map("finite", |n| serde_json::Number::from_f64(n).map(J::Number)),
        text().prop_map(J::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(J::Array),
            proptest::collection::btree_map(text(), inner, 0..4)
                .prop_map(|m| J::Object(m.into_iter().collect())),
        ]
    })
}
