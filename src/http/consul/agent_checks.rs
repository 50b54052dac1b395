//! `/v1/agent/check/*`: registering a check on a service, removing it, and
//! TTL reports (`pass` / `warn` / `fail` with `?note=`, and `update` with
//! a JSON body).
//!
//! Consul addresses checks by ID alone; roster keeps checks inside their
//! instance, so these endpoints first find the instance that owns the ID
//! (`check_ids.rs`), then send the registry an ordinary command. Adding or
//! removing a check re-registers the instance with its check list changed,
//! through `Registry::edit`, which retries if the instance changed since it
//! was read, so two checks added at once are both kept; checks that keep
//! their ID keep their status, so nothing else flaps.
//!
//! Node-level checks (no `ServiceID`) are refused with 400: roster has no
//! node state for them to live in, and no DNS answer they could affect.

use axum::{
    body::Bytes,
    extract::{Path, State, rejection::BytesRejection},
    http::StatusCode,
};

use super::{
    acl::ConsulCaller,
    check_ids::{Found, ensure_check_ids_are_free, find_check},
    checks::ConsulCheck,
    error::{ConsulError, body_bytes, edited},
    keys::{decode_struct, parse_body},
    query::Params,
};
use crate::{
    http::state::AppState,
    model::{CheckKind, MAX_CHECKS, MAX_NOTE_BYTES, Status},
    registry::{Command, RegistryError, Reporter},
};
use serde::Deserialize;

/// `PUT /v1/agent/check/register`: add a check to a service (or replace the
/// service's check with the same ID). `Name` is required, `ID` defaults to
/// it, as in Consul.
pub(super) async fn register(
    State(state): State<AppState>,
    caller: ConsulCaller,
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
    // Two checks registered at once on one service must both be kept, so
    // this is an edit of what is registered, not a replacement.
    let result = state
        .registry
        .edit(&service_id, |registry, existing| {
            let existing = existing.ok_or_else(|| {
                ConsulError::not_found(format!("ServiceID {service_id:?} does not exist"))
            })?;
            caller.0.require_write(existing.instance.service.as_str())?;
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
            ensure_check_ids_are_free(registry, &instance)?;
            instance
                .validate_incoming()
                .map_err(ConsulError::invalid_check)?;
            state.admit(&instance).map_err(ConsulError::invalid_check)?;
            Ok(instance)
        })
        .await;
    edited(result, &id)
}

/// `PUT /v1/agent/check/deregister/:check_id`. Deregistering a
/// `_service_maintenance:<id>` check ends the maintenance, as in Consul.
pub(super) async fn deregister(
    State(state): State<AppState>,
    caller: ConsulCaller,
    Path(check_id): Path<String>,
) -> Result<StatusCode, ConsulError> {
    caller.require_write_check(&state, &check_id)?;
    let registry = state.registry.state();
    let owner = match find_check(&registry, &check_id)? {
        None => return Err(ConsulError::unknown_check(&check_id)),
        Some(Found::Maintenance(instance)) => {
            state
                .registry
                .execute(Command::Maintenance {
                    service: None,
                    id: instance.instance.id.clone(),
                    reason: None,
                })
                .await?;
            return Ok(StatusCode::OK);
        }
        Some(Found::Check(existing, _)) => existing.instance.id.as_str().to_owned(),
    };
    // Each attempt looks the check up again: it may have moved with its
    // instance, or gone, since the last read.
    let result = state
        .registry
        .edit(&owner, |registry, _| {
            match find_check(registry, &check_id)? {
                Some(Found::Check(existing, position)) => {
                    let mut instance = (*existing.instance).clone();
                    instance.checks.remove(position);
                    Ok(instance)
                }
                Some(Found::Maintenance(_)) | None => Err(ConsulError::unknown_check(&check_id)),
            }
        })
        .await;
    edited(result, &check_id)
}

/// `PUT /v1/agent/check/pass/:check_id?note=...`.
pub(super) async fn pass(
    state: State<AppState>,
    caller: ConsulCaller,
    path: Path<String>,
    params: Params,
) -> Result<StatusCode, ConsulError> {
    report(state, caller, path, note_param(&params), Status::Passing).await
}

/// `PUT /v1/agent/check/warn/:check_id?note=...`.
pub(super) async fn warn(
    state: State<AppState>,
    caller: ConsulCaller,
    path: Path<String>,
    params: Params,
) -> Result<StatusCode, ConsulError> {
    report(state, caller, path, note_param(&params), Status::Warning).await
}

/// `PUT /v1/agent/check/fail/:check_id?note=...`.
pub(super) async fn fail(
    state: State<AppState>,
    caller: ConsulCaller,
    path: Path<String>,
    params: Params,
) -> Result<StatusCode, ConsulError> {
    report(state, caller, path, note_param(&params), Status::Critical).await
}

fn note_param(params: &Params) -> String {
    params.get("note").unwrap_or_default().to_owned()
}

/// The body of `PUT /v1/agent/check/update/:check_id`.
/// Keys are matched as Consul matches them (`keys::decode_struct`).
#[derive(Deserialize)]
struct UpdateBody {
    #[serde(default)]
    status: String,
    #[serde(default)]
    output: String,
}

/// `PUT /v1/agent/check/update/:check_id` with `{"Status", "Output"}`: the
/// Go client's `UpdateTTL`, a TTL report like pass / warn / fail whose
/// output comes from the body. A status other than `passing`, `warning`
/// or `critical` is Consul's 400.
pub(super) async fn update(
    state: State<AppState>,
    caller: ConsulCaller,
    path: Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ConsulError> {
    let bytes = body_bytes(body)?;
    let body: UpdateBody = decode_struct(parse_body(&bytes)?, "check update")?;
    let status = match body.status.as_str() {
        "passing" => Status::Passing,
        "warning" => Status::Warning,
        "critical" => Status::Critical,
        other => {
            return Err(ConsulError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "Invalid Status: {other:?}; must be \"passing\", \"warning\" or \"critical\""
                ),
            ));
        }
    };
    report(state, caller, path, body.output, status).await
}

/// A TTL report: sets the status, makes the note the check's output and
/// restarts the TTL. A check that is not a TTL check is Consul's 500.
async fn report(
    State(state): State<AppState>,
    caller: ConsulCaller,
    Path(check_id): Path<String>,
    mut note: String,
    status: Status,
) -> Result<StatusCode, ConsulError> {
    let registry = state.registry.state();
    let no_ttl = || {
        ConsulError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("CheckID {check_id:?} does not have associated TTL"),
        )
    };
    let instance = match find_check(&registry, &check_id)? {
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
    caller.0.require_write(instance.instance.service.as_str())?;
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
            id: instance.instance.id.clone(),
            check_id: Some(check_id.clone()),
            status,
            output: note,
            from: Reporter::Service,
        })
        .await
        .map_err(|error| match error {
            RegistryError::NoInstance { .. } | RegistryError::NoCheck { .. } => {
                ConsulError::unknown_check(&check_id)
            }
            other => other.into(),
        })?;
    Ok(StatusCode::OK)
}
