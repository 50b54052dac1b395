//! The registry read as a zone: the RRsets roster serves (or would serve,
//! were every instance healthy) at each of its names. RFC 2136's
//! prerequisites are checked against this view, and the update engine
//! starts each instance it changes from it, so what a client compares is
//! what it can read back.

use std::{collections::BTreeSet, net::IpAddr, sync::Arc};

use base64::{Engine, engine::general_purpose::STANDARD};
use hickory_proto::{
    rr::{Name, RData, RecordType},
    serialize::binary::BinEncodable,
};

use super::names::Owner;
use crate::{
    model::{DnsLabel, Instance},
    registry::{InstanceState, RegistryState, ServiceState},
};

pub(super) use crate::model::DHCID_META_KEY;

/// DHCID (RFC 4701), which hickory-proto reads as an unknown type.
pub(super) const DHCID: RecordType = RecordType::Unknown(49);

/// An SRV record's port, priority and weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct SrvValues {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
}

impl SrvValues {
    /// The instance's own.
    pub(super) fn of(instance: &Instance) -> Self {
        Self {
            priority: instance.priority,
            weight: instance.weight,
            port: instance.port,
        }
    }
}

/// One record's data, comparable as RFC 2136 compares RRs: by value, with
/// names in RDATA case-insensitively and the TTL ignored.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Value {
    /// A or AAAA.
    Address(IpAddr),
    /// The character-strings of one TXT record, in order.
    Txt(Vec<Vec<u8>>),
    Srv {
        values: SrvValues,
        /// Lower case, fully qualified, as text.
        target: String,
    },
    Dhcid(Vec<u8>),
    /// A type roster holds nowhere: never in the view, so its bytes matter
    /// only for telling two such records apart.
    Other(Vec<u8>),
}

/// The value of a record's data; `None` for empty RDATA (the RFC 2136
/// forms "any RRset" and "delete").
pub(super) fn value(data: &RData) -> Option<Value> {
    let value = match data {
        RData::Update0(_) => return None,
        RData::A(a) => Value::Address(IpAddr::V4(a.0)),
        RData::AAAA(aaaa) => Value::Address(IpAddr::V6(aaaa.0)),
        RData::TXT(txt) => Value::Txt(txt.txt_data.iter().map(|s| s.to_vec()).collect()),
        RData::SRV(srv) => Value::Srv {
            values: SrvValues {
                priority: srv.priority,
                weight: srv.weight,
                port: srv.port,
            },
            target: name_text(&srv.target),
        },
        RData::Unknown { code, rdata } if *code == DHCID => Value::Dhcid(rdata.anything.clone()),
        other => Value::Other(other.to_bytes().unwrap_or_default()),
    };
    Some(value)
}

/// A name as compared in RDATA: lower case, fully qualified.
pub(super) fn name_text(name: &Name) -> String {
    let mut text = name.to_lowercase().to_ascii();
    if !text.ends_with('.') {
        text.push('.');
    }
    text
}

/// The SRV target of an instance: `<label>.<service>.<domain>.`.
pub(super) fn target(label: &str, service: &str, domain: &Name) -> String {
    let domain = name_text(domain);
    if domain == "." {
        format!("{label}.{service}.")
    } else {
        format!("{label}.{service}.{domain}")
    }
}

/// The strings of an instance's TXT record (`key=value` per metadata entry
/// in key order, the DHCID left out), as DNS serves them: one record.
pub(super) fn txt_strings(instance: &Instance) -> Vec<Vec<u8>> {
    instance
        .meta
        .served_as_txt()
        .map(|(key, value)| format!("{key}={value}").into_bytes())
        .collect()
}

/// The instance's DHCID RDATA, if it keeps one.
pub(super) fn dhcid(instance: &Instance) -> Option<Vec<u8>> {
    instance
        .meta
        .get(DHCID_META_KEY)
        .and_then(|text| STANDARD.decode(text).ok())
}

/// The instance's SRV record value.
pub(super) fn srv(instance: &Instance, domain: &Name) -> Value {
    Value::Srv {
        values: SrvValues::of(instance),
        target: target(
            instance.id.label().as_str(),
            instance.service.label().as_str(),
            domain,
        ),
    }
}

/// The instance whose DNS label is `label` in `service`.
pub(super) fn find_instance<'a>(
    service: &'a ServiceState,
    label: &DnsLabel,
) -> Option<&'a Arc<InstanceState>> {
    service
        .id_with_label(label.as_str())
        .and_then(|id| service.get(id))
}

/// Whether an instance carries a tag whose DNS label is `tag`.
pub(super) fn has_tag(instance: &InstanceState, tag: &DnsLabel) -> bool {
    instance
        .instance
        .tags
        .iter()
        .any(|t| DnsLabel::from_name(t, "tag").is_ok_and(|label| label == *tag))
}

/// Whether any RR lives at `owner` (RFC 2136's "name is in use").
pub(super) fn in_use(state: &RegistryState, owner: &Owner) -> bool {
    let service = |label: &DnsLabel| state.services.get(label).filter(|s| !s.is_empty());
    match owner {
        Owner::Apex => true,
        Owner::Service(label) | Owner::Protocol(label) => service(label).is_some(),
        Owner::Tag { service: s, tag } => {
            service(s).is_some_and(|s| s.instances().any(|i| has_tag(i, tag)))
        }
        Owner::Instance { service: s, label } => {
            service(s).is_some_and(|s| find_instance(s, label).is_some())
        }
        Owner::Other => false,
    }
}

/// Whether the RRset of `rtype` at `owner` exists.
pub(super) fn exists(
    state: &RegistryState,
    owner: &Owner,
    rtype: RecordType,
    domain: &Name,
) -> bool {
    match owner {
        // roster serves both at the apex; their values are the DNS
        // module's, so a value-dependent prerequisite on them is unmet.
        Owner::Apex => matches!(rtype, RecordType::SOA | RecordType::NS),
        _ => !rrset(state, owner, rtype, domain).is_empty(),
    }
}

/// The RRset of `rtype` at `owner`, every instance counted whether healthy
/// or not.
pub(super) fn rrset(
    state: &RegistryState,
    owner: &Owner,
    rtype: RecordType,
    domain: &Name,
) -> BTreeSet<Value> {
    let Some(service) = owner.service().and_then(|label| state.services.get(label)) else {
        return BTreeSet::new();
    };
    let address_type = |address: &IpAddr| match address {
        IpAddr::V4(_) => RecordType::A,
        IpAddr::V6(_) => RecordType::AAAA,
    };
    match (owner, rtype) {
        (Owner::Service(_), RecordType::A | RecordType::AAAA) => service
            .instances()
            .map(|i| i.instance.address)
            .filter(|a| address_type(a) == rtype)
            .map(Value::Address)
            .collect(),
        (Owner::Service(_) | Owner::Protocol(_), RecordType::SRV) => service
            .instances()
            .map(|i| srv(&i.instance, domain))
            .collect(),
        (Owner::Tag { tag, .. }, RecordType::SRV) => service
            .instances()
            .filter(|i| has_tag(i, tag))
            .map(|i| srv(&i.instance, domain))
            .collect(),
        (Owner::Instance { label, .. }, _) => {
            let Some(found) = find_instance(service, label) else {
                return BTreeSet::new();
            };
            instance_rrset(&found.instance, rtype)
        }
        _ => BTreeSet::new(),
    }
}

/// The RRset of `rtype` at an instance's own name.
pub(super) fn instance_rrset(instance: &Instance, rtype: RecordType) -> BTreeSet<Value> {
    let mut set = BTreeSet::new();
    match rtype {
        RecordType::A if instance.address.is_ipv4() => {
            set.insert(Value::Address(instance.address));
        }
        RecordType::AAAA if instance.address.is_ipv6() => {
            set.insert(Value::Address(instance.address));
        }
        RecordType::TXT => {
            let strings = txt_strings(instance);
            if !strings.is_empty() {
                set.insert(Value::Txt(strings));
            }
        }
        t if t == DHCID => {
            if let Some(bytes) = dhcid(instance) {
                set.insert(Value::Dhcid(bytes));
            }
        }
        _ => {}
    }
    set
}
