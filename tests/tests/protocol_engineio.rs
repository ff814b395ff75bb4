//! Engine.IO v4, checked against the protocol document (socketio/engine.io-protocol,
//! README.md) with raw HTTP and WebSocket clients: the handshake, the error answers, the
//! polling and WebSocket framings, binary data, the upgrade from polling, the heartbeat, the
//! client's close and `maxPayload`. Every check runs against one node and through nginx in
//! front of three nodes sharing Redis (`ioscale-node --conformance`, see
//! `ioscale_cluster_tests::protocol`).
//!
//! Known deviations (README, "Protocol conformance"): the first ping comes at once instead of
//! after `pingInterval`, and error bodies carry the code as a string.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use ioscale_cluster_tests::protocol::{
    Client, Frame, Kind, MAX_PAYLOAD, PING_INTERVAL, PING_TIMEOUT, Polling, Target, WAIT, Ws,
    decode_payload, eio_url, expect_error, parse_open,
};
use ioscale_cluster_tests::with_timeout;
use serde_json::json;

fn text(t: &str) -> Frame {
    Frame::Text(t.to_owned())
}

/// The open packet's fields, with the node's flags as values; polling offers the upgrade.
async fn handshake_fields(base: &str) -> Result<()> {
    for kind in [Kind::Polling, Kind::Ws] {
        let (_client, open) = Client::open(base, kind).await?;
        let sid = open["sid"].as_str().context("sid is a string")?;
        ensure!(!sid.is_empty(), "empty sid");
        let upgrades = if kind == Kind::Polling {
            json!(["websocket"])
        } else {
            json!([])
        };
        let expected = json!({
            "sid": sid,
            "upgrades": upgrades,
            "pingInterval": PING_INTERVAL.as_millis(),
            "pingTimeout": PING_TIMEOUT.as_millis(),
            "maxPayload": MAX_PAYLOAD,
        });
        ensure!(open == expected, "{kind:?} handshake {open}");
    }
    let (a, b) = (Polling::open(base).await?, Polling::open(base).await?);
    ensure!(a.sid != b.sid, "two sessions share sid {}", a.sid);
    Ok(())
}

/// 400 with `{code, message}` for a bad or missing EIO version, an unknown or missing
/// transport, an unknown session and a handshake that is not a GET.
async fn bad_requests(base: &str) -> Result<()> {
    let http = reqwest::Client::builder().timeout(WAIT).build()?;
    let get = |url: String| {
        let http = http.clone();
        async move {
            let r = http.get(url).send().await?;
            anyhow::Ok((r.status().as_u16(), r.text().await?))
        }
    };
    let path = format!("{base}/socket.io/");
    let version = "Unsupported protocol version";
    expect_error(
        &get(format!("{path}?EIO=3&transport=polling")).await?,
        5,
        version,
    )?;
    expect_error(
        &get(format!("{path}?EIO=abc&transport=polling")).await?,
        5,
        version,
    )?;
    expect_error(&get(format!("{path}?transport=polling")).await?, 5, version)?;
    let transport = "Transport unknown";
    expect_error(
        &get(eio_url(base, "transport=carrier-pigeon")).await?,
        0,
        transport,
    )?;
    expect_error(&get(eio_url(base, "t=1")).await?, 0, transport)?;
    let unknown = "Session ID unknown";
    for sid in ["AAAAAAAAAAAAAAAA", "not-a-session"] {
        let url = eio_url(base, &format!("transport=polling&sid={sid}"));
        expect_error(&get(url.clone()).await?, 1, unknown)?;
        let r = http.post(url).body("3").send().await?;
        expect_error(&(r.status().as_u16(), r.text().await?), 1, unknown)?;
    }
    let r = http
        .post(eio_url(base, "transport=polling"))
        .body("40")
        .send()
        .await?;
    let answer = (r.status().as_u16(), r.text().await?);
    expect_error(&answer, 2, "Bad handshake method")?;
    // A WebSocket naming a session that does not exist is refused.
    let ws = Ws::connect(base, Some("AAAAAAAAAAAAAAAA"), None).await;
    ensure!(ws.is_err(), "a WebSocket joined an unknown session");
    Ok(())
}

/// Polling: a POST of several `\x1e`-separated packets is answered `ok` and handled in order;
/// a GET carries every packet waiting, `\x1e`-separated.
async fn polling_framing(base: &str) -> Result<()> {
    let (mut client, _) = Client::open(base, Kind::Polling).await?;
    client.connect("/", None).await?;
    let Client::Polling(p, _) = &client else {
        unreachable!("opened as polling")
    };
    let p = p.clone();
    let messages: Vec<Frame> = ["a", "é€", "c"]
        .iter()
        .map(|m| text(&format!("42[\"message\",\"{m}\"]")))
        .collect();
    p.post_frames(&messages).await?;
    // Time for the three answers to be queued, so that one GET carries them all.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut backs = Vec::new();
    let mut largest = 0;
    while backs.len() < 3 {
        let (status, body) = p.get().await?;
        ensure!(status == 200, "GET answered {status}: {body}");
        let frames = decode_payload(&body)?;
        largest = largest.max(frames.len());
        for f in frames {
            match f.text()? {
                t if t == "2" => ensure!(p.post("3").await?.0 == 200, "pong refused"),
                t => backs.push(t),
            }
        }
    }
    let expected: Vec<String> = ["a", "é€", "c"]
        .iter()
        .map(|m| format!("42[\"message-back\",\"{m}\"]"))
        .collect();
    ensure!(backs == expected, "answers {backs:?}");
    ensure!(
        largest >= 3,
        "no GET carried several packets (at most {largest})"
    );
    Ok(())
}

/// Binary over polling travels as `b<base64>` records, both ways.
async fn binary_over_polling(base: &str) -> Result<()> {
    let (mut client, _) = Client::open(base, Kind::Polling).await?;
    client.connect("/", None).await?;
    let Client::Polling(p, _) = &client else {
        unreachable!("opened as polling")
    };
    let body = "451-[\"message\",{\"_placeholder\":true,\"num\":0}]\x1ebAQIDBA==";
    let answer = p.post(body).await?;
    ensure!(answer == (200, "ok".to_owned()), "POST answered {answer:?}");
    let mut records = Vec::new();
    while records.len() < 2 {
        let (status, body) = p.get().await?;
        ensure!(status == 200, "GET answered {status}: {body}");
        for r in body.split('\x1e').filter(|r| *r != "2") {
            records.push(r.to_owned());
        }
        if body.split('\x1e').any(|r| r == "2") {
            p.post("3").await?;
        }
    }
    let expected = [
        "451-[\"message-back\",{\"_placeholder\":true,\"num\":0}]",
        "bAQIDBA==",
    ];
    ensure!(records == expected, "records {records:?}");
    Ok(())
}

/// WebSocket: one packet per frame, text packets in text frames, binary as is in binary
/// frames (no type prefix).
async fn websocket_framing(base: &str) -> Result<()> {
    let (mut client, _) = Client::open(base, Kind::Ws).await?;
    client.connect("/", None).await?;
    client
        .send(&[
            text("451-[\"message\",{\"_placeholder\":true,\"num\":0}]"),
            Frame::Binary(vec![1, 2, 3, 4]),
            text("42[\"message\",\"after\"]"),
        ])
        .await?;
    let got = [
        client.recv().await?,
        client.recv().await?,
        client.recv().await?,
    ];
    let expected = [
        text("451-[\"message-back\",{\"_placeholder\":true,\"num\":0}]"),
        Frame::Binary(vec![1, 2, 3, 4]),
        text("42[\"message-back\",\"after\"]"),
    ];
    ensure!(got == expected, "frames {got:?}");
    Ok(())
}

/// The upgrade: `2probe` / `3probe` over the new WebSocket, `6` to the GET pending on the
/// polling side, `5` to finish; the session then goes on over the WebSocket.
async fn upgrade_from_polling(base: &str) -> Result<()> {
    let (mut client, _) = Client::open(base, Kind::Polling).await?;
    client.connect("/", None).await?;
    let Client::Polling(p, _) = &client else {
        unreachable!("opened as polling")
    };
    let pending = {
        let p = p.clone();
        tokio::spawn(async move { p.get().await })
    };
    // The GET must be waiting at the node before the upgrade starts.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut ws = Ws::connect(base, Some(&p.sid), p.cookie()).await?;
    ws.send(&text("2probe")).await?;
    ensure!(ws.recv().await? == text("3probe"), "no 3probe");
    let mut answer = tokio::time::timeout(WAIT, pending).await???;
    // A ping queued before the upgrade began may come first; the next GET then gets the NOOP.
    if answer.0 == 200 && answer.1 == "2" {
        answer = p.get().await?;
    }
    ensure!(
        answer == (200, "6".to_owned()),
        "pending GET got {answer:?}"
    );
    ws.send(&text("5")).await?;
    ws.send(&text("42[\"message\",\"upgraded\"]")).await?;
    loop {
        match ws.recv().await?.text()? {
            t if t == "2" => ws.send(&text("3")).await?,
            t => {
                ensure!(
                    t == "42[\"message-back\",\"upgraded\"]",
                    "after upgrade: {t}"
                );
                break;
            }
        }
    }
    // The session has left polling: a GET is refused.
    let (status, body) = p.get().await?;
    ensure!(
        status == 400,
        "GET after the upgrade answered {status}: {body}"
    );
    Ok(())
}

/// Heartbeat over WebSocket: pings `pingInterval` apart while pongs come back, and the session
/// closed about `pingTimeout` after a ping left unanswered. Returns the delay of the first
/// ping after the open packet.
async fn heartbeat_ws(base: &str) -> Result<Duration> {
    let mut ws = Ws::connect(base, None, None).await?;
    parse_open(&ws.recv().await?.text()?)?;
    let opened = Instant::now();
    ensure!(ws.recv().await? == text("2"), "first packet is not a ping");
    let first = opened.elapsed();
    // Known deviation: engineioxide's first ping leaves at once (its interval's first tick is
    // immediate), where the document and the reference server wait `pingInterval`.
    ensure!(first < PING_INTERVAL, "first ping after {first:?}");
    ws.send(&text("3")).await?;
    let answered = Instant::now();
    ensure!(ws.recv().await? == text("2"), "second packet is not a ping");
    let gap = answered.elapsed();
    // Room for a busy machine (two cores, three nodes, Redis and nginx), still well below
    // the next interval: a missing or doubled ping fails.
    let slack = Duration::from_millis(250);
    ensure!(
        gap + Duration::from_millis(50) >= PING_INTERVAL && gap < PING_INTERVAL + slack,
        "second ping {gap:?} after the pong"
    );
    let unanswered = Instant::now();
    let closed = loop {
        if let Frame::Closed(_) = ws.recv().await? {
            break unanswered.elapsed();
        }
    };
    ensure!(
        closed + Duration::from_millis(50) >= PING_TIMEOUT && closed < PING_TIMEOUT + slack,
        "closed {closed:?} after the unanswered ping"
    );
    Ok(first)
}

/// Heartbeat over polling: a GET brings the ping, a POST the pong; without a pong the session
/// is gone within `pingInterval + pingTimeout`.
async fn heartbeat_polling(base: &str) -> Result<()> {
    let (mut client, _) = Client::open(base, Kind::Polling).await?;
    ensure!(client.recv_raw().await? == text("2"), "no ping");
    client.send_text("3").await?;
    ensure!(client.recv_raw().await? == text("2"), "no second ping");
    let Client::Polling(p, _) = &client else {
        unreachable!("opened as polling")
    };
    tokio::time::sleep(PING_TIMEOUT + Duration::from_millis(300)).await;
    let answer = p.get().await?;
    // The close packet may reach a GET before the session is forgotten.
    let answer = if answer == (200, "1".to_owned()) {
        p.get().await?
    } else {
        answer
    };
    expect_error(&answer, 1, "Session ID unknown")
}

/// The client's close packet `1` ends the session on both transports.
async fn client_close(base: &str) -> Result<()> {
    let (mut ws, _) = Client::open(base, Kind::Ws).await?;
    ws.connect("/", None).await?;
    ws.send_text("1").await?;
    ws.until_closed(WAIT).await?;
    let (mut polling, _) = Client::open(base, Kind::Polling).await?;
    polling.connect("/", None).await?;
    polling.send_text("1").await?;
    let (seen, _) = polling.until_closed(WAIT).await?;
    ensure!(
        seen.iter().all(|f| *f == text("6") || *f == text("1")),
        "after close: {seen:?}"
    );
    let Client::Polling(p, _) = &polling else {
        unreachable!("opened as polling")
    };
    expect_error(&p.get().await?, 1, "Session ID unknown")
}

/// Up to `maxPayload` a message is handled; above it, polling answers 413 and a WebSocket is
/// closed, the message unhandled.
async fn max_payload(base: &str) -> Result<()> {
    let event = |n: usize| format!("42[\"message\",\"{}\"]", "x".repeat(n));
    let overhead = event(0).len();
    let fits = event(MAX_PAYLOAD - overhead - 64);
    let too_big = event(MAX_PAYLOAD + 1);
    for kind in [Kind::Polling, Kind::Ws] {
        let (mut c, _) = Client::open(base, kind).await?;
        c.connect("/", None).await?;
        c.send_text(&fits).await?;
        let back = c.recv_text().await?;
        ensure!(
            back.len() == fits.len() + 5,
            "{kind:?}: echo of {} bytes",
            back.len()
        );
        match &mut c {
            Client::Polling(p, _) => {
                let (status, body) = p.post(too_big.clone()).await?;
                ensure!(
                    status == 413,
                    "{status} {body} for a payload above maxPayload"
                );
            }
            Client::Ws(_) => {
                c.send_text(&too_big).await?;
                let (seen, _) = c.until_closed(WAIT).await?;
                ensure!(seen.iter().all(|f| *f == text("1")), "{seen:?}");
            }
        }
    }
    Ok(())
}

/// Every check against one target; the first ping's delay is printed for the report.
async fn all_checks(target: Target) -> Result<()> {
    let base = target.base();
    handshake_fields(base).await.context("handshake")?;
    bad_requests(base).await.context("bad requests")?;
    polling_framing(base).await.context("polling framing")?;
    binary_over_polling(base)
        .await
        .context("binary over polling")?;
    websocket_framing(base).await.context("websocket framing")?;
    upgrade_from_polling(base).await.context("upgrade")?;
    let first = heartbeat_ws(base)
        .await
        .context("heartbeat over websocket")?;
    eprintln!("first ping {first:?} after the open packet (pingInterval {PING_INTERVAL:?})");
    heartbeat_polling(base)
        .await
        .context("heartbeat over polling")?;
    client_close(base).await.context("client close")?;
    max_payload(base).await.context("maxPayload")?;
    Ok(())
}

#[tokio::test]
async fn engineio_v4_holds_on_one_node() -> Result<()> {
    with_timeout(async { all_checks(Target::one_node().await?).await }).await
}

#[tokio::test]
async fn engineio_v4_holds_through_nginx_in_front_of_three_nodes() -> Result<()> {
    with_timeout(async { all_checks(Target::nginx_cluster().await?).await }).await
}
