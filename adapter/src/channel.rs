//! Redis channel names. Two channels per namespace:
//!
//! | channel | who subscribes | what travels |
//! |---|---|---|
//! | `{prefix}#{ns}#` | every node serving `ns` | broadcasts, requests, heartbeats |
//! | `{prefix}#{ns}#{node}#` | only `node` | responses and requests aimed at that node |

use crate::error::{Error, Result};

/// The channel every node of a namespace subscribes to.
pub fn all_nodes(prefix: &str, ns: &str) -> String {
    format!("{prefix}#{ns}#")
}

/// The channel only `node` subscribes to, for responses and targeted requests.
pub fn one_node(prefix: &str, ns: &str, node: &str) -> String {
    format!("{prefix}#{ns}#{node}#")
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
        assert!(check_namespace("/a#b").is_err());
        assert!(check_namespace("/a").is_ok());
    }
}
