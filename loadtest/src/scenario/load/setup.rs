//! Setup: which clients a plan has and where each goes, then connecting them all at the
//! configured pace, every subscriber's room join acknowledged before anything is sent.

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;

use super::resume::Resume;
use super::{Flavor, Layout, Plan, placement, room_name};
use crate::client::{
    Client, ClientConfig, ClientError, Protocol, Target, Transport, transport_for,
};
use crate::progress::Progress;
use crate::protocol::{self, SioKind};
use crate::report::ClientsReport;
use crate::stats::{self, Percentiles};

/// One client of the run.
#[derive(Debug, Clone, Copy)]
pub(super) struct Spec {
    pub idx: usize,
    /// Index of the URL it connects to.
    pub target: usize,
    pub transport: Transport,
    /// Room joined (and received from).
    pub room: Option<usize>,
    /// Sender number.
    pub publisher: Option<usize>,
}

fn specs(plan: &Plan, targets: usize) -> Vec<Spec> {
    let polling = |i| {
        if plan.common.protocol == Protocol::Raw {
            Transport::Websocket
        } else {
            transport_for(i, plan.common.polling_share)
        }
    };
    let member_targets = match plan.layout {
        Layout::Striped => (0..plan.subscribers).map(|i| i % targets).collect(),
        Layout::Scattered { seed } => placement::scatter(seed, plan.subscribers, targets),
    };
    let mut out = Vec::new();
    for (i, target) in member_targets.into_iter().enumerate() {
        let room = match plan.flavor {
            Flavor::Chat => 0,
            _ => i / plan.room_size.max(1),
        };
        let publisher = (plan.senders_subscribe() && i < plan.publishers).then_some(i);
        out.push(Spec {
            idx: i,
            target,
            transport: polling(i),
            room: Some(room),
            publisher,
        });
    }
    if !plan.senders_subscribe() {
        for j in 0..plan.publishers {
            let i = plan.subscribers + j;
            let target = match plan.layout {
                Layout::Striped => i % targets,
                Layout::Scattered { .. } => j % targets,
            };
            out.push(Spec {
                idx: i,
                target,
                transport: polling(i),
                room: None,
                publisher: Some(j),
            });
        }
    }
    out
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
    resume: &mut Resume,
) -> Result<u64, ClientError> {
    for attempt in 0..JOIN_TRIES {
        let text = join_text(protocol, prefix, attempt, room);
        client.send(text).await?;
        match tokio::time::timeout(
            JOIN_RETRY_AFTER,
            join_ack(client, protocol, attempt, resume),
        )
        .await
        {
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

/// A join of `room` with ack `id`, as `protocol` writes it (the reconnections' too).
pub(super) fn join_text(protocol: Protocol, prefix: &str, id: u64, room: &str) -> String {
    match protocol {
        Protocol::Socketio => protocol::event_packet(
            prefix,
            Some(id),
            &format!(r#"["join",{}]"#, protocol::json_str(room)),
        ),
        Protocol::Raw => protocol::raw::join(id, room),
    }
}

/// Waits for the ack of any join sent so far (ack ids `0..=last`); the events on the way go
/// to `resume` (ioscale's recovery verdict). Cancel-safe.
async fn join_ack(
    client: &mut Client,
    protocol: Protocol,
    last: u64,
    resume: &mut Resume,
) -> Result<(), ClientError> {
    loop {
        let m = client
            .recv()
            .await?
            .ok_or_else(|| closed("closed before the join was acknowledged"))?;
        let acked = match protocol {
            Protocol::Socketio => protocol::parse_socketio(&m[1..])
                .ok()
                .filter(|p| {
                    if p.kind == SioKind::Event {
                        resume.on_event(p.data);
                    }
                    p.kind == SioKind::Ack && p.id.is_some_and(|id| id <= last)
                })
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

/// A connected client of the run.
pub(super) struct Joined {
    pub spec: Spec,
    pub client: Client,
    pub resume: Resume,
}

pub(super) struct Setup {
    pub clients: Vec<Joined>,
    pub report: ClientsReport,
}

/// Connects one client and, for a `/pubsub` subscriber, joins its room; returns the join
/// re-sends it needed.
async fn connect_one(
    plan: &Plan,
    cfg: &ClientConfig,
    target: &Target,
    spec: Spec,
    prefix: &str,
) -> Result<(Joined, u64), ClientError> {
    let (mut c, _) = Client::connect(cfg, target, spec.transport, plan.namespace()).await?;
    let mut resume = Resume::new(cfg.recovery);
    resume.on_connect(c.connect_answer(), false);
    let mut retries = 0;
    if let (Some(room), Flavor::PubSub) = (spec.room, plan.flavor) {
        let name = room_name(plan.flavor, plan.layout, room);
        let timeout = Duration::from_millis(plan.common.connect_timeout_ms);
        retries = tokio::time::timeout(
            timeout + JOIN_RETRY_AFTER * 5,
            join(&mut c, cfg.protocol, prefix, &name, &mut resume),
        )
        .await
        .map_err(|_| ClientError {
            cause: "timeout".to_owned(),
            detail: "room join not acknowledged in time".to_owned(),
        })??;
    }
    let joined = Joined {
        spec,
        client: c,
        resume,
    };
    Ok((joined, retries))
}

/// Connects every client at the configured pace; subscribers join their room.
pub(super) async fn setup(
    plan: &Plan,
    cfg: &ClientConfig,
    targets: &[Target],
    progress: &Progress,
) -> Setup {
    let specs = specs(plan, targets.len());
    let total = specs.len();
    let rate = plan.common.connect_rate_per_s.max(0.001);
    let start = tokio::time::Instant::now();
    let prefix = &protocol::nsp_prefix(plan.namespace());
    let mut results =
        futures_util::stream::iter(specs.into_iter().enumerate().map(|(i, spec)| async move {
            tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
            let t = Instant::now();
            let r = connect_one(plan, cfg, &targets[spec.target], spec, prefix).await;
            (r, t.elapsed())
        }))
        .buffer_unordered(plan.common.connect_concurrency.max(1));
    let mut report = ClientsReport {
        attempted: total as u64,
        ..ClientsReport::default()
    };
    let mut handshake = stats::new_histogram();
    let mut clients = Vec::with_capacity(total);
    let mut done = 0;
    while let Some((r, took)) = results.next().await {
        done += 1;
        match r {
            Ok((joined, retries)) => {
                report.join_retries += retries;
                stats::record(
                    &mut handshake,
                    u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
                );
                if joined.client.transport() == Transport::Polling {
                    report.polling += 1;
                }
                clients.push(joined);
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
    clients.sort_by_key(|j| j.spec.idx);
    Setup { clients, report }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::config::{Command, Config};

    fn plan(layout: Layout) -> Plan {
        let cfg = Config::try_parse_from(["lt", "rooms", "--urls", "http://a,http://b,http://c"])
            .unwrap();
        let Command::Rooms(a) = cfg.command else {
            panic!("not rooms")
        };
        Plan {
            scenario: "rooms",
            flavor: Flavor::PubSub,
            layout,
            subscribers: 12,
            room_size: 3,
            publishers: 4,
            probes: None,
            common: a.common,
            rate: a.rate,
            params: serde_json::Value::Null,
            faults: crate::config::FaultArgs::default(),
        }
    }

    #[test]
    fn scattered_members_are_seeded_and_senders_round_robin() {
        let s = specs(&plan(Layout::Scattered { seed: 1 }), 3);
        assert_eq!(s.len(), 16);
        let members: Vec<usize> = s[..12].iter().map(|x| x.target).collect();
        assert_eq!(members, placement::scatter(1, 12, 3));
        assert_eq!(s[4].room, Some(1));
        let senders: Vec<(Option<usize>, usize)> =
            s[12..].iter().map(|x| (x.publisher, x.target)).collect();
        assert_eq!(
            senders,
            [(Some(0), 0), (Some(1), 1), (Some(2), 2), (Some(3), 0)]
        );
        assert!(s[12..].iter().all(|x| x.room.is_none()));
        // Striped (fanout): client i on target i mod n, senders included.
        let s = specs(&plan(Layout::Striped), 3);
        assert!(s.iter().all(|x| x.target == x.idx % 3));
    }
}
