//! The native API under `/v1/services`: register, deregister, list, report
//! heartbeats, drain for maintenance. Translates HTTP to registry commands;
//! decides nothing itself.

use axum::{
    Json,
    body::Bytes,
    extract::{Path, State, rejection::BytesRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Deserialize;

use super::{
    acl::Caller,
    body::{body_bytes, parse_json},
    error::ApiError,
    state::AppState,
    views,
};
use crate::{
    model::{
        InstanceBody, InstanceId, MAX_NOTE_BYTES, ServiceName, Status, validate_maintenance_reason,
    },
    registry::{Command, InOtherService, Outcome, RegistryError, Reporter},
};

type PathRejection = axum::extract::rejection::PathRejection;

fn path_pair(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(String, String), ApiError> {
    path.map(|Path(pair)| pair)
        .map_err(|e| ApiError::bad_request("path", e.body_text()))
}

/// The service and instance a path names, typed for a command. A name
/// that cannot be valid names no registered instance, so the answer is the
/// registry's 404 for it, worded as the registry words it: about the ID when
/// no instance has it, else about the service.
fn named_instance(
    state: &AppState,
    service: String,
    id: String,
) -> Result<(ServiceName, InstanceId), ApiError> {
    let Ok(parsed_id) = InstanceId::parse(&id) else {
        return Err(RegistryError::NoInstance { id }.into());
    };
    let Ok(parsed_service) = ServiceName::parse(&service) else {
        let error = if state.registry.state().instance(&id).is_some() {
            RegistryError::NotInService { id, service }
        } else {
            RegistryError::NoInstance { id }
        };
        return Err(error.into());
    };
    Ok((parsed_service, parsed_id))
}

/// Write access to the service a path names and to the one the instance
/// is registered in ([`Caller::require_write_registered`]).
fn require_write_instance(
    state: &AppState,
    caller: &Caller,
    service: &str,
    id: &str,
) -> Result<(), ApiError> {
    caller.require_write(service)?;
    caller.require_write_registered(&state.registry.state(), id)?;
    Ok(())
}

fn instance_response(state: &AppState, outcome: Outcome) -> Response {
    match outcome {
        Outcome::Instance(instance) => views::json_response(&views::instance_view(
            &instance,
            &state.domain,
            state.include_warning,
        )),
        Outcome::Removed => StatusCode::NO_CONTENT.into_response(),
        Outcome::Imported(count) => Json(serde_json::json!({ "imported": count })).into_response(),
        Outcome::Transacted(count) => Json(serde_json::json!({ "changed": count })).into_response(),
    }
}

/// `PUT /v1/services/{service}/instances/{id}`: create or replace.
pub(super) async fn register(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (service, id) = path_pair(path)?;
    caller.require_write(&service)?;
    let body: InstanceBody = parse_json(&body_bytes(body)?)?;
    let instance = body.validate(&service, &id)?;
    state.admit(&instance)?;
    let outcome = state
        .registry
        .execute(Command::Register {
            instance,
            in_other_service: InOtherService::Refuse,
        })
        .await?;
    Ok(instance_response(&state, outcome))
}

/// `DELETE /v1/services/{service}/instances/{id}`.
pub(super) async fn deregister(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let (service, id) = path_pair(path)?;
    require_write_instance(&state, &caller, &service, &id)?;
    let (service, id) = named_instance(&state, service, id)?;
    let outcome = state
        .registry
        .execute(Command::Deregister {
            service: Some(service),
            id,
        })
        .await?;
    Ok(instance_response(&state, outcome))
}

/// `GET /v1/services/{service}/instances/{id}`.
pub(super) async fn get_instance(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let (service, id) = path_pair(path)?;
    caller.require_read(&service)?;
    let registry = state.registry.state();
    let instance = registry
        .service_by_name(&service)
        .and_then(|s| s.get(&id))
        .ok_or_else(|| ApiError::not_found(format!("no instance {id:?} in service {service:?}")))?;
    caller.require_read(instance.instance.service.as_str())?;
    Ok(instance_response(
        &state,
        Outcome::Instance(instance.clone()),
    ))
}

/// `GET /v1/services`: every service with its instance counts.
/// Only the services the caller may read are listed.
pub(super) async fn list_services(State(state): State<AppState>, caller: Caller) -> Response {
    let registry = state.registry.state();
    let services: Vec<_> = registry
        .services
        .values()
        .filter(|s| caller.may_read(s.name.as_str()))
        .map(|s| views::service_summary(s, &state.domain, state.include_warning))
        .collect();
    Json(services).into_response()
}

/// `GET /v1/services/{service}`: the service's instances with their health.
pub(super) async fn get_service(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(service) = path.map_err(|e| ApiError::bad_request("path", e.body_text()))?;
    caller.require_read(&service)?;
    let registry = state.registry.state();
    let found = registry
        .service_by_name(&service)
        .ok_or_else(|| ApiError::not_found(format!("no service {service:?}")))?;
    caller.require_read(found.name.as_str())?;
    Ok(Json(views::service_view(
        found,
        &state.domain,
        state.include_warning,
    ))
    .into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HeartbeatBody {
    status: Option<String>,
    note: Option<String>,
}

/// `PUT /v1/services/{service}/instances/{id}/heartbeat`: report to the
/// instance's TTL checks (passing unless the body says otherwise).
pub(super) async fn heartbeat(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (service, id) = path_pair(path)?;
    require_write_instance(&state, &caller, &service, &id)?;
    let bytes = body_bytes(body)?;
    let body: HeartbeatBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        HeartbeatBody::default()
    } else {
        parse_json(&bytes)?
    };
    let status = match body.status.as_deref() {
        None => Status::Passing,
        Some(text) => Status::parse(text).ok_or_else(|| {
            ApiError::bad_request("status", "must be passing, warning or critical")
        })?,
    };
    let note = body.note.unwrap_or_default();
    if note.len() > MAX_NOTE_BYTES {
        return Err(ApiError::bad_request(
            "note",
            format!("must be at most {MAX_NOTE_BYTES} bytes"),
        ));
    }
    let (service, id) = named_instance(&state, service, id)?;
    let outcome = state
        .registry
        .execute(Command::CheckResult {
            service: Some(service),
            id,
            check_id: None,
            status,
            output: note,
            from: Reporter::Service,
        })
        .await?;
    Ok(instance_response(&state, outcome))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MaintenanceBody {
    enable: bool,
    reason: Option<String>,
}

/// `PUT /v1/services/{service}/instances/{id}/maintenance`: drain an
/// instance out of DNS (`enable: true`) or put it back.
pub(super) async fn maintenance(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (service, id) = path_pair(path)?;
    require_write_instance(&state, &caller, &service, &id)?;
    let body: MaintenanceBody = parse_json(&body_bytes(body)?)?;
    let reason = body.reason.unwrap_or_default();
    validate_maintenance_reason(&reason).map_err(|e| ApiError::bad_request(e.field, e.message))?;
    let (service, id) = named_instance(&state, service, id)?;
    let outcome = state
        .registry
        .execute(Command::Maintenance {
            service: Some(service),
            id,
            reason: body.enable.then_some(reason),
        })
        .await?;
    Ok(instance_response(&state, outcome))
}
