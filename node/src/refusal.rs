//! What a refused socket request is told, in every namespace: `{ok: false, code, error}`, plus
//! `request_id` when the cause is internal. The code is stable, for clients to branch on; the
//! text is for people; an internal cause goes to the log under the request id, never to the
//! client.

use std::fmt;

use serde_json::{Map, Value};

use crate::rooms::RoomError;

/// A stable reason code (documented in README's "Errors").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The request is malformed or a value is invalid.
    BadRequest,
    /// The request names something the client may not use (another socket's room).
    Forbidden,
    /// What the request names does not exist.
    NotFound,
    /// A value is over its size bound.
    TooLarge,
    /// The request conflicts with the state (a limit reached, a record changed meanwhile).
    Conflict,
    /// The client has too much waiting already; retry once its earlier requests are answered.
    Busy,
    /// The cluster or its storage cannot answer now; retry later.
    Unavailable,
    /// The node failed; the log has the cause under the answer's request id.
    Internal,
}

impl Code {
    /// The code's text.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BadRequest => "bad_request",
            Code::Forbidden => "forbidden",
            Code::NotFound => "not_found",
            Code::TooLarge => "too_large",
            Code::Conflict => "conflict",
            Code::Busy => "busy",
            Code::Unavailable => "unavailable",
            Code::Internal => "internal",
        }
    }

    /// The code of an HTTP-like status (the CRUD dialects answer with one).
    pub fn from_status(status: u16) -> Self {
        match status {
            403 => Code::Forbidden,
            404 => Code::NotFound,
            409 => Code::Conflict,
            413 => Code::TooLarge,
            429 => Code::Busy,
            503 => Code::Unavailable,
            400..=499 => Code::BadRequest,
            _ => Code::Internal,
        }
    }
}

/// A fresh id tying an answer to its log line.
pub fn new_request_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A refusal, as the client will be told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The reason code.
    pub code: Code,
    /// What the client is told.
    pub error: String,
    /// Set when the cause is internal: the log line that has it carries the same id.
    pub request_id: Option<String>,
}

impl Refused {
    /// A refusal whose reason the client may know in full.
    pub fn new(code: Code, error: impl Into<String>) -> Self {
        Self {
            code,
            error: error.into(),
            request_id: None,
        }
    }

    /// A refusal with an internal `cause`: logged (with `what` was asked) under a new request
    /// id; the client gets `public`, the code and the id.
    pub fn internal(code: Code, public: &str, what: &str, cause: &dyn fmt::Display) -> Self {
        let id = new_request_id();
        tracing::warn!(what, error = %cause, request_id = %id, "request failed");
        Self {
            code,
            error: public.to_owned(),
            request_id: Some(id),
        }
    }

    /// `{ok: false, code, error, request_id?}`.
    pub fn to_json(&self) -> Value {
        self.to_json_with([])
    }

    /// [`Refused::to_json`] with a dialect's own `extra` fields first (`event`, `status`, …).
    pub fn to_json_with<const N: usize>(&self, extra: [(&str, Value); N]) -> Value {
        let mut m = Map::new();
        for (k, v) in extra {
            m.insert(k.to_owned(), v);
        }
        m.insert("ok".into(), false.into());
        m.insert("code".into(), self.code.as_str().into());
        m.insert("error".into(), self.error.clone().into());
        if let Some(id) = &self.request_id {
            m.insert("request_id".into(), id.clone().into());
        }
        Value::Object(m)
    }
}

/// Bad input, told as it is.
impl From<String> for Refused {
    fn from(error: String) -> Self {
        Self::new(Code::BadRequest, error)
    }
}

impl From<RoomError> for Refused {
    fn from(e: RoomError) -> Self {
        let code = match e {
            RoomError::Length => Code::BadRequest,
            RoomError::Reserved | RoomError::NotPermitted => Code::Forbidden,
        };
        Self::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_refusal_says_ok_false_with_its_code() {
        assert_eq!(
            Refused::new(Code::Busy, "later").to_json(),
            json!({"ok": false, "code": "busy", "error": "later"})
        );
        let r = Refused::from(RoomError::Reserved).to_json_with([("event", json!("join"))]);
        assert_eq!(r["code"], "forbidden");
        assert_eq!(r["event"], "join");
    }

    #[test]
    fn an_internal_cause_stays_in_the_log() {
        let r = Refused::internal(Code::Unavailable, "retry later", "test", &"redis: secret");
        let v = r.to_json();
        assert_eq!(v["error"], "retry later");
        assert!(!v.to_string().contains("secret"));
        assert_eq!(v["request_id"].as_str().map(str::len), Some(16));
    }

    #[test]
    fn statuses_map_to_codes() {
        assert_eq!(Code::from_status(404), Code::NotFound);
        assert_eq!(Code::from_status(400), Code::BadRequest);
        assert_eq!(Code::from_status(503), Code::Unavailable);
        assert_eq!(Code::from_status(500), Code::Internal);
    }
}
