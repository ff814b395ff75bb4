//! `connect --fault-at-s … --fault-cmd …`: a reconnect storm. Once every client is connected
//! a fault (a node SIGTERMed or SIGKILLed) cuts some of them off; each one connects again with
//! socket.io-client's backoff (1 s doubling to 5 s, ±50 %), to its own URL first, and the run
//! reports how long until 50 %, 99 % and 100 % of them were back, from the fault and from
//! each client's own drop, and every failed attempt by cause (HTTP 429: a per-address budget,
//! 503: a draining node, `refused`: a dead one).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::load::Backoff;
use super::load::placement::Rng;
use crate::client::{Client, ClientConfig, Target, Transport};
use crate::config::StormArgs;
use crate::report::StormReport;

/// What the clients of a storm share.
pub(crate) struct Storm {
    backoff: Backoff,
    targets: Vec<Target>,
    epoch: Instant,
    tally: Mutex<Tally>,
}

#[derive(Default)]
struct Tally {
    fault_us: Option<u64>,
    /// Drops after the fault, and their times.
    drops_us: Vec<u64>,
    /// For each client back after the fault: (when it was back, how long it was gone), µs.
    back_us: Vec<(u64, u64)>,
    failed: BTreeMap<String, u64>,
    attempts: u64,
    /// Reconnections after the fault whose session the server restored, or began afresh.
    recovered: u64,
    fresh: u64,
    /// When each restored session was said to be restored (ioscale says so in an event after
    /// CONNECT, once its rooms and missed broadcasts are back), µs.
    restored_us: Vec<u64>,
}

impl Storm {
    /// The storm `args` ask for, if any; `targets` are the run's own.
    ///
    /// # Errors
    /// A `--reconnect-urls` entry that is not a URL.
    pub(crate) fn of(
        args: &StormArgs,
        targets: &[Target],
        path: &str,
        epoch: Instant,
    ) -> anyhow::Result<Option<Self>> {
        if args.fault_at_s.is_none() {
            return Ok(None);
        }
        let targets = if args.reconnect_urls.is_empty() {
            targets.to_vec()
        } else {
            args.reconnect_urls
                .iter()
                .map(|u| Target::parse(u, path))
                .collect::<anyhow::Result<_>>()?
        };
        Ok(Some(Self {
            backoff: Backoff {
                first: Duration::from_millis(args.storm_reconnect_delay_ms),
                max: Duration::from_millis(
                    args.storm_reconnect_delay_max_ms
                        .max(args.storm_reconnect_delay_ms),
                ),
            },
            targets,
            epoch,
            tally: Mutex::new(Tally::default()),
        }))
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Marks the fault's moment.
    pub(crate) fn fault_now(&self) -> u64 {
        let now = self.now_us();
        self.tally().fault_us = Some(now);
        now
    }

    /// Drops after the fault, how many of them are back, and how many of those the server
    /// said restored or fresh.
    pub(crate) fn progress(&self) -> (usize, usize, usize, Option<u64>) {
        let t = self.tally();
        (
            t.drops_us.len(),
            t.back_us.len(),
            usize::try_from(t.recovered + t.fresh).unwrap_or(usize::MAX),
            t.drops_us.last().copied(),
        )
    }

    /// A reconnection's session: restored by the server, or a fresh one.
    pub(crate) fn session(&self, recovered: bool) {
        let now = self.now_us();
        let mut t = self.tally();
        if recovered {
            t.recovered += 1;
            if t.fault_us.is_some() {
                t.restored_us.push(now);
            }
        } else {
            t.fresh += 1;
        }
    }

    /// Client `i`, cut off, connects again with the backoff, to its own target first and then
    /// the next ones, with `auth` in its CONNECT (its session, when it resumes one); `None` once
    /// the run stops.
    pub(crate) async fn come_back(
        &self,
        cfg: &ClientConfig,
        (i, transport, nsp): (usize, Transport, &str),
        auth: Option<&str>,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Client> {
        let dropped = self.now_us();
        let after_fault = {
            let mut t = self.tally();
            let after = t.fault_us.is_some();
            if after {
                t.drops_us.push(dropped);
            }
            after
        };
        let mut rng = Rng::stream(0x570a, i as u64);
        for attempt in 0.. {
            let wait = self.backoff.delay(attempt, &mut rng);
            tokio::select! {
                _ = stop.changed() => return None,
                () = tokio::time::sleep(wait) => {}
            }
            for k in 0..self.targets.len() {
                // Through a load balancer (`--reconnect-urls`) or to the next URL of the run.
                let target = &self.targets[(i + k) % self.targets.len()];
                let r = tokio::select! {
                    _ = stop.changed() => return None,
                    r = Client::connect_with_auth(cfg, target, transport, nsp, auth) => r,
                };
                let now = self.now_us();
                let mut t = self.tally();
                t.attempts += 1;
                match r {
                    Ok((c, _)) => {
                        if after_fault {
                            t.back_us.push((now, now.saturating_sub(dropped)));
                        }
                        return Some(c);
                    }
                    Err(e) => *t.failed.entry(e.cause).or_default() += 1,
                }
            }
        }
        None
    }

    /// The storm's section of the report.
    pub(crate) fn report(&self, fault_at_s: f64, cmd: &str) -> StormReport {
        let t = self.tally();
        let fault = t.fault_us.unwrap_or(0);
        let dropped = t.drops_us.len() as u64;
        let back = t.back_us.len() as u64;
        let mut from_fault: Vec<u64> = t
            .back_us
            .iter()
            .map(|&(at, _)| at.saturating_sub(fault))
            .collect();
        let mut gone: Vec<u64> = t.back_us.iter().map(|&(_, gone)| gone).collect();
        let mut restored: Vec<u64> = t
            .restored_us
            .iter()
            .map(|&at| at.saturating_sub(fault))
            .collect();
        restored.sort_unstable();
        from_fault.sort_unstable();
        gone.sort_unstable();
        let share = |v: &[u64], q: f64| -> Option<f64> {
            // The time by which `q` of the dropped clients were back: none if fewer came back.
            let need = ((dropped as f64) * q).ceil() as usize;
            (need > 0).then(|| v.get(need - 1).map(|&us| us as f64 / 1e3))?
        };
        StormReport {
            fault_at_s,
            fault_cmd: cmd.to_owned(),
            dropped,
            reconnected: back,
            never_back: dropped.saturating_sub(back),
            back_50_ms: share(&from_fault, 0.5),
            back_99_ms: share(&from_fault, 0.99),
            back_100_ms: share(&from_fault, 1.0),
            gone_50_ms: share(&gone, 0.5),
            gone_99_ms: share(&gone, 0.99),
            gone_100_ms: share(&gone, 1.0),
            restored_50_ms: share(&restored, 0.5),
            restored_99_ms: share(&restored, 0.99),
            restored_100_ms: share(&restored, 1.0),
            last_drop_ms: t
                .drops_us
                .last()
                .map(|&d| d.saturating_sub(fault) as f64 / 1e3),
            attempts: t.attempts,
            failed_attempts: t.failed.clone(),
            recovered: t.recovered,
            fresh: t.fresh,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storm() -> Storm {
        let args = StormArgs {
            fault_at_s: Some(1.0),
            fault_cmd: Some("true".into()),
            storm_window_s: 10.0,
            storm_reconnect_delay_ms: 1000,
            storm_reconnect_delay_max_ms: 5000,
            source_addrs: 0,
            reconnect_urls: Vec::new(),
        };
        Storm::of(&args, &[], "/socket.io/", Instant::now())
            .unwrap()
            .unwrap()
    }

    #[test]
    fn shares_are_none_until_enough_clients_are_back() {
        let s = storm();
        {
            let mut t = s.tally();
            t.fault_us = Some(1_000_000);
            t.drops_us = vec![1_000_000; 4];
            t.back_us = vec![(1_500_000, 500_000), (2_000_000, 1_000_000)];
        }
        let r = s.report(1.0, "x");
        assert_eq!((r.dropped, r.reconnected, r.never_back), (4, 2, 2));
        assert_eq!(r.back_50_ms, Some(1000.0));
        assert_eq!(r.back_99_ms, None);
        assert_eq!(r.back_100_ms, None);
        assert_eq!(r.gone_50_ms, Some(1000.0));
    }

    #[test]
    fn all_back_gives_every_share() {
        let s = storm();
        {
            let mut t = s.tally();
            t.fault_us = Some(0);
            t.drops_us = vec![0, 0];
            t.back_us = vec![(3_000_000, 3_000_000), (700_000, 700_000)];
        }
        let r = s.report(1.0, "x");
        assert_eq!(r.back_50_ms, Some(700.0));
        assert_eq!(r.back_100_ms, Some(3000.0));
    }

    #[test]
    fn restored_shares_count_restored_sessions_only() {
        let s = storm();
        {
            let mut t = s.tally();
            t.fault_us = Some(0);
            t.drops_us = vec![0, 0];
            t.back_us = vec![(1_000_000, 1_000_000), (1_000_000, 1_000_000)];
        }
        s.session(false);
        s.session(true);
        let r = s.report(1.0, "x");
        assert_eq!((r.recovered, r.fresh), (1, 1));
        assert!(r.restored_50_ms.is_some());
        assert_eq!(r.restored_100_ms, None, "one of two was not restored");
        assert_eq!(s.progress().2, 2, "both were told");
    }
}
