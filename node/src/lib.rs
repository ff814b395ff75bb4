//! `ioscale-node`: a stateless Socket.IO node. Any number of nodes given the same Redis share
//! rooms, broadcasts and socket data; without Redis a node runs alone in memory.
//!
//! Two halves. The core (`server` and what it uses: `config`, `app`, `application`, `sockets`,
//! `rooms`, `pubsub`, `api`, `health`, `metrics`, `client_script`) is the product: the cluster
//! adapter, `/custom` and `/pubsub`, the server API, health, metrics and the graceful shutdown.
//! The seed applications (`apps`: the chat demo, the CRUD dialects, the Socket.IO README's
//! recipes) plug into it through [`application::Application`]; the core imports none of them.
//! This file only puts the two together, for `main.rs` to run with [`server::run`].

// Beyond the workspace lints: nothing public by accident, every public type printable, and
// no unwrap or expect outside tests (client and Redis input must never panic a node).
#![warn(unreachable_pub, missing_debug_implementations)]
#![warn(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod address_rate;
pub mod admin_ui;
pub mod admission;
pub mod api;
pub mod api_keys;
pub mod app;
pub mod application;
pub mod apps;
pub mod auth;
pub mod client_script;
pub mod config;
pub mod config_error;
pub mod detach;
pub mod eager;
pub mod edge;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_debug_implementations
)]
pub mod fuzzing;
pub mod handshake;
pub mod health;
pub mod joins;
pub mod metrics;
pub mod observe;
pub mod origin;
pub mod presence;
pub mod pubsub;
pub mod rate;
pub mod refusal;
pub mod rooms;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod sockets;
pub mod telemetry;
pub mod token;
pub mod value;

use clap::Parser;

use crate::{application::Application, apps::AppsConfig, config::ConfigError};

/// Configuration of `ioscale-node`: the core's flags and the seed applications'.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ioscale-node",
    version,
    about = "A stateless Socket.IO node of an ioscale cluster"
)]
pub struct NodeConfig {
    /// The core's.
    #[command(flatten)]
    pub core: config::Config,
    /// The seed applications'.
    #[command(flatten)]
    pub apps: AppsConfig,
    /// A command instead of running the node.
    #[command(subcommand)]
    pub command: Option<NodeCommand>,
}

/// What `ioscale-node <command>` does instead of serving.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum NodeCommand {
    /// Prints a connection token a node with `--auth jwt` accepts.
    Token(token::TokenArgs),
}

impl NodeConfig {
    /// Checks what clap cannot check alone, the core's values and every application's, and
    /// returns the applications ready to serve.
    ///
    /// # Errors
    /// The first invalid value.
    pub fn applications(&self) -> Result<Vec<Box<dyn Application>>, ConfigError> {
        self.core.validate()?;
        apps::seeds(&self.apps)
    }
}
