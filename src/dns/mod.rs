//! The authoritative DNS front door: hickory-server sockets → [`DnsHandler`]
//! → name parsing ([`query`]) → answer building ([`lookup`], [`fit`]) → the
//! record table and static zones ([`zones`]).
//!
//! Owns: the DNS wire protocol. Must not: write to the registry, or wait on
//! anything but the socket.

mod fit;
mod handler;
mod lookup;
mod query;
pub mod zones;

use std::time::Duration;

use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};

pub use handler::DnsHandler;

/// Idle TCP connections are closed after this long (RFC 7766 suggests
/// seconds, not minutes).
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses queued per TCP connection (pipelined queries).
const TCP_RESPONSE_BUFFER: usize = 64;

/// Starts serving on already-bound sockets.
pub fn serve(handler: DnsHandler, udp: Vec<UdpSocket>, tcp: TcpListener) -> Server<DnsHandler> {
    let mut server = Server::new(handler);
    for socket in udp {
        server.register_socket(socket);
    }
    server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
    server
}
