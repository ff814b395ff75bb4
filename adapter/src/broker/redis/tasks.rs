//! The Redis broker's background tasks: the dispatcher that hands incoming messages to the
//! hub, the outbox flusher, the sweeper of idle sequence counters, and the watchers of each
//! connection's losses and reconnections.

use std::sync::{Arc, atomic::Ordering};
use std::time::Duration;

use fred::interfaces::EventInterface;
use tokio::sync::broadcast::error::RecvError;

use super::{Conn, Inner};
use crate::metrics::DropReason;

pub(super) fn spawn_dispatcher(inner: &Arc<Inner>) {
    let mut rx = inner.subscriber.message_rx();
    let weak = Arc::downgrade(inner);
    tokio::spawn(async move {
        loop {
            let msg = rx.recv().await;
            let Some(inner) = weak.upgrade() else { break };
            inner.progress[Conn::Subscriber as usize].fetch_add(1, Ordering::Relaxed);
            match msg {
                Ok(msg) => match msg.value.as_bytes() {
                    Some(bytes) => inner.hub.deliver(&msg.channel, bytes),
                    None => inner.hub.drop_messages(DropReason::Decode, 1),
                },
                Err(RecvError::Lagged(n)) => {
                    inner.hub.drop_messages(DropReason::SubscriberLagged, n);
                }
                Err(RecvError::Closed) => break,
            }
        }
    });
}

/// Flushes the outbox soon after Redis is back (the reconnection handler flushes too; this
/// also expires what waits while the connection comes and goes).
pub(super) fn spawn_outbox_flusher(inner: &Arc<Inner>) {
    let weak = Arc::downgrade(inner);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let Some(inner) = weak.upgrade() else { break };
            inner.flush_outbox();
        }
    });
}

/// Forgets idle per-channel counters now and then (see `sequence`): a node that stopped
/// publishing would keep them otherwise.
pub(super) fn spawn_counter_sweeper(inner: &Arc<Inner>) {
    let weak = Arc::downgrade(inner);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(crate::broker::sequence::SWEEP_EVERY).await;
            let Some(inner) = weak.upgrade() else { break };
            inner.channel_seqs.sweep(std::time::Instant::now());
        }
    });
}

pub(super) fn watch_reconnects(inner: &Arc<Inner>) {
    for (client, conn) in [
        (inner.publisher.clone(), Conn::Publisher),
        (inner.subscriber.to_client(), Conn::Subscriber),
    ] {
        let is_subscriber = conn == Conn::Subscriber;
        let weak = Arc::downgrade(inner);
        let mut reconnects = client.reconnect_rx();
        tokio::spawn(async move {
            let mut connected_before = false;
            while reconnects.recv().await.is_ok() {
                let Some(inner) = weak.upgrade() else { break };
                inner.update_connected_gauge();
                if is_subscriber {
                    // A new subscriber connection after an earlier one missed whatever was
                    // published in between: what arrives now waits until the namespaces
                    // caught up from their history, which they read once resubscribed.
                    let again = std::mem::replace(&mut connected_before, !inner.sharded);
                    if again {
                        inner.hub.subscription_lost();
                    }
                    inner.resubscribe().await;
                    if again {
                        inner.hub.resubscribed();
                    }
                } else {
                    inner.flush_outbox();
                }
                // `lost` is set when a connection fails or stalls; the next successful
                // connection is a reconnection. (The client also announces its first
                // connections, one per cluster shard.)
                if inner.lost[conn as usize].swap(false, Ordering::SeqCst) {
                    inner.hub.metrics.redis_reconnects.inc();
                    tracing::warn!("reconnected to redis");
                    inner.hub.reconnected();
                }
            }
        });
        let weak = Arc::downgrade(inner);
        let mut errors = client.error_rx();
        tokio::spawn(async move {
            while let Ok(e) = errors.recv().await {
                let Some(inner) = weak.upgrade() else { break };
                inner.connection_lost(conn);
                tracing::warn!(error = %e.0, "redis connection error");
            }
        });
    }
}
