//! The Sails 0.9 dialect (seed "Sails.js 0.9 sockets / pubsub"): virtual HTTP requests over
//! the socket, `get` / `post` / `put` / `delete`, answered through the ack.
//!
//! Two request forms, told apart by the payload's type:
//!
//! - sails.io.js 0.9: the payload is the JSON *text* of `{url, data}`, and the client
//!   `JSON.parse`s the ack's first argument. The ack is `(JSON text of the body, status)`.
//! - an object `{url, data}` (also what sails.io.js 0.10+ sends, with `method` and `headers`):
//!   the ack is `{body, statusCode, headers}`, sails.io.js 0.10's "JWR".
//!
//! Errors have the body `{status, ok: false, error}` with a 4xx/5xx status (never a bare number:
//! sails.io.js 0.9 throws inside the client's callback on one).
//!
//! Routes: the `/echo` controller of the seed (`{success: true, message}`), and the CRUD
//! blueprints `/:model` (GET: list, filtered by the other parameters, `where`, `limit`, `skip`;
//! POST: create), `/:model/:id` (GET, PUT: update, DELETE: destroy), and the 0.9 shortcuts
//! `/:model/create`, `/:model/find/:id?`, `/:model/update/:id?`, `/:model/destroy/:id?` (with
//! any verb). Parameters are the URL's query string overlaid by `data`.
//!
//! Pub/sub as the seed describes it: listing a model subscribes the socket to its class room
//! and to the instance room of every listed record; reading one record (or creating it)
//! subscribes to its instance room; every create / update / destroy is published as `message
//! {model, verb, id, data?}` on every node, leaving out the requester (see `super::publish`).

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fuzz;
mod request;

use self::request::*;
use std::sync::Arc;

use serde_json::{Value, json};
use socketioxide::{SocketIo, extract::SocketRef};

use super::{
    ModelError, Models, Record, UpdateMode, emit_error,
    record::{parse_id, parse_id_str},
    sails_class_room, sails_instance_room,
};
use crate::{
    app::Adapter,
    joins,
    refusal::{Code, Refused},
    sockets::Reply,
};

/// Longest URL accepted.
pub const MAX_URL_CHARS: usize = 2048;

/// The virtual request's verb (the event name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `get`
    Get,
    /// `post`
    Post,
    /// `put`
    Put,
    /// `delete`
    Delete,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }

    fn event(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Post => "post",
            Method::Put => "put",
            Method::Delete => "delete",
        }
    }
}

/// How the client sent the request, hence how it reads the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// JSON text in, `(JSON text, status)` out.
    V09,
    /// Object in, `{body, statusCode, headers}` out.
    Object,
}

/// A failed request: status and message.
#[derive(Debug)]
struct Failure {
    status: u16,
    refused: Refused,
    model: Option<ModelError>,
}

impl From<ModelError> for Failure {
    fn from(e: ModelError) -> Self {
        Failure {
            status: e.status(),
            refused: e.refused(),
            model: Some(e),
        }
    }
}

fn bad_request(error: impl Into<String>) -> Failure {
    Failure {
        status: 400,
        refused: Refused::new(Code::BadRequest, error),
        model: None,
    }
}

fn no_route(method: Method, path: &str) -> Failure {
    Failure {
        status: 404,
        refused: Refused::new(
            Code::NotFound,
            format!("no route for {} {path}", method.as_str()),
        ),
        model: None,
    }
}

/// Runs a routed request: the answer body.
async fn run(
    route: Route,
    params_message: Option<Value>,
    s: &SocketRef<Adapter>,
    io: &SocketIo<Adapter>,
    models: &Models,
) -> Result<Value, ModelError> {
    match route {
        Route::Echo => {
            let mut body = json!({"success": true});
            if let Some(m) = params_message {
                body["message"] = m;
            }
            Ok(body)
        }
        Route::Find {
            collection,
            filter,
            limit,
            skip,
        } => {
            let records = models.store.find(&collection, &filter).await?;
            let records: Vec<Record> = records
                .into_iter()
                .skip(skip)
                .take(limit.unwrap_or(usize::MAX))
                .collect();
            // Sails' blueprint: the lister follows creates (class room) and the listed
            // instances.
            let mut rooms = vec![sails_class_room(&collection)];
            rooms.extend(records.iter().filter_map(|r| {
                r.get("id")
                    .and_then(Value::as_u64)
                    .map(|id| sails_instance_room(&collection, id))
            }));
            joins::join(s, &models.cluster, rooms).await;
            Ok(Value::Array(
                records.into_iter().map(Value::Object).collect(),
            ))
        }
        Route::FindOne { collection, id } => {
            let r = models.store.get(&collection, id).await?;
            joins::join(s, &models.cluster, sails_instance_room(&collection, id)).await;
            Ok(Value::Object(r))
        }
        Route::Create { collection, values } => {
            let r = models.insert(io, s, &collection, values).await?;
            if let Some(id) = r.get("id").and_then(Value::as_u64) {
                joins::join(s, &models.cluster, sails_instance_room(&collection, id)).await;
            }
            Ok(Value::Object(r))
        }
        Route::Update {
            collection,
            id,
            values,
        } => Ok(Value::Object(
            models
                .update(io, s, &collection, id, values, UpdateMode::Merge)
                .await?,
        )),
        Route::Destroy { collection, id } => {
            Ok(Value::Object(models.remove(io, s, &collection, id).await?))
        }
    }
}

fn answer(ack: Reply, form: Form, status: u16, body: &Value) {
    match form {
        Form::V09 => ack.ack_with(&(body.to_string(), status)),
        Form::Object => ack.ack_with(&json!({"body": body, "statusCode": status, "headers": {}})),
    }
}

/// Serves one virtual request (also reached from the shared `delete` handler).
pub async fn handle(
    method: Method,
    s: SocketRef<Adapter>,
    io: SocketIo<Adapter>,
    payload: Result<Value, String>,
    ack: Reply,
    models: Arc<Models>,
) {
    let (form, parsed) = parse_request(payload);
    let routed = parsed.and_then(|(url, data)| {
        let message = data.get("message").cloned();
        let (_, query) = url.split_once('?').unwrap_or((&url, ""));
        let message = message.or_else(|| parse_query(query).remove("message"));
        let r = route(method, &url, data)?;
        match &r {
            Route::Echo => {}
            Route::Find { collection, .. }
            | Route::FindOne { collection, .. }
            | Route::Create { collection, .. }
            | Route::Update { collection, .. }
            | Route::Destroy { collection, .. } => models.store.check_collection(collection)?,
        }
        Ok((r, message))
    });
    let result = match routed {
        Ok((route, message)) => {
            let op = route.metric();
            let r = run(route, message, &s, &io, &models).await;
            models.count("sails", op, &r);
            r.map_err(Failure::from)
        }
        Err(f) => {
            match &f.model {
                Some(e) => models.count_error("sails", "invalid", e),
                None => models.count_error("sails", "invalid", &ModelError::Invalid(String::new())),
            }
            Err(f)
        }
    };
    match result {
        Ok(body) => answer(ack, form, 200, &body),
        Err(f) if ack.has_ack() => answer(
            ack,
            form,
            f.status,
            &f.refused.to_json_with([("status", f.status.into())]),
        ),
        Err(f) => emit_error(&s, method.event(), f.status, &f.refused),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(v: Value) -> Record {
        match v {
            Value::Object(m) => m,
            _ => Record::new(),
        }
    }

    #[test]
    fn routes() {
        let r = |m, u: &str, d: Value| route(m, u, rec(d));
        assert_eq!(r(Method::Get, "/echo", json!({})).unwrap(), Route::Echo);
        assert_eq!(
            r(Method::Get, "/user/3", json!({})).unwrap(),
            Route::FindOne {
                collection: "user".into(),
                id: 3
            }
        );
        assert_eq!(
            r(Method::Get, "/user?name=a%20b&limit=2", json!({"skip": 1})).unwrap(),
            Route::Find {
                collection: "user".into(),
                filter: rec(json!({"name": "a b"})),
                limit: Some(2),
                skip: 1
            }
        );
        assert_eq!(
            r(Method::Post, "/user", json!({"name": "x", "id": 9})).unwrap(),
            Route::Create {
                collection: "user".into(),
                values: rec(json!({"name": "x"}))
            }
        );
        assert_eq!(
            r(Method::Put, "/user/1", json!({"name": "y"})).unwrap(),
            Route::Update {
                collection: "user".into(),
                id: 1,
                values: rec(json!({"name": "y"}))
            }
        );
        assert_eq!(
            r(Method::Get, "/user/destroy/4", json!({})).unwrap(),
            Route::Destroy {
                collection: "user".into(),
                id: 4
            }
        );
        assert_eq!(
            r(Method::Get, "/user/create?name=z", json!({})).unwrap(),
            Route::Create {
                collection: "user".into(),
                values: rec(json!({"name": "z"}))
            }
        );
        assert_eq!(
            r(Method::Get, "/a/b/c/d", json!({})).unwrap_err().status,
            404
        );
        assert_eq!(
            r(Method::Post, "/user/1", json!({})).unwrap_err().status,
            404
        );
        assert_eq!(
            r(Method::Get, "/user/abc", json!({})).unwrap_err().status,
            404
        );
        assert_eq!(r(Method::Put, "/user", json!({})).unwrap_err().status, 400);
        assert_eq!(
            r(Method::Get, "/user?limit=x", json!({}))
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            r(Method::Get, "/user", json!({"where": "{\"a\": 1}"})).unwrap(),
            Route::Find {
                collection: "user".into(),
                filter: rec(json!({"a": 1})),
                limit: None,
                skip: 0
            }
        );
    }

    #[test]
    fn request_forms() {
        let (f, r) = parse_request(Ok(json!(
            "{\"url\": \"/echo\", \"data\": {\"message\": \"hi\"}}"
        )));
        assert_eq!(f, Form::V09);
        let (url, data) = r.unwrap();
        assert_eq!(url, "/echo");
        assert_eq!(data["message"], json!("hi"));
        let (f, r) = parse_request(Ok(json!({"url": "/user", "method": "get"})));
        assert_eq!(f, Form::Object);
        assert!(r.is_ok());
        assert_eq!(
            parse_request(Ok(json!("{not json"))).1.unwrap_err().status,
            400
        );
        assert_eq!(parse_request(Ok(json!(5))).1.unwrap_err().status, 400);
        assert_eq!(
            parse_request(Ok(json!({"url": 5}))).1.unwrap_err().status,
            400
        );
        assert_eq!(
            parse_request(Ok(json!({"url": "/x", "data": [1]})))
                .1
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn query_decoding() {
        assert_eq!(percent_decode("a+b%21%zz%"), "a b!%zz%");
        assert_eq!(parse_query("a=1&b&=x&c=%E2%9C%93")["c"], json!("✓"));
    }
}
