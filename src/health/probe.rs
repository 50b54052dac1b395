//! One probe of an HTTP or TCP check: what it found, as a status and the
//! output shown to operators. TTL checks have no probe: the service reports.

use std::{io, net::SocketAddr, time::Duration};

use tokio::net::TcpStream;

use crate::{model::Status, resolve::Resolver};

/// The most of an HTTP check's response body a probe reads (Consul keeps
/// 4 KB of output); the rest is never read and the connection is closed.
const MAX_BODY_READ: usize = 4 * 1024;

/// What one probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    pub status: Status,
    pub output: String,
}

/// `GET url` (or another method) with `timeout`: 2xx passing, 429 warning,
/// anything else, a refused connection or a timeout critical. The client is
/// shared, so connections to an endpoint are reused between probes.
pub async fn http(
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
pub async fn tcp(address: &str, timeout: Duration) -> ProbeResult {
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
