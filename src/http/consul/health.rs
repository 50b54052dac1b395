//! `/v1/health/*`: instances with their checks, and checks by state.
//! Every answer carries `X-Consul-Index` and supports blocking queries.
//!
//! # `?passing` and DNS
//!
//! `GET /v1/health/service/:name?passing=1` follows Consul: an instance is
//! left out if **any** of its checks is not `passing`, so `warning` counts
//! as failing, as does the critical `_service_maintenance:<id>` check of a
//! drained instance. An instance without checks is passing.
//!
//! roster's DNS reads the same statuses from the same registry: by default
//! it serves only instances whose every check is passing (the same set as
//! `?passing=1`), never a drained one; with `dns.include_warning = true` it
//! also serves instances whose worst check is `warning`. `critical` is never
//! served. Consul's own DNS differs (it drops only `critical`): roster
//! leans towards not handing out instances that report trouble.

use axum::extract::{Path, State};

use super::{
    acl::ConsulCaller,
    blocking::Blocking,
    error::ConsulError,
    filter::{self, Filter},
    response::Indexed,
    views::{self, HealthCheck, NodeInfo, ServiceEntry},
};
use crate::{http::state::AppState, model::Status};

/// `GET /v1/health/service/:name?passing&tag=...&filter=...`: `{Node,
/// Service, Checks}` per instance; `Checks` includes the node's
/// `serfHealth`. The filter applies to each entry, after `passing`.
pub(super) async fn service(
    State(state): State<AppState>,
    caller: ConsulCaller,
    Path(name): Path<String>,
    blocking: Blocking,
) -> Result<Indexed<Vec<ServiceEntry>>, ConsulError> {
    let passing_only = blocking
        .params
        .flag("passing")
        .map_err(|e| e.at(state.registry.state().index))?;
    let filter = blocking.filter(&state, &filter::SERVICE_ENTRY)?;
    blocking.query.wait_service(&state, &name).await?;
    let registry = state.registry.state();
    let node = NodeInfo::new(&state.consul);
    let tags: Vec<&str> = blocking.params.all("tag").collect();
    let entries = registry
        .service_by_name(&name)
        .filter(|service| {
            !blocking.peered && caller.0.may_read(&name) && caller.0.may_read(service.name.as_str())
        })
        .map(|service| {
            service
                .instances()
                .filter(|i| views::has_tags(i, &tags))
                .map(|i| views::service_entry(i, &node))
                .filter(|entry| {
                    !passing_only || entry.checks.iter().all(|c| c.status == Status::Passing)
                })
                .filter(|entry| Filter::keeps(filter.as_ref(), entry))
                .collect()
        })
        .unwrap_or_default();
    Ok(Indexed(registry.service_index(&name), entries))
}

/// `GET /v1/health/checks/:name?filter=...`: the checks of the service's
/// instances.
pub(super) async fn checks(
    State(state): State<AppState>,
    caller: ConsulCaller,
    Path(name): Path<String>,
    blocking: Blocking,
) -> Result<Indexed<Vec<HealthCheck>>, ConsulError> {
    let filter = blocking.filter(&state, &filter::HEALTH_CHECK)?;
    blocking.query.wait_service(&state, &name).await?;
    let registry = state.registry.state();
    let node = NodeInfo::new(&state.consul);
    let checks = registry
        .service_by_name(&name)
        .filter(|service| {
            !blocking.peered && caller.0.may_read(&name) && caller.0.may_read(service.name.as_str())
        })
        .map(|service| {
            service
                .instances()
                .flat_map(|i| views::instance_checks(i, &node))
                .filter(|check| Filter::keeps(filter.as_ref(), check))
                .collect()
        })
        .unwrap_or_default();
    Ok(Indexed(registry.service_index(&name), checks))
}

/// `GET /v1/health/state/:state?filter=...`: every check in that state
/// (`any`, `passing`, `warning`, `critical`), node checks included.
pub(super) async fn state(
    State(state): State<AppState>,
    caller: ConsulCaller,
    Path(wanted): Path<String>,
    blocking: Blocking,
) -> Result<Indexed<Vec<HealthCheck>>, ConsulError> {
    let status = match wanted.as_str() {
        "any" => None,
        other => Some(Status::parse(other).ok_or_else(|| {
            ConsulError::bad_request(format!("Invalid check state: {other:?}"))
                .at(state.registry.state().index)
        })?),
    };
    let filter = blocking.filter(&state, &filter::HEALTH_CHECK)?;
    blocking.query.wait(&state).await?;
    let registry = state.registry.state();
    let node = NodeInfo::new(&state.consul);
    let node_checks = (!blocking.peered).then(|| views::serf_health(&node));
    let checks = node_checks
        .into_iter()
        .chain(
            views::all_instances(&registry)
                .filter(|i| !blocking.peered && caller.0.may_read(i.instance.service.as_str()))
                .flat_map(|i| views::instance_checks(i, &node)),
        )
        .filter(|check| status.is_none_or(|status| check.status == status))
        .filter(|check| Filter::keeps(filter.as_ref(), check))
        .collect();
    Ok(Indexed(registry.index, checks))
}
