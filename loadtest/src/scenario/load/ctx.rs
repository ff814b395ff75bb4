//! The state every client task of a run shares: the clock, the schedule, the rooms' sizes, the
//! recorder, and how a send is written on the wire.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize};
use std::time::{Duration, Instant};

use super::fault::Faults;
use super::{Flavor, Layout, Plan, Schedule, room_name};
use crate::client::Protocol;
use crate::protocol;
use crate::stats::Recorder;

/// Shared state of the running clients.
pub(super) struct Ctx {
    pub flavor: Flavor,
    pub layout: Layout,
    pub protocol: Protocol,
    pub nsp: &'static str,
    pub prefix: String,
    pub epoch: Instant,
    pub t0_us: u64,
    pub end_us: u64,
    /// The rate steps.
    pub schedule: Schedule,
    pub publishers: usize,
    pub rooms: usize,
    /// Subscribers that joined each room.
    pub members: Vec<u64>,
    pub recorder: Recorder,
    /// Cleared to stop all senders at once (a failed ramp step). At the end of the schedule
    /// they stop by themselves, after sending everything scheduled before it, however late.
    pub publishing: AtomicBool,
    /// Senders that have stopped.
    pub senders_done: AtomicUsize,
    pub pending_acks: AtomicI64,
    pub payload_bytes: usize,
    pub pad: String,
    /// The faults of the run; clients reconnect when there are any.
    pub faults: Option<Faults>,
}

impl Ctx {
    /// The context of `plan` for `clients` connected clients; the clock starts now.
    pub fn new(
        plan: &Plan,
        schedule: Schedule,
        members: Vec<u64>,
        clients: usize,
        faults: Option<Faults>,
    ) -> Self {
        // Leave time to spawn every task before the first send is due.
        let t0_us = 300_000 + clients as u64 * 5;
        let shards = std::thread::available_parallelism().map_or(4, |n| n.get() * 4);
        Self {
            flavor: plan.flavor,
            layout: plan.layout,
            protocol: plan.common.protocol,
            nsp: plan.namespace(),
            prefix: protocol::nsp_prefix(plan.namespace()),
            epoch: Instant::now(),
            t0_us,
            end_us: t0_us + schedule.end_us,
            schedule,
            publishers: plan.publishers,
            rooms: members.len(),
            members,
            recorder: Recorder::new(shards),
            publishing: AtomicBool::new(true),
            senders_done: AtomicUsize::new(0),
            pending_acks: AtomicI64::new(0),
            payload_bytes: plan.rate.payload_bytes,
            pad: "x".repeat(plan.rate.payload_bytes),
            faults,
        }
    }

    pub fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    pub fn instant(&self, us: u64) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.epoch + Duration::from_micros(us))
    }

    pub fn step_of(&self, t_us: u64) -> usize {
        self.schedule.step_of(t_us.saturating_sub(self.t0_us))
    }

    pub fn rate(&self, step: usize) -> f64 {
        self.schedule.rates[step]
    }

    /// Seconds since the first send was due.
    pub fn secs(&self, us: u64) -> f64 {
        us.saturating_sub(self.t0_us) as f64 / 1e6
    }

    pub fn expected_for(&self, room: usize) -> u64 {
        match self.flavor {
            Flavor::Rpc { .. } => 1,
            _ => self.members.get(room).copied().unwrap_or(0),
        }
    }

    /// The message's data: the stamp, padded to `payload_bytes`.
    pub fn stamp_json(&self, p: usize, r: usize, s: u64, t: u64) -> String {
        let mut d = String::with_capacity(self.payload_bytes.max(64));
        let _ = write!(d, r#"{{"p":{p},"r":{r},"s":{s},"t":{t},"x":""#);
        let pad = self.payload_bytes.saturating_sub(d.len() + 2);
        d.push_str(&self.pad[..pad.min(self.pad.len())]);
        d.push_str("\"}");
        d
    }

    pub fn encode_send(&self, p: usize, room: usize, seq: u64, t: u64, ack: u64) -> String {
        let room_s = room_name(self.flavor, self.layout, room);
        match (self.flavor, self.protocol) {
            (Flavor::PubSub | Flavor::Rpc { publish: true }, Protocol::Socketio) => {
                let data = self.stamp_json(p, room, seq, t);
                let args = format!(r#"["publish",{{"room":"{room_s}","data":{data}}}]"#);
                protocol::event_packet(&self.prefix, Some(ack), &args)
            }
            (Flavor::PubSub | Flavor::Rpc { publish: true }, Protocol::Raw) => {
                protocol::raw::publish(ack, &room_s, &self.stamp_json(p, room, seq, t))
            }
            (Flavor::Rpc { publish: false }, Protocol::Socketio) => {
                protocol::event_packet(&self.prefix, Some(ack), &format!(r#"["join","{room_s}"]"#))
            }
            (Flavor::Rpc { publish: false }, Protocol::Raw) => protocol::raw::join(ack, &room_s),
            (Flavor::Chat, _) => {
                let base = format!("{p}.{room}.{seq}.{t}.");
                let pad = self.payload_bytes.saturating_sub(base.len());
                let message = format!("{base}{}", &self.pad[..pad.min(self.pad.len())]);
                let args = format!(
                    r#"["add-message",{{"name":"lt-{p}","message":{}}}]"#,
                    protocol::json_str(&message)
                );
                protocol::event_packet(&self.prefix, Some(ack), &args)
            }
        }
    }
}

#[cfg(test)]
impl Ctx {
    /// A context of one publisher, one room of 3 and one rate step, for unit tests.
    pub fn for_tests(layout: Layout) -> Ctx {
        Ctx {
            flavor: Flavor::PubSub,
            layout,
            protocol: Protocol::Socketio,
            nsp: "/pubsub",
            prefix: "/pubsub,".to_owned(),
            epoch: Instant::now(),
            t0_us: 0,
            end_us: 0,
            schedule: Schedule {
                starts_us: vec![0],
                rates: vec![1.0],
                end_us: 1,
                warmup: false,
            },
            publishers: 1,
            rooms: 1,
            members: vec![3],
            recorder: Recorder::new(1),
            publishing: AtomicBool::new(true),
            senders_done: AtomicUsize::new(0),
            pending_acks: AtomicI64::new(0),
            payload_bytes: 100,
            pad: "x".repeat(100),
            faults: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::load::Stamp;

    fn ctx(layout: Layout) -> Ctx {
        Ctx::for_tests(layout)
    }

    #[test]
    fn stamps_are_padded_to_the_payload_size() {
        let ctx = ctx(Layout::Striped);
        let d = ctx.stamp_json(1, 0, 42, 123_456);
        assert_eq!(d.len(), 100);
        let st: Stamp = serde_json::from_str(&d).unwrap();
        assert_eq!((st.p, st.s, st.t), (1, 42, 123_456));
        let wire = ctx.encode_send(1, 0, 42, 123_456, 7);
        assert!(wire.starts_with(r#"42/pubsub,7["publish",{"room":"lt-room-0","data":{"#));
        let p = protocol::parse_socketio(&wire[1..]).unwrap();
        let (_, body): (String, serde_json::Value) = serde_json::from_str(p.data).unwrap();
        assert_eq!(body["data"]["s"], 42);
    }

    #[test]
    fn scattered_rooms_have_short_names() {
        let ctx = ctx(Layout::Scattered { seed: 1 });
        let wire = ctx.encode_send(0, 7, 0, 1, 1);
        assert!(wire.contains(r#""room":"r-0007""#), "{wire}");
        assert_eq!(
            room_name(Flavor::PubSub, Layout::Scattered { seed: 1 }, 12_345),
            "r-12345"
        );
    }
}
