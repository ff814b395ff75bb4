//! Notices a Redis that stopped answering while its sockets stay open (a SIGSTOPped or
//! overloaded process, a network path that drops packets without a reset).
//!
//! fred notices a closed socket at once, but not a silent one: its unresponsive check only
//! fires when nothing was written for its whole timeout while an answer is due, and a node's
//! heartbeats write every second; the subscriber connection writes nothing at all. So each
//! connection is sent a `PING` every probe interval. One not answered within the Redis timeout
//! marks the broker stalled (not ready: `/readyz` turns 503), is counted in
//! `ioscale_adapter_redis_stalls_total`, and makes fred drop the connection and reconnect,
//! which keeps failing until Redis answers again; the next answered `PING` clears the mark.
//!
//! On a Redis Cluster the `PING` goes to one shard per probe; a shard that stalls alone is
//! noticed through its commands' timeouts only.

use std::sync::{Arc, Weak, atomic::Ordering};
use std::time::Duration;

use fred::{error::ErrorKind, interfaces::ClientLike, types::Value};

use super::{Conn, Inner};

/// Longest pause between two probes of a connection.
const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Shortest pause between two probes (a small timeout must not turn into a busy loop).
const MIN_PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// The pause between probes for `timeout`: a third of it, between 100 ms and 1 s, so a stall
/// is noticed within about `timeout` plus a third.
pub(super) fn probe_interval(timeout: Duration) -> Duration {
    (timeout / 3).clamp(MIN_PROBE_INTERVAL, MAX_PROBE_INTERVAL)
}

/// Starts the probe task; it ends when the broker is dropped.
pub(super) fn spawn_prober(inner: &Arc<Inner>) {
    let weak = Arc::downgrade(inner);
    let every = probe_interval(inner.redis_timeout);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if !probe_once(&weak).await {
                break;
            }
        }
    });
}

/// Pings both connections at once; returns false once the broker is gone.
async fn probe_once(weak: &Weak<Inner>) -> bool {
    let Some(inner) = weak.upgrade() else {
        return false;
    };
    let (publisher, subscriber) = tokio::join!(
        ping(&inner, Conn::Publisher),
        ping(&inner, Conn::Subscriber)
    );
    match (publisher, subscriber) {
        // Both answered: whatever stalled is over (or was never).
        (Some(true), Some(true)) => {
            if inner.stalled.swap(false, Ordering::SeqCst) {
                tracing::info!("redis answers again");
                inner.update_connected_gauge();
            }
        }
        // A connection still (re)connecting: fred reports it down already; no verdict.
        _ if publisher.is_none() || subscriber.is_none() => {}
        _ => {
            for (conn, answered) in [(Conn::Publisher, publisher), (Conn::Subscriber, subscriber)] {
                if answered == Some(false) {
                    stalled(&inner, conn);
                }
            }
        }
    }
    true
}

/// `PING` on one connection: `None` when it is not connected, else whether it was answered
/// within the Redis timeout. An error other than a timeout is no stall (Redis answered, or
/// fred saw the socket close and reconnects by itself), nor is a `PING` that waited behind a
/// backlog while other answers kept coming in (a burst of publishes is slow, not stalled).
async fn ping(inner: &Inner, conn: Conn) -> Option<bool> {
    let client = match conn {
        Conn::Publisher => inner.publisher.clone(),
        Conn::Subscriber => inner.subscriber.to_client(),
    };
    if !client.is_connected() {
        return None;
    }
    let progress = &inner.progress[conn as usize];
    let before = progress.load(Ordering::Relaxed);
    let answer = tokio::time::timeout(inner.redis_timeout, client.ping::<Value>(None)).await;
    Some(match answer {
        Ok(Ok(_)) => true,
        // fred's own command timeout equals ours; either way Redis did not answer in time.
        Ok(Err(e)) if *e.kind() != ErrorKind::Timeout => true,
        _ => progress.load(Ordering::Relaxed) != before,
    })
}

/// Marks the broker down and makes fred replace the stalled connection.
fn stalled(inner: &Arc<Inner>, conn: Conn) {
    let first = !inner.stalled.swap(true, Ordering::SeqCst);
    inner.hub.metrics.redis_stalls.inc();
    inner.connection_lost(conn);
    if first {
        tracing::warn!(
            connection = conn.as_str(),
            timeout_ms = inner.redis_timeout.as_millis() as u64,
            "redis did not answer a ping in time; reconnecting"
        );
    }
    let client = match conn {
        Conn::Publisher => inner.publisher.clone(),
        Conn::Subscriber => inner.subscriber.to_client(),
    };
    // fred answers a forced reconnection only once a new connection is up, which takes as
    // long as the stall; nobody needs to wait for it.
    tokio::spawn(async move {
        if let Err(e) = client.force_reconnection().await {
            tracing::debug!(error = %e, "forced redis reconnection failed");
        }
    });
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::probe_interval;

    #[test]
    fn probe_interval_is_a_third_of_the_timeout_within_bounds() {
        assert_eq!(
            probe_interval(Duration::from_secs(3)),
            Duration::from_secs(1)
        );
        assert_eq!(
            probe_interval(Duration::from_millis(1_500)),
            Duration::from_millis(500)
        );
        assert_eq!(
            probe_interval(Duration::from_secs(30)),
            Duration::from_secs(1)
        );
        assert_eq!(
            probe_interval(Duration::from_millis(100)),
            Duration::from_millis(100)
        );
    }
}
