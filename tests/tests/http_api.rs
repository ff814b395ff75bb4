//! The server HTTP API contract: bearer-token auth on every `/api/v1/*` route,
//! errors as `{"ok": false, "error", "code", "request_id"}`: 400 for malformed or mistyped bodies and
//! queries, 404 for unknown routes and namespaces, 405 for a wrong method;
//! binary values both ways, and socket rooms.

use std::time::Duration;

use anyhow::{Result, ensure};
use ioscale_cluster_tests::cluster::DEFAULT_API_KEY;
use ioscale_cluster_tests::extra::Checks;
use ioscale_cluster_tests::http::{Method, RawBody, RawResponse};
use ioscale_cluster_tests::{
    AckReply, Agent, Cluster, ConnectOpts, EVENT_TIMEOUT, Emit, Selector, Transport, binary,
    with_timeout,
};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(10);

/// Every API route with a valid request that has no lasting effect.
fn routes() -> Vec<(Method, &'static str, Option<Value>)> {
    vec![
        (Method::GET, "/api/v1/sockets?namespace=%2F", None),
        (Method::GET, "/api/v1/rooms?namespace=%2F", None),
        (Method::GET, "/api/v1/nodes", None),
        (
            Method::POST,
            "/api/v1/emit",
            Some(json!({"event": "probe", "args": []})),
        ),
        (
            Method::POST,
            "/api/v1/join",
            Some(json!({"sockets": ["no-such-socket"], "join": ["r"]})),
        ),
        (
            Method::POST,
            "/api/v1/leave",
            Some(json!({"sockets": ["no-such-socket"], "leave": ["r"]})),
        ),
        (
            Method::POST,
            "/api/v1/disconnect",
            Some(json!({"sockets": ["no-such-socket"]})),
        ),
        (
            Method::POST,
            "/api/v1/server-emit",
            Some(json!({"event": "probe"})),
        ),
    ]
}

/// Whether the body is exactly `{"ok": false, "error": "<non-empty string>", "code":
/// "<non-empty string>", "request_id": "<16 hex digits>"}`.
fn is_error_body(r: &RawResponse) -> bool {
    r.json()
        .ok()
        .and_then(|v| {
            let o = v.as_object()?;
            let error = o.get("error")?.as_str()?;
            let code = o.get("code")?.as_str()?;
            let id = o.get("request_id")?.as_str()?;
            Some(
                o.len() == 4
                    && o.get("ok") == Some(&Value::Bool(false))
                    && !error.is_empty()
                    && !code.is_empty()
                    && id.len() == 16
                    && id.chars().all(|c| c.is_ascii_hexdigit()),
            )
        })
        .unwrap_or(false)
}

/// Sends with an arbitrary `Authorization` header (or none).
async fn with_header(
    base: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
    auth: Option<&str>,
) -> Result<RawResponse> {
    let client = reqwest::Client::builder().timeout(T).build()?;
    let mut req = client.request(method, format!("{base}{path}"));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    Ok(RawResponse {
        status,
        body: resp.text().await?,
    })
}

#[tokio::test]
async fn every_api_route_requires_the_bearer_token() -> Result<()> {
    with_timeout(async {
        let cluster = Cluster::builder().nodes(1).start().await?;
        let agent = Agent::spawn().await?;
        let opts = ConnectOpts::new(Transport::Websocket).namespace("/custom");
        agent.connect("c", &cluster.node(0).url(), &opts).await?;
        let api = cluster.api(0);
        let base = api.base().to_owned();
        let mut checks = Checks::new();

        let bad_headers: Vec<(String, Option<String>)> = vec![
            ("no Authorization header".into(), None),
            ("wrong token".into(), Some("Bearer wrong".into())),
            ("empty token".into(), Some("Bearer ".into())),
            (
                "prefix of the key".into(),
                Some(format!(
                    "Bearer {}",
                    &DEFAULT_API_KEY[..DEFAULT_API_KEY.len() - 1]
                )),
            ),
            (
                "key plus a byte".into(),
                Some(format!("Bearer {DEFAULT_API_KEY}x")),
            ),
            (
                "key without the Bearer scheme".into(),
                Some(DEFAULT_API_KEY.to_owned()),
            ),
            (
                "Basic scheme".into(),
                Some(format!("Basic {DEFAULT_API_KEY}")),
            ),
        ];
        for (method, path, body) in routes() {
            for (label, header) in &bad_headers {
                let r = with_header(
                    &base,
                    method.clone(),
                    path,
                    body.as_ref(),
                    header.as_deref(),
                )
                .await?;
                checks.check(r.status == 401 && is_error_body(&r), || {
                    format!(
                        "{method} {path} with {label}: expected 401 {{\"ok\": false, \"error\"}}, got {} {}",
                        r.status, r.body
                    )
                });
            }
            let r = api
                .raw(method.clone(), path, body.clone().map(RawBody::Json), T)
                .await?;
            checks.check(r.status == 200 && r.json().is_ok(), || {
                format!(
                    "{method} {path} with the right token: expected 200 JSON, got {} {}",
                    r.status, r.body
                )
            });
        }
        // An unknown route behind the right token is a 404 with an error body.
        let r = api.raw(Method::GET, "/api/v1/nope", None, T).await?;
        checks.check(r.status == 404 && is_error_body(&r), || {
            format!(
                "GET /api/v1/nope: expected 404 {{\"ok\": false, \"error\"}}, got {} {}",
                r.status, r.body
            )
        });
        // A known route with the wrong method, and a query string that does not parse (a
        // repeated parameter), are refused with the same body.
        for (method, path, status) in [
            (Method::GET, "/api/v1/emit", 405),
            (Method::GET, "/api/v1/rooms?namespace=%2F&namespace=%2Fcustom", 400),
        ] {
            let r = api.raw(method.clone(), path, None, T).await?;
            checks.check(r.status == status && is_error_body(&r), || {
                format!(
                    "{method} {path}: expected {status} {{\"ok\": false, \"error\"}}, got {} {}",
                    r.status, r.body
                )
            });
        }
        // Health and metrics stay open (probes and scrapers carry no token).
        for path in ["/healthz", "/readyz", "/metrics"] {
            let r = with_header(&base, Method::GET, path, None, None).await?;
            checks.check(r.status == 200, || {
                format!("GET {path} without token: {} {}", r.status, r.body)
            });
        }

        // A rejected emit has no effect: only the authorised one arrives.
        let body = json!({"namespace": "/custom", "event": "sneaky", "args": [1]});
        let r = with_header(
            &base,
            Method::POST,
            "/api/v1/emit",
            Some(&body),
            Some("Bearer wrong"),
        )
        .await?;
        checks.check(r.status == 401, || {
            format!("sneaky emit: {} {}", r.status, r.body)
        });
        api.emit(&Emit::new("legit", vec![json!(2)]).namespace("/custom"))
            .await?;
        agent.wait_count("c", "legit", 1, EVENT_TIMEOUT).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let events: Vec<String> = agent
            .all_events("c")
            .await?
            .into_iter()
            .map(|e| e.event)
            .collect();
        // (The route checks' own emit went to `/`, where this client is not.)
        checks.check(events == ["legit"], || {
            format!("client events: expected only [legit], got {events:?}")
        });
        checks.finish()
    })
    .await
}

#[tokio::test]
async fn malformed_or_mistyped_bodies_are_400_with_an_error() -> Result<()> {
    with_timeout(async {
        let cluster = Cluster::builder().nodes(1).start().await?;
        let agent = Agent::spawn().await?;
        let opts = ConnectOpts::new(Transport::Websocket);
        agent.connect("c", &cluster.node(0).url(), &opts).await?;
        let api = cluster.api(0);
        let mut checks = Checks::new();
        let cases: &[(&str, &str)] = &[
            ("/api/v1/emit", "{not json"),
            ("/api/v1/emit", ""),
            ("/api/v1/emit", "[1, 2]"),
            ("/api/v1/emit", r#"{"args": []}"#),
            ("/api/v1/emit", r#"{"event": 5}"#),
            ("/api/v1/emit", r#"{"event": "x", "args": "not-an-array"}"#),
            ("/api/v1/emit", r#"{"event": "x", "rooms": "r"}"#),
            ("/api/v1/emit", r#"{"event": "x", "rooms": [1]}"#),
            ("/api/v1/emit", r#"{"event": "x", "except": {"a": 1}}"#),
            ("/api/v1/emit", r#"{"event": "x", "volatile": "yes"}"#),
            (
                "/api/v1/emit",
                r#"{"event": "x", "ack_timeout_ms": "soon"}"#,
            ),
            ("/api/v1/emit", r#"{"event": "x", "ack_timeout_ms": -1}"#),
            ("/api/v1/emit", r#"{"event": "x", "ack_timeout_ms": 0}"#),
            ("/api/v1/emit", r#"{"event": "x", "ack_timeout_ms": 60001}"#),
            ("/api/v1/emit", r#"{"event": "x", "namespace": 7}"#),
            ("/api/v1/emit", r#"{"event": "x", "bogus": 1}"#),
            ("/api/v1/emit", r#"{"event": "x", "rooms": [""]}"#),
            (
                "/api/v1/emit",
                r#"{"event": "x", "args": [{"$binary": "!!! not base64"}]}"#,
            ),
            (
                "/api/v1/emit",
                r#"{"event": "x", "args": [{"$binary": 12}]}"#,
            ),
            ("/api/v1/emit", r#"{"event": ""}"#),
            ("/api/v1/emit", r#"{"event": "connect"}"#),
            ("/api/v1/emit", r#"{"event": "disconnect"}"#),
            ("/api/v1/join", "{"),
            ("/api/v1/join", r#"{"join": "r"}"#),
            ("/api/v1/join", r#"{"join": []}"#),
            ("/api/v1/join", r#"{}"#),
            ("/api/v1/join", r#"{"sockets": "abc", "join": ["r"]}"#),
            ("/api/v1/join", r#"{"join": ["r"], "leave": ["s"]}"#),
            ("/api/v1/join", r#"{"join": [""]}"#),
            // Shaped like a public id: a socket's own room, the node's alone.
            ("/api/v1/join", r#"{"join": ["AAAAAAAAAAAAAAAAAAAAAA"]}"#),
            ("/api/v1/leave", r#"{"leave": ["AAAAAAAAAAAAAAAAAAAAAA"]}"#),
            ("/api/v1/leave", r#"{"leave": 5}"#),
            ("/api/v1/leave", r#"{}"#),
            ("/api/v1/disconnect", r#"{"sockets": [1]}"#),
            ("/api/v1/disconnect", r#"{"join": ["r"]}"#),
            ("/api/v1/disconnect", "nope"),
            (
                "/api/v1/server-emit",
                r#"{"event": "x", "ack_timeout_ms": "soon"}"#,
            ),
            (
                "/api/v1/server-emit",
                r#"{"event": "x", "ack_timeout_ms": 0}"#,
            ),
            ("/api/v1/server-emit", r#"{"event": ""}"#),
            ("/api/v1/server-emit", r#"{"event": "x", "args": {}}"#),
            ("/api/v1/server-emit", r#"{"nope": 1}"#),
            ("/api/v1/server-emit", "\"just a string\""),
        ];
        for (path, body) in cases {
            let r = api
                .raw(
                    Method::POST,
                    path,
                    Some(RawBody::Text((*body).to_owned())),
                    T,
                )
                .await?;
            checks.check(r.status == 400 && is_error_body(&r), || {
                format!(
                    "POST {path} {body:?}: expected 400 {{\"ok\": false, \"error\": …}}, got {} {}",
                    r.status, r.body
                )
            });
        }
        // None of them emitted anything or moved the client; a valid emit
        // still works afterwards.
        api.emit(&Emit::new("legit", vec![json!(1)])).await?;
        agent.wait_count("c", "legit", 1, EVENT_TIMEOUT).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let events: Vec<String> = agent
            .all_events("c")
            .await?
            .into_iter()
            .map(|e| e.event)
            .collect();
        checks.check(events == ["messages-available", "legit"], || {
            format!("client events: expected [messages-available, legit], got {events:?}")
        });
        let st = agent.state("c").await?;
        checks.check(st.connected, || format!("client was disconnected: {st:?}"));
        checks.finish()
    })
    .await
}

#[tokio::test]
async fn unknown_namespace_is_404() -> Result<()> {
    with_timeout(async {
        let cluster = Cluster::builder().nodes(1).start().await?;
        let api = cluster.api(0);
        let mut checks = Checks::new();
        let nope: Vec<(Method, &str, Option<Value>)> = vec![
            (
                Method::POST,
                "/api/v1/emit",
                Some(json!({"namespace": "/nope", "event": "x"})),
            ),
            (
                Method::POST,
                "/api/v1/emit",
                Some(json!({"namespace": "/nope", "event": "x", "ack_timeout_ms": 100})),
            ),
            (Method::GET, "/api/v1/sockets?namespace=%2Fnope", None),
            (Method::GET, "/api/v1/rooms?namespace=%2Fnope", None),
            (Method::GET, "/api/v1/nodes?namespace=%2Fnope", None),
            (
                Method::POST,
                "/api/v1/join",
                Some(json!({"namespace": "/nope", "join": ["r"]})),
            ),
            (
                Method::POST,
                "/api/v1/leave",
                Some(json!({"namespace": "/nope", "leave": ["r"]})),
            ),
            (
                Method::POST,
                "/api/v1/disconnect",
                Some(json!({"namespace": "/nope"})),
            ),
            (
                Method::POST,
                "/api/v1/server-emit",
                Some(json!({"namespace": "/nope", "event": "x"})),
            ),
            (
                Method::POST,
                "/api/v1/server-emit",
                Some(json!({"namespace": "/nope", "event": "x", "ack_timeout_ms": 100})),
            ),
        ];
        for (method, path, body) in nope {
            let r = api
                .raw(method.clone(), path, body.clone().map(RawBody::Json), T)
                .await?;
            checks.check(r.status == 404 && is_error_body(&r), || {
                format!(
                    "{method} {path} {body:?}: expected 404 {{\"ok\": false, \"error\"}}, got {} {}",
                    r.status, r.body
                )
            });
        }
        // The served namespaces are found.
        for ns in ["%2F", "%2Fcustom", "%2Fpubsub"] {
            for path in [
                format!("/api/v1/sockets?namespace={ns}"),
                format!("/api/v1/rooms?namespace={ns}"),
            ] {
                let r = api.raw(Method::GET, &path, None, T).await?;
                checks.check(r.status == 200, || {
                    format!("GET {path}: {} {}", r.status, r.body)
                });
            }
        }
        checks.finish()
    })
    .await
}

#[tokio::test]
async fn binary_reaches_websocket_and_polling_clients_and_comes_back_in_acks() -> Result<()> {
    with_timeout(async {
        let cluster = Cluster::start(2).await?;
        let agent = Agent::spawn().await?;
        let ws = agent
            .connect(
                "ws",
                &cluster.node(0).url(),
                &ConnectOpts::new(Transport::Websocket),
            )
            .await?;
        let poll = agent
            .connect(
                "poll",
                &cluster.node(1).url(),
                &ConnectOpts::new(Transport::Polling),
            )
            .await?;
        ensure!(agent.state("ws").await?.transport.as_deref() == Some("websocket"));
        ensure!(agent.state("poll").await?.transport.as_deref() == Some("polling"));
        let reply = binary(&[9, 8, 7, 0, 255]);
        for c in ["ws", "poll"] {
            agent
                .set_ack_reply(c, "bin", AckReply::Value(reply.clone()))
                .await?;
        }
        let mut checks = Checks::new();

        // Without ack, through node A: the polling client is on node B.
        let args = vec![
            binary(&[0, 1, 2, 255]),
            json!({"nested": binary(&[42]), "n": 1, "list": [binary(&[]), "s"]}),
            json!("text"),
        ];
        cluster
            .api(0)
            .emit(&Emit::new("bin-plain", args.clone()).to([ws.clone(), poll.clone()]))
            .await?;
        for c in ["ws", "poll"] {
            agent.wait_count(c, "bin-plain", 1, EVENT_TIMEOUT).await?;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        for c in ["ws", "poll"] {
            let got = agent.events(c, "bin-plain").await?;
            checks.check(got == vec![args.clone()], || {
                format!("{c}: expected exactly one bin-plain with {args:?}, got {got:?}")
            });
        }

        // With ack, through node A: both answer with binary, which comes back
        // as {"$binary"} (the polling client's across Redis).
        let r = cluster
            .api(0)
            .emit_with_ack(
                &Emit::new("bin", vec![binary(&[1, 2, 3])]).to([ws.clone(), poll.clone()]),
                3000,
            )
            .await?;
        let mut acks: Vec<(String, Value)> = r
            .acks
            .iter()
            .map(|a| (a.socket.clone(), a.response.clone()))
            .collect();
        acks.sort_by(|a, b| a.0.cmp(&b.0));
        let mut want = vec![(ws.clone(), reply.clone()), (poll.clone(), reply.clone())];
        want.sort_by(|a, b| a.0.cmp(&b.0));
        checks.check(
            acks == want && r.complete && r.missing_nodes.is_empty(),
            || format!("binary acks: expected {want:?}, got {r:?}"),
        );
        for c in ["ws", "poll"] {
            let got = agent.events(c, "bin").await?;
            checks.check(got == vec![vec![binary(&[1, 2, 3])]], || {
                format!("{c} got bin {got:?}")
            });
        }
        checks.finish()
    })
    .await
}

#[tokio::test]
async fn socket_rooms_include_the_socket_id() -> Result<()> {
    with_timeout(async {
        let cluster = Cluster::start(2).await?;
        let agent = Agent::spawn().await?;
        let x = agent
            .connect(
                "x",
                &cluster.node(0).url(),
                &ConnectOpts::new(Transport::Websocket),
            )
            .await?;
        let y = agent
            .connect(
                "y",
                &cluster.node(1).url(),
                &ConnectOpts::new(Transport::Polling),
            )
            .await?;
        let mut checks = Checks::new();
        let rooms_of = |sockets: &[ioscale_cluster_tests::http::SocketInfo], id: &str| {
            sockets.iter().find(|s| s.id == id).map(|s| {
                let mut r = s.rooms.clone();
                r.sort();
                (s.node.clone(), r)
            })
        };

        // From node A: its own socket and node B's.
        for (label, rooms) in [
            ("targeted by id", vec![x.as_str(), y.as_str()]),
            ("untargeted", vec![]),
        ] {
            if let Some(s) = checks.ok(cluster.api(0).sockets("/", &rooms).await, label) {
                checks.check(s.len() == 2, || {
                    format!("{label}: expected x and y, got {s:?}")
                });
                checks.check(
                    rooms_of(&s, &x) == Some(("node-a".into(), vec![x.clone()])),
                    || format!("{label}: x must be on node-a in exactly its own room, got {s:?}"),
                );
                checks.check(
                    rooms_of(&s, &y) == Some(("node-b".into(), vec![y.clone()])),
                    || format!("{label}: y must be on node-b in exactly its own room, got {s:?}"),
                );
            }
        }

        // After a join through node A, the own-id room is still there.
        cluster
            .api(0)
            .join(&Selector::sockets([x.as_str(), y.as_str()]), &["r1"])
            .await?;
        let s = cluster.api(0).sockets("/", &["r1"]).await?;
        let mut want_x = vec![x.clone(), "r1".to_owned()];
        want_x.sort();
        let mut want_y = vec![y.clone(), "r1".to_owned()];
        want_y.sort();
        checks.check(
            rooms_of(&s, &x) == Some(("node-a".into(), want_x.clone()))
                && rooms_of(&s, &y) == Some(("node-b".into(), want_y.clone()))
                && s.len() == 2,
            || format!("after join: expected x {want_x:?} and y {want_y:?}, got {s:?}"),
        );

        // The own-id rooms also appear in GET /rooms.
        if let Some(rooms) = checks.ok(cluster.api(1).rooms("/").await, "GET /rooms") {
            let mut want = vec![x.clone(), y.clone(), "r1".to_owned()];
            want.sort();
            let mut got = rooms.clone();
            got.sort();
            checks.check(got == want, || {
                format!("GET /rooms: expected {want:?}, got {rooms:?}")
            });
        }
        checks.finish()
    })
    .await
}
