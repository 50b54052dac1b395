//! The record table's services by DNS label: a persistent hash map whose
//! entries are the services' records themselves.
//!
//! A lookup on a large table is bounded by cache misses, not instructions:
//! DNS asks for services uniformly, so little of the table stays in cache.
//! Keyed by `String`, a lookup followed the key's heap pointer to compare it
//! and then the value's pointer to the records. Here the entry is the
//! records' `Arc`, and the label it is compared with sits inline at the
//! start of the records, in the cache line the answer reads next anyway.
//! The map stays persistent (`imbl`), so publishing a change still copies
//! only the path to one entry.

use std::{
    hash::{Hash, Hasher},
    sync::Arc,
};

use equivalent::Equivalent;

use super::ServiceRecords;

/// One service in the map: hashed and compared by its records' label.
#[derive(Clone, Debug)]
struct Entry(Arc<ServiceRecords>);

impl Hash for Entry {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Must hash exactly like `Label` below.
        state.write(self.0.label.as_bytes());
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.0.label.as_bytes() == other.0.label.as_bytes()
    }
}

impl Eq for Entry {}

/// A label to look up, borrowed from wherever it is (a query datagram).
struct Label<'a>(&'a [u8]);

impl Hash for Label<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Exactly like `Entry`: the bytes alone, no length or terminator.
        state.write(self.0);
    }
}

impl Equivalent<Entry> for Label<'_> {
    fn equivalent(&self, entry: &Entry) -> bool {
        self.0 == entry.0.label.as_bytes()
    }
}

/// The services of a record table by (lower-case) label.
#[derive(Clone, Debug, Default)]
pub struct ServiceMap(imbl::HashMap<Entry, ()>);

impl ServiceMap {
    pub fn get(&self, label: &str) -> Option<&Arc<ServiceRecords>> {
        self.get_bytes(label.as_bytes())
    }

    /// Like `get`, for a label the DNS fast path has lower-cased in place.
    pub fn get_bytes(&self, label: &[u8]) -> Option<&Arc<ServiceRecords>> {
        self.0
            .get_key_value(&Label(label))
            .map(|(entry, ())| &entry.0)
    }

    pub fn contains_key(&self, label: &str) -> bool {
        self.get(label).is_some()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Adds the service named by `records.label`, replacing any service of
    /// that name (imbl replaces the whole entry, key included: tested).
    pub fn insert(&mut self, records: Arc<ServiceRecords>) {
        self.0.insert(Entry(records), ());
    }

    /// Removes the service `label`, returning its records.
    pub fn remove(&mut self, label: &str) -> Option<Arc<ServiceRecords>> {
        self.0
            .remove_with_key(&Label(label.as_bytes()))
            .map(|(entry, ())| entry.0)
    }

    pub fn values(&self) -> impl Iterator<Item = &Arc<ServiceRecords>> {
        self.0.keys().map(|entry| &entry.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::table::InlineLabel;

    fn records(label: &str, ttl: u32) -> Arc<ServiceRecords> {
        let mut records = ServiceRecords::default();
        records.label = InlineLabel::new(label.as_bytes()).unwrap();
        records.ttl = ttl;
        Arc::new(records)
    }

    #[test]
    fn looks_up_inserts_replaces_and_removes_by_label() {
        let mut map = ServiceMap::default();
        assert!(map.get("web").is_none() && map.is_empty());
        map.insert(records("web", 1));
        map.insert(records("db", 2));
        assert_eq!(map.get("web").map(|r| r.ttl), Some(1));
        assert_eq!(map.get_bytes(b"db").map(|r| r.ttl), Some(2));
        assert!(map.get("we").is_none() && map.get("webs").is_none());

        let before = map.clone();
        map.insert(records("web", 3));
        assert_eq!(map.len(), 2);
        assert_eq!(map.get("web").map(|r| r.ttl), Some(3), "replaced");
        assert_eq!(before.get("web").map(|r| r.ttl), Some(1), "persistent");

        assert_eq!(map.remove("web").map(|r| r.ttl), Some(3));
        assert!(map.remove("web").is_none());
        assert!(!map.contains_key("web") && map.contains_key("db"));
        assert_eq!(map.values().count(), 1);
    }
}
