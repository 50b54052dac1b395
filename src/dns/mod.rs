//! The authoritative DNS front door: roster's UDP threads (`udp`) and TCP
//! loop (`tcp`) → [`DnsHandler`]
//! → name parsing (`query`) → answer building (`lookup`, `fit`) → the
//! record table ([`table`]) and static zones ([`zones`]). The common UDP
//! questions (A, AAAA, SRV at a service name) skip hickory on an
//! allocation-free fast path (`fast`) that answers exactly as the handler
//! would; `service_cache` and `prefetch` keep its lookups cache-friendly.
//! `wire` holds the protocol's sizes, flag bits and answer-size formulas,
//! which the record table, `fit` and the fast path all use.
//!
//! The record table is DNS answer data, so it lives here; the registry
//! builds and publishes it, and nothing in `dns` writes to it.
//!
//! TSIG-signed requests are checked against the keys of `[dns.update]`
//! (`tsig`), and a verified UPDATE is handed to an [`UpdateApplier`]
//! (`updates`), which the composition root wires to the registry's DNS
//! UPDATE door (`crate::update`).
//!
//! Owns: the DNS wire protocol, TSIG, and the record table's shape. Must
//! not: write to the registry or its state, or wait on anything but the
//! socket and, for an UPDATE, the applier's answer (never on a UDP socket
//! thread: those hand UPDATEs to the runtime).

mod cookies;
mod fast;
mod fit;
#[cfg(test)]
mod fixture;
#[doc(hidden)]
pub mod fuzzing;
mod handler;
mod lookup;
mod precheck;
mod prefetch;
mod query;
mod rrl;
mod service_cache;
mod steering;
pub mod table;
mod tcp;
mod tsig;
mod udp;
mod updates;
pub(crate) mod wire;
pub mod zones;

use std::sync::Arc;

use tokio::{net::TcpListener, runtime::Handle, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

pub use cookies::{
    Cookies, MAX_ACCEPTED as MAX_ACCEPTED_COOKIE_SECRETS, SEEN as COOKIE_SEEN, Seen as CookieSeen,
    Tally as CookieTally, parse_cookie_secret,
};
pub use fast::BatchCookies;
pub use handler::DnsHandler;
pub use rrl::{RateLimit, RateLimitCounter, RateLimitCounts};
pub use steering::steer_by_cpu;
pub use tcp::TcpTimeouts;
pub use tsig::KeyRing;
pub use updates::{ServiceScope, UpdateApplier, UpdateFuture};

use crate::metrics::dns::DnsMetrics;

/// The running DNS server: roster's UDP threads and TCP loop. Dropping it
/// stops both (the runtime waits for the UDP threads).
pub struct DnsServer {
    tcp: Option<JoinHandle<()>>,
    udp: Vec<JoinHandle<()>>,
    /// Stops the UDP threads, the TCP accept loop and every TCP connection.
    stop: CancellationToken,
    /// The UDP threads' response-rate limiter, when `dns.rate_limit` is on.
    limiter: Option<Arc<rrl::RateLimiter>>,
}

impl DnsServer {
    /// UDP answers dropped and slipped by response-rate limiting so far;
    /// `None` when it is off.
    pub fn rate_limited(&self) -> Option<RateLimitCounts> {
        self.limiter.as_deref().map(rrl::RateLimiter::counts)
    }

    /// A handle that reads [`DnsServer::rate_limited`]'s counters from
    /// elsewhere (the metrics endpoint); `None` when limiting is off.
    pub fn rate_limit_counter(&self) -> Option<RateLimitCounter> {
        self.limiter.clone().map(RateLimitCounter)
    }

    /// Stops accepting queries, closes TCP connections and waits for the
    /// loops to end.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        for thread in std::mem::take(&mut self.udp) {
            let _ = thread.await;
        }
        if let Some(tcp) = self.tcp.take() {
            let _ = tcp.await;
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Starts serving on already-bound sockets: each UDP socket gets a blocking
/// thread of its own (see `udp`), and all of them share one response-rate
/// limiter when `rate_limit` is on (see `rrl`); the TCP listener gets a task
/// that keeps at most `tcp_max_connections` open, each for at most
/// `tcp_timeouts` (see `tcp`), and is never rate-limited. Every thread
/// and connection counts into `metrics` (each UDP thread into a block of
/// its own). With `udp_affinity`, each UDP thread is pinned to the CPUs
/// whose datagrams its socket gets (see `steering`; the sockets must be
/// steered by CPU).
#[allow(clippy::too_many_arguments)] // One call, in `run`, each a setting.
pub fn serve(
    handler: DnsHandler,
    metrics: &Arc<DnsMetrics>,
    udp: Vec<std::net::UdpSocket>,
    udp_affinity: bool,
    tcp: TcpListener,
    tcp_max_connections: usize,
    tcp_timeouts: TcpTimeouts,
    rate_limit: RateLimit,
) -> DnsServer {
    let stop = CancellationToken::new();
    let runtime = Handle::current();
    let limiter = rrl::RateLimiter::new(rate_limit).map(Arc::new);
    let sockets = udp.len();
    let udp = udp
        .into_iter()
        .enumerate()
        .map(|(index, socket)| {
            let (handler, stop, runtime) = (handler.clone(), stop.clone(), runtime.clone());
            let limiter = limiter.clone();
            let counters = metrics.udp_worker();
            tokio::task::spawn_blocking(move || {
                name_this_thread(&format!("roster-udp-{index}"));
                if udp_affinity {
                    match steering::pin_to_steered_cpus(index, sockets) {
                        Ok(true) => {
                            debug!(index, "UDP thread pinned to its socket's CPUs")
                        }
                        Ok(false) => warn!(
                            index,
                            "none of this UDP socket's CPUs is allowed; its thread is not pinned"
                        ),
                        Err(error) => {
                            warn!(%error, index, "cannot pin the UDP thread; it runs unpinned")
                        }
                    }
                }
                udp::serve(socket, handler, counters, limiter, stop, runtime)
            })
        })
        .collect();
    let tcp = tokio::spawn(tcp::serve(
        tcp,
        handler,
        metrics.clone(),
        tcp_max_connections,
        tcp_timeouts,
        stop.clone(),
    ));
    DnsServer {
        tcp: Some(tcp),
        udp,
        stop,
        limiter,
    }
}

/// Names the calling thread (Linux: what `top -H`, `perf` and
/// `/proc/PID/task/*/comm` show), so that a UDP thread is told from the
/// runtime's workers, whose pool it is borrowed from. At most 15 bytes are
/// kept; elsewhere, or if /proc is not there, it does nothing.
fn name_this_thread(name: &str) {
    #[cfg(target_os = "linux")]
    if let Err(error) = std::fs::write("/proc/thread-self/comm", name) {
        tracing::debug!(%error, name, "cannot name the thread");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = name;
}
