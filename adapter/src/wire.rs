//! The wire codec: every message between nodes, as msgpack maps with a version field.
//!
//! Messages are `Envelope { v, origin, body }` encoded with named fields (maps), so fields can be
//! added without breaking older nodes. Payload bytes (the parser-encoded Socket.IO packet and its
//! binary attachments) travel as msgpack `bin`, not as arrays of integers. Another dialect (for
//! example Node's `@socket.io/redis-adapter` format) can be added beside this module: the rest of
//! the adapter only sees [`Envelope`] and [`Body`].

use std::collections::VecDeque;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use socketioxide_core::{
    Str, Value,
    adapter::BroadcastOptions,
    packet::{Packet, PacketData},
};

use crate::error::Result;

/// Version of this wire format. A node ignores (and counts) messages of a newer major version.
pub(crate) const WIRE_VERSION: u8 = 1;

/// Every message published on a channel.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Envelope {
    /// Wire format version ([`WIRE_VERSION`]).
    pub(crate) v: u8,
    /// Id of the node that sent the message.
    pub(crate) origin: String,
    /// What the message says.
    pub(crate) body: Body,
}

/// Identifier of a request, unique per origin node.
pub(crate) type RequestId = u64;

/// The kinds of message. `#[non_exhaustive]` so adding one is not a breaking change for users.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[non_exhaustive]
pub(crate) enum Body {
    /// Deliver a packet to the matching local sockets.
    Broadcast {
        /// The packet to deliver.
        packet: WirePacket,
        /// Which sockets.
        opts: BroadcastOptions,
        /// Publish time in microseconds since the Unix epoch, for the latency histogram.
        sent_at_us: u64,
        /// W3C trace context of the publishing span, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trace: Option<String>,
    },
    /// Deliver a packet and send back the acks of the local sockets.
    BroadcastWithAck {
        /// Request id for the responses.
        req: RequestId,
        /// The packet to deliver.
        packet: WirePacket,
        /// Which sockets.
        opts: BroadcastOptions,
        /// How long each socket has to ack.
        timeout_ms: u64,
    },
    /// How many acks this node will send for the request.
    AckCount {
        /// Request id.
        req: RequestId,
        /// Number of sockets that were sent the packet.
        count: u32,
    },
    /// One socket's ack.
    Ack {
        /// Request id.
        req: RequestId,
        /// Socket id.
        sid: String,
        /// The ack payload, or the msgpack-encoded ack error.
        result: Result<WireValue, ByteBuf>,
    },
    /// Make the matching sockets join rooms.
    AddSockets {
        /// Which sockets.
        opts: BroadcastOptions,
        /// Rooms to join.
        rooms: Vec<String>,
        /// When set, each node answers [`Body::Applied`] once done.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<RequestId>,
    },
    /// Make the matching sockets leave rooms.
    DelSockets {
        /// Which sockets.
        opts: BroadcastOptions,
        /// Rooms to leave.
        rooms: Vec<String>,
        /// When set, each node answers [`Body::Applied`] once done.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<RequestId>,
    },
    /// Disconnect the matching sockets.
    DisconnectSockets {
        /// Which sockets.
        opts: BroadcastOptions,
        /// When set, each node answers [`Body::Applied`] once done.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<RequestId>,
    },
    /// A node applied a join, leave or disconnect.
    Applied {
        /// Request id.
        req: RequestId,
    },
    /// Ask for the matching sockets.
    FetchSockets {
        /// Request id.
        req: RequestId,
        /// Which sockets.
        opts: BroadcastOptions,
    },
    /// The matching sockets of one node.
    FetchSocketsResponse {
        /// Request id.
        req: RequestId,
        /// The sockets.
        sockets: Vec<WireSocket>,
    },
    /// Ask for the rooms of the matching sockets.
    AllRooms {
        /// Request id.
        req: RequestId,
        /// Which sockets.
        opts: BroadcastOptions,
    },
    /// The rooms of one node.
    AllRoomsResponse {
        /// Request id.
        req: RequestId,
        /// Room names.
        rooms: Vec<String>,
    },
    /// A server-to-server event.
    ServerEvent {
        /// Request id when the sender waits for responses.
        req: Option<RequestId>,
        /// Event name.
        event: String,
        /// JSON-encoded arguments.
        #[serde(with = "serde_bytes")]
        args: Vec<u8>,
    },
    /// One node's answer to a server event.
    ServerEventResponse {
        /// Request id.
        req: RequestId,
        /// JSON-encoded response.
        #[serde(with = "serde_bytes")]
        response: Vec<u8>,
    },
    /// A node is alive.
    Heartbeat {
        /// The node's socketioxide server id.
        uid: String,
        /// Sockets connected to the namespace on that node.
        sockets: u32,
    },
    /// A node just started: like a heartbeat, and asks the others to answer at once.
    Hello {
        /// The node's socketioxide server id.
        uid: String,
        /// Sockets connected to the namespace on that node.
        sockets: u32,
    },
    /// A node is leaving the cluster (graceful shutdown).
    Leave,
}

impl Body {
    /// A short, bounded label for metrics.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Body::Broadcast { .. } => "broadcast",
            Body::BroadcastWithAck { .. } => "broadcast_with_ack",
            Body::AckCount { .. } => "ack_count",
            Body::Ack { .. } => "ack",
            Body::AddSockets { .. } => "add_sockets",
            Body::DelSockets { .. } => "del_sockets",
            Body::DisconnectSockets { .. } => "disconnect_sockets",
            Body::Applied { .. } => "applied",
            Body::FetchSockets { .. } => "fetch_sockets",
            Body::FetchSocketsResponse { .. } => "fetch_sockets_response",
            Body::AllRooms { .. } => "all_rooms",
            Body::AllRoomsResponse { .. } => "all_rooms_response",
            Body::ServerEvent { .. } => "server_event",
            Body::ServerEventResponse { .. } => "server_event_response",
            Body::Heartbeat { .. } => "heartbeat",
            Body::Hello { .. } => "hello",
            Body::Leave => "leave",
        }
    }

    /// The request id a response answers, if it is a response.
    pub(crate) fn response_to(&self) -> Option<RequestId> {
        match self {
            Body::AckCount { req, .. }
            | Body::Ack { req, .. }
            | Body::FetchSocketsResponse { req, .. }
            | Body::AllRoomsResponse { req, .. }
            | Body::ServerEventResponse { req, .. }
            | Body::Applied { req } => Some(*req),
            _ => None,
        }
    }
}

/// A socket as another node sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct WireSocket {
    /// Socket id.
    pub(crate) id: String,
    /// Node id holding the socket.
    pub(crate) node: String,
    /// socketioxide server id of that node.
    pub(crate) uid: String,
    /// Rooms the socket is in.
    pub(crate) rooms: Vec<String>,
    /// JSON-encoded socket data.
    #[serde(with = "serde_bytes")]
    pub(crate) data: Vec<u8>,
}

/// A parser-encoded payload: text (with binary attachments) or raw bytes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) enum WireValue {
    /// Text payload and its binary attachments.
    Str(String, Vec<ByteBuf>),
    /// Binary payload (msgpack parser).
    Bytes(ByteBuf),
}

impl From<&Value> for WireValue {
    fn from(v: &Value) -> Self {
        match v {
            Value::Str(s, bins) => WireValue::Str(
                s.as_str().to_owned(),
                bins.iter()
                    .flatten()
                    .map(|b| ByteBuf::from(b.to_vec()))
                    .collect(),
            ),
            Value::Bytes(b) => WireValue::Bytes(ByteBuf::from(b.to_vec())),
        }
    }
}

impl From<WireValue> for Value {
    fn from(v: WireValue) -> Self {
        match v {
            WireValue::Str(s, bins) => {
                let bins: VecDeque<Bytes> = bins
                    .into_iter()
                    .map(|b| Bytes::from(b.into_vec()))
                    .collect();
                Value::Str(
                    Str::from(s),
                    if bins.is_empty() { None } else { Some(bins) },
                )
            }
            WireValue::Bytes(b) => Value::Bytes(Bytes::from(b.into_vec())),
        }
    }
}

/// A Socket.IO packet on the wire.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct WirePacket {
    /// Namespace.
    pub(crate) ns: String,
    /// Socket.IO packet type (0 connect … 6 binary ack).
    pub(crate) kind: u8,
    /// Payload, if the packet type has one.
    pub(crate) data: Option<WireValue>,
    /// Ack id or connect-error message, if any.
    pub(crate) ack: Option<i64>,
    /// Connect error message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) message: Option<String>,
}

impl From<&Packet> for WirePacket {
    fn from(p: &Packet) -> Self {
        let (data, ack, message) = match &p.inner {
            PacketData::Connect(v) => (v.as_ref().map(WireValue::from), None, None),
            PacketData::Disconnect => (None, None, None),
            PacketData::Event(v, a) | PacketData::BinaryEvent(v, a) => {
                (Some(WireValue::from(v)), *a, None)
            }
            PacketData::EventAck(v, a) | PacketData::BinaryAck(v, a) => {
                (Some(WireValue::from(v)), Some(*a), None)
            }
            PacketData::ConnectError(m) => (None, None, Some(m.clone())),
        };
        WirePacket {
            ns: p.ns.as_str().to_owned(),
            kind: p.inner.index() as u8,
            data,
            ack,
            message,
        }
    }
}

/// Why a [`WirePacket`] could not become a [`Packet`].
#[derive(Debug, thiserror::Error)]
#[error("invalid packet on the wire: {0}")]
pub(crate) struct InvalidPacket(&'static str);

impl TryFrom<WirePacket> for Packet {
    type Error = InvalidPacket;
    fn try_from(p: WirePacket) -> std::result::Result<Self, InvalidPacket> {
        let data = || {
            p.data
                .clone()
                .map(Value::from)
                .ok_or(InvalidPacket("missing payload"))
        };
        let ack = || p.ack.ok_or(InvalidPacket("missing ack id"));
        let inner = match p.kind {
            0 => PacketData::Connect(p.data.clone().map(Value::from)),
            1 => PacketData::Disconnect,
            2 => PacketData::Event(data()?, p.ack),
            3 => PacketData::EventAck(data()?, ack()?),
            4 => PacketData::ConnectError(p.message.clone().unwrap_or_default()),
            5 => PacketData::BinaryEvent(data()?, p.ack),
            6 => PacketData::BinaryAck(data()?, ack()?),
            _ => return Err(InvalidPacket("unknown packet type")),
        };
        Ok(Packet {
            inner,
            ns: Str::from(p.ns),
        })
    }
}

/// One remote socket's ack: its id and the payload or the encoded error.
pub(crate) type RemoteAck = (String, std::result::Result<WireValue, ByteBuf>);

/// Encodes a socket layer's ack error for [`Body::Ack`] (msgpack, as the receiving node's
/// socket layer decodes it). An error that cannot be encoded travels as no bytes, which the
/// receiver reports as `failed`.
pub(crate) fn encode_ack_error<T: Serialize>(error: &T) -> ByteBuf {
    match rmp_serde::to_vec(error) {
        Ok(bytes) => ByteBuf::from(bytes),
        Err(e) => {
            tracing::warn!(error = %e, "ack error not encodable; sent as failed");
            ByteBuf::new()
        }
    }
}

/// Decodes an ack error of [`Body::Ack`].
///
/// # Errors
/// [`crate::Error::Decode`] on malformed input.
pub(crate) fn decode_ack_error<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    // Another node's bytes: scanned like an envelope before the decoder trusts a length.
    crate::shape::check(bytes).map_err(rmp_serde::decode::Error::from)?;
    Ok(rmp_serde::from_slice(bytes)?)
}

/// Encodes a JSON value carried as bytes (socket data, server-event arguments and responses).
pub(crate) fn json_bytes(value: &serde_json::Value) -> Vec<u8> {
    // Serializing a `Value` cannot fail: its map keys are strings. The fallback is unreachable.
    serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec())
}

/// Decodes a JSON value carried as bytes.
///
/// # Errors
/// [`crate::Error::Json`] when the bytes are not JSON.
pub(crate) fn json_value(bytes: &[u8]) -> Result<serde_json::Value> {
    Ok(serde_json::from_slice(bytes)?)
}

/// Encodes an envelope.
///
/// # Errors
/// [`crate::Error::Encode`] if serialization fails.
pub(crate) fn encode(env: &Envelope) -> Result<Vec<u8>> {
    Ok(rmp_serde::to_vec_named(env)?)
}

/// Decodes an envelope. The input is scanned first ([`crate::shape`]), so a declared length
/// beyond the input or a hostile nesting is refused before the decoder allocates for it.
///
/// # Errors
/// [`crate::Error::Decode`] on malformed input; never panics.
pub(crate) fn decode(bytes: &[u8]) -> Result<Envelope> {
    crate::shape::check(bytes).map_err(rmp_serde::decode::Error::from)?;
    Ok(rmp_serde::from_slice(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use socketioxide_core::Sid;

    fn roundtrip(body: Body) {
        let env = Envelope {
            v: WIRE_VERSION,
            origin: "node-a".into(),
            body,
        };
        let bytes = encode(&env).unwrap();
        assert_eq!(decode(&bytes).unwrap(), env);
    }

    #[test]
    fn broadcast_roundtrip_keeps_binary_as_bin() {
        let value = Value::Str(
            Str::from(r#"["evt",{"_placeholder":true,"num":0}]"#.to_owned()),
            Some(VecDeque::from([Bytes::from(vec![0u8; 1000])])),
        );
        let packet = Packet::event("/", value.clone());
        let mut opts = BroadcastOptions::default();
        opts.rooms.push("room1".into());
        opts.sid = Some(Sid::new());
        let body = Body::Broadcast {
            packet: WirePacket::from(&packet),
            opts,
            sent_at_us: 1,
            trace: None,
        };
        let env = Envelope {
            v: WIRE_VERSION,
            origin: "n".into(),
            body: body.clone(),
        };
        // A 1000-byte attachment must cost about 1000 bytes, not ~1.5x (ints).
        assert!(encode(&env).unwrap().len() < 1200);
        roundtrip(body);
        let back = Packet::try_from(WirePacket::from(&packet)).unwrap();
        assert_eq!(back, packet);
    }

    #[test]
    fn every_packet_type_roundtrips() {
        let v = || Value::Str(Str::from("[1]".to_owned()), None);
        for p in [
            Packet::event("/a", v()),
            Packet::ack("/a", v(), 3),
            Packet::disconnect("/a"),
            Packet::connect_error("/a", "nope"),
            Packet::connect("/a", None),
        ] {
            assert_eq!(Packet::try_from(WirePacket::from(&p)).unwrap(), p);
        }
    }

    #[test]
    fn responses_roundtrip() {
        roundtrip(Body::Ack {
            req: 7,
            sid: "abc".into(),
            result: Ok(WireValue::Bytes(ByteBuf::from(vec![1, 2, 3]))),
        });
        roundtrip(Body::FetchSocketsResponse {
            req: 1,
            sockets: vec![WireSocket {
                id: "s".into(),
                node: "n".into(),
                uid: "u".into(),
                rooms: vec!["r".into()],
                data: b"{}".to_vec(),
            }],
        });
        roundtrip(Body::Leave);
    }

    #[test]
    fn json_values_and_ack_errors_roundtrip_and_garbage_is_an_error() {
        let v = serde_json::json!({"a": [1, "x", null]});
        assert_eq!(json_value(&json_bytes(&v)).unwrap(), v);
        assert!(json_value(b"{not json").is_err());
        let e = encode_ack_error(&"Timeout");
        assert_eq!(decode_ack_error::<String>(&e).unwrap(), "Timeout");
        assert!(decode_ack_error::<String>(b"\xc1").is_err());
        assert!(decode_ack_error::<Vec<String>>(&[0xdd, 0xff, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&b""[..], b"\xff\xff", b"hello", &[0x92, 0x01][..]] {
            assert!(decode(bytes).is_err());
        }
        let bad = WirePacket {
            ns: "/".into(),
            kind: 9,
            data: None,
            ack: None,
            message: None,
        };
        assert!(Packet::try_from(bad).is_err());
    }
}
