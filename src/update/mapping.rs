//! The drafts an update leaves ([`super::zone`]) turned back into
//! instances: one address, one port, metadata from TXT, a check from the
//! reserved TXT keys (or the one it had, or the configured default), each
//! validated as the native API validates a registration.

use std::{collections::BTreeMap, net::IpAddr};

use base64::{Engine, engine::general_purpose::STANDARD};
use hickory_proto::op::ResponseCode;

use super::{
    DefaultCheck, UpdateRefusal, UpdateSettings,
    view::{DHCID_META_KEY, SrvValues},
    zone::{InstanceDraft, Zone},
};
use crate::{
    model::{
        CheckBody, CheckDefinition, DnsLabel, Instance, InstanceId, Meta, ServiceName,
        validate_checks, validate_meta,
    },
    registry::Change,
};

/// TXT keys that declare an instance's check, and the [`CheckBody`] field
/// each sets. They stay in the metadata too, so the TXT record reads back
/// as written.
const CHECK_KEYS: [&str; 6] = [
    "check-http",
    "check-tcp",
    "check-ttl",
    "check-interval",
    "check-timeout",
    "check-deregister-critical-after",
];

fn refused(reason: impl Into<String>) -> UpdateRefusal {
    UpdateRefusal::new(ResponseCode::Refused, reason)
}

/// The registry changes the drafts amount to: removals first, then every
/// drafted instance put as it ends (one unchanged is a no-op for the
/// registry).
pub(super) fn changes(
    zone: Zone<'_>,
    settings: &UpdateSettings,
) -> Result<Vec<Change>, UpdateRefusal> {
    let mut removals = Vec::new();
    let mut puts = Vec::new();
    // An instance's ID is unique across services, and an instance's label
    // is its ID: `web-1.api` and `web-1.web` both name the instance
    // web-1. Changed under both in one update, it would be removed or put
    // twice; refused here, naming both, rather than by whichever change
    // the registry tries first.
    let mut changed: BTreeMap<String, String> = BTreeMap::new();
    for (service_label, service) in zone.services {
        let service_name = match &service.existing {
            Some(existing) => existing.name.clone(),
            None => {
                ServiceName::parse(service_label.as_str()).map_err(|e| refused(e.to_string()))?
            }
        };
        for (label, draft) in service.instances {
            let name = format!("{label}.{service_label}");
            let change = match instance(&service_name, &label, draft, settings) {
                Ending::Removed(id) => Change::Remove(id),
                Ending::Absent => continue,
                Ending::Put(instance) => Change::Put(*instance),
                Ending::Refused(reason) => return Err(refused(format!("{name}: {reason}"))),
            };
            if let Some(first) = changed.insert(change.id().to_owned(), name.clone()) {
                return Err(refused(format!(
                    "{first} and {name} are one instance, {}: an update may change it under one name only",
                    change.id()
                )));
            }
            match change {
                Change::Remove(_) => removals.push(change),
                Change::Put(_) => puts.push(change),
            }
        }
    }
    removals.extend(puts);
    Ok(removals)
}

/// What becomes of one drafted instance.
enum Ending {
    /// It was registered and has no address left: deregistered, with
    /// every record roster derived from it.
    Removed(InstanceId),
    /// It was not registered and the update left nothing of it.
    Absent,
    Put(Box<Instance>),
    Refused(String),
}

fn instance(
    service: &ServiceName,
    label: &DnsLabel,
    draft: InstanceDraft,
    settings: &UpdateSettings,
) -> Ending {
    let existing = draft.existing.as_ref().map(|e| &e.instance);
    let address = match draft.addresses.len() {
        0 => {
            return match existing {
                Some(existing) => Ending::Removed(existing.id.clone()),
                None if draft.txt.is_empty()
                    && draft.dhcid.is_empty()
                    && draft.srv.is_empty()
                    && draft.tag_srv.is_empty() =>
                {
                    Ending::Absent
                }
                None => Ending::Refused(
                    "no address: an instance needs one A or AAAA record at its name".into(),
                ),
            };
        }
        1 => draft.addresses.first().copied(),
        _ => None,
    };
    let Some(address) = address else {
        return Ending::Refused(
            "more than one address: an instance has exactly one A or AAAA record".into(),
        );
    };
    match build(service, label, address, &draft, settings) {
        Ok(instance) => Ending::Put(Box::new(instance)),
        Err(reason) => Ending::Refused(reason),
    }
}

fn build(
    service: &ServiceName,
    label: &DnsLabel,
    address: IpAddr,
    draft: &InstanceDraft,
    settings: &UpdateSettings,
) -> Result<Instance, String> {
    let existing = draft.existing.as_ref().map(|e| &*e.instance);
    // Made from an address alone (external-dns, Kea): the configured port
    // and the native API's defaults.
    let from_address = SrvValues {
        priority: 0,
        weight: 1,
        port: settings.default_port,
    };
    let srv = match draft.srv.len() {
        // A new instance without an SRV record at `_<service>._tcp`: the
        // values of its tags' SRV records, or those of an address alone.
        0 if existing.is_none() => draft
            .tag_srv
            .first()
            .map_or(from_address, |(_, values)| *values),
        0 => {
            return Err(format!(
                "no port: an instance needs an SRV record at _{}._tcp pointing to it",
                service.label()
            ));
        }
        1 => draft.srv.first().copied().unwrap_or(from_address),
        _ => {
            return Err(
                "more than one SRV record: an instance has one port, priority and weight".into(),
            );
        }
    };
    if srv.port == 0 {
        // RFC 2782 allows it, and the Consul API takes it as Consul does
        // (a service without a port), but an instance an UPDATE makes is
        // one DNS clients must reach: the native API's rule (1-65535).
        return Err("port 0 in the SRV record: an instance's port is 1-65535".into());
    }
    for (tag, values) in &draft.tag_srv {
        if draft
            .tags
            .iter()
            .any(|t| DnsLabel::from_name(t, "tag").is_ok_and(|l| l == *tag))
            && *values != srv
        {
            return Err(format!(
                "the SRV record at _{}._{tag} must have the instance's priority, weight and port \
                 ({} {} {})",
                service.label(),
                srv.priority,
                srv.weight,
                srv.port
            ));
        }
    }
    let meta = meta(draft)?;
    let id = match existing {
        Some(existing) => existing.id.clone(),
        None => InstanceId::parse(label.as_str()).map_err(|e| e.to_string())?,
    };
    let checks = checks(service, &id, address, srv.port, &meta, existing, settings)?;
    let mut instance = match existing {
        Some(existing) => existing.clone(),
        None => Instance {
            service: service.clone(),
            id: id.clone(),
            address,
            address_as_given: None,
            port: srv.port,
            tags: Vec::new(),
            meta: Meta::default(),
            weight: srv.weight,
            priority: srv.priority,
            checks: Vec::new(),
            enable_tag_override: false,
            tagged_addresses: None,
        },
    };
    if instance.address != address {
        // The name it was registered by resolved to the old address.
        instance.address_as_given = None;
    }
    instance.address = address;
    instance.port = srv.port;
    instance.priority = srv.priority;
    instance.weight = srv.weight;
    instance.tags = draft.tags.clone();
    instance.meta = meta;
    instance.checks = checks;
    instance.validate_incoming().map_err(|e| e.to_string())?;
    Ok(instance)
}

/// The metadata the TXT records and the DHCID make.
fn meta(draft: &InstanceDraft) -> Result<Meta, String> {
    let mut entries: BTreeMap<String, String> = BTreeMap::new();
    for record in &draft.txt {
        for string in record {
            let text =
                std::str::from_utf8(string).map_err(|_| "a TXT string is not UTF-8".to_owned())?;
            // Checked when the record was added.
            let Some((key, value)) = text.split_once('=') else {
                return Err(format!("TXT string {text:?} is not key=value"));
            };
            if let Some(other) = entries.get(key)
                && other != value
            {
                return Err(format!("TXT key {key:?} has two values"));
            }
            entries.insert(key.to_owned(), value.to_owned());
        }
    }
    match draft.dhcid.len() {
        0 => {}
        1 => {
            if let Some(bytes) = draft.dhcid.first() {
                entries.insert(DHCID_META_KEY.to_owned(), STANDARD.encode(bytes));
            }
        }
        _ => return Err("more than one DHCID record".into()),
    }
    let meta = Meta::from(entries);
    validate_meta(&meta).map_err(|e| e.to_string())?;
    Ok(meta)
}

fn has_check_keys(meta: &Meta) -> bool {
    CHECK_KEYS.iter().any(|key| meta.get(key).is_some())
}

/// The instance's checks: the one its TXT declares; else, for an instance
/// registered without declaring one in TXT (through the API), the ones it
/// has; else the configured default check, or none.
fn checks(
    service: &ServiceName,
    id: &InstanceId,
    address: IpAddr,
    port: u16,
    meta: &Meta,
    existing: Option<&Instance>,
    settings: &UpdateSettings,
) -> Result<Vec<CheckDefinition>, String> {
    let get = |key: &str| meta.get(key).map(str::to_owned);
    let body = if has_check_keys(meta) {
        CheckBody {
            http: get("check-http"),
            tcp: get("check-tcp"),
            ttl: get("check-ttl"),
            interval: get("check-interval"),
            timeout: get("check-timeout"),
            deregister_critical_after: get("check-deregister-critical-after"),
            ..CheckBody::default()
        }
    } else if let Some(existing) = existing.filter(|e| !has_check_keys(&e.meta)) {
        return Ok(existing.checks.clone());
    } else if let Some(default) = &settings.default_check {
        default_body(default, address, port)
    } else {
        return Ok(Vec::new());
    };
    validate_checks(vec![("check".to_owned(), body)], service, id).map_err(|e| e.to_string())
}

/// The default check with `{address}` and `{port}` filled in. An IPv6
/// address is written in brackets wherever it goes, as both `host:port`
/// and a URL's host need it.
fn default_body(default: &DefaultCheck, address: IpAddr, port: u16) -> CheckBody {
    let address = match address {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    let fill = |template: &Option<String>| {
        template.as_ref().map(|t| {
            t.replace("{address}", &address)
                .replace("{port}", &port.to_string())
        })
    };
    CheckBody {
        http: fill(&default.http),
        tcp: fill(&default.tcp),
        ttl: fill(&default.ttl),
        interval: fill(&default.interval),
        timeout: fill(&default.timeout),
        deregister_critical_after: fill(&default.deregister_critical_after),
        ..CheckBody::default()
    }
}
