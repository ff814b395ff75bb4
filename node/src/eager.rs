//! Connect handlers that register their event handlers before the client can send anything.
//!
//! socketioxide sends the namespace CONNECT packet, then spawns the (async) connect handler as
//! a task. A client that emits right after it sees CONNECT (socket.io-client flushes its
//! buffered emits at that moment) can be faster than that task: its events find no handler
//! and are dropped silently. [`Eager`] runs the handler's future synchronously up to its first
//! real wait, inside the connect call, so the `s.on(..)` registrations that precede any
//! `.await` are in place before CONNECT is even processed by the client; the rest of the
//! future continues as a task.

use std::{
    future::Future,
    sync::Arc,
    task::{Context, Waker},
};

use socketioxide::{
    SocketIo,
    extract::{SocketRef, State},
    handler::{ConnectHandler, FromConnectParts, Value},
    socket::Socket,
};

use crate::app::{Adapter, App};

/// Wraps `async fn(socket, io, app)` as a connect handler whose synchronous prefix runs at once.
#[derive(Clone)]
pub struct Eager<F>(pub F);

impl<F> std::fmt::Debug for Eager<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Eager")
    }
}

/// The payload of the client's CONNECT packet (socket.io-client's `auth` option), in the
/// socket's extensions while the handler runs its synchronous prefix, when there was one:
/// connect hooks get no extractor for it. Removed after that first poll, so a socket does not
/// carry a copy of its token for its whole life.
#[derive(Debug, Clone)]
pub struct ConnectAuth(pub Value);

/// Marker type of [`Eager`]'s `ConnectHandler` implementation.
#[derive(Debug)]
pub struct EagerMarker;

impl<F, Fut> ConnectHandler<Adapter, EagerMarker> for Eager<F>
where
    F: Fn(SocketRef<Adapter>, SocketIo<Adapter>, Arc<App>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    fn call(&self, s: Arc<Socket<Adapter>>, auth: Option<Value>) {
        let Ok(socket) = SocketRef::<Adapter>::from_connect_parts(&s, &auth);
        let Ok(io) = SocketIo::<Adapter>::from_connect_parts(&s, &auth);
        let app = match State::<Arc<App>>::from_connect_parts(&s, &auth) {
            Ok(State(app)) => app,
            Err(e) => {
                tracing::error!(error = %e, "connect handler without node state");
                return;
            }
        };
        if let Some(auth) = &auth {
            s.extensions.insert(ConnectAuth(auth.clone()));
        }
        let mut fut = Box::pin((self.0)(socket, io, app));
        // A no-op waker is enough for this first poll: whatever the future waits on is polled
        // again, with the task's real waker, once it is spawned.
        let mut cx = Context::from_waker(Waker::noop());
        let pending = fut.as_mut().poll(&mut cx).is_pending();
        if auth.is_some() {
            s.extensions.remove::<ConnectAuth>();
        }
        if pending {
            tokio::spawn(fut);
        }
    }
}
