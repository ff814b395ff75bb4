//! Faults injected while the clients send (`fanout --kill-node-at-s`, `--restart-redis-at-s`,
//! `--drop-clients-at-s`): when each happens and what it does, how a client that lost its
//! connection waits before it tries again, what each client saw of the faults, and the
//! report's `faults` section.

use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};

use super::placement::Rng;
use crate::client::{ClientConfig, Target};
use crate::config::FaultArgs;
use crate::report::{FaultEvent, FaultReport, ReconnectReport, SubscriberLosses};
use crate::stats::{self, Percentiles};

/// Bound on one hook command.
const HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// What a fault does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Action {
    /// SIGKILL this process.
    Kill(i32),
    /// Run this shell command; the index says which fault of its kind this is.
    Shell(String, usize),
    /// The chosen subscribers reset their own connections; the index says which drop this
    /// is (each drop cuts another share).
    Drop(usize),
}

/// One fault of the run.
#[derive(Debug, Clone)]
pub(super) struct Fault {
    pub kind: &'static str,
    /// Microseconds after the first send.
    pub after_us: u64,
    pub action: Action,
}

/// socket.io-client's reconnection delay: `delay · 2^attempt`, randomized by ±50 %, capped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait before attempt `attempt` (0 for the first).
    pub fn delay(&self, attempt: u32, rng: &mut Rng) -> Duration {
        let base = self.first.as_secs_f64() * 2f64.powi(attempt.min(30) as i32);
        let r = rng.below(1_000_000) as f64 / 1e6;
        let deviation = (r * 0.5 * base).floor();
        let ms = if rng.below(2) == 0 {
            base - deviation
        } else {
            base + deviation
        };
        Duration::from_secs_f64(ms.max(0.0)).min(self.max)
    }
}

/// The faults of a run and what clients need to come back from them.
pub(super) struct Faults {
    /// In the order they happen.
    pub events: Vec<Fault>,
    /// The share of subscribers `drop-clients` cuts.
    pub drop_share: f64,
    pub backoff: Backoff,
    /// Where a client reconnects: its own URL first, then the next ones.
    pub targets: Vec<Target>,
    pub cfg: ClientConfig,
}

impl Faults {
    /// The faults `args` ask for; `None` when there are none.
    ///
    /// # Errors
    /// A fault without its action, or a time or share out of range.
    pub fn of(args: &FaultArgs, targets: &[Target], cfg: &ClientConfig) -> Result<Option<Self>> {
        if !args.any() {
            return Ok(None);
        }
        let mut events = Vec::new();
        // Numbered in time order: the command's k-th run is the k-th kill.
        let mut kills = args.kill_node_at_s.clone();
        kills.sort_by(f64::total_cmp);
        for (index, &at) in kills.iter().enumerate() {
            let action = match (args.kill_node_pid, &args.kill_node_cmd) {
                // A pid dies once: a second kill needs a command that finds the new process.
                (Some(_), None) if args.kill_node_at_s.len() > 1 => {
                    bail!("several --kill-node-at-s times need --kill-node-cmd, not a pid")
                }
                (Some(pid), None) => Action::Kill(pid),
                (None, Some(cmd)) => Action::Shell(cmd.clone(), index),
                _ => bail!("--kill-node-at-s needs one of --kill-node-pid and --kill-node-cmd"),
            };
            events.push(fault("kill-node", at, action)?);
        }
        for (index, &at) in args.restart_redis_at_s.iter().enumerate() {
            let Some(cmd) = &args.restart_redis_cmd else {
                bail!("--restart-redis-at-s needs --restart-redis-cmd");
            };
            events.push(fault(
                "restart-redis",
                at,
                Action::Shell(cmd.clone(), index),
            )?);
        }
        let mut drops = args.drop_clients_at_s.clone();
        drops.sort_by(f64::total_cmp);
        for (index, &at) in drops.iter().enumerate() {
            ensure!(
                args.drop_share > 0.0 && args.drop_share <= 1.0,
                "--drop-share must be in (0, 1]"
            );
            events.push(fault("drop-clients", at, Action::Drop(index))?);
        }
        events.sort_by_key(|f| f.after_us);
        Ok(Some(Self {
            events,
            drop_share: args.drop_share,
            backoff: Backoff {
                first: Duration::from_millis(args.reconnect_delay_ms),
                max: Duration::from_millis(
                    args.reconnect_delay_max_ms.max(args.reconnect_delay_ms),
                ),
            },
            targets: targets.to_vec(),
            cfg: cfg.clone(),
        }))
    }

    /// When subscriber `idx` resets its connection, in time order: the drops whose cut share
    /// it is in (drop `k` cuts the share `spread` picks after shifting the clients by `k`,
    /// so repeated drops do not cut the same clients each time).
    pub fn drops_after_us(&self, idx: usize) -> Vec<u64> {
        self.events
            .iter()
            .filter_map(|f| match f.action {
                Action::Drop(k) => {
                    crate::client::spread(idx + k, self.drop_share).then_some(f.after_us)
                }
                _ => None,
            })
            .collect()
    }

    /// The fault whose window (from it to the next) holds `after_us`.
    pub fn window_of(&self, after_us: u64) -> Option<usize> {
        self.events.iter().rposition(|f| f.after_us <= after_us)
    }
}

fn fault(kind: &'static str, at_s: f64, action: Action) -> Result<Fault> {
    ensure!(
        at_s.is_finite() && at_s >= 0.0,
        "the time of {kind} must be a number of seconds ≥ 0"
    );
    Ok(Fault {
        kind,
        after_us: (at_s * 1e6) as u64,
        action,
    })
}

/// Injects every fault at its time (`t0` is the clock's first send), adding each to `log` once
/// it is done.
pub(super) async fn inject(
    faults: &Faults,
    t0: tokio::time::Instant,
    log: &std::sync::Mutex<Vec<FaultEvent>>,
) {
    for f in &faults.events {
        tokio::time::sleep_until(t0 + Duration::from_micros(f.after_us)).await;
        let started = Instant::now();
        let (ok, detail) = act(&f.action).await;
        eprintln!(
            "fault {} at {:.1} s: {}{detail}",
            f.kind,
            f.after_us as f64 / 1e6,
            if ok { "" } else { "FAILED: " }
        );
        let event = FaultEvent {
            kind: f.kind.to_owned(),
            at_s: f.after_us as f64 / 1e6,
            took_ms: started.elapsed().as_secs_f64() * 1e3,
            ok,
            detail,
            ..FaultEvent::default()
        };
        log.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(event);
    }
}

async fn act(action: &Action) -> (bool, String) {
    match action {
        Action::Kill(pid) => {
            use nix::sys::signal::{Signal, kill};
            match kill(nix::unistd::Pid::from_raw(*pid), Signal::SIGKILL) {
                Ok(()) => (true, format!("SIGKILL to pid {pid}")),
                Err(e) => (false, format!("SIGKILL to pid {pid}: {e}")),
            }
        }
        Action::Shell(cmd, index) => {
            let run = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .env("IOSCALE_LOADTEST_FAULT_INDEX", index.to_string())
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .status();
            match tokio::time::timeout(HOOK_TIMEOUT, run).await {
                Ok(Ok(s)) if s.success() => (true, format!("ran `{cmd}`")),
                Ok(Ok(s)) => (false, format!("`{cmd}` exited with {s}")),
                Ok(Err(e)) => (false, format!("`{cmd}` could not run: {e}")),
                Err(_) => (false, format!("`{cmd}` ran over {HOOK_TIMEOUT:?}")),
            }
        }
        Action::Drop(_) => (true, "subscribers reset their connections".to_owned()),
    }
}

/// What one client saw of the faults.
#[derive(Debug, Clone, Default)]
pub(super) struct Seen {
    /// Per fault: the client lost its connection in the fault's window.
    pub cut_by: Vec<bool>,
    /// Per fault and publisher: microseconds from the fault to the first delivery of that
    /// publisher's published at or after it.
    pub resumed_after_us: Vec<Vec<Option<u64>>>,
    pub lost: u64,
    pub reconnected: u64,
    pub recovered: u64,
    pub fresh: u64,
    pub failed_attempts: u64,
    /// Disconnected when the run ended.
    pub down: bool,
}

impl Seen {
    pub fn new(faults: usize, publishers: usize) -> Self {
        Self {
            cut_by: vec![false; faults],
            resumed_after_us: vec![vec![None; publishers]; faults],
            ..Self::default()
        }
    }

    /// A delivery of `publisher`'s, published `published_us` after the first send, arrived
    /// `now_us` after it.
    pub fn delivered(&mut self, faults: &Faults, publisher: usize, published_us: u64, now_us: u64) {
        for (i, f) in faults.events.iter().enumerate() {
            let first = &mut self.resumed_after_us[i][publisher];
            if published_us >= f.after_us && first.is_none() {
                *first = Some(now_us.saturating_sub(f.after_us));
            }
        }
    }

    /// When delivery resumed after fault `i`: once a message published after it had come
    /// from every publisher.
    fn resumed(&self, i: usize) -> Option<u64> {
        self.resumed_after_us[i]
            .iter()
            .try_fold(0, |most, first| first.map(|us| most.max(us)))
    }

    /// The connection was lost `now_us` after the first send.
    pub fn cut(&mut self, faults: &Faults, now_us: u64) {
        self.lost += 1;
        if let Some(i) = faults.window_of(now_us) {
            self.cut_by[i] = true;
        }
    }
}

/// Per-subscriber figures of one subscriber: lost, duplicated, reordered.
pub(super) type Tally = (u64, u64, u64);

/// The report's `faults` section: `events` as injected, `clients` what every client saw (with
/// its tally when it is a subscriber).
pub(super) fn report(
    faults: &Faults,
    mut events: Vec<FaultEvent>,
    clients: &[(Option<Tally>, &Seen)],
    recovery: &str,
) -> FaultReport {
    for (i, ev) in events.iter_mut().enumerate() {
        let everyone = faults.events[i].kind == "restart-redis";
        let mut h = stats::new_histogram();
        let (mut affected, mut resumed) = (0, 0);
        for (_, seen) in clients.iter().filter(|(t, _)| t.is_some()) {
            if !(everyone || seen.cut_by[i]) {
                continue;
            }
            affected += 1;
            if let Some(us) = seen.resumed(i) {
                resumed += 1;
                stats::record(&mut h, us);
            }
        }
        (ev.affected, ev.resumed, ev.resume_ms) = (affected, resumed, Percentiles::of(&h));
    }
    let mut r = ReconnectReport::default();
    let mut s = SubscriberLosses::default();
    for (tally, seen) in clients {
        r.lost += seen.lost;
        r.reconnected += seen.reconnected;
        r.recovered += seen.recovered;
        r.fresh += seen.fresh;
        r.failed_attempts += seen.failed_attempts;
        r.never_back += u64::from(seen.down);
        let Some((lost, dup, reordered)) = *tally else {
            continue;
        };
        s.subscribers += 1;
        s.with_loss += u64::from(lost > 0);
        s.lost_total += lost;
        s.lost_max = s.lost_max.max(lost);
        s.with_duplicates += u64::from(dup > 0);
        s.duplicated_total += dup;
        s.with_reordering += u64::from(reordered > 0);
        s.reordered_total += reordered;
    }
    FaultReport {
        events,
        reconnects: r,
        subscribers: s,
        recovery: recovery.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Protocol;

    fn faults(args: &FaultArgs) -> Result<Option<Faults>> {
        let cfg = ClientConfig::new(Protocol::Socketio, Duration::from_secs(1))?;
        Faults::of(args, &[], &cfg)
    }

    #[test]
    fn faults_need_their_action_and_come_in_time_order() {
        assert!(faults(&FaultArgs::default()).unwrap().is_none());
        let mut a = FaultArgs {
            kill_node_at_s: vec![5.0],
            ..FaultArgs::default()
        };
        assert!(faults(&a).is_err(), "a kill needs a pid or a command");
        a.kill_node_pid = Some(42);
        a.restart_redis_at_s = vec![2.0];
        assert!(faults(&a).is_err(), "a restart needs its command");
        a.restart_redis_cmd = Some("true".to_owned());
        a.drop_clients_at_s = vec![8.5];
        a.drop_share = 0.5;
        let f = faults(&a).unwrap().unwrap();
        let kinds: Vec<_> = f.events.iter().map(|e| (e.kind, e.after_us)).collect();
        assert_eq!(
            kinds,
            [
                ("restart-redis", 2_000_000),
                ("kill-node", 5_000_000),
                ("drop-clients", 8_500_000)
            ]
        );
        assert_eq!(f.events[1].action, Action::Kill(42));
        assert_eq!(
            (
                f.window_of(1),
                f.window_of(2_000_000),
                f.window_of(9_000_000)
            ),
            (None, Some(0), Some(2))
        );
        // Half the subscribers, every other one, reset at 8.5 s.
        let cut: Vec<_> = (0..6)
            .filter(|&i| f.drops_after_us(i) == [8_500_000])
            .collect();
        assert_eq!(cut.len(), 3);
        a.drop_share = 0.0;
        assert!(faults(&a).is_err());
    }

    #[test]
    fn a_soak_kills_several_times_each_kill_numbered_for_its_command() {
        let mut a = FaultArgs {
            kill_node_at_s: vec![30.0, 10.0, 20.0],
            kill_node_pid: Some(42),
            ..FaultArgs::default()
        };
        assert!(faults(&a).is_err(), "a pid cannot be killed three times");
        // Two drops of a third each: a different third each time.
        a.drop_clients_at_s = vec![12.0, 5.0];
        a.drop_share = 1.0 / 3.0;
        a.kill_node_pid = None;
        a.kill_node_cmd = Some("restart-node".to_owned());
        let f = faults(&a).unwrap().unwrap();
        let first: Vec<_> = (0..9)
            .filter(|&i| f.drops_after_us(i).contains(&5_000_000))
            .collect();
        let second: Vec<_> = (0..9)
            .filter(|&i| f.drops_after_us(i).contains(&12_000_000))
            .collect();
        assert_eq!((first.len(), second.len()), (3, 3));
        assert!(
            first.iter().all(|i| !second.contains(i)),
            "{first:?} {second:?}"
        );
        a.drop_clients_at_s.clear();
        a.kill_node_pid = None;
        a.kill_node_cmd = Some("restart-node".to_owned());
        a.restart_redis_at_s = vec![15.0];
        a.restart_redis_cmd = Some("restart-redis".to_owned());
        let f = faults(&a).unwrap().unwrap();
        let seen: Vec<_> = f
            .events
            .iter()
            .map(|e| (e.after_us / 1_000_000, e.action.clone()))
            .collect();
        let shell = |c: &str, i| Action::Shell(c.to_owned(), i);
        // In time order, each kill numbered in that order.
        assert_eq!(
            seen,
            [
                (10, shell("restart-node", 0)),
                (15, shell("restart-redis", 0)),
                (20, shell("restart-node", 1)),
                (30, shell("restart-node", 2)),
            ]
        );
    }

    #[test]
    fn the_backoff_doubles_within_half_its_value_and_is_capped() {
        let b = Backoff {
            first: Duration::from_millis(1000),
            max: Duration::from_millis(5000),
        };
        let mut rng = Rng::new(7);
        for attempt in 0..3u32 {
            let base = 1000.0 * 2f64.powi(attempt as i32);
            for _ in 0..100 {
                let d = b.delay(attempt, &mut rng).as_secs_f64() * 1e3;
                assert!(
                    d >= base * 0.5 - 1.0 && d <= (base * 1.5).min(5000.0) + 1.0,
                    "{d}"
                );
            }
        }
        assert_eq!(b.delay(10, &mut rng), Duration::from_millis(5000));
    }

    #[test]
    fn the_report_counts_affected_subscribers_and_their_losses() {
        let a = FaultArgs {
            kill_node_at_s: vec![1.0],
            kill_node_pid: Some(1),
            restart_redis_at_s: vec![3.0],
            restart_redis_cmd: Some("true".to_owned()),
            ..FaultArgs::default()
        };
        let f = faults(&a).unwrap().unwrap();
        // Two publishers.
        let mut cut = Seen::new(2, 2);
        cut.cut(&f, 1_200_000);
        cut.reconnected = 1;
        cut.recovered = 1;
        cut.delivered(&f, 0, 1_000_500, 2_500_000);
        cut.delivered(&f, 1, 1_000_700, 2_600_000);
        cut.delivered(&f, 0, 3_000_000, 3_100_000);
        cut.delivered(&f, 1, 3_000_100, 3_200_000);
        let mut calm = Seen::new(2, 2);
        calm.delivered(&f, 0, 1_000_000, 1_004_000);
        calm.delivered(&f, 1, 1_000_000, 1_003_000);
        // After the restart only one publisher reached it: not resumed.
        calm.delivered(&f, 1, 3_000_000, 3_003_000);
        let mut publisher = Seen::new(2, 2);
        publisher.cut(&f, 1_100_000);
        publisher.down = true;
        let events = vec![FaultEvent::default(), FaultEvent::default()];
        let r = report(
            &f,
            events,
            &[
                (Some((0, 1, 0)), &cut),
                (Some((3, 0, 2)), &calm),
                (None, &publisher),
            ],
            "ioscale",
        );
        // The kill cut one subscriber off (the publisher is no subscriber): 1.6 s until both
        // publishers' messages published after the kill had reached it. The Redis restart
        // touches every subscriber; one had both publishers back.
        assert_eq!((r.events[0].affected, r.events[0].resumed), (1, 1));
        assert!((r.events[0].resume_ms.max_ms - 1600.0).abs() < 2.0);
        assert_eq!((r.events[1].affected, r.events[1].resumed), (2, 1));
        assert_eq!(
            (
                r.reconnects.lost,
                r.reconnects.recovered,
                r.reconnects.never_back
            ),
            (2, 1, 1)
        );
        let s = &r.subscribers;
        assert_eq!(
            (s.subscribers, s.with_loss, s.lost_total, s.lost_max),
            (2, 1, 3, 3)
        );
        assert_eq!(
            (s.with_duplicates, s.with_reordering, s.reordered_total),
            (1, 1, 2)
        );
    }
}
