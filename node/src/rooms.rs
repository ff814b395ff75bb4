//! The room-name policy every entry point uses (`/pubsub`, the README recipes, the server API):
//! which names are valid at all, and which a client may name itself. A socket's own room (its
//! id) is reserved: only the server puts a socket there, so a client can neither join another
//! socket's room nor publish into it.

use std::str::FromStr as _;

use socketioxide::socket::Sid;

/// Longest room name, in characters.
pub const MAX_ROOM_CHARS: usize = 256;

/// Why a room name was refused; the text is what the caller is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    /// Empty or longer than [`MAX_ROOM_CHARS`].
    #[error("room must be 1-256 characters")]
    Length,
    /// Shaped like a socket id: reserved for that socket.
    #[error("room names shaped like socket ids are reserved")]
    Reserved,
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

/// A room a client may join, leave or send to by name.
///
/// # Errors
/// [`RoomError::Length`], or [`RoomError::Reserved`] for a socket-id-shaped name.
pub fn check_client(room: &str) -> Result<(), RoomError> {
    check(room)?;
    if Sid::from_str(room).is_ok() {
        return Err(RoomError::Reserved);
    }
    Ok(())
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
        assert_eq!(check_client("chat:general"), Ok(()));
    }
}
