//! Fuzz target of socket data: a client's `set-data` patch merged into the current data is
//! an object within the size bound, or refused; the token's user stays the node's.

use proptest::{prelude::*, test_runner::TestCaseError};
use serde_json::Value as Json;

use super::{MAX_SOCKET_DATA_BYTES, USER_KEY, merged_data};
use crate::fuzzing::support::{Target, json, run};

/// `set-data` patches.
pub(crate) const TARGET: Target = Target {
    name: "socket-data",
    run: |r| {
        run(
            r,
            &(
                json(),
                json(),
                any::<bool>(),
                0usize..MAX_SOCKET_DATA_BYTES + 64,
            ),
            merge,
        )
    },
};

fn merge((current, patch, tokens, pad): (Json, Json, bool, usize)) -> Result<(), TestCaseError> {
    // Sometimes a patch near the size bound.
    let patch = match patch {
        Json::Object(mut o) if pad % 3 == 0 => {
            o.insert("pad".into(), Json::String("x".repeat(pad)));
            Json::Object(o)
        }
        p => p,
    };
    let sets_user = patch.get(USER_KEY).is_some();
    let before_user = current.get(USER_KEY).cloned();
    let mut expected = current.as_object().cloned().unwrap_or_default();
    if let Json::Object(p) = &patch {
        expected.extend(p.clone());
    }
    let too_large = Json::Object(expected).to_string().len() > MAX_SOCKET_DATA_BYTES;
    match merged_data(current, patch.clone(), tokens) {
        Ok(data) => {
            prop_assert!(data.is_object() && patch.is_object());
            prop_assert!(data.to_string().len() <= MAX_SOCKET_DATA_BYTES);
            if tokens {
                prop_assert_eq!(data.get(USER_KEY).cloned(), before_user);
            }
        }
        Err(_) => prop_assert!(
            !patch.is_object() || (tokens && sets_user) || too_large,
            "refused a valid patch"
        ),
    }
    Ok(())
}
