//! Handshakes per client address: a new Engine.IO session over the address's budget is
//! refused with HTTP 429 `{ok: false, code: "busy"}` before any session exists, and counted;
//! the official client sees a `connect_error`. Behind a proxy (`--trust-proxy`) the budget is
//! per `X-Forwarded-For` address; without it the header is ignored.

use std::time::Duration;

use anyhow::{Result, ensure};
use ioscale_cluster_tests::extra::{metric, with_timeout_of};
use ioscale_cluster_tests::{Agent, Cluster, ConnectOpts, Transport};
use serde_json::Value;

const LIMITS: [&str; 4] = [
    "--handshakes-per-address-per-s",
    "1",
    "--handshake-burst-per-address",
    "3",
];

/// Opens an Engine.IO polling session; returns the status and body.
async fn handshake(base: &str, forwarded_for: Option<&str>) -> Result<(u16, String)> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut req = client.get(format!("{base}/socket.io/?EIO=4&transport=polling"));
    if let Some(a) = forwarded_for {
        req = req.header("x-forwarded-for", a);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let retry_after = resp.headers().get("retry-after").cloned();
    let body = resp.text().await?;
    if status == 429 {
        let v: Value = serde_json::from_str(&body)?;
        ensure!(
            v["ok"] == false && v["code"] == "busy" && retry_after.is_some(),
            "a 429 without its refusal body or Retry-After: {body}"
        );
    }
    Ok((status, body))
}

#[tokio::test]
async fn handshakes_over_an_addresss_budget_are_refused_and_counted() -> Result<()> {
    with_timeout_of(Duration::from_secs(60), async {
        let cluster = Cluster::builder()
            .nodes(1)
            .node_args(LIMITS)
            .start()
            .await?;
        let base = cluster.node(0).url();
        // Started before the budget is spent: the bucket refills a token a second, and a
        // client process starting on a loaded machine can take that long.
        let agent = Agent::spawn().await?;
        for i in 0..3 {
            let (status, body) = handshake(&base, None).await?;
            ensure!(
                status == 200 && body.starts_with('0'),
                "handshake {i}: {status} {body}"
            );
        }
        // Without --trust-proxy the header does not buy a new budget.
        let (status, body) = handshake(&base, Some("192.0.2.1")).await?;
        ensure!(status == 429, "over the burst: {status} {body}");
        let opts = ConnectOpts::new(Transport::Polling).namespace("/pubsub");
        let refused = agent.connect("late", &base, &opts).await;
        ensure!(
            refused.is_err(),
            "the official client connected over the budget"
        );
        let n = metric(
            &cluster.api(0),
            "ioscale_connect_refused_total",
            &[("reason", "address_rate")],
        )
        .await?;
        ensure!(n >= 2.0, "address_rate refusals counted: {n}");
        // The bucket refills at its rate.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (status, body) = handshake(&base, None).await?;
        ensure!(status == 200, "after a second: {status} {body}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_address_has_its_own_budget() -> Result<()> {
    with_timeout_of(Duration::from_secs(60), async {
        let mut args = LIMITS.to_vec();
        args.push("--trust-proxy");
        let cluster = Cluster::builder().nodes(1).node_args(args).start().await?;
        let base = cluster.node(0).url();
        // The client's own entry comes first and is not believed: the proxy's last one is.
        let alice = "203.0.113.5, 198.51.100.1";
        for i in 0..3 {
            let (status, body) = handshake(&base, Some(alice)).await?;
            ensure!(status == 200, "alice {i}: {status} {body}");
        }
        let (status, _) = handshake(&base, Some("203.0.113.99, 198.51.100.1")).await?;
        ensure!(
            status == 429,
            "the same proxied address with another forged entry: {status}"
        );
        let (status, body) = handshake(&base, Some("198.51.100.2")).await?;
        ensure!(status == 200, "another address: {status} {body}");
        Ok(())
    })
    .await
}
