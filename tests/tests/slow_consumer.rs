//! A client that stops reading is a slow consumer: once its connection's send buffer
//! (`--socket-buffer-bytes`) is full the node closes it at once, counted and logged, before
//! the node holds more than that bound of its messages, and drops nothing silently; the other
//! clients of the node keep their latency.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use futures_util::{SinkExt as _, StreamExt as _};
use ioscale_cluster_tests::extra::{log_lines_with, metric, with_timeout_of};
use ioscale_cluster_tests::{Cluster, ClusterBuilder};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};

type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The bound under test: the smallest the node accepts.
const BUFFER_BYTES: usize = 64 * 1024;
/// Each message's padding: the slow consumer falls behind by the bound in a few dozen.
const PAD: usize = 4 * 1024;
const RECEIVERS: usize = 100;
/// Messages per run, one every [`PACE`].
const MESSAGES: u64 = 150;
const PACE: Duration = Duration::from_millis(10);
const WAIT: Duration = Duration::from_secs(10);
/// A p99 this small is scheduling noise: ratios are taken against at least this.
const LATENCY_FLOOR: Duration = Duration::from_millis(5);

fn node() -> ClusterBuilder {
    let bytes = BUFFER_BYTES.to_string();
    Cluster::builder().nodes(1).node_args([
        "--socket-buffer-bytes",
        bytes.as_str(),
        "--max-payload-bytes",
        "32768",
        // At once: the bound itself is under test (the default grace is covered by the
        // node's unit tests).
        "--slow-consumer-grace-ms",
        "0",
    ])
}

/// A WebSocket client on `/pubsub` that has joined `room`.
async fn joined(base: &str, room: &str) -> Result<Stream> {
    let url = format!(
        "{}/socket.io/?EIO=4&transport=websocket",
        base.replacen("http://", "ws://", 1)
    );
    let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .context("WebSocket handshake timed out")??;
    ws.send(Message::text("40/pubsub,")).await?;
    until(&mut ws, "40/pubsub,").await?;
    ws.send(Message::text(format!("42/pubsub,1[\"join\",\"{room}\"]")))
        .await?;
    until(&mut ws, "43/pubsub,1").await?;
    Ok(ws)
}

/// Reads (answering pings) until a text frame starting with `prefix`.
async fn until(ws: &mut Stream, prefix: &str) -> Result<String> {
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .with_context(|| format!("waiting for {prefix}"))?;
        match frame {
            Some(Ok(Message::Text(t))) if t.as_str() == "2" => ws.send(Message::text("3")).await?,
            Some(Ok(Message::Text(t))) if t.as_str().starts_with(prefix) => {
                return Ok(t.as_str().to_owned());
            }
            Some(Ok(_)) => {}
            other => bail!("waiting for {prefix}: {other:?}"),
        }
    }
}

/// A receiver's task: sends (seq, arrival) of every message until `MESSAGES` came.
fn receive(mut ws: Stream, tx: mpsc::UnboundedSender<(u64, Instant)>) {
    tokio::spawn(async move {
        let mut got = 0;
        while got < MESSAGES {
            let Ok(t) = until(&mut ws, "42/pubsub,[\"msg\"").await else {
                return;
            };
            let at = Instant::now();
            if let Some(seq) = seq_of(&t) {
                let _ = tx.send((seq, at));
                got += 1;
            }
        }
    });
}

fn seq_of(packet: &str) -> Option<u64> {
    let i = packet.find("\"seq\":")? + 6;
    packet[i..].split([',', '}']).next()?.parse().ok()
}

/// Publishes `MESSAGES` to `room` at [`PACE`], each acked; returns each one's send time.
async fn publish(ws: &mut Stream, room: &str) -> Result<HashMap<u64, Instant>> {
    let pad = "x".repeat(PAD);
    let mut sent = HashMap::new();
    let mut tick = tokio::time::interval(PACE);
    for seq in 0..MESSAGES {
        tick.tick().await;
        let ack = seq + 100;
        let p = format!(
            "42/pubsub,{ack}[\"publish\",{{\"room\":\"{room}\",\"data\":{{\"seq\":{seq},\"pad\":\"{pad}\"}}}}]"
        );
        sent.insert(seq, Instant::now());
        ws.send(Message::text(p)).await?;
        let answer = until(ws, &format!("43/pubsub,{ack}")).await?;
        ensure!(answer.contains("\"ok\":true"), "publish {seq}: {answer}");
    }
    Ok(sent)
}

/// One run: every receiver gets every message; returns the p99 of their latencies.
async fn run(base: &str, publisher: &mut Stream, room: &str) -> Result<Duration> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    for _ in 0..RECEIVERS {
        receive(joined(base, room).await?, tx.clone());
    }
    drop(tx);
    let sent = publish(publisher, room).await?;
    let mut latencies = Vec::new();
    while let Some((seq, at)) = tokio::time::timeout(WAIT, rx.recv()).await? {
        latencies.push(at.saturating_duration_since(sent[&seq]));
    }
    let expected = RECEIVERS * MESSAGES as usize;
    ensure!(
        latencies.len() == expected,
        "{} of {expected} deliveries",
        latencies.len()
    );
    latencies.sort();
    Ok(latencies[latencies.len() * 99 / 100])
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_as_a_slow_consumer_and_others_keep_their_latency()
-> Result<()> {
    with_timeout_of(Duration::from_secs(150), async {
        let cluster = node().start().await?;
        let base = cluster.node(0).url();
        let api = cluster.api(0);
        let mut publisher = joined(&base, "none").await?;

        let before = run(&base, &mut publisher, "a").await?;
        // The slow consumer joins the next run's room and never reads again.
        let mut slow = joined(&base, "b").await?;
        let during = run(&base, &mut publisher, "b").await?;
        let after = run(&base, &mut publisher, "c").await?;

        let closed = metric(
            &api,
            "ioscale_http_connections_closed_total",
            &[("reason", "slow_consumer")],
        );
        ensure!(closed.await? == 1.0, "the slow consumer was not closed");
        let counted = metric(
            &api,
            "ioscale_disconnections_total",
            &[("namespace", "/pubsub"), ("reason", "slow_consumer")],
        );
        ensure!(
            counted.await? == 1.0,
            "its disconnect is not counted as slow_consumer"
        );
        let dropped = metric(
            &api,
            "ioscale_adapter_dropped_total",
            &[("reason", "socket_buffer_full")],
        );
        ensure!(dropped.await? == 0.0, "packets were dropped instead");
        let logged = log_lines_with(&cluster.node(0).log(), "slow consumer");
        ensure!(
            logged.len() == 1 && logged[0].contains("sid="),
            "expected one slow consumer line with its socket: {logged:?}"
        );

        // What it can still read is what the kernels buffered: the node's send buffer (which
        // the kernel doubles for its bookkeeping) and its own receive queue (whose payload may
        // pass the SO_RCVBUF it reports, by the window's scaling). Without the bound the node
        // would have kept up to --socket-buffer-packets of them: 16,384 x 4 KB, 64 MB.
        let rcvbuf = match slow.get_ref() {
            MaybeTlsStream::Plain(s) => socket2::SockRef::from(s).recv_buffer_size()?,
            _ => bail!("plain TCP expected"),
        };
        let mut read = 0;
        while let Ok(Some(Ok(m))) = tokio::time::timeout(WAIT, slow.next()).await {
            read += m.len();
        }
        let bound = 2 * BUFFER_BYTES + 2 * rcvbuf + PAD * 2;
        eprintln!("read {read} bytes after the close; receive buffer {rcvbuf}");
        ensure!(
            read <= bound,
            "the slow consumer still read {read} bytes, over the bound {bound}"
        );

        // Its neighbours' latency, against the runs without it.
        let baseline = before.max(after).max(LATENCY_FLOOR);
        eprintln!("p99 without: {before:?} / {after:?}; with the slow consumer: {during:?}");
        ensure!(
            during <= baseline * 2,
            "p99 {during:?} with a slow consumer, against {baseline:?} without"
        );
        Ok(())
    })
    .await
}
