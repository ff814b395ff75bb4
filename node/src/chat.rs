//! The chat demo (seed "Getting started with Socket.io") on the default namespace:
//! `messages-available` (history, oldest first) on connect, `add-message` `{name, message}`
//! stored and re-broadcast to every client of every node as `message-added`.

use std::sync::Arc;

use serde::Deserialize;
use socketioxide::{
    SocketIo,
    extract::{Data, SocketRef, State},
};

use crate::{
    app::{Adapter, App},
    sockets::{self, Reply},
};

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

/// Connect handler of `/`.
pub async fn on_connect(s: SocketRef<Adapter>, State(app): State<Arc<App>>) {
    sockets::on_connect(&s, &app);
    s.on("add-message", add_message);
    // The CRUD dialects share `/` with the chat (the seeds' clients connect there).
    crate::models::register(&s);
    match app.chat.history().await {
        Ok(history) => {
            let _ = s.emit("messages-available", &history);
        }
        Err(e) => {
            tracing::warn!(error = %e, "chat history unavailable");
            let _ = s.emit(
                "chat-error",
                &serde_json::json!({"ok": false, "error": "history unavailable"}),
            );
        }
    }
}

async fn add_message(
    s: SocketRef<Adapter>,
    io: SocketIo<Adapter>,
    Data(v): Data<serde_json::Value>,
    reply: Reply,
    State(app): State<Arc<App>>,
) {
    app.metrics.events.with_label_values(&["/"]).inc();
    // Errors go through the ack when the client asked for one, else as a `chat-error` event.
    let reply_error = |reply: Reply, error: String| {
        let body = serde_json::json!({"ok": false, "error": error});
        reply.send(&s, "chat-error", &body);
    };
    let m = match validate(v) {
        Ok(m) => m,
        Err(e) => return reply_error(reply, e),
    };
    let time_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let msg = serde_json::json!({"name": m.name, "message": m.message, "time_ms": time_ms});
    if let Err(e) = app.chat.add(&msg).await {
        tracing::warn!(error = %e, "chat message not stored");
        return reply_error(reply, "message not stored: storage unavailable".to_owned());
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
