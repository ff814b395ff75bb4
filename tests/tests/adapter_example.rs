//! The adapter as a library: two processes of `adapter/examples/chat.rs` (socketioxide, axum
//! and ioscale-adapter; nothing of ioscale-node) on one Redis, driven by the official
//! socket.io-client: what one client sends through one process reaches the other client
//! through the other, both ways, and nobody receives their own message.

use anyhow::{Result, ensure};
use ioscale_cluster_tests::example::ExampleProc;
use ioscale_cluster_tests::redis::free_port;
use ioscale_cluster_tests::{
    Agent, ConnectOpts, EVENT_TIMEOUT, RedisServer, TestLogs, Transport, with_timeout,
};
use serde_json::{Value, json};

/// `client` names itself `user` (`add user`); `peer`, connected to the other process, is told
/// so: the name is set (the handler broadcasts after setting it) and the broadcast crossed
/// Redis.
async fn name(agent: &Agent, client: &str, user: &str, peer: &str) -> Result<()> {
    agent.emit(client, "add user", vec![json!(user)]).await?;
    let joined = agent
        .wait_count(peer, "user joined", 1, EVENT_TIMEOUT)
        .await?;
    ensure!(joined == vec![vec![json!(user)]], "{peer} saw {joined:?}");
    Ok(())
}

/// `from` sends `text` (`new message`); `to`, on the other process, receives it as
/// `{username: from, message: text}` (each client is named after itself).
async fn says(agent: &Agent, from: &str, text: &str, to: &str) -> Result<()> {
    agent.emit(from, "new message", vec![json!(text)]).await?;
    let got = agent
        .wait_count(to, "new message", 1, EVENT_TIMEOUT)
        .await?;
    let want: Vec<Vec<Value>> = vec![vec![json!({"username": from, "message": text})]];
    ensure!(got == want, "{to} got {got:?}");
    Ok(())
}

#[tokio::test]
async fn a_message_sent_through_one_process_reaches_the_client_of_the_other() -> Result<()> {
    with_timeout(async {
        let logs = TestLogs::for_current_test()?;
        let redis = RedisServer::start_with(&logs, &[]).await?;
        let env = [("REDIS_URL", redis.url())];
        let one = ExampleProc::start(&logs, "chat", "chat-1", free_port()?, &env).await?;
        let two = ExampleProc::start(&logs, "chat", "chat-2", free_port()?, &env).await?;
        let agent = Agent::spawn_in(&logs).await?;

        let ws = ConnectOpts::new(Transport::Websocket).without_whoami();
        agent.connect("alice", &one.url(), &ws).await?;
        agent.connect("bob", &two.url(), &ws).await?;
        name(&agent, "alice", "alice", "bob").await?;
        name(&agent, "bob", "bob", "alice").await?;

        says(&agent, "alice", "hello from one", "bob").await?;
        says(&agent, "bob", "and back from two", "alice").await?;

        // Each got exactly the other's message: a broadcast excludes its sender.
        for client in ["alice", "bob"] {
            let all = agent.events(client, "new message").await?;
            ensure!(all.len() == 1, "{client} received {all:?}");
        }
        Ok(())
    })
    .await
}
