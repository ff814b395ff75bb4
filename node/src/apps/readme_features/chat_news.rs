//! The README's two namespaces on one connection: `/chat` (`hi`) and `/news` (`woot`).

use super::*;

/// Connect hook of `/chat`: `a message` to every `/chat` socket on every node, then one to
/// the new socket (the README's `chat.emit` and `socket.emit`).
pub(super) async fn on_connect_chat(s: SocketRef<Adapter>, io: SocketIo<Adapter>, _app: Arc<App>) {
    if let Some(chat) = io.of(CHAT_NAMESPACE)
        && let Err(e) = chat
            .emit("a message", &json!({"everyone": "in", "/chat": "will get"}))
            .await
    {
        tracing::debug!(error = %e, "readme: /chat broadcast partially delivered");
    }
    // After the broadcast (the README has it before): a client that got it knows the broadcast
    // is on its way.
    let _ = s.emit("a message", &json!({"that": "only", "/chat": "will get"}));
}

/// `/chat` `hi!` (what the README's client sends on connect): `hi! {from}` to every other
/// `/chat` socket on every node.
pub(super) async fn hi(s: SocketRef<Adapter>, reply: Reply) {
    if let Err(e) = s
        .broadcast()
        .emit("hi!", &json!({"from": public_id::of(&s)}))
        .await
    {
        tracing::debug!(error = %e, "readme: hi! partially delivered");
    }
    reply.ack(&json!({"ok": true}));
}

/// Connect hook of `/news`: `item {news: 'item'}` to the new socket.
pub(super) async fn on_connect_news(s: SocketRef<Adapter>, _app: Arc<App>) {
    let _ = s.emit("item", &json!({"news": "item"}));
}

/// `/news` `woot` (the README's client answer to a news item): answered with
/// `item {news: 'woot'}` (through the ack when there is one).
pub(super) async fn woot(s: SocketRef<Adapter>, reply: Reply) {
    reply.send(&s, "item", &json!({"news": "woot"}));
}
