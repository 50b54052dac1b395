//! The web UI under `/ui/`: one page that lists the services with their
//! healthy and total instance counts, shows a service's instances
//! (addresses, tags, metadata, DNS names, checks, maintenance) and follows
//! changes live through the Consul blocking queries the API already has.
//! On an instance it offers the two everyday writes, maintenance on and off
//! and deregistration (armed by a first click), through the same native API
//! endpoints as the CLI, so the token's ACL rules decide exactly as there.
//! Registering stays with the API and CLI: a form would be a second,
//! weaker editor of what a registrant owns.
//!
//! The page, its script and its stylesheet are compiled in
//! (`src/http/ui/`): no build step, nothing fetched from elsewhere. They
//! hold no registry data, so they are served without a token; the script
//! reads the API with the token the user types (kept in the tab's
//! `sessionStorage`, sent as `X-Consul-Token`), so ACLs apply exactly as
//! to any other client.
//!
//! Everything the page shows comes from registrants (service names,
//! metadata, check output), so the script writes it with `textContent`
//! only, and every response here carries a `Content-Security-Policy` that
//! allows nothing but same-origin script, style and requests: no inline
//! script, no `eval`, nothing external, even if an escape were missed.
//!
//! Owns: the UI's static files and their security headers. Must not: read
//! the registry (the page uses the public API, like any client).

use axum::{
    http::{HeaderValue, header},
    response::{IntoResponse, Redirect, Response},
};

/// Same-origin only, and nothing the page does not need: no plugins, no
/// `<base>` rewriting, no form posts, no framing (clickjacking).
const CSP: &str = "default-src 'self'; object-src 'none'; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

const INDEX_HTML: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const STYLE_CSS: &str = include_str!("ui/style.css");

/// `body` as `content_type`, with the headers every UI file carries.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        // A browser must not guess a type: the script is only ever script.
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        // The URL may name a service; no need to tell anyone else.
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        // Revalidate, so an upgraded roster never runs yesterday's script.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (headers, body).into_response()
}

/// `GET /ui` and `GET /`: to `/ui/`, so the page's relative links resolve
/// under it, and the API's address opened in a browser shows the page (as
/// Consul's agent does).
pub(super) async fn redirect() -> Redirect {
    Redirect::permanent("/ui/")
}

/// `GET /ui/`: the page.
pub(super) async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /ui/app.js`: the page's script.
pub(super) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// `GET /ui/style.css`: the page's stylesheet.
pub(super) async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}
