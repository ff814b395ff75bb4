//! The UI's commands, acting on matching sockets of every node: `emit`, `join`, `leave` and
//! `_disconnect`. A command's `filter` is a room, as in the reference server: one socket is
//! addressed by its id, the name of its own room (the public id here, on every node).
//!
//! The UI asks for no acknowledgement; a command that cannot be carried out is answered with
//! an `error` event naming it (and logged), so a refusal is never silent.

use std::sync::Arc;

use serde_json::{Value, json};
use socketioxide::{
    SocketIo,
    extract::{Data, SocketRef, State},
};

use super::AdminUi;
use crate::app::Adapter;

/// Longest room, namespace or event name a command may give.
const MAX_NAME_BYTES: usize = 256;

/// Registers the commands on an admin socket.
pub(super) fn register(s: &SocketRef<Adapter>) {
    s.on("emit", emit);
    s.on("join", join);
    s.on("leave", leave);
    s.on("_disconnect", disconnect);
}

/// Every argument of a command. socketioxide gives a handler all the arguments only when its
/// type reads as a tuple (else the first alone): a list of any length read as a tuple.
#[derive(Debug)]
struct Args(Vec<Value>);

impl<'de> serde::Deserialize<'de> for Args {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Args;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("the command's arguments")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Args, A::Error> {
                let mut out = Vec::new();
                // No command has more than a few; an emit's own are bounded by the payload.
                while let Some(v) = seq.next_element()? {
                    out.push(v);
                }
                Ok(Args(out))
            }
        }
        de.deserialize_tuple(usize::MAX, Visit)
    }
}

/// Argument `i` as a name: a non-empty string of at most [`MAX_NAME_BYTES`].
fn name(args: &[Value], i: usize) -> Option<&str> {
    args.get(i)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= MAX_NAME_BYTES)
}

/// Argument `i` as an optional filter: absent, null or empty means none.
fn filter(args: &[Value], i: usize) -> Result<Option<&str>, ()> {
    match args.get(i) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(f)) if f.is_empty() => Ok(None),
        Some(Value::String(f)) if f.len() <= MAX_NAME_BYTES => Ok(Some(f)),
        Some(_) => Err(()),
    }
}

fn refuse(s: &SocketRef<Adapter>, command: &str, why: &str) {
    tracing::info!(command, why, "admin UI command refused");
    let _ = s.emit(
        "error",
        &json!({"ok": false, "command": command, "error": why}),
    );
}

/// `emit(nsp, filter, event, ...args)`.
async fn emit(s: SocketRef<Adapter>, io: SocketIo<Adapter>, Data(Args(args)): Data<Args>) {
    let (Some(nsp), Ok(filter), Some(event)) = (name(&args, 0), filter(&args, 1), name(&args, 2))
    else {
        return refuse(&s, "emit", "expected (namespace, filter, event, ...args)");
    };
    let Some(ops) = io.of(nsp) else {
        return refuse(&s, "emit", "unknown namespace");
    };
    let ops = match filter {
        Some(f) => ops.to(f.to_owned()),
        None => ops,
    };
    let rest = EmitArgs(args.get(3..).unwrap_or_default().to_vec());
    if let Err(e) = ops.emit(event, &rest).await {
        tracing::warn!(error = %e, "admin UI emit failed");
        refuse(&s, "emit", "not delivered everywhere");
    }
}

/// The arguments of an `emit`, each sent as an argument of its own: socketioxide sends a
/// tuple's items as separate arguments, so the list is serialized as a tuple (none: no
/// argument, where `()` would send a `null`).
struct EmitArgs(Vec<Value>);

impl serde::Serialize for EmitArgs {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple as _;
        let mut t = ser.serialize_tuple(self.0.len())?;
        for v in &self.0 {
            t.serialize_element(v)?;
        }
        t.end()
    }
}

async fn join(
    s: SocketRef<Adapter>,
    io: SocketIo<Adapter>,
    State(ui): State<Arc<AdminUi>>,
    Data(Args(args)): Data<Args>,
) {
    membership(&s, &io, &ui, &args, true).await;
}

async fn leave(
    s: SocketRef<Adapter>,
    io: SocketIo<Adapter>,
    State(ui): State<Arc<AdminUi>>,
    Data(Args(args)): Data<Args>,
) {
    membership(&s, &io, &ui, &args, false).await;
}

/// `join(nsp, room, filter?)` and `leave(nsp, room, filter?)`: the matching sockets of every
/// node join or leave `room`; the UI hears of each as `room_joined` / `room_left`.
async fn membership(
    s: &SocketRef<Adapter>,
    io: &SocketIo<Adapter>,
    ui: &Arc<AdminUi>,
    args: &[Value],
    joining: bool,
) {
    let command = if joining { "join" } else { "leave" };
    let (Some(nsp), Some(room), Ok(filter)) = (name(args, 0), name(args, 1), filter(args, 2))
    else {
        return refuse(s, command, "expected (namespace, room, filter?)");
    };
    let Some(ops) = io.of(nsp) else {
        return refuse(s, command, "unknown namespace");
    };
    let ops = match filter {
        Some(f) => ops.within(f.to_owned()),
        None => ops,
    };
    let room = room.to_owned();
    let result = if joining {
        ops.join(room.clone()).await
    } else {
        ops.leave(room.clone()).await
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, command, "admin UI command failed");
        return refuse(s, command, "not carried out on every node");
    }
    announce_membership(ui, nsp, &room, filter, joining).await;
}

/// Tells the UIs which sockets the command moved: cluster-wide joins and leaves go through the
/// adapter, not through the sockets' own handlers, so nothing else reports them.
async fn announce_membership(
    ui: &AdminUi,
    nsp: &str,
    room: &str,
    filter: Option<&str>,
    joined: bool,
) {
    let Some(handle) = ui.cluster.namespace(nsp) else {
        return;
    };
    let mut opts = socketioxide_core::adapter::BroadcastOptions::default();
    opts.rooms = filter
        .map(|f| vec![f.to_owned().into()])
        .unwrap_or_default()
        .into();
    let Ok(report) = handle.fetch_sockets_report(opts).await else {
        return;
    };
    let event = if joined { "room_joined" } else { "room_left" };
    let ts = super::socket_view::iso(super::socket_view::now_ms());
    for socket in report.sockets {
        let Some(id) = crate::session::public_id::in_rooms(&socket.rooms).map(str::to_owned) else {
            continue;
        };
        ui.send(event, (nsp.to_owned(), room.to_owned(), id, ts.clone()));
    }
}

/// `_disconnect(nsp, close, filter?)`: the matching sockets of every node are disconnected
/// (their clients see "io server disconnect"). `close` (the whole client) is done as a
/// disconnect of the namespace's socket: the cluster cannot close another node's connection.
async fn disconnect(s: SocketRef<Adapter>, io: SocketIo<Adapter>, Data(Args(args)): Data<Args>) {
    let (Some(nsp), Ok(filter)) = (name(&args, 0), filter(&args, 2)) else {
        return refuse(&s, "_disconnect", "expected (namespace, close, filter?)");
    };
    let Some(ops) = io.of(nsp) else {
        return refuse(&s, "_disconnect", "unknown namespace");
    };
    let ops = match filter {
        Some(f) => ops.within(f.to_owned()),
        None => ops,
    };
    if let Err(e) = ops.disconnect().await {
        tracing::warn!(error = %e, "admin UI disconnect failed");
        refuse(&s, "_disconnect", "not carried out on every node");
    }
}
