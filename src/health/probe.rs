//! One probe of an HTTP or TCP check: what it found, as a status and the
//! output shown to operators. TTL checks have no probe: the service reports.
//!
//! The scheduler runs probes through the [`Prober`] seam, so its own tests
//! can script what probes find and run on a paused clock without a network.

use std::{future::Future, io, net::SocketAddr, pin::Pin, time::Duration};

use tokio::net::TcpStream;

use crate::{
    model::{CheckKind, Status},
    resolve::Resolver,
};

/// The most of an HTTP check's response body a probe reads (Consul keeps
/// 4 KB of output); the rest is never read and the connection is closed.
const MAX_BODY_READ: usize = 4 * 1024;

/// What one probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    /// The status this one result points to (before any threshold).
    pub status: Status,
    /// What the probe saw, as shown to operators in the check's output.
    pub output: String,
}

/// A probe in progress. Owns everything it needs (`'static`), so the
/// scheduler can run it in a task of its own.
pub type Probing = Pin<Box<dyn Future<Output = ProbeResult> + Send + 'static>>;

/// Runs one probe of a check. The scheduler's only way to reach a checked
/// endpoint: the network one in production, a scripted one in its tests.
pub trait Prober: Send + Sync + 'static {
    /// Probes `kind` (an HTTP or TCP check; never called for TTL checks)
    /// within `timeout`.
    fn probe(&self, kind: &CheckKind, timeout: Duration) -> Probing;
}

/// Idle keep-alive connections kept per endpoint host. Many instances often
/// share one host (a node, a sidecar, a test server): a pool smaller than
/// the probes in flight to it would close and reopen connections all the
/// time, which costs more than the probes themselves.
const POOL_PER_HOST: usize = 256;

/// How long an idle keep-alive connection to a checked endpoint is kept
/// (reqwest's own default, stated): longer than the usual check intervals,
/// so each probe reuses the connection the last one left.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The longest a probe's host-name lookup may take: its wait for a turn at
/// the shared resolver, and as long again for the lookup itself. The
/// probe's own timeout still applies on top.
const LOOKUP_TIMEOUT: Duration = crate::resolve::WAIT_LIMIT.saturating_mul(2);

/// The HTTP client could not be built, so HTTP checks cannot run.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client for health checks: {0}")]
pub struct ClientError(#[source] reqwest::Error);

/// Probes over the network: HTTP through one shared client (so connections
/// to an endpoint are reused between probes), TCP by connecting.
pub struct NetworkProber {
    /// Shared by every HTTP probe; cloning it clones a handle to one pool.
    client: reqwest::Client,
}

impl NetworkProber {
    /// Builds the shared HTTP client. It does not follow redirects: the
    /// README documents any non-2xx answer but 429 as critical, and a
    /// redirect to a healthy page must not hide a moved or broken endpoint.
    /// A failure is returned, never replaced by a default client, since
    /// that one would follow redirects and resolve names on its own.
    pub fn new() -> Result<Self, ClientError> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(POOL_PER_HOST)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("roster-health-check/", env!("CARGO_PKG_VERSION")))
            // Host names go through the bounded resolver, not reqwest's own
            // getaddrinfo threads on the blocking pool (see crate::resolve).
            .dns_resolver(crate::resolve::CheckResolver {
                timeout: LOOKUP_TIMEOUT,
            })
            .build()
            .map_err(ClientError)?;
        Ok(Self { client })
    }
}

impl Prober for NetworkProber {
    fn probe(&self, kind: &CheckKind, timeout: Duration) -> Probing {
        match kind.clone() {
            CheckKind::Http {
                url,
                method,
                headers,
                ..
            } => {
                let client = self.client.clone();
                Box::pin(async move { http(&client, &method, &url, &headers, timeout).await })
            }
            CheckKind::Tcp { address, .. } => Box::pin(async move { tcp(&address, timeout).await }),
            CheckKind::Ttl { .. } => Box::pin(std::future::ready(ProbeResult {
                status: Status::Critical,
                output: "a TTL check has no probe".into(),
            })),
        }
    }
}

/// Stands in for the network prober when the HTTP client could not be
/// built: every HTTP check is critical with the reason as its output, so
/// operators see why, and TCP checks still run.
pub(super) struct WithoutHttp {
    /// Why HTTP checks cannot run, shown in each one's output.
    reason: String,
}

impl WithoutHttp {
    pub(super) fn new(error: &ClientError) -> Self {
        Self {
            reason: format!("{error}: {}", root_cause(error)),
        }
    }
}

impl Prober for WithoutHttp {
    fn probe(&self, kind: &CheckKind, timeout: Duration) -> Probing {
        match kind {
            CheckKind::Tcp { address, .. } => {
                let address = address.clone();
                Box::pin(async move { tcp(&address, timeout).await })
            }
            _ => Box::pin(std::future::ready(ProbeResult {
                status: Status::Critical,
                output: self.reason.clone(),
            })),
        }
    }
}

/// `GET url` (or another method) with `timeout`: 2xx passing, 429 warning,
/// anything else, a refused connection or a timeout critical. The client is
/// shared, so connections to an endpoint are reused between probes.
pub(super) async fn http(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> ProbeResult {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut request = client.request(method.clone(), url).timeout(timeout);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    match request.send().await {
        Ok(mut response) => {
            let code = response.status();
            let status = if code.is_success() {
                Status::Passing
            } else if code.as_u16() == 429 {
                Status::Warning
            } else {
                Status::Critical
            };
            // Read a short body to its end so the connection can go back to
            // the pool, but never more than Consul keeps as output: an
            // endless or huge body would otherwise be buffered until the
            // timeout (62 MB/s for three checks). Dropping the response
            // unread closes that connection instead.
            let mut read = 0;
            while read < MAX_BODY_READ {
                match response.chunk().await {
                    Ok(Some(chunk)) => read += chunk.len(),
                    Ok(None) | Err(_) => break,
                }
            }
            drop(response);
            ProbeResult {
                status,
                output: format!("HTTP {method} {url}: {code}"),
            }
        }
        Err(error) => {
            let reason = if error.is_timeout() {
                format!(
                    "timed out after {}",
                    crate::model::format_go_duration(timeout)
                )
            } else if error.is_connect() {
                format!("connection failed: {}", root_cause(&error))
            } else {
                root_cause(&error)
            };
            ProbeResult {
                status: Status::Critical,
                output: format!("HTTP {method} {url}: {reason}"),
            }
        }
    }
}

/// Connects to `address` within `timeout`: a completed connect is passing.
pub(super) async fn tcp(address: &str, timeout: Duration) -> ProbeResult {
    match tokio::time::timeout(timeout, connect(address, timeout)).await {
        Ok(Ok(_stream)) => ProbeResult {
            status: Status::Passing,
            output: format!("TCP connect {address}: success"),
        },
        Ok(Err(error)) => ProbeResult {
            status: Status::Critical,
            output: format!("TCP connect {address}: {error}"),
        },
        Err(_) => ProbeResult {
            status: Status::Critical,
            output: format!(
                "TCP connect {address}: timed out after {}",
                crate::model::format_go_duration(timeout)
            ),
        },
    }
}

/// Connects to `host:port`, resolving a host name through the bounded
/// resolver (`TcpStream::connect` would run `getaddrinfo` on the blocking
/// pool the store's commits need), trying each address in turn.
async fn connect(address: &str, timeout: Duration) -> io::Result<TcpStream> {
    if let Ok(literal) = address.parse::<SocketAddr>() {
        return TcpStream::connect(literal).await;
    }
    let invalid = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "invalid address: expected host:port",
        )
    };
    let (host, port) = address.rsplit_once(':').ok_or_else(invalid)?;
    let port: u16 = port.parse().map_err(|_| invalid())?;
    let found = Resolver::shared()
        .lookup(host, port, timeout)
        .await
        .map_err(io::Error::other)?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name resolves to no address");
    for addr in found {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(error) => last = error,
        }
    }
    Err(last)
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}
