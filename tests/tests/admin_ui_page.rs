//! The official Admin UI page in a real browser: headless Chromium opens the page one node of
//! three serves, logs in, and sees the sockets of all three nodes; a disconnect clicked in the
//! page disconnects a socket held by another node. Screenshots go to the test's log directory.

use std::time::Duration;

use anyhow::{Result, ensure};
use ioscale_cluster_tests::browser::Browser;
use ioscale_cluster_tests::{Agent, Cluster, EVENT_TIMEOUT, Transport, connect_spread};

/// Page loads, clicks and waits on a busy 2-core machine.
const UI: Duration = Duration::from_secs(20);
const PASSWORD: &str = "correct horse";

#[tokio::test]
async fn the_page_on_one_node_sees_and_disconnects_sockets_of_all_nodes() -> Result<()> {
    let hash = bcrypt::hash(PASSWORD, 4)?;
    let cluster = Cluster::builder()
        .nodes(3)
        .node_args(["--admin-ui", "--admin-ui-password-bcrypt", &hash])
        .start()
        .await?;
    let agent = Agent::spawn().await?;
    // On `/`, the namespace the page shows first.
    let clients = connect_spread(&cluster, &agent, Transport::Websocket, "/", "c", 3).await?;
    let shot = |name: &str| cluster.logs().file(&format!("admin-ui-{name}.png"));
    let b = Browser::launch(&agent).await?;
    let url = cluster.node(0).url();

    let status = b.open("ui", &format!("{url}/admin-ui/"), UI).await?;
    ensure!(status == 200, "page: HTTP {status}");
    b.fill("ui", r#"label:has-text("Server URL") + input"#, &url, UI)
        .await?;
    b.fill("ui", r#"label:has-text("Username") + input"#, "admin", UI)
        .await?;
    b.fill("ui", r#"label:has-text("Password") + input"#, PASSWORD, UI)
        .await?;
    b.click("ui", r#"button:has-text("Connect")"#, UI).await?;
    b.screenshot("ui", &shot("dashboard")).await?;

    // The sockets page lists the sockets of every node, by their public ids.
    b.goto("ui", &format!("{url}/admin-ui/#/sockets/"), UI)
        .await?;
    for c in &clients {
        b.wait_text("ui", "table", &c.id, UI).await?;
    }
    b.screenshot("ui", &shot("sockets")).await?;

    // The servers page: three nodes.
    b.goto("ui", &format!("{url}/admin-ui/#/servers/"), UI)
        .await?;
    for i in 0..3 {
        b.wait_text("ui", "table", cluster.node(i).node_id(), UI)
            .await?;
    }
    b.screenshot("ui", &shot("servers")).await?;

    // The socket held by node 3, disconnected from the page served by node 1.
    let target = &clients[2];
    ensure!(target.node == 2);
    b.goto(
        "ui",
        &format!("{url}/admin-ui/#/n/%2F/sockets/{}", target.id),
        UI,
    )
    .await?;
    b.wait_text("ui", "body", &target.id, UI).await?;
    b.screenshot("ui", &shot("socket")).await?;
    b.click("ui", "button:has(.mdi-logout)", UI).await?;
    let reasons = agent
        .wait_disconnect(&target.name, 1, EVENT_TIMEOUT)
        .await?;
    ensure!(reasons == ["io server disconnect"], "{reasons:?}");
    for other in &clients[..2] {
        ensure!(
            agent.state(&other.name).await?.connected,
            "{} was disconnected too",
            other.name
        );
    }
    let errors = b.errors("ui").await?;
    ensure!(errors.is_empty(), "the page logged errors: {errors:?}");
    for name in ["dashboard", "sockets", "servers", "socket"] {
        ensure!(
            std::fs::metadata(shot(name))?.len() > 1000,
            "screenshot {name} is empty"
        );
    }
    b.close().await
}
