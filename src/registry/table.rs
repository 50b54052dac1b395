//! The record table: what DNS serves, derived from the registry state.
//!
//! It is immutable once built and published behind an `ArcSwap`, so the DNS
//! path reads it without locks. Records are pre-built per service when the
//! service changes, so a query only looks up, shuffles and encodes. Publishing
//! a change rebuilds only the services it touched: the maps are persistent
//! (`imbl`), so the new table shares everything else with the old one.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use hickory_proto::rr::{
    Name, RData, Record,
    rdata::{A, AAAA, NS, SOA, SRV, TXT},
};

use super::state::ServiceState;
use crate::model::DnsLabel;

/// `ServiceRecords::txt_index` for an instance without metadata.
const NO_TXT: u32 = u32::MAX;

/// What the table needs to know to build records.
#[derive(Clone, Debug)]
pub struct TableSettings {
    /// The dynamic domain, lower-case and fully qualified.
    pub domain: Name,
    /// TTL of every answer record.
    pub ttl: u32,
    /// Negative-caching TTL: the SOA MINIMUM and the SOA record's own TTL.
    pub negative_ttl: u32,
    /// Serve instances whose worst check is `warning`.
    pub include_warning: bool,
}

/// The records of one service, for the instances DNS may hand out.
///
/// Servable instances are numbered by slot; the `Vec`s below are parallel
/// and indexed by slot, so one shuffle of slots orders every section alike.
#[derive(Debug, Default)]
pub struct ServiceRecords {
    /// The service's name, e.g. `web.service.local.`.
    pub name: Name,
    /// A records at the service name (not slot-indexed).
    pub a: Vec<Record>,
    /// AAAA records at the service name (not slot-indexed).
    pub aaaa: Vec<Record>,
    /// Upper bounds on the encoded size of all `a`, all `aaaa`, and all SRV
    /// records with their additional records, so that answers that surely
    /// fit a datagram skip the trial encoding (see `dns::fit`).
    pub a_wire_bound: usize,
    pub aaaa_wire_bound: usize,
    pub srv_wire_bound: usize,
    /// SRV at the service name, target `<id>.<service>.<domain>.`.
    pub srv: Vec<Record>,
    /// A or AAAA at the SRV target: the additional section.
    pub target_address: Vec<Record>,
    /// TXT records at instance names (metadata), for instances that have any.
    pub txt: Vec<Record>,
    /// Per slot, the index into `txt`, or `NO_TXT`. Kept apart from the
    /// records because an `Option<Record>` costs a whole record (272 bytes)
    /// even when empty, and most instances have no metadata.
    pub txt_index: Vec<u32>,
    /// Every registered instance by label: `Some(slot)` if servable. An
    /// instance that is registered but unhealthy still exists as a name.
    pub instances: HashMap<String, Option<u32>>,
    /// Slots of servable instances by tag label; a tag whose instances are
    /// all unhealthy maps to an empty list (the name exists, holds nothing).
    pub tags: HashMap<String, Vec<u32>>,
}

impl ServiceRecords {
    /// Builds the records of `service`. Cost: O(instances of the service).
    pub fn build(service: &ServiceState, settings: &TableSettings) -> Self {
        let label = service.name.label().as_str();
        let name = child(&settings.domain, label);
        let mut records = Self {
            name: name.clone(),
            ..Self::default()
        };
        for state in service.instances.values() {
            let instance = &state.instance;
            let instance_label = instance.id.label().as_str();
            let servable = state.is_servable(settings.include_warning);
            if !servable {
                records.instances.insert(instance_label.to_owned(), None);
                for tag in &instance.tags {
                    if let Ok(tag) = DnsLabel::from_name(tag, "tag") {
                        records.tags.entry(tag.as_str().to_owned()).or_default();
                    }
                }
                continue;
            }
            let slot = records.srv.len() as u32;
            let target = child(&name, instance_label);
            let address = address_rdata(instance.address);
            let at_service = Record::from_rdata(name.clone(), settings.ttl, address.clone());
            match instance.address {
                IpAddr::V4(_) => records.a.push(at_service),
                IpAddr::V6(_) => records.aaaa.push(at_service),
            }
            records
                .target_address
                .push(Record::from_rdata(target.clone(), settings.ttl, address));
            records.srv.push(Record::from_rdata(
                name.clone(),
                settings.ttl,
                RData::SRV(SRV::new(
                    instance.priority,
                    instance.weight,
                    instance.port,
                    target.clone(),
                )),
            ));
            if instance.meta.is_empty() {
                records.txt_index.push(NO_TXT);
            } else {
                let strings = instance
                    .meta
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                records.txt_index.push(records.txt.len() as u32);
                records.txt.push(Record::from_rdata(
                    target,
                    settings.ttl,
                    RData::TXT(TXT::new(strings)),
                ));
            }
            records
                .instances
                .insert(instance_label.to_owned(), Some(slot));
            for tag in &instance.tags {
                if let Ok(tag) = DnsLabel::from_name(tag, "tag") {
                    records
                        .tags
                        .entry(tag.as_str().to_owned())
                        .or_default()
                        .push(slot);
                }
            }
        }
        // Records are big (272 bytes each): drop the slack of Vec growth.
        records.a.shrink_to_fit();
        records.aaaa.shrink_to_fit();
        records.srv.shrink_to_fit();
        records.target_address.shrink_to_fit();
        records.txt.shrink_to_fit();
        records.txt_index.shrink_to_fit();
        records.instances.shrink_to_fit();
        records.tags.shrink_to_fit();
        records.a_wire_bound = records.a.iter().map(max_encoded_len).sum();
        records.aaaa_wire_bound = records.aaaa.iter().map(max_encoded_len).sum();
        records.srv_wire_bound = records
            .srv
            .iter()
            .chain(&records.target_address)
            .map(max_encoded_len)
            .sum();
        records
    }

    /// Number of servable instances.
    pub fn servable(&self) -> usize {
        self.srv.len()
    }

    /// The TXT record of the instance in `slot`, if it has metadata.
    pub fn txt(&self, slot: usize) -> Option<&Record> {
        let index = *self.txt_index.get(slot)?;
        self.txt.get(index as usize)
    }
}

/// The snapshot DNS answers from.
#[derive(Clone, Debug, Default)]
pub struct RecordTable {
    /// Services by DNS label; only services with at least one instance.
    pub services: imbl::HashMap<String, Arc<ServiceRecords>>,
    /// How many services carry each tag label, so that `_<tag>.<domain>`
    /// (an empty non-terminal) answers NODATA rather than NXDOMAIN.
    pub tag_use: imbl::HashMap<String, u32>,
    /// The registry index this table reflects (the SOA serial).
    pub index: u64,
    /// SOA of the dynamic domain, its serial following the index.
    pub soa: Option<Record>,
    /// NS of the dynamic domain: `ns.<domain>.`.
    pub ns: Option<Record>,
}

impl RecordTable {
    /// Records that the table now reflects `index`: rebuilds the apex.
    pub fn set_index(&mut self, index: u64, settings: &TableSettings) {
        self.index = index;
        let nameserver = child(&settings.domain, "ns");
        let hostmaster = child(&settings.domain, "hostmaster");
        // RFC 1982 serial arithmetic wraps at 2^32; the low bits still move
        // on every change, which is what secondaries look at.
        let serial = index as u32;
        let soa = SOA::new(
            nameserver.clone(),
            hostmaster,
            serial,
            3600,
            600,
            86_400,
            settings.negative_ttl,
        );
        self.soa = Some(Record::from_rdata(
            settings.domain.clone(),
            settings.negative_ttl,
            RData::SOA(soa),
        ));
        self.ns = Some(Record::from_rdata(
            settings.domain.clone(),
            3600,
            RData::NS(NS(nameserver)),
        ));
    }

    /// Replaces the records of one service (or removes it if `service` is
    /// `None` or empty), keeping `tag_use` in step. O(size of that service).
    pub fn update_service(
        &mut self,
        label: &str,
        service: Option<&ServiceState>,
        settings: &TableSettings,
    ) {
        let old = self.services.remove(label);
        if let Some(old) = &old {
            for tag in old.tags.keys() {
                if let Some(count) = self.tag_use.get_mut(tag) {
                    *count -= 1;
                    if *count == 0 {
                        self.tag_use.remove(tag);
                    }
                }
            }
        }
        let Some(service) = service.filter(|s| !s.instances.is_empty()) else {
            return;
        };
        let records = ServiceRecords::build(service, settings);
        for tag in records.tags.keys() {
            *self.tag_use.entry(tag.clone()).or_insert(0) += 1;
        }
        self.services.insert(label.to_owned(), Arc::new(records));
    }
}

/// An upper bound on a record's encoded size, ignoring name compression.
pub fn max_encoded_len(record: &Record) -> usize {
    // Name::len is the presentation length; the wire form of a fully
    // qualified name is one octet longer.
    let name = |n: &Name| n.len() + 2;
    let rdata = match &record.data {
        RData::A(_) => 4,
        RData::AAAA(_) => 16,
        RData::SRV(srv) => 6 + name(&srv.target),
        RData::TXT(txt) => txt.txt_data.iter().map(|s| s.len() + 1).sum(),
        RData::NS(ns) => name(&ns.0),
        RData::CNAME(cname) => name(&cname.0),
        RData::SOA(soa) => name(&soa.mname) + name(&soa.rname) + 20,
        // Anything else is rare here: make the caller encode to find out.
        _ => return usize::MAX / 4,
    };
    name(&record.name) + 10 + rdata
}

fn address_rdata(address: IpAddr) -> RData {
    match address {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    }
}

/// `label.parent`; labels here are validated DNS labels, so this cannot fail
/// unless the whole name exceeds 255 octets, which the config check rules
/// out by bounding the domain's length.
fn child(parent: &Name, label: &str) -> Name {
    parent
        .prepend_label(label)
        .unwrap_or_else(|_| parent.clone())
}
