//! Health checks end to end, one kind at a time: HTTP, TCP and TTL checks
//! following a real endpoint (spawned inside the test, see
//! `common::targets`) through every status, and a new instance checked at
//! once.
//!
//! Checks use real sockets, so nothing here can run on a paused clock: every
//! wait polls with a generous overall limit and fails with what it last saw.
//! No assertion is about speed; "at once" is shown by ordering (the target
//! saw a request long before one interval could pass), not by a stopwatch.

mod common;

use std::{sync::atomic::Ordering::SeqCst, time::Duration};

use common::{
    DOMAIN, counter, eventually, heartbeat, instance, ip, ips, lookup, metrics, register,
    start_server, start_server_with,
    targets::{
        HttpTarget, INTERVAL, Respond, TIMEOUT, TcpTarget, dead_port, http_check, tcp_check,
    },
    wait_check, wait_dns, wait_dns_within,
};
use hickory_proto::op::ResponseCode;
use serde_json::json;
use tokio::{
    net::{TcpSocket, TcpStream},
    time::{Instant, sleep},
};

// ---------------------------------------------------------------------------
// Each kind and each status
// ---------------------------------------------------------------------------

#[tokio::test]
async fn http_check_follows_the_endpoint_through_every_status() {
    let server = start_server().await;
    let target = HttpTarget::start(Respond::Ok).await;
    register(
        &server,
        "web",
        "web-1",
        "127.0.0.1",
        http_check(&target, json!({})),
    )
    .await;

    let passing = wait_check(&server, "web", "web-1", "passing", "200").await;
    assert_eq!(passing["status"], "passing", "{passing}");
    assert_eq!(passing["in_dns"], true, "{passing}");
    assert_eq!(passing["checks"][0]["type"], "http", "{passing}");
    wait_dns(&server, "web", &[ip("127.0.0.1")]).await;

    target.set(Respond::TooMany);
    let warning = wait_check(&server, "web", "web-1", "warning", "429").await;
    assert_eq!(warning["status"], "warning", "{warning}");
    assert_eq!(warning["in_dns"], false, "{warning}");
    assert_ne!(
        warning["checks"][0]["changed_at"], passing["checks"][0]["changed_at"],
        "changed_at moves on a transition"
    );
    wait_dns(&server, "web", &[]).await;

    target.set(Respond::Fail);
    let critical = wait_check(&server, "web", "web-1", "critical", "500").await;
    assert_eq!(critical["status"], "critical", "{critical}");
    assert_eq!(critical["in_dns"], false, "{critical}");

    target.set(Respond::Hang);
    wait_check(&server, "web", "web-1", "critical", "timed out").await;
    lookup(&server, "web")
        .await
        .assert_negative(ResponseCode::NoError, DOMAIN);

    // Recovery: the endpoint answers again, the instance is back in DNS.
    target.set(Respond::Ok);
    wait_check(&server, "web", "web-1", "passing", "200").await;
    wait_dns(&server, "web", &[ip("127.0.0.1")]).await;
    server.stop().await;
}

#[tokio::test]
async fn http_check_of_a_refused_port_is_critical() {
    let server = start_server().await;
    let check = json!({ "check": {
        "http": format!("http://{}/health", dead_port()),
        "interval": INTERVAL,
        "timeout": TIMEOUT,
    }});
    register(&server, "web", "web-1", "127.0.0.1", check).await;
    let body = wait_check(&server, "web", "web-1", "critical", "refused").await;
    assert_eq!(body["in_dns"], false, "{body}");
    lookup(&server, "web")
        .await
        .assert_negative(ResponseCode::NoError, DOMAIN);
    server.stop().await;
}

#[tokio::test]
async fn http_check_sends_its_method_and_headers() {
    let server = start_server().await;
    let target = HttpTarget::start(Respond::Ok).await;
    let check = http_check(
        &target,
        json!({ "method": "POST", "headers": { "X-Probe": "roster-test" } }),
    );
    register(&server, "web", "web-1", "127.0.0.1", check).await;
    wait_check(&server, "web", "web-1", "passing", "200").await;
    let seen = target.state.seen.lock().unwrap().clone();
    assert!(!seen.is_empty());
    for (method, header) in &seen {
        assert_eq!(method, "POST", "{seen:?}");
        assert_eq!(header.as_deref(), Some("roster-test"), "{seen:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn tcp_check_follows_the_listener_closing_and_reopening() {
    let server = start_server().await;
    let mut target = TcpTarget::open().await;
    let body = register(
        &server,
        "db",
        "db-1",
        "127.0.0.2",
        tcp_check(target.addr, json!({})),
    )
    .await;
    assert_eq!(body["checks"][0]["type"], "tcp", "{body}");

    wait_check(&server, "db", "db-1", "passing", "success").await;
    wait_dns(&server, "db", &[ip("127.0.0.2")]).await;

    target.close().await;
    wait_check(&server, "db", "db-1", "critical", "refused").await;
    let reply = wait_dns(&server, "db", &[]).await;
    reply.assert_negative(ResponseCode::NoError, DOMAIN);

    target.reopen().await;
    wait_check(&server, "db", "db-1", "passing", "success").await;
    wait_dns(&server, "db", &[ip("127.0.0.2")]).await;
    server.stop().await;
}

#[tokio::test]
async fn tcp_check_that_cannot_connect_in_time_is_critical() {
    // A listener with a backlog of 0 that never accepts: once one
    // connection fills its queue, the kernel drops further SYNs, so a
    // connect neither completes nor is refused — it hangs.
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind");
    let listener = socket.listen(0).expect("listen");
    let addr = listener.local_addr().expect("address");
    let mut fillers = Vec::new();
    for _ in 0..3 {
        if let Ok(Ok(stream)) =
            tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await
        {
            fillers.push(stream);
        }
    }
    assert!(!fillers.is_empty(), "the backlog takes one connection");

    let server = start_server().await;
    register(
        &server,
        "db",
        "db-1",
        "127.0.0.2",
        tcp_check(addr, json!({})),
    )
    .await;
    let body = wait_check(&server, "db", "db-1", "critical", "timed out").await;
    assert_eq!(body["in_dns"], false, "{body}");
    drop(listener);
    server.stop().await;
}

#[tokio::test]
async fn ttl_check_follows_heartbeats_and_expires() {
    let server = start_server().await;
    let body = register(
        &server,
        "worker",
        "w-1",
        "127.0.0.3",
        json!({ "check": { "ttl": "2s" } }),
    )
    .await;
    assert_eq!(
        body["status"], "critical",
        "a new check starts critical: {body}"
    );
    assert_eq!(body["checks"][0]["type"], "ttl", "{body}");
    lookup(&server, "worker")
        .await
        .assert_negative(ResponseCode::NoError, DOMAIN);

    // No body: passing, and in DNS in the very next answer.
    let reply = heartbeat(&server, "worker", "w-1", "").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["checks"][0]["status"], "passing", "{reply:?}");
    assert_eq!(reply.body["in_dns"], true, "{reply:?}");
    assert_eq!(lookup(&server, "worker").await.ips(), ips(&["127.0.0.3"]));

    // A warning with a note: the note is the output, and DNS drops it.
    let reply = heartbeat(
        &server,
        "worker",
        "w-1",
        r#"{"status":"warning","note":"x"}"#,
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let check = &reply.body["checks"][0];
    assert_eq!(check["status"], "warning", "{reply:?}");
    assert_eq!(check["output"], "x", "{reply:?}");
    lookup(&server, "worker")
        .await
        .assert_negative(ResponseCode::NoError, DOMAIN);
    let shown = instance(&server, "worker", "w-1").await;
    assert_eq!(shown["checks"][0]["output"], "x", "{shown}");

    // The service may report itself critical.
    let reply = heartbeat(
        &server,
        "worker",
        "w-1",
        r#"{"status":"critical","note":"disk full"}"#,
    )
    .await;
    assert_eq!(reply.body["checks"][0]["status"], "critical", "{reply:?}");
    assert_eq!(reply.body["checks"][0]["output"], "disk full", "{reply:?}");
    lookup(&server, "worker")
        .await
        .assert_negative(ResponseCode::NoError, DOMAIN);

    // Passing again, then starved: critical once the TTL passes.
    let reply = heartbeat(&server, "worker", "w-1", r#"{"status":"passing"}"#).await;
    assert_eq!(reply.body["checks"][0]["status"], "passing", "{reply:?}");
    wait_check(&server, "worker", "w-1", "critical", "TTL expired").await;
    wait_dns(&server, "worker", &[]).await;

    // A heartbeat brings it back.
    let reply = heartbeat(&server, "worker", "w-1", "").await;
    assert_eq!(reply.body["checks"][0]["status"], "passing", "{reply:?}");
    assert_eq!(lookup(&server, "worker").await.ips(), ips(&["127.0.0.3"]));
    server.stop().await;
}

#[tokio::test]
async fn heartbeats_keep_a_ttl_check_alive_past_its_ttl() {
    let server = start_server().await;
    register(
        &server,
        "worker",
        "w-1",
        "127.0.0.3",
        json!({ "check": { "ttl": "2s" } }),
    )
    .await;
    // A service reporting every 250 ms for 3 s: well past one TTL, so this
    // passes only if every heartbeat restarts the clock. (The sleeps pace
    // the service's reports; they wait for nothing.)
    for round in 0..12 {
        let reply = heartbeat(&server, "worker", "w-1", "").await;
        assert_eq!(reply.body["status"], "passing", "round {round}: {reply:?}");
        sleep(Duration::from_millis(250)).await;
        let body = instance(&server, "worker", "w-1").await;
        assert_eq!(body["status"], "passing", "round {round}: {body}");
    }
    assert_eq!(lookup(&server, "worker").await.ips(), ips(&["127.0.0.3"]));
    assert_eq!(
        counter(&metrics(&server).await, "transitions_to_critical"),
        0
    );
    server.stop().await;
}

#[tokio::test]
async fn ttl_check_never_fed_expires() {
    let server = start_server().await;
    register(
        &server,
        "worker",
        "w-1",
        "127.0.0.3",
        json!({ "check": { "ttl": "300ms", "status": "passing" } }),
    )
    .await;
    wait_check(&server, "worker", "w-1", "critical", "TTL expired").await;
    wait_dns(&server, "worker", &[]).await;
    server.stop().await;
}

#[tokio::test]
async fn heartbeats_that_make_no_sense_are_refused() {
    let server = start_server().await;
    register(
        &server,
        "worker",
        "w-1",
        "127.0.0.3",
        json!({ "check": { "ttl": "30s" } }),
    )
    .await;
    register(&server, "plain", "p-1", "10.0.0.4", json!({})).await;
    let before = instance(&server, "worker", "w-1").await;

    let reply = heartbeat(&server, "worker", "w-1", r#"{"status":"fine"}"#).await;
    assert_eq!(reply.assert_error(400).as_deref(), Some("status"));
    let reply = heartbeat(&server, "worker", "w-1", r#"{"state":"passing"}"#).await;
    reply.assert_error(400);
    let reply = heartbeat(&server, "worker", "nobody", "").await;
    reply.assert_error(404);
    let reply = heartbeat(&server, "plain", "w-1", "").await;
    reply.assert_error(404);
    let reply = heartbeat(&server, "plain", "p-1", "").await;
    reply.assert_error(409);
    let long = json!({ "note": "n".repeat(5000) }).to_string();
    let reply = heartbeat(&server, "worker", "w-1", &long).await;
    assert_eq!(reply.assert_error(400).as_deref(), Some("note"));
    let reply = heartbeat(&server, "worker", "w-1", "not json").await;
    reply.assert_error(400);

    let after = instance(&server, "worker", "w-1").await;
    assert_eq!(before, after, "refused heartbeats change nothing");
    server.stop().await;
}

// ---------------------------------------------------------------------------
// A new instance: critical, and checked at once
// ---------------------------------------------------------------------------

#[tokio::test]
async fn new_instance_starts_critical_and_is_checked_at_once() {
    let server = start_server().await;
    // The target holds the first probe, so the test sees the instance
    // before its first result, without racing it.
    let target = HttpTarget::start(Respond::Hold).await;
    let registered_at = Instant::now();
    let check = json!({ "check": {
        "http": target.url(),
        "interval": "10s",
        "timeout": "8s",
    }});
    let body = register(&server, "web", "web-1", "127.0.0.1", check).await;
    assert_eq!(body["status"], "critical", "{body}");
    assert_eq!(body["in_dns"], false, "{body}");
    assert_eq!(body["checks"][0]["status"], "critical", "{body}");
    lookup(&server, "web")
        .await
        .assert_negative(ResponseCode::NoError, DOMAIN);

    // The first probe arrives without waiting for an interval...
    eventually("the first probe", Duration::from_secs(5), || async {
        match target.received() {
            0 => Err("no request yet".to_owned()),
            _ => Ok(()),
        }
    })
    .await;
    // ...and while it is held, the instance stays out of DNS.
    lookup(&server, "web")
        .await
        .assert_negative(ResponseCode::NoError, DOMAIN);

    target.set(Respond::Ok);
    let remaining = Duration::from_secs(5).saturating_sub(registered_at.elapsed());
    wait_dns_within(&server, "web", &ips(&["127.0.0.1"]), remaining).await;
    server.stop().await;
}

#[tokio::test]
async fn first_tcp_check_runs_at_once() {
    let server = start_server().await;
    let target = TcpTarget::open().await;
    let registered_at = Instant::now();
    let check =
        json!({ "check": { "tcp": target.addr.to_string(), "interval": "10s", "timeout": "5s" } });
    let body = register(&server, "db", "db-1", "127.0.0.2", check).await;
    assert_eq!(body["status"], "critical", "{body}");
    // With a 10 s interval, a first check that waited an interval could not
    // put the instance in DNS within 5 s of registering.
    let remaining = Duration::from_secs(5).saturating_sub(registered_at.elapsed());
    wait_dns_within(&server, "db", &ips(&["127.0.0.2"]), remaining).await;
    server.stop().await;
}

#[tokio::test]
async fn any_2xx_passes_and_any_other_code_but_429_is_critical() {
    let server = start_server().await;
    let target = HttpTarget::start(Respond::Status(204)).await;
    register(
        &server,
        "web",
        "web-1",
        "127.0.0.1",
        http_check(&target, json!({})),
    )
    .await;
    wait_check(&server, "web", "web-1", "passing", "204").await;
    // Redirects are not followed: a health endpoint that moved is broken.
    for code in [302, 404, 503] {
        target.set(Respond::Status(code));
        wait_check(&server, "web", "web-1", "critical", &code.to_string()).await;
        target.set(Respond::Status(299));
        wait_check(&server, "web", "web-1", "passing", "299").await;
    }
    server.stop().await;
}

#[tokio::test]
async fn http_checks_reuse_their_connection() {
    let server = start_server().await;
    let target = HttpTarget::start(Respond::Ok).await;
    register(
        &server,
        "web",
        "web-1",
        "127.0.0.1",
        http_check(&target, json!({})),
    )
    .await;
    target
        .wait_answers("six probes", |answered| answered.len() >= 6)
        .await;
    let connections = target.state.connections.load(SeqCst);
    let requests = target.received();
    assert!(
        connections <= 2,
        "{requests} probes over {connections} connections: keep-alive is not used"
    );
    server.stop().await;
}

#[tokio::test]
async fn an_instance_is_healthy_only_when_all_its_checks_pass() {
    let server = start_server().await;
    let target = HttpTarget::start(Respond::Ok).await;
    let body = register(
        &server,
        "web",
        "web-1",
        "127.0.0.1",
        json!({ "checks": [
            { "http": target.url(), "interval": INTERVAL, "timeout": TIMEOUT },
            { "ttl": "30s" },
        ]}),
    )
    .await;
    assert_eq!(body["checks"].as_array().map(Vec::len), Some(2), "{body}");

    // The HTTP check passes; the TTL check has not heard yet.
    let body = wait_check(&server, "web", "web-1", "passing", "200").await;
    assert_eq!(body["checks"][1]["status"], "critical", "{body}");
    assert_eq!(body["status"], "critical", "the worst check wins: {body}");
    lookup(&server, "web")
        .await
        .assert_negative(ResponseCode::NoError, DOMAIN);

    let reply = heartbeat(&server, "web", "web-1", "").await;
    assert_eq!(reply.body["status"], "passing", "{reply:?}");
    assert_eq!(lookup(&server, "web").await.ips(), ips(&["127.0.0.1"]));

    // One check falls to warning: so does the instance.
    target.set(Respond::TooMany);
    let body = wait_check(&server, "web", "web-1", "warning", "429").await;
    assert_eq!(body["status"], "warning", "{body}");
    wait_dns(&server, "web", &[]).await;
    server.stop().await;
}

#[tokio::test]
async fn checks_resume_after_a_restart() {
    let data = tempfile::tempdir().expect("data directory");
    let keep_data = |config: &mut roster::Config| config.data_dir = data.path().to_owned();
    let target = TcpTarget::open().await;

    let server = start_server_with(&[], keep_data).await;
    register(
        &server,
        "db",
        "db-1",
        "127.0.0.2",
        tcp_check(target.addr, json!({})),
    )
    .await;
    register(
        &server,
        "db",
        "db-2",
        "127.0.0.3",
        tcp_check(target.addr, json!({})),
    )
    .await;
    register(
        &server,
        "worker",
        "w-1",
        "127.0.0.4",
        json!({ "check": { "ttl": "500ms", "status": "passing" } }),
    )
    .await;
    wait_dns(&server, "db", &[ip("127.0.0.2"), ip("127.0.0.3")]).await;
    let reply = server.maintenance("db", "db-2", true, "deploy").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    server.stop().await;

    let server = start_server_with(&[], keep_data).await;
    // The TCP check is probed again, the drain is remembered...
    wait_dns(&server, "db", &[ip("127.0.0.2")]).await;
    let drained = instance(&server, "db", "db-2").await;
    assert_eq!(drained["maintenance"], "deploy", "{drained}");
    // ...and the TTL clock runs again from start-up.
    wait_check(&server, "worker", "w-1", "critical", "TTL expired").await;
    let reply = heartbeat(&server, "worker", "w-1", "").await;
    assert_eq!(reply.body["status"], "passing", "{reply:?}");
    server.stop().await;
}
