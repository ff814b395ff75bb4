//! Who may open the Admin UI's namespace: the UI's own login (a username and a password
//! checked against a bcrypt hash), then the session id it is given and keeps (in Redis when the
//! cluster has one, so a UI that reconnects to another node stays logged in).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use fred::{clients::Client, interfaces::KeysInterface as _, types::Expiration};
use rand::Rng as _;
use serde_json::Value;

/// What the UI is told when it may not in: the exact text the page turns into its own
/// "Invalid credentials" message (any other text is shown raw).
pub const INVALID: &str = "invalid credentials";

/// How long a session id lets a UI back in, as the reference server keeps it.
const SESSION_TTL: Duration = Duration::from_secs(24 * 3600);

/// Longest username or password read from a handshake: a bcrypt check is costly work the
/// client chooses to make the node do, and bcrypt reads at most 72 bytes anyway.
const MAX_FIELD_BYTES: usize = 256;

/// The configured login: the username and the bcrypt hash of the password.
#[derive(Clone)]
pub struct Credentials {
    username: String,
    hash: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A bad `--admin-ui-password-bcrypt`.
#[derive(Debug, thiserror::Error)]
#[error("--admin-ui-password-bcrypt is not a bcrypt hash ($2a$, $2b$ or $2y$, 60 characters)")]
pub struct NotAHash;

impl Credentials {
    /// The login `username` / the password whose bcrypt hash is `hash`.
    ///
    /// # Errors
    /// `hash` is not a bcrypt hash (a plain password given by mistake is refused at start).
    pub fn new(username: &str, hash: &str) -> Result<Self, NotAHash> {
        hash.parse::<bcrypt::HashParts>().map_err(|_| NotAHash)?;
        Ok(Self {
            username: username.to_owned(),
            hash: hash.to_owned(),
        })
    }

    /// Whether `auth` (the handshake payload) carries this login. bcrypt runs on the blocking
    /// pool: it takes tens of milliseconds of CPU by design.
    pub async fn check(&self, auth: &Value) -> bool {
        let field = |k: &str| auth.get(k).and_then(Value::as_str).map(str::to_owned);
        let (Some(user), Some(password)) = (field("username"), field("password")) else {
            return false;
        };
        if user != self.username || password.len() > MAX_FIELD_BYTES {
            return false;
        }
        let hash = self.hash.clone();
        tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
            .await
            .unwrap_or(false)
    }
}

/// The UI's session ids: in Redis, shared by the nodes, or in this node alone.
pub enum Sessions {
    Redis { client: Client, prefix: String },
    Local(Mutex<HashMap<String, Instant>>),
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Sessions::Redis { .. } => "Sessions::Redis",
            Sessions::Local(_) => "Sessions::Local",
        })
    }
}

impl Sessions {
    fn key(prefix: &str, id: &str) -> String {
        format!("{prefix}:admin-ui:session:{id}")
    }

    /// A new session id, kept for a day; `None` when it could not be kept (the UI logs in
    /// with its password again next time).
    pub async fn open(&self) -> Option<String> {
        let mut bytes = [0u8; 16];
        rand::rng().fill(&mut bytes);
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        match self {
            Sessions::Redis { client, prefix } => {
                let ttl = i64::try_from(SESSION_TTL.as_secs()).unwrap_or(i64::MAX);
                let set: Result<(), _> = client
                    .set(
                        Self::key(prefix, &id),
                        1,
                        Some(Expiration::EX(ttl)),
                        None,
                        false,
                    )
                    .await;
                if let Err(e) = set {
                    tracing::warn!(error = %e, "admin UI session not stored");
                    return None;
                }
            }
            Sessions::Local(m) => {
                let mut m = m.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                m.retain(|_, t| now.duration_since(*t) < SESSION_TTL);
                m.insert(id.clone(), now);
            }
        }
        Some(id)
    }

    /// Whether `id` is a live session.
    pub async fn is_open(&self, id: &str) -> bool {
        // Ours are 32 hex digits: anything else is not looked up.
        if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return false;
        }
        match self {
            Sessions::Redis { client, prefix } => client
                .exists::<u32, _>(Self::key(prefix, id))
                .await
                .is_ok_and(|n| n == 1),
            Sessions::Local(m) => m
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(id)
                .is_some_and(|t| t.elapsed() < SESSION_TTL),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Cost 4: the lowest bcrypt allows, so the test does not spend a second hashing.
    fn creds() -> Credentials {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        Credentials::new("admin", &hash).unwrap()
    }

    #[test]
    fn a_plain_password_is_refused_as_a_hash() {
        assert!(Credentials::new("admin", "s3cret").is_err());
        assert!(Credentials::new("admin", "").is_err());
    }

    #[tokio::test]
    async fn only_the_right_username_and_password_pass() {
        let c = creds();
        let ok = serde_json::json!({"username": "admin", "password": "s3cret"});
        assert!(c.check(&ok).await);
        for bad in [
            serde_json::json!({"username": "admin", "password": "S3cret"}),
            serde_json::json!({"username": "root", "password": "s3cret"}),
            serde_json::json!({"username": "admin"}),
            serde_json::json!({"username": "admin", "password": 5}),
            serde_json::json!({"username": "admin", "password": "x".repeat(10_000)}),
            serde_json::json!(null),
        ] {
            assert!(!c.check(&bad).await, "{bad}");
        }
    }

    #[tokio::test]
    async fn a_local_session_id_opens_until_forgotten_and_a_forged_one_never() {
        let s = Sessions::Local(Mutex::default());
        let id = s.open().await.unwrap();
        assert!(s.is_open(&id).await);
        assert!(!s.is_open(&"0".repeat(32)).await);
        assert!(!s.is_open("../../etc").await);
    }
}
