//! The Socket.IO protocol test contract, served with `--conformance` instead of the seed
//! applications, so that a protocol suite (ours in `tests/tests/protocol_*.rs`, or the
//! socket.io-protocol repository's) can run against a real node or a whole cluster.
//!
//! The contract is the reference server of socket.io-protocol's "Test suite" section: on `/`
//! and `/custom` a connecting socket gets `auth` with the payload of its CONNECT packet (`{}`
//! when the client sent none, like `socket.handshake.auth` in Node); on `/`, `message` is
//! answered with `message-back` and the same arguments, and `message-with-ack` is acknowledged
//! with them, binary attachments included. Events still go through the socket's event budget,
//! like every application's.

use std::sync::Arc;

use socketioxide::{
    SocketIo,
    extract::{Data, SocketRef},
    handler::{FromMessageParts as _, MessageHandler, Value},
    socket::Socket,
};
use socketioxide_core::parser::Parse as _;
use socketioxide_parser_common::CommonParser;

use crate::{
    app::{Adapter, App},
    application::{Application, Setup},
    eager::ConnectAuth,
    sockets::Reply,
    value::{ApiValue, Args},
};

/// The main namespace, where the echo events live.
pub const NAMESPACE: &str = "/";
/// The second namespace of the contract (the core serves it too, without events of its own).
pub const CUSTOM_NAMESPACE: &str = "/custom";

/// The conformance contract as an application of the node.
#[derive(Debug, Default)]
pub struct Conformance;

impl Application for Conformance {
    fn name(&self) -> &'static str {
        "conformance"
    }

    fn setup(&self, setup: &mut Setup<'_>) -> anyhow::Result<()> {
        setup.on_register(NAMESPACE, register);
        setup.on_connect(NAMESPACE, on_connect);
        setup.on_connect(
            CUSTOM_NAMESPACE,
            |s, _io, _app| async move { emit_auth(&s) },
        );
        Ok(())
    }
}

/// The echo events of `/`, registered at the handshake.
fn register(s: &SocketRef<Adapter>, _io: &SocketIo<Adapter>, _app: &Arc<App>) {
    s.on("message", Echo(message));
    s.on("message-with-ack", Echo(message_with_ack));
}

/// Connect hook of `/`: `auth`.
async fn on_connect(s: SocketRef<Adapter>, _io: SocketIo<Adapter>, _app: Arc<App>) {
    emit_auth(&s);
}

/// `auth` with the CONNECT payload as the client sent it; socketioxide's own decoding of a
/// missing payload gives `{}`, the reference server's empty `handshake.auth`. Called in the
/// hooks' synchronous prefix: the payload is only there until their first wait (see
/// `eager::ConnectAuth`).
fn emit_auth(s: &SocketRef<Adapter>) {
    let raw = s.extensions.get::<ConnectAuth>();
    match CommonParser.decode_default::<ApiValue>(raw.as_ref().map(|a| &a.0)) {
        Ok(auth) => {
            let _ = s.emit("auth", &auth);
        }
        // The packet parser lets any text through as a CONNECT payload; one that is not JSON
        // cannot be echoed, and the socket stays connected as the core admitted it.
        Err(e) => tracing::debug!(sid = %s.id, error = %e, "conformance: CONNECT payload not JSON"),
    }
}

/// An echo event's handler, run where socketioxide reads the event, so that the answers leave
/// in the order the events came. socketioxide spawns every handler built from an async
/// function as a task of its own: two events of one client could then be answered out of
/// order (a binary event, longer to decode, overtaken by the short one after it).
#[derive(Clone, Copy)]
struct Echo(fn(&SocketRef<Adapter>, Reply, Args));

/// Marker type of [`Echo`]'s `MessageHandler` implementation.
#[derive(Debug)]
struct EchoMarker;

impl MessageHandler<Adapter, EchoMarker> for Echo {
    fn call(&self, s: Arc<Socket<Adapter>>, mut v: Value, ack_id: Option<i64>) {
        // Over budget, the client has already been told (see `Reply`).
        let Ok(reply) = Reply::from_message_parts(&s, &mut v, &ack_id) else {
            return;
        };
        match Data::<Args>::from_message_parts(&s, &mut v, &ack_id) {
            Ok(Data(args)) => (self.0)(&SocketRef::from(s), reply, args),
            Err(e) => tracing::debug!(sid = %s.id, error = %e, "conformance: bad arguments"),
        }
    }
}

/// `message` (…args): `message-back` with the same arguments.
fn message(s: &SocketRef<Adapter>, _reply: Reply, args: Args) {
    let _ = s.emit("message-back", &args);
}

/// `message-with-ack` (…args): the ack carries the same arguments.
fn message_with_ack(_s: &SocketRef<Adapter>, reply: Reply, args: Args) {
    reply.ack_with(&args);
}
