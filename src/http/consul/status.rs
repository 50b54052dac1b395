//! `/v1/status/*` and `/v1/agent/self`: roster is a one-node cluster and
//! its own leader. Clients use `status.leader()` as a liveness ping, and
//! read `agent/self` for the datacenter and node they talk to (Prometheus's
//! `consul_sd` when no datacenter is configured, the Go client, Fabio).

use std::net::SocketAddr;

use axum::{Json, extract::State};
use serde_json::{Value, json};

use super::views::NodeInfo;
use crate::http::state::AppState;

/// Consul's LAN gossip port, shown in the member entry as Consul does.
const SERF_LAN_PORT: u16 = 8301;
/// Serf's status code for a live member.
const MEMBER_ALIVE: u8 = 1;

/// Consul's server RPC port, shown in the leader's address as Consul does.
const SERVER_PORT: u16 = 8300;

fn leader_address(state: &AppState) -> String {
    SocketAddr::new(state.consul.node_address, SERVER_PORT).to_string()
}

/// `GET /v1/status/leader`: `"127.0.0.1:8300"`, a JSON string.
pub(super) async fn leader(State(state): State<AppState>) -> Json<String> {
    Json(leader_address(&state))
}

/// `GET /v1/status/peers`: the one server.
pub(super) async fn peers(State(state): State<AppState>) -> Json<Vec<String>> {
    Json(vec![leader_address(&state)])
}

/// `GET /v1/agent/self`: the agent's configuration and its member entry,
/// with the fields clients read (`Config.Datacenter`, `Config.NodeName`,
/// `Config.NodeID`, `Member.*`, and `Stats.consul.leader_addr`, which
/// clients compare with `status/leader`). roster is the server of its
/// one-node cluster, and its leader. The version is roster's own, marked as
/// such.
pub(super) async fn agent_self(
    State(state): State<AppState>,
    caller: super::acl::ConsulCaller,
) -> Result<Json<Value>, super::error::ConsulError> {
    caller.0.require_agent_read()?;
    let node = NodeInfo::new(&state.consul);
    let version = env!("CARGO_PKG_VERSION");
    Ok(Json(json!({
        "Config": {
            "Datacenter": node.datacenter,
            "PrimaryDatacenter": node.datacenter,
            "NodeName": node.name,
            "NodeID": node.id,
            "Server": true,
            "Version": format!("roster-{version}"),
            "Revision": "",
        },
        "Member": {
            "Name": node.name,
            "Addr": node.address.to_string(),
            "Port": SERF_LAN_PORT,
            "Tags": {
                "dc": node.datacenter,
                "id": node.id,
                "role": "consul",
                "build": format!("roster-{version}"),
            },
            "Status": MEMBER_ALIVE,
        },
        "Meta": {},
        "DebugConfig": {},
        "Coord": null,
        // Consul's stats are all strings; these are the ones that describe
        // the cluster roster is (the rest are Raft and Serf internals).
        "Stats": {
            "consul": {
                "server": "true",
                "leader": "true",
                "leader_addr": leader_address(&state),
                "known_datacenters": "1",
            },
        },
        "xDS": null,
    })))
}
