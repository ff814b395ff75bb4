//! Public socket ids: what other clients, the applications and the server API see of a socket.
//! A random id drawn when the socket connects, unrelated to its Engine.IO session id, stable
//! for the socket's life and the same from every node: it is the socket's own room, so
//! `to(id)` reaches it on any node and every node reads it back from the rooms a
//! `fetchSockets` answer lists (the only room of that shape a socket is ever in: clients and
//! the server API cannot join one). Nothing else is stored per socket.

use std::{collections::HashMap, sync::Arc};

use base64::Engine as _;
use ioscale_adapter::{NamespaceHandle, all_sockets};
use rand::Rng as _;
use socketioxide::{adapter::Adapter, extract::SocketRef};

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
    assign_as(s, generate())
}

/// Gives `s` the public id `id` (its restored session's), returned.
pub fn assign_as<A: Adapter>(s: &SocketRef<A>, id: String) -> String {
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

/// The public id among a socket's rooms (as a `fetchSockets` answer lists them).
pub fn in_rooms(rooms: &[String]) -> Option<&str> {
    rooms.iter().map(String::as_str).find(|r| is_shaped(r))
}

/// The public ids of the sockets in `rooms` of a namespace on every node that answers, by
/// session id: what turns the session ids an ack report names into ids a caller may see.
/// Asked once the acks are in, so a failure here must not cost the caller the answers (nor
/// invite a retry that would deliver again): it is logged and the ids are left unknown.
pub async fn by_session(
    h: &dyn NamespaceHandle,
    rooms: impl IntoIterator<Item = String>,
) -> HashMap<String, String> {
    let mut opts = all_sockets();
    opts.rooms = rooms.into_iter().map(Into::into).collect();
    match h.fetch_sockets_report(opts).await {
        Ok(report) => report
            .sockets
            .into_iter()
            .filter_map(|s| in_rooms(&s.rooms).map(|p| (s.id.clone(), p.to_owned())))
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "public ids of acking sockets unavailable");
            HashMap::new()
        }
    }
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
    fn the_id_is_found_among_the_rooms() {
        let id = generate();
        let rooms = vec!["fans".to_owned(), id.clone(), "user:bob".to_owned()];
        assert_eq!(in_rooms(&rooms), Some(id.as_str()));
        assert_eq!(in_rooms(&["fans".to_owned()]), None);
    }
}
