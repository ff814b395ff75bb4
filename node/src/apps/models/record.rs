//! What the CRUD dialects' records are and how they are checked, apart from where they are
//! stored: the record type, limits and collection modes, the errors a client is told, ids,
//! collection names and the loose matching of filters.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::refusal::{Code, Refused};

/// A record: a JSON object whose `id` field the store owns.
pub type Record = serde_json::Map<String, Value>;

/// Longest collection name.
pub const MAX_COLLECTION_CHARS: usize = 64;

/// Limits that keep one client from exhausting the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest record, serialised as JSON, id included.
    pub max_record_bytes: usize,
    /// Most records per collection.
    pub max_records: usize,
    /// Most bytes the records of one collection may hold, serialised as JSON (ids included).
    pub max_collection_bytes: usize,
    /// Most collections in open mode.
    pub max_collections: usize,
    /// Most records one socket connection may create over its life, in every collection.
    pub max_records_per_client: usize,
}

/// Which collections clients may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Collections {
    /// Only these (`--collections`).
    Listed(BTreeSet<String>),
    /// Any valid name, up to `Limits::max_collections` of them.
    Open,
}

/// Why a model operation failed. `status` maps it to an HTTP-like code for the dialects that
/// have one (Sails).
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The collection is not allowed by `--collections`.
    #[error("unknown collection {0:?}")]
    UnknownCollection(String),
    /// The collection name does not match the safe pattern.
    #[error(
        "invalid collection name {0:?}: 1-64 letters, digits, '_' or '-', starting with a letter or digit"
    )]
    BadCollectionName(String),
    /// Open mode already holds `--max-collections` collections.
    #[error("too many collections (at most {0})")]
    TooManyCollections(usize),
    /// The collection holds `--max-records` records.
    #[error("collection {0:?} is full (at most {1} records)")]
    CollectionFull(String, usize),
    /// The record would take the collection over `--max-collection-bytes`.
    #[error(
        "collection {collection:?} is full (its records may hold at most {max} bytes of JSON); remove or shrink records first"
    )]
    CollectionBytesFull {
        /// Collection.
        collection: String,
        /// Limit.
        max: usize,
    },
    /// The socket already created `--max-records-per-client` records.
    #[error("this connection has created its limit of {0} records")]
    ClientRecordsExhausted(usize),
    /// No record with that id.
    #[error("{collection} {id} not found")]
    NotFound {
        /// Collection.
        collection: String,
        /// Id looked for.
        id: u64,
    },
    /// The record would exceed `--max-record-bytes`.
    #[error("record of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Serialised size.
        size: usize,
        /// Limit.
        max: usize,
    },
    /// Malformed client input (wrong type, bad id, …).
    #[error("{0}")]
    Invalid(String),
    /// Too many concurrent writers on one record.
    #[error("{collection} {id} is being changed concurrently; retry")]
    Conflict {
        /// Collection.
        collection: String,
        /// Record id.
        id: u64,
    },
    /// Redis failed; nothing was changed, or the change is unknown (a timeout).
    #[error("storage unavailable: {0}")]
    Redis(#[from] fred::error::Error),
    /// A stored value is not a JSON object (written by something else than a node).
    #[error("stored record {collection} {id} is not a JSON object")]
    Corrupt {
        /// Collection.
        collection: String,
        /// Record id.
        id: u64,
    },
}

impl ModelError {
    /// No record `id` in `collection`.
    pub fn not_found(collection: &str, id: u64) -> Self {
        ModelError::NotFound {
            collection: collection.to_owned(),
            id,
        }
    }

    /// `collection` cannot take more bytes (`--max-collection-bytes`).
    pub fn bytes_full(collection: &str, limits: &Limits) -> Self {
        ModelError::CollectionBytesFull {
            collection: collection.to_owned(),
            max: limits.max_collection_bytes,
        }
    }

    /// The HTTP status a REST client would get.
    pub fn status(&self) -> u16 {
        match self {
            ModelError::UnknownCollection(_)
            | ModelError::BadCollectionName(_)
            | ModelError::NotFound { .. } => 404,
            ModelError::Invalid(_) => 400,
            ModelError::TooLarge { .. } => 413,
            ModelError::TooManyCollections(_)
            | ModelError::CollectionFull(..)
            | ModelError::CollectionBytesFull { .. }
            | ModelError::Conflict { .. } => 409,
            // `busy`: this connection may create no more; others still may.
            ModelError::ClientRecordsExhausted(_) => 429,
            ModelError::Redis(_) => 503,
            ModelError::Corrupt { .. } => 500,
        }
    }

    /// Whether the client (not the server) is at fault.
    pub fn is_client_error(&self) -> bool {
        self.status() < 500
    }

    /// What the client is told. A server-side cause is internal: it is logged under a request
    /// id, and the client gets a fixed text, the code and that id. Call it once per answer.
    pub fn refused(&self) -> Refused {
        let code = Code::from_status(self.status());
        match self {
            ModelError::Redis(_) => Refused::internal(
                code,
                "storage unavailable, retry later",
                "model request",
                self,
            ),
            ModelError::Corrupt { .. } => {
                Refused::internal(code, "a stored record is unreadable", "model request", self)
            }
            e => Refused::new(code, e.to_string()),
        }
    }
}

/// `record` as the JSON text the store keeps.
///
/// # Errors
/// `TooLarge` over `--max-record-bytes`.
pub fn checked_json(record: &Record, limits: &Limits) -> Result<String, ModelError> {
    let text = serde_json::to_string(record)
        .map_err(|e| ModelError::Invalid(format!("record cannot be serialised: {e}")))?;
    if text.len() > limits.max_record_bytes {
        return Err(ModelError::TooLarge {
            size: text.len(),
            max: limits.max_record_bytes,
        });
    }
    Ok(text)
}

/// The length of a stored record as JSON: what it counts against `--max-collection-bytes`.
pub fn json_len(record: &Record) -> usize {
    // A map of JSON values always serialises; 0 only keeps a bug from panicking.
    serde_json::to_string(record).map_or(0, |t| t.len())
}

/// Whether `name` may name a collection: it becomes part of Redis keys, room names, event names
/// and URLs, so only `[A-Za-z0-9_-]`, starting with a letter or digit.
pub fn valid_collection_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() <= MAX_COLLECTION_CHARS
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A record id from client input: a non-negative integer, or a string of digits (ids travel in
/// URLs and Backbone end points as text).
///
/// # Errors
/// `ModelError::Invalid` for anything else.
pub fn parse_id(v: &Value) -> Result<u64, ModelError> {
    let bad = || ModelError::Invalid(format!("id must be a non-negative integer, got {v}"));
    match v {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 9.0e15)
                    .map(|f| f as u64)
            })
            .ok_or_else(bad),
        Value::String(s) => parse_id_str(s).ok_or_else(bad),
        _ => Err(bad()),
    }
}

/// A record id from text (a URL segment).
pub fn parse_id_str(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Loose equality of a stored value and a filter value: JSON equality, numbers compared by
/// value (`1` matches `1.0`), and a string matching a number or boolean of the same text
/// (filters from URL query strings are always strings).
pub fn loosely_equal(stored: &Value, wanted: &Value) -> bool {
    match (stored, wanted) {
        (Value::Number(a), Value::Number(b)) => a == b || a.as_f64() == b.as_f64(),
        (Value::Number(n), Value::String(s)) | (Value::String(s), Value::Number(n)) => {
            s.trim().parse::<f64>().ok() == n.as_f64()
        }
        (Value::Bool(b), Value::String(s)) | (Value::String(s), Value::Bool(b)) => {
            s == if *b { "true" } else { "false" }
        }
        (a, b) => a == b,
    }
}

/// Whether `record` has every field of `filter` with an equal value.
pub fn matches(record: &Record, filter: &Record) -> bool {
    filter
        .iter()
        .all(|(k, want)| record.get(k).is_some_and(|have| loosely_equal(have, want)))
}

/// How an update combines the stored record with the new data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateMode {
    /// Fields of the data replace the stored ones; other stored fields stay (ko.ninja, Sails).
    Merge,
    /// The data becomes the record (Backbone's `update` sends every attribute).
    Replace,
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use serde_json::json;

    /// The object of `v`, empty for anything else.
    pub(in crate::apps::models) fn obj(v: Value) -> Record {
        match v {
            Value::Object(m) => m,
            _ => Record::new(),
        }
    }

    #[test]
    fn collection_names() {
        assert!(valid_collection_name("todos"));
        assert!(valid_collection_name("my-list_2"));
        assert!(valid_collection_name("9lives"));
        assert!(!valid_collection_name(""));
        assert!(!valid_collection_name("-x"));
        assert!(!valid_collection_name("a:b"));
        assert!(!valid_collection_name("a{b}"));
        assert!(!valid_collection_name("a/b"));
        assert!(!valid_collection_name(&"a".repeat(65)));
    }

    #[test]
    fn ids() {
        assert_eq!(parse_id(&json!(3)).unwrap(), 3);
        assert_eq!(parse_id(&json!("42")).unwrap(), 42);
        assert_eq!(parse_id(&json!(4.0)).unwrap(), 4);
        assert!(parse_id(&json!(-1)).is_err());
        assert!(parse_id(&json!(1.5)).is_err());
        assert!(parse_id(&json!("4a")).is_err());
        assert!(parse_id(&json!(null)).is_err());
        assert!(parse_id(&json!({"id": 1})).is_err());
    }

    #[test]
    fn store_limits_are_the_clients_fault() {
        let full = ModelError::CollectionBytesFull {
            collection: "todos".into(),
            max: 2000,
        };
        let r = full.refused();
        assert_eq!((full.status(), r.code), (409, Code::Conflict));
        assert!(full.is_client_error() && r.request_id.is_none());
        assert!(r.error.contains("2000 bytes"), "{}", r.error);
        let spent = ModelError::ClientRecordsExhausted(3);
        let r = spent.refused();
        assert_eq!((spent.status(), r.code), (429, Code::Busy));
        assert!(spent.is_client_error() && r.request_id.is_none());
        assert!(r.error.contains("limit of 3 records"), "{}", r.error);
    }

    #[test]
    fn filters() {
        let r = obj(json!({"id": 1, "name": "a", "n": 2, "done": true}));
        assert!(matches(&r, &Record::new()));
        assert!(matches(&r, &obj(json!({"name": "a"}))));
        assert!(matches(&r, &obj(json!({"n": 2.0, "done": "true"}))));
        assert!(matches(&r, &obj(json!({"n": "2", "id": "1"}))));
        assert!(!matches(&r, &obj(json!({"name": "b"}))));
        assert!(!matches(&r, &obj(json!({"missing": null}))));
    }
}
