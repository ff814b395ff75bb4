//! The chat demo (seed "Getting started with Socket.io") on the default namespace:
//! `messages-available` (history, oldest first) on connect, `add-message` `{name, message}`
//! stored and re-broadcast to every client of every node as `message-added`; its page at
//! `GET /` (`page`), its history in Redis beside the cluster (`store`).

pub mod page;
pub mod store;

use std::sync::Arc;

use serde::Deserialize;
use socketioxide::{
    SocketIo,
    extract::{Data, SocketRef, State},
};

pub use self::store::ChatStore;
use crate::{
    app::{Adapter, App},
    application::{Application, Setup},
    config::Config,
    refusal::{Code, Refused},
    sockets::Reply,
};

/// The chat's flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ChatConfig {
    /// Chat messages kept in the history.
    #[arg(long, env = "IOSCALE_CHAT_HISTORY_MAX", default_value_t = 100)]
    pub chat_history_max: usize,
}

impl ChatConfig {
    /// Checks what clap cannot.
    ///
    /// # Errors
    /// A history of no messages.
    pub fn validate(&self) -> Result<(), crate::config::ConfigError> {
        if self.chat_history_max == 0 {
            return Err(crate::config::ConfigError::new(
                "--chat-history-max must be positive",
            ));
        }
        Ok(())
    }
}

/// The chat demo as an application of the node: the `/` namespace's chat events and the page.
#[derive(Debug)]
pub struct Chat {
    config: ChatConfig,
}

impl Chat {
    /// The chat with its flags.
    pub fn new(config: ChatConfig) -> Self {
        Self { config }
    }

    /// The history: in Redis beside the cluster, in memory for a node alone.
    fn store(&self, core: &Config, app: &App) -> ChatStore {
        let max = self.config.chat_history_max;
        match app.cluster.redis_client() {
            Some(client) => ChatStore::Redis {
                client,
                key: format!("{}:chat:messages", core.redis_prefix),
                max,
            },
            None => ChatStore::Memory {
                messages: Default::default(),
                max,
            },
        }
    }
}

impl Application for Chat {
    fn name(&self) -> &'static str {
        "chat"
    }

    fn setup(&self, setup: &mut Setup<'_>) -> anyhow::Result<()> {
        let store = Arc::new(self.store(&setup.app().config, setup.app()));
        setup.state(store.clone());
        setup.on_register("/", |s, _io, _app| s.on("add-message", add_message));
        setup.on_connect("/", move |s, _io, _app| on_connect(s, store.clone()));
        setup.routes(page::router());
        Ok(())
    }
}

/// Longest name accepted.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest message accepted.
pub const MAX_MESSAGE_CHARS: usize = 10_000;

#[derive(Debug, Deserialize)]
struct NewMessage {
    name: String,
    message: String,
}

fn validate(v: serde_json::Value) -> Result<NewMessage, String> {
    let m: NewMessage = serde_json::from_value(v)
        .map_err(|e| format!("add-message expects {{name: string, message: string}}: {e}"))?;
    if m.name.trim().is_empty() || m.name.chars().count() > MAX_NAME_CHARS {
        return Err(format!("name must be 1-{MAX_NAME_CHARS} characters"));
    }
    if m.message.is_empty() || m.message.chars().count() > MAX_MESSAGE_CHARS {
        return Err(format!("message must be 1-{MAX_MESSAGE_CHARS} characters"));
    }
    Ok(m)
}

/// What a socket connecting to `/` gets from the chat: its events, then the history.
async fn on_connect(s: SocketRef<Adapter>, store: Arc<ChatStore>) {
    match store.history().await {
        Ok(history) => {
            let _ = s.emit("messages-available", &history);
        }
        Err(e) => {
            let r = Refused::internal(Code::Unavailable, "history unavailable", "chat history", &e);
            let _ = s.emit("chat-error", &r.to_json());
        }
    }
}

async fn add_message(
    s: SocketRef<Adapter>,
    io: SocketIo<Adapter>,
    Data(v): Data<serde_json::Value>,
    reply: Reply,
    State(store): State<Arc<ChatStore>>,
) {
    // Errors go through the ack when the client asked for one, else as a `chat-error` event.
    let reply_error = |reply: Reply, r: Refused| reply.send(&s, "chat-error", &r.to_json());
    let m = match validate(v) {
        Ok(m) => m,
        Err(e) => return reply_error(reply, e.into()),
    };
    let time_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let msg = serde_json::json!({"name": m.name, "message": m.message, "time_ms": time_ms});
    if let Err(e) = store.add(&msg).await {
        let public = "message not stored: storage unavailable";
        return reply_error(
            reply,
            Refused::internal(Code::Unavailable, public, "chat add", &e),
        );
    }
    if let Some(ns) = io.of("/")
        && let Err(e) = ns.emit("message-added", &msg).await
    {
        tracing::warn!(error = %e, "message-added broadcast failed");
    }
    reply.ack(&serde_json::json!({"ok": true}));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert!(validate(serde_json::json!({"name": "a", "message": "b"})).is_ok());
        assert!(validate(serde_json::json!({"name": "", "message": "b"})).is_err());
        assert!(validate(serde_json::json!({"name": "a"})).is_err());
        assert!(validate(serde_json::json!("x")).is_err());
        let long = "x".repeat(MAX_MESSAGE_CHARS + 1);
        assert!(validate(serde_json::json!({"name": "a", "message": long})).is_err());
    }
}
