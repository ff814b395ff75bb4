//! Fuzz target of ko.ninja: configured message names (`collection:op=event,…`), event names
//! resolved to a collection and operation, and the payloads' `{query}`, `{id}`, `{data}`.

use proptest::{collection::vec, prelude::*, test_runner::TestCaseError};
use serde_json::Value;

use super::{KoNames, MAX_EVENT_CHARS, id_arg, object_arg};
use crate::{
    apps::models::Collections,
    fuzzing::support::{Target, json, keyed_object, run},
};

/// ko.ninja names and arguments.
pub(crate) const TARGET: Target = Target {
    name: "ko-ninja",
    run: |r| {
        run(
            r,
            &(vec(spec(), 0..3), event(), keyed_object(json())),
            names,
        )
    },
};

fn spec() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{0,6}:((find|findOne|insert|update|remove|x)=[a-z-]{0,8},?){0,3}",
        (MAX_EVENT_CHARS - 1..MAX_EVENT_CHARS + 2)
            .prop_map(|n| format!("list:find={}", "e".repeat(n))),
        "\\PC{0,16}",
    ]
}

fn event() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z-]{0,8}-(find|findOne|insert|update|remove|x)",
        "\\PC{0,12}"
    ]
}

fn names((specs, event, data): (Vec<String>, String, Value)) -> Result<(), TestCaseError> {
    if let Ok(names) = KoNames::parse(&specs, &Collections::Open) {
        if let Some((collection, _op)) = names.resolve(&event) {
            prop_assert!(!collection.is_empty());
        }
        for (ev, (collection, _)) in &names.overrides {
            prop_assert!(!ev.is_empty() && ev.len() <= MAX_EVENT_CHARS && !collection.is_empty());
        }
    }
    let data = Some(data);
    let _ = id_arg(&data, "remove");
    let _ = object_arg(&data, "data", "insert");
    let _ = object_arg(&data, "query", "find");
    Ok(())
}
