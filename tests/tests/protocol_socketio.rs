//! Socket.IO v5, checked against the protocol document (socketio/socket.io-protocol,
//! Readme.md) with raw packets over both transports: CONNECT to `/` and `/custom` with and
//! without a payload, CONNECT_ERROR for an unknown namespace, EVENT and ACK with and without
//! binary attachments, DISCONNECT from the client, malformed packets, and the connect timeout.
//! Every check runs against one node and through nginx in front of three nodes sharing Redis
//! (`ioscale-node --conformance`, see `ioscale_cluster_tests::protocol`).
//!
//! Known deviations (README, "Protocol conformance"): a socket's id is its Engine.IO session's
//! id; CONNECTs sent together may be answered out of order; a malformed packet gets an
//! Engine.IO close packet before the transport closes.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use ioscale_cluster_tests::protocol::{CONNECT_TIMEOUT, Client, Frame, Kind, Target, WAIT};
use ioscale_cluster_tests::with_timeout;

const KINDS: [Kind; 2] = [Kind::Ws, Kind::Polling];
/// Sessions sending CONNECT to `/` and `/custom` together, to measure the answers' order.
const ORDER_TRIES: usize = 50;

fn text(t: &str) -> Frame {
    Frame::Text(t.to_owned())
}

async fn connected(base: &str, kind: Kind) -> Result<Client> {
    let (mut c, _) = Client::open(base, kind).await?;
    c.connect("/", None).await?;
    Ok(c)
}

/// CONNECT to `/` is answered `40{"sid":…}` then `auth` with the payload sent (`{}` without).
async fn connect_main(base: &str, kind: Kind) -> Result<()> {
    let (mut c, open) = Client::open(base, kind).await?;
    let sid = c.connect("/", None).await?;
    ensure!(!sid.is_empty(), "empty socket id");
    // Known deviation: socketioxide gives a socket its Engine.IO session's id; the document
    // (v5 history) says they differ. With polling, whoever learns a socket's id knows the
    // session id its requests carry.
    ensure!(
        open["sid"] == sid.as_str(),
        "socket id {sid} vs session {open}"
    );
    let (mut c, _) = Client::open(base, kind).await?;
    c.connect("/", Some(r#"{"token":"123","n":[1,{"deep":true}]}"#))
        .await?;
    Ok(())
}

/// `/custom` on the same session as `/` (multiplexing), with and without a payload.
async fn connect_custom(base: &str, kind: Kind) -> Result<()> {
    let mut c = connected(base, kind).await?;
    let sid = c.connect("/custom", None).await?;
    ensure!(!sid.is_empty(), "empty socket id");
    let mut c = connected(base, kind).await?;
    c.connect("/custom", Some(r#"{"token":"abc"}"#)).await?;
    Ok(())
}

/// An unknown namespace gets CONNECT_ERROR `Invalid namespace`; the session stays usable.
async fn unknown_namespace(base: &str, kind: Kind) -> Result<()> {
    let (mut c, _) = Client::open(base, kind).await?;
    c.send_text("40/random,").await?;
    let answer = c.recv_text().await?;
    ensure!(
        answer == r#"44/random,{"message":"Invalid namespace"}"#,
        "CONNECT to /random answered {answer}"
    );
    c.connect("/", None).await?;
    Ok(())
}

/// A CONNECT payload that is not an object is refused with CONNECT_ERROR (the document allows
/// an object or nothing); the session stays usable (shown on another namespace: a CONNECT to
/// the refused one sent at once can race socketioxide's teardown of the refused attempt).
async fn non_object_connect_payload(base: &str, kind: Kind) -> Result<()> {
    for payload in [r#""a string""#, "[1,2]", "true", "null"] {
        let (mut c, _) = Client::open(base, kind).await?;
        c.send_text(&format!("40{payload}")).await?;
        let answer = c.recv_text().await?;
        ensure!(
            answer == r#"44{"message":"bad_request: the CONNECT payload must be an object"}"#,
            "CONNECT with payload {payload} answered {answer}"
        );
        c.connect("/custom", None).await?;
    }
    Ok(())
}

/// EVENT is echoed as EVENT, EVENT with an id is answered by ACK with that id.
async fn events_and_acks(base: &str, kind: Kind) -> Result<()> {
    let mut c = connected(base, kind).await?;
    let args = r#"1,"2",{"3":[true,null,4.5]}"#;
    c.send_text(&format!(r#"42["message",{args}]"#)).await?;
    let back = c.recv_text().await?;
    ensure!(back == format!(r#"42["message-back",{args}]"#), "{back}");
    c.send_text(&format!(r#"4212["message-with-ack",{args}]"#))
        .await?;
    let ack = c.recv_text().await?;
    ensure!(ack == format!("4312[{args}]"), "{ack}");
    // The document's example: an ACK may carry no data.
    c.send_text(r#"4213["message-with-ack"]"#).await?;
    let ack = c.recv_text().await?;
    ensure!(ack == "4313[]", "{ack}");
    Ok(())
}

/// BINARY_EVENT and BINARY_ACK: placeholders in the JSON, the attachments after it, in order.
async fn binary_events_and_acks(base: &str, kind: Kind) -> Result<()> {
    let mut c = connected(base, kind).await?;
    let ph = |n: u8| format!(r#"{{"_placeholder":true,"num":{n}}}"#);
    let (a, b) = (Frame::Binary(vec![1, 2]), Frame::Binary(vec![3, 4, 255]));
    let args = format!(r#""baz",{},{{"nested":[{}]}}"#, ph(0), ph(1));
    c.send(&[
        text(&format!(r#"452-["message",{args}]"#)),
        a.clone(),
        b.clone(),
    ])
    .await?;
    let got = [c.recv().await?, c.recv().await?, c.recv().await?];
    let expected = [
        text(&format!(r#"452-["message-back",{args}]"#)),
        a.clone(),
        b.clone(),
    ];
    ensure!(got == expected, "binary event answered {got:?}");
    c.send(&[
        text(&format!(r#"451-15["message-with-ack",{}]"#, ph(0))),
        b.clone(),
    ])
    .await?;
    let got = [c.recv().await?, c.recv().await?];
    ensure!(
        got == [text(&format!("461-15[{}]", ph(0))), b],
        "binary ack {got:?}"
    );
    Ok(())
}

/// DISCONNECT from the client leaves the namespace only: the session and its other namespaces
/// go on, and the namespace can be joined again, at once.
async fn client_disconnect(base: &str, kind: Kind) -> Result<()> {
    let mut c = connected(base, kind).await?;
    c.connect("/custom", None).await?;
    c.send_text("41/custom,").await?;
    c.send_text(r#"42["message","still here"]"#).await?;
    let back = c.recv_text().await?;
    ensure!(back == r#"42["message-back","still here"]"#, "{back}");
    c.connect("/custom", None).await?;
    // Leaving and coming back in one payload: the CONNECT is answered, not taken for a
    // duplicate of the socket still on its way out.
    c.send(&[text("41/custom,"), text("40/custom,")]).await?;
    let back = c.recv_text().await?;
    ensure!(
        back.starts_with("40/custom,{"),
        "CONNECT after DISCONNECT: {back}"
    );
    let auth = c.recv_text().await?;
    ensure!(auth == r#"42/custom,["auth",{}]"#, "{auth}");
    c.send_text("41").await?;
    c.connect("/", None).await?;
    Ok(())
}

/// Packets that break the document's rules close the session, each on a session of its own.
async fn malformed_packets(base: &str, kind: Kind) -> Result<()> {
    let bad = [
        r#"42{"not":"an array"}"#, // EVENT payload must be an array…
        "42[]",                    // …not empty…
        "42[1]",                   // …starting with the event name.
        "42",
        r#"42["message""#,          // not JSON
        r#"44{"message":"x"}"#,     // CONNECT_ERROR comes from servers only
        "47",                       // no such packet type
        r#"42/custom,["message"]"#, // a namespace the client did not connect to
    ];
    for packet in bad {
        let mut c = connected(base, kind).await?;
        c.send_text(packet).await?;
        let (seen, _) = c.until_closed(WAIT).await.context(packet)?;
        // Known deviation (harmless): an Engine.IO close packet comes first. The document asks
        // only that the connection be closed; the reference server closes a WebSocket without
        // it.
        ensure!(
            seen.iter().all(|f| *f == text("1")),
            "{packet}: got {seen:?}"
        );
    }
    Ok(())
}

/// A session that never connects to a namespace is closed after `--connect-timeout-ms`,
/// pings answered or not.
async fn connect_timeout(base: &str, kind: Kind) -> Result<()> {
    let opened = Instant::now();
    let (mut c, _) = Client::open(base, kind).await?;
    let (_, at) = c.until_closed(CONNECT_TIMEOUT + WAIT).await?;
    let after = at - opened;
    ensure!(
        after + Duration::from_millis(100) >= CONNECT_TIMEOUT
            && after < CONNECT_TIMEOUT + Duration::from_secs(1),
        "closed {after:?} after the handshake"
    );
    Ok(())
}

/// CONNECTs to `/` and `/custom` sent together: both answered, each before its own `auth`.
/// Returns whether `/custom`'s answer came first (the order is not guaranteed: socketioxide
/// handles each CONNECT in a task of its own).
async fn connect_pair(base: &str, kind: Kind) -> Result<bool> {
    let (mut c, _) = Client::open(base, kind).await?;
    c.send(&[text("40"), text("40/custom,")]).await?;
    let mut order = Vec::new();
    while order.len() < 4 {
        order.push(c.recv_text().await?);
    }
    let pos = |prefix: &str| {
        order
            .iter()
            .position(|p| p.starts_with(prefix))
            .with_context(|| format!("no {prefix} in {order:?}"))
    };
    let (main, custom) = (pos("40{")?, pos("40/custom,{")?);
    let main_auth = pos(r#"42["auth",{}]"#)?;
    let custom_auth = pos(r#"42/custom,["auth",{}]"#)?;
    ensure!(main < main_auth && custom < custom_auth, "{order:?}");
    Ok(custom < main)
}

/// Every check on both transports against one target; prints the CONNECT order measurement.
async fn all_checks(target: Target) -> Result<()> {
    let base = target.base();
    for kind in KINDS {
        let ctx = |what: &str| format!("{what} over {kind:?}");
        connect_main(base, kind).await.context(ctx("connect /"))?;
        connect_custom(base, kind).await.context(ctx("/custom"))?;
        unknown_namespace(base, kind)
            .await
            .context(ctx("unknown ns"))?;
        non_object_connect_payload(base, kind)
            .await
            .context(ctx("non-object payload"))?;
        events_and_acks(base, kind).await.context(ctx("events"))?;
        binary_events_and_acks(base, kind)
            .await
            .context(ctx("binary"))?;
        client_disconnect(base, kind)
            .await
            .context(ctx("disconnect"))?;
        malformed_packets(base, kind)
            .await
            .context(ctx("malformed"))?;
        connect_timeout(base, kind).await.context(ctx("timeout"))?;
        let mut reordered = 0;
        for _ in 0..ORDER_TRIES {
            reordered += usize::from(connect_pair(base, kind).await.context(ctx("pair"))?);
        }
        eprintln!("{kind:?}: /custom answered before / in {reordered} of {ORDER_TRIES} sessions");
    }
    Ok(())
}

#[tokio::test]
async fn socketio_v5_holds_on_one_node() -> Result<()> {
    with_timeout(async { all_checks(Target::one_node().await?).await }).await
}

#[tokio::test]
async fn socketio_v5_holds_through_nginx_in_front_of_three_nodes() -> Result<()> {
    with_timeout(async { all_checks(Target::nginx_cluster().await?).await }).await
}
