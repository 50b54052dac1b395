//! The registry's state: every registered instance with its runtime health,
//! held in persistent maps so that a snapshot is an O(1) clone and a change
//! copies only the path to what changed.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::SystemTime,
};

use imbl::{HashMap, OrdMap};

use super::instances::{InstanceDelta, Instances};
use crate::model::{CheckDefinition, DnsLabel, Instance, ServiceName, Status};

/// A check's current result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckState {
    pub status: Status,
    /// The last probe's output: status line, error, or the heartbeat's note.
    pub output: String,
    /// When the status last changed, for operators.
    pub changed_at: SystemTime,
    /// The registry index at which status or output last changed.
    pub modify_index: u64,
}

/// One instance as the registry holds it.
#[derive(Clone, Debug)]
pub struct InstanceState {
    pub instance: Arc<Instance>,
    /// Parallel to `instance.checks`.
    pub checks: Vec<CheckState>,
    /// `Some(reason)` while drained for maintenance.
    pub maintenance: Option<String>,
    pub create_index: u64,
    pub modify_index: u64,
}

impl InstanceState {
    /// `instance` as registered at index 1, without checks: for tests that
    /// need registry state without going through the registry.
    #[cfg(test)]
    pub fn registered_for_test(instance: Instance) -> Self {
        Self {
            instance: Arc::new(instance),
            checks: Vec::new(),
            maintenance: None,
            create_index: 1,
            modify_index: 1,
        }
    }

    /// The instance's health: the worst of its checks; passing without any.
    pub fn status(&self) -> Status {
        self.checks
            .iter()
            .map(|c| c.status)
            .max()
            .unwrap_or(Status::Passing)
    }

    /// Whether DNS may hand this instance out.
    pub fn is_servable(&self, include_warning: bool) -> bool {
        if self.maintenance.is_some() {
            return false;
        }
        match self.status() {
            Status::Passing => true,
            Status::Warning => include_warning,
            Status::Critical => false,
        }
    }

    /// The check with this ID, with its definition.
    pub fn check(&self, check_id: &str) -> Option<(usize, &CheckDefinition, &CheckState)> {
        self.instance
            .checks
            .iter()
            .zip(&self.checks)
            .enumerate()
            .find(|(_, (def, _))| def.id == check_id)
            .map(|(i, (def, state))| (i, def, state))
    }
}

/// All instances of one service, ordered by instance ID.
///
/// The writer copies a service the first time a batch changes it (the
/// published state still shares it); later changes in the same batch edit
/// the copy in place. The instances sit in shared leaves (`Instances`), so
/// that copy costs a pointer per leaf and a change copies one leaf, not
/// one pointer per instance.
#[derive(Clone, Debug)]
pub struct ServiceState {
    pub name: ServiceName,
    instances: Instances,
    /// DNS label → ID for the instances whose ID is not its own label
    /// (upper case, spaces, ...), so that a label clash is found without a
    /// scan: an instance whose ID is its label is found by ID. Empty, without
    /// an allocation, in the common case.
    relabelled: BTreeMap<Box<str>, String>,
    /// The registry index of the service's last change (an instance added,
    /// changed or removed, a check's status or output): what a blocking
    /// query on this service waits on and answers with.
    modify_index: u64,
    /// Changes whenever `instances` does, to a value no other change of
    /// any service took: records built from this state remember it, so
    /// that an incremental rebuild can tell they are this state's
    /// (`ServiceRecords::update`). A clone keeps it: same instances.
    generation: u64,
}

/// The next `ServiceState::generation`, process-wide.
fn next_generation() -> u64 {
    static GENERATIONS: AtomicU64 = AtomicU64::new(1);
    GENERATIONS.fetch_add(1, Ordering::Relaxed)
}

impl ServiceState {
    pub fn new(name: ServiceName) -> Self {
        Self {
            name,
            instances: Instances::default(),
            relabelled: BTreeMap::new(),
            modify_index: 0,
            generation: next_generation(),
        }
    }

    /// The registry index of the service's last change.
    pub fn modify_index(&self) -> u64 {
        self.modify_index
    }

    /// Which version of the instances this is: see the field.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Records that the service changed at `index`.
    pub fn modified_at(&mut self, index: u64) {
        self.modify_index = self.modify_index.max(index);
    }

    /// The instances, in ID order.
    pub fn instances(&self) -> impl ExactSizeIterator<Item = &Arc<InstanceState>> {
        self.instances.iter()
    }

    /// These instances as steps from `before`'s: see [`InstanceDelta`].
    pub fn delta<'a>(&'a self, before: &ServiceState) -> Vec<InstanceDelta<'a>> {
        self.instances.delta(&before.instances)
    }

    /// Whether every instance's ID is its own DNS label: then the
    /// instances are in label order too (labels compare as their octets,
    /// IDs as theirs).
    pub fn ids_are_labels(&self) -> bool {
        self.relabelled.is_empty()
    }

    /// The instance with this ID.
    pub fn get(&self, id: &str) -> Option<&Arc<InstanceState>> {
        self.instances.get(id)
    }

    pub fn len(&self) -> usize {
        self.instances.len()
    }

    pub fn is_empty(&self) -> bool {
        self.instances.len() == 0
    }

    /// The ID of the instance whose DNS label is `label`, if any.
    pub fn id_with_label(&self, label: &str) -> Option<&str> {
        if let Some(id) = self.relabelled.get(label) {
            return Some(id);
        }
        self.get(label)
            .filter(|state| state.instance.id.label().as_str() == label)
            .map(|state| state.instance.id.as_str())
    }

    /// Adds or replaces an instance (by its ID).
    pub fn insert(&mut self, state: Arc<InstanceState>) {
        let id = state.instance.id.as_str();
        let label = state.instance.id.label().as_str();
        if id != label {
            self.relabelled.insert(Box::from(label), id.to_owned());
        }
        self.instances.replace(state);
        self.generation = next_generation();
    }

    /// Removes an instance; returns whether it was there.
    pub fn remove(&mut self, id: &str) -> bool {
        let Some(removed) = self.instances.take(id) else {
            return false;
        };
        let label = removed.instance.id.label().as_str();
        if id != label {
            self.relabelled.remove(label);
        }
        self.generation = next_generation();
        true
    }
}

/// A consistent view of the whole registry at one index.
#[derive(Clone, Debug, Default)]
pub struct RegistryState {
    /// Bumped by every change that a client could observe; never goes back.
    pub index: u64,
    /// Services by DNS label: two names that map to one label are one service
    /// as far as DNS can tell, so the registry refuses the second.
    pub services: OrdMap<DnsLabel, Arc<ServiceState>>,
    /// Which service each instance ID belongs to (IDs are registry-wide).
    pub ids: HashMap<Arc<str>, DnsLabel>,
    /// The index at which each recently emptied service lost its last
    /// instance, so that a blocking query on it keeps a stable index and
    /// waits, instead of answering every change elsewhere.
    removed: HashMap<DnsLabel, u64>,
    /// At least the removal index of every service `removed` has forgotten:
    /// the index of a service it holds nothing about. Never goes back.
    removed_floor: u64,
}

/// The most emptied services whose removal index is remembered; past it
/// they are forgotten all at once into `removed_floor`.
const MAX_REMOVED_SERVICES: usize = 4096;

impl RegistryState {
    pub fn instance(&self, id: &str) -> Option<&Arc<InstanceState>> {
        let label = self.ids.get(id)?;
        self.services.get(label)?.get(id)
    }

    pub fn service_by_name(&self, name: &str) -> Option<&Arc<ServiceState>> {
        let label = DnsLabel::from_name(name, "service").ok()?;
        self.services
            .get(&label)
            .filter(|s| s.name.as_str() == name || label.as_str() == name)
    }

    /// The index a blocking query on the service `name` answers with and
    /// waits to move: the service's last change; for a service with no
    /// instances, when its last one left (or an index at least that).
    /// Never 0, and never lower than an earlier answer for the same name:
    /// a service's changes only raise it, and it comes back, if ever, at a
    /// higher index than it left.
    pub fn service_index(&self, name: &str) -> u64 {
        let Ok(label) = DnsLabel::from_name(name, "service") else {
            return self.removed_floor.max(1);
        };
        let index = match self.services.get(&label) {
            Some(service) => service.modify_index,
            None => self
                .removed
                .get(&label)
                .copied()
                .unwrap_or(self.removed_floor),
        };
        index.max(1)
    }

    /// Records that the service at `label` lost its last instance at
    /// `index`.
    pub(crate) fn note_removed(&mut self, label: DnsLabel, index: u64) {
        if self.removed.len() >= MAX_REMOVED_SERVICES {
            let forgotten = self.removed.values().copied().max().unwrap_or(0);
            self.removed_floor = self.removed_floor.max(forgotten);
            self.removed.clear();
        }
        self.removed.insert(label, index);
    }

    /// Starts the services' indexes afresh at the state's index, for a state
    /// rebuilt whole (start-up, a cluster node listing etcd again), whose
    /// history is unknown: every service, present or not, answers at least
    /// this index, so none goes back from what a client saw before.
    pub(crate) fn restart_service_indexes(&mut self) {
        let index = self.index;
        self.removed.clear();
        self.removed_floor = self.removed_floor.max(index);
        let behind: Vec<DnsLabel> = self
            .services
            .iter()
            .filter(|(_, service)| service.modify_index < index)
            .map(|(label, _)| label.clone())
            .collect();
        for label in behind {
            if let Some(service) = self.services.get_mut(&label) {
                Arc::make_mut(service).modified_at(index);
            }
        }
    }

    /// Records that the service at `label` has instances again.
    pub(crate) fn note_present(&mut self, label: &DnsLabel) {
        if !self.removed.is_empty() {
            self.removed.remove(label);
        }
    }

    pub fn instance_count(&self) -> usize {
        self.ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(name: &str) -> DnsLabel {
        DnsLabel::from_name(name, "service").expect("a valid label")
    }

    #[test]
    fn an_absent_service_keeps_its_index_and_forgetting_never_lowers_it() {
        let mut state = RegistryState::default();
        assert_eq!(state.service_index("web"), 1, "never 0");
        state.note_removed(label("web"), 10);
        assert_eq!(state.service_index("web"), 10);
        assert_eq!(state.service_index("Web"), 10, "by label");
        for i in 0..MAX_REMOVED_SERVICES {
            state.note_removed(label(&format!("s{i}")), 20 + i as u64);
        }
        assert!(state.removed.len() < MAX_REMOVED_SERVICES, "bounded");
        assert!(state.service_index("web") >= 10, "forgotten, not lowered");
        assert!(state.service_index("never-seen") >= 10);
        state.index = 99_999;
        state.restart_service_indexes();
        assert_eq!(state.service_index("web"), 99_999);
        assert_eq!(state.service_index("---"), 99_999, "no label: the floor");
    }
}
