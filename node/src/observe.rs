//! What the node's sockets do, for whoever watches them (the Admin UI): a trait the core calls
//! without knowing the watcher, so that the shared state (`app`) need not name it.

use ioscale_adapter::RedisAdapter;
use socketioxide::{adapter::Emitter, extract::SocketRef, socket::DisconnectReason};

/// The node's sockets (spelled out: `app::Adapter` is the same type, and this module must not
/// depend on `app`, which holds a watcher).
type Socket = SocketRef<RedisAdapter<Emitter>>;

/// Told of every socket of the applications' namespaces as it connects, joins or leaves
/// rooms, and disconnects. Calls are made in the sockets' own paths: they must not wait.
pub trait SocketObserver: Send + Sync + std::fmt::Debug + 'static {
    /// `s` connected.
    fn connected(&self, s: &Socket);
    /// `s` disconnected for `reason`.
    fn disconnected(&self, s: &Socket, reason: DisconnectReason);
    /// `s` joined (`joined`) or left `rooms`.
    fn rooms_changed(&self, s: &Socket, rooms: &[String], joined: bool);
}
