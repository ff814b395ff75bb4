//! Error types of the adapter: what can go wrong talking to Redis or decoding the wire format.

use socketioxide_core::adapter::errors::AdapterError;

/// Errors returned by the adapter and its driver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Redis client failed (connection, command or configuration).
    #[error("redis error: {0}")]
    Redis(#[from] fred::error::Error),
    /// A message could not be encoded to the wire format.
    #[error("wire encode error: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// A message from the wire could not be decoded.
    #[error("wire decode error: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    /// A JSON value from the wire (socket data, server-event arguments) could not be decoded.
    #[error("wire JSON error: {0}")]
    Json(#[from] serde_json::Error),
    /// The message is larger than the configured maximum.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the encoded message.
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// The Redis URL or adapter configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The namespace path cannot be used in a channel name.
    #[error("namespace {0:?} cannot be used in a channel name (it contains '#')")]
    MalformedNamespace(String),
    /// Redis refused a subscribe or unsubscribe (the channels stay wanted and are subscribed
    /// again on the next reconnection).
    #[error("redis subscription failed: {0}")]
    Subscription(String),
    /// The adapter was closed.
    #[error("adapter closed")]
    Closed,
    /// The namespace is not served by this node.
    #[error("unknown namespace {0:?}")]
    UnknownNamespace(String),
    /// The broker keeps no history (a node alone, or history off).
    #[error("no broadcast history on this broker")]
    NoHistory,
    /// A history entry or answer Redis gave back is not what the adapter wrote.
    #[error("malformed history entry")]
    MalformedHistory,
}

impl From<Error> for AdapterError {
    fn from(e: Error) -> Self {
        AdapterError(Box::new(e))
    }
}

/// Result alias of the adapter.
pub type Result<T, E = Error> = std::result::Result<T, E>;
