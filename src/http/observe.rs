//! The middleware that counts every HTTP request for `/metrics`: by the
//! route template axum matched (bounded: one series per route, whatever
//! paths clients send), method and status code, with its duration.
//!
//! Owns: taking the measurement. Must not: look at raw paths or bodies.

use std::{sync::Arc, time::Instant};

use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::Response,
};

use crate::metrics::http::{HttpMetrics, UNMATCHED, method_index};

/// Counts the request once its response's headers are ready. A streamed
/// body (an export) is timed to its first byte, which is what a client
/// waits for before anything arrives.
pub(super) async fn count(
    State(metrics): State<Arc<HttpMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    // Set by the router for every matched route, also under `merge`; the
    // fallback (no route) has none. A clone of a shared string, not a copy.
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = method_index(request.method().as_str());
    let response = next.run(request).await;
    metrics.record(
        route.as_ref().map_or(UNMATCHED, MatchedPath::as_str),
        method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}
