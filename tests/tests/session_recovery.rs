//! Session recovery with the official client (socket.io-client with `clients/js`) through
//! nginx in front of three nodes: 30 subscribers of a room get 1,000 messages/s from
//! publishers on other nodes while a node is SIGKILLed, or while some clients lose their TCP
//! connection; at the end every subscriber has every message exactly once and in order, and
//! its public id, rooms and data back. A forged, late or malformed session starts fresh and
//! the client is told why.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use ioscale_cluster_tests::lb::{self, LbKind, LoadBalancer};
use ioscale_cluster_tests::protocol::{Client as RawClient, Kind};
use ioscale_cluster_tests::{Cluster, Emit, agent::js_dir, extra, logs::TestLogs};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const SUBSCRIBERS: usize = 30;
const RATE: u64 = 1000;
const COUNT: u64 = 6000;
const ROOM: &str = "recovery";

/// The subscribers and publishers (`tests/js/recovery-run.mjs`), read line by line.
struct Run {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Run {
    async fn start(logs: &TestLogs, lb: &str, publishers: Vec<String>) -> Result<Self> {
        ioscale_cluster_tests::agent::ensure_node_modules().await?;
        let cfg = json!({
            "lb": lb,
            "publishers": publishers,
            "room": ROOM,
            "subscribers": SUBSCRIBERS,
            "rate": RATE,
            "count": COUNT,
            "settleMs": 20_000,
            "transports": ["websocket"],
        });
        let log = logs.file("recovery-run.log");
        let mut child = Command::new("node")
            .arg(js_dir().join("recovery-run.mjs"))
            .arg(cfg.to_string())
            .current_dir(js_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()
            .context("spawning node tests/js/recovery-run.mjs")?;
        let stdout = child.stdout.take().context("stdout")?;
        Ok(Self {
            child,
            lines: BufReader::new(stdout).lines(),
        })
    }

    /// The next line that has `key`.
    async fn next(&mut self, key: &str, limit: Duration) -> Result<Value> {
        let read = async {
            loop {
                let line = self
                    .lines
                    .next_line()
                    .await?
                    .context("recovery-run ended")?;
                let v: Value = serde_json::from_str(&line).with_context(|| line.clone())?;
                ensure!(v.get("error").is_none(), "recovery-run failed: {v}");
                if v.get(key).is_some() {
                    return Ok(v);
                }
            }
        };
        tokio::time::timeout(limit, read)
            .await
            .with_context(|| format!("no {key:?} from recovery-run in {limit:?}"))?
    }

    /// Waits until at least `n` publishes were acked.
    async fn published(&mut self, n: u64) -> Result<()> {
        loop {
            let p = self.next("progress", Duration::from_secs(20)).await?;
            if p["progress"].as_u64() >= Some(n) {
                return Ok(());
            }
        }
    }

    async fn command(&mut self, line: &str) -> Result<()> {
        let stdin = self.child.stdin.as_mut().context("stdin")?;
        stdin.write_all(format!("{line}\n").as_bytes()).await?;
        Ok(stdin.flush().await?)
    }
}

/// Three nodes behind nginx; returns them, the balancer and the public ids and nodes of the
/// subscribers once they are all in the room.
async fn cluster_and_balancer() -> Result<(Cluster, LoadBalancer)> {
    let (cluster, addrs) = lb::trusting_cluster(3).await?;
    let balancer = LoadBalancer::start(cluster.logs(), LbKind::Nginx, &addrs).await?;
    Ok((cluster, balancer))
}

/// The room's sockets as node `from` lists them: public id → (node, data).
async fn members(cluster: &Cluster, from: usize) -> Result<Vec<(String, String, Value)>> {
    let sockets = cluster.api(from).sockets("/pubsub", &[ROOM]).await?;
    Ok(sockets
        .into_iter()
        .map(|s| (s.id, s.node, s.data))
        .collect())
}

/// Every subscriber got every message once, in order, and kept its public id; with
/// `replayed`, the recovered ones were given something from the history (the test did break
/// a stream).
fn check_report(report: &Value, replayed: bool) -> Result<()> {
    ensure!(
        report["failures"].as_array().is_some_and(Vec::is_empty),
        "publishes failed: {}",
        report["failures"]
    );
    for s in report["subscribers"].as_array().context("subscribers")? {
        ensure!(
            s["missing"] == 0 && s["duplicates"] == 0 && s["reordered"] == 0,
            "subscriber {} lost, repeated or reordered messages: {s}",
            s["i"]
        );
        let outcomes = s["outcomes"].as_array().context("outcomes")?;
        ensure!(
            outcomes.iter().skip(1).all(|o| o["recovered"] == true),
            "subscriber {} was not recovered: {s}",
            s["i"]
        );
        let ids: BTreeSet<&str> = outcomes.iter().filter_map(|o| o["id"].as_str()).collect();
        ensure!(
            ids.len() == 1,
            "subscriber {} changed public id: {s}",
            s["i"]
        );
    }
    if !replayed {
        return Ok(());
    }
    let replayed: u64 = report["subscribers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["outcomes"].as_array().into_iter().flatten())
        .filter_map(|o| o["missed"].as_u64())
        .sum();
    ensure!(
        replayed > 0,
        "no recovered subscriber missed anything: nothing was tested"
    );
    Ok(())
}

/// After the run: every subscriber is in the room under its first public id, with its data.
async fn check_restored(cluster: &Cluster, from: usize, ready_ids: &Value) -> Result<()> {
    let want: BTreeSet<String> = ready_ids
        .as_array()
        .context("ids")?
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let listed = members(cluster, from).await?;
    let got: BTreeSet<String> = listed.iter().map(|(id, _, _)| id.clone()).collect();
    ensure!(got == want, "room members {got:?}, expected {want:?}");
    let marks: BTreeSet<u64> = listed
        .iter()
        .filter_map(|(_, _, d)| d["mark"].as_u64())
        .collect();
    ensure!(marks.len() == SUBSCRIBERS, "socket data lost: {listed:?}");
    Ok(())
}

#[tokio::test]
async fn subscribers_of_a_killed_node_recover_every_message_once_in_order() -> Result<()> {
    let (mut cluster, balancer) = cluster_and_balancer().await?;
    let publishers = vec![cluster.node(1).url(), cluster.node(2).url()];
    let mut run = Run::start(cluster.logs(), &balancer.url(), publishers).await?;
    let ready = run.next("ready", Duration::from_secs(40)).await?;
    let victim = cluster.node(0).node_id().to_owned();
    let on_victim = members(&cluster, 1)
        .await?
        .iter()
        .filter(|m| m.1 == victim)
        .count();
    ensure!(on_victim > 0, "no subscriber on the node to kill");
    run.published(COUNT / 3).await?;
    cluster.node_mut(0).sigkill();
    let report = run.next("report", Duration::from_secs(90)).await?;
    save(&cluster, &report)?;
    check_report(&report["report"], true)?;
    let moved = report["report"]["subscribers"]
        .as_array()
        .context("subscribers")?
        .iter()
        .filter(|s| s["outcomes"].as_array().is_some_and(|o| o.len() > 1))
        .count();
    ensure!(
        moved >= on_victim,
        "{on_victim} subscribers were on the killed node, {moved} recovered"
    );
    check_restored(&cluster, 1, &ready["ids"]).await?;
    run.command("exit").await
}

/// Keeps the run's report beside the test's logs.
fn save(cluster: &Cluster, report: &Value) -> Result<()> {
    let path = cluster.logs().file("report.json");
    Ok(std::fs::write(path, serde_json::to_vec_pretty(report)?)?)
}

#[tokio::test]
async fn clients_whose_connection_drops_recover_on_a_live_node() -> Result<()> {
    let (cluster, balancer) = cluster_and_balancer().await?;
    let publishers = vec![cluster.node(1).url(), cluster.node(2).url()];
    let mut run = Run::start(cluster.logs(), &balancer.url(), publishers).await?;
    let ready = run.next("ready", Duration::from_secs(40)).await?;
    run.published(COUNT / 3).await?;
    run.command("cut 10").await?;
    let dropped = run.next("dropped", Duration::from_secs(10)).await?;
    ensure!(dropped["dropped"] == 10, "cut {dropped}");
    let report = run.next("report", Duration::from_secs(90)).await?;
    save(&cluster, &report)?;
    check_report(&report["report"], true)?;
    check_restored(&cluster, 0, &ready["ids"]).await?;
    run.command("exit").await
}

#[tokio::test]
async fn no_message_is_lost_when_redis_is_killed_and_restarted_with_its_append_only_file()
-> Result<()> {
    let mut cluster = Cluster::builder()
        .nodes(3)
        .node_args(["--trust-proxy"])
        .redis_args(["--appendonly", "yes", "--appendfsync", "everysec"])
        .start()
        .await?;
    let addrs: Vec<_> = cluster.nodes().iter().map(|n| n.addr()).collect();
    let balancer = LoadBalancer::start(cluster.logs(), LbKind::Nginx, &addrs).await?;
    let publishers = vec![cluster.node(1).url(), cluster.node(2).url()];
    let mut run = Run::start(cluster.logs(), &balancer.url(), publishers).await?;
    let ready = run.next("ready", Duration::from_secs(40)).await?;
    run.published(COUNT / 3).await?;
    let redis = cluster.redis_mut().standalone();
    redis.kill();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    redis.restart().await?;
    let report = run.next("report", Duration::from_secs(90)).await?;
    save(&cluster, &report)?;
    check_report(&report["report"], false)?;
    check_restored(&cluster, 0, &ready["ids"]).await?;
    // Redis did go away under the nodes, and they dropped nothing meanwhile.
    for i in 0..3 {
        let api = cluster.api(i);
        let reconnects = extra::metric(&api, "ioscale_adapter_redis_reconnects_total", &[]).await?;
        ensure!(reconnects >= 1.0, "node {i} never lost Redis");
        // (Heartbeats and requests are not kept while Redis is down: `redis_unavailable`.)
        for reason in ["publish_failed", "outbox_full", "outbox_expired"] {
            let dropped =
                extra::metric(&api, "ioscale_adapter_dropped_total", &[("reason", reason)]).await?;
            ensure!(
                dropped == 0.0,
                "node {i} dropped {dropped} messages ({reason})"
            );
        }
    }
    run.command("exit").await
}

/// Opens a raw WebSocket session on `base` and CONNECTs `/pubsub` with `auth`; returns the
/// client and the `ioscale:recovery` event's object.
async fn connect_raw(base: &str, auth: &Value) -> Result<(RawClient, Value)> {
    let (mut c, _) = RawClient::open(base, Kind::Ws).await?;
    c.send_text(&format!("40/pubsub,{auth}")).await?;
    let answer = c.recv_text().await?;
    ensure!(
        answer.starts_with("40/pubsub,"),
        "CONNECT answered {answer}"
    );
    loop {
        let text = c.recv_text().await?;
        if let Some(args) = text.strip_prefix("42/pubsub,") {
            let args: Value = serde_json::from_str(args)?;
            if args[0] == "ioscale:recovery" {
                return Ok((c, args[1].clone()));
            }
        }
    }
}

#[tokio::test]
async fn a_forged_late_or_malformed_session_starts_fresh_and_says_why() -> Result<()> {
    let cluster = Cluster::builder()
        .nodes(1)
        .node_args(["--recovery-window-ms", "1500"])
        .start()
        .await?;
    let base = cluster.node(0).url();
    let fresh = json!({"ioscale_recovery": {"session": null, "offset": null}});
    let (first, info) = connect_raw(&base, &fresh).await?;
    ensure!(
        info["recovered"] == false && info["reason"] == "new",
        "{info}"
    );
    let token = info["session"]
        .as_str()
        .context("a session token")?
        .to_owned();
    ensure!(token.len() >= 22, "token {token}");
    drop(first);

    let forged = format!("{}A", &token[..token.len() - 1]);
    let forged = if forged == token {
        format!("{}B", &token[..token.len() - 1])
    } else {
        forged
    };
    let (_c, info) = connect_raw(&base, &json!({"ioscale_recovery": {"session": forged}})).await?;
    ensure!(
        info["recovered"] == false && info["reason"] == "unknown",
        "{info}"
    );
    ensure!(
        info["session"] != token,
        "a forged session must not be handed the real one"
    );

    let (_c, info) = connect_raw(&base, &json!({"ioscale_recovery": {"session": 7}})).await?;
    ensure!(
        info["recovered"] == false && info["reason"] == "invalid",
        "{info}"
    );

    // Within the window the session comes back; after it, it does not.
    let (again, info) =
        connect_raw(&base, &json!({"ioscale_recovery": {"session": token}})).await?;
    ensure!(info["recovered"] == true, "{info}");
    drop(again);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let (_c, info) = connect_raw(&base, &json!({"ioscale_recovery": {"session": token}})).await?;
    ensure!(info["recovered"] == false, "{info}");
    ensure!(
        info["reason"] == "expired" || info["reason"] == "unknown",
        "{info}"
    );
    Ok(())
}

/// Publishes `msg {room, data: {p: 0, seq}}` for `seqs` to the room through node `via`'s API.
async fn publish_via_api(cluster: &Cluster, via: usize, seqs: std::ops::Range<u64>) -> Result<()> {
    for seq in seqs {
        let emit = Emit {
            namespace: Some("/pubsub".to_owned()),
            rooms: vec![ROOM.to_owned()],
            ..Emit::new(
                "msg",
                vec![json!({"room": ROOM, "data": {"p": 0, "seq": seq}})],
            )
        };
        cluster.api(via).emit(&emit).await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_python_client_recovers_after_its_node_dies() -> Result<()> {
    let (mut cluster, balancer) = cluster_and_balancer().await?;
    let python = ioscale_cluster_tests::py::venv_python().await?;
    let script = ioscale_cluster_tests::py::py_dir().join("recovery_client.py");
    let log = cluster.logs().file("recovery_client.log");
    let mut child = Command::new(python)
        .arg(script)
        .args([&format!("{}/", balancer.url()), ROOM, "600", "40"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log)?)
        .kill_on_drop(true)
        .spawn()
        .context("spawning tests/py/recovery_client.py")?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let mut next = async |key: &str| -> Result<Value> {
        let read = async {
            loop {
                let line = lines.next_line().await?.context("recovery_client ended")?;
                let v: Value = serde_json::from_str(&line).with_context(|| line.clone())?;
                if v.get(key).is_some() {
                    return Ok::<_, anyhow::Error>(v);
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), read)
            .await
            .with_context(|| format!("no {key:?} from recovery_client"))?
    };
    let ready = next("ready").await?;
    let id = ready["ready"].as_str().context("public id")?.to_owned();
    let members = members(&cluster, 0).await?;
    let node = &members
        .iter()
        .find(|m| m.0 == id)
        .context("the client in the room")?
        .1;
    let victim = cluster
        .node_ids()
        .iter()
        .position(|n| n == node)
        .context("its node")?;
    let survivor = (victim + 1) % 3;
    publish_via_api(&cluster, survivor, 0..300).await?;
    cluster.node_mut(victim).sigkill();
    publish_via_api(&cluster, survivor, 300..600).await?;
    let report = next("report").await?;
    save(&cluster, &report)?;
    let r = &report["report"];
    ensure!(
        r["received"] == 600 && r["missing"] == 0 && r["duplicates"] == 0 && r["reordered"] == 0,
        "the python client lost, repeated or reordered messages: {r}"
    );
    let verdicts = r["verdicts"].as_array().context("verdicts")?;
    ensure!(
        verdicts.len() == 2 && verdicts[1]["recovered"] == true && verdicts[1]["id"] == id.as_str(),
        "the python client was not recovered under its id: {r}"
    );
    Ok(())
}
