//! Connection auth: the Socket.IO handshake's `auth` payload (`{token}`) is checked as a JWT
//! before a socket joins a namespace, and its claims give the socket a user and the rooms it
//! may join and publish to. The algorithm is pinned by configuration, never read from the
//! token; the token itself is never logged.

use std::{fmt, path::PathBuf, sync::Arc};

use clap::{Args, ValueEnum};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind, jwk::JwkSet};
use serde::Deserialize;

use crate::{config_error::ConfigError, rooms::Grants};

/// How clients authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// Anyone connects (the embedded default; the node warns at start).
    None,
    /// A JWT in the handshake's `auth: {token}`.
    Jwt,
}

/// The one algorithm tokens must be signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with a shared secret.
    Hs256,
    /// RSA PKCS#1 v1.5 with SHA-256 (a PEM public key or a JWKS).
    Rs256,
    /// ECDSA P-256 with SHA-256 (a PEM public key or a JWKS).
    Es256,
}

impl JwtAlgorithm {
    fn algorithm(self) -> Algorithm {
        match self {
            JwtAlgorithm::Hs256 => Algorithm::HS256,
            JwtAlgorithm::Rs256 => Algorithm::RS256,
            JwtAlgorithm::Es256 => Algorithm::ES256,
        }
    }
}

/// The algorithm and the HS256 secret: the node's flags, and `ioscale-node token`'s.
#[derive(Clone, Args)]
pub struct JwtKey {
    /// The algorithm every token must use; a token naming another one is refused.
    #[arg(long, env = "IOSCALE_JWT_ALGORITHM", value_enum, default_value_t = JwtAlgorithm::Hs256)]
    pub jwt_algorithm: JwtAlgorithm,
    /// The HS256 secret (prefer `--jwt-secret-file`: a command line is visible to other users).
    #[arg(long, env = "IOSCALE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// A file holding the HS256 secret (surrounding whitespace ignored).
    #[arg(long, env = "IOSCALE_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKey")
            .field("jwt_algorithm", &self.jwt_algorithm)
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "***"))
            .field("jwt_secret_file", &self.jwt_secret_file)
            .finish()
    }
}

impl JwtKey {
    /// The HS256 secret, when one is given.
    ///
    /// # Errors
    /// Both a secret and a file, or an unreadable file.
    pub fn secret(&self) -> Result<Option<Vec<u8>>, String> {
        match (&self.jwt_secret, &self.jwt_secret_file) {
            (Some(_), Some(_)) => Err("give --jwt-secret or --jwt-secret-file, not both".into()),
            (Some(s), None) => Ok(Some(s.as_bytes().to_vec())),
            (None, Some(p)) => std::fs::read(p)
                .map(|b| Some(b.trim_ascii().to_vec()))
                .map_err(|e| format!("--jwt-secret-file {}: {e}", p.display())),
            (None, None) => Ok(None),
        }
    }
}

/// The auth flags.
#[derive(Clone, Args)]
pub struct AuthConfig {
    /// How clients authenticate their connections: `none` (anyone; logged as a warning) or
    /// `jwt` (a token in the handshake's `auth: {token}`).
    #[arg(long = "auth", env = "IOSCALE_AUTH", value_enum, default_value_t = AuthMode::None)]
    pub mode: AuthMode,
    /// The algorithm and the HS256 secret.
    #[command(flatten)]
    pub key: JwtKey,
    /// A PEM public key for RS256 or ES256.
    #[arg(long, env = "IOSCALE_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// A JWKS file (`{"keys": [...]}`) for RS256 or ES256: the token's `kid` picks the key.
    #[arg(long, env = "IOSCALE_JWT_JWKS_FILE")]
    pub jwt_jwks_file: Option<PathBuf>,
    /// The `aud` every token must name; unchecked when absent.
    #[arg(long, env = "IOSCALE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// The `iss` every token must carry; unchecked when absent.
    #[arg(long, env = "IOSCALE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[arg(long, env = "IOSCALE_JWT_LEEWAY_S", default_value_t = 5)]
    pub jwt_leeway_s: u64,
    /// With `--auth jwt`, the namespaces that require a token, comma-separated (default: all).
    /// Sockets of the others connect anonymously, under `--anonymous-rooms`.
    #[arg(long, env = "IOSCALE_AUTH_NAMESPACES", value_delimiter = ',')]
    pub auth_namespaces: Vec<String>,
    /// Rooms a socket without a token may join and publish to: exact names and `prefix*`
    /// patterns, comma-separated; `*` is every room that is not reserved, an empty value none.
    #[arg(
        long,
        env = "IOSCALE_ANONYMOUS_ROOMS",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub anonymous_rooms: Vec<String>,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("mode", &self.mode)
            .field("key", &self.key)
            .field("jwt_public_key_file", &self.jwt_public_key_file)
            .field("jwt_jwks_file", &self.jwt_jwks_file)
            .field("jwt_audience", &self.jwt_audience)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_leeway_s", &self.jwt_leeway_s)
            .field("auth_namespaces", &self.auth_namespaces)
            .field("anonymous_rooms", &self.anonymous_rooms)
            .finish()
    }
}

/// Why a handshake was refused: the client's `connect_error` message is `<code>: <text>`, and
/// `ioscale_auth_refused_total{reason}` counts it under the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `auth: {token}` in the handshake.
    #[error("missing_token: the handshake carries no auth {{token}}")]
    MissingToken,
    /// Not a JWT, or its parts do not decode.
    #[error("malformed_token: the token is not a well-formed JWT")]
    Malformed,
    /// Signed with another algorithm than the one configured (`alg: none` included).
    #[error("wrong_algorithm: the token is not signed with the configured algorithm")]
    WrongAlgorithm,
    /// The signature does not verify.
    #[error("bad_signature: the token's signature does not verify")]
    BadSignature,
    /// No key of the JWKS has the token's `kid`.
    #[error("unknown_key: no configured key has the token's kid")]
    UnknownKey,
    /// Past `exp`.
    #[error("expired: the token has expired")]
    Expired,
    /// Before `nbf`.
    #[error("not_yet_valid: the token is not valid yet")]
    NotYetValid,
    /// Another `aud`.
    #[error("wrong_audience: the token is for another audience")]
    WrongAudience,
    /// Another `iss`.
    #[error("wrong_issuer: the token is from another issuer")]
    WrongIssuer,
    /// `sub` or `exp` missing, or a claim of the wrong type.
    #[error("bad_claims: the token needs a non-empty sub, an exp, and room lists of strings")]
    BadClaims,
}

impl AuthError {
    /// The code, the `reason` label of the refusal counter.
    pub fn code(self) -> &'static str {
        match self {
            AuthError::MissingToken => "missing_token",
            AuthError::Malformed => "malformed_token",
            AuthError::WrongAlgorithm => "wrong_algorithm",
            AuthError::BadSignature => "bad_signature",
            AuthError::UnknownKey => "unknown_key",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::WrongIssuer => "wrong_issuer",
            AuthError::BadClaims => "bad_claims",
        }
    }

    /// Every code, for metrics.
    pub const ALL: [AuthError; 10] = [
        AuthError::MissingToken,
        AuthError::Malformed,
        AuthError::WrongAlgorithm,
        AuthError::BadSignature,
        AuthError::UnknownKey,
        AuthError::Expired,
        AuthError::NotYetValid,
        AuthError::WrongAudience,
        AuthError::WrongIssuer,
        AuthError::BadClaims,
    ];

    fn from_jwt(e: &jsonwebtoken::errors::Error) -> Self {
        match e.kind() {
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::InvalidAlgorithm
            | ErrorKind::MissingAlgorithm
            | ErrorKind::InvalidAlgorithmName
            | ErrorKind::UnsupportedAlgorithm
            | ErrorKind::InvalidKeyFormat => AuthError::WrongAlgorithm,
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidAudience => AuthError::WrongAudience,
            ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
            ErrorKind::MissingRequiredClaim(_)
            | ErrorKind::InvalidClaimFormat(_)
            | ErrorKind::InvalidSubject => AuthError::BadClaims,
            _ => AuthError::Malformed,
        }
    }
}

/// Who a socket is, and what rooms it may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's `sub`; `None` for an anonymous socket.
    pub user: Option<String>,
    /// The rooms it may join and publish to.
    pub grants: Grants,
}

/// The claims a node reads. `rooms` grants join and publish at once; `join` and `publish` one
/// each.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    join: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
}

/// Longest `sub` accepted: it names a room (`user:<sub>`).
pub const MAX_SUB_CHARS: usize = 200;
/// Most room patterns a token may grant.
pub const MAX_GRANTS: usize = 256;

enum Keys {
    One(DecodingKey),
    Set(Vec<(String, DecodingKey)>),
}

/// Checks tokens against the configured key and claims.
pub struct Verifier {
    keys: Keys,
    alg_name: &'static str,
    validation: Validation,
}

/// The `alg` of a token's header.
fn header_alg(token: &str) -> Result<String, AuthError> {
    use base64::Engine as _;
    #[derive(Deserialize)]
    struct Alg {
        alg: String,
    }
    let header = token.split('.').next().ok_or(AuthError::Malformed)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .map_err(|_| AuthError::Malformed)?;
    let alg: Alg = serde_json::from_slice(&json).map_err(|_| AuthError::Malformed)?;
    Ok(alg.alg)
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

fn read(path: &PathBuf, what: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| ConfigError::new(format!("{what} {}: {e}", path.display())))
}

impl Verifier {
    /// The verifier `c` describes; `None` with `--auth none`.
    ///
    /// # Errors
    /// A missing or unreadable key, a key of the wrong kind for the algorithm, or both a
    /// secret and a key.
    pub fn from_config(c: &AuthConfig) -> Result<Option<Arc<Self>>, ConfigError> {
        if c.mode == AuthMode::None {
            return Ok(None);
        }
        let bad = |m: &str| ConfigError::new(format!("--auth jwt: {m}"));
        let alg = c.key.jwt_algorithm;
        let secret = c.key.secret().map_err(|e| bad(&e))?;
        let keys = match alg {
            JwtAlgorithm::Hs256 => {
                if c.jwt_public_key_file.is_some() || c.jwt_jwks_file.is_some() {
                    return Err(bad("HS256 takes a secret, not a public key or JWKS"));
                }
                let secret =
                    secret.ok_or_else(|| bad("HS256 needs --jwt-secret-file or --jwt-secret"))?;
                if secret.len() < 32 {
                    return Err(bad("the HS256 secret must be at least 32 bytes"));
                }
                let key = DecodingKey::from_secret(&secret).map_err(|e| bad(&e.to_string()))?;
                Keys::One(key)
            }
            JwtAlgorithm::Rs256 | JwtAlgorithm::Es256 => {
                if secret.is_some() {
                    return Err(bad(
                        "RS256 and ES256 take a public key or JWKS, not a secret",
                    ));
                }
                match (&c.jwt_public_key_file, &c.jwt_jwks_file) {
                    (Some(p), None) => Keys::One(
                        pem_key(alg, &read(p, "--jwt-public-key-file")?).map_err(|e| bad(&e))?,
                    ),
                    (None, Some(p)) => Keys::Set(
                        jwks_keys(alg, &read(p, "--jwt-jwks-file")?).map_err(|e| bad(&e))?,
                    ),
                    _ => {
                        return Err(bad(
                            "RS256 and ES256 need exactly one of --jwt-public-key-file, --jwt-jwks-file",
                        ));
                    }
                }
            }
        };
        let mut validation = Validation::new(alg.algorithm());
        validation.leeway = c.jwt_leeway_s;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &c.jwt_audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &c.jwt_issuer {
            validation.set_issuer(&[iss]);
        }
        let alg_name = match alg {
            JwtAlgorithm::Hs256 => "HS256",
            JwtAlgorithm::Rs256 => "RS256",
            JwtAlgorithm::Es256 => "ES256",
        };
        Ok(Some(Arc::new(Self {
            keys,
            alg_name,
            validation,
        })))
    }

    /// The identity `token` proves.
    ///
    /// # Errors
    /// Why the token is refused.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        // The header is read first, and its `alg` compared with the one configured: `none`
        // and an HS token against an RS key are refused by name, never tried.
        if header_alg(token)? != self.alg_name {
            return Err(AuthError::WrongAlgorithm);
        }
        let key = match &self.keys {
            Keys::One(k) => k,
            Keys::Set(keys) => {
                let header =
                    jsonwebtoken::decode_header(token).map_err(|e| AuthError::from_jwt(&e))?;
                let kid = header.kid.ok_or(AuthError::UnknownKey)?;
                &keys
                    .iter()
                    .find(|(k, _)| *k == kid)
                    .ok_or(AuthError::UnknownKey)?
                    .1
            }
        };
        // Claims as JSON first: once the signature holds, claims of the wrong shape are
        // `bad_claims`, not a malformed token.
        let data = jsonwebtoken::decode::<serde_json::Value>(token, key, &self.validation)
            .map_err(|e| AuthError::from_jwt(&e))?;
        let claims: Claims =
            serde_json::from_value(data.claims).map_err(|_| AuthError::BadClaims)?;
        let Claims {
            sub,
            rooms,
            join,
            publish,
        } = claims;
        if sub.is_empty() || sub.chars().count() > MAX_SUB_CHARS {
            return Err(AuthError::BadClaims);
        }
        if rooms.len() + join.len() + publish.len() > MAX_GRANTS {
            return Err(AuthError::BadClaims);
        }
        let join = rooms.iter().chain(&join).cloned().collect::<Vec<_>>();
        let publish = rooms.into_iter().chain(publish).collect::<Vec<_>>();
        Ok(Identity {
            user: Some(sub),
            grants: Grants::new(&join, &publish),
        })
    }
}

fn pem_key(alg: JwtAlgorithm, pem: &[u8]) -> Result<DecodingKey, String> {
    let key = match alg {
        JwtAlgorithm::Rs256 => DecodingKey::from_rsa_pem(pem),
        _ => DecodingKey::from_ec_pem(pem),
    };
    key.map_err(|e| format!("the public key is not a PEM {alg:?} key: {e}"))
}

fn jwks_keys(alg: JwtAlgorithm, json: &[u8]) -> Result<Vec<(String, DecodingKey)>, String> {
    let set: JwkSet =
        serde_json::from_slice(json).map_err(|e| format!("the JWKS is not valid: {e}"))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let Some(kid) = &jwk.common.key_id else {
            continue;
        };
        // A key meant for another algorithm is left out rather than tried.
        let fits = matches!(
            (&jwk.algorithm, alg),
            (
                jsonwebtoken::jwk::AlgorithmParameters::RSA(_),
                JwtAlgorithm::Rs256
            ) | (
                jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_),
                JwtAlgorithm::Es256
            )
        );
        if fits {
            let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("JWKS key {kid}: {e}"))?;
            keys.push((kid.clone(), key));
        }
    }
    if keys.is_empty() {
        return Err(format!("the JWKS has no {alg:?} key with a kid"));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests;
