//! `?filter=` on the Consul API of a real roster, over HTTP: each endpoint
//! that takes a filter keeps exactly what the expression selects, a
//! malformed filter or an unknown selector is Consul's 400 on every one of
//! them, endpoints that do not filter refuse it, and a blocking query with
//! a filter wakes on the registry's index and answers filtered.

mod common;

use std::{collections::BTreeSet, time::Duration};

use common::{Server, http_client, start_server};
use serde_json::{Value, json};

/// Long enough for any single answer on a busy machine.
const ANSWER_LIMIT: Duration = Duration::from_secs(20);

/// What Consul prints before every filter error.
const CONSUL_PREFIX: &str = "Failed to create boolean expression evaluator";

/// Every endpoint that filters, with a filter that keeps something there.
const FILTERED: [(&str, &str); 7] = [
    ("/v1/agent/services", "Service == web"),
    ("/v1/agent/checks", "ServiceName == web"),
    ("/v1/catalog/services", "ServiceName == web"),
    ("/v1/catalog/service/web", "ServiceName == web"),
    ("/v1/health/service/web", "Service.Service == web"),
    ("/v1/health/checks/web", "ServiceName == web"),
    ("/v1/health/state/any", "Status is not empty"),
];

#[derive(Debug)]
struct Reply {
    status: u16,
    index: Option<u64>,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        assert_eq!(self.status, 200, "{self:?}");
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    fn assert_refused(&self, words: &str) {
        assert_eq!(self.status, 400, "{self:?}");
        assert!(self.text.contains(words), "expected {words:?}: {self:?}");
    }
}

/// A roster with three services registered through the Consul door:
/// `web-1` (passing), `web-2` (critical), `api-1` (no checks), all on
/// loopback addresses.
struct Fixture {
    server: Server,
    http: reqwest::Client,
}

impl Fixture {
    async fn start() -> Self {
        let fixture = Self {
            server: start_server().await,
            http: http_client(),
        };
        for body in [
            json!({"Name": "web", "ID": "web-1", "Address": "127.0.0.1", "Port": 8080,
                   "Tags": ["primary", "v1"], "Meta": {"env": "prod"},
                   "Check": {"TTL": "60s"}}),
            json!({"Name": "web", "ID": "web-2", "Address": "127.0.0.2", "Port": 8081,
                   "Tags": ["v2"], "Meta": {"env": "dev", "canary": "yes"},
                   "Check": {"TTL": "60s"}}),
            json!({"Name": "api", "ID": "api-1", "Address": "127.0.0.3", "Port": 9000}),
        ] {
            assert_eq!(
                fixture
                    .put("/v1/agent/service/register", &body)
                    .await
                    .status,
                200
            );
        }
        fixture.report("service:web-1", "pass").await;
        fixture.report("service:web-2", "fail").await;
        fixture
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = tokio::time::timeout(ANSWER_LIMIT, request.send())
            .await
            .expect("an answer in time")
            .expect("HTTP exchange");
        let status = response.status().as_u16();
        let index = response
            .headers()
            .get("x-consul-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let text = response.text().await.expect("body");
        Reply {
            status,
            index,
            text,
        }
    }

    async fn put(&self, path: &str, body: &Value) -> Reply {
        let url = format!("http://{}{path}", self.server.http_addr);
        let bytes = serde_json::to_vec(body).expect("JSON");
        self.send(self.http.put(url).body(bytes)).await
    }

    async fn report(&self, check_id: &str, verb: &str) {
        let reply = self
            .put(&format!("/v1/agent/check/{verb}/{check_id}"), &Value::Null)
            .await;
        assert_eq!(reply.status, 200, "{verb} {check_id}: {reply:?}");
    }

    /// `GET path` with `extra` query pairs and `filter` percent-encoded.
    async fn get_with(&self, path: &str, extra: &[(&str, &str)], filter: &str) -> Reply {
        let mut url =
            reqwest::Url::parse(&format!("http://{}{path}", self.server.http_addr)).expect("URL");
        {
            let mut query = url.query_pairs_mut();
            for (key, value) in extra {
                query.append_pair(key, value);
            }
            query.append_pair("filter", filter);
        }
        self.send(self.http.get(url)).await
    }

    async fn get(&self, path: &str, filter: &str) -> Reply {
        self.get_with(path, &[], filter).await
    }

    /// The keys of an agent listing, filtered.
    async fn agent_keys(&self, path: &str, filter: &str) -> BTreeSet<String> {
        match self.get(path, filter).await.json() {
            Value::Object(map) => map.keys().cloned().collect(),
            other => panic!("not an object: {other}"),
        }
    }

    /// The `pointer` of each element of a catalog or health listing.
    async fn listed(&self, path: &str, filter: &str, pointer: &str) -> BTreeSet<String> {
        match self.get(path, filter).await.json() {
            Value::Array(items) => items
                .iter()
                .map(|item| {
                    item.pointer(pointer)
                        .and_then(Value::as_str)
                        .unwrap_or_else(|| panic!("no {pointer} in {item}"))
                        .to_owned()
                })
                .collect(),
            other => panic!("not an array: {other}"),
        }
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn agent_services_keep_what_the_expression_selects() {
    let f = Fixture::start().await;
    let keys = |filter: &'static str| f.agent_keys("/v1/agent/services", filter);
    assert_eq!(keys("Service == web").await, set(&["web-1", "web-2"]));
    assert_eq!(keys(r#"Service == "api""#).await, set(&["api-1"]));
    assert_eq!(keys("Meta.env == prod").await, set(&["web-1"]));
    assert_eq!(
        keys(r#"Meta["canary"] is not empty"#).await,
        set(&["web-2"])
    );
    assert_eq!(keys(r#""primary" in Tags"#).await, set(&["web-1"]));
    assert_eq!(keys("Tags not contains v2").await, set(&["web-1", "api-1"]));
    assert_eq!(keys("Tags is empty").await, set(&["api-1"]));
    assert_eq!(keys("Port == 8081").await, set(&["web-2"]));
    assert_eq!(
        keys(r#"ID matches "^web-[12]$""#).await,
        set(&["web-1", "web-2"])
    );
    assert_eq!(
        keys("not (Service == web) or Port == 8080").await,
        set(&["web-1", "api-1"])
    );
    assert_eq!(keys("Service == nothing").await, set(&[]));
    // `?filter=` with nothing in it is no filter, as in Consul.
    assert_eq!(keys("").await, set(&["web-1", "web-2", "api-1"]));
    f.server.stop().await;
}

#[tokio::test]
async fn agent_checks_filter_on_status_and_service() {
    let f = Fixture::start().await;
    let keys = |filter: &'static str| f.agent_keys("/v1/agent/checks", filter);
    assert_eq!(keys("Status == passing").await, set(&["service:web-1"]));
    assert_eq!(
        keys("ServiceName == web and Status != passing").await,
        set(&["service:web-2"])
    );
    assert_eq!(
        keys(r#"Type == "ttl""#).await,
        set(&["service:web-1", "service:web-2"])
    );
    assert_eq!(keys("ServiceID == \"api-1\"").await, set(&[]));
    f.server.stop().await;
}

#[tokio::test]
async fn catalog_service_filters_service_nodes() {
    let f = Fixture::start().await;
    let ids = |filter: &'static str| f.listed("/v1/catalog/service/web", filter, "/ServiceID");
    assert_eq!(ids("ServiceMeta.env == dev").await, set(&["web-2"]));
    assert_eq!(ids("ServiceTags contains v1").await, set(&["web-1"]));
    assert_eq!(
        ids(r#"ServiceAddress == "127.0.0.1""#).await,
        set(&["web-1"])
    );
    assert_eq!(ids("ServicePort == 1").await, set(&[]));
    // The filter and ?tag= both apply.
    let reply = f
        .get_with(
            "/v1/catalog/service/web",
            &[("tag", "v2")],
            "ServiceMeta.env == prod",
        )
        .await;
    assert_eq!(reply.json(), json!([]));
    assert!(reply.index.is_some(), "{reply:?}");
    f.server.stop().await;
}

#[tokio::test]
async fn catalog_services_lists_the_services_with_an_instance_that_passes() {
    let f = Fixture::start().await;
    let path = "/v1/catalog/services";
    // Tags come only from the instances the filter keeps.
    assert_eq!(
        f.get(path, "ServiceMeta.env == prod").await.json(),
        json!({"web": ["primary", "v1"]})
    );
    assert_eq!(
        f.get(path, "ServiceTags is empty").await.json(),
        json!({"api": []})
    );
    assert_eq!(
        f.get(path, "ServiceName == nothing").await.json(),
        json!({})
    );
    f.server.stop().await;
}

#[tokio::test]
async fn health_endpoints_filter_entries_and_checks() {
    let f = Fixture::start().await;
    let entries = |filter: &'static str| f.listed("/v1/health/service/web", filter, "/Service/ID");
    // Through the Checks list: any check matches; the negation, none.
    assert_eq!(entries("Checks.Status == critical").await, set(&["web-2"]));
    assert_eq!(entries("Checks.Status != critical").await, set(&["web-1"]));
    assert_eq!(
        entries("Service.Meta.env == prod and Service.Port == 8080").await,
        set(&["web-1"])
    );
    assert_eq!(
        entries("Node.Datacenter == dc1").await,
        set(&["web-1", "web-2"])
    );
    // With ?passing the filter applies to what is left.
    let reply = f
        .get_with(
            "/v1/health/service/web",
            &[("passing", "1")],
            r#"Service.ID == "web-2""#,
        )
        .await;
    assert_eq!(reply.json(), json!([]));

    let checks = |filter: &'static str| f.listed("/v1/health/checks/web", filter, "/CheckID");
    assert_eq!(checks("Status == passing").await, set(&["service:web-1"]));
    assert_eq!(
        checks("ServiceTags contains v2").await,
        set(&["service:web-2"])
    );

    let state = |path: &'static str, filter: &'static str| f.listed(path, filter, "/CheckID");
    assert_eq!(
        state("/v1/health/state/any", "CheckID == serfHealth").await,
        set(&["serfHealth"])
    );
    assert_eq!(
        state("/v1/health/state/passing", "ServiceName == web").await,
        set(&["service:web-1"])
    );
    assert_eq!(
        state("/v1/health/state/critical", r#"ServiceID != `web-2`"#).await,
        set(&[])
    );
    f.server.stop().await;
}

#[tokio::test]
async fn malformed_filters_and_unknown_selectors_are_400_on_every_endpoint() {
    let f = Fixture::start().await;
    let long = format!("Service == \"{}\"", "a".repeat(5000));
    let deep = format!("{}Service == web{}", "(".repeat(40), ")".repeat(40));
    for (path, good) in FILTERED {
        // The good filter keeps something, so a refusal below is the filter's.
        let kept = match f.get(path, good).await.json() {
            Value::Array(items) => items.len(),
            Value::Object(map) => map.len(),
            other => panic!("{path}: {other}"),
        };
        assert!(kept > 0, "{path} {good} kept nothing");
        for bad in [
            "Service ==",
            "Service = web",
            "(Service == web",
            "Service == \"web",
            "Nope == web",
            "Status.Deeper == x",
            long.as_str(),
            deep.as_str(),
        ] {
            let reply = f.get(path, bad).await;
            reply.assert_refused(CONSUL_PREFIX);
            if !path.starts_with("/v1/agent") {
                assert!(reply.index.is_some(), "no X-Consul-Index: {path} {reply:?}");
            }
        }
    }
    let unknown = f.get("/v1/agent/services", "Nope == web").await;
    unknown.assert_refused("Selector \"Nope\" is not valid");
    let typed = f.get("/v1/agent/services", "Port == web").await;
    typed.assert_refused("not an integer");
    let regex = f.get("/v1/agent/services", r#"ID matches "(""#).await;
    regex.assert_refused("regular expression");
    f.server.stop().await;
}

#[tokio::test]
async fn endpoints_that_do_not_filter_refuse_a_filter_rather_than_ignore_it() {
    let f = Fixture::start().await;
    f.get("/v1/agent/service/web-1", "Service == web")
        .await
        .assert_refused("roster does not implement ?filter=");
    f.server.stop().await;
}

#[tokio::test]
async fn a_blocking_query_with_a_filter_wakes_on_the_index_and_answers_filtered() {
    let f = Fixture::start().await;
    let path = "/v1/health/service/web";
    let filter = "Checks.Status == critical";
    let first = f.get(path, filter).await;
    let index = first.index.expect("X-Consul-Index");
    assert_eq!(first.json()[0]["Service"]["ID"], "web-2");
    let index_text = index.to_string();
    // Shorter than the client's 20 s timeout: a query that is never woken
    // answers with the old index and fails the assertion below.
    let blocking = [("index", index_text.as_str()), ("wait", "15s")];
    let blocked = f.get_with(path, &blocking, filter);
    let change = async {
        // web-1 turns critical too: both now match.
        f.report("service:web-1", "fail").await;
    };
    let (reply, ()) = tokio::join!(blocked, change);
    let woke_at = reply.index.expect("X-Consul-Index");
    assert!(woke_at > index, "answered without a change: {reply:?}");
    let ids: BTreeSet<String> = reply
        .json()
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["Service"]["ID"].as_str().expect("ID").to_owned())
        .collect();
    assert_eq!(ids, set(&["web-1", "web-2"]));
    f.server.stop().await;
}
