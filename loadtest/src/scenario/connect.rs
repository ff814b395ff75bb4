//! `connect`: a connection storm. Attempts start on a fixed schedule (`--connect-rate-per-s`,
//! open loop: a slow server does not slow the arrivals down), each connects the transport and
//! the namespace; the run reports connects/s achieved, handshake latency from the scheduled
//! attempt time, failures by cause, and, with `--watch-pids`, resident memory per held
//! connection.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use hdrhistogram::Histogram;
use tokio::sync::watch;

use crate::client::{Client, ClientConfig, Protocol, Target, Transport, transport_for};
use crate::config::ConnectArgs;
use crate::progress::Progress;
use crate::protocol::{self, SioKind};
use crate::report::{ConnectReport, GeneratorReport, Report, TimePoint};
use crate::scenario::load::{Resume, Verdict};
use crate::scenario::storm::Storm;
use crate::stats::{self, Percentiles, ProcWatch, Recorder};

#[derive(Default)]
struct Tally {
    failed: BTreeMap<String, u64>,
    first_error: Option<String>,
    transport: Option<Histogram<u32>>,
    service: Option<Histogram<u32>>,
}

struct Shared {
    epoch: Instant,
    recorder: Recorder,
    tally: Mutex<Tally>,
    open: AtomicI64,
    peak: AtomicI64,
    connected: AtomicU64,
    polling: AtomicU64,
    resolved: AtomicU64,
    dropped: AtomicU64,
    last_success_us: AtomicU64,
}

impl Shared {
    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[allow(clippy::too_many_arguments)]
async fn attempt(
    sh: Arc<Shared>,
    cfg: Arc<ClientConfig>,
    target: Target,
    transport: Transport,
    nsp: String,
    i: usize,
    sched_us: u64,
    mut stop: watch::Receiver<bool>,
    storm: Option<Arc<Storm>>,
) {
    let lag = sh.now_us().saturating_sub(sched_us);
    sh.recorder.shard(i).sent(0, 1, lag);
    match Client::connect(&cfg, &target, transport, &nsp).await {
        Ok((client, times)) => {
            let now = sh.now_us();
            sh.recorder
                .shard(i)
                .delivered(0, now.saturating_sub(sched_us));
            {
                let mut t = sh.tally();
                stats::record(
                    t.transport.get_or_insert_with(stats::new_histogram),
                    us(times.transport),
                );
                stats::record(
                    t.service.get_or_insert_with(stats::new_histogram),
                    us(times.total),
                );
            }
            if client.transport() == Transport::Polling {
                sh.polling.fetch_add(1, Ordering::Relaxed);
            }
            sh.connected.fetch_add(1, Ordering::Relaxed);
            sh.last_success_us.fetch_max(now, Ordering::Relaxed);
            let open = sh.open.fetch_add(1, Ordering::Relaxed) + 1;
            sh.peak.fetch_max(open, Ordering::Relaxed);
            sh.resolved.fetch_add(1, Ordering::Relaxed);
            // Hold the connection (answering heartbeats) until the run ends; in a storm, come
            // back after every drop, resuming the session when the client asks for recovery.
            let mut resume = Resume::new(cfg.recovery);
            resume.on_connect(client.connect_answer(), false);
            let mut session = Session {
                resume,
                nsp: &nsp,
                storm: storm.as_deref(),
                awaiting: false,
            };
            let mut held = Some(client);
            while let Some(mut c) = held.take() {
                let lost = hold(&mut c, &mut session, &mut stop).await;
                sh.open.fetch_sub(1, Ordering::Relaxed);
                if !lost {
                    break;
                }
                sh.dropped.fetch_add(1, Ordering::Relaxed);
                // The lost connection's descriptor goes before a new one is opened: a storm
                // of clients each holding two would run the generator out of them.
                drop(c);
                let Some(storm) = &storm else { break };
                let auth = session.resume.auth(&cfg);
                held = storm
                    .come_back(&cfg, (i, transport, &nsp), auth.as_deref(), &mut stop)
                    .await;
                if let Some(c) = &held {
                    sh.open.fetch_add(1, Ordering::Relaxed);
                    session.reconnected(c.connect_answer());
                }
            }
        }
        Err(e) => {
            {
                let mut t = sh.tally();
                *t.failed.entry(e.cause.clone()).or_default() += 1;
                t.first_error.get_or_insert_with(|| e.to_string());
            }
            sh.resolved.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A held client's session across its reconnections.
struct Session<'a> {
    resume: Resume,
    nsp: &'a str,
    storm: Option<&'a Storm>,
    /// Reconnected, and the server has not yet said whether it restored the session.
    awaiting: bool,
}

impl Session<'_> {
    /// A reconnection's CONNECT answer (socket.io's recovery answers there; ioscale's in an
    /// event after it).
    fn reconnected(&mut self, answer: &str) {
        match self.resume.on_connect(answer, true) {
            Verdict::Pending => self.awaiting = true,
            v => self.verdict(v),
        }
    }

    fn verdict(&mut self, v: Verdict) {
        self.awaiting = false;
        if let Some(storm) = self.storm {
            storm.session(v == Verdict::Recovered);
        }
    }

    /// A message the server sent: ioscale's recovery verdict (with the session token to send
    /// back next time), maybe.
    fn message(&mut self, m: &str) {
        let Some(p) = m
            .strip_prefix('4')
            .and_then(|t| protocol::parse_socketio(t).ok())
        else {
            return;
        };
        if p.kind != SioKind::Event || p.nsp != self.nsp {
            return;
        }
        if let Some(v) = self.resume.on_event(p.data)
            && self.awaiting
        {
            self.verdict(v);
        }
    }
}

/// Holds `client` (answering heartbeats) until the run stops (false) or the connection is
/// lost (true).
async fn hold(
    client: &mut Client,
    session: &mut Session<'_>,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    loop {
        tokio::select! {
            _ = stop.changed() => return false,
            r = client.recv() => match r {
                Ok(Some(m)) => session.message(&m),
                _ => return true,
            }
        }
    }
}

/// Runs the connection storm.
///
/// # Errors
/// Bad arguments or unreadable watched processes.
#[allow(clippy::too_many_lines)]
pub async fn run(args: ConnectArgs) -> Result<Report> {
    let common = &args.common;
    ensure!(!common.urls.is_empty(), "--urls is empty");
    ensure!(
        common.connect_rate_per_s > 0.0,
        "--connect-rate-per-s must be positive"
    );
    let targets: Vec<Target> = common
        .urls
        .iter()
        .map(|u| Target::parse(u, &common.path))
        .collect::<Result<_>>()?;
    let cfg = Arc::new(
        ClientConfig::new(
            common.protocol,
            Duration::from_millis(common.connect_timeout_ms),
        )?
        .with_auth_token(common.auth_token.as_deref())
        .with_recovery(common.recovery)
        .with_quickack(common.quickack)
        .with_source_addrs(args.storm.source_addrs),
    );
    let mut watch = ProcWatch::new(&common.watch_pids)?;
    let progress = Progress::new(!common.no_progress);
    let protocol_name = match common.protocol {
        Protocol::Socketio => "socketio",
        Protocol::Raw => "raw",
    };
    let mut report = Report::new("connect", &common.label, protocol_name, &common.urls);
    report.params = serde_json::json!({
        "clients": args.clients,
        "connect_rate_per_s": common.connect_rate_per_s,
        "hold_s": args.hold_s,
        "namespace": args.namespace,
        "polling_share": common.polling_share,
    });
    let n = args.clients;
    let rate = common.connect_rate_per_s;
    let sh = Arc::new(Shared {
        epoch: Instant::now(),
        recorder: Recorder::new(std::thread::available_parallelism().map_or(4, |n| n.get() * 4)),
        tally: Mutex::new(Tally::default()),
        open: AtomicI64::new(0),
        peak: AtomicI64::new(0),
        connected: AtomicU64::new(0),
        polling: AtomicU64::new(0),
        resolved: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        last_success_us: AtomicU64::new(0),
    });
    let storm = Storm::of(&args.storm, &targets, &common.path, sh.epoch)?.map(Arc::new);
    let t0_us = 200_000u64;
    let (stop_tx, stop_rx) = watch::channel(false);
    progress.line(&format!(
        "connect: {n} connections at {rate:.0}/s to {} target(s)",
        targets.len()
    ));
    watch.begin(0.0);
    let dispatcher = {
        let (sh, cfg, storm) = (sh.clone(), cfg.clone(), storm.clone());
        let nsp = args.namespace.clone();
        let share = if common.protocol == Protocol::Raw {
            0.0
        } else {
            common.polling_share
        };
        tokio::spawn(async move {
            let mut handles = Vec::with_capacity(n);
            for i in 0..n {
                let sched_us = t0_us + (i as f64 * 1e6 / rate) as u64;
                tokio::time::sleep_until(tokio::time::Instant::from_std(
                    sh.epoch + Duration::from_micros(sched_us),
                ))
                .await;
                handles.push(tokio::spawn(attempt(
                    sh.clone(),
                    cfg.clone(),
                    targets[i % targets.len()].clone(),
                    transport_for(i, share),
                    nsp.clone(),
                    i,
                    sched_us,
                    stop_rx.clone(),
                    storm.clone(),
                )));
            }
            handles
        })
    };
    let secs = |u: u64| u.saturating_sub(t0_us) as f64 / 1e6;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut next_point_us = t0_us + 1_000_000;
    let mut all_done_us: Option<u64> = None;
    let hold_us = (args.hold_s.max(0.0) * 1e6) as u64;
    let fault_delay_us = (args.storm.fault_at_s.unwrap_or(0.0).max(0.0) * 1e6) as u64;
    let window_us = (args.storm.storm_window_s.max(0.0) * 1e6) as u64;
    let mut fault_us: Option<u64> = None;
    let mut storm_cpu_start = 0.0;
    let mut held = 0;
    loop {
        tick.tick().await;
        let now = sh.now_us();
        if now >= next_point_us {
            let (h, received, sent) = sh.recorder.take_interval();
            let p = Percentiles::of(&h);
            let sampled = watch.sample(secs(now));
            let rate = if all_done_us.is_none() { rate } else { 0.0 };
            let point = TimePoint::of_second(secs(now), rate, (sent, received), &p, &sampled);
            report.timeline.push(point);
            next_point_us += 1_000_000;
        }
        let resolved = sh.resolved.load(Ordering::Relaxed);
        let open = sh.open.load(Ordering::Relaxed);
        if all_done_us.is_none() && resolved >= n as u64 {
            all_done_us = Some(now);
            held = open;
            progress.line(&format!(
                "connect: all {n} attempts done after {:.1} s; holding {open} connections {:.1} s",
                secs(now),
                args.hold_s
            ));
        }
        if let (Some(done), Some(storm)) = (all_done_us, &storm) {
            if fault_us.is_none() && now >= done + fault_delay_us {
                fault_us = Some(storm.fault_now());
                storm_cpu_start = stats::self_cpu_s();
                run_fault(args.storm.fault_cmd.as_deref().unwrap_or("true"), &progress);
                // The watched processes' CPU and memory over the storm only.
                watch.begin(secs(now));
            }
            if let Some(f) = fault_us
                && storm_over(
                    storm,
                    f,
                    now,
                    window_us,
                    sh.open.load(Ordering::Relaxed),
                    held,
                )
            {
                break;
            }
        } else if let Some(done) = all_done_us
            && now >= done + hold_us
        {
            break;
        }
        progress.status(format!(
            "{resolved}/{n} attempts, {open} open, {} failed",
            resolved.saturating_sub(sh.connected.load(Ordering::Relaxed))
        ));
    }
    let end = sh.now_us();
    let _ = watch.sample(secs(end));
    watch.end(secs(end));
    let _ = stop_tx.send(true);
    if let Ok(handles) = dispatcher.await {
        for h in handles {
            let _ = h.await;
        }
    }
    progress.finish();

    let connected = sh.connected.load(Ordering::Relaxed);
    let tally = std::mem::take(&mut *sh.tally());
    let pct = |h: &Option<Histogram<u32>>| h.as_ref().map(Percentiles::of).unwrap_or_default();
    report.clients.attempted = n as u64;
    report.clients.connected = connected;
    report.clients.polling = sh.polling.load(Ordering::Relaxed);
    report.clients.failed = tally.failed;
    report.clients.first_error = tally.first_error;
    report.clients.handshake_ms = pct(&tally.service);
    report.clients.dropped = sh.dropped.load(Ordering::Relaxed);
    let last = sh.last_success_us.load(Ordering::Relaxed);
    report.processes = watch.report();
    let rss_kb_per_connection = report
        .processes
        .iter()
        .filter(|_| connected > 0)
        .map(|p| {
            (
                p.name.clone(),
                (p.rss_mb_end - p.rss_mb_start) * 1024.0 / connected as f64,
            )
        })
        .collect();
    report.connect = Some(ConnectReport {
        target_rate_per_s: rate,
        connects_per_s: connected as f64 / secs(last).max(1e-9),
        concurrent_peak: u64::try_from(sh.peak.load(Ordering::Relaxed)).unwrap_or(0),
        scheduled_ms: Percentiles::of(&sh.recorder.step(0).latency),
        transport_ms: pct(&tally.transport),
        rss_kb_per_connection,
    });
    report.duration_s = secs(end);
    report.stop_reason = "all attempts done and held".to_owned();
    if let Some(storm) = &storm {
        let cmd = args.storm.fault_cmd.as_deref().unwrap_or("");
        report.storm = Some(storm.report(args.storm.fault_at_s.unwrap_or(0.0), cmd));
        // The instrument's own cost over the storm: one thread busy all along would make
        // the outages its own.
        if let Some(f) = fault_us {
            let wall_s = secs(end) - secs(f);
            let cpu_s = stats::self_cpu_s() - storm_cpu_start;
            let threads = tokio::runtime::Handle::current()
                .metrics()
                .num_workers()
                .max(1);
            report.generator = Some(GeneratorReport {
                threads,
                cpu_s,
                wall_s,
                cpu_util: cpu_s / (wall_s * threads as f64).max(1e-9),
                cpu_us_per_delivery: 0.0,
                bound: false,
            });
        }
        report.stop_reason = "the storm's window ended or every client was back".to_owned();
    }
    Ok(report)
}

/// Runs the storm's fault command in the background (a drain outlasts the tick), reporting
/// how it ended.
fn run_fault(cmd: &str, progress: &Progress) {
    progress.line(&format!("storm: running `{cmd}`"));
    let cmd = cmd.to_owned();
    tokio::spawn(async move {
        match tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .status()
            .await
        {
            Ok(st) if st.success() => {}
            Ok(st) => eprintln!("storm: `{cmd}` exited with {st}"),
            Err(e) => eprintln!("storm: `{cmd}` did not run: {e}"),
        }
    });
}

/// Whether the storm is over: its window has passed, or every connection held before the
/// fault is open again with nobody dropped for two seconds (a drain closes its connections
/// over seconds, so an early moment with all back is not the end).
fn storm_over(
    storm: &Storm,
    fault_us: u64,
    now: u64,
    window_us: u64,
    open: i64,
    held: i64,
) -> bool {
    if now >= fault_us + window_us {
        return true;
    }
    let (dropped, back, told, last_drop) = storm.progress();
    // Back, and each one told whether its session was restored.
    dropped > 0
        && back >= dropped
        && told >= back
        && open >= held
        && last_drop.is_some_and(|d| now >= d + 2_000_000)
}
