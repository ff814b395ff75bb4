//! Baseline: plain socketioxide 0.18 with the socketioxide-redis 0.4 adapter (fred driver), set
//! up the way its documentation does, exposing the same events as `ioscale-node`: `/pubsub`
//! `join` / `leave` / `publish {room, data}` (acked `{ok}`) → `msg {room, data}` to the room's
//! members on every node, and the chat demo's `add-message` → `message-added` on `/`. It is the
//! Rust peer `loadtest/bench.sh` compares ioscale with.

use std::net::SocketAddr;

use anyhow::{Context as _, Result};
use axum::serve::ListenerExt as _;
use clap::Parser;
use serde::Deserialize;
use socketioxide::SocketIo;
use socketioxide::adapter::Emitter;
use socketioxide::extract::{AckSender, Data, SocketRef};
use socketioxide_redis::drivers::fred::fred_client as fred;
use socketioxide_redis::{FredAdapter, RedisAdapterCtr};

type A = FredAdapter<Emitter>;

/// socketioxide + socketioxide-redis baseline server.
#[derive(Debug, Parser)]
#[command(name = "ioscale-baseline-socketioxide", version, about)]
struct Args {
    /// Address to listen on (`127.0.0.1:0` picks a port; it is printed as `bound_addr=`).
    #[arg(long, env = "SIOX_BASELINE_LISTEN", default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Redis URL (Redis 7+ or Valkey: the fred driver uses sharded pub/sub). A Redis Cluster:
    /// fred's `redis-cluster://h:p1?node=h:p2&node=h:p3` (each channel then lives on the master
    /// that owns its slot).
    #[arg(
        long,
        env = "SIOX_BASELINE_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    redis_url: String,
    /// Packets buffered per socket. socketioxide's default is 128; the baseline uses
    /// ioscale-node's default so a burst is not lost on one side only.
    #[arg(
        long,
        env = "SIOX_BASELINE_SOCKET_BUFFER_PACKETS",
        default_value_t = 16_384
    )]
    socket_buffer_packets: usize,
    /// fred's pub/sub broadcast channel capacity; 32 is fred's default, which is what a
    /// socketioxide-redis user gets unless they change it.
    #[arg(
        long,
        env = "SIOX_BASELINE_FRED_BROADCAST_CAPACITY",
        default_value_t = 32
    )]
    fred_broadcast_capacity: usize,
    /// Give fred a reconnect policy (exponential, 100 ms to 30 s, unbounded attempts), fred's
    /// documented one-line setting: without one (socketioxide's examples, so the default
    /// here) a client whose Redis connection closes stays closed.
    #[arg(long, env = "SIOX_BASELINE_REDIS_RECONNECT")]
    redis_reconnect: bool,
    /// Set `TCP_NODELAY` on every accepted connection (axum's documented one-line
    /// `ListenerExt::tap_io`). Off by default, as socketioxide's examples serve: each small
    /// write then waits (Nagle) until the client has acknowledged the previous one.
    #[arg(long, env = "SIOX_BASELINE_TCP_NODELAY")]
    tcp_nodelay: bool,
}

#[derive(Debug, Deserialize)]
struct Publish {
    room: String,
    data: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct ChatIn {
    name: String,
    message: String,
}

fn ok() -> serde_json::Value {
    serde_json::json!({"ok": true})
}

async fn join(s: SocketRef<A>, Data(room): Data<String>, ack: AckSender<A>) {
    s.join(room);
    let _ = ack.send(&ok());
}

async fn leave(s: SocketRef<A>, Data(room): Data<String>, ack: AckSender<A>) {
    s.leave(room);
    let _ = ack.send(&ok());
}

async fn publish(io: SocketIo<A>, Data(p): Data<Publish>, ack: AckSender<A>) {
    if let Some(ns) = io.of("/pubsub") {
        let msg = serde_json::json!({"room": p.room, "data": p.data});
        if let Err(e) = ns.to(p.room).emit("msg", &msg).await {
            tracing::warn!(error = %e, "publish broadcast failed");
        }
    }
    let _ = ack.send(&ok());
}

async fn on_pubsub(s: SocketRef<A>) {
    s.on("join", join);
    s.on("leave", leave);
    s.on("publish", publish);
}

async fn add_message(io: SocketIo<A>, Data(m): Data<ChatIn>, ack: AckSender<A>) {
    let time_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let msg = serde_json::json!({"name": m.name, "message": m.message, "time_ms": time_ms});
    if let Err(e) = io.emit("message-added", &msg).await {
        tracing::warn!(error = %e, "message-added broadcast failed");
    }
    let _ = ack.send(&ok());
}

async fn on_chat(s: SocketRef<A>) {
    s.on("add-message", add_message);
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = Args::parse();
    let mut config = fred::prelude::Config::from_url(&args.redis_url)
        .with_context(|| format!("parsing --redis-url {}", args.redis_url))?;
    // The fred driver needs RESP3, and fred does not read it from the URL.
    config.version = fred::types::RespVersion::RESP3;
    let capacity = args.fred_broadcast_capacity.max(1);
    let mut builder = fred::prelude::Builder::from_config(config);
    if args.redis_reconnect {
        builder.set_policy(fred::prelude::ReconnectPolicy::new_exponential(
            0, 100, 30_000, 2,
        ));
    }
    let client = builder
        .with_performance_config(|p| p.broadcast_channel_capacity = capacity)
        .build_subscriber_client()
        .context("building the Redis client")?;
    let adapter = RedisAdapterCtr::new_with_fred(client)
        .await
        .context("connecting to Redis")?;
    let (layer, io) = SocketIo::builder()
        .max_buffer_size(args.socket_buffer_packets)
        .with_adapter::<A>(adapter)
        .build_layer();
    io.ns("/pubsub", on_pubsub)
        .await
        .context("initialising /pubsub")?;
    io.ns("/", on_chat).await.context("initialising /")?;
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(async || "ok"))
        .layer(layer);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    println!("listening bound_addr={}", listener.local_addr()?);
    if args.tcp_nodelay {
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!(error = %e, "TCP_NODELAY not set");
            }
        });
        axum::serve(listener, app).await.context("serving")?;
    } else {
        axum::serve(listener, app).await.context("serving")?;
    }
    Ok(())
}
