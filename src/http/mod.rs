//! The HTTP front doors: the native API (and, beside it, the Consul adapter).
//! Both translate requests into registry commands and views of its state.
//!
//! Owns: HTTP routing, bodies and error mapping. Must not: touch the store or
//! the record table.

pub mod acl;
mod backup;
#[doc(hidden)]
pub mod body; // Public only for the fuzzer in fuzz/.
mod consul;
mod error;
mod native;
mod observe;
pub mod server;
mod state;
pub mod tls;
mod ui;
mod views;

use axum::{
    Router,
    extract::{DefaultBodyLimit, State},
    http::{StatusCode, header},
    response::IntoResponse,
    routing::{get, put},
};

pub use error::ApiError;
pub use state::{AppState, AppStateFields, blocking_budget};

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    let http_metrics = state.metrics.http.clone();
    native_routes()
        .merge(consul::routes())
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
        })
        .layer(DefaultBodyLimit::max(body::MAX_BODY_BYTES))
        // Outermost, so that it also counts what the body limit and the
        // fallbacks answer.
        .layer(axum::middleware::from_fn_with_state(
            http_metrics,
            observe::count,
        ))
        .with_state(state)
}

/// The native API, the metrics and the UI. None of them reads a query
/// parameter but the ACL token (`?token=`), so any other is refused
/// rather than ignored: `GET /v1/services?filter=...` would otherwise
/// answer everything as if filtered.
fn native_routes() -> Router<AppState> {
    Router::new()
        .route("/v1/services", get(native::list_services))
        .route("/metrics", get(prometheus_metrics))
        .route(
            "/v1/metrics",
            get(
                |State(state): State<AppState>, caller: acl::Caller| async move {
                    caller.require_agent_read()?;
                    Ok::<_, ApiError>(axum::Json(state.metrics.snapshot()))
                },
            ),
        )
        .route("/v1/services/{service}", get(native::get_service))
        .route(
            "/v1/services/{service}/instances/{id}",
            put(native::register)
                .delete(native::deregister)
                .get(native::get_instance),
        )
        .route(
            "/v1/services/{service}/instances/{id}/heartbeat",
            put(native::heartbeat),
        )
        .route(
            "/v1/services/{service}/instances/{id}/maintenance",
            put(native::maintenance),
        )
        .route("/v1/cluster/members", get(cluster_members))
        .route("/v1/export", get(backup::export))
        .route(
            "/v1/import",
            put(backup::import).layer(DefaultBodyLimit::max(backup::MAX_IMPORT_BYTES)),
        )
        .route("/", get(ui::redirect))
        .route("/ui", get(ui::redirect))
        .route("/ui/", get(ui::index))
        .route("/ui/app.js", get(ui::script))
        .route("/ui/style.css", get(ui::style))
        .route_layer(axum::middleware::from_fn(refuse_query_parameters))
}

/// [`native_routes`]' guard: 400 for a query parameter other than `token`.
async fn refuse_query_parameters(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    // Names decoded as the ACL code decodes `?token=` (`?tok%65n=` is the
    // token); a query that does not decode is refused like an unknown name.
    let unknown = match request.uri().query() {
        None => None,
        Some(_) => match axum::extract::Query::<Vec<(String, String)>>::try_from_uri(request.uri())
        {
            Ok(axum::extract::Query(pairs)) => pairs
                .into_iter()
                .map(|(name, _)| name)
                .find(|name| name != "token"),
            Err(_) => Some(request.uri().query().unwrap_or_default().to_owned()),
        },
    };
    match unknown {
        Some(name) => ApiError::bad_request(
            "query",
            format!(
                "unknown query parameter {name:?}: this endpoint takes none but ?token= (filtering and blocking queries are the Consul API's)"
            ),
        )
        .into_response(),
        None => next.run(request).await,
    }
}

/// `GET /metrics`: the counters of `/v1/metrics` and more in the Prometheus
/// text format, with the catalog counted from the published state. Read
/// under the same ACL rule as `/v1/metrics`.
async fn prometheus_metrics(
    State(state): State<AppState>,
    caller: acl::Caller,
) -> Result<impl IntoResponse, ApiError> {
    caller.require_agent_read()?;
    let catalog = crate::metrics::prometheus::CatalogCounts::of(&state.registry.state());
    let text = crate::metrics::prometheus::render(&state.metrics, &catalog);
    Ok((
        [(
            header::CONTENT_TYPE,
            crate::metrics::prometheus::CONTENT_TYPE,
        )],
        text,
    ))
}

/// `GET /v1/cluster/members`: the live nodes of the cluster, by name, with
/// their HTTP and DNS addresses and how many checks each runs.
async fn cluster_members(
    State(state): State<AppState>,
    caller: acl::Caller,
) -> Result<axum::Json<Vec<crate::cluster::keys::MemberRecord>>, ApiError> {
    caller.require_agent_read()?;
    if !state.cluster {
        return Err(ApiError::not_found(
            "roster is not running as a cluster: start it with --etcd (or [cluster] etcd)",
        ));
    }
    let members = state.registry.members().borrow().clone();
    Ok(axum::Json(members.values().cloned().collect()))
}
