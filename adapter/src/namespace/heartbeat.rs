//! This node's side of membership: its hello and heartbeats on the namespace channel, and the
//! sweep that stops waiting for nodes that fell silent (see [`crate::membership`]).

use std::{
    sync::{Weak, atomic::Ordering},
    time::Duration,
};

use socketioxide_core::adapter::SocketEmitter;

use super::RedisAdapter;
use crate::wire::Body;

impl<E: SocketEmitter> RedisAdapter<E> {
    /// The greeting of a namespace that starts or reconnects: the others answer at once.
    pub(super) fn hello(&self) -> Body {
        Body::Hello {
            uid: self.uid(),
            sockets: self.local_sockets(),
        }
    }

    pub(super) fn heartbeat(&self) -> Body {
        Body::Heartbeat {
            uid: self.uid(),
            sockets: self.local_sockets(),
        }
    }

    pub(super) async fn heartbeat_loop(weak: Weak<Self>, interval: Duration) {
        // Sweep four times per interval so a dead node is noticed well within the timeout.
        let mut tick = tokio::time::interval(interval / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n: u64 = 0;
        let mut last_alive = 0i64;
        loop {
            tick.tick().await;
            let Some(this) = weak.upgrade() else { return };
            if this.closed.load(Ordering::Relaxed) {
                return;
            }
            for dead in this.members.sweep() {
                tracing::warn!(node = %dead, "node stopped sending heartbeats");
            }
            let alive = this.members.live().len() as i64;
            let gauge = &this.cluster.driver.metrics.nodes_alive;
            gauge.add(alive - last_alive);
            last_alive = alive;
            if n.is_multiple_of(4)
                && let Err(e) = this.send(this.all_chan.clone(), this.heartbeat()).await
            {
                tracing::debug!(error = %e, "heartbeat not sent");
            }
            n += 1;
        }
    }
}
