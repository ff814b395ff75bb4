//! One client's task for the whole run: reads what the server sends (deliveries, acks), and,
//! for a sender, sends on its schedule; hands back what it saw.

use std::sync::Arc;

use tokio::sync::watch;

use super::ctx::Ctx;
use super::sender::{Sender, SenderResult};
use super::seq::SeqTrack;
use super::setup::Spec;
use super::wire::{fast_delivery, slow_parse};
use crate::client::{Client, ClientError};
use crate::stats::Shard;

/// What a client task hands back.
pub(super) struct Outcome {
    pub spec: Spec,
    pub tracks: Vec<SeqTrack>,
    pub misrouted: u64,
    pub sender: Option<SenderResult>,
    pub dropped: Option<ClientError>,
}

pub(super) async fn run_client(
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
    let sender = sender.map(Sender::result);
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
