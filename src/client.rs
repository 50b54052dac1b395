//! The everyday operations against a running roster, for the command line
//! (`roster services`, `service`, `register`, `deregister`, `maintenance`,
//! `watch`, `export`, `import`): an HTTP client of the native API (and of
//! the Consul door's blocking queries, for `watch`), and the tables it
//! prints.
//!
//! Owns: requests to a running roster and how their answers are shown.
//! Must not: open a store or a socket roster serves on; it only asks.

use std::{fmt::Write as _, path::PathBuf, sync::Arc, time::Duration};

use reqwest::Method;

use rustls_pki_types::ServerName;
use serde_json::Value;

use crate::{
    http::tls::{crypto_provider, system_roots},
    pem_files,
};

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
        address: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// roster answered with an error: its status and message.
    #[error("{status}: {message}")]
    Refused { status: u16, message: String },
    #[error("roster's answer is not what this client expects: {0}")]
    Unexpected(String),
    /// The client's own TLS files or settings are not usable.
    #[error("{0}")]
    Tls(String),
}

impl ClientError {
    /// The process exit code for this failure: 1 when roster refused, 3
    /// when nothing answered (so scripts can tell the two apart).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Unreachable { .. } => 3,
            Self::Refused { .. } | Self::Unexpected(_) | Self::Tls(_) => 1,
        }
    }
}

/// Where a running roster's API is, as `--http` takes it: `HOST:PORT`,
/// `http://HOST:PORT` or `https://HOST:PORT`, HOST a name, an IPv4 address
/// or a bracketed IPv6 one (as in a URL).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `Some(true)` for `https://`, `Some(false)` for `http://`, `None`
    /// without a scheme (HTTPS then if a CA is given).
    pub https: Option<bool>,
    /// As written: a name, an IPv4 address or `[IPv6]`.
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// The host without the brackets of an IPv6 address: what is resolved
    /// or connected to, and what a certificate is checked against.
    fn bare_host(&self) -> &str {
        self.host
            .strip_prefix('[')
            .and_then(|host| host.strip_suffix(']'))
            .unwrap_or(&self.host)
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = match self.https {
            Some(true) => "https://",
            Some(false) => "http://",
            None => "",
        };
        write!(f, "{scheme}{}:{}", self.host, self.port)
    }
}

impl std::str::FromStr for Endpoint {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("{text:?} is not HOST:PORT or http(s)://HOST:PORT: {why}");
        let (https, rest) = match text.split_once("://") {
            Some(("https", rest)) => (Some(true), rest),
            Some(("http", rest)) => (Some(false), rest),
            Some(_) => return Err(bad("the scheme is neither http nor https")),
            None => (None, text),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') {
            return Err(bad("it has a path; give the API's address alone"));
        }
        let (host, port) = rest.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        let port = port
            .parse::<u16>()
            .map_err(|_| bad("the port is not 0-65535"))?;
        let name_like = |host: &str| {
            !host.is_empty()
                && host.len() <= 253
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        };
        let valid = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
            None => name_like(host),
        };
        if !valid {
            return Err(bad("the host is not a name or an IP address"));
        }
        Ok(Self {
            https,
            host: host.to_owned(),
            port,
        })
    }
}

/// HTTPS to a roster whose API speaks it (`[http] tls_cert_file`): the
/// CA that signed its certificate, then the only one trusted (the system's
/// CAs when `None`); the name its certificate is checked against (the host
/// of `--http` when `None`); and a client certificate and key, for a
/// roster that asks for one (`tls_client_ca_file`).
#[derive(Default)]
pub struct ClientTls {
    pub ca_file: Option<PathBuf>,
    pub server_name: Option<String>,
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// A running roster's HTTP API.
pub struct Client {
    transport: Transport,
    endpoint: Endpoint,
    token: Option<String>,
}

/// How requests reach roster.
enum Transport {
    /// Plain HTTP, keep-alive, through reqwest.
    Plain(reqwest::Client),
    /// HTTPS through tokio-rustls and hyper's client, a connection per
    /// request (reqwest's rustls would need a process-wide crypto provider,
    /// as Cargo.toml says).
    Tls {
        config: Arc<rustls::ClientConfig>,
        /// What the certificate is checked against.
        name: ServerName<'static>,
    },
}

impl Client {
    /// A client of the roster at `endpoint`, sending `token` (if any) as
    /// `X-Consul-Token`. HTTPS for an `https://` endpoint, or when `tls`
    /// names a CA; `tls` says how.
    pub fn new(
        endpoint: &Endpoint,
        token: Option<String>,
        tls: &ClientTls,
    ) -> Result<Self, ClientError> {
        let https = match (endpoint.https, &tls.ca_file) {
            (Some(false), Some(_)) => {
                return Err(ClientError::Tls(format!(
                    "--http {endpoint} is plain HTTP, but --ca-file asks for HTTPS"
                )));
            }
            (Some(https), _) => https,
            (None, ca_file) => ca_file.is_some(),
        };
        if !https && (tls.client_cert.is_some() || tls.server_name.is_some()) {
            return Err(ClientError::Tls(format!(
                "--cert-file and --tls-server-name are for HTTPS, and --http {endpoint} is \
                 plain HTTP: give https:// or --ca-file"
            )));
        }
        let transport = if https {
            let name = match &tls.server_name {
                Some(name) => name.clone(),
                None => endpoint.bare_host().to_owned(),
            };
            let server_name = ServerName::try_from(name.clone()).map_err(|error| {
                ClientError::Tls(format!("--tls-server-name {name:?}: {error}"))
            })?;
            Transport::Tls {
                config: Arc::new(rustls_config(tls)?),
                name: server_name,
            }
        } else {
            Transport::Plain(
                reqwest::Client::builder()
                    .no_proxy()
                    .timeout(REQUEST_TIMEOUT)
                    .build()
                    .map_err(|e| ClientError::Unexpected(e.to_string()))?,
            )
        };
        Ok(Self {
            transport,
            endpoint: endpoint.clone(),
            token: token.filter(|t| !t.is_empty()),
        })
    }

    fn unreachable(
        &self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> ClientError {
        ClientError::Unreachable {
            address: self.endpoint.to_string(),
            source: source.into(),
        }
    }

    /// Sends a request (`body`, if any, is JSON); the body of a 2xx answer
    /// (JSON, or `Null` when empty), else the error roster gave.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<(Value, Option<u64>), ClientError> {
        let (status, index, text) = match &self.transport {
            Transport::Plain(http) => {
                let url = format!("http://{}:{}{path}", self.endpoint.host, self.endpoint.port);
                let mut request = http.request(method, url);
                if let Some(token) = &self.token {
                    request = request.header("X-Consul-Token", token);
                }
                if let Some(body) = body {
                    request = request
                        .header("content-type", "application/json")
                        .body(body);
                }
                let response = request.send().await.map_err(|error| {
                    if answered_not_http(&error) {
                        self.unreachable(format!(
                            "{error}: the answer is not HTTP; if roster speaks HTTPS, give --ca-file"
                        ))
                    } else {
                        self.unreachable(error)
                    }
                })?;
                let status = response.status().as_u16();
                let index = consul_index(response.headers());
                let text = response.text().await.map_err(|e| self.unreachable(e))?;
                (status, index, text)
            }
            Transport::Tls { config, name } => {
                let exchange = self.send_tls(config, name, method, path, body);
                tokio::time::timeout(REQUEST_TIMEOUT, exchange)
                    .await
                    .map_err(|_| {
                        self.unreachable(format!(
                            "no answer within {} s",
                            REQUEST_TIMEOUT.as_secs()
                        ))
                    })??
            }
        };
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !(200..300).contains(&status) {
            let message = match &body {
                // The field at fault, as the API names it, leads: a
                // message alone ("must be between 1 and 65535") does not
                // say which flag it is about.
                Value::Object(map) => match (
                    map.get("error").and_then(Value::as_str),
                    map.get("field").and_then(Value::as_str),
                ) {
                    (Some(error), Some(field)) if !field.is_empty() => format!("{field}: {error}"),
                    (Some(error), _) => error.to_owned(),
                    (None, _) => body.to_string(),
                },
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            return Err(ClientError::Refused { status, message });
        }
        Ok((body, index))
    }

    /// One request over a TLS connection of its own: status, index, body.
    async fn send_tls(
        &self,
        config: &Arc<rustls::ClientConfig>,
        name: &ServerName<'static>,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<(u16, Option<u64>, String), ClientError> {
        let endpoint = &self.endpoint;
        let tcp = tokio::net::TcpStream::connect((endpoint.bare_host(), endpoint.port))
            .await
            .map_err(|e| self.unreachable(e))?;
        let tls = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name.clone(), tcp)
            .await
            .map_err(|e| self.unreachable(e))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| self.unreachable(e))?;
        let connection = tokio::spawn(connection);
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", format!("{}:{}", endpoint.host, endpoint.port));
        if let Some(token) = &self.token {
            request = request.header("X-Consul-Token", token);
        }
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let request = request
            .body(body.unwrap_or_default())
            .map_err(|e| ClientError::Unexpected(e.to_string()))?;
        let response = match sender.send_request(request).await {
            Ok(response) => response,
            Err(error) => {
                // Under TLS 1.3 the server checks a client certificate after
                // the client's handshake is done: its alert ("certificate
                // required") ends the connection, whose task has the reason
                // the request only sees as "not ready".
                let ended = tokio::time::timeout(Duration::from_secs(1), connection).await;
                return Err(match ended {
                    Ok(Ok(Err(reason))) => self.unreachable(reason),
                    _ => self.unreachable(error),
                });
            }
        };
        let status = response.status().as_u16();
        let index = consul_index(response.headers());
        let mut incoming = response.into_body();
        let mut bytes = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| {
            http_body::Body::poll_frame(std::pin::Pin::new(&mut incoming), cx)
        })
        .await
        {
            if let Ok(data) = frame.map_err(|e| self.unreachable(e))?.into_data() {
                bytes.extend_from_slice(&data);
            }
        }
        connection.abort();
        Ok((status, index, String::from_utf8_lossy(&bytes).into_owned()))
    }

    pub async fn services(&self) -> Result<Value, ClientError> {
        Ok(self.send(Method::GET, "/v1/services", None).await?.0)
    }

    pub async fn service(&self, name: &str) -> Result<Value, ClientError> {
        let path = format!("/v1/services/{}", encode(name));
        Ok(self.send(Method::GET, &path, None).await?.0)
    }

    pub async fn register(
        &self,
        service: &str,
        id: &str,
        body: &Value,
    ) -> Result<Value, ClientError> {
        let path = format!("/v1/services/{}/instances/{}", encode(service), encode(id));
        Ok(self
            .send(Method::PUT, &path, Some(body.to_string()))
            .await?
            .0)
    }

    pub async fn deregister(&self, service: &str, id: &str) -> Result<(), ClientError> {
        let path = format!("/v1/services/{}/instances/{}", encode(service), encode(id));
        self.send(Method::DELETE, &path, None).await.map(|_| ())
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
            .send(Method::PUT, &path, Some(body.to_string()))
            .await?
            .0)
    }

    /// Reports `status` (with `note`) to the instance's TTL checks.
    pub async fn heartbeat(
        &self,
        service: &str,
        id: &str,
        status: &str,
        note: Option<&str>,
    ) -> Result<Value, ClientError> {
        let path = format!(
            "/v1/services/{}/instances/{}/heartbeat",
            encode(service),
            encode(id)
        );
        let body = serde_json::json!({ "status": status, "note": note });
        Ok(self
            .send(Method::PUT, &path, Some(body.to_string()))
            .await?
            .0)
    }

    pub async fn export(&self) -> Result<Value, ClientError> {
        Ok(self.send(Method::GET, "/v1/export", None).await?.0)
    }

    pub async fn import(&self, export: String) -> Result<Value, ClientError> {
        Ok(self.send(Method::PUT, "/v1/import", Some(export)).await?.0)
    }

    /// Waits (a Consul blocking query) until the service's health may have
    /// changed since `index`; the new index.
    pub async fn wait_for_change(&self, name: &str, index: u64) -> Result<u64, ClientError> {
        let path = format!(
            "/v1/health/service/{}?index={index}&wait={WATCH_WAIT}",
            encode(name)
        );
        let (_, new_index) = self.send(Method::GET, &path, None).await?;
        new_index.ok_or_else(|| ClientError::Unexpected("no X-Consul-Index header".into()))
    }
}

/// Whether something answered, but not in HTTP: a TLS server's alert, as
/// an HTTPS roster sends a plain-HTTP client, fails hyper's parsing.
fn answered_not_http(error: &reqwest::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = cause {
        if error
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_parse)
        {
            return true;
        }
        cause = error.source();
    }
    false
}

/// The `X-Consul-Index` header's value, if it has a number.
fn consul_index(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    headers
        .get("x-consul-index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
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

/// The rustls configuration of `tls`: its CA alone trusted, or the
/// system's CAs without one; its client certificate presented if it has
/// one. Errors name the flag and the file.
fn rustls_config(tls: &ClientTls) -> Result<rustls::ClientConfig, ClientError> {
    const ORIGIN: &str = "HTTPS to roster";
    let failed = |error: crate::config::ConfigError| ClientError::Tls(error.to_string());
    let roots = match &tls.ca_file {
        Some(ca_file) => pem_files::roots(ORIGIN, "--ca-file", ca_file).map_err(failed)?,
        None => system_roots(),
    };
    if roots.is_empty() {
        return Err(ClientError::Tls(
            "this system has no CA certificates to check roster's against: give --ca-file".into(),
        ));
    }
    let builder = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|error| ClientError::Tls(error.to_string()))?
        .with_root_certificates(roots);
    let mut config = match &tls.client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = pem_files::certificates(ORIGIN, "--cert-file", cert).map_err(failed)?;
            let private = pem_files::private_key(ORIGIN, "--key-file", key).map_err(failed)?;
            builder
                .with_client_auth_cert(chain, private)
                .map_err(|error| {
                    failed(pem_files::unpaired(
                        ORIGIN,
                        ("--cert-file", cert),
                        ("--key-file", key),
                        &error,
                    ))
                })?
        }
    };
    // roster's API speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
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
    fn endpoints_are_host_port_with_an_optional_scheme() {
        let parse = |text: &str| text.parse::<Endpoint>();
        let endpoint = |https, host: &str, port| Endpoint {
            https,
            host: host.to_owned(),
            port,
        };
        assert_eq!(
            parse("127.0.0.1:8500"),
            Ok(endpoint(None, "127.0.0.1", 8500))
        );
        assert_eq!(
            parse("https://roster.internal:8501/"),
            Ok(endpoint(Some(true), "roster.internal", 8501))
        );
        assert_eq!(
            parse("http://[::1]:8500"),
            Ok(endpoint(Some(false), "[::1]", 8500))
        );
        assert_eq!(
            parse("[::1]:8500").map(|e| e.bare_host().to_owned()),
            Ok("::1".into())
        );
        assert_eq!(
            parse("https://roster.internal:8501").map(|e| e.to_string()),
            Ok("https://roster.internal:8501".into())
        );
        for bad in [
            "roster.internal",
            "ftp://roster:21",
            "roster:99999",
            ":8500",
            "[::1:8500",
            "[nope]:8500",
            "a b:8500",
            "http://roster:8500/v1",
        ] {
            assert!(parse(bad).is_err(), "{bad} parsed");
        }
        // Each refusal says what is wrong with the text.
        let why = |text: &str| parse(text).expect_err("refused");
        assert!(why("http://roster:8500/v1").contains("path"));
        assert!(why("roster:99999").contains("port"));
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(encode("Hello Service/1"), "Hello%20Service%2F1");
        assert_eq!(encode("web-1.a_b~"), "web-1.a_b~");
    }
}
