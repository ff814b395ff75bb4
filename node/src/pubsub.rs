//! The client pub/sub namespace (`/pubsub`): `join` / `leave` a room, `publish {room, data}`
//! to every member of the room on every node (sender included) as `msg {room, data}`.
//!
//! Publishes of one socket are handed to the cluster in the order the client sent them: the
//! `publish` handler runs synchronously in the socket's read path and queues the message on the
//! socket's own ordered queue (socketioxide would otherwise spawn one task per message, which
//! does not keep order). The publisher gets its ack once the message is handed to the cluster.

use std::sync::Arc;

use serde::Deserialize;
use socketioxide::{
    SocketIo,
    extract::{AckSender, Data, SocketRef, State},
    handler::{FromMessageParts, MessageHandler, Value},
    socket::Socket,
};
use tokio::sync::mpsc;

use crate::{
    app::{Adapter, App},
    sockets,
};

/// The namespace path.
pub const NAMESPACE: &str = "/pubsub";
/// Publishes a socket may have queued before it is told to slow down.
pub const QUEUE_PER_SOCKET: usize = 4096;
/// Longest room name.
pub const MAX_ROOM_CHARS: usize = 256;

#[derive(Debug, Deserialize)]
struct Publish {
    room: String,
    data: serde_json::Value,
}

type Queued = (Result<Publish, String>, AckSender<Adapter>);

#[derive(Clone)]
struct PublishQueue(mpsc::Sender<Queued>);

fn check_room(room: &str) -> Result<(), String> {
    if room.is_empty() || room.chars().count() > MAX_ROOM_CHARS {
        return Err(format!("room must be 1-{MAX_ROOM_CHARS} characters"));
    }
    Ok(())
}

/// Connect handler of `/pubsub`.
pub async fn on_connect(s: SocketRef<Adapter>, io: SocketIo<Adapter>, State(app): State<Arc<App>>) {
    sockets::on_connect(&s, &app);
    s.on("join", join);
    s.on("leave", leave);
    s.on("publish", OrderedPublish { io, app });
}

async fn join(s: SocketRef<Adapter>, Data(room): Data<String>, ack: AckSender<Adapter>) {
    match check_room(&room) {
        Ok(()) => {
            s.join(room);
            let _ = ack.send(&serde_json::json!({"ok": true}));
        }
        Err(e) => {
            let _ = ack.send(&serde_json::json!({"error": e}));
        }
    }
}

async fn leave(s: SocketRef<Adapter>, Data(room): Data<String>, ack: AckSender<Adapter>) {
    s.leave(room);
    let _ = ack.send(&serde_json::json!({"ok": true}));
}

/// Marker type of the ordered handler.
#[derive(Debug)]
pub struct Ordered;

#[derive(Clone)]
struct OrderedPublish {
    io: SocketIo<Adapter>,
    app: Arc<App>,
}

impl OrderedPublish {
    /// The socket's publish queue, made on its first publish: most sockets only subscribe,
    /// and a queue with its task costs about 7 KB per socket.
    fn queue(&self, s: &Socket<Adapter>) -> mpsc::Sender<Queued> {
        if let Some(PublishQueue(tx)) = s.extensions.get::<PublishQueue>() {
            return tx;
        }
        // Handlers of one socket run one after another in its read path: no other publish of
        // this socket can be creating the queue now.
        let (tx, rx) = mpsc::channel(QUEUE_PER_SOCKET);
        s.extensions.insert(PublishQueue(tx.clone()));
        tokio::spawn(publish_loop(rx, self.io.clone(), self.app.clone()));
        tx
    }
}

impl MessageHandler<Adapter, Ordered> for OrderedPublish {
    fn call(&self, s: Arc<Socket<Adapter>>, mut v: Value, ack_id: Option<i64>) {
        let Ok(ack) = AckSender::<Adapter>::from_message_parts(&s, &mut v, &ack_id);
        let data = Data::<Publish>::from_message_parts(&s, &mut v, &ack_id)
            .map(|Data(p)| p)
            .map_err(|e| format!("publish expects {{room: string, data: any}}: {e}"));
        let tx = self.queue(&s);
        if let Err(mpsc::error::TrySendError::Full((_, ack))) = tx.try_send((data, ack)) {
            // Explicit, not silent: the client is told to slow down and can retry.
            let _ = ack.send(&serde_json::json!({"error": "publish queue full, retry later"}));
        }
    }
}

async fn publish_loop(mut rx: mpsc::Receiver<Queued>, io: SocketIo<Adapter>, app: Arc<App>) {
    while let Some((publish, ack)) = rx.recv().await {
        app.metrics.events.with_label_values(&[NAMESPACE]).inc();
        let p = match publish.and_then(|p| check_room(&p.room).map(|()| p)) {
            Ok(p) => p,
            Err(e) => {
                let _ = ack.send(&serde_json::json!({"error": e}));
                continue;
            }
        };
        let Some(ns) = io.of(NAMESPACE) else { return };
        let msg = serde_json::json!({"room": p.room, "data": p.data});
        let reply = match ns.to(p.room).emit("msg", &msg).await {
            Ok(()) => serde_json::json!({"ok": true}),
            Err(e) => {
                // Local sockets whose buffers are full: counted by the adapter; the cluster
                // part was handed over.
                tracing::debug!(error = %e, "publish partially delivered");
                serde_json::json!({"ok": true})
            }
        };
        let _ = ack.send(&reply);
    }
}
