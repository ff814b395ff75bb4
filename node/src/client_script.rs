//! The socket.io browser client, served at `/socket.io/socket.io.js` for any page a node's
//! applications serve.
//!
//! The client script is socket.io-client's `dist/socket.io.min.js` from npm. It is installed
//! by `npm ci --prefix node/client`, not committed, and read from disk at each request (so an
//! install after the node started is picked up): from `--client-script-path` when given, else
//! from the first existing `node/client/node_modules/…` next to the executable's ancestors,
//! the working directory or the source tree. Missing, it answers 404 and logs where it looked.
//!
//! socketioxide's layer takes every request under `/socket.io/`, so the script's route must be
//! added to the router after that layer (see [`CLIENT_SCRIPT_ROUTE`]).

use std::path::{Path, PathBuf};

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::IntoResponse,
    routing::{MethodRouter, get},
};

use crate::config::Config;

/// Where pages load the socket.io client from (as in the seeds).
pub const CLIENT_SCRIPT_ROUTE: &str = "/socket.io/socket.io.js";
/// The client script inside an installed `socket.io-client` package.
const CLIENT_SCRIPT_IN_PACKAGE: &str = "node_modules/socket.io-client/dist/socket.io.min.js";

/// The places the client script may be, in the order they are tried.
pub fn client_script_candidates(config: &Config) -> Vec<PathBuf> {
    if let Some(p) = &config.client_script_path {
        return vec![p.clone()];
    }
    client_dirs()
        .into_iter()
        .map(|d| d.join(CLIENT_SCRIPT_IN_PACKAGE))
        .collect()
}

/// Where the node's npm packages (`node/client`) may be installed, in the order they are
/// tried: next to the executable's ancestors, in the working directory, in the source tree.
pub fn client_dirs() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let in_repo = Path::new("node").join("client");
    // `target/<profile>/ioscale-node` sits two levels below the repository root.
    if let Ok(exe) = std::env::current_exe() {
        out.extend(exe.ancestors().skip(1).take(4).map(|d| d.join(&in_repo)));
    }
    if let Ok(cwd) = std::env::current_dir() {
        out.push(cwd.join(&in_repo));
        out.push(cwd.join("client"));
    }
    // The source tree this binary was built from, for binaries copied elsewhere on this machine.
    out.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("client"));
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| seen.insert(p.clone()));
    out
}

/// Logs, at startup, which client script the page will get (or that it will get a 404).
pub fn log_client_script(config: &Config) {
    let candidates = client_script_candidates(config);
    match candidates.iter().find(|p| p.is_file()) {
        Some(p) => tracing::info!(path = %p.display(), "serving the socket.io client script"),
        None => tracing::warn!(
            tried = ?candidates,
            "socket.io client script not found: {CLIENT_SCRIPT_ROUTE} will answer 404 (run \
             `npm ci --prefix node/client` or set --client-script-path)"
        ),
    }
}

/// `GET /socket.io/socket.io.js`: the client script, or 404 with a log line saying why.
pub fn client_script_route(config: &Config) -> MethodRouter {
    let candidates = client_script_candidates(config);
    get(async move || {
        for p in &candidates {
            match tokio::fs::read(p).await {
                Ok(body) => {
                    return (
                        [
                            (
                                header::CONTENT_TYPE,
                                HeaderValue::from_static("text/javascript; charset=utf-8"),
                            ),
                            (
                                header::CACHE_CONTROL,
                                HeaderValue::from_static("max-age=300"),
                            ),
                        ],
                        body,
                    )
                        .into_response();
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %p.display(), error = %e, "cannot read the socket.io client script");
                }
            }
        }
        tracing::warn!(
            tried = ?candidates,
            "404 for {CLIENT_SCRIPT_ROUTE}: socket.io client script not found (run \
             `npm ci --prefix node/client` or set --client-script-path)"
        );
        (
            StatusCode::NOT_FOUND,
            "socket.io client script not installed on this node\n",
        )
            .into_response()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_path_is_the_only_candidate() {
        let c = Config::parse_from(["ioscale-node", "--client-script-path", "/x/io.js"]);
        assert_eq!(
            client_script_candidates(&c),
            vec![PathBuf::from("/x/io.js")]
        );
    }

    #[test]
    fn default_candidates_end_with_the_source_tree() {
        let c = Config::parse_from(["ioscale-node"]);
        let all = client_script_candidates(&c);
        assert!(all.iter().all(|p| p.ends_with(CLIENT_SCRIPT_IN_PACKAGE)));
        assert!(
            all.last()
                .is_some_and(|p| p.starts_with(env!("CARGO_MANIFEST_DIR")))
        );
    }
}
