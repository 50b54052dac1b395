//! Robustness against awkward inputs (issue #11): big imports, JSON bodies
//! with a key written twice, HTTP check targets that never stop sending,
//! floods of registrations whose address is a host name, and DNS queries
//! that only hickory's parser would accept, over both transports.
//!
//! Every test runs a real roster on port 0 and talks to it over loopback.
//! No assertion is about speed or memory use: each wait has a generous
//! overall limit, and "stops reading" is shown by how much a target managed
//! to send, bounded far below what an unbounded reader would take.

mod common;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use common::{HttpReply, Server, eventually, exchange_tcp_bytes, exchange_udp_bytes, start_server};
use hickory_proto::op::{Message, ResponseCode};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    task::JoinSet,
    time::timeout,
};

/// The overall limit of every wait for a state change.
const LIMIT: Duration = Duration::from_secs(20);

/// One instance record of an export. Its meta makes it about 3.5 KB, so
/// that a big body holds few enough instances for a debug build to import
/// quickly: the body's size is what this file tests.
fn stored(service: &str, id: &str, n: u32) -> Value {
    let meta: serde_json::Map<String, Value> = (0..16)
        .map(|k| (format!("key-{k}"), json!(format!("{n:0>200}"))))
        .collect();
    json!({
        "service": service, "id": id,
        "address": format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255),
        "port": 8080, "weight": 1, "priority": 0,
        "tags": ["http", "v1"], "meta": meta,
    })
}

/// `count` instance records spread over 50 services.
fn export_body(count: u32) -> Vec<Value> {
    (0..count)
        .map(|n| stored(&format!("svc-{}", n % 50), &format!("inst-{n}"), n))
        .collect()
}

async fn export(server: &Server) -> Value {
    let reply = server.get(&["v1", "export"]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    // The index moves with every write; what matters is the instances.
    reply.body["instances"].clone()
}

/// `PUT /v1/import` with a long overall limit: a big import in a debug
/// build on a shared machine takes longer than the common helpers allow.
async fn import(server: &Server, body: String) -> HttpReply {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(300))
        .build()
        .expect("HTTP client");
    let response = client
        .put(server.url(&["v1", "import"]))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("import request");
    let status = response.status().as_u16();
    let body = response.json().await.expect("import answers JSON");
    HttpReply { status, body }
}

#[tokio::test]
async fn a_16_mib_import_succeeds_a_bad_field_is_named_and_nothing_half_applies() {
    let server = start_server().await;
    let one = stored("svc-0", "inst-0", 0).to_string().len();
    let count = u32::try_from(16 * 1024 * 1024 / one + 1).expect("count fits");
    let instances = export_body(count);
    let body = json!({"version": 1, "index": 1, "instances": instances}).to_string();
    assert!(body.len() > 16 * 1024 * 1024, "{} bytes", body.len());
    let reply = import(&server, body).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["imported"], json!(instances.len()), "{reply:?}");
    let before = export(&server).await;
    assert_eq!(before.as_array().map(Vec::len), Some(instances.len()));

    // A bad field deep in a big body is named, and nothing of it applies.
    let mut changed: Vec<Value> = export_body(count);
    for instance in &mut changed {
        instance["port"] = json!(9090);
    }
    let last = changed.len() - 1;
    changed[last]["port"] = json!(70_000);
    let body = json!({"version": 1, "index": 1, "instances": changed}).to_string();
    let reply = import(&server, body).await;
    assert_eq!(
        reply.assert_error(400).as_deref(),
        Some(format!("instances[{last}].port").as_str()),
        "{reply:?}"
    );
    assert_eq!(
        export(&server).await,
        before,
        "a refused import changed the registry"
    );
    server.stop().await;
}

/// An import may hold up to 512 MiB in memory, so one runs at a time: a
/// second, while the first's body is still arriving, is told to try again
/// (429, Retry-After) without its body being read, and once the first has
/// ended an import goes through.
#[tokio::test]
async fn one_import_at_a_time() {
    let server = start_server().await;
    let body = json!({"version": 1, "index": 1, "instances": export_body(3)}).to_string();
    // The first import: its headers and half its body, then a pause.
    let mut first = tokio::net::TcpStream::connect(server.http_addr)
        .await
        .expect("connect");
    let head = format!(
        "PUT /v1/import HTTP/1.1\r\nhost: roster\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    first.write_all(head.as_bytes()).await.expect("send head");
    let (sent, rest) = body.split_at(body.len() / 2);
    first.write_all(sent.as_bytes()).await.expect("send half");
    // The second is one that would be refused anyway (a port out of
    // range): should it reach the slot before the first, it changes
    // nothing, and is sent again.
    let mut refused = export_body(1);
    refused[0]["port"] = json!(70_000);
    let refused = json!({"version": 1, "index": 1, "instances": refused}).to_string();
    let busy = eventually("the second import to be turned away", LIMIT, || async {
        let reply = import(&server, refused.clone()).await;
        reply.status == 429
    });
    busy.await;
    assert!(export(&server).await.as_array().is_some_and(Vec::is_empty));
    // The first finishes and is applied.
    first
        .write_all(rest.as_bytes())
        .await
        .expect("send the rest");
    let mut answer = vec![0u8; 4096];
    let read = timeout(LIMIT, first.read(&mut answer))
        .await
        .expect("an answer in time")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(first);
    let reply = import(&server, body).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(export(&server).await.as_array().map(Vec::len), Some(3));
    server.stop().await;
}

#[tokio::test]
async fn a_key_written_twice_is_refused_naming_it_and_changes_nothing() {
    let server = start_server().await;
    server.add("web", "web-1", "10.0.0.1", 80).await;
    let before = export(&server).await;

    let native = ["v1", "services", "web", "instances", "web-1"];
    for (body, field) in [
        (r#"{"address": "10.0.0.2", "port": 81, "port": 82}"#, "port"),
        (
            r#"{"address": "10.0.0.2", "port": 81, "meta": {"k": "a", "k": "b"}}"#,
            "meta.k",
        ),
        (
            r#"{"address": "127.0.0.2", "port": 81, "checks": [{"ttl": "10s", "ttl": "20s"}]}"#,
            "checks[0].ttl",
        ),
    ] {
        let reply = server.put_raw(&native, body).await;
        assert_eq!(
            reply.assert_error(400).as_deref(),
            Some(field),
            "{body}: {reply:?}"
        );
        let message = reply.body["error"].as_str().unwrap_or_default();
        assert!(message.contains("duplicate key"), "{body}: {reply:?}");
    }

    let mut twice = stored("web", "web-2", 2).to_string();
    twice.insert_str(1, r#""meta": {"a": "1"}, "#);
    let body = format!(r#"{{"version": 1, "index": 1, "instances": [{twice}]}}"#);
    let reply = import(&server, body).await;
    assert_eq!(
        reply.assert_error(400).as_deref(),
        Some("instances[0].meta"),
        "{reply:?}"
    );

    let consul = ["v1", "agent", "service", "register"];
    for body in [
        r#"{"Name": "web", "ID": "web-3", "Port": 1, "Port": 2}"#,
        r#"{"Name": "web", "ID": "web-3", "Meta": {"Port": "1", "Port": "2"}}"#,
    ] {
        let reply = server.put_raw(&consul, body).await;
        assert_eq!(reply.status, 400, "{body}: {reply:?}");
        let message = reply.body.as_str().unwrap_or_default();
        assert!(
            message.contains("duplicate key \"Port\""),
            "{body}: {reply:?}"
        );
    }

    assert_eq!(
        export(&server).await,
        before,
        "a refused body changed the registry"
    );
    server.stop().await;
}

/// An HTTP check target that answers 200 with a chunked body it never ends.
/// Returns its address and a task that ends with how many bytes the first
/// connection took before the client went away (or `None` if it took 50 MB,
/// far more than any bounded reader reads, or 30 s passed).
async fn endless_body_target() -> (std::net::SocketAddr, tokio::task::JoinHandle<Option<usize>>) {
    const TOO_MUCH: usize = 50 * 1024 * 1024;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind target");
    let address = listener.local_addr().expect("target address");
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let serve = async {
            // The request head, up to its blank line.
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if stream.read(&mut byte).await.ok()? == 0 {
                    return None;
                }
                head.push(byte[0]);
            }
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await
                .ok()?;
            let payload = vec![b'x'; 16 * 1024];
            let mut chunk = format!("{:x}\r\n", payload.len()).into_bytes();
            chunk.extend_from_slice(&payload);
            chunk.extend_from_slice(b"\r\n");
            let mut sent = 0;
            while sent < TOO_MUCH {
                if stream.write_all(&chunk).await.is_err() {
                    // The client closed the connection: it stopped reading.
                    return Some(sent);
                }
                sent += chunk.len();
            }
            None
        };
        timeout(Duration::from_secs(30), serve).await.ok().flatten()
    });
    (address, task)
}

#[tokio::test]
async fn an_http_check_reads_a_little_of_an_endless_body_and_hangs_up() {
    let server = start_server().await;
    let (target, sent) = endless_body_target().await;
    // A long timeout: an unbounded reader would keep reading for all of it.
    let check = json!({"http": format!("http://{target}/"), "interval": "10s", "timeout": "10s"});
    let reply = server
        .register(
            "web",
            "web-1",
            json!({"address": "127.0.0.1", "port": target.port(), "check": check}),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");

    let output = eventually("the check passes", LIMIT, || async {
        let reply = server
            .get(&["v1", "services", "web", "instances", "web-1"])
            .await;
        let check = &reply.body["checks"][0];
        (check["status"] == "passing").then(|| check["output"].clone())
    })
    .await;
    let output = output.as_str().unwrap_or_default();
    assert!(
        output.contains("200"),
        "the output keeps the status line: {output}"
    );

    let sent = timeout(LIMIT + Duration::from_secs(15), sent)
        .await
        .expect("the target ends")
        .expect("the target task");
    assert!(
        sent.is_some(),
        "roster kept reading the endless body (50 MB) instead of closing the connection"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_tcp_check_of_a_host_name_resolves_it() {
    let server = start_server().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind target");
    let port = listener.local_addr().expect("target address").port();
    // Accept (and drop) connections for as long as the test runs.
    let accept = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    let check = json!({"tcp": format!("localhost:{port}"), "interval": "1s", "timeout": "1s"});
    let reply = server
        .register(
            "db",
            "db-1",
            json!({"address": "127.0.0.1", "port": port, "check": check}),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    eventually("the TCP check of localhost passes", LIMIT, || async {
        let reply = server
            .get(&["v1", "services", "db", "instances", "db-1"])
            .await;
        (reply.body["checks"][0]["status"] == "passing").then_some(())
    })
    .await;
    accept.abort();
    server.stop().await;
}

#[tokio::test]
async fn a_flood_of_host_name_registrations_leaves_native_writes_alone() {
    const HOSTNAME_REGISTRATIONS: usize = 600;
    const NATIVE_REGISTRATIONS: usize = 50;
    let server = Arc::new(start_server().await);
    let mut consul = JoinSet::new();
    for n in 0..HOSTNAME_REGISTRATIONS {
        let server = server.clone();
        consul.spawn(async move {
            let body = json!({"Name": "web", "ID": format!("web-{n}"), "Address": "localhost", "Port": 80});
            server
                .put_raw(&["v1", "agent", "service", "register"], body.to_string())
                .await
        });
    }
    let mut native = JoinSet::new();
    for n in 0..NATIVE_REGISTRATIONS {
        let server = server.clone();
        native.spawn(async move {
            let body = json!({"address": "10.0.0.1", "port": 80});
            server.register("api", &format!("api-{n}"), body).await
        });
    }
    while let Some(reply) = native.join_next().await {
        let reply = reply.expect("native registration task");
        assert_eq!(reply.status, 200, "a native registration failed: {reply:?}");
    }
    let mut registered = 0;
    while let Some(reply) = consul.join_next().await {
        let reply = reply.expect("Consul registration task");
        match reply.status {
            200 => registered += 1,
            // Too many lookups waiting: refused cleanly, with a reason.
            503 => assert!(
                reply.body.as_str().is_some_and(|m| m.contains("lookups")),
                "{reply:?}"
            ),
            _ => panic!("a hostname registration failed uncleanly: {reply:?}"),
        }
    }
    assert!(registered > 0, "no hostname registration succeeded");
    let peak = roster::resolve::Resolver::shared().peak_in_flight();
    assert!(
        (1..=roster::resolve::MAX_IN_FLIGHT).contains(&peak),
        "lookups in flight at once: {peak}"
    );
    if let Ok(server) = Arc::try_unwrap(server) {
        server.stop().await;
    }
}

/// A query whose question only decodes by pointing into the header: ID
/// 0x01 0x61 reads as the label "a", the flags as a label, QDCOUNT's high
/// byte ends the name. hickory parses it, but a response echoing the
/// question byte for byte (with the flags now 0x81) would not decode.
const POINTER_INTO_HEADER: [u8; 18] = [
    0x01, 0x61, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 0x00, 0, 1, 0, 1,
];

/// A query for `web.service.local.` A whose OPT record holds an option
/// that claims 8 bytes with 4 left: hickory drops it with a WARN line.
fn broken_edns_option() -> Vec<u8> {
    let mut bytes = vec![0xAB, 0xCD, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
    for label in ["web", "service", "local"] {
        bytes.push(label.len() as u8);
        bytes.extend_from_slice(label.as_bytes());
    }
    bytes.extend_from_slice(&[0, 0, 1, 0, 1]);
    // Root owner, OPT, payload 1232, TTL 0, RDLENGTH 8: option 10 (cookie)
    // of claimed length 8 with only 4 bytes after its header.
    bytes.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 8]);
    bytes.extend_from_slice(&[0, 10, 0, 8, 1, 2, 3, 4]);
    bytes
}

/// The answer to raw `query` over UDP, decoded: it must decode.
async fn over_udp(server: SocketAddr, query: &[u8]) -> Message {
    let answer = exchange_udp_bytes(server, query).await;
    Message::from_vec(&answer).expect("the answer decodes")
}

/// The answer to raw `query` over TCP, decoded: it must decode.
async fn over_tcp(server: SocketAddr, query: &[u8]) -> Message {
    let answer = exchange_tcp_bytes(server, query).await;
    Message::from_vec(&answer).expect("the answer decodes")
}

#[tokio::test]
async fn queries_only_hickory_would_take_get_a_decodable_formerr_over_udp_and_tcp() {
    let server = start_server().await;
    server.add("web", "web-1", "10.0.0.1", 80).await;
    assert!(
        Message::from_vec(&POINTER_INTO_HEADER).is_ok(),
        "hickory reads the query"
    );
    for (what, query, id) in [
        (
            "pointer into the header",
            POINTER_INTO_HEADER.to_vec(),
            0x0161,
        ),
        (
            "EDNS option longer than its record",
            broken_edns_option(),
            0xABCD,
        ),
    ] {
        for (transport, answer) in [
            ("UDP", over_udp(server.dns_addr, &query).await),
            ("TCP", over_tcp(server.dns_addr, &query).await),
        ] {
            assert_eq!(answer.metadata.id, id, "{what} over {transport}");
            assert_eq!(
                answer.metadata.response_code,
                ResponseCode::FormErr,
                "{what} over {transport}: {answer:?}"
            );
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_opcode_gets_notimp_echoing_rd_but_not_cd() {
    let server = start_server().await;
    // ID 0x1234; opcode 2 (STATUS) with RD; CD set; one question,
    // web.service.local. A IN.
    let mut query = vec![0x12, 0x34, 0x11, 0x10, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["web", "service", "local"] {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    for (transport, answer) in [
        ("UDP", over_udp(server.dns_addr, &query).await),
        ("TCP", over_tcp(server.dns_addr, &query).await),
    ] {
        assert_eq!(answer.metadata.id, 0x1234, "{transport}");
        assert_eq!(
            answer.metadata.response_code,
            ResponseCode::NotImp,
            "{transport}: {answer:?}"
        );
        assert!(answer.metadata.recursion_desired, "{transport}: RD echoed");
        assert!(
            !answer.metadata.checking_disabled,
            "{transport}: CD not echoed"
        );
    }
    server.stop().await;
}
