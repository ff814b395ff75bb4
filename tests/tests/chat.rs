//! The chat demo on `/`: `add-message` is re-broadcast as `message-added` on
//! every node, the history (capped, oldest first) is sent to new clients as
//! `messages-available`, bad input is refused without storing anything, and
//! the history lives in Redis, so it survives replacing every node.

use std::time::Duration;

use anyhow::{Result, ensure};
use ioscale_cluster_tests::extra::Checks;
use ioscale_cluster_tests::{Agent, Cluster, ConnectOpts, EVENT_TIMEOUT, Transport, with_timeout};
use serde_json::{Value, json};

const HISTORY_MAX: usize = 5;

/// Connects `name` to `/` on node `node` and returns its `messages-available` history.
async fn join_chat(
    agent: &Agent,
    cluster: &Cluster,
    name: &str,
    node: usize,
    t: Transport,
) -> Result<Value> {
    agent
        .connect(name, &cluster.node(node).url(), &ConnectOpts::new(t))
        .await?;
    let got = agent
        .wait_count(name, "messages-available", 1, EVENT_TIMEOUT)
        .await?;
    ensure!(
        got.len() == 1 && got[0].len() == 1,
        "{name}: messages-available {got:?}"
    );
    Ok(got[0][0].clone())
}

/// `(name, message)` of each message of a history or `message-added` list.
fn pairs(msgs: &[Value]) -> Vec<(String, String)> {
    msgs.iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or("<no name>").to_owned(),
                m["message"].as_str().unwrap_or("<no message>").to_owned(),
            )
        })
        .collect()
}

fn pair(name: &str, message: &str) -> (String, String) {
    (name.to_owned(), message.to_owned())
}

/// Each message has exactly `name`, `message` and an integer `time_ms`.
fn is_refusal(v: &Value) -> bool {
    ioscale_cluster_tests::is_refusal(v)
}

fn well_formed(m: &Value) -> bool {
    m.as_object().is_some_and(|o| {
        o.len() == 3 && o["name"].is_string() && o["message"].is_string() && o["time_ms"].is_u64()
    })
}

#[tokio::test]
async fn chat_messages_history_validation_and_persistence() -> Result<()> {
    with_timeout(async {
        let mut cluster = Cluster::builder()
            .node_args(["--chat-history-max", &HISTORY_MAX.to_string()])
            .start()
            .await?;
        let agent = Agent::spawn().await?;
        let mut checks = Checks::new();

        // Fresh Redis: empty history for everyone.
        for (name, node, t) in [("a", 0, Transport::Websocket), ("b", 1, Transport::Polling), ("c", 2, Transport::Websocket)] {
            let h = join_chat(&agent, &cluster, name, node, t).await?;
            checks.check(h == json!([]), || format!("{name}: first history should be [], got {h}"));
        }

        // One message from A reaches A, B and C exactly once.
        let ack = agent
            .emit_with_ack("a", "add-message", vec![json!({"name": "alice", "message": "hello"})], EVENT_TIMEOUT)
            .await?;
        checks.check(ack == [json!({"ok": true})], || format!("add-message ack: {ack:?}"));
        for c in ["a", "b", "c"] {
            agent.wait_count(c, "message-added", 1, EVENT_TIMEOUT).await?;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        for c in ["a", "b", "c"] {
            let got = agent.events(c, "message-added").await?;
            let msgs: Vec<Value> = got.iter().filter_map(|args| args.first().cloned()).collect();
            checks.check(
                got.len() == 1 && got[0].len() == 1 && pairs(&msgs) == [pair("alice", "hello")] && well_formed(&msgs[0]),
                || format!("{c}: expected one message-added {{alice, hello, time_ms}}, got {got:?}"),
            );
        }

        // Six more (seven in all): the history keeps the last five, oldest first.
        for i in 1..=6 {
            let ack = agent
                .emit_with_ack("a", "add-message", vec![json!({"name": "alice", "message": format!("m{i}")})], EVENT_TIMEOUT)
                .await?;
            checks.check(ack == [json!({"ok": true})], || format!("add-message m{i} ack: {ack:?}"));
        }
        let all_sent: Vec<(String, String)> = std::iter::once(pair("alice", "hello"))
            .chain((1..=6).map(|i| pair("alice", &format!("m{i}"))))
            .collect();
        for c in ["b", "c"] {
            let got = agent.wait_count(c, "message-added", 7, EVENT_TIMEOUT).await?;
            let msgs: Vec<Value> = got.iter().filter_map(|args| args.first().cloned()).collect();
            checks.check(pairs(&msgs) == all_sent, || {
                format!("{c}: message-added should be {all_sent:?} in order, got {:?}", pairs(&msgs))
            });
        }
        let want_history: Vec<(String, String)> = all_sent[all_sent.len() - HISTORY_MAX..].to_vec();
        let history = join_chat(&agent, &cluster, "d", 2, Transport::Websocket).await?;
        let h = history.as_array().cloned().unwrap_or_default();
        checks.check(pairs(&h) == want_history && h.iter().all(well_formed), || {
            format!("late client on C: history should be {want_history:?} oldest first, got {history}")
        });
        checks.check(
            h.windows(2).all(|w| w[0]["time_ms"].as_u64() <= w[1]["time_ms"].as_u64()),
            || format!("history times must not decrease: {history}"),
        );

        // Bad input, with an ack: an error through the ack, nothing stored.
        let long_name = "n".repeat(101);
        let bad: Vec<Value> = vec![
            json!({"name": "bob"}),
            json!({"message": "hi"}),
            json!({"name": 5, "message": "x"}),
            json!({"name": "bob", "message": 7}),
            json!({"name": "", "message": "x"}),
            json!({"name": "   ", "message": "x"}),
            json!({"name": "bob", "message": ""}),
            json!({"name": long_name, "message": "x"}),
            json!("just a string"),
            json!(null),
        ];
        for v in &bad {
            let ack = agent.emit_with_ack("b", "add-message", vec![v.clone()], EVENT_TIMEOUT).await?;
            let ok = ack.len() == 1 && is_refusal(&ack[0]);
            checks.check(ok, || format!("add-message {v}: expected an ack [{{\"ok\": false, \"error\": …}}], got {ack:?}"));
        }
        // Without an ack: a `chat-error` event to the sender only.
        agent.emit("b", "add-message", vec![json!({"name": "", "message": "x"})]).await?;
        agent.emit("b", "add-message", vec![json!({"message": "no name"})]).await?;
        checks.ok(
            agent.wait_count("b", "chat-error", 2, EVENT_TIMEOUT).await,
            "bad add-message without ack must be answered with a chat-error event",
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let errs_now = agent.events("b", "chat-error").await?;
        checks.check(
            errs_now.len() == 2
                && errs_now.iter().all(|e| e.len() == 1 && is_refusal(&e[0])),
            || format!("b: expected exactly two chat-error {{ok: false, error}} events, got {errs_now:?}"),
        );
        for c in ["a", "c", "d"] {
            let e = agent.events(c, "chat-error").await?;
            checks.check(e.is_empty(), || format!("{c} got someone else's chat-error: {e:?}"));
        }
        for (c, n) in [("a", 7), ("b", 7), ("c", 7), ("d", 0)] {
            let got = agent.events(c, "message-added").await?.len();
            checks.check(got == n, || format!("{c}: {got} message-added after bad input, expected {n}"));
        }
        let after_bad = join_chat(&agent, &cluster, "e", 0, Transport::Websocket).await?;
        checks.check(after_bad == history, || {
            format!("bad input changed the history: before {history}, after {after_bad}")
        });

        // Replace every node: the history is in Redis.
        for i in 0..3 {
            cluster.node(i).sigterm()?;
        }
        for i in 0..3 {
            let status = cluster.node_mut(i).wait_exit(Duration::from_secs(8)).await?;
            ensure!(status.success(), "node {i} exited with {status}");
        }
        for _ in 0..3 {
            cluster.add_node().await?;
        }
        cluster.wait_nodes_visible_from(&[3, 4, 5], 3).await?;
        let restored = join_chat(&agent, &cluster, "f", 5, Transport::Websocket).await?;
        checks.check(restored == history, || {
            format!("after replacing all nodes the history should be unchanged: before {history}, after {restored}")
        });
        // And the cap still applies to the stored list.
        let ack = agent
            .emit_with_ack("f", "add-message", vec![json!({"name": "zoe", "message": "after restart"})], EVENT_TIMEOUT)
            .await?;
        checks.check(ack == [json!({"ok": true})], || format!("add-message after restart: {ack:?}"));
        let later = join_chat(&agent, &cluster, "g", 4, Transport::Polling).await?;
        let mut want: Vec<(String, String)> = want_history[1..].to_vec();
        want.push(pair("zoe", "after restart"));
        let later = later.as_array().cloned().unwrap_or_default();
        checks.check(pairs(&later) == want, || {
            format!("history after one more message: expected {want:?}, got {:?}", pairs(&later))
        });
        checks.finish()
    })
    .await
}
