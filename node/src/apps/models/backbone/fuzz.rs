//! Fuzz target of Backbone.sync signatures: `{signature: {endPoint, ctx?}, item?}` payloads
//! of any shape; a parsed request has a bounded reply event and a collection, or an error.

use proptest::{prelude::*, test_runner::TestCaseError};
use serde_json::Value;

use super::{MAX_SIGNATURE_CHARS, Op, parse, target_id};
use crate::fuzzing::support::{Target, json, keyed_object, run};

/// Backbone.sync requests.
pub(crate) const TARGET: Target = Target {
    name: "backbone",
    run: |r| run(r, &(0usize..4, payload()), signatures),
};

fn end_point() -> impl Strategy<Value = Value> {
    prop_oneof![
        "/?[a-z]{0,6}(/[0-9a-z-]{0,22}){0,2}/?",
        (MAX_SIGNATURE_CHARS - 1..MAX_SIGNATURE_CHARS + 2).prop_map(|n| "e".repeat(n)),
        "\\PC{0,12}",
    ]
    .prop_map(Value::String)
}

fn payload() -> impl Strategy<Value = Value> {
    let signature = keyed_object(prop_oneof![json(), end_point()]);
    let field = prop_oneof![json(), signature];
    prop_oneof![keyed_object(field), json()]
}

fn signatures((op, data): (usize, Value)) -> Result<(), TestCaseError> {
    let op = [Op::Create, Op::Read, Op::Update, Op::Delete][op];
    let Ok(req) = parse(op, Ok(data)) else {
        return Ok(());
    };
    // Op, end point and ctx, each bounded, and two separators.
    let longest = "delete".len() + 2 * MAX_SIGNATURE_CHARS * 4 + 2;
    prop_assert!(req.reply_event.len() <= longest);
    prop_assert!(!req.collection.is_empty() && !req.collection.contains('/'));
    let _ = target_id(&req, op);
    Ok(())
}
