//! Registry state shown as Consul's JSON: `AgentService`, `ServiceNode`,
//! `HealthCheck` and the health endpoint's `{Node, Service, Checks}`.
//!
//! roster presents itself as one Consul agent node (`[consul]` in the
//! config): every instance lives on that node. Tags and Meta are never
//! `null`. `Address` fields show the address as the client gave it (empty
//! for "the node's address", a hostname as written), as Consul does; DNS
//! serves the resolved address.

use std::{collections::BTreeMap, net::IpAddr};

use serde::Serialize;

use crate::{
    config::ConsulConfig,
    model::{CheckKind, Meta, Status, format_go_duration},
    registry::{InstanceState, RegistryState},
};

/// Consul's name and notes for the check service maintenance adds.
pub(super) const MAINTENANCE_CHECK_NAME: &str = "Service Maintenance Mode";
pub(super) const MAINTENANCE_DEFAULT_REASON: &str = "Maintenance mode is enabled for this service, but no reason was provided. This is a default message.";

/// Service maintenance shows up as the check `_service_maintenance:<id>`.
pub(super) use crate::model::MAINTENANCE_CHECK_PREFIX;

pub(super) fn maintenance_check_id(service_id: &str) -> String {
    format!("{MAINTENANCE_CHECK_PREFIX}{service_id}")
}

/// The node roster presents itself as.
pub(super) struct NodeInfo<'a> {
    pub name: &'a str,
    pub address: IpAddr,
    pub datacenter: &'a str,
    /// A UUID derived from the node name, stable across restarts.
    pub id: String,
}

impl<'a> NodeInfo<'a> {
    pub(super) fn new(config: &'a ConsulConfig) -> Self {
        Self {
            name: &config.node_name,
            address: config.node_address,
            datacenter: &config.datacenter,
            id: node_id(&config.node_name),
        }
    }
}

/// A deterministic UUID-shaped ID (Consul's node IDs are UUIDs) from two
/// FNV-1a hashes of the node name.
fn node_id(name: &str) -> String {
    let fnv = |seed: u64| {
        name.bytes().fold(seed, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
    };
    let high = fnv(0xcbf2_9ce4_8422_2325);
    let low = fnv(0x8422_2325_cbf2_9ce4);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        high >> 32,
        (high >> 16) & 0xffff,
        high & 0xffff,
        low >> 48,
        low & 0xffff_ffff_ffff
    )
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Weights {
    pub passing: u32,
    pub warning: u32,
}

/// One entry of `GET /v1/agent/services`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct AgentService {
    #[serde(rename = "ID")]
    pub id: String,
    pub service: String,
    pub tags: Vec<String>,
    pub meta: Meta,
    pub port: u16,
    pub address: String,
    pub weights: Weights,
    pub enable_tag_override: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tagged_addresses: Option<BTreeMap<String, ServiceAddress>>,
    pub datacenter: String,
}

/// One of a service's `TaggedAddresses`, as Consul shows it.
#[derive(Serialize, Clone)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ServiceAddress {
    pub address: String,
    pub port: u16,
}

fn service_tagged_addresses(state: &InstanceState) -> Option<BTreeMap<String, ServiceAddress>> {
    let tagged = state.instance.tagged_addresses.as_deref()?;
    Some(
        tagged
            .iter()
            .map(|(tag, a)| {
                let address = ServiceAddress {
                    address: a.address.clone(),
                    port: a.port,
                };
                (tag.clone(), address)
            })
            .collect(),
    )
}

/// One entry of `GET /v1/catalog/service/:name`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ServiceNode {
    #[serde(rename = "ID")]
    pub id: String,
    pub node: String,
    pub address: String,
    pub datacenter: String,
    pub tagged_addresses: BTreeMap<&'static str, String>,
    pub node_meta: BTreeMap<String, String>,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    pub service_name: String,
    pub service_tags: Vec<String>,
    pub service_address: String,
    pub service_port: u16,
    pub service_meta: Meta,
    pub service_weights: Weights,
    pub service_enable_tag_override: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_tagged_addresses: Option<BTreeMap<String, ServiceAddress>>,
    pub create_index: u64,
    pub modify_index: u64,
}

/// A check, in `/v1/agent/checks` and the health endpoints.
#[derive(Serialize, Clone)]
#[serde(rename_all = "PascalCase")]
pub(super) struct HealthCheck {
    pub node: String,
    #[serde(rename = "CheckID")]
    pub check_id: String,
    pub name: String,
    pub status: Status,
    pub notes: String,
    pub output: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    pub service_name: String,
    pub service_tags: Vec<String>,
    #[serde(rename = "Type")]
    pub kind: &'static str,
    pub interval: String,
    pub timeout: String,
    pub create_index: u64,
    pub modify_index: u64,
}

/// The node in a health entry.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct Node {
    #[serde(rename = "ID")]
    pub id: String,
    pub node: String,
    pub address: String,
    pub datacenter: String,
    pub tagged_addresses: BTreeMap<&'static str, String>,
    pub meta: BTreeMap<String, String>,
    pub create_index: u64,
    pub modify_index: u64,
}

/// The service in a health entry.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct HealthService {
    #[serde(rename = "ID")]
    pub id: String,
    pub service: String,
    pub tags: Vec<String>,
    pub address: String,
    pub port: u16,
    pub meta: Meta,
    pub weights: Weights,
    pub enable_tag_override: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tagged_addresses: Option<BTreeMap<String, ServiceAddress>>,
    pub create_index: u64,
    pub modify_index: u64,
}

/// One entry of `GET /v1/health/service/:name`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ServiceEntry {
    pub node: Node,
    pub service: HealthService,
    pub checks: Vec<HealthCheck>,
}

/// The address as the client gave it, else the registered IP.
pub(super) fn service_address(state: &InstanceState) -> String {
    let instance = &state.instance;
    match &instance.address_as_given {
        Some(given) => given.clone(),
        None => instance.address.to_string(),
    }
}

fn weights(state: &InstanceState) -> Weights {
    // roster keeps one SRV weight; Consul's separate weight for instances
    // in warning is shown at its default.
    Weights {
        passing: u32::from(state.instance.weight),
        warning: 1,
    }
}

fn tagged_addresses(node: &NodeInfo) -> BTreeMap<&'static str, String> {
    let address = node.address.to_string();
    BTreeMap::from([("lan", address.clone()), ("wan", address)])
}

pub(super) fn agent_service(state: &InstanceState, node: &NodeInfo) -> AgentService {
    let instance = &state.instance;
    AgentService {
        id: instance.id.as_str().to_owned(),
        service: instance.service.as_str().to_owned(),
        tags: instance.tags.clone(),
        meta: instance.meta.clone(),
        port: instance.port,
        address: service_address(state),
        weights: weights(state),
        enable_tag_override: instance.enable_tag_override,
        tagged_addresses: service_tagged_addresses(state),
        datacenter: node.datacenter.to_owned(),
    }
}

pub(super) fn service_node(state: &InstanceState, node: &NodeInfo) -> ServiceNode {
    let instance = &state.instance;
    ServiceNode {
        id: node.id.clone(),
        node: node.name.to_owned(),
        address: node.address.to_string(),
        datacenter: node.datacenter.to_owned(),
        tagged_addresses: tagged_addresses(node),
        node_meta: BTreeMap::new(),
        service_id: instance.id.as_str().to_owned(),
        service_name: instance.service.as_str().to_owned(),
        service_tags: instance.tags.clone(),
        service_address: service_address(state),
        service_port: instance.port,
        service_meta: instance.meta.clone(),
        service_weights: weights(state),
        service_enable_tag_override: instance.enable_tag_override,
        service_tagged_addresses: service_tagged_addresses(state),
        create_index: state.create_index,
        modify_index: state.modify_index,
    }
}

/// The instance's checks, then the maintenance check while it is drained.
pub(super) fn instance_checks(state: &InstanceState, node: &NodeInfo) -> Vec<HealthCheck> {
    let instance = &state.instance;
    let base = |check_id: String, name: String, kind: &'static str| HealthCheck {
        node: node.name.to_owned(),
        check_id,
        name,
        status: Status::Passing,
        notes: String::new(),
        output: String::new(),
        service_id: instance.id.as_str().to_owned(),
        service_name: instance.service.as_str().to_owned(),
        service_tags: instance.tags.clone(),
        kind,
        interval: String::new(),
        timeout: String::new(),
        create_index: state.create_index,
        modify_index: state.modify_index,
    };
    let mut checks: Vec<HealthCheck> = instance
        .checks
        .iter()
        .zip(&state.checks)
        .map(|(definition, current)| {
            let (interval, timeout) = match &definition.kind {
                CheckKind::Http {
                    interval, timeout, ..
                }
                | CheckKind::Tcp {
                    interval, timeout, ..
                } => (
                    format_go_duration(interval.0),
                    format_go_duration(timeout.0),
                ),
                CheckKind::Ttl { .. } => (String::new(), String::new()),
            };
            HealthCheck {
                status: current.status,
                notes: definition.notes.clone(),
                output: current.output.clone(),
                interval,
                timeout,
                modify_index: current.modify_index,
                ..base(
                    definition.id.clone(),
                    definition.name.clone(),
                    definition.kind.type_name(),
                )
            }
        })
        .collect();
    if let Some(reason) = &state.maintenance {
        let notes = if reason.is_empty() {
            MAINTENANCE_DEFAULT_REASON.to_owned()
        } else {
            reason.clone()
        };
        checks.push(HealthCheck {
            status: Status::Critical,
            notes,
            ..base(
                maintenance_check_id(instance.id.as_str()),
                MAINTENANCE_CHECK_NAME.to_owned(),
                "maintenance",
            )
        });
    }
    checks
}

/// Consul's node-level `serfHealth` check. roster's node is the process
/// answering, so it is always passing; it is listed because Consul lists
/// node checks beside service checks, and tools count on seeing it.
pub(super) fn serf_health(node: &NodeInfo) -> HealthCheck {
    HealthCheck {
        node: node.name.to_owned(),
        check_id: "serfHealth".to_owned(),
        name: "Serf Health Status".to_owned(),
        status: Status::Passing,
        notes: String::new(),
        output: "Agent alive and reachable".to_owned(),
        service_id: String::new(),
        service_name: String::new(),
        service_tags: Vec::new(),
        kind: "",
        interval: String::new(),
        timeout: String::new(),
        create_index: 1,
        modify_index: 1,
    }
}

pub(super) fn service_entry(state: &InstanceState, node: &NodeInfo) -> ServiceEntry {
    let instance = &state.instance;
    let mut checks = vec![serf_health(node)];
    checks.extend(instance_checks(state, node));
    ServiceEntry {
        node: Node {
            id: node.id.clone(),
            node: node.name.to_owned(),
            address: node.address.to_string(),
            datacenter: node.datacenter.to_owned(),
            tagged_addresses: tagged_addresses(node),
            meta: BTreeMap::new(),
            create_index: 1,
            modify_index: 1,
        },
        service: HealthService {
            id: instance.id.as_str().to_owned(),
            service: instance.service.as_str().to_owned(),
            tags: instance.tags.clone(),
            address: service_address(state),
            port: instance.port,
            meta: instance.meta.clone(),
            weights: weights(state),
            enable_tag_override: instance.enable_tag_override,
            tagged_addresses: service_tagged_addresses(state),
            create_index: state.create_index,
            modify_index: state.modify_index,
        },
        checks,
    }
}

/// Every instance in the registry, in service then ID order.
pub(super) fn all_instances(state: &RegistryState) -> impl Iterator<Item = &InstanceState> {
    state
        .services
        .values()
        .flat_map(|service| service.instances().map(|i| &**i))
}

/// Whether the instance carries every tag in `tags`, compared without case
/// as Consul does.
pub(super) fn has_tags(state: &InstanceState, tags: &[&str]) -> bool {
    tags.iter().all(|wanted| {
        state
            .instance
            .tags
            .iter()
            .any(|tag| tag.eq_ignore_ascii_case(wanted))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_look_like_uuids_and_are_stable() {
        let id = node_id("roster");
        assert_eq!(id, node_id("roster"));
        assert_ne!(id, node_id("roster-2"));
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12]);
    }
}
