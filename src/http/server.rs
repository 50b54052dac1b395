//! roster's HTTP/1.1 serve loop: accepts connections, hands each to hyper
//! with the API router, and keeps every connection bounded in time and
//! number. `axum::serve` has neither: an attacker held 10,000 idle
//! keep-alive connections (855 MB) and 5,000 half-sent request heads, and
//! when descriptors ran out the API stopped answering and health probes
//! failed, so healthy instances dropped out of DNS.
//!
//! The rules, each enforced here:
//! - A connection with no request in flight is **idle**. It is closed after
//!   `idle_timeout`; once the first byte of a request head arrives, it has
//!   `header_read_timeout` to finish the head instead (slowloris). A
//!   request in flight, such as a Consul blocking query waiting up to ten
//!   minutes, has no such deadline: it is work, not idleness.
//! - A request body that goes `body_read_timeout` without a byte is
//!   answered 408 with roster's JSON error, and the connection closed.
//! - At most `max_connections` are open. A new client beyond that closes
//!   the connection idle the longest (as Knot and Unbound do), so a flood
//!   of idle sockets cannot lock real clients out; if none is idle, the new
//!   one gets a 503 and is closed at once rather than left to hang.
//! - A response that cannot be written for `write_timeout` (a client that
//!   stopped reading, such as one that asked for `/v1/export` and went
//!   away without closing) closes the connection, as nginx's
//!   `send_timeout`: the deadline restarts whenever any byte goes out.
//! - With TLS, the handshake runs in the connection's own task, counted
//!   against `max_connections` as an idle connection (so a flood of
//!   unfinished handshakes is evicted like idle sockets), and must finish
//!   within `header_read_timeout`.
//! - Accept errors (EMFILE, ENFILE, ENOBUFS) pause accepting, 10 ms
//!   doubling to 1 s, instead of spinning a core, and are logged at most
//!   once every few seconds.
//!
//! All idle and head deadlines live in one table with two ordered sets,
//! watched by one reaper: not a timer per connection.
//!
//! Owns: HTTP connections and their deadlines. Must not: route requests or
//! shape answers beyond the transport's own errors (414, 431, 408, 503).

use std::{
    collections::{BTreeSet, HashMap},
    convert::Infallible,
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use axum::{
    Router,
    body::{Body, Bytes},
    http::{HeaderValue, Request, Response, StatusCode, header},
    response::IntoResponse,
};
use http_body::Frame;
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::Notify,
    task::JoinSet,
    time::{Instant, Sleep},
};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::{debug, warn};

use super::ApiError;
use crate::registry::Pace;

/// The longest request target answered normally; longer ones get 414 with
/// a JSON body. No roster URL comes near it.
const MAX_URI_BYTES: usize = 8 * 1024;
/// The largest request head (all header lines) answered normally; larger
/// ones get 431 with a JSON body.
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// The most header fields answered normally; more get 431 with JSON.
const MAX_HEADERS: usize = 100;
/// hyper's own limits, above roster's: a head beyond these is refused by
/// hyper's parser before roster sees a request, and hyper's empty-bodied
/// 431 is rewritten on the way out (see [`json_parse_error`]). They bound
/// the memory a single connection's head can take.
const HYPER_MAX_HEAD_BYTES: usize = 64 * 1024;
const HYPER_MAX_HEADERS: usize = 256;

/// A request that starts sooner than this after its connection's last
/// answer comes from a client writing back to back: its writes are never
/// held for a group commit ([`Pace`]). Such a client sends its next write a
/// round trip after reading the answer, well under this on loopback or in
/// a data centre; a fleet's writers, each writing now and then, start
/// later. Not much more than a round trip: a connection writing every few
/// milliseconds whose writes are held starts its next one sooner after
/// the answer than it did, and would turn back to back.
const BACK_TO_BACK: Duration = Duration::from_millis(2);

/// First pause after an accept error; doubles up to [`ACCEPT_PAUSE_MAX`].
const ACCEPT_PAUSE_MIN: Duration = Duration::from_millis(10);
const ACCEPT_PAUSE_MAX: Duration = Duration::from_secs(1);
/// At most one accept-error log line per this interval.
const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// What bounds the HTTP server's connections.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// Most connections open at once (already fitted to the descriptor
    /// limit).
    pub max_connections: usize,
    /// From a request head's first byte to its last.
    pub header_read_timeout: Duration,
    /// Longest a request body may go without a byte arriving.
    pub body_read_timeout: Duration,
    /// Longest a connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Longest a response write may make no progress (the client stopped
    /// reading).
    pub write_timeout: Duration,
}

/// Serves `router` on `listener` within `limits` until `shutdown`
/// completes; then stops accepting, lets requests in flight finish (the
/// caller bounds how long by dropping this future) and closes idle
/// connections at once. With `tls` (see [`super::tls::ServerTls`]), every
/// connection is HTTPS, its handshake served with the configuration in
/// force when it was accepted.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    tls: Option<Arc<super::tls::ServerTls>>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let connections = Connections::new(limits);
    let mut builder = http1::Builder::new();
    builder
        // roster's own header deadline starts at the head's first byte;
        // hyper's would start as soon as a connection waits, cutting idle
        // keep-alive connections at the header timeout.
        .header_read_timeout(None)
        .max_header_size(HYPER_MAX_HEAD_BYTES)
        .max_headers(HYPER_MAX_HEADERS);
    // Cancelled at shutdown: every connection finishes its request in
    // flight, if any, and closes.
    let draining = CancellationToken::new();
    // Dropping the set aborts the connection tasks: when the caller's
    // grace period ends, nothing is left running.
    let mut tasks = JoinSet::new();
    let reaper = connections.reap();
    tokio::pin!(reaper, shutdown);
    let mut pause = ACCEPT_PAUSE_MIN;
    let mut accept_log = RateLimitedLog::default();
    let mut refusal_log = RateLimitedLog::default();

    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            () = &mut reaper => {}
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    pause = ACCEPT_PAUSE_MIN;
                    let Some(connection) = connections.admit() else {
                        // Every connection busy: clients are being turned
                        // away, which an operator must hear of.
                        if let Some(suppressed) = refusal_log.allow(Instant::now()) {
                            warn!(
                                %peer,
                                max_connections = limits.max_connections,
                                similar_refusals_not_logged = suppressed,
                                "HTTP connections full and none idle; refusing a new client \
                                 (503): raise http.max_connections"
                            );
                        }
                        refuse(&stream);
                        continue;
                    };
                    tasks.spawn(serve_connection(
                        stream,
                        tls.as_deref().map(super::tls::ServerTls::acceptor),
                        connection,
                        builder.clone(),
                        router.clone(),
                        draining.clone(),
                    ));
                }
                Err(error) if is_per_connection(&error) => {
                    // The client gave up between SYN and accept: nothing
                    // wrong with roster, nothing to wait for.
                    debug!(%error, "HTTP accept: connection failed before it was accepted");
                }
                Err(error) => {
                    // Out of descriptors (or kernel memory). Closing the
                    // longest-idle connection frees one for the client
                    // waiting in the backlog; pausing keeps the loop from
                    // spinning on an error that will not clear at once.
                    let freed = connections.evict_oldest_idle();
                    if let Some(suppressed) = accept_log.allow(Instant::now()) {
                        warn!(
                            %error,
                            pause_ms = pause.as_millis() as u64,
                            closed_idle = freed,
                            similar_errors_not_logged = suppressed,
                            "HTTP accept failed; pausing accepts (raise the open-file limit \
                             or lower http.max_connections)"
                        );
                    }
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(ACCEPT_PAUSE_MAX);
                }
            },
        }
    }

    // Stop accepting: new clients are refused by the kernel from here on.
    drop(listener);
    draining.cancel();
    // Connections are not closed from here: one whose request was just
    // answered may still hold the answer unflushed, and closing it would
    // lose an applied change's acknowledgement. hyper's graceful shutdown
    // closes idle ones itself; half-sent heads end at their header
    // deadline, and `run`'s grace period bounds the rest.
    loop {
        tokio::select! {
            () = &mut reaper => {}
            next = tasks.join_next() => if next.is_none() { break },
        }
    }
    Ok(())
}

/// Accept errors that concern one would-be connection, not roster.
fn is_per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// Tells a client there is no room, without waiting on it: one
/// non-blocking write into an empty send buffer, then close. Best effort:
/// the point is that the client learns at once, not that it reads this.
fn refuse(stream: &TcpStream) {
    const BODY: &str = r#"{"error":"too many HTTP connections; try again later"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = stream.try_write(answer.as_bytes());
}

/// One connection, from accept to close: the TLS handshake first, if any.
async fn serve_connection(
    stream: TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    connection: Arc<Connection>,
    builder: http1::Builder,
    router: Router,
    draining: CancellationToken,
) {
    let Some(acceptor) = tls else {
        return serve_http(stream, connection, builder, router, draining).await;
    };
    // The connection is idle in the table meanwhile: a new client may evict
    // it, and the head deadline bounds a handshake that never finishes.
    let deadline = connection.shared.limits.header_read_timeout;
    let closed = connection.closed.clone();
    let handshake = tokio::time::timeout(deadline, acceptor.accept(stream));
    let stream = tokio::select! {
        result = handshake => match result {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                debug!(%error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                debug!("TLS handshake not finished within http.header_read_timeout; closing");
                return;
            }
        },
        () = closed.cancelled() => return,
        () = draining.cancelled() => return,
    };
    serve_http(stream, connection, builder, router, draining).await;
}

/// One connection's HTTP, over TCP or TLS.
async fn serve_http<S>(
    stream: S,
    connection: Arc<Connection>,
    builder: http1::Builder,
    router: Router,
    draining: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let closed = connection.closed.clone();
    let write_timeout = connection.shared.limits.write_timeout;
    let io = TokioIo::new(TrackedIo::new(stream, connection.clone(), write_timeout));
    let body_read_timeout = connection.shared.limits.body_read_timeout;
    let service = hyper::service::service_fn(move |request| {
        let router = router.clone();
        let connection = connection.clone();
        async move { Ok::<_, Infallible>(answer(router, request, connection, body_read_timeout).await) }
    });
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => log_end(result),
        // Idle or head deadline passed, or evicted for a new client: no
        // request is in flight, so there is nothing to finish.
        () = closed.cancelled() => {}
        () = draining.cancelled() => {
            // Idle connections close now; one with a request in flight
            // answers it, then closes.
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                result = conn.as_mut() => log_end(result),
                () = closed.cancelled() => {}
            }
        }
    }
}

fn log_end(result: hyper::Result<()>) {
    if let Err(error) = result {
        debug!(%error, "HTTP connection ended with an error");
    }
}

/// Answers one request: roster's own transport limits first, then the
/// router, with the request body under its read deadline and the
/// connection marked busy until the response body has been sent.
async fn answer(
    router: Router,
    request: Request<Incoming>,
    connection: Arc<Connection>,
    body_read_timeout: Duration,
) -> Response<Body> {
    let pace = connection.pace();
    let in_flight = InFlight::start(connection);
    if let Some(refusal) = oversized_head(&request) {
        return track(refusal.into_response(), in_flight, true);
    }
    let timed_out = Arc::new(AtomicBool::new(false));
    let request = request.map(|body| {
        Body::new(ReadTimeoutBody {
            inner: body,
            timeout: body_read_timeout,
            sleep: None,
            timed_out: timed_out.clone(),
        })
    });
    let response = match pace.scope(router.oneshot(request)).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    if timed_out.load(Ordering::Acquire) {
        // Whatever the handler made of the broken body, the client's
        // problem is that it stopped sending.
        let error = ApiError {
            status: StatusCode::REQUEST_TIMEOUT,
            message: format!(
                "the request body stopped arriving: no byte for {} s",
                body_read_timeout.as_secs()
            ),
            field: Some("body".into()),
        };
        return track(error.into_response(), in_flight, true);
    }
    track(response, in_flight, false)
}

/// 414 or 431 with roster's JSON body for heads beyond roster's limits
/// (which are below hyper's, so that most oversized heads reach here).
fn oversized_head<B>(request: &Request<B>) -> Option<ApiError> {
    // The parts' lengths bound the target's text (scheme and "://" at
    // most, authority, path and query): only a target that may be over
    // the limit is written out to be measured.
    let uri = request.uri();
    let bound = uri.scheme_str().map_or(0, |scheme| scheme.len() + 3)
        + uri
            .authority()
            .map_or(0, |authority| authority.as_str().len())
        + uri
            .path_and_query()
            .map_or(1, |target| target.as_str().len());
    let uri_len = if bound > MAX_URI_BYTES {
        uri.to_string().len()
    } else {
        bound
    };
    if uri_len > MAX_URI_BYTES {
        return Some(ApiError {
            status: StatusCode::URI_TOO_LONG,
            message: format!("the request target is {uri_len} bytes; the limit is {MAX_URI_BYTES}"),
            field: Some("uri".into()),
        });
    }
    let headers = request.headers();
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if headers.len() > MAX_HEADERS || header_bytes > MAX_HEADER_BYTES {
        return Some(ApiError {
            status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            message: format!(
                "{} header fields, {header_bytes} bytes; the limits are {MAX_HEADERS} fields \
                 and {MAX_HEADER_BYTES} bytes",
                headers.len()
            ),
            field: Some("headers".into()),
        });
    }
    None
}

/// Keeps the connection busy until `response`'s body is done; with
/// `close`, asks hyper to close the connection after it (the request's
/// body may be left unread, so the connection cannot be reused).
fn track(response: Response<Body>, in_flight: InFlight, close: bool) -> Response<Body> {
    let mut response = response.map(|body| {
        Body::new(TrackedBody {
            inner: body,
            _in_flight: in_flight,
        })
    });
    if close {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

// ---------------------------------------------------------------------------
// The connection table
// ---------------------------------------------------------------------------

/// All open connections and their deadlines; a cheap-clone handle.
#[derive(Clone)]
struct Connections {
    shared: Arc<Shared>,
}

struct Shared {
    limits: HttpLimits,
    /// A std mutex: every critical section is a few map operations and no
    /// `.await` happens while it is held.
    table: Mutex<Table>,
    /// Wakes the reaper when a deadline earlier than the one it sleeps
    /// towards appears.
    earlier_deadline: Notify,
    /// What `Connection::answered_at` counts from.
    epoch: Instant,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    phases: HashMap<u64, Phase>,
    /// Idle connections by when they became idle: the first is both the
    /// next to pass `idle_timeout` and the one to evict for a new client.
    idle: BTreeSet<(Instant, u64)>,
    /// Connections whose request head has begun, by its first byte.
    heading: BTreeSet<(Instant, u64)>,
    /// Each connection's close signal, cancelled when the table drops it.
    closers: HashMap<u64, CancellationToken>,
}

/// Where a connection is in its request cycle.
#[derive(Clone, Copy)]
enum Phase {
    /// No request in flight and no byte of the next; since when.
    Idle(Instant),
    /// The next request head has begun arriving; since when.
    Head(Instant),
    /// Requests in flight (HTTP/1 answers one at a time, but a counter
    /// costs nothing and cannot go wrong).
    Busy(usize),
}

/// One connection's handle on the table.
struct Connection {
    id: u64,
    shared: Arc<Shared>,
    /// Cancelled when the table closes this connection.
    closed: CancellationToken,
    /// Whether the next byte read starts a request head: set while idle,
    /// so the read path takes the table's lock once per request, not once
    /// per read.
    awaiting_head: AtomicBool,
    /// When the last answer on this connection was sent, as
    /// `Connection::since_epoch` counts; 0 before the first.
    answered_at: AtomicU64,
}

impl Connections {
    fn new(limits: HttpLimits) -> Self {
        Self {
            shared: Arc::new(Shared {
                limits,
                table: Mutex::new(Table::default()),
                earlier_deadline: Notify::new(),
                epoch: Instant::now(),
            }),
        }
    }

    /// Registers a new connection, closing the longest-idle one if the
    /// table is full; `None` when it is full and nothing is idle.
    fn admit(&self) -> Option<Arc<Connection>> {
        let now = Instant::now();
        let closed = CancellationToken::new();
        let id = {
            let mut table = self.shared.lock();
            if table.phases.len() >= self.shared.limits.max_connections
                && !table.close_oldest_idle()
            {
                return None;
            }
            let id = table.next_id;
            table.next_id += 1;
            let was_empty = table.idle.is_empty();
            table.phases.insert(id, Phase::Idle(now));
            table.idle.insert((now, id));
            table.closers.insert(id, closed.clone());
            if was_empty {
                // Later than every idle deadline already set, but the
                // reaper may be asleep with none to wait for.
                self.shared.earlier_deadline.notify_one();
            }
            id
        };
        Some(Arc::new(Connection {
            id,
            shared: self.shared.clone(),
            closed,
            awaiting_head: AtomicBool::new(true),
            answered_at: AtomicU64::new(0),
        }))
    }

    /// Closes the longest-idle connection, if any; whether one was.
    fn evict_oldest_idle(&self) -> bool {
        self.shared.lock().close_oldest_idle()
    }

    /// Closes connections whose idle or head deadline has passed, forever.
    async fn reap(&self) {
        let limits = self.shared.limits;
        loop {
            let next = {
                let mut table = self.shared.lock();
                let now = Instant::now();
                table.close_expired(now, limits)
            };
            match next {
                Some(deadline) => tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = self.shared.earlier_deadline.notified() => {}
                },
                None => self.shared.earlier_deadline.notified().await,
            }
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic while holding this lock leaves the maps consistent
        // (each operation is a few inserts and removes), so carry on.
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Table {
    /// Closes and forgets the longest-idle connection (one still sending
    /// its head counts as idle, after the truly idle ones).
    fn close_oldest_idle(&mut self) -> bool {
        let oldest = self
            .idle
            .first()
            .or_else(|| self.heading.first())
            .map(|&(_, id)| id);
        match oldest {
            Some(id) => {
                self.close(id);
                true
            }
            None => false,
        }
    }

    /// Closes every connection past its deadline; returns the next
    /// deadline, if any.
    fn close_expired(&mut self, now: Instant, limits: HttpLimits) -> Option<Instant> {
        let mut expired = Vec::new();
        for &(since, id) in &self.idle {
            if since + limits.idle_timeout > now {
                break;
            }
            expired.push(id);
        }
        for &(since, id) in &self.heading {
            if since + limits.header_read_timeout > now {
                break;
            }
            expired.push(id);
        }
        for id in expired {
            self.close(id);
        }
        let idle = self.idle.first().map(|(t, _)| *t + limits.idle_timeout);
        let head = self
            .heading
            .first()
            .map(|(t, _)| *t + limits.header_read_timeout);
        idle.into_iter().chain(head).min()
    }

    /// Signals connection `id` to close and forgets it, so it no longer
    /// counts against the cap: its socket closes a moment later.
    fn close(&mut self, id: u64) {
        if let Some(closer) = self.closers.remove(&id) {
            closer.cancel();
        }
        self.forget(id);
    }

    fn forget(&mut self, id: u64) {
        match self.phases.remove(&id) {
            Some(Phase::Idle(since)) => {
                self.idle.remove(&(since, id));
            }
            Some(Phase::Head(since)) => {
                self.heading.remove(&(since, id));
            }
            Some(Phase::Busy(_)) | None => {}
        }
        self.closers.remove(&id);
    }

    /// Leaves whatever waiting phase `id` is in; `None` if it is gone.
    fn take_waiting(&mut self, id: u64) -> Option<Phase> {
        let phase = *self.phases.get(&id)?;
        match phase {
            Phase::Idle(since) => {
                self.idle.remove(&(since, id));
            }
            Phase::Head(since) => {
                self.heading.remove(&(since, id));
            }
            Phase::Busy(_) => {}
        }
        Some(phase)
    }
}

impl Connection {
    /// The first byte of a request head arrived: from now on the head
    /// deadline applies instead of the idle one.
    fn head_started(&self) {
        let now = Instant::now();
        let mut table = self.shared.lock();
        if let Some(Phase::Idle(_)) = table.take_waiting(self.id) {
            let was_empty = table.heading.is_empty();
            table.phases.insert(self.id, Phase::Head(now));
            table.heading.insert((now, self.id));
            if was_empty {
                self.shared.earlier_deadline.notify_one();
            }
        }
    }

    fn request_started(&self) {
        self.awaiting_head.store(false, Ordering::Release);
        let mut table = self.shared.lock();
        let busy = match table.take_waiting(self.id) {
            Some(Phase::Busy(n)) => n + 1,
            Some(Phase::Idle(_) | Phase::Head(_)) => 1,
            None => return,
        };
        table.phases.insert(self.id, Phase::Busy(busy));
    }

    fn request_finished(&self) {
        let now = Instant::now();
        self.answered_at
            .store(self.since_epoch(now), Ordering::Relaxed);
        let mut table = self.shared.lock();
        match table.phases.get(&self.id).copied() {
            Some(Phase::Busy(n)) if n > 1 => {
                table.phases.insert(self.id, Phase::Busy(n - 1));
            }
            Some(Phase::Busy(_)) => {
                let was_empty = table.idle.is_empty();
                table.phases.insert(self.id, Phase::Idle(now));
                table.idle.insert((now, self.id));
                self.awaiting_head.store(true, Ordering::Release);
                if was_empty {
                    self.shared.earlier_deadline.notify_one();
                }
            }
            _ => {}
        }
    }

    /// Nanoseconds from `Shared::epoch` to `now`, plus one: never 0.
    fn since_epoch(&self, now: Instant) -> u64 {
        let nanos = now.saturating_duration_since(self.shared.epoch).as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX).saturating_add(1)
    }

    /// The pace of this connection's client, for a request starting now:
    /// back to back if its last answer went out less than [`BACK_TO_BACK`]
    /// ago.
    fn pace(&self) -> Pace {
        let answered = self.answered_at.load(Ordering::Relaxed);
        let since = self.since_epoch(Instant::now()).saturating_sub(answered);
        if answered != 0 && u128::from(since) < BACK_TO_BACK.as_nanos() {
            Pace::BackToBack
        } else {
            Pace::Sporadic
        }
    }
}

impl Drop for Connection {
    /// The last handle goes with the connection's task (also when it is
    /// aborted at the end of the shutdown grace).
    fn drop(&mut self) {
        self.shared.lock().forget(self.id);
    }
}

/// Marks its connection busy from creation until dropped, which happens
/// when hyper has sent the response body (or the request was abandoned).
struct InFlight(Arc<Connection>);

impl InFlight {
    fn start(connection: Arc<Connection>) -> Self {
        connection.request_started();
        Self(connection)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

// ---------------------------------------------------------------------------
// I/O and body wrappers
// ---------------------------------------------------------------------------

/// The socket, noting when an idle connection's next request begins, and
/// giving hyper's own parse-error answers roster's JSON body.
struct TrackedIo<S> {
    inner: S,
    connection: Arc<Connection>,
    /// A JSON answer standing in for hyper's empty-bodied one, and how
    /// much of it is written. Drained before anything else is written,
    /// flushed or shut down.
    replacement: Option<(Vec<u8>, usize)>,
    /// How long a write may make no progress.
    write_timeout: Duration,
    /// Armed when a write, flush or shutdown first returns `Pending`;
    /// disarmed by any progress. Boxed because `Sleep` is `!Unpin` and the
    /// I/O type must be `Unpin` for hyper.
    write_stalled_since: Option<Pin<Box<Sleep>>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> TrackedIo<S> {
    fn new(inner: S, connection: Arc<Connection>, write_timeout: Duration) -> Self {
        Self {
            inner,
            connection,
            replacement: None,
            write_timeout,
            write_stalled_since: None,
        }
    }

    /// Passes a write-side result through, turning a `Pending` that has
    /// lasted `write_timeout` into a `TimedOut` error (which ends the
    /// connection). The deadline is one timer per stalled connection, armed
    /// only while the socket's send buffer is full.
    fn within_write_deadline<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if result.is_ready() {
            self.write_stalled_since = None;
            return result;
        }
        let timeout = self.write_timeout;
        let deadline = self
            .write_stalled_since
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                debug!("closing a connection whose client stopped reading");
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client stopped reading the response",
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Writes what is left of the replacement answer; ready when none is.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.replacement {
            if *written == bytes.len() {
                self.replacement = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }

    /// [`Self::poll_replacement`] under the write deadline. With no
    /// replacement queued it is ready at once and leaves the deadline alone:
    /// only a real write's progress may disarm it.
    fn poll_replacement_within_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.replacement.is_none() {
            return Poll::Ready(Ok(()));
        }
        let replaced = self.poll_replacement(cx);
        self.within_write_deadline(cx, replaced)
    }

    /// When `buf` is hyper's own answer to an unparseable head, takes it
    /// (as if written) and queues roster's JSON answer in its place.
    fn replace_parse_error(&mut self, buf: &[u8]) -> bool {
        match json_parse_error(buf) {
            Some(answer) => {
                self.replacement = Some((answer, 0));
                true
            }
            None => false,
        }
    }
}

/// hyper answers a head it cannot parse by itself, before roster sees a
/// request, with an empty body and no hook to change it: exactly
/// `HTTP/1.1 400|414|431 …`, `connection: close`, `content-length: 0`,
/// `date`, as one write, and then closes. roster's own answers with these
/// codes always have a JSON body, so a bodiless one is hyper's. This
/// returns the same answer with roster's JSON error body.
fn json_parse_error(buf: &[u8]) -> Option<Vec<u8>> {
    const SIGNATURE: &[u8] = b"\r\nconnection: close\r\ncontent-length: 0\r\n";
    let rest = buf.strip_prefix(b"HTTP/1.1 ")?;
    let (status, field, message) = match rest.get(..3)? {
        b"400" => (
            StatusCode::BAD_REQUEST,
            None,
            "the request is not well-formed HTTP/1.1".to_owned(),
        ),
        b"414" => (
            StatusCode::URI_TOO_LONG,
            Some("uri"),
            "the request target is too long".to_owned(),
        ),
        b"431" => (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Some("headers"),
            format!(
                "the request head is larger than {HYPER_MAX_HEAD_BYTES} bytes or has more \
                 than {HYPER_MAX_HEADERS} fields"
            ),
        ),
        _ => return None,
    };
    if !buf.ends_with(b"\r\n\r\n") || find(buf, SIGNATURE).is_none() {
        return None;
    }
    let body = match field {
        Some(field) => serde_json::json!({ "error": message, "field": field }),
        None => serde_json::json!({ "error": message }),
    }
    .to_string();
    let head = format!(
        "HTTP/1.1 {status}\r\nconnection: close\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    Some([head.into_bytes(), body.into_bytes()].concat())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TrackedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before
            && self.connection.awaiting_head.swap(false, Ordering::AcqRel)
        {
            self.connection.head_started();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TrackedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_replacement_within_deadline(cx))?;
        if self.replace_parse_error(buf) {
            // Taken whole; the replacement goes out on the next write,
            // flush or shutdown.
            return Poll::Ready(Ok(buf.len()));
        }
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.within_write_deadline(cx, written)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_replacement_within_deadline(cx))?;
        let mut non_empty = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (non_empty.next(), non_empty.next())
            && self.replace_parse_error(only)
        {
            return Poll::Ready(Ok(only.len()));
        }
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.within_write_deadline(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_replacement_within_deadline(cx))?;
        let flushed = Pin::new(&mut self.inner).poll_flush(cx);
        self.within_write_deadline(cx, flushed)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_replacement_within_deadline(cx))?;
        let shut = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.within_write_deadline(cx, shut)
    }
}

/// A request body read stopped: no byte for `body_read_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the request body stopped arriving")]
struct BodyStalled;

/// The request body, failing once no byte has come for `timeout` (the
/// deadline restarts with every chunk, as nginx's client_body_timeout:
/// a large import over a slow link is fine, a body that never comes is
/// not).
struct ReadTimeoutBody {
    inner: Incoming,
    timeout: Duration,
    /// Armed at the first poll that finds no data: a body that arrives
    /// whole with its head (nearly every request) never touches the
    /// runtime's timer, whose wheel is shared and locked.
    sleep: Option<Pin<Box<Sleep>>>,
    /// Set on timeout, so [`answer`] replaces the handler's response
    /// with 408.
    timed_out: Arc<AtomicBool>,
}

impl http_body::Body for ReadTimeoutBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let timeout = self.timeout;
                if let Some(sleep) = self.sleep.as_mut() {
                    sleep.as_mut().reset(Instant::now() + timeout);
                }
                Poll::Ready(frame.map(|frame| frame.map_err(Into::into)))
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let sleep = self
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                ready!(sleep.as_mut().poll(cx));
                self.timed_out.store(true, Ordering::Release);
                Poll::Ready(Some(Err(BodyStalled.into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its connection busy until it is dropped.
struct TrackedBody {
    inner: Body,
    _in_flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Lets one line through per [`ACCEPT_LOG_INTERVAL`], counting the rest.
#[derive(Default)]
struct RateLimitedLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    /// `Some(lines suppressed since the last one)` when a line may be
    /// logged now.
    fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now < last + ACCEPT_LOG_INTERVAL => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_are_logged_at_most_once_per_interval() {
        let mut log = RateLimitedLog::default();
        let start = Instant::now();
        assert_eq!(log.allow(start), Some(0));
        for i in 1..100 {
            assert_eq!(log.allow(start + Duration::from_millis(i * 10)), None);
        }
        assert_eq!(log.allow(start + ACCEPT_LOG_INTERVAL), Some(99));
    }

    #[test]
    fn roster_limits_are_below_hypers() {
        // Otherwise hyper's empty-bodied 431 would answer first.
        const { assert!(MAX_HEADER_BYTES + MAX_URI_BYTES < HYPER_MAX_HEAD_BYTES) };
        const { assert!(MAX_HEADERS < HYPER_MAX_HEADERS) };
    }

    #[test]
    fn hypers_bodiless_parse_errors_get_json_and_nothing_else_is_touched() {
        let hyper_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\n\
                          content-length: 0\r\ndate: Tue, 01 Dec 2026 09:19:54 GMT\r\n\r\n";
        let answer = json_parse_error(hyper_431).expect("replaced");
        let text = String::from_utf8(answer).expect("text");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let body: serde_json::Value = serde_json::from_str(body).expect("JSON");
        assert_eq!(body["field"], "headers");
        let untouched: [&[u8]; 3] = [
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
              content-length: 2\r\n\r\n{}",
            b"{\"error\":\"HTTP/1.1 400 \"}",
        ];
        for bytes in untouched {
            assert!(json_parse_error(bytes).is_none(), "{bytes:?}");
        }
    }

    fn limits() -> HttpLimits {
        HttpLimits {
            max_connections: 2,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_full_table_closes_the_longest_idle_connection_and_never_a_busy_one() {
        let connections = Connections::new(limits());
        // Same instant or not, the earlier admitted is the older: the set
        // orders by (since, id).
        let first = connections.admit().expect("room");
        let second = connections.admit().expect("room");
        let third = connections.admit().expect("the idle first makes room");
        assert!(first.closed.is_cancelled());
        assert!(!second.closed.is_cancelled());
        let _second_busy = InFlight::start(second.clone());
        let _third_busy = InFlight::start(third.clone());
        assert!(connections.admit().is_none(), "nothing idle to close");
        assert!(!second.closed.is_cancelled() && !third.closed.is_cancelled());
    }

    #[test]
    fn idle_and_head_deadlines_apply_but_requests_in_flight_have_none() {
        let connections = Connections::new(HttpLimits {
            max_connections: 10,
            ..limits()
        });
        // Real time: every connection below became idle at or just after
        // `start`, so each check stays a second clear of a deadline.
        let start = Instant::now();
        let idle = connections.admit().expect("room");
        let heading = connections.admit().expect("room");
        heading.head_started();
        let busy = connections.admit().expect("room");
        let _in_flight = InFlight::start(busy.clone());
        let expire = |after: u64| {
            connections
                .shared
                .lock()
                .close_expired(start + Duration::from_secs(after), limits())
        };
        assert!(expire(9).is_some());
        assert!(!heading.closed.is_cancelled());
        assert!(expire(11).is_some(), "the idle deadline remains");
        assert!(heading.closed.is_cancelled() && !idle.closed.is_cancelled());
        assert!(expire(59).is_some());
        assert!(!idle.closed.is_cancelled());
        assert_eq!(expire(61), None, "only a busy connection is left");
        assert!(idle.closed.is_cancelled());
        assert_eq!(expire(3600), None);
        assert!(!busy.closed.is_cancelled());
    }

    /// Sends `GET /pace` on `stream` and reads the answer's body.
    async fn pace_over(stream: &mut TcpStream) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(b"GET /pace HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("send");
        let mut answer = Vec::new();
        let mut chunk = [0u8; 512];
        while !answer.ends_with(b"Sporadic") && !answer.ends_with(b"BackToBack") {
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&answer);
        text.rsplit("\r\n").next().unwrap_or_default().to_owned()
    }

    #[tokio::test]
    async fn handlers_run_with_the_pace_of_their_connection() {
        let router = Router::new().route(
            "/pace",
            axum::routing::get(|| async { format!("{:?}", Pace::current()) }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, router, limits(), None, async {
            let _ = stopped.await;
        }));
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        assert_eq!(pace_over(&mut stream).await, "Sporadic", "a first request");
        // Sent at once after the answer: back to back, unless this machine
        // stalled the test for longer than BACK_TO_BACK every time.
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.push(pace_over(&mut stream).await);
            if seen.last().is_some_and(|pace| pace == "BackToBack") {
                break;
            }
        }
        assert_eq!(
            seen.last().map(String::as_str),
            Some("BackToBack"),
            "{seen:?}"
        );
        tokio::time::sleep(BACK_TO_BACK * 25).await;
        assert_eq!(pace_over(&mut stream).await, "Sporadic", "after a pause");
        let _ = stop.send(());
        server.await.expect("server task").expect("served");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_right_after_its_connections_last_answer_is_back_to_back() {
        let connections = Connections::new(limits());
        let client = connections.admit().expect("room");
        assert_eq!(client.pace(), Pace::Sporadic, "no answer yet");
        drop(InFlight::start(client.clone()));
        assert_eq!(client.pace(), Pace::BackToBack);
        tokio::time::advance(BACK_TO_BACK).await;
        assert_eq!(client.pace(), Pace::Sporadic);
        let other = connections.admit().expect("room");
        drop(InFlight::start(other.clone()));
        assert_eq!(other.pace(), Pace::BackToBack);
        assert_eq!(client.pace(), Pace::Sporadic, "each connection its own");
    }
}
