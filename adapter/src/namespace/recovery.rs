//! Recovering sockets: sockets whose client keeps the offset of the last recorded broadcast it
//! received, so that after a lost connection it can be given, on any node, exactly what it
//! missed. Such a socket receives recorded broadcasts only in stream order (from the broker,
//! never from the publisher's shortcut), each with its offset as the event's last argument.
//!
//! A socket being restored buffers what arrives live while its missed broadcasts are read
//! from the history; it then gets the buffer minus what the history already gave it, and goes
//! live. Each socket remembers the last offset it was given, so nothing reaches it twice.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicUsize, Ordering},
    },
};

use socketioxide_core::{
    Sid, Str, Value,
    adapter::{BroadcastFlags, BroadcastOptions, Room, SocketEmitter, errors::SocketError},
    packet::{Packet, PacketData},
};

use super::{RedisAdapter, history::BATCH};
use crate::{
    history::{Offset, RestoreError},
    metrics::Origin,
};

/// Replayed broadcasts given to a socket before its writer gets a turn. The transport
/// buffers whatever is queued when its writer runs (its channel's blocks and the WebSocket's
/// frame buffer) and keeps those buffers at their fullest size for the connection's life: a
/// replay sent in one go leaves each restored connection holding its size (tens of KB).
const REPLAY_BURST: u64 = 16;

/// The key of the object a recorded event carries as its last argument.
pub const OFFSET_KEY: &str = "ioscale_offset";

enum State {
    /// Being restored: what arrived live meanwhile.
    Restoring(Vec<(Offset, Packet)>),
    /// Receiving live; the last offset it was given.
    Live(Option<Offset>),
}

/// This node's recovering sockets of one namespace.
#[derive(Default)]
pub(super) struct RecoverySockets {
    sockets: Mutex<HashMap<Sid, State>>,
    /// The map's size, read on every broadcast without the lock.
    count: AtomicUsize,
    /// How many of them are being restored (changed under the lock).
    restoring: AtomicUsize,
}

impl RecoverySockets {
    fn lock(&self) -> MutexGuard<'_, HashMap<Sid, State>> {
        self.sockets.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_empty(&self) -> bool {
        self.count.load(Ordering::Relaxed) == 0
    }

    pub(super) fn begin(&self, sid: Sid) {
        let mut sockets = self.lock();
        if !matches!(
            sockets.insert(sid, State::Restoring(Vec::new())),
            Some(State::Restoring(_))
        ) {
            self.restoring.fetch_add(1, Ordering::Relaxed);
        }
        self.count.store(sockets.len(), Ordering::Relaxed);
    }

    pub(super) fn end(&self, sid: Sid) {
        let mut sockets = self.lock();
        if let Some(State::Restoring(_)) = sockets.remove(&sid) {
            self.restoring.fetch_sub(1, Ordering::Relaxed);
        }
        self.count.store(sockets.len(), Ordering::Relaxed);
    }
}

/// `packet` with `{"ioscale_offset": offset}` appended to its arguments. A msgpack packet is
/// left as it is (recovery needs the default parser).
fn with_offset(packet: &Packet, offset: Offset) -> Packet {
    let mut out = packet.clone();
    if let PacketData::Event(Value::Str(json, _), _)
    | PacketData::BinaryEvent(Value::Str(json, _), _) = &mut out.inner
    {
        let text = json.as_str().trim_end();
        if let Some(body) = text.strip_suffix(']') {
            *json = Str::from(format!(r#"{body},{{"{OFFSET_KEY}":"{offset}"}}]"#));
        }
    }
    out
}

/// Whether a broadcast to `opts` reaches socket `sid` in `rooms`. `senders` are the socket's
/// earlier ids, which a broadcast sent by the socket itself excludes.
fn reaches(opts: &BroadcastOptions, sid: Sid, rooms: &HashSet<Room>, senders: &[Sid]) -> bool {
    if opts.except.iter().any(|r| rooms.contains(r)) {
        return false;
    }
    let broadcast = opts.has_flag(BroadcastFlags::Broadcast);
    if broadcast && opts.sid.is_some_and(|s| s == sid || senders.contains(&s)) {
        return false;
    }
    if opts.rooms.is_empty() {
        broadcast || opts.sid == Some(sid)
    } else {
        opts.rooms.iter().any(|r| rooms.contains(r))
    }
}

impl<E: SocketEmitter> RedisAdapter<E> {
    /// Delivers a broadcast to the matching local sockets: to the plain ones when `to_plain`,
    /// and, for a recorded broadcast (`stamp`), to the recovering ones with its offset.
    pub(super) fn deliver_split(
        &self,
        packet: Packet,
        opts: BroadcastOptions,
        origin: Origin,
        to_plain: bool,
        stamp: Option<Offset>,
    ) -> Result<(), Vec<SocketError>> {
        if self.recovery.is_empty() {
            // Under the lock: a restore that begins now waits until this delivery is done, so
            // its socket gets this broadcast from the history, once.
            let _sockets = self.recovery.lock();
            if self.recovery.is_empty() {
                return if to_plain {
                    self.deliver_local(packet, opts, origin)
                } else {
                    Ok(())
                };
            }
        }
        let mut plain = Vec::new();
        let mut marked = Vec::new();
        let mut any_recovering = false;
        let mut matched = 0;
        {
            let mut sockets = self.recovery.lock();
            // With no socket being restored, the sockets that join between this walk and the
            // send can only be plain or live ones: one encoding for all is safe, under the
            // lock (a restore cannot begin meanwhile).
            let none_restoring = self.recovery.restoring.load(Ordering::Relaxed) == 0;
            for sid in self.local.sockets(opts.clone()) {
                matched += 1;
                let state = sockets.get_mut(&sid);
                any_recovering |= state.is_some();
                match (state, stamp) {
                    (None, _) if to_plain => plain.push(sid),
                    (None, _) | (Some(_), None) => {}
                    (Some(State::Restoring(held)), Some(offset)) => {
                        held.push((offset, packet.clone()));
                    }
                    (Some(State::Live(last)), Some(offset)) => {
                        if last.is_none_or(|l| offset > l) {
                            *last = Some(offset);
                            marked.push(sid);
                        }
                    }
                }
            }
            // The walk above counted the matches: the send does not walk the rooms twice.
            if none_restoring && !any_recovering {
                // None of them recovers: as without recovery.
                return if to_plain {
                    self.deliver_matched(packet, opts, origin, matched as u64)
                } else {
                    Ok(())
                };
            }
            if let (true, Some(offset), true) = (none_restoring, stamp, marked.len() == matched) {
                // Every match is a live recovering socket due this offset.
                let packet = with_offset(&packet, offset);
                return self.deliver_matched(packet, opts, origin, matched as u64);
            }
        }
        let mut errors = Vec::new();
        let mut sent = 0;
        for sid in &plain {
            sent += u64::from(self.send_one(*sid, packet.clone(), &mut errors));
        }
        if let (Some(offset), false) = (stamp, marked.is_empty()) {
            let marked_packet = with_offset(&packet, offset);
            for sid in &marked {
                sent += u64::from(self.send_one(*sid, marked_packet.clone(), &mut errors));
            }
        }
        self.cluster.driver.metrics.delivered(origin, sent);
        if errors.is_empty() {
            Ok(())
        } else {
            self.count_socket_errors(&errors);
            Err(errors)
        }
    }

    fn send_one(&self, sid: Sid, packet: Packet, errors: &mut Vec<SocketError>) -> bool {
        match self.local.broadcast(packet, BroadcastOptions::new(sid)) {
            Ok(()) => true,
            Err(errs) => {
                errors.extend(errs);
                false
            }
        }
    }

    /// Makes `sid` a recovering socket, holding what arrives until [`Self::restore`].
    pub(super) fn recovery_begin(&self, sid: Sid) {
        self.recovery.begin(sid);
    }

    /// `sid` is gone.
    pub(super) fn recovery_end(&self, sid: Sid) {
        self.recovery.end(sid);
    }

    /// Gives `sid` the recorded broadcasts after `from` that reach it, then what arrived
    /// meanwhile, and makes it live. Returns how many it was given from the history. Live
    /// either way: on an error the client is told it missed something.
    pub(super) async fn restore(
        &self,
        sid: Sid,
        from: Option<Offset>,
        senders: &[Sid],
    ) -> Result<u64, RestoreError> {
        let mut last = from;
        let mut given = 0;
        let result = match (&self.history, from) {
            (Some(_), Some(from)) => self.replay(sid, from, senders, &mut last, &mut given).await,
            (None, Some(_)) => Err(RestoreError::Unavailable),
            (_, None) => Ok(()),
        };
        // Under the lock, so nothing arriving now can overtake what was held.
        let mut sockets = self.recovery.lock();
        let Some(state) = sockets.get_mut(&sid) else {
            return result.map(|()| given); // disconnected meanwhile
        };
        let held = match std::mem::replace(state, State::Live(None)) {
            State::Restoring(held) => {
                self.recovery.restoring.fetch_sub(1, Ordering::Relaxed);
                held
            }
            State::Live(_) => Vec::new(),
        };
        let mut errors = Vec::new();
        for (offset, packet) in held {
            if last.is_none_or(|l| offset > l) {
                last = Some(offset);
                self.send_one(sid, with_offset(&packet, offset), &mut errors);
            }
        }
        *state = State::Live(last);
        tracing::debug!(%sid, ?from, ?last, given, rooms = ?self.local.socket_rooms(sid), "socket restored");
        result.map(|()| given)
    }

    async fn replay(
        &self,
        sid: Sid,
        from: Offset,
        senders: &[Sid],
        last: &mut Option<Offset>,
        given: &mut u64,
    ) -> Result<(), RestoreError> {
        let Some(history) = &self.history else {
            return Err(RestoreError::Unavailable);
        };
        let rooms = self.local.socket_rooms(sid);
        let mut start = from;
        let mut first = true;
        loop {
            let stream = history.stream.clone();
            let entries = self
                .cluster
                .driver
                .range(stream, start, BATCH)
                .await
                .map_err(|_| RestoreError::Unavailable)?;
            if first && entries.first().map(|e| e.offset) != Some(from) {
                return Err(RestoreError::Trimmed);
            }
            first = false;
            let full = entries.len() == BATCH;
            let mut errors = Vec::new();
            for entry in entries {
                let offset = entry.offset;
                if last.is_some_and(|l| offset <= l) {
                    continue;
                }
                *last = Some(offset);
                let Some(stamped) = self.decode_entry(offset, entry.seq, &entry.payload) else {
                    continue;
                };
                if reaches(&stamped.opts, sid, &rooms, senders) {
                    let packet = with_offset(&stamped.packet, offset);
                    if self.send_one(sid, packet, &mut errors) {
                        *given += 1;
                        if given.is_multiple_of(REPLAY_BURST) {
                            tokio::task::yield_now().await;
                        }
                    }
                }
            }
            match *last {
                Some(l) if full && l > start => start = l,
                _ => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_is_the_last_argument() {
        let packet = Packet::event("/", Value::Str(Str::from(r#"["news",1,"a"]"#), None));
        let out = with_offset(&packet, Offset::new(17, 2));
        let PacketData::Event(Value::Str(json, _), None) = &out.inner else {
            panic!("{out:?}");
        };
        assert_eq!(json.as_str(), r#"["news",1,"a",{"ioscale_offset":"17-2"}]"#);
    }

    #[test]
    fn reach_follows_rooms_except_and_the_sender() {
        let sid = Sid::new();
        let old = Sid::new();
        let rooms: HashSet<Room> = ["a".into(), "me".into()].into_iter().collect();
        let mut to_a = BroadcastOptions::default();
        to_a.rooms = vec!["a".into()].into();
        assert!(reaches(&to_a, sid, &rooms, &[]));
        to_a.except = vec!["me".into()].into();
        assert!(!reaches(&to_a, sid, &rooms, &[]));
        let mut all = BroadcastOptions::new(old);
        all.add_flag(BroadcastFlags::Broadcast);
        assert!(reaches(&all, sid, &rooms, &[]));
        assert!(
            !reaches(&all, sid, &rooms, &[old]),
            "its own broadcast, sent before"
        );
        let mut to_b = BroadcastOptions::default();
        to_b.rooms = vec!["b".into()].into();
        assert!(!reaches(&to_b, sid, &rooms, &[]));
    }
}
