//! The ko.ninja dialect (seed "ko.ninja socket.io models") against a cluster: the five
//! acknowledged events with the default and the seed's configured message names, clients
//! spread over three nodes on one Redis, `model-change` events at subscribers on other nodes
//! and never at the requester, ids unique cluster-wide under concurrent inserts, bad input
//! refused without damaging stored records, a node alone in memory, and python-socketio as a
//! second client.

use std::time::Duration;

use anyhow::{Result, ensure};
use ioscale_cluster_tests::dialects::{call, changes, wait_changes};
use ioscale_cluster_tests::extra::{Checks, with_timeout_of};
use ioscale_cluster_tests::{
    Agent, Cluster, ConnectOpts, EVENT_TIMEOUT, RedisKind, SETTLE, TestLogs, Transport, py,
    transport_tests, with_timeout,
};
use serde_json::{Value, json};

transport_tests!(ko_ninja_crud_across_nodes);

fn is_error(v: &Value) -> bool {
    ioscale_cluster_tests::is_refusal(v)
}

/// Connects a, b, c to nodes 0, 1, 2.
async fn three_clients(cluster: &Cluster, agent: &Agent, t: Transport) -> Result<()> {
    for (name, node) in [("a", 0), ("b", 1), ("c", 2)] {
        agent
            .connect(name, &cluster.node(node).url(), &ConnectOpts::new(t))
            .await?;
    }
    Ok(())
}

/// Insert on A, find / findOne on C, update on B, remove on C: every node sees every write,
/// and the change feed reaches the reader on another node, never the writer.
async fn ko_ninja_crud_across_nodes(t: Transport) -> Result<()> {
    let cluster = Cluster::start(3).await?;
    let agent = Agent::spawn().await?;
    three_clients(&cluster, &agent, t).await?;
    let mut checks = Checks::new();

    let empty = call(&agent, "c", "todos-find", json!({"query": {}})).await?;
    checks.check(empty == json!([]), || format!("find on nothing: {empty}"));

    let rec = call(
        &agent,
        "a",
        "todos-insert",
        json!({"data": {"title": "milk", "done": false}}),
    )
    .await?;
    let id = rec["id"].as_u64().unwrap_or_default();
    ensure!(id > 0, "insert answered {rec}");
    checks.check(
        rec == json!({"id": id, "title": "milk", "done": false}),
        || format!("inserted record: {rec}"),
    );
    let got = wait_changes(&agent, "c", "model-change", 1).await?;
    checks.check(
        got[0] == json!({"model": "todos", "verb": "create", "id": id, "data": rec}),
        || format!("C's change feed: {got:?}"),
    );

    let on_c = call(&agent, "c", "todos-find", json!({"query": {"done": false}})).await?;
    checks.check(on_c == json!([rec]), || format!("find through C: {on_c}"));
    let one = call(&agent, "c", "todos-findOne", json!({"id": id})).await?;
    checks.check(one == rec, || format!("findOne through C: {one}"));
    // Ids arrive as text from some clients.
    let one = call(&agent, "b", "todos-findOne", json!({"id": id.to_string()})).await?;
    checks.check(one == rec, || {
        format!("findOne with a text id through B: {one}")
    });

    let updated = call(
        &agent,
        "b",
        "todos-update",
        json!({"id": id, "data": {"done": true}}),
    )
    .await?;
    let want = json!({"id": id, "title": "milk", "done": true});
    checks.check(updated == want, || {
        format!("update merges fields: {updated}")
    });
    let got = wait_changes(&agent, "c", "model-change", 2).await?;
    checks.check(
        got[1] == json!({"model": "todos", "verb": "update", "id": id, "data": want}),
        || format!("C's update change: {got:?}"),
    );
    let on_a = call(&agent, "a", "todos-find", json!({"query": {"done": true}})).await?;
    checks.check(on_a == json!([want]), || {
        format!("find through A after B's update: {on_a}")
    });

    let removed = call(&agent, "c", "todos-remove", json!({"id": id})).await?;
    checks.check(removed == json!({"success": true}), || {
        format!("remove: {removed}")
    });
    // A read the collection after the update: it hears C's remove; B (findOne) hears it too.
    for who in ["a", "b"] {
        let got = wait_changes(&agent, who, "model-change", 1).await?;
        checks.check(
            got.last() == Some(&json!({"model": "todos", "verb": "destroy", "id": id})),
            || format!("{who}: destroy change: {got:?}"),
        );
    }
    let after = call(&agent, "a", "todos-findOne", json!({"id": id})).await?;
    checks.check(is_error(&after), || {
        format!("findOne after remove: {after}")
    });
    let all = call(&agent, "b", "todos-find", json!({"query": {}})).await?;
    checks.check(all == json!([]), || format!("find after remove: {all}"));

    // Requesters never hear their own writes: exactly what the others did, once each.
    tokio::time::sleep(SETTLE).await;
    for (who, verbs) in [
        ("a", vec!["destroy"]),
        ("b", vec!["destroy"]),
        ("c", vec!["create", "update"]),
    ] {
        let got: Vec<Value> = changes(&agent, who, "model-change").await?;
        let got_verbs: Vec<&str> = got.iter().filter_map(|c| c["verb"].as_str()).collect();
        checks.check(got_verbs == verbs, || {
            format!("{who}: changes {got_verbs:?}, expected {verbs:?}")
        });
    }
    checks.finish()
}

/// 30 concurrent inserts through three nodes get 30 distinct ids, and every node lists all 30.
#[tokio::test]
async fn ids_are_unique_across_the_cluster() -> Result<()> {
    with_timeout(async {
        let cluster = Cluster::start(3).await?;
        let agent = Agent::spawn().await?;
        three_clients(&cluster, &agent, Transport::Websocket).await?;
        let mut inserts = Vec::new();
        for i in 0..30 {
            let client = ["a", "b", "c"][i % 3];
            inserts.push(call(
                &agent,
                client,
                "tasks-insert",
                json!({"data": {"n": i}}),
            ));
        }
        // Awaited together: the agent runs them concurrently, so the nodes race for ids.
        let answers: Vec<Value> = futures_util::future::join_all(inserts)
            .await
            .into_iter()
            .collect::<Result<_>>()?;
        let mut ids: Vec<u64> = answers.iter().filter_map(|r| r["id"].as_u64()).collect();
        ids.sort_unstable();
        ids.dedup();
        ensure!(
            ids.len() == 30,
            "30 inserts got {} distinct ids: {answers:?}",
            ids.len()
        );
        for client in ["a", "b", "c"] {
            let all = call(&agent, client, "tasks-find", json!({})).await?;
            let listed: Vec<u64> = all
                .as_array()
                .map(|a| a.iter().filter_map(|r| r["id"].as_u64()).collect())
                .unwrap_or_default();
            ensure!(
                listed == ids,
                "{client} lists ids {listed:?}, expected {ids:?} in order"
            );
        }
        Ok(())
    })
    .await
}

/// The seed's `messageNames` example, configured with `--ko-message-names`: every renamed
/// event works across nodes, and the defaults keep working beside them.
#[tokio::test]
async fn configured_message_names() -> Result<()> {
    with_timeout(async {
        let cluster = Cluster::builder()
            .node_args([
                "--ko-message-names",
                "list:update=update-myList,insert=insert-intoMyList,find=find-stuffInMyList,findOne=find-aThing,remove=remove-aThing",
            ])
            .start()
            .await?;
        let agent = Agent::spawn().await?;
        three_clients(&cluster, &agent, Transport::Websocket).await?;
        let mut checks = Checks::new();
        let rec = call(&agent, "a", "insert-intoMyList", json!({"data": {"item": "eggs"}})).await?;
        let id = rec["id"].as_u64().unwrap_or_default();
        ensure!(id > 0, "insert-intoMyList answered {rec}");
        let found = call(&agent, "b", "find-stuffInMyList", json!({"query": {"item": "eggs"}})).await?;
        checks.check(found == json!([rec]), || format!("find-stuffInMyList: {found}"));
        let one = call(&agent, "c", "find-aThing", json!({"id": id})).await?;
        checks.check(one == rec, || format!("find-aThing: {one}"));
        let upd = call(&agent, "c", "update-myList", json!({"id": id, "data": {"item": "ham"}})).await?;
        checks.check(upd == json!({"id": id, "item": "ham"}), || format!("update-myList: {upd}"));
        let dflt = call(&agent, "a", "list-findOne", json!({"id": id})).await?;
        checks.check(dflt == upd, || format!("list-findOne beside the configured names: {dflt}"));
        let gone = call(&agent, "b", "remove-aThing", json!({"id": id})).await?;
        checks.check(gone == json!({"success": true}), || format!("remove-aThing: {gone}"));
        let none = call(&agent, "a", "list-find", json!({"query": {}})).await?;
        checks.check(none == json!([]), || format!("list-find after remove: {none}"));
        checks.finish()
    })
    .await
}

/// Unknown collections, malformed payloads, wrong types, oversized records: an `{error}` ack
/// (or `model-error` without an ack), nothing stored or changed, the nodes still serving.
#[tokio::test]
async fn bad_input_is_refused_without_damage() -> Result<()> {
    with_timeout(async {
        let cluster = Cluster::builder()
            .node_args(["--collections", "todos,users", "--max-record-bytes", "256"])
            .start()
            .await?;
        let agent = Agent::spawn().await?;
        three_clients(&cluster, &agent, Transport::Websocket).await?;
        let mut checks = Checks::new();
        let rec = call(
            &agent,
            "a",
            "todos-insert",
            json!({"data": {"title": "keep me"}}),
        )
        .await?;
        let id = rec["id"].as_u64().unwrap_or_default();
        ensure!(id > 0, "insert answered {rec}");

        let big = "x".repeat(300);
        let cases: Vec<(&str, Value)> = vec![
            ("things-find", json!({"query": {}})),
            ("things-insert", json!({"data": {}})),
            ("todos-insert", json!({"data": "text"})),
            ("todos-insert", json!({"data": [1, 2]})),
            ("todos-insert", json!({})),
            ("todos-insert", json!("not an object")),
            ("todos-insert", json!({"data": {"big": big}})),
            ("todos-find", json!({"query": "title=keep"})),
            ("todos-findOne", json!({})),
            ("todos-findOne", json!({"id": -1})),
            ("todos-findOne", json!({"id": "1; DROP"})),
            ("todos-findOne", json!({"id": {"$gt": 0}})),
            ("todos-findOne", json!({"id": 999_999})),
            ("todos-update", json!({"id": id})),
            ("todos-update", json!({"id": id, "data": 5})),
            ("todos-update", json!({"id": id, "data": {"big": big}})),
            ("todos-update", json!({"id": 999_999, "data": {"a": 1}})),
            ("todos-remove", json!({"id": null})),
            ("todos-remove", json!({"id": 999_999})),
        ];
        for (event, data) in &cases {
            let ack = call(&agent, "b", event, data.clone()).await?;
            checks.check(is_error(&ack), || {
                format!("{event} {data}: expected {{ok: false, error}}, got {ack}")
            });
        }
        // No ack: the error comes as `model-error {event, ok: false, error, status}`.
        agent
            .emit("c", "todos-insert", vec![json!({"data": 1})])
            .await?;
        let errs = agent
            .wait_count("c", "model-error", 1, EVENT_TIMEOUT)
            .await?;
        checks.check(
            errs[0][0]["event"] == "todos-insert"
                && errs[0][0]["status"] == 400
                && errs[0][0]["code"] == "bad_request"
                && ioscale_cluster_tests::is_refusal_with(&errs[0][0], &["event", "status"]),
            || format!("model-error: {errs:?}"),
        );
        // Events that are not ko.ninja names stay unanswered, as before.
        let stray = agent
            .emit_with_ack(
                "a",
                "todos-explode",
                vec![json!({})],
                Duration::from_millis(500),
            )
            .await;
        checks.check(stray.is_err(), || {
            format!("todos-explode must not be answered: {stray:?}")
        });

        // Nothing was damaged or added, on any node.
        for client in ["a", "b", "c"] {
            let all = call(&agent, client, "todos-find", json!({"query": {}})).await?;
            checks.check(all == json!([rec]), || {
                format!("{client}: records after bad input: {all}")
            });
        }
        for i in 0..3 {
            checks.check(cluster.api(i).healthz().await? == 200, || {
                format!("node {i} unhealthy")
            });
        }
        checks.finish()
    })
    .await
}

/// The embedded default: one node, no Redis, the store in memory; the change feed works.
#[tokio::test]
async fn in_memory_single_node() -> Result<()> {
    with_timeout(async {
        let cluster = Cluster::builder()
            .nodes(1)
            .redis(RedisKind::None)
            .start()
            .await?;
        let agent = Agent::spawn().await?;
        for name in ["a", "b"] {
            agent
                .connect(
                    name,
                    &cluster.node(0).url(),
                    &ConnectOpts::new(Transport::Websocket),
                )
                .await?;
        }
        let mut checks = Checks::new();
        let empty = call(&agent, "b", "notes-find", json!({"query": {}})).await?;
        checks.check(empty == json!([]), || format!("find: {empty}"));
        let rec = call(&agent, "a", "notes-insert", json!({"data": {"text": "hi"}})).await?;
        checks.check(rec == json!({"id": 1, "text": "hi"}), || {
            format!("insert: {rec}")
        });
        let got = wait_changes(&agent, "b", "model-change", 1).await?;
        checks.check(got[0]["verb"] == "create" && got[0]["id"] == 1, || {
            format!("change: {got:?}")
        });
        let upd = call(
            &agent,
            "b",
            "notes-update",
            json!({"id": 1, "data": {"text": "ho"}}),
        )
        .await?;
        checks.check(upd == json!({"id": 1, "text": "ho"}), || {
            format!("update: {upd}")
        });
        let one = call(&agent, "a", "notes-findOne", json!({"id": 1})).await?;
        checks.check(one == upd, || format!("findOne: {one}"));
        let gone = call(&agent, "a", "notes-remove", json!({"id": 1})).await?;
        checks.check(gone == json!({"success": true}), || {
            format!("remove: {gone}")
        });
        let got = wait_changes(&agent, "b", "model-change", 2).await?;
        checks.check(got[1]["verb"] == "destroy", || {
            format!("destroy change: {got:?}")
        });
        checks.finish()
    })
    .await
}

/// python-socketio runs the same flow through three nodes (tests/py/dialects_client.py).
#[tokio::test]
async fn python_socketio_client() -> Result<()> {
    with_timeout_of(Duration::from_secs(230), async {
        // First, outside the scenario's bound: the venv may need installing.
        py::venv_python().await?;
        let cluster = Cluster::start(3).await?;
        let logs = TestLogs::for_current_test()?;
        let mut args = vec!["ko_ninja".to_owned(), "pytodos".to_owned()];
        args.extend((0..3).map(|i| cluster.node(i).url()));
        let run =
            py::run_script(&logs, "dialects_client.py", &args, Duration::from_secs(60)).await?;
        ensure!(
            run.code == Some(0) && run.stdout.contains("\"ok\": true"),
            "python client failed (exit {:?}):\n{}\n{}",
            run.code,
            run.stdout,
            run.stderr
        );
        Ok(())
    })
    .await
}

/// On a Redis Cluster the store's keys of one collection share a slot (hash tag), so its Lua
/// scripts run; the CRUD cycle works through three nodes.
#[tokio::test]
async fn on_a_redis_cluster() -> Result<()> {
    with_timeout(async {
        let cluster = Cluster::builder().redis(RedisKind::Cluster).start().await?;
        let agent = Agent::spawn().await?;
        three_clients(&cluster, &agent, Transport::Websocket).await?;
        let mut checks = Checks::new();
        let mut ids = Vec::new();
        // Several collections, so their keys land on different shards.
        for coll in ["todos", "users", "pets", "notes"] {
            let rec = call(
                &agent,
                "a",
                &format!("{coll}-insert"),
                json!({"data": {"v": 1}}),
            )
            .await?;
            let id = rec["id"].as_u64().unwrap_or_default();
            checks.check(id == 1, || format!("{coll}: first insert {rec}"));
            let upd = call(
                &agent,
                "b",
                &format!("{coll}-update"),
                json!({"id": id, "data": {"v": 2}}),
            )
            .await?;
            checks.check(upd == json!({"id": id, "v": 2}), || {
                format!("{coll}: update {upd}")
            });
            let all = call(
                &agent,
                "c",
                &format!("{coll}-find"),
                json!({"query": {"v": 2}}),
            )
            .await?;
            checks.check(all == json!([upd]), || format!("{coll}: find {all}"));
            ids.push((coll, id));
        }
        for (coll, id) in ids {
            let gone = call(&agent, "c", &format!("{coll}-remove"), json!({"id": id})).await?;
            checks.check(gone == json!({"success": true}), || {
                format!("{coll}: remove {gone}")
            });
        }
        checks.finish()
    })
    .await
}
