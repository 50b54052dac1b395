//! One probe of an HTTP or TCP check: what it found, as a status and the
//! output shown to operators. TTL checks have no probe: the service reports.

use std::time::Duration;

use tokio::net::TcpStream;

use crate::model::Status;

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
        Ok(response) => {
            let code = response.status();
            let status = if code.is_success() {
                Status::Passing
            } else if code.as_u16() == 429 {
                Status::Warning
            } else {
                Status::Critical
            };
            // Drain the body (bounded by the timeout) so the connection can
            // go back to the pool.
            let _ = response.bytes().await;
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
    match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
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

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}
