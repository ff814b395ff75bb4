//! The nodes on a Redis that takes TLS only (`rediss://`) and an ACL user limited to the
//! cluster's own keys and channels: they connect, become ready and carry a broadcast across
//! nodes. A wrong ACL password or a certificate the node does not trust leaves it not ready,
//! without a crash.

use std::{path::Path, time::Duration};

use anyhow::{Context as _, Result, ensure};
use ioscale_cluster_tests::extra::with_timeout_of;
use ioscale_cluster_tests::fixture::{pubsub_crosses, wait_ready};
use ioscale_cluster_tests::redis::free_port;
use ioscale_cluster_tests::{Agent, NodeOpts, NodeProc, RedisServer, TestLogs};
use serde_json::json;

const PASSWORD: &str = "acl-password-of-the-cluster";

/// A CA and a server certificate for `localhost` / 127.0.0.1 signed by it, with openssl.
fn certificates(dir: &Path) -> Result<()> {
    let run = |args: &[&str]| -> Result<()> {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .context("running openssl")?;
        ensure!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=ioscale test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ])?;
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ])?;
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )?;
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ])?;
    Ok(())
}

/// A Redis whose TLS port is the only one the nodes use, with an ACL user `ioscale` that may
/// only touch `ioscale*` keys and channels. Returns the server and its TLS port.
async fn tls_redis(logs: &TestLogs) -> Result<(RedisServer, u16)> {
    certificates(logs.dir())?;
    let tls_port = free_port()?.to_string();
    let file = |n: &str| logs.file(n).display().to_string();
    let (cert, key, ca) = (file("server.pem"), file("server.key"), file("ca.pem"));
    let user = format!(">{PASSWORD}");
    let args = [
        "--tls-port",
        tls_port.as_str(),
        "--tls-cert-file",
        cert.as_str(),
        "--tls-key-file",
        key.as_str(),
        "--tls-ca-cert-file",
        ca.as_str(),
        "--tls-auth-clients",
        "no",
        "--user",
        "ioscale",
        "on",
        user.as_str(),
        "~ioscale*",
        "&ioscale*",
        "+@all",
    ];
    let redis = RedisServer::start_with(logs, &args).await?;
    Ok((redis, tls_port.parse()?))
}

fn tls_node(name: &str, url: &str, logs: &TestLogs) -> NodeOpts {
    NodeOpts::new(name)
        .with_redis(url)
        .with_api_key("k")
        // rustls reads the trusted roots from here: the test CA.
        .with_env("SSL_CERT_FILE", logs.file("ca.pem").display().to_string())
}

#[tokio::test]
async fn nodes_on_tls_redis_as_an_acl_user_carry_broadcasts_across_nodes() -> Result<()> {
    with_timeout_of(Duration::from_secs(90), async {
        let logs = TestLogs::for_current_test()?;
        let (_redis, port) = tls_redis(&logs).await?;
        let url = format!("rediss://ioscale:{PASSWORD}@localhost:{port}");
        let a = NodeProc::start_in(&logs, tls_node("tls-a", &url, &logs)).await?;
        let b = NodeProc::start_in(&logs, tls_node("tls-b", &url, &logs)).await?;
        wait_ready(&a, Duration::from_secs(10)).await?;
        wait_ready(&b, Duration::from_secs(10)).await?;
        let agent = Agent::spawn_in(&logs).await?;
        pubsub_crosses(&agent, &b.url(), &a.url(), json!("over tls")).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_wrong_acl_password_or_an_untrusted_certificate_leaves_the_node_not_ready() -> Result<()>
{
    with_timeout_of(Duration::from_secs(90), async {
        let logs = TestLogs::for_current_test()?;
        let (_redis, port) = tls_redis(&logs).await?;
        let wrong = format!("rediss://ioscale:wrong@localhost:{port}");
        let bad_password = NodeProc::start_in(&logs, tls_node("bad-pw", &wrong, &logs)).await?;
        let right = format!("rediss://ioscale:{PASSWORD}@localhost:{port}");
        // No SSL_CERT_FILE: the system roots do not include the test CA.
        let untrusted = NodeOpts::new("untrusted")
            .with_redis(right)
            .with_api_key("k");
        let mut untrusted = NodeProc::start_in(&logs, untrusted).await?;
        // Past the node's own connect wait, still not ready, still running.
        tokio::time::sleep(Duration::from_secs(6)).await;
        for node in [&bad_password, &untrusted] {
            let status = node.api().readyz().await?;
            ensure!(status == 503, "{} ready: {status}", node.node_id());
        }
        ensure!(
            untrusted.is_running(),
            "the node exited:\n{}",
            untrusted.log()
        );
        Ok(())
    })
    .await
}
