//! The node's fuzz targets, beside the adapter's: the `$binary` JSON values and their trip
//! through the Socket.IO parser, the server API's bodies, socket data, and the dialect
//! parsers (Sails 0.9 requests, Backbone.sync signatures, ko.ninja names and arguments).
//! `cargo test` runs 10,000 cases per target; the `fuzz` binary (feature `fuzzing`) runs
//! them, and the adapter's, for minutes at a time.
//!
//! Not a public API: compiled for tests and with the `fuzzing` feature only.

mod json;
pub(crate) mod support;

pub use ioscale_adapter::fuzzing::{Target, runner};

/// The node's own targets.
pub fn targets() -> Vec<Target> {
    vec![
        crate::value::fuzz::TARGET,
        crate::value::fuzz::PARSER_TARGET,
        crate::api::fuzz::TARGET,
        crate::sockets::fuzz::TARGET,
        crate::apps::models::sails::fuzz::TARGET,
        crate::apps::models::backbone::fuzz::TARGET,
        crate::apps::models::ko_ninja::fuzz::TARGET,
    ]
}

/// Every target: the adapter's (wire) then the node's.
pub fn all_targets() -> Vec<Target> {
    let mut all = ioscale_adapter::fuzzing::targets();
    all.extend(targets());
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ci(name: &str) {
        ioscale_adapter::fuzzing::run_ci(&targets(), name);
    }

    #[test]
    fn binary_json_values_round_trip() {
        ci("api-value");
    }

    #[test]
    fn values_round_trip_through_the_socketio_parser() {
        ci("api-value-parser");
    }

    #[test]
    fn api_bodies_are_checked_or_refused_never_panic() {
        ci("api-bodies");
    }

    #[test]
    fn socket_data_patches_stay_bounded() {
        ci("socket-data");
    }

    #[test]
    fn sails_requests_route_or_fail() {
        ci("sails");
    }

    #[test]
    fn backbone_signatures_parse_or_fail() {
        ci("backbone");
    }

    #[test]
    fn ko_ninja_names_and_arguments_parse_or_fail() {
        ci("ko-ninja");
    }
}
