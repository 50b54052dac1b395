//! A roster running in the test's own runtime, through the library's
//! `start`, on ephemeral loopback ports with its own directories.

use std::net::SocketAddr;

use roster::{Config, Running};
use tempfile::TempDir;
use tokio::time::timeout;

use super::{DEADLINE, http_client};

/// A roster running in this test's runtime, on ephemeral ports, with its own
/// zone and data directories.
pub struct Server {
    /// Where roster answers DNS, UDP and TCP.
    pub dns_addr: SocketAddr,
    /// Where roster serves its HTTP API.
    pub http_addr: SocketAddr,
    /// The running roster; `None` once [`Server::stop`] took it.
    running: Option<Running>,
    /// The client every request of [`Server`]'s HTTP methods goes through.
    pub(super) http: reqwest::Client,
    /// `http://<http_addr>/`, which request paths are joined to.
    pub(super) base: reqwest::Url,
    /// The zone directory, kept so it lives as long as the server.
    pub zones_dir: TempDir,
    /// The data directory, kept so it lives as long as the server.
    pub data_dir: TempDir,
}

/// Starts roster on its defaults, with no static zones.
pub async fn start_server() -> Server {
    start_server_with(&[], |_| {}).await
}

/// Starts roster with `zone_files` (file name, contents) in its zone
/// directory, health checks allowed to loopback networks only, after
/// letting `configure` adjust the configuration.
pub async fn start_server_with(
    zone_files: &[(&str, &str)],
    configure: impl FnOnce(&mut Config),
) -> Server {
    let zones_dir = tempfile::tempdir().expect("temporary zone directory");
    let data_dir = tempfile::tempdir().expect("temporary data directory");
    for (name, text) in zone_files {
        std::fs::write(zones_dir.path().join(name), text).expect("write zone file");
    }
    let mut config = Config::default();
    config.dns.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.http.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.dns.zones = zones_dir.path().to_owned();
    config.data_dir = data_dir.path().to_owned();
    // Tests send traffic to loopback only: a check that names any other
    // address (a registration a test or a third-party suite makes) is
    // refused by roster's own network policy before it connects.
    config.health.allowed_networks = ["127.0.0.0/8", "::1/128"]
        .iter()
        .map(|network| network.parse().expect("a loopback network"))
        .collect();
    configure(&mut config);
    let running = roster::start(config).await.expect("roster starts");
    let base = reqwest::Url::parse(&format!("http://{}/", running.http_addr)).expect("base URL");
    Server {
        dns_addr: running.dns_addr,
        http_addr: running.http_addr,
        running: Some(running),
        http: http_client(),
        base,
        zones_dir,
        data_dir,
    }
}

impl Server {
    /// Stops roster and asserts that it stopped cleanly.
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            timeout(DEADLINE, running.stop())
                .await
                .expect("roster stops within the deadline")
                .expect("roster stops without an error");
        }
    }
}
