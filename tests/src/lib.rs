//! Multi-process test harness for the ioscale cluster.
//!
//! The tests in `tests/*.rs` run the real thing: `redis-server` processes
//! ([`RedisServer`], [`RedisCluster`]), `ioscale-node` processes ([`NodeProc`],
//! [`Cluster`]) and the official socket.io JS client ([`Agent`], driving
//! `tests/js/agent.mjs`), and talk to the nodes' HTTP API ([`Api`]). Nothing is
//! mocked, so a passing test means the behaviour holds across process, network
//! and Redis boundaries. The deployment tests add the real load balancers of
//! `deploy/lb` ([`lb::LoadBalancer`]: nginx, HAProxy) and linters and renderers
//! installed under `target/deploy-tools/` ([`tools`]: hadolint, Docker Compose,
//! kubernetes-validate, Helm), with what the Compose and Helm tests share
//! ([`compose`], [`helm`]).
//!
//! Every process logs to `target/test-logs/<test binary>/<test name>/`; failing
//! tests print that path. Every wait in the harness is bounded.
//!
//! Run with `cargo nextest run -p ioscale-cluster-tests` (builds
//! `ioscale-node` on first use if it is missing; set
//! `IOSCALE_TEST_REBUILD_NODE=1` to rebuild it every run).

pub mod agent;
pub mod browser;
pub mod cluster;
pub mod compose;
pub mod dialects;
pub mod example;
pub mod extra;
pub mod failover;
pub mod fixture;
pub mod helm;
pub mod http;
pub mod lb;
pub mod leaks;
pub mod logs;
pub mod node;
pub mod protocol;
pub mod py;
pub mod redis;
pub mod redis_cluster;
pub mod rooms;
pub mod sentinel;
pub mod tools;

use std::future::Future;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

pub use agent::{AckReply, Agent, ClientState, ConnectOpts, Received};
pub use cluster::{Cluster, ClusterBuilder, RedisBackend, RedisKind};
pub use fixture::{Client, SETTLE, connect_spread, expect_delivery, expect_none};
pub use http::{Api, Emit, Selector};
pub use logs::TestLogs;
pub use node::{NodeOpts, NodeProc};
pub use redis::{RedisCluster, RedisServer};

/// Upper bound for a whole test; the harness's own waits are shorter, so this
/// only fires when something unexpected hangs.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// How long to wait for an event that should arrive.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Which Engine.IO transports a client may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// WebSocket only (no sticky sessions needed).
    Websocket,
    /// HTTP long-polling only.
    Polling,
    /// Polling first, then upgrade to WebSocket (the browser default).
    Both,
}

impl Transport {
    /// The `transports` option of socket.io-client.
    pub fn names(self) -> &'static [&'static str] {
        match self {
            Transport::Websocket => &["websocket"],
            Transport::Polling => &["polling"],
            Transport::Both => &["polling", "websocket"],
        }
    }
}

/// `{"$binary": "<base64>"}`: how binary travels through the agent and the HTTP API.
pub fn binary(bytes: &[u8]) -> Value {
    json!({ "$binary": base64::engine::general_purpose::STANDARD.encode(bytes) })
}

/// The codes a refused socket request may carry (README, "Errors").
pub const REFUSAL_CODES: [&str; 8] = [
    "bad_request",
    "forbidden",
    "not_found",
    "too_large",
    "conflict",
    "busy",
    "unavailable",
    "internal",
];

/// Exactly `{"ok": false, "code": <one of REFUSAL_CODES>, "error": "<non-empty text>"}`, plus
/// a 16-hex-digit `request_id` when the cause is internal, and the `extra` keys a dialect adds
/// (`event`, `status`, …): the shape of every refusal on every namespace.
pub fn is_refusal_with(v: &Value, extra: &[&str]) -> bool {
    let Some(o) = v.as_object() else { return false };
    let id_ok = o.get("request_id").is_none_or(|id| {
        id.as_str()
            .is_some_and(|s| s.len() == 16 && s.chars().all(|c| c.is_ascii_hexdigit()))
    });
    let known = ["ok", "code", "error", "request_id"];
    o.get("ok") == Some(&Value::Bool(false))
        && o.get("code")
            .and_then(Value::as_str)
            .is_some_and(|c| REFUSAL_CODES.contains(&c))
        && o.get("error")
            .and_then(Value::as_str)
            .is_some_and(|e| !e.is_empty())
        && id_ok
        && o.keys()
            .all(|k| known.contains(&k.as_str()) || extra.contains(&k.as_str()))
}

/// [`is_refusal_with`] without extra keys.
pub fn is_refusal(v: &Value) -> bool {
    is_refusal_with(v, &[])
}

/// Runs a test body with [`TEST_TIMEOUT`].
///
/// # Errors
/// The body's error, or a timeout error.
pub async fn with_timeout<F>(body: F) -> anyhow::Result<()>
where
    F: Future<Output = anyhow::Result<()>>,
{
    match tokio::time::timeout(TEST_TIMEOUT, body).await {
        Ok(r) => r,
        Err(_) => anyhow::bail!("test did not finish within {TEST_TIMEOUT:?}"),
    }
}

/// Generates, for each `async fn name(transport: Transport) -> anyhow::Result<()>`,
/// a module `name` with the tests `websocket` and `polling`, each bounded by
/// [`TEST_TIMEOUT`]. Client-facing behaviour must hold on both transports:
/// polling goes through a different code path in the server (HTTP requests
/// instead of one socket).
#[macro_export]
macro_rules! transport_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[::tokio::test]
                async fn websocket() -> ::anyhow::Result<()> {
                    $crate::with_timeout(super::$name($crate::Transport::Websocket)).await
                }

                #[::tokio::test]
                async fn polling() -> ::anyhow::Result<()> {
                    $crate::with_timeout(super::$name($crate::Transport::Polling)).await
                }
            }
        )*
    };
}
