//! The Redis broker's subscription queue: subscribe and unsubscribe requests are applied in the
//! order they were made, and those that wait together go out as one command (`SUBSCRIBE a b
//! c ..`), or on a Redis Cluster as one `SSUBSCRIBE` per hash slot, all in one flush.
//!
//! One task applies the queue and waits for each command's answer before taking the next
//! requests, so the requests made while a command is in flight become the next batch: at a
//! thousand room joins a second a node sends a few commands, not a thousand, and a lone join
//! waits one round trip, with no timer.

use std::collections::HashMap;

use fred::{
    clients::SubscriberClient,
    interfaces::{ClientLike, PubsubInterface},
    types::{Key, Value},
};
use futures_util::future::join_all;
use tokio::sync::{mpsc, oneshot};

use crate::{
    error::{Error, Result},
    metrics::Metrics,
};

type FredResult<T> = std::result::Result<T, fred::error::Error>;

/// Most channels in one `SUBSCRIBE` or `UNSUBSCRIBE` (a reconnection restores every channel).
const MAX_CHANNELS_PER_COMMAND: usize = 1_000;

/// What a request asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Subscribe,
    Unsubscribe,
}

impl Op {
    fn label(self) -> &'static str {
        match self {
            Op::Subscribe => "subscribe",
            Op::Unsubscribe => "unsubscribe",
        }
    }
}

struct Request {
    op: Op,
    channels: Vec<String>,
    /// The first failure's text, or nothing: one answer serves every request of a batch.
    done: oneshot::Sender<std::result::Result<(), String>>,
}

/// The queue's sending side; the applying task ends when it is dropped.
pub(super) struct SubscriptionQueue {
    tx: mpsc::UnboundedSender<Request>,
}

impl SubscriptionQueue {
    /// Starts the task that applies requests on `subscriber`.
    pub(super) fn start(subscriber: SubscriberClient, sharded: bool, metrics: Metrics) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(apply_all(rx, subscriber, sharded, metrics));
        Self { tx }
    }

    /// Queues `op` on `channels` now (so calls are applied in call order) and returns a future
    /// that resolves once Redis answered. While the subscriber is disconnected a request is
    /// answered at once: every (re)connection subscribes every routed channel again.
    pub(super) fn request(
        &self,
        op: Op,
        channels: Vec<String>,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        let (done, answer) = oneshot::channel();
        let queued = !channels.is_empty() && self.tx.send(Request { op, channels, done }).is_ok();
        async move {
            if !queued {
                return Ok(());
            }
            match answer.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(Error::Subscription(e)),
                Err(_) => Err(Error::Closed),
            }
        }
    }
}

async fn apply_all(
    mut rx: mpsc::UnboundedReceiver<Request>,
    subscriber: SubscriberClient,
    sharded: bool,
    metrics: Metrics,
) {
    let mut next = None;
    loop {
        let first = match next.take() {
            Some(r) => r,
            None => match rx.recv().await {
                Some(r) => r,
                None => return,
            },
        };
        let op = first.op;
        let mut channels = first.channels;
        let mut waiting = vec![first.done];
        // Everything queued meanwhile with the same op joins the batch; a request of the other
        // op ends it, so a subscribe and a later unsubscribe of one channel keep their order.
        while channels.len() < MAX_CHANNELS_PER_COMMAND {
            match rx.try_recv() {
                Ok(r) if r.op == op => {
                    channels.extend(r.channels);
                    waiting.push(r.done);
                }
                Ok(r) => {
                    next = Some(r);
                    break;
                }
                Err(_) => break,
            }
        }
        let result = apply(&subscriber, sharded, op, channels, &metrics).await;
        if let Err(e) = &result {
            tracing::warn!(error = %e, op = op.label(), "redis subscription command failed");
        }
        let answer = result.map_err(|e| e.to_string());
        for done in waiting {
            // A caller that stopped waiting does not need the answer.
            let _ = done.send(answer.clone());
        }
    }
}

/// Sends `op` for `channels`: one command per thousand channels, or on a cluster one per hash
/// slot (a sharded command takes the channels of one slot only), all handed over at once.
async fn apply(
    subscriber: &SubscriberClient,
    sharded: bool,
    op: Op,
    mut channels: Vec<String>,
    metrics: &Metrics,
) -> FredResult<()> {
    if !subscriber.is_connected() {
        // Subscriptions are replayed on connection; an unsubscribed channel is unrouted already.
        return Ok(());
    }
    channels.sort_unstable();
    channels.dedup();
    let groups: Vec<Vec<String>> = if sharded {
        let mut by_slot: HashMap<u16, Vec<String>> = HashMap::new();
        for c in channels {
            by_slot
                .entry(Key::from(c.as_str()).cluster_hash())
                .or_default()
                .push(c);
        }
        by_slot.into_values().collect()
    } else {
        channels
            .chunks(MAX_CHANNELS_PER_COMMAND)
            .map(<[String]>::to_vec)
            .collect()
    };
    metrics
        .subscription_commands
        .with_label_values(&[op.label()])
        .inc_by(groups.len() as u64);
    let sent = groups.into_iter().map(|group| async move {
        match (op, sharded) {
            (Op::Subscribe, false) => subscriber.subscribe(group).await,
            (Op::Subscribe, true) => subscriber.ssubscribe(group).await,
            (Op::Unsubscribe, false) => subscriber.unsubscribe(group).await,
            (Op::Unsubscribe, true) => subscriber.sunsubscribe(group).await,
        }
    });
    join_all(sent)
        .await
        .into_iter()
        .collect::<FredResult<()>>()?;
    if op == Op::Subscribe && !sharded {
        // fred answers `SUBSCRIBE` when it queues it, before it is even written (its answers
        // come out of band); `SSUBSCRIBE` it does wait for. A `PING` on the same connection is
        // answered only after Redis applied everything written before it, so a join that waits
        // for this knows a broadcast published after it reaches the node.
        subscriber.ping::<Value>(None).await?;
    }
    Ok(())
}
