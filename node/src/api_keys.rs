//! The server API's bearer tokens, read once at start: with none configured the API is off,
//! never open.

use std::path::Path;

use subtle::ConstantTimeEq;

use crate::{config::Config, config_error::ConfigError};

/// The keys `/api/v1/*` accepts: every `--api-key` and every line of `--api-key-file`.
/// Several keys let a deployment rotate one without a window where neither works.
#[derive(Default)]
pub struct ApiKeys(Vec<String>);

impl std::fmt::Debug for ApiKeys {
    // The keys are secrets: only how many there are.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} configured)", self.0.len())
    }
}

impl ApiKeys {
    /// The configured keys.
    ///
    /// # Errors
    /// An empty key, an unreadable key file, or one holding no key.
    pub fn load(config: &Config) -> Result<Self, ConfigError> {
        let mut keys = config.api_key.clone();
        if keys.iter().any(String::is_empty) {
            return Err(ConfigError::new("--api-key must not be empty"));
        }
        if let Some(path) = &config.api_key_file {
            let from_file = read_key_file(path)?;
            keys.extend(from_file);
        }
        Ok(Self(keys))
    }

    /// No key configured: the API is off.
    pub fn is_off(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `given` is one of the keys. Compared in constant time against every key, so
    /// neither a key nor which key matched can be told from response times.
    pub fn admits(&self, given: &str) -> bool {
        self.0.iter().fold(false, |found, key| {
            found | bool::from(given.as_bytes().ct_eq(key.as_bytes()))
        })
    }
}

fn read_key_file(path: &Path) -> Result<Vec<String>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(format!("--api-key-file {}: {e}", path.display())))?;
    let keys: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if keys.is_empty() {
        return Err(ConfigError::new(format!(
            "--api-key-file {} holds no key",
            path.display()
        )));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    fn keys(args: &[&str]) -> Result<ApiKeys, ConfigError> {
        let cli = Cli::parse_from(std::iter::once("n").chain(args.iter().copied()));
        ApiKeys::load(&cli.config)
    }

    #[test]
    fn no_key_means_off_and_every_key_is_admitted() {
        assert!(keys(&[]).unwrap().is_off());
        let k = keys(&["--api-key", "old,new"]).unwrap();
        assert!(!k.is_off());
        assert!(k.admits("old") && k.admits("new"));
        assert!(!k.admits("") && !k.admits("ol") && !k.admits("newx"));
    }

    #[test]
    fn a_key_file_adds_its_lines_and_bad_files_are_errors() {
        let dir = std::env::temp_dir().join(format!("ioscale-api-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("keys");
        std::fs::write(&file, "  a \n\nb\n").unwrap();
        let path = file.to_str().unwrap();
        let k = keys(&["--api-key", "c", "--api-key-file", path]).unwrap();
        assert!(k.admits("a") && k.admits("b") && k.admits("c"));
        std::fs::write(&file, "\n \n").unwrap();
        let e = keys(&["--api-key-file", path]).err().unwrap();
        assert!(e.to_string().contains("holds no key"), "{e}");
        let missing = dir.join("missing");
        let e = keys(&["--api-key-file", missing.to_str().unwrap()])
            .err()
            .unwrap();
        assert!(e.to_string().contains("--api-key-file"), "{e}");
        assert!(keys(&["--api-key", ""]).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
