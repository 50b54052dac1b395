//! The authoritative DNS front door: hickory-server sockets → [`DnsHandler`]
//! → name parsing ([`query`]) → answer building ([`lookup`], [`fit`]) → the
//! record table and static zones ([`zones`]). The common UDP questions (A,
//! AAAA, SRV at a service name) skip hickory on an allocation-free fast path
//! ([`fast`]) that answers exactly as the handler would.
//!
//! Owns: the DNS wire protocol. Must not: write to the registry, or wait on
//! anything but the socket.

mod fast;
mod fit;
mod handler;
mod lookup;
mod query;
mod udp;
pub mod zones;

use std::{sync::Arc, time::Duration};

use hickory_server::Server;
use tokio::{
    net::{TcpListener, UdpSocket},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

pub use handler::DnsHandler;

/// Idle TCP connections are closed after this long (RFC 7766 suggests
/// seconds, not minutes).
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses queued per TCP connection (pipelined queries).
const TCP_RESPONSE_BUFFER: usize = 64;

/// The running DNS server: roster's UDP loops and hickory's TCP server.
pub struct DnsServer {
    tcp: Server<DnsHandler>,
    udp: Vec<JoinHandle<()>>,
    stop_udp: CancellationToken,
}

impl DnsServer {
    /// Stops accepting queries and waits for the loops to end.
    pub async fn shutdown(mut self) {
        self.stop_udp.cancel();
        for task in self.udp {
            let _ = task.await;
        }
        let _ = self.tcp.shutdown_gracefully().await;
    }
}

/// Starts serving on already-bound sockets.
pub fn serve(handler: DnsHandler, udp: Vec<UdpSocket>, tcp: TcpListener) -> DnsServer {
    let stop_udp = CancellationToken::new();
    let udp = udp
        .into_iter()
        .map(|socket| {
            tokio::spawn(udp::serve(
                Arc::new(socket),
                handler.clone(),
                stop_udp.clone(),
            ))
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
