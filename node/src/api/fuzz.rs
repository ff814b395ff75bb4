//! Fuzz target of the server API's bodies: random bytes and structured JSON through the
//! emit, server-emit and join/leave body checks. Accepted bodies satisfy every documented
//! rule; nothing panics.

use proptest::{collection::vec, prelude::*, test_runner::TestCaseError};
use serde_json::Value as Json;

use super::{
    EmitBody, MAX_ACK_TIMEOUT_MS, RESERVED_EVENTS, ServerEmitBody, TargetBody, check_joinable,
    check_rooms, emit_request, server_emit_request,
};
use crate::fuzzing::support::{Target, json, keyed_object, run};

/// Emit, server-emit and join/leave bodies.
pub(crate) const TARGET: Target = Target {
    name: "api-bodies",
    run: |r| run(r, &body(), bodies),
};

/// Bytes a backend could send: random, JSON of any shape, or objects with the bodies' keys.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let room = prop_oneof![
        "[a-z0-9#_-]{0,12}",
        (250usize..260).prop_map(|n| "r".repeat(n)),
    ]
    .prop_map(Json::String);
    let rooms = vec(room, 0..3).prop_map(Json::Array);
    let field = prop_oneof![
        json(),
        rooms,
        prop_oneof![
            Just(0u64),
            Just(MAX_ACK_TIMEOUT_MS),
            Just(MAX_ACK_TIMEOUT_MS + 1),
            any::<u64>()
        ]
        .prop_map(Json::from),
        proptest::sample::select(&RESERVED_EVENTS[..]).prop_map(Json::from),
    ];
    prop_oneof![
        vec(any::<u8>(), 0..64),
        json().prop_map(|j| j.to_string().into_bytes()),
        keyed_object(field).prop_map(|j| j.to_string().into_bytes()),
    ]
}

fn rooms_ok(rooms: &[String]) -> bool {
    rooms.iter().all(|r| crate::rooms::check(r).is_ok())
}

fn timeout_ok(ms: Option<u64>) -> bool {
    ms.is_none_or(|ms| (1..=MAX_ACK_TIMEOUT_MS).contains(&ms))
}

fn bodies(bytes: Vec<u8>) -> Result<(), TestCaseError> {
    if let Ok(b) = serde_json::from_slice::<EmitBody>(&bytes) {
        let (rooms, except, event, ms) = (
            b.rooms.clone(),
            b.except.clone(),
            b.event.clone(),
            b.ack_timeout_ms,
        );
        if let Ok((b, _args)) = emit_request(b) {
            prop_assert!(!event.is_empty() && !RESERVED_EVENTS.contains(&event.as_str()));
            prop_assert!(rooms_ok(&rooms) && rooms_ok(&except) && timeout_ok(ms));
            prop_assert!(b.args.is_empty(), "args moved out");
        }
    }
    if let Ok(b) = serde_json::from_slice::<ServerEmitBody>(&bytes)
        && server_emit_request(&b).is_ok()
    {
        prop_assert!(!b.event.is_empty() && b.event.len() <= ioscale_adapter::MAX_EVENT_NAME_BYTES);
        prop_assert!(timeout_ok(b.ack_timeout_ms));
    }
    if let Ok(b) = serde_json::from_slice::<TargetBody>(&bytes) {
        let _ = check_rooms(&b.rooms);
        if check_joinable(&b.join).is_ok() {
            prop_assert!(rooms_ok(&b.join));
        }
    }
    Ok(())
}
