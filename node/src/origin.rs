//! Which web pages may open Socket.IO connections (`--allowed-origins`): a browser sends the
//! page's `Origin` with every WebSocket upgrade and cross-origin poll, so a request from a
//! page that is not listed is refused before it reaches the Socket.IO layer, and a listed
//! page's polls get the CORS headers they need. Clients that are not browsers send no
//! `Origin` and are not concerned; tokens (`--auth jwt`) are what authenticates them.

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

fn cors(headers: &mut HeaderMap, origin: &HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    headers.append(header::VARY, HeaderValue::from_static("origin"));
}

/// The middleware in front of `/socket.io/`: refuses a listed-origins node's requests from
/// other pages with 403 `{ok: false, code: "forbidden"}`, answers CORS preflights, and adds the
/// CORS headers to the allowed pages' answers.
pub async fn check(State(check): State<OriginCheck>, req: Request, next: Next) -> Response {
    let Origins::Listed(_) = check.origins.as_ref() else {
        return next.run(req).await;
    };
    if !req.uri().path().starts_with("/socket.io/") {
        return next.run(req).await;
    }
    let Some(origin) = req.headers().get(header::ORIGIN).cloned() else {
        return next.run(req).await;
    };
    let allowed = origin.to_str().is_ok_and(|o| check.origins.allows(o));
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
        let mut resp = StatusCode::NO_CONTENT.into_response();
        let h = resp.headers_mut();
        cors(h, &origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type"),
        );
        return resp;
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
}
