//! The registry's commands and how each one changes the state. Pure
//! functions of (state, command): the writer task runs them, persists what
//! they return and publishes the result, so they never do I/O themselves.

use std::{collections::BTreeSet, sync::Arc, time::SystemTime};

use super::{
    RegistryError,
    state::{CheckState, InstanceState, RegistryState, ServiceState},
    store::{Mutation, StoredInstance},
};
use crate::model::{CheckKind, DnsLabel, Instance, InstanceId, ServiceName, Status};

/// A change a front door asks for.
#[derive(Clone, Debug)]
pub enum Command {
    /// Create or replace an instance.
    Register {
        instance: Instance,
        /// What to do when the ID is registered under another service.
        in_other_service: InOtherService,
    },
    /// Register an instance computed from what was read of the registry (an
    /// edited copy of the instance, or one merged with it), provided the
    /// instance is still as read: its `modify_index`, or `None` for "not
    /// registered". A read-modify-write from a front door that cannot lose
    /// a concurrent change: a stale one fails with [`RegistryError::Stale`],
    /// and the caller reads again and retries. The ID may move between
    /// services, as in Consul.
    Edit {
        instance: Instance,
        modify_index: Option<u64>,
    },
    /// Remove an instance; `service`, when given, must be the one it is in.
    Deregister {
        service: Option<ServiceName>,
        id: InstanceId,
    },
    /// Drain (`Some(reason)`) or restore (`None`) an instance.
    Maintenance {
        service: Option<ServiceName>,
        id: InstanceId,
        reason: Option<String>,
    },
    /// A check result: from the checker, or a heartbeat for TTL checks.
    /// `check_id: None` means every TTL check of the instance.
    CheckResult {
        service: Option<ServiceName>,
        id: InstanceId,
        check_id: Option<String>,
        status: Status,
        output: String,
        /// Who reported it, which decides whether TTL timers restart.
        from: Reporter,
    },
    /// Load instances from an export (or the store at start-up).
    Import { instances: Vec<StoredInstance> },
    /// Changes computed from the state as the writer holds it when it runs
    /// the command, applied all or nothing: a front door's conditional
    /// update (DNS UPDATE's prerequisites) that no other write can slip
    /// between the check and the change.
    Transaction(Arc<dyn Transaction>),
}

/// A conditional change to several instances at once: see
/// [`Command::Transaction`].
pub trait Transaction: Send + Sync + std::fmt::Debug {
    /// The changes to make to `state`, or why there are none: a refusal is
    /// returned to the caller as [`RegistryError::Unmet`], with nothing
    /// changed. Runs on the writer, so it must be quick and do no I/O.
    fn plan(&self, state: &RegistryState) -> Result<Vec<Change>, TransactionRefused>;
}

/// Why a [`Transaction`] planned nothing, in the front door's own terms:
/// it gets the error back through [`RegistryError::Unmet`] and can
/// downcast it.
pub type TransactionRefused = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// One change a [`Transaction`] makes.
#[derive(Clone, Debug)]
pub enum Change {
    /// Register or replace an instance (in its own service only: an ID
    /// registered in another service is refused, as on the native API). An
    /// instance equal to the registered one changes nothing, and checks
    /// that keep their ID keep their status.
    Put(Instance),
    /// Deregister an instance.
    Remove(InstanceId),
}

impl Change {
    /// The ID of the instance it changes.
    pub fn id(&self) -> &str {
        match self {
            Self::Put(instance) => instance.id.as_str(),
            Self::Remove(id) => id.as_str(),
        }
    }
}

impl Command {
    /// The instance the command is about, if it is about one.
    pub fn instance_id(&self) -> Option<String> {
        match self {
            Self::Register { instance, .. } | Self::Edit { instance, .. } => {
                Some(instance.id.as_str().to_owned())
            }
            Self::Deregister { id, .. }
            | Self::Maintenance { id, .. }
            | Self::CheckResult { id, .. } => Some(id.as_str().to_owned()),
            Self::Import { .. } | Self::Transaction(_) => None,
        }
    }
}

/// What [`Command::Register`] does with an ID registered under another
/// service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InOtherService {
    /// Move it here (Consul's semantics: its agent API names an instance by
    /// ID alone).
    Move,
    /// Refuse (the native API: a path names one service, so a write there
    /// must not take an instance from another).
    Refuse,
}

/// Who sent a [`Command::CheckResult`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reporter {
    /// The service itself (a heartbeat, a Consul TTL update): it restarts
    /// the TTL timers of the checks it reports to.
    Service,
    /// The health checker (a probe result, a TTL expiring): it restarts
    /// nothing, or an expiry would keep itself from recurring.
    Checker,
}

/// Whether a change to an instance is written to the store, or only to the
/// state.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Persist {
    /// Written with the batch's commit: registrations, maintenance, imports.
    Write,
    /// State only: what the store already holds (at start-up), or runtime
    /// health, which is not stored.
    StateOnly,
}

/// What a successful command returns to its caller.
#[derive(Debug)]
pub enum Outcome {
    Instance(Arc<InstanceState>),
    Removed,
    Imported(usize),
    /// A [`Command::Transaction`] was applied, with this many changes
    /// (an instance written as it already was counts too).
    Transacted(usize),
}

/// What the writer must do after a command: persist, republish, tell the
/// health checker.
#[derive(Default)]
pub(super) struct Effects {
    pub mutations: Vec<Mutation>,
    pub touched: BTreeSet<DnsLabel>,
    pub events: Vec<super::RegistryEvent>,
    /// Check status changes, for the log and the counters.
    pub transitions: Vec<Transition>,
    /// Check reports a cluster shares through etcd: status changes and
    /// heartbeats. The embedded store keeps health in memory only.
    pub health: Vec<HealthWrite>,
}

/// A check report to write to the shared store (cluster mode).
#[derive(Clone, Debug)]
pub(crate) struct HealthWrite {
    pub id: String,
    pub check: String,
    pub status: Status,
    pub output: String,
    /// The service reported it (a TTL heartbeat), so the node running the
    /// check restarts its timer, even if nothing changed.
    pub heartbeat: bool,
}

/// Lengths of an [`Effects`]' lists, to undo what a failed command added.
#[derive(Clone, Copy)]
pub(super) struct EffectMarks {
    mutations: usize,
    events: usize,
    transitions: usize,
    health: usize,
}

impl Effects {
    pub(super) fn marks(&self) -> EffectMarks {
        EffectMarks {
            mutations: self.mutations.len(),
            events: self.events.len(),
            transitions: self.transitions.len(),
            health: self.health.len(),
        }
    }

    /// Drops what was added since `marks`. (`touched` may keep labels: a
    /// service republished without a change is harmless.)
    pub(super) fn truncate(&mut self, marks: EffectMarks) {
        self.mutations.truncate(marks.mutations);
        self.events.truncate(marks.events);
        self.transitions.truncate(marks.transitions);
        self.health.truncate(marks.health);
    }
}

/// A check whose status changed.
#[derive(Debug)]
pub(super) struct Transition {
    pub instance: String,
    pub check: String,
    pub from: Status,
    pub to: Status,
    pub output: String,
}

pub(super) fn apply(
    state: &mut RegistryState,
    command: Command,
    effects: &mut Effects,
) -> Result<Outcome, RegistryError> {
    match command {
        Command::Register {
            instance,
            in_other_service,
        } => register(
            state,
            instance,
            in_other_service,
            None,
            Persist::Write,
            effects,
        ),
        Command::Edit {
            instance,
            modify_index,
        } => {
            let current = state.instance(instance.id.as_str()).map(|i| i.modify_index);
            if current != modify_index {
                return Err(RegistryError::Stale {
                    id: instance.id.as_str().to_owned(),
                });
            }
            register(
                state,
                instance,
                InOtherService::Move,
                None,
                Persist::Write,
                effects,
            )
        }
        Command::Deregister { service, id } => {
            let existing = find(state, service.as_ref(), &id)?;
            remove(state, &existing, effects);
            Ok(Outcome::Removed)
        }
        Command::Maintenance {
            service,
            id,
            reason,
        } => {
            let existing = find(state, service.as_ref(), &id)?;
            if existing.maintenance == reason {
                return Ok(Outcome::Instance(existing));
            }
            let mut updated = (*existing).clone();
            updated.maintenance = reason;
            let updated = commit_instance(state, updated, Persist::Write, effects);
            Ok(Outcome::Instance(updated))
        }
        Command::CheckResult {
            service,
            id,
            check_id,
            status,
            output,
            from,
        } => {
            let report = CheckReport {
                check_id,
                status,
                output,
                from,
            };
            check_result(state, service.as_ref(), &id, report, effects)
        }
        Command::Import { instances } => {
            // All or nothing: a bad instance anywhere leaves the state as it
            // was. The snapshot shares every service with the state, so the
            // import copies each service it touches once.
            let before = state.clone();
            let marks = effects.marks();
            let imported = restore(state, instances, RestoreFrom::Import, effects);
            if imported.is_err() {
                *state = before;
                effects.truncate(marks);
            }
            imported
        }
        Command::Transaction(transaction) => {
            let changes = transaction.plan(state).map_err(RegistryError::Unmet)?;
            let before = state.clone();
            let marks = effects.marks();
            let applied = apply_changes(state, changes, effects);
            if applied.is_err() {
                *state = before;
                effects.truncate(marks);
            }
            applied
        }
    }
}

/// Applies a [`Transaction`]'s changes in order; stops at the first that
/// fails, with what came before it applied (the caller undoes it).
fn apply_changes(
    state: &mut RegistryState,
    changes: Vec<Change>,
    effects: &mut Effects,
) -> Result<Outcome, RegistryError> {
    let count = changes.len();
    for change in changes {
        match change {
            Change::Put(instance) => {
                register(
                    state,
                    instance,
                    InOtherService::Refuse,
                    None,
                    Persist::Write,
                    effects,
                )?;
            }
            Change::Remove(id) => {
                let existing = find(state, None, &id)?;
                remove(state, &existing, effects);
            }
        }
    }
    Ok(Outcome::Transacted(count))
}

/// Where [`restore`]d instances come from, which decides what a bad one
/// does.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum RestoreFrom {
    /// An export loaded through the API: all or nothing, so the first bad
    /// instance refuses the whole import, and each one is written.
    Import,
    /// The store at start-up: what it holds is not written back, and an
    /// instance that no longer passes validation (stored by an older
    /// version, say) is left in the file and not served, with an error
    /// log, rather than keeping roster from starting: one bad record must
    /// not take discovery down for every service.
    StartUp,
}

/// Loads stored instances (an export, or the store at start-up) on top of
/// the state, keeping their maintenance flags and, where this registry has
/// passed it, their creation index. Every instance passes the same
/// validation as an API registration ([`StoredInstance::to_instance`]). An
/// import stops at the first instance that cannot be restored, with what
/// came before it applied (the caller undoes it); start-up skips it.
pub(super) fn restore(
    state: &mut RegistryState,
    instances: Vec<StoredInstance>,
    from: RestoreFrom,
    effects: &mut Effects,
) -> Result<Outcome, RegistryError> {
    let count = instances.len();
    let mut seen = std::collections::HashSet::with_capacity(count);
    let mut skipped = 0;
    for stored in instances {
        let restored = if seen.insert(stored.id.clone()) {
            restore_one(state, stored, from, effects)
        } else {
            Err(RegistryError::DuplicateId {
                id: stored.id.clone(),
            })
        };
        match (restored, from) {
            (Ok(()), _) => {}
            (Err(e), RestoreFrom::Import) => return Err(e),
            (Err(e), RestoreFrom::StartUp) => {
                skipped += 1;
                tracing::error!(
                    "a stored instance is not served: {e}; it stays in the store until it is registered again with valid values"
                );
            }
        }
    }
    Ok(Outcome::Imported(count - skipped))
}

fn restore_one(
    state: &mut RegistryState,
    stored: StoredInstance,
    from: RestoreFrom,
    effects: &mut Effects,
) -> Result<(), RegistryError> {
    let instance = stored
        .to_instance()
        .and_then(|instance| match from {
            // An import arrives: it meets what the APIs ask of a new
            // instance, not only what a stored one must be.
            RestoreFrom::Import => instance.validate_incoming().map(|()| instance),
            RestoreFrom::StartUp => Ok(instance),
        })
        .map_err(|error| RegistryError::InvalidStored {
            id: stored.id.clone(),
            error,
        })?;
    let restored = Restored {
        maintenance: stored.maintenance,
        create_index: stored.create_index,
    };
    let persist = match from {
        RestoreFrom::Import => Persist::Write,
        RestoreFrom::StartUp => Persist::StateOnly,
    };
    register(
        state,
        instance,
        InOtherService::Move,
        Some(restored),
        persist,
        effects,
    )?;
    Ok(())
}

/// What an import carries besides the instance itself.
struct Restored {
    maintenance: Option<String>,
    create_index: u64,
}

fn find(
    state: &RegistryState,
    service: Option<&ServiceName>,
    id: &InstanceId,
) -> Result<Arc<InstanceState>, RegistryError> {
    let instance = state
        .instance(id.as_str())
        .ok_or_else(|| RegistryError::NoInstance {
            id: id.as_str().to_owned(),
        })?;
    if let Some(service) = service {
        // By label, as DNS tells services apart: `Hello Service` and
        // `hello-service` name one service.
        if service.label() != instance.instance.service.label() {
            return Err(RegistryError::NotInService {
                id: id.as_str().to_owned(),
                service: service.as_str().to_owned(),
            });
        }
    }
    Ok(instance.clone())
}

/// Registers or replaces `instance`. Every check that can refuse it runs
/// before the state is touched, so a refused registration changes nothing.
fn register(
    state: &mut RegistryState,
    mut instance: Instance,
    in_other_service: InOtherService,
    restored: Option<Restored>,
    persist: Persist,
    effects: &mut Effects,
) -> Result<Outcome, RegistryError> {
    let label = instance.service.label().clone();
    let service = state.services.get(&label);
    if let Some(service) = service
        && service.name != instance.service
    {
        return Err(RegistryError::ServiceLabelTaken {
            service: instance.service.as_str().to_owned(),
            label,
            owner: service.name.as_str().to_owned(),
        });
    }
    if let Some(clash) = service
        .and_then(|s| s.id_with_label(instance.id.label().as_str()))
        .filter(|other| *other != instance.id.as_str())
    {
        return Err(RegistryError::IdLabelTaken {
            id: instance.id.as_str().to_owned(),
            label: instance.id.label().as_str().to_owned(),
            owner: clash.to_owned(),
        });
    }
    let previous = state.instance(instance.id.as_str()).cloned();
    let moved = previous
        .as_ref()
        .is_some_and(|p| p.instance.service.label() != &label);
    if moved && in_other_service == InOtherService::Refuse {
        let previous_service = previous.as_ref().map(|p| p.instance.service.as_str());
        return Err(RegistryError::InOtherService {
            id: instance.id.as_str().to_owned(),
            service: previous_service.unwrap_or_default().to_owned(),
        });
    }
    // Nothing below refuses.
    if let Some(service) = state.services.get(&label) {
        // Share the service's name with its other instances.
        instance.service = service.name.clone();
    }
    if moved && let Some(previous) = &previous {
        remove(state, previous, effects);
    }
    // Checks keep their status by ID even when the instance moved here from
    // another service (Consul keys check state by check ID alone).
    let checks_before = previous.clone();
    let previous = previous.filter(|_| !moved);
    let maintenance = match &restored {
        Some(restored) => restored.maintenance.clone(),
        None => previous.as_ref().and_then(|p| p.maintenance.clone()),
    };
    let index = state.index + 1;
    // An import keeps the original creation index (Consul's CreateIndex)
    // when it is one this registry has already passed.
    let create_index = match (&restored, &previous) {
        (Some(r), _) if r.create_index > 0 && r.create_index <= state.index => r.create_index,
        (_, Some(p)) => p.create_index,
        _ => index,
    };
    if let Some(previous) = &previous
        && *previous.instance == instance
        && previous.maintenance == maintenance
        && previous.create_index == create_index
    {
        // Nothing changed: Consul clients re-register on every start, and
        // waking every blocking query for that would be noise.
        return Ok(Outcome::Instance(previous.clone()));
    }
    let now = SystemTime::now();
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
        maintenance,
        create_index,
        modify_index: index,
    };
    let updated = commit_instance(state, updated, persist, effects);
    effects
        .events
        .push(super::RegistryEvent::Upserted(updated.clone()));
    Ok(Outcome::Instance(updated))
}

/// Stores `updated` in the state under a new index, and with
/// [`Persist::Write`] adds it to what the store must write.
fn commit_instance(
    state: &mut RegistryState,
    mut updated: InstanceState,
    persist: Persist,
    effects: &mut Effects,
) -> Arc<InstanceState> {
    state.index += 1;
    updated.modify_index = state.index;
    let label = updated.instance.service.label().clone();
    let id = updated.instance.id.shared();
    if persist == Persist::Write {
        effects.mutations.push(Mutation::Put(StoredInstance::new(
            &updated.instance,
            updated.maintenance.clone(),
            updated.create_index,
        )));
    }
    let updated = Arc::new(updated);
    let service = state
        .services
        .entry(label.clone())
        .or_insert_with(|| Arc::new(ServiceState::new(updated.instance.service.clone())));
    // Copies the service only if the published state still shares it.
    let service = Arc::make_mut(service);
    service.insert(updated.clone());
    service.modified_at(updated.modify_index);
    state.note_present(&label);
    // An update keeps its ID's entry: inserting it again would copy the
    // map's path to it.
    if state.ids.get(&*id) != Some(&label) {
        state.ids.insert(id, label.clone());
    }
    effects.touched.insert(label);
    updated
}

fn remove(state: &mut RegistryState, existing: &Arc<InstanceState>, effects: &mut Effects) {
    let label = existing.instance.service.label().clone();
    let id = existing.instance.id.as_str().to_owned();
    state.index += 1;
    state.ids.remove(id.as_str());
    if let Some(service) = state.services.get_mut(&label) {
        let service = Arc::make_mut(service);
        service.remove(&id);
        service.modified_at(state.index);
        if service.is_empty() {
            state.services.remove(&label);
            state.note_removed(label.clone(), state.index);
        }
    }
    effects.mutations.push(Mutation::Delete { id: id.clone() });
    effects.touched.insert(label);
    effects.events.push(super::RegistryEvent::Removed { id });
}

/// Applies an instance as the cluster's store holds it at `revision`
/// (created at `created`), with the checks' statuses the store holds
/// (`recorded`), keeping by ID the ones it holds none for. The state's
/// index is left at `revision`.
pub(super) fn put_from_feed(
    state: &mut RegistryState,
    stored: StoredInstance,
    revision: u64,
    created: u64,
    recorded: impl Fn(&str) -> Option<(Status, String)>,
    effects: &mut Effects,
) -> Result<(), RegistryError> {
    // As a start-up restore (state only, validated), but created at the
    // key's creation revision whatever the record says.
    let stored = StoredInstance {
        create_index: created,
        ..stored
    };
    let id = stored.id.clone();
    state.index = revision.saturating_sub(1);
    restore_one(state, stored, RestoreFrom::StartUp, effects)?;
    let checks: Vec<String> = state
        .instance(&id)
        .map(|i| i.instance.checks.iter().map(|c| c.id.clone()).collect())
        .unwrap_or_default();
    for check in checks {
        if let Some((status, output)) = recorded(&check) {
            set_check_from_feed(
                state,
                id.as_str(),
                &check,
                status,
                output,
                revision,
                effects,
            );
        }
    }
    // The checker hears of the instance with the statuses the store holds,
    // not the ones it had before they were applied.
    if let Some(current) = state.instance(&id) {
        for event in effects.events.iter_mut().rev() {
            if let super::RegistryEvent::Upserted(upserted) = event
                && upserted.instance.id.as_str() == id
            {
                *upserted = current.clone();
                break;
            }
        }
    }
    state.index = state.index.max(revision);
    Ok(())
}

/// Removes an instance the cluster's store deleted at `revision`.
pub(super) fn remove_from_feed(
    state: &mut RegistryState,
    id: &str,
    revision: u64,
    effects: &mut Effects,
) {
    if let Some(existing) = state.instance(id).cloned() {
        state.index = revision.saturating_sub(1);
        remove(state, &existing, effects);
    }
    state.index = state.index.max(revision);
}

/// Sets a check's status as the cluster's store holds it at `revision`; a
/// check the instance does not have (any more) is ignored.
pub(super) fn set_check_from_feed(
    state: &mut RegistryState,
    id: &str,
    check_id: &str,
    status: Status,
    output: String,
    revision: u64,
    effects: &mut Effects,
) {
    let Some(existing) = state.instance(id).cloned() else {
        return;
    };
    let Some((i, _, current)) = existing.check(check_id) else {
        return;
    };
    if current.status == status && current.output == output {
        return;
    }
    let mut updated = (*existing).clone();
    let check = &mut updated.checks[i];
    if check.status != status {
        check.changed_at = SystemTime::now();
        effects.transitions.push(Transition {
            instance: id.to_owned(),
            check: check_id.to_owned(),
            from: check.status,
            to: status,
            output: output.clone(),
        });
    }
    check.status = status;
    check.output = output;
    check.modify_index = revision;
    state.index = revision.saturating_sub(1);
    commit_instance(state, updated, Persist::StateOnly, effects);
    state.index = state.index.max(revision);
}

struct CheckReport {
    check_id: Option<String>,
    status: Status,
    output: String,
    from: Reporter,
}

fn check_result(
    state: &mut RegistryState,
    service: Option<&ServiceName>,
    id: &InstanceId,
    report: CheckReport,
    effects: &mut Effects,
) -> Result<Outcome, RegistryError> {
    let CheckReport {
        check_id,
        status,
        output,
        from,
    } = report;
    let existing = find(state, service, id)?;
    let targets: Vec<usize> = match &check_id {
        Some(check_id) => {
            let (i, _, _) = existing
                .check(check_id)
                .ok_or_else(|| RegistryError::NoCheck {
                    id: id.as_str().to_owned(),
                    check_id: check_id.clone(),
                })?;
            vec![i]
        }
        None => existing
            .instance
            .checks
            .iter()
            .enumerate()
            .filter(|(_, def)| matches!(def.kind, CheckKind::Ttl { .. }))
            .map(|(i, _)| i)
            .collect(),
    };
    if targets.is_empty() {
        return Err(RegistryError::NoTtlCheck {
            id: id.as_str().to_owned(),
        });
    }
    if from == Reporter::Service {
        for &i in &targets {
            let def = &existing.instance.checks[i];
            effects.health.push(HealthWrite {
                id: id.as_str().to_owned(),
                check: def.id.clone(),
                status,
                output: output.clone(),
                heartbeat: true,
            });
            if let CheckKind::Ttl { .. } = def.kind {
                effects.events.push(super::RegistryEvent::Heartbeat {
                    id: id.as_str().to_owned(),
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
            if from == Reporter::Checker {
                effects.health.push(HealthWrite {
                    id: id.as_str().to_owned(),
                    check: existing.instance.checks[i].id.clone(),
                    status,
                    output: output.clone(),
                    heartbeat: false,
                });
            }
            check.changed_at = now;
            effects.transitions.push(Transition {
                instance: id.as_str().to_owned(),
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
    let updated = commit_instance(state, updated, Persist::StateOnly, effects);
    Ok(Outcome::Instance(updated))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::InstanceBody;

    fn instance(service: &str, id: &str) -> Instance {
        let body: InstanceBody =
            serde_json::from_str(r#"{"address":"10.0.0.1","port":80}"#).expect("valid body");
        body.validate(service, id).expect("valid instance")
    }

    fn register(state: &mut RegistryState, service: &str, id: &str) -> Result<(), RegistryError> {
        let command = Command::Register {
            instance: instance(service, id),
            in_other_service: InOtherService::Refuse,
        };
        apply(state, command, &mut Effects::default()).map(|_| ())
    }

    fn ids(state: &RegistryState) -> Vec<String> {
        let mut ids: Vec<String> = state.ids.keys().map(|id| id.to_string()).collect();
        ids.sort();
        ids
    }

    #[test]
    fn two_ids_with_one_label_clash_whichever_comes_first() {
        let mut state = RegistryState::default();
        register(&mut state, "web", "Web 1").unwrap();
        let index = state.index;
        assert!(matches!(
            register(&mut state, "web", "web-1"),
            Err(RegistryError::IdLabelTaken { .. })
        ));
        assert!(matches!(
            register(&mut state, "web", "WEB_1"),
            Err(RegistryError::IdLabelTaken { .. })
        ));
        assert_eq!(state.index, index, "a refused registration changes nothing");
        assert_eq!(ids(&state), ["Web 1"]);

        let mut state = RegistryState::default();
        register(&mut state, "web", "web-1").unwrap();
        assert!(matches!(
            register(&mut state, "web", "Web 1"),
            Err(RegistryError::IdLabelTaken { .. })
        ));
        // The same ID again is a replacement, not a clash.
        register(&mut state, "web", "web-1").unwrap();
        // Another service's label space is its own.
        register(&mut state, "api", "Web 1").unwrap();
        assert_eq!(ids(&state), ["Web 1", "web-1"]);
    }

    #[test]
    fn removing_an_instance_frees_its_label() {
        let mut state = RegistryState::default();
        register(&mut state, "web", "Web 1").unwrap();
        register(&mut state, "web", "web-2").unwrap();
        let command = Command::Deregister {
            service: None,
            id: InstanceId::parse("Web 1").unwrap(),
        };
        apply(&mut state, command, &mut Effects::default()).unwrap();
        register(&mut state, "web", "web-1").unwrap();
        assert_eq!(ids(&state), ["web-1", "web-2"]);
    }

    #[test]
    fn a_refused_move_leaves_the_instance_where_it_was() {
        let mut state = RegistryState::default();
        register(&mut state, "web", "a").unwrap();
        let before = state.index;
        let mut effects = Effects::default();
        let command = Command::Register {
            instance: instance("api", "a"),
            in_other_service: InOtherService::Refuse,
        };
        assert!(apply(&mut state, command, &mut effects).is_err());
        assert_eq!(state.index, before);
        assert!(effects.mutations.is_empty() && effects.events.is_empty());
        let service = state.services.values().next().unwrap();
        assert_eq!(service.name.as_str(), "web");
        assert_eq!(state.services.len(), 1);
    }

    #[test]
    fn an_import_with_one_bad_instance_imports_nothing() {
        let mut state = RegistryState::default();
        register(&mut state, "web", "keep").unwrap();
        let before = state.index;
        let good = StoredInstance::new(&instance("web", "new"), None, 0);
        let clashing = StoredInstance::new(&instance("web", "Keep"), None, 0);
        let mut effects = Effects::default();
        let command = Command::Import {
            instances: vec![good, clashing],
        };
        assert!(apply(&mut state, command, &mut effects).is_err());
        assert_eq!(state.index, before);
        assert_eq!(ids(&state), ["keep"]);
        assert!(effects.mutations.is_empty() && effects.events.is_empty());
    }

    #[test]
    fn changes_in_one_batch_copy_a_shared_service_once() {
        let mut published = RegistryState::default();
        register(&mut published, "web", "a").unwrap();
        let mut state = published.clone();
        register(&mut state, "web", "b").unwrap();
        let first = Arc::as_ptr(state.services.values().next().unwrap());
        register(&mut state, "web", "c").unwrap();
        let second = Arc::as_ptr(state.services.values().next().unwrap());
        assert_eq!(first, second, "the batch's own copy is edited in place");
        let original = published.services.values().next().unwrap();
        assert_eq!(original.len(), 1, "the published state is untouched");
    }

    #[test]
    fn restoring_keeps_maintenance_and_creation_index_without_writing() {
        let mut state = RegistryState::default();
        state.index = 500;
        let stored = StoredInstance::new(&instance("web", "a"), Some("deploy".into()), 42);
        let mut effects = Effects::default();
        restore(&mut state, vec![stored], RestoreFrom::StartUp, &mut effects).unwrap();
        let restored = state.instance("a").unwrap();
        assert_eq!(restored.maintenance.as_deref(), Some("deploy"));
        assert_eq!(restored.create_index, 42);
        assert!(restored.modify_index > 500);
        assert!(effects.mutations.is_empty());
        assert_eq!(effects.events.len(), 1, "the checker still hears of it");
    }
}
