//! Baseline: a raw WebSocket room fan-out server in one process, no Socket.IO and no Redis.
//! It does the least any room server must do (decode a frame, look up the room, queue one
//! shared frame per member, write), so it is the ceiling the load tests compare against.
//!
//! Framing (text frames; `ioscale-loadtest --protocol raw` speaks it):
//! `j <ack> <room>` join, `l <ack> <room>` leave, `p <ack> <room> <data>` publish; the server
//! answers `a <ack>` and sends `m <room> <data>` to every member (the sender too when it is one).
//! Nothing is dropped: a member whose queue is full makes the publisher wait.
//!
//! Why it speaks WebSocket itself (see `ws`) instead of through a WebSocket library: a ceiling
//! must cost less per delivery than anything it bounds. A published frame is encoded once and
//! shared by reference with every member's queue, and each member's writer copies whatever has
//! queued into one buffer and makes one `write` for it, so a busy member costs one syscall per
//! batch, not one per frame.

mod outbox;
mod ws;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use anyhow::{Context as _, Result};
use clap::Parser;
use tokio::net::{TcpListener, TcpStream};

use crate::outbox::Outbox;

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

/// The members of one room, with a snapshot that publishes share.
#[derive(Default)]
struct Room {
    by_id: HashMap<u64, Arc<Outbox>>,
    /// Rebuilt on every join and leave (rare) so that a publish (frequent) clones one `Arc`
    /// under the read lock instead of copying the member list.
    snapshot: Arc<Vec<Arc<Outbox>>>,
}

impl Room {
    fn rebuild(&mut self) {
        self.snapshot = Arc::new(self.by_id.values().cloned().collect());
    }
}

/// Room name → its members.
#[derive(Default)]
struct Hub {
    rooms: RwLock<HashMap<String, Room>>,
}

impl Hub {
    fn join(&self, room: &str, id: u64, outbox: &Arc<Outbox>) {
        let mut rooms = self.rooms.write().unwrap_or_else(|e| e.into_inner());
        let r = rooms.entry(room.to_owned()).or_default();
        r.by_id.insert(id, outbox.clone());
        r.rebuild();
    }

    fn leave(&self, room: &str, id: u64) {
        let mut rooms = self.rooms.write().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = rooms.get_mut(room) {
            r.by_id.remove(&id);
            if r.by_id.is_empty() {
                rooms.remove(room);
            } else {
                r.rebuild();
            }
        }
    }

    fn members(&self, room: &str) -> Option<Arc<Vec<Arc<Outbox>>>> {
        let rooms = self.rooms.read().unwrap_or_else(|e| e.into_inner());
        rooms.get(room).map(|r| r.snapshot.clone())
    }
}

/// One client's text message; `Err` ends the connection (its outbox closed).
async fn handle(
    text: &str,
    id: u64,
    hub: &Hub,
    me: &Arc<Outbox>,
    joined: &mut HashSet<String>,
) -> Result<(), outbox::Closed> {
    let mut it = text.splitn(4, ' ');
    let (Some(op), Some(ack), Some(room)) = (it.next(), it.next(), it.next()) else {
        return Ok(());
    };
    match (op, it.next()) {
        ("j", None) => {
            hub.join(room, id, me);
            joined.insert(room.to_owned());
        }
        ("l", None) => {
            hub.leave(room, id);
            joined.remove(room);
        }
        ("p", Some(data)) => {
            // Encoded once; every member's queue holds a reference to the same bytes.
            let frame = ws::text_frame(&[b"m ", room.as_bytes(), b" ", data.as_bytes()]);
            for member in hub.members(room).iter().flat_map(|m| m.iter()) {
                // A member that has gone is skipped; the publisher waits only for live ones.
                let _ = member.push(frame.clone()).await;
            }
        }
        _ => return Ok(()),
    }
    me.push(ws::text_frame(&[b"a ", ack.as_bytes()])).await
}

async fn connection(stream: TcpStream, id: u64, hub: Arc<Hub>, queue: usize) -> Result<()> {
    stream.set_nodelay(true)?;
    let (mut reader, leftover, write) = ws::accept(stream).await?;
    let me = Arc::new(Outbox::new(queue));
    let writer = tokio::spawn(me.clone().write_to(write));
    let mut joined: HashSet<String> = HashSet::new();
    let mut incoming = ws::Reader::new(leftover);
    loop {
        match incoming.next(&mut reader).await {
            Ok(ws::Incoming::Text(text)) => {
                if handle(&text, id, &hub, &me, &mut joined).await.is_err() {
                    break;
                }
            }
            Ok(ws::Incoming::Ping(payload)) => {
                if me
                    .push(ws::control_frame(ws::OP_PONG, &payload))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Ok(ws::Incoming::Close) => {
                let _ = me.push(ws::control_frame(ws::OP_CLOSE, &[])).await;
                break;
            }
            Err(_) => break,
        }
    }
    for room in &joined {
        hub.leave(room, id);
    }
    me.close();
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
    accept_loop(listener, args.queue_frames.max(1)).await
}

async fn accept_loop(listener: TcpListener, queue: usize) -> Result<()> {
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
        tokio::spawn(async move {
            let _ = connection(stream, id, hub, queue).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio::time::timeout;
    use tokio_tungstenite::tungstenite::Message;

    use super::*;

    type Client = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

    async fn send(c: &mut Client, text: &str) {
        timeout(Duration::from_secs(5), c.send(Message::text(text)))
            .await
            .expect("send timed out")
            .expect("send");
    }

    async fn recv(c: &mut Client) -> String {
        let msg = timeout(Duration::from_secs(5), c.next())
            .await
            .expect("recv timed out")
            .expect("stream ended")
            .expect("recv");
        msg.into_text().expect("text").to_string()
    }

    /// A standard WebSocket client (tungstenite) against this server's own handshake and framing.
    #[tokio::test]
    async fn a_publish_reaches_every_member_once_in_order_and_is_acked() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        tokio::spawn(accept_loop(listener, 4));
        let (mut a, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        let (mut b, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        send(&mut a, "j 1 room").await;
        assert_eq!(recv(&mut a).await, "a 1");
        send(&mut b, "j 2 room").await;
        assert_eq!(recv(&mut b).await, "a 2");
        // More publishes than a queue holds: the publisher waits instead of dropping.
        let data = "x".repeat(300);
        for i in 0..20 {
            send(&mut b, &format!("p {} room {i}{data}", 10 + i)).await;
        }
        for i in 0..20 {
            assert_eq!(recv(&mut a).await, format!("m room {i}{data}"));
        }
        let mut seen = Vec::new();
        while seen.len() < 40 {
            seen.push(recv(&mut b).await);
        }
        let msgs: Vec<_> = seen.iter().filter(|m| m.starts_with("m ")).collect();
        assert_eq!(msgs.len(), 20);
        for (i, m) in msgs.iter().enumerate() {
            assert_eq!(**m, format!("m room {i}{data}"));
        }
        a.close(None).await.unwrap();
        send(&mut b, "p 99 room after").await;
        assert_eq!(recv(&mut b).await, "m room after");
        assert_eq!(recv(&mut b).await, "a 99");
    }
}
