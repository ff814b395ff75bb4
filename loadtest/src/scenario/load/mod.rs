//! The open-loop send engine shared by `fanout`, `rooms`, `chat` and `rpc`.
//!
//! 1. Setup (`setup`): clients connect at `--connect-rate-per-s` (bounded concurrency) and
//!    subscribers join their room, each join acknowledged, so no message can race a membership.
//!    Where each client goes is the plan's [`Layout`] (`placement`).
//! 2. Sending (`sender`, `task`): every sender owns a fixed schedule (sender `j` of `P` at total
//!    rate `R` sends at `t0 + (j + P·k) / R`). Sends are stamped with their *scheduled* time; a
//!    sender that is late catches up in a burst, so the lag shows as latency instead of a lower
//!    rate. With `--ramp` the rate is multiplied every step until a step fails (`schedule`,
//!    `monitor`).
//! 3. Accounting (`account`): each message carries `(publisher, room, sequence)`; a subscriber
//!    keeps, per publisher, the next expected sequence and the set of gaps, which gives lost,
//!    duplicated and reordered deliveries exactly, without storing every message. With
//!    [`Probes`] the servers' own counters are read around the sending window (`cluster`).
//!
//! A step is judged `--ramp-grace-ms` after it ends: it passes when every delivery its sends
//! should cause has arrived and its p99 is within `--ramp-p99-ms`.

mod account;
mod cluster;
mod ctx;
mod fault;
pub(crate) use fault::Backoff;
mod monitor;
pub mod placement;
mod resume;
pub(crate) use resume::{Resume, Verdict};
mod schedule;
mod sender;
mod seq;
mod setup;
mod task;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail, ensure};
use tokio::sync::watch;

use crate::client::{ClientConfig, Protocol, Target};
use crate::config::{Common, FaultArgs, RateArgs};
use crate::progress::Progress;
use crate::report::Report;
use crate::stats::ProcWatch;

pub use cluster::Probes;
pub use schedule::Schedule;
pub use seq::SeqTrack;
pub use wire::{Stamp, parse_delivery};

use cluster::Snapshot;
use ctx::Ctx;
use fault::Faults;
use monitor::Finished;
use setup::{Joined, Setup, Spec};
use task::Outcome;

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

/// Where clients go and which room each send targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Member `i` on target `i mod n` (every room spans every node), client `i` of the senders
    /// too; sender `j`'s `k`-th send goes to room `(j + k) mod rooms`; rooms `lt-room-<r>`.
    Striped,
    /// Members on targets drawn uniformly at random (seeded), senders round robin over the
    /// targets, each send to a uniformly random room (seeded); rooms `r-<rrrr>`.
    Scattered { seed: u64 },
}

/// A load run, resolved from a scenario's arguments.
#[derive(Debug, Clone)]
pub struct Plan {
    pub scenario: &'static str,
    pub flavor: Flavor,
    pub layout: Layout,
    pub common: Common,
    pub rate: RateArgs,
    /// Clients that receive (fanout: room members; chat: everyone; rpc: none).
    pub subscribers: usize,
    /// Members per room (fanout).
    pub room_size: usize,
    /// Sending clients.
    pub publishers: usize,
    /// The servers' own figures to read around the sending window; `Some` adds the report's
    /// `cluster` section.
    pub probes: Option<Probes>,
    /// The scenario's own arguments, for the report (the send schedule and the polling share
    /// are added to them).
    pub params: serde_json::Value,
    /// Faults to inject while sending (fanout).
    pub faults: FaultArgs,
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

    fn clients(&self) -> usize {
        self.subscribers
            + if self.senders_subscribe() {
                0
            } else {
                self.publishers
            }
    }

    fn validate(&self) -> Result<()> {
        let common = &self.common;
        ensure!(!common.urls.is_empty(), "--urls is empty");
        ensure!(self.publishers > 0, "at least one sender is needed");
        if self.flavor == Flavor::Chat {
            ensure!(
                common.protocol == Protocol::Socketio,
                "chat needs the socketio protocol"
            );
            ensure!(
                self.publishers <= self.subscribers,
                "--senders must not exceed --clients"
            );
        }
        if self.flavor == Flavor::PubSub {
            ensure!(self.room_size > 0, "--room-size must be positive");
        }
        if self.faults.any() {
            ensure!(
                self.flavor == Flavor::PubSub && common.protocol == Protocol::Socketio,
                "faults are injected in fanout over the socketio protocol only"
            );
        }
        Ok(())
    }
}

/// Name of room `r` on the wire.
pub fn room_name(flavor: Flavor, layout: Layout, r: usize) -> String {
    match (flavor, layout) {
        (Flavor::Rpc { .. }, _) => format!("lt-rpc-{r}"),
        (_, Layout::Scattered { .. }) => format!("r-{r:04}"),
        (_, Layout::Striped) => format!("lt-room-{r}"),
    }
}

/// The clients' targets and their configuration.
fn clients_config(common: &Common) -> Result<(Vec<Target>, ClientConfig)> {
    let targets = common
        .urls
        .iter()
        .map(|u| Target::parse(u, &common.path))
        .collect::<Result<_>>()?;
    let cfg = ClientConfig::new(
        common.protocol,
        Duration::from_millis(common.connect_timeout_ms),
    )?
    .with_auth_token(common.auth_token.as_deref())
    .with_recovery(common.recovery)
    .with_quickack(common.quickack);
    Ok((targets, cfg))
}

fn new_report(plan: &Plan) -> Report {
    let common = &plan.common;
    let protocol_name = match common.protocol {
        Protocol::Socketio => "socketio",
        Protocol::Raw => "raw",
    };
    let mut report = Report::new(plan.scenario, &common.label, protocol_name, &common.urls);
    report.params = params(plan);
    report
}

/// The report's `params`: every schedule argument, the polling share, then the scenario's own.
fn params(plan: &Plan) -> serde_json::Value {
    let mut all = match serde_json::to_value(&plan.rate) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    all.insert(
        "polling_share".to_owned(),
        serde_json::json!(plan.common.polling_share),
    );
    if let serde_json::Value::Object(own) = &plan.params {
        all.extend(own.clone());
    }
    serde_json::Value::Object(all)
}

/// Connects every client (the report's `clients` section); fails when a sender is missing.
async fn connect_all(
    plan: &Plan,
    cfg: &ClientConfig,
    targets: &[Target],
    progress: &Progress,
    report: &mut Report,
) -> Result<Vec<Joined>> {
    progress.line(&format!(
        "{}: connecting {} clients to {} target(s)",
        plan.scenario,
        plan.clients(),
        targets.len()
    ));
    let Setup {
        clients,
        report: cr,
    } = setup::setup(plan, cfg, targets, progress).await;
    let senders = clients
        .iter()
        .filter(|j| j.spec.publisher.is_some())
        .count();
    if senders < plan.publishers {
        bail!(
            "only {senders} of {} senders connected; first error: {}",
            plan.publishers,
            cr.first_error.as_deref().unwrap_or("none")
        );
    }
    report.clients = cr;
    progress.line(&format!(
        "{}: {} clients connected ({} failed); sending",
        plan.scenario,
        report.clients.connected,
        report.clients.attempted - report.clients.connected
    ));
    Ok(clients)
}

/// Subscribers that joined each of `rooms` rooms.
fn members(rooms: usize, specs: &[Spec]) -> Vec<u64> {
    let mut members = vec![0u64; rooms];
    for r in specs.iter().filter_map(|s| s.room) {
        members[r] += 1;
    }
    members
}

async fn read_probes(plan: &Plan) -> Option<Result<Snapshot>> {
    match &plan.probes {
        Some(p) => Some(p.read().await),
        None => None,
    }
}

/// Runs every client to the end of the drain, injecting the plan's faults; returns the
/// monitor's results, the probes read after the drain, what each client saw, and the faults
/// injected.
async fn drive(
    plan: &Plan,
    ctx: &Arc<Ctx>,
    clients: Vec<Joined>,
    watch: &mut ProcWatch,
    progress: &Progress,
    report: &mut Report,
) -> (
    Finished,
    Option<Result<Snapshot>>,
    Vec<Outcome>,
    Vec<crate::report::FaultEvent>,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|j| {
            let run = task::run_client(ctx.clone(), j.spec, j.client, j.resume, stop_rx.clone());
            tokio::spawn(run)
        })
        .collect();
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let injector = ctx.faults.is_some().then(|| {
        let (ctx, log) = (ctx.clone(), log.clone());
        tokio::spawn(async move {
            if let Some(f) = ctx.faults.as_ref() {
                fault::inject(f, ctx.instant(ctx.t0_us), &log).await;
            }
        })
    });
    let finished = monitor::monitor(plan, ctx, watch, progress, report).await;
    // Faults due after the run ended are not injected.
    if let Some(injector) = injector {
        injector.abort();
    }
    // Read after the drain, before the clients leave: what the sends caused has arrived.
    let after = read_probes(plan).await;
    let _ = stop_tx.send(true);
    let mut outcomes = Vec::with_capacity(tasks.len());
    for t in tasks {
        if let Ok(o) = t.await {
            outcomes.push(o);
        }
    }
    progress.finish();
    let events = std::mem::take(
        &mut *log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    (finished, after, outcomes, events)
}

/// Runs a load plan to the end and returns its report.
///
/// # Errors
/// Bad arguments, unreachable probes, or no sender could connect.
pub async fn run(plan: Plan) -> Result<Report> {
    plan.validate()?;
    let schedule = Schedule::of(&plan.rate)?;
    let (targets, cfg) = clients_config(&plan.common)?;
    let faults = Faults::of(&plan.faults, &targets, &cfg)?;
    let mut watch = ProcWatch::new(&plan.common.watch_pids)?;
    // Unreachable probes are found before the clients connect, not after the run.
    read_probes(&plan).await.transpose()?;
    let progress = Progress::new(!plan.common.no_progress);
    let mut report = new_report(&plan);
    let clients = connect_all(&plan, &cfg, &targets, &progress, &mut report).await?;
    let specs: Vec<Spec> = clients.iter().map(|j| j.spec).collect();
    // Just before the sending window: setup (joins, subscriptions) is not the run's traffic.
    let before = read_probes(&plan).await.transpose()?;
    let members = members(plan.rooms(), &specs);
    let ctx = Arc::new(Ctx::new(&plan, schedule, members, specs.len(), faults));
    let (finished, after, mut outcomes, events) =
        drive(&plan, &ctx, clients, &mut watch, &progress, &mut report).await;
    let senders = account::tally(&mut report, &plan, &ctx, &mut outcomes, finished, events);
    report.processes = watch.report();
    if let (Some(before), Some(after)) = (before, after) {
        if let Err(e) = &after {
            eprintln!("warning: reading the servers' counters after the run: {e:#}");
        }
        let after = after.as_ref().ok();
        let c = cluster::report(&report, &specs, &senders, ctx.rooms, &before, after);
        report.cluster = Some(c);
    }
    Ok(report)
}
