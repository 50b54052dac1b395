//! Counters an operator (or a benchmark) reads at `GET /v1/metrics` (JSON)
//! and `GET /metrics` (the Prometheus text format, [`prometheus`]).
//! Atomics, because they are bumped from many tasks and only ever read as
//! a snapshot; exact cross-counter consistency is not needed.
//!
//! The DNS counters ([`dns`]) are per UDP thread and summed when read, so
//! the DNS path never contends on them; HTTP ([`http`]) and registry
//! counters are shared. Gauges that the registry's published state already
//! holds (instances by health) are not counted here but read from that
//! state at scrape time.
//!
//! Owns: the counters and their text rendering. Must not: be read on the
//! DNS path, or hold a lock while anything awaits.

pub mod dns;
pub mod histogram;
pub mod http;
pub mod prometheus;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, SystemTime},
};

use serde::Serialize;

use crate::model::Status;
use histogram::{Histogram, SLOW_BOUNDS};

/// Buckets per doubling of the lag histogram: ~19% resolution.
const SUB_BUCKETS: f64 = 4.0;
const BUCKETS: usize = 128;

/// A histogram of durations in microseconds, log-scaled.
pub struct LagHistogram {
    buckets: [AtomicU64; BUCKETS],
    max_micros: AtomicU64,
    /// Sum of every sample, for Prometheus's `_sum`.
    sum_micros: AtomicU64,
}

impl Default for LagHistogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            max_micros: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
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
        self.sum_micros.fetch_add(micros, Relaxed);
    }

    /// Sum of every sample, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_micros.load(Relaxed) as f64 / 1e6
    }

    /// Of the bucket `counts` ([`Self::counts`]), how many samples lie
    /// below `2^doublings` microseconds: exactly the buckets whose upper
    /// bound is at most that, since every power of two is a bucket bound.
    pub fn count_below_power_of_two(counts: &[u64], doublings: u32) -> u64 {
        let buckets = (doublings as usize * SUB_BUCKETS as usize).min(BUCKETS);
        counts[..buckets.min(counts.len())].iter().sum()
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

/// When this process started, for `roster_process_start_time_seconds`.
pub struct ProcessStart(pub SystemTime);

impl Default for ProcessStart {
    fn default() -> Self {
        Self(SystemTime::now())
    }
}

/// The registry writer's counters.
pub struct RegistryCounters {
    /// Commands by outcome: applied (and committed), refused (invalid for
    /// the state), failed (their commit failed).
    pub writes: [AtomicU64; 3],
    /// How long each store commit took (one per batch of commands).
    pub commit_duration: Histogram<{ SLOW_BOUNDS.len() }>,
}

/// The embedded store's commit-log checkpoints (see `registry::commit_log`),
/// counted by the store itself: a checkpoint runs on a thread of its own,
/// and one that fails there reaches no client until the log is full.
pub struct CheckpointCounters {
    /// Checkpoints by outcome, as [`CHECKPOINT_RESULTS`].
    pub results: [AtomicU64; 2],
    /// How long each took, its redb transaction's fsync included.
    pub duration: Histogram<{ SLOW_BOUNDS.len() }>,
}

/// The labels of [`CheckpointCounters::results`].
pub const CHECKPOINT_RESULTS: [&str; 2] = ["done", "failed"];

impl Default for CheckpointCounters {
    fn default() -> Self {
        Self {
            results: std::array::from_fn(|_| AtomicU64::new(0)),
            duration: Histogram::new(&SLOW_BOUNDS),
        }
    }
}

/// The labels of [`RegistryCounters::writes`], at the indexes below.
pub const WRITE_RESULTS: [&str; 3] = ["applied", "refused", "failed"];
/// Applied, and committed.
pub const WRITE_APPLIED: usize = 0;
/// Invalid for the state they met.
pub const WRITE_REFUSED: usize = 1;
/// Their commit failed (or, in a cluster, kept losing races).
pub const WRITE_FAILED: usize = 2;

impl Default for RegistryCounters {
    fn default() -> Self {
        Self {
            writes: std::array::from_fn(|_| AtomicU64::new(0)),
            commit_duration: Histogram::new(&SLOW_BOUNDS),
        }
    }
}

/// DNS UPDATE answers by RCODE, as labelled: RFC 2136's codes by number
/// (0 to 10), then anything else.
pub const UPDATE_RCODES: [&str; 12] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET",
    "NXRRSET", "NOTAUTH", "NOTZONE", "other",
];

/// DNS UPDATE answers, by [`UPDATE_RCODES`]. Shared by every DNS thread:
/// an UPDATE is rare and costs a commit, so one atomic add is nothing.
pub struct UpdateCounters(pub [AtomicU64; UPDATE_RCODES.len()]);

impl Default for UpdateCounters {
    fn default() -> Self {
        Self(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl UpdateCounters {
    /// Counts one answer with RCODE `rcode` (the extended value).
    pub fn count(&self, rcode: u16) {
        let index = usize::from(rcode).min(UPDATE_RCODES.len() - 1);
        self.0[index].fetch_add(1, Relaxed);
    }
}

/// The probe kinds counted, as labelled.
pub const PROBE_KINDS: [&str; 2] = ["http", "tcp"];
/// The check statuses, as labelled, in [`status_index`] order.
pub const STATUSES: [&str; 3] = ["passing", "warning", "critical"];

/// The index of `status` in [`STATUSES`].
pub fn status_index(status: Status) -> usize {
    match status {
        Status::Passing => 0,
        Status::Warning => 1,
        Status::Critical => 2,
    }
}

/// The API's certificate and the configuration reloads (SIGHUP): what an
/// operator alerts on when a renewed certificate was not taken.
#[derive(Default)]
pub struct ReloadCounters {
    /// When the certificate the API serves expires, in seconds since the
    /// Unix epoch; 0 without HTTPS (or if it could not be read).
    pub http_tls_not_after: AtomicU64,
    /// Reloads by part ([`RELOAD_PARTS`]) and result ([`RELOAD_RESULTS`]).
    pub reloads: [[AtomicU64; 2]; RELOAD_PARTS.len()],
}

/// What a reload applies, as counted in [`ReloadCounters::reloads`].
pub const RELOAD_PARTS: [&str; 5] = ["file", "acl", "http_tls", "etcd_tls", "dns_cookies"];
/// [`RELOAD_PARTS`]' indices.
/// The config file itself: refused when it does not load, and then no
/// part is reloaded.
pub const RELOAD_FILE: usize = 0;
pub const RELOAD_ACL: usize = 1;
pub const RELOAD_HTTP_TLS: usize = 2;
pub const RELOAD_ETCD_TLS: usize = 3;
pub const RELOAD_DNS_COOKIES: usize = 4;
/// How a part of a reload ended.
pub const RELOAD_RESULTS: [&str; 2] = ["applied", "refused"];

impl ReloadCounters {
    /// Counts a reload of part `part` ([`RELOAD_PARTS`]).
    pub fn count(&self, part: usize, applied: bool) {
        if let Some(results) = self.reloads.get(part) {
            results[usize::from(!applied)].fetch_add(1, Relaxed);
        }
    }
}

/// Everything roster counts.
#[derive(Default)]
pub struct Metrics {
    /// DNS queries and answers, per transport (per UDP thread inside).
    pub dns: Arc<dns::DnsMetrics>,
    /// HTTP requests by route.
    pub http: Arc<http::HttpMetrics>,
    /// Registry writes and commits.
    pub registry: RegistryCounters,
    /// The embedded store's checkpoints (shared with the store).
    pub checkpoints: Arc<CheckpointCounters>,
    /// Probe results by kind ([`PROBE_KINDS`]) and status ([`STATUSES`]).
    pub probe_results: [[AtomicU64; 3]; 2],
    pub started: ProcessStart,
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
    /// DNS UPDATE answers by RCODE.
    pub dns_updates: Arc<UpdateCounters>,
    /// The UDP response-rate limiter's counters, once DNS runs with
    /// `dns.rate_limit` on.
    pub dns_rate_limit: std::sync::OnceLock<crate::dns::RateLimitCounter>,
    /// The API's certificate expiry and the reloads.
    pub reloads: ReloadCounters,
}

impl Metrics {
    pub fn count_transition(&self, to: Status) {
        self.transitions[status_index(to)].fetch_add(1, Relaxed);
    }

    /// One probe finished: `kind` indexes [`PROBE_KINDS`].
    pub fn count_probe(&self, kind: usize, status: Status) {
        if let Some(kinds) = self.probe_results.get(kind) {
            kinds[status_index(status)].fetch_add(1, Relaxed);
        }
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
