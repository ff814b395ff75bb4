//! `--allowed-origins`: a node that lists the pages allowed refuses WebSocket upgrades and
//! polls from any other page (403, counted), answers the listed pages' polls with CORS
//! headers and their preflights, and lets clients that send no `Origin` (not browsers)
//! connect as before.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use ioscale_cluster_tests::extra::{metric, with_timeout_of};
use ioscale_cluster_tests::{Agent, Cluster, ConnectOpts, Transport};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest as _, http::HeaderValue};

const GOOD: &str = "https://app.example.com";
const EVIL: &str = "https://evil.example.com";

/// A WebSocket upgrade to the node with `origin`; the HTTP status it got.
async fn upgrade(base: &str, origin: Option<&str>) -> Result<u16> {
    let url = format!(
        "{}/socket.io/?EIO=4&transport=websocket",
        base.replace("http://", "ws://")
    );
    let mut req = url.into_client_request()?;
    if let Some(o) = origin {
        req.headers_mut()
            .insert("origin", HeaderValue::from_str(o)?);
    }
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(req),
    )
    .await
    .context("upgrade timed out")?;
    Ok(match r {
        Ok((_, resp)) => resp.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => anyhow::bail!("upgrade failed: {e}"),
    })
}

#[tokio::test]
async fn only_listed_pages_may_connect_and_get_cors_headers() -> Result<()> {
    with_timeout_of(Duration::from_secs(60), async {
        let cluster = Cluster::builder()
            .nodes(1)
            .node_args([
                "--allowed-origins",
                &format!("{GOOD},http://localhost:8080"),
            ])
            .start()
            .await?;
        let base = cluster.node(0).url();
        ensure!(
            upgrade(&base, Some(EVIL)).await? == 403,
            "an unlisted page upgraded"
        );
        ensure!(
            upgrade(&base, Some(GOOD)).await? == 101,
            "a listed page was refused"
        );
        ensure!(
            upgrade(&base, None).await? == 101,
            "a client without Origin was refused"
        );

        let http = reqwest::Client::new();
        let poll = format!("{base}/socket.io/?EIO=4&transport=polling");
        let evil = http.get(&poll).header("origin", EVIL).send().await?;
        ensure!(evil.status() == 403, "unlisted poll: {}", evil.status());
        let body: serde_json::Value = evil.json().await?;
        ensure!(body["ok"] == false && body["code"] == "forbidden", "{body}");
        let good = http.get(&poll).header("origin", GOOD).send().await?;
        ensure!(good.status() == 200, "listed poll: {}", good.status());
        let allow = good.headers().get("access-control-allow-origin").cloned();
        ensure!(
            allow.as_ref().is_some_and(|v| v == GOOD),
            "CORS origin: {allow:?}"
        );
        let pre = http
            .request(reqwest::Method::OPTIONS, &poll)
            .header("origin", GOOD)
            .header("access-control-request-method", "POST")
            .send()
            .await?;
        ensure!(pre.status() == 204, "preflight: {}", pre.status());
        ensure!(
            pre.headers()
                .get("access-control-allow-credentials")
                .is_some_and(|v| v == "true"),
            "preflight headers: {:?}",
            pre.headers()
        );
        // The official client (no Origin in Node) still connects.
        let agent = Agent::spawn().await?;
        agent
            .connect("node-client", &base, &ConnectOpts::new(Transport::Both))
            .await?;
        let refused = metric(&cluster.api(0), "ioscale_http_origin_refused_total", &[]).await?;
        ensure!(
            refused == 2.0,
            "ioscale_http_origin_refused_total: {refused}"
        );
        Ok(())
    })
    .await
}
