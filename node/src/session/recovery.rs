//! Session recovery: a client that lost its connection (its node killed, its network cut)
//! comes back to any node within `--recovery-window-ms` and gets its public id, rooms and
//! data, and every recorded broadcast it missed, exactly once and in order.
//!
//! socketioxide cannot put a `pid` in its CONNECT answer, so the official clients' own
//! mechanism cannot be used; clients opt in with `ioscale_recovery: {session, offset}` in
//! their CONNECT auth (the helpers in `clients/` do it). The session lives in Redis from the
//! moment the socket connects and is rewritten on every change, so a node that dies takes
//! nothing with it. After CONNECT the node tells the client what became of it
//! ([`EVENT`]: recovered or a fresh session, and why). The session token is 128 random bits
//! known only to its client; a record names the socket that owns it, so an older connection
//! of the same client cannot overwrite what its successor restored.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use fred::{
    clients::Client,
    interfaces::{HashesInterface, LuaInterface},
    types::Value as RedisValue,
};
use ioscale_adapter::{NamespaceHandle, Offset, RestoreError};
use serde::{Deserialize, Serialize};
use socketioxide::{extract::SocketRef, socket::Sid};

use crate::{
    app::{Adapter, App},
    session::public_id,
};

/// The CONNECT auth key of a client that wants its session kept.
pub const AUTH_KEY: &str = "ioscale_recovery";
/// The event a recovering client gets after CONNECT: what became of its session.
pub const EVENT: &str = "ioscale:recovery";
/// Earlier socket ids a session remembers (a broadcast sent by one of them is not its own to
/// receive back).
const MAX_SENDERS: usize = 8;

/// What a client asked for in its CONNECT auth.
#[derive(Debug, Default)]
pub struct Ask {
    session: Option<String>,
    offset: Option<String>,
    malformed: bool,
}

/// The recovery a handshake asked for, if any: `ioscale_recovery: {session, offset}`, each a
/// string or null. Anything else there is malformed: the client gets a fresh session and is
/// told why.
pub fn asked(payload: Option<&serde_json::Value>) -> Option<Ask> {
    let v = payload?.get(AUTH_KEY)?;
    let text = |k: &str| match v.get(k) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) if s.len() <= 64 => Ok(Some(s.clone())),
        Some(_) => Err(()),
    };
    Some(match (v.is_object(), text("session"), text("offset")) {
        (true, Ok(session), Ok(offset)) => Ask {
            session,
            offset,
            malformed: false,
        },
        _ => Ask {
            malformed: true,
            ..Ask::default()
        },
    })
}

/// The session as stored in Redis: a hash of this (`rec`, JSON), the socket that owns the
/// session now (`owner`: only it may write) and when it was last known connected (`seen`,
/// ms since the epoch), apart so that a disconnect can say when without touching the rest.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    ns: String,
    /// The public id.
    id: String,
    /// Its earlier socket ids, latest last.
    #[serde(default)]
    senders: Vec<String>,
    rooms: Vec<String>,
    data: serde_json::Value,
    user: Option<String>,
    /// Where the history stood when the session began: what it missed if it never received
    /// a recorded broadcast.
    since: Option<String>,
}

/// What became of a recovering socket's session, in its extensions until the connect handler
/// tells the client.
pub struct Recovery {
    /// Empty when recovery is unavailable.
    token: String,
    /// `None`: fresh; `Some`: restored, with what to replay from.
    restored: Option<Restored>,
    reason: &'static str,
    /// Where the session's history begins (see [`Record::since`]).
    since: Option<Offset>,
    /// Where the record is written, when recovery is available.
    store: Option<Store>,
    /// Serialises the session's writes (each writes the socket's state as of its turn).
    writes: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recovery")
            .field("restored", &self.restored.is_some())
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

/// Where and for how long a session's record is written.
struct Store {
    client: Client,
    key: String,
    ttl_ms: u64,
    cluster: ioscale_adapter::Cluster,
}

#[derive(Debug)]
struct Restored {
    from: Option<Offset>,
    senders: Vec<Sid>,
}

/// What the handshake must do for a socket: its public id and the rooms to put it in.
#[derive(Debug)]
pub struct Admitted {
    /// The public id: the session's own when restored.
    pub id: String,
    /// The session's rooms (besides the own-id and user rooms).
    pub rooms: Vec<String>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn key(app: &App, token: &str) -> String {
    format!("{}:session:{token}", app.config.redis_prefix)
}

/// How often a node rewrites its sessions' records (and so how stale a dead node's are).
fn refresh_every(app: &App) -> Duration {
    Duration::from_millis((app.config.recovery_window_ms / 4).clamp(500, 30_000))
}

/// How long a record outlives its last write: a window past the last time its socket was
/// known connected, plus the rewrite period.
fn ttl_ms(app: &App) -> u64 {
    app.config.recovery_window_ms + 2 * refresh_every(app).as_millis() as u64
}

/// Where recovery works: Redis, a window, and a history on the namespace.
fn store(app: &App, ns: &str) -> Option<(Client, Arc<dyn NamespaceHandle>)> {
    if app.config.recovery_window_ms == 0 {
        return None;
    }
    let handle = app.cluster.namespace(ns).filter(|h| h.keeps_history())?;
    Some((app.cluster.redis_client()?, handle))
}

/// At the handshake of a socket that asked for recovery: restores its session when it is
/// valid, or begins a fresh one. `None` when recovery is unavailable here (the client is told
/// so after CONNECT).
pub async fn admit(
    s: &SocketRef<Adapter>,
    app: &App,
    ask: &Ask,
    user: Option<&str>,
) -> Option<Admitted> {
    let Some((client, handle)) = store(app, s.ns()) else {
        s.extensions.insert(Arc::new(Recovery {
            token: String::new(),
            restored: None,
            reason: "unavailable",
            since: None,
            store: None,
            writes: Default::default(),
        }));
        return None;
    };
    let (record, reason) = match lookup(&client, app, s.ns(), ask, user).await {
        Ok(record) => (Some(record), "recovered"),
        Err(reason) => (None, reason),
    };
    handle.recovery_begin(s.id);
    app.sessions.add(s);
    let (token, admitted, restored) = match record {
        Some((token, record, from)) => {
            let senders = record
                .senders
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect();
            // The client's earlier connection, if its node has not noticed it is gone yet,
            // must not keep the session's room: disconnected in the background (this socket
            // is not in the room yet, and `to` leaves out the sender anyway).
            let old = s.to(record.id.clone());
            tokio::spawn(async move {
                if let Err(e) = old.disconnect().await {
                    tracing::debug!(error = %e, "earlier connection not disconnected");
                }
            });
            app.cluster
                .set_socket_data(s.ns(), s.id, record.data.clone());
            let admitted = Admitted {
                id: record.id.clone(),
                rooms: record.rooms.clone(),
            };
            (token, admitted, Some(Restored { from, senders }))
        }
        None => {
            let id = public_id::generate();
            (
                public_id::generate(),
                Admitted {
                    id,
                    rooms: Vec::new(),
                },
                None,
            )
        }
    };
    let since = match &restored {
        Some(r) => r.from,
        None => handle.history_position(),
    };
    let store = Store {
        key: key(app, &token),
        client,
        ttl_ms: ttl_ms(app),
        cluster: app.cluster.clone(),
    };
    s.extensions.insert(Arc::new(Recovery {
        token,
        restored,
        reason,
        since,
        store: Some(store),
        writes: Default::default(),
    }));
    Some(admitted)
}

type Found = (String, Record, Option<Offset>);

/// The session `ask` names, if it may be restored here: the reason otherwise.
async fn lookup(
    client: &Client,
    app: &App,
    ns: &str,
    ask: &Ask,
    user: Option<&str>,
) -> Result<Found, &'static str> {
    if ask.malformed {
        return Err("invalid");
    }
    let Some(token) = ask.session.as_deref() else {
        return Err("new");
    };
    if !public_id::is_shaped(token) {
        return Err("unknown");
    }
    let stored: HashMap<String, String> = match client.hgetall(key(app, token)).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "session lookup failed");
            return Err("unavailable");
        }
    };
    let record: Record = stored
        .get("rec")
        .and_then(|v| serde_json::from_str(v).ok())
        .filter(|r: &Record| r.ns == ns)
        .ok_or("unknown")?;
    let seen: u64 = stored.get("seen").and_then(|v| v.parse().ok()).unwrap_or(0);
    if now_ms().saturating_sub(seen) > app.config.recovery_window_ms {
        return Err("expired");
    }
    if record.user.as_deref() != user {
        return Err("identity");
    }
    let offset = ask.offset.as_deref().or(record.since.as_deref());
    let from = match offset.map(str::parse::<Offset>) {
        Some(Ok(o)) => Some(o),
        Some(Err(_)) => return Err("invalid"),
        None => None,
    };
    Ok((token.to_owned(), record, from))
}

/// In the connect handler: replays what a restored socket missed, makes it live, writes its
/// session and tells the client ([`EVENT`]).
pub fn connected(s: &SocketRef<Adapter>, app: &Arc<App>) {
    let Some(rec) = s.extensions.get::<Arc<Recovery>>() else {
        return;
    };
    let (s, app) = (s.clone(), app.clone());
    tokio::spawn(async move {
        let mut outcome = serde_json::json!({
            "recovered": rec.restored.is_some(),
            "session": (!rec.token.is_empty()).then(|| rec.token.clone()),
            "id": public_id::of(&s),
            "reason": rec.restored.is_none().then_some(rec.reason),
            "missed": 0,
        });
        if let Some((_, handle)) = store(&app, s.ns()).filter(|_| !rec.token.is_empty()) {
            let (from, senders) = match &rec.restored {
                Some(r) => (r.from, r.senders.clone()),
                None => (None, Vec::new()),
            };
            match handle.restore(s.id, from, senders).await {
                Ok(n) => outcome["missed"] = n.into(),
                Err(e) => {
                    outcome["recovered"] = false.into();
                    outcome["reason"] = match e {
                        RestoreError::Trimmed => "history",
                        _ => "unavailable",
                    }
                    .into();
                }
            }
            write(&s, &rec, true).await;
            app.metrics
                .recoveries
                .with_label_values(&[outcome_label(&outcome)])
                .inc();
        }
        let _ = s.emit(EVENT, &outcome);
    });
}

fn outcome_label(outcome: &serde_json::Value) -> &str {
    if outcome["recovered"] == true {
        "recovered"
    } else {
        outcome["reason"].as_str().unwrap_or("new")
    }
}

/// After a change of a recovering socket's rooms or data: writes its session.
pub fn changed(s: &SocketRef<Adapter>) {
    let Some(rec) = s
        .extensions
        .get::<Arc<Recovery>>()
        .filter(|r| r.store.is_some())
    else {
        return;
    };
    let s = s.clone();
    tokio::spawn(async move { write(&s, &rec, false).await });
}

/// When a recovering socket disconnects: its session stays for the window from now.
pub fn disconnected(s: &SocketRef<Adapter>, app: &Arc<App>) {
    let Some(rec) = s.extensions.get::<Arc<Recovery>>() else {
        return;
    };
    app.sessions.remove(s.id);
    if let Some(h) = app.cluster.namespace(s.ns()) {
        h.recovery_end(s.id);
    }
    if rec.store.is_some() {
        let s = s.clone();
        tokio::spawn(async move { write(&s, &rec, false).await });
    }
}

/// Rewrites every local session's record now and then: when its node dies, a session is
/// known connected until at most one period before.
pub async fn refresh_loop(app: Arc<App>) {
    let every = refresh_every(&app);
    loop {
        tokio::time::sleep(every).await;
        for s in app.sessions.all() {
            if let Some(rec) = s.extensions.get::<Arc<Recovery>>() {
                write(&s, &rec, false).await;
            }
        }
    }
}

/// Writes `s`'s session as it is now. `take_over`: whoever owned it before; otherwise only
/// while `s` owns it (an older connection of the same client must not undo a restore). A
/// socket on its way out only says when it was last seen: socketioxide may already have taken
/// it out of its rooms.
async fn write(s: &SocketRef<Adapter>, rec: &Recovery, take_over: bool) {
    let Some(store) = &rec.store else { return };
    let _turn = rec.writes.lock().await;
    let json = if s.connected() {
        serde_json::to_string(&record_of(s, rec, &store.cluster)).unwrap_or_default()
    } else {
        String::new()
    };
    let sid = s.id.to_string();
    let expected = if take_over {
        String::new()
    } else {
        sid.clone()
    };
    let args = vec![
        expected,
        sid,
        store.ttl_ms.to_string(),
        now_ms().to_string(),
        json,
    ];
    let written: Result<RedisValue, _> = store
        .client
        .eval(WRITE, vec![store.key.clone()], args)
        .await;
    if let Err(e) = written {
        tracing::debug!(error = %e, "session not written");
    }
}

/// `s`'s session as it is now.
fn record_of(s: &SocketRef<Adapter>, rec: &Recovery, cluster: &ioscale_adapter::Cluster) -> Record {
    let id = public_id::of(s);
    let mut rooms: Vec<String> = s
        .rooms()
        .into_iter()
        .map(|r| r.into_owned())
        .filter(|r| *r != id)
        .collect();
    rooms.sort();
    let mut senders: Vec<String> = rec
        .restored
        .as_ref()
        .map(|r| r.senders.iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    senders.push(s.id.to_string());
    let skip = senders.len().saturating_sub(MAX_SENDERS);
    Record {
        ns: s.ns().to_owned(),
        id,
        senders: senders.split_off(skip),
        rooms,
        data: cluster.socket_data(s.ns(), s.id),
        user: crate::admission::identity(s).user.clone(),
        since: rec.since.map(|o| o.to_string()),
    }
}

/// Writes a session unless another socket owns it. `ARGV`: the owner expected (empty: take
/// it over), the new owner, the TTL (ms), when seen (ms), the record (empty: keep it).
const WRITE: &str = r"
if ARGV[1] ~= '' then
  local owner = redis.call('HGET', KEYS[1], 'owner')
  if owner and owner ~= ARGV[1] then return 0 end
end
redis.call('HSET', KEYS[1], 'owner', ARGV[2], 'seen', ARGV[4])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'rec', ARGV[5]) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ask_is_read_from_the_auth_payload() {
        let ask = |v: serde_json::Value| asked(Some(&v));
        assert!(ask(serde_json::json!({"token": "x"})).is_none());
        let a = ask(serde_json::json!({AUTH_KEY: {"session": "s", "offset": null}})).unwrap();
        assert_eq!(
            (a.session.as_deref(), a.offset, a.malformed),
            (Some("s"), None, false)
        );
        assert!(ask(serde_json::json!({AUTH_KEY: true})).unwrap().malformed);
        assert!(
            ask(serde_json::json!({AUTH_KEY: {"offset": 5}}))
                .unwrap()
                .malformed
        );
        let long = "x".repeat(65);
        assert!(
            ask(serde_json::json!({AUTH_KEY: {"session": long}}))
                .unwrap()
                .malformed
        );
    }
}
