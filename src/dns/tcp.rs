//! roster's DNS-over-TCP loop: one accept task, one task per connection,
//! and a table of connection slots that bounds how many are open.
//!
//! Each message is a two-octet length and then the message (RFC 1035
//! section 4.2.2). A connection reads queries one after another and answers
//! each through the same [`DnsHandler`] as every other path (the common
//! questions on its allocation-free fast path, as over UDP), so pipelined
//! queries (RFC 7766 section 6.2.1.1) are answered in the order they came;
//! answers are written out together once no further complete query is
//! already buffered, one system call for a burst. Answers are never
//! truncated: TCP carries up to 65535 octets.
//!
//! A connection is closed when it has been idle for `idle` (no complete
//! query since its last answer, which also catches a length that promises a
//! body that never comes), and when it reaches `max_age`: a client that
//! asks once every few seconds cannot hold a slot forever. At `max_age`
//! the queries already received are answered first.
//!
//! At most `max_connections` are open. When a new client arrives at the
//! cap, the connection idle the longest is closed to make room (as Knot and
//! Unbound do), so idle clients cannot lock everyone else out; when every
//! connection is answering a query, the new one is closed at once instead
//! of waiting in the kernel's backlog. When accepting fails (out of file
//! descriptors: EMFILE, ENFILE) the loop backs off from 10 ms to 1 s rather
//! than spin on a listener that stays readable, and frees a descriptor by
//! closing the longest-idle connection.
//!
//! Problems caused by clients (bad messages, resets) are logged at debug;
//! problems the operator must see (the cap reached, accept failing) at most
//! once per [`LOG_INTERVAL`], with a count of what was not logged.
//!
//! Owns: the TCP listener and its connections. Must not: answer anything
//! itself (the handler does), or block a connection's task on another's.

use std::{
    cell::RefCell,
    collections::BTreeMap,
    io,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use hickory_proto::{
    op::{Header, HeaderCounts, MessageType, Metadata, ResponseCode},
    rr::Record,
    serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder},
};
use hickory_server::{
    net::{NetError, runtime::TokioTime, xfer::Protocol},
    server::{Request, RequestHandler, ResponseHandler, ResponseInfo},
    zone_handler::MessageResponse,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinSet,
    time::{Instant, sleep, timeout, timeout_at},
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{CookieSeen, DnsHandler, precheck, service_cache::ServiceCache, wire::HEADER_LEN};
use crate::metrics::dns::DnsMetrics;

/// Octets a connection reads from its socket at a time while queries are
/// arriving: a pipelined burst of typical 30–60-octet queries fits dozens.
const READ_BUFFER: usize = 2048;
/// The first read of a burst goes into this much stack instead, so an idle
/// connection holds no buffer at all: idle connections are the common case
/// under load (hickory's loop held ~2.8 KB per idle connection, a 2 KiB
/// buffer each would have made it ~4 KB).
const FIRST_READ: usize = 64;
/// Answers are written once this many octets are waiting, even mid-burst,
/// so a burst of queries for big answers cannot pile up megabytes.
const FLUSH_AT: usize = 16 * 1024;
/// First pause after accepting fails; doubled each failure in a row.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause after accepting fails.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one log line per kind of operator-facing problem this often.
const LOG_INTERVAL: Duration = Duration::from_secs(5);
/// How long connections may take to finish their answers at shutdown
/// before they are cut off.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

thread_local! {
    /// Encoding buffer for answers, reused on each runtime thread.
    static ENCODE_BUFFER: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(4096));
    /// The fast path's service cache, one per runtime thread as each UDP
    /// thread has its own (it sweeps retired records as it is used).
    static FAST_CACHE: RefCell<ServiceCache> = RefCell::new(ServiceCache::default());
}

/// How long a DNS TCP connection may stay open.
#[derive(Clone, Copy, Debug)]
pub struct TcpTimeouts {
    /// Closed after this long without a complete query (RFC 7766 section
    /// 6.2.3 suggests seconds, not minutes).
    pub idle: Duration,
    /// Closed this long after it was accepted, once the queries already
    /// received are answered.
    pub max_age: Duration,
}

/// Serves DNS over TCP on `listener` until `stop` is cancelled, then closes
/// every connection (giving them [`SHUTDOWN_GRACE`] to finish their
/// answers) and returns.
pub(super) async fn serve(
    listener: TcpListener,
    handler: DnsHandler,
    metrics: Arc<DnsMetrics>,
    max_connections: usize,
    timeouts: TcpTimeouts,
    stop: CancellationToken,
) {
    let slots = Arc::new(Slots::new(max_connections));
    let mut connections = JoinSet::new();
    let mut backoff = Backoff::default();
    let mut accept_failures = LogLimit::default();
    let mut at_capacity = LogLimit::default();
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff.reset();
                accepted
            }
            Err(error) if client_caused(&error) => {
                debug!(%error, "DNS TCP accept failed for one client");
                continue;
            }
            Err(error) => {
                if out_of_descriptors(&error) {
                    // Make room for the clients waiting in the backlog.
                    slots.evict_oldest_idle();
                }
                let pause = backoff.next();
                if let Some(suppressed) = accept_failures.check(Instant::now()) {
                    warn!(%error, ?pause, suppressed, "cannot accept DNS TCP connections; backing off");
                }
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = sleep(pause) => continue,
                }
            }
        };
        let admission = slots.admit(Instant::now(), &stop);
        if !matches!(admission, Admission::Admitted(_))
            && let Some(suppressed) = at_capacity.check(Instant::now())
        {
            warn!(
                max_connections,
                suppressed,
                "DNS TCP connections at the cap (dns.tcp_max_connections): \
                 closing the longest-idle one, or the new one when none is idle"
            );
        }
        match admission {
            Admission::Admitted(slot) | Admission::Evicted(slot) => {
                connections.spawn(serve_connection(
                    stream,
                    peer,
                    handler.clone(),
                    metrics.clone(),
                    slot,
                    timeouts,
                ));
            }
            // Dropping the stream closes it now: the client sees the close
            // at once and can retry, rather than hang in the backlog.
            Admission::Full => drop(stream),
        }
    }
    drop(listener);
    // Each connection's token is a child of `stop`, so they are all closing.
    let finished = timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    });
    if finished.await.is_err() {
        connections.shutdown().await;
    }
}

/// Accept errors about one client's connection (it went away before it was
/// accepted), after which the next accept works at once.
fn client_caused(error: &io::Error) -> bool {
    use io::ErrorKind::{ConnectionAborted, ConnectionReset, Interrupted};
    matches!(
        error.kind(),
        ConnectionAborted | ConnectionReset | Interrupted
    )
}

/// Whether accepting failed for want of a file descriptor.
fn out_of_descriptors(error: &io::Error) -> bool {
    #[cfg(unix)]
    {
        matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
    }
    #[cfg(not(unix))]
    {
        let _ = error;
        false
    }
}

/// Serves one connection until it is idle too long, too old, closed by the
/// client, evicted or shut down.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    handler: DnsHandler,
    metrics: Arc<DnsMetrics>,
    mut slot: Slot,
    timeouts: TcpTimeouts,
) {
    // Answers are written per burst, so Nagle's algorithm would only hold
    // them back until the client's delayed ACK (~40 ms).
    if let Err(error) = stream.set_nodelay(true) {
        debug!(%error, %peer, "cannot set TCP_NODELAY");
    }
    let close = slot.close.clone();
    let retire_at = Instant::now() + timeouts.max_age;
    let (read, mut write) = stream.into_split();
    let mut reader = Incoming::new(read);
    let answers = Arc::new(Mutex::new(Vec::new()));
    let mut last_answer = Instant::now();
    loop {
        if Instant::now() >= retire_at && !complete_message(reader.buffered()) {
            debug!(%peer, "DNS TCP connection reached its maximum age");
            break;
        }
        let deadline = (last_answer + timeouts.idle).min(retire_at);
        let message = tokio::select! {
            biased;
            () = close.cancelled() => break,
            // `timeout_at` polls the read first, so a query already in the
            // buffer is taken even when the deadline has passed.
            read = timeout_at(deadline, reader.read_message()) => match read {
                Ok(Ok(Some(message))) => message,
                Ok(Ok(None)) => break,
                Ok(Err(error)) => {
                    debug!(%error, %peer, "closing DNS TCP connection");
                    break;
                }
                Err(_) => {
                    debug!(%peer, "DNS TCP connection idle too long");
                    break;
                }
            },
        };
        slot.busy();
        if answer(&handler, &metrics, message, peer, &answers).await == Verdict::Close {
            break;
        }
        if complete_message(reader.buffered()) && pending_len(&answers) < FLUSH_AT {
            continue; // Answer the rest of the burst before writing.
        }
        if let Err(error) = flush(&mut write, &answers, timeouts.idle).await {
            debug!(%error, %peer, "cannot write DNS TCP answers");
            return;
        }
        last_answer = Instant::now();
        slot.idle(last_answer);
        reader.release_if_empty();
    }
    // Answers already made still go out, then a clean close (FIN).
    if flush(&mut write, &answers, timeouts.idle).await.is_ok() {
        let _ = timeout(timeouts.idle, write.shutdown()).await;
    }
}

/// Whether `buffer` starts with a whole length-prefixed message, which can
/// be read without waiting on the socket.
fn complete_message(buffer: &[u8]) -> bool {
    match buffer {
        [high, low, body @ ..] => body.len() >= usize::from(u16::from_be_bytes([*high, *low])),
        _ => false,
    }
}

/// A connection's read side, with a buffer only while a burst of queries
/// is arriving.
struct Incoming<R> {
    half: R,
    /// Octets read but not yet taken as messages start at `start`.
    buffer: Vec<u8>,
    start: usize,
}

impl<R: AsyncRead + Unpin> Incoming<R> {
    fn new(half: R) -> Self {
        Self {
            half,
            buffer: Vec::new(),
            start: 0,
        }
    }

    /// Octets received and not yet read as messages.
    fn buffered(&self) -> &[u8] {
        &self.buffer[self.start..]
    }

    /// Frees the buffer of an idle connection, when it holds nothing.
    fn release_if_empty(&mut self) {
        if self.buffered().is_empty() {
            self.buffer = Vec::new();
            self.start = 0;
        }
    }

    /// Reads more octets, with room for at least `want` buffered in all;
    /// 0 at the end of the stream.
    async fn fill(&mut self, want: usize) -> io::Result<usize> {
        if self.buffer.capacity() == 0 {
            let mut first = [0u8; FIRST_READ];
            let read = self.half.read(&mut first).await?;
            self.buffer.reserve(READ_BUFFER.max(want));
            self.buffer.extend_from_slice(&first[..read]);
            return Ok(read);
        }
        // Move what is left to the front before reading more.
        self.buffer.drain(..self.start);
        self.start = 0;
        if self.buffer.capacity() < want {
            self.buffer.reserve(want - self.buffer.len());
        }
        if self.buffer.len() == self.buffer.capacity() {
            self.buffer.reserve(READ_BUFFER);
        }
        self.half.read_buf(&mut self.buffer).await
    }

    /// Reads one length-prefixed message; `None` when the client closed the
    /// connection between messages. A length too short for a DNS header is
    /// an error: nothing can be said in reply, so the connection is closed.
    async fn read_message(&mut self) -> io::Result<Option<Vec<u8>>> {
        while self.buffered().len() < 2 {
            if self.fill(2).await? == 0 {
                return match self.buffered() {
                    [] => Ok(None),
                    _ => Err(io::ErrorKind::UnexpectedEof.into()),
                };
            }
        }
        let len = usize::from(u16::from_be_bytes([self.buffered()[0], self.buffered()[1]]));
        // Shorter than a header cannot be answered, not even FORMERR.
        if len < HEADER_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a {len}-octet message is shorter than a DNS header"),
            ));
        }
        while self.buffered().len() < 2 + len {
            if self.fill(2 + len).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        let message = self.buffered()[2..2 + len].to_vec();
        self.start += 2 + len;
        Ok(Some(message))
    }
}

/// Octets of answers waiting to be written.
fn pending_len(answers: &Mutex<Vec<u8>>) -> usize {
    answers.lock().unwrap_or_else(PoisonError::into_inner).len()
}

/// Writes the answers made so far, giving a client that does not read them
/// as long as it may stay idle.
async fn flush(
    write: &mut (impl AsyncWriteExt + Unpin),
    answers: &Mutex<Vec<u8>>,
    limit: Duration,
) -> io::Result<()> {
    let pending = std::mem::take(&mut *answers.lock().unwrap_or_else(PoisonError::into_inner));
    if pending.is_empty() {
        return Ok(());
    }
    // The buffer goes with the burst: an idle connection holds none.
    timeout(limit, write.write_all(&pending))
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

/// What to do with a connection after a message.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Continue,
    Close,
}

/// Answers one message into `answers`: through the handler, or FORMERR
/// when only its header can be read. Responses are not answered. Counts
/// the query and its answer in `metrics`, the answer's time from here to
/// being queued for writing (the write itself is per burst).
async fn answer(
    handler: &DnsHandler,
    metrics: &DnsMetrics,
    message: Vec<u8>,
    peer: SocketAddr,
    answers: &Arc<Mutex<Vec<u8>>>,
) -> Verdict {
    let Ok(header) = Header::read(&mut BinDecoder::new(&message)) else {
        return Verdict::Close; // Unreachable: the length was checked.
    };
    if header.metadata.message_type == MessageType::Response {
        // A confused peer; answering could start a loop between servers.
        debug!(%peer, id = header.metadata.id, "DNS response received over TCP; ignored");
        return Verdict::Continue;
    }
    let started = std::time::Instant::now();
    metrics.tcp.count_request(precheck::question_type(&message));
    // The common questions take the allocation-free path UDP's take, which
    // answers exactly as the handler would; the rest go through hickory.
    if let Some(cookie) = answer_fast(handler, &message, peer, answers) {
        metrics
            .tcp
            .count_response(u16::from(ResponseCode::NoError), false, started.elapsed());
        if let Some(seen) = cookie {
            metrics.tcp.count_cookie(seen);
        }
        return Verdict::Continue;
    }
    let responder = TcpResponder {
        answers: answers.clone(),
        request: header.metadata,
    };
    // The same checks as UDP's general path, so a query hickory would
    // answer with a question that no longer decodes, or with a WARN line,
    // gets FORMERR on either transport.
    let parsed = if precheck::well_formed(&message) {
        Request::from_bytes(message, peer, Protocol::Tcp)
    } else {
        Err(hickory_proto::ProtoError::from(
            "a question that points outside itself, or EDNS options that do not add up",
        ))
    };
    let info = match parsed {
        Ok(request) => {
            handler
                .handle_request::<_, TokioTime>(&request, responder)
                .await
        }
        Err(error) => {
            debug!(%error, %peer, id = header.metadata.id, "malformed DNS query over TCP");
            responder
                .append(|encoder| header_only(&header.metadata, ResponseCode::FormErr, encoder))
        }
    };
    metrics.tcp.count_response(
        u16::from(info.response_code),
        info.truncation,
        started.elapsed(),
    );
    Verdict::Continue
}

/// Answers `message` on the fast path into `answers`, framed, if it is one
/// of the questions the fast path takes: then `Some`, with what its COOKIE
/// held, if it had one.
fn answer_fast(
    handler: &DnsHandler,
    message: &[u8],
    peer: SocketAddr,
    answers: &Arc<Mutex<Vec<u8>>>,
) -> Option<Option<CookieSeen>> {
    ENCODE_BUFFER.with(|buffer| {
        FAST_CACHE.with(|cache| {
            let mut buffer = buffer.borrow_mut();
            let mut cache = cache.borrow_mut();
            let cookie = handler.answer_fast_one(message, peer.ip(), &mut cache, &mut buffer)?;
            // Fast answers fit a UDP datagram, far below TCP's 65535.
            let len = u16::try_from(buffer.len()).ok()?;
            let mut answers = answers.lock().unwrap_or_else(PoisonError::into_inner);
            answers.extend_from_slice(&len.to_be_bytes());
            answers.extend_from_slice(&buffer);
            Some(cookie)
        })
    })
}

/// Encodes a response of only a header: the request's ID and flags, with
/// `code`.
fn header_only(
    request: &Metadata,
    code: ResponseCode,
    encoder: &mut BinEncoder<'_>,
) -> Result<ResponseInfo, hickory_proto::ProtoError> {
    let mut metadata = Metadata::response_from_request(request);
    metadata.response_code = code;
    let header = Header {
        metadata,
        counts: HeaderCounts::default(),
    };
    header.emit(encoder)?;
    Ok(ResponseInfo::from(header))
}

/// Appends each response, length-prefixed, to its connection's answer
/// buffer. hickory requires a `'static`, cloneable responder, hence the
/// `Arc<Mutex>`: only the connection's own task locks it, never across an
/// `.await`, so the lock is never contended.
#[derive(Clone)]
struct TcpResponder {
    answers: Arc<Mutex<Vec<u8>>>,
    /// The query's header, for a SERVFAIL when the answer cannot be encoded.
    request: Metadata,
}

impl TcpResponder {
    /// Encodes one message with `encode` and appends it framed. An answer
    /// that cannot be encoded (over 65535 octets) becomes SERVFAIL, so the
    /// client is never left waiting.
    fn append(
        &self,
        encode: impl FnOnce(&mut BinEncoder<'_>) -> Result<ResponseInfo, hickory_proto::ProtoError>,
    ) -> ResponseInfo {
        ENCODE_BUFFER.with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            let mut encoded = encode_at_most(&mut buffer, encode);
            if encoded.is_err() {
                encoded = encode_at_most(&mut buffer, |encoder| {
                    header_only(&self.request, ResponseCode::ServFail, encoder)
                });
            }
            let info = match encoded {
                Ok(info) => info,
                Err(error) => {
                    // A bare header always fits; this is a bug, not a client.
                    warn!(%error, "cannot encode a DNS TCP response");
                    return ResponseInfo::from(Header {
                        metadata: Metadata::response_from_request(&self.request),
                        counts: HeaderCounts::default(),
                    });
                }
            };
            let Ok(len) = u16::try_from(buffer.len()) else {
                return info; // encode_at_most keeps it within u16::MAX
            };
            let mut answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
            answers.extend_from_slice(&len.to_be_bytes());
            answers.extend_from_slice(&buffer);
            info
        })
    }
}

/// Encodes into `buffer` (cleared first) within TCP's 65535 octets.
fn encode_at_most(
    buffer: &mut Vec<u8>,
    encode: impl FnOnce(&mut BinEncoder<'_>) -> Result<ResponseInfo, hickory_proto::ProtoError>,
) -> Result<ResponseInfo, hickory_proto::ProtoError> {
    buffer.clear();
    let mut encoder = BinEncoder::new(buffer);
    encoder.set_max_size(u16::MAX);
    encode(&mut encoder)
}

#[async_trait::async_trait]
impl ResponseHandler for TcpResponder {
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
        Ok(self.append(|encoder| response.destructive_emit(encoder)))
    }
}

/// The table of open connections: how many there are, and which have been
/// idle the longest, to close first when the cap is reached.
///
/// A `std::sync::Mutex`: held only for a map operation, never across an
/// `.await`, and taken twice per burst of queries, not per octet.
struct Slots {
    max: usize,
    table: Mutex<SlotTable>,
}

#[derive(Default)]
struct SlotTable {
    /// Idle connections by (idle since, id): the first is the one to close.
    /// The token closes that connection.
    idle: BTreeMap<(Instant, u64), CancellationToken>,
    /// Connections answering queries now; these are never closed for room.
    busy: usize,
    /// The next connection's id.
    next_id: u64,
}

impl SlotTable {
    fn open(&self) -> usize {
        self.idle.len() + self.busy
    }

    /// Closes the connection idle the longest, if any is idle.
    fn evict_oldest_idle(&mut self) -> bool {
        match self.idle.pop_first() {
            Some((_, close)) => {
                close.cancel();
                true
            }
            None => false,
        }
    }
}

/// Whether a new connection got a slot.
#[derive(Debug)]
enum Admission {
    /// Below the cap.
    Admitted(Slot),
    /// At the cap: the longest-idle connection was closed to make room.
    Evicted(Slot),
    /// At the cap with every connection busy: close the new one.
    Full,
}

impl Slots {
    fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            table: Mutex::new(SlotTable::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotTable> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a connection accepted `now`, idle until its first query;
    /// its close token is a child of `stop`.
    fn admit(self: &Arc<Self>, now: Instant, stop: &CancellationToken) -> Admission {
        let mut table = self.lock();
        let evicted = if table.open() < self.max {
            false
        } else if table.evict_oldest_idle() {
            true
        } else {
            return Admission::Full;
        };
        let id = table.next_id;
        table.next_id += 1;
        let close = stop.child_token();
        table.idle.insert((now, id), close.clone());
        drop(table);
        let slot = Slot {
            slots: self.clone(),
            id,
            state: SlotState::Idle(now),
            close,
        };
        if evicted {
            Admission::Evicted(slot)
        } else {
            Admission::Admitted(slot)
        }
    }

    fn evict_oldest_idle(&self) -> bool {
        self.lock().evict_oldest_idle()
    }

    #[cfg(test)]
    fn open(&self) -> usize {
        self.lock().open()
    }
}

/// One connection's place in [`Slots`]; dropping it frees the place.
struct Slot {
    slots: Arc<Slots>,
    id: u64,
    state: SlotState,
    /// Cancelled to close the connection: when it is evicted, or at
    /// shutdown.
    close: CancellationToken,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Slot({}, {:?})", self.id, self.state)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    /// Waiting for a query since then; may be evicted.
    Idle(Instant),
    /// Answering queries.
    Busy,
    /// Evicted: no longer counted, closing.
    Evicted,
}

impl Slot {
    /// Marks the connection as answering, so it is not evicted mid-answer.
    /// If it was evicted meanwhile, it finishes this answer and closes.
    fn busy(&mut self) {
        if let SlotState::Idle(since) = self.state {
            let mut table = self.slots.lock();
            self.state = if table.idle.remove(&(since, self.id)).is_some() {
                table.busy += 1;
                SlotState::Busy
            } else {
                SlotState::Evicted
            };
        }
    }

    /// Marks the connection as waiting for a query since `now`.
    fn idle(&mut self, now: Instant) {
        if self.state == SlotState::Busy {
            let mut table = self.slots.lock();
            table.busy -= 1;
            table.idle.insert((now, self.id), self.close.clone());
            self.state = SlotState::Idle(now);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut table = self.slots.lock();
        match self.state {
            SlotState::Idle(since) => {
                table.idle.remove(&(since, self.id));
            }
            SlotState::Busy => table.busy -= 1,
            SlotState::Evicted => {}
        }
    }
}

/// The pause after each accept failure in a row: 10 ms doubling to 1 s.
#[derive(Default)]
struct Backoff(Option<Duration>);

impl Backoff {
    fn next(&mut self) -> Duration {
        let pause = self.0.map_or(ACCEPT_BACKOFF_MIN, |last| {
            (last * 2).min(ACCEPT_BACKOFF_MAX)
        });
        self.0 = Some(pause);
        pause
    }

    fn reset(&mut self) {
        self.0 = None;
    }
}

/// Allows one log line per [`LOG_INTERVAL`] and counts the ones it held
/// back, so a flood of errors costs no more than a trickle.
#[derive(Default)]
struct LogLimit {
    next: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    /// `Some(lines held back since the last one)` when a line may be
    /// logged `now`.
    fn check(&mut self, now: Instant) -> Option<u64> {
        if self.next.is_some_and(|next| now < next) {
            self.suppressed += 1;
            return None;
        }
        self.next = Some(now + LOG_INTERVAL);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(admission: Admission) -> Slot {
        match admission {
            Admission::Admitted(slot) | Admission::Evicted(slot) => slot,
            Admission::Full => panic!("no slot"),
        }
    }

    #[test]
    fn at_the_cap_the_longest_idle_connection_makes_room() {
        let slots = Arc::new(Slots::new(3));
        let stop = CancellationToken::new();
        let start = Instant::now();
        let at = |seconds| start + Duration::from_secs(seconds);
        let mut first = slot(slots.admit(at(0), &stop));
        let second = slot(slots.admit(at(1), &stop));
        let third = slot(slots.admit(at(2), &stop));
        // The first becomes busy and idle again later than the second.
        first.busy();
        first.idle(at(3));
        let fourth = slots.admit(at(4), &stop);
        assert!(matches!(fourth, Admission::Evicted(_)), "{fourth:?}");
        assert!(second.close.is_cancelled(), "the longest idle is closed");
        assert!(!first.close.is_cancelled() && !third.close.is_cancelled());
        assert_eq!(slots.open(), 3);
        // The evicted connection's slot is already free; dropping it
        // frees nothing twice.
        drop(second);
        assert_eq!(slots.open(), 3);
        drop(fourth);
        assert_eq!(slots.open(), 2);
    }

    #[test]
    fn busy_connections_are_never_evicted_and_a_full_table_refuses() {
        let slots = Arc::new(Slots::new(2));
        let stop = CancellationToken::new();
        let now = Instant::now();
        let mut a = slot(slots.admit(now, &stop));
        let mut b = slot(slots.admit(now, &stop));
        a.busy();
        b.busy();
        assert!(matches!(slots.admit(now, &stop), Admission::Full));
        assert!(!slots.evict_oldest_idle());
        b.idle(now);
        assert!(matches!(slots.admit(now, &stop), Admission::Evicted(_)));
        assert!(b.close.is_cancelled() && !a.close.is_cancelled());
        // Evicted while about to answer: it finishes, then its slot is gone.
        b.busy();
        assert_eq!(b.state, SlotState::Evicted);
        drop(a);
        assert_eq!(slots.open(), 0);
    }

    #[test]
    fn shutdown_closes_every_connection() {
        let slots = Arc::new(Slots::new(4));
        let stop = CancellationToken::new();
        let open: Vec<Slot> = (0..3)
            .map(|_| slot(slots.admit(Instant::now(), &stop)))
            .collect();
        stop.cancel();
        assert!(open.iter().all(|slot| slot.close.is_cancelled()));
    }

    #[test]
    fn complete_messages_are_recognised_in_the_buffer() {
        let cases: [(&[u8], bool); 6] = [
            (&[], false),
            (&[0], false),
            (&[0, 0], true),
            (&[0, 2, 1], false),
            (&[0, 2, 1, 2], true),
            (&[0, 2, 1, 2, 0], true),
        ];
        for (buffer, complete) in cases {
            assert_eq!(complete_message(buffer), complete, "{buffer:?}");
        }
    }

    #[test]
    fn accept_backoff_doubles_to_a_second_and_resets() {
        let mut backoff = Backoff::default();
        let pauses: Vec<u64> = (0..9).map(|_| backoff.next().as_millis() as u64).collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        backoff.reset();
        assert_eq!(backoff.next(), ACCEPT_BACKOFF_MIN);
    }

    #[test]
    fn log_limit_allows_one_line_per_interval_and_counts_the_rest() {
        let mut limit = LogLimit::default();
        let start = Instant::now();
        assert_eq!(limit.check(start), Some(0));
        assert_eq!(limit.check(start + Duration::from_secs(1)), None);
        assert_eq!(limit.check(start + Duration::from_secs(2)), None);
        assert_eq!(limit.check(start + LOG_INTERVAL), Some(2));
    }

    async fn read_all(input: &[u8]) -> (Vec<Vec<u8>>, io::Result<()>) {
        let mut incoming = Incoming::new(input);
        let mut messages = Vec::new();
        loop {
            match incoming.read_message().await {
                Ok(Some(message)) => messages.push(message),
                Ok(None) => return (messages, Ok(())),
                Err(error) => return (messages, Err(error)),
            }
        }
    }

    #[tokio::test]
    async fn messages_are_read_whole_whatever_their_size() {
        let mut input = Vec::new();
        for len in [12usize, 40, 65_535, 100, 3000] {
            input.extend_from_slice(&u16::try_from(len).expect("len").to_be_bytes());
            input.extend((0..len).map(|i| i as u8));
        }
        let (messages, end) = read_all(&input).await;
        assert!(end.is_ok(), "{end:?}");
        let lens: Vec<usize> = messages.iter().map(Vec::len).collect();
        assert_eq!(lens, [12, 40, 65_535, 100, 3000]);
        assert!(
            messages
                .iter()
                .all(|m| m.iter().enumerate().all(|(i, &b)| b == i as u8))
        );
    }

    #[tokio::test]
    async fn short_and_cut_messages_are_errors_and_a_clean_close_is_none() {
        let cases: [(&[u8], usize, bool); 5] = [
            (&[], 0, true),
            (&[0, 3, 1, 2, 3], 0, false),
            (&[0, 12, 1, 2], 0, false),
            (&[0], 0, false),
            (&[0, 12, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0], 1, false),
        ];
        for (input, count, clean) in cases {
            let (messages, end) = read_all(input).await;
            assert_eq!((messages.len(), end.is_ok()), (count, clean), "{input:?}");
        }
    }
}
