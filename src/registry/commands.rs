//! The registry's commands and how each one changes the state. Pure
//! functions of (state, command): the writer task runs them, persists what
//! they return and publishes the result, so they never do I/O themselves.

use std::{collections::BTreeSet, sync::Arc, time::SystemTime};

use super::{
    RegistryError,
    state::{CheckState, InstanceState, RegistryState, ServiceState},
    store::{Mutation, StoredInstance},
};
use crate::model::{DnsLabel, Instance, Status};

/// A change a front door asks for.
#[derive(Debug)]
pub enum Command {
    /// Create or replace an instance. `move_between_services` lets an ID
    /// registered under another service move here (Consul's semantics); the
    /// native API refuses that instead, since a path names one service.
    Register {
        instance: Instance,
        move_between_services: bool,
    },
    /// Remove an instance; `service`, when given, must be the one it is in.
    Deregister { service: Option<String>, id: String },
    /// Drain (`Some(reason)`) or restore (`None`) an instance.
    Maintenance {
        service: Option<String>,
        id: String,
        reason: Option<String>,
    },
    /// A check result: from the checker, or a heartbeat for TTL checks.
    /// `check_id: None` means every TTL check of the instance. `heartbeat`
    /// marks a report from the service itself, which restarts TTL timers;
    /// the checker's own results (including a TTL expiring) do not.
    CheckResult {
        service: Option<String>,
        id: String,
        check_id: Option<String>,
        status: Status,
        output: String,
        heartbeat: bool,
    },
    /// Load instances from an export (or the store at start-up).
    Import { instances: Vec<StoredInstance> },
}

/// What a successful command returns to its caller.
#[derive(Debug)]
pub enum Outcome {
    Instance(Arc<InstanceState>),
    Removed,
    Imported(usize),
}

/// What the writer must do after a command: persist, republish, tell the
/// health checker.
#[derive(Default)]
pub struct Effects {
    pub mutations: Vec<Mutation>,
    pub touched: BTreeSet<DnsLabel>,
    pub events: Vec<super::RegistryEvent>,
    /// Check status changes, for the log and the counters.
    pub transitions: Vec<Transition>,
}

/// A check whose status changed.
#[derive(Debug)]
pub struct Transition {
    pub instance: String,
    pub check: String,
    pub from: Status,
    pub to: Status,
    pub output: String,
}

pub fn apply(
    state: &mut RegistryState,
    command: Command,
    effects: &mut Effects,
) -> Result<Outcome, RegistryError> {
    match command {
        Command::Register {
            instance,
            move_between_services,
        } => register(state, instance, move_between_services, effects),
        Command::Deregister { service, id } => {
            let existing = find(state, service.as_deref(), &id)?;
            remove(state, &existing, effects);
            Ok(Outcome::Removed)
        }
        Command::Maintenance {
            service,
            id,
            reason,
        } => {
            let existing = find(state, service.as_deref(), &id)?;
            if existing.maintenance == reason {
                return Ok(Outcome::Instance(existing));
            }
            let mut updated = (*existing).clone();
            updated.maintenance = reason;
            let updated = commit_instance(state, updated, true, effects);
            Ok(Outcome::Instance(updated))
        }
        Command::CheckResult {
            service,
            id,
            check_id,
            status,
            output,
            heartbeat,
        } => {
            let report = CheckReport {
                check_id,
                status,
                output,
                heartbeat,
            };
            check_result(state, service.as_deref(), &id, report, effects)
        }
        Command::Import { instances } => {
            let count = instances.len();
            for stored in instances {
                let instance = stored.to_instance().map_err(|e| {
                    RegistryError::Invalid(format!("instance {:?}: {e}", stored.id))
                })?;
                let Outcome::Instance(current) = register(state, instance, true, effects)? else {
                    continue;
                };
                let mut updated = (*current).clone();
                updated.maintenance = stored.maintenance;
                // Keep the original creation index (Consul's CreateIndex)
                // when it is one this registry has already passed.
                if stored.create_index > 0 && stored.create_index <= state.index {
                    updated.create_index = stored.create_index;
                }
                if updated.maintenance != current.maintenance
                    || updated.create_index != current.create_index
                {
                    commit_instance(state, updated, true, effects);
                }
            }
            Ok(Outcome::Imported(count))
        }
    }
}

fn find(
    state: &RegistryState,
    service: Option<&str>,
    id: &str,
) -> Result<Arc<InstanceState>, RegistryError> {
    let instance = state
        .instance(id)
        .ok_or_else(|| RegistryError::NotFound(format!("no instance with ID {id:?}")))?;
    if let Some(service) = service {
        let wanted = DnsLabel::from_name(service, "service").ok();
        if wanted.as_ref() != Some(instance.instance.service.label()) {
            return Err(RegistryError::NotFound(format!(
                "no instance {id:?} in service {service:?}"
            )));
        }
    }
    Ok(instance.clone())
}

fn register(
    state: &mut RegistryState,
    instance: Instance,
    move_between_services: bool,
    effects: &mut Effects,
) -> Result<Outcome, RegistryError> {
    let label = instance.service.label().clone();
    if let Some(service) = state.services.get(&label)
        && service.name != instance.service
    {
        return Err(RegistryError::Conflict(format!(
            "service {:?} maps to the DNS label {label:?}, which service {:?} already uses; pick a name that differs in letters or digits",
            instance.service.as_str(),
            service.name.as_str(),
        )));
    }
    let previous = state.instance(instance.id.as_str()).cloned();
    if let Some(previous) = &previous
        && previous.instance.service.label() != &label
    {
        if !move_between_services {
            return Err(RegistryError::Conflict(format!(
                "instance ID {:?} is registered in service {:?}; IDs are unique across services, so deregister it there first",
                instance.id.as_str(),
                previous.instance.service.as_str(),
            )));
        }
        remove(state, previous, effects);
    }
    if let Some(service) = state.services.get(&label)
        && let Some(clash) = service.instances.values().find(|other| {
            other.instance.id.label() == instance.id.label() && other.instance.id != instance.id
        })
    {
        return Err(RegistryError::Conflict(format!(
            "instance ID {:?} maps to the DNS label {:?}, which instance {:?} of this service already uses",
            instance.id.as_str(),
            instance.id.label().as_str(),
            clash.instance.id.as_str(),
        )));
    }
    // Checks keep their status by ID even when the instance moved here from
    // another service (Consul keys check state by check ID alone).
    let checks_before = previous.clone();
    let previous = previous.filter(|p| p.instance.service.label() == &label);
    if let Some(previous) = &previous
        && *previous.instance == instance
    {
        // Nothing changed: Consul clients re-register on every start, and
        // waking every blocking query for that would be noise.
        return Ok(Outcome::Instance(previous.clone()));
    }
    let now = SystemTime::now();
    let index = state.index + 1;
    // Checks that keep their ID keep their status (Consul's semantics), so a
    // re-registration does not flap a healthy instance out of DNS.
    let checks = instance
        .checks
        .iter()
        .map(|def| {
            checks_before
                .as_ref()
                .and_then(|p| p.check(&def.id))
                .filter(|(_, old_def, _)| old_def.kind == def.kind)
                .map(|(_, _, old)| old.clone())
                .unwrap_or_else(|| CheckState {
                    status: def.initial_status,
                    output: String::new(),
                    changed_at: now,
                    modify_index: index,
                })
        })
        .collect();
    let updated = InstanceState {
        instance: Arc::new(instance),
        checks,
        maintenance: previous.as_ref().and_then(|p| p.maintenance.clone()),
        create_index: previous.as_ref().map_or(index, |p| p.create_index),
        modify_index: index,
    };
    let updated = commit_instance(state, updated, true, effects);
    effects
        .events
        .push(super::RegistryEvent::Upserted(updated.clone()));
    Ok(Outcome::Instance(updated))
}

/// Stores `updated` in the state under a new index; `durable` adds it to
/// what the store must write.
fn commit_instance(
    state: &mut RegistryState,
    mut updated: InstanceState,
    durable: bool,
    effects: &mut Effects,
) -> Arc<InstanceState> {
    state.index += 1;
    updated.modify_index = state.index;
    let label = updated.instance.service.label().clone();
    let id = updated.instance.id.as_str().to_owned();
    if durable {
        effects.mutations.push(Mutation::Put(StoredInstance::new(
            &updated.instance,
            updated.maintenance.clone(),
            updated.create_index,
        )));
    }
    let updated = Arc::new(updated);
    let mut service = state
        .services
        .get(&label)
        .map(|s| (**s).clone())
        .unwrap_or_else(|| ServiceState {
            name: updated.instance.service.clone(),
            instances: Default::default(),
        });
    service.instances.insert(id.clone(), updated.clone());
    state.services.insert(label.clone(), Arc::new(service));
    state.ids.insert(id, label.clone());
    effects.touched.insert(label);
    updated
}

fn remove(state: &mut RegistryState, existing: &Arc<InstanceState>, effects: &mut Effects) {
    let label = existing.instance.service.label().clone();
    let id = existing.instance.id.as_str().to_owned();
    state.index += 1;
    state.ids.remove(&id);
    if let Some(service) = state.services.get(&label) {
        let mut service = (**service).clone();
        service.instances.remove(&id);
        if service.instances.is_empty() {
            state.services.remove(&label);
        } else {
            state.services.insert(label.clone(), Arc::new(service));
        }
    }
    effects.mutations.push(Mutation::Delete { id: id.clone() });
    effects.touched.insert(label);
    effects.events.push(super::RegistryEvent::Removed { id });
}

struct CheckReport {
    check_id: Option<String>,
    status: Status,
    output: String,
    heartbeat: bool,
}

fn check_result(
    state: &mut RegistryState,
    service: Option<&str>,
    id: &str,
    report: CheckReport,
    effects: &mut Effects,
) -> Result<Outcome, RegistryError> {
    let CheckReport {
        check_id,
        status,
        output,
        heartbeat,
    } = report;
    let existing = find(state, service, id)?;
    let targets: Vec<usize> = match &check_id {
        Some(check_id) => {
            let (i, _, _) = existing.check(check_id).ok_or_else(|| {
                RegistryError::NotFound(format!("instance {id:?} has no check {check_id:?}"))
            })?;
            vec![i]
        }
        None => existing
            .instance
            .checks
            .iter()
            .enumerate()
            .filter(|(_, def)| def.kind.type_name() == "ttl")
            .map(|(i, _)| i)
            .collect(),
    };
    if targets.is_empty() {
        return Err(RegistryError::Conflict(format!(
            "instance {id:?} has no ttl check to report to"
        )));
    }
    if heartbeat {
        for &i in &targets {
            let def = &existing.instance.checks[i];
            if def.kind.type_name() == "ttl" {
                effects.events.push(super::RegistryEvent::Heartbeat {
                    id: id.to_owned(),
                    check_id: def.id.clone(),
                    status,
                });
            }
        }
    }
    let changed = targets.iter().any(|&i| {
        let current = &existing.checks[i];
        current.status != status || current.output != output
    });
    if !changed {
        // Unchanged results do not bump the index: blocked Consul clients
        // would otherwise wake on every TTL pass.
        return Ok(Outcome::Instance(existing));
    }
    let mut updated = (*existing).clone();
    let now = SystemTime::now();
    let index = state.index + 1;
    for &i in &targets {
        let check = &mut updated.checks[i];
        if check.status != status {
            check.changed_at = now;
            effects.transitions.push(Transition {
                instance: id.to_owned(),
                check: existing.instance.checks[i].id.clone(),
                from: check.status,
                to: status,
                output: output.clone(),
            });
        }
        check.status = status;
        check.output = output.clone();
        check.modify_index = index;
    }
    let updated = commit_instance(state, updated, false, effects);
    Ok(Outcome::Instance(updated))
}
