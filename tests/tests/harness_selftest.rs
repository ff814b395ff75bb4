//! Self-test of the harness pieces that do not need `ioscale-node`: Redis
//! (standalone, restart on the same port, 3-master cluster) and the JS agent,
//! plus one check that a node process can be started, found and stopped.

use std::time::Duration;

use anyhow::{Result, ensure};
use ioscale_cluster_tests::http::Method;
use ioscale_cluster_tests::redis::{Resp, command};
use ioscale_cluster_tests::{Agent, NodeOpts, NodeProc, RedisCluster, RedisServer, with_timeout};

/// A standalone server answers PING, dies on kill, and comes back on the same
/// port after restart (which Redis-outage tests rely on).
#[tokio::test]
async fn standalone_redis_kill_and_restart_on_same_port() -> Result<()> {
    with_timeout(async {
        let mut redis = RedisServer::start().await?;
        let port = redis.port();
        ensure!(redis.url() == format!("redis://127.0.0.1:{port}"));
        ensure!(redis.ping().await, "fresh server must answer PING");
        ensure!(redis.cli(&["PING"]).await?.trim() == "PONG");
        redis.cli(&["SET", "k", "v"]).await?;
        ensure!(redis.cli(&["GET", "k"]).await?.trim() == "v");

        redis.kill();
        ensure!(!redis.ping().await, "killed server must not answer");

        redis.restart().await?;
        ensure!(redis.port() == port, "restart must reuse the port");
        ensure!(redis.ping().await, "restarted server must answer PING");
        // Persistence is off, so a restart loses data, like a real crash of a
        // cache-only Redis.
        ensure!(redis.cli(&["GET", "k"]).await?.trim().is_empty());
        Ok(())
    })
    .await
}

/// SIGSTOP freezes the server without closing its port; SIGCONT resumes it.
#[tokio::test]
async fn standalone_redis_stop_and_continue() -> Result<()> {
    with_timeout(async {
        let redis = RedisServer::start().await?;
        redis.sigstop()?;
        ensure!(
            !redis.ping().await,
            "stopped server must not answer in time"
        );
        redis.sigcont()?;
        ensure!(redis.ping().await, "continued server must answer");
        Ok(())
    })
    .await
}

/// Two servers started at once get distinct ports.
#[tokio::test]
async fn two_servers_get_distinct_ports() -> Result<()> {
    with_timeout(async {
        let (a, b) = tokio::join!(RedisServer::start(), RedisServer::start());
        let (a, b) = (a?, b?);
        ensure!(a.port() != b.port());
        ensure!(a.ping().await && b.ping().await);
        Ok(())
    })
    .await
}

/// Three masters form a healthy cluster covering every slot, and the URL is in
/// fred's `redis-cluster://` form.
#[tokio::test]
async fn redis_cluster_of_three_masters() -> Result<()> {
    with_timeout(async {
        let cluster = RedisCluster::start(3).await?;
        let ports = cluster.ports();
        ensure!(ports.len() == 3);
        ensure!(
            cluster.url()
                == format!(
                    "redis-cluster://127.0.0.1:{}?node=127.0.0.1:{}&node=127.0.0.1:{}",
                    ports[0], ports[1], ports[2]
                )
        );
        for port in ports {
            let info = command(port, &["CLUSTER", "INFO"])
                .await?
                .as_text()
                .unwrap_or_default();
            ensure!(info.contains("cluster_state:ok"), "{info}");
            ensure!(info.contains("cluster_slots_assigned:16384"), "{info}");
            ensure!(info.contains("cluster_known_nodes:3"), "{info}");
        }
        // A key on the wrong master is redirected, proving slots are split.
        let replies: Vec<Resp> = futures_redirects(&cluster).await?;
        ensure!(
            replies
                .iter()
                .any(|r| matches!(r, Resp::Error(e) if e.starts_with("MOVED"))),
            "some master must redirect: {replies:?}"
        );
        Ok(())
    })
    .await
}

async fn futures_redirects(cluster: &RedisCluster) -> Result<Vec<Resp>> {
    let mut out = Vec::new();
    for port in cluster.ports() {
        out.push(command(port, &["GET", "some-key"]).await?);
    }
    Ok(out)
}

/// The agent starts (installing node_modules if needed), answers commands and
/// reports errors for unknown clients.
#[tokio::test]
async fn agent_starts_and_answers() -> Result<()> {
    with_timeout(async {
        let agent = Agent::spawn().await?;
        let err = agent.state("nobody").await.unwrap_err();
        ensure!(format!("{err:#}").contains("unknown client"), "{err:#}");
        // Connecting to a closed port fails fast instead of hanging.
        let port = ioscale_cluster_tests::redis::free_port()?;
        let opts = ioscale_cluster_tests::ConnectOpts {
            timeout: Duration::from_secs(3),
            ..ioscale_cluster_tests::ConnectOpts::new(ioscale_cluster_tests::Transport::Websocket)
        };
        let r = agent
            .connect("c0", &format!("http://127.0.0.1:{port}"), &opts)
            .await;
        ensure!(r.is_err(), "connect to a closed port must fail: {r:?}");
        Ok(())
    })
    .await
}

/// A node without Redis starts on an ephemeral port, is found through its
/// log line, serves `/healthz`, enforces its API key, and exits cleanly on
/// SIGTERM. (Needs the `ioscale-node` binary.)
#[tokio::test]
async fn node_starts_alone_and_exits_on_sigterm() -> Result<()> {
    with_timeout(async {
        let mut node = NodeProc::start(NodeOpts::new("solo").with_api_key("k")).await?;
        ensure!(node.addr().ip().is_loopback() && node.addr().port() != 0);
        ensure!(node.url() == format!("http://{}", node.addr()));
        ensure!(node.node_id() == "solo");
        ensure!(node.api().healthz().await? == 200);
        // The harness's client carries the key; without it the API refuses.
        ensure!(node.api().nodes().await?.len() == 1);
        let anon = node
            .api()
            .with_key(None)
            .raw(Method::GET, "/api/v1/nodes", None, Duration::from_secs(5))
            .await?;
        ensure!(anon.status == 401, "{anon:?}");

        node.sigterm()?;
        let status = node.wait_exit(Duration::from_secs(15)).await?;
        ensure!(status.success(), "exit status after SIGTERM: {status}");
        ensure!(node.log().contains("listening"));
        Ok(())
    })
    .await
}
