//! Fuzz target of Sails 0.9 virtual requests: payloads (objects and their JSON text) with
//! URLs and parameters, routed for every verb; query-string decoding round-trips.

use proptest::{prelude::*, test_runner::TestCaseError};
use serde_json::Value;

use super::{MAX_URL_CHARS, Method, request::*};
use crate::fuzzing::support::{Target, json, keyed_object, run};

/// Sails requests.
pub(crate) const TARGET: Target = Target {
    name: "sails",
    run: |r| run(r, &(payload(), "\\PC{0,16}"), requests),
};

fn url() -> impl Strategy<Value = String> {
    prop_oneof![
        "(/[a-z0-9]{0,6}){0,4}(\\?([a-z%]{1,5}=[a-z0-9%+{}\":]{0,8}&?){0,3})?",
        "/(echo|user|user/find|user/update|user/destroy|user/create)(/[0-9a-z-]{0,22})?",
        (MAX_URL_CHARS - 1..MAX_URL_CHARS + 2).prop_map(|n| format!("/{}", "u".repeat(n))),
        "\\PC{0,16}",
    ]
}

/// A payload as a client sends it: an object, or its JSON text (sails.io.js 0.9).
fn payload() -> impl Strategy<Value = Value> {
    let field = prop_oneof![json(), url().prop_map(Value::String)];
    let object = keyed_object(field);
    prop_oneof![
        object.clone(),
        object.prop_map(|o| Value::String(o.to_string())),
        json(),
    ]
}

/// `%XX` for every byte: what a client's `encodeURIComponent` could send at most.
fn percent_encode(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

fn requests((payload, text): (Value, String)) -> Result<(), TestCaseError> {
    prop_assert_eq!(percent_decode(&percent_encode(&text)), text.clone());
    let _ = parse_query(&text);
    let (_, parsed) = parse_request(Ok(payload));
    let Ok((url, data)) = parsed else {
        return Ok(());
    };
    prop_assert!(!url.trim().is_empty() && url.chars().count() <= MAX_URL_CHARS);
    for method in [Method::Get, Method::Post, Method::Put, Method::Delete] {
        match route(method, &url, data.clone()) {
            Ok(
                Route::Find { collection, .. }
                | Route::FindOne { collection, .. }
                | Route::Create { collection, .. }
                | Route::Update { collection, .. }
                | Route::Destroy { collection, .. },
            ) => prop_assert!(!collection.is_empty() && !collection.contains('/')),
            Ok(Route::Echo) | Err(_) => {}
        }
    }
    Ok(())
}
