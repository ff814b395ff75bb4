//! A socket id is no key to someone else's session. Client A (the official socket.io-client,
//! long-polling) and client B (raw HTTP from another address, 127.0.0.2) share `/readme` on a
//! two-node cluster. B learns what the applications show of A (`shout`'s `from`): A's public
//! id, not its Engine.IO session id. Then B is handed A's real session id, as a leaked log
//! line or URL would, and tries to send as A and read A's packets, over polling and through a
//! WebSocket upgrade, on A's node and on the other: every attempt gets Engine.IO's answer for
//! an unknown session, nothing reaches anyone, and A goes on working; the same holds behind
//! nginx with `--trust-proxy`. The same attempt on a node started with
//! `--session-binding off` succeeds, which shows what the binding closes.

use std::{net::IpAddr, time::Duration};

use anyhow::{Context, Result, bail, ensure};
use ioscale_cluster_tests::{
    Agent, Cluster, ConnectOpts, EVENT_TIMEOUT, SETTLE, TestLogs, Transport,
    extra::metric,
    lb::{LbKind, LoadBalancer, trusting_cluster},
    with_timeout,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

const NS: &str = "/readme";
const SPOOF: &str = "spoofed by B";
const REFUSED: &str = "ioscale_http_session_binding_refused_total";

/// B's raw Engine.IO long-polling client, from its own loopback address.
struct RawPolling {
    http: reqwest::Client,
    base: String,
    sid: String,
}

fn http_from(addr: &str) -> Result<reqwest::Client> {
    let local: IpAddr = addr.parse()?;
    Ok(reqwest::Client::builder()
        .local_address(local)
        .timeout(Duration::from_secs(30))
        .build()?)
}

fn polling_url(base: &str, sid: Option<&str>) -> String {
    let mut url = format!("{base}/socket.io/?EIO=4&transport=polling");
    if let Some(sid) = sid {
        url.push_str("&sid=");
        url.push_str(sid);
    }
    url
}

impl RawPolling {
    /// Opens a session on `base` from `addr` and connects it to [`NS`].
    async fn open(base: &str, addr: &str) -> Result<Self> {
        let http = http_from(addr)?;
        let body = http
            .get(polling_url(base, None))
            .send()
            .await?
            .text()
            .await?;
        let open: Value = serde_json::from_str(body.strip_prefix('0').context("open packet")?)?;
        let sid = open["sid"].as_str().context("sid")?.to_owned();
        let c = Self {
            http,
            base: base.to_owned(),
            sid,
        };
        ensure!(c.post(&format!("40{NS},")).await? == StatusCode::OK);
        Ok(c)
    }

    async fn post(&self, payload: &str) -> Result<StatusCode> {
        let url = polling_url(&self.base, Some(&self.sid));
        let r = self.http.post(url).body(payload.to_owned()).send().await?;
        Ok(r.status())
    }

    /// Reads until a `shout` of `data` arrives, answering pings; returns its arguments.
    async fn wait_shout(&self, data: &str) -> Result<Vec<Value>> {
        let url = polling_url(&self.base, Some(&self.sid));
        let prefix = format!("42{NS},");
        tokio::time::timeout(EVENT_TIMEOUT * 2, async {
            loop {
                let body = self.http.get(&url).send().await?.text().await?;
                for packet in body.split('\u{1e}') {
                    if packet == "2" {
                        self.post("3").await?;
                    }
                    let Some(json) = packet.strip_prefix(&prefix) else {
                        continue;
                    };
                    let mut args: Vec<Value> = serde_json::from_str(json)?;
                    if args.first().and_then(Value::as_str) == Some("shout")
                        && args.get(1).is_some_and(|a| a["data"] == data)
                    {
                        args.remove(0);
                        return Ok(args);
                    }
                }
            }
        })
        .await
        .with_context(|| format!("B waiting for a shout of {data:?}"))?
    }
}

/// What B gets when it names `sid` on `base`: a poll, a send and a WebSocket upgrade.
async fn attempts(http: &reqwest::Client, base: &str, sid: &str) -> Result<Vec<(String, u16)>> {
    let url = polling_url(base, Some(sid));
    let read = http.get(&url).send().await?;
    let send = http
        .post(&url)
        .body(format!("42{NS},[\"shout\",\"{SPOOF}\"]"))
        .send()
        .await?;
    let ws_url = format!("{base}/socket.io/?EIO=4&transport=websocket&sid={sid}");
    let upgrade = http
        .get(ws_url)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await?;
    let mut out = Vec::new();
    for (what, r) in [("read", read), ("send", send), ("upgrade", upgrade)] {
        let status = r.status().as_u16();
        let body = r.text().await.unwrap_or_default();
        out.push((format!("{what}: {body}"), status));
    }
    Ok(out)
}

/// A on `cluster`'s node 0 over polling, a WebSocket witness on node 1: their public ids and
/// A's session id.
async fn a_and_witness(cluster: &Cluster, agent: &Agent) -> Result<(String, String)> {
    let a_opts = ConnectOpts::new(Transport::Polling).namespace(NS);
    let a_public = agent.connect("a", &cluster.node(0).url(), &a_opts).await?;
    let w_opts = ConnectOpts::new(Transport::Websocket).namespace(NS);
    agent.connect("w", &cluster.node(1).url(), &w_opts).await?;
    let a_sid = agent
        .state("a")
        .await?
        .engine_id
        .context("A's session id")?;
    ensure!(a_public != a_sid, "A's public id is its session id");
    Ok((a_public, a_sid))
}

#[tokio::test]
async fn a_leaked_session_id_opens_nothing_from_another_client() -> Result<()> {
    with_timeout(async {
        let cluster = Cluster::builder().nodes(2).start().await?;
        let agent = Agent::spawn_in(cluster.logs()).await?;
        let (a_public, a_sid) = a_and_witness(&cluster, &agent).await?;
        let b = RawPolling::open(&cluster.node(1).url(), "127.0.0.2").await?;
        tokio::time::sleep(SETTLE).await;

        // What the application shows B of A: the public id only.
        agent.emit("a", "shout", vec![json!("hello")]).await?;
        let shout = b.wait_shout("hello").await?;
        ensure!(
            shout == [json!({"from": a_public, "data": "hello"})],
            "B got {shout:?}; A is {a_public} (session {a_sid})"
        );

        // B holds A's public id and, leaked some other way, its session id: neither opens A's
        // session, on A's node or the other.
        let before = metric(&cluster.node(0).api(), REFUSED, &[]).await?;
        for base in [cluster.node(0).url(), cluster.node(1).url()] {
            for sid in [&a_sid, &a_public] {
                for (what, status) in attempts(&b.http, &base, sid).await? {
                    ensure!(
                        status == 400 && what.contains("Session ID unknown"),
                        "{base} with {sid}: {what} answered {status}"
                    );
                }
            }
        }
        let refused = metric(&cluster.node(0).api(), REFUSED, &[]).await? - before;
        ensure!(refused >= 3.0, "refusals counted on A's node: {refused}");

        // Nothing was sent as A, and A still reads and sends.
        tokio::time::sleep(SETTLE).await;
        let seen = agent.events("w", "shout").await?;
        ensure!(
            !seen
                .iter()
                .any(|args| args.iter().any(|a| a["data"] == SPOOF)),
            "the witness got a spoofed shout: {seen:?}"
        );
        agent
            .emit("w", "shout", vec![json!("still there?")])
            .await?;
        agent.wait_count("a", "shout", 1, EVENT_TIMEOUT).await?;
        agent.emit("a", "shout", vec![json!("yes")]).await?;
        let again = b.wait_shout("yes").await?;
        ensure!(
            again == [json!({"from": a_public, "data": "yes"})],
            "B then got {again:?}"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn without_the_binding_a_leaked_session_id_sends_as_its_client() -> Result<()> {
    with_timeout(async {
        let cluster = Cluster::builder()
            .nodes(2)
            .node_args(["--session-binding", "off"])
            .start()
            .await?;
        let agent = Agent::spawn_in(cluster.logs()).await?;
        let (a_public, a_sid) = a_and_witness(&cluster, &agent).await?;
        let http = http_from("127.0.0.2")?;
        let url = polling_url(&cluster.node(0).url(), Some(&a_sid));
        let r = http
            .post(&url)
            .body(format!("42{NS},[\"shout\",\"{SPOOF}\"]"))
            .send()
            .await?;
        ensure!(
            r.status() == 200,
            "the unbound send answered {}",
            r.status()
        );
        agent.wait_count("w", "shout", 1, EVENT_TIMEOUT).await?;
        let seen = agent.events("w", "shout").await?;
        if seen[0] != [json!({"from": a_public, "data": SPOOF})] {
            bail!("the witness got {seen:?}");
        }
        Ok(())
    })
    .await
}

/// Behind nginx (`deploy/lb`) with `--trust-proxy`, every client reaches the nodes from the
/// balancer's address: the binding holds on the address nginx appends to `X-Forwarded-For`.
/// B sends as A with 60 different affinity cookies, so its requests reach every node, A's
/// included (nginx hashes the cookie), and every one of them is refused.
#[tokio::test]
async fn behind_a_trusted_load_balancer_the_binding_holds_on_the_forwarded_address() -> Result<()> {
    with_timeout(async {
        let logs = TestLogs::for_current_test()?;
        let (cluster, addrs) = trusting_cluster(3).await?;
        let lb = LoadBalancer::start(&logs, LbKind::Nginx, &addrs).await?;
        let agent = Agent::spawn_in(&logs).await?;
        let opts = ConnectOpts::new(Transport::Polling).namespace(NS);
        agent.connect("a", &lb.url(), &opts).await?;
        let a_sid = agent
            .state("a")
            .await?
            .engine_id
            .context("A's session id")?;

        let mut before = Vec::new();
        for n in cluster.nodes() {
            before.push(metric(&n.api(), REFUSED, &[]).await?);
        }
        let http = http_from("127.0.0.2")?;
        let url = polling_url(&lb.url(), Some(&a_sid));
        for key in 0..60 {
            let r = http
                .post(&url)
                .header("cookie", format!("ioscale_affinity=probe-{key}"))
                .body(format!("42{NS},[\"shout\",\"{SPOOF}\"]"))
                .send()
                .await?;
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            ensure!(
                status == 400 && body.contains("Session ID unknown"),
                "affinity {key}: {status} {body}"
            );
        }
        for (i, n) in cluster.nodes().iter().enumerate() {
            let refused = metric(&n.api(), REFUSED, &[]).await? - before[i];
            ensure!(refused >= 1.0, "node {i} refused {refused} of B's requests");
        }
        // A, through the same balancer from its own address, goes on working.
        agent.emit("a", "shout", vec![json!("after")]).await?;
        let ack = agent
            .emit_with_ack("a", "nicknames", vec![], EVENT_TIMEOUT)
            .await?;
        ensure!(ack[0]["nicknames"].is_array(), "A's ack: {ack:?}");
        Ok(())
    })
    .await
}
