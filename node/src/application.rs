//! How applications plug into a node: each one adds its state, namespaces and HTTP routes to
//! the [`Setup`] the core hands it, and the core serves them beside its own (`/custom`,
//! `/pubsub`, the server API). The core never names an application.

use std::{collections::BTreeMap, fmt, future::Future, sync::Arc};

use anyhow::Context as _;
use axum::Router;
use futures_util::future::{BoxFuture, join_all};
use socketioxide::{SocketIo, SocketIoBuilder, extract::SocketRef, handler::ConnectHandler as _};

use crate::{
    app::{Adapter, App, HttpState, Register},
    eager::Eager,
    handshake,
    sockets::{self, OnDisconnect},
};

/// What an application does when a socket connects to one of its namespaces, after the core's
/// common connect (own-id room, `set-data`, metrics, cleanup on disconnect).
pub type ConnectHook = Arc<
    dyn Fn(SocketRef<Adapter>, SocketIo<Adapter>, Arc<App>) -> BoxFuture<'static, ()> + Send + Sync,
>;

type AddState = Box<dyn FnOnce(SocketIoBuilder) -> SocketIoBuilder + Send>;

/// An application a node serves: the seed applications, or anyone's built on the core.
pub trait Application: fmt::Debug + Send + Sync {
    /// A short name, for logs.
    fn name(&self) -> &'static str;

    /// Adds the application's state, namespaces and routes to the node.
    ///
    /// # Errors
    /// What keeps the application from starting (its metrics, its configuration).
    fn setup(&self, setup: &mut Setup<'_>) -> anyhow::Result<()>;
}

#[derive(Default)]
struct NamespaceHooks {
    register: Vec<Register>,
    connect: Vec<ConnectHook>,
    disconnect: Vec<OnDisconnect>,
}

/// A namespace's hooks once collected: the disconnect work shared by every socket.
struct Served {
    connect: Vec<ConnectHook>,
    disconnect: Arc<[OnDisconnect]>,
}

/// What applications add to a node, collected before the Socket.IO server is built.
pub struct Setup<'a> {
    app: &'a Arc<App>,
    states: Vec<AddState>,
    namespaces: BTreeMap<String, NamespaceHooks>,
    routes: Router<HttpState>,
}

impl fmt::Debug for Setup<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Setup")
            .field("states", &self.states.len())
            .field("namespaces", &self.namespaces.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl<'a> Setup<'a> {
    /// An empty setup for the node whose shared state is `app`.
    pub fn new(app: &'a Arc<App>) -> Self {
        Self {
            app,
            states: Vec::new(),
            namespaces: BTreeMap::new(),
            routes: Router::new(),
        }
    }

    /// The node's shared state: configuration, cluster, metrics registry.
    pub fn app(&self) -> &Arc<App> {
        self.app
    }

    /// Makes `state` available to every socket handler (socketioxide's `State<S>` extractor).
    pub fn state<S: Clone + Send + Sync + 'static>(&mut self, state: S) {
        self.states.push(Box::new(move |b| b.with_state(state)));
    }

    /// Runs `hook` for every socket connecting to `ns`. Several applications may share a
    /// namespace: their hooks run in the order they were added, and each one's event handlers
    /// are registered before the client can send anything (see `eager`).
    pub fn on_connect<F, Fut>(&mut self, ns: &str, hook: F)
    where
        F: Fn(SocketRef<Adapter>, SocketIo<Adapter>, Arc<App>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let hook: ConnectHook = Arc::new(move |s, io, app| Box::pin(hook(s, io, app)));
        self.hooks(ns).connect.push(hook);
    }

    /// Runs `then` when a socket of `ns` disconnects, after the core's cleanup.
    /// Adds a registration of event handlers of namespace `ns`, run before the client hears
    /// it is connected (see [`Register`]).
    pub fn on_register(&mut self, ns: &str, register: Register) {
        self.hooks(ns).register.push(register);
    }

    pub fn on_disconnect(&mut self, ns: &str, then: OnDisconnect) {
        self.hooks(ns).disconnect.push(then);
    }

    /// Adds HTTP routes (outside `/socket.io/`, which the Socket.IO layer owns).
    pub fn routes(&mut self, routes: Router<HttpState>) {
        self.routes = std::mem::take(&mut self.routes).merge(routes);
    }

    fn hooks(&mut self, ns: &str) -> &mut NamespaceHooks {
        self.namespaces.entry(ns.to_owned()).or_default()
    }

    /// The namespaces the applications serve.
    pub fn namespace_names(&self) -> Vec<String> {
        self.namespaces.keys().cloned().collect()
    }

    /// The Socket.IO builder with every application's state added.
    pub(crate) fn add_states(&mut self, mut builder: SocketIoBuilder) -> SocketIoBuilder {
        for add in self.states.drain(..) {
            builder = add(builder);
        }
        builder
    }

    /// The routes the applications added.
    pub(crate) fn take_routes(&mut self) -> Router<HttpState> {
        std::mem::take(&mut self.routes)
    }

    /// Serves every namespace an application asked for on `io`.
    pub(crate) async fn serve_namespaces(self, io: &SocketIo<Adapter>) -> anyhow::Result<()> {
        let registers = self
            .namespaces
            .iter()
            .filter(|(_, h)| !h.register.is_empty())
            .map(|(ns, h)| (ns.clone(), h.register.clone()))
            .collect();
        if self.app.registers.set(registers).is_err() {
            anyhow::bail!("namespaces served twice");
        }
        for (ns, hooks) in self.namespaces {
            let hooks = Arc::new(Served {
                connect: hooks.connect,
                disconnect: hooks.disconnect.into(),
            });
            let handler = Eager(move |s: SocketRef<Adapter>, io: SocketIo<Adapter>, app| {
                let hooks = hooks.clone();
                async move {
                    sockets::common_connect(&s, &app, hooks.disconnect.clone());
                    // `join_all` polls every hook once, in order, on its first poll: each
                    // hook's registrations run before the first real wait of any of them.
                    let runs = hooks
                        .connect
                        .iter()
                        .map(|h| h(s.clone(), io.clone(), app.clone()));
                    join_all(runs).await;
                }
            });
            // Every namespace admits its sockets the same way (see `admission`).
            io.ns(ns.clone(), handler.with(handshake::middleware))
                .await
                .with_context(|| format!("namespace {ns}"))?;
        }
        Ok(())
    }
}
