//! Token checks: every refusal has its code, and no input panics.

use jsonwebtoken::{EncodingKey, Header};
use proptest::prelude::*;
use serde_json::json;

use super::*;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn config() -> AuthConfig {
    AuthConfig {
        mode: AuthMode::Jwt,
        key: JwtKey {
            jwt_algorithm: JwtAlgorithm::Hs256,
            jwt_secret: Some(SECRET.to_owned()),
            jwt_secret_file: None,
        },
        jwt_public_key_file: None,
        jwt_jwks_file: None,
        jwt_audience: Some("app".to_owned()),
        jwt_issuer: None,
        jwt_leeway_s: 5,
        auth_namespaces: Vec::new(),
        anonymous_rooms: vec!["*".to_owned()],
    }
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn sign(claims: &serde_json::Value, secret: &str) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes()).unwrap();
    jsonwebtoken::encode(&Header::default(), claims, &key).unwrap()
}

fn verifier() -> Arc<Verifier> {
    Verifier::from_config(&config()).unwrap().unwrap()
}

#[test]
fn a_valid_token_gives_its_user_and_grants() {
    let t = sign(
        &json!({"sub": "alice", "exp": now() + 60, "aud": "app", "join": ["chat:*"], "publish": ["chat:general"]}),
        SECRET,
    );
    let id = verifier().verify(&t).unwrap();
    assert_eq!(id.user.as_deref(), Some("alice"));
    assert!(id.grants.may_join("chat:x").is_ok());
    assert!(id.grants.may_publish("chat:x").is_err());
    assert!(id.grants.may_publish("chat:general").is_ok());
}

#[test]
fn each_bad_token_has_its_code() {
    let v = verifier();
    let ok = |c: serde_json::Value| sign(&c, SECRET);
    let cases = [
        (
            ok(json!({"sub": "a", "exp": now() - 60, "aud": "app"})),
            AuthError::Expired,
        ),
        (
            ok(json!({"sub": "a", "exp": now() + 60, "nbf": now() + 60, "aud": "app"})),
            AuthError::NotYetValid,
        ),
        (
            ok(json!({"sub": "a", "exp": now() + 60, "aud": "other"})),
            AuthError::WrongAudience,
        ),
        (
            ok(json!({"exp": now() + 60, "aud": "app"})),
            AuthError::BadClaims,
        ),
        (
            ok(json!({"sub": "", "exp": now() + 60, "aud": "app"})),
            AuthError::BadClaims,
        ),
        (ok(json!({"sub": "a", "aud": "app"})), AuthError::BadClaims),
        (
            ok(json!({"sub": "a", "exp": now() + 60, "aud": "app", "rooms": "x"})),
            AuthError::BadClaims,
        ),
        (
            sign(
                &json!({"sub": "a", "exp": now() + 60, "aud": "app"}),
                "another secret of at least 32 b",
            ),
            AuthError::BadSignature,
        ),
        ("not a token".to_owned(), AuthError::Malformed),
        ("a.b.c".to_owned(), AuthError::Malformed),
    ];
    for (token, want) in cases {
        assert_eq!(v.verify(&token), Err(want), "{token}");
    }
}

#[test]
fn alg_none_and_another_algorithm_are_refused_by_name() {
    use base64::Engine as _;
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let claims = b64(json!({"sub": "a", "exp": now() + 60, "aud": "app"}));
    let none = format!("{}.{claims}.", b64(json!({"alg": "none", "typ": "JWT"})));
    assert_eq!(verifier().verify(&none), Err(AuthError::WrongAlgorithm));
    let hs384 = format!("{}.{claims}.sig", b64(json!({"alg": "HS384"})));
    assert_eq!(verifier().verify(&hs384), Err(AuthError::WrongAlgorithm));
}

#[test]
fn bad_key_configurations_stop_the_start() {
    let mut c = config();
    c.key.jwt_secret = Some("short".to_owned());
    assert!(Verifier::from_config(&c).is_err());
    let mut c = config();
    c.key.jwt_secret = None;
    assert!(Verifier::from_config(&c).is_err(), "no secret");
    let mut c = config();
    c.key.jwt_algorithm = JwtAlgorithm::Rs256;
    assert!(Verifier::from_config(&c).is_err(), "RS256 with a secret");
    let mut c = config();
    c.mode = AuthMode::None;
    assert!(Verifier::from_config(&c).unwrap().is_none());
}

proptest! {
    /// Any string as a token: never a panic, always a refusal with a known code.
    #[test]
    fn random_tokens_are_refused_with_a_code(token in ".{0,300}") {
        let e = verifier().verify(&token).unwrap_err();
        prop_assert!(AuthError::ALL.contains(&e));
    }

    /// Three base64url parts of random JSON-ish bytes (a shape that reaches the decoder).
    #[test]
    fn random_jwt_shaped_tokens_are_refused_with_a_code(
        h in proptest::collection::vec(any::<u8>(), 0..80),
        p in proptest::collection::vec(any::<u8>(), 0..200),
        s in proptest::collection::vec(any::<u8>(), 0..64),
        alg in prop_oneof![
            Just("HS256".to_owned()),
            Just("none".to_owned()),
            Just("RS256".to_owned()),
            ".{0,8}",
        ],
    ) {
        use base64::Engine as _;
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut header = json!({"alg": alg}).to_string().into_bytes();
        header.extend(h);
        let token = format!("{}.{}.{}", e.encode(header), e.encode(p), e.encode(s));
        let r = verifier().verify(&token);
        prop_assert!(r.as_ref().is_err_and(|e| AuthError::ALL.contains(e)), "{r:?}");
    }
}
