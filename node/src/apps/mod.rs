//! The seed applications a node serves by default, each registered through the core's
//! [`Application`] seam: the chat demo and the CRUD dialects on `/`, the Socket.IO README's
//! recipes on `/readme`, `/chat` and `/news`. The core imports none of them.

pub mod chat;
pub mod conformance;
pub mod models;
pub mod readme_features;

use crate::{application::Application, config::ConfigError};

/// The seed applications' flags, beside the core's in the binary's parser.
#[derive(Debug, Clone, clap::Args)]
pub struct AppsConfig {
    /// The chat demo's.
    #[command(flatten)]
    pub chat: chat::ChatConfig,
    /// The CRUD dialects'.
    #[command(flatten)]
    pub models: models::ModelConfig,
    /// Serve the Socket.IO protocol test contract on `/` and `/custom` (see `conformance`)
    /// instead of the seed applications.
    #[arg(long, env = "IOSCALE_CONFORMANCE")]
    pub conformance: bool,
}

/// The seed applications, configured.
///
/// # Errors
/// The first flag an application cannot work with.
pub fn seeds(config: &AppsConfig) -> Result<Vec<Box<dyn Application>>, ConfigError> {
    if config.conformance {
        return Ok(vec![Box::new(conformance::Conformance)]);
    }
    config.chat.validate()?;
    let crud = models::Crud::new(&config.models).map_err(|e| ConfigError::new(e.to_string()))?;
    Ok(vec![
        Box::new(chat::Chat::new(config.chat.clone())),
        Box::new(crud),
        Box::new(readme_features::ReadmeFeatures),
    ])
}
