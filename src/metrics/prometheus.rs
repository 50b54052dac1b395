//! `GET /metrics`: every counter in the Prometheus text exposition format
//! 0.0.4, names prefixed `roster_` and shaped as CoreDNS and Consul name
//! theirs (`_total` counters, `_seconds` histograms, base units).
//!
//! Owns: the names, help texts and label sets. Must not: count anything
//! itself; it only reads [`Metrics`] and the registry's published state.

use std::{fmt::Write as _, sync::atomic::Ordering::Relaxed, time::UNIX_EPOCH};

use super::{
    CHECKPOINT_RESULTS, LagHistogram, Metrics, PROBE_KINDS, RELOAD_PARTS, RELOAD_RESULTS, STATUSES,
    UPDATE_RCODES, WRITE_RESULTS, dns::Proto, histogram::HistogramSnapshot,
};
use crate::registry::RegistryState;

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Probe-lag bucket bounds as powers of two microseconds (64 µs … 16.8 s):
/// each is a bound of [`LagHistogram`]'s own buckets, so the counts are
/// exact at these bounds.
const LAG_DOUBLINGS: [u32; 10] = [6, 8, 10, 12, 14, 16, 18, 20, 22, 24];

/// Instances and services in the published state, counted at scrape time.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CatalogCounts {
    /// By [`STATUSES`], for instances not in maintenance.
    pub by_status: [u64; 3],
    /// Instances in maintenance mode, whatever their checks say.
    pub maintenance: u64,
    pub services: u64,
}

impl CatalogCounts {
    /// Counts `state`: one pass over its instances (a scrape of 100,000
    /// instances reads each once; nothing is copied).
    pub fn of(state: &RegistryState) -> Self {
        let mut counts = Self::default();
        for service in state.services.values() {
            if service.is_empty() {
                continue;
            }
            counts.services += 1;
            for instance in service.instances() {
                if instance.maintenance.is_some() {
                    counts.maintenance += 1;
                } else {
                    counts.by_status[super::status_index(instance.status())] += 1;
                }
            }
        }
        counts
    }
}

/// The whole exposition.
pub fn render(metrics: &Metrics, catalog: &CatalogCounts) -> String {
    let mut out = Text(String::with_capacity(16 * 1024));
    process(&mut out, metrics);
    dns(&mut out, metrics);
    registry(&mut out, metrics, catalog);
    health(&mut out, metrics);
    http(&mut out, metrics);
    out.0
}

fn process(out: &mut Text, metrics: &Metrics) {
    out.family("roster_build_info", "gauge", "roster's version; always 1.");
    out.sample(
        "roster_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    let started = metrics
        .started
        .0
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64());
    out.family(
        "roster_process_start_time_seconds",
        "gauge",
        "When roster started, in seconds since the Unix epoch.",
    );
    out.sample("roster_process_start_time_seconds", &[], started);
    out.family(
        "roster_cluster_stale",
        "gauge",
        "1 while this node does not follow etcd and serves its last table (cluster mode).",
    );
    out.sample(
        "roster_cluster_stale",
        &[],
        u8::from(metrics.cluster_stale.load(Relaxed)),
    );
    out.family(
        "roster_config_reloads_total",
        "counter",
        "Reloads on SIGHUP, by part (the config file itself, the ACL tokens, the API's TLS files, etcd's TLS files, the DNS cookie secrets) and result.",
    );
    for (part, results) in RELOAD_PARTS.iter().zip(&metrics.reloads.reloads) {
        for (result, count) in RELOAD_RESULTS.iter().zip(results) {
            out.sample(
                "roster_config_reloads_total",
                &[("part", *part), ("result", *result)],
                count.load(Relaxed),
            );
        }
    }
    let not_after = metrics.reloads.http_tls_not_after.load(Relaxed);
    if not_after > 0 {
        out.family(
            "roster_http_tls_cert_not_after_timestamp_seconds",
            "gauge",
            "When the certificate the API serves expires, in seconds since the Unix epoch.",
        );
        out.sample(
            "roster_http_tls_cert_not_after_timestamp_seconds",
            &[],
            not_after,
        );
    }
}

fn dns(out: &mut Text, metrics: &Metrics) {
    let totals = [Proto::Udp, Proto::Tcp].map(|proto| (proto, metrics.dns.totals(proto)));
    out.family(
        "roster_dns_requests_total",
        "counter",
        "DNS queries received, by transport and query type.",
    );
    for (proto, total) in &totals {
        for (qtype, count) in total.requests_by_type() {
            let labels = [("proto", proto.label()), ("type", qtype)];
            out.sample("roster_dns_requests_total", &labels, count);
        }
    }
    out.family(
        "roster_dns_responses_total",
        "counter",
        "DNS answers sent, by transport and RCODE.",
    );
    for (proto, total) in &totals {
        for (rcode, count) in total.responses_by_rcode() {
            let labels = [("proto", proto.label()), ("rcode", rcode)];
            out.sample("roster_dns_responses_total", &labels, count);
        }
    }
    out.family(
        "roster_dns_truncated_total",
        "counter",
        "DNS answers sent truncated (TC) to fit the client's UDP size; RRL slips are counted apart.",
    );
    for (proto, total) in &totals {
        let labels = [("proto", proto.label())];
        out.sample("roster_dns_truncated_total", &labels, total.truncated);
    }
    out.family(
        "roster_dns_request_duration_seconds",
        "histogram",
        "From receiving a DNS query to sending its answer (UDP: from its batch's arrival).",
    );
    for (proto, total) in &totals {
        let labels = [("proto", proto.label())];
        out.histogram(
            "roster_dns_request_duration_seconds",
            &labels,
            &total.duration,
        );
    }
    let limited = metrics
        .dns_rate_limit
        .get()
        .map(crate::dns::RateLimitCounter::counts)
        .unwrap_or_default();
    out.family(
        "roster_dns_rrl_dropped_total",
        "counter",
        "UDP answers response-rate limiting dropped.",
    );
    out.sample("roster_dns_rrl_dropped_total", &[], limited.dropped);
    out.family(
        "roster_dns_rrl_slipped_total",
        "counter",
        "UDP answers response-rate limiting sent truncated instead (slipped).",
    );
    out.sample("roster_dns_rrl_slipped_total", &[], limited.slipped);
    out.family(
        "roster_dns_cookies_total",
        "counter",
        "DNS answers to queries with a COOKIE option (RFC 7873), by what it held: a client \
         cookie only, a server cookie made with dns.cookie_secret or with one of \
         dns.cookie_secrets_accepted, another (stale, foreign), or a malformed option.",
    );
    for (result, count) in metrics.dns.cookies(totals.iter().map(|(_, total)| total)) {
        out.sample("roster_dns_cookies_total", &[("result", result)], count);
    }
}

fn registry(out: &mut Text, metrics: &Metrics, catalog: &CatalogCounts) {
    out.family(
        "roster_catalog_services",
        "gauge",
        "Services with at least one registered instance.",
    );
    out.sample("roster_catalog_services", &[], catalog.services);
    out.family(
        "roster_catalog_instances",
        "gauge",
        "Registered instances by health (the worst of their checks), or maintenance.",
    );
    for (status, count) in STATUSES.iter().zip(catalog.by_status) {
        out.sample("roster_catalog_instances", &[("status", status)], count);
    }
    out.sample(
        "roster_catalog_instances",
        &[("status", "maintenance")],
        catalog.maintenance,
    );
    out.family(
        "roster_registry_writes_total",
        "counter",
        "Registry commands by result: applied, refused (invalid), failed (the commit failed).",
    );
    for (result, count) in WRITE_RESULTS.iter().zip(&metrics.registry.writes) {
        let labels = [("result", *result)];
        out.sample("roster_registry_writes_total", &labels, count.load(Relaxed));
    }
    out.family(
        "roster_dns_updates_total",
        "counter",
        "DNS UPDATE (RFC 2136) answers by RCODE, refusals and TSIG errors included.",
    );
    for (rcode, count) in UPDATE_RCODES.iter().zip(&metrics.dns_updates.0) {
        out.sample(
            "roster_dns_updates_total",
            &[("rcode", *rcode)],
            count.load(Relaxed),
        );
    }
    out.family(
        "roster_registry_commit_duration_seconds",
        "histogram",
        "How long each store commit (one per batch of writes) took.",
    );
    out.histogram(
        "roster_registry_commit_duration_seconds",
        &[],
        &metrics.registry.commit_duration.snapshot(),
    );
    out.family(
        "roster_store_checkpoints_total",
        "counter",
        "Commit-log checkpoints into the embedded store, by result (a failed one is retried).",
    );
    for (result, count) in CHECKPOINT_RESULTS.iter().zip(&metrics.checkpoints.results) {
        out.sample(
            "roster_store_checkpoints_total",
            &[("result", *result)],
            count.load(Relaxed),
        );
    }
    out.family(
        "roster_store_checkpoint_duration_seconds",
        "histogram",
        "How long each commit-log checkpoint into the embedded store took.",
    );
    out.histogram(
        "roster_store_checkpoint_duration_seconds",
        &[],
        &metrics.checkpoints.duration.snapshot(),
    );
}

fn health(out: &mut Text, metrics: &Metrics) {
    out.family(
        "roster_health_checks_scheduled",
        "gauge",
        "HTTP and TCP checks this node schedules.",
    );
    let scheduled = metrics.checks_scheduled.load(Relaxed);
    out.sample("roster_health_checks_scheduled", &[], scheduled);
    out.family(
        "roster_health_checks_owned",
        "gauge",
        "Checks of every kind this node runs.",
    );
    let owned = metrics.checks_owned.load(Relaxed);
    out.sample("roster_health_checks_owned", &[], owned);
    out.family(
        "roster_health_probes_total",
        "counter",
        "Health probes finished, by kind and result.",
    );
    for (kind, results) in PROBE_KINDS.iter().zip(&metrics.probe_results) {
        for (status, count) in STATUSES.iter().zip(results) {
            let labels = [("kind", *kind), ("status", *status)];
            out.sample("roster_health_probes_total", &labels, count.load(Relaxed));
        }
    }
    out.family(
        "roster_health_probes_skipped_total",
        "counter",
        "Probe rounds skipped because the check's previous probe still ran.",
    );
    let skipped = metrics.probes_skipped.load(Relaxed);
    out.sample("roster_health_probes_skipped_total", &[], skipped);
    out.family(
        "roster_health_check_transitions_total",
        "counter",
        "Check status changes, by the status changed to.",
    );
    for (status, count) in STATUSES.iter().zip(&metrics.transitions) {
        let labels = [("to", *status)];
        out.sample(
            "roster_health_check_transitions_total",
            &labels,
            count.load(Relaxed),
        );
    }
    out.family(
        "roster_health_instances_reaped_total",
        "counter",
        "Instances removed by deregister_critical_after.",
    );
    let reaped = metrics.reaped.load(Relaxed);
    out.sample("roster_health_instances_reaped_total", &[], reaped);
    out.family(
        "roster_health_probe_lag_seconds",
        "histogram",
        "How late probes started relative to their schedule.",
    );
    out.histogram(
        "roster_health_probe_lag_seconds",
        &[],
        &lag_snapshot(&metrics.probe_lag),
    );
}

/// The probe-lag histogram at [`LAG_DOUBLINGS`].
fn lag_snapshot(lag: &LagHistogram) -> HistogramSnapshot {
    let counts = lag.counts();
    let cumulative = LAG_DOUBLINGS
        .iter()
        .map(|&doublings| {
            let bound = f64::from(1u32 << doublings) / 1e6;
            (
                bound,
                LagHistogram::count_below_power_of_two(&counts, doublings),
            )
        })
        .collect();
    HistogramSnapshot {
        cumulative,
        count: counts.iter().sum(),
        sum_seconds: lag.sum_seconds(),
    }
}

fn http(out: &mut Text, metrics: &Metrics) {
    let series = metrics.http.snapshot();
    out.family(
        "roster_http_requests_total",
        "counter",
        "HTTP responses by route template (\"unmatched\" for none), method and status code.",
    );
    for one in &series {
        for (code, count) in &one.codes {
            let code = code.to_string();
            let labels = [
                ("route", one.route.as_str()),
                ("method", one.method),
                ("code", code.as_str()),
            ];
            out.sample("roster_http_requests_total", &labels, *count);
        }
    }
    out.family(
        "roster_http_request_duration_seconds",
        "histogram",
        "From receiving an HTTP request to its response's headers, by route and method.",
    );
    for one in &series {
        let labels = [("route", one.route.as_str()), ("method", one.method)];
        out.histogram(
            "roster_http_request_duration_seconds",
            &labels,
            &one.duration,
        );
    }
}

/// The exposition being written. Writing to a `String` cannot fail, so the
/// `fmt::Result`s are dropped.
struct Text(String);

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        self.labels(labels, None);
        let _ = writeln!(self.0, " {value}");
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.0.push('{');
        let le = le.map(|le| ("le", le));
        for (index, (key, value)) in labels.iter().copied().chain(le).enumerate() {
            if index > 0 {
                self.0.push(',');
            }
            let _ = write!(self.0, "{key}=\"{}\"", escape_label(value));
        }
        self.0.push('}');
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], snapshot: &HistogramSnapshot) {
        let bucket = format!("{name}_bucket");
        for (bound, count) in &snapshot.cumulative {
            let le = bound.to_string();
            self.0.push_str(&bucket);
            self.labels(labels, Some(&le));
            let _ = writeln!(self.0, " {count}");
        }
        self.0.push_str(&bucket);
        self.labels(labels, Some("+Inf"));
        let _ = writeln!(self.0, " {}", snapshot.count);
        self.sample(&format!("{name}_sum"), labels, snapshot.sum_seconds);
        self.sample(&format!("{name}_count"), labels, snapshot.count);
    }
}

/// Label values escape `\`, `"` and newlines.
fn escape_label(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return value.into();
    }
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .into()
}

/// Help texts escape `\` and newlines.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn labels_are_escaped_and_histograms_end_in_inf() {
        let metrics = Metrics::default();
        metrics
            .http
            .record("/a\"b\\", 0, 200, Duration::from_millis(1));
        let text = render(&metrics, &CatalogCounts::default());
        assert!(
            text.contains(
                r#"roster_http_requests_total{route="/a\"b\\",method="GET",code="200"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"roster_http_request_duration_seconds_bucket{route="/a\"b\\",method="GET",le="+Inf"} 1"#
        ));
        assert!(text.contains(
            "roster_dns_request_duration_seconds_bucket{proto=\"udp\",le=\"0.000025\"} 0"
        ));
        assert!(text.contains("roster_health_probe_lag_seconds_bucket{le=\"0.000064\"} 0"));
    }

    #[test]
    fn probe_lag_buckets_are_exact_at_powers_of_two() {
        let lag = LagHistogram::default();
        lag.record(Duration::from_micros(60));
        lag.record(Duration::from_micros(70));
        lag.record(Duration::from_secs(60));
        let snapshot = lag_snapshot(&lag);
        assert_eq!(snapshot.cumulative[0], (0.000064, 1));
        assert_eq!(snapshot.cumulative[1].1, 2);
        assert_eq!(snapshot.cumulative.last().map(|c| c.1), Some(2));
        assert_eq!(snapshot.count, 3);
    }
}
