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
//! Each entry keeps its ID's first 16 octets inline ([`Key`]), and the
//! leaves' first keys sit beside them: a lookup compares keys in two small
//! arrays instead of following three pointers per comparison (leaf,
//! instance, ID) to memory a write to a service of a large registry finds
//! cold: 6% of a durable write's CPU, now 1% (bench/RESULTS.md, Store).
//!
//! Owns: the order and the leaves. Must not: know what an instance holds
//! beyond its ID.

use std::{cmp::Ordering, sync::Arc};

use super::state::InstanceState;

/// The most instances a leaf holds: a change copies up to this many
/// pointers, raising their counts (a cache miss each, and another when the
/// old leaf is dropped); a lookup binary-searches the leaves' first keys,
/// then one leaf. 16 rather than 32 cost about 1 µs less per write at 64
/// connections (bench/store, services of 100).
const LEAF_MAX: usize = 16;

/// How many of an ID's first octets a [`Key`] holds.
const KEY_OCTETS: usize = 16;

/// An ID's first 16 octets, zero-padded, as a big-endian number, and its
/// length: ordering keys orders their IDs, reading the IDs themselves only
/// when two share their first 16 octets and one is longer than that.
///
/// Why the padding cannot misorder: where one ID has ended and the other
/// has an octet, the padding's 0 is below that octet (the shorter ID comes
/// first, as it does in octet order) or equal to it (a 0 octet), and then
/// the rest decides or the keys tie.
#[derive(Clone, Copy, Debug)]
struct Key {
    prefix: [u64; 2],
    len: usize,
}

impl Key {
    fn of(id: &str) -> Self {
        let mut octets = [0u8; KEY_OCTETS];
        let head = &id.as_bytes()[..id.len().min(KEY_OCTETS)];
        octets[..head.len()].copy_from_slice(head);
        let (high, low) = octets.split_at(KEY_OCTETS / 2);
        let word = |half: &[u8]| u64::from_be_bytes(half.try_into().unwrap_or_default());
        Self {
            prefix: [word(high), word(low)],
            len: id.len(),
        }
    }

    /// How the ID keyed `self` (read through `id` only if needed) orders
    /// against `other`'s, `other_id`.
    fn cmp_ids<'a>(&self, id: impl FnOnce() -> &'a str, other: &Key, other_id: &str) -> Ordering {
        match self.prefix.cmp(&other.prefix) {
            // Both whole in their keys, equal but for padding: the shorter
            // is a prefix of the longer (zeros follow it there).
            Ordering::Equal if self.len <= KEY_OCTETS && other.len <= KEY_OCTETS => {
                self.len.cmp(&other.len)
            }
            Ordering::Equal => id().cmp(other_id),
            order => order,
        }
    }
}

/// An instance with its ID's key.
#[derive(Clone, Debug)]
struct Entry {
    key: Key,
    state: Arc<InstanceState>,
}

impl Entry {
    fn new(state: Arc<InstanceState>) -> Self {
        Self {
            key: Key::of(id(&state)),
            state,
        }
    }

    fn cmp_id(&self, key: &Key, wanted: &str) -> Ordering {
        self.key.cmp_ids(|| id(&self.state), key, wanted)
    }
}

/// A leaf: instances in ID order, never empty.
type Leaf = Vec<Entry>;

/// Instances in ID order, unique by ID.
#[derive(Clone, Debug, Default)]
pub(super) struct Instances {
    /// In ID order: every ID in a leaf is below every ID in the next.
    leaves: Vec<Arc<Leaf>>,
    /// The key of each leaf's first instance, by leaf.
    firsts: Vec<Key>,
    len: usize,
}

fn id(state: &InstanceState) -> &str {
    state.instance.id.as_str()
}

impl Instances {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The leaf that holds `wanted` (keyed `key`), or would: the last whose
    /// first ID is at most `wanted` (the first leaf for an ID below them
    /// all).
    fn leaf_for(&self, key: &Key, wanted: &str) -> usize {
        // A partition point over the first keys, by hand: a tie between
        // long IDs reads the leaf's first ID, so the search needs the index.
        let (mut low, mut high) = (0, self.firsts.len());
        while low < high {
            let mid = low + (high - low) / 2;
            let first_id = || {
                let first = self.leaves.get(mid).and_then(|leaf| leaf.first());
                first.map_or("", |entry| id(&entry.state))
            };
            if self.firsts[mid].cmp_ids(first_id, key, wanted).is_le() {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        low.saturating_sub(1)
    }

    /// The position of `wanted` (keyed `key`) in leaf `at`: found, or where
    /// it would go; `None` if there is no such leaf.
    fn find_in(&self, at: usize, key: &Key, wanted: &str) -> Option<Result<usize, usize>> {
        let leaf = self.leaves.get(at)?;
        Some(leaf.binary_search_by(|entry| entry.cmp_id(key, wanted)))
    }

    pub(super) fn get(&self, wanted: &str) -> Option<&Arc<InstanceState>> {
        let key = Key::of(wanted);
        let at = self.leaf_for(&key, wanted);
        let found = self.find_in(at, &key, wanted)?.ok()?;
        Some(&self.leaves[at][found].state)
    }

    /// Adds `state`, or replaces the instance with its ID.
    pub(super) fn replace(&mut self, state: Arc<InstanceState>) {
        let entry = Entry::new(state);
        let at = self.leaf_for(&entry.key, id(&entry.state));
        let Some(found) = self.find_in(at, &entry.key, id(&entry.state)) else {
            self.firsts.push(entry.key);
            self.leaves.push(Arc::new(vec![entry]));
            self.len = 1;
            return;
        };
        let leaf = Arc::make_mut(&mut self.leaves[at]);
        match found {
            Ok(found) => leaf[found] = entry,
            Err(slot) => {
                leaf.insert(slot, entry);
                self.len += 1;
                self.firsts[at] = leaf[0].key;
                if leaf.len() > LEAF_MAX {
                    let right = leaf.split_off(leaf.len() / 2);
                    // The left half keeps the capacity the whole had
                    // grown to. A load in ID order (a start-up, an
                    // import) never inserts into it again: without this,
                    // every leaf of a loaded registry was half empty.
                    leaf.shrink_to_fit();
                    self.firsts.insert(at + 1, right[0].key);
                    self.leaves.insert(at + 1, Arc::new(right));
                }
            }
        }
    }

    /// Removes the instance with this ID, if there is one.
    pub(super) fn take(&mut self, wanted: &str) -> Option<Arc<InstanceState>> {
        let key = Key::of(wanted);
        let at = self.leaf_for(&key, wanted);
        // Found before the leaf is copied: removing nothing copies nothing.
        let found = self.find_in(at, &key, wanted)?.ok()?;
        let leaf = Arc::make_mut(&mut self.leaves[at]);
        let removed = leaf.remove(found);
        let left = leaf.len();
        self.len -= 1;
        if let Some(first) = leaf.first() {
            self.firsts[at] = first.key;
        }
        if left == 0 {
            self.leaves.remove(at);
            self.firsts.remove(at);
        } else if left < LEAF_MAX / 4
            && self
                .leaves
                .get(at + 1)
                .is_some_and(|next| left + next.len() <= LEAF_MAX)
        {
            // Keeps leaves from thinning out: a small leaf takes in the
            // next one when they fit in one.
            let next = self.leaves.remove(at + 1);
            self.firsts.remove(at + 1);
            Arc::make_mut(&mut self.leaves[at]).extend(next.iter().cloned());
        }
        Some(removed.state)
    }

    /// These instances as steps from `before`'s, in ID order: runs of
    /// instances both share, and the instances added or changed since
    /// (what is in `before` and not in the runs was removed or replaced).
    /// A leaf both share is one step, without reading its instances: a
    /// change to one instance of a large service costs O(leaves) here.
    pub(super) fn delta<'a>(&'a self, before: &Instances) -> Vec<InstanceDelta<'a>> {
        let mut deltas = Vec::new();
        let (mut was, mut now) = (Cursor::new(before), Cursor::new(self));
        loop {
            if let (Some(a), Some(b)) = (was.whole_leaf(), now.whole_leaf())
                && Arc::ptr_eq(a, b)
            {
                push_kept(&mut deltas, was.index, a.len());
                was.skip_leaf();
                now.skip_leaf();
                continue;
            }
            match (was.current(), now.current()) {
                (Some(a), Some(b)) => {
                    if Arc::ptr_eq(&a.state, &b.state) {
                        push_kept(&mut deltas, was.index, 1);
                        was.step();
                        now.step();
                        continue;
                    }
                    match a.cmp_id(&b.key, id(&b.state)) {
                        // Removed.
                        Ordering::Less => was.step(),
                        // Added.
                        Ordering::Greater => {
                            deltas.push(InstanceDelta::Fresh(&b.state));
                            now.step();
                        }
                        // Changed.
                        Ordering::Equal => {
                            deltas.push(InstanceDelta::Fresh(&b.state));
                            was.step();
                            now.step();
                        }
                    }
                }
                (Some(_), None) => was.step(),
                (None, Some(b)) => {
                    deltas.push(InstanceDelta::Fresh(&b.state));
                    now.step();
                }
                (None, None) => return deltas,
            }
        }
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

/// One step from an earlier state's instances to a later one's: see
/// [`ServiceState::delta`](super::ServiceState::delta).
#[derive(Debug)]
pub enum InstanceDelta<'a> {
    /// `len` instances the same in both (the same `Arc`s: the registry
    /// replaces an instance's state whenever it changes), at
    /// `from..from + len` in the earlier state's order.
    Kept { from: usize, len: usize },
    /// An instance added or changed since.
    Fresh(&'a Arc<InstanceState>),
}

/// A position in an [`Instances`]: a leaf and an instance in it, and how
/// many instances come before it.
struct Cursor<'a> {
    leaves: &'a [Arc<Leaf>],
    leaf: usize,
    at: usize,
    index: usize,
}

impl<'a> Cursor<'a> {
    fn new(instances: &'a Instances) -> Self {
        Self {
            leaves: &instances.leaves,
            leaf: 0,
            at: 0,
            index: 0,
        }
    }

    fn current(&self) -> Option<&'a Entry> {
        self.leaves.get(self.leaf)?.get(self.at)
    }

    /// The leaf the cursor is at the start of, if it is.
    fn whole_leaf(&self) -> Option<&'a Arc<Leaf>> {
        self.leaves.get(self.leaf).filter(|_| self.at == 0)
    }

    fn step(&mut self) {
        self.at += 1;
        self.index += 1;
        if self
            .leaves
            .get(self.leaf)
            .is_none_or(|leaf| self.at >= leaf.len())
        {
            self.leaf += 1;
            self.at = 0;
        }
    }

    fn skip_leaf(&mut self) {
        self.index += self.leaves.get(self.leaf).map_or(0, |leaf| leaf.len());
        self.leaf += 1;
        self.at = 0;
    }
}

/// `deltas` with `len` more kept instances from `from`, joined to the last
/// step when it is a run they continue.
fn push_kept(deltas: &mut Vec<InstanceDelta<'_>>, from: usize, len: usize) {
    if let Some(InstanceDelta::Kept {
        from: start,
        len: run,
    }) = deltas.last_mut()
        && *start + *run == from
    {
        *run += len;
        return;
    }
    deltas.push(InstanceDelta::Kept { from, len });
}

/// The instances of an [`Instances`] in ID order.
pub(super) struct Iter<'a> {
    leaves: std::slice::Iter<'a, Arc<Leaf>>,
    current: std::slice::Iter<'a, Entry>,
    remaining: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a Arc<InstanceState>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(entry) = self.current.next() {
                self.remaining = self.remaining.saturating_sub(1);
                return Some(&entry.state);
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

    /// Keys order IDs as their octets do, through the cases the padding
    /// and the 16-octet cut could get wrong: prefixes of each other, zero
    /// octets, exactly 16 octets and one more, a shared first 16.
    #[test]
    fn keys_order_ids_as_octets_do() {
        let ids = [
            "",
            "a",
            "a\0",
            "a\0b",
            "a\0\0",
            "ab",
            "abcdefghijklmno",
            "abcdefghijklmnop",
            "abcdefghijklmnop\0",
            "abcdefghijklmnopq",
            "abcdefghijklmnopqr",
            "abcdefghijklmnoq",
            "abcdefghijklmnopa",
            "zz",
            "\u{7f}",
            "é",
            "web-1",
            "web-10",
            "web-2",
        ];
        for a in ids {
            for b in ids {
                let order = Key::of(a).cmp_ids(|| a, &Key::of(b), b);
                assert_eq!(order, a.cmp(b), "{a:?} against {b:?}");
            }
        }
    }

    /// Against a `BTreeMap` through thousands of random adds, replacements
    /// and removals, with copies taken on the way (as the published state
    /// shares leaves with the writer's): the same instances in the same
    /// order, found by ID; leaves within bounds; copies unchanged. With
    /// short IDs, whose keys hold them whole, and with long ones that share
    /// their first 16 octets, which a key cannot tell apart.
    #[test]
    fn behaves_as_an_ordered_map_by_id_and_copies_stay_put() {
        ordered_map_walk(|n| format!("i-{n:03}"));
        ordered_map_walk(|n| match n % 3 {
            0 => format!("checkout-service{n}"),
            _ => format!("checkout-service-{n:03}"),
        });
    }

    fn ordered_map_walk(key_of: impl Fn(usize) -> String) {
        let mut rng = SmallRng::seed_from_u64(16);
        let mut instances = Instances::default();
        let mut model: BTreeMap<String, u16> = BTreeMap::new();
        let mut copies: Vec<(Instances, BTreeMap<String, u16>)> = Vec::new();
        for step in 0..6000u32 {
            // Grow for a while, then mostly shrink, through splits and merges.
            let remove_odds = if step < 3000 { 4 } else { 2 };
            let key = key_of(rng.random_range(0..400));
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
            assert_eq!(instances.firsts.len(), instances.leaves.len());
            for (first, leaf) in instances.firsts.iter().zip(&instances.leaves) {
                let id = id(&leaf[0].state);
                assert_eq!(first.cmp_ids(|| id, &Key::of(id), id), Ordering::Equal);
                assert_eq!((first.prefix, first.len), (Key::of(id).prefix, id.len()));
            }
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
            assert!(copy.get(&key_of(999)).is_none() && copy.get("a").is_none());
        }
        assert!(
            copies.iter().any(|(copy, _)| copy.leaves.len() > 3),
            "splits happened"
        );
    }

    /// A load in ID order, as a start-up or an import makes, leaves no
    /// leaf but the last with room it will never use.
    #[test]
    fn a_load_in_id_order_leaves_no_spare_room() {
        let mut instances = Instances::default();
        for n in 0..2000 {
            instances.replace(state(&format!("i-{n:05}"), 80));
        }
        let (last, rest) = instances.leaves.split_last().expect("leaves");
        assert!(rest.len() > 100 && last.len() <= LEAF_MAX);
        for leaf in rest {
            assert_eq!(leaf.capacity(), leaf.len());
        }
    }

    /// `delta` replayed over the earlier instances gives the later ones:
    /// kept runs are the same `Arc`s in the same order, and every instance
    /// the two share is in a run, never read as fresh. Through random
    /// batches of changes to a service of hundreds, where a small batch
    /// leaves most leaves shared and takes a few steps.
    #[test]
    fn delta_replays_one_state_from_another() {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut instances = Instances::default();
        let mut few_steps = 0;
        for round in 0..400u32 {
            let before = instances.clone();
            let changes = if round % 2 == 0 {
                1
            } else {
                rng.random_range(1..40)
            };
            for change in 0..changes {
                let key = format!("i-{:03}", rng.random_range(0..500));
                if round > 100 && rng.random_range(0..3) == 0 {
                    instances.take(&key);
                } else {
                    instances.replace(state(&key, (round * 50 + change) as u16 % 60_000 + 1));
                }
            }
            let earlier: Vec<&Arc<InstanceState>> = before.iter().collect();
            let deltas = instances.delta(&before);
            let mut replayed: Vec<&Arc<InstanceState>> = Vec::new();
            for delta in &deltas {
                match *delta {
                    InstanceDelta::Kept { from, len } => {
                        replayed.extend(&earlier[from..from + len]);
                    }
                    InstanceDelta::Fresh(state) => {
                        assert!(
                            !earlier.iter().any(|e| Arc::ptr_eq(e, state)),
                            "round {round}: an unchanged instance read as fresh"
                        );
                        replayed.push(state);
                    }
                }
            }
            let later: Vec<&Arc<InstanceState>> = instances.iter().collect();
            assert_eq!(replayed.len(), later.len(), "round {round}");
            assert!(
                replayed.iter().zip(&later).all(|(a, b)| Arc::ptr_eq(a, b)),
                "round {round}"
            );
            if changes == 1 && instances.len() > 200 && deltas.len() <= 3 {
                few_steps += 1;
            }
        }
        assert!(
            few_steps > 100,
            "one change took few steps only {few_steps} times"
        );
    }
}
