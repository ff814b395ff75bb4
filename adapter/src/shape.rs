//! A msgpack pre-scan run on every inbound message before it is decoded: each length the input
//! declares (strings, binaries, extensions, arrays, maps) must fit in the bytes that follow it,
//! and containers may nest only [`MAX_DEPTH`] deep.
//!
//! Why: the decoder trusts declared lengths for its first allocation. serde caps a `Vec`'s
//! preallocation, but smallvec (the rooms of `BroadcastOptions`) reserves whatever an array
//! header says, so five bytes declaring a 4-billion-element array would ask for ~100 GB before
//! the first element fails to read. After this scan, every container declares at most as many
//! elements as there are bytes left, so what the decoder reserves is bounded by the message
//! size, which is itself bounded before the scan. The scan is iterative: a hostile nesting
//! cannot overflow the stack here, and it stops the decoder's recursion early too.

/// Deepest nesting of arrays and maps accepted. Our envelopes nest at most 8 deep (envelope,
/// body, variant, packet, value, attachments, bytes); 32 leaves room for new fields while a
/// hostile input cannot make the decoder recurse hundreds of levels.
pub(crate) const MAX_DEPTH: usize = 32;

/// Why an input was refused before decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ShapeError {
    /// The input ended inside a value.
    #[error("input ends inside a value at byte {0}")]
    Truncated(usize),
    /// The marker 0xc1, which msgpack never uses.
    #[error("reserved marker at byte {0}")]
    Reserved(usize),
    /// A length larger than the bytes left.
    #[error("declared length {declared} at byte {at} exceeds the {left} bytes left")]
    LengthBeyondInput {
        /// Where the value starts.
        at: usize,
        /// The length it declares (elements for containers, bytes otherwise).
        declared: u64,
        /// Bytes after its header.
        left: usize,
    },
    /// Containers nested deeper than [`MAX_DEPTH`].
    #[error("containers nested deeper than {MAX_DEPTH}")]
    TooDeep,
}

impl From<ShapeError> for rmp_serde::decode::Error {
    fn from(e: ShapeError) -> Self {
        rmp_serde::decode::Error::Uncategorized(e.to_string())
    }
}

/// What a marker announces: payload bytes to skip, or a container of that many values.
enum Item {
    Skip(u64),
    Container(u64),
}

/// Reads a big-endian length of `n` bytes at `at`.
fn length(bytes: &[u8], at: usize, n: usize) -> Result<u64, ShapeError> {
    let field = bytes.get(at..at + n).ok_or(ShapeError::Truncated(at))?;
    Ok(field.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

/// Decodes the marker at `at`: the header's size and what follows it.
fn item(bytes: &[u8], at: usize) -> Result<(usize, Item), ShapeError> {
    let marker = *bytes.get(at).ok_or(ShapeError::Truncated(at))?;
    let len = |n: usize| length(bytes, at + 1, n);
    Ok(match marker {
        0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => (1, Item::Skip(0)),
        0x80..=0x8f => (1, Item::Container(2 * u64::from(marker & 0x0f))),
        0x90..=0x9f => (1, Item::Container(u64::from(marker & 0x0f))),
        0xa0..=0xbf => (1, Item::Skip(u64::from(marker & 0x1f))),
        0xc1 => return Err(ShapeError::Reserved(at)),
        0xc4 | 0xd9 => (2, Item::Skip(len(1)?)),
        0xc5 | 0xda => (3, Item::Skip(len(2)?)),
        0xc6 | 0xdb => (5, Item::Skip(len(4)?)),
        // Extensions: the length, then a type byte, then the data.
        0xc7 => (2, Item::Skip(len(1)? + 1)),
        0xc8 => (3, Item::Skip(len(2)? + 1)),
        0xc9 => (5, Item::Skip(len(4)? + 1)),
        0xca | 0xce | 0xd2 => (1, Item::Skip(4)),
        0xcb | 0xcf | 0xd3 => (1, Item::Skip(8)),
        0xcc | 0xd0 => (1, Item::Skip(1)),
        0xcd | 0xd1 => (1, Item::Skip(2)),
        0xd4 => (1, Item::Skip(2)),
        0xd5 => (1, Item::Skip(3)),
        0xd6 => (1, Item::Skip(5)),
        0xd7 => (1, Item::Skip(9)),
        0xd8 => (1, Item::Skip(17)),
        0xdc => (3, Item::Container(len(2)?)),
        0xdd => (5, Item::Container(len(4)?)),
        0xde => (3, Item::Container(2 * len(2)?)),
        0xdf => (5, Item::Container(2 * len(4)?)),
    })
}

/// Scans the first msgpack value of `bytes`; returns where it ends.
///
/// # Errors
/// The first [`ShapeError`] met, in input order.
pub(crate) fn check(bytes: &[u8]) -> Result<usize, ShapeError> {
    // Values still to read in each open container, innermost last; the root is one value.
    let mut open: Vec<u64> = Vec::with_capacity(MAX_DEPTH + 1);
    open.push(1);
    let mut at = 0;
    while let Some(left) = open.last_mut() {
        if *left == 0 {
            open.pop();
            continue;
        }
        *left -= 1;
        let (header, item) = item(bytes, at)?;
        let body = at + header;
        let remaining = bytes.len().saturating_sub(body);
        if body > bytes.len() {
            return Err(ShapeError::Truncated(at));
        }
        match item {
            Item::Skip(n) => {
                // `n <= remaining`, so the sum stays within the input's length.
                if n > remaining as u64 {
                    return Err(beyond(at, n, remaining));
                }
                at = body + n as usize;
            }
            Item::Container(n) => {
                // Every value takes at least one byte.
                if n > remaining as u64 {
                    return Err(beyond(at, n, remaining));
                }
                if open.len() > MAX_DEPTH {
                    return Err(ShapeError::TooDeep);
                }
                at = body;
                open.push(n);
            }
        }
    }
    Ok(at)
}

fn beyond(at: usize, declared: u64, left: usize) -> ShapeError {
    ShapeError::LengthBeyondInput { at, declared, left }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_values_are_scanned_to_their_end() {
        let v =
            serde_json::json!({"a": [1, "two", null, 3.5, -7, {"b": true}], "c": "x".repeat(300)});
        let bytes = rmp_serde::to_vec_named(&v).unwrap();
        assert_eq!(check(&bytes), Ok(bytes.len()));
        let bin = rmp_serde::to_vec(&serde_bytes::ByteBuf::from(vec![7u8; 70_000])).unwrap();
        assert_eq!(check(&bin), Ok(bin.len()));
    }

    #[test]
    fn huge_declared_lengths_are_refused_before_decoding() {
        for hostile in [
            &[0xdd, 0xff, 0xff, 0xff, 0xff][..],
            &[0xdf, 0x7f, 0xff, 0xff, 0xff, 0x00],
            &[0xdb, 0xff, 0xff, 0xff, 0xff, b'a'],
            &[0xc6, 0x00, 0x10, 0x00, 0x00],
            &[0xc9, 0xff, 0xff, 0xff, 0xff, 0x01],
            &[0x81, 0xa1, b'k', 0xdc, 0xff, 0xff, 0x01],
        ] {
            assert!(
                matches!(check(hostile), Err(ShapeError::LengthBeyondInput { .. })),
                "{hostile:x?}"
            );
        }
    }

    #[test]
    fn truncation_reserved_markers_and_deep_nesting_are_refused() {
        assert_eq!(check(&[]), Err(ShapeError::Truncated(0)));
        assert_eq!(check(&[0xdc, 0x00]), Err(ShapeError::Truncated(1)));
        assert_eq!(check(&[0x92, 0x01]), Err(beyond(0, 2, 1)));
        assert_eq!(check(&[0xcd, 0x01]), Err(beyond(0, 2, 1)));
        assert_eq!(check(&[0x91, 0xc1]), Err(ShapeError::Reserved(1)));
        let deep = [vec![0x91; MAX_DEPTH + 1], vec![0x01]].concat();
        assert_eq!(check(&deep), Err(ShapeError::TooDeep));
        let ok = [vec![0x91; MAX_DEPTH], vec![0x01]].concat();
        assert_eq!(check(&ok), Ok(ok.len()));
    }
}
