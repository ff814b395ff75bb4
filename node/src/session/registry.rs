//! The node's recovering sockets, which `recovery` rewrites now and then: a list the shared
//! state holds (generic over the adapter, so it needs nothing of the node).

use std::sync::{Mutex, MutexGuard};

use socketioxide::{adapter::Adapter, extract::SocketRef, socket::Sid};

/// The recovering sockets of this node.
#[derive(Debug)]
pub struct Sessions<A: Adapter> {
    sockets: Mutex<Vec<SocketRef<A>>>,
}

impl<A: Adapter> Default for Sessions<A> {
    fn default() -> Self {
        Self {
            sockets: Mutex::new(Vec::new()),
        }
    }
}

impl<A: Adapter> Sessions<A> {
    fn lock(&self) -> MutexGuard<'_, Vec<SocketRef<A>>> {
        self.sockets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a recovering socket.
    pub fn add(&self, s: &SocketRef<A>) {
        self.lock().push(s.clone());
    }

    /// Forgets a socket that disconnected.
    pub fn remove(&self, sid: Sid) {
        self.lock().retain(|s| s.id != sid);
    }

    /// Every recovering socket now.
    pub fn all(&self) -> Vec<SocketRef<A>> {
        self.lock().clone()
    }
}
