//! Public socket ids: what other clients, the applications and the server API see of a socket.
//! A random id drawn when the socket connects, unrelated to its Engine.IO session id, stable
//! for the socket's life and the same from every node: it is the socket's own room (so
//! `to(id)` reaches it on any node) and rides in the socket's cluster-visible data, where
//! other nodes read it back from `fetchSockets` answers.

use std::{collections::HashMap, sync::Arc};

use base64::Engine as _;
use ioscale_adapter::{NamespaceHandle, all_sockets};
use rand::Rng as _;
use serde_json::Value as Json;
use socketioxide::{adapter::Adapter, extract::SocketRef};

/// The socket data key holding the public id; only the node writes it.
pub const DATA_KEY: &str = "public_id";

/// Characters of a public id: 16 random bytes, URL-safe base64 without padding.
pub const LEN: usize = 22;

/// A socket's public id, in its extensions.
#[derive(Debug, Clone)]
pub struct PublicId(Arc<str>);

impl PublicId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A new public id: 128 random bits, so ids are neither guessable nor reused.
pub fn generate() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether `s` has the shape of a public id (reserved as a room name: only the server puts a
/// socket in its own room).
pub fn is_shaped(s: &str) -> bool {
    s.len() == LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Gives `s` a new public id, returned; called once, at the handshake.
pub fn assign<A: Adapter>(s: &SocketRef<A>) -> String {
    let id = generate();
    s.extensions.insert(PublicId(id.as_str().into()));
    id
}

/// The public id of `s`. A socket that somehow missed the handshake gets one now: never its
/// session id.
pub fn of<A: Adapter>(s: &SocketRef<A>) -> String {
    match s.extensions.get::<PublicId>() {
        Some(p) => p.as_str().to_owned(),
        None => assign(s),
    }
}

/// The public id a socket's cluster-visible data carries.
pub fn in_data(data: &Json) -> Option<&str> {
    data.get(DATA_KEY).and_then(Json::as_str)
}

/// Splits socket data into the public id and the rest (the data as its socket set it).
pub fn split_data(mut data: Json) -> (Option<String>, Json) {
    let id = match &mut data {
        Json::Object(m) => match m.remove(DATA_KEY) {
            Some(Json::String(s)) => Some(s),
            _ => None,
        },
        _ => None,
    };
    if data.as_object().is_some_and(serde_json::Map::is_empty) {
        data = Json::Null;
    }
    (id, data)
}

/// The public ids of the sockets in `rooms` of a namespace on every node that answers, by
/// session id: what turns the session ids an ack report names into ids a caller may see.
///
/// # Errors
/// The cluster request failed.
pub async fn by_session(
    h: &dyn NamespaceHandle,
    rooms: impl IntoIterator<Item = String>,
) -> ioscale_adapter::Result<HashMap<String, String>> {
    let mut opts = all_sockets();
    opts.rooms = rooms.into_iter().map(Into::into).collect();
    let report = h.fetch_sockets_report(opts).await?;
    Ok(report
        .sockets
        .into_iter()
        .filter_map(|s| in_data(&s.data).map(|p| (s.id, p.to_owned())))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_and_shaped() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert!(is_shaped(&a) && is_shaped(&b), "{a} {b}");
        // An Engine.IO session id (16 characters) is not a public id.
        assert!(!is_shaped("AAAAAAAAAAAAAAAA"));
        assert!(!is_shaped(&format!("{}!", &a[..LEN - 1])));
    }

    #[test]
    fn data_splits_into_id_and_the_rest() {
        let (id, rest) = split_data(serde_json::json!({DATA_KEY: "x", "nickname": "tobi"}));
        assert_eq!(id.as_deref(), Some("x"));
        assert_eq!(rest, serde_json::json!({"nickname": "tobi"}));
        let (id, rest) = split_data(serde_json::json!({DATA_KEY: "x"}));
        assert_eq!((id.as_deref(), rest), (Some("x"), Json::Null));
        assert_eq!(split_data(Json::Null), (None, Json::Null));
    }
}
