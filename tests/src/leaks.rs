//! Searching what clients received for secrets: every place a string (a session id) occurs in
//! JSON values, named by path, so a failing test says which event leaked what and where.

use serde_json::Value;

/// Where in `v` (JSON path) a string or key contains `needle`.
fn paths_with(v: &Value, needle: &str, at: &str, out: &mut Vec<String>) {
    match v {
        Value::String(s) if s.contains(needle) => out.push(format!("{at} = {s:?}")),
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                paths_with(x, needle, &format!("{at}[{i}]"), out);
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                if k.contains(needle) {
                    out.push(format!("{at} has the key {k:?}"));
                }
                paths_with(x, needle, &format!("{at}.{k}"), out);
            }
        }
        _ => {}
    }
}

/// Every occurrence of a secret in `seen`: where, whose, at which JSON path.
pub fn leaks(seen: &[(String, Value)], secrets: &[(String, String)]) -> Vec<String> {
    let mut out = Vec::new();
    for (what, v) in seen {
        let text = v.to_string();
        for (sid, owner) in secrets {
            if text.contains(sid.as_str()) {
                let mut at = Vec::new();
                paths_with(v, sid, "$", &mut at);
                let clip: String = text.chars().take(300).collect();
                out.push(format!(
                    "{what} leaks the session id {sid} of {owner} at {at:?}: {clip}"
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The search itself finds a planted session id, and says where.
    #[test]
    fn a_planted_session_id_is_reported_with_its_path() {
        let seen = vec![
            ("clean".to_owned(), json!({"from": "public-id"})),
            (
                "r0 event #3 \"shout\"".to_owned(),
                json!({"event": "shout", "args": [{"from": "xSidOfR1xxxxxxxx", "data": 1}]}),
            ),
        ];
        let secrets = vec![("xSidOfR1xxxxxxxx".to_owned(), "r1".to_owned())];
        let found = leaks(&seen, &secrets);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("$.args[0].from") && found[0].contains("of r1"),
            "{found:?}"
        );
    }
}
