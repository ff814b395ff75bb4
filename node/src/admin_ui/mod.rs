//! The server side of the official Socket.IO Admin UI (`@socket.io/admin-ui`), for the whole
//! cluster: the `/admin` namespace its page connects to, on any node, sees every node's
//! sockets, rooms and stats and acts on any of them (`--admin-ui`).
//!
//! It costs nothing while no UI is open. A node holding an admin socket says so to the others
//! every 2 s (a server event, `watch`); a node told so in the last 6 s sends its stats and its
//! sockets' events to the admin sockets' room (a room channel: only the nodes holding an admin
//! socket receive them). Otherwise no node sends anything.
//!
//! The protocol, as read from the UI and its reference server, is in
//! `docs/admin-ui-protocol.md`; this module follows it except where that note says the
//! reference misbehaves (the session id is sent after CONNECT, when the page listens).

pub mod auth;
mod commands;
pub mod page;
mod socket_view;
mod stats;

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde::Serialize;
use serde_json::{Value, json};
use socketioxide::{
    SocketIo,
    extract::{SocketRef, State, TryData},
    handler::ConnectHandler as _,
    socket::DisconnectReason,
};

use ioscale_adapter::Cluster;

use crate::observe::SocketObserver;
use crate::{
    app::{Adapter, App},
    edge::connections::Conn,
    joins,
};
pub use auth::{Credentials, Sessions};
pub use socket_view::Issued;
use socket_view::now_ms;

/// The namespace the UI connects to (its default).
pub const NAMESPACE: &str = "/admin";
/// The room of every admin socket, which the nodes' stats and events are sent to.
const WATCHERS_ROOM: &str = "ioscale:admin-ui";
/// Prefix of the server events the nodes exchange for the UI.
pub const SERVER_EVENT_PREFIX: &str = "ioscale:admin-ui:";
/// How often a node sends its stats, as the reference server does.
const STATS_EVERY: Duration = Duration::from_secs(2);
/// How long a node keeps sending after it last heard that a UI watches.
const WATCH_LEASE: Duration = Duration::from_secs(6);
/// What the cluster supports, in the order the reference server lists them.
const FEATURES: [&str; 9] = [
    "EMIT",
    "JOIN",
    "LEAVE",
    "DISCONNECT",
    "MJOIN",
    "MLEAVE",
    "MDISCONNECT",
    "AGGREGATED_EVENTS",
    "ALL_EVENTS",
];

/// The Admin UI's state on one node.
pub struct AdminUi {
    cluster: Cluster,
    trust_proxy: bool,
    request_timeout: Duration,
    credentials: Option<Credentials>,
    sessions: Sessions,
    /// The node's namespaces, this one included, in the order stats list them.
    namespaces: Vec<String>,
    max_sockets: usize,
    /// Whether `/admin` is served only on the `--admin-listen` listener.
    admin_listener_only: bool,
    io: OnceLock<SocketIo<Adapter>>,
    started: Instant,
    /// Until when (ms since the epoch) a UI watches somewhere in the cluster.
    watched_until_ms: AtomicU64,
    /// Admin sockets on this node.
    local: AtomicUsize,
    aggregated: stats::Aggregated,
}

impl std::fmt::Debug for AdminUi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminUi")
            .field("credentials", &self.credentials)
            .field("sessions", &self.sessions)
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl AdminUi {
    /// The Admin UI of a node serving `namespaces`; `credentials` `None`: no login asked.
    pub fn new(
        app: &App,
        credentials: Option<Credentials>,
        namespaces: impl IntoIterator<Item = String>,
    ) -> Self {
        let sessions = match app.cluster.redis_client() {
            Some(client) => Sessions::Redis {
                client,
                prefix: app.config.redis_prefix.clone(),
            },
            None => Sessions::Local(std::sync::Mutex::default()),
        };
        let mut namespaces: Vec<String> = namespaces.into_iter().collect();
        namespaces.push(NAMESPACE.to_owned());
        namespaces.sort_unstable();
        namespaces.dedup();
        Self {
            cluster: app.cluster.clone(),
            trust_proxy: app.config.trust_proxy,
            request_timeout: crate::config::Config::ms(app.config.request_timeout_ms),
            credentials,
            sessions,
            namespaces,
            max_sockets: app.config.admin_ui_max_sockets,
            admin_listener_only: app.config.admin_listen.is_some(),
            io: OnceLock::new(),
            started: Instant::now(),
            watched_until_ms: AtomicU64::new(0),
            local: AtomicUsize::new(0),
            aggregated: stats::Aggregated::default(),
        }
    }

    /// Whether a UI watches somewhere in the cluster.
    pub fn watched(&self) -> bool {
        self.local.load(Ordering::Relaxed) > 0
            || self.watched_until_ms.load(Ordering::Relaxed) > now_ms()
    }

    fn lease(&self) {
        let until = now_ms() + u64::try_from(WATCH_LEASE.as_millis()).unwrap_or(0);
        self.watched_until_ms.fetch_max(until, Ordering::Relaxed);
    }

    /// Sends `event` with `args` (a tuple: several arguments) to every admin socket of the
    /// cluster, in the background.
    fn send<T: Serialize + Send + Sync + 'static>(&self, event: &'static str, args: T) {
        let Some(ops) = self.io.get().and_then(|io| io.of(NAMESPACE)) else {
            return;
        };
        tokio::spawn(async move {
            if let Err(e) = ops.to(WATCHERS_ROOM).emit(event, &args).await {
                tracing::debug!(error = %e, event, "admin UI event not sent");
            }
        });
    }
}

impl SocketObserver for AdminUi {
    fn connected(&self, s: &SocketRef<Adapter>) {
        s.extensions.insert(Issued(now_ms()));
        self.aggregated.count("rawConnection", "");
        if self.watched() {
            let ts = socket_view::iso(now_ms());
            let view = socket_view::of(s, &self.cluster, self.trust_proxy);
            self.send("socket_connected", (view, ts));
        }
    }

    fn disconnected(&self, s: &SocketRef<Adapter>, reason: DisconnectReason) {
        let reason = node_reason(reason);
        self.aggregated.count("rawDisconnection", reason);
        if self.watched() {
            let id = crate::session::public_id::of(s);
            let ts = socket_view::iso(now_ms());
            self.send("socket_disconnected", (s.ns().to_owned(), id, reason, ts));
        }
    }

    fn rooms_changed(&self, s: &SocketRef<Adapter>, rooms: &[String], joined: bool) {
        if !self.watched() || rooms.is_empty() {
            return;
        }
        let id = crate::session::public_id::of(s);
        let ts = socket_view::iso(now_ms());
        let event = if joined { "room_joined" } else { "room_left" };
        for room in rooms {
            self.send(
                event,
                (s.ns().to_owned(), room.clone(), id.clone(), ts.clone()),
            );
        }
    }
}

impl AdminUi {
    /// This node's sockets for the UI, at most `--admin-ui-max-sockets`.
    fn local_sockets(&self) -> Vec<Value> {
        let Some(io) = self.io.get() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for name in &self.namespaces {
            for s in io.of(name).map(|o| o.sockets()).unwrap_or_default() {
                if out.len() >= self.max_sockets {
                    tracing::warn!(
                        max = self.max_sockets,
                        "admin UI: more sockets than --admin-ui-max-sockets, the list is cut"
                    );
                    return out;
                }
                out.push(socket_view::of(&s, &self.cluster, self.trust_proxy));
            }
        }
        out
    }

    /// Answers the other nodes' server events for the UI.
    pub fn on_server_event(&self, event: &str) -> Value {
        match event.strip_prefix(SERVER_EVENT_PREFIX) {
            Some("watch") => {
                self.lease();
                Value::Null
            }
            Some("sockets") => Value::Array(self.local_sockets()),
            _ => Value::Null,
        }
    }

    /// Every socket of the cluster: this node's and each other node's answer.
    async fn all_sockets(&self) -> Vec<Value> {
        let mut all = self.local_sockets();
        let Some(handle) = self.cluster.namespace(NAMESPACE) else {
            return all;
        };
        let timeout = self.request_timeout;
        let event = format!("{SERVER_EVENT_PREFIX}sockets");
        match handle
            .server_side_emit(event, Value::Null, Some(timeout))
            .await
        {
            Ok(report) => {
                if !report.missing_nodes.is_empty() {
                    tracing::warn!(missing = ?report.missing_nodes, "admin UI: nodes did not list their sockets");
                }
                for (_, sockets) in report.responses {
                    if let Value::Array(s) = sockets {
                        all.extend(s);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "admin UI: the other nodes' sockets not listed"),
        }
        all
    }

    /// Tells the other nodes a UI watches (from a node holding an admin socket).
    async fn announce(&self) {
        self.lease();
        if let Some(handle) = self.cluster.namespace(NAMESPACE) {
            let event = format!("{SERVER_EVENT_PREFIX}watch");
            if let Err(e) = handle.server_side_emit(event, Value::Null, None).await {
                tracing::debug!(error = %e, "admin UI: watch not announced");
            }
        }
    }
}

/// With `--admin-ui`, makes the node's Admin UI (serving the namespaces of `setup` and its
/// own), before the namespaces are served: their sockets report to it (`app.observer`), and
/// its handlers find it in the sockets' state.
///
/// # Errors
/// No login configured (see [`credentials`]), or a bad one.
pub fn install(
    config: &crate::config::Config,
    app: &Arc<App>,
    setup: &mut crate::application::Setup<'_>,
) -> anyhow::Result<Option<Arc<AdminUi>>> {
    if !config.admin_ui {
        return Ok(None);
    }
    let credentials = credentials(config)?;
    let ui = Arc::new(AdminUi::new(app, credentials, setup.namespace_names()));
    setup.state(ui.clone());
    let observer: Arc<dyn SocketObserver> = ui.clone();
    let _ = app.observer.set(observer);
    Ok(Some(ui))
}

/// The login `--admin-ui` asks for: a bcrypt hash, or a password file hashed here; none only
/// when `--admin-ui-no-login` says so.
///
/// # Errors
/// No login and no `--admin-ui-no-login`, two of them, an unreadable or empty password file,
/// or a hash that is not one.
pub fn credentials(config: &crate::config::Config) -> anyhow::Result<Option<Credentials>> {
    let user = &config.admin_ui_username;
    match (
        &config.admin_ui_password_bcrypt,
        &config.admin_ui_password_file,
        config.admin_ui_no_login,
    ) {
        (Some(hash), None, false) => Ok(Some(Credentials::new(user, hash)?)),
        (None, Some(file), false) => {
            let text = std::fs::read_to_string(file).map_err(|e| {
                anyhow::anyhow!("reading --admin-ui-password-file {}: {e}", file.display())
            })?;
            let password = text.trim_end_matches(['\n', '\r']);
            if password.is_empty() {
                anyhow::bail!("--admin-ui-password-file {} is empty", file.display());
            }
            // Cost 10: about 50 ms once at start; each login check costs the same.
            let hash = bcrypt::hash(password, 10)?;
            Ok(Some(Credentials::new(user, &hash)?))
        }
        (None, None, true) => Ok(None),
        (None, None, false) => anyhow::bail!(
            "--admin-ui needs --admin-ui-password-bcrypt or --admin-ui-password-file (anyone \
             reaching the UI could see and disconnect every socket); --admin-ui-no-login serves \
             it without a login"
        ),
        _ => anyhow::bail!(
            "give one of --admin-ui-password-bcrypt, --admin-ui-password-file and \
             --admin-ui-no-login"
        ),
    }
}

/// Serves the Admin UI's namespace on `io` and starts this node's stats.
///
/// # Errors
/// The namespace could not be created.
pub async fn serve(ui: Arc<AdminUi>, io: &SocketIo<Adapter>, app: &Arc<App>) -> anyhow::Result<()> {
    let _ = ui.io.set(io.clone());
    if ui.credentials.is_none() {
        tracing::warn!("the Admin UI is served without a login (--admin-ui-no-login)");
    }
    let connect = |s: SocketRef<Adapter>,
                   State(app): State<Arc<App>>,
                   State(ui): State<Arc<AdminUi>>| async move {
        connected(&ui, &s, &app).await;
    };
    io.ns(NAMESPACE, connect.with(admit))
        .await
        .map_err(|e| anyhow::anyhow!("namespace {NAMESPACE}: {e}"))?;
    tokio::spawn(stats_loop(ui, io.clone(), app.clone()));
    Ok(())
}

/// A disconnect reason as Node's socket.io words it, which the UI shows.
fn node_reason(r: DisconnectReason) -> &'static str {
    match r {
        DisconnectReason::TransportClose => "transport close",
        DisconnectReason::HeartbeatTimeout => "ping timeout",
        DisconnectReason::ClientNSDisconnect => "client namespace disconnect",
        DisconnectReason::ServerNSDisconnect => "server namespace disconnect",
        DisconnectReason::ClosingServer => "server shutting down",
        DisconnectReason::PacketParsingError => "parse error",
        DisconnectReason::TransportError | DisconnectReason::MultipleHttpPollingError => {
            "transport error"
        }
    }
}

/// Why an admin socket is refused: the reference's exact text, which the page understands.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(&'static str);

/// The namespace's middleware: only the UI's login or session gets in, and only on the
/// admin listener when there is one.
async fn admit(
    s: SocketRef<Adapter>,
    State(app): State<Arc<App>>,
    State(ui): State<Arc<AdminUi>>,
    TryData(auth): TryData<Value>,
) -> Result<(), Refused> {
    // The public listener's connections are registered (`Conn`); the admin listener's are not.
    if ui.admin_listener_only && s.req_parts().extensions.get::<Arc<Conn>>().is_some() {
        return Err(Refused("not served here"));
    }
    let Some(creds) = &ui.credentials else {
        return Ok(());
    };
    let auth = auth.unwrap_or(Value::Null);
    if let Some(id) = auth.get("sessionId").and_then(Value::as_str)
        && ui.sessions.is_open(id).await
    {
        return Ok(());
    }
    if creds.check(&auth).await {
        // Sent once connected: the page listens for it only from then on.
        if let Some(id) = ui.sessions.open().await {
            s.extensions.insert(NewSession(id));
        }
        return Ok(());
    }
    app.metrics
        .admin_ui_refusals
        .with_label_values(&["credentials"])
        .inc();
    Err(Refused(auth::INVALID))
}

#[derive(Debug, Clone)]
struct NewSession(String);

async fn connected(ui: &Arc<AdminUi>, s: &SocketRef<Adapter>, app: &Arc<App>) {
    ui.local.fetch_add(1, Ordering::Relaxed);
    app.metrics.admin_ui_sessions.inc();
    let ui2 = ui.clone();
    let app2 = app.clone();
    s.on_disconnect(move || async move {
        ui2.local.fetch_sub(1, Ordering::Relaxed);
        app2.metrics.admin_ui_sessions.dec();
    });
    commands::register(s);
    if let Some(NewSession(id)) = s.extensions.get::<NewSession>() {
        let _ = s.emit("session", &id);
    }
    let _ = s.emit("config", &json!({"supportedFeatures": FEATURES}));
    joins::join(s, &app.cluster, WATCHERS_ROOM).await;
    ui.announce().await;
    let sockets = ui.all_sockets().await;
    let _ = s.emit("all_sockets", &sockets);
}

/// Every 2 s: a node holding an admin socket tells the others; a watched node sends its stats.
async fn stats_loop(ui: Arc<AdminUi>, io: SocketIo<Adapter>, app: Arc<App>) {
    let mut tick = tokio::time::interval(STATS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !app.is_accepting() {
            return;
        }
        if ui.local.load(Ordering::Relaxed) > 0 {
            ui.announce().await;
        }
        if ui.watched() {
            let stats = stats::now(&app, &io, &ui.namespaces, ui.started, &ui.aggregated);
            ui.send("server_stats", stats);
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::NodeConfig;

    fn config(args: &[&str]) -> crate::config::Config {
        let all = ["ioscale-node", "--admin-ui"].iter().chain(args);
        NodeConfig::parse_from(all).core
    }

    #[test]
    fn the_ui_asks_for_a_login_unless_told_not_to() {
        assert!(credentials(&config(&[])).is_err());
        assert!(
            credentials(&config(&["--admin-ui-no-login"]))
                .unwrap()
                .is_none()
        );
        let hash = bcrypt::hash("pw", 4).unwrap();
        let with = config(&["--admin-ui-password-bcrypt", &hash]);
        assert!(credentials(&with).unwrap().is_some());
        let both = config(&["--admin-ui-password-bcrypt", &hash, "--admin-ui-no-login"]);
        assert!(credentials(&both).is_err());
        assert!(credentials(&config(&["--admin-ui-password-bcrypt", "pw"])).is_err());
    }

    #[test]
    fn a_password_file_is_hashed_at_start_and_checked_like_a_hash() {
        let dir = std::env::temp_dir().join(format!("ioscale-admin-ui-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("password");
        std::fs::write(&file, "s3cret\n").unwrap();
        let path = file.to_str().unwrap();
        let c = credentials(&config(&["--admin-ui-password-file", path]))
            .unwrap()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let ok = serde_json::json!({"username": "admin", "password": "s3cret"});
        assert!(rt.block_on(c.check(&ok)));
        std::fs::write(&file, "\n").unwrap();
        assert!(credentials(&config(&["--admin-ui-password-file", path])).is_err());
        let missing = dir.join("none");
        assert!(
            credentials(&config(&[
                "--admin-ui-password-file",
                missing.to_str().unwrap()
            ]))
            .is_err()
        );
        let hash = bcrypt::hash("pw", 4).unwrap();
        let both = config(&[
            "--admin-ui-password-file",
            path,
            "--admin-ui-password-bcrypt",
            &hash,
        ]);
        assert!(credentials(&both).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
