//! The record table: what DNS serves, derived from the registry state.
//!
//! It is immutable once built and published behind an `ArcSwap`, so the DNS
//! path reads it without locks. Each service keeps a compact description of
//! its servable instances (address, port, weight, priority, label, metadata),
//! built when the service changes: DNS's fast path encodes answers straight
//! from it, and the general path builds hickory `Record`s from it on demand.
//! No `Record` is stored per instance: at 272 bytes each, with three or four
//! per instance, they were most of roster's memory. Publishing a change
//! rebuilds only the services it touched: the maps are persistent (`imbl`),
//! so the new table shares everything else with the old one.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use hickory_proto::rr::{
    Name, RData, Record,
    rdata::{A, AAAA, NS, SOA, SRV, TXT},
};

pub use super::endpoint::Endpoint;
use super::service_map::InlineLabel;
pub use super::service_map::ServiceMap;
use super::state::ServiceState;
use crate::model::DnsLabel;

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

/// One servable instance as the DNS fast path encodes it.
#[derive(Debug)]
pub struct Slot {
    pub address: IpAddr,
    pub port: u16,
    pub weight: u16,
    pub priority: u16,
    /// Where the label is in `ServiceRecords::labels`: start and length.
    label: (u32, u8),
}

/// A tag label and the slots of the servable instances carrying it.
type TagSlots = (Box<str>, Box<[u32]>);

/// The servable instances of one service, and the names that exist in it.
///
/// Servable instances are numbered by slot (an index into `endpoints`); one
/// shuffle of slots orders the answer and additional sections alike.
///
/// `repr(C)`, fields in this order: what the DNS fast path reads of a
/// service (its label, then what it encodes) comes first, in as few cache
/// lines as possible; the rest is for the general path.
#[derive(Debug, Default)]
#[repr(C)]
pub struct ServiceRecords {
    /// The service's label, lower-case: the `ServiceMap` key, inline.
    pub label: InlineLabel,
    /// Set once a published table no longer holds these records (see
    /// `dns::service_cache`): caches must not answer from them.
    retired: AtomicBool,
    /// TTL of every record built from this service.
    pub ttl: u32,
    /// What the DNS fast path reads of each slot, inline (`endpoints` holds
    /// pointers, one cache miss each on a large table): an A, AAAA or SRV
    /// answer then reads this block and `labels`, nothing else.
    pub slots: Box<[Slot]>,
    /// Every slot's label, concatenated; `Slot::label` indexes it.
    labels: Box<[u8]>,
    /// Slots with an IPv4 address (the A answer), and with IPv6 (AAAA).
    pub v4_slots: Box<[u32]>,
    pub v6_slots: Box<[u32]>,
    /// The servable instances, by slot: shared with the registry state, so
    /// rebuilding a service copies pointers, not records.
    pub endpoints: Box<[Arc<Endpoint>]>,
    /// Exact size of the SRV answer and additional sections as the DNS fast
    /// path encodes them (owner names and target suffixes compressed).
    pub srv_compressed_len: usize,
    /// The service's name, e.g. `web.service.local.`.
    pub name: Name,
    /// Slots sorted by instance label, for instance-name lookups.
    by_label: Box<[u32]>,
    /// Labels of registered instances that are not servable, sorted: their
    /// names exist (NODATA, not NXDOMAIN) but hold nothing.
    down: Box<[DnsLabel]>,
    /// Slots of servable instances by tag label, sorted by tag; a tag whose
    /// instances are all unhealthy has an empty list (the name exists).
    tags: Box<[TagSlots]>,
    /// Upper bounds on the encoded size of all A records, all AAAA records,
    /// and all SRV records with their additional records, without name
    /// compression, so that answers that surely fit a datagram skip the
    /// trial encoding (see `dns::fit`).
    pub a_wire_bound: usize,
    pub aaaa_wire_bound: usize,
    pub srv_wire_bound: usize,
}

impl ServiceRecords {
    /// Builds the records of `service`. Cost: O(instances of the service).
    pub fn build(service: &ServiceState, settings: &TableSettings) -> Self {
        let label = service.name.label().as_str();
        let name = child(&settings.domain, label);
        let mut endpoints: Vec<Arc<Endpoint>> = Vec::with_capacity(service.len());
        let mut down = Vec::new();
        let mut tags: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for state in service.instances() {
            let endpoint = &state.endpoint;
            let servable = state.is_servable(settings.include_warning);
            let slot = endpoints.len() as u32;
            for tag in &endpoint.tags {
                let slots = tags.entry(tag).or_default();
                if servable {
                    slots.push(slot);
                }
            }
            if servable {
                endpoints.push(endpoint.clone());
            } else {
                down.push(endpoint.label.clone());
            }
        }
        let slots_where = |v4: bool| -> Box<[u32]> {
            (0..endpoints.len() as u32)
                .filter(|&slot| endpoints[slot as usize].address.is_ipv4() == v4)
                .collect()
        };
        let mut labels = Vec::new();
        let slots = endpoints
            .iter()
            .map(|endpoint| {
                let label = endpoint.label.as_str().as_bytes();
                let start = labels.len() as u32;
                labels.extend_from_slice(label);
                Slot {
                    address: endpoint.address,
                    port: endpoint.port,
                    weight: endpoint.weight,
                    priority: endpoint.priority,
                    // Labels are at most 63 octets (DnsLabel's invariant).
                    label: (start, label.len() as u8),
                }
            })
            .collect();
        let v4_slots = slots_where(true);
        let v6_slots = slots_where(false);
        let mut by_label: Vec<u32> = (0..endpoints.len() as u32).collect();
        by_label.sort_unstable_by(|&a, &b| {
            endpoints[a as usize]
                .label
                .cmp(&endpoints[b as usize].label)
        });
        down.sort_unstable();

        // Sizes on the wire: a name is its presentation length plus 2 octets
        // when fully qualified (see `max_encoded_len`).
        let name_len = wire_len(&name);
        let a_wire_bound = v4_slots.len() * (name_len + 10 + 4);
        let aaaa_wire_bound = v6_slots.len() * (name_len + 10 + 16);
        let mut srv_wire_bound = 0;
        let mut srv_compressed_len = 0;
        for endpoint in &endpoints {
            let address_len = if endpoint.address.is_ipv4() { 4 } else { 16 };
            let target_len = name_len + 1 + endpoint.label.as_str().len();
            srv_wire_bound += name_len + 10 + 6 + target_len;
            srv_wire_bound += target_len + 10 + address_len;
            // Owner: a 2-octet pointer; target: the label and a pointer.
            srv_compressed_len += 2 + 10 + 6 + 1 + endpoint.label.as_str().len() + 2;
            srv_compressed_len += 2 + 10 + address_len;
        }
        Self {
            // DnsLabel guarantees at most 63 octets.
            label: InlineLabel::new(label.as_bytes()).unwrap_or_default(),
            retired: AtomicBool::new(false),
            name,
            ttl: settings.ttl,
            endpoints: endpoints.into_boxed_slice(),
            slots,
            labels: labels.into_boxed_slice(),
            v4_slots,
            v6_slots,
            by_label: by_label.into_boxed_slice(),
            down: down.into_boxed_slice(),
            tags: tags
                .into_iter()
                .map(|(tag, slots)| (Box::from(tag), slots.into_boxed_slice()))
                .collect(),
            a_wire_bound,
            aaaa_wire_bound,
            srv_wire_bound,
            srv_compressed_len,
        }
    }

    /// Marks these records as about to be replaced in the published table:
    /// called by the registry right before it publishes the new table.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Asks the CPU to start fetching what an A, AAAA or SRV answer reads,
    /// without waiting for it (see `FastPath::answer_batch`).
    pub fn prefetch_answer_data(&self) {
        prefetch_lines(self.slots.as_ptr().cast(), size_of_val(&*self.slots));
        prefetch_lines(self.labels.as_ptr(), self.labels.len());
        prefetch(self.v4_slots.as_ptr().cast());
    }

    /// Like [`Self::prefetch_answer_data`], for the fields the fast path
    /// reads first (see the field order).
    pub fn prefetch_header(&self) {
        prefetch_lines((self as *const Self).cast(), 192);
    }

    /// The label of the instance in `slot`, as the fast path writes it.
    pub fn slot_label(&self, slot: &Slot) -> &[u8] {
        let (start, len) = slot.label;
        let start = start as usize;
        self.labels
            .get(start..start + len as usize)
            .unwrap_or_default()
    }

    /// Number of servable instances.
    pub fn servable(&self) -> usize {
        self.endpoints.len()
    }

    /// Looks up an instance by label: `Some(Some(slot))` if servable,
    /// `Some(None)` if registered but not servable, `None` if unknown.
    pub fn instance(&self, label: &str) -> Option<Option<usize>> {
        let found = self
            .by_label
            .binary_search_by(|&slot| self.endpoints[slot as usize].label.as_str().cmp(label));
        match found {
            Ok(index) => Some(Some(self.by_label[index] as usize)),
            Err(_) => self
                .down
                .binary_search_by(|l| l.as_str().cmp(label))
                .ok()
                .map(|_| None),
        }
    }

    /// Slots of the servable instances carrying `tag`, if any instance of
    /// the service (servable or not) carries it.
    pub fn tag(&self, tag: &str) -> Option<&[u32]> {
        let index = self.tags.binary_search_by(|(t, _)| (**t).cmp(tag)).ok()?;
        Some(&self.tags[index].1)
    }

    /// Every tag label carried by an instance of the service.
    pub fn tag_labels(&self) -> impl Iterator<Item = &str> {
        self.tags.iter().map(|(tag, _)| &**tag)
    }

    /// The SRV target of the instance in `slot`: `<id>.<service>.<domain>.`.
    pub fn target(&self, slot: usize) -> Name {
        child(&self.name, self.endpoints[slot].label.as_str())
    }

    /// The A or AAAA record of the instance in `slot`, owned by `owner`.
    pub fn address_record(&self, slot: usize, owner: Name) -> Record {
        Record::from_rdata(owner, self.ttl, address_rdata(self.endpoints[slot].address))
    }

    /// The SRV record of the instance in `slot`, owned by `owner`.
    pub fn srv_record(&self, slot: usize, owner: Name) -> Record {
        let endpoint = &self.endpoints[slot];
        let srv = SRV::new(
            endpoint.priority,
            endpoint.weight,
            endpoint.port,
            self.target(slot),
        );
        Record::from_rdata(owner, self.ttl, RData::SRV(srv))
    }

    /// The TXT record (metadata) at the instance name, if it has metadata.
    pub fn txt_record(&self, slot: usize) -> Option<Record> {
        let endpoint = &self.endpoints[slot];
        if endpoint.txt.is_empty() {
            return None;
        }
        let strings = endpoint.txt.iter().map(|s| s.to_string()).collect();
        Some(Record::from_rdata(
            self.target(slot),
            self.ttl,
            RData::TXT(TXT::new(strings)),
        ))
    }
}

/// The snapshot DNS answers from.
#[derive(Clone, Debug, Default)]
pub struct RecordTable {
    /// Services by DNS label; only services with at least one instance.
    pub services: ServiceMap,
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
            for tag in old.tag_labels() {
                if let Some(count) = self.tag_use.get_mut(tag) {
                    *count -= 1;
                    if *count == 0 {
                        self.tag_use.remove(tag);
                    }
                }
            }
        }
        let Some(service) = service.filter(|s| !s.is_empty()) else {
            return;
        };
        let records = ServiceRecords::build(service, settings);
        for tag in records.tag_labels() {
            *self.tag_use.entry(tag.to_owned()).or_insert(0) += 1;
        }
        self.services.insert(Arc::new(records));
    }
}

/// A hint to load the cache line at `address`; never faults, whatever the
/// address, and does nothing on other architectures.
#[inline(always)]
pub(crate) fn prefetch(address: *const u8) {
    // SAFETY: SSE is part of the x86_64 baseline, and a prefetch is only a
    // hint: it dereferences nothing and cannot fault.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// Prefetches the cache lines of `len` bytes from `start`, at most four.
fn prefetch_lines(start: *const u8, len: usize) {
    for offset in (0..len.min(256)).step_by(64) {
        prefetch(start.wrapping_add(offset));
    }
}

/// An upper bound on a record's encoded size, ignoring name compression.
pub fn max_encoded_len(record: &Record) -> usize {
    // Name::len is the presentation length; the wire form of a fully
    // qualified name is one octet longer.
    let name = wire_len;
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

/// The wire length of a fully qualified name, uncompressed: `Name::len` is
/// the presentation length (with the final dot); the wire form is one octet
/// longer. Counted generously (+2) as an upper bound.
fn wire_len(name: &Name) -> usize {
    name.len() + 2
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
