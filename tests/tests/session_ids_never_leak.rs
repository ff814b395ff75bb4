//! No Engine.IO session id ever leaves the node: a session exercising every application
//! (`/readme`, `/chat` + `/news`, the chat demo and the three CRUD dialects on `/`, `/pubsub`,
//! `/custom`, `set-data`, `whoami`) and the server HTTP API on a 2-node cluster, then a search
//! of everything any client received and every ack and API answer for any client's session id.
//!
//! A session id is a key to its session (anyone who knows it can poll as that client), so
//! other clients, the client itself (past its CONNECT answer) and API answers only ever see
//! public ids; and the public ids do appear where the applications name sockets.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use ioscale_cluster_tests::dialects::{DialectAgent, call};
use ioscale_cluster_tests::extra::{Checks, wait_until};
use ioscale_cluster_tests::http::{Method, REQUEST_TIMEOUT, RawBody};
use ioscale_cluster_tests::leaks::leaks;
use ioscale_cluster_tests::{
    AckReply, Agent, Cluster, ConnectOpts, EVENT_TIMEOUT, SETTLE, Transport, is_refusal,
    with_timeout,
};
use serde_json::{Value, json};

const README: &str = "/readme";
const API_KEY: &str = "session-ids-never-leak-key";
const NAMESPACES: [&str; 6] = [README, "/chat", "/news", "/", "/pubsub", "/custom"];

/// `checks.check(ok, || format!(...))` on the session's checks.
macro_rules! check {
    ($s:expr, $ok:expr, $($msg:tt)+) => {
        $s.checks.check($ok, || format!($($msg)+))
    };
}

/// One client of the agent.
struct Peer {
    name: String,
    public: String,
    ns: &'static str,
}

/// The cluster, the agent, and everything observed so far.
struct Session {
    cluster: Cluster,
    agent: Agent,
    peers: Vec<Peer>,
    /// `(session id, owning client)`: every client's `socket.id` and Engine.IO id.
    secrets: Vec<(String, String)>,
    /// `(where it was seen, what)`: acks, helper answers and HTTP API answers.
    seen: Vec<(String, Value)>,
    checks: Checks,
}

impl Session {
    /// Connects `name` (sharing `share`'s connection when given) and records its ids.
    async fn connect(
        &mut self,
        name: &str,
        ns: &'static str,
        node: usize,
        t: Transport,
        share: Option<&str>,
    ) -> Result<String> {
        let mut opts = ConnectOpts::new(t).namespace(ns);
        if let Some(other) = share {
            opts = opts.share_with(other);
        }
        let url = self.cluster.node(node).url();
        let public = self.agent.connect(name, &url, &opts).await?;
        let st = self.agent.state(name).await?;
        ensure!(
            st.connected && st.id.is_some() && st.engine_id.is_some(),
            "{name}: no session id to look for: {st:?}"
        );
        for sid in [st.id, st.engine_id].into_iter().flatten() {
            self.checks.check(sid != public && !sid.is_empty(), || {
                format!("{name}: public id {public} is its session id")
            });
            if !self.secrets.iter().any(|(s, _)| *s == sid) {
                let owner = format!("{name} ({ns} on node {node}, {t:?})");
                self.secrets.push((sid, owner));
            }
        }
        self.peers.push(Peer {
            name: name.to_owned(),
            public: public.clone(),
            ns,
        });
        Ok(public)
    }

    /// The public id of client `name`.
    fn id(&self, name: &str) -> String {
        self.peers
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.public.clone())
            .unwrap_or_else(|| panic!("no client {name}"))
    }

    fn record(&mut self, what: impl Into<String>, v: Value) {
        self.seen.push((what.into(), v));
    }

    /// Emits with an ack and records the answer.
    async fn ack(&mut self, client: &str, event: &str, args: Vec<Value>) -> Result<Vec<Value>> {
        let a = self
            .agent
            .emit_with_ack(client, event, args, EVENT_TIMEOUT)
            .await
            .with_context(|| format!("{client}: {event}"))?;
        self.record(format!("ack of {event:?} to {client}"), json!(a));
        Ok(a)
    }

    /// Emits `arg` with an ack that must be `{ok: true}`.
    async fn ack_ok(&mut self, client: &str, event: &str, arg: Value) -> Result<()> {
        let a = self.ack(client, event, vec![arg]).await?;
        self.checks.check(a == [json!({"ok": true})], || {
            format!("{client}: {event} answered {a:?}")
        });
        Ok(())
    }

    /// One Backbone.sync operation on `todos`, its answer recorded.
    async fn backbone(&mut self, c: &str, op: &str, id: Option<u64>, v: Value) -> Result<Value> {
        let r = self.agent.backbone(c, op, "todos", id, v, None).await?;
        self.record(format!("backbone {op} by {c}"), r.clone());
        Ok(r)
    }

    /// One ko.ninja call, its answer recorded.
    async fn ko(&mut self, c: &str, event: &str, data: Value) -> Result<Value> {
        let r = call(&self.agent, c, event, data).await?;
        self.record(format!("ko.ninja {event} by {c}"), r.clone());
        Ok(r)
    }

    /// One sails.io.js 0.9 request, its answer (parsed and raw) recorded; returns the body.
    async fn sails(&mut self, c: &str, method: &str, url: &str, data: Value) -> Result<Value> {
        let r = self.agent.sails09(c, method, url, data).await?;
        self.record(
            format!("sails {method} {url} by {c}"),
            json!([r.body, r.raw]),
        );
        Ok(r.body)
    }

    /// Emits `arg` without an ack.
    async fn emit(&self, client: &str, event: &str, arg: Value) -> Result<()> {
        self.agent.emit(client, event, vec![arg]).await
    }

    /// Waits until `client` received `event` `n` times.
    async fn wait(&self, client: &str, event: &str, n: usize) -> Result<()> {
        let got = self.agent.wait_count(client, event, n, EVENT_TIMEOUT);
        got.await.map(drop)
    }

    /// Waits until `client` received an `event` whose first argument satisfies `pred`; returns
    /// its arguments.
    async fn wait_for(
        &self,
        client: &str,
        event: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Vec<Value>> {
        let (pred, what) = (&pred, format!("{client}: the expected {event:?}"));
        wait_until(
            EVENT_TIMEOUT,
            Duration::from_millis(25),
            &what,
            || async move {
                let got = self.agent.events(client, event).await?;
                Ok(got
                    .into_iter()
                    .find(|args| pred(args.first().unwrap_or(&Value::Null))))
            },
        )
        .await
    }

    /// Waits until `client` heard record `id` created, updated and destroyed on `event`.
    async fn wait_changes(&self, client: &str, event: &str, id: u64) -> Result<()> {
        for verb in ["create", "update", "destroy"] {
            let is = |c: &Value| c["verb"] == verb && c["id"] == id;
            self.wait_for(client, event, is).await?;
        }
        Ok(())
    }
}

/// One refusal.
fn is_refusal_ack(a: &[Value]) -> bool {
    a.len() == 1 && is_refusal(&a[0])
}

/// `/readme` clients over both nodes and transports; each waits for its `news`.
async fn readme_clients(s: &mut Session) -> Result<()> {
    let who = [
        ("r0", 0, Transport::Websocket),
        ("r1", 1, Transport::Polling),
        ("r2", 0, Transport::Polling),
        ("r3", 1, Transport::Websocket),
    ];
    for (name, node, t) in who {
        s.connect(name, README, node, t, None).await?;
        s.wait(name, "news", 1).await?;
    }
    // The connection broadcasts (`this`, `user connected`, `message`, `new fan`) arrive.
    s.wait("r0", "this", 4).await
}

/// `set nickname` (ack and `ready`), `msg`, `nicknames`, a refused `msg`, and `set-data`.
async fn readme_nicknames(s: &mut Session) -> Result<()> {
    s.ack_ok("r0", "set nickname", json!("tobi")).await?;
    s.emit("r1", "set nickname", json!("ferret")).await?;
    s.wait("r1", "ready", 1).await?;
    s.ack_ok("r0", "msg", json!("hello")).await?;
    s.emit("r1", "msg", json!("hi")).await?;
    s.wait_for("r3", "msg", |a| a["nickname"] == "ferret")
        .await?;
    // Without a nickname and without an ack: a `readme-error` event.
    s.emit("r2", "msg", json!("too early")).await?;
    s.wait("r2", "readme-error", 1).await?;

    let a = s.ack("r2", "nicknames", vec![]).await?;
    let mut want = vec![
        json!({"id": s.id("r0"), "node": "node-a", "nickname": "tobi"}),
        json!({"id": s.id("r1"), "node": "node-b", "nickname": "ferret"}),
    ];
    want.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    let ok = a == [json!({"nicknames": want, "missing_nodes": []})];
    check!(s, ok, "nicknames must list the public ids {want:?}: {a:?}");

    s.ack_ok("r3", "set-data", json!({"color": "blue"})).await?;
    Ok(())
}

/// `shout`, `message` echo, `my other event`, `private message` and `ferret`.
async fn readme_events(s: &mut Session) -> Result<()> {
    s.ack_ok("r1", "shout", json!({"x": 1})).await?;
    let r1 = s.id("r1");
    for who in ["r0", "r3"] {
        let got = s.wait_for(who, "shout", |a| a["data"]["x"] == 1).await?;
        let ok = got == [json!({"from": r1, "data": {"x": 1}})];
        check!(s, ok, "{who}: shout not from r1's public id {r1}: {got:?}");
    }
    s.emit("r2", "message", json!("echo me")).await?;
    s.wait_for("r2", "message", |a| a == "echo me").await?;
    s.ack_ok("r0", "my other event", json!({"my": "data"}))
        .await?;
    let args = vec![json!("tobi"), json!("hi")];
    let a = s.ack("r3", "private message", args).await?;
    let ok = a == [json!({"ok": true, "from": "tobi", "msg": "hi"})];
    check!(s, ok, "private message: {a:?}");
    let a = s.ack("r1", "ferret", vec![json!("tobi")]).await?;
    check!(s, a == [json!("woot")], "ferret: {a:?}");
    Ok(())
}

/// `ask` one socket by its public id, and a room with one silent member: answers and
/// failures name sockets by public id.
async fn readme_ask(s: &mut Session) -> Result<()> {
    let replies = [
        ("r2", AckReply::Value(json!({"answer": 42}))),
        ("r1", AckReply::Echo),
        ("r3", AckReply::Never),
    ];
    for (who, reply) in replies {
        s.agent.set_ack_reply(who, "question", reply).await?;
    }
    let (r1, r2, r3) = (s.id("r1"), s.id("r2"), s.id("r3"));
    let a = s
        .ack("r0", "ask", vec![json!({"to": r2, "question": "what?"})])
        .await?;
    let want = json!({"answers": [{"socket": r2, "node": "node-a", "answer": {"answer": 42}}],
                      "unanswered": [], "complete": true, "missing_nodes": []});
    check!(s, a == [want], "ask r2 must name its public id {r2}: {a:?}");
    for who in ["r1", "r3"] {
        s.ack_ok(who, "join", json!("panel")).await?;
    }
    let a = s
        .ack(
            "r0",
            "ask",
            vec![json!({"to": "panel", "question": "again?"})],
        )
        .await?;
    let ok = a[0]["answers"] == json!([{"socket": r1, "node": "node-b", "answer": "again?"}])
        && a[0]["unanswered"] == json!([{"socket": r3, "node": "node-b", "error": "timeout"}]);
    check!(s, ok, "ask panel must name r1 {r1} and r3 {r3}: {a:?}");
    // Another socket's own room is not a room to join.
    let a = s.ack("r0", "join", vec![json!(r1)]).await?;
    check!(s, is_refusal_ack(&a), "joining r1's own room: {a:?}");
    Ok(())
}

/// `join`, `to`, `in`, `leave` and a `tweet` reaching a fan on the other node.
async fn readme_rooms(s: &mut Session) -> Result<()> {
    for who in ["r0", "r2"] {
        s.ack_ok(who, "join", json!("room1")).await?;
    }
    s.ack_ok("r0", "to", json!({"room": "room1", "data": "x"}))
        .await?;
    let r0 = s.id("r0");
    let got = s
        .wait_for("r2", "room message", |a| a["from"] == r0.as_str())
        .await?;
    let ok = got == [json!({"from": r0, "room": "room1", "data": "x"})];
    check!(s, ok, "room message from r0 ({r0}): {got:?}");
    s.ack_ok("r1", "in", json!({"room": "room1", "data": "y"}))
        .await?;
    let r1 = s.id("r1");
    for who in ["r0", "r2"] {
        s.wait_for(who, "room message", |a| a["from"] == r1.as_str())
            .await?;
    }
    s.ack_ok("r2", "leave", json!("room1")).await?;

    // Volatile: tweet until r3 (node B) hears one of r0 (node A).
    for i in 0..40 {
        s.ack_ok("r0", "tweet", json!(format!("hello #{i}")))
            .await?;
        tokio::time::sleep(Duration::from_millis(150)).await;
        let heard = s.agent.events("r3", "bieber tweet").await?;
        if heard.iter().any(|a| a[0]["from"] == r0.as_str()) {
            return Ok(());
        }
    }
    anyhow::bail!("r3 never heard a tweet of r0 ({r0}) in 40 tries")
}

/// `/chat` and `/news` on one connection per client: `hi!` names the sender's public id.
async fn chat_and_news(s: &mut Session) -> Result<()> {
    let who = [("x", 0, Transport::Websocket), ("y", 1, Transport::Polling)];
    for (name, node, t) in who {
        let chat = format!("{name}-chat");
        s.connect(&chat, "/chat", node, t, None).await?;
        s.wait(&chat, "a message", 2).await?;
        let news = format!("{name}-news");
        s.connect(&news, "/news", node, t, Some(&chat)).await?;
        s.wait(&news, "item", 1).await?;
    }
    s.agent.emit("x-chat", "hi!", vec![]).await?;
    let x = s.id("x-chat");
    let got = s.wait_for("y-chat", "hi!", |a| !a.is_null()).await?;
    let ok = got == [json!({"from": x})];
    check!(s, ok, "hi! must come from x-chat's public id {x}: {got:?}");
    let a = s.ack("y-news", "woot", vec![]).await?;
    check!(s, a == [json!({"news": "woot"})], "woot: {a:?}");
    s.agent.emit("x-news", "woot", vec![]).await?;
    s.wait("x-news", "item", 2).await
}

/// `/`: the chat demo, then Backbone.sync writes on node A heard by a reader on node B.
async fn root_chat_and_backbone(s: &mut Session) -> Result<()> {
    s.connect("d0", "/", 0, Transport::Websocket, None).await?;
    s.connect("d1", "/", 1, Transport::Polling, None).await?;
    for who in ["d0", "d1"] {
        s.wait(who, "messages-available", 1).await?;
    }
    let m = json!({"name": "alice", "message": "hello"});
    s.ack_ok("d0", "add-message", m).await?;
    s.wait_for("d1", "message-added", |a| a["name"] == "alice")
        .await?;

    let none = json!({});
    s.backbone("d1", "fetch", None, none.clone()).await?;
    let r = s.backbone("d0", "create", None, json!({"t": "x"})).await?;
    let id = r["id"].as_u64().unwrap_or_default();
    ensure!(id > 0, "backbone create answered {r}");
    s.backbone("d0", "save", Some(id), json!({"t": "y"}))
        .await?;
    s.backbone("d0", "destroy", Some(id), none).await?;
    s.wait_changes("d1", "model-change", id).await
}

/// `/`: ko.ninja writes on node B heard on node A (and a `model-error`), Sails 0.9 writes on
/// node A heard on node B.
async fn root_ko_ninja_and_sails(s: &mut Session) -> Result<()> {
    s.ko("d0", "todos-find", json!({"query": {}})).await?;
    let rec = s.ko("d1", "todos-insert", json!({"data": {}})).await?;
    let id = rec["id"].as_u64().unwrap_or_default();
    ensure!(id > 0, "ko.ninja insert answered {rec}");
    let upd = json!({"id": id, "data": {"done": true}});
    s.ko("d1", "todos-update", upd).await?;
    s.ko("d1", "todos-remove", json!({"id": id})).await?;
    s.wait_changes("d0", "model-change", id).await?;
    // Without an ack, an error comes as a `model-error` event.
    s.emit("d1", "todos-findOne", json!({"id": id})).await?;
    s.wait("d1", "model-error", 1).await?;

    s.sails("d1", "get", "/user", json!({})).await?;
    let r = s.sails("d0", "post", "/user", json!({"n": 1})).await?;
    let x = r["id"].as_u64().unwrap_or_default();
    ensure!(x > 0, "sails create answered {r}");
    let url = format!("/user/{x}");
    s.sails("d0", "put", &url, json!({"n": 2})).await?;
    s.sails("d0", "delete", &url, json!({})).await?;
    s.wait_changes("d1", "message", x).await
}

/// `/pubsub` join and publish across the nodes; `/custom`'s `set-data`.
async fn pubsub_and_custom(s: &mut Session) -> Result<()> {
    s.connect("p0", "/pubsub", 0, Transport::Websocket, None)
        .await?;
    s.connect("p1", "/pubsub", 1, Transport::Both, None).await?;
    for who in ["p0", "p1"] {
        s.ack_ok(who, "join", json!("r")).await?;
    }
    let publish = json!({"room": "r", "data": {"hello": 1}});
    s.ack_ok("p0", "publish", publish).await?;
    s.wait_for("p1", "msg", |a| a["data"]["hello"] == 1).await?;
    s.connect("c0", "/custom", 1, Transport::Polling, None)
        .await?;
    s.ack_ok("c0", "set-data", json!({"k": "v"})).await
}

/// A call to node `node`'s API that must answer 200: the parsed answer, recorded.
async fn api(
    s: &mut Session,
    node: usize,
    method: Method,
    path: &str,
    body: Value,
) -> Result<Value> {
    let body = (!body.is_null()).then_some(body);
    let t = REQUEST_TIMEOUT + Duration::from_secs(3);
    let api = s.cluster.api(node);
    let r = api
        .raw(method, path, body.clone().map(RawBody::Json), t)
        .await?;
    ensure!(r.status == 200, "{path} {body:?}: {} {}", r.status, r.body);
    let v = r.json()?;
    s.record(format!("API {path} {body:?} on node {node}"), v.clone());
    Ok(v)
}

/// `POST /api/v1/emit` of `probe` with acks to `rooms` of `/readme` (all of it when empty).
async fn api_emit(s: &mut Session, node: usize, rooms: &[&str], timeout_ms: u64) -> Result<Value> {
    let body = json!({"namespace": README, "rooms": rooms, "event": "probe", "args": [{"q": 1}],
                      "ack_timeout_ms": timeout_ms});
    api(s, node, Method::POST, "/api/v1/emit", body).await
}

/// The `key` field of each entry of the list `v[list]`.
fn ids(v: &Value, list: &str, key: &str) -> BTreeSet<String> {
    let entries = v[list].as_array().cloned().unwrap_or_default();
    entries
        .iter()
        .map(|e| e[key].as_str().unwrap_or("<none>").to_owned())
        .collect()
}

/// The server API: socket and room listings of every namespace, and emits with acks to a
/// namespace, to one socket's own room, and to a socket that never answers.
async fn server_api(s: &mut Session) -> Result<()> {
    for (i, ns) in NAMESPACES.iter().enumerate() {
        let q = ns.replace('/', "%2F");
        let path = format!("/api/v1/sockets?namespace={q}");
        let v = api(s, i % 2, Method::GET, &path, Value::Null).await?;
        let want: BTreeSet<String> = s
            .peers
            .iter()
            .filter(|p| p.ns == *ns)
            .map(|p| p.public.clone())
            .collect();
        let ok = ids(&v, "sockets", "id") == want;
        check!(s, ok, "API sockets of {ns}: want {want:?}, got {v}");
        let path = format!("/api/v1/rooms?namespace={q}");
        api(s, 1 - i % 2, Method::GET, &path, Value::Null).await?;
    }
    let readme: Vec<&Peer> = s.peers.iter().filter(|p| p.ns == README).collect();
    let want: BTreeSet<String> = readme.iter().map(|p| p.public.clone()).collect();
    for p in readme {
        s.agent
            .set_ack_reply(&p.name, "probe", AckReply::Echo)
            .await?;
    }
    s.agent
        .set_ack_reply("r3", "probe", AckReply::Never)
        .await?;
    let v = api_emit(s, 0, &[], 1500).await?;
    let (answered, silent) = (ids(&v, "acks", "socket"), ids(&v, "errors", "socket"));
    let ok = answered.union(&silent).cloned().collect::<BTreeSet<_>>() == want
        && silent == BTreeSet::from([s.id("r3")]);
    check!(s, ok, "API emit acks and errors: want {want:?}, got {v}");
    let r1 = s.id("r1");
    let v = api_emit(s, 1, &[&r1], 3000).await?;
    let ok = ids(&v, "acks", "socket") == BTreeSet::from([r1.clone()]);
    check!(s, ok, "API emit to r1's room must be answered by {r1}: {v}");
    Ok(())
}

/// Every client asks `whoami` again; then r3 leaves and the others hear it.
async fn whoami_and_goodbye(s: &mut Session) -> Result<()> {
    let names: Vec<(String, String)> = s
        .peers
        .iter()
        .map(|p| (p.name.clone(), p.public.clone()))
        .collect();
    for (name, public) in names {
        let a = s.ack(&name, "whoami", vec![]).await?;
        let ok = a == [json!({"ok": true, "id": public})];
        check!(s, ok, "{name}: whoami {a:?}, not its public id {public}");
    }
    s.agent.disconnect("r3").await?;
    s.wait("r0", "user disconnected", 1).await?;
    tokio::time::sleep(SETTLE).await;
    Ok(())
}

/// Every event every client received, one entry each.
async fn collect_events(s: &mut Session) -> Result<usize> {
    let mut n = 0;
    let names: Vec<String> = s.peers.iter().map(|p| p.name.clone()).collect();
    for name in names {
        let all = s.agent.all_events(&name).await?;
        n += all.len();
        for (i, r) in all.into_iter().enumerate() {
            let label = format!("{name} event #{i} {:?}", r.event);
            s.record(label, json!({"event": r.event, "args": r.args}));
        }
    }
    Ok(n)
}

/// Every event of every client searched with every answer: no session id anywhere, and every
/// public id somewhere.
async fn verdict(mut s: Session) -> Result<()> {
    let events = collect_events(&mut s).await?;
    let (n, ids, clients) = (s.seen.len(), s.secrets.len(), s.peers.len());
    eprintln!("searched {n} payloads ({events} events) for {ids} session ids of {clients} clients");
    // The search is only meaningful if the public ids are there to be seen (besides the
    // clients' own `whoami`).
    let others = s
        .seen
        .iter()
        .filter(|(what, _)| !what.contains("\"whoami\""));
    let all: String = others.map(|(_, v)| v.to_string()).collect();
    for p in &s.peers {
        let (name, id) = (&p.name, &p.public);
        check!(s, all.contains(id), "{name}'s public id {id} is nowhere");
    }
    for leak in leaks(&s.seen, &s.secrets) {
        s.checks.check(false, || leak);
    }
    let logs = s.cluster.logs().dir().display().to_string();
    s.checks.finish().with_context(|| format!("logs: {logs}"))
}

async fn start() -> Result<Session> {
    let cluster = Cluster::builder()
        .nodes(2)
        .api_key(Some(API_KEY))
        .node_args(["--ack-timeout-ms", "1500"])
        .start()
        .await?;
    let agent = Agent::spawn_in(cluster.logs()).await?;
    Ok(Session {
        cluster,
        agent,
        peers: Vec::new(),
        secrets: Vec::new(),
        seen: Vec::new(),
        checks: Checks::new(),
    })
}

#[tokio::test]
async fn no_session_id_reaches_any_client_or_api_answer() -> Result<()> {
    with_timeout(async {
        let mut s = start().await?;
        readme_clients(&mut s).await?;
        readme_nicknames(&mut s).await?;
        readme_events(&mut s).await?;
        readme_ask(&mut s).await?;
        readme_rooms(&mut s).await?;
        chat_and_news(&mut s).await?;
        root_chat_and_backbone(&mut s).await?;
        root_ko_ninja_and_sails(&mut s).await?;
        pubsub_and_custom(&mut s).await?;
        server_api(&mut s).await?;
        whoami_and_goodbye(&mut s).await?;
        verdict(s).await
    })
    .await
}
