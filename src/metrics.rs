//! Counters an operator (or a benchmark) reads at `GET /v1/metrics`.
//! Atomics, because they are bumped from many tasks and only ever read as
//! a snapshot; exact cross-counter consistency is not needed.

use std::{
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

use serde::Serialize;

use crate::model::Status;

/// Buckets per doubling of the lag histogram: ~19% resolution.
const SUB_BUCKETS: f64 = 4.0;
const BUCKETS: usize = 128;

/// A histogram of durations in microseconds, log-scaled.
pub struct LagHistogram {
    buckets: [AtomicU64; BUCKETS],
    max_micros: AtomicU64,
}

impl Default for LagHistogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            max_micros: AtomicU64::new(0),
        }
    }
}

impl LagHistogram {
    pub fn record(&self, lag: Duration) {
        let micros = lag.as_micros().min(u128::from(u64::MAX)) as u64;
        let index = if micros <= 1 {
            0
        } else {
            ((micros as f64).log2() * SUB_BUCKETS) as usize
        };
        self.buckets[index.min(BUCKETS - 1)].fetch_add(1, Relaxed);
        self.max_micros.fetch_max(micros, Relaxed);
    }

    /// The value below which `quantile` of the samples fall (bucket upper
    /// bound), in milliseconds.
    pub fn quantile_ms(&self, quantile: f64) -> f64 {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let wanted = (quantile * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (index, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= wanted {
                let upper_micros = 2f64.powf((index as f64 + 1.0) / SUB_BUCKETS);
                return upper_micros / 1000.0;
            }
        }
        self.max_ms()
    }

    /// Raw bucket counts; bucket `i` holds samples up to
    /// `2^((i+1)/4)` microseconds. Lets a reader diff two snapshots to get
    /// the distribution of a time window.
    pub fn counts(&self) -> Vec<u64> {
        self.buckets.iter().map(|b| b.load(Relaxed)).collect()
    }

    pub fn max_ms(&self) -> f64 {
        self.max_micros.load(Relaxed) as f64 / 1000.0
    }
}

/// Everything roster counts.
#[derive(Default)]
pub struct Metrics {
    /// HTTP and TCP checks currently scheduled.
    pub checks_scheduled: AtomicU64,
    /// Probes started and finished since start.
    pub probes_started: AtomicU64,
    pub probes_completed: AtomicU64,
    /// Rounds skipped because the previous probe of that check still ran.
    pub probes_skipped: AtomicU64,
    /// How late probes started relative to their schedule.
    pub probe_lag: LagHistogram,
    /// Check status transitions, by new status.
    pub transitions: [AtomicU64; 3],
    /// Instances removed by `deregister_critical_after`.
    pub reaped: AtomicU64,
    /// Cluster mode: the etcd feed is not following etcd, so this node
    /// serves its last table, which may be stale.
    pub cluster_stale: std::sync::atomic::AtomicBool,
    /// Checks (of every kind) this node runs.
    pub checks_owned: AtomicU64,
    /// The UDP response-rate limiter's counters, once DNS runs with
    /// `dns.rate_limit` on.
    pub dns_rate_limit: std::sync::OnceLock<crate::dns::RateLimitCounter>,
}

impl Metrics {
    pub fn count_transition(&self, to: Status) {
        let index = match to {
            Status::Passing => 0,
            Status::Warning => 1,
            Status::Critical => 2,
        };
        self.transitions[index].fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let rate_limited = self
            .dns_rate_limit
            .get()
            .map(crate::dns::RateLimitCounter::counts)
            .unwrap_or_default();
        MetricsSnapshot {
            checks_scheduled: self.checks_scheduled.load(Relaxed),
            probes_started: self.probes_started.load(Relaxed),
            probes_completed: self.probes_completed.load(Relaxed),
            probes_skipped: self.probes_skipped.load(Relaxed),
            probe_lag_p50_ms: self.probe_lag.quantile_ms(0.50),
            probe_lag_p99_ms: self.probe_lag.quantile_ms(0.99),
            probe_lag_max_ms: self.probe_lag.max_ms(),
            probe_lag_counts: self.probe_lag.counts(),
            transitions_to_passing: self.transitions[0].load(Relaxed),
            transitions_to_warning: self.transitions[1].load(Relaxed),
            transitions_to_critical: self.transitions[2].load(Relaxed),
            instances_reaped: self.reaped.load(Relaxed),
            cluster_stale: self.cluster_stale.load(Relaxed),
            checks_owned: self.checks_owned.load(Relaxed),
            dns_rrl_dropped: rate_limited.dropped,
            dns_rrl_slipped: rate_limited.slipped,
        }
    }
}

#[derive(Serialize)]
pub struct MetricsSnapshot {
    pub checks_scheduled: u64,
    pub probes_started: u64,
    pub probes_completed: u64,
    pub probes_skipped: u64,
    pub probe_lag_p50_ms: f64,
    pub probe_lag_p99_ms: f64,
    pub probe_lag_max_ms: f64,
    /// Log-scaled histogram of probe lag, see [`LagHistogram::counts`].
    pub probe_lag_counts: Vec<u64>,
    pub transitions_to_passing: u64,
    pub transitions_to_warning: u64,
    pub transitions_to_critical: u64,
    pub instances_reaped: u64,
    /// Cluster mode: this node's table may be stale (etcd out of reach).
    pub cluster_stale: bool,
    /// Checks of every kind this node runs.
    pub checks_owned: u64,
    /// UDP answers response-rate limiting dropped, and sent truncated.
    pub dns_rrl_dropped: u64,
    pub dns_rrl_slipped: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_bucket_bounds() {
        let histogram = LagHistogram::default();
        for ms in 1..=100 {
            histogram.record(Duration::from_millis(ms));
        }
        let p50 = histogram.quantile_ms(0.5);
        assert!((50.0..=60.0).contains(&p50), "{p50}");
        let p99 = histogram.quantile_ms(0.99);
        assert!((99.0..=120.0).contains(&p99), "{p99}");
        assert_eq!(histogram.max_ms(), 100.0);
    }
}
