//! What every fuzz target of the node uses: the JSON strategies and the property runner. Apart
//! from `fuzzing/mod.rs`, which lists the targets, so that a target does not import the list
//! that names it.

use proptest::{
    strategy::Strategy,
    test_runner::{TestCaseError, TestRunner},
};

pub(crate) use super::json::{json, keyed_object};
pub(crate) use ioscale_adapter::fuzzing::Target;

/// Runs `property` over `strategy`; a failure becomes its message (with the shrunk input).
pub(crate) fn run<S: Strategy>(
    r: &mut TestRunner,
    strategy: &S,
    property: fn(S::Value) -> Result<(), TestCaseError>,
) -> Result<(), String> {
    r.run(strategy, property).map_err(|e| e.to_string())
}
