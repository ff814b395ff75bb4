//! The chat history store: a capped list in Redis, or in memory for a node alone.

use std::{collections::VecDeque, sync::Mutex};

use fred::{
    clients::Client,
    interfaces::{KeysInterface, ListInterface, TransactionInterface},
};

/// A store failure (Redis unreachable or a bad stored entry).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis failed.
    #[error("storage unavailable: {0}")]
    Redis(#[from] fred::error::Error),
}

/// Where chat messages live.
#[derive(Debug)]
pub enum ChatStore {
    /// In this process (the embedded default): lost on restart, fine for one node.
    Memory {
        /// Messages, oldest first.
        messages: Mutex<VecDeque<serde_json::Value>>,
        /// Most messages kept.
        max: usize,
    },
    /// In a Redis list shared by every node: survives restarts of all nodes.
    Redis {
        /// Client.
        client: Client,
        /// List key.
        key: String,
        /// Most messages kept.
        max: usize,
    },
}

impl ChatStore {
    /// Appends a message and trims the history to its cap.
    ///
    /// # Errors
    /// When Redis fails; nothing is stored then.
    pub async fn add(&self, msg: &serde_json::Value) -> Result<(), StoreError> {
        match self {
            ChatStore::Memory { messages, max } => {
                let mut m = messages.lock().unwrap_or_else(|e| e.into_inner());
                m.push_back(msg.clone());
                while m.len() > *max {
                    m.pop_front();
                }
                Ok(())
            }
            ChatStore::Redis { client, key, max } => {
                // One transaction: the push and the trim are never seen apart.
                let tx = client.multi();
                let _: () = tx.rpush(key.as_str(), msg.to_string()).await?;
                let _: () = tx.ltrim(key.as_str(), -(*max as i64), -1).await?;
                let _: () = tx.exec(true).await?;
                Ok(())
            }
        }
    }

    /// The history, oldest first. Entries that are not JSON are skipped.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn history(&self) -> Result<Vec<serde_json::Value>, StoreError> {
        match self {
            ChatStore::Memory { messages, .. } => Ok(messages
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned()
                .collect()),
            ChatStore::Redis { client, key, .. } => {
                let raw: Vec<String> = client.lrange(key.as_str(), 0, -1).await?;
                Ok(raw
                    .iter()
                    .filter_map(|s| serde_json::from_str(s).ok())
                    .collect())
            }
        }
    }

    /// Deletes the history (used by tests and operators).
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn clear(&self) -> Result<(), StoreError> {
        match self {
            ChatStore::Memory { messages, .. } => {
                messages.lock().unwrap_or_else(|e| e.into_inner()).clear();
                Ok(())
            }
            ChatStore::Redis { client, key, .. } => {
                let _: () = client.del(key.as_str()).await?;
                Ok(())
            }
        }
    }
}
