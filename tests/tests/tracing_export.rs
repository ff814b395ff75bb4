//! Distributed tracing: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, nodes export spans over
//! OTLP/HTTP, and a broadcast published on node A and delivered on node B show under one trace,
//! B's delivery span a child of A's broadcast span (the trace context travels inside the
//! adapter message). The collector is a small OTLP/HTTP (JSON) receiver run by the test.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use ioscale_cluster_tests::{Agent, Cluster, Emit, Transport, connect_spread, with_timeout};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
};

/// Every JSON body POSTed to the receiver.
type Bodies = Arc<Mutex<Vec<Value>>>;

/// Serves OTLP/HTTP export requests on loopback, keeping their JSON bodies.
async fn start_receiver() -> Result<(String, Bodies)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let bodies: Bodies = Arc::default();
    let store = bodies.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, store.clone()));
        }
    });
    Ok((url, bodies))
}

/// One keep-alive connection: read requests (headers + Content-Length body), answer 200.
async fn serve(stream: TcpStream, bodies: Bodies) -> Result<()> {
    let mut reader = BufReader::new(stream);
    loop {
        let mut len = 0usize;
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        loop {
            line.clear();
            reader.read_line(&mut line).await?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().context("content-length")?;
            }
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body).await?;
        if let Ok(v) = serde_json::from_slice::<Value>(&body) {
            bodies.lock().expect("not poisoned").push(v);
        }
        let reply =
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        reader.get_mut().write_all(reply.as_bytes()).await?;
    }
}

#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    node: String,
}

fn spans(bodies: &Bodies) -> Vec<Span> {
    let bodies = bodies.lock().expect("not poisoned").clone();
    let mut out = Vec::new();
    for body in &bodies {
        let resource_spans = body["resourceSpans"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for rs in resource_spans {
            for ss in rs["scopeSpans"].as_array().cloned().unwrap_or_default() {
                for s in ss["spans"].as_array().cloned().unwrap_or_default() {
                    let node = s["attributes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|a| a["key"] == "node")
                        .and_then(|a| a["value"]["stringValue"].as_str())
                        .unwrap_or("")
                        .to_owned();
                    let text = |k: &str| s[k].as_str().unwrap_or("").to_owned();
                    out.push(Span {
                        name: text("name"),
                        trace_id: text("traceId"),
                        span_id: text("spanId"),
                        parent_span_id: text("parentSpanId"),
                        node,
                    });
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn broadcast_and_remote_delivery_share_one_trace() -> Result<()> {
    with_timeout(async {
        let (endpoint, bodies) = start_receiver().await?;
        let cluster = Cluster::builder()
            .nodes(2)
            .node_env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
            .node_env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
            // Export within a fraction of a second instead of the default 5 s.
            .node_env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .start()
            .await?;
        let agent = Agent::spawn().await?;
        // Two clients: one per node, so node B has a socket to deliver to.
        let clients = connect_spread(&cluster, &agent, Transport::Websocket, "/", "c", 2).await?;
        cluster
            .api(0)
            .emit(&Emit::new("traced", vec![json!(1)]))
            .await?;
        agent
            .wait_count(&clients[1].name, "traced", 1, Duration::from_secs(5))
            .await?;
        let (a, b) = (cluster.node(0).node_id(), cluster.node(1).node_id());

        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let all = spans(&bodies);
            let linked = all
                .iter()
                .filter(|s| s.name == "adapter.deliver" && s.node == b)
                .find_map(|d| {
                    all.iter().find(|p| {
                        p.name == "adapter.broadcast"
                            && p.node == a
                            && p.span_id == d.parent_span_id
                            && p.trace_id == d.trace_id
                    })
                });
            if linked.is_some() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "no adapter.deliver span on {b} whose parent is an adapter.broadcast span on \
                     {a}; spans received: {all:#?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}
