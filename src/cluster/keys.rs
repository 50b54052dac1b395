//! Where each piece of the registry lives in etcd, and what each key's
//! value holds (docs/cluster-keys.md is the operator's copy of this).
//!
//! ```text
//! <prefix>instances/<id>              an instance, as StoredInstance JSON
//! <prefix>labels/<label>              the service name that owns a DNS label
//! <prefix>health/<id>/<check>         a check's last reported status (HealthRecord)
//! <prefix>members/<node>              a live node (MemberRecord), on its lease
//! ```
//!
//! IDs may hold any character, so in `health/` keys, where a `/` would be
//! ambiguous, `%` and `/` in the ID and the check ID are written as `%25`
//! and `%2F`; the record itself carries both unescaped.

use serde::{Deserialize, Serialize};

use crate::model::Status;

/// The key layout under one prefix.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

/// What a key under the prefix is.
#[derive(Debug, PartialEq, Eq)]
pub enum Key<'a> {
    Instance(&'a str),
    Label(&'a str),
    /// A check's record: the instance ID and the check ID, unescaped.
    Health {
        id: String,
        check: String,
    },
    Member(&'a str),
    /// Something roster did not write (another tool's key): ignored.
    Other,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// Every key of this cluster starts with this.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn instance(&self, id: &str) -> String {
        format!("{}instances/{id}", self.prefix)
    }

    pub fn label(&self, label: &str) -> String {
        format!("{}labels/{label}", self.prefix)
    }

    pub fn health(&self, id: &str, check_id: &str) -> String {
        format!("{}{}", self.health_of(id), escape(check_id))
    }

    /// The prefix of every health key of one instance.
    pub fn health_of(&self, id: &str) -> String {
        format!("{}health/{}/", self.prefix, escape(id))
    }

    pub fn members(&self) -> String {
        format!("{}members/", self.prefix)
    }

    pub fn member(&self, node: &str) -> String {
        format!("{}members/{node}", self.prefix)
    }

    /// Classifies a key read back from etcd.
    pub fn parse<'a>(&self, key: &'a str) -> Key<'a> {
        let Some(rest) = key.strip_prefix(self.prefix.as_str()) else {
            return Key::Other;
        };
        if let Some(id) = rest.strip_prefix("instances/") {
            Key::Instance(id)
        } else if let Some(label) = rest.strip_prefix("labels/") {
            Key::Label(label)
        } else if let Some(pair) = rest.strip_prefix("health/") {
            match pair.split_once('/') {
                Some((id, check)) => Key::Health {
                    id: unescape(id),
                    check: unescape(check),
                },
                None => Key::Other,
            }
        } else if let Some(node) = rest.strip_prefix("members/") {
            Key::Member(node)
        } else {
            Key::Other
        }
    }
}

fn escape(part: &str) -> String {
    part.replace('%', "%25").replace('/', "%2F")
}

fn unescape(part: &str) -> String {
    part.replace("%2F", "/").replace("%25", "%")
}

/// The value of a `health/` key: a check's status as its owner last
/// reported it, or a heartbeat the service sent to any node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthRecord {
    pub id: String,
    pub check: String,
    pub status: Status,
    #[serde(default)]
    pub output: String,
    /// True when the service itself reported (a TTL heartbeat): the node
    /// that runs the check restarts its TTL timer when it sees this.
    #[serde(default)]
    pub heartbeat: bool,
}

/// The value of a `members/` key, which lives as long as the node's lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub name: String,
    pub http: String,
    pub dns: String,
    /// How many checks the node runs.
    #[serde(default)]
    pub checks: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_parse() {
        let keys = Keys::new("/roster/");
        assert_eq!(keys.parse(&keys.instance("web/1")), Key::Instance("web/1"));
        assert_eq!(keys.parse(&keys.label("web")), Key::Label("web"));
        assert_eq!(keys.parse(&keys.member("n1")), Key::Member("n1"));
        assert_eq!(
            keys.parse(&keys.health("a/%2F", "b/c")),
            Key::Health {
                id: "a/%2F".into(),
                check: "b/c".into()
            }
        );
        assert_eq!(keys.parse("/other/instances/a"), Key::Other);
        assert_eq!(keys.parse("/roster/unknown"), Key::Other);
    }

    #[test]
    fn health_keys_of_ids_with_slashes_do_not_overlap() {
        let keys = Keys::new("/r/");
        assert_eq!(keys.health("a/b", "c"), "/r/health/a%2Fb/c");
        assert_eq!(keys.health("a", "b/c"), "/r/health/a/b%2Fc");
        assert!(!keys.health("a/b", "c").starts_with(&keys.health_of("a")));
        assert_eq!(keys.health("100%", "x"), "/r/health/100%25/x");
    }
}
