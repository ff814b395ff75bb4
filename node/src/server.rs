//! The node's core as a server: it connects the cluster, builds the Socket.IO server, hands
//! each [`Application`] a [`Setup`], serves the core's namespaces and routes beside the
//! applications', and shuts down gracefully.

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{Router, routing::get};
use futures_util::future::BoxFuture;
use ioscale_adapter::{AdapterConfig, Cluster, Metrics, OutboxLimits, ServerEventHandler};
use prometheus::{IntCounterVec, Registry};
use socketioxide::{SocketIo, TransportType, layer::SocketIoLayer};
use tokio::net::TcpListener;

use crate::{
    address_rate::{self, AddressRate},
    admin_ui,
    admission::Admission,
    api,
    api_keys::ApiKeys,
    app::{Adapter, App, HttpState},
    application::{Application, Setup},
    auth::AuthMode,
    client_script,
    config::{Config, SessionBinding, Transport},
    detach,
    edge::{
        self,
        connections::{Connections, Peer},
    },
    health,
    metrics::NodeMetrics,
    origin::{self, OriginCheck, Origins},
    presence, pubsub,
    session::{
        binding::{BindingLayer, Bindings},
        recovery,
    },
    telemetry,
};

/// Answers server-to-server events with `{node, event, args}`: lets operators and tests check
/// which nodes a server-side emit reached.
struct EchoServerEvents {
    node_id: String,
    counter: IntCounterVec,
    /// The Admin UI's own events go to it (`admin_ui::SERVER_EVENT_PREFIX`).
    admin_ui: Option<Arc<admin_ui::AdminUi>>,
}

impl ServerEventHandler for EchoServerEvents {
    fn on_event(
        &self,
        ns: &str,
        from: &str,
        event: &str,
        args: serde_json::Value,
    ) -> BoxFuture<'static, serde_json::Value> {
        self.counter.with_label_values(&[ns]).inc();
        tracing::debug!(ns, from, event, "server event");
        if let Some(ui) = &self.admin_ui
            && ns == admin_ui::NAMESPACE
            && event.starts_with(admin_ui::SERVER_EVENT_PREFIX)
        {
            let reply = ui.on_server_event(event);
            return Box::pin(async move { reply });
        }
        let reply = serde_json::json!({"node": self.node_id, "event": event, "args": args});
        Box::pin(async move { reply })
    }
}

/// The cluster: Redis when a URL is configured, the node alone otherwise.
async fn connect_cluster(config: &Config, metrics: Metrics) -> anyhow::Result<Cluster> {
    let mut adapter_config = AdapterConfig::new(config.redis_url.clone().unwrap_or_default());
    // Without --node-id the adapter's generated `{HOSTNAME}-{8 hex}` id is used.
    if let Some(id) = &config.node_id {
        adapter_config = adapter_config.with_node_id(id);
    }
    let adapter_config = adapter_config
        .with_metrics(metrics)
        .with_connect_wait(Config::ms(config.redis_connect_wait_ms))
        .with_redis_timeout(Config::ms(config.redis_timeout_ms))
        .with_prefix(&config.redis_prefix)
        .with_request_timeout(Config::ms(config.request_timeout_ms))
        .with_heartbeat_interval(Config::ms(config.heartbeat_interval_ms))
        .with_room_channels(config.room_channels)
        .with_room_unsubscribe_delay(Config::ms(config.room_unsubscribe_delay_ms))
        .with_history(config.history_max_len)
        .with_outbox(OutboxLimits {
            messages: config.outbox_max_messages,
            bytes: config.outbox_max_bytes,
            age: Config::ms(config.outbox_max_age_ms),
        });
    match &config.redis_url {
        Some(_) => Cluster::connect(adapter_config)
            .await
            .context("connecting to redis"),
        None => Cluster::standalone(adapter_config).context("starting without redis"),
    }
}

/// The node's state: cluster, metrics, server-event answers and tracing.
async fn build_app(config: &Config) -> anyhow::Result<Arc<App>> {
    // First: a bad key file stops the start before any wait for Redis.
    let admission = Admission::new(&config.auth, config.max_connections)
        .context("invalid auth configuration")?;
    let api_keys = ApiKeys::load(config).context("invalid server API keys")?;
    let registry = Registry::new();
    let adapter_metrics = Metrics::new(&registry).context("registering adapter metrics")?;
    let node_metrics = NodeMetrics::new(&registry).context("registering node metrics")?;
    let cluster = connect_cluster(config, adapter_metrics).await?;
    let node_id = cluster.node_id().to_owned();
    if telemetry::otlp_requested() {
        cluster.set_trace_propagator(telemetry::OtelPropagator);
    }
    let app = App::new(
        config.clone(),
        node_id,
        cluster,
        node_metrics,
        registry,
        admission,
        api_keys,
    );
    install_server_events(&app, None);
    Ok(app)
}

/// The node's answer to server-to-server events, with the Admin UI's when it is served.
fn install_server_events(app: &App, admin_ui: Option<Arc<admin_ui::AdminUi>>) {
    app.cluster.on_server_event(EchoServerEvents {
        node_id: app.node_id.clone(),
        counter: app.metrics.server_events.clone(),
        admin_ui,
    });
}

/// The Socket.IO server with the cluster adapter and the applications' state, sized by the
/// configuration.
fn socket_io(
    config: &Config,
    app: &Arc<App>,
    setup: &mut Setup<'_>,
) -> (SocketIoLayer<Adapter>, SocketIo<Adapter>) {
    let ws_limit = usize::try_from(config.max_payload_bytes).unwrap_or(usize::MAX);
    let builder = SocketIo::builder()
        .with_state(app.clone())
        .max_buffer_size(config.socket_buffer_packets)
        .ws_read_buffer_size(config.ws_read_buffer_bytes)
        .ping_interval(Config::ms(config.ping_interval_ms))
        .ping_timeout(Config::ms(config.ping_timeout_ms))
        .connect_timeout(Config::ms(config.connect_timeout_ms))
        .ack_timeout(Config::ms(config.ack_timeout_ms))
        .max_payload(config.max_payload_bytes)
        // engineioxide applies `max_payload` to polling only; a WebSocket message has limits
        // of its own (64 MiB by default), held to the same bound here.
        .ws_max_message_size(ws_limit)
        .ws_max_frame_size(ws_limit);
    let builder = setup.add_states(builder);
    let ws = config.transports.contains(&Transport::Websocket);
    let polling = config.transports.contains(&Transport::Polling);
    let builder = match (ws, polling) {
        (true, false) => builder.transports([TransportType::Websocket]),
        (false, true) => builder.transports([TransportType::Polling]),
        _ => builder,
    };
    builder
        .with_adapter::<Adapter>(app.cluster.clone())
        .build_layer()
}

/// The core's own namespaces: `/custom` (the common socket behaviour alone) and `/pubsub`.
fn core_namespaces(setup: &mut Setup<'_>) {
    setup.on_connect("/custom", |_s, _io, _app| async {});
    setup.on_register(pubsub::NAMESPACE, pubsub::register);
    setup.on_disconnect(pubsub::NAMESPACE, presence::Presence::left_all);
}

/// The health routes, on every listener.
fn health_routes() -> Router<HttpState> {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
}

/// The HTTP routes of a node (health, the applications' `routes` and, when `with_admin`,
/// metrics and the server API), without the Socket.IO layer: `run` adds it.
pub fn router(http: HttpState, routes: Router<HttpState>, with_admin: bool) -> Router {
    let mut r = health_routes().merge(routes);
    if with_admin {
        r = r.merge(admin_routes(&http));
    }
    r.with_state(http)
}

/// What `--admin-listen` serves: health, metrics and the server API.
pub fn admin_router(http: HttpState) -> Router {
    health_routes().merge(admin_routes(&http)).with_state(http)
}

fn admin_routes(http: &HttpState) -> Router<HttpState> {
    Router::new()
        .route("/metrics", get(health::metrics))
        .merge(api::router(http.clone()))
}

/// The public listener's router: `routes` inside the Socket.IO layer, wrapped by the checks
/// that must run before it, and the client script's route after it.
fn public_router(
    config: &Config,
    app: &App,
    origins: Origins,
    routes: Router,
    layer: SocketIoLayer<Adapter>,
) -> Router {
    let origin_check = OriginCheck {
        origins: Arc::new(origins),
        refused: app.metrics.origin_refused.clone(),
    };
    let address_rate = Arc::new(AddressRate::new(
        config.handshakes_per_address_per_s,
        config.handshake_burst_per_address,
        config.trust_proxy,
        app.metrics
            .connects_refused
            .with_label_values(&["address_rate"]),
    ));
    let mut routes = routes
        .layer(layer)
        // Right outside the socket.io layer, after every check that reads the head: the head
        // it keeps is a trimmed copy (see `detach`).
        .layer(axum::middleware::map_request(detach::trim_head));
    if config.session_binding == SessionBinding::Address {
        // A polling client requests at least every ping interval; twice the interval and
        // timeout is well past the moment engineioxide closes a silent session.
        let idle = 2 * Config::ms(config.ping_interval_ms + config.ping_timeout_ms);
        let bindings = Bindings::new(
            config.trust_proxy,
            idle,
            app.metrics.session_binding_refused.clone(),
        );
        // Outside the socket.io layer: a request naming a session it is not bound to never
        // reaches it.
        routes = routes.layer(BindingLayer::new(bindings));
    }
    routes
        // Outside the socket.io layer: a refused handshake never makes a session.
        .layer(axum::middleware::from_fn_with_state(
            address_rate,
            address_rate::check,
        ))
        // Outside the socket.io layer: a page that may not connect never reaches it.
        .layer(axum::middleware::from_fn_with_state(
            origin_check,
            origin::check,
        ))
        // After the socket.io layer, which would otherwise take every `/socket.io/` path.
        .route(
            client_script::CLIENT_SCRIPT_ROUTE,
            client_script::client_script_route(config),
        )
}

/// What an operator should know at start: the client script's place, an API that is off, a
/// node without connection auth.
fn log_warnings(config: &Config, app: &App) {
    client_script::log_client_script(config);
    if app.api_keys.is_off() {
        tracing::info!("server API off: no --api-key nor --api-key-file");
    }
    if config.auth.mode == AuthMode::None {
        tracing::warn!(
            "--auth none: any client may connect to any namespace; use --auth jwt in front of \
             real users (README, Security)"
        );
    }
}

/// Runs the node with `applications` on `listener` until `shutdown` resolves, then leaves the
/// cluster, closes the sockets (clients reconnect to other nodes) and returns.
///
/// # Errors
/// Startup failures (bad Redis URL, an application's setup, namespace initialisation) and
/// server errors.
pub async fn run(
    config: Config,
    applications: Vec<Box<dyn Application>>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let origins = Origins::parse(&config.allowed_origins).context("invalid --allowed-origins")?;
    let admin_listener = match config.admin_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding --admin-listen {addr}"))?,
        ),
        None => None,
    };
    let app = build_app(&config).await?;
    let mut setup = Setup::new(&app);
    core_namespaces(&mut setup);
    for a in &applications {
        a.setup(&mut setup)
            .with_context(|| format!("starting application {}", a.name()))?;
    }
    let ui = admin_ui::install(&config, &app, &mut setup)?;
    if ui.is_some() {
        install_server_events(&app, ui.clone());
    }
    // Presence needs Redis; its handle goes to the sockets' state and the API either way.
    let presence = presence::Presence::new(&app, pubsub::NAMESPACE).map(Arc::new);
    let presence_handle = presence::Handle(presence.clone());
    setup.state(presence_handle.clone());
    let (layer, io) = socket_io(&config, &app, &mut setup);
    let mut routes = setup.take_routes();
    setup.serve_namespaces(&io).await?;
    if let Some(ui) = ui {
        admin_ui::serve(ui, &io, &app).await?;
    }
    let sweeper = presence.map(|p| {
        p.serve(&io);
        tokio::spawn(presence::sweep_loop(p, app.clone()))
    });
    let http = HttpState {
        app: app.clone(),
        io: io.clone(),
    };
    let admin = admin_listener.map(|l| {
        let mut r = admin_router(http.clone());
        if config.admin_ui {
            // The UI's page and its namespace on the admin listener only (see `admin_ui`).
            r = r
                .merge(admin_ui::page::routes(&config).with_state(http.clone()))
                .layer(layer.clone())
                .layer(axum::middleware::map_request(detach::trim_head));
        }
        (l, r.layer(axum::Extension(presence_handle.clone())))
    });
    if config.admin_ui && admin.is_none() {
        routes = routes.merge(admin_ui::page::routes(&config));
    }
    let inner = router(http, routes, admin.is_none()).layer(axum::Extension(presence_handle));
    let router = public_router(&config, &app, origins, inner, layer);
    log_warnings(&config, &app);

    let addr = listener.local_addr().context("reading the bound address")?;
    let admin_addr = match &admin {
        Some((l, _)) => Some(l.local_addr().context("reading the admin address")?),
        None => None,
    };
    tracing::info!(
        bound_addr = %addr,
        admin_addr = ?admin_addr,
        node_id = %app.node_id,
        redis = app.cluster.has_redis(),
        sharded = app.cluster.is_sharded(),
        config = ?config,
        applications = ?applications,
        "listening"
    );
    // Sessions of recovering clients are rewritten now and then (see `session::recovery`).
    let refresh =
        (config.recovery_window_ms > 0).then(|| tokio::spawn(recovery::refresh_loop(app.clone())));
    let served = serve(listener, router, admin, shutdown, &app, &io).await;
    for task in refresh.into_iter().chain(sweeper) {
        task.abort();
    }
    served
}

/// Serves until `shutdown`, then shuts down gracefully: not ready, tell the cluster, close the
/// sockets so clients go elsewhere, let the connections finish within the deadline.
async fn serve(
    listener: TcpListener,
    router: Router,
    admin: Option<(TcpListener, Router)>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    app: &Arc<App>,
    io: &SocketIo<Adapter>,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let connections = Connections::new(
        app.config.socket_buffer_bytes,
        Config::ms(app.config.slow_consumer_grace_ms),
        app.metrics.connection_metrics(),
    );
    let listener = connections.listener(listener);
    let router = router.layer(axum::middleware::from_fn_with_state(
        app.clone(),
        edge::gate,
    ));
    let service = router.into_make_service_with_connect_info::<Peer>();
    let server = axum::serve(listener, service).with_graceful_shutdown(async move {
        let _ = stop_rx.await;
    });
    let mut server = tokio::spawn(server.into_future());
    // Metrics and the API stay up while the node drains; the task ends with the process.
    let admin = admin.map(|(l, r)| tokio::spawn(axum::serve(l, r).into_future()));
    tokio::select! {
        res = &mut server => {
            return res.context("server task")?.context("server error");
        }
        () = shutdown => {}
    }
    let deadline = Config::ms(app.config.shutdown_timeout_ms);
    app.begin_shutdown();
    let drain = Config::ms(app.config.shutdown_drain_delay_ms);
    if !drain.is_zero() {
        tracing::info!(node_id = %app.node_id, ?drain, "draining: not ready, refusing handshakes");
        drain_connections(&connections, drain).await;
    }
    tracing::info!(node_id = %app.node_id, "shutting down");
    let _ = tokio::time::timeout(deadline / 2, app.cluster.leave()).await;
    if tokio::time::timeout(deadline / 2, io.close())
        .await
        .is_err()
    {
        tracing::warn!("closing sockets took too long");
    }
    let _ = stop_tx.send(());
    if tokio::time::timeout(deadline / 2, &mut server)
        .await
        .is_err()
    {
        tracing::warn!("connections still open at the deadline; exiting anyway");
        server.abort();
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), app.cluster.shutdown()).await;
    if let Some(admin) = admin {
        admin.abort();
    }
    tracing::info!(node_id = %app.node_id, "stopped");
    Ok(())
}

/// The drain: an eighth of it for load balancers to see the node not ready, then its clients
/// told to go evenly over the next three eighths (they reconnect to the other nodes as a
/// stream, not a storm, each recovering its session), the rest for the stragglers' reconnects
/// (their backoff, up to 1.5 s for socket.io-client's first attempt, and their restores: the
/// old session's node still answers the survivors' requests meanwhile). A longer wait before
/// telling only delays the last client: nginx and HAProxy retry a refused handshake on
/// another node at once, and Kubernetes removes a not-ready endpoint within a second or two.
async fn drain_connections(connections: &Connections, drain: Duration) {
    let tell = async {
        tokio::time::sleep(drain / 8).await;
        let told = connections.tell_to_go(drain * 3 / 8).await;
        tracing::info!(told, "draining: told clients to go");
    };
    tokio::join!(tokio::time::sleep(drain), tell);
}

#[cfg(test)]
mod tests {
    use axum::{
        body::{Body, to_bytes},
        http::{Request, StatusCode, header},
    };
    use tower::ServiceExt as _;

    use super::*;

    async fn node_router(args: &[&str]) -> Router {
        let config =
            Config::parse_from(std::iter::once("ioscale-node").chain(args.iter().copied()));
        let app = build_app(&config).await.unwrap();
        let (_layer, io) = SocketIo::builder()
            .with_state(app.clone())
            .with_adapter::<Adapter>(app.cluster.clone())
            .build_layer();
        io.ns("/", async |_: socketioxide::extract::SocketRef<Adapter>| {})
            .await
            .unwrap();
        router(HttpState { app, io }, Router::new(), true)
    }

    async fn get(router: &Router, path: &str, key: Option<&str>) -> (StatusCode, String) {
        let mut req = Request::get(path);
        if let Some(k) = key {
            req = req.header(header::AUTHORIZATION, format!("Bearer {k}"));
        }
        let resp = router
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn health_metrics_and_the_api_answer_in_process() {
        let r = node_router(&["--api-key", "k", "--node-id", "n1"]).await;
        assert_eq!(
            get(&r, "/healthz", None).await,
            (StatusCode::OK, "ok".into())
        );
        let (status, body) = get(&r, "/readyz", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) = get(&r, "/metrics", None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("ioscale_adapter_nodes_alive"), "{body}");
        let (status, body) = get(&r, "/api/v1/nodes", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (&v["ok"], &v["code"]),
            (&false.into(), &"unauthorized".into())
        );
        let id = v["request_id"].as_str().unwrap();
        assert!(
            id.len() == 16 && id.chars().all(|c| c.is_ascii_hexdigit()),
            "{body}"
        );
        let (status, body) = get(&r, "/api/v1/nodes", Some("k")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("\"n1\""), "{body}");
        assert_eq!(get(&r, "/nope", Some("k")).await.0, StatusCode::NOT_FOUND);
    }
}
