//! The Socket.IO Admin UI's namespace served by a cluster of three nodes (`--admin-ui`), driven
//! by socket.io-client as the UI's page drives it: the login and its refusals, the session id
//! that logs the page in again on another node, `config`, `all_sockets` of every node,
//! `server_stats` of every node, the socket and room events of sockets on other nodes, and the
//! commands acting on sockets of other nodes.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Result, bail, ensure};
use ioscale_cluster_tests::extra::metric_all;
use ioscale_cluster_tests::redis::free_port;
use ioscale_cluster_tests::{
    Agent, Client, Cluster, ConnectOpts, EVENT_TIMEOUT, Transport, connect_spread,
};
use ioscale_cluster_tests::{NodeOpts, NodeProc};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse";
/// Stats come every 2 s from each node; three rounds leave room for a slow machine.
const STATS_WAIT: Duration = Duration::from_secs(7);

async fn cluster() -> Result<Cluster> {
    // Cost 4: the lowest bcrypt allows; the node checks it as it would a cost-12 hash.
    let hash = bcrypt::hash(PASSWORD, 4)?;
    Cluster::builder()
        .nodes(3)
        .node_args(["--admin-ui", "--admin-ui-password-bcrypt", &hash])
        .start()
        .await
}

fn admin_opts(auth: Value) -> ConnectOpts {
    ConnectOpts::new(Transport::Websocket)
        .namespace("/admin")
        .without_whoami()
        .auth(auth)
}

fn login() -> Value {
    json!({"username": "admin", "password": PASSWORD})
}

/// Opens the UI's socket on node `node`, logged in.
async fn open_ui(cluster: &Cluster, agent: &Agent, name: &str, node: usize) -> Result<()> {
    agent
        .connect(name, &cluster.node(node).url(), &admin_opts(login()))
        .await?;
    Ok(())
}

/// The one argument of each `event` the UI got so far.
async fn args_of(agent: &Agent, ui: &str, event: &str) -> Result<Vec<Vec<Value>>> {
    agent.events(ui, event).await
}

/// Waits until `pred` holds for some `event` the UI got.
async fn wait_for(
    agent: &Agent,
    ui: &str,
    event: &str,
    what: &str,
    pred: impl Fn(&[Value]) -> bool,
) -> Result<Vec<Value>> {
    let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        if let Some(found) = args_of(agent, ui, event)
            .await?
            .into_iter()
            .find(|a| pred(a))
        {
            return Ok(found);
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "{ui}: no {event} {what}; got {:?}",
                args_of(agent, ui, event).await?
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_login_is_refused_without_or_with_wrong_credentials() -> Result<()> {
    let cluster = cluster().await?;
    let agent = Agent::spawn().await?;
    let url = cluster.node(0).url();
    for (i, auth) in [
        json!({}),
        json!({"username": "admin", "password": "wrong"}),
        json!({"username": "root", "password": PASSWORD}),
        json!({"sessionId": "0123456789abcdef0123456789abcdef"}),
    ]
    .into_iter()
    .enumerate()
    {
        let err = agent
            .connect(&format!("bad{i}"), &url, &admin_opts(auth.clone()))
            .await
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        ensure!(
            err.contains("invalid credentials"),
            "{auth}: want `invalid credentials`, got {err:?}"
        );
    }
    let metrics = cluster.api(0).metrics().await?;
    ensure!(
        metrics.contains(r#"ioscale_admin_ui_refusals_total{reason="credentials"} 4"#),
        "refusals not counted:\n{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn a_login_gets_a_session_config_and_every_nodes_sockets() -> Result<()> {
    let cluster = cluster().await?;
    let agent = Agent::spawn().await?;
    let clients = connect_spread(&cluster, &agent, Transport::Websocket, "/custom", "c", 6).await?;
    open_ui(&cluster, &agent, "ui", 0).await?;

    let session = agent.wait_count("ui", "session", 1, EVENT_TIMEOUT).await?;
    let session_id = session[0][0].as_str().unwrap_or_default().to_owned();
    ensure!(session_id.len() == 32, "session id {session:?}");
    let config = agent.wait_count("ui", "config", 1, EVENT_TIMEOUT).await?;
    let features = &config[0][0]["supportedFeatures"];
    for f in [
        "EMIT",
        "JOIN",
        "LEAVE",
        "DISCONNECT",
        "MDISCONNECT",
        "AGGREGATED_EVENTS",
        "ALL_EVENTS",
    ] {
        ensure!(
            features.as_array().is_some_and(|a| a.contains(&json!(f))),
            "feature {f} missing: {config:?}"
        );
    }
    let all = agent
        .wait_count("ui", "all_sockets", 1, EVENT_TIMEOUT)
        .await?;
    let listed: Vec<&Value> = all[0][0]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["nsp"] == "/custom")
        .collect();
    let ids: BTreeSet<&str> = listed.iter().filter_map(|s| s["id"].as_str()).collect();
    let want: BTreeSet<&str> = clients.iter().map(|c| c.id.as_str()).collect();
    ensure!(
        ids == want,
        "all_sockets lists {ids:?}, want the public ids {want:?}"
    );
    for s in &listed {
        let id = s["id"].as_str().unwrap_or_default();
        ensure!(
            s["rooms"]
                .as_array()
                .is_some_and(|r| r.contains(&json!(id))),
            "{s}: its own room missing"
        );
        ensure!(s["handshake"]["issued"].is_u64(), "{s}: issued is not ms");
        ensure!(s["clientId"].as_str().is_some_and(|c| c.len() == 12), "{s}");
    }

    // The page keeps the session id and logs in with it alone, here on another node.
    agent
        .connect(
            "ui2",
            &cluster.node(2).url(),
            &admin_opts(json!({"sessionId": session_id})),
        )
        .await?;
    agent
        .wait_count("ui2", "all_sockets", 1, EVENT_TIMEOUT)
        .await?;
    Ok(())
}

#[tokio::test]
async fn every_node_sends_its_stats() -> Result<()> {
    let cluster = cluster().await?;
    let agent = Agent::spawn().await?;
    connect_spread(&cluster, &agent, Transport::Websocket, "/custom", "c", 3).await?;
    open_ui(&cluster, &agent, "ui", 1).await?;
    let deadline = tokio::time::Instant::now() + STATS_WAIT;
    loop {
        let stats = args_of(&agent, "ui", "server_stats").await?;
        let servers: BTreeSet<String> = stats
            .iter()
            .filter_map(|a| a[0]["serverId"].as_str().map(str::to_owned))
            .collect();
        if servers.len() == 3 {
            for a in &stats {
                let s = &a[0];
                ensure!(s["uptime"].is_f64() && s["pid"].is_u64(), "{s}");
                let custom = s["namespaces"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|n| n["name"] == "/custom");
                ensure!(custom.is_some_and(|n| n["socketsCount"].is_u64()), "{s}");
            }
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("stats from {servers:?} only, want 3 nodes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn sockets_and_rooms_of_other_nodes_are_reported() -> Result<()> {
    let cluster = cluster().await?;
    let agent = Agent::spawn().await?;
    open_ui(&cluster, &agent, "ui", 0).await?;
    agent
        .wait_count("ui", "all_sockets", 1, EVENT_TIMEOUT)
        .await?;
    // Node 2 hears of the UI from node 0's announcement.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let opts = ConnectOpts::new(Transport::Websocket).namespace("/pubsub");
    let id = agent.connect("far", &cluster.node(2).url(), &opts).await?;
    wait_for(&agent, "ui", "socket_connected", &id, |a| {
        a[0]["id"] == id.as_str()
    })
    .await?;
    agent
        .emit_with_ack("far", "join", vec![json!("lobby")], EVENT_TIMEOUT)
        .await?;
    wait_for(&agent, "ui", "room_joined", "lobby", |a| {
        a[0] == "/pubsub" && a[1] == "lobby" && a[2] == id.as_str()
    })
    .await?;
    agent.disconnect("far").await?;
    wait_for(&agent, "ui", "socket_disconnected", &id, |a| {
        a[1] == id.as_str() && a[2] == "client namespace disconnect"
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn commands_act_on_sockets_of_other_nodes() -> Result<()> {
    let cluster = cluster().await?;
    let agent = Agent::spawn().await?;
    let clients: Vec<Client> =
        connect_spread(&cluster, &agent, Transport::Websocket, "/custom", "c", 3).await?;
    open_ui(&cluster, &agent, "ui", 0).await?;
    agent
        .wait_count("ui", "all_sockets", 1, EVENT_TIMEOUT)
        .await?;
    let target = &clients[2];
    ensure!(target.node == 2);

    // join: the socket on node 2 is put in a room, and the UI hears of it.
    agent
        .emit(
            "ui",
            "join",
            vec![json!("/custom"), json!("vip"), json!(target.id)],
        )
        .await?;
    wait_for(&agent, "ui", "room_joined", "vip", |a| {
        a[1] == "vip" && a[2] == target.id.as_str()
    })
    .await?;
    let in_vip = cluster.api(1).sockets("/custom", &["vip"]).await?;
    ensure!(
        in_vip.len() == 1 && in_vip[0].id == target.id,
        "vip holds {in_vip:?}"
    );

    // emit: to the room, with two arguments.
    agent
        .emit(
            "ui",
            "emit",
            vec![
                json!("/custom"),
                json!("vip"),
                json!("hello"),
                json!(1),
                json!({"a": 2}),
            ],
        )
        .await?;
    let got = agent
        .wait_count(&target.name, "hello", 1, EVENT_TIMEOUT)
        .await?;
    ensure!(got[0] == vec![json!(1), json!({"a": 2})], "{got:?}");
    for other in &clients[..2] {
        ensure!(agent.events(&other.name, "hello").await?.is_empty());
    }

    // leave, then _disconnect of the one socket.
    agent
        .emit(
            "ui",
            "leave",
            vec![json!("/custom"), json!("vip"), json!(target.id)],
        )
        .await?;
    wait_for(&agent, "ui", "room_left", "vip", |a| a[1] == "vip").await?;
    agent
        .emit(
            "ui",
            "_disconnect",
            vec![json!("/custom"), json!(false), json!(target.id)],
        )
        .await?;
    let reasons = agent
        .wait_disconnect(&target.name, 1, EVENT_TIMEOUT)
        .await?;
    ensure!(reasons == ["io server disconnect"], "{reasons:?}");
    for other in &clients[..2] {
        ensure!(
            agent.state(&other.name).await?.connected,
            "{} was disconnected",
            other.name
        );
    }

    // A malformed command is refused aloud.
    agent.emit("ui", "join", vec![json!(5)]).await?;
    let errors = agent.wait_count("ui", "error", 1, EVENT_TIMEOUT).await?;
    ensure!(
        errors[0][0]["ok"] == false && errors[0][0]["command"] == "join",
        "{errors:?}"
    );
    Ok(())
}

#[tokio::test]
async fn the_page_is_served_without_anything_from_outside() -> Result<()> {
    let cluster = cluster().await?;
    let url = cluster.node(1).url();
    let http = reqwest::Client::new();
    let page = http.get(format!("{url}/admin-ui/")).send().await?;
    ensure!(page.status() == 200, "page: {}", page.status());
    let html = page.text().await?;
    ensure!(html.contains("Socket.IO Admin UI"), "{html}");
    ensure!(
        !html.contains("https://"),
        "the page still loads from a CDN: {html}"
    );
    let css = http
        .get(format!(
            "{url}/admin-ui/mdi/css/materialdesignicons.min.css"
        ))
        .send()
        .await?;
    ensure!(css.status() == 200, "icons: {}", css.status());
    let escape = http
        .get(format!("{url}/admin-ui/..%2F..%2FCargo.toml"))
        .send()
        .await?;
    ensure!(
        escape.status() == 404,
        "path escape answered {}",
        escape.status()
    );
    Ok(())
}

/// The messages every node published of `kind`, summed.
async fn published(cluster: &Cluster, kind: &str) -> Result<f64> {
    let per_node = metric_all(
        cluster,
        "ioscale_adapter_messages_out_total",
        &[("kind", kind)],
    )
    .await?;
    Ok(per_node.iter().sum())
}

/// Broadcasts and server events every node published.
async fn quiet(cluster: &Cluster) -> Result<(f64, f64)> {
    Ok((
        published(cluster, "broadcast").await?,
        published(cluster, "server_event").await?,
    ))
}

#[tokio::test]
async fn nothing_is_sent_for_the_ui_while_none_is_open() -> Result<()> {
    let cluster = cluster().await?;
    let agent = Agent::spawn().await?;
    let before = quiet(&cluster).await?;
    // Sockets come and go, over more than one stats period (2 s).
    let clients = connect_spread(&cluster, &agent, Transport::Websocket, "/custom", "c", 6).await?;
    for c in &clients[..3] {
        agent.disconnect(&c.name).await?;
    }
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let after = quiet(&cluster).await?;
    ensure!(
        after == before,
        "with no UI open the nodes published (broadcasts, server events) {before:?} -> {after:?}"
    );

    // The same with a UI open: its stats and events are published.
    open_ui(&cluster, &agent, "ui", 0).await?;
    agent
        .wait_count("ui", "all_sockets", 1, EVENT_TIMEOUT)
        .await?;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let watched = quiet(&cluster).await?;
    ensure!(
        watched.0 > after.0 && watched.1 > after.1,
        "with a UI open the nodes published nothing for it: {after:?} -> {watched:?}"
    );
    Ok(())
}

#[tokio::test]
async fn with_an_admin_listener_the_ui_is_served_there_only() -> Result<()> {
    let hash = bcrypt::hash(PASSWORD, 4)?;
    let admin = format!("127.0.0.1:{}", free_port()?);
    let opts = NodeOpts::new("ui").with_args([
        "--admin-ui",
        "--admin-ui-password-bcrypt",
        &hash,
        "--admin-listen",
        &admin,
    ]);
    let node = NodeProc::start(opts).await?;
    let (public, admin) = (node.url(), format!("http://{admin}"));
    let agent = Agent::spawn().await?;
    let err = agent
        .connect("outside", &public, &admin_opts(login()))
        .await
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    ensure!(
        err.contains("connect_error"),
        "/admin on the public port: {err:?}"
    );
    agent
        .connect("inside", &admin, &admin_opts(login()))
        .await?;
    agent
        .wait_count("inside", "all_sockets", 1, EVENT_TIMEOUT)
        .await?;
    let http = reqwest::Client::new();
    let on = |base: &str| format!("{base}/admin-ui/");
    ensure!(
        http.get(on(&public)).send().await?.status() == 404,
        "the page on the public port"
    );
    ensure!(
        http.get(on(&admin)).send().await?.status() == 200,
        "the page on the admin port"
    );
    // The applications' namespaces stay on the public port.
    let opts = ConnectOpts::new(Transport::Websocket).namespace("/pubsub");
    agent.connect("app", &public, &opts).await?;
    Ok(())
}
