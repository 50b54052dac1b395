//! The native HTTP API, as a client sees it: [`HttpReply`], and
//! [`Server`] methods for each call the tests make.

use std::net::IpAddr;

use serde_json::{Value, json};

use super::{
    DEADLINE, Server,
    poll::{LIMIT, eventually},
};

/// A plain-HTTP client that ignores proxy settings in the environment.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(DEADLINE)
        .build()
        .expect("HTTP client")
}

/// An HTTP response: the status and the body, parsed as JSON when it is.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    /// `Value::Null` for an empty body; the text as a JSON string when the
    /// body is not JSON.
    pub body: Value,
}

impl HttpReply {
    /// Asserts a JSON error `{"error": "...", "field": ...}` with `status`,
    /// and returns the `field`, if any.
    pub fn assert_error(&self, status: u16) -> Option<String> {
        assert_eq!(self.status, status, "{self:?}");
        let error = self.body.get("error").and_then(Value::as_str);
        assert!(
            error.is_some_and(|e| !e.is_empty()),
            "expected a JSON body with an \"error\" message: {self:?}"
        );
        self.body
            .get("field")
            .and_then(Value::as_str)
            .map(str::to_owned)
    }
}

impl Server {
    /// A URL under the API from path segments, each percent-encoded.
    pub fn url(&self, segments: &[&str]) -> reqwest::Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("http URL has a path")
            .pop_if_empty()
            .extend(segments);
        url
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> HttpReply {
        let response = request.send().await.expect("HTTP request");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("HTTP body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        HttpReply { status, body }
    }

    /// `GET` a path given as segments (`["v1", "services"]`).
    pub async fn get(&self, segments: &[&str]) -> HttpReply {
        self.send(self.http.get(self.url(segments))).await
    }

    /// `PUT` raw bytes as a JSON body.
    pub async fn put_raw(&self, segments: &[&str], body: impl Into<reqwest::Body>) -> HttpReply {
        let request = self
            .http
            .put(self.url(segments))
            .header("content-type", "application/json")
            .body(body);
        self.send(request).await
    }

    /// `PUT /v1/services/{service}/instances/{id}` with a JSON body.
    ///
    /// Panics if the body gives a check to a non-loopback address: see
    /// [`assert_checked_only_on_loopback`].
    pub async fn register(&self, service: &str, id: &str, body: Value) -> HttpReply {
        assert_checked_only_on_loopback(service, id, &body);
        let request = self
            .http
            .put(self.url(&["v1", "services", service, "instances", id]))
            .json(&body);
        self.send(request).await
    }

    /// Registers an instance with just an address and port; asserts 200.
    pub async fn add(&self, service: &str, id: &str, address: &str, port: u16) -> Value {
        let reply = self
            .register(
                service,
                id,
                serde_json::json!({ "address": address, "port": port }),
            )
            .await;
        assert_eq!(reply.status, 200, "register {service}/{id}: {reply:?}");
        reply.body
    }

    /// `DELETE /v1/services/{service}/instances/{id}`.
    pub async fn deregister(&self, service: &str, id: &str) -> HttpReply {
        let url = self.url(&["v1", "services", service, "instances", id]);
        self.send(self.http.delete(url)).await
    }

    /// `PUT …/maintenance` with `{"enable": …, "reason": …}`.
    pub async fn maintenance(
        &self,
        service: &str,
        id: &str,
        enable: bool,
        reason: &str,
    ) -> HttpReply {
        let request = self
            .http
            .put(self.url(&["v1", "services", service, "instances", id, "maintenance"]))
            .json(&serde_json::json!({ "enable": enable, "reason": reason }));
        self.send(request).await
    }

    /// `GET /v1/services`, sorted by name so two listings compare equal when
    /// the registry holds the same services.
    pub async fn services(&self) -> Value {
        let reply = self.get(&["v1", "services"]).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        let mut list =
            reply.body.as_array().cloned().unwrap_or_else(|| {
                panic!("GET /v1/services is not a JSON array: {:?}", reply.body)
            });
        list.sort_by_key(|s| s["name"].as_str().unwrap_or_default().to_owned());
        Value::Array(list)
    }
}

/// Panics if `body` registers an instance at a non-loopback IP address
/// with a check. The project's rule for tests: an instance off loopback
/// (a documentation address such as 10.0.0.1) has no check, so nothing a
/// test starts ever probes, or seems to be set up to probe, another
/// machine. An address that is not an IP at all is left to the server to
/// refuse, since tests of bad input send those on purpose.
pub fn assert_checked_only_on_loopback(service: &str, id: &str, body: &Value) {
    let has_check = body.get("check").is_some_and(|c| !c.is_null())
        || body
            .get("checks")
            .is_some_and(|c| c.as_array().is_none_or(|list| !list.is_empty()));
    let off_loopback = body
        .get("address")
        .and_then(Value::as_str)
        .and_then(|a| a.parse::<IpAddr>().ok())
        .is_some_and(|ip| !ip.is_loopback());
    assert!(
        !(has_check && off_loopback),
        "test bug: {service}/{id} has a check but a non-loopback address \
         (use 127.0.0.x or ::1 for an instance with a check): {body}"
    );
}

/// `GET /v1/services/{service}/instances/{id}`.
pub async fn get_instance(server: &Server, service: &str, id: &str) -> HttpReply {
    server
        .get(&["v1", "services", service, "instances", id])
        .await
}

/// The instance's JSON, asserting it exists.
pub async fn instance(server: &Server, service: &str, id: &str) -> Value {
    let reply = get_instance(server, service, id).await;
    assert_eq!(reply.status, 200, "GET {service}/{id}: {reply:?}");
    reply.body
}

/// `PUT …/heartbeat` with `body` (empty for none).
pub async fn heartbeat(server: &Server, service: &str, id: &str, body: &str) -> HttpReply {
    server
        .put_raw(
            &["v1", "services", service, "instances", id, "heartbeat"],
            body.to_owned(),
        )
        .await
}

/// `GET /v1/metrics`.
pub async fn metrics(server: &Server) -> Value {
    let reply = server.get(&["v1", "metrics"]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body
}

/// The value of `sample` (a Prometheus metric name with its labels, as
/// `GET /metrics` writes them) on `server`, asserting it is there.
pub async fn prometheus_sample(server: &Server, sample: &str) -> f64 {
    prometheus_sample_at(server.url(&["metrics"]).as_str(), sample).await
}

/// [`prometheus_sample`] from the exposition at `metrics_url` (a roster
/// process's `/metrics`).
pub async fn prometheus_sample_at(metrics_url: &str, sample: &str) -> f64 {
    let text = http_client()
        .get(metrics_url)
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("the exposition");
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {sample} in\n{text}"))
        .parse()
        .expect("a number")
}

/// The counter `name` of a metrics snapshot, asserting it exists.
pub fn counter(metrics: &Value, name: &str) -> u64 {
    metrics[name]
        .as_u64()
        .unwrap_or_else(|| panic!("metric {name:?} missing: {metrics}"))
}

/// Registers `service/id` at `address`, port 8080, with the fields of
/// `extra` (a "check" or "checks") added; asserts 200 and returns the body.
pub async fn register(
    server: &Server,
    service: &str,
    id: &str,
    address: &str,
    extra: Value,
) -> Value {
    let mut body = json!({ "address": address, "port": 8080 });
    for (key, value) in extra.as_object().expect("extra fields are an object") {
        body[key] = value.clone();
    }
    let reply = server.register(service, id, body).await;
    assert_eq!(reply.status, 200, "register {service}/{id}: {reply:?}");
    reply.body
}

/// Waits until the instance's first check has `status` and an output
/// containing `output` (case-insensitive); returns the instance.
pub async fn wait_check(
    server: &Server,
    service: &str,
    id: &str,
    status: &str,
    output: &str,
) -> Value {
    let wanted = output.to_ascii_lowercase();
    eventually(
        &format!("{service}/{id} check {status} with output containing {output:?}"),
        LIMIT,
        || async {
            let body = instance(server, service, id).await;
            let check = &body["checks"][0];
            let seen_output = check["output"].as_str().unwrap_or_default();
            if check["status"] == status && seen_output.to_ascii_lowercase().contains(&wanted) {
                Ok(body)
            } else {
                Err(format!(
                    "status {} output {:?}",
                    check["status"], check["output"]
                ))
            }
        },
    )
    .await
}

/// `PUT url` with a JSON body; asserts a 2xx and returns the JSON answer.
pub async fn put(client: &reqwest::Client, url: &str, body: Value) -> Value {
    let response = client
        .put(url)
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
    let status = response.status();
    let text = response.text().await.expect("body");
    assert!(status.is_success(), "PUT {url} {body}: {status}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("PUT {url}: {e}: {text}"))
}

/// `GET url`: the status and the JSON body.
pub async fn get(client: &reqwest::Client, url: &str) -> (reqwest::StatusCode, Value) {
    let response = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status();
    let text = response.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {url}: {e}: {text}"));
    (status, value)
}

/// `GET url`, asserting a 2xx; the JSON body.
pub async fn get_ok(client: &reqwest::Client, url: &str) -> Value {
    let (status, value) = get(client, url).await;
    assert!(status.is_success(), "GET {url}: {status}: {value}");
    value
}

// ---------------------------------------------------------------------------
// A small DNS client.
