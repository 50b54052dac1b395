//! The authoritative DNS front door: roster's UDP threads and hickory's TCP
//! server → [`DnsHandler`]
//! → name parsing ([`query`]) → answer building ([`lookup`], [`fit`]) → the
//! record table and static zones ([`zones`]). The common UDP questions (A,
//! AAAA, SRV at a service name) skip hickory on an allocation-free fast path
//! ([`fast`]) that answers exactly as the handler would.
//!
//! Owns: the DNS wire protocol. Must not: write to the registry, or wait on
//! anything but the socket.

mod fast;
mod fit;
#[doc(hidden)]
pub mod fuzzing;
mod handler;
mod lookup;
mod query;
mod service_cache;
mod udp;
pub mod zones;

use std::time::Duration;

use hickory_server::Server;
use tokio::{net::TcpListener, runtime::Handle, task::JoinHandle};
use tokio_util::sync::CancellationToken;

pub use handler::DnsHandler;

/// Idle TCP connections are closed after this long (RFC 7766 suggests
/// seconds, not minutes).
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses queued per TCP connection (pipelined queries).
const TCP_RESPONSE_BUFFER: usize = 64;

/// The running DNS server: roster's UDP threads and hickory's TCP server.
/// Dropping it stops the UDP threads too (the runtime waits for them).
pub struct DnsServer {
    tcp: Server<DnsHandler>,
    udp: Vec<JoinHandle<()>>,
    stop_udp: CancellationToken,
}

impl DnsServer {
    /// Stops accepting queries and waits for the loops to end.
    pub async fn shutdown(mut self) {
        self.stop_udp.cancel();
        for thread in std::mem::take(&mut self.udp) {
            let _ = thread.await;
        }
        let _ = self.tcp.shutdown_gracefully().await;
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop_udp.cancel();
    }
}

/// Starts serving on already-bound sockets: each UDP socket gets a blocking
/// thread of its own (see [`udp`]).
pub fn serve(handler: DnsHandler, udp: Vec<std::net::UdpSocket>, tcp: TcpListener) -> DnsServer {
    let stop_udp = CancellationToken::new();
    let runtime = Handle::current();
    let udp = udp
        .into_iter()
        .map(|socket| {
            let (handler, stop, runtime) = (handler.clone(), stop_udp.clone(), runtime.clone());
            tokio::task::spawn_blocking(move || udp::serve(socket, handler, stop, runtime))
        })
        .collect();
    let mut server = Server::new(handler);
    server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
    DnsServer {
        tcp: server,
        udp,
        stop_udp,
    }
}
