//! The Backbone.sync dialect (seed "Backbone.js and socket.io") against a cluster: the seed's
//! `Backbone.sync`, running on the real `backbone` package in the agent
//! (`tests/js/backbone-client.mjs`), creates, fetches, saves and destroys models through three
//! nodes on one Redis; every answer arrives on the seed's `<op>:<endPoint>[:<ctx>]` event; the
//! `model-change` feed reaches readers on other nodes and never the writer; bad input is
//! answered on the reply event (or `model-error`) without damaging stored records; and
//! `delete` is told apart from Sails' by its payload.

use anyhow::{Result, ensure};
use ioscale_cluster_tests::dialects::{DialectAgent, changes, wait_changes};
use ioscale_cluster_tests::extra::Checks;
use ioscale_cluster_tests::{
    Agent, Cluster, ConnectOpts, EVENT_TIMEOUT, SETTLE, Transport, transport_tests, with_timeout,
};
use serde_json::{Value, json};

transport_tests!(backbone_sync_across_nodes);

async fn three_clients(cluster: &Cluster, agent: &Agent, t: Transport) -> Result<()> {
    for (name, node) in [("a", 0), ("b", 1), ("c", 2)] {
        agent
            .connect(name, &cluster.node(node).url(), &ConnectOpts::new(t))
            .await?;
    }
    Ok(())
}

fn verbs(changes: &[Value]) -> Vec<String> {
    changes
        .iter()
        .filter_map(|c| c["verb"].as_str().map(str::to_owned))
        .collect()
}

async fn backbone_sync_across_nodes(t: Transport) -> Result<()> {
    let cluster = Cluster::start(3).await?;
    let agent = Agent::spawn().await?;
    three_clients(&cluster, &agent, t).await?;
    let mut checks = Checks::new();
    let none = json!({});

    // C fetches the (empty) collection: `read:todos` with an array.
    let r = agent
        .backbone("c", "fetch", "todos", None, none.clone(), None)
        .await?;
    checks.check(
        r["event"] == "read:todos" && r["data"] == json!([]) && r["models"] == json!([]),
        || format!("fetch of nothing: {r}"),
    );

    // A saves a new model through node A: `create:todos`, and the seed's client takes the id.
    let r = agent
        .backbone("a", "create", "todos", None, json!({"title": "x"}), None)
        .await?;
    let id = r["id"].as_u64().unwrap_or_default();
    ensure!(
        id > 0 && r["event"] == "create:todos",
        "create answered {r}"
    );
    checks.check(r["data"] == json!({"id": id, "title": "x"}), || {
        format!("create data: {r}")
    });
    let got = wait_changes(&agent, "c", "model-change", 1).await?;
    checks.check(
        got[0] == json!({"model": "todos", "verb": "create", "id": id, "data": {"id": id, "title": "x"}}),
        || format!("C's change feed after A's create: {got:?}"),
    );

    // B sees it through node B.
    let r = agent
        .backbone("b", "fetch", "todos", None, none.clone(), None)
        .await?;
    checks.check(r["models"] == json!([{"id": id, "title": "x"}]), || {
        format!("B's fetch: {r}")
    });

    // B saves the existing model: `update:todos/<id>` with {success: true}.
    let r = agent
        .backbone(
            "b",
            "save",
            "todos",
            Some(id),
            json!({"title": "y", "done": true}),
            None,
        )
        .await?;
    checks.check(
        r["event"] == format!("update:todos/{id}") && r["data"] == json!({"success": true}),
        || format!("B's save: {r}"),
    );
    let got = wait_changes(&agent, "c", "model-change", 2).await?;
    let want = json!({"id": id, "title": "y", "done": true});
    checks.check(
        got[1] == json!({"model": "todos", "verb": "update", "id": id, "data": want}),
        || format!("C's update change: {got:?}"),
    );

    // C fetches the model through node C: `read:todos/<id>`.
    let r = agent
        .backbone("c", "fetch_one", "todos", Some(id), none.clone(), None)
        .await?;
    checks.check(
        r["event"] == format!("read:todos/{id}") && r["data"] == want && r["attributes"] == want,
        || format!("C's fetch of the model: {r}"),
    );

    // Backbone sends every attribute on update: a save replaces the record.
    let r = agent
        .backbone("a", "save", "todos", Some(id), json!({"title": "z"}), None)
        .await?;
    checks.check(r["data"] == json!({"success": true}), || {
        format!("A's save: {r}")
    });
    let r = agent
        .backbone("b", "fetch_one", "todos", Some(id), none.clone(), None)
        .await?;
    checks.check(r["attributes"] == json!({"id": id, "title": "z"}), || {
        format!("after a full save the record is exactly the attributes: {r}")
    });

    // A context: the reply event is `create:todos:main`.
    let r = agent
        .backbone(
            "a",
            "create",
            "todos",
            None,
            json!({"title": "w"}),
            Some("main"),
        )
        .await?;
    let id2 = r["id"].as_u64().unwrap_or_default();
    checks.check(r["event"] == "create:todos:main" && id2 > id, || {
        format!("create with ctx: {r}")
    });

    // A destroys the first model: `delete:todos/<id>`.
    let r = agent
        .backbone("a", "destroy", "todos", Some(id), none.clone(), None)
        .await?;
    checks.check(
        r["event"] == format!("delete:todos/{id}") && r["data"] == json!({"success": true}),
        || format!("destroy: {r}"),
    );
    let r = agent
        .backbone("b", "fetch", "todos", None, none.clone(), None)
        .await?;
    checks.check(r["models"] == json!([{"id": id2, "title": "w"}]), || {
        format!("fetch after destroy: {r}")
    });

    // Change feeds: each reader got the others' writes once, in order; the writer none of its own.
    wait_changes(&agent, "c", "model-change", 5).await?;
    wait_changes(&agent, "b", "model-change", 3).await?;
    tokio::time::sleep(SETTLE).await;
    for (who, want) in [
        ("a", vec![]),
        ("b", vec!["update", "create", "destroy"]),
        ("c", vec!["create", "update", "update", "create", "destroy"]),
    ] {
        let got = verbs(&changes(&agent, who, "model-change").await?);
        checks.check(got == want, || {
            format!("{who}: changes {got:?}, expected {want:?}")
        });
    }
    checks.finish()
}

/// Bad input is answered on the seed's reply event (or `model-error` when none can be built),
/// nothing stored is damaged, and `delete` goes to Backbone or Sails by its payload.
#[tokio::test]
async fn bad_input_and_delete_disambiguation() -> Result<()> {
    with_timeout(async {
        let cluster = Cluster::builder()
            .node_args(["--collections", "todos", "--max-record-bytes", "256"])
            .start()
            .await?;
        let agent = Agent::spawn().await?;
        three_clients(&cluster, &agent, Transport::Websocket).await?;
        let mut checks = Checks::new();
        let keep = agent
            .backbone("a", "create", "todos", None, json!({"title": "keep"}), None)
            .await?;
        let id = keep["id"].as_u64().unwrap_or_default();
        ensure!(id > 0, "create answered {keep}");
        let kept = json!({"id": id, "title": "keep"});

        let big = "x".repeat(300);
        let sig = |end_point: &str| json!({"endPoint": end_point});
        // (event, payload, reply event, status)
        let cases: Vec<(&str, Value, String, u64)> = vec![
            (
                "read",
                json!({"signature": sig("nope")}),
                "read:nope".into(),
                404,
            ),
            (
                "read",
                json!({"signature": sig("todos/abc")}),
                "read:todos/abc".into(),
                400,
            ),
            (
                "read",
                json!({"signature": sig("a/b/c")}),
                "read:a/b/c".into(),
                400,
            ),
            (
                "read",
                json!({"signature": sig("todos/999999")}),
                "read:todos/999999".into(),
                404,
            ),
            (
                "create",
                json!({"signature": sig("todos"), "item": "text"}),
                "create:todos".into(),
                400,
            ),
            (
                "create",
                json!({"signature": {"endPoint": "todos", "ctx": "big"}, "item": {"big": big}}),
                "create:todos:big".into(),
                413,
            ),
            (
                "update",
                json!({"signature": sig("todos"), "item": {"t": 1}}),
                "update:todos".into(),
                400,
            ),
            (
                "update",
                json!({"signature": sig(&format!("todos/{id}")), "item": {"big": big}}),
                format!("update:todos/{id}"),
                413,
            ),
            (
                "update",
                json!({"signature": sig("todos/999999"), "item": {}}),
                "update:todos/999999".into(),
                404,
            ),
            (
                "delete",
                json!({"signature": sig("todos/999999")}),
                "delete:todos/999999".into(),
                404,
            ),
        ];
        for (event, payload, reply, status) in &cases {
            agent.emit("b", event, vec![payload.clone()]).await?;
            let got = agent.wait_count("b", reply, 1, EVENT_TIMEOUT).await?;
            let body = &got[0][0];
            checks.check(
                body["success"] == false
                    && body["status"] == *status
                    && ioscale_cluster_tests::is_refusal_with(body, &["success", "status"]),
                || format!("{event} {payload}: {reply} should carry a {status} error, got {got:?}"),
            );
        }
        // Unbuildable reply event: `model-error`.
        for payload in [
            json!({}),
            json!("text"),
            json!({"signature": {"endPoint": 5}}),
        ] {
            agent.emit("c", "read", vec![payload]).await?;
        }
        let errs = agent
            .wait_count("c", "model-error", 3, EVENT_TIMEOUT)
            .await?;
        checks.check(
            errs.iter().all(|e| {
                e[0]["event"] == "read"
                    && e[0]["status"] == 400
                    && e[0]["code"] == "bad_request"
                    && ioscale_cluster_tests::is_refusal_with(&e[0], &["event", "status"])
            }),
            || format!("model-error events: {errs:?}"),
        );
        // With an ack, the answer also comes through it.
        let ack = agent
            .emit_with_ack(
                "c",
                "read",
                vec![json!({"signature": sig(&format!("todos/{id}"))})],
                EVENT_TIMEOUT,
            )
            .await?;
        checks.check(ack == [kept.clone()], || {
            format!("read with an ack: {ack:?}")
        });

        // `delete` with a Sails payload is Sails' (JWR through the ack) ...
        let victim = agent
            .backbone(
                "a",
                "create",
                "todos",
                None,
                json!({"title": "victim"}),
                None,
            )
            .await?;
        let vid = victim["id"].as_u64().unwrap_or_default();
        let jwr = agent
            .emit_with_ack(
                "b",
                "delete",
                vec![json!({"url": format!("/todos/{vid}")})],
                EVENT_TIMEOUT,
            )
            .await?;
        checks.check(
            jwr.len() == 1
                && jwr[0]["statusCode"] == 200
                && jwr[0]["body"] == json!({"id": vid, "title": "victim"}),
            || format!("Sails-shaped delete: {jwr:?}"),
        );
        checks.check(
            agent
                .events("b", &format!("delete:todos/{vid}"))
                .await?
                .is_empty(),
            || "a Sails delete must not answer on Backbone's event".to_owned(),
        );
        // ... and with a signature Backbone's.
        let v2 = agent
            .backbone(
                "a",
                "create",
                "todos",
                None,
                json!({"title": "victim 2"}),
                None,
            )
            .await?;
        let v2id = v2["id"].as_u64().unwrap_or_default();
        let r = agent
            .backbone("c", "destroy", "todos", Some(v2id), json!({}), None)
            .await?;
        checks.check(r["data"] == json!({"success": true}), || {
            format!("Backbone delete: {r}")
        });

        // The kept record is intact on every node; nothing else is stored.
        for client in ["a", "b", "c"] {
            let r = agent
                .backbone(client, "fetch", "todos", None, json!({}), None)
                .await?;
            checks.check(r["models"] == json!([kept]), || {
                format!("{client}: stored after bad input: {r}")
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
