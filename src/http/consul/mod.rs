//! The Consul-compatible HTTP API: an adapter that translates Consul agent,
//! catalog and health requests into registry commands and views.

use axum::Router;

use super::AppState;

/// Routes under `/v1/agent`, `/v1/catalog`, `/v1/health`, `/v1/status`.
pub fn routes() -> Router<AppState> {
    Router::new()
}
