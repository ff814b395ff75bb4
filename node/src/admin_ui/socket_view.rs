//! A socket as the Admin UI shows it (its `SerializedSocket`): public id, client, transport,
//! namespace, data, rooms and handshake. Never the session id: the UI may be open on a shared
//! screen, and the session id is a key to the session (see `session`).

use std::{sync::Arc, time::SystemTime};

use ioscale_adapter::Cluster;
use serde_json::{Map, Value, json};
use socketioxide::extract::SocketRef;

use crate::{app::Adapter, edge::connections::Conn, session::public_id};

/// Request headers never shown: they carry credentials (the UI shows every header it gets).
const HIDDEN_HEADERS: [&str; 4] = [
    "authorization",
    "cookie",
    "proxy-authorization",
    "x-api-key",
];

/// When a socket connected, in its extensions (the UI shows it as `handshake.issued`).
#[derive(Debug, Clone, Copy)]
pub struct Issued(pub u64);

/// Milliseconds since the Unix epoch.
pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `ms` as the UI's timestamps are written (JavaScript's `Date#toISOString`):
/// `2026-12-08T02:37:12.345Z`.
pub(super) fn iso(ms: u64) -> String {
    let (secs, milli) = (ms / 1000, ms % 1000);
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil, for the proleptic Gregorian calendar.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn transport(s: &SocketRef<Adapter>) -> &'static str {
    match s.transport_type() {
        socketioxide::TransportType::Websocket => "websocket",
        socketioxide::TransportType::Polling => "polling",
    }
}

/// The client (Engine.IO connection) a socket belongs to, as the UI groups sockets: the same
/// for every namespace one connection opened, and not derived from the session id.
fn client_id(conn: Option<&Arc<Conn>>, id: &str) -> String {
    match conn {
        Some(c) => format!("c{:011x}", c.id() & 0x0fff_ffff_ffff),
        None => id.chars().take(12).collect(),
    }
}

fn headers(s: &SocketRef<Adapter>) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in &s.req_parts().headers {
        let k = k.as_str();
        if HIDDEN_HEADERS.contains(&k) {
            continue;
        }
        out.insert(
            k.to_owned(),
            Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
        );
    }
    out
}

fn query(s: &SocketRef<Adapter>) -> Map<String, Value> {
    let q = s.req_parts().uri.query().unwrap_or("");
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_owned(), Value::String(v.to_owned()))
        })
        .collect()
}

/// The socket as the UI's `SerializedSocket`; `trust_proxy`: its address is the one its
/// proxy says (`X-Forwarded-For`).
pub(super) fn of(s: &SocketRef<Adapter>, cluster: &Cluster, trust_proxy: bool) -> Value {
    let id = public_id::of(s);
    let conn = s.req_parts().extensions.get::<Arc<Conn>>();
    let issued = s.extensions.get::<Issued>().map_or_else(now_ms, |i| i.0);
    let forwarded = s
        .req_parts()
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    let address = match (forwarded, conn) {
        (Some(f), _) if trust_proxy => f.to_owned(),
        (_, Some(c)) => c.peer().ip().to_string(),
        _ => String::new(),
    };
    let mut rooms: Vec<String> = s.rooms().into_iter().map(|r| r.into_owned()).collect();
    rooms.sort_unstable();
    let data = cluster.socket_data(s.ns(), s.id);
    json!({
        "id": id,
        "clientId": client_id(conn, &id),
        "transport": transport(s),
        "nsp": s.ns(),
        "data": if data.is_null() { json!({}) } else { data },
        "rooms": rooms,
        "handshake": {
            "address": address,
            "headers": headers(s),
            "query": query(s),
            "issued": issued,
            "time": iso(issued),
            "secure": s.req_parts().uri.scheme_str() == Some("https"),
            "url": s.req_parts().uri.path_and_query().map_or("", |p| p.as_str()),
            "xdomain": s.req_parts().headers.contains_key("origin"),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_written_as_javascript_writes_them() {
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso(1_796_686_733_831), "2026-12-07T23:38:53.831Z");
        assert_eq!(iso(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
    }
}
