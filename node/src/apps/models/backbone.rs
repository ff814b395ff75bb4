//! The Backbone.sync dialect (seed "Backbone.js and socket.io"): events `create`, `read`,
//! `update`, `delete` carrying `{signature: {endPoint, ctx?}, item?}`. The answer is emitted to
//! the requesting socket as `<op>:<endPoint>[:<ctx>]`, the event the seed's `Backbone.sync`
//! waits for with `socket.once` (and through the ack too, when the client sent one).
//!
//! `endPoint` is `<collection>` or `<collection>/<id>` (a leading `/` is allowed), as the seed
//! builds it from `model.url` and `model.id`. `create` answers the stored record (its `id` is
//! what the seed's client reads), `read` an array (collection) or a record, `update` (which
//! replaces the attributes: Backbone sends them all) and `delete` `{success: true}`. Errors
//! answer `{success: false, ok: false, error, status}` on the same event, or `model-error` when
//! no reply event can be built from the payload.

use std::sync::Arc;

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fuzz;

use serde_json::{Value, json};
use socketioxide::{SocketIo, extract::SocketRef};

use super::{
    ModelError, Models, Record, UpdateMode, collection_room, emit_error,
    record::{parse_id, parse_id_str},
    record_room,
};
use crate::{app::Adapter, joins, refusal::Refused, sockets::Reply};

/// Longest `endPoint` or `ctx` accepted.
pub const MAX_SIGNATURE_CHARS: usize = 512;

/// A Backbone.sync method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `create`
    Create,
    /// `read`
    Read,
    /// `update`
    Update,
    /// `delete`
    Delete,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Read => "read",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }
}

/// A request, parsed.
struct Request {
    reply_event: String,
    collection: String,
    id: Option<u64>,
    item: Option<Value>,
}

/// The `ctx` as the seed's client appends it: only when truthy, as JavaScript text.
fn ctx_text(ctx: Option<&Value>) -> Result<Option<String>, ModelError> {
    let text = match ctx {
        None | Some(Value::Null) | Some(Value::Bool(false)) => return Ok(None),
        Some(Value::String(s)) if s.is_empty() => return Ok(None),
        Some(Value::Number(n)) if n.as_f64() == Some(0.0) => return Ok(None),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(true)) => "true".to_owned(),
        Some(_) => {
            return Err(ModelError::Invalid(
                "signature.ctx must be a string or a number".into(),
            ));
        }
    };
    if text.chars().count() > MAX_SIGNATURE_CHARS {
        return Err(ModelError::Invalid(format!(
            "signature.ctx is longer than {MAX_SIGNATURE_CHARS} characters"
        )));
    }
    Ok(Some(text))
}

/// Parses the payload. On error, the reply event when it could be built.
fn parse(op: Op, data: Result<Value, String>) -> Result<Request, (Option<String>, ModelError)> {
    let invalid = |m: String| (None, ModelError::Invalid(m));
    let usage = format!(
        "{} expects {{signature: {{endPoint, ctx?}}, item?}}",
        op.as_str()
    );
    let data = data.map_err(|e| invalid(format!("{usage}: {e}")))?;
    let Value::Object(mut data) = data else {
        return Err(invalid(usage));
    };
    let Some(Value::Object(sig)) = data.remove("signature") else {
        return Err(invalid(usage));
    };
    let end_point = match sig.get("endPoint") {
        Some(Value::String(e)) if !e.is_empty() && e.chars().count() <= MAX_SIGNATURE_CHARS => {
            e.clone()
        }
        _ => {
            return Err(invalid(format!(
                "signature.endPoint must be a string of 1-{MAX_SIGNATURE_CHARS} characters"
            )));
        }
    };
    let ctx = ctx_text(sig.get("ctx")).map_err(|e| (None, e))?;
    let mut reply_event = format!("{}:{end_point}", op.as_str());
    if let Some(ctx) = ctx {
        reply_event.push(':');
        reply_event.push_str(&ctx);
    }
    let segments: Vec<&str> = end_point
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let bad_end_point = || {
        ModelError::Invalid(format!(
            "signature.endPoint must be <collection> or <collection>/<id>, got {end_point:?}"
        ))
    };
    let (collection, id) = match segments.as_slice() {
        [c] => ((*c).to_owned(), None),
        [c, id] => match parse_id_str(id) {
            Some(id) => ((*c).to_owned(), Some(id)),
            None => return Err((Some(reply_event), bad_end_point())),
        },
        _ => return Err((Some(reply_event), bad_end_point())),
    };
    Ok(Request {
        reply_event,
        collection,
        id,
        item: data.remove("item"),
    })
}

fn item_object(item: Option<&Value>, op: Op) -> Result<Record, ModelError> {
    match item {
        Some(Value::Object(o)) => Ok(o.clone()),
        _ => Err(ModelError::Invalid(format!(
            "{} expects item: object (the model's attributes)",
            op.as_str()
        ))),
    }
}

/// The id of an update or delete: from the end point, else from the item.
fn target_id(r: &Request, op: Op) -> Result<u64, ModelError> {
    if let Some(id) = r.id {
        return Ok(id);
    }
    match r.item.as_ref().and_then(|i| i.get("id")) {
        Some(v) => parse_id(v),
        None => Err(ModelError::Invalid(format!(
            "{} needs an id: <collection>/<id> as endPoint",
            op.as_str()
        ))),
    }
}

async fn run(
    op: Op,
    r: &Request,
    s: &SocketRef<Adapter>,
    io: &SocketIo<Adapter>,
    models: &Models,
) -> Result<Value, ModelError> {
    let c = r.collection.as_str();
    match op {
        Op::Create => {
            let item = item_object(r.item.as_ref(), op)?;
            Ok(Value::Object(models.insert(io, s, c, item).await?))
        }
        Op::Read => match r.id {
            None => {
                let records = models.store.find(c, &Record::new()).await?;
                joins::join(s, &models.cluster, collection_room(c)).await;
                Ok(Value::Array(
                    records.into_iter().map(Value::Object).collect(),
                ))
            }
            Some(id) => {
                let record = models.store.get(c, id).await?;
                joins::join(s, &models.cluster, record_room(c, id)).await;
                Ok(Value::Object(record))
            }
        },
        Op::Update => {
            let id = target_id(r, op)?;
            let item = item_object(r.item.as_ref(), op)?;
            models
                .update(io, s, c, id, item, UpdateMode::Replace)
                .await?;
            Ok(json!({"success": true}))
        }
        Op::Delete => {
            let id = target_id(r, op)?;
            models.remove(io, s, c, id).await?;
            Ok(json!({"success": true}))
        }
    }
}

fn metric(op: Op) -> &'static str {
    match op {
        Op::Create => "insert",
        Op::Read => "find",
        Op::Update => "update",
        Op::Delete => "remove",
    }
}

/// Serves one Backbone.sync request (also reached from the shared `delete` handler).
pub async fn handle(
    op: Op,
    s: SocketRef<Adapter>,
    io: SocketIo<Adapter>,
    data: Result<Value, String>,
    ack: Reply,
    models: Arc<Models>,
) {
    let req = match parse(op, data) {
        Ok(r) => r,
        Err((reply_event, e)) => {
            models.count_error("backbone", metric(op), &e);
            let refused = e.refused();
            let body = error_body(&e, &refused);
            match reply_event {
                Some(ev) => {
                    let _ = s.emit(ev, &body);
                }
                None => emit_error(&s, op.as_str(), e.status(), &refused),
            }
            ack.ack_with(&body);
            return;
        }
    };
    let r = run(op, &req, &s, &io, &models).await;
    models.count("backbone", metric(op), &r);
    let body = match r {
        Ok(body) => body,
        Err(e) => error_body(&e, &e.refused()),
    };
    let _ = s.emit(req.reply_event, &body);
    ack.ack_with(&body);
}

/// The seed's `{success: false}`, with the `ok: false` every refusal of the node carries.
fn error_body(e: &ModelError, r: &Refused) -> Value {
    r.to_json_with([("success", false.into()), ("status", e.status().into())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_events_follow_the_seed() {
        let r = parse(Op::Read, Ok(json!({"signature": {"endPoint": "todos"}})))
            .ok()
            .unwrap();
        assert_eq!(r.reply_event, "read:todos");
        assert_eq!((r.collection.as_str(), r.id), ("todos", None));
        let r = parse(
            Op::Update,
            Ok(json!({"signature": {"endPoint": "/todos/7", "ctx": "main"}, "item": {}})),
        )
        .ok()
        .unwrap();
        assert_eq!(r.reply_event, "update:/todos/7:main");
        assert_eq!((r.collection.as_str(), r.id), ("todos", Some(7)));
        let r = parse(
            Op::Read,
            Ok(json!({"signature": {"endPoint": "a", "ctx": ""}})),
        )
        .ok()
        .unwrap();
        assert_eq!(r.reply_event, "read:a");
    }

    #[test]
    fn malformed_signatures() {
        for bad in [
            json!(null),
            json!("x"),
            json!({}),
            json!({"signature": "todos"}),
            json!({"signature": {"endPoint": 5}}),
            json!({"signature": {"endPoint": ""}}),
            json!({"signature": {"endPoint": "t", "ctx": {}}}),
        ] {
            assert!(matches!(parse(Op::Read, Ok(bad)), Err((None, _))));
        }
        // The reply event is known: the error goes there.
        let e = parse(Op::Read, Ok(json!({"signature": {"endPoint": "a/b/c"}})));
        assert!(matches!(e, Err((Some(ev), _)) if ev == "read:a/b/c"));
        let e = parse(Op::Read, Ok(json!({"signature": {"endPoint": "a/x"}})));
        assert!(matches!(e, Err((Some(_), _))));
    }
}
