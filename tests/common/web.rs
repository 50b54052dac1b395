//! Named HTTP backends for the load-balancer tests: each answers `/` with
//! its name, so the test sees which backend a proxied request reached, and
//! `/health` with 200 or 500 as the test sets it, so roster's check can
//! fail while the backend still serves (only DNS can then take it out of a
//! proxy's rotation).

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::SeqCst},
    },
};

use axum::{extract::State, http::StatusCode, routing::get};
use serde_json::{Value, json};
use tokio::{net::TcpListener, task::JoinHandle};

use super::targets::{INTERVAL, TIMEOUT};

/// Attempts to find a port free on every address of a group.
const PORT_ATTEMPTS: usize = 50;

/// One backend: its name, address and health switch.
pub struct Backend {
    /// What `/` answers, and its instance ID in roster.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Whether `/health` answers 200 (else 500).
    healthy: Arc<AtomicBool>,
    /// The server task; aborted by [`Backend::stop`] and on drop.
    task: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Shared {
    name: String,
    healthy: Arc<AtomicBool>,
}

async fn whoami(State(shared): State<Shared>) -> String {
    shared.name
}

async fn health(State(shared): State<Shared>) -> StatusCode {
    if shared.healthy.load(SeqCst) {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

impl Backend {
    fn serve(name: &str, listener: TcpListener) -> Backend {
        let addr = listener.local_addr().expect("backend address");
        let healthy = Arc::new(AtomicBool::new(true));
        let shared = Shared {
            name: name.to_owned(),
            healthy: healthy.clone(),
        };
        let app = axum::Router::new()
            .route("/", get(whoami))
            .route("/health", get(health))
            .with_state(shared);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Backend {
            name: name.to_owned(),
            addr,
            healthy,
            task,
        }
    }

    /// Backends named `names` on `ips` (one each), all on one port: as
    /// nginx needs, since a name's A records carry no port.
    pub async fn on_one_port(names: &[&str], ips: &[IpAddr]) -> Vec<Backend> {
        assert_eq!(names.len(), ips.len(), "one address per backend");
        'attempt: for _ in 0..PORT_ATTEMPTS {
            let first = TcpListener::bind((ips[0], 0))
                .await
                .expect("bind a backend");
            let port = first.local_addr().expect("backend address").port();
            let mut listeners = vec![first];
            for ip in &ips[1..] {
                match TcpListener::bind((*ip, port)).await {
                    Ok(listener) => listeners.push(listener),
                    Err(_) => continue 'attempt,
                }
            }
            return names
                .iter()
                .zip(listeners)
                .map(|(name, listener)| Backend::serve(name, listener))
                .collect();
        }
        panic!("no port free on all of {ips:?} in {PORT_ATTEMPTS} attempts")
    }

    /// Backends named `names` on `ips`, each on its own ephemeral port.
    pub async fn each_own_port(names: &[&str], ips: &[IpAddr]) -> Vec<Backend> {
        let mut backends = Vec::new();
        for (name, ip) in names.iter().zip(ips) {
            let listener = TcpListener::bind((*ip, 0)).await.expect("bind a backend");
            backends.push(Backend::serve(name, listener));
        }
        backends
    }

    /// Makes `/health` answer 200 (`true`) or 500 (`false`).
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, SeqCst);
    }

    /// Stops serving: connections are refused once this returns.
    pub async fn stop(&mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }

    /// The registration body: this address and port, with a fast HTTP
    /// check of `/health` on loopback.
    pub fn registration(&self) -> Value {
        json!({
            "address": self.addr.ip().to_string(),
            "port": self.addr.port(),
            "check": {
                "http": format!("http://{}/health", self.addr),
                "interval": INTERVAL,
                "timeout": TIMEOUT,
            },
        })
    }
}
