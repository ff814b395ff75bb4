//! Broadcasts with acks across nodes: each remote node first says how many acks it will send,
//! then sends them; the acks come back as socketioxide's stream or as the API's report.

use std::{collections::HashMap, str::FromStr as _, time::Duration};

use futures_util::{
    StreamExt as _,
    stream::{BoxStream, Fuse},
};
use socketioxide_core::{
    Sid, Value,
    adapter::{AckStreamItem, BroadcastOptions, SocketEmitter},
    packet::Packet,
};
use tokio::sync::mpsc;

use super::{RedisAdapter, Target};
use crate::{
    ack::AckFailure,
    error::Result,
    metrics::Origin,
    reports::{AckEntry, AckReport},
    request::InFlight,
    wire::{self, Body, RemoteAck, WirePacket},
};

/// Extra time a broadcast with acks waits for remote nodes past the sockets' ack timeout, so
/// that the remote sockets' own timeouts can still be reported.
const ACK_GRACE: Duration = Duration::from_millis(200);

/// The stream socketioxide gets from a broadcast with acks.
pub(super) type AckStream<E> =
    Fuse<BoxStream<'static, AckStreamItem<<E as SocketEmitter>::AckError>>>;

/// Progress of the remote nodes answering one broadcast with acks.
#[derive(Default)]
struct AckTracker {
    /// Per node: (acks announced, once known; acks received).
    progress: HashMap<String, (Option<u32>, u32)>,
}

impl AckTracker {
    /// Records one response of `node`; returns the ack it carried, if any, and whether the node
    /// has now sent everything it announced.
    fn on_response(&mut self, node: &str, body: Body) -> (Option<RemoteAck>, bool) {
        let entry = self.progress.entry(node.to_owned()).or_insert((None, 0));
        let ack = match body {
            Body::AckCount { count, .. } => {
                entry.0 = Some(count);
                None
            }
            Body::Ack { sid, result, .. } => {
                entry.1 += 1;
                Some((sid, result))
            }
            _ => None,
        };
        let done = matches!(entry, (Some(expected), got) if *got >= *expected);
        (ack, done)
    }
}

impl<E: SocketEmitter> RedisAdapter<E> {
    /// Publishes the broadcast to the other nodes (unless it is local only) and hands it to
    /// the local sockets. Returns the local acks and, when published, the request in flight.
    async fn start_ack_broadcast(
        &self,
        packet: Packet,
        opts: BroadcastOptions,
        timeout: Duration,
    ) -> Result<(
        BoxStream<'static, AckStreamItem<E::AckError>>,
        u32,
        Option<InFlight>,
    )> {
        let target = self.target(&opts);
        let flight = if matches!(target, Target::OnlyLocal) {
            None
        } else {
            let body = |req| Body::BroadcastWithAck {
                req,
                packet: WirePacket::from(&packet),
                opts: opts.clone(),
                // The other nodes refuse a longer wait (bounds.rs): they are asked for the
                // longest they keep, and this node still waits its own timeout.
                timeout_ms: (timeout.as_millis() as u64).min(crate::bounds::MAX_ACK_TIMEOUT_MS),
            };
            Some(self.start("broadcast_with_ack", &target, body).await?)
        };
        let (stream, count) = if target.includes_local() {
            let (s, n) = self.local.broadcast_with_ack(packet, opts, Some(timeout));
            (s.boxed(), n)
        } else {
            (futures_util::stream::empty().boxed(), 0)
        };
        self.cluster
            .driver
            .metrics
            .delivered(Origin::Local, u64::from(count));
        Ok((stream, count, flight))
    }

    /// socketioxide's broadcast with acks: local and remote acks in one stream. The stream's
    /// item type cannot say which nodes were silent; the log and the timeout counter do.
    pub(super) async fn ack_stream(
        &self,
        packet: Packet,
        opts: BroadcastOptions,
        timeout: Duration,
    ) -> Result<AckStream<E>> {
        let (local, _, flight) = self.start_ack_broadcast(packet, opts, timeout).await?;
        let Some(flight) = flight else {
            return Ok(local.fuse());
        };
        // Remote acks are gathered by a task that owns the request; dropping the returned
        // stream closes `item_rx`, and the task stops at its deadline and unregisters.
        let (item_tx, item_rx) = mpsc::unbounded_channel::<AckStreamItem<E::AckError>>();
        let decode_fail = self.cluster.clone();
        tokio::spawn(async move {
            let mut tracker = AckTracker::default();
            flight
                .finish(timeout + ACK_GRACE, |node, body| {
                    let (ack, done) = tracker.on_response(node, body);
                    if let Some((sid, result)) = ack {
                        let item = match result {
                            Ok(v) => Some(Ok(Value::from(v))),
                            Err(e) => decode_fail.decoded(wire::decode_ack_error(&e)).map(Err),
                        };
                        if let (Ok(sid), Some(item)) = (Sid::from_str(&sid), item) {
                            let _ = item_tx.send((sid, item));
                        }
                    }
                    done
                })
                .await;
        });
        let remote = futures_util::stream::unfold(item_rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(futures_util::stream::select(local, remote).boxed().fuse())
    }

    /// The API's broadcast with acks: every ack with its node, and which nodes were silent.
    pub(super) async fn ack_report(
        &self,
        packet: Packet,
        opts: BroadcastOptions,
        timeout: Duration,
    ) -> Result<AckReport> {
        let (local, local_expected, flight) =
            self.start_ack_broadcast(packet, opts, timeout).await?;
        let node_id = self.node_id().to_owned();
        let local = local
            .map(|(sid, r)| AckEntry {
                socket: sid.to_string(),
                node: node_id.clone(),
                response: r.map_err(|e| AckFailure::classify(&e)),
            })
            .collect::<Vec<_>>();
        let mut tracker = AckTracker::default();
        let mut remote_acks = Vec::new();
        let remote = async {
            let Some(flight) = flight else {
                return Vec::new();
            };
            flight
                .finish(timeout + ACK_GRACE, |node, body| {
                    let (ack, done) = tracker.on_response(node, body);
                    if let Some((sid, result)) = ack {
                        remote_acks.push(AckEntry {
                            socket: sid,
                            node: node.to_owned(),
                            response: result.map(Value::from).map_err(|e| self.ack_failure(&e)),
                        });
                    }
                    done
                })
                .await
        };
        let (mut acks, missing) = tokio::join!(local, remote);
        let local_complete =
            acks.iter().filter(|a| a.response.is_ok()).count() as u32 == local_expected;
        acks.extend(remote_acks);
        let complete =
            missing.is_empty() && local_complete && acks.iter().all(|a| a.response.is_ok());
        Ok(AckReport {
            acks,
            complete,
            missing_nodes: missing,
        })
    }

    /// A remote socket's ack error, as the code a caller is shown.
    fn ack_failure(&self, bytes: &[u8]) -> AckFailure {
        self.cluster
            .decoded(wire::decode_ack_error::<E::AckError>(bytes))
            .map_or(AckFailure::Failed, |e| AckFailure::classify(&e))
    }
}

#[cfg(test)]
mod tests {
    use serde_bytes::ByteBuf;

    use super::*;
    use crate::wire::WireValue;

    #[test]
    fn ack_tracker_waits_for_the_announced_count() {
        let mut t = AckTracker::default();
        let ack = |sid: &str| Body::Ack {
            req: 1,
            sid: sid.into(),
            result: Ok(WireValue::Bytes(ByteBuf::from(vec![1]))),
        };
        // An ack may overtake the count on another path; the node is done only once both the
        // count and that many acks are in.
        assert!(!t.on_response("b", ack("s1")).1);
        assert!(!t.on_response("b", Body::AckCount { req: 1, count: 2 }).1);
        let (got, done) = t.on_response("b", ack("s2"));
        assert!(done);
        assert_eq!(got.map(|(s, _)| s).as_deref(), Some("s2"));
        assert!(t.on_response("c", Body::AckCount { req: 1, count: 0 }).1);
    }
}
