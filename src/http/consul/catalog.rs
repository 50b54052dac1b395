//! `/v1/catalog/*`: what is registered, health ignored (as in Consul).
//! Every answer carries `X-Consul-Index` and supports blocking queries.

use std::collections::BTreeMap;

use axum::extract::{Path, State};

use super::{
    acl::ConsulCaller,
    blocking::Blocking,
    error::ConsulError,
    filter::{self, Filter},
    response::Indexed,
    views::{self, NodeInfo, ServiceNode},
};
use crate::http::state::AppState;

/// `GET /v1/catalog/services?filter=...`: each service name with its
/// instances' tags, de-duplicated, `[]` rather than `null`. As in Consul,
/// the filter applies to each instance's `ServiceNode` (Prometheus's
/// `consul_sd` sends its `filter:` here), and a service none of whose
/// instances passes is left out.
pub(super) async fn services(
    State(state): State<AppState>,
    caller: ConsulCaller,
    blocking: Blocking,
) -> Result<Indexed<BTreeMap<String, Vec<String>>>, ConsulError> {
    let filter = blocking.filter(&state, &filter::SERVICE_NODE)?;
    blocking.query.wait(&state).await?;
    let registry = state.registry.state();
    let node = NodeInfo::new(&state.consul);
    let services = registry
        .services
        .values()
        .filter(|service| !blocking.peered && caller.0.may_read(service.name.as_str()))
        .filter_map(|service| {
            let mut kept = service
                .instances()
                .filter(|i| {
                    filter
                        .as_ref()
                        .is_none_or(|f| f.matches(&views::service_node(i, &node)))
                })
                .peekable();
            if filter.is_some() && kept.peek().is_none() {
                return None;
            }
            let mut tags: Vec<String> = Vec::new();
            for instance in kept {
                for tag in &instance.instance.tags {
                    if !tags.contains(tag) {
                        tags.push(tag.clone());
                    }
                }
            }
            Some((service.name.as_str().to_owned(), tags))
        })
        .collect();
    Ok(Indexed(registry.index, services))
}

/// `GET /v1/catalog/service/:name?tag=...&filter=...`: one `ServiceNode`
/// per instance carrying every requested tag and passing the filter; `[]`
/// for a service roster does not know.
/// The name matches as registered or as its DNS label. A service the
/// caller may not read answers `[]`, as Consul filters by ACL.
pub(super) async fn service(
    State(state): State<AppState>,
    caller: ConsulCaller,
    Path(name): Path<String>,
    blocking: Blocking,
) -> Result<Indexed<Vec<ServiceNode>>, ConsulError> {
    // A malformed filter is refused before the wait, not after it.
    let filter = blocking.filter(&state, &filter::SERVICE_NODE)?;
    blocking.query.wait_service(&state, &name).await?;
    let registry = state.registry.state();
    let node = NodeInfo::new(&state.consul);
    let tags: Vec<&str> = blocking.params.all("tag").collect();
    let nodes = registry
        .service_by_name(&name)
        .filter(|service| {
            !blocking.peered && caller.0.may_read(&name) && caller.0.may_read(service.name.as_str())
        })
        .map(|service| {
            service
                .instances()
                .filter(|i| views::has_tags(i, &tags))
                .map(|i| views::service_node(i, &node))
                .filter(|n| Filter::keeps(filter.as_ref(), n))
                .collect()
        })
        .unwrap_or_default();
    Ok(Indexed(registry.service_index(&name), nodes))
}

/// `GET /v1/catalog/datacenters`: roster's one datacenter.
pub(super) async fn datacenters(State(state): State<AppState>) -> Indexed<Vec<String>> {
    let index = state.registry.state().index;
    Indexed(index, vec![state.consul.datacenter.clone()])
}
