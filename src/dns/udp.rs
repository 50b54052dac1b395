//! roster's UDP loop: one task per SO_REUSEPORT socket that reads a query,
//! runs the hickory [`RequestHandler`] on it inline and sends the answer
//! straight from the same task.
//!
//! hickory-server's own UDP loop spawns a task per query and hands each
//! response to the socket task through a channel; at tens of thousands of
//! queries per second that hop and the allocations around it cost more than
//! answering does. roster keeps hickory's request parsing, handler trait and
//! response encoding, and replaces only the socket loop. TCP stays hickory's.
//!
//! Before hickory parses anything, the common questions (A, AAAA, SRV at a
//! service name) are tried on the allocation-free fast path
//! ([`super::fast`]), which answers from the raw datagram into this loop's
//! reused buffer.

use std::{cell::RefCell, net::SocketAddr, sync::Arc};

use hickory_proto::{
    op::{Header, HeaderCounts, MessageType, Metadata, ResponseCode},
    rr::Record,
    serialize::binary::{BinDecodable, BinDecoder, BinEncoder},
};
use hickory_server::{
    net::{NetError, runtime::TokioTime, xfer::Protocol},
    server::{Request, RequestHandler, ResponseHandler, ResponseInfo},
    zone_handler::MessageResponse,
};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::DnsHandler;

/// Largest datagram roster reads; EDNS queries are far smaller.
const MAX_QUERY_LEN: usize = 4096;

thread_local! {
    /// Encoding buffer, reused across responses on this thread.
    static ENCODE_BUFFER: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(4096));
}

/// Serves queries arriving on `socket` until `shutdown` is cancelled.
pub async fn serve(socket: Arc<UdpSocket>, handler: DnsHandler, shutdown: CancellationToken) {
    let mut buffer = vec![0u8; MAX_QUERY_LEN];
    // The fast path's answers, reused by this loop for every query.
    let mut answer = Vec::with_capacity(MAX_QUERY_LEN);
    loop {
        let received = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            received = socket.recv_from(&mut buffer) => received,
        };
        let (len, src) = match received {
            Ok(received) => received,
            Err(error) => {
                // ICMP errors surface here on some systems; the socket is
                // still good.
                debug!(%error, "UDP receive failed");
                continue;
            }
        };
        if src.port() == 0 || src.ip().is_unspecified() {
            continue; // No way to answer; never reflect to port 0.
        }
        let query = &buffer[..len];
        if handler.answer_fast(query, &mut answer) {
            send_fast(&socket, &answer, src).await;
            continue;
        }
        let request = match Request::from_bytes(query.to_vec(), src, Protocol::Udp) {
            Ok(request) => request,
            Err(_) => {
                answer_form_error(&socket, query, src).await;
                continue;
            }
        };
        if request.metadata.message_type == MessageType::Response {
            continue; // Answering responses would make roster a reflector.
        }
        let responder = UdpResponder {
            socket: socket.clone(),
            destination: src,
        };
        handler
            .handle_request::<_, TokioTime>(&request, responder)
            .await;
    }
}

/// Sends a fast-path answer; waits for room only if the socket buffer is
/// full.
async fn send_fast(socket: &UdpSocket, answer: &[u8], destination: SocketAddr) {
    let result = match socket.try_send_to(answer, destination) {
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
            socket.send_to(answer, destination).await
        }
        result => result,
    };
    if let Err(error) = result {
        debug!(%error, %destination, "UDP send failed");
    }
}

/// A query whose header parses but whose body does not gets FORMERR;
/// anything shorter than a header is dropped.
async fn answer_form_error(socket: &UdpSocket, query: &[u8], src: SocketAddr) {
    let mut decoder = BinDecoder::new(query);
    let Ok(header) = Header::read(&mut decoder) else {
        return;
    };
    if header.metadata.message_type == MessageType::Response {
        return;
    }
    let mut metadata = Metadata::response_from_request(&header.metadata);
    metadata.response_code = ResponseCode::FormErr;
    let response = Header {
        metadata,
        counts: HeaderCounts::default(),
    };
    let mut bytes = Vec::with_capacity(12);
    let mut encoder = BinEncoder::new(&mut bytes);
    if hickory_proto::serialize::binary::BinEncodable::emit(&response, &mut encoder).is_ok() {
        let _ = socket.send_to(&bytes, src).await;
    }
}

/// Sends one response on the socket the query came in on.
#[derive(Clone)]
struct UdpResponder {
    socket: Arc<UdpSocket>,
    destination: SocketAddr,
}

#[async_trait::async_trait]
impl ResponseHandler for UdpResponder {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        // The size limit is the response's own OPT payload size, which the
        // handler set to what the client offered (512 without EDNS).
        let limit = response.edns().map_or(512, |edns| edns.max_payload());
        let sent = ENCODE_BUFFER.with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            buffer.clear();
            let mut encoder = BinEncoder::new(&mut buffer);
            encoder.set_max_size(limit);
            let info = response.destructive_emit(&mut encoder)?;
            // Send from the reused buffer; only a full socket buffer makes
            // a copy, to wait for room without holding the thread's buffer.
            let backlog = match self.socket.try_send_to(&buffer, self.destination) {
                Ok(_) => None,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    Some(buffer.clone())
                }
                Err(error) => {
                    debug!(%error, destination = %self.destination, "UDP send failed");
                    None
                }
            };
            Ok::<_, NetError>((info, backlog))
        });
        let (info, backlog) = sent?;
        if let Some(bytes) = backlog
            && let Err(error) = self.socket.send_to(&bytes, self.destination).await
        {
            warn!(%error, "UDP send failed");
        }
        Ok(info)
    }
}
