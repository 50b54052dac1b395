//! DNS counters: queries by transport and type, answers by transport and
//! RCODE, truncations, and an answer-latency histogram.
//!
//! The UDP loop must stay lock-free and allocation-free, so each UDP thread
//! gets a [`DnsCounters`] block of its own ([`DnsMetrics::udp_worker`]),
//! padded to its own cache lines, which only that thread writes, with a
//! plain load and store (no locked instruction, no line bouncing between
//! cores). The blocks are summed only when `/metrics` is scraped. TCP
//! connections are tokio tasks that move between threads, so TCP shares one
//! block written with `fetch_add`; TCP answers cost far more than that.
//!
//! Types and RCODEs index small fixed arrays; the rare ones share an
//! `other` slot, so the label sets (and the scrape) stay bounded whatever
//! clients send.
//!
//! Owns: the counters. Must not: be written by any thread but a block's
//! owner on the exclusive paths.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use super::histogram::{DNS_BOUNDS, Histogram, HistogramSnapshot, add_exclusive};
use crate::dns::{COOKIE_SEEN, CookieSeen, CookieTally};

/// The query types counted by name, by their code; anything else is
/// `other`.
pub const QTYPES: [(u16, &str); 14] = [
    (1, "A"),
    (2, "NS"),
    (5, "CNAME"),
    (6, "SOA"),
    (12, "PTR"),
    (15, "MX"),
    (16, "TXT"),
    (28, "AAAA"),
    (33, "SRV"),
    (64, "SVCB"),
    (65, "HTTPS"),
    (251, "IXFR"),
    (252, "AXFR"),
    (255, "ANY"),
];
/// Slots: the named types, then `other`.
const QTYPE_SLOTS: usize = QTYPES.len() + 1;

/// The RCODEs counted by name; anything else is `other`.
pub const RCODES: [(u16, &str); 7] = [
    (0, "NOERROR"),
    (1, "FORMERR"),
    (2, "SERVFAIL"),
    (3, "NXDOMAIN"),
    (4, "NOTIMP"),
    (5, "REFUSED"),
    (16, "BADVERS"),
];
const RCODE_SLOTS: usize = RCODES.len() + 1;

/// The transports, as labelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
}

impl Proto {
    pub fn label(self) -> &'static str {
        match self {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
        }
    }
}

/// The slot of query type `qtype`.
#[inline]
fn qtype_slot(qtype: u16) -> usize {
    // A match on constants compiles to a jump table: no search per query.
    match qtype {
        1 => 0,
        2 => 1,
        5 => 2,
        6 => 3,
        12 => 4,
        15 => 5,
        16 => 6,
        28 => 7,
        33 => 8,
        64 => 9,
        65 => 10,
        251 => 11,
        252 => 12,
        255 => 13,
        _ => QTYPES.len(),
    }
}

#[inline]
fn rcode_slot(rcode: u16) -> usize {
    match rcode {
        0..=5 => usize::from(rcode),
        16 => 6,
        _ => RCODES.len(),
    }
}

/// One writer's counters. Aligned to 128 bytes so that two threads' blocks
/// never share a cache line (nor an adjacent-line prefetch pair).
#[repr(align(128))]
pub struct DnsCounters {
    requests: [AtomicU64; QTYPE_SLOTS],
    responses: [AtomicU64; RCODE_SLOTS],
    /// Answers cut down to fit the client's UDP size, TC set (not RRL
    /// slips, which `rrl` counts).
    truncated: AtomicU64,
    /// COOKIE options the fast path answered, by [`CookieSeen`].
    cookies: [AtomicU64; COOKIE_SEEN.len()],
    /// From receiving a query to sending its answer.
    duration: Histogram<{ DNS_BOUNDS.len() }>,
}

impl Default for DnsCounters {
    fn default() -> Self {
        Self {
            requests: std::array::from_fn(|_| AtomicU64::new(0)),
            responses: std::array::from_fn(|_| AtomicU64::new(0)),
            truncated: AtomicU64::new(0),
            cookies: std::array::from_fn(|_| AtomicU64::new(0)),
            duration: Histogram::new(&DNS_BOUNDS),
        }
    }
}

impl DnsCounters {
    /// Adds this block to `total`.
    fn add_to(&self, total: &mut DnsTotals) {
        for (sum, cell) in total.requests.iter_mut().zip(&self.requests) {
            *sum += cell.load(Relaxed);
        }
        for (sum, cell) in total.responses.iter_mut().zip(&self.responses) {
            *sum += cell.load(Relaxed);
        }
        total.truncated += self.truncated.load(Relaxed);
        for (sum, cell) in total.cookies.iter_mut().zip(&self.cookies) {
            *sum += cell.load(Relaxed);
        }
        self.duration.add_to(&mut total.duration);
    }

    /// For the shared TCP block: one COOKIE option.
    pub fn count_cookie(&self, seen: CookieSeen) {
        self.cookies[seen as usize].fetch_add(1, Relaxed);
    }

    /// For the shared TCP block: any thread may count.
    pub fn count_request(&self, qtype: Option<u16>) {
        let slot = qtype.map_or(QTYPES.len(), qtype_slot);
        self.requests[slot].fetch_add(1, Relaxed);
    }

    /// For the shared TCP block: one answer sent, `elapsed` after its query
    /// was read.
    pub fn count_response(&self, rcode: u16, truncated: bool, elapsed: Duration) {
        self.responses[rcode_slot(rcode)].fetch_add(1, Relaxed);
        if truncated {
            self.truncated.fetch_add(1, Relaxed);
        }
        self.duration.record(elapsed);
    }
}

/// A UDP thread's own block. Not `Clone`: the one handle is the one
/// writer, which is what makes the plain load-and-store counting correct.
pub struct UdpCounters(Arc<DnsCounters>);

impl UdpCounters {
    /// One query received; `qtype` is `None` when the question does not
    /// read.
    #[inline]
    pub fn count_request(&self, qtype: Option<u16>) {
        let slot = qtype.map_or(QTYPES.len(), qtype_slot);
        add_exclusive(&self.0.requests[slot], 1);
    }

    /// `answers` NOERROR answers sent together (the fast path's), each
    /// `elapsed` after its batch arrived.
    #[inline]
    pub fn count_fast_answers(&self, answers: u64, elapsed: Duration) {
        if answers == 0 {
            return;
        }
        add_exclusive(&self.0.responses[0], answers);
        self.0.duration.record_exclusive(elapsed, answers);
    }

    /// COOKIE options the fast path answered, as `tally` counts them.
    #[inline]
    pub fn count_cookies(&self, tally: &CookieTally) {
        for (cell, &count) in self.0.cookies.iter().zip(tally) {
            if count > 0 {
                add_exclusive(cell, count);
            }
        }
    }

    /// One answer sent by the general path.
    pub fn count_response(&self, rcode: u16, truncated: bool, elapsed: Duration) {
        add_exclusive(&self.0.responses[rcode_slot(rcode)], 1);
        if truncated {
            add_exclusive(&self.0.truncated, 1);
        }
        self.0.duration.record_exclusive(elapsed, 1);
    }
}

/// Every DNS counter block, read together at scrape time.
#[derive(Default)]
pub struct DnsMetrics {
    /// One block per UDP thread that ever ran. The lock is taken when a
    /// thread starts and when `/metrics` is read, never per query.
    udp: Mutex<Vec<Arc<DnsCounters>>>,
    /// Shared by every TCP connection.
    pub tcp: DnsCounters,
    /// The general path's COOKIE options, whatever the transport (the fast
    /// path's are in the transports' blocks).
    pub general_cookies: Arc<CookieCounts>,
}

/// COOKIE options by what they were, counted by any thread.
#[derive(Default)]
pub struct CookieCounts([AtomicU64; COOKIE_SEEN.len()]);

impl CookieCounts {
    /// One COOKIE option.
    pub fn count(&self, seen: CookieSeen) {
        self.0[seen as usize].fetch_add(1, Relaxed);
    }
}

impl DnsMetrics {
    /// A block for a new UDP thread, which must be its only writer.
    pub fn udp_worker(&self) -> UdpCounters {
        let block = Arc::new(DnsCounters::default());
        self.udp
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(block.clone());
        UdpCounters(block)
    }

    /// COOKIE options by what they were ([`COOKIE_SEEN`]), over every path:
    /// the general path's and the fast path's of `transports` (as
    /// [`Self::totals`] sums them).
    pub fn cookies<'t>(
        &self,
        transports: impl Iterator<Item = &'t DnsTotals>,
    ) -> impl Iterator<Item = (&'static str, u64)> {
        let mut sums: CookieTally =
            std::array::from_fn(|i| self.general_cookies.0[i].load(Relaxed));
        for total in transports {
            for (sum, count) in sums.iter_mut().zip(total.cookies) {
                *sum += count;
            }
        }
        COOKIE_SEEN.into_iter().zip(sums)
    }

    /// The sums, per transport.
    pub fn totals(&self, proto: Proto) -> DnsTotals {
        let mut total = DnsTotals::default();
        match proto {
            Proto::Udp => {
                let blocks = self.udp.lock().unwrap_or_else(PoisonError::into_inner);
                for block in blocks.iter() {
                    block.add_to(&mut total);
                }
            }
            Proto::Tcp => self.tcp.add_to(&mut total),
        }
        total
    }
}

/// One transport's counters summed over its blocks.
pub struct DnsTotals {
    /// Per [`QTYPES`] slot, then `other`.
    pub requests: [u64; QTYPE_SLOTS],
    /// Per [`RCODES`] slot, then `other`.
    pub responses: [u64; RCODE_SLOTS],
    pub truncated: u64,
    /// Per [`CookieSeen`].
    pub cookies: CookieTally,
    pub duration: HistogramSnapshot,
}

impl Default for DnsTotals {
    fn default() -> Self {
        Self {
            requests: [0; QTYPE_SLOTS],
            responses: [0; RCODE_SLOTS],
            truncated: 0,
            cookies: [0; COOKIE_SEEN.len()],
            duration: HistogramSnapshot::empty(&DNS_BOUNDS),
        }
    }
}

impl DnsTotals {
    /// `(type label, count)` for every slot.
    pub fn requests_by_type(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        let names = QTYPES.iter().map(|(_, name)| *name).chain(["other"]);
        names.zip(self.requests.iter().copied())
    }

    /// `(rcode label, count)` for every slot.
    pub fn responses_by_rcode(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        let names = RCODES.iter().map(|(_, name)| *name).chain(["other"]);
        names.zip(self.responses.iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_the_tables() {
        for (slot, (code, _)) in QTYPES.iter().enumerate() {
            assert_eq!(qtype_slot(*code), slot);
        }
        assert_eq!(qtype_slot(99), QTYPES.len());
        for (slot, (code, _)) in RCODES.iter().enumerate() {
            assert_eq!(rcode_slot(*code), slot);
        }
        assert_eq!(rcode_slot(9), RCODES.len());
    }

    #[test]
    fn udp_blocks_are_summed_at_read_time() {
        let metrics = DnsMetrics::default();
        let (one, two) = (metrics.udp_worker(), metrics.udp_worker());
        one.count_request(Some(1));
        two.count_request(Some(1));
        two.count_request(Some(4242));
        one.count_fast_answers(2, Duration::from_micros(30));
        two.count_response(3, true, Duration::from_micros(30));
        let udp = metrics.totals(Proto::Udp);
        assert_eq!(udp.requests[0], 2);
        assert_eq!(udp.requests[QTYPES.len()], 1);
        assert_eq!(udp.responses[0], 2);
        assert_eq!(udp.responses[3], 1);
        assert_eq!(udp.truncated, 1);
        assert_eq!(udp.duration.count, 3);
        assert_eq!(metrics.totals(Proto::Tcp).duration.count, 0);
    }
}
