//! This node's `server_stats`, sent every 2 s while a UI watches anywhere in the cluster: its
//! id, host, process, uptime, clients, namespaces with their socket counts, and the connection
//! events of the last seconds in one-second buckets (the UI sums every node's).

use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, Mutex},
    time::Instant,
};

use serde_json::{Value, json};
use socketioxide::{SocketIo, TransportType};

use super::socket_view::now_ms;
use crate::{
    app::{Adapter, App},
    edge::connections::Conn,
};

/// Longest list of buckets kept between two stats: a node whose stats cannot go out for a
/// while keeps the last minutes only.
const MAX_BUCKETS: usize = 600;

/// Connection events of this node per (second, type, subtype), since the last stats.
#[derive(Debug, Default)]
pub(super) struct Aggregated(Mutex<BTreeMap<(u64, &'static str, String), u64>>);

impl Aggregated {
    /// Counts one `kind` event (`rawConnection`, `rawDisconnection` with the reason).
    pub(super) fn count(&self, kind: &'static str, sub: &str) {
        let second = now_ms() / 1000 * 1000;
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((second, kind, sub.to_owned())).or_default() += 1;
        while m.len() > MAX_BUCKETS {
            m.pop_first();
        }
    }

    /// The buckets since the last call, as the UI reads them.
    fn take(&self) -> Vec<Value> {
        let m = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        m.into_iter()
            .map(|((timestamp, kind, sub), count)| {
                let mut v = json!({"timestamp": timestamp, "type": kind, "count": count});
                if !sub.is_empty() {
                    v["subType"] = sub.into();
                }
                v
            })
            .collect()
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_default()
}

/// This node's stats now, its namespaces `names` listed always in the same order (the UI
/// merges each node's list into the last one position by position); `aggregated` is emptied.
pub(super) fn now(
    app: &App,
    io: &SocketIo<Adapter>,
    names: &[String],
    started: Instant,
    aggregated: &Aggregated,
) -> Value {
    // A client is an Engine.IO connection: the sockets of its namespaces share the connection
    // that opened it.
    let mut clients: HashSet<*const Conn> = HashSet::new();
    let mut polling: HashSet<*const Conn> = HashSet::new();
    let mut namespaces = Vec::new();
    for name in names {
        let sockets = io.of(name).map(|ops| ops.sockets()).unwrap_or_default();
        for s in &sockets {
            if let Some(c) = s.req_parts().extensions.get::<Arc<Conn>>() {
                clients.insert(Arc::as_ptr(c));
                if s.transport_type() == TransportType::Polling {
                    polling.insert(Arc::as_ptr(c));
                }
            }
        }
        namespaces.push(json!({"name": name, "socketsCount": sockets.len()}));
    }
    json!({
        "serverId": app.node_id,
        "hostname": hostname(),
        "pid": std::process::id(),
        "uptime": started.elapsed().as_secs_f64(),
        "clientsCount": clients.len(),
        "pollingClientsCount": polling.len(),
        "aggregatedEvents": aggregated.take(),
        "namespaces": namespaces,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_counted_per_second_type_and_subtype_and_taken_once() {
        let a = Aggregated::default();
        a.count("rawConnection", "");
        a.count("rawConnection", "");
        a.count("rawDisconnection", "transport close");
        let got = a.take();
        let total: u64 = got.iter().map(|v| v["count"].as_u64().unwrap()).sum();
        assert_eq!(total, 3);
        assert!(
            got.iter()
                .any(|v| v["type"] == "rawConnection" && v.get("subType").is_none())
        );
        assert!(got.iter().any(|v| v["subType"] == "transport close"));
        assert!(
            got.iter()
                .all(|v| v["timestamp"].as_u64().unwrap() % 1000 == 0)
        );
        assert!(a.take().is_empty());
    }
}
