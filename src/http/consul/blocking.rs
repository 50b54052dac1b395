//! Blocking queries: `?index=N&wait=D` on catalog and health endpoints holds
//! the request until the registry's index moves past `N`, or `D` passes.
//!
//! The wait is a `tokio::sync::watch` receiver plus one timer, so a blocked
//! request is a parked task: thousands of them cost memory for their
//! futures and nothing else, and none of them polls.
//!
//! A query about one service (`health/service/:name`, `health/checks/:name`,
//! `catalog/service/:name`) waits on that service alone, as Consul's do: its
//! index is the service's last change ([`RegistryState::service_index`]),
//! and only a change to that service wakes it, so a thousand watchers of
//! other services cost nothing when `web` changes. Queries over everything
//! (`catalog/services`, `health/state`) wait on the registry's index, which
//! any change moves.
//!
//! [`RegistryState::service_index`]: crate::registry::RegistryState::service_index

use std::time::Duration;

use axum::{extract::FromRequestParts, http::request::Parts};

use super::{
    error::ConsulError,
    filter::{Filter, Shape},
    query::Params,
};
use crate::{http::state::AppState, model::parse_go_duration};

/// Consul's wait when a client gives an index without one.
pub(super) const DEFAULT_WAIT: Duration = Duration::from_secs(5 * 60);
/// Consul's longest wait; longer requests are cut to it.
pub(super) const MAX_WAIT: Duration = Duration::from_secs(10 * 60);

/// What a request asked to wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BlockingQuery {
    /// Answer once the index differs from this; `None` answers at once.
    pub min_index: Option<u64>,
    pub wait: Duration,
}

impl BlockingQuery {
    /// Reads `index` and `wait`. An `index` that is absent, 0 or not a
    /// number answers at once: Consul refuses a non-numeric index with
    /// `400 Invalid index`, but the origin example sends `index=http`
    /// (`catalog.services('http')` passes its tag as the index), and roster
    /// answers it. A `wait` that is not a Go duration is Consul's
    /// `400 Invalid wait time`; 0 means the default, longer than 10 minutes
    /// means 10 minutes.
    pub(super) fn parse(params: &Params) -> Result<Self, ConsulError> {
        let min_index = params
            .get("index")
            .and_then(|text| text.trim().parse::<u64>().ok())
            .filter(|index| *index > 0);
        let wait = match params.get("wait") {
            None | Some("") => DEFAULT_WAIT,
            Some(text) => {
                let wait = parse_go_duration(text)
                    .map_err(|_| ConsulError::bad_request("Invalid wait time"))?;
                if wait.is_zero() {
                    DEFAULT_WAIT
                } else {
                    wait.min(MAX_WAIT)
                }
            }
        };
        Ok(Self { min_index, wait })
    }

    /// Waits until the registry's index differs from `min_index` or the
    /// wait passes. On a single node an index that already differs answers
    /// at once, including one *below* the client's: that is a roster
    /// restarted without its store, and the client, seeing the index go
    /// backwards, starts over from 0 instead of waiting in vain. In a
    /// cluster it waits until the index passes the client's. At shutdown a blocked request
    /// answers at once, as if its wait had passed (Consul clients then retry
    /// against whatever serves next).
    pub(super) async fn wait(&self, state: &AppState) -> Result<(), ConsulError> {
        let Some(min_index) = self.min_index else {
            return Ok(());
        };
        let mut index = state.registry.watch_index();
        // In a cluster the index is etcd's revision, the same on every
        // node; a node behind the client's index has not caught up with
        // the node the client last asked, so it waits to pass it rather
        // than send the client's index backwards.
        let answered = |current: u64| match state.cluster {
            true => current > min_index,
            false => current != min_index,
        };
        if answered(*index.borrow_and_update()) {
            return Ok(());
        }
        let _slot = blocking_slot(state)?;
        // `wait_for` fails only when the registry is gone: answer then too.
        tokio::select! {
            _ = tokio::time::timeout(self.wait, index.wait_for(|current| answered(*current))) => {}
            _ = state.shutting_down.cancelled() => {}
        }
        Ok(())
    }

    /// [`Self::wait`] for a query about the service `name`: waits until
    /// that service's index differs from (in a cluster: passes) the
    /// client's, woken only by changes to that service.
    pub(super) async fn wait_service(
        &self,
        state: &AppState,
        name: &str,
    ) -> Result<(), ConsulError> {
        let Some(min_index) = self.min_index else {
            return Ok(());
        };
        let registry = &state.registry;
        let answered = |current: u64| match state.cluster {
            true => current > min_index,
            false => current != min_index,
        };
        // Subscribed before the index is read: a change published between
        // the two still wakes the receiver.
        let changes = registry.watch_service(name);
        if answered(registry.state().service_index(name)) {
            return Ok(());
        }
        let _slot = blocking_slot(state)?;
        let changed = async {
            // A name no service can have never changes: wait it out.
            let Some(mut changes) = changes else {
                return std::future::pending().await;
            };
            // `changed` fails only when the registry is gone: answer then.
            while changes.changed().await.is_ok() {
                if answered(registry.state().service_index(name)) {
                    return;
                }
            }
        };
        tokio::select! {
            _ = tokio::time::timeout(self.wait, changed) => {}
            _ = state.shutting_down.cancelled() => {}
        }
        Ok(())
    }
}

/// A place among the blocked queries, held while one waits. Each holds an
/// HTTP connection for up to ten minutes, and at `http.max_connections`
/// with none idle a new client is refused: without a ceiling below it,
/// one watcher of a thousand services (Prometheus' consul_sd,
/// consul-template) locked every heartbeat and registration out. Past the
/// ceiling a query is answered 429 at once; Consul clients back off and
/// ask again. `roster_http_requests_total{code="429"}` counts them.
fn blocking_slot(state: &AppState) -> Result<tokio::sync::SemaphorePermit<'_>, ConsulError> {
    state.blocking_slots.try_acquire().map_err(|_| {
        ConsulError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "too many blocking queries are waiting; try again later (roster keeps HTTP connections free for writes and heartbeats; raise http.max_connections for more watchers)",
        )
        .at(state.registry.state().index)
    })
}

/// The query of a catalog or health request: its parameters and what it
/// waits for. A refusal carries the index headers, like every catalog and
/// health answer.
pub(super) struct Blocking {
    pub params: Params,
    pub query: BlockingQuery,
    /// `?peer=` was given: roster has no cluster peers, so the answer is
    /// empty (Consul's, for a peer that exports nothing).
    pub peered: bool,
}

impl FromRequestParts<AppState> for Blocking {
    type Rejection = ConsulError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let index = || state.registry.state().index;
        let params = Params::from_request_parts(parts, state)
            .await
            .map_err(|e| e.at(index()))?;
        let query = BlockingQuery::parse(&params).map_err(|e| e.at(index()))?;
        if let Some(dc) = params.get("dc").filter(|dc| !dc.is_empty())
            && *dc != state.consul.datacenter
        {
            // Consul's own answer for a datacenter it cannot reach.
            return Err(ConsulError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "No path to datacenter",
            )
            .at(index()));
        }
        let peered = params.get("peer").is_some_and(|peer| !peer.is_empty());
        Ok(Self {
            params,
            query,
            peered,
        })
    }
}

impl Blocking {
    /// The request's `?filter=` for an answer of `shape`; a refusal carries
    /// the index headers like every catalog and health answer. A filtered
    /// answer has the index the unfiltered one would, as in Consul: a
    /// change that the filter hides still wakes a blocked query.
    pub(super) fn filter(
        &self,
        state: &AppState,
        shape: &Shape,
    ) -> Result<Option<Filter>, ConsulError> {
        Filter::from_query(self.params.get("filter"), shape)
            .map_err(|e| e.at(state.registry.state().index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<BlockingQuery, ConsulError> {
        let params = Params(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        BlockingQuery::parse(&params)
    }

    #[test]
    fn index_and_wait() {
        let query = parse(&[("index", "42"), ("wait", "30s")]).expect("valid");
        assert_eq!(query.min_index, Some(42));
        assert_eq!(query.wait, Duration::from_secs(30));
        assert_eq!(parse(&[]).expect("empty").min_index, None);
        assert_eq!(parse(&[("index", "0")]).expect("zero").min_index, None);
        assert_eq!(parse(&[("index", "http")]).expect("word").min_index, None);
        assert_eq!(
            parse(&[("index", "7")]).expect("no wait").wait,
            DEFAULT_WAIT
        );
        assert_eq!(
            parse(&[("wait", "0")]).expect("zero wait").wait,
            DEFAULT_WAIT
        );
        assert_eq!(parse(&[("wait", "1h")]).expect("long").wait, MAX_WAIT);
    }

    #[test]
    fn bad_wait_is_refused_with_consuls_words() {
        for wait in ["soon", "10", "-1s"] {
            let error = parse(&[("index", "1"), ("wait", wait)]).expect_err(wait);
            assert_eq!(error.message, "Invalid wait time", "{wait}");
        }
    }
}
