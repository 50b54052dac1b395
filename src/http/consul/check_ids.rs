//! Finding a check by its ID alone, as Consul's agent API addresses checks.
//!
//! roster keeps checks inside their instance, so a check ID is resolved to
//! the instance that owns it (directly for the default `service:<id>[:<n>]`
//! form, else by a scan), and an ID may belong to one instance only.
//!
//! Owns: check-ID lookup and the uniqueness rule. Used by both the service
//! and the check endpoints, so it lives apart from either (they would
//! otherwise import each other).

use std::sync::Arc;

use super::{error::ConsulError, views::MAINTENANCE_CHECK_PREFIX};
use crate::{
    model::{Instance, default_check_id_of},
    registry::{InstanceState, RegistryState},
};

/// What a check ID names.
pub(super) enum Found {
    /// A check of an instance, at this position in its check list.
    Check(Arc<InstanceState>, usize),
    /// The `_service_maintenance:<id>` check of a drained instance.
    Maintenance(Arc<InstanceState>),
}

/// The check `check_id` names, with the instance that holds it. The
/// native API and imports keep check IDs per instance, so two instances
/// may each have a check `health`: such an ID names no one check here, and
/// is refused (409) rather than taken as whichever is found first.
pub(super) fn find_check(
    registry: &RegistryState,
    check_id: &str,
) -> Result<Option<Found>, ConsulError> {
    if let Some(id) = check_id.strip_prefix(MAINTENANCE_CHECK_PREFIX) {
        return Ok(registry
            .instance(id)
            .filter(|i| i.maintenance.is_some())
            .map(|i| Found::Maintenance(i.clone())));
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
        // IDs may contain ':': instance `web`'s second default check and
        // instance `web:2`'s default are both `service:web:2`.
        let mut found = candidates
            .into_iter()
            .filter_map(|id| registry.instance(id).and_then(has));
        match (found.next(), found.next()) {
            (Some(Found::Check(a, _)), Some(Found::Check(b, _))) => {
                return Err(ambiguous(check_id, &a, &b));
            }
            (Some(one), _) => return Ok(Some(one)),
            (None, _) => {}
        }
    }
    let mut holders = registry
        .services
        .values()
        .flat_map(|service| service.instances())
        .filter_map(has);
    let Some(first) = holders.next() else {
        return Ok(None);
    };
    let Some(Found::Check(second, _)) = holders.next() else {
        return Ok(Some(first));
    };
    let (Found::Check(first, _) | Found::Maintenance(first)) = first;
    Err(ambiguous(check_id, &first, &second))
}

/// The refusal of a check ID that names checks of two instances.
fn ambiguous(check_id: &str, first: &InstanceState, second: &InstanceState) -> ConsulError {
    ConsulError::new(
        axum::http::StatusCode::CONFLICT,
        format!(
            "check ID {check_id:?} names checks of several service IDs ({:?}, {:?}; roster's native API and imports keep check IDs per instance): a check ID must name one check here, so give each a check ID of its own",
            first.instance.id.as_str(),
            second.instance.id.as_str()
        ),
    )
}

/// The ID of the instance whose check has this ID, if any; with several,
/// the refusal that says so.
fn check_id_owner(registry: &RegistryState, check_id: &str) -> Result<Option<String>, ConsulError> {
    Ok(find_check(registry, check_id)?.map(|found| match found {
        Found::Check(instance, _) | Found::Maintenance(instance) => {
            instance.instance.id.as_str().to_owned()
        }
    }))
}

/// Consul's check IDs are unique on an agent, and the check endpoints find a
/// check by ID alone, so an ID another service's check uses is refused.
/// Default IDs (`service:<id>...`) embed the unique service ID and need no
/// search.
pub(super) fn ensure_check_ids_are_free(
    registry: &RegistryState,
    instance: &Instance,
) -> Result<(), ConsulError> {
    for check in &instance.checks {
        // `service:<own id>[:<n>]` is this instance's alone: no other may
        // take one ([`Instance::validate_incoming`]).
        let own = check
            .id
            .strip_prefix("service:")
            .is_some_and(|named| default_check_id_of(named, instance.id.as_str()));
        if own {
            continue;
        }
        if let Some(owner) = check_id_owner(registry, &check.id)?
            && owner != instance.id.as_str()
        {
            return Err(ConsulError::bad_request(format!(
                "Invalid check: check ID {:?} is already registered for service ID {owner:?}",
                check.id
            )));
        }
    }
    Ok(())
}
