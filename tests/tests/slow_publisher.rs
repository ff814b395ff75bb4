//! A `/pubsub` publisher that stops reading while it publishes: once its packet buffer is
//! full its acks wait for room instead of being dropped, and when it reads again every
//! publish is acked `ok`, once and in order, with nothing counted as dropped.
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

#[tokio::test]
async fn acks_of_a_publisher_that_stops_reading_wait_and_all_arrive_in_order() -> Result<()> {
    with_timeout_of(Duration::from_secs(180), async {
        let cluster = Cluster::builder()
            .nodes(1)
            // A small packet buffer fills first; the publish buffer holds the whole burst, and
            // the event budget lets all of it in (the default refuses a 250,000 flood).
            .node_args([
                "--socket-buffer-packets",
                "64",
                "--publish-buffer-bytes",
                "67108864",
                "--event-burst",
                "1000000",
                // A debug build takes tens of seconds to hand 250,000 publishes over; the
                // heartbeat must not end the silent publisher's connection meanwhile.
                "--ping-interval-ms",
                "60000",
                "--ping-timeout-ms",
                "60000",
            ])
            .start()
            .await?;
        let mut ws = connect(cluster.node(0).addr()).await?;
        open_pubsub(&mut ws).await?;

        // The publisher is not in the room: all that comes back is acks.
        for i in 1..=N {
            let frame = format!(r#"42{NS},{i}["publish",{{"room":"nobody","data":{i}}}]"#);
            timeout(EVENT_TIMEOUT, ws.feed(Message::text(frame))).await??;
        }
        timeout(EVENT_TIMEOUT, ws.flush()).await??;
        // Not reading until the node reports an ack waiting for room (well inside the
        // heartbeat, 60 s + 60 s here), then a moment more so that several do.
        let mut checks = Checks::new();
        let waited = wait_until(
            Duration::from_secs(60),
            Duration::from_millis(100),
            "an ack to wait for room in the publisher's buffer",
            || {
                let cluster = &cluster;
                async move {
                    let n = metric_all(cluster, WAITED, &[]).await?;
                    Ok((n[0] > 0.0).then_some(n[0]))
                }
            },
        )
        .await;
        checks.check(waited.is_ok(), || {
            format!("the publisher's buffer must fill while it does not read: {waited:?}")
        });
        tokio::time::sleep(Duration::from_secs(1)).await;

        let mut next = 1;
        while next <= N {
            let t = next_text(&mut ws).await?;
            let Some(rest) = t.strip_prefix(&format!("43{NS},")) else {
                bail!("expected an ack, got {t:?}");
            };
            let (id, body) = rest.split_at(rest.find('[').context("ack without args")?);
            ensure!(
                id == next.to_string(),
                "ack {id} arrived where {next} was due"
            );
            ensure!(body == r#"[{"ok":true}]"#, "ack {id} is not ok: {body}");
            next += 1;
        }
        let dropped = metric_all(&cluster, DROPPED, &[]).await?;
        checks.check(dropped[0] == 0.0, || {
            format!("{DROPPED} must stay 0 (no ack dropped), got {dropped:?}")
        });
        checks.finish()
    })
    .await
}
