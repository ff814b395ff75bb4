//! The one way the node puts a socket in a room and takes it out ([`join`], [`leave`],
//! [`left_all`] on disconnect), so the cluster knows which room channels this node needs:
//! socketioxide's `socket.join` only writes the node's own rooms.

use ioscale_adapter::Cluster;
use socketioxide::extract::SocketRef;
use socketioxide_core::adapter::RoomParam;

use crate::{app::Adapter, rooms::user_room, session::recovery};

/// Puts `s` in `rooms` and waits until broadcasts to them from any node reach this node:
/// socketioxide's `socket.join` only writes the node's own rooms, and the first local socket
/// of a room makes the node subscribe the room's channel. Every join of the node's
/// applications goes through here (joins through the server API and `socketsJoin` go through
/// the adapter itself).
pub async fn join(s: &SocketRef<Adapter>, cluster: &Cluster, rooms: impl RoomParam) {
    let rooms: Vec<String> = rooms.into_room_iter().map(|r| r.into_owned()).collect();
    s.join(rooms.clone());
    joined(s).add(&rooms);
    recovery::changed(s);
    observe(s, &rooms, true);
    cluster.rooms_joined(s.ns(), rooms).await;
}

/// Takes `s` out of `rooms`; a room left without a local socket has its channel unsubscribed
/// after the cluster's unsubscribe delay.
pub fn leave(s: &SocketRef<Adapter>, cluster: &Cluster, rooms: impl RoomParam) {
    let rooms: Vec<String> = rooms.into_room_iter().map(|r| r.into_owned()).collect();
    s.leave(rooms.clone());
    joined(s).remove(&rooms);
    recovery::changed(s);
    observe(s, &rooms, false);
    cluster.rooms_left(s.ns(), rooms);
}

/// Tells the cluster the rooms of a disconnecting socket may have emptied. socketioxide may
/// take the socket out of its rooms before the disconnect handler runs (a client's disconnect
/// is followed at once by its transport closing), so the rooms come from what [`join`]
/// recorded, besides those socketioxide still lists.
pub fn left_all(s: &SocketRef<Adapter>, cluster: &Cluster) {
    let mut rooms = joined(s).take();
    rooms.push(crate::session::public_id::of(s));
    rooms.extend(crate::admission::identity(s).user.as_deref().map(user_room));
    rooms.extend(s.rooms().into_iter().map(|r| r.into_owned()));
    rooms.sort_unstable();
    rooms.dedup();
    cluster.rooms_left(s.ns(), rooms);
}

/// Tells the socket's observer (the Admin UI, when served) that `s` joined or left `rooms`.
fn observe(s: &SocketRef<Adapter>, rooms: &[String], joined: bool) {
    if let Some(o) = s
        .extensions
        .get::<std::sync::Arc<dyn crate::observe::SocketObserver>>()
    {
        o.rooms_changed(s, rooms, joined);
    }
}

/// The rooms a socket joined through [`join`], in its extensions.
#[derive(Debug, Default)]
struct Joined(std::sync::Mutex<Vec<String>>);

impl Joined {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, rooms: &[String]) {
        let mut joined = self.lock();
        for r in rooms {
            if !joined.contains(r) {
                joined.push(r.clone());
            }
        }
    }

    fn remove(&self, rooms: &[String]) {
        self.lock().retain(|r| !rooms.contains(r));
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.lock())
    }
}

fn joined(s: &SocketRef<Adapter>) -> std::sync::Arc<Joined> {
    if let Some(j) = s.extensions.get::<std::sync::Arc<Joined>>() {
        return j;
    }
    let j = std::sync::Arc::new(Joined::default());
    s.extensions.insert(j.clone());
    j
}
