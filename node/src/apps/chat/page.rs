//! The chat page of seed "Getting started with Socket.io" at `GET /` (HTML and JS embedded in
//! the binary from `static/`); it loads the socket.io client the core serves
//! (`crate::client_script`).

use axum::{
    Router,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};

/// The page's own script.
pub const PAGE_SCRIPT_ROUTE: &str = "/js/chat.js";

const INDEX_HTML: &str = include_str!("static/index.html");
const CHAT_JS: &str = include_str!("static/chat.js");

/// Only the node's own scripts and connections; inline styles are the page's only inline part.
const CSP: &str = "default-src 'self'; connect-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// `GET /` (the page) and `GET /js/chat.js` (its script).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(async || asset("text/html; charset=utf-8", INDEX_HTML)),
        )
        .route(
            PAGE_SCRIPT_ROUTE,
            get(async || asset("text/javascript; charset=utf-8", CHAT_JS)),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_script::CLIENT_SCRIPT_ROUTE;

    #[test]
    fn the_page_loads_the_client_and_its_script() {
        assert!(INDEX_HTML.contains(CLIENT_SCRIPT_ROUTE));
        assert!(INDEX_HTML.contains(PAGE_SCRIPT_ROUTE));
        // Messages are rendered as text, never as HTML.
        assert!(!CHAT_JS.contains("innerHTML"));
    }
}
