//! Presence per room: who is in a room, cluster-wide (public id, user, a small payload the
//! client gives), its count, and `presence:join` / `presence:leave` events to the room's other
//! members. For rooms a client asks it of (`/pubsub` `join {room, presence: true, data}`);
//! read by the members' join ack and by the server API.
//!
//! Kept in Redis, so that reading a room's presence is one command, not a request to every
//! node nor a scan of every socket:
//! - `{prefix}:presence:{ns}:{room}`: a hash, member public id → its record (JSON);
//! - `{prefix}:presence-node:{node}`: a set, what each node's members are (`ns`, room, id),
//!   so that the survivors of a dead node take its members out;
//! - `{prefix}:presence-nodes`: the nodes that have members.
//!
//! The events are broadcasts to the room: they reach the nodes holding a member of it (room
//! channels), and no other. A member's join and leave are sent by the node holding it, in
//! order. A node that dies takes its members out once the others see it dead (the heartbeat
//! timeout, two heartbeats) and one of them sweeps (every half heartbeat): each member is
//! removed by exactly one survivor (`SPOP`), which sends its `presence:leave`. Until then,
//! reads leave out members of nodes not alive.

use std::sync::{Arc, Mutex, OnceLock};

use fred::{
    clients::Client,
    interfaces::{HashesInterface as _, LuaInterface as _, SetsInterface as _},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use socketioxide::{SocketIo, extract::SocketRef};

use crate::{
    app::{Adapter, App},
    refusal::{Code, Refused},
    session::public_id,
};

/// Sent to a room's other members when a member joins: `{room, member}`.
pub const JOIN_EVENT: &str = "presence:join";
/// Sent to a room's other members when a member leaves: `{room, id}`.
pub const LEAVE_EVENT: &str = "presence:leave";
/// Largest presence payload a client may give, serialized.
pub const MAX_DATA_BYTES: usize = 512;
/// Entries one sweep takes from a dead node's set at a time.
const SWEEP_BATCH: u64 = 256;

/// Adds a member unless the room is full (a member already there is rewritten).
/// KEYS: room hash. ARGV: id, record, most members. Returns 1 when stored, 0 when full.
const JOIN_SCRIPT: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 or redis.call('HLEN', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
return 0
";

/// One member of a room.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Member {
    /// The socket's public id.
    pub id: String,
    /// The user of its token, if any.
    pub user: Option<String>,
    /// What the client gave on join (`null` when nothing).
    pub data: Value,
    /// The node holding it.
    pub node: String,
    /// When it joined (ms since the Unix epoch).
    pub since: u64,
}

/// A room's presence as answered to a reader.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub room: String,
    pub count: usize,
    pub members: Vec<Member>,
}

/// The presence rooms of a socket, in its extensions: left when it disconnects.
#[derive(Debug, Default)]
struct Rooms(Mutex<Vec<String>>);

impl Rooms {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Presence on this node: its Redis, and the Socket.IO server its events go out through.
pub struct Presence {
    /// The namespace every node serves, whose heartbeats say which nodes are alive.
    everywhere: String,
    client: Client,
    prefix: String,
    node: String,
    max_members: u64,
    io: OnceLock<SocketIo<Adapter>>,
    members: prometheus::IntGauge,
    changes: prometheus::IntCounterVec,
    /// Nodes this one saw alive, and when it first saw each node with members not alive: a
    /// node that just started may have members before its first heartbeat arrives here.
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    alive: std::collections::HashSet<String>,
    missing_since: std::collections::HashMap<String, std::time::Instant>,
}

/// How long a node with members must stay unseen before it is swept when it was never seen
/// alive (it died before this node started, or this node is new).
const NEVER_SEEN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

impl std::fmt::Debug for Presence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presence")
            .field("node", &self.node)
            .field("max_members", &self.max_members)
            .finish_non_exhaustive()
    }
}

/// A node's presence, if it has one (without Redis it has none): what handlers find in the
/// sockets' state and the API's extensions.
#[derive(Debug, Clone, Default)]
pub struct Handle(pub Option<Arc<Presence>>);

/// Every half heartbeat: the members of nodes seen dead are taken out.
pub async fn sweep_loop(presence: Arc<Presence>, app: Arc<App>) {
    let every = crate::config::Config::ms(app.config.heartbeat_interval_ms / 2)
        .max(std::time::Duration::from_millis(50));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !app.is_accepting() {
            return;
        }
        presence.sweep(&presence.alive(&app)).await;
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn unavailable(e: &fred::error::Error) -> Refused {
    tracing::warn!(error = %e, "presence: Redis did not answer");
    Refused::new(
        Code::Unavailable,
        "presence is unavailable now; retry later",
    )
}

/// A `presence-node` set entry: namespace, room and id, which none of them contains.
fn entry(ns: &str, room: &str, id: &str) -> String {
    format!("{ns}\n{room}\n{id}")
}

/// Neither a namespace nor a public id holds a newline; a room may.
fn parse_entry(e: &str) -> Option<(&str, &str, &str)> {
    let (ns, rest) = e.split_once('\n')?;
    let (room, id) = rest.rsplit_once('\n')?;
    Some((ns, room, id))
}

impl Presence {
    /// Presence of a node with Redis; `None` without (there is no cluster-wide store).
    /// `everywhere`: a namespace every node serves, whose heartbeats say which nodes live.
    pub fn new(app: &App, everywhere: &str) -> Option<Self> {
        Some(Self {
            everywhere: everywhere.to_owned(),
            client: app.cluster.redis_client()?,
            prefix: app.config.redis_prefix.clone(),
            node: app.node_id.clone(),
            max_members: app.config.presence_max_members,
            io: OnceLock::new(),
            members: app.metrics.presence_members.clone(),
            changes: app.metrics.presence_changes.clone(),
            seen: Mutex::default(),
        })
    }

    /// The ids of the live nodes.
    pub fn alive(&self, app: &App) -> Vec<String> {
        app.cluster
            .namespace(&self.everywhere)
            .map(|h| h.nodes().into_iter().map(|n| n.id).collect())
            .unwrap_or_default()
    }

    /// Gives presence the Socket.IO server its events go out through.
    pub fn serve(&self, io: &SocketIo<Adapter>) {
        let _ = self.io.set(io.clone());
    }

    fn room_key(&self, ns: &str, room: &str) -> String {
        format!("{}:presence:{ns}:{room}", self.prefix)
    }

    fn node_key(&self, node: &str) -> String {
        format!("{}:presence-node:{node}", self.prefix)
    }

    fn nodes_key(&self) -> String {
        format!("{}:presence-nodes", self.prefix)
    }

    /// Makes `s` a member of `room` with `data`, tells the room's other members, and answers
    /// the room's presence.
    ///
    /// # Errors
    /// The payload is too large, the room is full, or Redis does not answer.
    pub async fn join(
        self: &Arc<Self>,
        s: &SocketRef<Adapter>,
        room: &str,
        data: Value,
        user: Option<String>,
        alive: &[String],
    ) -> Result<Snapshot, Refused> {
        let size = serde_json::to_string(&data).map_or(usize::MAX, |t| t.len());
        if size > MAX_DATA_BYTES {
            return Err(Refused::new(
                Code::TooLarge,
                format!("presence data over {MAX_DATA_BYTES} bytes"),
            ));
        }
        let id = public_id::of(s);
        let member = Member {
            id: id.clone(),
            user,
            data,
            node: self.node.clone(),
            since: now_ms(),
        };
        let record = serde_json::to_string(&member).unwrap_or_default();
        // The node's set first: an entry without its member is harmless (a sweep or a leave
        // removes nothing), a member without its entry would outlive a dead node unswept.
        let entry = entry(s.ns(), room, &id);
        let (a, b) = tokio::join!(
            self.client
                .sadd::<(), _, _>(self.node_key(&self.node), entry.clone()),
            self.client
                .sadd::<(), _, _>(self.nodes_key(), self.node.clone()),
        );
        a.and(b).map_err(|e| unavailable(&e))?;
        let stored: Result<i64, _> = self
            .client
            .eval(
                JOIN_SCRIPT,
                vec![self.room_key(s.ns(), room)],
                vec![id.clone(), record, self.max_members.to_string()],
            )
            .await;
        if stored.as_ref().map_or(true, |n| *n != 1) {
            if !self.is_member(s, room) {
                let _ = self
                    .client
                    .srem::<(), _, _>(self.node_key(&self.node), entry)
                    .await;
            }
            return Err(match stored {
                Err(e) => unavailable(&e),
                Ok(_) => Refused::new(
                    Code::Conflict,
                    format!(
                        "the room has {} members, the most presence allows",
                        self.max_members
                    ),
                ),
            });
        }
        let rooms = match s.extensions.get::<Arc<Rooms>>() {
            Some(r) => r,
            None => {
                let r = Arc::new(Rooms::default());
                s.extensions.insert(r.clone());
                // For the disconnect, which has the socket only (`left_all`).
                s.extensions.insert(self.clone());
                r
            }
        };
        {
            let mut r = rooms.lock();
            if !r.iter().any(|x| x == room) {
                r.push(room.to_owned());
                self.members.inc();
            }
        }
        self.changes.with_label_values(&["join"]).inc();
        let event = json!({"room": room, "member": member});
        if let Err(e) = s.to(room.to_owned()).emit(JOIN_EVENT, &event).await {
            tracing::debug!(error = %e, "presence join not sent");
        }
        self.read(s.ns(), room, alive).await
    }

    /// Takes `s` out of `room`'s presence and tells the other members; false if it was not a
    /// member.
    ///
    /// # Errors
    /// Redis does not answer.
    pub async fn leave(&self, s: &SocketRef<Adapter>, room: &str) -> Result<bool, Refused> {
        let member = s.extensions.get::<Arc<Rooms>>().is_some_and(|r| {
            let mut r = r.lock();
            let before = r.len();
            r.retain(|x| x != room);
            r.len() < before
        });
        if !member {
            return Ok(false);
        }
        self.members.dec();
        self.remove(s.ns(), room, &public_id::of(s), &self.node)
            .await
            .map_err(|e| unavailable(&e))
    }

    /// Takes a disconnected socket out of every presence room it was in (a `/pubsub`
    /// disconnect hook).
    pub fn left_all(
        s: SocketRef<Adapter>,
        _: socketioxide::socket::DisconnectReason,
    ) -> futures_util::future::BoxFuture<'static, ()> {
        Box::pin(async move {
            if let Some(p) = s.extensions.get::<Arc<Presence>>() {
                p.leave_all(&s).await;
            }
        })
    }

    async fn leave_all(&self, s: &SocketRef<Adapter>) {
        let Some(rooms) = s.extensions.get::<Arc<Rooms>>() else {
            return;
        };
        let rooms = std::mem::take(&mut *rooms.lock());
        let id = public_id::of(s);
        self.members
            .sub(i64::try_from(rooms.len()).unwrap_or(i64::MAX));
        for room in rooms {
            if let Err(e) = self.remove(s.ns(), &room, &id, &self.node).await {
                tracing::warn!(error = %e, "presence: a leave not recorded (the sweep of a dead node would take it out)");
            }
        }
    }

    /// Removes member `id` of `room`, held by `node`; sends its leave when this call removed it.
    async fn remove(
        &self,
        ns: &str,
        room: &str,
        id: &str,
        node: &str,
    ) -> Result<bool, fred::error::Error> {
        let removed: i64 = self.client.hdel(self.room_key(ns, room), id).await?;
        if removed == 1 {
            self.changes.with_label_values(&["leave"]).inc();
            self.send_leave(ns, room, id);
        }
        // A stale entry is harmless (a sweep removes nothing for it): its loss is only logged.
        if let Err(e) = self
            .client
            .srem::<(), _, _>(self.node_key(node), entry(ns, room, id))
            .await
        {
            tracing::debug!(error = %e, "presence: a node-set entry not removed");
        }
        Ok(removed == 1)
    }

    /// Whether `s` is already a member of `room` here (a rejoin that failed keeps it one).
    fn is_member(&self, s: &SocketRef<Adapter>, room: &str) -> bool {
        s.extensions
            .get::<Arc<Rooms>>()
            .is_some_and(|r| r.lock().iter().any(|x| x == room))
    }

    fn send_leave(&self, ns: &str, room: &str, id: &str) {
        let Some(ops) = self.io.get().and_then(|io| io.of(ns)) else {
            return;
        };
        let event = json!({"room": room, "id": id});
        let room = room.to_owned();
        let own = id.to_owned();
        tokio::spawn(async move {
            // Every member of the room but the one leaving (its own room is its public id).
            if let Err(e) = ops.to(room).except(own).emit(LEAVE_EVENT, &event).await {
                tracing::debug!(error = %e, "presence leave not sent");
            }
        });
    }

    /// The presence of `room`: one `HGETALL`; members of nodes not in `alive` (nor this one)
    /// are left out until a sweep removes them.
    ///
    /// # Errors
    /// Redis does not answer.
    pub async fn read(&self, ns: &str, room: &str, alive: &[String]) -> Result<Snapshot, Refused> {
        let all: std::collections::HashMap<String, String> = self
            .client
            .hgetall(self.room_key(ns, room))
            .await
            .map_err(|e| unavailable(&e))?;
        let mut members: Vec<Member> = all
            .values()
            .filter_map(|v| serde_json::from_str::<Member>(v).ok())
            .filter(|m| m.node == self.node || alive.contains(&m.node))
            .collect();
        members.sort_by(|a, b| a.since.cmp(&b.since).then_with(|| a.id.cmp(&b.id)));
        Ok(Snapshot {
            room: room.to_owned(),
            count: members.len(),
            members,
        })
    }

    /// Takes out the members of every node that has members and is not alive (nor this one),
    /// each with its leave. Returns how many were taken out.
    pub async fn sweep(&self, alive: &[String]) -> usize {
        let nodes: Vec<String> = match self.client.smembers(self.nodes_key()).await {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, "presence sweep: nodes not read");
                return 0;
            }
        };
        let dead = self.dead(&nodes, alive);
        let mut removed = 0;
        for node in &dead {
            removed += self.sweep_node(node).await;
        }
        removed
    }

    /// Which of `nodes` (with members) to sweep: not alive, and seen alive before or unseen
    /// for [`NEVER_SEEN_GRACE`].
    fn dead(&self, nodes: &[String], alive: &[String]) -> Vec<String> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.alive.extend(alive.iter().cloned());
        let now = std::time::Instant::now();
        let mut dead = Vec::new();
        for n in nodes.iter().filter(|n| **n != self.node) {
            if alive.contains(n) {
                seen.missing_since.remove(n);
                continue;
            }
            let since = *seen.missing_since.entry(n.clone()).or_insert(now);
            if seen.alive.contains(n) || now.duration_since(since) >= NEVER_SEEN_GRACE {
                dead.push(n.clone());
            }
        }
        // Forget what is no longer listed: the sets stay as small as the cluster.
        seen.missing_since.retain(|n, _| nodes.contains(n));
        dead
    }

    async fn sweep_node(&self, node: &str) -> usize {
        let mut removed = 0;
        loop {
            // SPOP: each entry goes to one survivor only, which sends its leave.
            let batch: Vec<String> = match self
                .client
                .spop(self.node_key(node), Some(SWEEP_BATCH as usize))
                .await
            {
                Ok(b) => b,
                Err(e) => {
                    tracing::debug!(error = %e, node, "presence sweep stopped");
                    return removed;
                }
            };
            if batch.is_empty() {
                let _ = self
                    .client
                    .srem::<(), _, _>(self.nodes_key(), node.to_owned())
                    .await;
                if removed > 0 {
                    tracing::info!(node, removed, "presence: a dead node's members taken out");
                }
                return removed;
            }
            for e in &batch {
                let Some((ns, room, id)) = parse_entry(e) else {
                    continue;
                };
                match self
                    .client
                    .hdel::<i64, _, _>(self.room_key(ns, room), id)
                    .await
                {
                    Ok(1) => {
                        removed += 1;
                        self.changes.with_label_values(&["swept"]).inc();
                        self.send_leave(ns, room, id);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "presence sweep: a member not removed"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_reads_back_whatever_the_room_holds() {
        let e = entry("/pubsub", "a:b c", "xyz");
        assert_eq!(parse_entry(&e), Some(("/pubsub", "a:b c", "xyz")));
        let e = entry("/pubsub", "two\nlines", "xyz");
        assert_eq!(parse_entry(&e), Some(("/pubsub", "two\nlines", "xyz")));
        assert_eq!(parse_entry("no separators"), None);
    }
}
