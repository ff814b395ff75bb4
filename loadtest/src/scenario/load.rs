//! The open-loop send engine shared by `fanout`, `chat` and `rpc`.
//!
//! 1. Setup: clients connect at `--connect-rate-per-s` (bounded concurrency) and subscribers
//!    join their room, each join acknowledged, so no message can race a membership.
//! 2. Sending: every sender owns a fixed schedule (sender `j` of `P` at total rate `R` sends at
//!    `t0 + (j + P·k) / R`). Sends are stamped with their *scheduled* time; a sender that is late
//!    catches up in a burst, so the lag shows as latency instead of a lower rate. With `--ramp`
//!    the rate is multiplied every step until a step fails.
//! 3. Accounting: each message carries `(publisher, room, sequence)`; a subscriber keeps, per
//!    publisher, the next expected sequence and the set of gaps, which gives lost, duplicated
//!    and reordered deliveries exactly, without storing every message.
//!
//! A step is judged `--ramp-grace-ms` after it ends: it passes when every delivery its sends
//! should cause has arrived and its p99 is within `--ramp-p99-ms`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use futures_util::StreamExt as _;
use serde::Deserialize;
use tokio::sync::watch;

use crate::client::{
    Client, ClientConfig, ClientError, Protocol, Target, Transport, transport_for,
};
use crate::config::{Common, RateArgs};
use crate::progress::Progress;
use crate::protocol::{self, SioKind};
use crate::report::{
    ClientsReport, DeliveryReport, GeneratorReport, HeldReport, PublishReport, Report, StepReport,
    TimePoint,
};
use crate::stats::{self, GENERATOR_BOUND_UTIL, Percentiles, ProcWatch, Recorder, SelfCpu, Shard};

/// What the senders send and what counts as a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `/pubsub` `publish {room, data}` → `msg {room, data}` to room members.
    PubSub,
    /// `/` `add-message {name, message}` → `message-added` to everyone.
    Chat,
    /// Acked requests; the ack is the delivery. `publish: false` sends `join`.
    Rpc { publish: bool },
}

/// A load run, resolved from a scenario's arguments.
#[derive(Debug, Clone)]
pub struct Plan {
    pub scenario: &'static str,
    pub flavor: Flavor,
    pub common: Common,
    pub rate: RateArgs,
    /// Clients that receive (fanout: room members; chat: everyone; rpc: none).
    pub subscribers: usize,
    /// Members per room (fanout).
    pub room_size: usize,
    /// Sending clients.
    pub publishers: usize,
    /// The scenario's own arguments, for the report.
    pub params: serde_json::Value,
}

impl Plan {
    fn namespace(&self) -> &'static str {
        match self.flavor {
            Flavor::Chat => "/",
            _ => "/pubsub",
        }
    }

    fn rooms(&self) -> usize {
        match self.flavor {
            Flavor::PubSub => self.subscribers.div_ceil(self.room_size.max(1)).max(1),
            Flavor::Chat => 1,
            // One private room per client.
            Flavor::Rpc { .. } => self.publishers.max(1),
        }
    }

    /// Chat senders are the first clients; fanout and rpc senders are clients of their own.
    fn senders_subscribe(&self) -> bool {
        self.flavor == Flavor::Chat
    }
}

/// One client of the run.
#[derive(Debug, Clone, Copy)]
struct Spec {
    idx: usize,
    target: usize,
    transport: Transport,
    /// Room joined (and received from).
    room: Option<usize>,
    /// Sender number.
    publisher: Option<usize>,
}

fn specs(plan: &Plan, targets: usize) -> Vec<Spec> {
    let polling = |i| {
        if plan.common.protocol == Protocol::Raw {
            Transport::Websocket
        } else {
            transport_for(i, plan.common.polling_share)
        }
    };
    let mut out = Vec::new();
    for i in 0..plan.subscribers {
        let room = match plan.flavor {
            Flavor::Chat => 0,
            _ => i / plan.room_size.max(1),
        };
        let publisher = (plan.senders_subscribe() && i < plan.publishers).then_some(i);
        out.push(Spec {
            idx: i,
            target: i % targets,
            transport: polling(i),
            room: Some(room),
            publisher,
        });
    }
    if !plan.senders_subscribe() {
        for j in 0..plan.publishers {
            let i = plan.subscribers + j;
            out.push(Spec {
                idx: i,
                target: i % targets,
                transport: polling(i),
                room: None,
                publisher: Some(j),
            });
        }
    }
    out
}

/// Name of room `r` on the wire.
pub fn room_name(flavor: Flavor, r: usize) -> String {
    match flavor {
        Flavor::Rpc { .. } => format!("lt-rpc-{r}"),
        _ => format!("lt-room-{r}"),
    }
}

/// Shared state of the running clients.
struct Ctx {
    flavor: Flavor,
    protocol: Protocol,
    nsp: &'static str,
    prefix: String,
    epoch: Instant,
    t0_us: u64,
    end_us: u64,
    /// The rate steps.
    schedule: Schedule,
    publishers: usize,
    rooms: usize,
    /// Subscribers that joined each room.
    members: Vec<u64>,
    recorder: Recorder,
    /// Cleared to stop all senders at once (a failed ramp step). At the end of the schedule
    /// they stop by themselves, after sending everything scheduled before it, however late.
    publishing: AtomicBool,
    /// Senders that have stopped.
    senders_done: AtomicUsize,
    pending_acks: AtomicI64,
    payload_bytes: usize,
    pad: String,
}

impl Ctx {
    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn instant(&self, us: u64) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.epoch + Duration::from_micros(us))
    }

    fn step_of(&self, t_us: u64) -> usize {
        self.schedule.step_of(t_us.saturating_sub(self.t0_us))
    }

    fn rate(&self, step: usize) -> f64 {
        self.schedule.rates[step]
    }

    fn expected_for(&self, room: usize) -> u64 {
        match self.flavor {
            Flavor::Rpc { .. } => 1,
            _ => self.members.get(room).copied().unwrap_or(0),
        }
    }

    /// The message's data: the stamp, padded to `payload_bytes`.
    fn stamp_json(&self, p: usize, r: usize, s: u64, t: u64) -> String {
        let mut d = String::with_capacity(self.payload_bytes.max(64));
        let _ = write!(d, r#"{{"p":{p},"r":{r},"s":{s},"t":{t},"x":""#);
        let pad = self.payload_bytes.saturating_sub(d.len() + 2);
        d.push_str(&self.pad[..pad.min(self.pad.len())]);
        d.push_str("\"}");
        d
    }

    fn encode_send(&self, p: usize, room: usize, seq: u64, t: u64, ack: u64) -> String {
        let room_s = room_name(self.flavor, room);
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

/// The stamp a delivery carries.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub struct Stamp {
    pub p: usize,
    pub r: usize,
    pub s: u64,
    pub t: u64,
}

#[derive(Deserialize)]
struct MsgBody {
    data: Stamp,
}

#[derive(Deserialize)]
struct ChatBody<'a> {
    #[serde(borrow)]
    message: std::borrow::Cow<'a, str>,
}

/// Extracts the stamp of a delivered event (`data` is the Socket.IO event's JSON array).
pub fn parse_delivery(flavor: Flavor, data: &str) -> Option<Stamp> {
    match flavor {
        Flavor::PubSub => {
            let (ev, body): (std::borrow::Cow<'_, str>, MsgBody) =
                serde_json::from_str(data).ok()?;
            (ev == "msg").then_some(body.data)
        }
        Flavor::Chat => {
            let (ev, body): (std::borrow::Cow<'_, str>, ChatBody<'_>) =
                serde_json::from_str(data).ok()?;
            if ev != "message-added" {
                return None;
            }
            let mut it = body.message.splitn(5, '.');
            Some(Stamp {
                p: it.next()?.parse().ok()?,
                r: it.next()?.parse().ok()?,
                s: it.next()?.parse().ok()?,
                t: it.next()?.parse().ok()?,
            })
        }
        Flavor::Rpc { .. } => None,
    }
}

/// Sequence accounting of one (subscriber, publisher) pair.
#[derive(Debug, Default, Clone)]
pub struct SeqTrack {
    next: u64,
    /// Sequences skipped so far (lost unless they still arrive).
    missing: BTreeSet<u64>,
    pub duplicates: u64,
    pub reordered: u64,
}

impl SeqTrack {
    /// Records sequence `s`; true for a first delivery.
    pub fn on(&mut self, s: u64) -> bool {
        if s == self.next {
            self.next += 1;
            true
        } else if s > self.next {
            self.missing.extend(self.next..s);
            self.next = s + 1;
            true
        } else if self.missing.remove(&s) {
            self.reordered += 1;
            true
        } else {
            self.duplicates += 1;
            false
        }
    }

    /// Sequences below `sent` that never arrived, except the ones the server rejected.
    pub fn lost(&self, sent: u64, rejected: impl Fn(u64) -> bool) -> u64 {
        let tail = (self.next..sent).filter(|&x| !rejected(x)).count();
        let gaps = self
            .missing
            .iter()
            .filter(|&&x| x < sent && !rejected(x))
            .count();
        (tail + gaps) as u64
    }
}

struct Pending {
    room: usize,
    seq: u64,
    step: usize,
    sched_us: u64,
}

/// A sender's state.
struct Sender {
    j: usize,
    k: u64,
    next_due_us: u64,
    seqs: Vec<u64>,
    next_ack: u64,
    pending: HashMap<u64, Pending>,
    /// (room, seq) the server refused.
    rejected: Vec<(usize, u64)>,
    acked_ok: u64,
    sending: bool,
}

impl Sender {
    fn new(ctx: &Ctx, j: usize) -> Self {
        // Interleave the senders evenly over the first interval.
        let offset = (j as f64 * 1e6 / ctx.rate(0)) as u64;
        Self {
            j,
            k: 0,
            next_due_us: ctx.t0_us + offset,
            seqs: vec![0; ctx.rooms],
            next_ack: 1,
            pending: HashMap::new(),
            rejected: Vec::new(),
            acked_ok: 0,
            sending: true,
        }
    }

    /// The messages due by now (a burst when late), as wire text.
    fn due(&mut self, ctx: &Ctx, shard_id: usize) -> Vec<String> {
        let now = ctx.now_us();
        let mut out = Vec::new();
        let mut shard = ctx.recorder.shard(shard_id);
        while self.sending && self.next_due_us <= now && out.len() < 4096 {
            if !ctx.publishing.load(Ordering::Relaxed) || self.next_due_us >= ctx.end_us {
                self.sending = false;
                ctx.senders_done.fetch_add(1, Ordering::Relaxed);
                break;
            }
            let t = self.next_due_us;
            let step = ctx.step_of(t);
            let room = match ctx.flavor {
                Flavor::Rpc { .. } => self.j,
                _ => (self.j + usize::try_from(self.k).unwrap_or(0)) % ctx.rooms,
            };
            let seq = self.seqs[room];
            self.seqs[room] += 1;
            let ack = self.next_ack;
            self.next_ack += 1;
            out.push(ctx.encode_send(self.j, room, seq, t, ack));
            self.pending.insert(
                ack,
                Pending {
                    room,
                    seq,
                    step,
                    sched_us: t,
                },
            );
            ctx.pending_acks.fetch_add(1, Ordering::Relaxed);
            shard.sent(step, ctx.expected_for(room), now - t);
            let interval = (ctx.publishers as f64 * 1e6 / ctx.rate(step)).max(1.0);
            self.next_due_us = t + interval as u64;
            self.k += 1;
        }
        out
    }

    fn on_ack(&mut self, ctx: &Ctx, now: u64, shard: &mut Shard, id: u64, error: bool) {
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        ctx.pending_acks.fetch_sub(1, Ordering::Relaxed);
        let latency = now.saturating_sub(p.sched_us);
        stats::record(&mut shard.ack, latency);
        if error {
            shard.rejected(p.step, ctx.expected_for(p.room));
            self.rejected.push((p.room, p.seq));
        } else {
            self.acked_ok += 1;
            if matches!(ctx.flavor, Flavor::Rpc { .. }) {
                shard.delivered(p.step, latency);
            }
        }
    }
}

/// What a client task hands back.
struct Outcome {
    spec: Spec,
    tracks: Vec<SeqTrack>,
    misrouted: u64,
    sender: Option<SenderResult>,
    dropped: Option<ClientError>,
}

struct SenderResult {
    j: usize,
    sent_per_room: Vec<u64>,
    rejected: Vec<(usize, u64)>,
    acked_ok: u64,
    unacked: u64,
}

async fn run_client(
    ctx: Arc<Ctx>,
    spec: Spec,
    mut client: Client,
    mut stop: watch::Receiver<bool>,
) -> Outcome {
    let mut tracks = vec![SeqTrack::default(); ctx.publishers];
    let mut misrouted = 0;
    let mut sender = spec.publisher.map(|j| Sender::new(&ctx, j));
    let mut dropped = None;
    let first_due = sender.as_ref().map_or(ctx.end_us, |s| s.next_due_us);
    let sleep = tokio::time::sleep_until(ctx.instant(first_due));
    tokio::pin!(sleep);
    loop {
        let sending = sender.as_ref().is_some_and(|s| s.sending);
        tokio::select! {
            _ = stop.changed() => break,
            r = client.fill() => {
                let open = r.and_then(|more| {
                    // Everything one read brought arrived at the same instant: one clock read
                    // and one lock of the stats shard per read, not per delivery.
                    let now = ctx.now_us();
                    let mut shard = ctx.recorder.shard(spec.idx);
                    let mut sender = sender.as_mut();
                    let open = client.drain(|m| {
                        handle(&ctx, &spec, m, now, &mut shard, &mut tracks, &mut misrouted, sender.as_deref_mut());
                    })?;
                    Ok(more && open)
                });
                match open {
                    Ok(true) => {}
                    Ok(false) => {
                        dropped = Some(ClientError { cause: "closed".to_owned(), detail: "closed by the server".to_owned() });
                        break;
                    }
                    Err(e) => {
                        dropped = Some(e);
                        break;
                    }
                }
            },
            () = &mut sleep, if sending => {
                let Some(s) = sender.as_mut() else { continue };
                let batch = s.due(&ctx, spec.idx);
                if !batch.is_empty()
                    && let Err(e) = client.send_batch(batch).await
                {
                    dropped = Some(e);
                    break;
                }
                if s.sending {
                    sleep.as_mut().reset(ctx.instant(s.next_due_us));
                }
            }
        }
    }
    // Closed now, not when the run's results are collected: a client that failed must not
    // keep a session open on the server.
    drop(client);
    let sender = sender.map(|s| SenderResult {
        j: s.j,
        sent_per_room: s.seqs.clone(),
        unacked: s.pending.len() as u64,
        rejected: s.rejected,
        acked_ok: s.acked_ok,
    });
    Outcome {
        spec,
        tracks,
        misrouted,
        sender,
        dropped,
    }
}

/// One delivered message `m` (the Engine.IO message bytes, or a raw frame), received at
/// `now`. The fast path reads the stamp straight from the bytes; anything else goes through
/// the full parsers.
#[allow(clippy::too_many_arguments)]
fn handle(
    ctx: &Ctx,
    spec: &Spec,
    m: &[u8],
    now: u64,
    shard: &mut Shard,
    tracks: &mut [SeqTrack],
    misrouted: &mut u64,
    sender: Option<&mut Sender>,
) {
    let (stamp, ack) = match fast_delivery(ctx, m) {
        Some(st) => (Some(st), None),
        None => slow_parse(ctx, m),
    };
    if let (Some((id, error)), Some(s)) = (ack, sender) {
        s.on_ack(ctx, now, shard, id, error);
    }
    let Some(st) = stamp else { return };
    if spec.room != Some(st.r) || st.p >= tracks.len() {
        *misrouted += 1;
        return;
    }
    let latency = now.saturating_sub(st.t);
    let step = ctx.step_of(st.t);
    if tracks[st.p].on(st.s) {
        shard.delivered(step, latency);
    } else {
        shard.duplicates += 1;
    }
}

/// The stamp of a `/pubsub` delivery (`42/pubsub,["msg",{…"data":{"p":…,"r":…,"s":…,"t":…`)
/// or a raw `m <room> {"p":…` frame, read without a JSON parse; `None` for anything else,
/// which then takes the full parse.
fn fast_delivery(ctx: &Ctx, m: &[u8]) -> Option<Stamp> {
    let body = match (ctx.flavor, ctx.protocol) {
        (Flavor::PubSub, Protocol::Socketio) => {
            let rest = m.strip_prefix(b"42")?.strip_prefix(ctx.prefix.as_bytes())?;
            rest.strip_prefix(br#"["msg",{"#)?
        }
        (Flavor::PubSub, Protocol::Raw) => m.strip_prefix(b"m ")?,
        _ => return None,
    };
    protocol::scan_stamp(body).map(|(p, r, s, t)| Stamp { p, r, s, t })
}

fn slow_parse(ctx: &Ctx, m: &[u8]) -> (Option<Stamp>, Option<(u64, bool)>) {
    let Ok(text) = std::str::from_utf8(m) else {
        return (None, None);
    };
    match ctx.protocol {
        Protocol::Socketio => {
            let Some(rest) = text.get(1..) else {
                return (None, None);
            };
            let Ok(p) = protocol::parse_socketio(rest) else {
                return (None, None);
            };
            if p.nsp != ctx.nsp {
                return (None, None);
            }
            match p.kind {
                SioKind::Event => (parse_delivery(ctx.flavor, p.data), None),
                SioKind::Ack => (None, p.id.map(|id| (id, p.data.contains("\"error\"")))),
                _ => (None, None),
            }
        }
        Protocol::Raw => match protocol::raw::parse_server(text) {
            Ok(protocol::raw::ServerFrame::Ack(id)) => (None, Some((id, false))),
            Ok(protocol::raw::ServerFrame::Msg { data, .. }) => {
                (serde_json::from_str::<Stamp>(data).ok(), None)
            }
            Err(_) => (None, None),
        },
    }
}

fn closed(detail: &str) -> ClientError {
    ClientError {
        cause: "closed".to_owned(),
        detail: detail.to_owned(),
    }
}

/// Tries of a room join before the client counts as failed.
const JOIN_TRIES: u64 = 5;
/// How long a join may stay unacknowledged before it is sent again.
const JOIN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Joins `room` and waits for the ack; returns how many times the join had to be re-sent.
///
/// Servers that register their event handlers in a connect handler they run as a separate task
/// (socketioxide does so for async handlers) can drop an event that arrives right after the
/// namespace connect: the join is then never answered. It is re-sent after
/// [`JOIN_RETRY_AFTER`] and the re-sends are reported, so the race shows without costing the
/// run its subscribers.
async fn join(
    client: &mut Client,
    protocol: Protocol,
    prefix: &str,
    room: &str,
) -> Result<u64, ClientError> {
    for attempt in 0..JOIN_TRIES {
        let text = match protocol {
            Protocol::Socketio => protocol::event_packet(
                prefix,
                Some(attempt),
                &format!(r#"["join",{}]"#, protocol::json_str(room)),
            ),
            Protocol::Raw => protocol::raw::join(attempt, room),
        };
        client.send(text).await?;
        match tokio::time::timeout(JOIN_RETRY_AFTER, join_ack(client, protocol, attempt)).await {
            Ok(Ok(())) => return Ok(attempt),
            Ok(Err(e)) => return Err(e),
            Err(_) => {}
        }
    }
    Err(ClientError {
        cause: "join-unanswered".to_owned(),
        detail: format!("no ack to {JOIN_TRIES} joins of {room}"),
    })
}

/// Waits for the ack of any join sent so far (ack ids `0..=last`). Cancel-safe.
async fn join_ack(client: &mut Client, protocol: Protocol, last: u64) -> Result<(), ClientError> {
    loop {
        let m = client
            .recv()
            .await?
            .ok_or_else(|| closed("closed before the join was acknowledged"))?;
        let acked = match protocol {
            Protocol::Socketio => protocol::parse_socketio(&m[1..])
                .ok()
                .filter(|p| p.kind == SioKind::Ack && p.id.is_some_and(|id| id <= last))
                .map(|p| p.data.contains("\"error\"")),
            Protocol::Raw => matches!(
                protocol::raw::parse_server(&m),
                Ok(protocol::raw::ServerFrame::Ack(id)) if id <= last
            )
            .then_some(false),
        };
        match acked {
            Some(false) => return Ok(()),
            Some(true) => {
                return Err(ClientError {
                    cause: "join-rejected".to_owned(),
                    detail: m.to_string(),
                });
            }
            None => {}
        }
    }
}

struct Setup {
    clients: Vec<(Spec, Client)>,
    report: ClientsReport,
}

/// Connects every client at the configured pace; subscribers join their room.
async fn setup(plan: &Plan, cfg: &ClientConfig, targets: &[Target], progress: &Progress) -> Setup {
    let specs = specs(plan, targets.len());
    let total = specs.len();
    let rate = plan.common.connect_rate_per_s.max(0.001);
    let timeout = Duration::from_millis(plan.common.connect_timeout_ms);
    let start = tokio::time::Instant::now();
    let nsp = plan.namespace();
    let prefix = protocol::nsp_prefix(nsp);
    let flavor = plan.flavor;
    let prefix = &prefix;
    let mut results =
        futures_util::stream::iter(specs.into_iter().enumerate().map(|(i, spec)| async move {
            tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
            let t = Instant::now();
            let r = async {
                let (mut c, _) =
                    Client::connect(cfg, &targets[spec.target], spec.transport, nsp).await?;
                let mut retries = 0;
                if let (Some(room), Flavor::PubSub) = (spec.room, flavor) {
                    let name = room_name(flavor, room);
                    retries = tokio::time::timeout(
                        timeout + JOIN_RETRY_AFTER * 5,
                        join(&mut c, cfg.protocol, prefix, &name),
                    )
                    .await
                    .map_err(|_| ClientError {
                        cause: "timeout".to_owned(),
                        detail: "room join not acknowledged in time".to_owned(),
                    })??;
                }
                Ok::<_, ClientError>((c, retries))
            }
            .await;
            (spec, r, t.elapsed())
        }))
        .buffer_unordered(plan.common.connect_concurrency.max(1));
    let mut report = ClientsReport {
        attempted: total as u64,
        ..ClientsReport::default()
    };
    let mut handshake = stats::new_histogram();
    let mut clients = Vec::with_capacity(total);
    let mut done = 0;
    while let Some((spec, r, took)) = results.next().await {
        done += 1;
        match r {
            Ok((c, retries)) => {
                report.join_retries += retries;
                stats::record(
                    &mut handshake,
                    u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
                );
                if c.transport() == Transport::Polling {
                    report.polling += 1;
                }
                clients.push((spec, c));
            }
            Err(e) => {
                *report.failed.entry(e.cause.clone()).or_default() += 1;
                report.first_error.get_or_insert_with(|| e.to_string());
            }
        }
        if done % 100 == 0 || done == total {
            progress.status(format!(
                "connecting {done}/{total} ({} failed)",
                done - clients.len()
            ));
        }
    }
    report.connected = clients.len() as u64;
    report.handshake_ms = Percentiles::of(&handshake);
    clients.sort_by_key(|(s, _)| s.idx);
    Setup { clients, report }
}

/// The rate steps of a run, as offsets from the first send.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Start of each step.
    pub starts_us: Vec<u64>,
    /// Offered total send rate of each step.
    pub rates: Vec<f64>,
    /// End of the last step: sending stops there.
    pub end_us: u64,
    /// Step 0 is a warm-up: judged and reported, but it never stops the ramp nor counts as held.
    pub warmup: bool,
}

impl Schedule {
    /// The schedule `r` asks for.
    ///
    /// # Errors
    /// Non-positive rates or durations, a ramp factor not above 1.
    pub fn of(r: &RateArgs) -> Result<Self> {
        ensure!(r.rate_per_s > 0.0, "--rate-per-s must be positive");
        ensure!(r.warmup_s >= 0.0, "--warmup-s must not be negative");
        let duration = r.duration_s.unwrap_or(if r.ramp { 600.0 } else { 10.0 });
        ensure!(duration > 0.0, "--duration-s must be positive");
        let us = |s: f64| (s * 1e6) as u64;
        let warmup = r.warmup_s > 0.0;
        let mut starts_us = Vec::new();
        let mut rates = Vec::new();
        if warmup {
            starts_us.push(0);
            rates.push(r.rate_per_s);
        }
        let first = us(r.warmup_s);
        if !r.ramp {
            starts_us.push(first);
            rates.push(r.rate_per_s);
            return Ok(Self {
                starts_us,
                rates,
                end_us: first + us(duration),
                warmup,
            });
        }
        ensure!(r.ramp_factor > 1.0, "--ramp-factor must be above 1");
        ensure!(r.ramp_step_s > 0.0, "--ramp-step-s must be positive");
        let step = us(r.ramp_step_s);
        let mut rate = r.rate_per_s;
        let mut k = 0u64;
        // Whole steps only, within the duration and the rate cap.
        while (k + 1) * step <= us(duration) + 1 && (k == 0 || rate <= r.ramp_max_rate_per_s) {
            starts_us.push(first + k * step);
            rates.push(rate);
            rate *= r.ramp_factor;
            k += 1;
        }
        if k == 0 {
            starts_us.push(first);
            rates.push(r.rate_per_s);
            k = 1;
        }
        Ok(Self {
            starts_us,
            rates,
            end_us: first + k * step,
            warmup,
        })
    }

    /// The step `rel_us` after the first send falls in.
    pub fn step_of(&self, rel_us: u64) -> usize {
        self.starts_us
            .partition_point(|&s| s <= rel_us)
            .saturating_sub(1)
    }

    /// Start and end of step `i`.
    pub fn bounds(&self, i: usize) -> (u64, u64) {
        let end = self.starts_us.get(i + 1).copied().unwrap_or(self.end_us);
        (self.starts_us[i], end)
    }

    /// Number of steps.
    pub fn len(&self) -> usize {
        self.rates.len()
    }

    /// Whether there is no step (never: a schedule has at least one).
    pub fn is_empty(&self) -> bool {
        self.rates.is_empty()
    }

    /// Whether step `i` is the warm-up.
    pub fn is_warmup(&self, i: usize) -> bool {
        self.warmup && i == 0
    }
}

fn judge(
    ctx: &Ctx,
    cpu: &SelfCpu,
    idx: usize,
    (start_us, end_us): (u64, u64),
    bound_ms: f64,
    truncated: bool,
) -> StepReport {
    let len_s = (end_us - start_us) as f64 / 1e6;
    let warmup = ctx.schedule.is_warmup(idx);
    let snap = ctx.recorder.step(idx);
    let latency = Percentiles::of(&snap.latency);
    let missing = snap.expected.saturating_sub(snap.received);
    let mut notes = Vec::new();
    // Sends still owed by a generator that fell behind could not be judged: the step cannot
    // be certified (one send per sender of slack for the schedule's phase).
    let planned = ctx.rate(idx) * len_s;
    let mut generator_bound = false;
    if snap.sent == 0 {
        notes.push("nothing sent".to_owned());
    } else if !truncated && (snap.sent as f64) < planned * 0.98 - ctx.publishers as f64 {
        generator_bound = true;
        notes.push(format!(
            "generator behind: {} of {planned:.0} sends made",
            snap.sent
        ));
    }
    let util = cpu.util(start_us, end_us).unwrap_or(0.0);
    if util > GENERATOR_BOUND_UTIL {
        generator_bound = true;
        notes.push(format!(
            "generator-bound: it used {:.0} % of its {} threads",
            util * 100.0,
            cpu.threads
        ));
    }
    if missing > 0 {
        notes.push(format!("{missing} deliveries missing when judged"));
    }
    if latency.p99_ms > bound_ms {
        notes.push(format!("p99 {:.1} ms > {bound_ms} ms", latency.p99_ms));
    }
    if truncated {
        notes.push("cut short".to_owned());
    }
    StepReport {
        index: idx,
        rate_per_s: ctx.rate(idx),
        sent: snap.sent,
        expected: snap.expected,
        received: snap.received,
        deliveries_per_s: snap.received as f64 / len_s.max(1e-9),
        latency_ms: latency,
        // A generator-bound step is not failed by the server, but it cannot be certified
        // either: it is reported apart and stops the ramp.
        passed: notes.is_empty(),
        generator_cpu_util: util,
        generator_bound,
        warmup,
        note: if warmup {
            format!(
                "warm-up{}",
                if notes.is_empty() {
                    String::new()
                } else {
                    format!(": {}", notes.join("; "))
                }
            )
        } else {
            notes.join("; ")
        },
    }
}

/// Judges step `i` once it is due: `grace_us` after its end at `now`, or at once when `now` is
/// `None` (the final pass). `None` when it is not due yet or never started.
fn judge_due(
    ctx: &Ctx,
    cpu: &SelfCpu,
    i: usize,
    send_end: Option<u64>,
    now: Option<u64>,
    grace_us: u64,
    bound_ms: f64,
) -> Option<StepReport> {
    let (s, e) = ctx.schedule.bounds(i);
    let (start, full_end) = (ctx.t0_us + s, ctx.t0_us + e);
    if send_end.is_some_and(|x| x <= start) {
        return None;
    }
    let end = full_end.min(send_end.unwrap_or(u64::MAX));
    if now.is_some_and(|now| now < end + grace_us) {
        return None;
    }
    Some(judge(ctx, cpu, i, (start, end), bound_ms, end < full_end))
}

fn step_line(s: &StepReport) -> String {
    format!(
        "step {:>2}: {:>8.0} sends/s -> {:>9.0} deliveries/s, p50 {:.2} p99 {:.2} p999 {:.2} ms: {}{}",
        s.index,
        s.rate_per_s,
        s.deliveries_per_s,
        s.latency_ms.p50_ms,
        s.latency_ms.p99_ms,
        s.latency_ms.p999_ms,
        if s.warmup {
            "-"
        } else if s.passed {
            "ok"
        } else {
            "FAILED"
        },
        if s.note.is_empty() {
            String::new()
        } else {
            format!(" ({})", s.note)
        }
    )
}

/// Runs a load plan to the end and returns its report.
///
/// # Errors
/// Bad arguments, or no sender could connect.
#[allow(clippy::too_many_lines)]
pub async fn run(plan: Plan) -> Result<Report> {
    let common = &plan.common;
    ensure!(!common.urls.is_empty(), "--urls is empty");
    ensure!(plan.publishers > 0, "at least one sender is needed");
    if plan.flavor == Flavor::Chat {
        ensure!(
            common.protocol == Protocol::Socketio,
            "chat needs the socketio protocol"
        );
        ensure!(
            plan.publishers <= plan.subscribers,
            "--senders must not exceed --clients"
        );
    }
    if plan.flavor == Flavor::PubSub {
        ensure!(plan.room_size > 0, "--room-size must be positive");
    }
    let schedule = Schedule::of(&plan.rate)?;
    let targets: Vec<Target> = common
        .urls
        .iter()
        .map(|u| Target::parse(u, &common.path))
        .collect::<Result<_>>()?;
    let cfg = ClientConfig::new(
        common.protocol,
        Duration::from_millis(common.connect_timeout_ms),
    )?
    .with_auth_token(common.auth_token.as_deref());
    let mut watch = ProcWatch::new(&common.watch_pids)?;
    let progress = Progress::new(!common.no_progress);
    let protocol_name = match common.protocol {
        Protocol::Socketio => "socketio",
        Protocol::Raw => "raw",
    };
    let mut report = Report::new(plan.scenario, &common.label, protocol_name, &common.urls);
    report.params = plan.params.clone();

    progress.line(&format!(
        "{}: connecting {} clients to {} target(s)",
        plan.scenario,
        plan.subscribers
            + if plan.senders_subscribe() {
                0
            } else {
                plan.publishers
            },
        targets.len()
    ));
    let Setup {
        clients,
        report: cr,
    } = setup(&plan, &cfg, &targets, &progress).await;
    let senders = clients
        .iter()
        .filter(|(s, _)| s.publisher.is_some())
        .count();
    if senders < plan.publishers {
        bail!(
            "only {senders} of {} senders connected; first error: {}",
            plan.publishers,
            cr.first_error.as_deref().unwrap_or("none")
        );
    }
    let rooms = plan.rooms();
    let mut members = vec![0u64; rooms];
    for (s, _) in &clients {
        if let Some(r) = s.room {
            members[r] += 1;
        }
    }
    report.clients = cr;
    progress.line(&format!(
        "{}: {} clients connected ({} failed); sending",
        plan.scenario,
        report.clients.connected,
        report.clients.attempted - report.clients.connected
    ));

    // Leave time to spawn every task before the first send is due.
    let t0_us = 300_000 + clients.len() as u64 * 5;
    let shards = std::thread::available_parallelism().map_or(4, |n| n.get() * 4);
    let ctx = Arc::new(Ctx {
        flavor: plan.flavor,
        protocol: common.protocol,
        nsp: plan.namespace(),
        prefix: protocol::nsp_prefix(plan.namespace()),
        epoch: Instant::now(),
        t0_us,
        end_us: t0_us + schedule.end_us,
        schedule,
        publishers: plan.publishers,
        rooms,
        members,
        recorder: Recorder::new(shards),
        publishing: AtomicBool::new(true),
        senders_done: AtomicUsize::new(0),
        pending_acks: AtomicI64::new(0),
        payload_bytes: plan.rate.payload_bytes,
        pad: "x".repeat(plan.rate.payload_bytes),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|(spec, c)| tokio::spawn(run_client(ctx.clone(), spec, c, stop_rx.clone())))
        .collect();

    let grace_us = plan.rate.ramp_grace_ms * 1000;
    let drain_us = plan.rate.drain_ms * 1000;
    let bound = plan.rate.ramp_p99_ms;
    let secs = |us: u64| us.saturating_sub(ctx.t0_us) as f64 / 1e6;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut next_point_us = ctx.t0_us + 1_000_000;
    let mut steps: Vec<StepReport> = Vec::new();
    let mut stop_reason = String::new();
    let mut send_end_us: Option<u64> = None;
    let mut watching = false;
    let mut last = TimePoint::default();
    let mut cpu = SelfCpu::new(tokio::runtime::Handle::current().metrics().num_workers());
    loop {
        tick.tick().await;
        let now = ctx.now_us();
        if now < ctx.t0_us {
            continue;
        }
        if !watching {
            watch.begin(0.0);
            watching = true;
        }
        cpu.sample(now);
        if now >= next_point_us {
            let (h, received, sent) = ctx.recorder.take_interval();
            let p = Percentiles::of(&h);
            let sampled = watch.sample(secs(now));
            let sending = send_end_us.is_none();
            last = TimePoint {
                t_s: secs(now),
                rate_per_s: if sending {
                    ctx.rate(ctx.step_of(now))
                } else {
                    0.0
                },
                sent_per_s: sent as f64,
                received_per_s: received as f64,
                p50_ms: p.p50_ms,
                p99_ms: p.p99_ms,
                p999_ms: p.p999_ms,
                max_ms: p.max_ms,
                cpu_cores: sampled.iter().map(|s| s.0).collect(),
                rss_mb: sampled.iter().map(|s| s.1).collect(),
            };
            report.timeline.push(last.clone());
            next_point_us += 1_000_000;
        }
        // Judge every step whose grace period is over.
        while steps.len() < ctx.schedule.len() {
            let Some(s) = judge_due(
                &ctx,
                &cpu,
                steps.len(),
                send_end_us,
                Some(now),
                grace_us,
                bound,
            ) else {
                break;
            };
            progress.line(&step_line(&s));
            if plan.rate.ramp && !s.passed && !s.warmup && stop_reason.is_empty() {
                stop_reason = format!("step {} failed: {}", s.index, s.note);
                ctx.publishing.store(false, Ordering::Relaxed);
            }
            steps.push(s);
        }
        if send_end_us.is_none() && (!ctx.publishing.load(Ordering::Relaxed) || now >= ctx.end_us) {
            send_end_us = Some(now.min(ctx.end_us));
            if stop_reason.is_empty() {
                stop_reason = if plan.rate.ramp {
                    "the ramp ran out of steps (--duration-s / --ramp-max-rate-per-s)".to_owned()
                } else {
                    "schedule done".to_owned()
                };
            }
            watch.end(secs(now));
        }
        if let Some(end) = send_end_us {
            let (received, expected) = ctx.recorder.counts();
            // Settled: every sender is done (a late one may still owe sends scheduled before
            // the end), everything sent was delivered and acked.
            let settled = ctx.senders_done.load(Ordering::Relaxed) >= ctx.publishers
                && received >= expected
                && ctx.pending_acks.load(Ordering::Relaxed) <= 0;
            if now >= end + drain_us || (settled && now >= end + 100_000) {
                break;
            }
        }
        let held_rate = steps
            .iter()
            .filter(|s| !s.warmup)
            .take_while(|s| s.passed)
            .last()
            .map_or(0.0, |s| s.rate_per_s);
        progress.status(format!(
            "{:>5.1}s  offered {:>7.0}/s  received {:>8.0}/s  p99 {:>7.2} ms  held {:.0}/s",
            secs(now),
            if send_end_us.is_none() {
                ctx.rate(ctx.step_of(now))
            } else {
                0.0
            },
            last.received_per_s,
            last.p99_ms,
            held_rate
        ));
    }
    let finished_us = ctx.now_us();
    cpu.sample(finished_us);
    let send_end = send_end_us.unwrap_or(finished_us);
    // Steps the loop did not get to judge (the drain ended early): judged on final counts.
    while steps.len() < ctx.schedule.len() {
        let Some(s) = judge_due(
            &ctx,
            &cpu,
            steps.len(),
            Some(send_end),
            None,
            grace_us,
            bound,
        ) else {
            break;
        };
        progress.line(&step_line(&s));
        if plan.rate.ramp && !s.passed && !s.warmup && stop_reason.is_empty() {
            stop_reason = format!("step {} failed: {}", s.index, s.note);
        }
        steps.push(s);
    }
    let _ = stop_tx.send(true);
    let mut outcomes = Vec::with_capacity(tasks.len());
    for t in tasks {
        if let Ok(o) = t.await {
            outcomes.push(o);
        }
    }
    progress.finish();

    // Exact accounting.
    let mut sender_results: HashMap<usize, SenderResult> = HashMap::new();
    let mut rejected: HashMap<(usize, usize), HashSet<u64>> = HashMap::new();
    for o in &mut outcomes {
        if let Some(s) = o.sender.take() {
            for &(room, seq) in &s.rejected {
                rejected.entry((s.j, room)).or_default().insert(seq);
            }
            sender_results.insert(s.j, s);
        }
    }
    let (mut lost, mut duplicated, mut reordered, mut misrouted) = (0u64, 0u64, 0u64, 0u64);
    for o in &outcomes {
        misrouted += o.misrouted;
        if o.dropped.is_some() {
            report.clients.dropped += 1;
            if let Some(e) = &o.dropped {
                report
                    .clients
                    .first_error
                    .get_or_insert_with(|| format!("during the run: {e}"));
            }
        }
        let Some(room) = o.spec.room else { continue };
        for (j, track) in o.tracks.iter().enumerate() {
            let sent = sender_results
                .get(&j)
                .and_then(|s| s.sent_per_room.get(room).copied())
                .unwrap_or(0);
            let rej = rejected.get(&(j, room));
            lost += track.lost(sent, |x| rej.is_some_and(|r| r.contains(&x)));
            duplicated += track.duplicates;
            reordered += track.reordered;
        }
    }
    let total = ctx.recorder.total();
    let (ack, lag, _) = ctx.recorder.acks_lag_dups();
    let sent: u64 = sender_results
        .values()
        .map(|s| s.sent_per_room.iter().sum::<u64>())
        .sum();
    let unacked: u64 = sender_results.values().map(|s| s.unacked).sum();
    let rejected_n: u64 = sender_results
        .values()
        .map(|s| s.rejected.len() as u64)
        .sum();
    report.publishes = Some(PublishReport {
        sent,
        acked_ok: sender_results.values().map(|s| s.acked_ok).sum(),
        rejected: rejected_n,
        unacked,
        ack_ms: Percentiles::of(&ack),
        send_lag_ms: Percentiles::of(&lag),
    });
    if matches!(plan.flavor, Flavor::Rpc { .. }) {
        lost = unacked;
    }
    let window_s = send_end.saturating_sub(ctx.t0_us) as f64 / 1e6;
    report.deliveries = Some(DeliveryReport {
        expected: total.expected,
        received: total.received,
        lost,
        duplicated,
        reordered,
        misrouted,
        per_s: total.received as f64 / window_s.max(1e-9),
        latency_ms: Percentiles::of(&total.latency),
    });
    report.held = steps
        .iter()
        .filter(|s| !s.warmup)
        .take_while(|s| s.passed)
        .last()
        .map(|s| HeldReport {
            step: s.index,
            rate_per_s: s.rate_per_s,
            deliveries_per_s: s.deliveries_per_s,
            latency_ms: s.latency_ms,
        });
    report.generator = Some(generator_report(
        &cpu,
        &steps,
        (ctx.t0_us, send_end),
        total.received,
    ));
    report.steps = steps;
    report.stop_reason = stop_reason;
    report.duration_s = secs(finished_us);
    report.processes = watch.report();
    Ok(report)
}

/// The generator's cost over the sending window, and whether the run's figure is its own.
fn generator_report(
    cpu: &SelfCpu,
    steps: &[StepReport],
    (from_us, to_us): (u64, u64),
    received: u64,
) -> GeneratorReport {
    let (cpu_s, wall_s) = cpu.between(from_us, to_us).unwrap_or((0.0, 0.0));
    let judged: Vec<&StepReport> = steps.iter().filter(|s| !s.warmup).collect();
    // A ramp is summed up by its first failing step (what stopped it); a run that never
    // failed by every step.
    let bound = match judged.iter().find(|s| !s.passed) {
        Some(s) => s.generator_bound,
        None => judged.iter().any(|s| s.generator_bound),
    };
    GeneratorReport {
        threads: cpu.threads,
        cpu_s,
        wall_s,
        cpu_util: if wall_s > 0.0 {
            cpu_s / (wall_s * cpu.threads as f64)
        } else {
            0.0
        },
        cpu_us_per_delivery: if received > 0 {
            cpu_s * 1e6 / received as f64
        } else {
            0.0
        },
        bound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_tracking_is_exact() {
        let mut t = SeqTrack::default();
        assert!(t.on(0));
        assert!(t.on(1));
        assert!(!t.on(1)); // duplicate
        assert!(t.on(4)); // 2, 3 missing
        assert!(t.on(2)); // late: reordered
        assert_eq!((t.duplicates, t.reordered), (1, 1));
        // Sent 7 (0..7): 3 missing, 5 and 6 never came.
        assert_eq!(t.lost(7, |_| false), 3);
        // 5 was rejected by the server: not lost.
        assert_eq!(t.lost(7, |x| x == 5), 2);
        assert_eq!(SeqTrack::default().lost(0, |_| false), 0);
    }

    #[test]
    fn deliveries_parse() {
        let pubsub = r#"["msg",{"room":"lt-room-0","data":{"p":2,"r":0,"s":9,"t":123,"x":"xx"}}]"#;
        assert_eq!(
            parse_delivery(Flavor::PubSub, pubsub),
            Some(Stamp {
                p: 2,
                r: 0,
                s: 9,
                t: 123
            })
        );
        assert_eq!(parse_delivery(Flavor::PubSub, r#"["other",{}]"#), None);
        let chat = r#"["message-added",{"name":"lt-1","message":"1.0.5.77.xxxx","time_ms":1}]"#;
        assert_eq!(
            parse_delivery(Flavor::Chat, chat),
            Some(Stamp {
                p: 1,
                r: 0,
                s: 5,
                t: 77
            })
        );
        assert_eq!(
            parse_delivery(Flavor::Chat, r#"["messages-available",[]]"#),
            None
        );
    }

    #[test]
    fn ramp_schedules() {
        let mut r = RateArgs {
            rate_per_s: 100.0,
            duration_s: Some(20.0),
            drain_ms: 0,
            warmup_s: 0.0,
            payload_bytes: 100,
            ramp: true,
            ramp_factor: 1.5,
            ramp_step_s: 5.0,
            ramp_p99_ms: 50.0,
            ramp_grace_ms: 1000,
            ramp_max_rate_per_s: 1e9,
        };
        let s = Schedule::of(&r).unwrap();
        assert_eq!(s.rates, vec![100.0, 150.0, 225.0, 337.5]);
        assert_eq!(s.starts_us, vec![0, 5_000_000, 10_000_000, 15_000_000]);
        assert_eq!(s.end_us, 20_000_000);
        assert_eq!(
            (s.step_of(0), s.step_of(4_999_999), s.step_of(5_000_000)),
            (0, 0, 1)
        );
        assert_eq!(s.step_of(99_000_000), 3);
        assert_eq!(s.bounds(3), (15_000_000, 20_000_000));
        r.ramp_max_rate_per_s = 200.0;
        assert_eq!(Schedule::of(&r).unwrap().rates, vec![100.0, 150.0]);
        r.warmup_s = 2.0;
        let s = Schedule::of(&r).unwrap();
        assert_eq!(s.rates, vec![100.0, 100.0, 150.0]);
        assert_eq!(s.starts_us, vec![0, 2_000_000, 7_000_000]);
        assert!(s.is_warmup(0) && !s.is_warmup(1));
        r.ramp = false;
        let s = Schedule::of(&r).unwrap();
        assert_eq!(s.rates, vec![100.0, 100.0]);
        assert_eq!(
            (s.starts_us.clone(), s.end_us),
            (vec![0, 2_000_000], 22_000_000)
        );
    }

    #[test]
    fn stamps_are_padded_to_the_payload_size() {
        let ctx = Ctx {
            flavor: Flavor::PubSub,
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
        };
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
}
