//! A duration histogram with fixed bucket bounds, read as a Prometheus
//! histogram (`_bucket{le}`, `_sum`, `_count`).
//!
//! Buckets are stored non-cumulative (one atomic per bucket, plus one for
//! samples above the last bound) and summed into cumulative counts only
//! when read; `_count` is the total of the buckets, not a counter of its
//! own, so a scrape racing a writer still sees `+Inf == _count`.
//!
//! Owns: the bucket arithmetic. Must not: allocate or lock when recording.

use std::{
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

/// Bucket upper bounds for DNS answers, in nanoseconds: roster answers in
/// microseconds, so the buckets start at 25 µs (CoreDNS's start at 250 µs,
/// which would put every answer in the first bucket).
pub const DNS_BOUNDS: [u64; 14] = [
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    1_000_000_000,
];

/// Bucket upper bounds for HTTP requests and registry commits, in
/// nanoseconds: from 100 µs (a read) to 10 s; blocking queries that wait
/// longer land in `+Inf` only.
pub const SLOW_BOUNDS: [u64; 16] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// A histogram over the bounds `N` given at construction (nanoseconds,
/// ascending).
pub struct Histogram<const N: usize> {
    bounds: &'static [u64; N],
    /// `buckets[i]` counts samples in `(bounds[i-1], bounds[i]]`.
    buckets: [AtomicU64; N],
    /// Samples above the last bound.
    overflow: AtomicU64,
    /// Sum of every sample, in nanoseconds (wraps after ~584 years of
    /// accumulated time).
    sum_nanos: AtomicU64,
}

/// What a reader gets: cumulative counts per bound, and the totals.
#[derive(Clone, Debug, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound in seconds, samples at or below it)`, ascending.
    pub cumulative: Vec<(f64, u64)>,
    /// Every sample, `+Inf` included: the `_count`.
    pub count: u64,
    /// Sum of the samples in seconds: the `_sum`.
    pub sum_seconds: f64,
}

impl<const N: usize> Histogram<N> {
    pub fn new(bounds: &'static [u64; N]) -> Self {
        debug_assert!(bounds.windows(2).all(|pair| pair[0] < pair[1]));
        Self {
            bounds,
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            overflow: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// The cell a sample of `nanos` is counted in.
    fn cell(&self, nanos: u64) -> &AtomicU64 {
        match self.bounds.iter().position(|&bound| nanos <= bound) {
            Some(index) => &self.buckets[index],
            None => &self.overflow,
        }
    }

    /// Records one sample; safe from any number of threads.
    pub fn record(&self, elapsed: Duration) {
        let nanos = saturating_nanos(elapsed);
        self.cell(nanos).fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }

    /// Records `samples` samples of `elapsed` each, for a histogram only
    /// one thread ever writes: a plain load and store instead of a locked
    /// read-modify-write, which is what keeps the UDP loop's counting
    /// nearly free. Readers on other threads still see whole values.
    pub fn record_exclusive(&self, elapsed: Duration, samples: u64) {
        let nanos = saturating_nanos(elapsed);
        add_exclusive(self.cell(nanos), samples);
        add_exclusive(&self.sum_nanos, nanos.saturating_mul(samples));
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut snapshot = HistogramSnapshot::empty(self.bounds);
        self.add_to(&mut snapshot);
        snapshot
    }

    /// Adds this histogram's counts to `total` (same bounds): for summing
    /// per-thread histograms at scrape time.
    pub fn add_to(&self, total: &mut HistogramSnapshot) {
        let mut running = 0;
        for (bucket, (_, cumulative)) in self.buckets.iter().zip(&mut total.cumulative) {
            running += bucket.load(Relaxed);
            *cumulative += running;
        }
        running += self.overflow.load(Relaxed);
        total.count += running;
        total.sum_seconds += self.sum_nanos.load(Relaxed) as f64 / 1e9;
    }
}

impl HistogramSnapshot {
    /// No samples, over `bounds` (nanoseconds).
    pub fn empty(bounds: &[u64]) -> Self {
        Self {
            cumulative: bounds.iter().map(|&b| (b as f64 / 1e9, 0)).collect(),
            count: 0,
            sum_seconds: 0.0,
        }
    }
}

/// Adds `n` to a counter only the calling thread writes (see
/// [`Histogram::record_exclusive`]).
#[inline]
pub fn add_exclusive(cell: &AtomicU64, n: u64) {
    cell.store(cell.load(Relaxed).wrapping_add(n), Relaxed);
}

fn saturating_nanos(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_end_in_the_count() {
        let histogram = Histogram::new(&DNS_BOUNDS);
        histogram.record(Duration::from_micros(10)); // first bucket
        histogram.record(Duration::from_micros(25)); // le is inclusive
        histogram.record(Duration::from_micros(300)); // 500 µs bucket
        histogram.record_exclusive(Duration::from_secs(5), 2); // above every bound
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 5);
        assert_eq!(snapshot.cumulative[0], (0.000025, 2));
        assert_eq!(snapshot.cumulative[3].1, 2);
        assert_eq!(snapshot.cumulative[4], (0.0005, 3));
        assert_eq!(snapshot.cumulative.last().map(|c| c.1), Some(3));
        assert!((snapshot.sum_seconds - 10.000335).abs() < 1e-9);

        let mut total = HistogramSnapshot::empty(&DNS_BOUNDS);
        histogram.add_to(&mut total);
        histogram.add_to(&mut total);
        assert_eq!(total.count, 10);
        assert_eq!(total.cumulative[4].1, 6);
    }
}
