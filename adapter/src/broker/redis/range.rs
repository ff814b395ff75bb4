//! Reading a namespace's history: the entries of an `XRANGE` answer, without trusting its shape.

use bytes::Bytes;
use fred::types::Value;

use super::Entry;
use crate::error::{Error, Result};

/// The entries of an `XRANGE` answer: `[[id, [field, value, ..]], ..]`, the values of `m` (the
/// envelope) and `q` (its number, when it has one).
pub(super) fn parse_range(answer: Value) -> Result<Vec<Entry>> {
    let Value::Array(entries) = answer else {
        return match answer {
            Value::Null => Ok(Vec::new()),
            _ => Err(Error::MalformedHistory),
        };
    };
    entries
        .into_iter()
        .map(|entry| {
            let Value::Array(mut parts) = entry else {
                return Err(Error::MalformedHistory);
            };
            let fields = parts.pop();
            let id = parts.pop().and_then(|v| v.as_string());
            let offset = id
                .and_then(|id| id.parse().ok())
                .ok_or(Error::MalformedHistory)?;
            let Some(Value::Array(fields)) = fields else {
                return Err(Error::MalformedHistory);
            };
            let field = |name: &str| {
                fields.chunks(2).find_map(|kv| match kv {
                    [k, Value::Bytes(b)] if k.as_str().as_deref() == Some(name) => Some(b.clone()),
                    [k, Value::String(s)] if k.as_str().as_deref() == Some(name) => {
                        Some(Bytes::copy_from_slice(s.as_bytes()))
                    }
                    _ => None,
                })
            };
            let seq = field("q").and_then(|q| std::str::from_utf8(&q).ok()?.parse().ok());
            Ok(Entry {
                offset,
                seq,
                payload: field("m").ok_or(Error::MalformedHistory)?,
            })
        })
        .collect()
}
