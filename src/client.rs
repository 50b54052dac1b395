//! The everyday operations against a running roster, for the command line
//! (`roster services`, `service`, `register`, `deregister`, `maintenance`,
//! `watch`, `export`, `import`): an HTTP client of the native API (and of
//! the Consul door's blocking queries, for `watch`), and the tables it
//! prints.
//!
//! Owns: requests to a running roster and how their answers are shown.
//! Must not: open a store or a socket roster serves on; it only asks.

use std::{fmt::Write as _, net::SocketAddr, time::Duration};

use serde_json::Value;

/// How long one request may take; `watch` asks with a shorter wait than
/// this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a `watch` blocking query waits for a change before asking again.
const WATCH_WAIT: &str = "20s";

/// Why an operation failed, in words for its user.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach roster at {address}: {source}")]
    Unreachable {
        address: SocketAddr,
        source: reqwest::Error,
    },
    /// roster answered with an error: its status and message.
    #[error("{status}: {message}")]
    Refused { status: u16, message: String },
    #[error("roster's answer is not what this client expects: {0}")]
    Unexpected(String),
}

impl ClientError {
    /// The process exit code for this failure: 1 when roster refused, 3
    /// when nothing answered (so scripts can tell the two apart).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Unreachable { .. } => 3,
            Self::Refused { .. } | Self::Unexpected(_) => 1,
        }
    }
}

/// A running roster's HTTP API.
pub struct Client {
    http: reqwest::Client,
    address: SocketAddr,
    token: Option<String>,
}

impl Client {
    /// A client of the roster at `address`, sending `token` (if any) as
    /// `X-Consul-Token`.
    pub fn new(address: SocketAddr, token: Option<String>) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| ClientError::Unexpected(e.to_string()))?;
        Ok(Self {
            http,
            address,
            token: token.filter(|t| !t.is_empty()),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Sends a request; the body of a 2xx answer (JSON, or `Null` when
    /// empty), else the error roster gave.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(Value, Option<u64>), ClientError> {
        let request = match &self.token {
            Some(token) => request.header("X-Consul-Token", token),
            None => request,
        };
        let response = request
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                address: self.address,
                source,
            })?;
        let status = response.status();
        let index = response
            .headers()
            .get("x-consul-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let text = response
            .text()
            .await
            .map_err(|source| ClientError::Unreachable {
                address: self.address,
                source,
            })?;
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !status.is_success() {
            let message = match &body {
                Value::Object(map) => map
                    .get("error")
                    .and_then(Value::as_str)
                    .map_or_else(|| body.to_string(), str::to_owned),
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            return Err(ClientError::Refused {
                status: status.as_u16(),
                message,
            });
        }
        Ok((body, index))
    }

    pub async fn services(&self) -> Result<Value, ClientError> {
        Ok(self.send(self.http.get(self.url("/v1/services"))).await?.0)
    }

    pub async fn service(&self, name: &str) -> Result<Value, ClientError> {
        let path = format!("/v1/services/{}", encode(name));
        Ok(self.send(self.http.get(self.url(&path))).await?.0)
    }

    pub async fn register(
        &self,
        service: &str,
        id: &str,
        body: &Value,
    ) -> Result<Value, ClientError> {
        let path = format!("/v1/services/{}/instances/{}", encode(service), encode(id));
        Ok(self
            .send(self.http.put(self.url(&path)).json(body))
            .await?
            .0)
    }

    pub async fn deregister(&self, service: &str, id: &str) -> Result<(), ClientError> {
        let path = format!("/v1/services/{}/instances/{}", encode(service), encode(id));
        self.send(self.http.delete(self.url(&path)))
            .await
            .map(|_| ())
    }

    pub async fn maintenance(
        &self,
        service: &str,
        id: &str,
        enable: bool,
        reason: Option<&str>,
    ) -> Result<Value, ClientError> {
        let path = format!(
            "/v1/services/{}/instances/{}/maintenance",
            encode(service),
            encode(id)
        );
        let body = serde_json::json!({ "enable": enable, "reason": reason });
        Ok(self
            .send(self.http.put(self.url(&path)).json(&body))
            .await?
            .0)
    }

    pub async fn export(&self) -> Result<Value, ClientError> {
        Ok(self.send(self.http.get(self.url("/v1/export"))).await?.0)
    }

    pub async fn import(&self, export: String) -> Result<Value, ClientError> {
        let request = self
            .http
            .put(self.url("/v1/import"))
            .header("content-type", "application/json")
            .body(export);
        Ok(self.send(request).await?.0)
    }

    /// Waits (a Consul blocking query) until the service's health may have
    /// changed since `index`; the new index.
    pub async fn wait_for_change(&self, name: &str, index: u64) -> Result<u64, ClientError> {
        let path = format!(
            "/v1/health/service/{}?index={index}&wait={WATCH_WAIT}",
            encode(name)
        );
        let (_, new_index) = self.send(self.http.get(self.url(&path))).await?;
        new_index.ok_or_else(|| ClientError::Unexpected("no X-Consul-Index header".into()))
    }
}

/// Percent-encodes a path segment.
fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// `roster services`: one line per service.
pub fn services_table(services: &Value) -> String {
    let rows: Vec<Vec<String>> = services
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|s| {
            vec![
                text(&s["name"]),
                text(&s["instances"]),
                text(&s["in_dns"]),
                text(&s["dns_name"]),
            ]
        })
        .collect();
    table(&["SERVICE", "INSTANCES", "IN DNS", "DNS NAME"], &rows)
}

/// `roster service NAME`: one line per instance, with its checks.
pub fn service_table(service: &Value) -> String {
    let rows: Vec<Vec<String>> = service["instances"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|i| {
            let checks: Vec<String> = i["checks"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|c| format!("{}={}", text(&c["id"]), text(&c["status"])))
                .collect();
            let status = match i["maintenance"].as_str() {
                Some(_) => "maintenance".to_owned(),
                None => text(&i["status"]),
            };
            vec![
                text(&i["id"]),
                text(&i["address"]),
                text(&i["port"]),
                status,
                if i["in_dns"].as_bool() == Some(true) {
                    "yes"
                } else {
                    "no"
                }
                .to_owned(),
                join(&i["tags"]),
                checks.join(" "),
            ]
        })
        .collect();
    table(
        &[
            "ID", "ADDRESS", "PORT", "STATUS", "IN DNS", "TAGS", "CHECKS",
        ],
        &rows,
    )
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn join(values: &Value) -> String {
    values
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(text)
        .collect::<Vec<_>>()
        .join(",")
}

/// Left-aligned columns, two spaces apart; no trailing spaces.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_service_table_lines_up_and_says_what_dns_serves() {
        let service = json!({
            "name": "web",
            "instances": [
                { "id": "web-1", "address": "127.0.0.1", "port": 8080, "status": "passing",
                  "in_dns": true, "maintenance": null, "tags": ["a", "b"],
                  "checks": [{ "id": "service:web-1", "status": "passing" }] },
                { "id": "web-22", "address": "127.0.0.2", "port": 80, "status": "passing",
                  "in_dns": false, "maintenance": "deploy", "tags": [], "checks": [] },
            ],
        });
        let expected = "\
ID      ADDRESS    PORT  STATUS       IN DNS  TAGS  CHECKS
web-1   127.0.0.1  8080  passing      yes     a,b   service:web-1=passing
web-22  127.0.0.2  80    maintenance  no
";
        assert_eq!(service_table(&service), expected);
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(encode("Hello Service/1"), "Hello%20Service%2F1");
        assert_eq!(encode("web-1.a_b~"), "web-1.a_b~");
    }
}
