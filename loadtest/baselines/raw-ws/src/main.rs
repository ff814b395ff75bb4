//! Baseline: a raw WebSocket room fan-out server in one process, no Socket.IO and no Redis.
//! It does the least any room server must do (decode a frame, look up the room, queue one
//! shared frame per member, write), so it is the ceiling the load tests compare against.
//!
//! Framing (text frames; `ioscale-loadtest --protocol raw` speaks it):
//! `j <ack> <room>` join, `l <ack> <room>` leave, `p <ack> <room> <data>` publish; the server
//! answers `a <ack>` and sends `m <room> <data>` to every member (the sender too when it is one).
//! Nothing is dropped: a member whose queue is full makes the publisher wait.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use anyhow::{Context as _, Result};
use clap::Parser;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Raw WebSocket fan-out server (the load-test ceiling).
#[derive(Debug, Parser)]
#[command(name = "ioscale-baseline-raw-ws", version, about)]
struct Args {
    /// Address to listen on (`127.0.0.1:0` picks a port; it is printed as `bound_addr=`).
    #[arg(long, env = "RAW_WS_LISTEN", default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Frames queued per connection before publishers wait for it.
    #[arg(long, env = "RAW_WS_QUEUE_FRAMES", default_value_t = 16_384)]
    queue_frames: usize,
    /// Runtime worker threads (default: one per core).
    #[arg(long, env = "RAW_WS_WORKER_THREADS")]
    worker_threads: Option<usize>,
}

type Tx = mpsc::Sender<Message>;

/// Room → (connection id → its queue).
#[derive(Default)]
struct Hub {
    rooms: RwLock<HashMap<String, HashMap<u64, Tx>>>,
}

impl Hub {
    fn join(&self, room: &str, id: u64, tx: &Tx) {
        let mut rooms = self.rooms.write().unwrap_or_else(|e| e.into_inner());
        rooms
            .entry(room.to_owned())
            .or_default()
            .insert(id, tx.clone());
    }

    fn leave(&self, room: &str, id: u64) {
        let mut rooms = self.rooms.write().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = rooms.get_mut(room) {
            m.remove(&id);
            if m.is_empty() {
                rooms.remove(room);
            }
        }
    }

    /// The members' queues, copied out so no lock is held while sending.
    fn members(&self, room: &str) -> Vec<Tx> {
        let rooms = self.rooms.read().unwrap_or_else(|e| e.into_inner());
        rooms
            .get(room)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }
}

fn ws_config() -> WebSocketConfig {
    // Small buffers: the ceiling must hold as many connections as the servers it bounds.
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(8 * 1024)
}

async fn connection(stream: TcpStream, id: u64, hub: Arc<Hub>, queue: usize) -> Result<()> {
    stream.set_nodelay(true)?;
    let ws = tokio_tungstenite::accept_async_with_config(stream, Some(ws_config())).await?;
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(queue);
    // One writer per connection, flushing once per batch of queued frames.
    let writer = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            if sink.feed(first).await.is_err() {
                return;
            }
            // Let the publisher queue the rest of its burst first: one write for many frames
            // instead of one per frame.
            tokio::task::yield_now().await;
            while let Ok(more) = rx.try_recv() {
                if sink.feed(more).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    let mut joined: HashSet<String> = HashSet::new();
    while let Some(Ok(msg)) = source.next().await {
        let text = match msg {
            Message::Text(t) => t,
            Message::Close(_) => break,
            _ => continue,
        };
        let mut it = text.splitn(4, ' ');
        let (Some(op), Some(ack), Some(room)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        match (op, it.next()) {
            ("j", None) => {
                hub.join(room, id, &tx);
                joined.insert(room.to_owned());
            }
            ("l", None) => {
                hub.leave(room, id);
                joined.remove(room);
            }
            ("p", Some(data)) => {
                // One frame shared by every member (the payload is reference-counted).
                let frame = Message::Text(format!("m {room} {data}").into());
                for member in hub.members(room) {
                    let _ = member.send(frame.clone()).await;
                }
            }
            _ => continue,
        }
        if tx
            .send(Message::Text(format!("a {ack}").into()))
            .await
            .is_err()
        {
            break;
        }
    }
    for room in &joined {
        hub.leave(room, id);
    }
    drop(tx);
    let _ = writer.await;
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.worker_threads {
        rt.worker_threads(n.max(1));
    }
    rt.enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(serve(args))
}

async fn serve(args: Args) -> Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    println!("listening bound_addr={}", listener.local_addr()?);
    let hub = Arc::new(Hub::default());
    let ids = AtomicU64::new(0);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: keep serving the others.
                eprintln!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let hub = hub.clone();
        let queue = args.queue_frames.max(1);
        tokio::spawn(async move {
            let _ = connection(stream, id, hub, queue).await;
        });
    }
}
