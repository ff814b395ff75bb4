//! The namespace's broadcast history: broadcasts recorded in a Redis stream as they are
//! published, delivered here in stream order, and caught up from the stream after this node's
//! subscription was interrupted, so that nothing published while it was not listening is lost
//! and nothing it already delivered is delivered twice.
//!
//! Only what a client could miss is recorded: events without an ack, not volatile, to the
//! whole cluster. Everything else travels as before.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use socketioxide_core::{
    adapter::{BroadcastFlags, BroadcastOptions, SocketEmitter},
    packet::{Packet, PacketData},
};

use super::{RedisAdapter, Target};
use crate::{
    broker::Recorded,
    history::{Offset, Seq},
    metrics::{DropReason, Origin},
    wire::Body,
};

/// Entries asked of the stream at once.
pub(super) const BATCH: usize = 500;
/// Publisher epochs remembered per channel (each restart or idle counter of a publisher is
/// one); past it the channel's are forgotten and start afresh.
const EPOCHS_PER_CHANNEL: usize = 256;

/// The namespace's history stream and how far this node delivered it.
pub(super) struct History {
    pub(super) stream: String,
    pub(super) max_len: usize,
    state: Mutex<StreamState>,
}

#[derive(Default)]
struct StreamState {
    /// The last offset delivered here: a copy at or before it is a duplicate.
    last: Option<Offset>,
    /// From the subscription's loss until caught up: the recorded broadcasts received
    /// meanwhile, in order.
    gate: Option<Vec<Stamped>>,
    /// A catch-up is running.
    catching_up: bool,
    /// Where to catch up from when nothing was delivered yet: shortly before the loss.
    lost_at: Option<Offset>,
    /// Per publisher epoch (each numbers one channel): the last number delivered.
    numbers: HashMap<u64, u64>,
    /// The epochs seen on each channel received on, forgotten with it.
    epochs: HashMap<String, Vec<u64>>,
}

/// What a broadcast's number says.
#[derive(Debug, PartialEq, Eq)]
enum Numbered {
    /// The next one, the first seen of its epoch, or one that cannot be placed.
    InTurn,
    /// This many before it never arrived.
    After(u64),
    /// Delivered already (a command replayed into a Redis that lost its dedupe key).
    Again,
}

impl StreamState {
    /// Places `seq`, received on `channel` (`None`: a history entry, which does not say).
    /// A known epoch is one lookup; only a new one, seen live, is filed under its channel.
    fn number(&mut self, seq: Seq, channel: Option<&str>) -> Numbered {
        if let Some(last) = self.numbers.get_mut(&seq.epoch) {
            if seq.n <= *last {
                return Numbered::Again;
            }
            let missed = seq.n - *last - 1;
            *last = seq.n;
            return if missed > 0 {
                Numbered::After(missed)
            } else {
                Numbered::InTurn
            };
        }
        let Some(channel) = channel else {
            return Numbered::InTurn;
        };
        let known = match self.epochs.get_mut(channel) {
            Some(known) => known,
            None => self.epochs.entry(channel.to_owned()).or_default(),
        };
        if known.len() >= EPOCHS_PER_CHANNEL {
            for epoch in known.drain(..) {
                self.numbers.remove(&epoch);
            }
        }
        known.push(seq.epoch);
        self.numbers.insert(seq.epoch, seq.n);
        Numbered::InTurn
    }

    /// This node stopped receiving on `channel`: what it knew of its numbers is stale.
    fn forget(&mut self, channel: &str) {
        for epoch in self.epochs.remove(channel).unwrap_or_default() {
            self.numbers.remove(&epoch);
        }
        crate::maps::shrink_if_sparse(&mut self.epochs);
        crate::maps::shrink_if_sparse(&mut self.numbers);
    }
}

/// A recorded broadcast as this node received it.
pub(super) struct Stamped {
    pub(super) offset: Offset,
    /// Its publisher's number on its channel.
    pub(super) seq: Option<Seq>,
    /// The channel it arrived on (`None` for a history entry).
    pub(super) channel: Option<String>,
    /// Published by this node, whose plain sockets already have it.
    pub(super) own: bool,
    /// The node that published it.
    pub(super) origin: String,
    /// When, in microseconds since the epoch (for the latency histogram).
    pub(super) sent_at_us: u64,
    /// The publisher's trace context, if traced.
    pub(super) trace: Option<String>,
    pub(super) packet: Packet,
    pub(super) opts: BroadcastOptions,
}

impl History {
    pub(super) fn new(stream: String, max_len: usize) -> Self {
        Self {
            stream,
            max_len,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, StreamState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last offset delivered on this node.
    pub(super) fn last(&self) -> Option<Offset> {
        self.lock().last
    }

    /// This node no longer receives on `channel` (a room channel it unsubscribed).
    pub(super) fn forget(&self, channel: &str) {
        self.lock().forget(channel);
    }
}

impl<E: SocketEmitter> RedisAdapter<E> {
    /// Whether a broadcast of `packet` to `opts` is recorded.
    pub(super) fn records(&self, packet: &Packet, opts: &BroadcastOptions) -> bool {
        self.history.is_some()
            && !opts.has_flag(BroadcastFlags::Volatile)
            && matches!(
                packet.inner,
                PacketData::Event(_, None) | PacketData::BinaryEvent(_, None)
            )
            && matches!(self.target(opts), Target::All)
    }

    /// Publishes `body` on `channel`, recorded in the history when `record`.
    pub(super) async fn send_maybe_recorded(
        &self,
        channel: String,
        body: Body,
        record: bool,
    ) -> crate::Result<()> {
        let Some(history) = self.history.as_ref().filter(|_| record) else {
            return self.send(channel, body).await;
        };
        let kind = body.kind();
        let payload = self.encode(body)?;
        let message = Recorded {
            channel,
            payload,
            kind,
        };
        let stream = history.stream.clone();
        self.cluster
            .driver
            .record(stream, history.max_len, message)
            .await
    }

    /// Delivers a recorded broadcast received from the broker, in stream order: held back
    /// while the node catches up, skipped when already delivered.
    pub(super) fn on_stamped(&self, stamped: Stamped) {
        let Some(history) = &self.history else {
            // History off here but on at the publisher: a plain broadcast.
            if !stamped.own {
                let _ = self.deliver_local(stamped.packet, stamped.opts, Origin::Remote);
            }
            return;
        };
        let mut state = history.lock();
        if let Some(gate) = &mut state.gate {
            gate.push(stamped);
            return;
        }
        self.deliver_in_order(&mut state, stamped);
    }

    /// Delivers `stamped` unless it is at or before what was delivered, under the stream lock
    /// so that live and caught-up broadcasts never interleave out of order.
    fn deliver_in_order(&self, state: &mut StreamState, stamped: Stamped) {
        if state.last.is_some_and(|last| stamped.offset <= last) {
            return;
        }
        state.last = Some(stamped.offset);
        if let Some(seq) = stamped.seq {
            match state.number(seq, stamped.channel.as_deref()) {
                Numbered::Again => return,
                Numbered::After(missed) => {
                    self.cluster
                        .driver
                        .drop_messages(DropReason::SequenceGap, missed);
                }
                Numbered::InTurn => {}
            }
        }
        let origin = if stamped.own {
            Origin::Local
        } else {
            Origin::Remote
        };
        let _ = self.deliver_split(
            stamped.packet,
            stamped.opts,
            origin,
            !stamped.own,
            Some(stamped.offset),
        );
    }

    /// The subscription was lost: what arrives after it is restored waits until the node
    /// caught up with what it missed.
    pub(super) fn hold(&self) {
        if let Some(history) = &self.history {
            let mut state = history.lock();
            state.gate.get_or_insert_with(Vec::new);
            if state.last.is_none() && state.lost_at.is_none() {
                // Stream ids are Redis' clock in ms; a second of slack covers clock skew.
                let ms = (super::now_us() / 1000).saturating_sub(1000);
                state.lost_at = Some(Offset::new(ms, 0));
            }
        }
    }

    /// After the subscription was restored: delivers from the stream what was published
    /// while it was down, then what arrived meanwhile, in order and once.
    pub(super) async fn catch_up(self: Arc<Self>) {
        let Some(history) = &self.history else { return };
        let from = {
            let mut state = history.lock();
            if std::mem::replace(&mut state.catching_up, true) {
                return;
            }
            state.gate.get_or_insert_with(Vec::new);
            match (state.last, state.lost_at.take()) {
                (Some(last), _) => Some((last, true)),
                (None, Some(lost_at)) => Some((lost_at, false)),
                (None, None) => None,
            }
        };
        if let Some((from, delivered)) = from {
            self.catch_up_from(history, from, delivered).await;
        }
        let mut state = history.lock();
        state.catching_up = false;
        let held = state.gate.take().unwrap_or_default();
        for stamped in held {
            self.deliver_in_order(&mut state, stamped);
        }
    }

    /// Reads the stream from `from` on: the last offset delivered here (`delivered`: it
    /// must still be there, or entries after it may be gone), or a time shortly before the loss.
    async fn catch_up_from(&self, history: &History, from: Offset, delivered: bool) {
        let mut start = from;
        let mut first = true;
        let mut failures = 0;
        loop {
            let stream = history.stream.clone();
            let entries = match self.cluster.driver.range(stream, start, BATCH).await {
                Ok(entries) => entries,
                Err(e) if failures < 10 => {
                    failures += 1;
                    tracing::debug!(error = %e, ns = %self.ns, "history catch-up retried");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Err(e) => {
                    self.cluster.driver.drop_messages(DropReason::HistoryGap, 1);
                    tracing::warn!(error = %e, ns = %self.ns, "history catch-up failed");
                    return;
                }
            };
            if first && delivered && entries.first().map(|e| e.offset) != Some(from) {
                // The last entry delivered here is gone: trimmed (or Redis lost its data), so
                // entries after it may be gone too.
                self.cluster.driver.drop_messages(DropReason::HistoryGap, 1);
                tracing::warn!(ns = %self.ns, %from, "history trimmed past this node's position");
            }
            first = false;
            let full = entries.len() == BATCH;
            let mut state = history.lock();
            for entry in entries {
                if let Some(stamped) = self.decode_entry(entry.offset, entry.seq, &entry.payload) {
                    self.deliver_in_order(&mut state, stamped);
                }
            }
            match state.last {
                Some(last) if full && last > start => start = last,
                _ => return,
            }
        }
    }

    /// A history entry as the broadcast it records; `None` (counted) when it is not one.
    pub(super) fn decode_entry(
        &self,
        offset: Offset,
        seq: Option<Seq>,
        payload: &[u8],
    ) -> Option<Stamped> {
        let env = self.admit(payload)?;
        let own = env.origin == self.cluster.config.node_id;
        match env.body {
            Body::Broadcast {
                packet,
                opts,
                sent_at_us,
                trace,
            } => match Packet::try_from(packet) {
                Ok(packet) => Some(Stamped {
                    offset,
                    seq,
                    channel: None,
                    own,
                    origin: env.origin,
                    sent_at_us,
                    trace,
                    packet,
                    opts,
                }),
                Err(_) => {
                    self.cluster.driver.drop_messages(DropReason::Decode, 1);
                    None
                }
            },
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(epoch: u64, n: u64) -> Seq {
        Seq { epoch, n }
    }

    #[test]
    fn numbers_tell_gaps_repeats_and_fresh_starts() {
        let mut s = StreamState::default();
        assert_eq!(
            s.number(seq(1, 7), Some("r")),
            Numbered::InTurn,
            "first seen"
        );
        assert_eq!(s.number(seq(1, 8), Some("r")), Numbered::InTurn);
        assert_eq!(s.number(seq(1, 12), Some("r")), Numbered::After(3));
        assert_eq!(s.number(seq(1, 12), Some("r")), Numbered::Again);
        assert_eq!(s.number(seq(1, 9), Some("r")), Numbered::Again);
        // A history entry finds its channel by its epoch; an unknown epoch is not placed.
        assert_eq!(s.number(seq(1, 14), None), Numbered::After(1));
        assert_eq!(s.number(seq(9, 50), None), Numbered::InTurn);
        assert_eq!(s.number(seq(9, 52), None), Numbered::InTurn);
        // Another publisher (epoch) on the same channel counts on its own.
        assert_eq!(s.number(seq(2, 0), Some("r")), Numbered::InTurn);
        assert_eq!(s.number(seq(2, 1), Some("r")), Numbered::InTurn);
        // Unsubscribed: what comes after a new subscription starts afresh.
        s.forget("r");
        assert_eq!(s.number(seq(1, 40), Some("r")), Numbered::InTurn);
        assert_eq!(
            s.number(seq(2, 30), None),
            Numbered::InTurn,
            "epoch forgotten"
        );
    }
}
