//! Reading deliveries: the stamp a delivered message carries, read straight from the bytes on
//! the fast path (`/pubsub` and raw messages) and through the full parsers otherwise.

use serde::Deserialize;

use super::Flavor;
use super::ctx::Ctx;
use crate::client::Protocol;
use crate::protocol::{self, SioKind};

/// The stamp a delivery carries.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub struct Stamp {
    pub p: usize,
    pub r: usize,
    pub s: u64,
    pub t: u64,
}

#[derive(Deserialize)]
struct MsgBody {
    data: Stamp,
}

#[derive(Deserialize)]
struct ChatBody<'a> {
    #[serde(borrow)]
    message: std::borrow::Cow<'a, str>,
}

/// Extracts the stamp of a delivered event (`data` is the Socket.IO event's JSON array).
pub fn parse_delivery(flavor: Flavor, data: &str) -> Option<Stamp> {
    match flavor {
        Flavor::PubSub => {
            let (ev, body): (std::borrow::Cow<'_, str>, MsgBody) =
                serde_json::from_str(data).ok()?;
            (ev == "msg").then_some(body.data)
        }
        Flavor::Chat => {
            let (ev, body): (std::borrow::Cow<'_, str>, ChatBody<'_>) =
                serde_json::from_str(data).ok()?;
            if ev != "message-added" {
                return None;
            }
            let mut it = body.message.splitn(5, '.');
            Some(Stamp {
                p: it.next()?.parse().ok()?,
                r: it.next()?.parse().ok()?,
                s: it.next()?.parse().ok()?,
                t: it.next()?.parse().ok()?,
            })
        }
        Flavor::Rpc { .. } => None,
    }
}

/// The stamp of a `/pubsub` delivery (`42/pubsub,["msg",{…"data":{"p":…,"r":…,"s":…,"t":…`)
/// or a raw `m <room> {"p":…` frame, read without a JSON parse; `None` for anything else,
/// which then takes the full parse.
pub(super) fn fast_delivery(ctx: &Ctx, m: &[u8]) -> Option<Stamp> {
    let body = match (ctx.flavor, ctx.protocol) {
        (Flavor::PubSub, Protocol::Socketio) => {
            let rest = m.strip_prefix(b"42")?.strip_prefix(ctx.prefix.as_bytes())?;
            rest.strip_prefix(br#"["msg",{"#)?
        }
        (Flavor::PubSub, Protocol::Raw) => m.strip_prefix(b"m ")?,
        _ => return None,
    };
    protocol::scan_stamp(body).map(|(p, r, s, t)| Stamp { p, r, s, t })
}

/// The full parse: a delivery's stamp, or an ack `(id, is_error)`, or neither.
pub(super) fn slow_parse(ctx: &Ctx, m: &[u8]) -> (Option<Stamp>, Option<(u64, bool)>) {
    let Ok(text) = std::str::from_utf8(m) else {
        return (None, None);
    };
    match ctx.protocol {
        Protocol::Socketio => {
            let Some(rest) = text.get(1..) else {
                return (None, None);
            };
            let Ok(p) = protocol::parse_socketio(rest) else {
                return (None, None);
            };
            if p.nsp != ctx.nsp {
                return (None, None);
            }
            match p.kind {
                SioKind::Event => (parse_delivery(ctx.flavor, p.data), None),
                SioKind::Ack => (None, p.id.map(|id| (id, p.data.contains("\"error\"")))),
                _ => (None, None),
            }
        }
        Protocol::Raw => match protocol::raw::parse_server(text) {
            Ok(protocol::raw::ServerFrame::Ack(id)) => (None, Some((id, false))),
            Ok(protocol::raw::ServerFrame::Msg { data, .. }) => {
                (serde_json::from_str::<Stamp>(data).ok(), None)
            }
            Err(_) => (None, None),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_parse() {
        let pubsub = r#"["msg",{"room":"lt-room-0","data":{"p":2,"r":0,"s":9,"t":123,"x":"xx"}}]"#;
        assert_eq!(
            parse_delivery(Flavor::PubSub, pubsub),
            Some(Stamp {
                p: 2,
                r: 0,
                s: 9,
                t: 123
            })
        );
        assert_eq!(parse_delivery(Flavor::PubSub, r#"["other",{}]"#), None);
        let chat = r#"["message-added",{"name":"lt-1","message":"1.0.5.77.xxxx","time_ms":1}]"#;
        assert_eq!(
            parse_delivery(Flavor::Chat, chat),
            Some(Stamp {
                p: 1,
                r: 0,
                s: 5,
                t: 77
            })
        );
        assert_eq!(
            parse_delivery(Flavor::Chat, r#"["messages-available",[]]"#),
            None
        );
    }
}
