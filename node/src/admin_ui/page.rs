//! The Admin UI's page at `/admin-ui/`: the built page of `@socket.io/admin-ui` and its icon
//! font (`@mdi/font`), installed from npm with the browser client (`npm ci --prefix
//! node/client`), so the page needs nothing from outside. Its two links to CDNs (Google's
//! Roboto, jsDelivr's icon font) are replaced: the icons come from the node, the text falls
//! back to the browser's sans-serif.

use std::path::{Component, Path, PathBuf};

use axum::{
    Router,
    extract::Path as UrlPath,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::get,
};

use crate::{app::HttpState, client_script::client_dirs, config::Config};

/// Where the page is served; it must end with `/`, its assets are relative to it.
pub const ROUTE: &str = "/admin-ui/";
const UI_IN_PACKAGE: &str = "node_modules/@socket.io/admin-ui/ui/dist";
const ICONS_IN_PACKAGE: &str = "node_modules/@mdi/font";
/// The page's local copy of the icon font's stylesheet (its fonts are `../fonts/…` from it).
const ICONS_CSS: &str = "mdi/css/materialdesignicons.min.css";

/// The installed page and icon font, if found.
#[derive(Debug, Clone)]
struct Dirs {
    ui: PathBuf,
    icons: PathBuf,
}

fn find(config: &Config) -> Option<Dirs> {
    let roots = match &config.admin_ui_dir {
        Some(d) => vec![d.clone()],
        None => client_dirs(),
    };
    roots.into_iter().find_map(|r| {
        let (ui, icons) = (r.join(UI_IN_PACKAGE), r.join(ICONS_IN_PACKAGE));
        (ui.join("index.html").is_file() && icons.is_dir()).then_some(Dirs { ui, icons })
    })
}

/// The page's routes; logs where the page is read from, or that it is not installed.
pub fn routes(config: &Config) -> Router<HttpState> {
    let dirs = find(config);
    match &dirs {
        Some(d) => {
            tracing::info!(path = %d.ui.display(), route = ROUTE, "serving the Admin UI page")
        }
        None => tracing::warn!(
            "Admin UI page not found: {ROUTE} will answer 404 (run `npm ci --prefix node/client` \
             or set --admin-ui-dir)"
        ),
    }
    let index = dirs.clone();
    let assets = dirs;
    Router::new()
        .route("/admin-ui", get(|| async { Redirect::permanent(ROUTE) }))
        .route(ROUTE, get(move || serve_index(index.clone())))
        .route(
            "/admin-ui/{*path}",
            get(move |UrlPath(path): UrlPath<String>| serve_asset(assets.clone(), path)),
        )
}

/// `index.html`, its CDN links replaced.
fn rewrite_index(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(start) = rest.find("<link") {
        let Some(len) = rest[start..].find('>') else {
            break;
        };
        let tag = &rest[start..=start + len];
        out.push_str(&rest[..start]);
        if tag.contains("materialdesignicons") {
            out.push_str(&format!(r#"<link rel="stylesheet" href="{ICONS_CSS}">"#));
        } else if !tag.contains("https://") && !tag.contains("http://") {
            out.push_str(tag);
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out
}

async fn serve_index(dirs: Option<Dirs>) -> Response {
    let Some(d) = dirs else {
        return not_installed();
    };
    match tokio::fs::read_to_string(d.ui.join("index.html")).await {
        Ok(html) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )],
            rewrite_index(&html),
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the Admin UI page");
            not_installed()
        }
    }
}

/// A relative path of plain components only: nothing above the served directory.
fn safe(path: &str) -> Option<&Path> {
    let p = Path::new(path);
    p.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then_some(p)
        .filter(|p| p.components().next().is_some())
}

async fn serve_asset(dirs: Option<Dirs>, path: String) -> Response {
    let Some(d) = dirs else {
        return not_installed();
    };
    let Some(rel) = safe(&path) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let file = match rel.strip_prefix("mdi") {
        Ok(inside) => d.icons.join(inside),
        Err(_) => d.ui.join(rel),
    };
    match tokio::fs::read(&file).await {
        Ok(body) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(content_type(&file)),
                ),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("max-age=300"),
                ),
            ],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

fn content_type(p: &Path) -> &'static str {
    match p.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("woff2") => "font/woff2",
        Some("woff") => "font/woff",
        Some("ttf") => "font/ttf",
        Some("map" | "json") => "application/json",
        _ => "application/octet-stream",
    }
}

fn not_installed() -> Response {
    (
        StatusCode::NOT_FOUND,
        "Admin UI page not installed on this node\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cdn_links_are_replaced_and_the_local_ones_kept() {
        let html = r#"<head><link rel="icon" href="favicon.png"><link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto"><link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/@mdi/font@latest/css/materialdesignicons.min.css"><link href="css/app.css" rel="stylesheet"></head>"#;
        let out = rewrite_index(html);
        assert!(!out.contains("https://"), "{out}");
        assert!(out.contains(r#"href="mdi/css/materialdesignicons.min.css""#));
        assert!(out.contains(r#"href="favicon.png""#) && out.contains(r#"href="css/app.css""#));
    }

    #[test]
    fn only_plain_relative_paths_are_served() {
        assert!(safe("js/app.js").is_some());
        assert!(safe("mdi/fonts/x.woff2").is_some());
        for bad in ["../secret", "js/../../x", "/etc/passwd", "", "."] {
            assert!(safe(bad).is_none(), "{bad}");
        }
    }
}
