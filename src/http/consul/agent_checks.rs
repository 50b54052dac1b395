//! `/v1/agent/check/*`: registering a check on a service, removing it, and
//! TTL reports (`pass` / `warn` / `fail` with `?note=`).
//!
//! Consul addresses checks by ID alone; roster keeps checks inside their
//! instance, so these endpoints first find the instance that owns the ID
//! (directly for the default `service:<id>[:<n>]` form, else by a scan),
//! then send the registry an ordinary command. Adding or removing a check
//! re-registers the instance with its check list changed, as a
//! `Command::Edit` that the registry refuses if the instance changed since
//! it was read (then it is read again and retried), so two checks added at
//! once are both kept; checks that keep their ID keep their status, so
//! nothing else flaps.
//!
//! Node-level checks (no `ServiceID`) are refused with 400: roster has no
//! node state for them to live in, and no DNS answer they could affect.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{Path, State, rejection::BytesRejection},
    http::StatusCode,
};

use super::{
    agent::{body_bytes, ensure_check_ids_are_free},
    checks::ConsulCheck,
    error::ConsulError,
    keys::parse_body,
    query::Params,
    views::MAINTENANCE_CHECK_PREFIX,
};
use crate::{
    http::AppState,
    model::{CheckKind, Instance, MAX_CHECKS, Status},
    registry::{Command, InstanceState, RegistryError, RegistryState},
};

/// The longest TTL note kept; Consul's default `OutputMaxSize` too.
const MAX_NOTE_BYTES: usize = 4096;

/// What a check ID names.
enum Found {
    /// A check of an instance, at this position in its check list.
    Check(Arc<InstanceState>, usize),
    /// The `_service_maintenance:<id>` check of a drained instance.
    Maintenance(Arc<InstanceState>),
}

fn find_check(registry: &RegistryState, check_id: &str) -> Option<Found> {
    if let Some(id) = check_id.strip_prefix(MAINTENANCE_CHECK_PREFIX) {
        return registry
            .instance(id)
            .filter(|i| i.maintenance.is_some())
            .map(|i| Found::Maintenance(i.clone()));
    }
    let has = |instance: &Arc<InstanceState>| {
        instance
            .check(check_id)
            .map(|(position, _, _)| Found::Check(instance.clone(), position))
    };
    // The default forms name the instance: `service:<id>` and
    // `service:<id>:<n>`. IDs may contain ':', so each reading is verified.
    if let Some(rest) = check_id.strip_prefix("service:") {
        let mut candidates = vec![rest];
        if let Some((id, n)) = rest.rsplit_once(':')
            && !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
        {
            candidates.push(id);
        }
        for id in candidates {
            if let Some(found) = registry.instance(id).and_then(has) {
                return Some(found);
            }
        }
    }
    registry
        .services
        .values()
        .flat_map(|service| service.instances())
        .find_map(has)
}

/// The ID of the instance whose check has this ID, if any.
pub fn check_id_owner(registry: &RegistryState, check_id: &str) -> Option<String> {
    match find_check(registry, check_id)? {
        Found::Check(instance, _) | Found::Maintenance(instance) => {
            Some(instance.instance.id.as_str().to_owned())
        }
    }
}

/// How many times an edit is retried when another change to the same
/// instance lands between reading it and writing it back.
pub const EDIT_ATTEMPTS: usize = 64;

/// Registers `edited`, computed from the instance as it was at
/// `modify_index` (`None`: not registered), unless it changed meanwhile;
/// `Ok(false)` means it did, and the caller reads again and retries.
pub async fn write_edit(
    state: &AppState,
    modify_index: Option<u64>,
    edited: Instance,
) -> Result<bool, ConsulError> {
    let command = Command::Edit {
        instance: edited,
        modify_index,
    };
    match state.registry.execute(command).await {
        Ok(_) => Ok(true),
        Err(RegistryError::Stale(_)) => Ok(false),
        Err(error) => Err(error.into()),
    }
}

pub fn too_contended(what: &str) -> ConsulError {
    ConsulError::new(
        StatusCode::CONFLICT,
        format!("{what:?}: the service kept changing while this request edited it; try again"),
    )
}

/// `PUT /v1/agent/check/register`: add a check to a service (or replace the
/// service's check with the same ID). `Name` is required, `ID` defaults to
/// it, as in Consul.
pub async fn register(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ConsulError> {
    let mut check = ConsulCheck::decode(parse_body(&body_bytes(body)?)?)?;
    let name = check
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ConsulError::bad_request("Missing check name"))?;
    let service_id = check.serviceid.take().filter(|s| !s.is_empty()).ok_or_else(|| {
        ConsulError::bad_request(
            "Invalid check: ServiceID is required; roster keeps checks on services and does not support node-level checks",
        )
    })?;
    let id = check
        .checkid
        .take()
        .or(check.id.take())
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| name.clone());
    let definition = check
        .into_check_body()?
        .validate("check", id.clone(), name)
        .map_err(ConsulError::invalid_check)?;
    // Read, edit, write back only if nothing changed meanwhile: two checks
    // registered at once on one service must both be kept.
    for _ in 0..EDIT_ATTEMPTS {
        let registry = state.registry.state();
        let existing = registry.instance(&service_id).ok_or_else(|| {
            ConsulError::not_found(format!("ServiceID {service_id:?} does not exist"))
        })?;
        let mut instance = (*existing.instance).clone();
        match instance.checks.iter_mut().find(|c| c.id == definition.id) {
            Some(slot) => *slot = definition.clone(),
            None => instance.checks.push(definition.clone()),
        }
        if instance.checks.len() > MAX_CHECKS {
            return Err(ConsulError::bad_request(format!(
                "Invalid check: service {service_id:?} already has {MAX_CHECKS} checks"
            )));
        }
        ensure_check_ids_are_free(&registry, &instance)?;
        if write_edit(&state, Some(existing.modify_index), instance).await? {
            return Ok(StatusCode::OK);
        }
    }
    Err(too_contended(&id))
}

/// `PUT /v1/agent/check/deregister/:check_id`. Deregistering a
/// `_service_maintenance:<id>` check ends the maintenance, as in Consul.
pub async fn deregister(
    State(state): State<AppState>,
    Path(check_id): Path<String>,
) -> Result<StatusCode, ConsulError> {
    for _ in 0..EDIT_ATTEMPTS {
        let registry = state.registry.state();
        match find_check(&registry, &check_id) {
            None => return Err(ConsulError::unknown_check(&check_id)),
            Some(Found::Maintenance(instance)) => {
                state
                    .registry
                    .execute(Command::Maintenance {
                        service: None,
                        id: instance.instance.id.as_str().to_owned(),
                        reason: None,
                    })
                    .await?;
                return Ok(StatusCode::OK);
            }
            Some(Found::Check(existing, position)) => {
                let mut instance = (*existing.instance).clone();
                instance.checks.remove(position);
                if write_edit(&state, Some(existing.modify_index), instance).await? {
                    return Ok(StatusCode::OK);
                }
            }
        }
    }
    Err(too_contended(&check_id))
}

/// `PUT /v1/agent/check/pass/:check_id?note=...`.
pub async fn pass(
    state: State<AppState>,
    path: Path<String>,
    params: Params,
) -> Result<StatusCode, ConsulError> {
    report(state, path, params, Status::Passing).await
}

/// `PUT /v1/agent/check/warn/:check_id?note=...`.
pub async fn warn(
    state: State<AppState>,
    path: Path<String>,
    params: Params,
) -> Result<StatusCode, ConsulError> {
    report(state, path, params, Status::Warning).await
}

/// `PUT /v1/agent/check/fail/:check_id?note=...`.
pub async fn fail(
    state: State<AppState>,
    path: Path<String>,
    params: Params,
) -> Result<StatusCode, ConsulError> {
    report(state, path, params, Status::Critical).await
}

/// A TTL report: sets the status, makes the note the check's output and
/// restarts the TTL. A check that is not a TTL check is Consul's 500.
async fn report(
    State(state): State<AppState>,
    Path(check_id): Path<String>,
    params: Params,
    status: Status,
) -> Result<StatusCode, ConsulError> {
    let registry = state.registry.state();
    let no_ttl = || {
        ConsulError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("CheckID {check_id:?} does not have associated TTL"),
        )
    };
    let instance = match find_check(&registry, &check_id) {
        None => return Err(ConsulError::unknown_check(&check_id)),
        Some(Found::Maintenance(_)) => return Err(no_ttl()),
        Some(Found::Check(instance, position)) => {
            if !matches!(
                instance.instance.checks[position].kind,
                CheckKind::Ttl { .. }
            ) {
                return Err(no_ttl());
            }
            instance
        }
    };
    let mut note = params.get("note").unwrap_or_default().to_owned();
    if note.len() > MAX_NOTE_BYTES {
        let mut end = MAX_NOTE_BYTES;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
    }
    state
        .registry
        .execute(Command::CheckResult {
            service: None,
            id: instance.instance.id.as_str().to_owned(),
            check_id: Some(check_id.clone()),
            status,
            output: note,
            heartbeat: true,
        })
        .await
        .map_err(|error| match error {
            RegistryError::NotFound(_) => ConsulError::unknown_check(&check_id),
            other => other.into(),
        })?;
    Ok(StatusCode::OK)
}
