//! HTTP counters: requests by route template, method and status code, and a
//! duration histogram per route and method. The middleware that feeds them
//! lives in `http::observe`.
//!
//! Routes are axum's matched-path templates (`/v1/services/{service}`),
//! never raw paths, so the series are bounded by the routes roster has.
//!
//! Owns: the per-route series. Must not: be fed raw request paths.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Mutex, PoisonError},
    time::Duration,
};

use super::histogram::{Histogram, HistogramSnapshot, SLOW_BOUNDS};

/// The route label of a request no route matched.
pub const UNMATCHED: &str = "unmatched";

/// The methods counted by name; anything else is `other`.
pub const METHODS: [&str; 6] = ["GET", "PUT", "POST", "DELETE", "HEAD", "other"];

/// One route and method's series.
struct Series {
    /// Responses by status code.
    codes: BTreeMap<u16, u64>,
    duration: Histogram<{ SLOW_BOUNDS.len() }>,
}

/// A `std::sync::Mutex` over a map: held for one lookup and a few
/// additions per request, never across an `.await`; an HTTP request costs
/// far more than that, and the DNS path never touches it.
#[derive(Default)]
pub struct HttpMetrics {
    /// By route, then by method (the index in [`METHODS`]).
    series: Mutex<HashMap<String, [Option<Series>; METHODS.len()]>>,
}

/// What a scrape reads for one route and method.
pub struct HttpSeries {
    pub route: String,
    pub method: &'static str,
    pub codes: Vec<(u16, u64)>,
    pub duration: HistogramSnapshot,
}

/// The index of `method` in [`METHODS`] (`other` if it is not listed).
pub fn method_index(method: &str) -> usize {
    METHODS
        .iter()
        .position(|known| *known == method)
        .unwrap_or(METHODS.len() - 1)
}

impl HttpMetrics {
    /// One response sent for `route` (a template, or [`UNMATCHED`]).
    /// `method` is an index in [`METHODS`] (see [`method_index`]).
    pub fn record(&self, route: &str, method: usize, code: u16, elapsed: Duration) {
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        // Only a route's first request allocates its key; later ones look
        // it up by `&str`.
        if !series.contains_key(route) {
            series.insert(route.to_owned(), Default::default());
        }
        let Some(methods) = series.get_mut(route) else {
            return;
        };
        let slot = &mut methods[method.min(METHODS.len() - 1)];
        let entry = slot.get_or_insert_with(|| Series {
            codes: BTreeMap::new(),
            duration: Histogram::new(&SLOW_BOUNDS),
        });
        *entry.codes.entry(code).or_default() += 1;
        entry.duration.record(elapsed);
    }

    /// Every series, sorted by route and method so scrapes read alike.
    pub fn snapshot(&self) -> Vec<HttpSeries> {
        let series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        for (route, methods) in series.iter() {
            for (method, series) in METHODS.iter().zip(methods) {
                let Some(series) = series else { continue };
                out.push(HttpSeries {
                    route: route.clone(),
                    method,
                    codes: series.codes.iter().map(|(c, n)| (*c, *n)).collect(),
                    duration: series.duration.snapshot(),
                });
            }
        }
        out.sort_by(|a, b| (&a.route, a.method).cmp(&(&b.route, b.method)));
        out
    }
}
