//! A `/pubsub` publisher that stops reading while it publishes: once its packet buffer is
//! full its acks wait for room instead of being dropped, and when it reads again every
//! publish is acked `ok`, once and in order, with nothing counted as dropped. With a small
//! `--publish-buffer-bytes`, what it publishes beyond the bound meanwhile is refused, counted,
//! and the accepted rest still acked in order.
//!
//! The official clients always read, so this one speaks Engine.IO v4 / Socket.IO v5 over a
//! plain WebSocket, with a small receive buffer so the kernel's buffers fill quickly.

use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use futures_util::{SinkExt as _, StreamExt as _};
use ioscale_cluster_tests::extra::{Checks, metric_all, wait_until, with_timeout_of};
use ioscale_cluster_tests::{Cluster, EVENT_TIMEOUT};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{WebSocketStream, client_async};

const NS: &str = "/pubsub";
/// Publishes sent without reading: their acks (about 30 bytes each on the wire, 7 MB) are more
/// than the kernel's buffers on both ends (the sender's grows to 4 MiB) and the node's
/// 64-packet buffer hold.
const N: u64 = 250_000;
const DROPPED: &str = "ioscale_adapter_dropped_total";
const WAITED: &str = "ioscale_pubsub_acks_waited_total";
const REFUSED: &str = "ioscale_pubsub_publishes_refused_total";
const RECEIVED: &str = "ioscale_events_received_total";

type Ws = WebSocketStream<TcpStream>;

async fn connect(addr: std::net::SocketAddr) -> Result<Ws> {
    let sock = TcpSocket::new_v4()?;
    // The kernel doubles it; a few KiB in flight instead of megabytes.
    sock.set_recv_buffer_size(4096)?;
    let stream = timeout(EVENT_TIMEOUT, sock.connect(addr)).await??;
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (ws, _) = timeout(EVENT_TIMEOUT, client_async(url, stream)).await??;
    Ok(ws)
}

/// The next text frame, answering Engine.IO pings.
async fn next_text(ws: &mut Ws) -> Result<String> {
    loop {
        let msg = timeout(EVENT_TIMEOUT, ws.next())
            .await
            .context("no frame in time")?
            .context("connection closed")??;
        let Message::Text(t) = msg else { continue };
        if t.as_str() == "2" {
            ws.send(Message::text("3")).await?;
            continue;
        }
        return Ok(t.to_string());
    }
}

async fn open_pubsub(ws: &mut Ws) -> Result<()> {
    let open = next_text(ws).await?;
    ensure!(
        open.starts_with('0'),
        "expected the Engine.IO open packet, got {open:?}"
    );
    ws.send(Message::text(format!("40{NS},"))).await?;
    let ok = next_text(ws).await?;
    ensure!(
        ok.starts_with(&format!("40{NS},")),
        "namespace refused: {ok:?}"
    );
    Ok(())
}

/// The node flags of both tests: a small packet buffer fills first, the event budget lets a
/// 250,000 flood in (the default refuses it), and the heartbeat outlasts the silence (a debug
/// build takes tens of seconds to handle the flood).
fn node_args(publish_buffer_bytes: &str) -> Vec<String> {
    [
        "--socket-buffer-packets",
        "64",
        "--publish-buffer-bytes",
        publish_buffer_bytes,
        "--event-burst",
        "1000000",
        "--ping-interval-ms",
        "60000",
        "--ping-timeout-ms",
        "60000",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Sends N publishes to a room the publisher is not in (all that comes back is acks), reading
/// nothing.
async fn flood(ws: &mut Ws) -> Result<()> {
    for i in 1..=N {
        let frame = format!(r#"42{NS},{i}["publish",{{"room":"nobody","data":{i}}}]"#);
        timeout(EVENT_TIMEOUT, ws.feed(Message::text(frame))).await??;
    }
    timeout(EVENT_TIMEOUT, ws.flush()).await??;
    Ok(())
}

/// Waits until the node's metric `name` (summed over its label sets) is at least `min`.
async fn wait_metric(cluster: &Cluster, name: &str, min: f64, what: &str) -> Result<f64> {
    wait_until(
        Duration::from_secs(90),
        Duration::from_millis(100),
        what,
        || async move {
            let n = metric_all(cluster, name, &[]).await?;
            Ok((n[0] >= min).then_some(n[0]))
        },
    )
    .await
}

/// The id and body of an ack frame.
fn ack(t: &str) -> Result<(u64, &str)> {
    let Some(rest) = t.strip_prefix(&format!("43{NS},")) else {
        bail!("expected an ack, got {t:?}");
    };
    let (id, body) = rest.split_at(rest.find('[').context("ack without args")?);
    Ok((id.parse()?, body))
}

#[tokio::test]
async fn acks_of_a_publisher_that_stops_reading_wait_and_all_arrive_in_order() -> Result<()> {
    with_timeout_of(Duration::from_secs(180), async {
        // The publish buffer holds the whole flood.
        let cluster = Cluster::builder()
            .nodes(1)
            .node_args(node_args("67108864"))
            .start()
            .await?;
        let mut ws = connect(cluster.node(0).addr()).await?;
        open_pubsub(&mut ws).await?;
        flood(&mut ws).await?;
        // Not reading until the node reports an ack waiting for room (well inside the
        // heartbeat, 60 s + 60 s here), then a moment more so that several do.
        let mut checks = Checks::new();
        let waited = wait_metric(&cluster, WAITED, 1.0, "an ack waiting for room").await;
        checks.check(waited.is_ok(), || {
            format!("the publisher's buffer must fill while it does not read: {waited:?}")
        });
        tokio::time::sleep(Duration::from_secs(1)).await;

        for next in 1..=N {
            let t = next_text(&mut ws).await?;
            let (id, body) = ack(&t)?;
            ensure!(id == next, "ack {id} arrived where {next} was due");
            ensure!(body == r#"[{"ok":true}]"#, "ack {id} is not ok: {body}");
        }
        let dropped = metric_all(&cluster, DROPPED, &[]).await?;
        checks.check(dropped[0] == 0.0, || {
            format!("{DROPPED} must stay 0 (no ack dropped), got {dropped:?}")
        });
        checks.finish()
    })
    .await
}

#[tokio::test]
async fn a_publisher_that_stops_reading_is_refused_beyond_its_publish_buffer() -> Result<()> {
    with_timeout_of(Duration::from_secs(180), async {
        let cluster = Cluster::builder()
            .nodes(1)
            .node_args(node_args("65536"))
            .start()
            .await?;
        let mut ws = connect(cluster.node(0).addr()).await?;
        open_pubsub(&mut ws).await?;
        flood(&mut ws).await?;
        // Every publish handled (accepted or refused) while the publisher still reads nothing.
        wait_metric(&cluster, RECEIVED, N as f64, "the whole flood handled").await?;
        let refused = metric_all(&cluster, REFUSED, &[("reason", "buffer_full")]).await?[0];
        ensure!(
            refused > 0.0,
            "nothing refused beyond a 64 KiB publish buffer"
        );
        let accepted = N - refused as u64;

        // Accepted publishes are all acked ok, in order. A refusal's ack is sent at once; the
        // ones that found the buffer full are lost (the client's ack times out), the others
        // arrive, each saying why.
        let (mut oks, mut refusals, mut last_ok) = (0u64, 0u64, 0u64);
        while oks < accepted {
            let t = next_text(&mut ws).await?;
            let (id, body) = ack(&t)?;
            if body == r#"[{"ok":true}]"# {
                ensure!(id > last_ok, "ack {id} arrived after ack {last_ok}");
                (oks, last_ok) = (oks + 1, id);
            } else {
                ensure!(
                    body.contains(r#""ok":false"#) && body.contains("publish buffer full"),
                    "ack {id} is neither ok nor a buffer-full refusal: {body}"
                );
                refusals += 1;
            }
        }
        ensure!(
            refusals as f64 <= refused,
            "{refusals} refusals read, {refused} counted"
        );
        let dropped = metric_all(&cluster, DROPPED, &[]).await?;
        ensure!(
            dropped[0] == 0.0,
            "{DROPPED}: {dropped:?} (an accepted ack dropped)"
        );
        Ok(())
    })
    .await
}
