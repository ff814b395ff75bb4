//! Typed client for a node's HTTP endpoints: the server API (`/api/v1/*`),
//! health checks and `/metrics`.
//!
//! Every request has a timeout, so a hung node fails the test instead of
//! hanging it. Non-2xx answers become errors that carry the status and body.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
pub use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Timeout of requests that do not wait for acks.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// `POST /api/v1/emit` body.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Emit {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rooms: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
    pub event: String,
    pub args: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volatile: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack_timeout_ms: Option<u64>,
}

impl Emit {
    /// An emit of `event` with `args` to every socket of `/`.
    pub fn new(event: impl Into<String>, args: Vec<Value>) -> Self {
        Self {
            event: event.into(),
            args,
            ..Self::default()
        }
    }

    /// Only the sockets of the node the emit goes through.
    pub fn local(mut self) -> Self {
        self.local = Some(true);
        self
    }

    /// Targets namespace `ns`.
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = Some(ns.into());
        self
    }

    /// Targets these rooms (union).
    pub fn to<I: IntoIterator<Item = S>, S: Into<String>>(mut self, rooms: I) -> Self {
        self.rooms.extend(rooms.into_iter().map(Into::into));
        self
    }

    /// Excludes sockets in these rooms.
    pub fn except<I: IntoIterator<Item = S>, S: Into<String>>(mut self, rooms: I) -> Self {
        self.except.extend(rooms.into_iter().map(Into::into));
        self
    }

    /// Marks the emit volatile.
    pub fn volatile(mut self) -> Self {
        self.volatile = Some(true);
        self
    }
}

/// Which sockets a join/leave/disconnect applies to.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Selector {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rooms: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sockets: Vec<String>,
}

impl Selector {
    /// Every socket of `/`.
    pub fn all() -> Self {
        Self::default()
    }

    /// Sockets in any of these rooms.
    pub fn rooms<I: IntoIterator<Item = S>, S: Into<String>>(rooms: I) -> Self {
        Self {
            rooms: rooms.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// These socket ids.
    pub fn sockets<I: IntoIterator<Item = S>, S: Into<String>>(ids: I) -> Self {
        Self {
            sockets: ids.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// In namespace `ns`.
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = Some(ns.into());
        self
    }

    /// Excluding sockets in these rooms.
    pub fn except<I: IntoIterator<Item = S>, S: Into<String>>(mut self, rooms: I) -> Self {
        self.except.extend(rooms.into_iter().map(Into::into));
        self
    }
}

/// One socket from `GET /api/v1/sockets`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SocketInfo {
    pub id: String,
    pub node: String,
    pub rooms: Vec<String>,
    pub data: Value,
}

/// One node from `GET /api/v1/nodes`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    pub sockets: u64,
    pub last_seen_ms: u64,
}

/// One client's ack in [`AckResponse`].
///
/// Parsed leniently (`response` missing → `Null`, extra `node`/`error`
/// fields kept) so a test can say precisely what differs from the contract
/// instead of failing on the shape.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Ack {
    pub socket: String,
    #[serde(default)]
    pub response: Value,
    /// Not in the contract: the node that holds the socket.
    #[serde(default)]
    pub node: Option<String>,
    /// Not in the contract: set for a socket that did not answer.
    #[serde(default)]
    pub error: Option<String>,
}

/// Answer of `POST /api/v1/emit` with `ack_timeout_ms`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AckResponse {
    pub acks: Vec<Ack>,
    /// Sockets that did not answer, each with an error code.
    #[serde(default)]
    pub errors: Vec<Ack>,
    pub complete: bool,
    pub missing_nodes: Vec<String>,
}

/// One node's answer in [`ServerEmitResponse`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct NodeResponse {
    pub node: String,
    pub response: Value,
}

/// Answer of `POST /api/v1/server-emit` with `ack_timeout_ms`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ServerEmitResponse {
    pub responses: Vec<NodeResponse>,
    pub complete: bool,
    pub missing_nodes: Vec<String>,
}

/// A raw HTTP answer, for tests about status codes.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub body: String,
}

impl RawResponse {
    /// The body parsed as JSON.
    ///
    /// # Errors
    /// If it is not JSON.
    pub fn json(&self) -> Result<Value> {
        serde_json::from_str(&self.body)
            .with_context(|| format!("body is not JSON (status {}): {}", self.status, self.body))
    }
}

/// Client for one node's HTTP endpoints.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    key: Option<String>,
    client: reqwest::Client,
}

impl Api {
    /// A client for `base` (`http://IP:PORT`), sending `key` as bearer token.
    pub fn new(base: impl Into<String>, key: Option<String>) -> Self {
        Self {
            base: base.into().trim_end_matches('/').to_owned(),
            key,
            client: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .build()
                .expect("building a reqwest client without TLS cannot fail"),
        }
    }

    /// The same node with another token (or none).
    pub fn with_key(&self, key: Option<&str>) -> Self {
        Self {
            base: self.base.clone(),
            key: key.map(str::to_owned),
            client: self.client.clone(),
        }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request and returns status and body whatever the status.
    ///
    /// # Errors
    /// On connection errors and timeouts.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<RawBody>,
        timeout: Duration,
    ) -> Result<RawResponse> {
        let url = format!("{}{path}", self.base);
        let mut req = self.client.request(method.clone(), &url).timeout(timeout);
        if let Some(key) = &self.key {
            req = req.bearer_auth(key);
        }
        match body {
            Some(RawBody::Json(v)) => req = req.json(&v),
            Some(RawBody::Text(t)) => {
                req = req.header("content-type", "application/json").body(t);
            }
            None => {}
        }
        // reqwest's own timeout covers the whole exchange; this one also
        // guards against a stuck connect on an overloaded machine.
        let resp = tokio::time::timeout(timeout + Duration::from_secs(1), req.send())
            .await
            .with_context(|| format!("{method} {url} timed out after {timeout:?}"))?
            .with_context(|| format!("{method} {url}"))?;
        let status = resp.status().as_u16();
        let body = tokio::time::timeout(timeout, resp.text())
            .await
            .with_context(|| format!("{method} {url}: reading body timed out"))?
            .with_context(|| format!("{method} {url}: reading body"))?;
        Ok(RawResponse { status, body })
    }

    /// Sends a request, requires 2xx and parses the JSON answer.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        timeout: Duration,
    ) -> Result<T> {
        let resp = self
            .raw(
                method.clone(),
                path,
                body.clone().map(RawBody::Json),
                timeout,
            )
            .await?;
        if !(200..300).contains(&resp.status) {
            bail!(
                "{method} {}{path} with {} answered {}: {}",
                self.base,
                body.map(|b| b.to_string()).unwrap_or_default(),
                resp.status,
                resp.body
            );
        }
        serde_json::from_str(&resp.body).with_context(|| {
            format!(
                "{method} {}{path}: unexpected answer shape: {}",
                self.base, resp.body
            )
        })
    }

    /// Requires `{"ok": true}`.
    async fn call_ok(&self, path: &str, body: Value) -> Result<()> {
        let v: Value = self
            .call(Method::POST, path, Some(body), REQUEST_TIMEOUT)
            .await?;
        if v != json!({"ok": true}) {
            bail!(
                "POST {}{path}: expected {{\"ok\":true}}, got {v}",
                self.base
            );
        }
        Ok(())
    }

    /// `POST /api/v1/emit` without acks.
    ///
    /// # Errors
    /// On any non-`{"ok":true}` answer.
    pub async fn emit(&self, emit: &Emit) -> Result<()> {
        anyhow::ensure!(emit.ack_timeout_ms.is_none(), "use emit_with_ack");
        self.call_ok("/api/v1/emit", serde_json::to_value(emit)?)
            .await
    }

    /// `POST /api/v1/emit` with `ack_timeout_ms`.
    ///
    /// # Errors
    /// On a non-2xx answer or an unexpected shape.
    pub async fn emit_with_ack(&self, emit: &Emit, ack_timeout_ms: u64) -> Result<AckResponse> {
        let mut emit = emit.clone();
        emit.ack_timeout_ms = Some(ack_timeout_ms);
        let timeout = Duration::from_millis(ack_timeout_ms) + REQUEST_TIMEOUT;
        self.call(
            Method::POST,
            "/api/v1/emit",
            Some(serde_json::to_value(&emit)?),
            timeout,
        )
        .await
    }

    /// `GET /api/v1/sockets?namespace=…&rooms=…`
    ///
    /// # Errors
    /// On a non-2xx answer or an unexpected shape.
    pub async fn sockets(&self, namespace: &str, rooms: &[&str]) -> Result<Vec<SocketInfo>> {
        #[derive(Deserialize)]
        struct Sockets {
            sockets: Vec<SocketInfo>,
        }
        let mut path = format!("/api/v1/sockets?namespace={}", encode(namespace));
        if !rooms.is_empty() {
            let rooms: Vec<String> = rooms.iter().map(|r| encode(r)).collect();
            path.push_str(&format!("&rooms={}", rooms.join(",")));
        }
        let s: Sockets = self.call(Method::GET, &path, None, REQUEST_TIMEOUT).await?;
        Ok(s.sockets)
    }

    /// `GET /api/v1/rooms?namespace=…`
    ///
    /// # Errors
    /// On a non-2xx answer or an unexpected shape.
    pub async fn rooms(&self, namespace: &str) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Rooms {
            rooms: Vec<String>,
        }
        let path = format!("/api/v1/rooms?namespace={}", encode(namespace));
        let r: Rooms = self.call(Method::GET, &path, None, REQUEST_TIMEOUT).await?;
        Ok(r.rooms)
    }

    /// `POST /api/v1/join`: the selected sockets join `rooms`.
    ///
    /// # Errors
    /// On any non-`{"ok":true}` answer.
    pub async fn join(&self, sel: &Selector, rooms: &[&str]) -> Result<()> {
        let mut body = serde_json::to_value(sel)?;
        body["join"] = json!(rooms);
        self.call_ok("/api/v1/join", body).await
    }

    /// `POST /api/v1/leave`: the selected sockets leave `rooms`.
    ///
    /// # Errors
    /// On any non-`{"ok":true}` answer.
    pub async fn leave(&self, sel: &Selector, rooms: &[&str]) -> Result<()> {
        let mut body = serde_json::to_value(sel)?;
        body["leave"] = json!(rooms);
        self.call_ok("/api/v1/leave", body).await
    }

    /// `POST /api/v1/disconnect`
    ///
    /// # Errors
    /// On any non-`{"ok":true}` answer.
    pub async fn disconnect(&self, sel: &Selector) -> Result<()> {
        self.call_ok("/api/v1/disconnect", serde_json::to_value(sel)?)
            .await
    }

    /// `GET /api/v1/nodes`
    ///
    /// # Errors
    /// On a non-2xx answer or an unexpected shape.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>> {
        #[derive(Deserialize)]
        struct Nodes {
            nodes: Vec<NodeInfo>,
        }
        let n: Nodes = self
            .call(Method::GET, "/api/v1/nodes", None, REQUEST_TIMEOUT)
            .await?;
        Ok(n.nodes)
    }

    /// `POST /api/v1/server-emit` without acks.
    ///
    /// # Errors
    /// On any non-`{"ok":true}` answer.
    pub async fn server_emit(
        &self,
        namespace: Option<&str>,
        event: &str,
        args: Vec<Value>,
    ) -> Result<()> {
        let mut body = json!({"event": event, "args": args});
        if let Some(ns) = namespace {
            body["namespace"] = json!(ns);
        }
        self.call_ok("/api/v1/server-emit", body).await
    }

    /// `POST /api/v1/server-emit` with `ack_timeout_ms`.
    ///
    /// # Errors
    /// On a non-2xx answer or an unexpected shape.
    pub async fn server_emit_with_ack(
        &self,
        namespace: Option<&str>,
        event: &str,
        args: Vec<Value>,
        ack_timeout_ms: u64,
    ) -> Result<ServerEmitResponse> {
        let mut body = json!({"event": event, "args": args, "ack_timeout_ms": ack_timeout_ms});
        if let Some(ns) = namespace {
            body["namespace"] = json!(ns);
        }
        let timeout = Duration::from_millis(ack_timeout_ms) + REQUEST_TIMEOUT;
        self.call(Method::POST, "/api/v1/server-emit", Some(body), timeout)
            .await
    }

    /// Status of `GET /healthz`.
    ///
    /// # Errors
    /// On connection errors and timeouts.
    pub async fn healthz(&self) -> Result<u16> {
        Ok(self
            .raw(Method::GET, "/healthz", None, REQUEST_TIMEOUT)
            .await?
            .status)
    }

    /// Status of `GET /readyz`.
    ///
    /// # Errors
    /// On connection errors and timeouts.
    pub async fn readyz(&self) -> Result<u16> {
        Ok(self
            .raw(Method::GET, "/readyz", None, REQUEST_TIMEOUT)
            .await?
            .status)
    }

    /// The Prometheus text of `GET /metrics`.
    ///
    /// # Errors
    /// On a non-200 answer.
    pub async fn metrics(&self) -> Result<String> {
        let r = self
            .raw(Method::GET, "/metrics", None, REQUEST_TIMEOUT)
            .await?;
        anyhow::ensure!(
            r.status == 200,
            "/metrics answered {}: {}",
            r.status,
            r.body
        );
        Ok(r.body)
    }
}

/// A request body for [`Api::raw`].
#[derive(Debug, Clone)]
pub enum RawBody {
    /// Serialized as JSON.
    Json(Value),
    /// Sent verbatim with `content-type: application/json` (for malformed-JSON tests).
    Text(String),
}

/// Percent-encodes a query value (namespaces start with `/`, rooms may hold anything).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The value of a Prometheus sample `name{labels}` in `/metrics` text; labels
/// not listed are ignored, and matching samples are summed.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, label_text) = match series.split_once('{') {
            Some((m, l)) => (m, l.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        let all_match = labels
            .iter()
            .all(|(k, v)| label_text.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
        if all_match && let Ok(v) = value.parse::<f64>() {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_lookup() {
        let text = "# HELP x\nioscale_connections_active 3\n\
            ioscale_adapter_requests_total{kind=\"fetch_sockets\"} 2\n\
            ioscale_adapter_requests_total{kind=\"broadcast\"} 5\n";
        assert_eq!(
            metric_value(text, "ioscale_connections_active", &[]),
            Some(3.0)
        );
        assert_eq!(
            metric_value(
                text,
                "ioscale_adapter_requests_total",
                &[("kind", "broadcast")]
            ),
            Some(5.0)
        );
        assert_eq!(
            metric_value(text, "ioscale_adapter_requests_total", &[]),
            Some(7.0)
        );
        assert_eq!(metric_value(text, "nope", &[]), None);
    }

    #[test]
    fn bodies_skip_empty_fields() {
        let e = Emit::new("ev", vec![json!(1)]).to(["r1"]);
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"rooms": ["r1"], "event": "ev", "args": [1]})
        );
        assert_eq!(encode("/custom"), "%2Fcustom");
    }
}
