//! The node's Prometheus metrics (connections, events, API, refused publishes) beside the
//! adapter's.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use crate::edge::connections::ConnectionMetrics;

/// Node-level metrics. Labels: namespace (from the served set), transport, reason, route, status.
#[derive(Debug, Clone)]
pub struct NodeMetrics {
    /// Sockets connected now, by namespace and transport at connect time.
    pub connections: IntGaugeVec,
    /// Connections accepted, by namespace.
    pub connects: IntCounterVec,
    /// Disconnections, by namespace and reason.
    pub disconnects: IntCounterVec,
    /// Handshakes refused, by reason (see [`crate::admission::Refusal::code`]).
    pub connects_refused: IntCounterVec,
    /// Client events refused over their socket's budget, by reason (`rate_limited`, or
    /// `abuse_disconnect` when the refusal also disconnected the socket).
    pub events_refused: IntCounterVec,
    /// Requests from pages `--allowed-origins` does not list.
    pub origin_refused: IntCounter,
    /// Requests naming an Engine.IO session from another address than the one that opened it
    /// (or a session this node never bound).
    pub session_binding_refused: IntCounter,
    /// Events received from clients, by namespace.
    pub events: IntCounterVec,
    /// Server API requests, by route and status code.
    pub api_requests: IntCounterVec,
    /// Server-to-server events handled, by namespace.
    pub server_events: IntCounterVec,
    /// Sessions of recovering clients at their connect, by outcome (`recovered`, or why a
    /// fresh session began: `new`, `unknown`, `expired`, `identity`, `history`, `invalid`,
    /// `unavailable`).
    pub recoveries: IntCounterVec,
    /// `/pubsub` publishes refused, by reason (see [`crate::pubsub::Refusal`]).
    pub publishes_refused: IntCounterVec,
    /// `/pubsub` acks that found the publisher's packet buffer full and waited for room (a
    /// publisher that does not read what it is sent).
    pub pubsub_acks_waited: IntCounter,
    /// Time a `/pubsub` publish spends in each stage on this node, by [`PubsubStage`].
    pub pubsub_stage_duration: HistogramVec,
    /// Its series, resolved once: observed per publish.
    pubsub_stages: [Histogram; 3],
    /// TCP connections of the public listener open now.
    pub http_connections_open: IntGauge,
    /// Connections the node closed, by reason (`slow_consumer`, `draining`).
    pub http_connections_closed: IntCounterVec,
    /// The process's resident memory, open descriptors and live tasks, read at each scrape.
    pub process: ProcessGauges,
    /// `ioscale_admin_ui_sessions`: Admin UI sockets open on this node.
    pub admin_ui_sessions: IntGauge,
    /// `ioscale_admin_ui_refusals_total{reason}`.
    pub admin_ui_refusals: IntCounterVec,
    /// `ioscale_presence_members`: presence members this node holds.
    pub presence_members: IntGauge,
    /// `ioscale_presence_changes_total{change}`.
    pub presence_changes: IntCounterVec,
}

/// What a soak watches for leaks, read when `/metrics` is scraped (so they cost nothing
/// between scrapes): resident memory and open file descriptors from `/proc/self` (Linux;
/// elsewhere they stay 0), and the runtime's live tasks.
#[derive(Debug, Clone)]
pub struct ProcessGauges {
    resident: IntGauge,
    fds: IntGauge,
    tasks: IntGauge,
    heap: IntGauge,
}

impl ProcessGauges {
    fn new(r: &Registry) -> prometheus::Result<Self> {
        // Set once: it tells a restarted node from one that ran on (a soak judges each apart).
        let started = gauge(
            r,
            "ioscale_process_start_time_seconds",
            "When the node process started, in seconds since the Unix epoch",
        )?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        started.set(now.map_or(0, |d| d.as_secs() as i64));
        Ok(Self {
            resident: gauge(
                r,
                "ioscale_process_resident_memory_bytes",
                "Resident memory of the node process",
            )?,
            fds: gauge(
                r,
                "ioscale_process_open_fds",
                "File descriptors the node process has open",
            )?,
            tasks: gauge(
                r,
                "ioscale_runtime_tasks_alive",
                "Tasks alive in the node's async runtime",
            )?,
            heap: gauge(
                r,
                "ioscale_process_heap_bytes",
                "Bytes allocated and not freed, by jemalloc's count (0 under another allocator)",
            )?,
        })
    }

    /// Reads the three figures now; a figure that cannot be read keeps its last value.
    pub fn refresh(&self) {
        if let Some(bytes) = resident_bytes() {
            self.resident.set(bytes);
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            // The directory handle itself is one of the entries.
            self.fds.set(dir.count().saturating_sub(1) as i64);
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            self.tasks.set(rt.metrics().num_alive_tasks() as i64);
        }
        if let Some(bytes) = heap_bytes() {
            self.heap.set(bytes);
        }
    }
}

/// What the program holds, as jemalloc counts it (its statistics are refreshed by advancing
/// its epoch first): a leak grows it, where resident memory also moves with what the
/// allocator keeps for reuse. `None` when jemalloc is not the allocator (its count is then 0).
fn heap_bytes() -> Option<i64> {
    tikv_jemalloc_ctl::epoch::advance().ok()?;
    let allocated = tikv_jemalloc_ctl::stats::allocated::read().ok()?;
    (allocated > 0)
        .then(|| i64::try_from(allocated).ok())
        .flatten()
}

/// Resident bytes from `/proc/self/statm` (its second field, in pages of 4 KiB on every
/// platform Linux runs this on, which `VmRSS` in `status` confirms in the unit test).
fn resident_bytes() -> Option<i64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: i64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// A stage of a `/pubsub` publish on the node that received it (the `stage` label). The
/// adapter's `ioscale_adapter_stage_duration_seconds` continues from `emit`; the socket
/// writers' queues after local delivery belong to the transport, which exposes no hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubsubStage {
    /// From the handler accepting the publish to its socket's publish loop taking it.
    Queue,
    /// Handing it to the cluster: the adapter's publish queue and local delivery.
    Emit,
    /// Sending the publisher's ack, waiting while its packet buffer is full.
    Ack,
}

impl PubsubStage {
    const ALL: [PubsubStage; 3] = [PubsubStage::Queue, PubsubStage::Emit, PubsubStage::Ack];

    /// The `stage` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            PubsubStage::Queue => "queue",
            PubsubStage::Emit => "emit",
            PubsubStage::Ack => "ack",
        }
    }
}

impl NodeMetrics {
    /// Creates and registers the metrics.
    ///
    /// # Errors
    /// On a duplicate registration.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let r = registry;
        let stage_duration = stage_histogram(r)?;
        let connections = IntGaugeVec::new(
            Opts::new("ioscale_connections_active", "Sockets connected now"),
            &["namespace", "transport"],
        )?;
        r.register(Box::new(connections.clone()))?;
        Ok(Self {
            connections,
            connects: counters(
                r,
                "ioscale_connections_total",
                "Connections accepted",
                &["namespace"],
            )?,
            disconnects: counters(
                r,
                "ioscale_disconnections_total",
                "Disconnections by reason",
                &["namespace", "reason"],
            )?,
            connects_refused: counters(
                r,
                "ioscale_connect_refused_total",
                "Handshakes refused with a connect_error, by reason",
                &["reason"],
            )?,
            events_refused: counters(
                r,
                "ioscale_events_refused_total",
                "Client events refused over their socket's event budget, by reason",
                &["reason"],
            )?,
            origin_refused: counter(
                r,
                "ioscale_http_origin_refused_total",
                "Socket.IO requests refused because their page's origin is not allowed",
            )?,
            session_binding_refused: counter(
                r,
                "ioscale_http_session_binding_refused_total",
                "Socket.IO requests naming a session they are not bound to",
            )?,
            events: counters(
                r,
                "ioscale_events_received_total",
                "Events received from clients",
                &["namespace"],
            )?,
            api_requests: counters(
                r,
                "ioscale_api_requests_total",
                "Server API requests",
                &["route", "status"],
            )?,
            server_events: counters(
                r,
                "ioscale_server_events_received_total",
                "Server-to-server events handled",
                &["namespace"],
            )?,
            recoveries: counters(
                r,
                "ioscale_session_recoveries_total",
                "Sessions of recovering clients at their connect, by outcome",
                &["outcome"],
            )?,
            publishes_refused: counters(
                r,
                "ioscale_pubsub_publishes_refused_total",
                "Publishes on /pubsub refused with ok: false, by reason",
                &["reason"],
            )?,
            pubsub_acks_waited: counter(
                r,
                "ioscale_pubsub_acks_waited_total",
                "Publish acks that found the publisher's packet buffer full and waited for room",
            )?,
            pubsub_stages: PubsubStage::ALL
                .map(|st| stage_duration.with_label_values(&[st.as_str()])),
            pubsub_stage_duration: stage_duration,
            http_connections_open: gauge(
                r,
                "ioscale_http_connections_open",
                "TCP connections of the public listener open now",
            )?,
            http_connections_closed: counters(
                r,
                "ioscale_http_connections_closed_total",
                "Connections the node closed: slow_consumer (its send buffer full), draining \
                 (told to go while the node drains)",
                &["reason"],
            )?,
            process: ProcessGauges::new(r)?,
            admin_ui_sessions: gauge(
                r,
                "ioscale_admin_ui_sessions",
                "Admin UI sockets open on this node",
            )?,
            admin_ui_refusals: counters(
                r,
                "ioscale_admin_ui_refusals_total",
                "Admin UI connections refused: credentials (a wrong or missing login)",
                &["reason"],
            )?,
            presence_members: gauge(
                r,
                "ioscale_presence_members",
                "Presence members this node holds, over every room",
            )?,
            presence_changes: counters(
                r,
                "ioscale_presence_changes_total",
                "Presence changes this node made: join, leave (asked or on disconnect), swept (a \
                 dead node's member taken out by this node)",
                &["change"],
            )?,
        })
    }

    /// The counters of the public listener's connections.
    pub fn connection_metrics(&self) -> ConnectionMetrics {
        ConnectionMetrics {
            open: self.http_connections_open.clone(),
            slow_consumer: self
                .http_connections_closed
                .with_label_values(&["slow_consumer"]),
            draining: self
                .http_connections_closed
                .with_label_values(&["draining"]),
        }
    }

    /// Records `d` spent in a `/pubsub` stage.
    pub fn pubsub_stage(&self, stage: PubsubStage, d: std::time::Duration) {
        self.pubsub_stages[stage as usize].observe(d.as_secs_f64());
    }
}

/// `ioscale_pubsub_stage_duration_seconds`, registered.
fn stage_histogram(r: &Registry) -> prometheus::Result<HistogramVec> {
    let stage_duration = HistogramVec::new(
        HistogramOpts::new(
            "ioscale_pubsub_stage_duration_seconds",
            "Time a /pubsub publish spends in each stage on the node that received it",
        )
        // From 10 µs to 1 s: a stage takes microseconds, a tail tens of milliseconds.
        .buckets(vec![
            0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025,
            0.05, 0.1, 0.25, 0.5, 1.0,
        ]),
        &["stage"],
    )?;
    r.register(Box::new(stage_duration.clone()))?;
    Ok(stage_duration)
}

/// A registered counter family.
fn counters(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

/// A registered gauge.
fn gauge(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntGauge> {
    let g = IntGauge::new(name, help)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

/// A registered counter.
fn counter(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntCounter> {
    let c = IntCounter::new(name, help)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn process_gauges_read_this_process() {
        let r = Registry::new();
        let p = ProcessGauges::new(&r).unwrap();
        let before = p.fds.get();
        let _file = std::fs::File::open("/proc/self/statm").unwrap();
        p.refresh();
        let fds = p.fds.get();
        assert!(fds > before && fds > 2, "{fds}");
        let _more = std::fs::File::open("/proc/self/statm").unwrap();
        p.refresh();
        assert_eq!(
            p.fds.get(),
            fds + 1,
            "one more open file is one more descriptor"
        );
        // statm's resident pages agree with status's VmRSS (kB) within what the two reads
        // allocate in between.
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let vm_rss_kb: i64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap();
        let rss = p.resident.get();
        assert!(
            (rss / 1024 - vm_rss_kb).abs() < 4096,
            "{rss} B vs {vm_rss_kb} kB"
        );
        let alive = p.tasks.get();
        let handles: Vec<_> = (0..5)
            .map(|_| tokio::spawn(std::future::pending::<()>()))
            .collect();
        p.refresh();
        assert_eq!(p.tasks.get(), alive + 5);
        handles.iter().for_each(tokio::task::JoinHandle::abort);
    }

    #[test]
    fn each_pubsub_stage_records_under_its_own_label() {
        let m = NodeMetrics::new(&Registry::new()).unwrap();
        for (i, st) in PubsubStage::ALL.into_iter().enumerate() {
            for _ in 0..=i {
                m.pubsub_stage(st, std::time::Duration::from_micros(5));
            }
        }
        for (i, st) in PubsubStage::ALL.into_iter().enumerate() {
            let h = m.pubsub_stage_duration.with_label_values(&[st.as_str()]);
            assert_eq!(h.get_sample_count(), i as u64 + 1, "{}", st.as_str());
        }
    }
}
