//! The Sails 0.9 dialect (seed "Sails.js 0.9 sockets / pubsub") against a cluster: sails.io.js
//! 0.9's virtual requests (`tests/js/sails09-client.mjs`: JSON text in, JSON text out) and the
//! object form, the `/echo` controller, the CRUD blueprints and their 0.9 shortcuts, and the
//! pub/sub of the seed across three nodes: listing subscribes to the class room and the listed
//! instances, `publishCreate` introduces class-room sockets to the new instance, every
//! `message {model, verb, id, data}` reaches the subscribers on every node and never the
//! requester. Bad input gets a status and an error; stored records stay intact. Writes of the
//! other dialects reach Sails subscribers too, and python-socketio runs the flow as well.

use std::time::Duration;

use anyhow::{Result, ensure};
use ioscale_cluster_tests::dialects::{DialectAgent, changes, wait_changes};
use ioscale_cluster_tests::extra::{Checks, with_timeout_of};
use ioscale_cluster_tests::{
    Agent, Cluster, ConnectOpts, EVENT_TIMEOUT, SETTLE, TestLogs, Transport, py, transport_tests,
    with_timeout,
};
use serde_json::{Value, json};

transport_tests!(sails_pubsub_across_nodes);

async fn connect(
    cluster: &Cluster,
    agent: &Agent,
    t: Transport,
    who: &[(&str, usize)],
) -> Result<()> {
    for (name, node) in who {
        agent
            .connect(name, &cluster.node(*node).url(), &ConnectOpts::new(t))
            .await?;
    }
    Ok(())
}

fn verbs_ids(msgs: &[Value]) -> Vec<(String, u64)> {
    msgs.iter()
        .map(|m| {
            (
                m["verb"].as_str().unwrap_or("?").to_owned(),
                m["id"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

fn vi(verb: &str, id: u64) -> (String, u64) {
    (verb.to_owned(), id)
}

async fn sails_pubsub_across_nodes(t: Transport) -> Result<()> {
    let cluster = Cluster::start(3).await?;
    let agent = Agent::spawn().await?;
    connect(
        &cluster,
        &agent,
        t,
        &[("a", 0), ("b", 1), ("c", 2), ("d", 1)],
    )
    .await?;
    let mut checks = Checks::new();

    // The seed's controller: `socket.get('/echo', {message: 'hi there!'}, cb)`.
    let r = agent
        .sails09("a", "get", "/echo", json!({"message": "hi there!"}))
        .await?;
    checks.check(
        r.body == json!({"success": true, "message": "hi there!"})
            && r.raw.is_string()
            && r.status == Some(200),
        || format!("/echo: {r:?}"),
    );
    let r = agent
        .sails09("a", "get", "/echo?message=from%20the%20query", json!(null))
        .await?;
    checks.check(r.body["message"] == "from the query", || {
        format!("/echo with a query: {r:?}")
    });

    // 1. B and C list users: subscribed to the class room.
    for who in ["b", "c"] {
        let r = agent.sails09(who, "get", "/user", json!({})).await?;
        checks.check(r.body == json!([]) && r.status == Some(200), || {
            format!("{who}: list: {r:?}")
        });
    }
    // 2. A creates through node A: B and C hear `create` in the seed's shape.
    let r = agent
        .sails09("a", "post", "/user", json!({"name": "foo"}))
        .await?;
    let x = r.body["id"].as_u64().unwrap_or_default();
    ensure!(x > 0, "create answered {r:?}");
    checks.check(r.body == json!({"id": x, "name": "foo"}), || {
        format!("created: {r:?}")
    });
    for who in ["b", "c"] {
        let got = wait_changes(&agent, who, "message", 1).await?;
        checks.check(
            got[0] == json!({"data": {"id": x, "name": "foo"}, "id": x, "model": "user", "verb": "create"}),
            || format!("{who}: publishCreate message: {got:?}"),
        );
    }
    // 3. A updates: B and C were introduced to the new instance's room on their nodes.
    let r = agent
        .sails09("a", "put", &format!("/user/{x}"), json!({"name": "foobar"}))
        .await?;
    checks.check(r.body == json!({"id": x, "name": "foobar"}), || {
        format!("updated: {r:?}")
    });
    for who in ["b", "c"] {
        let got = wait_changes(&agent, who, "message", 2).await?;
        checks.check(
            got[1] == json!({"data": {"id": x, "name": "foobar"}, "id": x, "model": "user", "verb": "update"}),
            || format!("{who}: publishUpdate message: {got:?}"),
        );
    }
    // 4. C reads the record through node C.
    let r = agent
        .sails09("c", "get", &format!("/user/{x}"), json!({}))
        .await?;
    checks.check(r.body == json!({"id": x, "name": "foobar"}), || {
        format!("read on C: {r:?}")
    });
    // 5. B destroys: A (the creator follows its record) and C hear it, B does not.
    let r = agent
        .sails09("b", "delete", &format!("/user/{x}"), json!({}))
        .await?;
    checks.check(r.body == json!({"id": x, "name": "foobar"}), || {
        format!("destroyed: {r:?}")
    });
    let got = wait_changes(&agent, "a", "message", 1).await?;
    checks.check(
        got[0] == json!({"id": x, "model": "user", "verb": "destroy"}),
        || format!("A: publishDestroy message: {got:?}"),
    );
    wait_changes(&agent, "c", "message", 3).await?;
    let r = agent
        .sails09("c", "get", &format!("/user/{x}"), json!({}))
        .await?;
    checks.check(r.status == Some(404), || {
        format!("read after destroy: {r:?}")
    });

    // 6. The object form (sails.io.js 0.10+): the ack is {body, statusCode, headers}.
    let jwr = agent
        .emit_with_ack(
            "d",
            "post",
            vec![json!({"method": "post", "url": "/user", "data": {"name": "obj"}})],
            EVENT_TIMEOUT,
        )
        .await?;
    let y = jwr[0]["body"]["id"].as_u64().unwrap_or_default();
    checks.check(
        jwr.len() == 1
            && jwr[0]
                == json!({"body": {"id": y, "name": "obj"}, "statusCode": 200, "headers": {}}),
        || format!("object-form create: {jwr:?}"),
    );
    // 7. The 0.9 shortcut route, parameters from the query string.
    let r = agent
        .sails09("a", "get", "/user/create?name=bar", json!({}))
        .await?;
    let z = r.body["id"].as_u64().unwrap_or_default();
    checks.check(
        r.body == json!({"id": z, "name": "bar"}) && z > y && y > x,
        || format!("shortcut create: {r:?}"),
    );
    // 8. Filters: by parameter (A now follows the class room and Z), `where`, `limit`/`skip`.
    let r = agent
        .sails09("a", "get", "/user?name=bar", json!({}))
        .await?;
    checks.check(r.body == json!([{"id": z, "name": "bar"}]), || {
        format!("filter by parameter: {r:?}")
    });
    let r = agent
        .sails09("b", "get", "/user", json!({"where": {"name": "obj"}}))
        .await?;
    checks.check(r.body == json!([{"id": y, "name": "obj"}]), || {
        format!("where: {r:?}")
    });
    let r = agent
        .sails09("b", "get", "/user?limit=1&skip=1", json!({}))
        .await?;
    checks.check(r.body == json!([{"id": z, "name": "bar"}]), || {
        format!("limit/skip: {r:?}")
    });
    // 10. C updates Z and 11. destroys Y through the shortcuts.
    let r = agent
        .sails09("c", "get", &format!("/user/update/{z}?name=baz"), json!({}))
        .await?;
    checks.check(r.body == json!({"id": z, "name": "baz"}), || {
        format!("shortcut update: {r:?}")
    });
    let r = agent
        .sails09("c", "get", &format!("/user/destroy/{y}"), json!({}))
        .await?;
    checks.check(r.body == json!({"id": y, "name": "obj"}), || {
        format!("shortcut destroy: {r:?}")
    });

    // Exactly these messages, each once, on every node; never the requester's own.
    let expected = [
        ("a", vec![vi("destroy", x), vi("update", z)]),
        (
            "b",
            vec![
                vi("create", x),
                vi("update", x),
                vi("create", y),
                vi("create", z),
                vi("update", z),
                vi("destroy", y),
            ],
        ),
        (
            "c",
            vec![
                vi("create", x),
                vi("update", x),
                vi("destroy", x),
                vi("create", y),
                vi("create", z),
            ],
        ),
        ("d", vec![vi("destroy", y)]),
    ];
    for (who, want) in &expected {
        wait_changes(&agent, who, "message", want.len()).await?;
    }
    tokio::time::sleep(SETTLE).await;
    for (who, want) in &expected {
        let got = verbs_ids(&changes(&agent, who, "message").await?);
        checks.check(&got == want, || {
            format!("{who}: messages {got:?}, expected {want:?}")
        });
    }
    checks.finish()
}

/// Unknown routes and models, malformed payloads in both forms, wrong types, oversized
/// records: a 4xx status and `{status, ok: false, error}`, the records untouched, the nodes
/// serving.
#[tokio::test]
async fn bad_input_gets_a_status_and_changes_nothing() -> Result<()> {
    with_timeout(async {
        let cluster = Cluster::builder()
            .node_args(["--collections", "user,pet", "--max-record-bytes", "256"])
            .start()
            .await?;
        let agent = Agent::spawn().await?;
        connect(
            &cluster,
            &agent,
            Transport::Websocket,
            &[("a", 0), ("b", 1), ("c", 2)],
        )
        .await?;
        let mut checks = Checks::new();
        let kept = agent
            .sails09("a", "post", "/user", json!({"name": "keep"}))
            .await?
            .body;
        let id = kept["id"].as_u64().unwrap_or_default();
        ensure!(id > 0, "create answered {kept}");

        let big = "x".repeat(300);
        let cases: Vec<(&str, String, Value, u64)> = vec![
            ("get", "/no/such/route/here".into(), json!({}), 404),
            ("get", "/thing".into(), json!({}), 404),
            ("get", "/bad%20name".into(), json!({}), 404),
            ("post", format!("/user/{id}"), json!({}), 404),
            ("put", "/user".into(), json!({"name": "no id"}), 400),
            ("delete", "/user".into(), json!({}), 400),
            ("get", "/user/999999".into(), json!({}), 404),
            ("put", "/user/999999".into(), json!({"name": "x"}), 404),
            ("delete", "/user/999999".into(), json!({}), 404),
            ("get", "/user/abc".into(), json!({}), 404),
            ("post", "/user".into(), json!({"big": big}), 413),
            ("put", format!("/user/{id}"), json!({"big": big}), 413),
            ("get", "/user?limit=abc".into(), json!({}), 400),
            ("get", "/user".into(), json!({"where": "not json"}), 400),
        ];
        for (method, url, data, status) in &cases {
            let r = agent.sails09("b", method, url, data.clone()).await?;
            checks.check(
                r.status == Some(*status)
                    && r.body["status"] == *status
                    && ioscale_cluster_tests::is_refusal_with(&r.body, &["status"]),
                || format!("{method} {url} {data}: expected {status} with an error, got {r:?}"),
            );
        }
        // Malformed payloads, straight through the socket.
        let text = agent
            .emit_with_ack("c", "get", vec![json!("{not json")], EVENT_TIMEOUT)
            .await?;
        let parsed: Value = text
            .first()
            .and_then(Value::as_str)
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        checks.check(
            text.len() == 2 && text[1] == 400 && parsed["status"] == 400 && parsed["ok"] == false,
            || format!("unparsable 0.9 request: {text:?}"),
        );
        for (event, payload) in [
            ("get", json!(42)),
            ("post", json!({"url": 5})),
            ("put", json!({"url": format!("/user/{id}"), "data": [1]})),
            ("get", json!({"data": {}})),
            ("get", json!(null)),
        ] {
            let jwr = agent
                .emit_with_ack("c", event, vec![payload.clone()], EVENT_TIMEOUT)
                .await?;
            checks.check(
                jwr.len() == 1
                    && jwr[0]["statusCode"] == 400
                    && jwr[0]["body"]["status"] == 400
                    && jwr[0]["body"]["ok"] == false,
                || format!("{event} {payload}: {jwr:?}"),
            );
        }
        // Without an ack: `model-error`.
        agent.emit("a", "get", vec![json!("garbage")]).await?;
        let errs = agent
            .wait_count("a", "model-error", 1, EVENT_TIMEOUT)
            .await?;
        checks.check(
            errs[0][0]["event"] == "get"
                && errs[0][0]["status"] == 400
                && errs[0][0]["ok"] == false,
            || format!("model-error: {errs:?}"),
        );

        for who in ["a", "b", "c"] {
            let r = agent.sails09(who, "get", "/user", json!({})).await?;
            checks.check(r.body == json!([kept]), || {
                format!("{who}: users after bad input: {r:?}")
            });
            let r = agent.sails09(who, "get", "/pet", json!({})).await?;
            checks.check(r.body == json!([]), || {
                format!("{who}: pets after bad input: {r:?}")
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

/// One store for every dialect: a ko.ninja insert and a Backbone save on other nodes reach a
/// Sails subscriber as `message`s.
#[tokio::test]
async fn other_dialects_writes_reach_sails_subscribers() -> Result<()> {
    with_timeout(async {
        let cluster = Cluster::start(3).await?;
        let agent = Agent::spawn().await?;
        connect(&cluster, &agent, Transport::Websocket, &[("ko", 0), ("sails", 1), ("bb", 2)]).await?;
        let r = agent.sails09("sails", "get", "/todos", json!({})).await?;
        ensure!(r.body == json!([]), "list: {r:?}");
        let rec = agent
            .emit_with_ack("ko", "todos-insert", vec![json!({"data": {"title": "from ko"}})], EVENT_TIMEOUT)
            .await?;
        let id = rec[0]["id"].as_u64().unwrap_or_default();
        ensure!(id > 0, "ko insert: {rec:?}");
        let r = agent
            .backbone("bb", "save", "todos", Some(id), json!({"title": "from backbone"}), None)
            .await?;
        ensure!(r["data"] == json!({"success": true}), "backbone save: {r}");
        let got = wait_changes(&agent, "sails", "message", 2).await?;
        ensure!(
            got == [
                json!({"model": "todos", "verb": "create", "id": id, "data": {"id": id, "title": "from ko"}}),
                json!({"model": "todos", "verb": "update", "id": id, "data": {"id": id, "title": "from backbone"}}),
            ],
            "Sails subscriber got {got:?}"
        );
        Ok(())
    })
    .await
}

/// python-socketio runs the Sails flow through three nodes (tests/py/dialects_client.py).
#[tokio::test]
async fn python_socketio_client() -> Result<()> {
    with_timeout_of(Duration::from_secs(230), async {
        py::venv_python().await?;
        let cluster = Cluster::start(3).await?;
        let logs = TestLogs::for_current_test()?;
        let mut args = vec!["sails".to_owned(), "pyuser".to_owned()];
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
