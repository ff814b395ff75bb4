//! A multi-node chat on socketioxide + axum with `ioscale-adapter`: run two of these on one
//! Redis and a message sent through one reaches the clients of both.
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 PORT=3000 cargo run -p ioscale-adapter --example chat
//! REDIS_URL=redis://127.0.0.1:6379 PORT=3001 cargo run -p ioscale-adapter --example chat
//! ```
//!
//! Events (the socket.io chat demo's): `add user` (a name), then `new message` (a text),
//! broadcast to everyone else as `new message` `{ username, message }`; `user joined` and
//! `user left` announce arrivals and departures.

use ioscale_adapter::{AdapterConfig, Cluster, RedisAdapter};
use serde::Serialize;
use socketioxide::{
    SocketIo,
    adapter::Adapter,
    extract::{Data, SocketRef},
};

/// Who a socket is, once it said so with `add user`.
#[derive(Debug, Clone)]
struct Username(String);

#[derive(Debug, Serialize)]
struct ChatMessage<'a> {
    username: &'a str,
    message: String,
}

async fn on_connect<A: Adapter>(socket: SocketRef<A>) {
    socket.on(
        "add user",
        |s: SocketRef<A>, Data(name): Data<String>| async move {
            s.extensions.insert(Username(name.clone()));
            let _ = s.broadcast().emit("user joined", &name).await;
        },
    );
    socket.on(
        "new message",
        |s: SocketRef<A>, Data(message): Data<String>| async move {
            let Some(Username(username)) = s.extensions.get::<Username>() else {
                return; // `add user` first, as in the demo.
            };
            let msg = ChatMessage {
                username: &username,
                message,
            };
            // Every other socket, on every node; a failure (Redis down) is logged, not hidden.
            if let Err(e) = s.broadcast().emit("new message", &msg).await {
                eprintln!("broadcast failed: {e}");
            }
        },
    );
    socket.on_disconnect(async |s: SocketRef<A>| {
        if let Some(Username(name)) = s.extensions.get::<Username>() {
            let _ = s.broadcast().emit("user left", &name).await;
        }
    });
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let port: u16 = std::env::var("PORT").map_or(Ok(3000), |p| p.parse())?;

    // The ioscale part: a cluster handle on Redis, given to socketioxide as the adapter state.
    let cluster = Cluster::connect(AdapterConfig::new(redis_url)).await?;
    let (layer, io) = SocketIo::builder()
        .with_adapter::<RedisAdapter<_>>(cluster.clone())
        .build_layer();
    io.ns("/", on_connect).await?;

    let app = axum::Router::new().layer(layer);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!(
        "chat node {} listening on {}",
        cluster.node_id(),
        listener.local_addr()?
    );
    axum::serve(listener, app).await?;
    Ok(())
}
