//! Connection auth and room permissions across three nodes, with the official socket.io-client
//! and python-socketio: a valid token connects and its rooms work on every node; every bad
//! token is refused at the handshake with its code (and counted); a client cannot join or
//! publish into another socket's id room, a `user:` room or a room its token does not grant,
//! on its own node or another; a user is reachable on every node through `user:<sub>`; and a
//! full node refuses handshakes.

use std::{path::Path, time::Duration};

use anyhow::{Context as _, Result, ensure};
use base64::Engine as _;
use ioscale_cluster_tests::extra::{metric, metric_all, with_timeout_of};
use ioscale_cluster_tests::http::Emit;
use ioscale_cluster_tests::{Agent, Cluster, ConnectOpts, TestLogs, Transport, node, py};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

const ACK: Duration = Duration::from_secs(5);
const SECRET: &str = "a test secret of at least thirty-two bytes";
const AUDIENCE: &str = "ioscale-test";
const REFUSED: &str = "ioscale_connect_refused_total";

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn hs256(claims: &Value, secret: &[u8]) -> String {
    let key = EncodingKey::from_secret(secret).expect("an HMAC key");
    jsonwebtoken::encode(&Header::default(), claims, &key).expect("signing")
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

/// Mints a token with `ioscale-node token`, as a user would.
async fn mint(args: &[&str]) -> Result<String> {
    let out = tokio::process::Command::new(node::node_binary().await?)
        .arg("token")
        .args(args)
        .output()
        .await
        .context("running ioscale-node token")?;
    ensure!(
        out.status.success(),
        "ioscale-node token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

fn pubsub(token: Option<&str>) -> ConnectOpts {
    let opts = ConnectOpts::new(Transport::Websocket).namespace("/pubsub");
    match token {
        Some(t) => opts.auth(json!({ "token": t })),
        None => opts,
    }
}

async fn jwt_cluster(logs_secret: &Path, extra: &[&str]) -> Result<Cluster> {
    let mut args = vec![
        "--auth".to_owned(),
        "jwt".to_owned(),
        "--jwt-secret-file".to_owned(),
        logs_secret.display().to_string(),
        "--jwt-audience".to_owned(),
        AUDIENCE.to_owned(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    Cluster::builder().nodes(3).node_args(args).start().await
}

fn secret_file(logs: &TestLogs) -> Result<std::path::PathBuf> {
    let p = logs.file("jwt-secret");
    std::fs::write(&p, format!("{SECRET}\n"))?;
    Ok(p)
}

#[tokio::test]
async fn every_bad_token_is_refused_at_the_handshake_with_its_code() -> Result<()> {
    with_timeout_of(Duration::from_secs(120), async {
        let logs = TestLogs::for_current_test()?;
        let cluster = jwt_cluster(&secret_file(&logs)?, &[]).await?;
        let agent = Agent::spawn().await?;
        let claims = |extra: Value| {
            let mut c =
                json!({"sub": "alice", "exp": now() + 600, "aud": AUDIENCE, "rooms": ["chat:*"]});
            if let (Some(c), Value::Object(e)) = (c.as_object_mut(), extra) {
                c.extend(e);
            }
            c
        };
        let none = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(&claims(json!({})))
        );
        let cases: Vec<(&str, Option<String>, &str)> = vec![
            ("missing", None, "missing_token"),
            ("malformed", Some("not-a-jwt".to_owned()), "malformed_token"),
            (
                "expired",
                Some(hs256(
                    &claims(json!({"exp": now() - 600})),
                    SECRET.as_bytes(),
                )),
                "expired",
            ),
            (
                "early",
                Some(hs256(
                    &claims(json!({"nbf": now() + 600})),
                    SECRET.as_bytes(),
                )),
                "not_yet_valid",
            ),
            (
                "forged",
                Some(hs256(
                    &claims(json!({})),
                    b"another secret of thirty-two bytes!!",
                )),
                "bad_signature",
            ),
            (
                "audience",
                Some(hs256(
                    &claims(json!({"aud": "someone-else"})),
                    SECRET.as_bytes(),
                )),
                "wrong_audience",
            ),
            ("alg-none", Some(none), "wrong_algorithm"),
            (
                "no-sub",
                Some(hs256(
                    &json!({"exp": now() + 600, "aud": AUDIENCE}),
                    SECRET.as_bytes(),
                )),
                "bad_claims",
            ),
        ];
        for (i, (name, token, code)) in cases.iter().enumerate() {
            let url = cluster.node(i % 3).url();
            let err = agent
                .connect(name, &url, &pubsub(token.as_deref()))
                .await
                .err()
                .with_context(|| format!("{name}: a bad token connected"))?;
            ensure!(
                format!("{err:#}").contains(&format!("connect_error: {code}:")),
                "{name}: expected a connect_error with code {code}, got {err:#}"
            );
        }
        for (_, _, code) in &cases {
            let n: f64 = metric_all(&cluster, REFUSED, &[("reason", code)])
                .await?
                .iter()
                .sum();
            ensure!(
                n == 1.0,
                "{REFUSED}{{reason={code}}} summed over nodes must be 1, got {n}"
            );
        }
        // No node log holds a token, refused or not.
        for entry in std::fs::read_dir(logs.dir())? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.starts_with("node-") {
                let text = std::fs::read_to_string(&path)?;
                for (case, token, _) in &cases {
                    if let Some(t) = token.as_deref().filter(|t| t.len() > 20) {
                        ensure!(!text.contains(t), "{name} logs the {case} token");
                    }
                }
            }
        }
        // A token minted by the node's own command connects.
        let good = mint(&[
            "--sub",
            "alice",
            "--rooms",
            "chat:*",
            "--jwt-secret",
            SECRET,
            "--audience",
            AUDIENCE,
        ])
        .await?;
        agent
            .connect("good", &cluster.node(1).url(), &pubsub(Some(&good)))
            .await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn an_hs_token_against_an_rs_key_is_refused_and_an_rs_token_connects() -> Result<()> {
    with_timeout_of(Duration::from_secs(90), async {
        let logs = TestLogs::for_current_test()?;
        let private = logs.file("rsa.pem");
        let public = logs.file("rsa.pub.pem");
        let keygen = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
            ])
            .arg(&private)
            .output()?;
        ensure!(
            keygen.status.success(),
            "openssl genpkey: {}",
            String::from_utf8_lossy(&keygen.stderr)
        );
        let pubout = std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public)
            .output()?;
        ensure!(
            pubout.status.success(),
            "openssl pkey: {}",
            String::from_utf8_lossy(&pubout.stderr)
        );
        let args = [
            "--auth".to_owned(),
            "jwt".to_owned(),
            "--jwt-algorithm".to_owned(),
            "rs256".to_owned(),
            "--jwt-public-key-file".to_owned(),
            public.display().to_string(),
        ];
        let cluster = Cluster::builder().nodes(1).node_args(args).start().await?;
        let agent = Agent::spawn().await?;
        let url = cluster.node(0).url();
        let good = mint(&[
            "--sub",
            "bob",
            "--jwt-algorithm",
            "rs256",
            "--private-key-file",
            &private.display().to_string(),
        ])
        .await?;
        agent.connect("rs", &url, &pubsub(Some(&good))).await?;
        // The classic confusion: HS256 "signed" with the RSA public key as the secret.
        let pem = std::fs::read(&public)?;
        let forged = hs256(&json!({"sub": "mallory", "exp": now() + 600}), &pem);
        let err = agent
            .connect("hs", &url, &pubsub(Some(&forged)))
            .await
            .err()
            .context("HS256 connected")?;
        ensure!(
            format!("{err:#}").contains("connect_error: wrong_algorithm:"),
            "{err:#}"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn grants_and_reserved_rooms_hold_on_every_node() -> Result<()> {
    with_timeout_of(Duration::from_secs(120), async {
        let logs = TestLogs::for_current_test()?;
        let cluster = jwt_cluster(&secret_file(&logs)?, &[]).await?;
        let agent = Agent::spawn().await?;
        let token = |sub: &str, join: &[&str], publish: &[&str]| {
            hs256(&json!({"sub": sub, "exp": now() + 600, "aud": AUDIENCE, "join": join, "publish": publish}), SECRET.as_bytes())
        };
        let alice = token("alice", &["chat:*"], &["chat:*"]);
        let bob = token("bob", &["chat:*", "news"], &["chat:general"]);
        let a1 = agent.connect("a1", &cluster.node(0).url(), &pubsub(Some(&alice))).await?;
        agent.connect("a2", &cluster.node(1).url(), &pubsub(Some(&alice))).await?;
        agent.connect("b", &cluster.node(2).url(), &pubsub(Some(&bob))).await?;
        let ack = |client: &'static str, event: &'static str, arg: Value| {
            let agent = &agent;
            async move { agent.emit_with_ack(client, event, vec![arg], ACK).await }
        };
        let forbidden = |a: &[Value]| a.len() == 1 && a[0]["ok"] == false && a[0]["code"] == "forbidden";
        // Reserved rooms, whatever the grants: another socket's id room, a user room.
        for room in [json!(a1), json!("user:alice")] {
            let a = ack("b", "join", room.clone()).await?;
            ensure!(forbidden(&a), "bob join {room}: {a:?}");
            let a = ack("b", "publish", json!({"room": room, "data": "x"})).await?;
            ensure!(forbidden(&a), "bob publish {room}: {a:?}");
        }
        // Beyond the grants.
        let a = ack("b", "join", json!("secret")).await?;
        ensure!(forbidden(&a), "bob join secret: {a:?}");
        let a = ack("b", "publish", json!({"room": "chat:random", "data": 1})).await?;
        ensure!(forbidden(&a), "bob publish chat:random (join only): {a:?}");
        // Within them, across nodes.
        for c in ["a1", "a2", "b"] {
            let a = ack(c, "join", json!("chat:general")).await?;
            ensure!(a == [json!({"ok": true})], "{c} join chat:general: {a:?}");
        }
        let a = ack("b", "publish", json!({"room": "chat:general", "data": "hi"})).await?;
        ensure!(a == [json!({"ok": true})], "bob publish chat:general: {a:?}");
        for c in ["a1", "a2"] {
            agent.wait_count(c, "msg", 1, ACK).await?;
        }
        // The server reaches a user on every node; nobody else gets it.
        let api = cluster.api(2);
        let mut emit = Emit::new("private", vec![json!("for alice")]);
        emit.namespace = Some("/pubsub".to_owned());
        emit.rooms = vec!["user:alice".to_owned()];
        api.emit(&emit).await?;
        for c in ["a1", "a2"] {
            agent.wait_count(c, "private", 1, ACK).await?;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        ensure!(agent.events("b", "private").await?.is_empty(), "bob got alice's private event");
        // The user is visible to fetchSockets, and set-data cannot change it.
        let sockets = api.sockets("/pubsub", &["user:alice"]).await?;
        ensure!(
            sockets.len() == 2 && sockets.iter().all(|s| s.data["user"] == "alice"),
            "fetchSockets of user:alice: {sockets:?}"
        );
        let a = ack("b", "set-data", json!({"user": "alice"})).await?;
        ensure!(forbidden(&a), "set-data user: {a:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn python_socketio_sends_its_token_and_sees_refusals_with_codes() -> Result<()> {
    with_timeout_of(Duration::from_secs(120), async {
        let logs = TestLogs::for_current_test()?;
        let cluster = jwt_cluster(&secret_file(&logs)?, &[]).await?;
        let good = hs256(
            &json!({"sub": "py", "exp": now() + 600, "aud": AUDIENCE, "rooms": ["py:*"]}),
            SECRET.as_bytes(),
        );
        let expired = hs256(
            &json!({"sub": "py", "exp": now() - 600, "aud": AUDIENCE}),
            SECRET.as_bytes(),
        );
        let args = [
            cluster.node(1).url(),
            good,
            expired,
            "expired".to_owned(),
            "py:room".to_owned(),
        ];
        let run = py::run_script(&logs, "auth_client.py", &args, Duration::from_secs(60)).await?;
        ensure!(
            run.code == Some(0),
            "auth_client.py: {}\n{}",
            run.stdout,
            run.stderr
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_full_node_refuses_handshakes_and_counts_them() -> Result<()> {
    with_timeout_of(Duration::from_secs(60), async {
        let cluster = Cluster::builder()
            .nodes(1)
            .node_args(["--max-connections", "2"])
            .start()
            .await?;
        let agent = Agent::spawn().await?;
        let url = cluster.node(0).url();
        agent.connect("one", &url, &pubsub(None)).await?;
        agent.connect("two", &url, &pubsub(None)).await?;
        let err = agent
            .connect("three", &url, &pubsub(None))
            .await
            .err()
            .context("a third socket connected")?;
        ensure!(
            format!("{err:#}").contains("connect_error: busy:"),
            "{err:#}"
        );
        let n = metric(&cluster.api(0), REFUSED, &[("reason", "connection_limit")]).await?;
        ensure!(n == 1.0, "{REFUSED}{{reason=connection_limit}}: {n}");
        // A socket that leaves makes room.
        agent.disconnect("one").await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        agent.connect("four", &url, &pubsub(None)).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn events_over_the_budget_are_refused_then_the_socket_is_disconnected() -> Result<()> {
    with_timeout_of(Duration::from_secs(60), async {
        let cluster = Cluster::builder()
            .nodes(1)
            .node_args([
                "--event-rate-per-s",
                "1",
                "--event-burst",
                "5",
                "--event-refusals-before-disconnect",
                "5",
            ])
            .start()
            .await?;
        let agent = Agent::spawn().await?;
        let url = cluster.node(0).url();
        agent.connect("p", &url, &pubsub(None)).await?;
        let mut acks = Vec::new();
        for _ in 0..9 {
            acks.push(
                agent
                    .emit_with_ack("p", "join", vec![json!("lobby")], ACK)
                    .await?,
            );
        }
        let ok = acks.iter().filter(|a| **a == [json!({"ok": true})]).count();
        let busy = acks
            .iter()
            .filter(|a| a.len() == 1 && a[0]["ok"] == false && a[0]["code"] == "busy")
            .count();
        // Five within the burst (perhaps one more refilled meanwhile), the rest refused.
        ensure!((5..=6).contains(&ok) && ok + busy == 9, "joins: {acks:?}");
        // An app event through a Reply is refused the same way, through its ack.
        let readme = ConnectOpts::new(Transport::Websocket).namespace("/readme");
        agent.connect("r", &url, &readme).await?;
        for _ in 0..5 {
            agent
                .emit_with_ack("r", "shout", vec![json!(1)], ACK)
                .await?;
        }
        let a = agent
            .emit_with_ack("r", "shout", vec![json!(1)], ACK)
            .await?;
        ensure!(
            a.len() == 1 && a[0]["code"] == "busy",
            "shout over budget: {a:?}"
        );
        // Going on sending into an empty budget ends in a disconnect.
        for _ in 0..10 {
            agent.emit("r", "shout", vec![json!(1)]).await?;
        }
        let mut disconnected = false;
        for _ in 0..50 {
            let st = agent.state("r").await?;
            if !st.connected && !st.disconnect_reasons.is_empty() {
                disconnected = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ensure!(disconnected, "the flooding socket was not disconnected");
        let api = cluster.api(0);
        let limited = metric(
            &api,
            "ioscale_events_refused_total",
            &[("reason", "rate_limited")],
        )
        .await?;
        let cut = metric(
            &api,
            "ioscale_events_refused_total",
            &[("reason", "abuse_disconnect")],
        )
        .await?;
        ensure!(
            limited >= 4.0 && cut >= 1.0,
            "refused: rate_limited {limited}, abuse_disconnect {cut}"
        );
        Ok(())
    })
    .await
}
