//! `/v1/status/*`: roster is a one-node cluster and its own leader. Clients
//! use `status.leader()` as a liveness ping.

use std::net::SocketAddr;

use axum::{Json, extract::State};

use crate::http::state::AppState;

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
