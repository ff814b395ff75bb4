//! Measurement: HDR latency histograms sharded over client tasks, percentile summaries, and a
//! sampler of watched server processes (CPU and RSS from `/proc`).
//!
//! Every latency is recorded in microseconds, from the time a message was *scheduled* to be sent
//! (open loop), so a slow server or a late generator shows up as latency instead of silently
//! lowering the offered rate (coordinated omission).

use std::sync::{Mutex, MutexGuard};

use anyhow::{Context as _, Result};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest latency kept apart; anything slower is recorded as this.
pub const MAX_LATENCY_US: u64 = 120_000_000;

/// A histogram of microseconds, 1 µs to [`MAX_LATENCY_US`], 3 significant digits.
pub fn new_histogram() -> Histogram<u32> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds are valid")
}

/// Records `us`, clamped into the histogram's range.
pub fn record(h: &mut Histogram<u32>, us: u64) {
    h.saturating_record(us.clamp(1, MAX_LATENCY_US));
}

/// Percentiles of a latency histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    /// Summary of `h` (all zeros when empty).
    pub fn of(h: &Histogram<u32>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        #[allow(clippy::cast_precision_loss)]
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// What happened to messages scheduled in one rate step.
#[derive(Debug)]
pub struct StepCell {
    /// Delivery (or, for rpc, ack) latency of first deliveries.
    pub latency: Histogram<u32>,
    /// First deliveries (duplicates excluded).
    pub received: u64,
    /// Deliveries the sends of this step should cause.
    pub expected: u64,
    /// Messages sent.
    pub sent: u64,
}

impl StepCell {
    fn new() -> Self {
        Self {
            latency: new_histogram(),
            received: 0,
            expected: 0,
            sent: 0,
        }
    }
}

/// One shard of the recorder; each client task always uses the same shard.
#[derive(Debug)]
pub struct Shard {
    /// Per rate step, indexed by the step of the *scheduled* send time.
    steps: Vec<StepCell>,
    /// Latencies received since the last timeline tick (by receive time).
    pub interval_latency: Histogram<u32>,
    pub interval_received: u64,
    pub interval_sent: u64,
    /// Publish → ack latency (from the scheduled time).
    pub ack: Histogram<u32>,
    /// How late the generator issued sends (actual − scheduled).
    pub lag: Histogram<u32>,
    pub duplicates: u64,
}

impl Shard {
    fn new() -> Self {
        Self {
            steps: Vec::new(),
            interval_latency: new_histogram(),
            interval_received: 0,
            interval_sent: 0,
            ack: new_histogram(),
            lag: new_histogram(),
            duplicates: 0,
        }
    }

    fn step(&mut self, step: usize) -> &mut StepCell {
        while self.steps.len() <= step {
            self.steps.push(StepCell::new());
        }
        &mut self.steps[step]
    }

    /// A first delivery of a message scheduled in `step`, `latency_us` after its schedule.
    pub fn delivered(&mut self, step: usize, latency_us: u64) {
        let cell = self.step(step);
        record(&mut cell.latency, latency_us);
        cell.received += 1;
        record(&mut self.interval_latency, latency_us);
        self.interval_received += 1;
    }

    /// A send scheduled in `step` that should cause `expected` deliveries.
    pub fn sent(&mut self, step: usize, expected: u64, lag_us: u64) {
        let cell = self.step(step);
        cell.sent += 1;
        cell.expected += expected;
        self.interval_sent += 1;
        record(&mut self.lag, lag_us);
    }

    /// A send of `step` the server refused: its deliveries are no longer expected.
    pub fn rejected(&mut self, step: usize, expected: u64) {
        let cell = self.step(step);
        cell.expected = cell.expected.saturating_sub(expected);
    }
}

/// Snapshot of one step over all shards.
#[derive(Debug)]
pub struct StepSnapshot {
    pub latency: Histogram<u32>,
    pub received: u64,
    pub expected: u64,
    pub sent: u64,
}

/// Histograms and counters shared by all client tasks, sharded to keep lock contention low.
#[derive(Debug)]
pub struct Recorder {
    shards: Vec<Mutex<Shard>>,
}

impl Recorder {
    /// A recorder with `n` shards.
    pub fn new(n: usize) -> Self {
        Self {
            shards: (0..n.max(1)).map(|_| Mutex::new(Shard::new())).collect(),
        }
    }

    /// The shard of client `client`.
    pub fn shard(&self, client: usize) -> MutexGuard<'_, Shard> {
        let i = client % self.shards.len();
        self.shards[i]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn each(&self) -> impl Iterator<Item = MutexGuard<'_, Shard>> {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Takes (and resets) what was received and sent since the last call.
    pub fn take_interval(&self) -> (Histogram<u32>, u64, u64) {
        let mut h = new_histogram();
        let (mut received, mut sent) = (0, 0);
        for mut s in self.each() {
            let _ = h.add(&s.interval_latency);
            s.interval_latency.reset();
            received += std::mem::take(&mut s.interval_received);
            sent += std::mem::take(&mut s.interval_sent);
        }
        (h, received, sent)
    }

    /// Step `step` merged over the shards.
    pub fn step(&self, step: usize) -> StepSnapshot {
        let mut snap = StepSnapshot {
            latency: new_histogram(),
            received: 0,
            expected: 0,
            sent: 0,
        };
        for s in self.each() {
            if let Some(c) = s.steps.get(step) {
                let _ = snap.latency.add(&c.latency);
                snap.received += c.received;
                snap.expected += c.expected;
                snap.sent += c.sent;
            }
        }
        snap
    }

    /// Received and expected deliveries over all steps (cheap: no histogram is merged).
    pub fn counts(&self) -> (u64, u64) {
        let (mut received, mut expected) = (0, 0);
        for s in self.each() {
            for c in &s.steps {
                received += c.received;
                expected += c.expected;
            }
        }
        (received, expected)
    }

    /// Number of steps any shard has seen.
    pub fn steps(&self) -> usize {
        self.each().map(|s| s.steps.len()).max().unwrap_or(0)
    }

    /// All steps merged: (latency, received, expected, sent).
    pub fn total(&self) -> StepSnapshot {
        let mut total = StepSnapshot {
            latency: new_histogram(),
            received: 0,
            expected: 0,
            sent: 0,
        };
        for i in 0..self.steps() {
            let s = self.step(i);
            let _ = total.latency.add(&s.latency);
            total.received += s.received;
            total.expected += s.expected;
            total.sent += s.sent;
        }
        total
    }

    /// Merged ack and send-lag histograms and the duplicate count.
    pub fn acks_lag_dups(&self) -> (Histogram<u32>, Histogram<u32>, u64) {
        let (mut ack, mut lag, mut dups) = (new_histogram(), new_histogram(), 0);
        for s in self.each() {
            let _ = ack.add(&s.ack);
            let _ = lag.add(&s.lag);
            dups += s.duplicates;
        }
        (ack, lag, dups)
    }
}

/// Resource use of one watched process over the measured window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProcReport {
    pub name: String,
    pub pid: u32,
    /// Peak resident set since the process started (`VmHWM`).
    pub peak_rss_mb: f64,
    pub rss_mb_start: f64,
    pub rss_mb_end: f64,
    /// CPU time used during the window.
    pub cpu_seconds: f64,
    /// Average cores used during the window.
    pub cpu_cores_avg: f64,
    /// Highest one-second sample.
    pub cpu_cores_max: f64,
}

#[derive(Debug)]
struct Watched {
    name: String,
    pid: u32,
    start_ticks: Option<u64>,
    last_ticks: Option<u64>,
    last_t: f64,
    start_t: f64,
    end_ticks: Option<u64>,
    end_t: f64,
    rss_start: f64,
    rss_end: f64,
    peak_rss: f64,
    cpu_max: f64,
}

/// Samples CPU time and memory of server processes given as `name=pid` or `pid`.
#[derive(Debug)]
pub struct ProcWatch {
    procs: Vec<Watched>,
    ticks_per_s: f64,
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// `(VmRSS, VmHWM)` in MB.
fn rss_mb(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

impl ProcWatch {
    /// Parses `name=pid` / `pid` specs; a process that does not exist is an error.
    ///
    /// # Errors
    /// Malformed specs or missing processes.
    pub fn new(specs: &[String]) -> Result<Self> {
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100);
        let mut procs = Vec::new();
        for spec in specs.iter().filter(|s| !s.trim().is_empty()) {
            let (name, pid) = match spec.split_once('=') {
                Some((n, p)) => (n.trim().to_owned(), p.trim()),
                None => (String::new(), spec.trim()),
            };
            let pid: u32 = pid
                .parse()
                .with_context(|| format!("--watch-pids: bad pid in {spec:?}"))?;
            let name = if name.is_empty() {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .map(|s| s.trim().to_owned())
                    .unwrap_or_else(|_| pid.to_string())
            } else {
                name
            };
            anyhow::ensure!(
                cpu_ticks(pid).is_some(),
                "--watch-pids: process {pid} ({name}) not found"
            );
            procs.push(Watched {
                name,
                pid,
                start_ticks: None,
                last_ticks: None,
                last_t: 0.0,
                start_t: 0.0,
                end_ticks: None,
                end_t: 0.0,
                rss_start: 0.0,
                rss_end: 0.0,
                peak_rss: 0.0,
                cpu_max: 0.0,
            });
        }
        #[allow(clippy::cast_precision_loss)]
        Ok(Self {
            procs,
            ticks_per_s: ticks as f64,
        })
    }

    /// Names of the watched processes, in order.
    pub fn names(&self) -> Vec<String> {
        self.procs.iter().map(|p| p.name.clone()).collect()
    }

    /// Starts the measured window at `t` seconds.
    pub fn begin(&mut self, t: f64) {
        for p in &mut self.procs {
            p.start_ticks = cpu_ticks(p.pid);
            p.last_ticks = p.start_ticks;
            p.start_t = t;
            p.last_t = t;
            if let Some((rss, hwm)) = rss_mb(p.pid) {
                p.rss_start = rss;
                p.peak_rss = hwm;
            }
        }
    }

    /// Samples at `t` seconds; returns (cores since the last sample, RSS MB) per process.
    #[allow(clippy::cast_precision_loss)]
    pub fn sample(&mut self, t: f64) -> Vec<(f64, f64)> {
        let tps = self.ticks_per_s;
        self.procs
            .iter_mut()
            .map(|p| {
                let ticks = cpu_ticks(p.pid);
                let cores = match (ticks, p.last_ticks) {
                    (Some(now), Some(before)) if t > p.last_t => {
                        (now.saturating_sub(before)) as f64 / tps / (t - p.last_t)
                    }
                    _ => 0.0,
                };
                p.last_ticks = ticks.or(p.last_ticks);
                p.last_t = t;
                p.cpu_max = p.cpu_max.max(cores);
                let rss = rss_mb(p.pid).map_or(0.0, |(rss, hwm)| {
                    p.peak_rss = p.peak_rss.max(hwm);
                    rss
                });
                (cores, rss)
            })
            .collect()
    }

    /// Ends the measured window at `t` seconds.
    pub fn end(&mut self, t: f64) {
        for p in &mut self.procs {
            p.end_ticks = cpu_ticks(p.pid).or(p.last_ticks);
            p.end_t = t;
            if let Some((rss, hwm)) = rss_mb(p.pid) {
                p.rss_end = rss;
                p.peak_rss = p.peak_rss.max(hwm);
            }
        }
    }

    /// Per-process results of the window.
    #[allow(clippy::cast_precision_loss)]
    pub fn report(&self) -> Vec<ProcReport> {
        self.procs
            .iter()
            .map(|p| {
                let secs = match (p.start_ticks, p.end_ticks) {
                    (Some(a), Some(b)) => b.saturating_sub(a) as f64 / self.ticks_per_s,
                    _ => 0.0,
                };
                let wall = (p.end_t - p.start_t).max(1e-9);
                ProcReport {
                    name: p.name.clone(),
                    pid: p.pid,
                    peak_rss_mb: p.peak_rss,
                    rss_mb_start: p.rss_start,
                    rss_mb_end: p.rss_end,
                    cpu_seconds: secs,
                    cpu_cores_avg: secs / wall,
                    cpu_cores_max: p.cpu_max,
                }
            })
            .collect()
    }
}

/// CPU time this process has used (every thread, user + system), in seconds.
pub fn self_cpu_s() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |u| {
        let tv = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        tv(u.user_time()) + tv(u.system_time())
    })
}

/// The generator's own CPU use, sampled on the run's clock: a step during which the generator
/// used most of its threads is the generator's figure, not the server's.
#[derive(Debug, Clone)]
pub struct SelfCpu {
    /// Threads running the clients (tokio workers).
    pub threads: usize,
    /// (run clock µs, CPU seconds so far), in time order.
    samples: Vec<(u64, f64)>,
}

impl SelfCpu {
    pub fn new(threads: usize) -> Self {
        Self {
            threads: threads.max(1),
            samples: Vec::new(),
        }
    }

    /// Records the CPU used so far at `now_us`.
    pub fn sample(&mut self, now_us: u64) {
        self.samples.push((now_us, self_cpu_s()));
    }

    /// (CPU seconds, wall seconds) between the samples nearest `from_us` and `to_us`; `None`
    /// without two distinct samples in that span.
    pub fn between(&self, from_us: u64, to_us: u64) -> Option<(f64, f64)> {
        let at = |t: u64| {
            let i = self.samples.partition_point(|&(st, _)| st <= t);
            self.samples.get(i.saturating_sub(1)).copied()
        };
        let (a, b) = (at(from_us)?, at(to_us)?);
        (b.0 > a.0).then(|| (b.1 - a.1, (b.0 - a.0) as f64 / 1e6))
    }

    /// Share of its threads' capacity the generator used between two instants (0 to 1).
    pub fn util(&self, from_us: u64, to_us: u64) -> Option<f64> {
        self.between(from_us, to_us)
            .map(|(cpu, wall)| cpu / (wall * self.threads as f64))
    }
}

/// Above this share of its threads' CPU the generator is taken to be the bottleneck.
pub const GENERATOR_BOUND_UTIL: f64 = 0.8;

/// Median (mean of the middle two for an even count); 0 when empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn self_cpu_is_measured_between_samples() {
        let mut c = SelfCpu::new(2);
        c.sample(0);
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        std::hint::black_box(x);
        c.sample(50_000);
        let (cpu, wall) = c.between(0, 50_000).unwrap();
        assert!((wall - 0.05).abs() < 1e-9);
        assert!(cpu > 0.0, "a busy loop uses CPU");
        let u = c.util(0, 60_000).unwrap();
        assert!(u > 0.0 && u <= 1.0, "{u}");
        assert!(c.between(10, 20).is_none(), "one sample only");
    }

    use super::*;

    #[test]
    fn percentiles_in_ms() {
        let mut h = new_histogram();
        for us in 1..=1000 {
            record(&mut h, us * 1000);
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 1000);
        assert!((p.p50_ms - 500.0).abs() < 1.0, "{p:?}");
        assert!((p.p99_ms - 990.0).abs() < 1.0, "{p:?}");
        assert!((p.max_ms - 1000.0).abs() < 1.0, "{p:?}");
        assert_eq!(Percentiles::of(&new_histogram()), Percentiles::default());
    }

    #[test]
    fn recorder_merges_shards_and_steps() {
        let r = Recorder::new(4);
        r.shard(0).sent(0, 3, 10);
        r.shard(1).delivered(0, 100);
        r.shard(2).delivered(0, 200);
        r.shard(3).delivered(1, 300);
        r.shard(4).rejected(0, 1);
        let s0 = r.step(0);
        assert_eq!((s0.sent, s0.expected, s0.received), (1, 2, 2));
        assert_eq!(r.steps(), 2);
        let t = r.total();
        assert_eq!(t.received, 3);
        let (h, received, sent) = r.take_interval();
        assert_eq!((h.len(), received, sent), (3, 3, 1));
        assert_eq!(r.take_interval().1, 0);
    }

    #[test]
    fn watches_own_process() {
        let me = std::process::id();
        let mut w = ProcWatch::new(&[format!("me={me}")]).unwrap();
        w.begin(0.0);
        let s = w.sample(1.0);
        assert_eq!(s.len(), 1);
        assert!(s[0].1 > 0.0);
        w.end(1.0);
        let r = w.report();
        assert_eq!(r[0].name, "me");
        assert!(r[0].peak_rss_mb > 0.0);
        assert!(ProcWatch::new(&["x=notapid".to_owned()]).is_err());
    }
}
