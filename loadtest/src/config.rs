//! Command line of `ioscale-loadtest`: one subcommand per scenario; every flag is also an
//! `IOSCALE_LOADTEST_*` environment variable, and units are part of the names.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::client::{Protocol, RecoveryMode};

/// Load generator for Socket.IO clusters (Engine.IO v4 / Socket.IO v5, WebSocket and polling).
#[derive(Debug, Parser)]
#[command(name = "ioscale-loadtest", version, about)]
pub struct Config {
    #[command(subcommand)]
    pub command: Command,
    /// Threads running the clients (default: one per core). With 1 the generator runs on a
    /// single-threaded runtime: no wake-ups across threads, so the least CPU per delivery.
    #[arg(long, global = true, env = "IOSCALE_LOADTEST_THREADS")]
    pub threads: Option<usize>,
}

/// What to run.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Connection storm: open-loop connects/s, handshake latency, failures by cause.
    Connect(ConnectArgs),
    /// Room fan-out on `/pubsub`: subscribers in rooms, publishers at an open-loop rate.
    Fanout(FanoutArgs),
    /// Many small rooms spread at random over the nodes, open-loop publishes to random rooms:
    /// what per-room channels save (cluster CPU, adapter messages and Redis output against
    /// the ideal of the placement).
    ///
    /// Each member is a client of its own on a URL drawn at random (seeded; not `i mod n`),
    /// publishers (not members) go round robin over the URLs, and each publish goes to a
    /// uniformly random room (seeded). Both protocols (`socketio`, `raw`). `--watch-pids`
    /// gives the CPU per million deliveries (the Redis part: names starting with `redis`),
    /// `--node-metrics-urls` the adapter messages received against the ideal (ioscale nodes
    /// only), `--redis-urls` the bytes Redis sent.
    Rooms(RoomsArgs),
    /// The chat demo: `add-message` on `/`, every client receives `message-added`.
    Chat(ChatArgs),
    /// Emit-with-ack round trips on `/pubsub` (`join` or `publish` acks).
    Rpc(RpcArgs),
    /// Samples every node's resident memory, descriptors, tasks and sockets over a soak (used
    /// by soak.sh).
    SoakWatch(crate::soak::SoakWatchArgs),
    /// Judges a soak from its samples, events and workload reports: page, plot, verdict (used
    /// by soak.sh; fails when a criterion did).
    SoakReport(crate::soak::SoakReportArgs),
    /// Prints the comparison table of a directory of reports (used by bench.sh).
    Compare(CompareArgs),
    /// Draws the SVG plot of a JSON report again (next to it).
    Plot {
        /// The JSON report.
        report: PathBuf,
    },
    /// Prints free TCP ports of 127.0.0.1, one per line (used by bench.sh).
    FreePorts {
        /// How many.
        #[arg(default_value_t = 1)]
        count: usize,
    },
}

/// Flags every scenario shares.
#[derive(Debug, Clone, Args, Serialize)]
pub struct Common {
    /// Servers (or one load balancer), comma-separated: `http://host:port` (or `ws://`).
    /// Client `i` connects to URL `i mod n`.
    #[arg(
        long,
        env = "IOSCALE_LOADTEST_URLS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:3000"
    )]
    pub urls: Vec<String>,
    /// Wire protocol: `socketio`, or `raw` for the raw WebSocket baseline.
    #[arg(long, env = "IOSCALE_LOADTEST_PROTOCOL", value_enum, default_value_t = Protocol::Socketio)]
    pub protocol: Protocol,
    /// Socket.IO request path.
    #[arg(long, env = "IOSCALE_LOADTEST_PATH", default_value = "/socket.io/")]
    pub path: String,
    /// Share of clients on HTTP long-polling instead of WebSocket (0 to 1), spread evenly.
    /// Polling needs sticky sessions behind a load balancer.
    #[arg(long, env = "IOSCALE_LOADTEST_POLLING_SHARE", default_value_t = 0.0)]
    pub polling_share: f64,
    /// Rate at which clients are connected (the storm rate for `connect`, the setup pace
    /// otherwise).
    #[arg(
        long,
        env = "IOSCALE_LOADTEST_CONNECT_RATE_PER_S",
        default_value_t = 1000.0
    )]
    pub connect_rate_per_s: f64,
    /// Most handshakes in flight during setup (not used by `connect`, which is open loop).
    #[arg(
        long,
        env = "IOSCALE_LOADTEST_CONNECT_CONCURRENCY",
        default_value_t = 256
    )]
    pub connect_concurrency: usize,
    /// Bound on one handshake (TCP, upgrade or first poll, namespace connect, room join).
    #[arg(
        long,
        env = "IOSCALE_LOADTEST_CONNECT_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub connect_timeout_ms: u64,
    /// A token every Socket.IO client sends in its namespace CONNECT (`auth: {token}`), for
    /// servers with connection auth (ioscale's `--auth jwt`).
    #[arg(long, env = "IOSCALE_LOADTEST_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// Session recovery the Socket.IO clients ask for, and use when they reconnect after a
    /// fault: `ioscale` (`ioscale_recovery` in the CONNECT auth, as ioscale's helpers do; the
    /// default of a bare `--recovery`), `socketio` (socket.io's own connection state recovery:
    /// the `pid` of the CONNECT answer and the last event argument's offset sent back), or
    /// `off` (a client that reconnects joins its room again and misses what was sent meanwhile).
    #[arg(
        long,
        env = "IOSCALE_LOADTEST_RECOVERY",
        value_enum,
        num_args = 0..=1,
        default_value_t = RecoveryMode::Off,
        default_missing_value = "ioscale"
    )]
    pub recovery: RecoveryMode,
    /// Ask the kernel to acknowledge at once after every read of a WebSocket connection
    /// (`TCP_QUICKACK`, which Linux clears again by itself), instead of delaying the ACK by up
    /// to 40 ms. A server that writes without `TCP_NODELAY` holds each small write (Nagle)
    /// until the previous one is acknowledged, so how the reader acknowledges sets that
    /// server's pace: this shows how much of a measurement is the generator's ACK pattern.
    #[arg(long, env = "IOSCALE_LOADTEST_QUICKACK")]
    pub quickack: bool,
    /// Write the JSON report here, and an SVG plot next to it (same name, `.svg`).
    #[arg(long, env = "IOSCALE_LOADTEST_REPORT_JSON")]
    pub report_json: Option<PathBuf>,
    /// Server processes to sample (CPU, RSS) while sending: `name=pid` or `pid`, comma-separated.
    #[arg(long, env = "IOSCALE_LOADTEST_WATCH_PIDS", value_delimiter = ',')]
    pub watch_pids: Vec<String>,
    /// Name of what is measured, carried into the report (e.g. `ioscale`).
    #[arg(long, env = "IOSCALE_LOADTEST_LABEL", default_value = "")]
    pub label: String,
    /// No progress bar even on a terminal.
    #[arg(long, env = "IOSCALE_LOADTEST_NO_PROGRESS")]
    pub no_progress: bool,
}

/// Faults injected while `fanout` sends, each at a time counted from the first send. Every
/// client whose connection is lost reconnects (socket.io-client's backoff: `--reconnect-*`),
/// trying its own URL first and then the next ones, as a load balancer would.
#[derive(Debug, Clone, Default, Args, Serialize)]
pub struct FaultArgs {
    /// SIGKILL one server at this time (`--kill-node-pid`, or run `--kill-node-cmd`); several
    /// times, comma-separated, with `--kill-node-cmd` (a soak: kill and restart a node every
    /// few minutes).
    #[arg(long, env = "IOSCALE_LOADTEST_KILL_NODE_AT_S", value_delimiter = ',')]
    pub kill_node_at_s: Vec<f64>,
    /// The process `--kill-node-at-s` SIGKILLs.
    #[arg(long, env = "IOSCALE_LOADTEST_KILL_NODE_PID")]
    pub kill_node_pid: Option<i32>,
    /// Instead of a pid: a shell command (`sh -c`) that kills the node (e.g. through a
    /// container runtime), and may start it again. It runs with `IOSCALE_LOADTEST_FAULT_INDEX`
    /// set to which kill this is (0, 1, ...).
    #[arg(long, env = "IOSCALE_LOADTEST_KILL_NODE_CMD")]
    pub kill_node_cmd: Option<String>,
    /// Restart Redis at this time (or these times, comma-separated), by running
    /// `--restart-redis-cmd`.
    #[arg(
        long,
        env = "IOSCALE_LOADTEST_RESTART_REDIS_AT_S",
        value_delimiter = ','
    )]
    pub restart_redis_at_s: Vec<f64>,
    /// The shell command (`sh -c`) that restarts Redis (bench.sh: SIGKILL, then the same
    /// server on the same port and files).
    #[arg(long, env = "IOSCALE_LOADTEST_RESTART_REDIS_CMD")]
    pub restart_redis_cmd: Option<String>,
    /// A share of the subscribers lose their TCP connection at this time: reset, without a
    /// WebSocket close or a Socket.IO disconnect (a network failure, as the server sees it).
    /// Several times, comma-separated: each time another share of them.
    #[arg(
        long,
        env = "IOSCALE_LOADTEST_DROP_CLIENTS_AT_S",
        value_delimiter = ','
    )]
    pub drop_clients_at_s: Vec<f64>,
    /// The share of subscribers `--drop-clients-at-s` cuts (0 to 1), spread evenly.
    #[arg(long, env = "IOSCALE_LOADTEST_DROP_SHARE", default_value_t = 0.1)]
    pub drop_share: f64,
    /// First reconnection delay (socket.io-client's `reconnectionDelay`), randomized by ±50 %.
    #[arg(
        long,
        env = "IOSCALE_LOADTEST_RECONNECT_DELAY_MS",
        default_value_t = 1000
    )]
    pub reconnect_delay_ms: u64,
    /// Longest reconnection delay (`reconnectionDelayMax`); the delay doubles up to it.
    #[arg(
        long,
        env = "IOSCALE_LOADTEST_RECONNECT_DELAY_MAX_MS",
        default_value_t = 5000
    )]
    pub reconnect_delay_max_ms: u64,
}

impl FaultArgs {
    /// Whether any fault is asked for (clients then reconnect).
    pub fn any(&self) -> bool {
        !self.kill_node_at_s.is_empty()
            || !self.restart_redis_at_s.is_empty()
            || !self.drop_clients_at_s.is_empty()
    }
}

/// The send schedule of fanout, chat and rpc.
#[derive(Debug, Clone, Args, Serialize)]
pub struct RateArgs {
    /// Total sends per second over all senders, on a fixed schedule (open loop); with `--ramp`
    /// the starting rate.
    #[arg(long, env = "IOSCALE_LOADTEST_RATE_PER_S", default_value_t = 100.0)]
    pub rate_per_s: f64,
    /// How long to send (with `--ramp`: the longest the ramp may run; default 10 s, 600 s
    /// with `--ramp`).
    #[arg(long, env = "IOSCALE_LOADTEST_DURATION_S")]
    pub duration_s: Option<f64>,
    /// Send at the starting rate this long before the first judged step (warm-up: reported,
    /// never judged as held or failed).
    #[arg(long, env = "IOSCALE_LOADTEST_WARMUP_S", default_value_t = 0.0)]
    pub warmup_s: f64,
    /// How long to wait after the last send for deliveries in flight.
    #[arg(long, env = "IOSCALE_LOADTEST_DRAIN_MS", default_value_t = 2000)]
    pub drain_ms: u64,
    /// Size of each message's data (JSON, padded; the stamp takes about 50 bytes).
    #[arg(long, env = "IOSCALE_LOADTEST_PAYLOAD_BYTES", default_value_t = 100)]
    pub payload_bytes: usize,
    /// Raise the rate step by step until a step loses a message or its p99 exceeds the bound;
    /// report the highest rate held.
    #[arg(long, env = "IOSCALE_LOADTEST_RAMP")]
    pub ramp: bool,
    /// Rate factor between steps.
    #[arg(long, env = "IOSCALE_LOADTEST_RAMP_FACTOR", default_value_t = 1.5)]
    pub ramp_factor: f64,
    /// Length of a step.
    #[arg(long, env = "IOSCALE_LOADTEST_RAMP_STEP_S", default_value_t = 5.0)]
    pub ramp_step_s: f64,
    /// A step passes while its p99 latency stays at or under this.
    #[arg(long, env = "IOSCALE_LOADTEST_RAMP_P99_MS", default_value_t = 50.0)]
    pub ramp_p99_ms: f64,
    /// How long after a step ends its messages may still arrive before the step is judged
    /// (a message later than this counts against the step as lost).
    #[arg(long, env = "IOSCALE_LOADTEST_RAMP_GRACE_MS", default_value_t = 1000)]
    pub ramp_grace_ms: u64,
    /// The ramp stops after the last step at or under this rate.
    #[arg(
        long,
        env = "IOSCALE_LOADTEST_RAMP_MAX_RATE_PER_S",
        default_value_t = 1_000_000.0
    )]
    pub ramp_max_rate_per_s: f64,
}

/// `fanout`
#[derive(Debug, Clone, Args, Serialize)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub rate: RateArgs,
    /// Subscribing clients (spread over the URLs).
    #[arg(long, env = "IOSCALE_LOADTEST_SUBSCRIBERS", default_value_t = 300)]
    pub subscribers: usize,
    /// Subscribers per room (subscriber `i` joins room `i / room_size`, so every room spans
    /// all URLs).
    #[arg(long, env = "IOSCALE_LOADTEST_ROOM_SIZE", default_value_t = 300)]
    pub room_size: usize,
    /// Publishing clients (not room members); publisher `j`'s `k`-th message goes to room
    /// `(j + k) mod rooms`.
    #[arg(long, env = "IOSCALE_LOADTEST_PUBLISHERS", default_value_t = 3)]
    pub publishers: usize,
    #[command(flatten)]
    pub faults: FaultArgs,
}

/// `rooms`: `--rooms` × `--room-size` members on `/pubsub`, each on a URL drawn at random
/// (seeded), and `--publishers` senders (not members) round robin over the URLs, each publish
/// to a uniformly random room (seeded). Both protocols (`socketio`, `raw`).
#[derive(Debug, Clone, Args, Serialize)]
pub struct RoomsArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub rate: RateArgs,
    /// Rooms (named `r-0000`, `r-0001`, …).
    #[arg(long, env = "IOSCALE_LOADTEST_ROOMS", default_value_t = 2000)]
    pub rooms: usize,
    /// Members per room; each member is a client of its own on a URL drawn at random.
    #[arg(long, env = "IOSCALE_LOADTEST_ROOM_SIZE", default_value_t = 3)]
    pub room_size: usize,
    /// Publishing clients (not room members), spread round robin over the URLs.
    #[arg(long, env = "IOSCALE_LOADTEST_PUBLISHERS", default_value_t = 6)]
    pub publishers: usize,
    /// Seed of the placement and of the rooms published to: the same seed, the same run.
    #[arg(long, env = "IOSCALE_LOADTEST_SEED", default_value_t = 1)]
    pub seed: u64,
    /// The nodes' Prometheus `/metrics` URLs (ioscale nodes only), comma-separated: read just
    /// before the sending window and after the drain for the adapter messages received.
    #[arg(
        long,
        env = "IOSCALE_LOADTEST_NODE_METRICS_URLS",
        value_delimiter = ','
    )]
    pub node_metrics_urls: Vec<String>,
    /// Redis servers (`redis://host:port`; every master of a Redis Cluster), comma-separated:
    /// `INFO stats` read around the window for the bytes Redis sent.
    #[arg(long, env = "IOSCALE_LOADTEST_REDIS_URLS", value_delimiter = ',')]
    pub redis_urls: Vec<String>,
}

/// `chat`
#[derive(Debug, Clone, Args, Serialize)]
pub struct ChatArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub rate: RateArgs,
    /// Clients on `/`; every one receives every message.
    #[arg(long, env = "IOSCALE_LOADTEST_CLIENTS", default_value_t = 300)]
    pub clients: usize,
    /// Clients that also send (the first ones).
    #[arg(long, env = "IOSCALE_LOADTEST_SENDERS", default_value_t = 3)]
    pub senders: usize,
}

/// The acknowledged event the rpc scenario sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RpcEvent {
    /// `join` a private room: a local round trip.
    Join,
    /// `publish` to a private room no one is in: acked once handed to the cluster.
    Publish,
}

/// `rpc`
#[derive(Debug, Clone, Args, Serialize)]
pub struct RpcArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub rate: RateArgs,
    /// Clients sending requests (the total rate is spread over them).
    #[arg(long, env = "IOSCALE_LOADTEST_CLIENTS", default_value_t = 100)]
    pub clients: usize,
    /// Which acknowledged event.
    #[arg(long, env = "IOSCALE_LOADTEST_RPC_EVENT", value_enum, default_value_t = RpcEvent::Join)]
    pub event: RpcEvent,
}

/// `connect`
#[derive(Debug, Clone, Args, Serialize)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub common: Common,
    /// Connections to open (at `--connect-rate-per-s`, open loop).
    #[arg(long, env = "IOSCALE_LOADTEST_CLIENTS", default_value_t = 1000)]
    pub clients: usize,
    /// Keep the connections open this long after the last attempt (the RSS per connection
    /// of watched processes is measured at the end).
    #[arg(long, env = "IOSCALE_LOADTEST_HOLD_S", default_value_t = 2.0)]
    pub hold_s: f64,
    /// Namespace to connect.
    #[arg(long, env = "IOSCALE_LOADTEST_NAMESPACE", default_value = "/pubsub")]
    pub namespace: String,
    #[command(flatten)]
    pub storm: StormArgs,
}

/// `connect`'s reconnect storm: a fault that cuts clients off, and their way back.
#[derive(Debug, Clone, Args, Serialize)]
pub struct StormArgs {
    /// Run `--fault-cmd` this many seconds into the hold (every attempt done), then wait for
    /// the clients it cut off to connect again, with socket.io-client's backoff.
    #[arg(long, env = "IOSCALE_LOADTEST_FAULT_AT_S", requires = "fault_cmd")]
    pub fault_at_s: Option<f64>,
    /// Shell command of the fault (`kill -TERM <pid>`, a restart script, ...).
    #[arg(long, env = "IOSCALE_LOADTEST_FAULT_CMD")]
    pub fault_cmd: Option<String>,
    /// How long after the fault the clients have to come back before the run ends.
    #[arg(long, env = "IOSCALE_LOADTEST_STORM_WINDOW_S", default_value_t = 30.0)]
    pub storm_window_s: f64,
    /// First reconnection delay (socket.io-client's `reconnectionDelay`), randomized by ±50 %.
    #[arg(
        long,
        env = "IOSCALE_LOADTEST_STORM_RECONNECT_DELAY_MS",
        default_value_t = 1000
    )]
    pub storm_reconnect_delay_ms: u64,
    /// Longest reconnection delay (`reconnectionDelayMax`); the delay doubles up to it.
    #[arg(
        long,
        env = "IOSCALE_LOADTEST_STORM_RECONNECT_DELAY_MAX_MS",
        default_value_t = 5000
    )]
    pub storm_reconnect_delay_max_ms: u64,
    /// Spread the WebSocket clients over this many loopback source addresses (127.77.0.1 ...):
    /// to a proxy and the servers' per-address handshake budgets they are that many hosts.
    #[arg(long, env = "IOSCALE_LOADTEST_SOURCE_ADDRS", default_value_t = 0)]
    pub source_addrs: u32,
    /// Where clients reconnect (a load balancer), in turn; default: their own URL first,
    /// then the next ones of `--urls`.
    #[arg(long, env = "IOSCALE_LOADTEST_RECONNECT_URLS", value_delimiter = ',')]
    pub reconnect_urls: Vec<String>,
}

/// `compare`
#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// Directory of `*.json` reports (several runs per label are reduced to medians).
    #[arg(long, env = "IOSCALE_LOADTEST_COMPARE_DIR")]
    pub dir: PathBuf,
    /// The label the ratios are computed for.
    #[arg(
        long,
        env = "IOSCALE_LOADTEST_COMPARE_SUBJECT",
        default_value = "ioscale"
    )]
    pub subject: String,
    /// The label of the ceiling (the raw WebSocket server).
    #[arg(
        long,
        env = "IOSCALE_LOADTEST_COMPARE_CEILING",
        default_value = "raw-ws"
    )]
    pub ceiling: String,
    /// Also write the table as markdown to this file.
    #[arg(long, env = "IOSCALE_LOADTEST_COMPARE_MARKDOWN")]
    pub markdown: Option<PathBuf>,
}
