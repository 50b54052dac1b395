//! Names users give to services and instances, and the DNS labels they map to.
//!
//! Users may call a service `Hello Service`; DNS can only carry `hello-service`.
//! The mapping is deterministic and documented in the README: lower-case ASCII,
//! every run of characters outside `[a-z0-9]` becomes one `-`, and leading or
//! trailing dashes are dropped. A name that maps to nothing, to more than 63
//! octets, or contains non-ASCII or control characters is refused, because a
//! name roster cannot answer for in DNS would be a registration that silently
//! never resolves.

use std::{fmt, sync::Arc};

use serde::Serialize;

use super::ValidationError;

/// The longest name a user may give a service or an instance, in bytes.
pub(super) const MAX_NAME_LEN: usize = 255;

/// The longest DNS label (RFC 1035 section 2.3.4).
pub(super) const MAX_LABEL_LEN: usize = 63;

/// A DNS label derived from a user's name: lower-case `[a-z0-9-]`, 1 to 63
/// octets, never starting or ending with `-`.
///
/// Shared (`Arc<str>`): a service's label is held by each of its instances
/// and by the registry's ID index, and most IDs are their own label, so
/// clones must not allocate.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DnsLabel(Arc<str>);

impl Serialize for DnsLabel {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl DnsLabel {
    /// Maps a user's name onto a DNS label, or explains why it cannot be one.
    pub fn from_name(name: &str, field: &'static str) -> Result<Self, ValidationError> {
        if name.is_empty() {
            return Err(ValidationError::new(field, "must not be empty"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(ValidationError::new(
                field,
                format!("must be at most {MAX_NAME_LEN} bytes"),
            ));
        }
        if let Some(bad) = name.chars().find(|c| !c.is_ascii() || c.is_ascii_control()) {
            return Err(ValidationError::new(
                field,
                format!("contains {bad:?}: only printable ASCII can be mapped to a DNS label"),
            ));
        }
        let mut label = String::with_capacity(name.len());
        let mut pending_dash = false;
        for c in name.chars() {
            if c.is_ascii_alphanumeric() {
                if pending_dash && !label.is_empty() {
                    label.push('-');
                }
                pending_dash = false;
                label.push(c.to_ascii_lowercase());
            } else {
                pending_dash = true;
            }
        }
        if label.is_empty() {
            return Err(ValidationError::new(
                field,
                format!("{name:?} has no letters or digits, so it cannot be a DNS label"),
            ));
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(ValidationError::new(
                field,
                format!(
                    "{name:?} maps to a DNS label of {} octets; the limit is {MAX_LABEL_LEN}",
                    label.len()
                ),
            ));
        }
        Ok(Self(Arc::from(label)))
    }

    /// Wraps a string that is already known to be a valid label (taken from a
    /// lower-cased query name). Returns `None` for anything else.
    pub fn parse_query_label(label: &str) -> Option<Self> {
        let valid = !label.is_empty()
            && label.len() <= MAX_LABEL_LEN
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        valid.then(|| Self(Arc::from(label)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DnsLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A name as the user gave it, with its DNS label. When the name is its own
/// label (the common case) both share one allocation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct LabelledName {
    name: Arc<str>,
    label: DnsLabel,
}

impl LabelledName {
    fn parse(name: &str, field: &'static str) -> Result<Self, ValidationError> {
        let label = DnsLabel::from_name(name, field)?;
        let name = if label.as_str() == name {
            label.0.clone()
        } else {
            Arc::from(name)
        };
        Ok(Self { name, label })
    }
}

/// A service's name as the user gave it, with its DNS label.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceName(LabelledName);

impl ServiceName {
    pub fn parse(name: &str) -> Result<Self, ValidationError> {
        LabelledName::parse(name, "service").map(Self)
    }

    /// The name exactly as registered.
    pub fn as_str(&self) -> &str {
        &self.0.name
    }

    pub fn label(&self) -> &DnsLabel {
        &self.0.label
    }
}

/// An instance's ID as the user gave it, with its DNS label. IDs are unique
/// across the whole registry, as in Consul, whose agent API addresses an
/// instance by ID alone.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InstanceId(LabelledName);

impl InstanceId {
    pub fn parse(id: &str) -> Result<Self, ValidationError> {
        LabelledName::parse(id, "id").map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0.name
    }

    /// The ID, shared.
    pub fn shared(&self) -> Arc<str> {
        self.0.name.clone()
    }

    pub fn label(&self) -> &DnsLabel {
        &self.0.label
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_names_to_labels() {
        let cases = [
            ("web", "web"),
            ("Hello Service", "hello-service"),
            ("  Hello   Service  ", "hello-service"),
            ("api_v2", "api-v2"),
            ("A.B.C", "a-b-c"),
            ("--x--", "x"),
            ("Web-1", "web-1"),
        ];
        for (name, label) in cases {
            let mapped = DnsLabel::from_name(name, "service").expect(name);
            assert_eq!(mapped.as_str(), label, "{name}");
        }
    }

    #[test]
    fn refuses_names_without_a_label() {
        for name in ["", "---", "   ", "café", "tab\there", &"a".repeat(64)] {
            let err = DnsLabel::from_name(name, "service").expect_err(name);
            assert_eq!(err.field, "service");
        }
        assert!(DnsLabel::from_name(&"a".repeat(63), "service").is_ok());
    }

    #[test]
    fn query_labels_are_checked() {
        assert!(DnsLabel::parse_query_label("web-1").is_some());
        assert!(DnsLabel::parse_query_label("_web").is_none());
        assert!(DnsLabel::parse_query_label("Web").is_none());
        assert!(DnsLabel::parse_query_label("").is_none());
    }
}
