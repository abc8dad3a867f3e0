//! The web dashboard: `GET /` and its assets under `/ui/`, embedded in the
//! binary (plain HTML, CSS and JavaScript written for rolloutd, no library,
//! no build step: `cargo build` alone makes it). The page reads the same
//! API as `rolloutctl` with the person's bearer token (kept in the tab's
//! session storage, never a cookie, so no cross-site request can use it)
//! and follows `GET /api/v1/watch`. Every answer here carries a strict
//! Content-Security-Policy: scripts and styles from this origin only, no
//! inline script, no request to anyone else. See docs/ARCHITECTURE.md.

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The policy every dashboard answer carries.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The embedded files: path under `/ui/`, content type, bytes.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../dashboard/app.js"),
    ),
    (
        "views.js",
        "text/javascript; charset=utf-8",
        include_str!("../dashboard/views.js"),
    ),
    (
        "charts.js",
        "text/javascript; charset=utf-8",
        include_str!("../dashboard/charts.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../dashboard/style.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("../dashboard/favicon.svg"),
    ),
];

const INDEX: &str = include_str!("../dashboard/index.html");

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    r
}

async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => page(content_type, body),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("no dashboard file `{file}`"),
        )
            .into_response(),
    }
}

/// `/` and `/ui/{file}`: open to everyone (the page holds no data; the API
/// it reads asks for the token).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { page("text/html; charset=utf-8", INDEX) }),
        )
        .route("/ui/{file}", get(asset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_and_style_the_page_names_is_served() {
        for name in ["app.js", "style.css", "favicon.svg"] {
            assert!(INDEX.contains(&format!("/ui/{name}")), "{name}");
        }
        for (name, _, body) in ASSETS {
            assert!(!body.is_empty(), "{name}");
        }
        // No inline script or style: the policy would block them.
        assert!(!INDEX.contains("<script>"));
        assert!(!INDEX.contains("style="));
        assert!(!INDEX.contains("<style"));
    }
}
