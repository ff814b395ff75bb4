//! The error of a configuration value that cannot work: the core's `Config::validate` and
//! every module that checks flags of its own (auth, origins, the applications) return it.

/// A configuration value that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl ConfigError {
    /// A configuration error saying `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}
