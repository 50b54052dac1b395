//! roster's UDP loop: one OS thread per SO_REUSEPORT socket that reads a
//! batch of queries with one system call, answers them, and sends the
//! answers back with one more.
//!
//! On loopback most of a DNS server's time is spent in the kernel, and a
//! good part of that is per-system-call overhead. So on Linux each thread
//! blocks in `recvmmsg` (up to [`BATCH`] datagrams per call, waiting only
//! for the first), answers every query the allocation-free fast path
//! ([`super::fast`]) takes into a per-entry reused buffer, and sends all those
//! answers with one `sendmmsg`. No readiness polling, no task wake-ups, no
//! channel hops. Elsewhere the same loop runs one datagram per call.
//!
//! Queries the fast path declines go through hickory's request parsing,
//! handler trait and response encoding, driven to completion on this thread
//! with the runtime's [`Handle::block_on`] (the handler waits on nothing but
//! the socket), after the checks of [`super::precheck`] that TCP runs too.
//! TCP has its own loop ([`super::tcp`]) and no fast path.
//!
//! The socket is put in blocking mode with a receive timeout, so the thread
//! notices `shutdown` within [`SHUTDOWN_POLL`].
//!
//! Each thread counts what it receives and sends in a counter block of its
//! own ([`UdpCounters`]), which only it writes: a plain add per query, no
//! lock and no shared cache line. Latency is taken per batch: one clock
//! read when `recvmmsg` returns and one after `sendmmsg`, and every fast
//! answer of the batch is recorded with that one duration, which is what
//! each of those clients waited inside roster (two clock reads per batch
//! rather than per query: a vDSO clock read costs about as much as the
//! fast path's counting itself). General-path answers, each one
//! allocating far more already, read the clock once more each.

// recvmmsg/sendmmsg through libc: no safe wrapper batches datagrams.
#![allow(unsafe_code)]

use std::{
    cell::RefCell,
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    sync::Arc,
    time::{Duration, Instant},
};

use hickory_proto::{
    ProtoError,
    op::{Header, HeaderCounts, MessageType, Metadata, ResponseCode},
    rr::Record,
    serialize::binary::{BinDecodable, BinDecoder, BinEncoder},
};
use hickory_server::{
    net::{NetError, runtime::TokioTime, xfer::Protocol},
    server::{Request, RequestHandler, ResponseHandler, ResponseInfo},
    zone_handler::MessageResponse,
};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::metrics::dns::UdpCounters;

use super::{
    CookieSeen, CookieTally, DnsHandler,
    precheck::{self, question_type},
    rrl::{self, RateLimiter, Verdict},
    service_cache::ServiceCache,
    wire::{self, HEADER_LEN},
};

/// Largest datagram roster reads; EDNS queries are far smaller.
const MAX_QUERY_LEN: usize = 4096;
/// Datagrams read (and answers sent) per system call at most; the fast path
/// answers them as one batch.
const BATCH: usize = super::fast::MAX_BATCH;
/// Service-cache buckets checked for retired records each time a receive
/// times out (every [`SHUTDOWN_POLL`] while idle).
const IDLE_RELEASE: usize = 4096;
/// How long a receive waits before the thread checks for shutdown.
const SHUTDOWN_POLL: Duration = Duration::from_millis(100);
/// Malformed datagrams are counted, and the count logged at most this
/// often: anyone can send them from a spoofed source, so one log line per
/// datagram would let them fill the operator's disk.
const MALFORMED_LOG_INTERVAL: Duration = Duration::from_secs(10);

thread_local! {
    /// Encoding buffer for the general path, reused on this thread.
    static ENCODE_BUFFER: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(4096));
}

/// Serves queries arriving on `socket` until `shutdown` is cancelled. Runs
/// on a thread of its own (blocking); `runtime` drives the general path.
/// With a `limiter` (response-rate limiting on), every answer about to be
/// sent asks it first (see [`super::rrl`]). Counts into `counters`, which
/// this thread alone writes.
pub(super) fn serve(
    socket: UdpSocket,
    handler: DnsHandler,
    counters: UdpCounters,
    limiter: Option<Arc<RateLimiter>>,
    shutdown: CancellationToken,
    runtime: Handle,
) {
    if let Err(error) = socket
        .set_nonblocking(false)
        .and_then(|()| socket.set_read_timeout(Some(SHUTDOWN_POLL)))
    {
        warn!(%error, "cannot set up the DNS UDP socket; not serving on it");
        return;
    }
    let socket = Arc::new(socket);
    let mut batch = Batch::new();
    // The fast path's answers, one reused buffer per entry.
    let mut answers: Vec<Vec<u8>> = (0..BATCH)
        .map(|_| Vec::with_capacity(MAX_QUERY_LEN))
        .collect();
    let mut cache = ServiceCache::default();
    let mut fast = Vec::with_capacity(BATCH);
    let mut general = Vec::with_capacity(BATCH);
    let mut errors_in_a_row = 0u32;
    let mut malformed = MalformedLog::new(Instant::now());
    while !shutdown.is_cancelled() {
        let count = match batch.receive(&socket) {
            Ok(count) => {
                errors_in_a_row = 0;
                count
            }
            Err(error) => {
                use std::io::ErrorKind::{Interrupted, TimedOut, WouldBlock};
                if matches!(error.kind(), WouldBlock | TimedOut) {
                    // Idle: let go of records the table no longer holds,
                    // and report what the last burst of junk was.
                    cache.release_retired(IDLE_RELEASE);
                    malformed.flush(Instant::now());
                } else if error.kind() != Interrupted {
                    // ICMP errors surface here on some systems; the socket
                    // is still good. Never spin on a persistent error.
                    debug!(%error, "UDP receive failed");
                    errors_in_a_row += 1;
                    if errors_in_a_row > 100 {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                continue;
            }
        };
        let received = Instant::now();
        fast.clear();
        general.clear();
        // Queries that cannot be answered are left empty, which the fast
        // path declines.
        let mut sources: [Option<SocketAddr>; BATCH] = [None; BATCH];
        let mut queries: [&[u8]; BATCH] = [&[]; BATCH];
        for (entry, (source, query)) in sources.iter_mut().zip(&mut queries).enumerate().take(count)
        {
            *source = batch.peer(entry).filter(|&source| answerable(source));
            if source.is_some() {
                *query = batch.query(entry);
                counters.count_request(question_type(query));
            }
        }
        let mut answered = [false; BATCH];
        let clients = sources.map(|source| source.map(|source| source.ip()));
        let cookies_seen = handler.answer_fast_batch(
            &queries[..count],
            &clients[..count],
            &mut cache,
            &mut answers,
            &mut answered,
        );
        for (entry, (source, answered)) in sources.iter().zip(answered).enumerate().take(count) {
            match source {
                Some(_) if answered => fast.push(entry),
                Some(source) => general.push((entry, *source)),
                None => {}
            }
        }
        // One branch per batch when rate limiting is off.
        let now = limiter.as_deref().map(|limiter| {
            let now = limiter.now();
            // A server cookie roster made for the source proves it is not
            // forged: such answers are never limited. The fast path has
            // checked each answered query's cookie already.
            let proven = |entry: usize| {
                matches!(
                    cookies_seen[entry],
                    Some(CookieSeen::Valid | CookieSeen::ValidAccepted)
                )
            };
            limit_fast(limiter, now, &sources, proven, &mut fast, &mut answers);
            now
        });
        batch.send(&socket, &fast, &answers);
        // Fast answers are all NOERROR and never truncated (the general
        // path owns both), so a count and one duration say it all.
        counters.count_fast_answers(fast.len() as u64, received.elapsed());
        // Like the general path's, the answers sent: not those dropped.
        let mut tally = CookieTally::default();
        for seen in fast.iter().filter_map(|&entry| cookies_seen[entry]) {
            tally[seen as usize] += 1;
        }
        counters.count_cookies(&tally);
        for &(entry, source) in &general {
            let slip = match (limiter.as_deref(), now) {
                // A server cookie roster made for this address proves the
                // source is not forged: its answers are never limited.
                (Some(limiter), Some(now))
                    if !handler.has_valid_cookie(batch.query(entry), source.ip()) =>
                {
                    // Decided before the answer is built: a dropped one costs
                    // nothing more.
                    let mut verdict = [Verdict::Send];
                    limiter.decide([source.ip()], now, &mut verdict);
                    match verdict[0] {
                        Verdict::Send => false,
                        Verdict::Slip => true,
                        Verdict::Drop => continue,
                    }
                }
                _ => false,
            };
            let reply = SocketReply {
                socket: socket.clone(),
                destination: source,
                slip,
            };
            if DnsHandler::is_update(batch.query(entry)) {
                // An UPDATE waits for its commit: on the runtime, never on
                // this thread, which must go on answering. Its answer is
                // not counted (the counters are this thread's).
                if let Some(slot) = handler.update_slot() {
                    let (handler, query) = (handler.clone(), batch.query(entry).to_vec());
                    runtime.spawn(async move {
                        let _slot = slot;
                        answer_general(&handler, &query, source, reply).await
                    });
                }
                continue;
            }
            let outcome =
                runtime.block_on(answer_general(&handler, batch.query(entry), source, reply));
            if let Some(sent) = outcome.sent {
                counters.count_response(sent.rcode, sent.truncated, received.elapsed());
            }
            if outcome.malformed {
                malformed.record(Instant::now());
            }
        }
    }
}

/// Asks `limiter` about the fast path's answers (`fast`, entries of a
/// batch from `sources`) but the `proven` ones: drops the ones over the
/// limit from `fast` and slips the ones whose turn it is, in place. No
/// allocation.
fn limit_fast(
    limiter: &RateLimiter,
    now: u64,
    sources: &[Option<SocketAddr>; BATCH],
    proven: impl Fn(usize) -> bool,
    fast: &mut Vec<usize>,
    answers: &mut [Vec<u8>],
) {
    let mut limited = [0usize; BATCH];
    let mut count = 0;
    for &entry in fast.iter().filter(|&&entry| !proven(entry)) {
        limited[count] = entry;
        count += 1;
    }
    let limited = &limited[..count];
    let ips = limited.iter().map(|&entry| {
        sources[entry].map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |source| source.ip())
    });
    let mut verdicts = [Verdict::Send; BATCH];
    if !limiter.decide(ips, now, &mut verdicts) {
        return;
    }
    let mut dropped = [false; BATCH];
    for (&entry, verdict) in limited.iter().zip(verdicts) {
        match verdict {
            Verdict::Drop => dropped[entry] = true,
            Verdict::Slip => rrl::slip(&mut answers[entry]),
            Verdict::Send => {}
        }
    }
    fast.retain(|&entry| !dropped[entry]);
}

/// Whether a datagram from `source` can be answered: never reflect to port
/// 0 or to the unspecified address.
fn answerable(source: SocketAddr) -> bool {
    source.port() != 0 && !source.ip().is_unspecified()
}

/// What the general path did with a datagram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct General {
    /// The answer it sent, if any (a response is ignored; a datagram
    /// shorter than a header is dropped).
    pub(super) sent: Option<Sent>,
    /// Malformed: answered FORMERR, or dropped if not even the header reads.
    pub(super) malformed: bool,
}

/// What an answer said, for the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Sent {
    /// The RCODE, extended RCODEs (BADVERS) included.
    pub(super) rcode: u16,
    /// Whether it went out truncated (TC) to fit.
    pub(super) truncated: bool,
}

impl General {
    fn malformed(sent: Option<Sent>) -> Self {
        Self {
            sent,
            malformed: true,
        }
    }
}

/// Where the general path sends its answer: the socket the query came in
/// on, or a buffer in tests and the fuzzer.
pub(super) trait Reply: Clone + Send + Sync + Unpin + 'static {
    fn send(&self, bytes: &[u8]);
}

/// Answers one query through hickory: parse, handler, encode, send. The
/// handler waits on nothing, so the future completes on its first poll.
///
/// Malformed queries are not logged one by one (see [`MalformedLog`]): the
/// caller counts them. That includes EDNS options whose lengths do not add
/// up, which hickory would otherwise accept with a WARN log line per
/// datagram, and questions that only decode by pointing outside the
/// question section (see [`precheck`]).
pub(super) async fn answer_general<R: Reply>(
    handler: &DnsHandler,
    query: &[u8],
    source: SocketAddr,
    reply: R,
) -> General {
    if !precheck::well_formed(query) {
        return General::malformed(answer_form_error(query, &reply));
    }
    let request = match Request::from_bytes(query.to_vec(), source, Protocol::Udp) {
        Ok(request) => request,
        Err(_) => return General::malformed(answer_form_error(query, &reply)),
    };
    if request.metadata.message_type == MessageType::Response {
        return General::default(); // Answering responses would make roster a reflector.
    }
    let responder = UdpResponder(reply);
    let info = handler
        .handle_request::<_, TokioTime>(&request, responder)
        .await;
    General {
        sent: Some(Sent {
            rcode: u16::from(info.response_code),
            truncated: info.truncation,
        }),
        malformed: false,
    }
}

/// A query whose header parses but whose body does not gets FORMERR;
/// anything shorter than a header is dropped. Returns what it sent.
fn answer_form_error(query: &[u8], reply: &impl Reply) -> Option<Sent> {
    let mut decoder = BinDecoder::new(query);
    let Ok(header) = Header::read(&mut decoder) else {
        return None;
    };
    if header.metadata.message_type == MessageType::Response {
        return None;
    }
    let mut metadata = Metadata::response_from_request(&header.metadata);
    metadata.response_code = ResponseCode::FormErr;
    let response = Header {
        metadata,
        counts: HeaderCounts::default(),
    };
    let mut bytes = Vec::with_capacity(HEADER_LEN);
    let mut encoder = BinEncoder::new(&mut bytes);
    hickory_proto::serialize::binary::BinEncodable::emit(&response, &mut encoder).ok()?;
    reply.send(&bytes);
    Some(Sent {
        rcode: u16::from(ResponseCode::FormErr),
        truncated: false,
    })
}

/// Counts malformed datagrams and logs the count at most once per
/// [`MALFORMED_LOG_INTERVAL`], instead of a line per datagram.
pub(super) struct MalformedLog {
    /// Malformed datagrams since the last line.
    count: u64,
    /// When the last line was written (or the count began).
    since: Instant,
}

impl MalformedLog {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            count: 0,
            since: now,
        }
    }

    /// Counts one malformed datagram, and logs if the interval is over.
    pub(super) fn record(&mut self, now: Instant) {
        self.count += 1;
        self.flush(now);
    }

    /// Logs the count if there is one and the interval since the last line
    /// is over; returns whether it did.
    pub(super) fn flush(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.since);
        if self.count == 0 || elapsed < MALFORMED_LOG_INTERVAL {
            return false;
        }
        warn!(
            count = self.count,
            "{} malformed DNS queries over UDP in the last {}s (answered FORMERR or dropped)",
            self.count,
            elapsed.as_secs()
        );
        self.count = 0;
        self.since = now;
        true
    }
}

/// Sends to the source of the query, on the socket it came in on.
#[derive(Clone)]
struct SocketReply {
    socket: Arc<UdpSocket>,
    destination: SocketAddr,
    /// Over the rate limit, and this answer's turn to go out truncated
    /// ([`rrl::slip`]).
    slip: bool,
}

impl Reply for SocketReply {
    fn send(&self, bytes: &[u8]) {
        let slipped;
        let bytes = if self.slip {
            let mut copy = bytes.to_vec();
            rrl::slip(&mut copy);
            slipped = copy;
            &slipped[..]
        } else {
            bytes
        };
        // A blocking send on this socket's own thread: it waits only if the
        // socket buffer is full.
        if let Err(error) = self.socket.send_to(bytes, self.destination) {
            debug!(%error, destination = %self.destination, "UDP send failed");
        }
    }
}

/// hickory's side of a [`Reply`]: encodes the response for UDP.
#[derive(Clone)]
struct UdpResponder<R>(R);

#[async_trait::async_trait]
impl<R: Reply> ResponseHandler for UdpResponder<R> {
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
        ENCODE_BUFFER.with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            let info = encode_response(response, &mut buffer)?;
            self.0.send(&buffer);
            Ok(info)
        })
    }
}

/// Encodes `response` into `buffer` (cleared first) as it goes out over
/// UDP: within the response's own OPT payload size, which the handler set to
/// what the client offered, or 512 without EDNS.
pub(super) fn encode_response<'a>(
    response: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    buffer: &mut Vec<u8>,
) -> Result<ResponseInfo, ProtoError> {
    let limit = wire::udp_limit(response.edns().map(|edns| edns.max_payload()));
    buffer.clear();
    let mut encoder = BinEncoder::new(buffer);
    encoder.set_max_size(limit);
    response.destructive_emit(&mut encoder)
}

/// Room for one source address as the kernel writes it (`sockaddr_in` or
/// `sockaddr_in6`).
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct RawAddress([u8; 28]);

/// Received datagrams: [`BATCH`] entries of [`MAX_QUERY_LEN`] bytes, each with
/// its length and source address.
struct Batch {
    data: Box<[u8]>,
    lens: [usize; BATCH],
    peers: [Option<SocketAddr>; BATCH],
    /// The source addresses as received, to send the answers back to.
    #[cfg(target_os = "linux")]
    names: [RawAddress; BATCH],
    #[cfg(target_os = "linux")]
    name_lens: [libc::socklen_t; BATCH],
}

impl Batch {
    fn new() -> Self {
        Self {
            data: vec![0u8; BATCH * MAX_QUERY_LEN].into_boxed_slice(),
            lens: [0; BATCH],
            peers: [None; BATCH],
            #[cfg(target_os = "linux")]
            names: [RawAddress([0; 28]); BATCH],
            #[cfg(target_os = "linux")]
            name_lens: [0; BATCH],
        }
    }

    fn query(&self, entry: usize) -> &[u8] {
        let start = entry * MAX_QUERY_LEN;
        &self.data[start..start + self.lens[entry]]
    }

    fn peer(&self, entry: usize) -> Option<SocketAddr> {
        self.peers[entry]
    }

    /// Waits (up to the socket's read timeout) for at least one datagram,
    /// then takes every one already queued, up to [`BATCH`]. Returns how
    /// many entries are filled.
    #[cfg(target_os = "linux")]
    fn receive(&mut self, socket: &UdpSocket) -> std::io::Result<usize> {
        use std::os::fd::AsRawFd;

        let data = self.data.as_mut_ptr();
        let names = self.names.as_mut_ptr();
        let mut iovecs = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; BATCH];
        for (entry, iovec) in iovecs.iter_mut().enumerate() {
            iovec.iov_base = data.wrapping_add(entry * MAX_QUERY_LEN).cast();
            iovec.iov_len = MAX_QUERY_LEN;
        }
        let iovec_base = iovecs.as_mut_ptr();
        // SAFETY: `mmsghdr` is a plain C struct of integers and raw
        // pointers, for which all-zero is a valid value.
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (entry, header) in headers.iter_mut().enumerate() {
            header.msg_hdr.msg_name = names.wrapping_add(entry).cast();
            header.msg_hdr.msg_namelen = size_of::<RawAddress>() as libc::socklen_t;
            header.msg_hdr.msg_iov = iovec_base.wrapping_add(entry);
            header.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `headers` holds BATCH entries, each pointing at its own
        // iovec (in `iovecs`) over a distinct MAX_QUERY_LEN-byte entry of
        // `self.data`, and at its own RawAddress (in `self.names`) with
        // msg_namelen set to its size. All of them are live and not
        // otherwise accessed until the call returns; the kernel writes at
        // most those lengths. A null timeout is allowed.
        let received = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        let Ok(count) = usize::try_from(received) else {
            return Err(std::io::Error::last_os_error());
        };
        let count = count.min(BATCH);
        for (entry, header) in headers.iter().enumerate().take(count) {
            self.lens[entry] = (header.msg_len as usize).min(MAX_QUERY_LEN);
            self.name_lens[entry] = header.msg_hdr.msg_namelen;
            self.peers[entry] = parse_address(&self.names[entry].0, header.msg_hdr.msg_namelen);
        }
        Ok(count)
    }

    /// Sends `answers[entry]` to the source of each entry in `entries`, as few
    /// system calls as the kernel allows. A datagram the kernel refuses is
    /// logged and skipped.
    #[cfg(target_os = "linux")]
    fn send(&mut self, socket: &UdpSocket, entries: &[usize], answers: &[Vec<u8>]) {
        use std::os::fd::AsRawFd;

        let entries = &entries[..entries.len().min(BATCH)];
        if entries.is_empty() {
            return;
        }
        let mut iovecs = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; BATCH];
        for (iovec, &entry) in iovecs.iter_mut().zip(entries) {
            // The kernel only reads through iov_base in sendmmsg.
            iovec.iov_base = answers[entry].as_ptr().cast_mut().cast();
            iovec.iov_len = answers[entry].len();
        }
        let iovec_base = iovecs.as_mut_ptr();
        let names = self.names.as_mut_ptr();
        // SAFETY: as in `receive`: all-zero is a valid `mmsghdr`.
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (index, (header, &entry)) in headers.iter_mut().zip(entries).enumerate() {
            header.msg_hdr.msg_name = names.wrapping_add(entry).cast();
            header.msg_hdr.msg_namelen = self.name_lens[entry];
            header.msg_hdr.msg_iov = iovec_base.wrapping_add(index);
            header.msg_hdr.msg_iovlen = 1;
        }
        let mut start = 0;
        while start < entries.len() {
            let pending = &mut headers[start..entries.len()];
            // SAFETY: `pending` holds `pending.len()` initialised headers,
            // each pointing at one live iovec over an answer buffer and at
            // the source address the kernel wrote for that entry, with its
            // length. The kernel only reads them (and writes msg_len).
            let sent = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    pending.as_mut_ptr(),
                    pending.len() as libc::c_uint,
                    0,
                )
            };
            match usize::try_from(sent) {
                Ok(sent) if sent > 0 => start += sent,
                _ => {
                    let error = std::io::Error::last_os_error();
                    if error.kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    debug!(%error, "UDP send failed");
                    start += 1; // Skip the datagram the kernel refused.
                }
            }
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn receive(&mut self, socket: &UdpSocket) -> std::io::Result<usize> {
        let (len, source) = socket.recv_from(&mut self.data[..MAX_QUERY_LEN])?;
        self.lens[0] = len;
        self.peers[0] = Some(source);
        Ok(1)
    }

    #[cfg(not(target_os = "linux"))]
    fn send(&mut self, socket: &UdpSocket, entries: &[usize], answers: &[Vec<u8>]) {
        for &entry in entries {
            if let Some(destination) = self.peers[entry]
                && let Err(error) = socket.send_to(&answers[entry], destination)
            {
                debug!(%error, %destination, "UDP send failed");
            }
        }
    }
}

/// Reads a `sockaddr_in` or `sockaddr_in6` from the bytes the kernel wrote
/// (Linux layout: family in host order, then port in network order).
#[cfg(target_os = "linux")]
fn parse_address(bytes: &[u8; 28], len: libc::socklen_t) -> Option<SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

    let len = usize::try_from(len).ok()?;
    let family = libc::sa_family_t::from_ne_bytes([bytes[0], bytes[1]]);
    let port = u16::from_be_bytes([bytes[2], bytes[3]]);
    match i32::from(family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            let ip = Ipv4Addr::new(bytes[4], bytes[5], bytes[6], bytes[7]);
            Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            let flow = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&bytes[8..24]);
            let scope = u32::from_ne_bytes([bytes[24], bytes[25], bytes[26], bytes[27]]);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                flow,
                scope,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::{
        op::{Edns, Message, Query},
        rr::{Name, RecordType},
    };

    use super::*;

    /// Several datagrams from several clients arrive in one batch with
    /// the right bytes and sources, and each client gets its own answer.
    fn round_trip(server_address: &str) {
        let Ok(server) = UdpSocket::bind(server_address) else {
            return; // No such address family here (e.g. no IPv6).
        };
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let server_address = server.local_addr().expect("address");
        let clients: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind((server_address.ip(), 0)).expect("client"))
            .collect();
        for (index, client) in clients.iter().enumerate() {
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            client
                .send_to(&[index as u8; 20], server_address)
                .expect("send");
        }
        let mut batch = Batch::new();
        let mut received = Vec::new();
        while received.len() < clients.len() {
            let count = batch.receive(&server).expect("receive");
            assert!(count >= 1);
            for entry in 0..count {
                received.push((entry, batch.query(entry).to_vec(), batch.peer(entry)));
            }
            let answers: Vec<Vec<u8>> = (0..BATCH)
                .map(|entry| batch.query(entry).iter().map(|b| b + 100).collect())
                .collect();
            let entries: Vec<usize> = (0..count).collect();
            batch.send(&server, &entries, &answers);
        }
        for (index, client) in clients.iter().enumerate() {
            let source = client.local_addr().expect("address");
            assert!(
                received
                    .iter()
                    .any(|(_, bytes, peer)| *peer == Some(source) && *bytes == [index as u8; 20]),
                "{source} not received"
            );
            let mut buffer = [0u8; 64];
            let (len, from) = client.recv_from(&mut buffer).expect("answer");
            assert_eq!(from, server_address);
            assert_eq!(&buffer[..len], &[index as u8 + 100; 20]);
        }
    }

    #[test]
    fn batches_round_trip_over_ipv4() {
        round_trip("127.0.0.1:0");
    }

    #[test]
    fn batches_round_trip_over_ipv6() {
        round_trip("[::1]:0");
    }

    /// A query through the UDP path as the loop runs it: its answer (if
    /// any), and whether it counted as malformed.
    fn through_udp_path(query: &[u8]) -> (Option<Message>, bool) {
        let mut target = super::super::fuzzing::UdpTarget::new();
        let (answer, malformed) = target.answer(&[query]).pop().expect("one answer");
        let answer = answer.map(|bytes| Message::from_vec(&bytes).expect("the answer decodes"));
        (answer, malformed)
    }

    fn query(name: &str, edns: Option<u16>) -> Vec<u8> {
        let mut message = Message::query();
        message.metadata.id = 0x0161;
        message.add_query(Query::query(
            Name::from_ascii(name).expect("name"),
            RecordType::A,
        ));
        if let Some(size) = edns {
            let mut opt = Edns::new();
            opt.set_max_payload(size);
            message.set_edns(opt);
        }
        message.to_vec().expect("encodes")
    }

    #[test]
    fn a_question_pointing_into_the_header_gets_a_decodable_formerr() {
        // ID 0x01 0x61 reads as the label "a"; the flags (0x01 0x00) as the
        // label "\000"; QDCOUNT's high byte ends the name. In the response
        // the flags byte is 0x81, a reserved label type: a question echoed
        // byte for byte would no longer decode.
        let mut bytes = vec![0x01, 0x61, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        bytes.extend_from_slice(&[0xC0, 0x00, 0, 1, 0, 1]);
        assert!(Message::from_vec(&bytes).is_ok(), "hickory reads the query");
        let (answer, malformed) = through_udp_path(&bytes);
        let answer = answer.expect("answered");
        assert_eq!(answer.metadata.id, 0x0161);
        assert_eq!(answer.metadata.response_code, ResponseCode::FormErr);
        assert!(malformed);

        // Pointers back into the question itself are fine: the response
        // holds the same bytes at the same place.
        let (answer, malformed) = through_udp_path(&query("web.service.local.", None));
        assert_eq!(answer.expect("answered").answers.len(), 3);
        assert!(!malformed);
    }

    /// Collects what is logged at WARN and above on this thread.
    #[derive(Clone, Default)]
    struct Lines(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn warnings<T>(f: impl FnOnce() -> T) -> (T, String) {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_writer(move || writer.clone())
            .finish();
        let result = tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8_lossy(&lines.0.lock().expect("lock")).into_owned();
        (result, text)
    }

    #[test]
    fn malformed_edns_options_are_counted_not_logged() {
        // An OPT whose RDATA holds an option code and nothing more.
        let mut bytes = query("web.service.local.", Some(1232));
        let rdlength = bytes.len() - 2;
        bytes[rdlength + 1] = 2;
        bytes.extend_from_slice(&[0, 10]);
        let ((answer, malformed), logged) = warnings(|| through_udp_path(&bytes));
        assert_eq!(logged, "", "one spoofable datagram, one log line");
        assert_eq!(
            answer.expect("answered").metadata.response_code,
            ResponseCode::FormErr
        );
        assert!(malformed);
    }

    #[test]
    fn malformed_datagrams_are_logged_once_per_interval() {
        let start = Instant::now();
        let (lines, logged) = warnings(|| {
            let mut log = MalformedLog::new(start);
            let mut lines = 0;
            for n in 0..1000 {
                lines += usize::from(log.flush(start + Duration::from_millis(n)));
                log.record(start + Duration::from_millis(n));
            }
            // Nothing more to say once the count is out.
            let later = start + MALFORMED_LOG_INTERVAL;
            lines += usize::from(log.flush(later));
            lines += usize::from(log.flush(later + MALFORMED_LOG_INTERVAL));
            lines
        });
        assert_eq!(lines, 1);
        assert_eq!(logged.lines().count(), 1, "{logged}");
        assert!(logged.contains("1000 malformed DNS queries"), "{logged}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn rejects_unknown_or_short_addresses() {
        assert_eq!(parse_address(&[0u8; 28], 28), None);
        let mut short = [0u8; 28];
        short[..2].copy_from_slice(&(libc::AF_INET6 as libc::sa_family_t).to_ne_bytes());
        assert_eq!(parse_address(&short, 16), None);
    }
}
