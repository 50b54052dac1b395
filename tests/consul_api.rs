//! The Consul-compatible API of a real roster, on the wire: status codes and
//! Consul's error wording, the index headers, body keys in any case, raw
//! colons in check IDs, percent-decoded names, blocking queries, and that
//! the Consul door and the native door and DNS all see one registry.
//!
//! Requests are sent the way the Python clients send them: bodies without a
//! `Content-Type`, paths quoted with `safe='/:'`, booleans as `True`/`1`.

mod common;

use std::time::{Duration, Instant};

use common::{Server, http_client, ip, start_server, start_server_with};
use hickory_proto::{op::ResponseCode, rr::RecordType};
use serde_json::{Value, json};

/// Long enough for any single answer on a busy machine; blocking queries in
/// these tests wait at most 30 s and are expected back far sooner.
const ANSWER_LIMIT: Duration = Duration::from_secs(20);

/// One HTTP exchange, with what Consul clients read from it.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `X-Consul-Index`, asserting that it is there and above 0.
    fn index(&self) -> u64 {
        let index: u64 = self
            .header("x-consul-index")
            .unwrap_or_else(|| panic!("no X-Consul-Index: {self:?}"))
            .parse()
            .unwrap_or_else(|e| panic!("X-Consul-Index is not a number ({e}): {self:?}"));
        assert!(index > 0, "X-Consul-Index is 0: {self:?}");
        index
    }

    fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "{self:?}");
        self
    }

    /// Asserts a status and that the text body contains `words`.
    fn assert_error(&self, status: u16, words: &str) {
        self.assert_status(status);
        assert!(
            self.text.contains(words),
            "expected {words:?} in the body: {self:?}"
        );
    }
}

/// A Consul client's view of a roster: raw paths, as the Python clients
/// build them (`safe='/:'` keeps colons raw).
struct Consul {
    server: Server,
    http: reqwest::Client,
}

impl Consul {
    async fn start() -> Self {
        Self::wrap(start_server().await)
    }

    fn wrap(server: Server) -> Self {
        Self {
            server,
            http: http_client(),
        }
    }

    fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.server.http_addr, path_and_query)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = tokio::time::timeout(ANSWER_LIMIT, request.send())
            .await
            .expect("an answer in time")
            .expect("HTTP exchange");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        Reply {
            status,
            headers,
            text,
        }
    }

    async fn get(&self, path_and_query: &str) -> Reply {
        self.send(self.http.get(self.url(path_and_query))).await
    }

    /// A PUT without a body (`Content-Length: 0`), like `ttl_pass`.
    async fn put(&self, path_and_query: &str) -> Reply {
        self.send(self.http.put(self.url(path_and_query)).body(""))
            .await
    }

    /// A PUT with a JSON body and no `Content-Type`, like both clients.
    async fn put_json(&self, path_and_query: &str, body: &Value) -> Reply {
        let bytes = serde_json::to_vec(body).expect("JSON");
        let request = self.http.put(self.url(path_and_query)).body(bytes);
        self.send(request).await
    }

    /// Registers a service; asserts 200 and the empty body clients expect.
    async fn register(&self, body: Value) {
        let reply = self.put_json("/v1/agent/service/register", &body).await;
        reply.assert_status(200);
        assert_eq!(reply.text, "", "{reply:?}");
    }

    async fn agent_checks(&self) -> Value {
        self.get("/v1/agent/checks").await.assert_status(200).json()
    }

    /// The status of one check as `/v1/agent/checks` shows it.
    async fn check_status(&self, check_id: &str) -> Option<String> {
        self.agent_checks().await[check_id]["Status"]
            .as_str()
            .map(str::to_owned)
    }

    /// The SRV targets DNS serves for `<label>.service.local`.
    async fn srv_targets(&self, label: &str) -> Vec<String> {
        let reply = self
            .server
            .query(&format!("{label}.service.local"), RecordType::SRV)
            .await;
        let mut targets: Vec<String> = reply
            .srvs()
            .iter()
            .map(|srv| srv.target.to_ascii().to_ascii_lowercase())
            .collect();
        targets.sort();
        targets
    }

    /// The `ServiceID`s `/v1/health/service/<name><query>` lists.
    async fn health_ids(&self, name_and_query: &str) -> Vec<String> {
        let reply = self
            .get(&format!("/v1/health/service/{name_and_query}"))
            .await;
        reply.assert_status(200);
        reply.index();
        let mut ids: Vec<String> = reply
            .json()
            .as_array()
            .expect("a list")
            .iter()
            .map(|entry| entry["Service"]["ID"].as_str().expect("ID").to_owned())
            .collect();
        ids.sort();
        ids
    }

    async fn index(&self) -> u64 {
        self.get("/v1/catalog/services").await.index()
    }
}

/// A service with a TTL check. Its address is loopback, as for every
/// instance a test gives a check: nothing that probes may point off the
/// machine. `.10`, not `.1`, so it is never mistaken for the node's address.
fn ttl_service(name: &str, id: &str, tags: &[&str]) -> Value {
    json!({"Name": name, "ID": id, "Address": "127.0.0.10", "Port": 8080, "Tags": tags,
           "Check": {"TTL": "30s"}})
}

#[tokio::test]
async fn the_origin_example_on_the_wire() {
    let consul = Consul::start().await;
    // register(service_id='hello-service', name='Hello Service',
    //          address='localhost', port=8080, tags=['http'])
    consul
        .register(json!({"name": "Hello Service", "id": "hello-service",
                         "address": "localhost", "port": 8080, "tags": ["http"]}))
        .await;
    // catalog.services('http') sends its tag as the index: answered at once.
    let started = Instant::now();
    let reply = consul.get("/v1/catalog/services?index=http").await;
    reply.assert_status(200);
    assert!(started.elapsed() < Duration::from_secs(5), "it blocked");
    assert!(reply.index() > 0);
    assert_eq!(reply.json(), json!({"Hello Service": ["http"]}));
    // deregister(service_id) with service_id == True: 404, nothing removed.
    consul
        .put("/v1/agent/service/deregister/True")
        .await
        .assert_error(404, "Unknown service ID \"True\"");
    let services = consul
        .get("/v1/agent/services")
        .await
        .assert_status(200)
        .json();
    let hello = &services["hello-service"];
    assert_eq!(hello["Service"], "Hello Service", "{services}");
    assert_eq!(hello["Address"], "localhost", "shown as given: {services}");
    assert_eq!(hello["Port"], 8080);
    assert_eq!(hello["Tags"], json!(["http"]));
    assert_eq!(hello["Meta"], json!({}));
    assert_eq!(hello["Weights"], json!({"Passing": 1, "Warning": 1}));
    assert_eq!(hello["Datacenter"], "dc1");
    // DNS serves the resolved address under the mapped label.
    assert_eq!(
        consul
            .server
            .ips("hello-service.service.local", RecordType::A)
            .await,
        vec![ip("127.0.0.1")]
    );
    // And the native API sees the same registration.
    let native = consul
        .server
        .get(&["v1", "services", "Hello Service"])
        .await;
    assert_eq!(native.status, 200, "{native:?}");
    assert_eq!(native.body["instances"][0]["id"], "hello-service");
    consul.server.stop().await;
}

#[tokio::test]
async fn native_registrations_show_through_the_consul_door_and_back() {
    let consul = Consul::start().await;
    consul.server.add("web", "web-1", "10.0.0.5", 80).await;
    let nodes = consul.get("/v1/catalog/service/web").await;
    nodes.assert_status(200);
    let nodes = nodes.json();
    assert_eq!(nodes[0]["ServiceID"], "web-1", "{nodes}");
    assert_eq!(nodes[0]["ServiceAddress"], "10.0.0.5", "{nodes}");
    assert_eq!(nodes[0]["ServicePort"], 80, "{nodes}");
    assert_eq!(nodes[0]["Node"], "roster", "{nodes}");
    assert_eq!(nodes[0]["Address"], "127.0.0.1", "{nodes}");

    consul
        .register(json!({"Name": "web", "ID": "web-2", "Address": "10.0.0.6", "Port": 81}))
        .await;
    let native = consul.server.get(&["v1", "services", "web"]).await;
    assert_eq!(native.status, 200, "{native:?}");
    assert_eq!(native.body["instances"].as_array().map(Vec::len), Some(2));
    // The Consul door deregisters what the native door registered.
    consul
        .put("/v1/agent/service/deregister/web-1")
        .await
        .assert_status(200);
    assert_eq!(
        consul.server.ips("web.service.local", RecordType::A).await,
        vec![ip("10.0.0.6")]
    );
    consul.server.stop().await;
}

#[tokio::test]
async fn body_keys_ignore_case_and_underscores_but_user_maps_keep_theirs() {
    let consul = Consul::start().await;
    consul
        .register(json!({
            "NAME": "api", "I_D": "api-1", "address": "127.0.0.9", "PORT": 9000,
            "Tags": ["v1"], "Meta": {"Build_ID": "7", "owner": "Team_A"},
            "Tagged_Addresses": {"lan": {"Address": "127.0.0.9", "Port": 9000}},
            "EnableTagOverride": true, "Weights": {"passing": 3, "WARNING": 1},
            "CHECK": {"T_T_L": "10s", "status": "passing", "Check_ID": "api-alive",
                      "deregister_critical_service_after": "1m", "Notes": "heartbeat"}
        }))
        .await;
    let services = consul.get("/v1/agent/services").await.json();
    let api = &services["api-1"];
    assert_eq!(api["Service"], "api", "{services}");
    assert_eq!(api["Port"], 9000, "{services}");
    assert_eq!(api["Meta"], json!({"Build_ID": "7", "owner": "Team_A"}));
    assert_eq!(api["Weights"]["Passing"], 3, "{services}");
    let checks = consul.agent_checks().await;
    let check = &checks["api-alive"];
    assert_eq!(check["Status"], "passing", "{checks}");
    assert_eq!(check["Notes"], "heartbeat", "{checks}");
    assert_eq!(check["Type"], "ttl", "{checks}");
    assert_eq!(check["ServiceID"], "api-1", "{checks}");
    // The SRV weight is Weights.Passing.
    let reply = consul
        .server
        .query("api.service.local", RecordType::SRV)
        .await;
    assert_eq!(reply.srvs()[0].weight, 3, "{reply}");
    consul.server.stop().await;
}

#[tokio::test]
async fn every_catalog_and_health_answer_carries_the_index_headers() {
    let consul = Consul::start().await;
    consul.register(ttl_service("web", "web-1", &["v1"])).await;
    let paths = [
        "/v1/catalog/services",
        "/v1/catalog/service/web",
        "/v1/catalog/service/nothing-here",
        "/v1/catalog/datacenters",
        "/v1/health/service/web",
        "/v1/health/service/nothing-here?passing=1",
        "/v1/health/checks/web",
        "/v1/health/state/any",
        "/v1/health/state/critical",
    ];
    for path in paths {
        let reply = consul.get(path).await;
        reply.assert_status(200);
        reply.index();
        assert_eq!(reply.header("x-consul-knownleader"), Some("true"), "{path}");
        assert_eq!(reply.header("x-consul-lastcontact"), Some("0"), "{path}");
        assert_eq!(
            reply.header("content-type"),
            Some("application/json"),
            "{path}"
        );
    }
    assert_eq!(
        consul.get("/v1/catalog/service/nothing-here").await.json(),
        json!([])
    );
    assert_eq!(
        consul.get("/v1/health/service/nothing-here").await.json(),
        json!([])
    );
    // Refusals too: python-consul reads the index before the status.
    for (path, status, words) in [
        (
            "/v1/catalog/services?index=1&wait=soon",
            400,
            "Invalid wait time",
        ),
        ("/v1/health/service/web?wait=10", 400, "Invalid wait time"),
        ("/v1/health/service/web?passing=maybe", 400, "passing"),
        ("/v1/health/state/sleepy", 400, "Invalid check state"),
        ("/v1/catalog/service/", 400, "Missing service name"),
        ("/v1/health/state/", 400, "Missing check state"),
        ("/v1/catalog/nodes", 501, "does not implement"),
        ("/v1/health/connect/web", 501, "does not implement"),
    ] {
        let reply = consul.get(path).await;
        reply.assert_error(status, words);
        reply.index();
    }
    consul.server.stop().await;
}

#[tokio::test]
async fn consul_status_codes_and_words() {
    let consul = Consul::start().await;
    consul.register(ttl_service("web", "web-1", &[])).await;
    consul
        .register(
            json!({"Name": "site", "ID": "site-1", "Address": "127.0.0.1", "Port": 1,
                         "Check": {"HTTP": "http://127.0.0.1:1/health", "Interval": "1h"}}),
        )
        .await;
    // The first probe runs at once and fails; once its output is in, nothing
    // else changes the registry for an hour.
    let deadline = Instant::now() + ANSWER_LIMIT;
    while consul.agent_checks().await["service:site-1"]["Output"] == "" {
        assert!(Instant::now() < deadline, "the first probe never reported");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = consul.index().await;

    let cases: Vec<(&str, Option<Value>, u16, &str)> = vec![
        (
            "/v1/agent/service/register",
            Some(json!({"Port": 80})),
            400,
            "Missing service name",
        ),
        (
            "/v1/agent/service/register",
            Some(json!({"Name": "x", "Check": {"HTTP": "http://a/"}})),
            400,
            "Invalid check: ",
        ),
        (
            "/v1/agent/service/register",
            Some(json!({"Name": "x", "Check": {"Args": ["/bin/true"], "Interval": "1s"}})),
            400,
            "Invalid check: script",
        ),
        (
            "/v1/agent/service/register",
            Some(json!({"Name": "x", "Check": {"GRPC": "a:1", "Interval": "1s"}})),
            400,
            "Invalid check: grpc",
        ),
        (
            "/v1/agent/service/register",
            Some(json!({"Name": "x", "Check": {"TCP": "a:1", "Interval": "10ms"}})),
            400,
            "interval: must be at least 100ms",
        ),
        (
            "/v1/agent/service/register",
            Some(json!({"Name": "x", "Address": "no-such-host.invalid"})),
            400,
            "Invalid service address",
        ),
        (
            "/v1/agent/service/register",
            None,
            400,
            "Request decode failed",
        ),
        (
            "/v1/agent/service/deregister/",
            None,
            400,
            "Missing service ID",
        ),
        ("/v1/agent/check/pass/", None, 400, "Missing check ID"),
        (
            "/v1/agent/service/deregister/nope",
            None,
            404,
            "Unknown service ID \"nope\"",
        ),
        (
            "/v1/agent/service/maintenance/web-1",
            None,
            400,
            "Missing value for enable",
        ),
        (
            "/v1/agent/service/maintenance/web-1?enable=maybe",
            None,
            400,
            "Invalid value for enable: \"maybe\"",
        ),
        (
            "/v1/agent/service/maintenance/nope?enable=true",
            None,
            404,
            "Unknown service ID",
        ),
        (
            "/v1/agent/check/pass/nope",
            None,
            404,
            "Unknown check ID \"nope\"",
        ),
        (
            "/v1/agent/check/pass/service:site-1",
            None,
            500,
            "CheckID \"service:site-1\" does not have associated TTL",
        ),
        (
            "/v1/agent/check/deregister/nope",
            None,
            404,
            "Unknown check ID",
        ),
        (
            "/v1/agent/check/register",
            Some(json!({"TTL": "10s"})),
            400,
            "Missing check name",
        ),
        (
            "/v1/agent/check/register",
            Some(json!({"Name": "disk", "TTL": "10s"})),
            400,
            "ServiceID is required",
        ),
        (
            "/v1/agent/check/register",
            Some(json!({"Name": "disk", "TTL": "10s", "ServiceID": "nope"})),
            404,
            "ServiceID \"nope\" does not exist",
        ),
        (
            "/v1/agent/maintenance?enable=true",
            None,
            501,
            "does not implement",
        ),
        ("/v1/kv/some/key", None, 501, "does not implement"),
        ("/v1/session/create", None, 501, "does not implement"),
        ("/v1/txn", None, 501, "does not implement"),
        ("/v1/acl/bootstrap", None, 501, "does not implement"),
    ];
    for (path, body, status, words) in cases {
        let reply = match &body {
            Some(body) => consul.put_json(path, body).await,
            None => consul.put(path).await,
        };
        reply.assert_error(status, words);
    }
    // An empty body to register is bad JSON, not a crash.
    consul
        .send(consul.http.put(consul.url("/v1/agent/service/register")))
        .await
        .assert_error(400, "Request decode failed");
    // The wrong method is 405; an unknown Consul read is 501.
    assert_eq!(consul.get("/v1/agent/service/register").await.status, 405);
    consul
        .get("/v1/event/list")
        .await
        .assert_error(501, "does not implement");
    // Bodies over 64 KiB are refused whole.
    let huge = json!({"Name": "big", "Meta": {"k": "v".repeat(70 * 1024)}});
    assert_eq!(
        consul
            .put_json("/v1/agent/service/register", &huge)
            .await
            .status,
        413
    );
    // Nothing above changed anything.
    assert_eq!(consul.index().await, before);
    // With ACLs off, tokens are accepted and change nothing, in the query
    // and in the header (tests/security_acl.rs has ACLs on).
    consul
        .put_json(
            "/v1/agent/service/register?token=secret",
            &ttl_service("tok", "tok-1", &[]),
        )
        .await
        .assert_status(200);
    let reply = consul
        .send(
            consul
                .http
                .get(consul.url("/v1/catalog/service/tok?token=x&dc=dc1&stale=&pretty"))
                .header("X-Consul-Token", "secret"),
        )
        .await;
    reply.assert_status(200);
    assert_eq!(reply.json()[0]["ServiceID"], "tok-1");
    assert_eq!(
        consul.get("/v1/status/leader").await.json(),
        json!("127.0.0.1:8300")
    );
    consul.server.stop().await;
}

/// `EnableTagOverride` and the service's `TaggedAddresses` are kept and
/// shown back by every view, and survive an export and import.
#[tokio::test]
async fn enable_tag_override_and_tagged_addresses_are_kept() {
    let consul = Consul::start().await;
    let body = json!({
        "Name": "web",
        "ID": "web-1",
        "Address": "127.0.0.1",
        "Port": 8080,
        "EnableTagOverride": true,
        "TaggedAddresses": {
            "lan": { "Address": "127.0.0.1", "Port": 8080 },
            "wan_ipv4": { "address": "127.0.0.2", "port": 80 },
        },
    });
    consul
        .put_json("/v1/agent/service/register", &body)
        .await
        .assert_status(200);
    let expected = json!({
        "lan": { "Address": "127.0.0.1", "Port": 8080 },
        "wan_ipv4": { "Address": "127.0.0.2", "Port": 80 },
    });
    let agent = consul.get("/v1/agent/services").await.json();
    assert_eq!(agent["web-1"]["EnableTagOverride"], true);
    assert_eq!(agent["web-1"]["TaggedAddresses"], expected);
    let catalog = consul.get("/v1/catalog/service/web").await.json();
    assert_eq!(catalog[0]["ServiceEnableTagOverride"], true);
    assert_eq!(catalog[0]["ServiceTaggedAddresses"], expected);
    let health = consul.get("/v1/health/service/web").await.json();
    assert_eq!(health[0]["Service"]["TaggedAddresses"], expected);
    assert_eq!(health[0]["Service"]["EnableTagOverride"], true);

    // Through an export and an import, on a fresh roster.
    let export = consul.get("/v1/export").await.json();
    consul.server.stop().await;
    let other = Consul::start().await;
    other
        .put_json("/v1/import", &export)
        .await
        .assert_status(200);
    let agent = other.get("/v1/agent/services").await.json();
    assert_eq!(agent["web-1"]["TaggedAddresses"], expected);
    assert_eq!(agent["web-1"]["EnableTagOverride"], true);

    // Bad ones are refused and change nothing.
    let bad = json!({
        "Name": "api",
        "Address": "127.0.0.1",
        "TaggedAddresses": { "lan": { "Address": "127.0.0.1", "Port": 70000 } },
    });
    other
        .put_json("/v1/agent/service/register", &bad)
        .await
        .assert_error(400, "TaggedAddresses.lan.Port");
    let bad = json!({
        "Name": "api",
        "Address": "127.0.0.1",
        "TaggedAddresses": { "not a tag": { "Address": "127.0.0.1" } },
    });
    other
        .put_json("/v1/agent/service/register", &bad)
        .await
        .assert_error(400, "not a tag");
    assert_eq!(other.get("/v1/catalog/service/api").await.json(), json!([]));
    other.server.stop().await;
}

/// Never accept and ignore: what roster does not implement is refused, an
/// unknown datacenter is Consul's 500, and a peer has nothing.
#[tokio::test]
async fn parameters_roster_does_not_implement_are_refused_not_ignored() {
    let consul = Consul::start().await;
    consul.register(ttl_service("web", "web-1", &[])).await;
    for query in [
        "/v1/agent/service/web-1?filter=Service%20%3D%3D%20web",
        "/v1/catalog/service/web?near=_agent",
        "/v1/health/service/web?node-meta=rack:a",
        "/v1/catalog/services?ns=team-a",
    ] {
        consul.get(query).await.assert_error(400, "roster");
    }
    let reply = consul.get("/v1/health/service/web?dc=dc2").await;
    reply.assert_status(500);
    assert_eq!(reply.text, "No path to datacenter");
    assert_eq!(
        consul.get("/v1/health/service/web?dc=dc1").await.json()[0]["Service"]["ID"],
        "web-1"
    );
    assert_eq!(
        consul.get("/v1/health/service/web?peer=other").await.json(),
        json!([])
    );
    assert_eq!(
        consul.get("/v1/catalog/services?peer=other").await.json(),
        json!({})
    );
    assert_eq!(
        consul
            .get("/v1/catalog/service/web?ns=default")
            .await
            .json()[0]["ServiceID"],
        "web-1"
    );
    consul.server.stop().await;
}

#[tokio::test]
async fn ttl_reports_through_raw_colons_move_status_output_and_dns() {
    let consul = Consul::start().await;
    consul.register(ttl_service("web", "web-1", &[])).await;
    assert_eq!(
        consul.check_status("service:web-1").await.as_deref(),
        Some("critical"),
        "new checks start critical"
    );
    assert!(consul.srv_targets("web").await.is_empty());
    assert_eq!(
        consul.health_ids("web?passing=1").await,
        Vec::<String>::new()
    );

    consul
        .put("/v1/agent/check/pass/service:web-1?note=all%20good")
        .await
        .assert_status(200);
    let checks = consul.agent_checks().await;
    assert_eq!(checks["service:web-1"]["Status"], "passing", "{checks}");
    assert_eq!(checks["service:web-1"]["Output"], "all good", "{checks}");
    assert_eq!(checks["service:web-1"]["Name"], "Service 'web' check");
    assert_eq!(
        consul.srv_targets("web").await,
        ["web-1.web.service.local."]
    );
    assert_eq!(consul.health_ids("web?passing=True").await, ["web-1"]);

    // Warning: out of `?passing` (any non-passing check excludes) and out
    // of DNS (which serves warning only with dns.include_warning).
    consul
        .put("/v1/agent/check/warn/service:web-1?note=slow")
        .await
        .assert_status(200);
    assert_eq!(
        consul.check_status("service:web-1").await.as_deref(),
        Some("warning")
    );
    assert_eq!(
        consul.health_ids("web?passing=1").await,
        Vec::<String>::new()
    );
    assert_eq!(consul.health_ids("web").await, ["web-1"]);
    assert!(consul.srv_targets("web").await.is_empty());

    consul
        .put("/v1/agent/check/fail/service:web-1?note=down")
        .await
        .assert_status(200);
    let checks = consul.agent_checks().await;
    assert_eq!(checks["service:web-1"]["Status"], "critical", "{checks}");
    assert_eq!(checks["service:web-1"]["Output"], "down", "{checks}");

    // The same ID percent-encoded reaches the same check.
    consul
        .put("/v1/agent/check/pass/service%3Aweb-1")
        .await
        .assert_status(200);
    assert_eq!(
        consul.check_status("service:web-1").await.as_deref(),
        Some("passing")
    );
    consul.server.stop().await;
}

#[tokio::test]
async fn dns_serves_warning_when_configured_to() {
    let server = start_server_with(&[], |config| config.dns.include_warning = true).await;
    let consul = Consul::wrap(server);
    consul.register(ttl_service("web", "web-1", &[])).await;
    consul
        .put("/v1/agent/check/warn/service:web-1")
        .await
        .assert_status(200);
    assert_eq!(
        consul.srv_targets("web").await,
        ["web-1.web.service.local."]
    );
    // `?passing` is Consul's rule and does not follow the DNS setting.
    assert_eq!(
        consul.health_ids("web?passing=1").await,
        Vec::<String>::new()
    );
    consul.server.stop().await;
}

#[tokio::test]
async fn checks_register_and_deregister_on_a_service() {
    let consul = Consul::start().await;
    consul
        .register(json!({"Name": "db", "ID": "db-1", "Address": "127.0.0.3", "Port": 5432}))
        .await;
    assert_eq!(consul.srv_targets("db").await, ["db-1.db.service.local."]);
    // python-consul: {"name": ..., "ttl": ..., "serviceid": ...}; ID = name.
    consul
        .put_json(
            "/v1/agent/check/register",
            &json!({"name": "db-heartbeat", "ttl": "10s", "serviceid": "db-1", "notes": "beat"}),
        )
        .await
        .assert_status(200);
    let checks = consul.agent_checks().await;
    assert_eq!(checks["db-heartbeat"]["Status"], "critical", "{checks}");
    assert_eq!(checks["db-heartbeat"]["ServiceName"], "db", "{checks}");
    assert!(consul.srv_targets("db").await.is_empty());
    consul
        .put("/v1/agent/check/pass/db-heartbeat")
        .await
        .assert_status(200);
    assert_eq!(consul.srv_targets("db").await, ["db-1.db.service.local."]);

    // Re-registering the service without it keeps the check (Consul's
    // default), with its status...
    consul
        .register(json!({"Name": "db", "ID": "db-1", "Address": "127.0.0.3", "Port": 5432}))
        .await;
    assert_eq!(
        consul.check_status("db-heartbeat").await.as_deref(),
        Some("passing")
    );
    // ...unless the client asks to replace existing checks.
    consul
        .put_json(
            "/v1/agent/service/register?replace-existing-checks=true",
            &json!({"Name": "db", "ID": "db-1", "Address": "127.0.0.3", "Port": 5432,
                    "Check": {"TTL": "10s"}}),
        )
        .await
        .assert_status(200);
    let checks = consul.agent_checks().await;
    assert!(checks.get("db-heartbeat").is_none(), "{checks}");
    assert_eq!(checks["service:db-1"]["Status"], "critical", "{checks}");

    // Another service cannot take a check ID already in use.
    consul
        .register(json!({"Name": "cache", "ID": "cache-1", "Port": 6379}))
        .await;
    consul
        .put_json(
            "/v1/agent/check/register",
            &json!({"Name": "x", "ID": "service:db-1", "TTL": "10s", "ServiceID": "cache-1"}),
        )
        .await
        .assert_error(400, "already registered for service ID \"db-1\"");
    // ...nor one of the default form for another ID (Consul's check
    // endpoints find `service:<id>` as <id>'s), nor the ID of Consul's
    // maintenance check.
    for taken in [
        "service:db-10",
        "service:cache",
        "_service_maintenance:cache-1",
    ] {
        consul
            .put_json(
                "/v1/agent/check/register",
                &json!({"Name": "x", "ID": taken, "TTL": "10s", "ServiceID": "cache-1"}),
            )
            .await
            .assert_status(400);
    }
    consul
        .put_json(
            "/v1/agent/service/register",
            &json!({"Name": "db", "ID": "db", "Port": 1, "Check": {"CheckID": "service:db-1", "TTL": "10s"}}),
        )
        .await
        .assert_status(400);
    assert_eq!(
        consul.agent_checks().await.as_object().map(|c| c.len()),
        Some(1)
    );

    consul
        .put("/v1/agent/check/deregister/service:db-1")
        .await
        .assert_status(200);
    assert!(consul.agent_checks().await.get("service:db-1").is_none());
    assert_eq!(consul.srv_targets("db").await, ["db-1.db.service.local."]);
    consul.server.stop().await;
}

/// Adding a check is a read-modify-write of its service: checks added at
/// the same moment, and a service re-registration racing them, must all be
/// kept, since each was acknowledged.
#[tokio::test]
async fn concurrent_check_registrations_are_all_kept() {
    let consul = Consul::start().await;
    consul
        .register(json!({"Name": "db", "ID": "db-1", "Address": "127.0.0.3", "Port": 5432}))
        .await;
    // 14 added checks and the registration's own `service:db-1` fill the 16
    // a service may have; the re-registrations in between keep them all.
    let mut requests = tokio::task::JoinSet::new();
    let put = |path: &str, body: Value| {
        let request = consul
            .http
            .put(consul.url(path))
            .body(serde_json::to_vec(&body).expect("JSON"));
        async move {
            let response = request.send().await.expect("HTTP exchange");
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        }
    };
    for n in 0..14 {
        let body = json!({"Name": format!("beat-{n}"), "TTL": "10s", "ServiceID": "db-1"});
        requests.spawn(put("/v1/agent/check/register", body));
        if n % 4 == 0 {
            let body = json!({"Name": "db", "ID": "db-1", "Address": "127.0.0.3",
                              "Port": 5432, "Check": {"TTL": "30s"}});
            requests.spawn(put("/v1/agent/service/register", body));
        }
    }
    while let Some(joined) = requests.join_next().await {
        let (status, text) = joined.expect("request task");
        assert_eq!(status, 200, "{text}");
    }
    let checks = consul.agent_checks().await;
    for n in 0..14 {
        assert!(
            checks.get(format!("beat-{n}")).is_some(),
            "beat-{n} lost: {checks}"
        );
    }
    assert!(checks.get("service:db-1").is_some(), "{checks}");
    consul.server.stop().await;
}

#[tokio::test]
async fn reregistration_replaces_and_keeps_check_status() {
    let consul = Consul::start().await;
    consul.register(ttl_service("blue", "app-1", &["v1"])).await;
    consul
        .put("/v1/agent/check/pass/service:app-1")
        .await
        .assert_status(200);
    // The same ID under another name moves the instance; the check, same ID
    // and same kind, stays passing, so it never leaves DNS.
    consul
        .register(ttl_service("green", "app-1", &["v2"]))
        .await;
    let services = consul.get("/v1/catalog/services").await.json();
    assert_eq!(services, json!({"green": ["v2"]}));
    assert_eq!(
        consul.check_status("service:app-1").await.as_deref(),
        Some("passing")
    );
    assert_eq!(
        consul.srv_targets("green").await,
        ["app-1.green.service.local."]
    );
    assert_eq!(
        consul
            .get("/v1/agent/services")
            .await
            .json()
            .as_object()
            .map(|m| m.len()),
        Some(1)
    );

    // An identical re-registration changes nothing, so it does not bump
    // the index (clients re-register on every start).
    let index = consul.index().await;
    consul
        .register(ttl_service("green", "app-1", &["v2"]))
        .await;
    assert_eq!(consul.index().await, index);
    // Neither does a TTL report that repeats the current status and note.
    consul
        .put("/v1/agent/check/pass/service:app-1")
        .await
        .assert_status(200);
    assert_eq!(consul.index().await, index);
    consul.server.stop().await;
}

#[tokio::test]
async fn maintenance_shows_as_a_check_and_drains_dns() {
    let consul = Consul::start().await;
    consul
        .register(json!({"Name": "web", "ID": "web-1", "Address": "10.0.0.5", "Port": 80}))
        .await;
    consul
        .register(json!({"Name": "web", "ID": "web-2", "Address": "10.0.0.6", "Port": 80}))
        .await;
    consul
        .put("/v1/agent/service/maintenance/web-1?enable=True&reason=deploy%201.2")
        .await
        .assert_status(200);
    let checks = consul.agent_checks().await;
    let maintenance = &checks["_service_maintenance:web-1"];
    assert_eq!(maintenance["Status"], "critical", "{checks}");
    assert_eq!(maintenance["Name"], "Service Maintenance Mode", "{checks}");
    assert_eq!(maintenance["Notes"], "deploy 1.2", "{checks}");
    assert_eq!(maintenance["ServiceID"], "web-1", "{checks}");
    assert_eq!(
        consul.srv_targets("web").await,
        ["web-2.web.service.local."]
    );
    assert_eq!(consul.health_ids("web?passing=1").await, ["web-2"]);
    assert_eq!(consul.health_ids("web").await, ["web-1", "web-2"]);

    consul
        .put("/v1/agent/service/maintenance/web-1?enable=false")
        .await
        .assert_status(200);
    assert!(
        consul
            .agent_checks()
            .await
            .get("_service_maintenance:web-1")
            .is_none()
    );
    assert_eq!(
        consul.srv_targets("web").await,
        ["web-1.web.service.local.", "web-2.web.service.local."]
    );

    // Without a reason, Consul's default note; deregistering the check ends it.
    consul
        .put("/v1/agent/service/maintenance/web-2?enable=1")
        .await
        .assert_status(200);
    let checks = consul.agent_checks().await;
    let notes = checks["_service_maintenance:web-2"]["Notes"]
        .as_str()
        .unwrap_or_default();
    assert!(notes.contains("no reason was provided"), "{checks}");
    consul
        .put("/v1/agent/check/deregister/_service_maintenance:web-2")
        .await
        .assert_status(200);
    assert_eq!(consul.health_ids("web?passing=1").await, ["web-1", "web-2"]);
    consul.server.stop().await;
}

#[tokio::test]
async fn names_are_percent_decoded_and_tags_filter() {
    let consul = Consul::start().await;
    consul
        .register(
            json!({"Name": "Hello Service", "ID": "hello-1", "Address": "10.0.0.1",
                         "Port": 80, "Tags": ["http", "V1"]}),
        )
        .await;
    consul
        .register(
            json!({"Name": "Hello Service", "ID": "hello-2", "Address": "10.0.0.2",
                         "Port": 80, "Tags": ["http"]}),
        )
        .await;
    let ids = |reply: Reply| -> Vec<String> {
        let mut ids: Vec<String> = reply
            .json()
            .as_array()
            .expect("a list")
            .iter()
            .map(|n| n["ServiceID"].as_str().expect("ServiceID").to_owned())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(
        ids(consul.get("/v1/catalog/service/Hello%20Service").await),
        ["hello-1", "hello-2"]
    );
    // The DNS label names the service too.
    assert_eq!(
        ids(consul.get("/v1/catalog/service/hello-service").await),
        ["hello-1", "hello-2"]
    );
    // Tags match without case; several tags must all match.
    assert_eq!(
        ids(consul
            .get("/v1/catalog/service/Hello%20Service?tag=v1")
            .await),
        ["hello-1"]
    );
    assert_eq!(
        ids(consul
            .get("/v1/catalog/service/Hello%20Service?tag=http&tag=V1")
            .await),
        ["hello-1"]
    );
    assert_eq!(
        consul.health_ids("Hello%20Service?tag=http&tag=v1").await,
        ["hello-1"]
    );
    assert_eq!(
        consul.health_ids("Hello%20Service?tag=none").await,
        Vec::<String>::new()
    );
    assert_eq!(
        consul.get("/v1/catalog/services").await.json(),
        json!({"Hello Service": ["http", "V1"]})
    );
    consul.server.stop().await;
}

#[tokio::test]
async fn an_empty_address_is_the_node_address_and_a_bad_one_is_refused() {
    let consul = Consul::start().await;
    consul.register(json!({"Name": "bare"})).await;
    let services = consul.get("/v1/agent/services").await.json();
    assert_eq!(services["bare"]["Address"], "", "{services}");
    assert_eq!(services["bare"]["Port"], 0, "{services}");
    let nodes = consul.get("/v1/catalog/service/bare").await.json();
    assert_eq!(nodes[0]["ServiceAddress"], "", "{nodes}");
    assert_eq!(nodes[0]["Address"], "127.0.0.1", "{nodes}");
    assert_eq!(
        consul.server.ips("bare.service.local", RecordType::A).await,
        vec![ip("127.0.0.1")]
    );
    let reply = consul
        .server
        .query("nothing.service.local", RecordType::A)
        .await;
    assert_eq!(reply.rcode(), ResponseCode::NXDomain, "{reply}");
    consul.server.stop().await;
}

#[tokio::test]
async fn health_entries_have_node_service_and_checks() {
    let consul = Consul::start().await;
    consul.register(ttl_service("web", "web-1", &["v1"])).await;
    let entries = consul.get("/v1/health/service/web").await.json();
    let entry = &entries[0];
    assert_eq!(entry["Node"]["Node"], "roster", "{entries}");
    assert_eq!(entry["Node"]["Datacenter"], "dc1", "{entries}");
    assert_eq!(entry["Service"]["ID"], "web-1", "{entries}");
    assert_eq!(entry["Service"]["Service"], "web", "{entries}");
    assert_eq!(entry["Service"]["Address"], "127.0.0.10", "{entries}");
    let check_ids: Vec<&str> = entry["Checks"]
        .as_array()
        .expect("Checks")
        .iter()
        .map(|c| c["CheckID"].as_str().expect("CheckID"))
        .collect();
    assert_eq!(check_ids, ["serfHealth", "service:web-1"], "{entries}");
    let checks = consul.get("/v1/health/checks/web").await.json();
    assert_eq!(checks[0]["CheckID"], "service:web-1", "{checks}");
    let critical = consul.get("/v1/health/state/critical").await.json();
    assert_eq!(critical[0]["CheckID"], "service:web-1", "{critical}");
    let passing = consul.get("/v1/health/state/passing").await.json();
    assert_eq!(passing[0]["CheckID"], "serfHealth", "{passing}");
    consul.server.stop().await;
}

/// A query blocked for minutes must not hold a shutdown up or be cut off:
/// it answers, with the current index, as if its wait had passed.
#[tokio::test]
async fn a_blocked_query_is_answered_when_roster_shuts_down() {
    let consul = Consul::start().await;
    consul.register(ttl_service("web", "web-1", &[])).await;
    let index = consul.get("/v1/health/service/web").await.index();
    let request = consul
        .http
        .get(consul.url(&format!("/v1/health/service/web?index={index}&wait=10m")))
        .send();
    let blocked = tokio::spawn(request);
    // Give the request time to arrive; it cannot answer on its own for
    // ten minutes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!blocked.is_finished(), "the query did not block");
    consul.server.stop().await;
    let response = tokio::time::timeout(ANSWER_LIMIT, blocked)
        .await
        .expect("the blocked query is answered")
        .expect("request task")
        .expect("an HTTP answer, not a cut connection");
    assert_eq!(response.status().as_u16(), 200);
    let answered_index = response
        .headers()
        .get("x-consul-index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    assert_eq!(answered_index, Some(index));
}

#[tokio::test]
async fn blocking_queries_wake_on_a_change_and_time_out_unchanged() {
    let consul = std::sync::Arc::new(Consul::start().await);
    consul.register(ttl_service("web", "web-1", &[])).await;
    let index = consul.get("/v1/health/service/web").await.index();

    // Nothing changes: the answer comes at the wait, with the same index.
    let started = Instant::now();
    let reply = consul
        .get(&format!("/v1/health/service/web?index={index}&wait=1s"))
        .await;
    let waited = started.elapsed();
    reply.assert_status(200);
    assert_eq!(reply.index(), index);
    assert!(
        waited >= Duration::from_millis(900),
        "answered after {waited:?}"
    );

    // A change wakes a blocked query, which answers with the new index.
    let blocked = {
        let consul = consul.clone();
        tokio::spawn(async move {
            consul
                .get(&format!("/v1/health/service/web?index={index}&wait=30s"))
                .await
        })
    };
    consul
        .put("/v1/agent/check/pass/service:web-1?note=up")
        .await
        .assert_status(200);
    let reply = tokio::time::timeout(ANSWER_LIMIT, blocked)
        .await
        .expect("the blocked query answers after the change")
        .expect("query task");
    reply.assert_status(200);
    assert!(reply.index() > index, "{reply:?}");
    assert_eq!(
        reply.json()[0]["Checks"][1]["Status"],
        "passing",
        "{reply:?}"
    );

    // An index from the future (a roster restarted without its store)
    // answers at once, so the client starts over.
    let started = Instant::now();
    let reply = consul
        .get("/v1/catalog/services?index=999999&wait=30s")
        .await;
    reply.assert_status(200);
    assert!(reply.index() < 999_999);
    assert!(started.elapsed() < Duration::from_secs(10));

    match std::sync::Arc::try_unwrap(consul) {
        Ok(consul) => consul.server.stop().await,
        Err(_) => panic!("the query task still holds the client"),
    }
}

/// A query about one service waits on that service alone (Consul's
/// semantics): its index is the service's last change, changes to other
/// services neither move it nor wake the query, and it never goes back,
/// also when the service leaves and comes back.
#[tokio::test]
async fn a_blocked_query_on_one_service_sleeps_through_changes_to_others() {
    let consul = std::sync::Arc::new(Consul::start().await);
    consul.register(ttl_service("web", "web-1", &[])).await;
    consul.register(ttl_service("db", "db-1", &[])).await;
    let web_index = consul.get("/v1/health/service/web").await.index();
    let global = consul.get("/v1/catalog/services").await.index();
    assert!(
        web_index < global,
        "db registered after web: {web_index} {global}"
    );

    let paths = [
        "/v1/health/service/web",
        "/v1/catalog/service/web",
        "/v1/health/checks/web",
    ];
    let blocked: Vec<_> = paths
        .iter()
        .map(|path| {
            let consul = consul.clone();
            let path = format!("{path}?index={web_index}&wait=60s");
            tokio::spawn(async move { consul.get(&path).await })
        })
        .collect();
    // Changes elsewhere: db's check, a new service, its removal.
    consul
        .put("/v1/agent/check/pass/service:db-1?note=up")
        .await
        .assert_status(200);
    consul.register(ttl_service("cache", "cache-1", &[])).await;
    consul
        .put("/v1/agent/service/deregister/cache-1")
        .await
        .assert_status(200);
    for path in paths {
        let reply = consul.get(path).await;
        assert_eq!(reply.index(), web_index, "{path} moved with other services");
    }
    // Had any query woken for those changes, it would have answered with
    // web as it was; it answers with web-2.
    consul.register(ttl_service("web", "web-2", &[])).await;
    for (path, query) in paths.iter().zip(blocked) {
        let reply = tokio::time::timeout(ANSWER_LIMIT, query)
            .await
            .expect("the blocked query answers after web changes")
            .expect("query task");
        reply.assert_status(200);
        assert!(reply.index() > global, "{path}: {reply:?}");
        assert!(
            reply.json().to_string().contains("web-2"),
            "{path}: {reply:?}"
        );
    }

    // Gone and back: the index only goes up.
    let before = consul.get("/v1/health/service/web").await.index();
    for id in ["web-1", "web-2"] {
        consul
            .put(&format!("/v1/agent/service/deregister/{id}"))
            .await
            .assert_status(200);
    }
    let gone = consul.get("/v1/health/service/web").await;
    assert!(gone.index() > before, "{gone:?}");
    assert_eq!(gone.json(), json!([]));
    consul.register(ttl_service("db", "db-2", &[])).await;
    assert_eq!(
        consul.get("/v1/health/service/web").await.index(),
        gone.index(),
        "an absent service keeps its index while others change"
    );
    consul.register(ttl_service("web", "web-3", &[])).await;
    assert!(consul.get("/v1/health/service/web").await.index() > gone.index());
    match std::sync::Arc::try_unwrap(consul) {
        Ok(consul) => consul.server.stop().await,
        Err(_) => panic!("a query task still holds the client"),
    }
}

#[tokio::test]
async fn deregister_critical_service_after_reaps_the_service() {
    let consul = Consul::start().await;
    consul
        .register(json!({"Name": "flaky", "ID": "flaky-1", "Port": 80,
                         "Check": {"TTL": "10s", "DeregisterCriticalServiceAfter": "300ms"}}))
        .await;
    // A new check is critical, so the clock starts at once.
    let deadline = Instant::now() + ANSWER_LIMIT;
    loop {
        let services = consul.get("/v1/agent/services").await.json();
        if services.get("flaky-1").is_none() {
            break;
        }
        assert!(Instant::now() < deadline, "never reaped: {services}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(consul.agent_checks().await.get("service:flaky-1").is_none());
    consul.server.stop().await;
}

#[tokio::test]
async fn update_ttl_sets_status_and_output_from_its_body_as_the_go_client_sends_it() {
    let consul = Consul::start().await;
    consul.register(ttl_service("web", "web-1", &[])).await;
    assert!(consul.srv_targets("web").await.is_empty());

    // Go's Agent().UpdateTTL(id, output, status): PUT with this body.
    consul
        .put_json(
            "/v1/agent/check/update/service:web-1",
            &json!({"Status": "passing", "Output": "all good"}),
        )
        .await
        .assert_status(200);
    let checks = consul.agent_checks().await;
    assert_eq!(checks["service:web-1"]["Status"], "passing", "{checks}");
    assert_eq!(checks["service:web-1"]["Output"], "all good", "{checks}");
    assert_eq!(
        consul.srv_targets("web").await,
        ["web-1.web.service.local."]
    );

    consul
        .put_json(
            "/v1/agent/check/update/service:web-1",
            &json!({"Status": "critical", "Output": "down"}),
        )
        .await
        .assert_status(200);
    let checks = consul.agent_checks().await;
    assert_eq!(checks["service:web-1"]["Status"], "critical", "{checks}");
    assert_eq!(checks["service:web-1"]["Output"], "down", "{checks}");
    assert!(consul.srv_targets("web").await.is_empty());

    // Refused as pass / warn / fail are, and nothing changes.
    for (body, status, words) in [
        (json!({"Status": "fine"}), 400, "Invalid Status"),
        (json!({"Status": 3}), 400, "Request decode failed"),
    ] {
        let reply = consul
            .put_json("/v1/agent/check/update/service:web-1", &body)
            .await;
        reply.assert_status(status);
        assert!(reply.text.contains(words), "{body}: {reply:?}");
    }
    let reply = consul
        .put_json("/v1/agent/check/update/nope", &json!({"Status": "passing"}))
        .await;
    reply.assert_status(404);
    assert!(reply.text.contains("Unknown check ID"), "{reply:?}");
    assert_eq!(
        consul.check_status("service:web-1").await.as_deref(),
        Some("critical")
    );
    consul.server.stop().await;
}

#[tokio::test]
async fn agent_self_names_the_datacenter_and_node_clients_read() {
    let consul = Consul::wrap(
        start_server_with(&[], |config| {
            config.consul.datacenter = "east".into();
            config.consul.node_name = "node-a".into();
        })
        .await,
    );
    let reply = consul.get("/v1/agent/self").await;
    let body = reply.assert_status(200).json();
    assert_eq!(body["Config"]["Datacenter"], "east", "{body}");
    assert_eq!(body["Config"]["NodeName"], "node-a", "{body}");
    assert_eq!(body["Member"]["Name"], "node-a", "{body}");
    assert_eq!(body["Member"]["Addr"], "127.0.0.1", "{body}");
    assert_eq!(body["Member"]["Tags"]["dc"], "east", "{body}");
    // The leader address clients compare with status/leader's (py-consul's
    // own test_status_leader does).
    let leader = consul.get("/v1/status/leader").await;
    assert_eq!(
        body["Stats"]["consul"]["leader_addr"],
        leader.assert_status(200).json(),
        "{body}"
    );
    // The node ID is the one the catalog shows for this node.
    consul.register(ttl_service("web", "web-1", &[])).await;
    let reply = consul.get("/v1/catalog/service/web").await;
    let nodes = reply.assert_status(200).json();
    assert_eq!(nodes[0]["ID"], body["Config"]["NodeID"], "{nodes}\n{body}");
    assert_eq!(nodes[0]["Datacenter"], "east", "{nodes}");
    consul.server.stop().await;
}

/// The native API keeps check IDs per instance, so two instances may each
/// have a check `health`. Consul's check endpoints address a check by ID
/// alone: such an ID is refused (409, naming both), never taken as the
/// first one found, which once failed another instance's check than the
/// one `agent/checks` showed.
#[tokio::test]
async fn a_check_id_two_native_instances_share_is_refused_not_guessed() {
    let consul = Consul::start().await;
    for id in ["web-1", "web-2"] {
        let reply = consul
            .server
            .register(
                "web",
                id,
                json!({"address": "127.0.0.1", "port": 80,
                       "check": {"id": "health", "ttl": "30s"}}),
            )
            .await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    for path in [
        "/v1/agent/check/pass/health",
        "/v1/agent/check/fail/health",
        "/v1/agent/check/deregister/health",
    ] {
        let reply = consul.put(path).await;
        reply.assert_status(409);
        assert!(
            reply.text.contains("web-1") && reply.text.contains("web-2"),
            "{path}: {reply:?}"
        );
    }
    // Both checks are as they were: critical, neither removed.
    for id in ["web-1", "web-2"] {
        let instance = consul
            .server
            .get(&["v1", "services", "web", "instances", id])
            .await;
        let checks = instance.body["checks"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(checks.len(), 1, "{id}: {instance:?}");
        assert_eq!(checks[0]["status"], "critical", "{id}: {instance:?}");
    }
    // A unique one is found as before.
    let reply = consul
        .server
        .register(
            "db",
            "db-1",
            json!({"address": "127.0.0.1", "port": 5432,
                   "check": {"id": "db-heartbeat", "ttl": "30s"}}),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    consul
        .put("/v1/agent/check/pass/db-heartbeat")
        .await
        .assert_status(200);
    // IDs may hold ':': instance `api`'s second default check and instance
    // `api:2`'s default are both `service:api:2`.
    for (id, checks) in [
        ("api", json!([{"ttl": "30s"}, {"ttl": "30s"}])),
        ("api:2", json!([{"ttl": "30s"}])),
    ] {
        let reply = consul
            .server
            .register(
                "api",
                id,
                json!({"address": "127.0.0.1", "port": 80, "checks": checks}),
            )
            .await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    consul
        .put("/v1/agent/check/pass/service:api:2")
        .await
        .assert_status(409);
    consul
        .put("/v1/agent/check/pass/service:api:1")
        .await
        .assert_status(200);
    consul.server.stop().await;
}
