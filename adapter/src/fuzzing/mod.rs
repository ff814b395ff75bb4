//! Fuzz targets of the adapter: the wire decoder on random bytes, on mutated valid envelopes
//! and on valid-shaped hostile ones, and the value conversions' round trips. Each target is a
//! proptest strategy and a property, run 10,000 cases per target by `cargo test` and for
//! minutes at a time by the node's `fuzz` binary (feature `fuzzing`).
//!
//! Not a public API: compiled for tests and with the `fuzzing` feature only.

mod strategies;

use proptest::{
    prelude::*,
    test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner},
};

use crate::{
    bounds, history, shape,
    wire::{self, Envelope},
};
use strategies::{Mutation, envelope, hostile_envelope, json, packet, value};

/// One fuzz target: a name, and a run of a runner's configured cases.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Name given to `--target`.
    pub name: &'static str,
    /// Runs the runner's cases; `Err` carries the (shrunk) failing input and why.
    pub run: fn(&mut TestRunner) -> Result<(), String>,
}

/// A runner of `cases` cases from `seed`, with no persistence file: the long runs print their
/// seed and reproducer themselves.
pub fn runner(cases: u32, seed: u64) -> TestRunner {
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

/// Cases per target in CI: the floor; inputs are small, so a target takes seconds.
pub const CI_CASES: u32 = 10_000;

/// Runs target `name` of `targets` for CI: [`CI_CASES`] cases from a fixed seed (reproducible;
/// the long runs draw new seeds), panicking with the failure.
///
/// # Panics
/// When the target is not in `targets`, or fails.
pub fn run_ci(targets: &[Target], name: &str) {
    let target = targets
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no target {name}"));
    if let Err(e) = (target.run)(&mut runner(CI_CASES, 0x10_5ca1e)) {
        panic!("{name}: {e}");
    }
}

/// The adapter's targets.
pub fn targets() -> Vec<Target> {
    vec![
        Target {
            name: "wire-bytes",
            run: |r| {
                run(
                    r,
                    &proptest::collection::vec(any::<u8>(), 0..192),
                    wire_bytes,
                )
            },
        },
        Target {
            name: "wire-mutated",
            run: |r| run(r, &(envelope(), Mutation::list()), wire_mutated),
        },
        Target {
            name: "wire-hostile",
            run: |r| run(r, &hostile_envelope(), wire_hostile),
        },
        Target {
            name: "wire-values",
            run: |r| run(r, &(value(), packet(), json()), wire_values),
        },
    ]
}

/// Runs `property` over `strategy`; a failure becomes its message.
fn run<S: Strategy>(
    r: &mut TestRunner,
    strategy: &S,
    property: fn(S::Value) -> Result<(), TestCaseError>,
) -> Result<(), String> {
    r.run(strategy, property).map_err(|e| e.to_string())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decoded input must encode and decode to itself: what the decoder accepts is what it means.
fn stable(env: &Envelope, input: &[u8]) -> Result<(), TestCaseError> {
    let again = wire::encode(env)
        .and_then(|b| wire::decode(&b))
        .map_err(|e| {
            TestCaseError::fail(format!("re-encoding failed: {e}; input {}", hex(input)))
        })?;
    prop_assert_eq!(&again, env, "input {}", hex(input));
    Ok(())
}

/// Random bytes: no panic; whatever the scan refuses the decoder refuses; what decodes is
/// stable; the ack error decoder and the history stamp parser never panic either.
fn wire_bytes(bytes: Vec<u8>) -> Result<(), TestCaseError> {
    let decoded = wire::decode(&bytes);
    if shape::check(&bytes).is_err() {
        prop_assert!(decoded.is_err(), "input {}", hex(&bytes));
    }
    if let Ok(env) = decoded {
        let _ = bounds::check(&env);
        stable(&env, &bytes)?;
    }
    // Ack errors are another node's msgpack too, decoded into any shape.
    let _ = wire::decode_ack_error::<serde_json::Value>(&bytes);
    let mut stamped = vec![history::STAMP];
    stamped.extend_from_slice(&bytes);
    let _ = history::unstamp(&stamped);
    Ok(())
}

/// A valid envelope round-trips; mutated (bytes flipped, cut, spliced, a huge length
/// declared), it decodes to something stable or is an error, never a panic.
fn wire_mutated((env, mutations): (Envelope, Vec<Mutation>)) -> Result<(), TestCaseError> {
    let mut bytes = wire::encode(&env).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(shape::check(&bytes), Ok(bytes.len()));
    prop_assert_eq!(
        &wire::decode(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?,
        &env
    );
    for m in &mutations {
        m.apply(&mut bytes);
    }
    if let Ok(decoded) = wire::decode(&bytes) {
        let _ = bounds::check(&decoded);
        stable(&decoded, &bytes)?;
    }
    Ok(())
}

/// A valid-shaped envelope whose fields may be out of range: it decodes, and the range check
/// refuses it exactly when a field is out of its bound.
fn wire_hostile(env: Envelope) -> Result<(), TestCaseError> {
    let bytes = wire::encode(&env).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let decoded = wire::decode(&bytes)
        .map_err(|e| TestCaseError::fail(format!("{e}; input {}", hex(&bytes))))?;
    prop_assert_eq!(&decoded, &env);
    let expected = strategies::out_of_range(&env);
    prop_assert_eq!(
        bounds::check(&env).err().map(|e| e.0),
        expected,
        "input {}",
        hex(&bytes)
    );
    Ok(())
}

/// Socket.IO values and packets round-trip through their wire forms, and so does JSON carried
/// as bytes (socket data, server-event arguments).
fn wire_values(
    (v, p, j): (
        socketioxide_core::Value,
        socketioxide_core::packet::Packet,
        serde_json::Value,
    ),
) -> Result<(), TestCaseError> {
    prop_assert_eq!(socketioxide_core::Value::from(wire::WireValue::from(&v)), v);
    let back = socketioxide_core::packet::Packet::try_from(wire::WirePacket::from(&p))
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(back, p);
    let again =
        wire::json_value(&wire::json_bytes(&j)).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(again, j);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ci(name: &str) {
        run_ci(&targets(), name);
    }

    #[test]
    fn random_bytes_never_panic_the_decoder() {
        ci("wire-bytes");
    }

    #[test]
    fn mutated_envelopes_decode_stably_or_fail() {
        ci("wire-mutated");
    }

    #[test]
    fn hostile_fields_are_refused_exactly_when_out_of_range() {
        ci("wire-hostile");
    }

    #[test]
    fn values_packets_and_json_round_trip_through_the_wire() {
        ci("wire-values");
    }
}
