//! Wire framing the load generator speaks: Engine.IO v4 packets, Socket.IO v5 packets on top of
//! them (namespace connect, events, acks), the HTTP long-polling payload separator, and the
//! minimal text framing of the raw WebSocket baseline (`--protocol raw`).
//!
//! Everything here is string work on borrowed text, so the hot path (one parse per delivery)
//! allocates nothing until the JSON payload is decoded.

use std::fmt::Write as _;

use serde::Deserialize;

/// Engine.IO protocol revision sent in the `EIO` query parameter.
pub const EIO_VERSION: u8 = 4;

/// Separator of packets in one HTTP long-polling body (Engine.IO v4).
pub const RECORD_SEPARATOR: char = '\u{1e}';

/// A framing error: the peer sent something this client does not understand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProtocolError {}

fn err<T>(msg: impl Into<String>) -> Result<T, ProtocolError> {
    Err(ProtocolError(msg.into()))
}

/// One Engine.IO packet (text form).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnginePacket<'a> {
    /// `0{json}`: the handshake.
    Open(&'a str),
    /// `1`: the server closes the session.
    Close,
    /// `2[probe]`: heartbeat from the server; must be answered with a pong.
    Ping(&'a str),
    /// `3[probe]`
    Pong(&'a str),
    /// `4…`: a Socket.IO packet follows.
    Message(&'a str),
    /// `5`
    Upgrade,
    /// `6`
    Noop,
}

/// Parses one text Engine.IO packet.
///
/// # Errors
/// Empty input or an unknown packet type.
pub fn parse_engine(text: &str) -> Result<EnginePacket<'_>, ProtocolError> {
    let Some(kind) = text.as_bytes().first() else {
        return err("empty engine.io packet");
    };
    let rest = &text[1..];
    Ok(match kind {
        b'0' => EnginePacket::Open(rest),
        b'1' => EnginePacket::Close,
        b'2' => EnginePacket::Ping(rest),
        b'3' => EnginePacket::Pong(rest),
        b'4' => EnginePacket::Message(rest),
        b'5' => EnginePacket::Upgrade,
        b'6' => EnginePacket::Noop,
        other => {
            return err(format!(
                "unknown engine.io packet type {:?}",
                char::from(*other)
            ));
        }
    })
}

/// The JSON of the Engine.IO open packet.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenInfo {
    /// Session id (needed by polling requests).
    pub sid: String,
    /// Transports the session may upgrade to.
    #[serde(default)]
    pub upgrades: Vec<String>,
    /// Interval between server pings, in ms.
    pub ping_interval: u64,
    /// How long the server waits for a pong, in ms.
    pub ping_timeout: u64,
    /// Largest payload the server accepts.
    #[serde(default)]
    pub max_payload: Option<u64>,
}

/// Decodes the JSON of an open packet.
///
/// # Errors
/// If it is not the JSON Engine.IO v4 servers send.
pub fn parse_open(json: &str) -> Result<OpenInfo, ProtocolError> {
    serde_json::from_str(json).map_err(|e| ProtocolError(format!("bad open packet {json:?}: {e}")))
}

/// The pong answering a server ping (Engine.IO v4: the server pings, the client answers).
pub const PONG: &str = "3";

/// Socket.IO packet types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SioKind {
    Connect,
    Disconnect,
    Event,
    Ack,
    ConnectError,
    BinaryEvent,
    BinaryAck,
}

/// One Socket.IO packet, borrowed from the Engine.IO message that carried it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SioPacket<'a> {
    pub kind: SioKind,
    /// Namespace (`/` when the packet names none).
    pub nsp: &'a str,
    /// Ack id, for events that want an ack and for acks.
    pub id: Option<u64>,
    /// The JSON payload (may be empty, e.g. for a disconnect).
    pub data: &'a str,
}

/// Parses a Socket.IO v5 packet (the text after the Engine.IO `4`).
///
/// Grammar: `<type>[<attachments>-][<nsp>,][<id>][<json>]`; the namespace is present only when
/// it starts with `/`.
///
/// # Errors
/// Unknown type or malformed header.
pub fn parse_socketio(text: &str) -> Result<SioPacket<'_>, ProtocolError> {
    let bytes = text.as_bytes();
    let Some(&t) = bytes.first() else {
        return err("empty socket.io packet");
    };
    let kind = match t {
        b'0' => SioKind::Connect,
        b'1' => SioKind::Disconnect,
        b'2' => SioKind::Event,
        b'3' => SioKind::Ack,
        b'4' => SioKind::ConnectError,
        b'5' => SioKind::BinaryEvent,
        b'6' => SioKind::BinaryAck,
        other => {
            return err(format!(
                "unknown socket.io packet type {:?}",
                char::from(other)
            ));
        }
    };
    let mut i = 1;
    if matches!(kind, SioKind::BinaryEvent | SioKind::BinaryAck) {
        // Attachments never occur in this tool's traffic, but the header must still be skipped.
        let Some(dash) = text[i..].find('-') else {
            return err("binary packet without attachment count");
        };
        i += dash + 1;
    }
    let mut nsp = "/";
    if bytes.get(i) == Some(&b'/') {
        let end = text[i..].find(',').map_or(text.len(), |c| i + c);
        nsp = &text[i..end];
        i = (end + 1).min(text.len());
    }
    let digits = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
    let id = if digits > 0 {
        Some(
            text[i..i + digits]
                .parse()
                .map_err(|_| ProtocolError(format!("ack id out of range in {text:?}")))?,
        )
    } else {
        None
    };
    i += digits;
    Ok(SioPacket {
        kind,
        nsp,
        id,
        data: &text[i..],
    })
}

/// The namespace part of a packet header: nothing for `/`, else `/name,`.
pub fn nsp_prefix(nsp: &str) -> String {
    if nsp == "/" || nsp.is_empty() {
        String::new()
    } else {
        format!("{nsp},")
    }
}

/// Engine.IO message carrying a Socket.IO CONNECT to `nsp`, with the JSON `auth` payload
/// when there is one.
pub fn connect_packet(nsp: &str, auth: Option<&str>) -> String {
    format!("40{}{}", nsp_prefix(nsp), auth.unwrap_or(""))
}

/// Engine.IO message carrying a Socket.IO EVENT; `args_json` is the JSON array
/// `["event", arg…]`; `ack` asks the server to acknowledge with that id.
pub fn event_packet(prefix: &str, ack: Option<u64>, args_json: &str) -> String {
    let mut s = String::with_capacity(2 + prefix.len() + 20 + args_json.len());
    s.push_str("42");
    s.push_str(prefix);
    if let Some(id) = ack {
        let _ = write!(s, "{id}");
    }
    s.push_str(args_json);
    s
}

/// Quotes `s` as a JSON string.
pub fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// Splits an HTTP long-polling body into its packets.
pub fn split_payload(body: &str) -> impl Iterator<Item = &str> {
    body.split(RECORD_SEPARATOR).filter(|p| !p.is_empty())
}

/// Joins packets into one HTTP long-polling body.
pub fn join_payload<S: AsRef<str>>(packets: &[S]) -> String {
    let mut out = String::new();
    for (i, p) in packets.iter().enumerate() {
        if i > 0 {
            out.push(RECORD_SEPARATOR);
        }
        out.push_str(p.as_ref());
    }
    out
}

/// Reads the generator's delivery stamp `{"p":<n>,"r":<n>,"s":<n>,"t":<n>` (the key order
/// the generator writes, which every server keeps: serde_json sorts keys, Node keeps insertion
/// order, and `p` < `r` < `s` < `t` either way) from the first `{"p":` in `b`, without a JSON
/// parse: the generator's per-delivery cost must stay well below the servers'.
pub fn scan_stamp(b: &[u8]) -> Option<(usize, usize, u64, u64)> {
    let at = b.windows(5).position(|w| w == br#"{"p":"#)?;
    let mut rest = &b[at + 5..];
    let p = take_u64(&mut rest)?;
    rest = rest.strip_prefix(br#","r":"#)?;
    let r = take_u64(&mut rest)?;
    rest = rest.strip_prefix(br#","s":"#)?;
    let s = take_u64(&mut rest)?;
    rest = rest.strip_prefix(br#","t":"#)?;
    let t = take_u64(&mut rest)?;
    if !matches!(rest.first(), Some(b',' | b'}')) {
        return None;
    }
    Some((usize::try_from(p).ok()?, usize::try_from(r).ok()?, s, t))
}

fn take_u64(b: &mut &[u8]) -> Option<u64> {
    let n = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if n == 0 || n > 19 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in &b[..n] {
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    *b = &b[n..];
    Some(v)
}

/// The raw WebSocket baseline's framing: one text frame per message, fields separated by one
/// space, the data last (it may contain spaces).
///
/// | direction | frame |
/// |---|---|
/// | client → server | `j <ack> <room>` join, `l <ack> <room>` leave, `p <ack> <room> <data>` publish |
/// | server → client | `a <ack>` acknowledgement, `m <room> <data>` a message to a room member |
///
/// Room names must not contain spaces. The server acks a publish after it queued the message
/// to every member (the sender included when it is a member), like `/pubsub`'s ack.
pub mod raw {
    use super::{ProtocolError, err};

    /// A frame the server sends.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum ServerFrame<'a> {
        Ack(u64),
        Msg { room: &'a str, data: &'a str },
    }

    /// A frame a client sends.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum ClientFrame<'a> {
        Join {
            ack: u64,
            room: &'a str,
        },
        Leave {
            ack: u64,
            room: &'a str,
        },
        Publish {
            ack: u64,
            room: &'a str,
            data: &'a str,
        },
    }

    /// `j <ack> <room>`
    pub fn join(ack: u64, room: &str) -> String {
        format!("j {ack} {room}")
    }

    /// `l <ack> <room>`
    pub fn leave(ack: u64, room: &str) -> String {
        format!("l {ack} {room}")
    }

    /// `p <ack> <room> <data>`
    pub fn publish(ack: u64, room: &str, data: &str) -> String {
        format!("p {ack} {room} {data}")
    }

    /// `a <ack>`
    pub fn ack(ack: u64) -> String {
        format!("a {ack}")
    }

    /// `m <room> <data>`
    pub fn msg(room: &str, data: &str) -> String {
        format!("m {room} {data}")
    }

    fn ack_id(s: &str) -> Result<u64, ProtocolError> {
        s.parse()
            .map_err(|_| ProtocolError(format!("bad ack id {s:?}")))
    }

    /// Parses a frame from the server.
    ///
    /// # Errors
    /// Unknown opcode or missing fields.
    pub fn parse_server(text: &str) -> Result<ServerFrame<'_>, ProtocolError> {
        match text.split_once(' ') {
            Some(("a", id)) => Ok(ServerFrame::Ack(ack_id(id)?)),
            Some(("m", rest)) => match rest.split_once(' ') {
                Some((room, data)) => Ok(ServerFrame::Msg { room, data }),
                None => err("raw msg frame without data"),
            },
            _ => err(format!("unknown raw frame {text:?}")),
        }
    }

    /// Parses a frame from a client.
    ///
    /// # Errors
    /// Unknown opcode or missing fields.
    pub fn parse_client(text: &str) -> Result<ClientFrame<'_>, ProtocolError> {
        let mut it = text.splitn(4, ' ');
        let (op, id, room) = (it.next(), it.next(), it.next());
        let (Some(op), Some(id), Some(room)) = (op, id, room) else {
            return err(format!("short raw frame {text:?}"));
        };
        let ack = ack_id(id)?;
        match (op, it.next()) {
            ("j", None) => Ok(ClientFrame::Join { ack, room }),
            ("l", None) => Ok(ClientFrame::Leave { ack, room }),
            ("p", Some(data)) => Ok(ClientFrame::Publish { ack, room, data }),
            _ => err(format!("unknown raw frame {text:?}")),
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn stamps_are_scanned_in_either_key_order() {
        let sorted = br#"{"data":{"p":2,"r":0,"s":41,"t":123456,"x":"xx"},"room":"lt-room-0"}]"#;
        assert_eq!(scan_stamp(sorted), Some((2, 0, 41, 123_456)));
        let node = br#"{"room":"lt-room-3","data":{"p":0,"r":3,"s":0,"t":9}}]"#;
        assert_eq!(scan_stamp(node), Some((0, 3, 0, 9)));
        assert_eq!(
            scan_stamp(br#"lt-room-1 {"p":1,"r":1,"s":7,"t":8,"x":""}"#),
            Some((1, 1, 7, 8))
        );
        assert_eq!(
            scan_stamp(br#"{"p":1,"s":7,"r":1,"t":8}"#),
            None,
            "other order"
        );
        assert_eq!(
            scan_stamp(br#"{"p":1,"r":1,"s":7,"t":8"#),
            None,
            "cut short"
        );
        assert_eq!(scan_stamp(br#"{"p":-1,"r":1,"s":7,"t":8}"#), None);
        assert_eq!(
            scan_stamp(br#"{"p":1,"r":1,"s":99999999999999999999,"t":8}"#),
            None
        );
        assert_eq!(scan_stamp(b"no stamp"), None);
    }

    use super::*;

    #[test]
    fn engine_packets() {
        assert_eq!(parse_engine("2").unwrap(), EnginePacket::Ping(""));
        assert_eq!(parse_engine("2probe").unwrap(), EnginePacket::Ping("probe"));
        assert_eq!(
            parse_engine("40/pubsub,").unwrap(),
            EnginePacket::Message("0/pubsub,")
        );
        assert_eq!(parse_engine("1").unwrap(), EnginePacket::Close);
        assert!(parse_engine("").is_err());
        assert!(parse_engine("9").is_err());
        let open = r#"{"sid":"abc","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
        let text = format!("0{open}");
        let EnginePacket::Open(json) = parse_engine(&text).unwrap() else {
            panic!("not open");
        };
        let info = parse_open(json).unwrap();
        assert_eq!(info.sid, "abc");
        assert_eq!(info.ping_interval, 25_000);
        assert_eq!(info.max_payload, Some(1_000_000));
    }

    #[test]
    fn socketio_packets() {
        let p = parse_socketio(r#"0/pubsub,{"sid":"x"}"#).unwrap();
        assert_eq!(
            (p.kind, p.nsp, p.id, p.data),
            (SioKind::Connect, "/pubsub", None, r#"{"sid":"x"}"#)
        );
        let p = parse_socketio(r#"3/pubsub,17[{"ok":true}]"#).unwrap();
        assert_eq!(
            (p.kind, p.nsp, p.id, p.data),
            (SioKind::Ack, "/pubsub", Some(17), r#"[{"ok":true}]"#)
        );
        let p = parse_socketio(r#"2["message-added",{}]"#).unwrap();
        assert_eq!((p.kind, p.nsp, p.id), (SioKind::Event, "/", None));
        let p = parse_socketio("51-/pubsub,12[\"e\"]").unwrap();
        assert_eq!(
            (p.kind, p.nsp, p.id, p.data),
            (SioKind::BinaryEvent, "/pubsub", Some(12), "[\"e\"]")
        );
        let p = parse_socketio("1/pubsub,").unwrap();
        assert_eq!(
            (p.kind, p.nsp, p.data),
            (SioKind::Disconnect, "/pubsub", "")
        );
        let p = parse_socketio(r#"4{"message":"no"}"#).unwrap();
        assert_eq!((p.kind, p.nsp), (SioKind::ConnectError, "/"));
        assert!(parse_socketio("x").is_err());
    }

    #[test]
    fn encoders() {
        assert_eq!(connect_packet("/pubsub", None), "40/pubsub,");
        assert_eq!(connect_packet("/", None), "40");
        assert_eq!(
            connect_packet("/pubsub", Some(r#"{"token":"t"}"#)),
            r#"40/pubsub,{"token":"t"}"#
        );
        let prefix = nsp_prefix("/pubsub");
        assert_eq!(
            event_packet(&prefix, Some(3), r#"["join","r"]"#),
            r#"42/pubsub,3["join","r"]"#
        );
        assert_eq!(event_packet("", None, r#"["a"]"#), r#"42["a"]"#);
        assert_eq!(json_str("a\"b"), r#""a\"b""#);
        let body = join_payload(&["2", "42[\"x\"]"]);
        assert_eq!(
            split_payload(&body).collect::<Vec<_>>(),
            vec!["2", "42[\"x\"]"]
        );
    }

    #[test]
    fn raw_frames() {
        use raw::*;
        assert_eq!(parse_server(&ack(5)).unwrap(), ServerFrame::Ack(5));
        assert_eq!(
            parse_server(&msg("r1", "{\"a\": 1}")).unwrap(),
            ServerFrame::Msg {
                room: "r1",
                data: "{\"a\": 1}"
            }
        );
        assert_eq!(
            parse_client(&join(1, "r")).unwrap(),
            ClientFrame::Join { ack: 1, room: "r" }
        );
        assert_eq!(
            parse_client(&leave(2, "r")).unwrap(),
            ClientFrame::Leave { ack: 2, room: "r" }
        );
        assert_eq!(
            parse_client(&publish(3, "r", "x y")).unwrap(),
            ClientFrame::Publish {
                ack: 3,
                room: "r",
                data: "x y"
            }
        );
        assert!(parse_client("p 1 r").is_err());
        assert!(parse_client("j x r").is_err());
        assert!(parse_server("z").is_err());
    }
}
