//! `/v1/agent/service/*`, `/v1/agent/services` and `/v1/agent/checks`:
//! registering, deregistering and draining services, and listing what the
//! "agent" (roster, as one node) holds.
//!
//! Success is `200` with an empty body: both Python clients return `True`
//! only for exactly 200. An unknown service ID is `404`, which the clients
//! turn into `False` without raising (the origin example relies on that).

use std::collections::BTreeMap;

use axum::{
    Json,
    body::Bytes,
    extract::{Path, State, rejection::BytesRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
};

use super::{
    acl::ConsulCaller,
    check_ids::ensure_check_ids_are_free,
    error::{ConsulError, body_bytes, edited},
    filter::{self, Filter},
    query::{Params, parse_go_bool},
    registration::instance_from_body,
    views::{self, NodeInfo},
};
use crate::{
    http::state::AppState,
    model::{InstanceId, MAX_CHECKS},
    registry::{Command, RegistryError},
};

/// Maps "no such instance" to Consul's unknown-service answer.
fn unknown_service_as_404(id: &str) -> impl FnOnce(RegistryError) -> ConsulError + '_ {
    move |error| match error {
        RegistryError::NoInstance { .. } => ConsulError::unknown_service(id),
        other => other.into(),
    }
}

/// `PUT /v1/agent/service/register`: create or replace by ID.
///
/// Re-registering an ID replaces the service, even under another name.
/// Checks keep their status when they keep their ID. As in Consul, checks
/// the service had that the new definition does not mention are kept,
/// unless `?replace-existing-checks` is set.
pub(super) async fn register_service(
    State(state): State<AppState>,
    caller: ConsulCaller,
    params: Params,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ConsulError> {
    let bytes = body_bytes(body)?;
    // Consul's own reading of this flag: present and empty, or "true".
    let replace_existing_checks = params
        .get("replace-existing-checks")
        .is_some_and(|value| value.is_empty() || value == "true");
    let definition = instance_from_body(&bytes, &state.consul).await?;
    caller.0.require_write(definition.service.as_str())?;
    state
        .admit(&definition)
        .map_err(ConsulError::invalid_check)?;
    // Merging with the checks the service already has is an edit of what is
    // registered, so a check registered meanwhile is not lost.
    let result = state
        .registry
        .edit(definition.id.as_str(), |registry, previous| {
            let mut instance = definition.clone();
            // Re-registering an ID moves it from its service: that needs
            // write access there too.
            if let Some(previous) = previous {
                caller.0.require_write(previous.instance.service.as_str())?;
            }
            if !replace_existing_checks && let Some(previous) = previous {
                for check in &previous.instance.checks {
                    if !instance.checks.iter().any(|c| c.id == check.id) {
                        instance.checks.push(check.clone());
                    }
                }
                if instance.checks.len() > MAX_CHECKS {
                    return Err(ConsulError::bad_request(format!(
                        "Invalid check: at most {MAX_CHECKS} checks per service; use ?replace-existing-checks to drop the ones not in this definition"
                    )));
                }
            }
            ensure_check_ids_are_free(registry, &instance)?;
            Ok(instance)
        })
        .await;
    edited(result, definition.id.as_str())
}

/// `PUT /v1/agent/service/deregister/:id`: remove the service and its checks.
pub(super) async fn deregister_service(
    State(state): State<AppState>,
    caller: ConsulCaller,
    Path(id): Path<String>,
) -> Result<StatusCode, ConsulError> {
    caller.require_write_instance(&state, &id)?;
    // An ID that cannot be valid is not registered.
    let instance = InstanceId::parse(&id).map_err(|_| ConsulError::unknown_service(&id))?;
    state
        .registry
        .execute(Command::Deregister {
            service: None,
            id: instance,
        })
        .await
        .map_err(unknown_service_as_404(&id))?;
    Ok(StatusCode::OK)
}

/// `PUT /v1/agent/service/maintenance/:id?enable=true&reason=...`: drain the
/// service out of DNS (it shows the critical `_service_maintenance:<id>`
/// check meanwhile) or bring it back.
pub(super) async fn service_maintenance(
    State(state): State<AppState>,
    caller: ConsulCaller,
    Path(id): Path<String>,
    params: Params,
) -> Result<StatusCode, ConsulError> {
    caller.require_write_instance(&state, &id)?;
    let enable = match params.get("enable") {
        None | Some("") => return Err(ConsulError::bad_request("Missing value for enable")),
        Some(text) => parse_go_bool(text).ok_or_else(|| {
            ConsulError::bad_request(format!("Invalid value for enable: {text:?}"))
        })?,
    };
    let reason = params.get("reason").unwrap_or_default().to_owned();
    crate::model::validate_maintenance_reason(&reason)
        .map_err(|e| ConsulError::bad_request(format!("Invalid reason: {}", e.message)))?;
    let instance = InstanceId::parse(&id).map_err(|_| ConsulError::unknown_service(&id))?;
    state
        .registry
        .execute(Command::Maintenance {
            service: None,
            id: instance,
            reason: enable.then_some(reason),
        })
        .await
        .map_err(unknown_service_as_404(&id))?;
    Ok(StatusCode::OK)
}

/// `GET /v1/agent/services?filter=...`: every instance by ID, whichever
/// door registered it; `filter` applies to each `AgentService`.
pub(super) async fn services(
    State(state): State<AppState>,
    caller: ConsulCaller,
    params: Params,
) -> Result<Response, ConsulError> {
    let filter = Filter::from_query(params.get("filter"), &filter::AGENT_SERVICE)?;
    let registry = state.registry.state();
    let node = NodeInfo::new(&state.consul);
    let services: BTreeMap<&str, views::AgentService> = views::all_instances(&registry)
        .filter(|i| caller.0.may_read(i.instance.service.as_str()))
        .map(|i| (i.instance.id.as_str(), views::agent_service(i, &node)))
        .filter(|(_, service)| Filter::keeps(filter.as_ref(), service))
        .collect();
    Ok(Json(services).into_response())
}

/// `GET /v1/agent/service/:id`: one instance. Consul's hash-based blocking
/// on this endpoint is not implemented: `?hash` answers 501.
pub(super) async fn service(
    State(state): State<AppState>,
    caller: ConsulCaller,
    Path(id): Path<String>,
    params: Params,
) -> Result<Response, ConsulError> {
    if params.get("hash").is_some() {
        return Err(ConsulError::new(
            StatusCode::NOT_IMPLEMENTED,
            "roster does not implement hash-based blocking on /v1/agent/service/:id; use a blocking query on /v1/health/service/:name",
        ));
    }
    let registry = state.registry.state();
    let instance = registry
        .instance(&id)
        .ok_or_else(|| ConsulError::not_found(format!("unknown service ID: {id}")))?;
    caller.0.require_read(instance.instance.service.as_str())?;
    let node = NodeInfo::new(&state.consul);
    Ok(Json(views::agent_service(instance, &node)).into_response())
}

/// `GET /v1/agent/checks?filter=...`: every check by ID, maintenance
/// checks included; `filter` applies to each `HealthCheck`.
pub(super) async fn checks(
    State(state): State<AppState>,
    caller: ConsulCaller,
    params: Params,
) -> Result<Response, ConsulError> {
    let filter = Filter::from_query(params.get("filter"), &filter::HEALTH_CHECK)?;
    let registry = state.registry.state();
    let node = NodeInfo::new(&state.consul);
    let checks: BTreeMap<String, views::HealthCheck> = views::all_instances(&registry)
        .filter(|i| caller.0.may_read(i.instance.service.as_str()))
        .flat_map(|i| views::instance_checks(i, &node))
        .filter(|check| Filter::keeps(filter.as_ref(), check))
        .map(|check| (check.check_id.clone(), check))
        .collect();
    Ok(Json(checks).into_response())
}
