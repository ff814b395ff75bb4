//! Who may open a socket on a namespace: every handshake passes here before socketioxide
//! sends CONNECT. A draining node, a full node (`--max-connections`) and a missing or bad
//! token (`--auth jwt`) are refused with a `connect_error` whose message is `<code>: <text>`,
//! counted in `ioscale_connect_refused_total{reason}` (the middleware is in `handshake`). An
//! admitted socket carries its [`Identity`] in its extensions.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use serde::Deserialize;
use socketioxide::socket::Socket;

use crate::{
    auth::{AuthConfig, AuthError, AuthMode, Identity, Verifier},
    config_error::ConfigError,
    rooms::Grants,
};

/// Why a handshake was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The token (see [`AuthError`]).
    #[error("{0}")]
    Auth(AuthError),
    /// The node is shutting down; the client should connect to another one.
    #[error("unavailable: this node is shutting down, connect to another")]
    Draining,
    /// `--max-connections` sockets are open on this node.
    #[error("busy: this node has reached its connection limit")]
    Full,
    /// A CONNECT payload that is not an object (the protocol allows an object or nothing).
    #[error("bad_request: the CONNECT payload must be an object")]
    BadPayload,
}

impl Refusal {
    /// The code, the `reason` label of the refusal counter.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Auth(e) => e.code(),
            Refusal::Draining => "draining",
            Refusal::Full => "connection_limit",
            Refusal::BadPayload => "bad_payload",
        }
    }
}

/// The handshake's `auth` payload, as socket.io-client (`auth: {token}`) and python-socketio
/// (`auth={"token": ...}`) send it.
#[derive(Debug, Deserialize)]
pub struct AuthPayload {
    /// The JWT.
    pub token: String,
}

/// The admission policy of a node.
#[derive(Debug)]
pub struct Admission {
    verifier: Option<Arc<Verifier>>,
    /// Namespaces that need a token; `None`: all of them.
    required: Option<HashSet<String>>,
    anonymous: Arc<Identity>,
    max_connections: usize,
    open: AtomicUsize,
}

impl Admission {
    /// The policy the flags describe.
    ///
    /// # Errors
    /// What [`Verifier::from_config`] refuses.
    pub fn new(c: &AuthConfig, max_connections: usize) -> Result<Self, ConfigError> {
        let verifier = Verifier::from_config(c)?;
        let required = (c.mode == AuthMode::Jwt && !c.auth_namespaces.is_empty())
            .then(|| c.auth_namespaces.iter().cloned().collect());
        Ok(Self {
            verifier,
            required,
            anonymous: Arc::new(Identity {
                user: None,
                grants: Grants::new(&c.anonymous_rooms, &c.anonymous_rooms),
            }),
            max_connections,
            open: AtomicUsize::new(0),
        })
    }

    /// Whether the node checks tokens at all (`--auth jwt`).
    pub fn verifies_tokens(&self) -> bool {
        self.verifier.is_some()
    }

    /// Whether sockets of `ns` must bring a token.
    pub fn requires_token(&self, ns: &str) -> bool {
        self.verifier.is_some() && self.required.as_ref().is_none_or(|r| r.contains(ns))
    }

    /// The identity of a handshake on `ns` with `token`.
    ///
    /// # Errors
    /// Why it is refused.
    pub fn admit(
        &self,
        ns: &str,
        draining: bool,
        token: Option<&str>,
    ) -> Result<Arc<Identity>, Refusal> {
        if draining {
            return Err(Refusal::Draining);
        }
        // Checked, not reserved: concurrent handshakes may overshoot by a few.
        if self.open.load(Ordering::Relaxed) >= self.max_connections {
            return Err(Refusal::Full);
        }
        match &self.verifier {
            Some(v) if self.requires_token(ns) => {
                let token = token.ok_or(Refusal::Auth(AuthError::MissingToken))?;
                v.verify(token).map(Arc::new).map_err(Refusal::Auth)
            }
            _ => Ok(self.anonymous.clone()),
        }
    }

    /// A socket opened (see `sockets::common_connect`).
    pub fn opened(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    /// A socket closed.
    pub fn closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The identity admission gave `s`; a socket without one may use no room by name.
pub fn identity<A: socketioxide::adapter::Adapter>(s: &Socket<A>) -> Arc<Identity> {
    s.extensions.get::<Arc<Identity>>().unwrap_or_else(|| {
        Arc::new(Identity {
            user: None,
            grants: Grants::default(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{JwtAlgorithm, JwtKey};

    fn config(mode: AuthMode, namespaces: &[&str]) -> AuthConfig {
        AuthConfig {
            mode,
            key: JwtKey {
                jwt_algorithm: JwtAlgorithm::Hs256,
                jwt_secret: Some("0123456789abcdef0123456789abcdef".to_owned()),
                jwt_secret_file: None,
            },
            jwt_public_key_file: None,
            jwt_jwks_file: None,
            jwt_audience: None,
            jwt_issuer: None,
            jwt_leeway_s: 5,
            auth_namespaces: namespaces.iter().map(|s| (*s).to_owned()).collect(),
            anonymous_rooms: vec!["lobby".to_owned()],
        }
    }

    #[test]
    fn a_draining_or_full_node_refuses_before_any_token_is_read() {
        let a = Admission::new(&config(AuthMode::None, &[]), 1).unwrap();
        assert_eq!(a.admit("/", true, None).unwrap_err(), Refusal::Draining);
        let id = a.admit("/", false, None).unwrap();
        assert_eq!(id.user, None);
        assert!(id.grants.may_join("lobby").is_ok());
        assert!(id.grants.may_join("other").is_err());
        a.opened();
        assert_eq!(a.admit("/", false, None).unwrap_err(), Refusal::Full);
        a.closed();
        assert!(a.admit("/", false, None).is_ok());
    }

    /// Any JSON value, a few levels deep.
    fn json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            ".{0,40}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("token|.{0,8}", inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Any handshake `auth` payload, on any namespace: read as the handshake reads it,
        /// never a panic, and every refusal has a code and a client text that starts with it.
        #[test]
        fn random_handshake_payloads_are_refused_with_a_code(
            payload in json(),
            ns in "/[a-z]{0,8}",
        ) {
            let a = Admission::new(&config(AuthMode::Jwt, &[]), 10).unwrap();
            let token = serde_json::from_value::<AuthPayload>(payload).ok().map(|p| p.token);
            let r = a.admit(&ns, false, token.as_deref()).unwrap_err();
            let text = r.to_string();
            let (code, rest) = text.split_once(": ").unwrap_or(("", ""));
            proptest::prop_assert!(!r.code().is_empty() && !code.is_empty() && !rest.is_empty());
            proptest::prop_assert!(code.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        }
    }

    #[test]
    fn only_the_listed_namespaces_need_a_token() {
        let a = Admission::new(&config(AuthMode::Jwt, &["/pubsub"]), 10).unwrap();
        assert_eq!(
            a.admit("/pubsub", false, None).unwrap_err(),
            Refusal::Auth(AuthError::MissingToken)
        );
        assert_eq!(a.admit("/", false, None).unwrap().user, None);
        let all = Admission::new(&config(AuthMode::Jwt, &[]), 10).unwrap();
        assert!(all.requires_token("/") && all.requires_token("/anything"));
        assert_eq!(
            all.admit("/", false, Some("x")).unwrap_err(),
            Refusal::Auth(AuthError::Malformed)
        );
    }
}
