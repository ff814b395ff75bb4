//! Range checks of a decoded envelope from another node, before anything acts on it: a valid
//! but hostile message on Redis (a forged node id, an ack wait of years, an impossible count)
//! is refused and counted instead of trusted.

use crate::wire::{Body, Envelope};

/// Longest node id, socketioxide server id or socket id accepted from the wire. Generated node
/// ids are at most 49 bytes (40 of host name, a dash, 8 hex digits) and socketioxide's ids 16;
/// 128 leaves room for configured names while bounding what a forged id costs in the
/// membership table, in logs and in the channel names built from it.
pub const MAX_ID_BYTES: usize = 128;

/// Longest time a node keeps its sockets' acks open for another node's broadcast. The node's
/// HTTP API allows 60 s; ten minutes is beyond any interactive ack, and a forged `u64::MAX`
/// would otherwise hold the ack streams (and their tasks) for ever.
pub const MAX_ACK_TIMEOUT_MS: u64 = 10 * 60 * 1000;

/// Largest socket count a node may announce (heartbeats, ack counts): beyond the ten million
/// connections the largest single-process demonstrations reach, so only forged counts hit it.
pub const MAX_SOCKETS_PER_NODE: u32 = 1 << 26;

/// Longest server-side event name: names are code, not data.
pub const MAX_EVENT_NAME_BYTES: usize = 256;

/// A field of an envelope outside its range. Only the field is named: its value may be large
/// and is not logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} out of range")]
pub(crate) struct OutOfRange(pub(crate) &'static str);

/// Whether `id` can name a node, a server or a socket: 1 to [`MAX_ID_BYTES`] bytes, no `#`
/// (it ends up in channel names, where `#` separates parts) and no control characters (it
/// ends up in logs).
pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_BYTES && !id.chars().any(|c| c == '#' || c.is_control())
}

fn id(field: &'static str, value: &str) -> Result<(), OutOfRange> {
    if valid_id(value) {
        Ok(())
    } else {
        Err(OutOfRange(field))
    }
}

fn sockets(field: &'static str, n: u32) -> Result<(), OutOfRange> {
    if n <= MAX_SOCKETS_PER_NODE {
        Ok(())
    } else {
        Err(OutOfRange(field))
    }
}

/// Checks the fields the receiving node acts on.
///
/// # Errors
/// The first field out of its range.
pub(crate) fn check(env: &Envelope) -> Result<(), OutOfRange> {
    id("origin", &env.origin)?;
    match &env.body {
        // Server ids in broadcast options are fixed-size ids: their decoder checks them.
        Body::BroadcastWithAck { timeout_ms, .. } if *timeout_ms > MAX_ACK_TIMEOUT_MS => {
            Err(OutOfRange("timeout_ms"))
        }
        Body::AckCount { count, .. } => sockets("count", *count),
        Body::Ack { sid, .. } => id("sid", sid),
        Body::FetchSocketsResponse { sockets: list, .. } => list.iter().try_for_each(|s| {
            id("socket.id", &s.id)?;
            id("socket.node", &s.node)?;
            id("socket.uid", &s.uid)
        }),
        Body::ServerEvent { event, .. }
            if event.is_empty() || event.len() > MAX_EVENT_NAME_BYTES =>
        {
            Err(OutOfRange("event"))
        }
        Body::Heartbeat { uid, sockets: n } | Body::Hello { uid, sockets: n } => {
            id("uid", uid)?;
            sockets("sockets", *n)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::WIRE_VERSION;

    fn env(origin: &str, body: Body) -> Envelope {
        Envelope {
            v: WIRE_VERSION,
            origin: origin.into(),
            body,
        }
    }

    #[test]
    fn ids_are_bounded_in_length_and_shape() {
        assert!(valid_id("web-1.example:3000"));
        assert!(valid_id(&"a".repeat(MAX_ID_BYTES)));
        for bad in ["", "a#b", "a\nb", "\u{7f}"] {
            assert!(!valid_id(bad), "{bad:?}");
        }
        assert!(!valid_id(&"a".repeat(MAX_ID_BYTES + 1)));
        assert_eq!(check(&env("x#y", Body::Leave)), Err(OutOfRange("origin")));
    }

    #[test]
    fn hostile_timeouts_counts_and_names_are_refused() {
        let hb = |n| Body::Heartbeat {
            uid: "u".into(),
            sockets: n,
        };
        assert_eq!(check(&env("a", hb(3))), Ok(()));
        assert_eq!(check(&env("a", hb(u32::MAX))), Err(OutOfRange("sockets")));
        let count = Body::AckCount {
            req: 1,
            count: MAX_SOCKETS_PER_NODE + 1,
        };
        assert_eq!(check(&env("a", count)), Err(OutOfRange("count")));
        let event = |name: String| Body::ServerEvent {
            req: None,
            event: name,
            args: b"[]".to_vec(),
        };
        assert_eq!(check(&env("a", event("e".into()))), Ok(()));
        let long = "e".repeat(MAX_EVENT_NAME_BYTES + 1);
        assert_eq!(check(&env("a", event(long))), Err(OutOfRange("event")));
    }
}
