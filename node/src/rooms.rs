//! The room-name policy every entry point uses (`/pubsub`, the README recipes, the server API):
//! which names are valid at all, which are reserved for the server, and which a given client
//! may join or publish to.
//!
//! Reserved, whatever a token grants: a socket's own room (its public id, so a client can
//! neither join another socket's room nor publish into it), names shaped like session ids, and
//! every `user:` room (a user's sockets on
//! every node). Only the server puts sockets there; the server API is not limited by this.

use std::str::FromStr as _;

use socketioxide::socket::Sid;

use crate::session::public_id;

/// Longest room name, in characters.
pub const MAX_ROOM_CHARS: usize = 256;
/// The prefix of the per-user rooms (`user:<sub>`).
pub const USER_ROOM_PREFIX: &str = "user:";

/// The room every socket of `user` joins, on every node.
pub fn user_room(user: &str) -> String {
    format!("{USER_ROOM_PREFIX}{user}")
}

/// Why a room name was refused; the text is what the caller is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    /// Empty or longer than [`MAX_ROOM_CHARS`].
    #[error("room must be 1-256 characters")]
    Length,
    /// Shaped like a socket id (public or session), or a `user:` room: only the server puts
    /// sockets there.
    #[error("room names shaped like socket ids, and user: rooms, are reserved")]
    Reserved,
    /// Valid, but not among the rooms this client may use.
    #[error("this connection may not use that room")]
    NotPermitted,
}

/// Any room name, from a client or the server API.
///
/// # Errors
/// [`RoomError::Length`].
pub fn check(room: &str) -> Result<(), RoomError> {
    if room.is_empty() || room.chars().count() > MAX_ROOM_CHARS {
        return Err(RoomError::Length);
    }
    Ok(())
}

/// A room a client may name at all (leave, or name as a target before its grants are read).
///
/// # Errors
/// [`RoomError::Length`], or [`RoomError::Reserved`].
pub fn check_client(room: &str) -> Result<(), RoomError> {
    check(room)?;
    if is_socket_id(room) || room.starts_with(USER_ROOM_PREFIX) {
        return Err(RoomError::Reserved);
    }
    Ok(())
}

/// Whether `room` is shaped like a socket's id: a public id (a socket's own room) or an
/// Engine.IO session id.
fn is_socket_id(room: &str) -> bool {
    public_id::is_shaped(room) || Sid::from_str(room).is_ok()
}

/// Room patterns: exact names, `prefix*` for every name starting with `prefix`, `*` for all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Patterns {
    exact: Vec<String>,
    prefixes: Vec<String>,
}

impl Patterns {
    /// The patterns of `list` (empty entries ignored).
    pub fn new<S: AsRef<str>>(list: &[S]) -> Self {
        let mut p = Self::default();
        for item in list
            .iter()
            .map(|s| s.as_ref().trim())
            .filter(|s| !s.is_empty())
        {
            match item.strip_suffix('*') {
                Some(prefix) => p.prefixes.push(prefix.to_owned()),
                None => p.exact.push(item.to_owned()),
            }
        }
        p
    }

    /// Whether `room` matches one of the patterns.
    pub fn matches(&self, room: &str) -> bool {
        self.exact.iter().any(|e| e == room)
            || self.prefixes.iter().any(|p| room.starts_with(p.as_str()))
    }
}

/// What a connection may do with rooms by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    join: Patterns,
    publish: Patterns,
}

impl Grants {
    /// Grants to join the `join` patterns and publish to the `publish` ones.
    pub fn new<S: AsRef<str>>(join: &[S], publish: &[S]) -> Self {
        Self {
            join: Patterns::new(join),
            publish: Patterns::new(publish),
        }
    }

    /// Whether the connection may join `room`.
    ///
    /// # Errors
    /// What [`check_client`] refuses, or [`RoomError::NotPermitted`].
    pub fn may_join(&self, room: &str) -> Result<(), RoomError> {
        allowed(&self.join, room)
    }

    /// Whether the connection may publish (emit) to `room`.
    ///
    /// # Errors
    /// What [`check_client`] refuses, or [`RoomError::NotPermitted`].
    pub fn may_publish(&self, room: &str) -> Result<(), RoomError> {
        allowed(&self.publish, room)
    }
}

fn allowed(granted: &Patterns, room: &str) -> Result<(), RoomError> {
    check_client(room)?;
    if granted.matches(room) {
        Ok(())
    } else {
        Err(RoomError::NotPermitted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_and_socket_id_rooms() {
        assert_eq!(check(""), Err(RoomError::Length));
        assert_eq!(check(&"é".repeat(MAX_ROOM_CHARS)), Ok(()));
        assert_eq!(
            check(&"x".repeat(MAX_ROOM_CHARS + 1)),
            Err(RoomError::Length)
        );
        let sid = Sid::new().to_string();
        assert_eq!(
            check(&sid),
            Ok(()),
            "the server may address a socket's room"
        );
        assert_eq!(check_client(&sid), Err(RoomError::Reserved));
        assert_eq!(
            check_client(&public_id::generate()),
            Err(RoomError::Reserved)
        );
        assert_eq!(check_client("user:alice"), Err(RoomError::Reserved));
        assert_eq!(check_client("chat:general"), Ok(()));
    }

    #[test]
    fn grants_match_exact_names_and_prefixes() {
        let g = Grants::new(&["chat:*", "lobby"], &["chat:general"]);
        assert_eq!(g.may_join("chat:x"), Ok(()));
        assert_eq!(g.may_join("lobby"), Ok(()));
        assert_eq!(g.may_join("lobby2"), Err(RoomError::NotPermitted));
        assert_eq!(g.may_publish("chat:general"), Ok(()));
        assert_eq!(g.may_publish("chat:x"), Err(RoomError::NotPermitted));
        let all = Grants::new(&["*"], &["*"]);
        assert_eq!(all.may_join("anything"), Ok(()));
        assert_eq!(all.may_join("user:bob"), Err(RoomError::Reserved));
        assert_eq!(
            all.may_publish(&Sid::new().to_string()),
            Err(RoomError::Reserved)
        );
        let none = Grants::new::<&str>(&[], &[]);
        assert_eq!(none.may_join("x"), Err(RoomError::NotPermitted));
    }
}
