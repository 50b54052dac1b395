//! Check definitions at the edge: nonsense refused with nothing stored,
//! definitions at the limits accepted, metrics counting transitions, and a
//! re-registration that keeps check status.

mod common;

use common::{
    LIMIT, Server, counter, eventually, get_instance, instance, ips, lookup, metrics, register,
    start_server,
    targets::{HttpTarget, Respond, http_check},
    wait_check,
};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------
// Nonsense check definitions
// ---------------------------------------------------------------------------

#[tokio::test]
async fn nonsense_check_definitions_are_refused_and_nothing_is_stored() {
    let server = start_server().await;
    // One valid instance, whose state must survive every refused request.
    register(&server, "web", "good", "127.0.0.1", good_check()).await;
    let services_before = server.services().await;
    let mut good_before = instance(&server, "web", "good").await;

    let http = "http://127.0.0.1:9/health";
    // One case per rule; every case that the model decides, with more
    // variants of each rule, is in src/model/check.rs's
    // refuses_every_nonsense_definition_naming_the_field. The cases the
    // HTTP layer decides (JSON types, unknown fields) are all kept here.
    let cases: Vec<(&str, Value, &str)> = vec![
        ("no kind", json!({ "interval": "1s" }), "check"),
        (
            "two kinds",
            json!({ "http": http, "tcp": "127.0.0.1:9", "interval": "1s" }),
            "check",
        ),
        ("no interval", json!({ "http": http }), "check.interval"),
        (
            "interval below the floor",
            json!({ "http": http, "interval": "99ms" }),
            "check.interval",
        ),
        (
            "timeout above interval",
            json!({ "http": http, "interval": "1s", "timeout": "2s" }),
            "check.timeout",
        ),
        (
            "zero timeout",
            json!({ "http": http, "interval": "1s", "timeout": "0" }),
            "check.timeout",
        ),
        (
            "unparsable interval",
            json!({ "http": http, "interval": "soon" }),
            "check.interval",
        ),
        (
            "interval not a string",
            json!({ "http": http, "interval": 5 }),
            "check.interval",
        ),
        (
            "ftp URL",
            json!({ "http": "ftp://127.0.0.1/health", "interval": "1s" }),
            "check.http",
        ),
        (
            "URL without a host",
            json!({ "http": "http:///health", "interval": "1s" }),
            "check.http",
        ),
        (
            "header name that is not an HTTP token",
            json!({ "http": http, "interval": "1s", "headers": { "X(Probe)": "a" } }),
            "check.headers",
        ),
        (
            "bad method",
            json!({ "http": http, "interval": "1s", "method": "GET /x" }),
            "check.method",
        ),
        (
            "tcp without a port",
            json!({ "tcp": "127.0.0.1", "interval": "1s" }),
            "check.tcp",
        ),
        (
            "ttl with interval",
            json!({ "ttl": "10s", "interval": "1s" }),
            "check.interval",
        ),
        ("unparsable ttl", json!({ "ttl": "soon" }), "check.ttl"),
        ("ttl below the floor", json!({ "ttl": "50ms" }), "check.ttl"),
        (
            "bad status",
            json!({ "ttl": "10s", "status": "fine" }),
            "check.status",
        ),
        (
            "unparsable deregister_critical_after",
            json!({ "ttl": "10s", "deregister_critical_after": "later" }),
            "check.deregister_critical_after",
        ),
        (
            "zero deregister_critical_after",
            json!({ "ttl": "10s", "deregister_critical_after": "0" }),
            "check.deregister_critical_after",
        ),
        (
            "negative threshold",
            json!({ "ttl": "10s", "failures_before_critical": -1 }),
            "check.failures_before_critical",
        ),
        (
            "unknown field",
            json!({ "ttl": "10s", "intervall": "1s" }),
            "check.intervall",
        ),
        (
            "unknown field in an http check",
            json!({ "http": http, "interval": "1s", "header": { "a": "b" } }),
            "check.header",
        ),
        (
            "empty check ID",
            json!({ "ttl": "10s", "id": "" }),
            "check.id",
        ),
    ];

    let mut failures = Vec::new();
    for (label, check, field) in &cases {
        let body = json!({ "address": "127.0.0.2", "port": 8080, "check": check });
        if let Err(e) = refused(&server, label, body, field, &mut good_before).await {
            failures.push(e);
        }
        // The same check second in a "checks" list is named by its index.
        let body = json!({
            "address": "127.0.0.2",
            "port": 8080,
            "checks": [{ "ttl": "10s" }, check],
        });
        let indexed = field.replacen("check", "checks[1]", 1);
        if let Err(e) = refused(
            &server,
            &format!("{label} in checks[1]"),
            body,
            &indexed,
            &mut good_before,
        )
        .await
        {
            failures.push(e);
        }
    }

    // A "check" next to "checks" with a bad one: the whole body is refused.
    let body = json!({
        "address": "127.0.0.2", "port": 8080,
        "check": { "ttl": "10s" },
        "checks": [{ "ttl": "10s" }, { "http": http, "interval": "1ms" }],
    });
    let reply = server.register("web", "new", body).await;
    if reply.status != 400 || reply.body["field"] != "checks[1].interval" {
        failures.push(format!("check + checks: {reply:?}"));
    }

    assert!(
        failures.is_empty(),
        "{} case(s) wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    get_instance(&server, "web", "new").await.assert_error(404);
    assert_eq!(server.services().await, services_before, "nothing stored");
    assert_eq!(
        instance(&server, "web", "good").await,
        good_before,
        "refused re-registrations leave the instance as it was"
    );
    server.stop().await;
}

/// Registers `body` as a new instance (`new`) and as a replacement of the
/// existing `good` one; both must be a 400 naming `field` with a message,
/// and leave `new` absent and `good` as it was (`good_before`). A case that
/// goes wrong is put right again (and `good_before` follows the restored
/// instance), so that it cannot spoil the next one.
async fn refused(
    server: &Server,
    label: &str,
    body: Value,
    field: &str,
    good_before: &mut Value,
) -> Result<(), String> {
    let mut problems = Vec::new();
    let mut accepted = false;
    for id in ["new", "good"] {
        let reply = server.register("web", id, body.clone()).await;
        let named = reply.body["field"].as_str();
        let has_message = reply.body["error"].as_str().is_some_and(|e| !e.is_empty());
        if reply.status == 200 {
            accepted = true;
            problems.push(format!("{label} (as {id}): accepted (200)"));
        } else if reply.status != 400 || named != Some(field) || !has_message {
            problems.push(format!(
                "{label} (as {id}): expected 400 naming {field:?}, got {} {}",
                reply.status, reply.body
            ));
        }
    }
    // Put a wrongly accepted case right; otherwise the registry must be as
    // it was.
    if get_instance(server, "web", "new").await.status != 404 {
        if !accepted {
            problems.push(format!("{label}: refused, but \"new\" was stored"));
        }
        server.deregister("web", "new").await;
    }
    if instance(server, "web", "good").await != *good_before {
        if !accepted {
            problems.push(format!("{label}: refused, but \"good\" was changed"));
        }
        register(server, "web", "good", "127.0.0.1", good_check()).await;
        *good_before = instance(server, "web", "good").await;
    }
    match problems.is_empty() {
        true => Ok(()),
        false => Err(problems.join("\n")),
    }
}

/// The check of the valid instance in the nonsense test.
fn good_check() -> Value {
    json!({ "check": { "ttl": "30s" } })
}

#[tokio::test]
async fn check_definitions_at_the_limits_are_accepted() {
    let server = start_server().await;
    let cases = [
        json!({ "http": "http://127.0.0.1:9/health", "interval": "100ms", "timeout": "100ms" }),
        json!({ "http": "http://localhost/", "interval": "1m30s" }),
        json!({ "tcp": "127.0.0.1:9", "interval": "1.5s", "timeout": "1500ms" }),
        json!({ "tcp": "[::1]:9", "interval": "1s" }),
        json!({ "ttl": "100ms" }),
        json!({ "ttl": "1h", "status": "warning", "deregister_critical_after": "90m" }),
        json!({ "ttl": "10s", "success_before_passing": 0, "failures_before_critical": 0 }),
    ];
    for (n, check) in cases.iter().enumerate() {
        let id = format!("edge-{n}");
        let body = json!({ "address": "127.0.0.2", "port": 8080, "check": check });
        let reply = server.register("web", &id, body).await;
        assert_eq!(reply.status, 200, "{check} is valid: {reply:?}");
        assert_eq!(instance(&server, "web", &id).await["id"], id.as_str());
    }
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------

#[tokio::test]
async fn metrics_count_transitions() {
    let server = start_server().await;
    let target = HttpTarget::start(Respond::Ok).await;
    let start = metrics(&server).await;
    for name in [
        "transitions_to_passing",
        "transitions_to_warning",
        "transitions_to_critical",
    ] {
        assert_eq!(counter(&start, name), 0, "{start}");
    }
    register(
        &server,
        "web",
        "web-1",
        "127.0.0.1",
        http_check(&target, json!({})),
    )
    .await;
    assert_eq!(
        counter(&metrics(&server).await, "checks_scheduled"),
        1,
        "one HTTP check scheduled"
    );

    // The initial critical is not a transition; each change is.
    wait_check(&server, "web", "web-1", "passing", "200").await;
    let m = metrics(&server).await;
    assert_eq!(counter(&m, "transitions_to_passing"), 1, "{m}");
    assert_eq!(counter(&m, "transitions_to_critical"), 0, "{m}");

    target.set(Respond::Fail);
    wait_check(&server, "web", "web-1", "critical", "500").await;
    let m = metrics(&server).await;
    assert!(counter(&m, "transitions_to_critical") >= 1, "{m}");
    let critical_once = counter(&m, "transitions_to_critical");

    target.set(Respond::TooMany);
    wait_check(&server, "web", "web-1", "warning", "429").await;
    assert!(counter(&metrics(&server).await, "transitions_to_warning") >= 1);

    target.set(Respond::Fail);
    wait_check(&server, "web", "web-1", "critical", "500").await;
    let m = metrics(&server).await;
    assert!(
        counter(&m, "transitions_to_critical") > critical_once,
        "a second fall counts again: {m}"
    );
    assert!(counter(&m, "probes_completed") >= 4, "{m}");

    // Removing the instance unschedules its check.
    let reply = server.deregister("web", "web-1").await;
    assert_eq!(reply.status, 204, "{reply:?}");
    eventually("no checks scheduled", LIMIT, || async {
        let m = metrics(&server).await;
        match counter(&m, "checks_scheduled") {
            0 => Ok(()),
            n => Err(format!("{n} scheduled")),
        }
    })
    .await;
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Re-registration
// ---------------------------------------------------------------------------

#[tokio::test]
async fn re_registering_unchanged_checks_keeps_their_status() {
    let server = start_server().await;
    let target = HttpTarget::start(Respond::Ok).await;
    let check = http_check(&target, json!({}));
    register(&server, "web", "web-1", "127.0.0.1", check.clone()).await;
    wait_check(&server, "web", "web-1", "passing", "200").await;

    // Same check, new metadata: still passing, still in DNS, no flap.
    let mut extra = check.clone();
    extra["meta"] = json!({ "version": "2" });
    let body = register(&server, "web", "web-1", "127.0.0.1", extra).await;
    assert_eq!(body["checks"][0]["status"], "passing", "{body}");
    assert_eq!(lookup(&server, "web").await.ips(), ips(&["127.0.0.1"]));
    assert_eq!(
        counter(&metrics(&server).await, "transitions_to_critical"),
        0
    );
    server.stop().await;
}
