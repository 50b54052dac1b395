//! A service's instances in ID order, in shared leaves, so that copying a
//! service to change one instance copies one leaf.
//!
//! The writer copies a service the first time a batch changes it (the
//! published state still shares it). As a `BTreeSet` of `Arc`s, that copy
//! raised every instance's reference count, and dropping the old state
//! lowered them all again: two cache misses per instance of the service,
//! for a change to one, the largest part of a write to a large service
//! after its DNS records (which `ServiceRecords::update` now copies without
//! reading the instances). Here a copy raises one count per leaf, and a
//! change copies the one leaf it lands in.
//!
//! Owns: the order and the leaves. Must not: know what an instance holds
//! beyond its ID.

use std::sync::Arc;

use super::state::InstanceState;

/// The most instances a leaf holds: a change copies up to this many
/// pointers (raising their counts); a lookup binary-searches the leaves,
/// then one leaf.
const LEAF_MAX: usize = 32;

/// A leaf: instances in ID order, never empty.
type Leaf = Vec<Arc<InstanceState>>;

/// Instances in ID order, unique by ID.
#[derive(Clone, Debug, Default)]
pub(super) struct Instances {
    /// In ID order: every ID in a leaf is below every ID in the next.
    leaves: Vec<Arc<Leaf>>,
    len: usize,
}

fn id(state: &InstanceState) -> &str {
    state.instance.id.as_str()
}

impl Instances {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The leaf that holds `id`, or would: the last whose first ID is at
    /// most `id` (the first leaf for an ID below them all).
    fn leaf_for(&self, id_wanted: &str) -> usize {
        self.leaves
            .partition_point(|leaf| leaf.first().is_some_and(|first| id(first) <= id_wanted))
            .saturating_sub(1)
    }

    pub(super) fn get(&self, id_wanted: &str) -> Option<&Arc<InstanceState>> {
        let leaf = self.leaves.get(self.leaf_for(id_wanted))?;
        let at = leaf
            .binary_search_by(|state| id(state).cmp(id_wanted))
            .ok()?;
        leaf.get(at)
    }

    /// Adds `state`, or replaces the instance with its ID.
    pub(super) fn replace(&mut self, state: Arc<InstanceState>) {
        let at = self.leaf_for(id(&state));
        let Some(leaf) = self.leaves.get_mut(at) else {
            self.leaves.push(Arc::new(vec![state]));
            self.len = 1;
            return;
        };
        let leaf = Arc::make_mut(leaf);
        match leaf.binary_search_by(|other| id(other).cmp(id(&state))) {
            Ok(found) => leaf[found] = state,
            Err(slot) => {
                leaf.insert(slot, state);
                self.len += 1;
                if leaf.len() > LEAF_MAX {
                    let right = leaf.split_off(leaf.len() / 2);
                    self.leaves.insert(at + 1, Arc::new(right));
                }
            }
        }
    }

    /// Removes the instance with this ID, if there is one.
    pub(super) fn take(&mut self, id_wanted: &str) -> Option<Arc<InstanceState>> {
        let at = self.leaf_for(id_wanted);
        let leaf = self.leaves.get_mut(at)?;
        // Found before the leaf is copied: removing nothing copies nothing.
        let found = leaf
            .binary_search_by(|state| id(state).cmp(id_wanted))
            .ok()?;
        let leaf = Arc::make_mut(leaf);
        let removed = leaf.remove(found);
        let left = leaf.len();
        self.len -= 1;
        if left == 0 {
            self.leaves.remove(at);
        } else if left < LEAF_MAX / 4
            && self
                .leaves
                .get(at + 1)
                .is_some_and(|next| left + next.len() <= LEAF_MAX)
        {
            // Keeps leaves from thinning out: a small leaf takes in the
            // next one when they fit in one.
            let next = self.leaves.remove(at + 1);
            Arc::make_mut(&mut self.leaves[at]).extend(next.iter().cloned());
        }
        Some(removed)
    }

    /// The instances in ID order.
    pub(super) fn iter(&self) -> Iter<'_> {
        Iter {
            leaves: self.leaves.iter(),
            current: [].iter(),
            remaining: self.len,
        }
    }
}

/// The instances of an [`Instances`] in ID order.
pub(super) struct Iter<'a> {
    leaves: std::slice::Iter<'a, Arc<Leaf>>,
    current: std::slice::Iter<'a, Arc<InstanceState>>,
    remaining: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a Arc<InstanceState>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(state) = self.current.next() {
                self.remaining = self.remaining.saturating_sub(1);
                return Some(state);
            }
            self.current = self.leaves.next()?.iter();
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Iter<'_> {}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand::{RngExt, SeedableRng, rngs::SmallRng};

    use super::*;
    use crate::model::InstanceBody;

    fn state(id: &str, port: u16) -> Arc<InstanceState> {
        let body: InstanceBody =
            serde_json::from_str(&format!(r#"{{"address":"127.0.0.1","port":{port}}}"#))
                .expect("a body");
        let instance = body.validate("web", id).expect("valid");
        Arc::new(InstanceState::registered_for_test(instance))
    }

    /// Against a `BTreeMap` through thousands of random adds, replacements
    /// and removals, with copies taken on the way (as the published state
    /// shares leaves with the writer's): the same instances in the same
    /// order, found by ID; leaves within bounds; copies unchanged.
    #[test]
    fn behaves_as_an_ordered_map_by_id_and_copies_stay_put() {
        let mut rng = SmallRng::seed_from_u64(16);
        let mut instances = Instances::default();
        let mut model: BTreeMap<String, u16> = BTreeMap::new();
        let mut copies: Vec<(Instances, BTreeMap<String, u16>)> = Vec::new();
        for step in 0..6000u32 {
            // Grow for a while, then mostly shrink, through splits and merges.
            let remove_odds = if step < 3000 { 4 } else { 2 };
            let key = format!("i-{:03}", rng.random_range(0..400));
            if rng.random_range(0..remove_odds) == 0 {
                let removed = instances.take(&key).map(|s| s.instance.port);
                assert_eq!(removed, model.remove(&key), "step {step}: take {key}");
            } else {
                let port = (step % 60_000) as u16 + 1;
                instances.replace(state(&key, port));
                model.insert(key, port);
            }
            if step % 500 == 0 {
                copies.push((instances.clone(), model.clone()));
            }
            assert_eq!(instances.len(), model.len());
            assert!(
                instances
                    .leaves
                    .iter()
                    .all(|l| !l.is_empty() && l.len() <= LEAF_MAX)
            );
        }
        for (copy, model) in copies.iter().chain([&(instances, model)]) {
            let seen: Vec<(String, u16)> = copy
                .iter()
                .map(|s| (s.instance.id.as_str().to_owned(), s.instance.port))
                .collect();
            let expected: Vec<(String, u16)> = model.iter().map(|(k, &v)| (k.clone(), v)).collect();
            assert_eq!(seen, expected);
            assert_eq!(copy.iter().len(), model.len());
            for (key, port) in model {
                assert_eq!(copy.get(key).map(|s| s.instance.port), Some(*port));
            }
            assert!(copy.get("i-999").is_none() && copy.get("a").is_none());
        }
        assert!(
            copies.iter().any(|(copy, _)| copy.leaves.len() > 3),
            "splits happened"
        );
    }
}
