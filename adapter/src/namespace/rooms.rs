//! Room channels of one namespace: a node subscribes a room's channel when its first local
//! socket joins the room and unsubscribes `room_unsubscribe_delay` after the last one left, so
//! broadcasts to a room reach only the nodes that have a member of it.
//!
//! - **Joins** say which rooms to subscribe ([`RedisAdapter::subscribe_rooms`]): socketioxide's
//!   `socket.join` writes the local adapter and never tells the adapter, so the node's join
//!   paths call it, and `add_sockets` (operator and remote joins) calls it here. A join waits
//!   until its channel is subscribed, so a broadcast made after the join's answer arrives.
//! - **Leaves** only hint ([`RedisAdapter::rooms_may_be_empty`]); the sweep checks the hinted
//!   rooms every quarter delay, and every room now and then, against the local adapter, which
//!   is the truth. A room that fills again within the delay keeps its channel: no churn.
//! - **Order**: channels are routed and their (un)subscriptions queued under this state's lock,
//!   so the broker applies them in the order the state changed.
//! - **Reconnection**: every routed channel, rooms included, is subscribed again by the broker.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, OnceLock, Weak},
    time::{Duration, Instant},
};

use smallvec::SmallVec;
use socketioxide_core::{
    Sid,
    adapter::{BroadcastOptions, Room, SocketEmitter},
};
use tokio::sync::watch;

use super::RedisAdapter;
use crate::{broker::Inbound, channel};

/// Sweeps between two sweeps of every room (the others check hinted rooms only).
const SWEEPS_PER_FULL_SWEEP: u32 = 20;

/// A room channel this node wants.
struct Entry {
    /// While the subscription is being applied: true once it was (or failed: the broker then
    /// subscribes it again on its next connection); joins of a room still being subscribed
    /// wait for it. `None` once applied, which frees the channel (each idle socket's own
    /// room would keep one).
    ready: Option<watch::Receiver<bool>>,
    /// When the sweep first found the room without a local socket.
    empty_since: Option<Instant>,
}

/// The room channels of one namespace.
#[derive(Default)]
pub(super) struct RoomChannels {
    state: Mutex<State>,
    /// The namespace, as the broker routes its messages; set once, when it joins the cluster.
    handler: OnceLock<Weak<dyn Inbound>>,
}

#[derive(Default)]
struct State {
    rooms: HashMap<String, Entry>,
    /// Rooms whose last local socket may have left, with when that was said: checked by every
    /// sweep until they are unsubscribed, or found occupied once the delay passed (a socket's
    /// removal can follow its disconnect hint).
    candidates: HashMap<String, Instant>,
}

impl RoomChannels {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn set_handler(&self, handler: Weak<dyn Inbound>) {
        // A namespace joins the cluster once; a second call would route to the same adapter.
        let _ = self.handler.set(handler);
    }
}

impl<E: SocketEmitter> RedisAdapter<E> {
    fn rooms_on(&self) -> bool {
        self.cluster.config.room_channels && self.cluster.driver.reaches_peers()
    }

    fn room_channel(&self, room: &str) -> String {
        channel::room(&self.cluster.config.prefix, &self.ns, room)
    }

    /// Whether a local socket is in `room` now.
    fn occupied(&self, room: &str) -> bool {
        let mut opts = BroadcastOptions::default();
        opts.rooms.push(Room::Owned(room.to_owned()));
        !self.local.sockets(opts).is_empty()
    }

    /// Makes sure this node receives the broadcasts to `rooms`: subscribes the channels not
    /// wanted yet (one batch with the other joins in flight) and waits for those still being
    /// subscribed. Call it once a local socket joined them.
    pub(crate) async fn subscribe_rooms(&self, rooms: impl IntoIterator<Item = String>) {
        if !self.rooms_on() {
            return;
        }
        let Some(handler) = self.room_channels.handler.get() else {
            return;
        };
        let metrics = &self.cluster.driver.metrics;
        let mut waits: Vec<watch::Receiver<bool>> = Vec::new();
        let subscribing = {
            let mut st = self.room_channels.lock();
            let mut fresh = Vec::new();
            for room in rooms {
                match st.rooms.get_mut(&room) {
                    Some(e) => {
                        e.empty_since = None;
                        if let Some(ready) = e.ready.as_ref().filter(|r| !*r.borrow()) {
                            waits.push(ready.clone());
                        }
                    }
                    None => fresh.push(room),
                }
            }
            fresh.sort_unstable();
            fresh.dedup();
            (!fresh.is_empty()).then(|| {
                let (done, ready) = watch::channel(false);
                let channels = fresh.iter().map(|r| self.room_channel(r)).collect();
                for room in fresh.iter().cloned() {
                    let entry = Entry {
                        ready: Some(ready.clone()),
                        empty_since: None,
                    };
                    st.rooms.insert(room, entry);
                }
                metrics.room_channels.add(fresh.len() as i64);
                let ops = metrics.room_channel_ops.with_label_values(&["subscribe"]);
                ops.inc_by(fresh.len() as u64);
                (
                    done,
                    self.cluster.driver.subscribe(channels, handler),
                    fresh,
                )
            })
        };
        if let Some((done, subscribed, fresh)) = subscribing {
            if let Err(e) = subscribed.await {
                tracing::warn!(ns = %self.ns, error = %e, "room channels not subscribed yet; restored on reconnection");
            }
            let _ = done.send(true);
            // Only entries still waiting on this batch's channel (not a later subscription of
            // a room swept and joined again meanwhile).
            let mine = done.subscribe();
            let mut st = self.room_channels.lock();
            for room in &fresh {
                if let Some(e) = st.rooms.get_mut(room)
                    && e.ready.as_ref().is_some_and(|r| r.same_channel(&mine))
                {
                    e.ready = None;
                }
            }
        }
        for mut ready in waits {
            // Only a dropped sender ends this early, and it is dropped after sending.
            let _ = ready.wait_for(|r| *r).await;
        }
    }

    /// Joins the local sockets matching `opts` to `rooms`, leaving no trace of a room that
    /// matched none. socketioxide's `add_sockets` files each room under the room map even when
    /// no socket matched, and nothing ever takes such an empty entry out: Sails' introduction of
    /// every new record to its class room's sockets (a join asked of every node) left one per
    /// record on each node without a class-room member, about 100 bytes apiece, for good.
    pub(crate) fn add_local_sockets(&self, opts: BroadcastOptions, rooms: Vec<Room>) {
        self.local.add_sockets(opts, rooms.clone());
        for room in rooms {
            // Removing a socket that is in no room takes the room's entry out only if it is
            // empty, under the map's lock: a socket that joined meanwhile keeps it.
            self.local.del(Sid::ZERO, room);
        }
    }

    /// Subscribes those of `rooms` that have a local socket now (after an `add_sockets`,
    /// which may have matched no local socket at all).
    pub(crate) async fn subscribe_occupied(&self, rooms: &[String]) {
        if !self.rooms_on() {
            return;
        }
        let occupied: Vec<String> = rooms.iter().filter(|r| self.occupied(r)).cloned().collect();
        self.subscribe_rooms(occupied).await;
    }

    /// Says the last local socket of `rooms` may have left; the sweep unsubscribes those still
    /// empty after the delay.
    pub(crate) fn rooms_may_be_empty(&self, rooms: impl IntoIterator<Item = String>) {
        if !self.rooms_on() {
            return;
        }
        let now = Instant::now();
        let mut st = self.room_channels.lock();
        for room in rooms {
            if st.rooms.contains_key(&room) {
                st.candidates.insert(room, now);
            }
        }
    }

    /// Unsubscribes the rooms found empty for the delay: the hinted ones, or with `all` every
    /// room (for leaves nobody hinted: a socket removed by socketioxide itself).
    fn sweep(&self, all: bool) {
        let delay = self.cluster.config.room_unsubscribe_delay;
        let now = Instant::now();
        let mut st = self.room_channels.lock();
        let check: Vec<String> = if all {
            st.rooms.keys().cloned().collect()
        } else {
            st.candidates.keys().cloned().collect()
        };
        let mut gone = Vec::new();
        for room in check {
            let occupied = self.occupied(&room);
            let hinted = st.candidates.get(&room).copied();
            let Some(entry) = st.rooms.get_mut(&room) else {
                st.candidates.remove(&room);
                continue;
            };
            if occupied {
                entry.empty_since = None;
                if hinted.is_none_or(|t| now.duration_since(t) >= delay) {
                    st.candidates.remove(&room);
                }
                continue;
            }
            let since = *entry.empty_since.get_or_insert(now);
            let ready = entry.ready.as_ref().is_none_or(|r| *r.borrow());
            if ready && now.duration_since(since) >= delay {
                gone.push(room);
            } else {
                st.candidates.entry(room).or_insert(now);
            }
        }
        if gone.is_empty() {
            return;
        }
        for room in &gone {
            st.rooms.remove(room);
            st.candidates.remove(room);
        }
        crate::maps::shrink_if_sparse(&mut st.rooms);
        crate::maps::shrink_if_sparse(&mut st.candidates);
        self.unsubscribe_rooms_locked(&gone);
    }

    /// Unsubscribes `rooms`, already removed from the state whose lock the caller holds.
    fn unsubscribe_rooms_locked(&self, rooms: &[String]) {
        let metrics = &self.cluster.driver.metrics;
        metrics.room_channels.sub(rooms.len() as i64);
        let ops = metrics.room_channel_ops.with_label_values(&["unsubscribe"]);
        ops.inc_by(rooms.len() as u64);
        let channels: Vec<String> = rooms.iter().map(|r| self.room_channel(r)).collect();
        if let Some(history) = &self.history {
            for channel in &channels {
                history.forget(channel);
            }
        }
        let unsubscribed = self.cluster.driver.unsubscribe(channels);
        let ns = self.ns.clone();
        tokio::spawn(async move {
            if let Err(e) = unsubscribed.await {
                tracing::debug!(%ns, error = %e, "room channels not unsubscribed");
            }
        });
    }

    /// Unsubscribes every room channel (the namespace closes).
    pub(super) fn unsubscribe_all_rooms(&self) {
        let mut st = self.room_channels.lock();
        let rooms: Vec<String> = st.rooms.drain().map(|(r, _)| r).collect();
        st.candidates.clear();
        if !rooms.is_empty() {
            self.unsubscribe_rooms_locked(&rooms);
        }
    }

    /// Sweeps every quarter delay while the namespace lives.
    pub(super) async fn sweep_loop(this: Weak<Self>, delay: Duration) {
        let tick = (delay / 4).max(Duration::from_millis(10));
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n: u32 = 0;
        loop {
            interval.tick().await;
            let Some(this) = this.upgrade() else { return };
            if this.closed.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            n = n.wrapping_add(1);
            this.sweep(n.is_multiple_of(SWEEPS_PER_FULL_SWEEP));
        }
    }

    /// Where a broadcast to other nodes goes when room channels are on: one copy per room on
    /// the room's channel, each copy leaving out the sockets of the rooms before it, so a
    /// socket in several of the rooms receives the packet once, through the first of them.
    /// `None`: the namespace channel (no rooms, too many, or room channels off).
    pub(super) fn room_routes(
        &self,
        opts: &BroadcastOptions,
    ) -> Option<Vec<(String, BroadcastOptions)>> {
        let max = self.cluster.config.max_room_channels_per_broadcast;
        if !self.cluster.config.room_channels || opts.rooms.is_empty() || opts.rooms.len() > max {
            return None;
        }
        let mut rooms: SmallVec<[Room; 4]> = SmallVec::new();
        for room in &opts.rooms {
            if !rooms.contains(room) {
                rooms.push(room.clone());
            }
        }
        let routes = rooms
            .iter()
            .enumerate()
            .map(|(i, room)| {
                let mut copy = opts.clone();
                copy.rooms = SmallVec::from_iter([room.clone()]);
                copy.except.extend(rooms[..i].iter().cloned());
                (self.room_channel(room), copy)
            })
            .collect();
        Some(routes)
    }
}

/// The weak handle a namespace's room channels are routed to.
pub(super) fn inbound_of<E: SocketEmitter>(this: &Arc<RedisAdapter<E>>) -> Weak<dyn Inbound> {
    let inbound: Arc<dyn Inbound> = this.clone();
    Arc::downgrade(&inbound)
}
