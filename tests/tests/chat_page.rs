//! The chat page of seed "Getting started with Socket.io" in a real browser:
//! headless Chromium (Debian's `chromium`, driven by playwright-core) opens the
//! page on different nodes of a 3-node cluster; a message sent from one page
//! shows up on the others, the history greets a late page, and refused input
//! says why. Screenshots go to the test's log directory.
//!
//! The same pages also chat through each load balancer of `deploy/lb` in front of the nodes
//! (`--trust-proxy`): long-polling, then the upgrade, every request passing the session
//! binding, none refused.
//!
//! Also checks what the page is made of over plain HTTP: `GET /`, its script,
//! and the socket.io client at `/socket.io/socket.io.js` (404 with a log line
//! on a node that does not have it).

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use ioscale_cluster_tests::browser::{Browser, ensure_client_script};
use ioscale_cluster_tests::extra::metric;
use ioscale_cluster_tests::lb::{LbKind, LoadBalancer, trusting_cluster};
use ioscale_cluster_tests::{Agent, Cluster, TestLogs, with_timeout};

/// Page loads, clicks and waits on a busy 2-core machine.
const UI: Duration = Duration::from_secs(15);

async fn get(url: &str) -> Result<(u16, String, Vec<u8>)> {
    let r = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = r.bytes().await?.to_vec();
    Ok((status, ct, body))
}

/// `GET /`, `/js/chat.js` and `/socket.io/socket.io.js` (the npm package's
/// file, byte for byte), and the socket.io endpoint next to them still works.
#[tokio::test]
async fn page_and_client_script_are_served() -> Result<()> {
    with_timeout(async {
        let script = ensure_client_script().await?;
        let mut cluster = Cluster::start(1).await?;
        let base = cluster.node(0).url();

        let (s, ct, body) = get(&format!("{base}/")).await?;
        let html = String::from_utf8_lossy(&body);
        ensure!(
            s == 200 && ct.starts_with("text/html") && html.contains("/socket.io/socket.io.js"),
            "GET /: {s} {ct}"
        );
        let (s, ct, _) = get(&format!("{base}/js/chat.js")).await?;
        ensure!(
            s == 200 && ct.starts_with("text/javascript"),
            "GET /js/chat.js: {s} {ct}"
        );
        let (s, ct, body) = get(&format!("{base}/socket.io/socket.io.js")).await?;
        ensure!(
            s == 200 && ct.starts_with("text/javascript"),
            "GET /socket.io/socket.io.js: {s} {ct}"
        );
        ensure!(
            body == std::fs::read(&script)?,
            "the client script differs from {}",
            script.display()
        );
        let (s, _, body) = get(&format!("{base}/socket.io/?EIO=4&transport=polling")).await?;
        ensure!(
            s == 200 && body.starts_with(b"0{"),
            "the socket.io handshake next to the script: {s} {}",
            String::from_utf8_lossy(&body)
        );

        // A node pointed at a missing script answers 404 and logs why.
        let opts = cluster
            .node_opts(1)
            .with_args(["--client-script-path", "/nonexistent/socket.io.min.js"]);
        let i = cluster.add_node_with(opts).await?;
        let (s, _, _) = get(&format!("{}/socket.io/socket.io.js", cluster.node(i).url())).await?;
        ensure!(s == 404, "missing client script: {s}");
        let log = cluster.node(i).log();
        ensure!(
            log.contains("socket.io client script not found") && log.contains("/nonexistent/"),
            "the node should log where it looked for the script; log:\n{log}"
        );
        Ok(())
    })
    .await
}

/// Two pages on two nodes see each other's messages; a third, late page on
/// the third node gets the history; bad input is refused on the page.
#[tokio::test]
async fn two_browsers_on_two_nodes_chat() -> Result<()> {
    with_timeout(async {
        ensure_client_script().await?;
        let cluster = Cluster::start(3).await?;
        let agent = Agent::spawn().await?;
        let browser = Browser::launch(&agent).await?;
        eprintln!("chromium {}", browser.version);
        // Always close the browser, also when a step fails.
        let result = chat(&cluster, &browser).await;
        let closed = browser.close().await;
        result?;
        closed
    })
    .await
}

/// Two pages opened on a load balancer's address (each lands on a node of its own choosing,
/// pinned by the balancer's cookie) chat; no node refused any of their requests.
#[tokio::test]
async fn two_browsers_chat_through_each_load_balancer() -> Result<()> {
    with_timeout(async {
        ensure_client_script().await?;
        let logs = TestLogs::for_current_test()?;
        let (cluster, addrs) = trusting_cluster(3).await?;
        let agent = Agent::spawn_in(&logs).await?;
        let browser = Browser::launch(&agent).await?;
        let mut result = Ok(());
        for kind in [LbKind::Nginx, LbKind::Haproxy] {
            result = match LoadBalancer::start(&logs, kind, &addrs).await {
                Ok(lb) => chat_through(&browser, &lb, kind.name()).await,
                Err(e) => Err(e),
            };
            if result.is_err() {
                break;
            }
        }
        let closed = browser.close().await;
        result?;
        closed?;
        for (i, n) in cluster.nodes().iter().enumerate() {
            let refused =
                metric(&n.api(), "ioscale_http_session_binding_refused_total", &[]).await?;
            ensure!(
                refused == 0.0,
                "node {i} refused {refused} of the pages' requests"
            );
        }
        Ok(())
    })
    .await
}

/// Pages `{lb}-a` and `{lb}-b` on `lb`: one writes, both show it.
async fn chat_through(b: &Browser<'_>, lb: &LoadBalancer, name: &str) -> Result<()> {
    let (pa, pb) = (format!("{name}-a"), format!("{name}-b"));
    for page in [&pa, &pb] {
        let status = b.open(page, &format!("{}/", lb.url()), UI).await?;
        ensure!(status == 200, "page {page}: HTTP {status}");
        b.wait_text(page, "#status", "connected", UI).await?;
    }
    let text = format!("hello through {name}");
    b.fill(&pa, "#name", "alice", UI).await?;
    b.fill(&pa, "#message", &text, UI).await?;
    b.click(&pa, "#create", UI).await?;
    for page in [&pa, &pb] {
        b.wait_text(page, "#messages li", &text, UI).await?;
        let errors = b.errors(page).await?;
        ensure!(errors.is_empty(), "page {page} logged errors: {errors:?}");
    }
    Ok(())
}

/// Waits (bounded) until the form field `selector` of `page` holds `want`.
async fn wait_value(b: &Browser<'_>, page: &str, selector: &str, want: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + UI;
    loop {
        let v = b.value(page, selector).await?;
        if v == want {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "page {page}: {selector} is {v:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn chat(cluster: &Cluster, b: &Browser<'_>) -> Result<()> {
    let shot = |name: &str| cluster.logs().file(&format!("chat-page-{name}.png"));
    for (page, node) in [("a", 0), ("b", 2)] {
        let status = b
            .open(page, &format!("{}/", cluster.node(node).url()), UI)
            .await?;
        ensure!(status == 200, "page {page}: HTTP {status}");
        b.wait_text(page, "#status", "connected", UI).await?;
    }

    // A (node A) writes; B (node C) sees it, and so does A.
    b.fill("a", "#name", "alice", UI).await?;
    b.fill("a", "#message", "hello from node A", UI).await?;
    b.click("a", "#create", UI).await?;
    for page in ["a", "b"] {
        b.wait_text(page, "#messages li", "hello from node A", UI)
            .await?;
    }
    // The box is emptied once the server acked the message; the name stays.
    wait_value(b, "a", "#message", "").await?;
    let name = b.value("a", "#name").await?;
    ensure!(name == "alice", "page a after sending: name {name:?}");

    // B answers; the text is shown as text, not HTML.
    b.fill("b", "#name", "bob", UI).await?;
    b.fill("b", "#message", "hi <b>alice</b>", UI).await?;
    b.click("b", "#create", UI).await?;
    for page in ["a", "b"] {
        b.wait_text(page, "#messages li", "hi <b>alice</b>", UI)
            .await?;
    }
    for page in ["a", "b"] {
        let items = b.texts(page, "#messages li").await?;
        ensure!(
            items.len() == 2
                && items[0].contains("bob")
                && items[0].contains("hi <b>alice</b>")
                && items[1].contains("alice")
                && items[1].contains("hello from node A"),
            "page {page}: expected bob's then alice's message, newest first: {items:?}"
        );
        let bold = b.texts(page, "#messages b").await?;
        ensure!(
            bold.is_empty(),
            "page {page}: message text became HTML: {bold:?}"
        );
    }

    // A late page on node B gets both from the history, newest first.
    b.open("c", &format!("{}/", cluster.node(1).url()), UI)
        .await?;
    b.wait_text("c", "#messages li", "hello from node A", UI)
        .await?;
    let items = b.texts("c", "#messages li").await?;
    ensure!(
        items.len() == 2 && items[0].contains("hi <b>alice</b>"),
        "late page history: {items:?}"
    );

    // A blank name is refused with the server's reason, and nothing is sent.
    b.fill("c", "#name", "   ", UI).await?;
    b.fill("c", "#message", "nameless", UI).await?;
    b.click("c", "#create", UI).await?;
    b.wait_text("c", "#error", "name must be", UI).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for page in ["a", "b", "c"] {
        let items = b.texts(page, "#messages li").await?;
        ensure!(
            items.len() == 2,
            "page {page}: the refused message was shown: {items:?}"
        );
    }
    // A refused message stays in the box.
    let kept = b.value("c", "#message").await?;
    ensure!(
        kept == "nameless",
        "page c: refused message not kept: {kept:?}"
    );

    for page in ["a", "b", "c"] {
        b.screenshot(page, &shot(page)).await?;
        let errors = b.errors(page).await?;
        ensure!(errors.is_empty(), "page {page} logged errors: {errors:?}");
    }
    for page in ["a", "b", "c"] {
        let meta = std::fs::metadata(shot(page))?;
        ensure!(meta.len() > 1000, "screenshot of page {page} is empty");
    }
    Ok(())
}
