//! The node's configuration: every flag is also an `IOSCALE_*` environment variable.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, ValueEnum};

use crate::auth::AuthConfig;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for containers).
    Json,
}

/// What a request naming an Engine.IO session must share with the one that opened it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SessionBinding {
    /// The client address (`--trust-proxy` says which): a session id learned elsewhere opens
    /// nothing from another address.
    Address,
    /// Nothing: the session id alone is the key (socketioxide's behaviour).
    Off,
}

/// A Socket.IO transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    /// WebSocket.
    Websocket,
    /// HTTP long-polling.
    Polling,
}

/// The core's configuration: the node's server, cluster, transport and limits. Applications
/// bring flags of their own; the binary's parser puts them side by side.
#[derive(Clone, Args)]
pub struct Config {
    /// Address to listen on (`127.0.0.1:0` picks a free port; the bound address is logged).
    #[arg(long, env = "IOSCALE_LISTEN", default_value = "0.0.0.0:3000")]
    pub listen: SocketAddr,
    /// Connections the kernel queues for the node before it accepts them (capped by
    /// `net.core.somaxconn`). A reconnect storm arrives faster than a busy node accepts:
    /// beyond the queue, new connections are dropped and a load balancer's connect times out.
    #[arg(
        long,
        env = "IOSCALE_LISTEN_BACKLOG_CONNECTIONS",
        default_value_t = 4096
    )]
    pub listen_backlog_connections: u32,
    /// Redis URL (`redis://`, `rediss://`, `redis-cluster://`, `redis-sentinel://`). Without
    /// it the node runs alone, in memory.
    #[arg(long, env = "IOSCALE_REDIS_URL")]
    pub redis_url: Option<String>,
    /// This node's id, unique in the cluster (generated when absent).
    #[arg(long, env = "IOSCALE_NODE_ID")]
    pub node_id: Option<String>,
    /// Bearer tokens of the server API (`/api/v1/*`), comma-separated (several let a key be
    /// rotated). With none here nor in `--api-key-file` the API is off.
    #[arg(
        long,
        env = "IOSCALE_API_KEY",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub api_key: Vec<String>,
    /// A file of server API keys, one per line (prefer it to `--api-key`: a command line is
    /// visible to other users).
    #[arg(long, env = "IOSCALE_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// A second address for `/metrics` and `/api/v1/*` (and `/healthz`, `/readyz`): when set,
    /// they are served there only, not on `--listen`, so a load balancer in front of
    /// `--listen` cannot expose them.
    #[arg(long, env = "IOSCALE_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Serve the official Socket.IO Admin UI: its page at `/admin-ui/` and the `/admin`
    /// namespace it connects to, which sees and acts on every node's sockets. With
    /// `--admin-listen`, both are served there only.
    #[arg(long, env = "IOSCALE_ADMIN_UI")]
    pub admin_ui: bool,
    /// The Admin UI's login name.
    #[arg(long, env = "IOSCALE_ADMIN_UI_USERNAME", default_value = "admin")]
    pub admin_ui_username: String,
    /// The bcrypt hash of the Admin UI's password (`$2b$…`: e.g. `htpasswd -nbBC 12 "" PASSWORD
    /// | cut -d: -f2`). Without it the UI opens without a login.
    #[arg(long, env = "IOSCALE_ADMIN_UI_PASSWORD_BCRYPT", hide_env_values = true)]
    pub admin_ui_password_bcrypt: Option<String>,
    /// A file holding the Admin UI's password itself (a generated secret, as Compose and Helm
    /// write them): the node keeps only its bcrypt hash, made at start. Instead of
    /// `--admin-ui-password-bcrypt`.
    #[arg(long, env = "IOSCALE_ADMIN_UI_PASSWORD_FILE")]
    pub admin_ui_password_file: Option<PathBuf>,
    /// Serve the Admin UI without a login (anyone reaching it can see every socket and
    /// disconnect them): only behind `--admin-listen` on a private network, or for a demo.
    /// Without it, `--admin-ui` needs `--admin-ui-password-bcrypt`.
    #[arg(long, env = "IOSCALE_ADMIN_UI_NO_LOGIN")]
    pub admin_ui_no_login: bool,
    /// Where `@socket.io/admin-ui` and `@mdi/font` are installed (a directory holding
    /// `node_modules`); by default `node/client`, found as the browser client is.
    #[arg(long, env = "IOSCALE_ADMIN_UI_DIR")]
    pub admin_ui_dir: Option<PathBuf>,
    /// Most sockets one node lists to the Admin UI when it opens (the page is for looking
    /// around, not for a census of every connection).
    #[arg(long, env = "IOSCALE_ADMIN_UI_MAX_SOCKETS", default_value_t = 1000)]
    pub admin_ui_max_sockets: usize,
    /// Most members a room's presence holds; a join beyond is refused (`conflict`).
    #[arg(long, env = "IOSCALE_PRESENCE_MAX_MEMBERS", default_value_t = 10_000)]
    pub presence_max_members: u64,
    /// Prefix of every Redis channel and key.
    #[arg(long, env = "IOSCALE_REDIS_PREFIX", default_value = "ioscale")]
    pub redis_prefix: String,
    /// Interval between heartbeats; a node silent for two intervals is dead.
    #[arg(long, env = "IOSCALE_HEARTBEAT_INTERVAL_MS", default_value_t = 1000)]
    pub heartbeat_interval_ms: u64,
    /// Broadcasts to rooms travel on per-room Redis channels, which only the nodes with a
    /// member of the room subscribe to (`false`: every broadcast reaches every node). Every
    /// node of a cluster must use the same value.
    #[arg(long, env = "IOSCALE_ROOM_CHANNELS", default_value_t = true, action = clap::ArgAction::Set)]
    pub room_channels: bool,
    /// How long a room's channel stays subscribed after the room's last socket on this node
    /// left (a room that empties and fills again costs no unsubscribe and subscribe).
    #[arg(
        long,
        env = "IOSCALE_ROOM_UNSUBSCRIBE_DELAY_MS",
        default_value_t = 2000
    )]
    pub room_unsubscribe_delay_ms: u64,
    /// How long a client that lost its connection can come back, to any node, and get its
    /// session (public id, rooms, data) and every broadcast it missed; clients opt in with
    /// `ioscale_recovery` in their CONNECT auth (see `clients/`). 0: no recovery.
    #[arg(long, env = "IOSCALE_RECOVERY_WINDOW_MS", default_value_t = 120_000)]
    pub recovery_window_ms: u64,
    /// Broadcasts kept (about) in each namespace's Redis stream, for recovery and for nodes
    /// catching up after a lost subscription. 0: no history (and no recovery).
    #[arg(long, env = "IOSCALE_HISTORY_MAX_LEN", default_value_t = 10_000)]
    pub history_max_len: usize,
    /// Recorded broadcasts that may wait, in order, while Redis is unreachable (beyond it they
    /// are dropped and counted as `outbox_full`).
    #[arg(long, env = "IOSCALE_OUTBOX_MAX_MESSAGES", default_value_t = 10_000)]
    pub outbox_max_messages: usize,
    /// Payload bytes that may wait while Redis is unreachable.
    #[arg(long, env = "IOSCALE_OUTBOX_MAX_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub outbox_max_bytes: usize,
    /// Longest a recorded broadcast waits for Redis (older ones are dropped and counted as
    /// `outbox_expired`).
    #[arg(long, env = "IOSCALE_OUTBOX_MAX_AGE_MS", default_value_t = 30_000)]
    pub outbox_max_age_ms: u64,
    /// How long cluster requests (fetch sockets, rooms) wait for the other nodes.
    #[arg(long, env = "IOSCALE_REQUEST_TIMEOUT_MS", default_value_t = 5000)]
    pub request_timeout_ms: u64,
    /// Default time a client has to acknowledge an event.
    #[arg(long, env = "IOSCALE_ACK_TIMEOUT_MS", default_value_t = 5000)]
    pub ack_timeout_ms: u64,
    /// Packets buffered per socket before new ones are dropped (and counted).
    #[arg(long, env = "IOSCALE_SOCKET_BUFFER_PACKETS", default_value_t = 16_384)]
    pub socket_buffer_packets: usize,
    /// Bytes a client may leave unread of what the node sent it: the kernel send buffer of
    /// each connection (capped by net.core.wmem_max). A Socket.IO connection whose buffer stays
    /// full for `--slow-consumer-grace-ms` is closed as a slow consumer (counted, logged); its
    /// client reconnects and, with session recovery, catches up.
    #[arg(long, env = "IOSCALE_SOCKET_BUFFER_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub socket_buffer_bytes: usize,
    /// How long a connection's send buffer may stay full before it is closed as a slow
    /// consumer (0: at once); spares a client that pauses through a burst.
    #[arg(long, env = "IOSCALE_SLOW_CONSUMER_GRACE_MS", default_value_t = 1000)]
    pub slow_consumer_grace_ms: u64,
    /// Bytes of `/pubsub` publishes one socket may have waiting to be handed to the cluster;
    /// a publish beyond it is refused (`ok: false`) and counted, never dropped silently.
    #[arg(long, env = "IOSCALE_PUBLISH_BUFFER_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub publish_buffer_bytes: usize,
    /// Bytes each WebSocket reads at a time, and keeps allocated while idle. Client messages
    /// are small; a larger message is read in several chunks, never refused for this.
    #[arg(long, env = "IOSCALE_WS_READ_BUFFER_BYTES", default_value_t = 1024)]
    pub ws_read_buffer_bytes: usize,
    /// Engine.IO ping interval.
    #[arg(long, env = "IOSCALE_PING_INTERVAL_MS", default_value_t = 25_000)]
    pub ping_interval_ms: u64,
    /// Engine.IO ping timeout.
    #[arg(long, env = "IOSCALE_PING_TIMEOUT_MS", default_value_t = 20_000)]
    pub ping_timeout_ms: u64,
    /// Largest client message accepted.
    #[arg(long, env = "IOSCALE_MAX_PAYLOAD_BYTES", default_value_t = 1_000_000)]
    pub max_payload_bytes: u64,
    /// How long a new Engine.IO session may go without connecting to a namespace (its first
    /// CONNECT answered) before the node closes it: a client that opens sessions and never
    /// uses them does not hold them for long.
    #[arg(long, env = "IOSCALE_CONNECT_TIMEOUT_MS", default_value_t = 45_000)]
    pub connect_timeout_ms: u64,
    /// Transports offered to clients.
    #[arg(
        long,
        env = "IOSCALE_TRANSPORTS",
        value_delimiter = ',',
        default_value = "websocket,polling"
    )]
    pub transports: Vec<Transport>,
    /// Time allowed for a graceful shutdown before the node exits anyway.
    #[arg(long, env = "IOSCALE_SHUTDOWN_TIMEOUT_MS", default_value_t = 5000)]
    pub shutdown_timeout_ms: u64,
    /// After SIGTERM, how long the node keeps serving its sockets while not ready and
    /// refusing new handshakes, before the shutdown proper: time for a load balancer (or
    /// Kubernetes endpoints) to stop sending it clients. Added to `--shutdown-timeout-ms`.
    #[arg(long, env = "IOSCALE_SHUTDOWN_DRAIN_DELAY_MS", default_value_t = 0)]
    pub shutdown_drain_delay_ms: u64,
    /// How long startup waits for Redis before starting not ready.
    #[arg(long, env = "IOSCALE_REDIS_CONNECT_WAIT_MS", default_value_t = 5000)]
    pub redis_connect_wait_ms: u64,
    /// How long Redis has to answer a command, and the PING each Redis connection gets about
    /// every second: past it a connection counts as stalled (Redis stopped answering with
    /// its sockets open), the node turns not ready and reconnects until Redis answers again.
    #[arg(long, env = "IOSCALE_REDIS_TIMEOUT_MS", default_value_t = 3000)]
    pub redis_timeout_ms: u64,
    /// Threads that run the node's tasks. Absent: one per core the process may use. Fewer
    /// threads than cores pay off when several nodes share a host: a socket's writer woken on
    /// the thread that broadcast needs no cross-thread wake-up.
    #[arg(long, env = "IOSCALE_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// Most sockets (namespace connections) this node holds; a handshake beyond it is refused
    /// (`busy: …`) and counted.
    #[arg(long, env = "IOSCALE_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,
    /// Events a client may send per second on one socket, sustained; beyond it (and the
    /// burst) an event is refused with `{ok: false, code: "busy"}`.
    #[arg(long, env = "IOSCALE_EVENT_RATE_PER_S", default_value_t = 10_000)]
    pub event_rate_per_s: u32,
    /// New Engine.IO sessions one client address may open per second, sustained; beyond it
    /// (and the burst) a handshake is refused with HTTP 429 before any session exists. Behind
    /// a load balancer every client has its address unless `--trust-proxy`: set it there.
    #[arg(
        long,
        env = "IOSCALE_HANDSHAKES_PER_ADDRESS_PER_S",
        default_value_t = 50
    )]
    pub handshakes_per_address_per_s: u32,
    /// New sessions one client address may open at once (many users behind one NAT share it).
    #[arg(
        long,
        env = "IOSCALE_HANDSHAKE_BURST_PER_ADDRESS",
        default_value_t = 500
    )]
    pub handshake_burst_per_address: u32,
    /// The node sits behind a proxy it trusts: a client's address is the last
    /// `X-Forwarded-For` entry (the one that proxy appended), not the TCP peer's. Without a
    /// proxy in front, leave it off: clients could then name any address.
    #[arg(long, env = "IOSCALE_TRUST_PROXY")]
    pub trust_proxy: bool,
    /// A polling request or WebSocket upgrade naming a session must come from the address that
    /// opened it (README, Security); `off` lets the session id alone act as the client.
    #[arg(
        long,
        env = "IOSCALE_SESSION_BINDING",
        value_enum,
        default_value = "address"
    )]
    pub session_binding: SessionBinding,
    /// Events a client may send at once on one socket (a burst of 20,000 publishes passes).
    #[arg(long, env = "IOSCALE_EVENT_BURST", default_value_t = 25_000)]
    pub event_burst: u32,
    /// Refused events in a row after which the socket is disconnected.
    #[arg(
        long,
        env = "IOSCALE_EVENT_REFUSALS_BEFORE_DISCONNECT",
        default_value_t = 1_000
    )]
    pub event_refusals_before_disconnect: u32,
    /// Web pages (`scheme://host[:port]`, comma-separated) allowed to open Socket.IO
    /// connections from a browser; `*`: any page. Requests without `Origin` (not browsers)
    /// are not concerned.
    #[arg(
        long,
        env = "IOSCALE_ALLOWED_ORIGINS",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub allowed_origins: Vec<String>,
    /// Connection auth (see `auth`).
    #[command(flatten)]
    pub auth: AuthConfig,
    /// Log format.
    #[arg(long, env = "IOSCALE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// The socket.io browser client served at `/socket.io/socket.io.js` (socket.io-client's
    /// `dist/socket.io.min.js`). Default: `node/client/node_modules/…` of the source tree, found
    /// next to the executable or the working directory (`npm ci --prefix node/client`).
    #[arg(long, env = "IOSCALE_CLIENT_SCRIPT")]
    pub client_script_path: Option<PathBuf>,
}

/// Largest `--publish-buffer-bytes`: more per socket is a typo, not a plan.
pub const MAX_PUBLISH_BUFFER_BYTES: usize = 1 << 30;

/// The smallest `--socket-buffer-bytes`: below it a client on a real network would be a slow
/// consumer for the bytes merely in flight.
pub const MIN_SOCKET_BUFFER_BYTES: usize = 64 * 1024;

pub use crate::config_error::ConfigError;

impl Config {
    /// Checks values clap cannot check alone.
    ///
    /// # Errors
    /// The first invalid value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::new(m));
        if self.heartbeat_interval_ms == 0 || self.request_timeout_ms == 0 {
            return bad("--heartbeat-interval-ms and --request-timeout-ms must be positive");
        }
        if self.transports.is_empty() {
            return bad("--transports needs at least one transport");
        }
        if let Some(id) = &self.node_id
            && (id.is_empty() || id.contains('#') || id.len() > 128)
        {
            return bad("--node-id must be 1-128 characters without '#'");
        }
        if self.publish_buffer_bytes == 0 || self.publish_buffer_bytes > MAX_PUBLISH_BUFFER_BYTES {
            return bad("--publish-buffer-bytes must be 1-1073741824 (1 GiB)");
        }
        if !(MIN_SOCKET_BUFFER_BYTES..=1 << 30).contains(&self.socket_buffer_bytes)
            || (self.socket_buffer_bytes as u64) < 2 * self.max_payload_bytes
        {
            return bad(
                "--socket-buffer-bytes must be 65536-1073741824 and at least twice \
                 --max-payload-bytes (one message must never fill it alone)",
            );
        }
        if self.slow_consumer_grace_ms > 600_000 {
            return bad("--slow-consumer-grace-ms must be at most 600000 (10 minutes)");
        }
        if !(256..=1 << 20).contains(&self.ws_read_buffer_bytes) {
            return bad("--ws-read-buffer-bytes must be 256-1048576");
        }
        if matches!(self.worker_threads, Some(n) if n == 0 || n > 1024) {
            return bad("--worker-threads must be 1-1024");
        }
        if self.handshakes_per_address_per_s == 0 || self.handshake_burst_per_address == 0 {
            return bad("the handshake rate and burst per address must be positive");
        }
        if self.event_rate_per_s == 0
            || self.event_burst == 0
            || self.event_refusals_before_disconnect == 0
        {
            return bad(
                "--event-rate-per-s, --event-burst and --event-refusals-before-disconnect must be positive",
            );
        }
        if self.max_connections == 0 {
            return bad("--max-connections must be positive");
        }
        if self.connect_timeout_ms == 0 {
            return bad("--connect-timeout-ms must be positive");
        }
        // Empty API keys are refused where the keys are read (`ApiKeys::load`).
        if self.admin_listen == Some(self.listen) && self.listen.port() != 0 {
            return bad("--admin-listen must differ from --listen");
        }
        Ok(())
    }

    /// Each socket's event budget.
    pub fn event_limits(&self) -> crate::rate::Limits {
        crate::rate::Limits {
            rate_per_s: f64::from(self.event_rate_per_s),
            burst: f64::from(self.event_burst),
            refusals_before_disconnect: self.event_refusals_before_disconnect,
        }
    }

    /// Milliseconds to a duration.
    pub fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }
}

/// Hides the password of a Redis URL.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field(
                "listen_backlog_connections",
                &self.listen_backlog_connections,
            )
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("node_id", &self.node_id)
            .field("api_keys", &self.api_key.len())
            .field("api_key_file", &self.api_key_file)
            .field("admin_listen", &self.admin_listen)
            .field("admin_ui", &self.admin_ui)
            .field("admin_ui_username", &self.admin_ui_username)
            .field(
                "admin_ui_password_bcrypt",
                &self.admin_ui_password_bcrypt.as_ref().map(|_| "[redacted]"),
            )
            .field("admin_ui_password_file", &self.admin_ui_password_file)
            .field("admin_ui_no_login", &self.admin_ui_no_login)
            .field("admin_ui_dir", &self.admin_ui_dir)
            .field("admin_ui_max_sockets", &self.admin_ui_max_sockets)
            .field("presence_max_members", &self.presence_max_members)
            .field("redis_prefix", &self.redis_prefix)
            .field("heartbeat_interval_ms", &self.heartbeat_interval_ms)
            .field("redis_timeout_ms", &self.redis_timeout_ms)
            .field("room_channels", &self.room_channels)
            .field("room_unsubscribe_delay_ms", &self.room_unsubscribe_delay_ms)
            .field("recovery_window_ms", &self.recovery_window_ms)
            .field("history_max_len", &self.history_max_len)
            .field("outbox_max_messages", &self.outbox_max_messages)
            .field("outbox_max_bytes", &self.outbox_max_bytes)
            .field("outbox_max_age_ms", &self.outbox_max_age_ms)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("ack_timeout_ms", &self.ack_timeout_ms)
            .field("socket_buffer_packets", &self.socket_buffer_packets)
            .field("socket_buffer_bytes", &self.socket_buffer_bytes)
            .field("slow_consumer_grace_ms", &self.slow_consumer_grace_ms)
            .field("publish_buffer_bytes", &self.publish_buffer_bytes)
            .field("ws_read_buffer_bytes", &self.ws_read_buffer_bytes)
            .field("ping_interval_ms", &self.ping_interval_ms)
            .field("ping_timeout_ms", &self.ping_timeout_ms)
            .field("max_payload_bytes", &self.max_payload_bytes)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("transports", &self.transports)
            .field("shutdown_timeout_ms", &self.shutdown_timeout_ms)
            .field("shutdown_drain_delay_ms", &self.shutdown_drain_delay_ms)
            .field(
                "handshakes_per_address_per_s",
                &self.handshakes_per_address_per_s,
            )
            .field(
                "handshake_burst_per_address",
                &self.handshake_burst_per_address,
            )
            .field("trust_proxy", &self.trust_proxy)
            .field("session_binding", &self.session_binding)
            .field("worker_threads", &self.worker_threads)
            .field("max_connections", &self.max_connections)
            .field("event_rate_per_s", &self.event_rate_per_s)
            .field("event_burst", &self.event_burst)
            .field(
                "event_refusals_before_disconnect",
                &self.event_refusals_before_disconnect,
            )
            .field("allowed_origins", &self.allowed_origins)
            .field("auth", &self.auth)
            .field("log_format", &self.log_format)
            .field("client_script_path", &self.client_script_path)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// The core's flags alone, parsed as the binary would.
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    impl Config {
        pub(crate) fn parse_from<'a>(args: impl IntoIterator<Item = &'a str>) -> Config {
            Cli::parse_from(args).config
        }
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact_url("redis://:secret@h:1"), "redis://***@h:1");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
    }

    #[test]
    fn defaults_validate() {
        let c = Config::parse_from(["ioscale-node"]);
        c.validate().unwrap();
        assert_eq!(c.listen.port(), 3000);
        assert_eq!(c.transports, vec![Transport::Websocket, Transport::Polling]);
        let c = Config::parse_from(["ioscale-node", "--node-id", "a#b"]);
        assert!(c.validate().is_err());
        let c = Config::parse_from(["ioscale-node", "--worker-threads", "0"]);
        assert!(c.validate().is_err());
        let c = Config::parse_from(["ioscale-node", "--worker-threads", "1"]);
        c.validate().unwrap();
        assert_eq!(
            Config::parse_from(["ioscale-node"]).connect_timeout_ms,
            45_000
        );
        let c = Config::parse_from(["ioscale-node", "--connect-timeout-ms", "0"]);
        assert!(c.validate().is_err());
        assert_eq!(
            Config::parse_from(["ioscale-node"]).publish_buffer_bytes,
            8_388_608
        );
        for bad in ["0", "1073741825"] {
            let c = Config::parse_from(["ioscale-node", "--publish-buffer-bytes", bad]);
            assert!(c.validate().is_err(), "--publish-buffer-bytes {bad}");
        }
        let c = Config::parse_from(["ioscale-node", "--publish-buffer-bytes", "65536"]);
        c.validate().unwrap();
        assert_eq!(
            Config::parse_from(["ioscale-node"]).ws_read_buffer_bytes,
            1024
        );
        for bad in ["0", "255", "1048577"] {
            let c = Config::parse_from(["ioscale-node", "--ws-read-buffer-bytes", bad]);
            assert!(c.validate().is_err(), "--ws-read-buffer-bytes {bad}");
        }
    }
}
