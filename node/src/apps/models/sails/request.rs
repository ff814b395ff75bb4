//! Sails 0.9's virtual requests: the `{url, data}` payload parsed into a route of the
//! blueprint API (find, findOne, create, update, destroy), with its query and parameters.

use super::*;

/// What a request asks for.
#[derive(Debug, PartialEq)]
pub(super) enum Route {
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
    pub(super) fn metric(&self) -> &'static str {
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
pub(super) fn percent_decode(s: &str) -> String {
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

pub(super) fn parse_query(q: &str) -> Record {
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
pub(super) fn parse_request(
    payload: Result<Value, String>,
) -> (Form, Result<(String, Record), Failure>) {
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

pub(super) fn usize_param(params: &Record, name: &str) -> Result<Option<usize>, Failure> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => parse_id(v)
            .ok()
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| bad_request(format!("{name} must be a non-negative integer"))),
    }
}

pub(super) fn id_param(params: &Record, method: Method) -> Result<u64, Failure> {
    match params.get("id") {
        Some(v) => parse_id(v).map_err(Failure::from),
        None => Err(bad_request(format!(
            "{} needs an id: /:model/:id",
            method.as_str()
        ))),
    }
}

pub(super) fn values(mut params: Record) -> Record {
    params.remove("id");
    params
}

pub(super) fn find_route(collection: &str, mut params: Record) -> Result<Route, Failure> {
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
pub(super) fn route(method: Method, url: &str, data: Record) -> Result<Route, Failure> {
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
