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

/// A recorded broadcast's place in what its publisher sent on its channel: `epoch` names the
/// publisher's counter for that channel (random, new whenever the counter is), `n` counts from
/// 0. A receiver that sees `n` jump knows exactly how many it missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Seq {
    pub(crate) epoch: u64,
    pub(crate) n: u64,
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}:{}", self.epoch, self.n)
    }
}

impl FromStr for Seq {
    type Err = BadOffset;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (epoch, n) = s.split_once(':').ok_or(BadOffset)?;
        if epoch.is_empty() || epoch.len() > 16 || n.is_empty() || n.len() > 20 {
            return Err(BadOffset);
        }
        Ok(Self {
            epoch: u64::from_str_radix(epoch, 16).map_err(|_| BadOffset)?,
            n: n.parse().map_err(|_| BadOffset)?,
        })
    }
}

/// Frames a recorded broadcast as the broker publishes it: `!{offset}[ {seq}]\n{envelope}`.
pub(crate) fn stamp(offset: Offset, seq: Option<Seq>, envelope: &[u8]) -> Vec<u8> {
    let head = match seq {
        Some(seq) => format!("!{offset} {seq}\n"),
        None => format!("!{offset}\n"),
    };
    let mut out = Vec::with_capacity(head.len() + envelope.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(envelope);
    out
}

/// What a received message is: a recorded broadcast's offset and sequence, and the envelope.
pub(crate) type Unstamped<'a> = (Option<Offset>, Option<Seq>, &'a [u8]);

/// Splits a received message into its history offset and sequence (recorded broadcasts only)
/// and its envelope; `Err` for a stamp that does not parse.
pub(crate) fn unstamp(payload: &[u8]) -> Result<Unstamped<'_>, BadOffset> {
    if payload.first() != Some(&STAMP) {
        return Ok((None, None, payload));
    }
    let end = payload
        .iter()
        .take(96)
        .position(|&b| b == b'\n')
        .ok_or(BadOffset)?;
    let text = std::str::from_utf8(&payload[1..end]).map_err(|_| BadOffset)?;
    let (offset, seq) = match text.split_once(' ') {
        Some((offset, seq)) => (offset.parse()?, Some(seq.parse()?)),
        None => (text.parse()?, None),
    };
    Ok((Some(offset), seq, &payload[end + 1..]))
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
        let framed = stamp(Offset::new(5, 1), None, &env);
        assert_eq!(
            unstamp(&framed).unwrap(),
            (Some(Offset::new(5, 1)), None, &env[..])
        );
        let seq = Seq {
            epoch: u64::MAX,
            n: u64::MAX,
        };
        let framed = stamp(Offset::new(u64::MAX, u64::MAX), Some(seq), &env);
        assert_eq!(
            unstamp(&framed).unwrap(),
            (Some(Offset::new(u64::MAX, u64::MAX)), Some(seq), &env[..])
        );
        assert_eq!(unstamp(&env).unwrap(), (None, None, &env[..]));
        assert!(unstamp(b"!5-1").is_err());
        assert!(unstamp(b"!x-1\n\x93").is_err());
        for bad in [
            "!5-1 \n",
            "!5-1 x\n",
            "!5-1 1:\n",
            "!5-1 :1\n",
            "!5-1 g:1\n",
        ] {
            assert!(unstamp(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }
}
