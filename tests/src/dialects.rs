//! Harness side of the CRUD dialect tests: the agent's `backbone` and `sails09` commands (the
//! seeds' client code, `tests/js/backbone-client.mjs` and `tests/js/sails09-client.mjs`), and
//! helpers to read the change events a client received.

use std::time::Duration;

use anyhow::{Result, anyhow};
use serde_json::{Value, json};

use crate::agent::Agent;

/// Slack over the agent-side timeout, so the agent's own error normally wins.
const SLACK: Duration = Duration::from_secs(3);

fn ms(d: Duration) -> Result<u64> {
    Ok(u64::try_from(d.as_millis())?)
}

/// The answer of a sails.io.js 0.9 virtual request.
#[derive(Debug, Clone, PartialEq)]
pub struct SailsAnswer {
    /// The body, as sails.io.js 0.9 parsed it from the ack's first argument.
    pub body: Value,
    /// The ack's first argument as received (0.9 expects JSON text).
    pub raw: Value,
    /// The status code (the ack's second argument).
    pub status: Option<u64>,
}

/// The agent commands that run the seeds' client code.
#[allow(async_fn_in_trait)]
pub trait DialectAgent {
    /// One Backbone operation through the seed's `Backbone.sync` on `client`'s socket:
    /// `action` is `fetch` (the collection at `url`), `fetch_one`, `create`, `save` or
    /// `destroy` (model `id`, with `attributes`). Returns `{event, data, models | attributes,
    /// id}`: the reply event, its payload and what Backbone made of it.
    ///
    /// # Errors
    /// If no reply event arrives within `timeout`.
    async fn backbone(
        &self,
        client: &str,
        action: &str,
        url: &str,
        id: Option<u64>,
        attributes: Value,
        ctx: Option<&str>,
    ) -> Result<Value>;

    /// One sails.io.js 0.9 request (`method` is `get`, `post`, `put` or `delete`).
    ///
    /// # Errors
    /// If the ack does not come within 5 s or cannot be parsed as 0.9 does.
    async fn sails09(
        &self,
        client: &str,
        method: &str,
        url: &str,
        data: Value,
    ) -> Result<SailsAnswer>;
}

impl DialectAgent for Agent {
    async fn backbone(
        &self,
        client: &str,
        action: &str,
        url: &str,
        id: Option<u64>,
        attributes: Value,
        ctx: Option<&str>,
    ) -> Result<Value> {
        let timeout = crate::EVENT_TIMEOUT;
        let mut params = json!({"client": client, "action": action, "url": url,
                                "attributes": attributes, "timeout_ms": ms(timeout)?});
        if let Some(id) = id {
            // Not `id`: that is the agent protocol's request id.
            params["model_id"] = json!(id);
        }
        if let Some(ctx) = ctx {
            params["ctx"] = json!(ctx);
        }
        self.request("backbone", params, timeout + SLACK).await
    }

    async fn sails09(
        &self,
        client: &str,
        method: &str,
        url: &str,
        data: Value,
    ) -> Result<SailsAnswer> {
        let timeout = crate::EVENT_TIMEOUT;
        let v = self
            .request(
                "sails09",
                json!({"client": client, "method": method, "url": url, "data": data,
                       "timeout_ms": ms(timeout)?}),
                timeout + SLACK,
            )
            .await?;
        Ok(SailsAnswer {
            body: v
                .get("body")
                .cloned()
                .ok_or_else(|| anyhow!("sails09 answered without body: {v}"))?,
            raw: v.get("raw").cloned().unwrap_or(Value::Null),
            status: v.get("rest").and_then(|r| r.get(0)).and_then(Value::as_u64),
        })
    }
}

/// The first argument of every `event` `client` received so far whose payload has a `verb`
/// (model change events; other `message`s are left out).
///
/// # Errors
/// If the client does not exist.
pub async fn changes(agent: &Agent, client: &str, event: &str) -> Result<Vec<Value>> {
    Ok(agent
        .events(client, event)
        .await?
        .into_iter()
        .filter_map(|args| args.into_iter().next())
        .filter(|a| a.get("verb").is_some())
        .collect())
}

/// Waits until `client` has received `n` model changes on `event`; returns them all.
///
/// # Errors
/// On timeout.
pub async fn wait_changes(
    agent: &Agent,
    client: &str,
    event: &str,
    n: usize,
) -> Result<Vec<Value>> {
    crate::extra::wait_until(
        crate::EVENT_TIMEOUT,
        Duration::from_millis(25),
        &format!("{client}: {n} {event} change(s)"),
        || async move {
            let got = changes(agent, client, event).await?;
            Ok((got.len() >= n).then_some(got))
        },
    )
    .await
}

/// Emits `event` with `data` from `client` and returns the single ack argument (the ko.ninja
/// dialect answers every operation that way).
///
/// # Errors
/// No ack within [`crate::EVENT_TIMEOUT`], or an ack with another number of arguments.
pub async fn call(agent: &Agent, client: &str, event: &str, data: Value) -> Result<Value> {
    let mut ack = agent
        .emit_with_ack(client, event, vec![data], crate::EVENT_TIMEOUT)
        .await?;
    anyhow::ensure!(
        ack.len() == 1,
        "{event}: ack with {} arguments: {ack:?}",
        ack.len()
    );
    Ok(ack.remove(0))
}
