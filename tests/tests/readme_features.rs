//! The Socket.IO 0.9 README's recipes (seed "Socket.IO Readme.md") as clients
//! see them across a cluster: 3 nodes on one Redis, clients of the official
//! socket.io-client spread over the nodes, over WebSocket and long-polling.
//!
//! The recipes run on `/readme` (the README's `/`), `/chat` and `/news`; see the
//! README's "Socket.IO README features" section for every event.

use std::time::Duration;

use anyhow::{Result, ensure};
use ioscale_cluster_tests::{
    AckReply, Agent, Client, Cluster, ConnectOpts, EVENT_TIMEOUT, NodeOpts, SETTLE, Transport,
    binary, expect_delivery, expect_none, transport_tests, with_timeout,
};
use serde_json::{Value, json};

const NS: &str = "/readme";

transport_tests!(
    custom_events_both_ways,
    nickname_is_visible_on_every_node,
    chat_and_news_share_one_connection,
    acknowledgements_carry_data_both_ways,
    broadcast_reaches_everyone_but_the_sender,
    rooms_join_to_and_in,
    volatile_bieber_tweets,
    message_and_send_echo,
);

/// Connects `count` clients named `{prefix}0…` to `/readme`, client `i` on node
/// `i % 3`, one after the other. Each waits for its `news`, which the node sends
/// once the connection's broadcasts are handed to the cluster, then [`SETTLE`]
/// for the other nodes to deliver them: a broadcast reaches the sockets that
/// are there when it arrives, so exact counts need the previous connection's
/// broadcasts delivered before the next client connects.
async fn connect_readme(
    cluster: &Cluster,
    agent: &Agent,
    t: Transport,
    prefix: &str,
    count: usize,
) -> Result<Vec<Client>> {
    let mut out = Vec::new();
    for i in 0..count {
        let node = i % cluster.nodes().len();
        out.push(connect_one(cluster, agent, t, &format!("{prefix}{i}"), node).await?);
    }
    Ok(out)
}

/// One client of [`connect_readme`].
async fn connect_one(
    cluster: &Cluster,
    agent: &Agent,
    t: Transport,
    name: &str,
    node: usize,
) -> Result<Client> {
    let opts = ConnectOpts::new(t).namespace(NS);
    let sid = agent
        .connect(name, &cluster.node(node).url(), &opts)
        .await?;
    agent.wait_count(name, "news", 1, EVENT_TIMEOUT).await?;
    tokio::time::sleep(SETTLE).await;
    Ok(Client {
        name: name.to_owned(),
        id: sid,
        node,
        namespace: NS.into(),
    })
}

/// Waits until each client has `n` × `event` (the positive control), waits
/// [`SETTLE`] more, then checks the counts are exact; returns the payloads in
/// the order of `want`.
async fn expect_counts(
    agent: &Agent,
    event: &str,
    want: &[(&Client, usize)],
) -> Result<Vec<Vec<Vec<Value>>>> {
    for (c, n) in want {
        if *n > 0 {
            agent.wait_count(&c.name, event, *n, EVENT_TIMEOUT).await?;
        }
    }
    tokio::time::sleep(SETTLE).await;
    let mut out = Vec::new();
    for (c, n) in want {
        let got = agent.events(&c.name, event).await?;
        ensure!(
            got.len() == *n,
            "{} (node {}) got {} × {event:?}, expected {n}: {got:?}",
            c.name,
            c.node,
            got.len()
        );
        out.push(got);
    }
    Ok(out)
}

/// Every payload in `got` equals `want`.
fn all_equal(got: &[Vec<Vec<Value>>], want: &[Value]) -> bool {
    got.iter().flatten().all(|p| p.as_slice() == want)
}

async fn ack(agent: &Agent, c: &Client, event: &str, args: Vec<Value>) -> Result<Vec<Value>> {
    agent
        .emit_with_ack(&c.name, event, args, EVENT_TIMEOUT)
        .await
}

/// An ack of one refusal.
fn is_error_ack(a: &[Value]) -> bool {
    a.len() == 1 && ioscale_cluster_tests::is_refusal(&a[0])
}

/// "How to use" and "Sending and receiving events": `news` to the new socket,
/// `this` to everyone on every connection, client events with one and two
/// arguments, and `user disconnected` to everyone else on a disconnect.
async fn custom_events_both_ways(t: Transport) -> Result<()> {
    let cluster = Cluster::start(3).await?;
    let agent = Agent::spawn().await?;
    let c = connect_readme(&cluster, &agent, t, "c", 3).await?;

    let news = expect_counts(&agent, "news", &[(&c[0], 1), (&c[1], 1), (&c[2], 1)]).await?;
    ensure!(
        all_equal(&news, &[json!({"hello": "world"})]),
        "news: {news:?}"
    );
    // c0 saw three connections (its own and two on other nodes), c2 only its own.
    let this = expect_counts(&agent, "this", &[(&c[0], 3), (&c[1], 2), (&c[2], 1)]).await?;
    ensure!(
        all_equal(&this, &[json!({"will": "be received by everyone"})]),
        "this: {this:?}"
    );

    // The README's client answer to `news`.
    let a = ack(&agent, &c[1], "my other event", vec![json!({"my": "data"})]).await?;
    ensure!(a == [json!({"ok": true})], "my other event ack: {a:?}");
    // Two arguments.
    let a = ack(
        &agent,
        &c[1],
        "private message",
        vec![json!("tobi"), json!("hi")],
    )
    .await?;
    ensure!(
        a == [json!({"ok": true, "from": "tobi", "msg": "hi"})],
        "private message ack: {a:?}"
    );
    // Bad input: an error through the ack, or a `readme-error` event to the sender only.
    let a = ack(&agent, &c[1], "private message", vec![json!(5)]).await?;
    ensure!(is_error_ack(&a), "private message (5): {a:?}");
    agent
        .emit(
            &c[1].name,
            "private message",
            vec![json!({"not": "strings"})],
        )
        .await?;
    expect_delivery(&agent, &c, &[&c[1]], "readme-error", None).await?;
    let e = agent.events(&c[1].name, "readme-error").await?;
    ensure!(
        e[0].len() == 1
            && e[0][0]["event"] == "private message"
            && e[0][0]["ok"] == false
            && e[0][0]["error"].is_string(),
        "readme-error: {e:?}"
    );

    // A disconnect on node C reaches the clients of A and B, with no arguments.
    agent.disconnect(&c[2].name).await?;
    let gone = expect_counts(&agent, "user disconnected", &[(&c[0], 1), (&c[1], 1)]).await?;
    ensure!(all_equal(&gone, &[]), "user disconnected: {gone:?}");
    agent.disconnect(&c[0].name).await?;
    expect_counts(&agent, "user disconnected", &[(&c[1], 2)]).await?;
    Ok(())
}

/// "Storing data associated to a client": `set nickname` then `ready`, then
/// `msg` carries the nickname to every node, and every node reads it through
/// fetchSockets (the `nicknames` event and the HTTP API).
async fn nickname_is_visible_on_every_node(t: Transport) -> Result<()> {
    let cluster = Cluster::start(3).await?;
    let agent = Agent::spawn().await?;
    let c = connect_readme(&cluster, &agent, t, "c", 3).await?;

    // Without a nickname `msg` is refused, and nobody gets anything.
    agent
        .emit(&c[1].name, "msg", vec![json!("too early")])
        .await?;
    expect_delivery(&agent, &c, &[&c[1]], "readme-error", None).await?;
    let e = agent.events(&c[1].name, "readme-error").await?;
    ensure!(
        e[0] == [
            json!({"event": "msg", "ok": false, "code": "bad_request", "error": "set a nickname first"})
        ],
        "msg without nickname: {e:?}"
    );
    expect_none(&agent, &c, "msg").await?;

    // The README's client: set nickname, wait for ready, send a message.
    agent
        .emit(&c[0].name, "set nickname", vec![json!("tobi")])
        .await?;
    expect_delivery(&agent, &c, &[&c[0]], "ready", Some(&[])).await?;
    agent.emit(&c[0].name, "msg", vec![json!("hello")]).await?;
    let all: Vec<&Client> = c.iter().collect();
    expect_delivery(
        &agent,
        &c,
        &all,
        "msg",
        Some(&[json!({"nickname": "tobi", "text": "hello"})]),
    )
    .await?;

    // Node C reads node A's socket data.
    let a = ack(&agent, &c[2], "nicknames", vec![]).await?;
    ensure!(
        a == [
            json!({"nicknames": [{"id": c[0].id, "node": "node-a", "nickname": "tobi"}],
                     "missing_nodes": []})
        ],
        "nicknames from node C: {a:?}"
    );
    let sockets = cluster.api(1).sockets(NS, &[]).await?;
    let tobi = sockets.iter().find(|s| s.id == c[0].id);
    ensure!(
        tobi.is_some_and(|s| s.data == json!({"nickname": "tobi"}) && s.node == "node-a"),
        "GET /api/v1/sockets on node B: {sockets:?}"
    );

    // With an ack; a second nickname; bad nicknames change nothing.
    let a = ack(&agent, &c[1], "set nickname", vec![json!("ferret")]).await?;
    ensure!(a == [json!({"ok": true})], "set nickname ack: {a:?}");
    for bad in [json!(42), json!(""), json!("   "), json!("x".repeat(101))] {
        let a = ack(&agent, &c[1], "set nickname", vec![bad.clone()]).await?;
        ensure!(is_error_ack(&a), "set nickname {bad}: {a:?}");
    }
    let a = ack(&agent, &c[1], "msg", vec![json!("hi")]).await?;
    ensure!(a == [json!({"ok": true})], "msg ack: {a:?}");
    for x in &c {
        let got = agent.wait_count(&x.name, "msg", 2, EVENT_TIMEOUT).await?;
        ensure!(
            got[1] == [json!({"nickname": "ferret", "text": "hi"})],
            "{}: second msg {got:?}",
            x.name
        );
    }
    let a = ack(&agent, &c[2], "nicknames", vec![]).await?;
    let mut want = vec![
        json!({"id": c[0].id, "node": "node-a", "nickname": "tobi"}),
        json!({"id": c[1].id, "node": "node-b", "nickname": "ferret"}),
    ];
    want.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    ensure!(
        a == [json!({"nicknames": want, "missing_nodes": []})],
        "nicknames: {a:?}"
    );

    // The data leaves with its socket.
    agent.disconnect(&c[0].name).await?;
    agent
        .wait_count(&c[2].name, "user disconnected", 1, EVENT_TIMEOUT)
        .await?;
    let a = ack(&agent, &c[2], "nicknames", vec![]).await?;
    ensure!(
        a[0]["nicknames"] == json!([{"id": c[1].id, "node": "node-b", "nickname": "ferret"}]),
        "nicknames after tobi left: {a:?}"
    );
    Ok(())
}

/// "Restricting yourself to a namespace": `/chat` and `/news` opened on one
/// connection. `/chat` greets the new socket and broadcasts to every `/chat`
/// socket of every node; `/news` sends an item; nothing crosses namespaces.
async fn chat_and_news_share_one_connection(t: Transport) -> Result<()> {
    let cluster = Cluster::start(3).await?;
    let agent = Agent::spawn().await?;
    let mut chat = Vec::new();
    let mut news = Vec::new();
    for (i, name) in ["x", "y", "z"].iter().enumerate() {
        let url = cluster.node(i).url();
        let c_name = format!("{name}-chat");
        let n_name = format!("{name}-news");
        let c_id = agent
            .connect(&c_name, &url, &ConnectOpts::new(t).namespace("/chat"))
            .await?;
        // Its own broadcast and its greeting (sent after the broadcast), then
        // time for the other nodes to deliver the broadcast.
        agent
            .wait_count(&c_name, "a message", 2, EVENT_TIMEOUT)
            .await?;
        tokio::time::sleep(SETTLE).await;
        let n_id = agent
            .connect(
                &n_name,
                &url,
                &ConnectOpts::new(t).namespace("/news").share_with(&c_name),
            )
            .await?;
        let (cs, ns) = (agent.state(&c_name).await?, agent.state(&n_name).await?);
        // (Each namespace's socket has a public id of its own: only the session is
        // shared.)
        ensure!(
            cs.engine_id.is_some() && cs.engine_id == ns.engine_id,
            "/chat and /news must share one Engine.IO connection: {cs:?} {ns:?}"
        );
        chat.push(Client {
            name: c_name,
            id: c_id,
            node: i,
            namespace: "/chat".into(),
        });
        news.push(Client {
            name: n_name,
            id: n_id,
            node: i,
            namespace: "/news".into(),
        });
    }
    let root = connect_readme(&cluster, &agent, t, "r", 3).await?;

    let only = json!({"that": "only", "/chat": "will get"});
    let everyone = json!({"everyone": "in", "/chat": "will get"});
    let got = expect_counts(
        &agent,
        "a message",
        &[(&chat[0], 4), (&chat[1], 3), (&chat[2], 2)],
    )
    .await?;
    for (c, msgs) in chat.iter().zip(&got) {
        let n_only = msgs
            .iter()
            .filter(|m| m.as_slice() == [only.clone()])
            .count();
        let n_all = msgs
            .iter()
            .filter(|m| m.as_slice() == [everyone.clone()])
            .count();
        ensure!(
            n_only == 1 && n_only + n_all == msgs.len(),
            "{}: a message {msgs:?}",
            c.name
        );
    }
    expect_delivery(
        &agent,
        &news,
        &news.iter().collect::<Vec<_>>(),
        "item",
        Some(&[json!({"news": "item"})]),
    )
    .await?;
    expect_none(&agent, &news, "a message").await?;
    expect_none(&agent, &chat, "item").await?;
    expect_none(&agent, &root, "a message").await?;

    // The README's client: `hi!` on /chat reaches the other /chat sockets.
    agent.emit(&chat[0].name, "hi!", vec![]).await?;
    expect_delivery(
        &agent,
        &chat,
        &[&chat[1], &chat[2]],
        "hi!",
        Some(&[json!({"from": chat[0].id})]),
    )
    .await?;
    expect_none(&agent, &news, "hi!").await?;
    // ... and `woot` on /news is answered on the same connection.
    let a = ack(&agent, &news[2], "woot", vec![]).await?;
    ensure!(a == [json!({"news": "woot"})], "woot ack: {a:?}");
    agent.emit(&news[1].name, "woot", vec![]).await?;
    let items = agent
        .wait_count(&news[1].name, "item", 2, EVENT_TIMEOUT)
        .await?;
    ensure!(
        items[1] == [json!({"news": "woot"})],
        "woot reply: {items:?}"
    );
    Ok(())
}

/// "Getting acknowledgements": `ferret` answers the client's callback with
/// 'woot'; `ask` makes the server emit `question` with an ack to sockets on
/// other nodes and hands their answers (binary included) back to the asker.
async fn acknowledgements_carry_data_both_ways(t: Transport) -> Result<()> {
    let cluster = Cluster::builder()
        .node_args(["--ack-timeout-ms", "1500"])
        .start()
        .await?;
    let agent = Agent::spawn().await?;
    let c = connect_readme(&cluster, &agent, t, "c", 3).await?;

    let a = ack(&agent, &c[0], "ferret", vec![json!("tobi")]).await?;
    ensure!(a == [json!("woot")], "ferret: {a:?}");
    agent
        .emit(&c[0].name, "ferret", vec![json!("tobi")])
        .await?;
    let e = agent
        .wait_count(&c[0].name, "readme-error", 1, EVENT_TIMEOUT)
        .await?;
    ensure!(
        e[0][0]["event"] == "ferret" && e[0][0]["ok"] == false,
        "ferret without ack: {e:?}"
    );

    agent
        .set_ack_reply(
            &c[2].name,
            "question",
            AckReply::Value(json!({"answer": 42})),
        )
        .await?;
    agent
        .set_ack_reply(&c[1].name, "question", AckReply::Echo)
        .await?;

    // One socket on node C.
    let a = ack(
        &agent,
        &c[0],
        "ask",
        vec![json!({"to": c[2].id, "question": "what?"})],
    )
    .await?;
    ensure!(
        a == [
            json!({"answers": [{"socket": c[2].id, "node": "node-c", "answer": {"answer": 42}}],
                     "unanswered": [], "complete": true, "missing_nodes": []})
        ],
        "ask c2: {a:?}"
    );
    let q = agent.all_events(&c[2].name).await?;
    let q: Vec<_> = q.iter().filter(|r| r.event == "question").collect();
    ensure!(
        q.len() == 1 && q[0].ack && q[0].args == [json!("what?")],
        "c2 should get one question with an ack: {q:?}"
    );

    // A room spanning two nodes; binary survives both ways.
    for x in [&c[1], &c[2]] {
        let a = ack(&agent, x, "join", vec![json!("panel")]).await?;
        ensure!(a == [json!({"ok": true})], "join: {a:?}");
    }
    let a = ack(
        &agent,
        &c[0],
        "ask",
        vec![json!({"to": "panel", "question": binary(&[1, 2, 3])})],
    )
    .await?;
    let answers = a[0]["answers"].as_array().cloned().unwrap_or_default();
    let from = |sid: &str| answers.iter().find(|x| x["socket"] == sid).cloned();
    ensure!(
        answers.len() == 2
            && from(&c[1].id)
                .is_some_and(|x| x["answer"] == binary(&[1, 2, 3]) && x["node"] == "node-b")
            && from(&c[2].id).is_some_and(|x| x["answer"] == json!({"answer": 42}))
            && a[0]["complete"] == true,
        "ask panel: {a:?}"
    );

    // A socket that never answers is reported, not waited for forever.
    agent
        .set_ack_reply(&c[1].name, "question", AckReply::Never)
        .await?;
    let a = ack(
        &agent,
        &c[0],
        "ask",
        vec![json!({"to": c[1].id, "question": 1})],
    )
    .await?;
    ensure!(
        a[0]["answers"] == json!([])
            && a[0]["complete"] == false
            && a[0]["unanswered"][0]["socket"] == c[1].id.as_str()
            // A code, not the transport's error text.
            && a[0]["unanswered"][0]["error"] == "timeout",
        "ask a silent socket: {a:?}"
    );

    // Bad input.
    for bad in [
        json!("not an object"),
        json!({"question": 1}),
        json!({"to": ""}),
    ] {
        let a = ack(&agent, &c[0], "ask", vec![bad.clone()]).await?;
        ensure!(is_error_ack(&a), "ask {bad}: {a:?}");
    }
    Ok(())
}

/// "Broadcasting messages": on each connection `user connected` and a plain
/// `message {a: 'message'}` reach every other socket on every node but not the
/// new one; `shout` does the same on demand.
async fn broadcast_reaches_everyone_but_the_sender(t: Transport) -> Result<()> {
    let cluster = Cluster::start(3).await?;
    let agent = Agent::spawn().await?;
    let c = connect_readme(&cluster, &agent, t, "c", 3).await?;

    let got = expect_counts(
        &agent,
        "user connected",
        &[(&c[0], 2), (&c[1], 1), (&c[2], 0)],
    )
    .await?;
    ensure!(all_equal(&got, &[]), "user connected: {got:?}");
    let got = expect_counts(&agent, "message", &[(&c[0], 2), (&c[1], 1), (&c[2], 0)]).await?;
    ensure!(
        all_equal(&got, &[json!({"a": "message"})]),
        "message: {got:?}"
    );

    agent
        .emit(&c[1].name, "shout", vec![json!({"x": 1})])
        .await?;
    expect_delivery(
        &agent,
        &c,
        &[&c[0], &c[2]],
        "shout",
        Some(&[json!({"from": c[1].id, "data": {"x": 1}})]),
    )
    .await
}

/// "Rooms": every socket joins `justin bieber fans` and the others in it hear
/// `new fan`; members of `rammstein fans` hear `new non-fan` on every
/// connection; `to` reaches a room but the sender, `in` the whole room.
async fn rooms_join_to_and_in(t: Transport) -> Result<()> {
    let cluster = Cluster::start(3).await?;
    let agent = Agent::spawn().await?;
    let c = connect_readme(&cluster, &agent, t, "c", 3).await?;

    let got = expect_counts(&agent, "new fan", &[(&c[0], 2), (&c[1], 1), (&c[2], 0)]).await?;
    ensure!(all_equal(&got, &[]), "new fan: {got:?}");
    let sockets = cluster.api(0).sockets(NS, &["justin bieber fans"]).await?;
    ensure!(sockets.len() == 3, "all three are fans: {sockets:?}");

    let a = ack(&agent, &c[1], "join", vec![json!("rammstein fans")]).await?;
    ensure!(a == [json!({"ok": true})], "join: {a:?}");
    let late = connect_one(&cluster, &agent, t, "late", 2).await?;
    let mut all = c.clone();
    all.push(late.clone());
    expect_delivery(&agent, &all, &[&c[1]], "new non-fan", Some(&[])).await?;

    // `to`: the room's other members, on every node.
    for x in [&c[0], &c[2]] {
        ack(&agent, x, "join", vec![json!("room1")]).await?;
    }
    let a = ack(
        &agent,
        &c[0],
        "to",
        vec![json!({"room": "room1", "data": "x"})],
    )
    .await?;
    ensure!(a == [json!({"ok": true})], "to ack: {a:?}");
    expect_delivery(
        &agent,
        &all,
        &[&c[2]],
        "room message",
        Some(&[json!({"from": c[0].id, "room": "room1", "data": "x"})]),
    )
    .await?;
    // `in`: every member, the sender included; a non-member may send to it.
    ack(
        &agent,
        &c[0],
        "in",
        vec![json!({"room": "room1", "data": "y"})],
    )
    .await?;
    ack(
        &agent,
        &c[1],
        "in",
        vec![json!({"room": "room1", "data": "z"})],
    )
    .await?;
    let got = expect_counts(
        &agent,
        "room message",
        &[(&c[0], 2), (&c[1], 0), (&c[2], 3), (&late, 0)],
    )
    .await?;
    let data = |msgs: &Vec<Vec<Value>>| -> Vec<Value> {
        msgs.iter().map(|m| m[0]["data"].clone()).collect()
    };
    ensure!(
        data(&got[0]) == [json!("y"), json!("z")]
            && data(&got[2]) == [json!("x"), json!("y"), json!("z")],
        "in: {got:?}"
    );
    // After `leave`, nothing more.
    ack(&agent, &c[2], "leave", vec![json!("room1")]).await?;
    ack(
        &agent,
        &c[0],
        "in",
        vec![json!({"room": "room1", "data": "w"})],
    )
    .await?;
    expect_counts(&agent, "room message", &[(&c[0], 3), (&c[2], 3)]).await?;

    // Bad rooms, including another socket's own room.
    for bad in [json!(""), json!(5), json!(c[1].id), json!("r".repeat(257))] {
        let a = ack(&agent, &c[0], "join", vec![bad.clone()]).await?;
        ensure!(is_error_ack(&a), "join {bad}: {a:?}");
    }
    let a = ack(&agent, &c[0], "to", vec![json!({"data": 1})]).await?;
    ensure!(is_error_ack(&a), "to without room: {a:?}");
    Ok(())
}

/// "Sending volatile messages": every socket gets a `bieber tweet` stream
/// (volatile: some may be skipped, none repeated or reordered), and `tweet`
/// sends a volatile tweet to every fan on every node.
async fn volatile_bieber_tweets(t: Transport) -> Result<()> {
    let cluster = Cluster::start(3).await?;
    let agent = Agent::spawn().await?;
    let c = connect_readme(&cluster, &agent, t, "c", 3).await?;

    for x in &c {
        // 100 ms apart: at least 5 within the event timeout, even with skips.
        let got = agent
            .wait_count(&x.name, "bieber tweet", 5, EVENT_TIMEOUT)
            .await?;
        let seqs: Vec<u64> = got
            .iter()
            .filter_map(|a| a.first().and_then(|t| t["seq"].as_u64()))
            .collect();
        ensure!(
            seqs.len() == got.len() && seqs.windows(2).all(|w| w[0] < w[1]),
            "{}: tweet stream must be increasing: {got:?}",
            x.name
        );
    }

    // c1 leaves the fans: the triggered tweets of c0 must not reach it.
    ack(&agent, &c[1], "leave", vec![json!("justin bieber fans")]).await?;
    // Volatile tweets may be dropped (each socket keeps only its latest
    // volatile packet, and the stream sends one every 100 ms), so c0 tweets
    // until c0 and c2 (on another node) have each heard one.
    let ours = |got: &[Vec<Value>]| -> Vec<String> {
        got.iter()
            .filter(|a| a.first().is_some_and(|t| t["from"] == c[0].id.as_str()))
            .filter_map(|a| a[0]["text"].as_str().map(str::to_owned))
            .collect()
    };
    let mut heard = false;
    for i in 0..40 {
        let a = ack(&agent, &c[0], "tweet", vec![json!(format!("hello #{i}"))]).await?;
        ensure!(a == [json!({"ok": true})], "tweet ack: {a:?}");
        tokio::time::sleep(Duration::from_millis(150)).await;
        let g0 = ours(&agent.events(&c[0].name, "bieber tweet").await?);
        let g2 = ours(&agent.events(&c[2].name, "bieber tweet").await?);
        if !g0.is_empty() && !g2.is_empty() {
            heard = true;
            break;
        }
    }
    ensure!(heard, "c0 and c2 never heard a tweet of c0 in 40 tries");
    tokio::time::sleep(SETTLE).await;
    for x in &c {
        let texts = ours(&agent.events(&x.name, "bieber tweet").await?);
        let mut dedup = texts.clone();
        dedup.dedup();
        ensure!(
            dedup == texts,
            "{}: a tweet arrived twice: {texts:?}",
            x.name
        );
        ensure!(
            x.name != c[1].name || texts.is_empty(),
            "c1 left the fans but heard {texts:?}"
        );
    }
    let a = ack(&agent, &c[0], "tweet", vec![json!("x".repeat(281))]).await?;
    ensure!(is_error_ack(&a), "a long tweet: {a:?}");
    Ok(())
}

/// "Using it just as a cross-browser WebSocket": `socket.send(...)` emits
/// `message`, which the server echoes to the sender only, arguments and binary
/// intact.
async fn message_and_send_echo(t: Transport) -> Result<()> {
    let cluster = Cluster::start(3).await?;
    let agent = Agent::spawn().await?;
    let c = connect_readme(&cluster, &agent, t, "c", 3).await?;
    // The connection-time broadcasts first (2 on c0, 1 on c1), so they are not
    // mistaken for echoes.
    expect_counts(&agent, "message", &[(&c[0], 2), (&c[1], 1), (&c[2], 0)]).await?;

    agent.emit(&c[2].name, "message", vec![json!("hi")]).await?;
    let payload = vec![json!("a"), json!(1), binary(&[0, 255, 7])];
    agent.emit(&c[0].name, "message", payload.clone()).await?;
    agent.emit(&c[1].name, "message", vec![]).await?;
    let got = expect_counts(&agent, "message", &[(&c[0], 3), (&c[1], 2), (&c[2], 1)]).await?;
    ensure!(got[2] == [vec![json!("hi")]], "c2 echo: {:?}", got[2]);
    ensure!(got[0][2] == payload, "c0 echo: {:?}", got[0]);
    ensure!(
        got[1][1].is_empty(),
        "c1 echo of no arguments: {:?}",
        got[1]
    );
    Ok(())
}

/// "Changing configuration": `--transports websocket` refuses long-polling
/// clients and `--transports polling` refuses WebSocket ones, while clients of
/// both still talk to each other through the cluster.
#[tokio::test]
async fn transports_setting_is_enforced() -> Result<()> {
    with_timeout(async {
        let mut cluster = Cluster::builder().nodes(1).start().await?;
        let ws_only: NodeOpts = cluster
            .node_opts(1)
            .with_args(["--transports", "websocket"]);
        let polling_only: NodeOpts = cluster.node_opts(2).with_args(["--transports", "polling"]);
        cluster.add_node_with(ws_only).await?;
        cluster.add_node_with(polling_only).await?;
        cluster.wait_nodes_visible(3).await?;
        let agent = Agent::spawn().await?;
        let opts = |t| ConnectOpts::new(t).namespace(NS);

        let refused = agent
            .connect("p-on-ws", &cluster.node(1).url(), &opts(Transport::Polling))
            .await;
        ensure!(
            refused.is_err(),
            "a polling client connected to a websocket-only node"
        );
        let refused = agent
            .connect(
                "w-on-p",
                &cluster.node(2).url(),
                &opts(Transport::Websocket),
            )
            .await;
        ensure!(
            refused.is_err(),
            "a websocket client connected to a polling-only node"
        );
        // The handshake itself says why.
        let r = reqwest::Client::new()
            .get(format!(
                "{}/socket.io/?EIO=4&transport=polling",
                cluster.node(1).url()
            ))
            .timeout(Duration::from_secs(5))
            .send()
            .await?;
        ensure!(
            r.status() == 400,
            "polling handshake on a websocket-only node: {}",
            r.status()
        );

        agent
            .connect("w", &cluster.node(1).url(), &opts(Transport::Websocket))
            .await?;
        agent
            .connect("p", &cluster.node(2).url(), &opts(Transport::Polling))
            .await?;
        let (w, p) = (agent.state("w").await?, agent.state("p").await?);
        ensure!(
            w.transport.as_deref() == Some("websocket")
                && p.transport.as_deref() == Some("polling"),
            "transports: {w:?} {p:?}"
        );
        agent
            .emit("p", "set nickname", vec![json!("poller")])
            .await?;
        agent.wait_count("p", "ready", 1, EVENT_TIMEOUT).await?;
        agent.emit("p", "msg", vec![json!("over polling")]).await?;
        let got = agent.wait_count("w", "msg", 1, EVENT_TIMEOUT).await?;
        ensure!(
            got[0] == [json!({"nickname": "poller", "text": "over polling"})],
            "msg from the polling node: {got:?}"
        );
        Ok(())
    })
    .await
}
