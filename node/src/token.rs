//! `ioscale-node token`: mints a connection token a node with `--auth jwt` accepts, so a user
//! can try authenticated connections without an identity provider. It reads the same key
//! flags and `IOSCALE_JWT_*` variables as the node.

use std::{
    path::PathBuf,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use clap::Args;
use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;

use crate::auth::{JwtAlgorithm, JwtKey};

/// The flags of `ioscale-node token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The user (`sub`); its sockets join `user:<sub>`.
    #[arg(long)]
    pub sub: String,
    /// Rooms the token may join and publish to: exact names and `prefix*` patterns.
    #[arg(long, value_delimiter = ',')]
    pub rooms: Vec<String>,
    /// Rooms it may only join.
    #[arg(long, value_delimiter = ',')]
    pub join: Vec<String>,
    /// Rooms it may only publish to.
    #[arg(long, value_delimiter = ',')]
    pub publish: Vec<String>,
    /// Lifetime, in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl_s: u64,
    /// The algorithm and the HS256 secret, as the node reads them.
    #[command(flatten)]
    pub key: JwtKey,
    /// The PEM private key for RS256 or ES256 (PKCS#8).
    #[arg(long)]
    pub private_key_file: Option<PathBuf>,
    /// The key id (`kid`) to put in the header, for a node reading a JWKS.
    #[arg(long)]
    pub kid: Option<String>,
    /// `aud`.
    #[arg(long, env = "IOSCALE_JWT_AUDIENCE")]
    pub audience: Option<String>,
    /// `iss`.
    #[arg(long, env = "IOSCALE_JWT_ISSUER")]
    pub issuer: Option<String>,
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    rooms: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    join: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    publish: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
}

/// The token `a` describes.
///
/// # Errors
/// A missing or unreadable key.
pub fn mint(a: &TokenArgs) -> anyhow::Result<String> {
    let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let (alg, key) = match a.key.jwt_algorithm {
        JwtAlgorithm::Hs256 => {
            let secret = a
                .key
                .secret()
                .map_err(anyhow::Error::msg)?
                .context("HS256 needs --jwt-secret-file or --jwt-secret")?;
            let key = EncodingKey::from_secret(&secret).context("the HS256 secret")?;
            (jsonwebtoken::Algorithm::HS256, key)
        }
        alg => {
            let p = a
                .private_key_file
                .as_ref()
                .context("RS256 and ES256 need --private-key-file")?;
            let pem = read(p)?;
            match alg {
                JwtAlgorithm::Rs256 => (
                    jsonwebtoken::Algorithm::RS256,
                    EncodingKey::from_rsa_pem(&pem).context("not a PEM RSA private key")?,
                ),
                _ => (
                    jsonwebtoken::Algorithm::ES256,
                    EncodingKey::from_ec_pem(&pem).context("not a PEM EC private key")?,
                ),
            }
        }
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    let claims = Claims {
        sub: &a.sub,
        iat: now,
        exp: now + a.ttl_s,
        rooms: &a.rooms,
        join: &a.join,
        publish: &a.publish,
        aud: a.audience.as_deref(),
        iss: a.issuer.as_deref(),
    };
    let mut header = Header::new(alg);
    header.kid.clone_from(&a.kid);
    jsonwebtoken::encode(&header, &claims, &key).context("signing the token")
}
