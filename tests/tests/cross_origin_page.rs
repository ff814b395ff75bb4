//! A page on another origin than the node, in a real browser (headless Chromium, see
//! `tests/src/browser.rs`), connecting over polling only: with the default
//! `--allowed-origins *` it connects and exchanges a message, once as socket.io-client does by
//! default (simple requests, no preflight) and once with `withCredentials` and an extra header
//! (every poll preflighted, the answer echoing the page with credentials); a node listing the
//! page connects it the same way, and a node listing another page refuses it (the page sees a
//! `connect_error`, the node counts the refusals and makes no connection).
//!
//! The page comes from a tiny HTTP server in the test process on its own port: another port
//! on 127.0.0.1 is another origin to the browser.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use ioscale_cluster_tests::browser::{Browser, ensure_client_script};
use ioscale_cluster_tests::extra::{metric, with_timeout_of};
use ioscale_cluster_tests::logs::TestLogs;
use ioscale_cluster_tests::{Agent, NodeOpts, NodeProc};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Page loads and waits on a busy 2-core machine.
const UI: Duration = Duration::from_secs(20);
/// The whole test: nodes, Chromium's launch, pages.
const LIMIT: Duration = Duration::from_secs(150);

/// The page: loads the node's client script (the node is named in `?node=`), then opens two
/// polling-only sockets on `/custom` and shows what happened in `#plain` and `#credentials`:
/// `answer <transport> <ack>` once the node acked a `set-data`, else the `connect_error`.
/// No reconnection, so a refused page makes a known number of requests.
const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>cross-origin page</title></head>
<body>
<p>plain: <span id="plain">loading</span></p>
<p>credentials: <span id="credentials">loading</span></p>
<script>
const node = new URLSearchParams(location.search).get("node");
const show = (id, text) => { document.getElementById(id).textContent = text; };
function run(id, extra) {
  const opts = { transports: ["polling"], upgrade: false, forceNew: true, reconnection: false };
  const socket = io(node + "/custom", Object.assign(opts, extra));
  socket.on("connect", () => {
    show(id, "connected");
    socket.timeout(10000).emit("set-data", { page: id }, (err, ack) => {
      const transport = socket.io.engine.transport.name;
      show(id, err ? "no answer: " + err.message : "answer " + transport + " " + JSON.stringify(ack));
    });
  });
  socket.on("connect_error", (err) => show(id, "connect_error: " + err.message));
}
const script = document.createElement("script");
script.src = node + "/socket.io/socket.io.js";
script.onload = () => {
  run("plain", {});
  run("credentials", { withCredentials: true, extraHeaders: { "x-page": "cross-origin" } });
};
script.onerror = () => { show("plain", "no client script"); show("credentials", "no client script"); };
document.head.appendChild(script);
</script>
</body></html>
"#;

/// What each socket of an allowed page shows in the end.
const ANSWERED: &str = r#"answer polling {"ok":true}"#;

/// Serves [`PAGE`] at `/page` (and nothing, 204, elsewhere) on an ephemeral port of 127.0.0.1; its origin
/// and the server's task (abort it at the end).
async fn serve_page() -> Result<(String, JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let origin = format!("http://{}", listener.local_addr()?);
    let task = tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            // Bounded, so a stuck browser connection cannot hold a task past the test.
            tokio::spawn(tokio::time::timeout(Duration::from_secs(10), answer(conn)));
        }
    });
    Ok((origin, task))
}

/// Reads one request head from `conn` and answers it, then closes.
async fn answer(mut conn: TcpStream) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split(' ').nth(1).unwrap_or("");
    let (status, body) = if path.starts_with("/page") {
        ("200 OK", PAGE)
    } else {
        // The browser's `/favicon.ico`: a 404 would be a console error on the page.
        ("204 No Content", "")
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(resp.as_bytes()).await?;
    conn.shutdown().await
}

/// Opens the page as `name`, pointed at `node`, and returns once it loaded.
async fn open(b: &Browser<'_>, name: &str, page_origin: &str, node: &NodeProc) -> Result<()> {
    let url = format!("{page_origin}/page?node={}", node.url());
    let status = b.open(name, &url, UI).await?;
    ensure!(status == 200, "page {name}: HTTP {status}");
    Ok(())
}

/// A node, in memory, logging into `logs`, with `args`.
async fn node(logs: &TestLogs, name: &str, args: &[&str]) -> Result<NodeProc> {
    NodeProc::start_in(logs, NodeOpts::new(name).with_args(args.iter().copied()))
        .await
        .with_context(|| format!("starting {name}"))
}

/// Runs `body` with a page server and a launched Chromium; always closes both.
async fn with_browser<F>(body: F) -> Result<()>
where
    F: AsyncFnOnce(&TestLogs, &str, &Browser<'_>) -> Result<()>,
{
    ensure_client_script().await?;
    let logs = TestLogs::for_current_test()?;
    let (page_origin, server) = serve_page().await?;
    let agent = Agent::spawn().await?;
    let browser = Browser::launch(&agent).await?;
    eprintln!("chromium {}, page origin {page_origin}", browser.version);
    let result = body(&logs, &page_origin, &browser).await;
    let closed = browser.close().await;
    server.abort();
    result?;
    closed
}

/// With the default `*` any page polls the node from its own origin, with or without
/// credentials; a node listing the page does the same.
#[tokio::test]
async fn a_page_on_another_origin_polls_a_node_that_allows_it() -> Result<()> {
    with_timeout_of(
        LIMIT,
        with_browser(async |logs, page_origin, b| {
            let any = node(logs, "node-any", &[]).await?;
            let listed = node(logs, "node-listed", &["--allowed-origins", page_origin]).await?;
            for (name, node) in [("any", &any), ("listed", &listed)] {
                open(b, name, page_origin, node).await?;
                for socket in ["#plain", "#credentials"] {
                    b.wait_text(name, socket, ANSWERED, UI).await?;
                }
                b.screenshot(name, &logs.file(&format!("page-{name}.png")))
                    .await?;
                // Any CORS refusal would be a console error.
                let errors = b.errors(name).await?;
                ensure!(errors.is_empty(), "page {name} logged errors: {errors:?}");
                // The node saw both sockets, connected over polling.
                let labels = [("namespace", "/custom"), ("transport", "polling")];
                let api = node.api();
                let active = metric(&api, "ioscale_connections_active", &labels).await?;
                ensure!(
                    active == 2.0,
                    "node {name}: {active} polling sockets on /custom"
                );
                let refused = metric(&api, "ioscale_http_origin_refused_total", &[]).await?;
                ensure!(refused == 0.0, "node {name}: {refused} refusals");
            }
            Ok(())
        }),
    )
    .await
}

/// A node listing another page refuses this one: the page shows a `connect_error` on both
/// sockets, the node counts one refused request for each (the plain socket's first poll, the
/// other's preflight) and never connects a socket.
#[tokio::test]
async fn a_page_the_node_does_not_list_is_refused() -> Result<()> {
    with_timeout_of(
        LIMIT,
        with_browser(async |logs, page_origin, b| {
            // Another port than the page's: another origin.
            let other = node(
                logs,
                "node-other",
                &["--allowed-origins", "http://127.0.0.1:1"],
            )
            .await?;
            open(b, "refused", page_origin, &other).await?;
            for socket in ["#plain", "#credentials"] {
                b.wait_text("refused", socket, "connect_error", UI).await?;
            }
            b.screenshot("refused", &logs.file("page-refused.png"))
                .await?;
            let api = other.api();
            let refused = metric(&api, "ioscale_http_origin_refused_total", &[]).await?;
            ensure!(refused == 2.0, "{refused} refusals counted, expected 2");
            let connected = metric(&api, "ioscale_connections_total", &[]).await?;
            ensure!(connected == 0.0, "{connected} sockets connected");
            let shown = b.texts("refused", "span").await?;
            ensure!(
                shown.iter().all(|t| t.starts_with("connect_error")),
                "the page shows {shown:?}"
            );
            Ok(())
        }),
    )
    .await
}
