//! An instance's metadata: a few `key=value` pairs, kept compact.
//!
//! A registry holds hundreds of thousands of instances, each with a handful
//! of metadata entries. `BTreeMap` allocates a whole node (room for 11 keys
//! and 11 values, about 0.5 KB) for the first entry, which made metadata
//! most of an imported instance's size (bench/import/README.md). `Meta` is
//! one boxed slice of pairs, sorted by key with each key once, so it reads
//! and serialises exactly as the map did: JSON `{"key": "value", ...}` in
//! key order, the same on disk, in exports and in every API.

use std::{collections::BTreeMap, fmt};

use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{MapAccess, Visitor},
    ser::SerializeMap,
};

/// The metadata key DNS UPDATE keeps an instance's DHCID record under
/// (base64 of its RDATA, RFC 4701): Kea's conflict resolution, not data
/// for clients, so it is not served as a TXT string.
pub const DHCID_META_KEY: &str = "dhcid";

/// Metadata entries sorted by key, each key once.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Meta(Box<[(String, String)]>);

impl Meta {
    /// From pairs in any order; a key given twice keeps its last value, as
    /// a map's `insert` would.
    fn from_pairs(mut pairs: Vec<(String, String)>) -> Self {
        // Stable: among equal keys the later stays later, and is kept.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut unique: Vec<(String, String)> = Vec::with_capacity(pairs.len());
        for pair in pairs {
            match unique.last_mut() {
                Some(last) if last.0 == pair.0 => *last = pair,
                _ => unique.push(pair),
            }
        }
        Self(unique.into_boxed_slice())
    }

    /// Entries in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&String, &String)> {
        self.into_iter()
    }

    /// The entries DNS serves as the instance's TXT `key=value` strings
    /// (the DNS table and DNS UPDATE's view of it alike): all but
    /// [`DHCID_META_KEY`].
    pub fn served_as_txt(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .filter(|(key, _)| key != DHCID_META_KEY)
            .map(|(key, value)| (key.as_str(), value.as_str()))
    }

    /// The value of `key`, if it is set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|at| self.0[at].1.as_str())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Meta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl From<BTreeMap<String, String>> for Meta {
    fn from(map: BTreeMap<String, String>) -> Self {
        // Already sorted and unique.
        Self(map.into_iter().collect())
    }
}

impl FromIterator<(String, String)> for Meta {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(pairs: I) -> Self {
        Self::from_pairs(pairs.into_iter().collect())
    }
}

impl<const N: usize> From<[(String, String); N]> for Meta {
    fn from(pairs: [(String, String); N]) -> Self {
        Self::from_pairs(pairs.into())
    }
}

impl<'a> IntoIterator for &'a Meta {
    type Item = (&'a String, &'a String);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (String, String)>,
        fn(&'a (String, String)) -> (&'a String, &'a String),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(key, value)| (key, value))
    }
}

impl Serialize for Meta {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in self.iter() {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Meta {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MetaVisitor;

        impl<'de> Visitor<'de> for MetaVisitor {
            type Value = Meta;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of string values")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Meta, A::Error> {
                // The size hint comes from the input: trust it only as far
                // as the entry limit validation enforces anyway.
                let hint = map.size_hint().unwrap_or(0).min(super::MAX_META);
                let mut pairs = Vec::with_capacity(hint);
                while let Some(pair) = map.next_entry::<String, String>()? {
                    pairs.push(pair);
                }
                Ok(Meta::from_pairs(pairs))
            }
        }

        deserializer.deserialize_map(MetaVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_the_same_json_as_a_map() {
        let text = r#"{"zone":"a","build":"7","arch":"x86"}"#;
        let meta: Meta = serde_json::from_str(text).expect("meta");
        let map: BTreeMap<String, String> = serde_json::from_str(text).expect("map");
        assert_eq!(
            serde_json::to_string(&meta).expect("meta JSON"),
            serde_json::to_string(&map).expect("map JSON")
        );
        assert_eq!(meta, Meta::from(map));
        assert_eq!(meta.get("build"), Some("7"));
        assert_eq!(meta.get("missing"), None);
        let keys: Vec<&String> = meta.iter().map(|(key, _)| key).collect();
        assert_eq!(keys, ["arch", "build", "zone"]);
    }

    #[test]
    fn a_key_given_twice_keeps_its_last_value_as_a_map_does() {
        let meta: Meta = [
            ("k".to_owned(), "1".to_owned()),
            ("a".to_owned(), "x".to_owned()),
            ("k".to_owned(), "2".to_owned()),
        ]
        .into();
        assert_eq!(meta.len(), 2);
        assert_eq!(meta.get("k"), Some("2"));
    }

    #[test]
    fn is_smaller_than_a_map_node() {
        let meta: Meta = [("zone".to_owned(), "a".to_owned())].into();
        // One pair on the heap, against a B-tree leaf of 11 pairs.
        assert_eq!(std::mem::size_of_val(&*meta.0), 48);
        assert!(std::mem::size_of::<Meta>() <= 16);
    }
}
