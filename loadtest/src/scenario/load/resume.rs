//! One client's session recovery: what it remembers of its session (ioscale's session token or
//! socket.io's `pid`, and the offset of the last event it received), what it sends in a
//! reconnection's CONNECT, and how it learns whether the server recovered it.

use crate::client::{ClientConfig, RecoveryMode};

/// The event ioscale emits after each namespace CONNECT of a client that asked for recovery.
const IOSCALE_VERDICT: &str = "ioscale:recovery";
/// The key of the object ioscale appends as the last argument of a recoverable event.
const IOSCALE_OFFSET: &[u8] = br#"{"ioscale_offset":""#;

/// A client's recovery state.
#[derive(Debug, Clone)]
pub(crate) struct Resume {
    mode: RecoveryMode,
    /// ioscale: the session token; socket.io: the `pid`.
    session: Option<String>,
    /// The offset of the last recoverable event received.
    offset: Option<String>,
}

/// What a reconnection turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The server restored the session: rooms back, missed events replayed.
    Recovered,
    /// A fresh session: the client joins its room again.
    Fresh,
    /// Not known yet (ioscale tells in an event after the CONNECT).
    Pending,
}

impl Resume {
    pub fn new(mode: RecoveryMode) -> Self {
        Self {
            mode,
            session: None,
            offset: None,
        }
    }

    /// The CONNECT auth of a reconnection.
    pub fn auth(&self, cfg: &ClientConfig) -> Option<String> {
        let str_or_null =
            |v: &Option<String>| v.clone().map_or(serde_json::Value::Null, Into::into);
        match self.mode {
            RecoveryMode::Off => cfg.auth.clone(),
            RecoveryMode::Ioscale => {
                let ask = serde_json::json!({
                    "session": str_or_null(&self.session),
                    "offset": str_or_null(&self.offset),
                });
                Some(cfg.auth_with([("ioscale_recovery", ask)]))
            }
            // socket.io-client sends `pid` and `offset` only once it has a pid.
            RecoveryMode::Socketio if self.session.is_some() => Some(cfg.auth_with([
                ("pid", str_or_null(&self.session)),
                ("offset", str_or_null(&self.offset)),
            ])),
            RecoveryMode::Socketio => cfg.auth.clone(),
        }
    }

    /// Reads a (re)connection's CONNECT answer; `reconnect` is false for the first one.
    pub fn on_connect(&mut self, answer: &str, reconnect: bool) -> Verdict {
        match self.mode {
            RecoveryMode::Off => Verdict::Fresh,
            RecoveryMode::Ioscale => Verdict::Pending,
            RecoveryMode::Socketio => {
                // socket.io-client: recovered when the answer carries the pid it sent.
                let pid = serde_json::from_str::<serde_json::Value>(answer)
                    .ok()
                    .and_then(|v| v.get("pid")?.as_str().map(str::to_owned));
                let recovered = reconnect && pid.is_some() && pid == self.session;
                self.session = pid;
                if recovered {
                    Verdict::Recovered
                } else {
                    self.offset = None;
                    Verdict::Fresh
                }
            }
        }
    }

    /// Reads an event that is not a delivery: ioscale's verdict, if it is one.
    pub fn on_event(&mut self, data: &str) -> Option<Verdict> {
        if self.mode != RecoveryMode::Ioscale {
            return None;
        }
        let (name, body): (String, serde_json::Value) = serde_json::from_str(data).ok()?;
        if name != IOSCALE_VERDICT {
            return None;
        }
        if let Some(s) = body.get("session").and_then(|s| s.as_str()) {
            self.session = Some(s.to_owned());
        }
        if body.get("recovered") == Some(&serde_json::Value::Bool(true)) {
            Some(Verdict::Recovered)
        } else {
            // The offsets of the old session mean nothing in a fresh one.
            self.offset = None;
            Some(Verdict::Fresh)
        }
    }

    /// Remembers the offset a delivered event (`m`, its wire bytes) carries.
    pub fn note_offset(&mut self, m: &[u8]) {
        let found = match self.mode {
            RecoveryMode::Off => None,
            RecoveryMode::Ioscale => ioscale_offset(m),
            RecoveryMode::Socketio => socketio_offset(m),
        };
        if let Some(o) = found {
            self.offset = Some(o.to_owned());
        }
    }
}

/// `…,{"ioscale_offset":"<id>"}]`: the id.
fn ioscale_offset(m: &[u8]) -> Option<&str> {
    let body = m.strip_suffix(br#""}]"#)?;
    let start = body
        .windows(IOSCALE_OFFSET.len())
        .rposition(|w| w == IOSCALE_OFFSET)?
        + IOSCALE_OFFSET.len();
    plain_str(&body[start..])
}

/// `…},"<offset>"]`, socket.io's offset as the last argument after an object.
fn socketio_offset(m: &[u8]) -> Option<&str> {
    let body = m.strip_suffix(br#""]"#)?;
    let quote = body.iter().rposition(|&b| b == b'"')?;
    body[..quote].strip_suffix(b"},")?;
    plain_str(&body[quote + 1..])
}

/// `s` as text when it needs no JSON unescaping (offsets never do).
fn plain_str(s: &[u8]) -> Option<&str> {
    if s.is_empty() || s.iter().any(|&b| b == b'\\' || b == b'"') {
        return None;
    }
    std::str::from_utf8(s).ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::client::Protocol;

    fn cfg(mode: RecoveryMode) -> ClientConfig {
        ClientConfig::new(Protocol::Socketio, Duration::from_secs(1))
            .unwrap()
            .with_auth_token(Some("t"))
            .with_recovery(mode)
    }

    #[test]
    fn offsets_are_read_from_the_last_argument() {
        let io = br#"42/pubsub,["msg",{"room":"r","data":{"p":0}},{"ioscale_offset":"17-3"}]"#;
        assert_eq!(ioscale_offset(io), Some("17-3"));
        let sio = br#"42/pubsub,["msg",{"room":"r","data":{"p":0}},"1733-0"]"#;
        assert_eq!(socketio_offset(sio), Some("1733-0"));
        // Without an offset, or a string that is app data, nothing is taken.
        let plain = br#"42/pubsub,["msg",{"room":"r","data":{"p":0,"x":"xx"}}]"#;
        assert_eq!(
            (ioscale_offset(plain), socketio_offset(plain)),
            (None, None)
        );
        assert_eq!(socketio_offset(br#"42["a","b"]"#), None);
        assert_eq!(
            ioscale_offset(br#"42["a",{"ioscale_offset":"a\"b"}]"#),
            None
        );
    }

    #[test]
    fn ioscale_sessions_resume_with_their_token_and_offset() {
        let cfg = cfg(RecoveryMode::Ioscale);
        let mut r = Resume::new(RecoveryMode::Ioscale);
        assert_eq!(r.on_connect(r#"{"sid":"a"}"#, false), Verdict::Pending);
        let verdict = r#"["ioscale:recovery",{"recovered":false,"session":"tok","reason":"new"}]"#;
        assert_eq!(r.on_event(verdict), Some(Verdict::Fresh));
        assert_eq!(r.on_event(r#"["msg",{}]"#), None);
        r.note_offset(br#"42/pubsub,["msg",{"data":{}},{"ioscale_offset":"5-1"}]"#);
        let auth: serde_json::Value = serde_json::from_str(&r.auth(&cfg).unwrap()).unwrap();
        assert_eq!(auth["token"], "t");
        assert_eq!(auth["ioscale_recovery"]["session"], "tok");
        assert_eq!(auth["ioscale_recovery"]["offset"], "5-1");
        let back = r#"["ioscale:recovery",{"recovered":true,"session":"tok"}]"#;
        assert_eq!(r.on_event(back), Some(Verdict::Recovered));
        assert_eq!(r.offset.as_deref(), Some("5-1"));
        // A fresh session forgets the old offset.
        assert_eq!(r.on_event(verdict), Some(Verdict::Fresh));
        assert_eq!(r.offset, None);
    }

    #[test]
    fn socketio_sessions_are_recovered_when_the_pid_comes_back() {
        let cfg = cfg(RecoveryMode::Socketio);
        let mut r = Resume::new(RecoveryMode::Socketio);
        assert_eq!(r.auth(&cfg).as_deref(), Some(r#"{"token":"t"}"#));
        assert_eq!(
            r.on_connect(r#"{"sid":"a","pid":"p1"}"#, false),
            Verdict::Fresh
        );
        r.note_offset(br#"42/pubsub,["msg",{"data":{}},"9-0"]"#);
        let auth: serde_json::Value = serde_json::from_str(&r.auth(&cfg).unwrap()).unwrap();
        assert_eq!(
            (&auth["pid"], &auth["offset"]),
            (&"p1".into(), &"9-0".into())
        );
        assert_eq!(
            r.on_connect(r#"{"sid":"b","pid":"p1"}"#, true),
            Verdict::Recovered
        );
        assert_eq!(
            r.on_connect(r#"{"sid":"c","pid":"p2"}"#, true),
            Verdict::Fresh
        );
        assert_eq!(
            (r.session.as_deref(), r.offset.as_deref()),
            (Some("p2"), None)
        );
        // Off: nothing is remembered, every reconnection is fresh.
        let mut off = Resume::new(RecoveryMode::Off);
        assert_eq!(
            off.on_connect(r#"{"sid":"a","pid":"p"}"#, true),
            Verdict::Fresh
        );
        assert_eq!(off.on_event(r#"["ioscale:recovery",{}]"#), None);
    }
}
