//! Cluster mode as an operator runs it: N `roster serve --etcd … --node …`
//! processes on one real etcd cluster ([`super::etcd::EtcdCluster`]), each
//! on its own loopback ports. A [`RosterCluster`] owns both, and kills
//! every process when dropped.
//!
//! The HTTP calls here return what the node said, transport errors
//! included, so a test can retry a write during an etcd election; every
//! call has an overall timeout, so a hung node fails the test.

use std::{collections::BTreeMap, time::Duration};

use serde_json::Value;

use super::{
    dns::served_addresses,
    etcd::EtcdCluster,
    poll::eventually,
    process::{Roster, Site},
};

/// How long one HTTP request to a node may take: longer than a write's
/// bounded wait for an unreachable etcd (about 3 s), so a hang fails.
pub const REQUEST_LIMIT: Duration = Duration::from_secs(15);
/// How long the nodes may take to agree after a change: a hang guard.
pub const CONVERGE_LIMIT: Duration = Duration::from_secs(20);

/// Runs blocking etcd-harness work (starting, killing, etcdctl) from a
/// multi-threaded tokio test.
pub fn blocking<T>(work: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(work)
}

/// One roster node: its name, its process and the directory it runs in.
pub struct Node {
    /// Its `--node` name.
    pub name: String,
    /// The process; `crash()` it to kill -9.
    pub roster: Roster,
    /// Where it runs; removed on drop, after the process.
    _site: Site,
}

impl Node {
    /// Starts `roster serve --etcd <endpoints> --node <name>` and waits
    /// until it serves.
    pub async fn start(name: &str, endpoints: &str) -> Node {
        Node::start_with_config(name, endpoints, None).await
    }

    /// [`Node::start`] with `config` as the `config.toml` of its directory
    /// (which roster reads from where it runs), if given.
    pub async fn start_with_config(name: &str, endpoints: &str, config: Option<&str>) -> Node {
        let site = Site::new();
        if let Some(config) = config {
            std::fs::write(site.root.path().join("config.toml"), config).expect("config.toml");
        }
        let roster = site
            .start_with(&["--etcd", endpoints, "--node", name])
            .await;
        Node {
            name: name.to_owned(),
            roster,
            _site: site,
        }
    }

    /// `http://<its HTTP address><path>`.
    pub fn url(&self, path: &str) -> String {
        self.roster.url(path)
    }
}

/// N roster nodes on one etcd cluster.
pub struct RosterCluster {
    /// The nodes, `n1`, `n2`, … by index 0, 1, …. Declared before `etcd` so
    /// they are killed first when the cluster is dropped.
    pub nodes: Vec<Node>,
    /// The etcd cluster they share.
    pub etcd: EtcdCluster,
    /// An HTTP client with [`REQUEST_LIMIT`] per request.
    pub http: reqwest::Client,
}

/// An HTTP answer: status and JSON body (`Null` if empty, a string if not
/// JSON), plus `X-Consul-Index` if present.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub index: Option<u64>,
}

/// A plain-HTTP client that ignores proxies, with [`REQUEST_LIMIT`].
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_LIMIT)
        .build()
        .expect("HTTP client")
}

impl RosterCluster {
    /// A 3-member etcd cluster and `nodes` roster nodes given every etcd
    /// URL; returns once every node lists all of them as members.
    pub async fn start(nodes: usize) -> RosterCluster {
        let etcd = blocking(|| EtcdCluster::start(3));
        let endpoints = etcd.endpoints_arg();
        let per_node = vec![endpoints; nodes];
        RosterCluster::on(etcd, &per_node).await
    }

    /// Roster nodes on `etcd`, node `i` given `endpoints[i]` (so a test can
    /// tie a node to some members only); waits until all are members.
    pub async fn on(etcd: EtcdCluster, endpoints: &[String]) -> RosterCluster {
        RosterCluster::on_with_config(etcd, endpoints, None).await
    }

    /// [`RosterCluster::start`] with `config` as every node's
    /// `config.toml`.
    pub async fn start_with_config(nodes: usize, config: &str) -> RosterCluster {
        let etcd = blocking(|| EtcdCluster::start(3));
        let endpoints = etcd.endpoints_arg();
        let per_node = vec![endpoints; nodes];
        RosterCluster::on_with_config(etcd, &per_node, Some(config)).await
    }

    /// [`RosterCluster::on`] with `config` as every node's `config.toml`.
    pub async fn on_with_config(
        etcd: EtcdCluster,
        endpoints: &[String],
        config: Option<&str>,
    ) -> RosterCluster {
        let mut nodes = Vec::new();
        for (i, endpoints) in endpoints.iter().enumerate() {
            let name = format!("n{}", i + 1);
            nodes.push(Node::start_with_config(&name, endpoints, config).await);
        }
        let cluster = RosterCluster {
            nodes,
            etcd,
            http: client(),
        };
        let names: Vec<String> = cluster.nodes.iter().map(|n| n.name.clone()).collect();
        for node in 0..cluster.nodes.len() {
            cluster.wait_members(node, &names).await;
        }
        cluster
    }

    /// Sends a request; `Err` on a transport error or timeout.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<Reply, String> {
        send(request).await
    }

    /// `PUT path` with a JSON body on node `node`; `Err` on a transport
    /// error.
    pub async fn try_put(&self, node: usize, path: &str, body: &Value) -> Result<Reply, String> {
        try_put(&self.http, &self.nodes[node], path, body).await
    }

    /// `GET path` on node `node`; panics on a transport error.
    pub async fn get(&self, node: usize, path: &str) -> Reply {
        let url = self.nodes[node].url(path);
        self.send(self.http.get(&url))
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }

    /// `PUT path` with a JSON body; panics on a transport error.
    pub async fn put(&self, node: usize, path: &str, body: &Value) -> Reply {
        self.try_put(node, path, body)
            .await
            .unwrap_or_else(|e| panic!("PUT {path} on node {node}: {e}"))
    }

    /// `DELETE path` on node `node`; panics on a transport error.
    pub async fn delete(&self, node: usize, path: &str) -> Reply {
        let url = self.nodes[node].url(path);
        self.send(self.http.delete(&url))
            .await
            .unwrap_or_else(|e| panic!("DELETE {url}: {e}"))
    }

    /// `PUT /v1/services/<service>/instances/<id>` on node `node`.
    pub async fn register(&self, node: usize, service: &str, id: &str, body: &Value) -> Reply {
        self.put(node, &instance_path(service, id), body).await
    }

    /// [`RosterCluster::register`], asserting 200.
    pub async fn register_ok(&self, node: usize, service: &str, id: &str, body: &Value) -> Reply {
        let reply = self.register(node, service, id, body).await;
        assert_eq!(
            reply.status, 200,
            "register {service}/{id} on node {node}: {reply:?}"
        );
        reply
    }

    /// `DELETE /v1/services/<service>/instances/<id>` on node `node`,
    /// asserting 2xx.
    pub async fn deregister_ok(&self, node: usize, service: &str, id: &str) {
        let reply = self.delete(node, &instance_path(service, id)).await;
        assert!(
            (200..300).contains(&reply.status),
            "deregister {service}/{id} on node {node}: {reply:?}"
        );
    }

    /// The names `GET /v1/cluster/members` lists on node `node`, sorted,
    /// with each one's `checks`.
    pub async fn members(&self, node: usize) -> BTreeMap<String, u64> {
        let reply = self.get(node, "/v1/cluster/members").await;
        assert_eq!(reply.status, 200, "members on node {node}: {reply:?}");
        reply
            .body
            .as_array()
            .unwrap_or_else(|| panic!("members is not an array: {reply:?}"))
            .iter()
            .map(|m| {
                (
                    m["name"].as_str().expect("a member's name").to_owned(),
                    m["checks"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    }

    /// Waits until node `node` lists exactly `names` as members.
    pub async fn wait_members(&self, node: usize, names: &[String]) -> BTreeMap<String, u64> {
        let mut wanted = names.to_vec();
        wanted.sort();
        eventually(
            &format!("node {node} to list members {wanted:?}"),
            CONVERGE_LIMIT,
            || async {
                let members = self.members(node).await;
                if members.keys().cloned().collect::<Vec<_>>() == wanted {
                    Ok(members)
                } else {
                    Err(format!("{members:?}"))
                }
            },
        )
        .await
    }

    /// Node `node`'s export: its instances, sorted by ID, without the
    /// index (which moves with every write).
    pub async fn export(&self, node: usize) -> Vec<Value> {
        let reply = self.get(node, "/v1/export").await;
        assert_eq!(reply.status, 200, "export on node {node}: {reply:?}");
        let mut instances = reply.body["instances"]
            .as_array()
            .unwrap_or_else(|| panic!("no instances in the export: {reply:?}"))
            .clone();
        instances.sort_by_key(|i| i["id"].as_str().unwrap_or_default().to_owned());
        instances
    }

    /// Waits until every node in `nodes` exports the same instances, and
    /// returns them.
    pub async fn converged(&self, nodes: &[usize]) -> Vec<Value> {
        eventually(
            &format!("nodes {nodes:?} to export the same instances"),
            CONVERGE_LIMIT,
            || async {
                let first = self.export(nodes[0]).await;
                for &node in &nodes[1..] {
                    let other = self.export(node).await;
                    if other != first {
                        return Err(format!(
                            "node {} has {} instances, node {node} has {}",
                            nodes[0],
                            first.len(),
                            other.len()
                        ));
                    }
                }
                Ok(first)
            },
        )
        .await
    }

    /// Waits until DNS on node `node` serves exactly `addresses` for
    /// `service` (empty: none).
    pub async fn wait_dns(&self, node: usize, service: &str, addresses: &[&str]) {
        let wanted: std::collections::BTreeSet<String> =
            addresses.iter().map(|a| (*a).to_owned()).collect();
        let dns = self.nodes[node].roster.dns;
        eventually(
            &format!("node {node}'s DNS for {service} to serve {wanted:?}"),
            CONVERGE_LIMIT,
            || async {
                let served = served_addresses(dns, service).await;
                if served == wanted {
                    Ok(())
                } else {
                    Err(format!("{served:?}"))
                }
            },
        )
        .await
    }

    /// Indices of every node.
    pub fn all(&self) -> Vec<usize> {
        (0..self.nodes.len()).collect()
    }
}

/// Sends a request; `Err` on a transport error or timeout.
pub async fn send(request: reqwest::RequestBuilder) -> Result<Reply, String> {
    let response = request.send().await.map_err(|e| format!("{e:?}"))?;
    let status = response.status().as_u16();
    let index = response
        .headers()
        .get("x-consul-index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let bytes = response.bytes().await.map_err(|e| format!("{e:?}"))?;
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Ok(Reply {
        status,
        body,
        index,
    })
}

/// `PUT path` with a JSON body on `node` through `http`; `Err` on a
/// transport error. A free function so a test can write while it holds
/// the etcd cluster mutably (to kill a member).
pub async fn try_put(
    http: &reqwest::Client,
    node: &Node,
    path: &str,
    body: &Value,
) -> Result<Reply, String> {
    send(http.put(node.url(path)).json(body)).await
}

/// `/v1/services/<service>/instances/<id>`, each part percent-encoded.
pub fn instance_path(service: &str, id: &str) -> String {
    format!("/v1/services/{}/instances/{}", encode(service), encode(id))
}

/// Percent-encodes one path segment.
pub fn encode(segment: &str) -> String {
    let mut out = String::new();
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
