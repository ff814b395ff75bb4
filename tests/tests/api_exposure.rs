//! Where the server API and the metrics are reachable: with no key configured the API is off
//! (404 on every route, even with a token); several keys all work (rotation); with
//! `--admin-listen` metrics and the API are served on that address only, and the public one
//! keeps health and Socket.IO.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use ioscale_cluster_tests::extra::with_timeout_of;
use ioscale_cluster_tests::redis::free_port;
use ioscale_cluster_tests::{Agent, ConnectOpts, NodeOpts, NodeProc, TestLogs, Transport};
use serde_json::Value;

const T: Duration = Duration::from_secs(10);

async fn get(url: &str, key: Option<&str>) -> Result<(u16, String)> {
    let client = reqwest::Client::builder().timeout(T).build()?;
    let mut req = client.get(url);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.with_context(|| format!("GET {url}"))?;
    Ok((resp.status().as_u16(), resp.text().await?))
}

#[tokio::test]
async fn without_a_key_the_api_is_off_on_every_route() -> Result<()> {
    with_timeout_of(Duration::from_secs(60), async {
        let node = NodeProc::start(NodeOpts::new("nokey")).await?;
        for path in [
            "/api/v1/nodes",
            "/api/v1/sockets?namespace=%2F",
            "/api/v1/nope",
        ] {
            for key in [None, Some("anything")] {
                let (status, body) = get(&format!("{}{path}", node.url()), key).await?;
                let v: Value = serde_json::from_str(&body).context("a JSON error body")?;
                ensure!(
                    status == 404 && v["ok"] == false && v["code"] == "not_found",
                    "GET {path} (key {key:?}): {status} {body}"
                );
                let error = v["error"].as_str().unwrap_or_default();
                ensure!(error.contains("--api-key"), "{body}");
            }
        }
        ensure!(
            node.log().contains("server API off"),
            "no start-up line says so"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn every_configured_key_opens_the_api_so_keys_can_be_rotated() -> Result<()> {
    with_timeout_of(Duration::from_secs(60), async {
        let logs = TestLogs::for_current_test()?;
        let file = logs.file("api-keys");
        std::fs::write(&file, "from-file\n")?;
        let file = file.display().to_string();
        let opts =
            NodeOpts::new("keys").with_args(["--api-key", "old,new", "--api-key-file", &file]);
        let node = NodeProc::start_in(&logs, opts).await?;
        let url = format!("{}/api/v1/nodes", node.url());
        for key in ["old", "new", "from-file"] {
            let (status, body) = get(&url, Some(key)).await?;
            ensure!(status == 200, "key {key}: {status} {body}");
        }
        for key in [None, Some("ol"), Some("old,new")] {
            let (status, body) = get(&url, key).await?;
            ensure!(status == 401, "key {key:?}: {status} {body}");
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn with_admin_listen_metrics_and_the_api_leave_the_public_port() -> Result<()> {
    with_timeout_of(Duration::from_secs(60), async {
        let admin = format!("127.0.0.1:{}", free_port()?);
        let opts = NodeOpts::new("admin").with_args(["--api-key", "k", "--admin-listen", &admin]);
        let node = NodeProc::start(opts).await?;
        let public = node.url();
        let admin = format!("http://{admin}");
        for path in ["/metrics", "/api/v1/nodes"] {
            let (status, body) = get(&format!("{public}{path}"), Some("k")).await?;
            ensure!(status == 404, "public {path}: {status} {body}");
        }
        let (status, body) = get(&format!("{admin}/metrics"), None).await?;
        ensure!(
            status == 200 && body.contains("ioscale_adapter_nodes_alive"),
            "admin /metrics: {status}"
        );
        let (status, body) = get(&format!("{admin}/api/v1/nodes"), Some("k")).await?;
        ensure!(
            status == 200 && body.contains("admin"),
            "admin API: {status} {body}"
        );
        let (status, _) = get(&format!("{admin}/api/v1/nodes"), None).await?;
        ensure!(status == 401, "admin API without the key: {status}");
        for base in [&public, &admin] {
            for path in ["/healthz", "/readyz"] {
                let (status, body) = get(&format!("{base}{path}"), None).await?;
                ensure!(status == 200, "{base}{path}: {status} {body}");
            }
        }
        // Socket.IO stays on the public port.
        let agent = Agent::spawn().await?;
        let opts = ConnectOpts::new(Transport::Websocket).namespace("/pubsub");
        agent.connect("c", &public, &opts).await?;
        Ok(())
    })
    .await
}
