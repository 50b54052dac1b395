//! The Consul-compatible HTTP API: an adapter that translates the Consul
//! agent, catalog and health requests that registration and discovery
//! clients make (`python-consul`, `py-consul`, and anything speaking the
//! same subset) into registry commands and views of registry state.
//!
//! One registry, many front doors: a service registered here is in DNS and
//! in the native API, and the other way round. This module decides nothing
//! about health or storage; it maps Consul's shapes and words onto roster's.
//! The contract it follows is `../../../docs/consul-api-subset.md`.
//!
//! Owns: Consul routes, body and query translation, Consul's JSON views and
//! error wording, blocking queries. Must not: touch the store or the record
//! table, or keep any state of its own.
//!
//! | file | job |
//! | --- | --- |
//! | `agent.rs` | service register / deregister / maintenance, agent listings |
//! | `agent_checks.rs` | check register / deregister, TTL pass / warn / fail / update |
//! | `check_ids.rs` | finding a check by ID alone; check IDs unique per agent |
//! | `catalog.rs`, `health.rs`, `status.rs` | read endpoints (`status.rs` also `agent/self`) |
//! | `registration.rs` | a service definition → `Instance` |
//! | `checks.rs` | a Consul check → the model's `CheckBody` |
//! | `keys.rs` | case- and underscore-insensitive body keys |
//! | `query.rs` | query parameters, Go booleans |
//! | `filter.rs` | `?filter=` expressions |
//! | `blocking.rs` | `?index` / `?wait` |
//! | `views.rs`, `response.rs`, `error.rs` | what goes back on the wire |
//! | `unsupported.rs` | 501 for the rest of Consul's API |

mod acl;
mod agent;
mod agent_checks;
mod blocking;
mod catalog;
mod check_ids;
mod checks;
mod error;
mod filter;
mod health;
mod keys;
mod query;
mod registration;
mod response;
mod status;
mod unsupported;
mod views;

use axum::{
    Router,
    routing::{get, put},
};

use crate::http::state::AppState;

/// Routes under `/v1/agent`, `/v1/catalog`, `/v1/health`, `/v1/status`, and
/// 501s for the Consul endpoints roster does not serve.
///
/// IDs and names are catch-all segments (`{*id}`): axum percent-decodes
/// them (`Hello%20Service`), check IDs keep their raw colons
/// (`service:web-1`), and an ID containing `/` still reaches the handler.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/agent/services", get(agent::services))
        .route("/v1/agent/checks", get(agent::checks))
        .route("/v1/agent/service/register", put(agent::register_service))
        .route(
            "/v1/agent/service/deregister/{*id}",
            put(agent::deregister_service),
        )
        .route(
            "/v1/agent/service/maintenance/{*id}",
            put(agent::service_maintenance),
        )
        .route("/v1/agent/service/{*id}", get(agent::service))
        .route("/v1/agent/check/register", put(agent_checks::register))
        .route(
            "/v1/agent/check/deregister/{*check_id}",
            put(agent_checks::deregister),
        )
        .route("/v1/agent/check/pass/{*check_id}", put(agent_checks::pass))
        .route("/v1/agent/check/warn/{*check_id}", put(agent_checks::warn))
        .route("/v1/agent/check/fail/{*check_id}", put(agent_checks::fail))
        .route(
            "/v1/agent/check/update/{*check_id}",
            put(agent_checks::update),
        )
        .route("/v1/agent/self", get(status::agent_self))
        .route("/v1/catalog/services", get(catalog::services))
        .route("/v1/catalog/service/{*name}", get(catalog::service))
        .route("/v1/catalog/datacenters", get(catalog::datacenters))
        .route("/v1/health/service/{*name}", get(health::service))
        .route("/v1/health/checks/{*name}", get(health::checks))
        .route("/v1/health/state/{*state}", get(health::state))
        .route("/v1/status/leader", get(status::leader))
        .route("/v1/status/peers", get(status::peers))
        .merge(unsupported::routes())
}
