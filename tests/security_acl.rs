//! ACL tokens on the HTTP API (issue #14): who may write which services,
//! what reads show, where tokens are read from, what a health check aimed
//! at roster's own API can do, and the refusal to serve the API off
//! loopback without ACLs. The real Python Consul clients with tokens are in
//! `tests/consul_python.rs`.

mod common;

use std::time::Duration;

use common::{Server, http_client, start_server_with};
use reqwest::StatusCode;
use serde_json::{Value, json};

const ADMIN: &str = "admin-secret-0123456789";
const DEPLOYER: &str = "deployer-secret-0123456789";
const READER: &str = "reader-secret-0123456789";

/// ACLs on, default deny; an admin, a deployer that writes `web*` and reads
/// all, and a reader of `web*` only.
fn acl(policy: &str) -> roster::config::AclConfig {
    let text = format!(
        r#"
        enabled = true
        default_policy = "{policy}"
        [[tokens]]
        name = "admin"
        secret = "{ADMIN}"
        management = true
        [[tokens]]
        name = "deployer"
        secret = "{DEPLOYER}"
        service_prefix = {{ "web" = "write", "" = "read" }}
        [[tokens]]
        name = "reader"
        secret = "{READER}"
        service_prefix = {{ "web" = "read" }}
        "#
    );
    toml::from_str(&text).expect("a valid [acl] table")
}

async fn server(policy: &str) -> Server {
    start_server_with(&[], |config| config.acl = acl(policy)).await
}

/// A request with the token in `X-Consul-Token` (or none).
async fn send(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let url = format!("http://{}{path}", server.http_addr);
    let mut request = http_client().request(method, url);
    if let Some(token) = token {
        request = request.header("X-Consul-Token", token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("HTTP request");
    let status = response.status();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

fn instance(port: u16) -> Value {
    json!({ "address": "127.0.0.1", "port": port })
}

async fn put_instance(
    server: &Server,
    service: &str,
    id: &str,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let path = format!("/v1/services/{service}/instances/{id}");
    send(
        server,
        reqwest::Method::PUT,
        &path,
        token,
        Some(instance(8080)),
    )
    .await
}

async fn service_names(server: &Server, token: Option<&str>) -> Vec<String> {
    let (status, body) = send(server, reqwest::Method::GET, "/v1/services", token, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut names: Vec<String> = body
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|s| s["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_service_prefix_token_writes_its_services_and_no_other() {
    let server = server("deny").await;
    let (status, body) = put_instance(&server, "web", "web-1", Some(DEPLOYER)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = put_instance(&server, "api", "api-1", Some(DEPLOYER)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let error = body["error"].as_str().expect("a JSON error");
    assert!(
        error.contains("Permission denied") && error.contains("deployer"),
        "{error}"
    );
    assert_eq!(
        service_names(&server, Some(ADMIN)).await,
        ["web"],
        "the refusal changed nothing"
    );

    // A name that shares web's DNS label reaches web's instances: the
    // token's rules on names must not let it around them.
    let (status, _) = put_instance(&server, "api", "api-1", Some(ADMIN)).await;
    assert_eq!(status, StatusCode::OK);
    let path = "/v1/services/web/instances/api-1";
    let (status, body) = send(&server, reqwest::Method::DELETE, path, Some(DEPLOYER), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(service_names(&server, Some(ADMIN)).await, ["api", "web"]);
    server.stop().await;
}

#[tokio::test]
async fn without_a_token_nothing_is_written_and_reads_are_filtered() {
    let server = server("deny").await;
    let (status, body) = put_instance(&server, "web", "web-1", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    put_instance(&server, "web", "web-1", Some(ADMIN)).await;
    put_instance(&server, "api", "api-1", Some(ADMIN)).await;
    assert!(service_names(&server, None).await.is_empty());
    assert_eq!(service_names(&server, Some(READER)).await, ["web"]);
    assert_eq!(service_names(&server, Some(DEPLOYER)).await, ["api", "web"]);
    let (status, _) = send(
        &server,
        reqwest::Method::GET,
        "/v1/services/api",
        Some(READER),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The Consul door filters the same way.
    let (status, body) = send(
        &server,
        reqwest::Method::GET,
        "/v1/catalog/services",
        Some(READER),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "web": [] }));
    let (_, body) = send(
        &server,
        reqwest::Method::GET,
        "/v1/health/service/api",
        Some(READER),
        None,
    )
    .await;
    assert_eq!(body, json!([]));
    let (status, _) = send(&server, reqwest::Method::GET, "/v1/metrics", None, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_token_is_refused_never_taken_as_anonymous() {
    // Even where anonymous may do everything.
    let server = server("allow").await;
    let (status, body) = put_instance(&server, "web", "web-1", Some("not-a-token")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"], "ACL not found");
    let (status, body) = put_instance(&server, "web", "web-1", None).await;
    assert_eq!(status, StatusCode::OK, "anonymous under allow: {body}");
    let url = format!("http://{}/v1/agent/services", server.http_addr);
    let response = http_client()
        .get(url)
        .header("X-Consul-Token", "not-a-token")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(response.text().await.expect("body"), "ACL not found");
    server.stop().await;
}

#[tokio::test]
async fn tokens_are_read_from_the_header_the_bearer_and_the_query() {
    let server = server("deny").await;
    let client = http_client();
    let base = format!("http://{}/v1/services/web/instances", server.http_addr);
    let bearer = client
        .put(format!("{base}/a"))
        .bearer_auth(DEPLOYER)
        .json(&instance(1))
        .send()
        .await
        .expect("request");
    assert_eq!(bearer.status(), StatusCode::OK);
    let query = client
        .put(format!("{base}/b?token={DEPLOYER}"))
        .json(&instance(2))
        .send()
        .await
        .expect("request");
    assert_eq!(query.status(), StatusCode::OK);
    let (status, _) = put_instance(&server, "web", "c", Some(DEPLOYER)).await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn export_and_import_need_a_management_token() {
    let server = server("deny").await;
    put_instance(&server, "web", "web-1", Some(DEPLOYER)).await;
    let (status, _) = send(
        &server,
        reqwest::Method::GET,
        "/v1/export",
        Some(DEPLOYER),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, export) = send(
        &server,
        reqwest::Method::GET,
        "/v1/export",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(
        &server,
        reqwest::Method::PUT,
        "/v1/import",
        Some(DEPLOYER),
        Some(export.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = send(
        &server,
        reqwest::Method::PUT,
        "/v1/import",
        Some(ADMIN),
        Some(export),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.stop().await;
}

#[tokio::test]
async fn dns_stays_public() {
    let server = server("deny").await;
    put_instance(&server, "web", "web-1", Some(ADMIN)).await;
    let addresses = common::served_addresses(server.dns_addr, "web").await;
    assert_eq!(addresses.into_iter().collect::<Vec<_>>(), ["127.0.0.1"]);
    server.stop().await;
}

/// A health check is a request roster makes on its registrant's behalf. A
/// check aimed at roster's own API with DELETE is refused by the default
/// health.allowed_methods; where an operator allowed DELETE, the probe
/// carries no token, so the ACL refuses it and the victim stays.
#[tokio::test]
async fn a_check_aimed_at_rosters_own_api_changes_nothing() {
    let server = server("deny").await;
    put_instance(&server, "web", "victim", Some(ADMIN)).await;
    let attack = |port: u16| {
        json!({
            "address": "127.0.0.1",
            "port": port,
            "checks": [{
                "http": format!("http://127.0.0.1:{port}/v1/services/web/instances/victim"),
                "method": "DELETE",
                "interval": "100ms",
            }],
        })
    };
    let path = "/v1/services/web-evil/instances/evil";
    let (status, body) = send(
        &server,
        reqwest::Method::PUT,
        path,
        Some(DEPLOYER),
        Some(attack(server.http_addr.port())),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("health.allowed_methods")),
        "{body}"
    );
    server.stop().await;

    let server = start_server_with(&[], |config| {
        config.acl = acl("deny");
        config.health.allowed_methods.push("DELETE".into());
    })
    .await;
    put_instance(&server, "web", "victim", Some(ADMIN)).await;
    let port = server.http_addr.port();
    let (status, body) = send(
        &server,
        reqwest::Method::PUT,
        path,
        Some(DEPLOYER),
        Some(attack(port)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The check runs (and fails: 403) several times; the victim stays.
    common::eventually(
        "the attacking check to have run and failed",
        Duration::from_secs(20),
        || async {
            let (_, body) = send(
                &server,
                reqwest::Method::GET,
                "/v1/services/web-evil/instances/evil",
                Some(ADMIN),
                None,
            )
            .await;
            body["checks"][0]["output"]
                .as_str()
                .is_some_and(|o| o.contains("403"))
        },
    )
    .await;
    let (status, body) = send(
        &server,
        reqwest::Method::GET,
        "/v1/services/web/instances/victim",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the victim is still registered: {body}"
    );
    server.stop().await;
}

#[test]
fn the_api_is_not_served_off_loopback_without_acls() {
    let output = common::process::cli(
        &[
            "serve",
            "--http",
            "0.0.0.0:0",
            "--dns",
            "127.0.0.1:0",
            "--data-dir",
            "",
        ],
        None,
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("http.listen"), "{stderr}");
    assert!(stderr.contains("allow_unauthenticated"), "{stderr}");
    assert!(stderr.contains("[acl]"), "{stderr}");
}

/// SIGHUP re-reads the config file's tokens; the old secret stops working
/// and the new one starts, without a restart.
#[tokio::test]
async fn sighup_reloads_the_tokens() {
    let site = common::process::Site::new();
    let config = |secret: &str| {
        format!(
            "[acl]\nenabled = true\n[[acl.tokens]]\nname = \"admin\"\nsecret = \"{secret}\"\nmanagement = true\n"
        )
    };
    let file = site.root.path().join("config.toml");
    std::fs::write(&file, config("old-secret-0123")).expect("write config.toml");
    let mut roster = site.start().await;
    let status_with = |secret: &'static str| {
        let url = roster.url("/v1/services/web/instances/web-1");
        async move {
            http_client()
                .put(url)
                .header("X-Consul-Token", secret)
                .json(&instance(8080))
                .send()
                .await
                .expect("request")
                .status()
        }
    };
    assert_eq!(status_with("old-secret-0123").await, StatusCode::OK);
    assert_eq!(status_with("new-secret-0123").await, StatusCode::FORBIDDEN);
    std::fs::write(&file, config("new-secret-0123")).expect("rewrite config.toml");
    roster.signal("HUP");
    common::eventually(
        "the new token to be in force",
        Duration::from_secs(20),
        || async { status_with("new-secret-0123").await == StatusCode::OK },
    )
    .await;
    assert_eq!(status_with("old-secret-0123").await, StatusCode::FORBIDDEN);
    // A file that no longer loads keeps the tokens in force.
    std::fs::write(&file, "[acl]\nenabled = maybe\n").expect("break config.toml");
    roster.signal("HUP");
    common::eventually(
        "the broken reload to be logged",
        Duration::from_secs(20),
        || async { roster.stderr().contains("the ACL tokens in force stay") },
    )
    .await;
    assert_eq!(status_with("new-secret-0123").await, StatusCode::OK);
    assert!(
        !roster.stderr().contains("new-secret"),
        "a secret was logged"
    );
    assert!(roster.stop().await.success());
}
