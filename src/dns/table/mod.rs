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
//! so the new table shares everything else with the old one, and a touched
//! service's records copy its unchanged instances from the old ones.
//!
//! It lives in `dns` because it is DNS answer data: the registry builds and
//! publishes it (`update_service_since`, `set_index`, `ServiceRecords::retire`),
//! DNS only reads it. Files, each depending only on those below it:
//! this one (the table and its apex), `records` (one service's records),
//! `service_map` (services by label), `inline_label`, `endpoint` (an
//! instance's TXT strings and tag labels, derived when its entry is built).
//!
//! Owns: the shape of the answer data and its build. Must not: encode
//! answers (that is `fast` and `lookup`), or change the registry's state,
//! which it only reads while building.

mod endpoint;
mod inline_label;
mod nameserver;
mod records;
mod service_map;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use hickory_proto::rr::{
    Name, RData, Record,
    rdata::{NS, SOA},
};

use crate::registry::ServiceState;
pub use inline_label::InlineLabel;
pub use nameserver::{NS_TTL_SECS, Nameserver};
use records::child;
pub use records::{InstanceLookup, PackedEndpoint, ServiceRecords};
pub use service_map::ServiceMap;

// SOA timers of the dynamic domain, in seconds (RFC 1035 section 3.3.13).
// roster refuses zone transfers, so no secondary acts on them; they are the
// conventional values for tools that read the SOA. The fourth timer,
// MINIMUM, is the configured negative TTL (`TableSettings::negative_ttl`).
/// How often a secondary would check for a new serial: an hour.
const SOA_REFRESH_SECS: i32 = 3600;
/// How soon a secondary would retry a failed check: ten minutes.
const SOA_RETRY_SECS: i32 = 600;
/// How long a secondary would serve without contact: a day.
const SOA_EXPIRE_SECS: i32 = 86_400;

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
    /// The domain's name server: the NS target and its addresses.
    pub nameserver: Arc<Nameserver>,
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
    /// NS of the dynamic domain (`dns.ns_name`).
    pub ns: Option<Record>,
    /// The NS record's target and the addresses served for it.
    pub nameserver: Option<Arc<Nameserver>>,
}

impl RecordTable {
    /// Records that the table now reflects `index`: rebuilds the apex.
    pub fn set_index(&mut self, index: u64, settings: &TableSettings) {
        self.index = index;
        let nameserver = settings.nameserver.name.clone();
        let hostmaster = child(&settings.domain, "hostmaster");
        // RFC 1982 serial arithmetic wraps at 2^32; the low bits still move
        // on every change, which is what secondaries look at.
        let serial = index as u32;
        let soa = SOA::new(
            nameserver.clone(),
            hostmaster,
            serial,
            SOA_REFRESH_SECS,
            SOA_RETRY_SECS,
            SOA_EXPIRE_SECS,
            settings.negative_ttl,
        );
        self.soa = Some(Record::from_rdata(
            settings.domain.clone(),
            settings.negative_ttl,
            RData::SOA(soa),
        ));
        self.ns = Some(Record::from_rdata(
            settings.domain.clone(),
            NS_TTL_SECS,
            RData::NS(NS(nameserver)),
        ));
        self.nameserver = Some(settings.nameserver.clone());
    }

    /// Replaces the records of one service (or removes it if `service` is
    /// `None` or empty), keeping `tag_use` in step. O(size of that service),
    /// reading each of its instances.
    pub fn update_service(
        &mut self,
        label: &str,
        service: Option<&ServiceState>,
        settings: &TableSettings,
    ) {
        self.update_service_since(label, None, service, settings);
    }

    /// Like [`Self::update_service`], knowing `before`, the service the
    /// table's records of it were built from: instances unchanged since are
    /// then copied from those records rather than read again
    /// ([`ServiceRecords::update`]).
    pub fn update_service_since(
        &mut self,
        label: &str,
        before: Option<&ServiceState>,
        service: Option<&ServiceState>,
        settings: &TableSettings,
    ) {
        // Looked up, not removed: the insert below replaces the entry, and
        // a removal first would walk and rewrite the map's path twice.
        let old = self.services.get(label).cloned();
        let records = match service.filter(|s| !s.is_empty()) {
            None => {
                if old.is_some() {
                    self.services.remove(label);
                }
                None
            }
            Some(service) => Some(Arc::new(match (&old, before) {
                (Some(old), Some(before)) => ServiceRecords::update(old, before, service, settings),
                _ => ServiceRecords::build(service, settings),
            })),
        };
        self.count_tags(
            old.iter().flat_map(|old| old.tag_labels()),
            records.iter().flat_map(|records| records.tag_labels()),
        );
        if let Some(records) = records {
            self.services.insert(records);
        }
    }

    /// Moves `tag_use` from one service's tags to its new ones, both
    /// sorted: only the tags that differ are counted, so a change that
    /// keeps the service's tags (nearly every one) leaves the map alone.
    fn count_tags<'a>(
        &mut self,
        was: impl Iterator<Item = &'a str>,
        now: impl Iterator<Item = &'a str>,
    ) {
        let (mut was, mut now) = (was.peekable(), now.peekable());
        loop {
            let order = match (was.peek(), now.peek()) {
                (None, None) => return,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(a), Some(b)) => a.cmp(b),
            };
            match order {
                std::cmp::Ordering::Equal => {
                    was.next();
                    now.next();
                }
                std::cmp::Ordering::Less => {
                    let Some(tag) = was.next() else { return };
                    if let Some(count) = self.tag_use.get_mut(tag) {
                        *count -= 1;
                        if *count == 0 {
                            self.tag_use.remove(tag);
                        }
                    }
                }
                std::cmp::Ordering::Greater => {
                    let Some(tag) = now.next() else { return };
                    *self.tag_use.entry(tag.to_owned()).or_insert(0) += 1;
                }
            }
        }
    }
}
