//! The registry's state: every registered instance with its runtime health,
//! held in persistent maps so that a snapshot is an O(1) clone and a change
//! copies only the path to what changed.

use std::{
    borrow::Borrow,
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::SystemTime,
};

use imbl::{HashMap, OrdMap};

use crate::dns::table::Endpoint;
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
    /// What DNS serves of `instance`, derived from it once.
    pub endpoint: Arc<Endpoint>,
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
            endpoint: Arc::new(Endpoint::new(&instance)),
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
/// A plain B-tree, not a persistent map: a persistent map costs ~2 KiB per
/// service in node overhead, most of roster's memory for the common
/// few-instance service. The writer copies a service at most once per batch
/// (the first change makes its own copy with `Arc::make_mut`; later changes
/// in the same batch edit it in place), the same O(instances of the service)
/// that rebuilding its DNS records costs anyway. The set holds only `Arc`s,
/// keyed by the ID inside them, so that copy allocates nothing per instance.
#[derive(Clone, Debug)]
pub struct ServiceState {
    pub name: ServiceName,
    instances: BTreeSet<ById>,
    /// DNS label → ID for the instances whose ID is not its own label
    /// (upper case, spaces, ...), so that a label clash is found without a
    /// scan: an instance whose ID is its label is found by ID. Empty, without
    /// an allocation, in the common case.
    relabelled: BTreeMap<Box<str>, String>,
}

impl ServiceState {
    pub fn new(name: ServiceName) -> Self {
        Self {
            name,
            instances: BTreeSet::new(),
            relabelled: BTreeMap::new(),
        }
    }

    /// The instances, in ID order.
    pub fn instances(&self) -> impl ExactSizeIterator<Item = &Arc<InstanceState>> {
        self.instances.iter().map(|entry| &entry.0)
    }

    /// The instance with this ID.
    pub fn get(&self, id: &str) -> Option<&Arc<InstanceState>> {
        self.instances.get(id).map(|entry| &entry.0)
    }

    pub fn len(&self) -> usize {
        self.instances.len()
    }

    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
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
        self.instances.replace(ById(state));
    }

    /// Removes an instance; returns whether it was there.
    pub fn remove(&mut self, id: &str) -> bool {
        let Some(ById(removed)) = self.instances.take(id) else {
            return false;
        };
        let label = removed.instance.id.label().as_str();
        if id != label {
            self.relabelled.remove(label);
        }
        true
    }
}

/// An instance, ordered and looked up by its ID.
#[derive(Clone, Debug)]
struct ById(Arc<InstanceState>);

impl ById {
    fn id(&self) -> &str {
        self.0.instance.id.as_str()
    }
}

impl Borrow<str> for ById {
    fn borrow(&self) -> &str {
        self.id()
    }
}

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id()
    }
}

impl Eq for ById {}

impl PartialOrd for ById {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ById {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.id().cmp(other.id())
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
}

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

    pub fn instance_count(&self) -> usize {
        self.ids.len()
    }
}
