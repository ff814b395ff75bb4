//! The CRUD model store's bounds against a cluster of two nodes on one real Redis:
//! `--max-collection-bytes` (inserts through both nodes stop at the bound, a growing update is
//! refused, a remove frees room, the `:bytes` counter in Redis equals its records' lengths and
//! is rebuilt when missing) and `--max-records-per-client` (one socket's creates, in every
//! dialect and even concurrent, stop at the bound while another socket still creates). Every
//! refusal has the dialect's error form with a client-error code, and is counted as a client
//! error.

use anyhow::{Result, ensure};
use ioscale_cluster_tests::dialects::{DialectAgent, SailsAnswer, call};
use ioscale_cluster_tests::extra::{Checks, metric};
use ioscale_cluster_tests::{
    Agent, Cluster, ConnectOpts, Transport, is_refusal, is_refusal_with, with_timeout,
};
use serde_json::{Value, json};

/// The collection every test writes, and its keys under the default `--redis-prefix`.
const COLLECTION: &str = "notes";
const HASH_KEY: &str = "ioscale:model:{notes}";
const BYTES_KEY: &str = "ioscale:model:{notes}:bytes";

/// The sum of the lengths of the hash's values, computed by Redis itself.
const SUM_LUA: &str =
    "local t = 0 for _, v in ipairs(redis.call('HVALS', KEYS[1])) do t = t + #v end return t";

async fn connect(cluster: &Cluster, agent: &Agent, clients: &[(&str, usize)]) -> Result<()> {
    for (name, node) in clients {
        agent
            .connect(
                name,
                &cluster.node(*node).url(),
                &ConnectOpts::new(Transport::Websocket),
            )
            .await?;
    }
    Ok(())
}

/// Redis' `:bytes` counter (`None` when missing) and the sum it must equal.
async fn counter_and_sum(cluster: &mut Cluster) -> Result<(Option<u64>, u64)> {
    let redis = cluster.redis_mut().standalone();
    let counter = redis.cli(&["GET", BYTES_KEY]).await?;
    let sum = redis.cli(&["EVAL", SUM_LUA, "1", HASH_KEY]).await?;
    Ok((counter.trim().parse().ok(), sum.trim().parse()?))
}

/// A ko.ninja refusal with `code`.
fn refused_with(v: &Value, code: &str) -> bool {
    is_refusal(v) && v["code"] == code
}

/// Client errors and server errors the nodes counted for `dialect`, summed over both nodes.
async fn counted(cluster: &Cluster, dialect: &str) -> Result<(f64, f64)> {
    let name = "ioscale_model_requests_total";
    let mut out = (0.0, 0.0);
    for i in 0..2 {
        let api = cluster.api(i);
        let labels = |result| [("dialect", dialect), ("result", result)];
        out.0 += metric(&api, name, &labels("client_error")).await?;
        out.1 += metric(&api, name, &labels("server_error")).await?;
    }
    Ok(out)
}

/// Inserts 200-byte-ish records alternately through both nodes until one is refused; returns
/// the ids stored.
async fn fill(agent: &Agent, checks: &mut Checks) -> Result<Vec<u64>> {
    let mut ids = Vec::new();
    for i in 0..30 {
        let who = ["a", "b"][i % 2];
        let data = json!({"data": {"text": "x".repeat(180)}});
        let r = call(agent, who, "notes-insert", data).await?;
        if let Some(id) = r["id"].as_u64() {
            ids.push(id);
            continue;
        }
        checks.check(
            refused_with(&r, "conflict")
                && r["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("2000 bytes")),
            || format!("insert {i} through {who}: expected a conflict naming the bound, got {r}"),
        );
        return Ok(ids);
    }
    anyhow::bail!("30 inserts of ~200 bytes all fit under --max-collection-bytes 2000: {ids:?}")
}

/// A Backbone.sync `create` of `item` in the collection, as the seed's client sends it; the
/// ack carries what the reply event does.
async fn backbone_create(agent: &Agent, client: &str, item: Value) -> Result<Value> {
    let payload = json!({"signature": {"endPoint": COLLECTION}, "item": item});
    call(agent, client, "create", payload).await
}

/// Backbone's refusal form: the seed's `{success: false}` with the node's refusal and status.
fn backbone_refused(r: &Value, status: u16, code: &str) -> bool {
    r["success"] == false
        && r["status"] == status
        && r["code"] == code
        && is_refusal_with(r, &["success", "status"])
}

/// Sails' refusal form: the status as the ack's second argument and in the body.
fn sails_refused(r: &SailsAnswer, status: u64, code: &str) -> bool {
    r.status == Some(status)
        && r.body["status"] == status
        && r.body["code"] == code
        && is_refusal_with(&r.body, &["status"])
}

/// Every dialect counted a client error and no server error.
async fn check_counted(cluster: &Cluster, checks: &mut Checks) -> Result<()> {
    for dialect in ["ko_ninja", "backbone", "sails"] {
        let (client, server) = counted(cluster, dialect).await?;
        checks.check(client >= 1.0 && server == 0.0, || {
            format!("{dialect}: {client} client errors, {server} server errors")
        });
    }
    Ok(())
}

/// With the collection `sum` bytes full: growing record `first` past the bound is refused and
/// leaves it (and the counter) as it was; shrinking it is allowed.
async fn grow_and_shrink(
    cluster: &mut Cluster,
    agent: &Agent,
    checks: &mut Checks,
    first: u64,
    sum: u64,
) -> Result<()> {
    let before = call(agent, "b", "notes-findOne", json!({"id": first})).await?;
    let text = "z".repeat(180 + 2001usize.saturating_sub(usize::try_from(sum)?));
    let r = call(
        agent,
        "b",
        "notes-update",
        json!({"id": first, "data": {"text": text}}),
    )
    .await?;
    checks.check(refused_with(&r, "conflict"), || {
        format!("growing update: {r}")
    });
    let after = call(agent, "a", "notes-findOne", json!({"id": first})).await?;
    checks.check(after == before, || {
        format!("refused update changed {before} into {after}")
    });
    checks.check(counter_and_sum(cluster).await? == (Some(sum), sum), || {
        "a refused update changed the counter".to_owned()
    });
    let r = call(
        agent,
        "a",
        "notes-update",
        json!({"id": first, "data": {"text": "s"}}),
    )
    .await?;
    checks.check(r["text"] == "s", || format!("shrinking update: {r}"));
    let (counter, shrunk) = counter_and_sum(cluster).await?;
    checks.check(counter == Some(shrunk) && shrunk + 179 == sum, || {
        format!("after shrinking: counter {counter:?}, records {shrunk} (were {sum})")
    });
    Ok(())
}

/// Removing record `gone` frees room for an insert through the other node; then, with the
/// counter deleted (data from a version without it), the next write rebuilds it from the
/// records. Returns the bytes stored.
async fn remove_and_rebuild(
    cluster: &mut Cluster,
    agent: &Agent,
    checks: &mut Checks,
    first: u64,
    gone: u64,
) -> Result<u64> {
    let r = call(agent, "a", "notes-remove", json!({"id": gone})).await?;
    checks.check(r == json!({"success": true}), || format!("remove: {r}"));
    let data = json!({"data": {"text": "x".repeat(180)}});
    let r = call(agent, "b", "notes-insert", data).await?;
    checks.check(r["id"].as_u64().is_some(), || {
        format!("insert after a remove: {r}")
    });
    let (counter, sum) = counter_and_sum(cluster).await?;
    checks.check(counter == Some(sum), || {
        format!("counter {counter:?}, records {sum}")
    });

    cluster
        .redis_mut()
        .standalone()
        .cli(&["DEL", BYTES_KEY])
        .await?;
    let r = call(
        agent,
        "a",
        "notes-update",
        json!({"id": first, "data": {"text": "t"}}),
    )
    .await?;
    checks.check(r["text"] == "t", || {
        format!("update without a counter: {r}")
    });
    let rebuilt = counter_and_sum(cluster).await?;
    checks.check(rebuilt == (Some(sum), sum), || {
        format!("rebuilt counter and records: {rebuilt:?}, expected {sum}")
    });
    Ok(sum)
}

/// With `sum` bytes stored, a create over the room left is refused in every dialect, each in
/// its form, and stores nothing; one within it is stored.
async fn over_and_within(
    cluster: &mut Cluster,
    agent: &Agent,
    checks: &mut Checks,
    sum: u64,
) -> Result<()> {
    let left = 2000usize.saturating_sub(usize::try_from(sum)?);
    let over = "x".repeat(left + 1);
    let r = call(agent, "b", "notes-insert", json!({"data": {"text": over}})).await?;
    checks.check(refused_with(&r, "conflict"), || {
        format!("ko.ninja insert over the bound: {r}")
    });
    let r = backbone_create(agent, "a", json!({"text": over})).await?;
    checks.check(backbone_refused(&r, 409, "conflict"), || {
        format!("backbone create over the bound: {r}")
    });
    let r = agent
        .sails09("b", "post", "/notes", json!({"text": over}))
        .await?;
    checks.check(sails_refused(&r, 409, "conflict"), || {
        format!("sails create over the bound: {r:?}")
    });
    checks.check(counter_and_sum(cluster).await? == (Some(sum), sum), || {
        "refusals changed the counter".to_owned()
    });
    // 40 bytes leave room for the id and the JSON around the text.
    let fits = "x".repeat(left.saturating_sub(40));
    let r = agent
        .sails09("a", "post", "/notes", json!({"text": fits}))
        .await?;
    checks.check(r.status == Some(200), || {
        format!("sails create within the bound: {r:?}")
    });
    let (counter, sum) = counter_and_sum(cluster).await?;
    checks.check(counter == Some(sum) && sum <= 2000, || {
        format!("counter {counter:?}, records {sum}")
    });
    Ok(())
}

/// Inserts stop at `--max-collection-bytes` whichever node they go through; growing past it is
/// refused and leaves the record as it was; a remove frees room for the next insert; the
/// counter in Redis always equals the records' lengths, and is rebuilt when deleted.
#[tokio::test]
async fn collection_bytes_are_bounded_across_nodes() -> Result<()> {
    with_timeout(async {
        let mut cluster = Cluster::builder()
            .nodes(2)
            .node_args(["--max-collection-bytes", "2000"])
            .start()
            .await?;
        let agent = Agent::spawn().await?;
        connect(&cluster, &agent, &[("a", 0), ("b", 1)]).await?;
        let mut checks = Checks::new();

        let ids = fill(&agent, &mut checks).await?;
        ensure!(ids.len() >= 2, "only {} records fit: {ids:?}", ids.len());
        let (counter, sum) = counter_and_sum(&mut cluster).await?;
        checks.check(
            counter == Some(sum) && sum <= 2000 && sum + 200 > 2000,
            || format!("after filling: counter {counter:?}, records {sum} bytes"),
        );
        // The other node refuses too, and no refusal stored anything.
        let data = json!({"data": {"text": "y".repeat(180)}});
        let r = call(&agent, "b", "notes-insert", data).await?;
        checks.check(refused_with(&r, "conflict"), || {
            format!("insert through B when full: {r}")
        });
        let all = call(&agent, "a", "notes-find", json!({"query": {}})).await?;
        checks.check(all.as_array().map(Vec::len) == Some(ids.len()), || {
            format!("{} records stored, the collection lists {all}", ids.len())
        });

        grow_and_shrink(&mut cluster, &agent, &mut checks, ids[0], sum).await?;
        let sum = remove_and_rebuild(&mut cluster, &agent, &mut checks, ids[0], ids[1]).await?;
        over_and_within(&mut cluster, &agent, &mut checks, sum).await?;
        check_counted(&cluster, &mut checks).await?;
        checks.finish()
    })
    .await
}

/// `a` creates once in each dialect, removes one record, and its fourth create is refused in
/// each dialect's form: removing gives nothing back.
async fn one_socket_up_to_the_bound(agent: &Agent, checks: &mut Checks) -> Result<()> {
    let r = call(agent, "a", "notes-insert", json!({"data": {"n": 1}})).await?;
    let first = r["id"].as_u64().unwrap_or_default();
    checks.check(first > 0, || format!("ko.ninja create: {r}"));
    let r = backbone_create(agent, "a", json!({"n": 2})).await?;
    checks.check(r["id"].as_u64().is_some(), || {
        format!("backbone create: {r}")
    });
    let r = agent
        .sails09("a", "post", "/notes", json!({"n": 3}))
        .await?;
    checks.check(
        r.status == Some(200) && r.body["id"].as_u64().is_some(),
        || format!("sails create: {r:?}"),
    );

    let r = call(agent, "a", "notes-remove", json!({"id": first})).await?;
    checks.check(r == json!({"success": true}), || format!("remove: {r}"));
    let r = call(agent, "a", "notes-insert", json!({"data": {"n": 4}})).await?;
    checks.check(
        refused_with(&r, "busy") && r["error"].as_str().is_some_and(|e| e.contains("3 records")),
        || format!("ko.ninja 4th create: {r}"),
    );
    let r = backbone_create(agent, "a", json!({"n": 4})).await?;
    checks.check(backbone_refused(&r, 429, "busy"), || {
        format!("backbone 4th create: {r}")
    });
    let r = agent
        .sails09("a", "post", "/notes", json!({"n": 4}))
        .await?;
    checks.check(sails_refused(&r, 429, "busy"), || {
        format!("sails 4th create: {r:?}")
    });
    // Its other requests still work.
    let all = call(agent, "a", "notes-find", json!({"query": {}})).await?;
    checks.check(all.as_array().map(Vec::len) == Some(2), || {
        format!("find: {all}")
    });
    Ok(())
}

/// One socket creates at most `--max-records-per-client` records, in all dialects together and
/// even when its creates race; removing gives none back; another socket still creates.
#[tokio::test]
async fn records_per_client_are_bounded() -> Result<()> {
    with_timeout(async {
        let cluster = Cluster::builder()
            .nodes(2)
            .node_args(["--max-records-per-client", "3"])
            .start()
            .await?;
        let agent = Agent::spawn().await?;
        connect(&cluster, &agent, &[("a", 0), ("b", 1), ("c", 0)]).await?;
        let mut checks = Checks::new();
        one_socket_up_to_the_bound(&agent, &mut checks).await?;

        // Other sockets, on either node, still create; 8 racing creates of one socket store 3.
        let r = call(&agent, "b", "notes-insert", json!({"data": {"n": 5}})).await?;
        checks.check(r["id"].as_u64().is_some(), || {
            format!("another socket's create: {r}")
        });
        let racing: Vec<_> = (0..8)
            .map(|n| call(&agent, "c", "notes-insert", json!({"data": {"n": n}})))
            .collect();
        let answers: Vec<Value> = futures_util::future::join_all(racing)
            .await
            .into_iter()
            .collect::<Result<_>>()?;
        let stored = answers
            .iter()
            .filter(|r| r["id"].as_u64().is_some())
            .count();
        let busy = answers.iter().filter(|r| refused_with(r, "busy")).count();
        checks.check(stored == 3 && busy == 5, || {
            format!("8 racing creates: {stored} stored, {busy} refused: {answers:?}")
        });
        let all = call(&agent, "b", "notes-find", json!({"query": {}})).await?;
        checks.check(all.as_array().map(Vec::len) == Some(6), || {
            format!("find: {all}")
        });

        check_counted(&cluster, &mut checks).await?;
        checks.finish()
    })
    .await
}
