//! One service's records: its servable instances in the compact form the
//! DNS fast path encodes from, the names that exist under it, and the
//! hickory `Record`s the general path builds from them on demand.

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
    rdata::{A, AAAA, SRV, TXT},
};

use super::{Endpoint, InlineLabel, TableSettings};
use crate::{
    dns::{
        prefetch::{prefetch, prefetch_lines},
        wire::{self, A_RDATA_LEN, AAAA_RDATA_LEN},
    },
    model::DnsLabel,
    registry::ServiceState,
};

/// One servable instance as the DNS fast path encodes it, packed inline
/// (no pointers to follow) in `ServiceRecords::packed`.
#[derive(Debug)]
pub struct PackedEndpoint {
    pub address: IpAddr,
    pub port: u16,
    pub weight: u16,
    pub priority: u16,
    /// Where the label is in `ServiceRecords::labels`: start and length.
    label: (u32, u8),
}

/// What an instance name holds: see [`ServiceRecords::instance`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceLookup {
    /// Servable: its records are those of the instance at this position.
    Servable(usize),
    /// Registered but not servable (unhealthy or drained): the name exists
    /// and holds nothing (NODATA).
    NotServable,
    /// No such instance: the name does not exist (NXDOMAIN).
    Unknown,
}

/// A tag label and the positions of the servable instances carrying it.
type TagPositions = (Box<str>, Box<[u32]>);

/// The servable instances of one service, and the names that exist in it.
///
/// Servable instances are numbered by position (an index into `endpoints`
/// and `packed`); one shuffle of positions orders the answer and additional
/// sections alike.
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
    /// What the DNS fast path reads of each servable instance, by position,
    /// inline (`endpoints` holds pointers, one cache miss each on a large
    /// table): an A, AAAA or SRV answer then reads this block and `labels`,
    /// nothing else.
    pub packed: Box<[PackedEndpoint]>,
    /// Every packed endpoint's label, concatenated;
    /// `PackedEndpoint::label` indexes it.
    labels: Box<[u8]>,
    /// Positions of the instances with an IPv4 address (the A answer), and
    /// with IPv6 (AAAA).
    pub v4_positions: Box<[u32]>,
    pub v6_positions: Box<[u32]>,
    /// The servable instances, by position: shared with the registry state, so
    /// rebuilding a service copies pointers, not records.
    pub endpoints: Box<[Arc<Endpoint>]>,
    /// Exact size of the SRV answer and additional sections as the DNS fast
    /// path encodes them (owner names compressed, SRV targets in full).
    pub srv_fast_len: usize,
    /// The service's name, e.g. `web.service.local.`.
    pub name: Name,
    /// Positions sorted by instance label, for instance-name lookups.
    by_label: Box<[u32]>,
    /// Labels of registered instances that are not servable, sorted: their
    /// names exist (NODATA, not NXDOMAIN) but hold nothing.
    down: Box<[DnsLabel]>,
    /// Positions of servable instances by tag label, sorted by tag; a tag
    /// whose instances are all unhealthy has an empty list (the name exists).
    tags: Box<[TagPositions]>,
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
            let position = endpoints.len() as u32;
            for tag in &endpoint.tags {
                let positions = tags.entry(tag).or_default();
                if servable {
                    positions.push(position);
                }
            }
            if servable {
                endpoints.push(endpoint.clone());
            } else {
                down.push(endpoint.label.clone());
            }
        }
        let positions_where = |v4: bool| -> Box<[u32]> {
            (0..endpoints.len() as u32)
                .filter(|&position| endpoints[position as usize].address.is_ipv4() == v4)
                .collect()
        };
        let mut labels = Vec::new();
        let packed = endpoints
            .iter()
            .map(|endpoint| {
                let label = endpoint.label.as_str().as_bytes();
                let start = labels.len() as u32;
                labels.extend_from_slice(label);
                PackedEndpoint {
                    address: endpoint.address,
                    port: endpoint.port,
                    weight: endpoint.weight,
                    priority: endpoint.priority,
                    // Labels are at most 63 octets (DnsLabel's invariant).
                    label: (start, label.len() as u8),
                }
            })
            .collect();
        let v4_positions = positions_where(true);
        let v6_positions = positions_where(false);
        let mut by_label: Vec<u32> = (0..endpoints.len() as u32).collect();
        by_label.sort_unstable_by(|&a, &b| {
            endpoints[a as usize]
                .label
                .cmp(&endpoints[b as usize].label)
        });
        down.sort_unstable();

        // Sizes on the wire, by the formulas the fast path writes with and
        // `fit` bounds with (see `dns::wire`).
        let name_bound = wire::name_bound(&name);
        let a_wire_bound = v4_positions.len() * wire::record_bound(name_bound, A_RDATA_LEN);
        let aaaa_wire_bound = v6_positions.len() * wire::record_bound(name_bound, AAAA_RDATA_LEN);
        let name_len = wire::name_wire_len(&name);
        let mut srv_wire_bound = 0;
        let mut srv_fast_len = 0;
        for endpoint in &endpoints {
            let label_len = endpoint.label.as_str().len();
            srv_wire_bound += wire::srv_pair_bound(name_bound, label_len, endpoint.address);
            srv_fast_len += wire::srv_pair_len(label_len, name_len, endpoint.address);
        }
        Self {
            // DnsLabel guarantees at most 63 octets.
            label: InlineLabel::new(label.as_bytes()).unwrap_or_default(),
            retired: AtomicBool::new(false),
            name,
            ttl: settings.ttl,
            endpoints: endpoints.into_boxed_slice(),
            packed,
            labels: labels.into_boxed_slice(),
            v4_positions,
            v6_positions,
            by_label: by_label.into_boxed_slice(),
            down: down.into_boxed_slice(),
            tags: tags
                .into_iter()
                .map(|(tag, positions)| (Box::from(tag), positions.into_boxed_slice()))
                .collect(),
            a_wire_bound,
            aaaa_wire_bound,
            srv_wire_bound,
            srv_fast_len,
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
        prefetch_lines(self.packed.as_ptr().cast(), size_of_val(&*self.packed));
        prefetch_lines(self.labels.as_ptr(), self.labels.len());
        prefetch(self.v4_positions.as_ptr().cast());
    }

    /// Like [`Self::prefetch_answer_data`], for the fields the fast path
    /// reads first (see the field order).
    pub fn prefetch_header(&self) {
        prefetch_lines((self as *const Self).cast(), 192);
    }

    /// The label of `endpoint`, as the fast path writes it.
    pub fn packed_label(&self, endpoint: &PackedEndpoint) -> &[u8] {
        let (start, len) = endpoint.label;
        let start = start as usize;
        self.labels
            .get(start..start + len as usize)
            .unwrap_or_default()
    }

    /// Number of servable instances.
    pub fn servable(&self) -> usize {
        self.endpoints.len()
    }

    /// Looks up an instance by label.
    pub fn instance(&self, label: &str) -> InstanceLookup {
        let found = self.by_label.binary_search_by(|&position| {
            self.endpoints[position as usize].label.as_str().cmp(label)
        });
        match found {
            Ok(at) => InstanceLookup::Servable(self.by_label[at] as usize),
            Err(_) => match self.down.binary_search_by(|l| l.as_str().cmp(label)) {
                Ok(_) => InstanceLookup::NotServable,
                Err(_) => InstanceLookup::Unknown,
            },
        }
    }

    /// Positions of the servable instances carrying `tag`, if any instance
    /// of the service (servable or not) carries it.
    pub fn tag(&self, tag: &str) -> Option<&[u32]> {
        let index = self.tags.binary_search_by(|(t, _)| (**t).cmp(tag)).ok()?;
        Some(&self.tags[index].1)
    }

    /// Every tag label carried by an instance of the service.
    pub fn tag_labels(&self) -> impl Iterator<Item = &str> {
        self.tags.iter().map(|(tag, _)| &**tag)
    }

    /// The SRV target of the instance in `position`: `<id>.<service>.<domain>.`.
    pub fn target(&self, position: usize) -> Name {
        child(&self.name, self.endpoints[position].label.as_str())
    }

    /// The A or AAAA record of the instance in `position`, owned by `owner`.
    pub fn address_record(&self, position: usize, owner: Name) -> Record {
        Record::from_rdata(
            owner,
            self.ttl,
            address_rdata(self.endpoints[position].address),
        )
    }

    /// The SRV record of the instance in `position`, owned by `owner`.
    pub fn srv_record(&self, position: usize, owner: Name) -> Record {
        let endpoint = &self.endpoints[position];
        let srv = SRV::new(
            endpoint.priority,
            endpoint.weight,
            endpoint.port,
            self.target(position),
        );
        Record::from_rdata(owner, self.ttl, RData::SRV(srv))
    }

    /// The TXT record (metadata) at the instance name, if it has metadata.
    pub fn txt_record(&self, position: usize) -> Option<Record> {
        let endpoint = &self.endpoints[position];
        if endpoint.txt.is_empty() {
            return None;
        }
        let strings = endpoint.txt.iter().map(|s| s.to_string()).collect();
        Some(Record::from_rdata(
            self.target(position),
            self.ttl,
            RData::TXT(TXT::new(strings)),
        ))
    }
}

pub(super) fn address_rdata(address: IpAddr) -> RData {
    match address {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    }
}

/// `label.parent`; labels here are validated DNS labels, so this cannot fail
/// unless the whole name exceeds 255 octets, which the config check rules
/// out by bounding the domain's length.
pub(super) fn child(parent: &Name, label: &str) -> Name {
    parent
        .prepend_label(label)
        .unwrap_or_else(|_| parent.clone())
}
