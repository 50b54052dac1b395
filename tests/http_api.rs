//! The native HTTP API of a real roster: registration, listing,
//! deregistration, every kind of bad input (and that it changes nothing),
//! and the mapping of names to DNS labels.

mod common;

use common::{Server, ips, start_server};
use hickory_proto::{op::ResponseCode, rr::RecordType};
use serde_json::{Value, json};

#[tokio::test]
async fn put_creates_an_instance_and_shows_its_dns_names() {
    let server = start_server().await;
    let body = json!({"address": "10.0.0.5", "port": 8080, "tags": ["http"],
                      "meta": {"version": "1.2"}, "weight": 2, "priority": 1});
    let reply = server.register("web", "web-1", body).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let stored = &reply.body;
    assert_eq!(stored["service"], "web", "{stored}");
    assert_eq!(stored["id"], "web-1", "{stored}");
    assert_eq!(stored["address"], "10.0.0.5", "{stored}");
    assert_eq!(stored["port"], 8080, "{stored}");
    assert_eq!(stored["tags"], json!(["http"]), "{stored}");
    assert_eq!(stored["meta"], json!({"version": "1.2"}), "{stored}");
    assert_eq!(stored["weight"], 2, "{stored}");
    assert_eq!(stored["priority"], 1, "{stored}");
    assert_eq!(stored["status"], "passing", "{stored}");
    assert_eq!(stored["dns"]["service"], "web.service.local.", "{stored}");
    assert_eq!(stored["dns"]["srv"], "_web._tcp.service.local.", "{stored}");
    assert_eq!(
        stored["dns"]["instance"], "web-1.web.service.local.",
        "{stored}"
    );

    // Defaults for the optional fields.
    let minimal = server.add("web", "web-2", "10.0.0.6", 80).await;
    assert_eq!(minimal["tags"], json!([]), "{minimal}");
    assert_eq!(minimal["meta"], json!({}), "{minimal}");
    assert_eq!(minimal["weight"], 1, "{minimal}");
    assert_eq!(minimal["priority"], 0, "{minimal}");

    assert_eq!(
        server.ips("web.service.local", RecordType::A).await,
        ips(&["10.0.0.5", "10.0.0.6"])
    );
}

#[tokio::test]
async fn put_again_replaces_the_instance() {
    let server = start_server().await;
    let first = json!({"address": "10.0.0.5", "port": 8080, "tags": ["old"], "meta": {"a": "1"}});
    assert_eq!(server.register("web", "web-1", first).await.status, 200);
    let second = json!({"address": "10.0.0.7", "port": 9090});
    let reply = server.register("web", "web-1", second).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["address"], "10.0.0.7");
    assert_eq!(reply.body["port"], 9090);
    assert_eq!(reply.body["tags"], json!([]), "replaced, not merged");
    assert_eq!(reply.body["meta"], json!({}), "replaced, not merged");

    let service = server.get(&["v1", "services", "web"]).await;
    assert_eq!(service.status, 200, "{service:?}");
    let instances = service.body["instances"].as_array().expect("instances");
    assert_eq!(instances.len(), 1, "{service:?}");
    assert_eq!(instances[0]["address"], "10.0.0.7");

    assert_eq!(
        server.ips("web.service.local", RecordType::A).await,
        ips(&["10.0.0.7"])
    );
    let srv = server.query("web.service.local", RecordType::SRV).await;
    assert_eq!(srv.srvs().len(), 1, "{srv}");
    assert_eq!(srv.srvs()[0].port, 9090, "{srv}");
    let txt = server
        .query("web-1.web.service.local", RecordType::TXT)
        .await;
    txt.assert_negative(ResponseCode::NoError, "service.local");
    let tag = server
        .query("_web._old.service.local", RecordType::SRV)
        .await;
    assert!(tag.srvs().is_empty(), "the old tag is gone:\n{tag}");
}

#[tokio::test]
async fn services_are_listed_with_counts_and_instances_with_status() {
    let server = start_server().await;
    server.add("web", "web-1", "10.0.0.1", 80).await;
    server.add("web", "web-2", "10.0.0.2", 80).await;
    server.add("db", "db-1", "10.0.1.1", 5432).await;

    let list = server.services().await;
    let summary: Vec<(String, u64)> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().expect("name").to_owned(),
                s["instances"].as_u64().expect("count"),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![("db".to_owned(), 1), ("web".to_owned(), 2)],
        "{list}"
    );

    let web = server.get(&["v1", "services", "web"]).await;
    assert_eq!(web.status, 200, "{web:?}");
    assert_eq!(web.body["name"], "web", "{web:?}");
    let mut instances: Vec<(String, String)> = web.body["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| {
            (
                i["id"].as_str().expect("id").to_owned(),
                i["status"].as_str().expect("status").to_owned(),
            )
        })
        .collect();
    instances.sort();
    assert_eq!(
        instances,
        vec![
            ("web-1".to_owned(), "passing".to_owned()),
            ("web-2".to_owned(), "passing".to_owned())
        ],
        "{web:?}"
    );

    let unknown = server.get(&["v1", "services", "nope"]).await;
    unknown.assert_error(404);
}

#[tokio::test]
async fn delete_removes_and_an_unknown_instance_is_404() {
    let server = start_server().await;
    server.add("web", "web-1", "10.0.0.1", 80).await;
    server.add("web", "web-2", "10.0.0.2", 80).await;

    let deleted = server.deregister("web", "web-1").await;
    assert_eq!(deleted.status, 204, "{deleted:?}");
    assert_eq!(deleted.body, Value::Null, "204 has no body");
    assert_eq!(
        server.ips("web.service.local", RecordType::A).await,
        ips(&["10.0.0.2"])
    );

    let before = server.services().await;
    for (service, id) in [("web", "web-1"), ("web", "nope"), ("nope", "web-2")] {
        let again = server.deregister(service, id).await;
        again.assert_error(404);
    }
    assert_eq!(server.services().await, before, "404s change nothing");
    assert_eq!(
        server.ips("web.service.local", RecordType::A).await,
        ips(&["10.0.0.2"])
    );

    assert_eq!(server.deregister("web", "web-2").await.status, 204);
    assert_eq!(server.services().await, json!([]));
    server
        .get(&["v1", "services", "web"])
        .await
        .assert_error(404);
}

/// Everything an observer can see of the registry: the service list, the
/// service's instances, and what DNS says about it.
async fn observable_state(server: &Server) -> (Value, Value, Vec<std::net::IpAddr>, Vec<String>) {
    let list = server.services().await;
    let web = server.get(&["v1", "services", "web"]).await;
    assert_eq!(web.status, 200, "{web:?}");
    let ips = server.ips("web.service.local", RecordType::A).await;
    let txt = server
        .query("web-1.web.service.local", RecordType::TXT)
        .await
        .txt_strings();
    (list, web.body, ips, txt)
}

/// Does `field` name `expected` (`meta` also accepts `meta.<key>`)?
fn names_field(field: &str, expected: &str) -> bool {
    field == expected || field.starts_with(&format!("{expected}."))
}

/// Sends each bad registration (service, id, raw body, expected field) and
/// checks it gets a 4xx JSON error naming the field, and that the registry
/// looks exactly as before. Runs every case, then reports every failure.
async fn assert_all_refused(server: &Server, cases: &[(&str, &str, String, &str)]) {
    let mut before = observable_state(server).await;
    let mut failures = Vec::new();
    for (service, id, body, expected_field) in cases {
        let case = format!("PUT {service}/{id} {body:.80?}");
        let reply = server
            .put_raw(&["v1", "services", service, "instances", id], body.clone())
            .await;
        let error = reply.body.get("error").and_then(Value::as_str);
        let field = reply.body.get("field").and_then(Value::as_str);
        if !(400..500).contains(&reply.status) || error.is_none_or(str::is_empty) {
            failures.push(format!("{case}: expected a 4xx JSON error, got {reply:?}"));
        } else if !field.is_some_and(|f| names_field(f, expected_field)) {
            failures.push(format!(
                "{case}: expected field {expected_field:?}, got {field:?} in {reply:?}"
            ));
        }
        let after = observable_state(server).await;
        if after != before {
            failures.push(format!("{case}: changed the registry"));
            // Compare the next case with what is there now, so that one
            // failure is reported once.
            before = after;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A server with `web/web-1` registered. Bad bodies are sent to that
/// instance, so that a partial update would show in the state.
async fn server_with_web_1() -> Server {
    let server = start_server().await;
    let original = json!({"address": "10.0.0.1", "port": 80, "meta": {"k": "v"}});
    assert_eq!(server.register("web", "web-1", original).await.status, 200);
    server
}

#[tokio::test]
async fn malformed_bodies_are_400_naming_the_body_and_change_nothing() {
    let server = server_with_web_1().await;
    let cases: Vec<(&str, &str, String, &str)> = vec![
        ("web", "web-1", "{not json".into(), "body"),
        (
            "web",
            "web-1",
            r#"{"address": "10.0.0.9", "port": 81"#.into(),
            "body",
        ),
        ("web", "web-1", "".into(), "body"),
        ("web", "web-1", "null".into(), "body"),
        (
            "web",
            "web-1",
            r#"{"address": "10.0.0.9", "port": 81} trailing"#.into(),
            "body",
        ),
        // serde reads a struct from an array too; the API takes objects.
        ("web", "web-1", "[1, 2]".into(), "body"),
        ("web", "web-1", r#"["10.0.0.9", 81]"#.into(), "body"),
        (
            "web",
            "web-1",
            r#"["10.0.0.9", 81, [], {}, 1, 0, null, []]"#.into(),
            "body",
        ),
    ];
    assert_all_refused(&server, &cases).await;
}

#[tokio::test]
async fn bad_fields_are_4xx_naming_the_field_and_change_nothing() {
    let server = server_with_web_1().await;
    let many_tags: Vec<String> = (0..65).map(|n| format!("t{n}")).collect();
    let many_meta: serde_json::Map<String, Value> =
        (0..65).map(|n| (format!("k{n}"), json!("v"))).collect();
    let long_value = "v".repeat(254); // "k=" + 254 octets > 255
    let long_name = "a".repeat(64); // a DNS label holds 63
    // A valid body with `extra` merged in.
    let ok = |extra: Value| {
        let mut body = json!({"address": "10.0.0.9", "port": 81});
        for (key, value) in extra.as_object().expect("object") {
            body[key] = value.clone();
        }
        body.to_string()
    };
    // One case per rule; every case the model decides, with more variants
    // of each rule, is in src/model/instance.rs's
    // refuses_every_bad_field_of_the_end_to_end_table. The cases the HTTP
    // layer decides (JSON types, missing and unknown fields) are all here.
    let cases: Vec<(&str, &str, String, &str)> = vec![
        ("web", "web-1", json!({"port": 81}).to_string(), "address"),
        (
            "web",
            "web-1",
            json!({"address": "10.0.0.9"}).to_string(),
            "port",
        ),
        ("web", "web-1", ok(json!({"port": "81"})), "port"),
        ("web", "web-1", ok(json!({"port": -1})), "port"),
        ("web", "web-1", ok(json!({"port": 8.5})), "port"),
        ("web", "web-1", ok(json!({"address": 10})), "address"),
        (
            "web",
            "web-1",
            ok(json!({"address": "10.0.0.256"})),
            "address",
        ),
        ("web", "web-1", ok(json!({"port": 0})), "port"),
        ("web", "web-1", ok(json!({"tags": many_tags})), "tags"),
        ("web", "web-1", ok(json!({"tags": "http"})), "tags"),
        ("web", "web-1", ok(json!({"meta": many_meta})), "meta"),
        (
            "web",
            "web-1",
            ok(json!({"meta": {"k": "a\u{1}b"}})),
            "meta",
        ),
        (
            "web",
            "web-1",
            ok(json!({"meta": {"k": long_value}})),
            "meta",
        ),
        ("web", "web-1", ok(json!({"meta": {"k": 1}})), "meta"),
        ("web", "web-1", ok(json!({"weight": 70000})), "weight"),
        ("web", "web-1", ok(json!({"colour": "red"})), "colour"),
        ("---", "x-1", ok(json!({})), "service"),
        ("café", "x-1", ok(json!({})), "service"),
        (&long_name, "x-1", ok(json!({})), "service"),
        ("web", "---", ok(json!({})), "id"),
    ];
    assert_all_refused(&server, &cases).await;
}

#[tokio::test]
async fn an_oversized_body_is_413_and_changes_nothing() {
    let server = start_server().await;
    server.add("web", "web-1", "10.0.0.1", 80).await;
    let before = server.services().await;

    let huge = json!({"address": "10.0.0.9", "port": 81, "tags": ["x".repeat(70 * 1024)]});
    let reply = server
        .put_raw(
            &["v1", "services", "web", "instances", "web-1"],
            huge.to_string(),
        )
        .await;
    let field = reply.assert_error(413);
    assert_eq!(field.as_deref(), Some("body"), "{reply:?}");

    assert_eq!(server.services().await, before);
    assert_eq!(
        server.ips("web.service.local", RecordType::A).await,
        ips(&["10.0.0.1"])
    );
}

#[tokio::test]
async fn names_map_to_dns_labels_and_a_clash_is_409() {
    let server = start_server().await;
    let reply = server
        .add("Hello Service", "Instance One", "10.0.0.1", 80)
        .await;
    assert_eq!(reply["service"], "Hello Service", "{reply}");
    assert_eq!(
        reply["dns"]["service"], "hello-service.service.local.",
        "{reply}"
    );
    assert_eq!(
        reply["dns"]["instance"], "instance-one.hello-service.service.local.",
        "{reply}"
    );
    assert_eq!(
        server
            .ips("hello-service.service.local", RecordType::A)
            .await,
        ips(&["10.0.0.1"])
    );
    assert_eq!(
        server
            .ips("instance-one.hello-service.service.local", RecordType::A)
            .await,
        ips(&["10.0.0.1"])
    );
    let listed = server.get(&["v1", "services", "Hello Service"]).await;
    assert_eq!(listed.status, 200, "{listed:?}");

    let before = server.services().await;
    for other in ["hello_service", "HELLO-SERVICE", "hello.service"] {
        let clash = server
            .register(other, "other-1", json!({"address": "10.0.0.2", "port": 80}))
            .await;
        clash.assert_error(409);
    }
    assert_eq!(server.services().await, before, "a 409 changes nothing");
    assert_eq!(
        server
            .ips("hello-service.service.local", RecordType::A)
            .await,
        ips(&["10.0.0.1"])
    );
}

/// The native API reads no query parameter but the ACL token, so one it
/// would ignore is refused, naming it: `?filter=` answered everything as if
/// filtered.
#[tokio::test]
async fn query_parameters_the_native_api_does_not_read_are_refused() {
    let server = server_with_web_1().await;
    let client = common::http_client();
    let base = format!("http://{}", server.http_addr);
    for path in [
        "/v1/services?filter=Service%20%3D%3D%20%22db%22",
        "/v1/services/web?passing",
        "/v1/services/web/instances/web-1?index=5&wait=1s",
        "/v1/export?version=2",
    ] {
        let response = client
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status().as_u16(), 400, "{path}");
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["field"], "query", "{path}: {body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("unknown query parameter")),
            "{path}: {body}"
        );
    }
    // The token is read; a request without parameters is as before.
    for path in [
        "/v1/services?token=anything",
        "/v1/services?tok%65n=anything",
        "/v1/services",
        "/v1/services/web",
    ] {
        let response = client
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status().as_u16(), 200, "{path}");
    }
    server.stop().await;
}
