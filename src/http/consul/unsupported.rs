//! Paths roster cannot serve. Consul endpoints roster does not implement
//! answer `501 Not Implemented` with a text body: both Python clients raise
//! `ConsulException` on a 5xx, which tells the user at once, where a 404
//! would turn into a silent `False` or `None`. A served endpoint called
//! with its name or ID left empty answers Consul's `400 Missing ...`.

use axum::{
    Router,
    extract::State,
    http::{Method, StatusCode, Uri},
    routing::any,
};

use super::error::ConsulError;
use crate::http::state::AppState;

/// Path prefixes that are Consul's and not served. The agent, catalog,
/// health and status prefixes catch whatever their specific routes miss.
const PREFIXES: &[&str] = &[
    "/v1/agent",
    "/v1/catalog",
    "/v1/health",
    "/v1/status",
    "/v1/kv",
    "/v1/session",
    "/v1/acl",
    "/v1/event",
    "/v1/txn",
    "/v1/query",
    "/v1/connect",
    "/v1/coordinate",
    "/v1/operator",
    "/v1/snapshot",
    "/v1/config",
    "/v1/discovery-chain",
    "/v1/internal",
    "/v1/peering",
    "/v1/namespace",
    "/v1/namespaces",
    "/v1/partition",
    "/v1/partitions",
    "/v1/exported-services",
    "/v1/imported-services",
];

/// Served endpoints whose last segment (a name or an ID) is empty.
const EMPTY_SEGMENTS: &[(&str, &str)] = &[
    ("/v1/agent/service/deregister/", "Missing service ID"),
    ("/v1/agent/service/maintenance/", "Missing service ID"),
    ("/v1/agent/check/deregister/", "Missing check ID"),
    ("/v1/agent/check/pass/", "Missing check ID"),
    ("/v1/agent/check/warn/", "Missing check ID"),
    ("/v1/agent/check/fail/", "Missing check ID"),
    ("/v1/catalog/service/", "Missing service name"),
    ("/v1/health/service/", "Missing service name"),
    ("/v1/health/checks/", "Missing service name"),
    ("/v1/health/state/", "Missing check state"),
];

pub(super) fn routes() -> Router<AppState> {
    let router = PREFIXES.iter().fold(Router::new(), |router, prefix| {
        router
            .route(prefix, any(not_implemented))
            .route(&format!("{prefix}/{{*rest}}"), any(not_implemented))
    });
    EMPTY_SEGMENTS
        .iter()
        .fold(router, |router, &(path, message)| {
            router.route(
                path,
                any(move |State(state): State<AppState>| async move {
                    let error = ConsulError::bad_request(message);
                    if path.starts_with("/v1/agent") {
                        error
                    } else {
                        error.at(state.registry.state().index)
                    }
                }),
            )
        })
}

async fn not_implemented(State(state): State<AppState>, method: Method, uri: Uri) -> ConsulError {
    let path = uri.path();
    let error = ConsulError::new(
        StatusCode::NOT_IMPLEMENTED,
        format!(
            "roster does not implement {method} {path}: it serves the Consul agent service/check, catalog, health and status endpoints that registration and discovery use (see docs/consul-api-subset.md in roster's source)"
        ),
    );
    if path.starts_with("/v1/catalog") || path.starts_with("/v1/health") {
        error.at(state.registry.state().index)
    } else {
        error
    }
}
