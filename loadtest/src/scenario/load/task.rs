//! One client's task for the whole run: reads what the server sends (deliveries, acks), and,
//! for a sender, sends on its schedule; in a run with faults it comes back after losing its
//! connection, as socket.io-client does; hands back what it saw.

use std::sync::Arc;

use tokio::sync::watch;

use super::ctx::Ctx;
use super::fault::Seen;
use super::placement::Rng;
use super::resume::{Resume, Verdict};
use super::sender::{Sender, SenderResult};
use super::seq::SeqTrack;
use super::setup::{Spec, join_text};
use super::wire::{fast_delivery, slow_parse};
use super::{Flavor, room_name};
use crate::client::{Client, ClientError};
use crate::protocol::{self, SioKind};
use crate::stats::Shard;

/// Ack id of a room join sent again after a fresh reconnection (subscribers send nothing
/// else, so it cannot be mistaken for a send's ack).
const REJOIN_ACK: u64 = u64::MAX >> 12;

/// What a client task hands back.
pub(super) struct Outcome {
    pub spec: Spec,
    pub tracks: Vec<SeqTrack>,
    pub misrouted: u64,
    pub sender: Option<SenderResult>,
    pub dropped: Option<ClientError>,
    /// In a run with faults: what the client saw of them.
    pub seen: Option<Seen>,
}

/// How one connection ended.
enum End {
    /// The run is over.
    Stop,
    /// The connection was lost.
    Lost(ClientError),
}

/// The client's state across its connections.
struct Task {
    ctx: Arc<Ctx>,
    spec: Spec,
    tracks: Vec<SeqTrack>,
    misrouted: u64,
    sender: Option<Sender>,
    resume: Resume,
    seen: Option<Seen>,
    /// When it resets its own connection (`drop-clients`), the next first.
    drops_at_us: std::collections::VecDeque<u64>,
    /// A fresh session was confirmed after the last read: join the room again.
    rejoin: bool,
    /// The server disconnected the client from the namespace (a Socket.IO DISCONNECT): the
    /// connection is as good as lost.
    disconnected: bool,
}

pub(super) async fn run_client(
    ctx: Arc<Ctx>,
    spec: Spec,
    client: Client,
    resume: Resume,
    mut stop: watch::Receiver<bool>,
) -> Outcome {
    let faults = ctx.faults.as_ref();
    let mut t = Task {
        tracks: vec![SeqTrack::default(); ctx.publishers],
        misrouted: 0,
        sender: spec.publisher.map(|j| Sender::new(&ctx, j)),
        resume,
        seen: faults.map(|f| Seen::new(f.events.len(), ctx.publishers)),
        drops_at_us: faults
            .filter(|_| spec.room.is_some() && spec.publisher.is_none())
            .map(|f| f.drops_after_us(spec.idx))
            .unwrap_or_default()
            .into_iter()
            .map(|after| ctx.t0_us + after)
            .collect(),
        rejoin: false,
        disconnected: false,
        ctx,
        spec,
    };
    let mut dropped = None;
    let mut client = Some(client);
    while let Some(mut c) = client.take() {
        let End::Lost(e) = t.serve(&mut c, &mut stop).await else {
            break;
        };
        // Closed now, not when the run's results are collected: a client that failed must
        // not keep a session open on the server.
        drop(c);
        if let Some(s) = t.sender.as_mut() {
            s.connection_lost(&t.ctx);
        }
        let now = t.ctx.now_us().saturating_sub(t.ctx.t0_us);
        match (t.ctx.faults.as_ref(), t.seen.as_mut()) {
            (Some(f), Some(seen)) => seen.cut(f, now),
            _ => {
                dropped = Some(e);
                break;
            }
        }
        client = t.reconnect(&mut stop).await;
        if client.is_none()
            && let Some(seen) = t.seen.as_mut()
        {
            seen.down = true;
        }
    }
    Outcome {
        spec: t.spec,
        tracks: t.tracks,
        misrouted: t.misrouted,
        sender: t.sender.map(Sender::result),
        dropped,
        seen: t.seen,
    }
}

impl Task {
    /// Runs one connection until the run stops or the connection is lost.
    async fn serve(&mut self, client: &mut Client, stop: &mut watch::Receiver<bool>) -> End {
        let ctx = self.ctx.clone();
        let first_due = self.sender.as_ref().map_or(ctx.end_us, |s| s.next_due_us);
        let sleep = tokio::time::sleep_until(ctx.instant(first_due));
        tokio::pin!(sleep);
        // A drop due while the client was away (reconnecting) has nothing to cut.
        let now = ctx.now_us();
        while self.drops_at_us.front().is_some_and(|&at| at < now) {
            self.drops_at_us.pop_front();
        }
        // Far beyond the run when this client is not cut.
        let cut = tokio::time::sleep_until(
            ctx.instant(
                self.drops_at_us
                    .front()
                    .copied()
                    .unwrap_or(ctx.end_us + 3_600_000_000),
            ),
        );
        tokio::pin!(cut);
        loop {
            let sending = self.sender.as_ref().is_some_and(|s| s.sending);
            tokio::select! {
                _ = stop.changed() => return End::Stop,
                r = client.fill() => {
                    match r.and_then(|more| Ok(self.read(client)? && more)) {
                        Ok(true) if std::mem::take(&mut self.disconnected) => {
                            return End::Lost(ClientError { cause: "server-disconnect".to_owned(), detail: "disconnected from the namespace by the server".to_owned() });
                        }
                        Ok(true) => {}
                        Ok(false) => return End::Lost(ClientError { cause: "closed".to_owned(), detail: "closed by the server".to_owned() }),
                        Err(e) => return End::Lost(e),
                    }
                    if std::mem::take(&mut self.rejoin) && let Err(e) = self.join(client).await {
                        return End::Lost(e);
                    }
                },
                () = &mut sleep, if sending => {
                    let Some(s) = self.sender.as_mut() else { continue };
                    let batch = s.due(&ctx, self.spec.idx);
                    if !batch.is_empty()
                        && let Err(e) = client.send_batch(batch).await
                    {
                        return End::Lost(e);
                    }
                    if s.sending {
                        sleep.as_mut().reset(ctx.instant(s.next_due_us));
                    }
                }
                () = &mut cut, if !self.drops_at_us.is_empty() => {
                    self.drops_at_us.pop_front();
                    client.abort();
                    return End::Lost(ClientError { cause: "cut".to_owned(), detail: "connection reset by --drop-clients-at-s".to_owned() });
                }
            }
        }
    }

    /// Handles everything one read brought; false once the server closed the session.
    fn read(&mut self, client: &mut Client) -> Result<bool, ClientError> {
        // Everything one read brought arrived at the same instant: one clock read and one lock
        // of the stats shard per read, not per delivery.
        let now = self.ctx.now_us();
        let ctx = self.ctx.clone();
        let mut shard = ctx.recorder.shard(self.spec.idx);
        client.drain(|m| self.handle(m, now, &mut shard))
    }

    /// One delivered message `m` (the Engine.IO message bytes, or a raw frame), received at
    /// `now`. The fast path reads the stamp straight from the bytes; anything else goes through
    /// the full parsers.
    fn handle(&mut self, m: &[u8], now: u64, shard: &mut Shard) {
        let ctx = &*self.ctx;
        let (stamp, ack) = match fast_delivery(ctx, m) {
            Some(st) => (Some(st), None),
            None => slow_parse(ctx, m),
        };
        if let (Some((id, error)), Some(s)) = (ack, self.sender.as_mut()) {
            s.on_ack(ctx, now, shard, id, error);
        }
        let Some(st) = stamp else {
            if ack.is_none() {
                self.other(m);
            }
            return;
        };
        self.resume.note_offset(m);
        if self.spec.room != Some(st.r) || st.p >= self.tracks.len() {
            self.misrouted += 1;
            return;
        }
        if let (Some(f), Some(seen)) = (ctx.faults.as_ref(), self.seen.as_mut()) {
            let t0 = ctx.t0_us;
            seen.delivered(f, st.p, st.t.saturating_sub(t0), now.saturating_sub(t0));
        }
        let latency = now.saturating_sub(st.t);
        let step = ctx.step_of(st.t);
        if self.tracks[st.p].on(st.s) {
            shard.delivered(step, latency);
        } else {
            shard.duplicates += 1;
        }
    }

    /// A message that is neither a delivery nor an ack: ioscale's recovery verdict, or the
    /// server's DISCONNECT, maybe.
    fn other(&mut self, m: &[u8]) {
        let Some(text) = std::str::from_utf8(m).ok().and_then(|t| t.get(1..)) else {
            return;
        };
        let Ok(p) = protocol::parse_socketio(text) else {
            return;
        };
        if p.kind == SioKind::Disconnect && p.nsp == self.ctx.nsp {
            self.disconnected = true;
        }
        if p.kind == SioKind::Event && p.nsp == self.ctx.nsp {
            match self.resume.on_event(p.data) {
                Some(Verdict::Fresh) if self.seen.as_ref().is_some_and(|s| s.reconnected > 0) => {
                    self.fresh();
                }
                Some(Verdict::Recovered) => {
                    if let Some(s) = self.seen.as_mut() {
                        s.recovered += 1;
                    }
                }
                _ => {}
            }
        }
    }

    fn fresh(&mut self) {
        if let Some(s) = self.seen.as_mut() {
            s.fresh += 1;
        }
        self.rejoin = self.spec.room.is_some() && self.ctx.flavor == Flavor::PubSub;
    }

    /// Joins the client's room again (no wait for the ack: deliveries start once it is in).
    async fn join(&self, client: &mut Client) -> Result<(), ClientError> {
        let Some(room) = self.spec.room else {
            return Ok(());
        };
        let name = room_name(self.ctx.flavor, self.ctx.layout, room);
        let ctx = &self.ctx;
        client
            .send(join_text(ctx.protocol, &ctx.prefix, REJOIN_ACK, &name))
            .await
    }

    /// Connects again after socket.io-client's backoff, to the client's own URL first and
    /// then to the next ones; `None` when the run stopped first.
    async fn reconnect(&mut self, stop: &mut watch::Receiver<bool>) -> Option<Client> {
        let ctx = self.ctx.clone();
        let f = ctx.faults.as_ref()?;
        let mut rng = Rng::stream(0x5eed, self.spec.idx as u64);
        for attempt in 0.. {
            let wait = f.backoff.delay(attempt, &mut rng);
            tokio::select! {
                _ = stop.changed() => return None,
                () = tokio::time::sleep(wait) => {}
            }
            let auth = self.resume.auth(&f.cfg);
            for k in 0..f.targets.len() {
                let target = &f.targets[(self.spec.target + k) % f.targets.len()];
                let connect = Client::connect_with_auth(
                    &f.cfg,
                    target,
                    self.spec.transport,
                    ctx.nsp,
                    auth.as_deref(),
                );
                let r = tokio::select! {
                    _ = stop.changed() => return None,
                    r = connect => r,
                };
                let seen = self.seen.as_mut()?;
                match r {
                    Ok((mut c, _)) => {
                        seen.reconnected += 1;
                        match self.resume.on_connect(c.connect_answer(), true) {
                            Verdict::Recovered => seen.recovered += 1,
                            Verdict::Fresh => self.fresh(),
                            Verdict::Pending => {}
                        }
                        if std::mem::take(&mut self.rejoin) && self.join(&mut c).await.is_err() {
                            continue;
                        }
                        return Some(c);
                    }
                    Err(_) => seen.failed_attempts += 1,
                }
            }
        }
        None
    }
}
