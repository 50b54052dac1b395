//! Answer building: from a question and the current snapshot to the records
//! of each section, shuffled. No I/O, no locks, no awaiting: this is the hot
//! path, run once per query.

use std::{borrow::Cow, cell::RefCell};

use hickory_proto::{
    op::ResponseCode,
    rr::{LowerName, Name, RData, Record, RecordType},
};
use rand::{SeedableRng, rngs::SmallRng, seq::SliceRandom};

use super::table::{InstanceLookup, RecordTable, ServiceRecords};
use super::{
    query::{self, DynamicName, SrvForm},
    zones::{StaticZone, StaticZones},
};

/// The sections of a response, before size limits are applied.
#[derive(Debug, Default)]
pub(super) struct Answer<'t> {
    pub rcode: ResponseCode,
    /// Set when roster is authoritative for the name (always, unless refused).
    pub authoritative: bool,
    pub answers: Vec<Cow<'t, Record>>,
    pub authority: Vec<Cow<'t, Record>>,
    pub additionals: Vec<Cow<'t, Record>>,
    /// A precomputed upper bound on the encoded size of every record above,
    /// when one is known without looking at each record.
    pub wire_bound: Option<usize>,
}

impl<'t> Answer<'t> {
    fn refused() -> Self {
        Self {
            rcode: ResponseCode::Refused,
            ..Self::default()
        }
    }
}

thread_local! {
    /// One fast RNG per thread: shuffling needs speed and uniformity, not
    /// cryptographic strength, and a thread-local one needs no lock.
    static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_rng(&mut rand::rng()));
}

fn shuffled_positions(positions: impl Iterator<Item = u32>) -> Vec<u32> {
    let mut positions: Vec<u32> = positions.collect();
    shuffle(&mut positions);
    positions
}

/// Everything DNS answers from, for one query.
pub(super) struct Sources<'t> {
    pub domain: &'t LowerName,
    pub table: &'t RecordTable,
    pub zones: &'t StaticZones,
}

/// Answers `qname`/`qtype` (class IN), or refuses a name outside every zone.
pub(super) fn resolve<'t>(
    sources: &Sources<'t>,
    qname: &'t LowerName,
    qtype: RecordType,
) -> Answer<'t> {
    let static_zone = sources.zones.find(qname);
    if sources.domain.zone_of(qname) {
        // The dynamic domain, unless a static zone is more specific.
        let more_specific =
            static_zone.is_some_and(|z| z.origin.num_labels() > sources.domain.num_labels());
        if !more_specific {
            let extension = sources.zones.exact(sources.domain);
            return resolve_dynamic(sources, extension, qname, qtype);
        }
    }
    match static_zone {
        Some(zone) => resolve_static(zone, qname, qtype),
        None => Answer::refused(),
    }
}

fn type_matches(record: &Record, qtype: RecordType) -> bool {
    qtype == RecordType::ANY || record.record_type() == qtype
}

fn resolve_dynamic<'t>(
    sources: &Sources<'t>,
    extension: Option<&'t StaticZone>,
    qname: &'t LowerName,
    qtype: RecordType,
) -> Answer<'t> {
    let table = sources.table;
    let mut answer = Answer {
        authoritative: true,
        ..Answer::default()
    };
    let mut exists = false;
    // The name server's own name answers its addresses, whatever service
    // shares its label.
    let nameserver = table.nameserver.as_deref();
    let dynamic = match nameserver {
        Some(ns) if ns.lower == *qname => {
            exists = true;
            let matching = ns.addresses.iter().filter(|r| type_matches(r, qtype));
            answer.answers.extend(matching.map(Cow::Borrowed));
            DynamicName::Other
        }
        _ => query::parse(qname, sources.domain),
    };
    match dynamic {
        DynamicName::Apex => {
            exists = true;
            let static_soa = extension.and_then(|z| z.soa.as_ref());
            if matches!(qtype, RecordType::SOA | RecordType::ANY)
                && let Some(soa) = static_soa.or(table.soa.as_ref())
            {
                answer.answers.push(Cow::Borrowed(soa));
            }
            let static_ns = extension
                .and_then(|z| z.lookup(qname))
                .is_some_and(|records| records.iter().any(|r| r.record_type() == RecordType::NS));
            if matches!(qtype, RecordType::NS | RecordType::ANY)
                && !static_ns
                && let Some(ns) = &table.ns
            {
                answer.answers.push(Cow::Borrowed(ns));
                // Glue: the resolver that asked needs the address next.
                if let Some(nameserver) = nameserver {
                    let glue = nameserver.addresses.iter().map(Cow::Borrowed);
                    answer.additionals.extend(glue);
                }
            }
        }
        DynamicName::Service(label) => {
            if let Some(service) = table.services.get(label) {
                exists = true;
                match qtype {
                    // The common queries, answered from prebuilt lists.
                    RecordType::A => {
                        addresses_into(service, &service.v4_positions, &mut answer.answers);
                        answer.wire_bound = Some(service.a_wire_bound);
                    }
                    RecordType::AAAA => {
                        addresses_into(service, &service.v6_positions, &mut answer.answers);
                        answer.wire_bound = Some(service.aaaa_wire_bound);
                    }
                    RecordType::SRV => {
                        let positions = shuffled_positions(0..service.servable() as u32);
                        srv_answers(service, &positions, None, &mut answer);
                        answer.wire_bound = Some(service.srv_wire_bound);
                    }
                    RecordType::ANY => {
                        addresses_into(service, &service.v4_positions, &mut answer.answers);
                        addresses_into(service, &service.v6_positions, &mut answer.answers);
                        let positions = shuffled_positions(0..service.servable() as u32);
                        srv_answers(service, &positions, None, &mut answer);
                    }
                    _ => {}
                }
            }
        }
        DynamicName::Srv { service, form } => {
            if let Some(service) = table.services.get(service) {
                let positions = match form {
                    SrvForm::Protocol => Some(shuffled_positions(0..service.servable() as u32)),
                    SrvForm::Tag(tag) => service
                        .tag(tag)
                        .map(|positions| shuffled_positions(positions.iter().copied())),
                };
                if let Some(positions) = positions {
                    exists = true;
                    if matches!(qtype, RecordType::SRV | RecordType::ANY) {
                        srv_answers(service, &positions, Some(qname), &mut answer);
                    }
                }
            }
        }
        DynamicName::Instance { service, instance } => {
            if let Some(service) = table.services.get(service) {
                match service.instance(instance) {
                    InstanceLookup::Servable(position) => {
                        exists = true;
                        let address = service.address_record(position, service.target(position));
                        if type_matches(&address, qtype) {
                            answer.answers.push(Cow::Owned(address));
                        }
                        if let Some(txt) = service.txt_record(position)
                            && type_matches(&txt, qtype)
                        {
                            answer.answers.push(Cow::Owned(txt));
                        }
                    }
                    InstanceLookup::NotServable => exists = true,
                    InstanceLookup::Unknown => {}
                }
            }
        }
        DynamicName::Underscore(label) => {
            let is_protocol = label == "tcp" || label == "udp";
            exists = (is_protocol && !table.services.is_empty())
                || table.services.contains_key(label)
                || table.tag_use.contains_key(label);
        }
        DynamicName::Other => {}
    }
    if let Some(zone) = extension {
        exists |= add_static(zone, qname, qtype, &mut answer);
    }
    if answer.answers.is_empty() {
        let soa = extension
            .and_then(|z| z.soa.as_ref())
            .or(table.soa.as_ref());
        negative(&mut answer, exists, soa);
    }
    answer
}

/// Appends the address records of `positions` (at the service name) to `out`,
/// in a fresh random order.
fn addresses_into<'t>(service: &ServiceRecords, positions: &[u32], out: &mut Vec<Cow<'t, Record>>) {
    let start = out.len();
    out.extend(positions.iter().map(|&position| {
        Cow::Owned(service.address_record(position as usize, service.name.clone()))
    }));
    shuffle(&mut out[start..]);
}

/// Shuffles `items` uniformly with this thread's RNG.
pub(super) fn shuffle<T>(items: &mut [T]) {
    RNG.with(|rng| items.shuffle(&mut *rng.borrow_mut()));
}

/// Adds the service's SRV records in `positions` order, with their targets'
/// addresses as additional records. `rename` gives the SRV records the owner
/// name asked for (`_web._tcp…`) instead of the service name.
fn srv_answers(
    service: &ServiceRecords,
    positions: &[u32],
    rename: Option<&LowerName>,
    answer: &mut Answer<'_>,
) {
    answer.answers.reserve(positions.len());
    answer.additionals.reserve(positions.len());
    let owner: Name = match rename {
        Some(name) => name.into(),
        None => service.name.clone(),
    };
    for &position in positions {
        let position = position as usize;
        answer
            .answers
            .push(Cow::Owned(service.srv_record(position, owner.clone())));
        answer.additionals.push(Cow::Owned(
            service.address_record(position, service.target(position)),
        ));
    }
}

/// Adds static records at `qname`; returns whether the name exists there.
fn add_static<'t>(
    zone: &'t StaticZone,
    qname: &LowerName,
    qtype: RecordType,
    answer: &mut Answer<'t>,
) -> bool {
    let Some(records) = zone.lookup(qname) else {
        return zone.has_name_at_or_below(qname);
    };
    let cname = records
        .iter()
        .find(|r| r.record_type() == RecordType::CNAME);
    match cname {
        // A CNAME owns its name (RFC 1034 3.6.2): answer it for any other type.
        Some(cname) if qtype != RecordType::CNAME && qtype != RecordType::ANY => {
            answer.answers.push(Cow::Borrowed(cname));
        }
        _ => answer.answers.extend(
            records
                .iter()
                .filter(|r| type_matches(r, qtype))
                .map(Cow::Borrowed),
        ),
    }
    true
}

fn resolve_static<'t>(zone: &'t StaticZone, qname: &LowerName, qtype: RecordType) -> Answer<'t> {
    let mut answer = Answer {
        authoritative: true,
        ..Answer::default()
    };
    let mut exists = add_static(zone, qname, qtype, &mut answer);
    if *qname == zone.origin {
        exists = true;
        if matches!(qtype, RecordType::SOA | RecordType::ANY)
            && let Some(soa) = &zone.soa
        {
            answer.answers.insert(0, Cow::Borrowed(soa));
        }
    }
    if answer.answers.is_empty() {
        negative(&mut answer, exists, zone.soa.as_ref());
    } else if answer.answers.len() > 1 {
        RNG.with(|rng| answer.answers.shuffle(&mut *rng.borrow_mut()));
    }
    answer
}

/// NXDOMAIN or NODATA, with the SOA in the authority section (RFC 2308).
fn negative<'t>(answer: &mut Answer<'t>, exists: bool, soa: Option<&'t Record>) {
    if !exists {
        answer.rcode = ResponseCode::NXDomain;
    }
    let Some(soa) = soa else {
        return;
    };
    // The negative TTL is the lesser of the SOA's TTL and its MINIMUM.
    let minimum = match &soa.data {
        RData::SOA(data) => data.minimum,
        _ => soa.ttl,
    };
    if soa.ttl <= minimum {
        answer.authority.push(Cow::Borrowed(soa));
    } else {
        let mut capped = soa.clone();
        capped.ttl = minimum;
        answer.authority.push(Cow::Owned(capped));
    }
}

#[cfg(test)]
mod tests;
