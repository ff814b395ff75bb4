//! The node's client connections, each registered at accept: a draining node tells its
//! clients to go by closing their connections a few at a time over the drain delay, and a
//! connection whose client stops reading is closed as a slow consumer once its send buffer
//! (`--socket-buffer-bytes`) is full.
//!
//! Both act on the TCP connection because the transport offers no other handle: socketioxide
//! can close one socket only with a Socket.IO DISCONNECT, after which the official client
//! does *not* reconnect ("io server disconnect"), and it closes transports only all at once
//! (`SocketIo::close`). A closed connection is what clients see when a node dies: a
//! "transport close", from which socket.io-client reconnects with its backoff and, with
//! session recovery, gets back its rooms and the messages it missed.
//!
//! Closing a connection: its reads end (EOF, the reader woken if it waits) and its writes
//! fail, so the transport closes the session as for a client gone.

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex, OnceLock, Weak,
        atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::extract::connect_info::Connected;
use futures_util::task::AtomicWaker;
use prometheus::{IntCounter, IntGauge};
use std::future::Future as _;

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};

/// How often a draining node closes its next share of connections.
const DRAIN_TICK: Duration = Duration::from_millis(50);

/// Why a connection was closed by the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Closed {
    /// Its client stopped reading: its send buffer was full when the node wrote to it.
    SlowConsumer = 1,
    /// The node is draining and told its client to go.
    Draining = 2,
}

impl Closed {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Closed::SlowConsumer),
            2 => Some(Closed::Draining),
            _ => None,
        }
    }
}

/// The counters of [`Connections`].
#[derive(Debug, Clone)]
pub struct ConnectionMetrics {
    /// `ioscale_http_connections_open`.
    pub open: IntGauge,
    /// `ioscale_http_connections_closed_total{reason="slow_consumer"}`.
    pub slow_consumer: IntCounter,
    /// `ioscale_http_connections_closed_total{reason="draining"}`.
    pub draining: IntCounter,
}

/// Every open connection of the public listener.
#[derive(Debug)]
pub struct Connections {
    live: Mutex<HashMap<u64, Weak<Conn>>>,
    next_id: AtomicU64,
    send_buffer_bytes: usize,
    grace: Duration,
    metrics: ConnectionMetrics,
}

/// One connection, shared by its stream and by the requests it carries (an extension).
#[derive(Debug)]
pub struct Conn {
    /// This node's number for it, in accept order.
    id: u64,
    peer: SocketAddr,
    /// Set when a request on it is for the Socket.IO transport: only those are slow consumers
    /// or told to go (an API client or a scrape is neither).
    socketio: AtomicBool,
    /// 0 while open, else a [`Closed`].
    closed: AtomicU8,
    /// The reader's waker, woken when the node closes the connection.
    reader: AtomicWaker,
    /// The public id of the socket whose session opened on it, for the logs.
    label: OnceLock<Box<str>>,
}

impl Conn {
    /// This node's number for the connection, in accept order.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The address it came from (a load balancer's, behind one).
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Marks the connection as carrying the Socket.IO transport.
    pub fn carries_socketio(&self) {
        self.socketio.store(true, Ordering::Relaxed);
    }

    /// Names the connection in logs by the public id of the socket it carries.
    pub fn label(&self, public_id: &str) {
        let _ = self.label.set(public_id.into());
    }

    /// Why the node closed it, if it did.
    pub fn closed_by_node(&self) -> Option<Closed> {
        Closed::from_u8(self.closed.load(Ordering::Acquire))
    }

    /// Closes it for `why`; false when it was already closed.
    fn close(&self, why: Closed) -> bool {
        let first = self
            .closed
            .compare_exchange(0, why as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if first {
            self.reader.wake();
        }
        first
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) != 0
    }
}

impl Connections {
    /// A registry whose connections get a kernel send buffer of `send_buffer_bytes`, and are
    /// closed as slow consumers once it has stayed full for `grace`.
    pub fn new(send_buffer_bytes: usize, grace: Duration, metrics: ConnectionMetrics) -> Arc<Self> {
        Arc::new(Self {
            live: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            send_buffer_bytes,
            grace,
            metrics,
        })
    }

    /// The listener that registers what `inner` accepts.
    pub fn listener(self: &Arc<Self>, inner: TcpListener) -> TrackedListener {
        TrackedListener {
            inner,
            registry: self.clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Weak<Conn>>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(self: &Arc<Self>, io: TcpStream, peer: SocketAddr) -> TrackedStream {
        // TCP_NODELAY: socketioxide's transport already writes each socket's queued frames in
        // one flush, so Nagle's algorithm only adds a wait for the client's (delayed) ACK to
        // the tail. Measured over 3 alternating fan-out ramps: held rate median 174,600
        // against 89,340 deliveries/s without it.
        if let Err(e) = io.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        // A fixed send buffer (the kernel caps it at net.core.wmem_max) is the byte bound of
        // what a client that does not read can hold of the node's memory: once it is full
        // the connection is closed (see `poll_write`), so the transport's packet queue
        // behind it never grows.
        if let Err(e) = socket2::SockRef::from(&io).set_send_buffer_size(self.send_buffer_bytes) {
            tracing::debug!(error = %e, "SO_SNDBUF not set");
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            id,
            peer,
            socketio: AtomicBool::new(false),
            closed: AtomicU8::new(0),
            reader: AtomicWaker::new(),
            label: OnceLock::new(),
        });
        self.lock().insert(id, Arc::downgrade(&conn));
        self.metrics.open.inc();
        TrackedStream {
            io,
            conn,
            blocked: None,
            id,
            registry: self.clone(),
        }
    }

    fn forget(&self, id: u64) {
        self.lock().remove(&id);
        self.metrics.open.dec();
    }

    /// The open connections that carry the Socket.IO transport.
    fn socketio_conns(&self) -> Vec<Arc<Conn>> {
        self.lock()
            .values()
            .filter_map(Weak::upgrade)
            .filter(|c| c.socketio.load(Ordering::Relaxed) && !c.is_closed())
            .collect()
    }

    /// Tells the clients of every Socket.IO connection to go, closing the connections evenly
    /// over `spread` so that they reconnect to the other nodes as a stream rather than a
    /// storm. Returns how many were closed.
    pub async fn tell_to_go(&self, spread: Duration) -> usize {
        let conns = self.socketio_conns();
        let total = conns.len();
        if total == 0 {
            return 0;
        }
        // Batches of equal size at equal intervals: one per tick when there are many
        // connections, one connection per interval when there are few.
        let ticks = (spread.as_millis() / DRAIN_TICK.as_millis()).max(1) as usize;
        let per_batch = total.div_ceil(ticks);
        let batches = total.div_ceil(per_batch);
        let period = (spread / u32::try_from(batches).unwrap_or(u32::MAX)).max(DRAIN_TICK);
        let mut told = 0;
        let mut interval = tokio::time::interval(period);
        for batch in conns.chunks(per_batch) {
            interval.tick().await;
            for c in batch {
                if c.close(Closed::Draining) {
                    self.metrics.draining.inc();
                    told += 1;
                }
            }
        }
        told
    }

    /// Closes a connection whose client stopped reading, counted and logged.
    fn slow_consumer(&self, conn: &Conn) {
        if conn.close(Closed::SlowConsumer) {
            self.metrics.slow_consumer.inc();
            tracing::warn!(
                sid = conn.label.get().map_or("-", |l| &**l),
                peer = %conn.peer,
                send_buffer_bytes = self.send_buffer_bytes,
                grace_ms = self.grace.as_millis(),
                "slow consumer: its send buffer stayed full; connection closed, the client reconnects"
            );
        }
    }
}

/// Binds the public listener with room for `backlog` connections not yet accepted (the
/// kernel caps it at `net.core.somaxconn`). tokio's own `bind` queues 1,024: a node taking a
/// reconnect storm of thousands of clients a second lags that much behind within a quarter
/// of a second, and the kernel then drops connections, which a load balancer sees as a
/// connect timeout (nginx: 504 once every node timed out).
///
/// # Errors
/// The address cannot be bound (in use, not local, no permission).
pub fn bind(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As std's and tokio's `bind` do on Unix: a restarted node binds its port again at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// The public listener: a TCP listener whose connections are registered.
#[derive(Debug)]
pub struct TrackedListener {
    inner: TcpListener,
    registry: Arc<Connections>,
}

impl axum::serve::Listener for TrackedListener {
    type Io = TrackedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, peer) = axum::serve::Listener::accept(&mut self.inner).await;
        (self.registry.register(io, peer), peer)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// What a request knows of its connection: the peer's address (as axum's `ConnectInfo`
/// gives it) and the connection itself.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The TCP peer.
    pub addr: SocketAddr,
    /// The connection.
    pub conn: Arc<Conn>,
}

impl Connected<axum::serve::IncomingStream<'_, TrackedListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TrackedListener>) -> Self {
        Peer {
            addr: *stream.remote_addr(),
            conn: stream.io().conn.clone(),
        }
    }
}

/// A registered connection's stream.
#[derive(Debug)]
pub struct TrackedStream {
    io: TcpStream,
    conn: Arc<Conn>,
    /// Since the kernel's send buffer was found full, the end of the grace: a timer that
    /// wakes the writer then, even if the buffer stays full.
    blocked: Option<Pin<Box<tokio::time::Sleep>>>,
    id: u64,
    registry: Arc<Connections>,
}

impl TrackedStream {
    /// A write's outcome, judged: the kernel's send buffer full (`Pending`) means the client
    /// holds that much unread. A Socket.IO client still that far behind after the grace is
    /// closed rather than left to fill the transport's queue behind it; the grace spares a
    /// client that pauses (a collector, a busy machine) through a burst.
    fn judge(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        if !written.is_pending() {
            self.blocked = None;
            return written;
        }
        if !self.conn.socketio.load(Ordering::Relaxed) {
            return written;
        }
        let grace = self.registry.grace;
        let timer = self
            .blocked
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(grace)));
        if grace.is_zero() || timer.as_mut().poll(cx).is_ready() {
            self.blocked = None;
            self.registry.slow_consumer(&self.conn);
            return Poll::Ready(Err(closed_error()));
        }
        written
    }
}

impl Drop for TrackedStream {
    fn drop(&mut self) {
        self.registry.forget(self.id);
    }
}

fn closed_error() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "connection closed by the node")
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.conn.is_closed() {
            // End of stream: the transport closes the session as for a client gone.
            return Poll::Ready(Ok(()));
        }
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if read.is_pending() {
            // Only a read that waits needs waking when the node closes the connection; the
            // check after registering catches a close that came in between.
            this.conn.reader.register(cx.waker());
            if this.conn.is_closed() {
                return Poll::Ready(Ok(()));
            }
        }
        read
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.conn.is_closed() {
            return Poll::Ready(Err(closed_error()));
        }
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        this.judge(cx, written)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.conn.is_closed() {
            return Poll::Ready(Err(closed_error()));
        }
        let written = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.judge(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::io::AsyncWriteExt as _;

    use super::*;

    fn registry(grace: Duration) -> Arc<Connections> {
        let metrics = ConnectionMetrics {
            open: IntGauge::new("open", "h").unwrap(),
            slow_consumer: IntCounter::new("slow", "h").unwrap(),
            draining: IntCounter::new("draining", "h").unwrap(),
        };
        Connections::new(64 * 1024, grace, metrics)
    }

    /// A registered Socket.IO connection whose peer never reads, and that peer.
    async fn stalled(reg: &Arc<Connections>) -> (TrackedStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap());
        let (peer, accepted) = tokio::join!(peer, listener.accept());
        let (io, addr) = accepted.unwrap();
        let stream = reg.register(io, addr);
        stream.conn.carries_socketio();
        (stream, peer.unwrap())
    }

    /// Writes until the stream fails; returns how long it took from the first blocked write.
    async fn write_until_closed(stream: &mut TrackedStream) -> Duration {
        let chunk = vec![0u8; 16 * 1024];
        let mut blocked_at = None;
        loop {
            let write = stream.write(&chunk);
            match tokio::time::timeout(Duration::from_millis(20), write).await {
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return blocked_at.map_or(Duration::ZERO, |t: Instant| t.elapsed()),
                Err(_) => {
                    blocked_at.get_or_insert_with(Instant::now);
                }
            }
        }
    }

    #[tokio::test]
    async fn a_connection_whose_buffer_stays_full_past_the_grace_is_closed_as_a_slow_consumer() {
        let reg = registry(Duration::from_millis(300));
        let (mut stream, _peer) = stalled(&reg).await;
        let waited = tokio::time::timeout(Duration::from_secs(10), write_until_closed(&mut stream))
            .await
            .expect("never closed");
        assert!(
            waited >= Duration::from_millis(250),
            "closed after {waited:?}"
        );
        assert_eq!(stream.conn.closed_by_node(), Some(Closed::SlowConsumer));
        assert_eq!(reg.metrics.slow_consumer.get(), 1);
    }

    #[tokio::test]
    async fn a_reader_that_catches_up_within_the_grace_is_kept() {
        let reg = registry(Duration::from_secs(5));
        let (mut stream, mut peer) = stalled(&reg).await;
        let chunk = vec![0u8; 16 * 1024];
        // Fill until a write blocks, then let the peer read everything.
        loop {
            let write = stream.write(&chunk);
            if tokio::time::timeout(Duration::from_millis(20), write)
                .await
                .is_err()
            {
                break;
            }
        }
        let reader = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut peer, &mut tokio::io::sink()).await;
        });
        for _ in 0..100 {
            tokio::time::timeout(Duration::from_secs(5), stream.write_all(&chunk))
                .await
                .expect("write stalled")
                .expect("closed while the reader kept up");
        }
        assert_eq!(stream.conn.closed_by_node(), None);
        assert_eq!(reg.metrics.slow_consumer.get(), 0);
        reader.abort();
    }

    #[tokio::test]
    async fn told_to_go_ends_reads_and_fails_writes() {
        let reg = registry(Duration::from_secs(1));
        let (mut stream, _peer) = stalled(&reg).await;
        assert_eq!(reg.tell_to_go(Duration::from_millis(10)).await, 1);
        let mut buf = [0u8; 8];
        let n = tokio::io::AsyncReadExt::read(&mut stream, &mut buf)
            .await
            .unwrap();
        assert_eq!(n, 0, "a connection told to go reads as ended");
        assert!(stream.write(b"x").await.is_err());
        assert_eq!(reg.metrics.draining.get(), 1);
    }

    /// Opens `n` connections to a listener that accepts none; how many the kernel queued
    /// within half a second (a connection beyond the queue has its SYN dropped and waits a
    /// second for its retry).
    async fn queued(backlog: u32, n: usize) -> usize {
        let listener = bind("127.0.0.1:0".parse().unwrap(), backlog).unwrap();
        let addr = listener.local_addr().unwrap();
        let attempts = (0..n).map(|_| async move {
            tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)).await
        });
        let done = futures_util::future::join_all(attempts).await;
        let ok = done.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
        drop((listener, done));
        ok
    }

    #[tokio::test]
    async fn the_listen_backlog_queues_what_the_node_has_not_accepted_yet() {
        assert_eq!(queued(512, 300).await, 300);
        let few = queued(16, 300).await;
        assert!(few < 300, "a 16-connection backlog queued all {few}");
    }
}
