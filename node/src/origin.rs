//! Which web pages may open Socket.IO connections (`--allowed-origins`): a browser sends the
//! page's `Origin` with every WebSocket upgrade and cross-origin poll, so a request from a
//! page that is not listed is refused before it reaches the Socket.IO layer, and an allowed
//! page (any page with the default `*`) gets the CORS headers its polls need and an answer to
//! its preflights. Clients that are not browsers send no `Origin` and are not concerned;
//! tokens (`--auth jwt`) are what authenticates them.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use prometheus::IntCounter;

use crate::config_error::ConfigError;

/// The pages allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origins {
    /// Any page (the default: the node's own chat page is one origin among others).
    Any,
    /// These origins only, each `scheme://host[:port]`, lowercase.
    Listed(Vec<String>),
}

impl Origins {
    /// `*` alone, or a list of origins.
    ///
    /// # Errors
    /// An entry that is not `http(s)://host[:port]`.
    pub fn parse(list: &[String]) -> Result<Self, ConfigError> {
        let list: Vec<&str> = list
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect();
        if list.is_empty() || list == ["*"] {
            return Ok(Origins::Any);
        }
        let mut out = Vec::new();
        for o in list {
            let lower = o.trim_end_matches('/').to_ascii_lowercase();
            let rest = lower
                .strip_prefix("https://")
                .or_else(|| lower.strip_prefix("http://"));
            let valid =
                rest.is_some_and(|r| !r.is_empty() && !r.contains(['/', '?', '#', '*', ' ']));
            if !valid {
                return Err(ConfigError::new(format!(
                    "--allowed-origins: {o:?} is not * or http(s)://host[:port]"
                )));
            }
            out.push(lower);
        }
        Ok(Origins::Listed(out))
    }

    /// Whether a page of `origin` may connect.
    pub fn allows(&self, origin: &str) -> bool {
        match self {
            Origins::Any => true,
            Origins::Listed(l) => l.iter().any(|o| o.eq_ignore_ascii_case(origin)),
        }
    }
}

/// What the check needs.
#[derive(Debug, Clone)]
pub struct OriginCheck {
    /// The allowed pages.
    pub origins: Arc<Origins>,
    /// `ioscale_http_origin_refused_total`.
    pub refused: IntCounter,
}

/// How long a browser may reuse a preflight's answer (`Access-Control-Max-Age`, seconds).
/// Browsers cache it per URL and engine.io-client puts a random `t` in every poll's URL, so
/// it saves little for polls; ten minutes bounds how long a page keeps an answer after the
/// node's `--allowed-origins` changed.
const PREFLIGHT_MAX_AGE_S: &str = "600";
/// `Access-Control-Allow-Headers` when the preflight asked for none (or for none that is a
/// header name): the header socket.io-client's polls set.
const DEFAULT_ALLOW_HEADERS: &str = "content-type";
/// The most header names a preflight's answer echoes; a page asking for more is refused by
/// its browser. socket.io-client asks for a few (`extraHeaders`), so this only bounds what an
/// odd request makes the node write.
const MAX_ECHOED_HEADERS: usize = 16;
/// The longest header name echoed.
const MAX_HEADER_NAME_LEN: usize = 64;

/// The CORS headers of an allowed page's answer.
///
/// They echo the page's origin with `Access-Control-Allow-Credentials: true` (and
/// `Vary: Origin`, so no cache hands one page's answer to another) rather than answering
/// `*`, also when every page is allowed: socket.io-client's polls go without credentials
/// by default, but a page may set `withCredentials: true` (a load balancer's sticky-session
/// cookie needs it, or the page's own cookies), and browsers refuse `*` on a request with
/// credentials. An echoed origin works for both.
///
/// Security: with credentials allowed, a page of any allowed origin may send this host's
/// cookies along and read the answer. The node authenticates with tokens (`--auth jwt`, in
/// the handshake), not cookies, and sets none itself, so a page gains nothing it could not
/// get with `*` alone. A deployment that does put cookie-based auth in front of the nodes
/// (an SSO proxy) must list its pages in `--allowed-origins`.
fn cors(headers: &mut HeaderMap, origin: &HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    headers.append(header::VARY, HeaderValue::from_static("origin"));
}

/// Whether `name` is an HTTP token (RFC 9110 `tchar`s), so it can be a header name.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `Access-Control-Allow-Headers` for a preflight: the names its
/// `Access-Control-Request-Headers` asked for, lowercase, each once, at most
/// [`MAX_ECHOED_HEADERS`] of at most [`MAX_HEADER_NAME_LEN`] bytes; what is not a header name
/// is dropped (its browser then refuses the page's request, as it should).
fn allow_headers(request: &HeaderMap) -> HeaderValue {
    let mut names: Vec<String> = Vec::new();
    let asked = request
        .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|n| n.len() <= MAX_HEADER_NAME_LEN && is_token(n));
    for name in asked {
        let name = name.to_ascii_lowercase();
        if !names.contains(&name) {
            if names.len() == MAX_ECHOED_HEADERS {
                break;
            }
            names.push(name);
        }
    }
    if names.is_empty() {
        return HeaderValue::from_static(DEFAULT_ALLOW_HEADERS);
    }
    // Tokens joined by ", " are always a valid header value.
    HeaderValue::from_str(&names.join(", "))
        .unwrap_or_else(|_| HeaderValue::from_static(DEFAULT_ALLOW_HEADERS))
}

/// The answer to an allowed page's preflight: 204 and what it may send. engineioxide
/// refuses `OPTIONS` (400), so the node answers it here.
fn preflight(origin: &HeaderValue, request: &HeaderMap) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    cors(h, origin);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST"),
    );
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allow_headers(request));
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(PREFLIGHT_MAX_AGE_S),
    );
    h.append(
        header::VARY,
        HeaderValue::from_static("access-control-request-headers"),
    );
    resp
}

/// The middleware in front of `/socket.io/`: refuses a listed-origins node's requests from
/// other pages with 403 `{ok: false, code: "forbidden"}`, answers the allowed pages'
/// preflights, and adds the CORS headers to their answers (with `*`, every page's).
pub async fn check(State(check): State<OriginCheck>, req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with("/socket.io/") {
        return next.run(req).await;
    }
    // Without `Origin` it is not a browser page's request: nothing to check or to add.
    let Some(origin) = req.headers().get(header::ORIGIN).cloned() else {
        return next.run(req).await;
    };
    let allowed =
        *check.origins == Origins::Any || origin.to_str().is_ok_and(|o| check.origins.allows(o));
    if !allowed {
        check.refused.inc();
        let body = axum::Json(serde_json::json!({
            "ok": false,
            "code": "forbidden",
            "error": "this origin may not connect (--allowed-origins)",
        }));
        return (StatusCode::FORBIDDEN, body).into_response();
    }
    if req.method() == Method::OPTIONS {
        return preflight(&origin, req.headers());
    }
    let mut resp = next.run(req).await;
    cors(resp.headers_mut(), &origin);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_parse_and_match() {
        assert_eq!(Origins::parse(&["*".into()]).unwrap(), Origins::Any);
        assert_eq!(Origins::parse(&[]).unwrap(), Origins::Any);
        let o = Origins::parse(&[
            "https://App.example.com".into(),
            "http://localhost:8080/".into(),
        ])
        .unwrap();
        assert!(o.allows("https://app.example.com"));
        assert!(o.allows("http://localhost:8080"));
        assert!(!o.allows("http://localhost:8081"));
        assert!(!o.allows("https://evil.example.com"));
        assert!(!o.allows("null"));
        for bad in [
            "app.example.com",
            "https://x/path",
            "ftp://x",
            "https://*.x",
            "*,x",
        ] {
            assert!(
                Origins::parse(&[bad.into(), "https://ok".into()]).is_err(),
                "{bad}"
            );
        }
    }

    use axum::{Router, body::Body, routing::get};
    use tower::ServiceExt as _;

    const PAGE: &str = "http://127.0.0.1:4000";

    /// A stand-in for the Socket.IO layer (GET and POST only, like engineioxide, so an
    /// `OPTIONS` that reaches it gets 405) and another route, behind the middleware.
    fn router(origins: Origins) -> (Router, IntCounter) {
        let refused = IntCounter::new("refused", "refused").unwrap();
        let state = OriginCheck {
            origins: Arc::new(origins),
            refused: refused.clone(),
        };
        let router = Router::new()
            .route(
                "/socket.io/",
                get(|| async { "io" }).post(|| async { "ok" }),
            )
            .route("/api/v1/x", get(|| async { "api" }))
            .layer(axum::middleware::from_fn_with_state(state, check));
        (router, refused)
    }

    async fn send(
        router: &Router,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Response {
        let mut req = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        router
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    fn get_header<'a>(resp: &'a Response, name: &str) -> Option<&'a str> {
        resp.headers().get(name).and_then(|v| v.to_str().ok())
    }

    fn vary(resp: &Response) -> Vec<String> {
        resp.headers()
            .get_all(header::VARY)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
            .collect()
    }

    fn listed() -> Origins {
        Origins::parse(&[PAGE.into()]).unwrap()
    }

    #[tokio::test]
    async fn any_origin_polls_get_the_page_echoed_with_credentials() {
        let (r, refused) = router(Origins::Any);
        for method in [Method::GET, Method::POST] {
            let resp = send(&r, method.clone(), "/socket.io/?EIO=4", &[("origin", PAGE)]).await;
            assert_eq!(resp.status(), StatusCode::OK, "{method}");
            assert_eq!(get_header(&resp, "access-control-allow-origin"), Some(PAGE));
            assert_eq!(
                get_header(&resp, "access-control-allow-credentials"),
                Some("true")
            );
            assert_eq!(vary(&resp), ["origin"]);
        }
        // Any page, also one no list would name.
        let resp = send(&r, Method::GET, "/socket.io/", &[("origin", "null")]).await;
        assert_eq!(
            get_header(&resp, "access-control-allow-origin"),
            Some("null")
        );
        assert_eq!(refused.get(), 0);
    }

    #[tokio::test]
    async fn preflights_are_answered_with_what_the_page_asked() {
        for origins in [Origins::Any, listed()] {
            let (r, _) = router(origins.clone());
            let resp = send(
                &r,
                Method::OPTIONS,
                "/socket.io/?EIO=4&transport=polling",
                &[
                    ("origin", PAGE),
                    ("access-control-request-method", "POST"),
                    ("access-control-request-headers", "Content-Type, X-Token"),
                ],
            )
            .await;
            assert_eq!(resp.status(), StatusCode::NO_CONTENT, "{origins:?}");
            let want = [
                ("access-control-allow-origin", PAGE),
                ("access-control-allow-credentials", "true"),
                ("access-control-allow-methods", "GET, POST"),
                ("access-control-allow-headers", "content-type, x-token"),
                ("access-control-max-age", PREFLIGHT_MAX_AGE_S),
            ];
            for (name, value) in want {
                assert_eq!(get_header(&resp, name), Some(value), "{origins:?} {name}");
            }
            assert_eq!(vary(&resp), ["origin", "access-control-request-headers"]);
        }
    }

    #[tokio::test]
    async fn requests_without_origin_or_outside_socket_io_pass_untouched() {
        for origins in [Origins::Any, listed()] {
            let (r, refused) = router(origins.clone());
            let resp = send(&r, Method::GET, "/socket.io/", &[]).await;
            assert_eq!(resp.status(), StatusCode::OK, "{origins:?}");
            assert!(resp.headers().get("access-control-allow-origin").is_none());
            // Not a browser's preflight: the Socket.IO layer answers it.
            let resp = send(&r, Method::OPTIONS, "/socket.io/", &[]).await;
            assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED, "{origins:?}");
            let evil = [("origin", "https://evil.example.com")];
            let resp = send(&r, Method::GET, "/api/v1/x", &evil).await;
            assert_eq!(resp.status(), StatusCode::OK, "{origins:?}");
            assert!(resp.headers().get("access-control-allow-origin").is_none());
            assert_eq!(refused.get(), 0);
        }
    }

    #[tokio::test]
    async fn listed_origins_refuse_other_pages_and_their_preflights() {
        let (r, refused) = router(listed());
        let evil = [
            ("origin", "https://evil.example.com"),
            ("access-control-request-method", "POST"),
        ];
        for method in [Method::GET, Method::POST, Method::OPTIONS] {
            let resp = send(&r, method.clone(), "/socket.io/", &evil).await;
            assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{method}");
            assert!(resp.headers().get("access-control-allow-origin").is_none());
            let body = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["ok"], false);
            assert_eq!(body["code"], "forbidden");
        }
        assert_eq!(refused.get(), 3);
        // The listed page, in another case, is the same origin.
        let resp = send(
            &r,
            Method::GET,
            "/socket.io/",
            &[("origin", "HTTP://127.0.0.1:4000")],
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            get_header(&resp, "access-control-allow-origin"),
            Some("HTTP://127.0.0.1:4000")
        );
        assert_eq!(refused.get(), 3);
    }

    fn asked(values: &[&str]) -> String {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                HeaderValue::from_str(v).unwrap(),
            );
        }
        allow_headers(&h).to_str().unwrap().to_owned()
    }

    #[test]
    fn allowed_headers_are_the_asked_names_sanitised_and_bounded() {
        assert_eq!(asked(&[]), DEFAULT_ALLOW_HEADERS);
        assert_eq!(asked(&[" , ,"]), DEFAULT_ALLOW_HEADERS);
        assert_eq!(
            asked(&["Authorization,X-Token", "x-token, content-type"]),
            "authorization, x-token, content-type"
        );
        // What is not a header name is dropped, the rest kept.
        assert_eq!(asked(&["x-ok, bad name, a:b, (c), x\"y, ok2"]), "x-ok, ok2");
        let long = "x".repeat(MAX_HEADER_NAME_LEN + 1);
        assert_eq!(asked(&[&long]), DEFAULT_ALLOW_HEADERS);
        let max = "y".repeat(MAX_HEADER_NAME_LEN);
        assert_eq!(asked(&[&max]), max);
        let many: Vec<String> = (0..40).map(|i| format!("x-h{i}")).collect();
        let echoed = asked(&[&many.join(",")]);
        let want: Vec<&str> = many
            .iter()
            .take(MAX_ECHOED_HEADERS)
            .map(String::as_str)
            .collect();
        assert_eq!(echoed, want.join(", "));
    }
}
