//! The endpoints health checks probe, run inside the test: an HTTP server
//! whose answer the test flips between 200, 429, 500 and never answering,
//! and a TCP listener the test closes and reopens on the same port; plus
//! the check definitions that point at them.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering::SeqCst},
    },
    time::Duration,
};

use axum::{
    extract::State,
    http::{HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
    routing::any,
    serve::ListenerExt,
};
use serde_json::{Value, json};
use tokio::{net::TcpListener, task::JoinHandle, time::sleep};

use super::poll::{LIMIT, eventually};

/// Fast checks: timeout equal to the interval, so only a real hang times out.
pub const INTERVAL: &str = "200ms";
/// See [`INTERVAL`].
pub const TIMEOUT: &str = "200ms";

/// An HTTP check of `target` at the fast cadence, plus `extra` fields.
pub fn http_check(target: &HttpTarget, extra: Value) -> Value {
    fast_check("http", target.url(), extra)
}

/// A TCP check of `address` at the fast cadence, plus `extra` fields.
pub fn tcp_check(address: SocketAddr, extra: Value) -> Value {
    fast_check("tcp", address.to_string(), extra)
}

/// `{"check": {kind: target, …}}` at the fast cadence, plus `extra` fields.
fn fast_check(kind: &str, target: String, extra: Value) -> Value {
    let mut check = json!({
        kind: target,
        "interval": INTERVAL,
        "timeout": TIMEOUT,
    });
    for (key, value) in extra.as_object().expect("extra fields are an object") {
        check[key] = value.clone();
    }
    json!({ "check": check })
}

/// How the HTTP target answers a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Respond {
    /// 200 OK.
    Ok,
    /// 429 Too Many Requests.
    TooMany,
    /// 500 Internal Server Error.
    Fail,
    /// Never answers (until the client gives up).
    Hang,
    /// Waits until the mode is something other than `Hold`, then answers
    /// by the new mode: lets a test hold a probe in flight.
    Hold,
    /// Any other status code.
    Status(u16),
}

impl Respond {
    fn code(self) -> u16 {
        match self {
            Self::Ok => 200,
            Self::TooMany => 429,
            Self::Fail => 500,
            Self::Status(code) => code,
            Self::Hang | Self::Hold => 0,
        }
    }
}

/// What the HTTP target does and has seen. std mutexes: never held across
/// an await.
#[derive(Debug)]
pub struct TargetState {
    /// How requests are answered when `script` is empty.
    pub mode: Mutex<Respond>,
    /// One-off answers for the next requests, in order.
    pub script: Mutex<VecDeque<Respond>>,
    /// Requests received so far.
    pub received: AtomicUsize,
    /// Status codes answered, in order.
    pub answered: Mutex<Vec<u16>>,
    /// Method and `x-probe` header of every request.
    pub seen: Mutex<Vec<(String, Option<String>)>>,
    /// TCP connections accepted.
    pub connections: AtomicUsize,
}

/// An HTTP health endpoint on 127.0.0.1 whose answer the test controls.
pub struct HttpTarget {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it does and has seen, shared with its handler.
    pub state: Arc<TargetState>,
    /// The server task, aborted on drop.
    task: JoinHandle<()>,
}

impl Drop for HttpTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn target_handler(
    State(state): State<Arc<TargetState>>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    state.received.fetch_add(1, SeqCst);
    state.seen.lock().unwrap().push((
        method.to_string(),
        headers
            .get("x-probe")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    ));
    let scripted = state.script.lock().unwrap().pop_front();
    let mut respond = scripted.unwrap_or_else(|| *state.mode.lock().unwrap());
    // Bounded: a held request is released by the test or, at worst, after
    // 30 s (the probe will have timed out and dropped it long before).
    for _ in 0..3000 {
        match respond {
            Respond::Hang => std::future::pending::<()>().await,
            Respond::Hold => {
                sleep(Duration::from_millis(10)).await;
                respond = *state.mode.lock().unwrap();
            }
            _ => break,
        }
    }
    let code = respond.code();
    if code == 0 {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    state.answered.lock().unwrap().push(code);
    StatusCode::from_u16(code)
        .expect("valid status")
        .into_response()
}

impl HttpTarget {
    /// Starts answering by `mode` on an ephemeral loopback port.
    pub async fn start(mode: Respond) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind target");
        let addr = listener.local_addr().expect("target address");
        let state = Arc::new(TargetState {
            mode: Mutex::new(mode),
            script: Mutex::new(VecDeque::new()),
            received: AtomicUsize::new(0),
            answered: Mutex::new(Vec::new()),
            seen: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
        });
        let app = axum::Router::new()
            .route("/health", any(target_handler))
            .with_state(state.clone());
        let counted = state.clone();
        let listener = listener.tap_io(move |_| {
            counted.connections.fetch_add(1, SeqCst);
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state, task }
    }

    /// Its health URL.
    pub fn url(&self) -> String {
        format!("http://{}/health", self.addr)
    }

    /// Answers by `mode` from now on.
    pub fn set(&self, mode: Respond) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// Answers the next requests by `answers`, then by the mode again.
    pub fn script(&self, answers: &[Respond]) {
        self.state.script.lock().unwrap().extend(answers);
    }

    /// Requests received so far.
    pub fn received(&self) -> usize {
        self.state.received.load(SeqCst)
    }

    /// Status codes answered so far, in order.
    pub fn answered(&self) -> Vec<u16> {
        self.state.answered.lock().unwrap().clone()
    }

    /// How many of the last answers, counting back, were `code`.
    pub fn trailing(&self, code: u16) -> usize {
        self.answered()
            .iter()
            .rev()
            .take_while(|c| **c == code)
            .count()
    }

    /// Waits until the answers so far satisfy `condition`.
    pub async fn wait_answers(&self, what: &str, condition: impl Fn(&[u16]) -> bool) {
        eventually(what, LIMIT, || async {
            let answered = self.answered();
            if condition(&answered) {
                Ok(())
            } else {
                Err(format!("answered {answered:?}"))
            }
        })
        .await
    }
}

/// A TCP endpoint on 127.0.0.1 the test closes and reopens on the same port.
pub struct TcpTarget {
    /// Where it listens, across reopenings.
    pub addr: SocketAddr,
    /// The accept loop; `None` while closed.
    accept: Option<JoinHandle<()>>,
    /// Connections accepted, across reopenings.
    pub accepted: Arc<AtomicUsize>,
}

impl Drop for TcpTarget {
    fn drop(&mut self) {
        if let Some(task) = self.accept.take() {
            task.abort();
        }
    }
}

/// Accepts and counts connections on `listener` until aborted.
fn accept_loop(listener: TcpListener, accepted: Arc<AtomicUsize>) -> JoinHandle<()> {
    tokio::spawn(async move {
        // Accept and close: a completed connect is all a TCP check wants.
        while let Ok((stream, _)) = listener.accept().await {
            accepted.fetch_add(1, SeqCst);
            drop(stream);
        }
    })
}

impl TcpTarget {
    /// Listens on an ephemeral loopback port.
    pub async fn open() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind TCP target");
        let addr = listener.local_addr().expect("TCP target address");
        let accepted = Arc::new(AtomicUsize::new(0));
        Self {
            addr,
            accept: Some(accept_loop(listener, accepted.clone())),
            accepted,
        }
    }

    /// Stops listening: connects are refused from the moment this returns.
    pub async fn close(&mut self) {
        if let Some(task) = self.accept.take() {
            task.abort();
            // The aborted task has dropped its listener once this resolves.
            let _ = task.await;
        }
    }

    /// Listens on the same port again (tokio sets SO_REUSEADDR).
    pub async fn reopen(&mut self) {
        let listener = eventually(&format!("rebinding {}", self.addr), LIMIT, || async {
            TcpListener::bind(self.addr)
                .await
                .map_err(|e| e.to_string())
        })
        .await;
        self.accept = Some(accept_loop(listener, self.accepted.clone()));
    }
}

/// A local port nothing listens on (bound, then released).
pub fn dead_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address")
}
