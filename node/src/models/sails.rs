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

use std::sync::Arc;

use serde_json::{Value, json};
use socketioxide::{
    SocketIo,
    extract::{SocketRef, State, TryData},
};

use super::{
    Ack, ModelError, Models, Record, UpdateMode, emit_error, sails_class_room, sails_instance_room,
    store::{parse_id, parse_id_str},
};
use crate::app::{Adapter, App};

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
    error: String,
    model: Option<ModelError>,
}

impl From<ModelError> for Failure {
    fn from(e: ModelError) -> Self {
        Failure {
            status: e.status(),
            error: e.client_message(),
            model: Some(e),
        }
    }
}

fn bad_request(error: impl Into<String>) -> Failure {
    Failure {
        status: 400,
        error: error.into(),
        model: None,
    }
}

fn no_route(method: Method, path: &str) -> Failure {
    Failure {
        status: 404,
        error: format!("no route for {} {path}", method.as_str()),
        model: None,
    }
}

/// What a request asks for.
#[derive(Debug, PartialEq)]
enum Route {
    Echo,
    Find {
        collection: String,
        filter: Record,
        limit: Option<usize>,
        skip: usize,
    },
    FindOne {
        collection: String,
        id: u64,
    },
    Create {
        collection: String,
        values: Record,
    },
    Update {
        collection: String,
        id: u64,
        values: Record,
    },
    Destroy {
        collection: String,
        id: u64,
    },
}

impl Route {
    fn metric(&self) -> &'static str {
        match self {
            Route::Echo => "echo",
            Route::Find { .. } => "find",
            Route::FindOne { .. } => "find_one",
            Route::Create { .. } => "insert",
            Route::Update { .. } => "update",
            Route::Destroy { .. } => "remove",
        }
    }
}

/// `%XX` and `+` decoding of a query-string component; invalid escapes stay as they are.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: &str) -> Record {
    let mut out = Record::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k);
        if !k.is_empty() {
            out.insert(k, Value::String(percent_decode(v)));
        }
    }
    out
}

/// Reads the payload: its form, and the URL and parameters.
fn parse_request(payload: Result<Value, String>) -> (Form, Result<(String, Record), Failure>) {
    let usage = "a request is {url, data?} or its JSON text";
    let (form, value) = match payload {
        Ok(Value::String(text)) => match serde_json::from_str::<Value>(&text) {
            Ok(v) => (Form::V09, v),
            Err(e) => {
                return (
                    Form::V09,
                    Err(bad_request(format!(
                        "request is not valid JSON ({e}); {usage}"
                    ))),
                );
            }
        },
        Ok(v) => (Form::Object, v),
        Err(e) => return (Form::Object, Err(bad_request(format!("{usage}: {e}")))),
    };
    let Value::Object(mut req) = value else {
        return (form, Err(bad_request(usage)));
    };
    let url = match req.remove("url") {
        Some(Value::String(u)) if !u.trim().is_empty() && u.chars().count() <= MAX_URL_CHARS => u,
        _ => {
            return (
                form,
                Err(bad_request(format!(
                    "url must be a string of 1-{MAX_URL_CHARS} characters"
                ))),
            );
        }
    };
    let data = match req.remove("data") {
        None | Some(Value::Null) => Record::new(),
        Some(Value::Object(d)) => d,
        Some(_) => return (form, Err(bad_request("data must be an object"))),
    };
    (form, Ok((url, data)))
}

fn usize_param(params: &Record, name: &str) -> Result<Option<usize>, Failure> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => parse_id(v)
            .ok()
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| bad_request(format!("{name} must be a non-negative integer"))),
    }
}

fn id_param(params: &Record, method: Method) -> Result<u64, Failure> {
    match params.get("id") {
        Some(v) => parse_id(v).map_err(Failure::from),
        None => Err(bad_request(format!(
            "{} needs an id: /:model/:id",
            method.as_str()
        ))),
    }
}

fn values(mut params: Record) -> Record {
    params.remove("id");
    params
}

fn find_route(collection: &str, mut params: Record) -> Result<Route, Failure> {
    if let Some(id) = params.get("id") {
        return Ok(Route::FindOne {
            collection: collection.to_owned(),
            id: parse_id(id)?,
        });
    }
    let limit = usize_param(&params, "limit")?;
    let skip = usize_param(&params, "skip")?.unwrap_or(0);
    let where_ = params.remove("where");
    for reserved in ["limit", "skip", "sort"] {
        params.remove(reserved);
    }
    let mut filter = params;
    match where_ {
        None | Some(Value::Null) => {}
        Some(Value::Object(w)) => filter.extend(w),
        Some(Value::String(text)) => match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(w)) => filter.extend(w),
            _ => return Err(bad_request("where must be an object or its JSON text")),
        },
        Some(_) => return Err(bad_request("where must be an object or its JSON text")),
    }
    Ok(Route::Find {
        collection: collection.to_owned(),
        filter,
        limit,
        skip,
    })
}

/// Maps a request to a route (the collection is not checked here).
fn route(method: Method, url: &str, data: Record) -> Result<Route, Failure> {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let mut params = parse_query(query);
    params.extend(data);
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let id_of = |s: &str| parse_id_str(s).ok_or_else(|| no_route(method, path));
    let c = |m: &str| m.to_owned();
    Ok(match segments.as_slice() {
        ["echo"] | ["echo", "index"] => Route::Echo,
        [m] => match method {
            Method::Get => find_route(m, params)?,
            Method::Post => Route::Create {
                collection: c(m),
                values: values(params),
            },
            Method::Put => Route::Update {
                collection: c(m),
                id: id_param(&params, method)?,
                values: values(params),
            },
            Method::Delete => Route::Destroy {
                collection: c(m),
                id: id_param(&params, method)?,
            },
        },
        [m, "create"] => Route::Create {
            collection: c(m),
            values: values(params),
        },
        [m, "find"] => find_route(m, params)?,
        [m, "find", id] => Route::FindOne {
            collection: c(m),
            id: id_of(id)?,
        },
        [m, "update"] => Route::Update {
            collection: c(m),
            id: id_param(&params, method)?,
            values: values(params),
        },
        [m, "update", id] => Route::Update {
            collection: c(m),
            id: id_of(id)?,
            values: values(params),
        },
        [m, "destroy"] => Route::Destroy {
            collection: c(m),
            id: id_param(&params, method)?,
        },
        [m, "destroy", id] => Route::Destroy {
            collection: c(m),
            id: id_of(id)?,
        },
        [m, id] => {
            let id = id_of(id)?;
            match method {
                Method::Get => Route::FindOne {
                    collection: c(m),
                    id,
                },
                Method::Put => Route::Update {
                    collection: c(m),
                    id,
                    values: values(params),
                },
                Method::Delete => Route::Destroy {
                    collection: c(m),
                    id,
                },
                Method::Post => return Err(no_route(method, path)),
            }
        }
        _ => return Err(no_route(method, path)),
    })
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
            s.join(rooms);
            Ok(Value::Array(
                records.into_iter().map(Value::Object).collect(),
            ))
        }
        Route::FindOne { collection, id } => {
            let r = models.store.get(&collection, id).await?;
            s.join(sails_instance_room(&collection, id));
            Ok(Value::Object(r))
        }
        Route::Create { collection, values } => {
            let r = models.insert(io, s.id, &collection, values).await?;
            if let Some(id) = r.get("id").and_then(Value::as_u64) {
                s.join(sails_instance_room(&collection, id));
            }
            Ok(Value::Object(r))
        }
        Route::Update {
            collection,
            id,
            values,
        } => Ok(Value::Object(
            models
                .update(io, s.id, &collection, id, values, UpdateMode::Merge)
                .await?,
        )),
        Route::Destroy { collection, id } => Ok(Value::Object(
            models.remove(io, s.id, &collection, id).await?,
        )),
    }
}

fn answer(ack: Ack, form: Form, status: u16, body: &Value) {
    match form {
        Form::V09 => ack.send(&(body.to_string(), status)),
        Form::Object => ack.send(&json!({"body": body, "statusCode": status, "headers": {}})),
    }
}

/// `get` event.
pub async fn get(
    s: SocketRef<Adapter>,
    io: SocketIo<Adapter>,
    TryData(data): TryData<Value>,
    ack: Ack,
    State(models): State<Arc<Models>>,
    State(app): State<Arc<App>>,
) {
    handle(
        Method::Get,
        s,
        io,
        data.map_err(|e| e.to_string()),
        ack,
        models,
        app,
    )
    .await;
}

/// `post` event.
pub async fn post(
    s: SocketRef<Adapter>,
    io: SocketIo<Adapter>,
    TryData(data): TryData<Value>,
    ack: Ack,
    State(models): State<Arc<Models>>,
    State(app): State<Arc<App>>,
) {
    handle(
        Method::Post,
        s,
        io,
        data.map_err(|e| e.to_string()),
        ack,
        models,
        app,
    )
    .await;
}

/// `put` event.
pub async fn put(
    s: SocketRef<Adapter>,
    io: SocketIo<Adapter>,
    TryData(data): TryData<Value>,
    ack: Ack,
    State(models): State<Arc<Models>>,
    State(app): State<Arc<App>>,
) {
    handle(
        Method::Put,
        s,
        io,
        data.map_err(|e| e.to_string()),
        ack,
        models,
        app,
    )
    .await;
}

/// Serves one virtual request (also reached from the shared `delete` handler).
pub async fn handle(
    method: Method,
    s: SocketRef<Adapter>,
    io: SocketIo<Adapter>,
    payload: Result<Value, String>,
    ack: Ack,
    models: Arc<Models>,
    app: Arc<App>,
) {
    app.metrics
        .events
        .with_label_values(&[super::NAMESPACE])
        .inc();
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
        Err(f) if ack.present() => answer(
            ack,
            form,
            f.status,
            &json!({"status": f.status, "ok": false, "error": f.error}),
        ),
        Err(f) => {
            let e = f
                .model
                .unwrap_or_else(|| ModelError::Invalid(f.error.clone()));
            emit_error(&s, method.event(), &e);
        }
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
