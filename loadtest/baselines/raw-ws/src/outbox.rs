//! One connection's queue of encoded frames and the task that writes them, many per syscall.

use std::sync::Mutex;

use bytes::Bytes;
use tokio::io::AsyncWriteExt as _;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;

/// The connection has closed; nothing more is queued.
#[derive(Debug)]
pub struct Closed;

#[derive(Default)]
struct Queue {
    frames: Vec<Bytes>,
    closed: bool,
}

/// A bounded queue of frames with one writer; pushers wait while it is full.
pub struct Outbox {
    queue: Mutex<Queue>,
    capacity: usize,
    /// Wakes the writer when the queue goes from empty to non-empty (or closes).
    ready: Notify,
    /// Wakes pushers that found the queue full once the writer has taken a batch.
    space: Notify,
}

impl Outbox {
    pub fn new(capacity: usize) -> Self {
        Self {
            queue: Mutex::new(Queue::default()),
            capacity: capacity.max(1),
            ready: Notify::new(),
            space: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pushes under the lock if there is room; `Ok(false)` when full.
    fn try_push(&self, frame: &Bytes) -> Result<bool, Closed> {
        let mut q = self.lock();
        if q.closed {
            return Err(Closed);
        }
        if q.frames.len() >= self.capacity {
            return Ok(false);
        }
        q.frames.push(frame.clone());
        let first = q.frames.len() == 1;
        drop(q);
        if first {
            // Only the first frame of a batch wakes the writer; the rest ride along.
            self.ready.notify_one();
        }
        Ok(true)
    }

    /// Queues one frame, waiting while the queue is full.
    pub async fn push(&self, frame: Bytes) -> Result<(), Closed> {
        if self.try_push(&frame)? {
            return Ok(());
        }
        loop {
            // Registered before the re-check so a batch taken in between still wakes us.
            let notified = self.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.try_push(&frame)? {
                return Ok(());
            }
            notified.await;
        }
    }

    /// Stops the writer once it has written what is queued; later pushes fail.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
        self.space.notify_waiters();
    }

    /// Writes queued frames until the queue is closed and empty or the peer stops reading.
    pub async fn write_to(self: std::sync::Arc<Self>, mut out: OwnedWriteHalf) {
        let mut batch: Vec<Bytes> = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let closed = {
                let mut q = self.lock();
                std::mem::swap(&mut q.frames, &mut batch);
                q.closed
            };
            if batch.is_empty() {
                if closed {
                    break;
                }
                self.ready.notified().await;
                // Let the publisher that woke us queue the rest of its burst first: one write
                // for many frames instead of one per frame.
                tokio::task::yield_now().await;
                continue;
            }
            self.space.notify_waiters();
            buf.clear();
            for frame in batch.drain(..) {
                buf.extend_from_slice(&frame);
            }
            if out.write_all(&buf).await.is_err() {
                break;
            }
            // A burst can grow the buffer; do not keep megabytes for an idle connection.
            if buf.capacity() > 64 * 1024 {
                buf = Vec::new();
            }
        }
        self.close();
        let _ = out.shutdown().await;
    }
}
