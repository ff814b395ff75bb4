//! History offsets and their framing on the wire: what ties a broadcast kept in a namespace's
//! history stream to the copy every subscriber receives.
//!
//! A recorded broadcast is appended to the namespace's Redis stream and published in the same
//! step (one Lua script), prefixed with the id the stream gave it: `!{ms}-{seq}\n{envelope}`.
//! A plain message is a msgpack envelope, which never starts with `!`, so the two cannot be
//! confused. Because the script runs atomically, every subscriber sees history ids in stream
//! order, whatever the channel: that is what lets a node or a client say "I have everything up
//! to this id" and be given exactly what came after.

use std::{fmt, str::FromStr};

/// The first byte of a recorded broadcast.
pub(crate) const STAMP: u8 = b'!';

/// A history stream id (`{ms}-{seq}`), ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Offset {
    ms: u64,
    seq: u64,
}

impl Offset {
    /// The offset `ms-seq`.
    pub fn new(ms: u64, seq: u64) -> Self {
        Self { ms, seq }
    }

    /// The next id in the same millisecond.
    pub(crate) fn next(self) -> Self {
        Self {
            ms: self.ms,
            seq: self.seq + 1,
        }
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Text that is not a stream id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a history offset")]
pub struct BadOffset;

impl FromStr for Offset {
    type Err = BadOffset;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ms, seq) = s.split_once('-').ok_or(BadOffset)?;
        let digits =
            |t: &str| !t.is_empty() && t.len() <= 20 && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return Err(BadOffset);
        }
        Ok(Self {
            ms: ms.parse().map_err(|_| BadOffset)?,
            seq: seq.parse().map_err(|_| BadOffset)?,
        })
    }
}

/// Why a socket's missed broadcasts could not be given back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// The history no longer holds the client's offset: what followed it may be gone.
    #[error("the history no longer reaches back to the offset")]
    Trimmed,
    /// The history could not be read.
    #[error("the history could not be read")]
    Unavailable,
}

/// Frames a recorded broadcast as the broker publishes it.
pub(crate) fn stamp(offset: Offset, envelope: &[u8]) -> Vec<u8> {
    let head = format!("!{offset}\n");
    let mut out = Vec::with_capacity(head.len() + envelope.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(envelope);
    out
}

/// Splits a received message into its history offset (recorded broadcasts only) and its
/// envelope; `Err` for a stamp that does not parse.
pub(crate) fn unstamp(payload: &[u8]) -> Result<(Option<Offset>, &[u8]), BadOffset> {
    if payload.first() != Some(&STAMP) {
        return Ok((None, payload));
    }
    let end = payload
        .iter()
        .take(48)
        .position(|&b| b == b'\n')
        .ok_or(BadOffset)?;
    let text = std::str::from_utf8(&payload[1..end]).map_err(|_| BadOffset)?;
    Ok((Some(text.parse()?), &payload[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_order_like_redis_stream_ids() {
        let a: Offset = "1700000000000-9".parse().unwrap();
        let b: Offset = "1700000000000-10".parse().unwrap();
        let c: Offset = "1700000000001-0".parse().unwrap();
        assert!(a < b && b < c);
        assert_eq!(b.to_string(), "1700000000000-10");
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "1-2-3",
            "a-1",
            "1 -2",
            "123456789012345678901-0",
        ] {
            assert!(bad.parse::<Offset>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_stamp_round_trips_and_plain_messages_pass_through() {
        let env = [0x93u8, 1, 2, 3];
        let framed = stamp(Offset::new(5, 1), &env);
        assert_eq!(
            unstamp(&framed).unwrap(),
            (Some(Offset::new(5, 1)), &env[..])
        );
        assert_eq!(unstamp(&env).unwrap(), (None, &env[..]));
        assert!(unstamp(b"!5-1").is_err());
        assert!(unstamp(b"!x-1\n\x93").is_err());
    }
}
