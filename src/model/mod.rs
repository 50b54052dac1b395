//! The registry's vocabulary: services, instances, checks and their health.
//! All validation of user input lives here, so code behind the front doors
//! handles only values that are already known to be valid.

mod check;
mod duration;
mod instance;
mod meta;
mod names;

pub use check::{
    CheckBody, CheckDefinition, CheckKind, MAINTENANCE_CHECK_PREFIX, MAX_CHECKS, MAX_NOTE_BYTES,
    MIN_INTERVAL, Status, validate_host_port, validate_http_url,
};
pub use duration::{
    BEYOND_GO, DurationError, GO_MAX_DURATION, GoDuration, format_go_duration, parse_go_duration,
};
pub use instance::{
    Instance, InstanceBody, MAX_MAINTENANCE_REASON, MAX_META, MAX_TAGGED_ADDRESSES, MAX_TAGS,
    TaggedAddress, TaggedAddresses, validate_maintenance_reason, validate_meta,
    validate_tagged_addresses, validate_tags,
};
/// For the Consul adapter, which gives checks the same default IDs.
pub(crate) use instance::{default_check_id_of, validate_checks};
pub use meta::{DHCID_META_KEY, Meta};
pub use names::{DnsLabel, InstanceId, ServiceName};

/// Input that was refused, with the field at fault (`address`,
/// `checks[1].interval`, …) so that API errors can point at it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}
