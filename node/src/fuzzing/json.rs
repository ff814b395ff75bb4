//! JSON generators shared by the node's targets: values with `$binary` objects (valid and
//! invalid base64), and objects whose keys are mostly the field names the parsers look for,
//! so that generated input reaches past the first type check.

use base64::{Engine as _, engine::general_purpose::STANDARD as B64};
use proptest::{collection::vec, prelude::*};
use serde_json::{Map, Value};

/// Field names of the API bodies and the dialects' payloads.
const KEYS: [&str; 24] = [
    "url",
    "data",
    "signature",
    "endPoint",
    "ctx",
    "item",
    "id",
    "query",
    "where",
    "limit",
    "skip",
    "sort",
    "$binary",
    "namespace",
    "rooms",
    "except",
    "event",
    "args",
    "volatile",
    "local",
    "ack_timeout_ms",
    "join",
    "leave",
    "sockets",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(&KEYS[..]).prop_map(str::to_owned),
        1 => "\\PC{0,6}",
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |n| serde_json::Number::from_f64(n)
            .map(Value::Number)),
        "\\PC{0,10}".prop_map(Value::String),
        // Ids, paths and names the parsers split.
        "[a-z0-9/?&=%+._-]{0,16}".prop_map(Value::String),
        vec(any::<u8>(), 0..12).prop_map(|b| serde_json::json!({"$binary": B64.encode(b)})),
        "[A-Za-z0-9+/=!]{0,8}".prop_map(|s| serde_json::json!({"$binary": s})),
    ]
}

/// Any JSON, with `$binary` objects among the leaves.
pub(crate) fn json() -> BoxedStrategy<Value> {
    leaf()
        .prop_recursive(3, 32, 5, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..5).prop_map(Value::Array),
                keyed_object(inner),
            ]
        })
        .boxed()
}

/// Objects of `values` under mostly known keys.
pub(crate) fn keyed_object(values: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Value> {
    vec((key(), values), 0..6)
        .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>()))
        .boxed()
}
