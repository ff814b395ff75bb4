//! Redis channel names. Two channels per namespace, and one per room in use:
//!
//! | channel | who subscribes | what travels |
//! |---|---|---|
//! | `{prefix}#{ns}#` | every node serving `ns` | broadcasts to everyone, requests, heartbeats |
//! | `{prefix}#{ns}#{node}#` | only `node` | responses and requests aimed at that node |
//! | `{prefix}#{ns}##{room}` | the nodes with a socket in `room` | broadcasts to `room` |
//!
//! A room channel has `#` right after the namespace's, which neither other channel has (node
//! ids are not empty and contain no `#`), so no room name can collide with them. Room channels
//! carry no hash tag: on a Redis Cluster each lands on the shard of its own name, so rooms
//! spread over the shards.

use crate::error::{Error, Result};

/// The channel every node of a namespace subscribes to.
pub fn all_nodes(prefix: &str, ns: &str) -> String {
    format!("{prefix}#{ns}#")
}

/// The channel only `node` subscribes to, for responses and targeted requests.
pub fn one_node(prefix: &str, ns: &str, node: &str) -> String {
    format!("{prefix}#{ns}#{node}#")
}

/// The channel of `room`, subscribed by the nodes that have a socket in it.
pub fn room(prefix: &str, ns: &str, room: &str) -> String {
    format!("{prefix}#{ns}##{room}")
}

/// The key of the namespace's history stream (a key, not a channel: the two never collide).
pub(crate) fn history(prefix: &str, ns: &str) -> String {
    format!("{prefix}#{ns}#history")
}

/// Rejects namespaces that would make channel names ambiguous.
///
/// # Errors
/// [`Error::MalformedNamespace`] if `ns` contains `#`.
pub(crate) fn check_namespace(ns: &str) -> Result<()> {
    if ns.contains('#') {
        return Err(Error::MalformedNamespace(ns.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(all_nodes("ioscale", "/"), "ioscale#/#");
        assert_eq!(one_node("ioscale", "/chat", "n1"), "ioscale#/chat#n1#");
        assert_eq!(room("ioscale", "/chat", "a#b"), "ioscale#/chat##a#b");
        // No room name makes a namespace's other channels.
        for r in ["", "n1#", "#"] {
            assert_ne!(room("p", "/", r), all_nodes("p", "/"));
            assert_ne!(room("p", "/", r), one_node("p", "/", "n1"));
        }
        assert!(check_namespace("/a#b").is_err());
        assert!(check_namespace("/a").is_ok());
    }
}
