//! A per-thread, direct-mapped cache of service records for the DNS fast
//! path, in front of the record table's persistent map.
//!
//! Why: on a large table, finding a service in the persistent map costs a
//! cache miss per level of the trie (three or four at 20,000 services),
//! and that was most of what made answers slower as the table grew. The
//! cache is a flat array indexed by a hash of the label, one pointer per
//! bucket: a hit costs the bucket (prefetched a batch ahead) and the records'
//! first line, which the answer reads anyway.
//!
//! Why it is never stale: the registry's writer marks a service's records
//! *retired* just before it publishes a table without them (the service
//! changed or went away), so whoever sees the new table sees them retired.
//! A hit on retired records counts as a miss, and the map is asked again.
//! Publishing stays O(changed service): nothing is rebuilt; each UDP thread
//! refills its own cache as queries come.
//!
//! Owns: which records each of its buckets points at. Must not: answer from
//! retired records, or keep more than one (possibly retired) records per
//! bucket alive.

use std::sync::Arc;

use super::table::{RecordTable, ServiceRecords};

/// Smallest and largest number of buckets; between them, the cache keeps
/// about four buckets per service, so few services share one.
const MIN_BUCKETS: usize = 1 << 10;
const MAX_BUCKETS: usize = 1 << 20;
const BUCKETS_PER_SERVICE: usize = 4;
/// Buckets checked for retired records per batch, so that records of
/// services nobody asks for any more are released over time.
const SWEEP_PER_BATCH: usize = 8;

/// The most labels one [`ServiceCache::find_batch`] resolves.
pub(super) const MAX_BATCH: usize = 32;

#[derive(Default)]
pub struct ServiceCache {
    buckets: Box<[Option<Arc<ServiceRecords>>]>,
    /// Next bucket the sweep looks at.
    sweep: usize,
}

/// Where a label's records were found during a batch.
#[derive(Clone, Copy)]
enum Found<'t> {
    Nowhere,
    /// In this cache's bucket.
    Bucket(usize),
    /// Only in the table: its bucket was taken by another label of the batch.
    Table(&'t ServiceRecords),
}

impl ServiceCache {
    /// Finds the services named by `labels` (lower-case; empty means "not
    /// asked"): `found[i]` is the records of `labels[i]` in `table`, as of
    /// `table` or newer, or `None`. At most [`MAX_BATCH`] labels.
    pub fn find_batch<'a>(
        &'a mut self,
        table: &'a RecordTable,
        labels: &[&[u8]],
        found: &mut [Option<&'a ServiceRecords>],
    ) {
        debug_assert!(labels.len() <= MAX_BATCH && found.len() == labels.len());
        self.fit(table.services.len());
        self.release_retired(SWEEP_PER_BATCH);
        let mask = self.buckets.len() - 1;
        let mut buckets = [0usize; MAX_BATCH];
        for (label, bucket) in labels.iter().zip(&mut buckets) {
            *bucket = hash(label) as usize & mask;
            prefetch(&self.buckets[*bucket]);
        }
        // The records' first lines: the label compared next and what the
        // answer reads, for all buckets at once.
        for &bucket in &buckets[..labels.len().min(MAX_BATCH)] {
            if let Some(records) = &self.buckets[bucket] {
                records.prefetch_header();
            }
        }
        // Then settle which bucket or table entry each label uses,
        // filling buckets on misses. A bucket used by one label of the batch is
        // not refilled for another, so every reference handed out below
        // stays valid for the whole batch.
        let mut places = [Found::Nowhere; MAX_BATCH];
        let mut used = [usize::MAX; MAX_BATCH];
        let mut used_count = 0;
        for ((label, &bucket), place) in labels.iter().zip(&buckets).zip(&mut places) {
            if label.is_empty() {
                continue;
            }
            let taken = used[..used_count].contains(&bucket);
            let hit = self.buckets[bucket]
                .as_deref()
                .is_some_and(|records| records.label.as_bytes() == *label && !records.is_retired());
            *place = if hit {
                Found::Bucket(bucket)
            } else if let Some(records) = table.services.get_bytes(label) {
                if taken {
                    Found::Table(records)
                } else {
                    self.buckets[bucket] = Some(Arc::clone(records));
                    Found::Bucket(bucket)
                }
            } else {
                continue;
            };
            if !taken {
                used[used_count] = bucket;
                used_count += 1;
            }
        }
        let this: &'a Self = self;
        for (place, found) in places.iter().zip(found) {
            *found = match *place {
                Found::Nowhere => None,
                Found::Bucket(bucket) => this.buckets[bucket].as_deref(),
                Found::Table(records) => Some(records),
            };
        }
    }

    /// Resizes (emptying) the cache when the table has grown or shrunk
    /// well past what it was sized for.
    fn fit(&mut self, services: usize) {
        let wanted = (services * BUCKETS_PER_SERVICE)
            .next_power_of_two()
            .clamp(MIN_BUCKETS, MAX_BUCKETS);
        let len = self.buckets.len();
        if len < wanted || len > wanted * 4 {
            self.buckets = std::iter::repeat_with(|| None).take(wanted).collect();
            self.sweep = 0;
        }
    }

    /// Releases retired records from the next `count` buckets: a few per
    /// batch, and more when the thread is idle, so that an idle thread does
    /// not keep old records alive for long.
    pub fn release_retired(&mut self, count: usize) {
        if self.buckets.is_empty() {
            return;
        }
        for _ in 0..count {
            self.sweep = (self.sweep + 1) & (self.buckets.len() - 1);
            let bucket = &mut self.buckets[self.sweep];
            if bucket.as_deref().is_some_and(ServiceRecords::is_retired) {
                *bucket = None;
            }
        }
    }

    #[cfg(test)]
    fn cached(&self) -> usize {
        self.buckets
            .iter()
            .filter(|bucket| bucket.is_some())
            .count()
    }
}

/// FNV-1a: short labels, and a poor spread only costs extra misses (a
/// crafted collision evicts a bucket, nothing more).
fn hash(label: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in label {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^ (hash >> 29)
}

fn prefetch<T>(value: &T) {
    super::prefetch::prefetch((value as *const T).cast());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        dns::table::TableSettings,
        model::{Instance, InstanceBody, ServiceName},
        registry::state::{InstanceState, ServiceState},
    };
    use hickory_proto::rr::Name;

    fn settings() -> TableSettings {
        TableSettings {
            domain: Name::from_ascii("service.local.").unwrap(),
            ttl: 30,
            negative_ttl: 5,
            include_warning: false,
            nameserver: std::sync::Arc::new(crate::dns::table::Nameserver::conventional(
                &Name::from_ascii("service.local.").unwrap(),
            )),
        }
    }

    fn service(name: &str, port: u16) -> ServiceState {
        let body: InstanceBody =
            serde_json::from_str(&format!(r#"{{"address":"10.0.0.1","port":{port}}}"#)).unwrap();
        let instance: Instance = body.validate(name, &format!("{name}-1")).unwrap();
        let mut state = ServiceState::new(ServiceName::parse(name).unwrap());
        state.insert(Arc::new(InstanceState::registered_for_test(instance)));
        state
    }

    fn ports(cache: &mut ServiceCache, table: &RecordTable, labels: &[&str]) -> Vec<Option<u16>> {
        let labels: Vec<&[u8]> = labels.iter().map(|l| l.as_bytes()).collect();
        let mut found = vec![None; labels.len()];
        cache.find_batch(table, &labels, &mut found);
        found
            .iter()
            .map(|records| records.map(|r| r.packed[0].port))
            .collect()
    }

    #[test]
    fn finds_what_the_table_holds_and_never_retired_records() {
        let settings = settings();
        let mut table = RecordTable::default();
        table.update_service("web", Some(&service("web", 80)), &settings);
        table.update_service("db", Some(&service("db", 5432)), &settings);
        let mut cache = ServiceCache::default();
        let asked = ["web", "nope", "", "db", "web"];
        let expected = vec![Some(80), None, None, Some(5432), Some(80)];
        assert_eq!(ports(&mut cache, &table, &asked), expected, "misses");
        assert_eq!(cache.cached(), 2);
        assert_eq!(ports(&mut cache, &table, &asked), expected, "hits");

        // The writer publishes a new table, then retires what it replaced.
        let mut next = table.clone();
        next.update_service("web", Some(&service("web", 81)), &settings);
        next.update_service("db", None, &settings);
        table.services.get("web").unwrap().retire();
        table.services.get("db").unwrap().retire();
        assert_eq!(
            ports(&mut cache, &next, &asked),
            vec![Some(81), None, None, None, Some(81)]
        );
    }

    #[test]
    fn labels_sharing_a_bucket_in_one_batch_are_all_found() {
        let settings = settings();
        let mut table = RecordTable::default();
        let names: Vec<String> = (0..3000).map(|i| format!("s{i}")).collect();
        for (i, name) in names.iter().enumerate() {
            table.update_service(name, Some(&service(name, i as u16 + 1)), &settings);
        }
        let mut cache = ServiceCache::default();
        // 3,000 services in 16,384 buckets: some of these 32 share a bucket.
        for batch in names.chunks(MAX_BATCH) {
            let labels: Vec<&str> = batch.iter().map(String::as_str).collect();
            let expected: Vec<Option<u16>> = (0..batch.len())
                .map(|i| {
                    table
                        .services
                        .get(batch[i].as_str())
                        .map(|r| r.packed[0].port)
                })
                .collect();
            assert_eq!(ports(&mut cache, &table, &labels), expected);
            assert_eq!(ports(&mut cache, &table, &labels), expected);
        }
    }

    #[test]
    fn sweeping_releases_retired_records() {
        let settings = settings();
        let mut table = RecordTable::default();
        table.update_service("web", Some(&service("web", 80)), &settings);
        let mut cache = ServiceCache::default();
        ports(&mut cache, &table, &["web"]);
        let records = Arc::clone(table.services.get("web").unwrap());
        assert_eq!(Arc::strong_count(&records), 3, "table, cache, here");
        records.retire();
        for _ in 0..MIN_BUCKETS / SWEEP_PER_BATCH + 1 {
            ports(&mut cache, &table, &[""]); // a batch sweeps a few buckets
        }
        assert_eq!(cache.cached(), 0);
        assert_eq!(Arc::strong_count(&records), 2);
    }
}
