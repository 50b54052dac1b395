//! The HTTP API under attack: idle, slow and bodiless connections are
//! closed after their deadlines, a flood beyond the connection cap or the
//! descriptor limit still lets a new client in, and long-polling queries
//! are not mistaken for idle connections (issue #11, finding 4).
//!
//! Every test talks to a real roster over loopback with real sockets.
//! Waits have an overall limit (a hang guard, never a timing assertion).

mod common;

use std::{net::SocketAddr, process::Stdio, time::Duration};

use common::{http_client, start_server_with};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    process::Command,
    sync::mpsc,
    task::JoinSet,
    time::timeout,
};

/// The longest any wait here may take before the test fails.
const LIMIT: Duration = Duration::from_secs(30);

/// Reads from `stream` until the server closes it (EOF or reset), and
/// returns what it sent; panics if it is still open after [`LIMIT`].
async fn read_until_closed(stream: &mut TcpStream, what: &str) -> Vec<u8> {
    let mut received = Vec::new();
    let read = timeout(LIMIT, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "{what}: the server kept the connection open for {LIMIT:?}"
    );
    received
}

/// Reads one HTTP/1.1 response with a Content-Length; returns the status
/// and body.
async fn read_response(stream: &mut TcpStream) -> (u16, Vec<u8>) {
    let read = async {
        let mut received = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            if let Some(end) = find(&received, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:"))
                    .and_then(|value| value.trim().parse().ok())
                    .unwrap_or_else(|| panic!("no content-length in {head:?}"));
                if received.len() >= end + 4 + length {
                    let status = head
                        .split_whitespace()
                        .nth(1)
                        .and_then(|code| code.parse().ok())
                        .unwrap_or_else(|| panic!("no status in {head:?}"));
                    return (status, received[end + 4..end + 4 + length].to_vec());
                }
            }
            let n = stream.read(&mut buffer).await.expect("read response");
            assert!(n > 0, "closed before a whole response: {received:?}");
            received.extend_from_slice(&buffer[..n]);
        }
    };
    timeout(LIMIT, read).await.expect("a response in time")
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn connect(address: SocketAddr) -> TcpStream {
    timeout(LIMIT, TcpStream::connect(address))
        .await
        .expect("connect in time")
        .expect("connect")
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let server = start_server_with(&[], |config| config.http.idle_timeout = 1).await;
    let mut stream = connect(server.http_addr).await;
    stream
        .write_all(b"GET /v1/services HTTP/1.1\r\nhost: roster\r\n\r\n")
        .await
        .expect("send request");
    let (status, _) = read_response(&mut stream).await;
    assert_eq!(status, 200);
    // Kept alive for the next request; none comes.
    let rest = read_until_closed(&mut stream, "idle keep-alive connection").await;
    assert!(rest.is_empty(), "{rest:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_never_used_connection_is_closed_after_the_idle_timeout() {
    let server = start_server_with(&[], |config| config.http.idle_timeout = 1).await;
    let mut stream = connect(server.http_addr).await;
    read_until_closed(&mut stream, "silent connection").await;
    server.stop().await;
}

#[tokio::test]
async fn a_slow_request_head_is_cut_off_after_the_header_timeout() {
    let server = start_server_with(&[], |config| {
        config.http.header_read_timeout = 1;
        // So only the head deadline can close it.
        config.http.idle_timeout = 3600;
    })
    .await;
    let mut stream = connect(server.http_addr).await;
    stream
        .write_all(b"GET /v1/services HTTP/1.1\r\nhost: roster\r\nx-slow: ")
        .await
        .expect("send half a head");
    let answer = read_until_closed(&mut stream, "half-sent request head").await;
    assert!(answer.is_empty(), "no answer to half a request: {answer:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_body_that_never_arrives_gets_408_as_json_and_the_connection_closes() {
    let server = start_server_with(&[], |config| config.http.body_read_timeout = 1).await;
    let mut stream = connect(server.http_addr).await;
    stream
        .write_all(
            b"PUT /v1/services/web/instances/web-1 HTTP/1.1\r\nhost: roster\r\n\
              content-type: application/json\r\ncontent-length: 100\r\n\r\n{\"addr",
        )
        .await
        .expect("send head and a little body");
    let (status, body) = read_response(&mut stream).await;
    assert_eq!(status, 408, "{}", String::from_utf8_lossy(&body));
    let body: Value = serde_json::from_slice(&body).expect("a JSON error body");
    assert_eq!(body["field"], "body", "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    read_until_closed(&mut stream, "connection after 408").await;
    server.stop().await;
}

#[tokio::test]
async fn oversized_and_malformed_request_heads_get_json_errors() {
    let server = start_server_with(&[], |_| {}).await;
    let long_path = format!("/v1/services/{}", "a".repeat(10 * 1024));
    let big_header = format!("x-big: {}\r\n", "b".repeat(20 * 1024));
    // Past hyper's own limit on fields, and not HTTP at all: refused by
    // hyper's parser, whose empty answers roster rewrites.
    let many_headers: String = (0..300).map(|i| format!("x-{i}: {i}\r\n")).collect();
    let cases = [
        (
            format!("GET {long_path} HTTP/1.1\r\nhost: roster\r\n\r\n"),
            414,
        ),
        (
            format!("GET /v1/services HTTP/1.1\r\nhost: roster\r\n{big_header}\r\n"),
            431,
        ),
        (
            format!("GET /v1/services HTTP/1.1\r\nhost: roster\r\n{many_headers}\r\n"),
            431,
        ),
        (
            "GET /v1/services HTTP/1.1\r\nno colon here\r\n\r\n".to_owned(),
            400,
        ),
        ("BAD\u{1}METHOD / HTTP/1.1\r\n\r\n".to_owned(), 400),
    ];
    for (request, want) in cases {
        let mut stream = connect(server.http_addr).await;
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send request");
        let (status, body) = read_response(&mut stream).await;
        assert_eq!(status, want, "{}", String::from_utf8_lossy(&body));
        let body: Value = serde_json::from_slice(&body).expect("a JSON error body");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
    }
    server.stop().await;
}

/// Opens `count` connections that send nothing; returns them with a
/// channel that yields one message per connection the server closes.
async fn idle_flood(address: SocketAddr, count: usize) -> (JoinSet<()>, mpsc::Receiver<()>) {
    let (closed, closes) = mpsc::channel(count);
    let mut flood = JoinSet::new();
    for _ in 0..count {
        let mut stream = connect(address).await;
        let closed = closed.clone();
        flood.spawn(async move {
            let mut buffer = [0u8; 512];
            loop {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            let _ = closed.send(()).await;
        });
    }
    (flood, closes)
}

/// Waits until at least `want` flood connections have been closed.
async fn await_closes(closes: &mut mpsc::Receiver<()>, want: usize) {
    let counted = timeout(LIMIT, async {
        for _ in 0..want {
            closes.recv().await.expect("flood tasks alive");
        }
    })
    .await;
    assert!(
        counted.is_ok(),
        "fewer than {want} idle connections were closed"
    );
}

#[tokio::test]
async fn beyond_the_connection_cap_the_oldest_idle_make_room_for_new_clients() {
    let server = start_server_with(&[], |config| {
        config.http.max_connections = 50;
        config.http.idle_timeout = 3600;
        config.http.header_read_timeout = 3600;
    })
    .await;
    let (mut flood, mut closes) = idle_flood(server.http_addr, 200).await;
    // A new client is answered, and can register.
    let services = server.get(&["v1", "services"]).await;
    assert_eq!(services.status, 200, "{services:?}");
    server.add("web", "web-1", "10.0.0.1", 80).await;
    // Room was made by closing flood connections, not by holding them all.
    await_closes(&mut closes, 200 - 50).await;
    flood.abort_all();
    server.stop().await;
}

/// The `X-Consul-Index` of a GET of `url`, to block on the next change.
async fn consul_index(client: &reqwest::Client, url: &str) -> u64 {
    let reply = client.get(url).send().await.expect("GET");
    reply
        .headers()
        .get("x-consul-index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("an X-Consul-Index")
}

#[tokio::test]
async fn a_blocking_query_longer_than_the_idle_timeout_is_not_cut_off() {
    let server = start_server_with(&[], |config| {
        config.http.idle_timeout = 1;
        config.http.header_read_timeout = 1;
    })
    .await;
    server.add("web", "web-1", "10.0.0.1", 80).await;
    let client = http_client();
    let url = |query: &str| format!("http://{}/v1/health/service/web{query}", server.http_addr);
    let index = consul_index(&client, &url("")).await;
    let blocked = tokio::spawn(client.get(url(&format!("?index={index}&wait=60s"))).send());
    // Let the query sit past several idle timeouts; what is asserted is
    // only that it then answers, not how fast.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!blocked.is_finished(), "the query did not block");
    server.add("web", "web-2", "10.0.0.2", 80).await;
    let response = timeout(LIMIT, blocked)
        .await
        .expect("the query answers once the index moves")
        .expect("request task")
        .expect("an HTTP answer, not a cut connection");
    assert_eq!(response.status().as_u16(), 200);
    let entries: Value = response.json().await.expect("JSON");
    assert_eq!(entries.as_array().map(Vec::len), Some(2), "{entries}");
    server.stop().await;
}

/// The bound HTTP address from roster's "roster is serving" log line.
fn http_field(line: &str) -> Option<SocketAddr> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix("http="))
        .and_then(|value| value.parse().ok())
}

#[tokio::test]
async fn under_a_256_descriptor_limit_a_flood_of_400_still_lets_a_new_client_in() {
    // The flood below needs more than some test runners' default limit.
    roster::limits::raise_nofile_limit().expect("read this process's limit");
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::create_dir_all(dir.path().join("zones")).expect("zones directory");
    let path = |name: &str| dir.path().join(name).display().to_string();
    // prlimit (util-linux) sets the limit, then execs roster in its place.
    let mut command = Command::new("prlimit");
    command
        .args(["--nofile=256:256", env!("CARGO_BIN_EXE_roster"), "serve"])
        .args(["--dns", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .args(["--data-dir", &path("data"), "--zones", &path("zones")])
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("spawn roster");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    let mut startup = String::new();
    let http = timeout(LIMIT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            startup.push_str(&line);
            startup.push('\n');
            if line.contains("roster is serving") {
                return http_field(&line);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .expect("roster logs its HTTP address");
    assert!(
        startup.contains("nofile=256"),
        "roster runs under the lowered limit:\n{startup}"
    );
    // Keep draining the log so roster never blocks on a full pipe.
    let log = tokio::spawn(async move {
        let mut text = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            text.push_str(&line);
            text.push('\n');
        }
        text
    });

    let (mut flood, _closes) = idle_flood(http, 400).await;
    let client = http_client();
    let services = client
        .get(format!("http://{http}/v1/services"))
        .send()
        .await
        .expect("a new client is answered despite the flood");
    assert_eq!(services.status().as_u16(), 200);
    let registered = client
        .put(format!("http://{http}/v1/services/web/instances/web-1"))
        .json(&json!({"address": "10.0.0.1", "port": 80}))
        .send()
        .await
        .expect("a registration is answered despite the flood");
    assert_eq!(registered.status().as_u16(), 200);
    flood.abort_all();

    child.start_kill().expect("stop roster");
    let _ = timeout(LIMIT, child.wait()).await;
    let log = timeout(LIMIT, log)
        .await
        .expect("log closes")
        .unwrap_or_default();
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test]
async fn a_client_that_stops_reading_its_answers_is_cut_off_after_the_write_timeout() {
    let server = start_server_with(&[], |config| {
        config.http.write_timeout = 1;
        config.http.idle_timeout = 3600;
    })
    .await;
    // Big enough answers that a few hundred fill both sockets' buffers.
    for n in 0..50u8 {
        let id = format!("web-{n}");
        let address = format!("127.0.0.{}", n + 1);
        server.add("web", &id, &address, 8080).await;
    }
    let mut stream = TcpStream::connect(server.http_addr).await.expect("connect");
    let request = b"GET /v1/export HTTP/1.1\r\nhost: roster\r\n\r\n";
    // Pipelined requests, never reading an answer. roster stops reading
    // requests while its answer cannot be written, so once the buffers are
    // full this write blocks until roster gives the connection up. Without
    // a write deadline it would block for ever (and hold a connection and
    // the answers' memory with it).
    let written = timeout(LIMIT, async {
        loop {
            if stream.write_all(request).await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(
        written.is_ok(),
        "roster kept a connection whose client stopped reading for {LIMIT:?}"
    );
    // The server is fine: a new client is answered.
    let reply = server.get(&["v1", "services"]).await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn when_every_connection_is_busy_a_new_client_gets_503_at_once_and_the_busy_ones_finish() {
    const CAP: usize = 4;
    let server = start_server_with(&[], |config| {
        config.http.max_connections = CAP;
        config.http.body_read_timeout = 3;
    })
    .await;
    server.add("web", "web-1", "10.0.0.1", 80).await;
    // Every slot held by a request in flight, each on its own connection:
    // a registration whose body stops after its first byte (blocked
    // queries cannot hold them all: see the next test). Their heads are
    // whole, so none is idle, and none is closed to make room.
    let mut busy = Vec::new();
    for n in 0..CAP {
        let mut stream = connect(server.http_addr).await;
        let head = format!(
            "PUT /v1/services/web/instances/slow-{n} HTTP/1.1\r\nhost: roster\r\n\
             content-type: application/json\r\ncontent-length: 100\r\n\r\n{{"
        );
        stream
            .write_all(head.as_bytes())
            .await
            .expect("send a head");
        busy.push(stream);
    }
    // A new client is refused at once with roster's JSON error, not left
    // waiting behind the busy ones. It sends nothing: roster answers a
    // refused connection without reading it, and a request still unread
    // at close would turn the close into a reset that can discard the
    // answer. Until all the busy requests are in, a new connection may be
    // admitted instead (and then hears nothing): try again (bounded).
    let refused = timeout(LIMIT, async {
        loop {
            let mut stream = connect(server.http_addr).await;
            let mut first = [0u8; 1];
            let heard = timeout(Duration::from_millis(500), stream.peek(&mut first)).await;
            if let Ok(Ok(1)) = heard {
                return read_until_closed(&mut stream, "a refused connection").await;
            }
            drop(stream);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a new client is refused once every connection is busy");
    let text = String::from_utf8_lossy(&refused);
    assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
    let body = find(&refused, b"\r\n\r\n").map(|end| &refused[end + 4..]);
    let refused = body.unwrap_or_else(|| panic!("a whole answer: {text}"));
    let error: Value = serde_json::from_slice(refused).expect("a JSON error body");
    assert!(error["error"].is_string(), "{error}");
    // The busy ones were not closed to make room: each is answered when
    // its body runs out of time (408), and then a new client is served
    // again.
    for mut stream in busy {
        let answer = read_until_closed(&mut stream, "a busy connection").await;
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    }
    server.add("web", "web-2", "10.0.0.2", 80).await;
    server.stop().await;
}

/// Blocked Consul queries may not take every connection: past their share
/// (all but an eighth) one is answered 429 at once, so registrations and
/// heartbeats always find a connection. One watcher of a thousand services
/// once locked them all out for ten minutes.
#[tokio::test]
async fn blocked_queries_leave_connections_for_writes() {
    const CAP: usize = 24;
    // All but an eighth: 21.
    const BUDGET: usize = 21;
    let server = start_server_with(&[], |config| {
        config.http.max_connections = CAP;
    })
    .await;
    server.add("web", "web-1", "10.0.0.1", 80).await;
    let client = http_client();
    let url = |query: &str| format!("http://{}/v1/health/service/web{query}", server.http_addr);
    let index = consul_index(&client, &url("")).await;
    // One watcher more than the budget, each on its own connection (a
    // fresh client each): whichever comes last is turned away at once.
    let mut blocked = JoinSet::new();
    for _ in 0..=BUDGET {
        let request = http_client().get(url(&format!("?index={index}&wait=60s")));
        blocked.spawn(request.send());
    }
    let turned_away = timeout(LIMIT, blocked.join_next())
        .await
        .expect("a watcher past the budget is turned away at once")
        .expect("a task")
        .expect("task")
        .expect("an HTTP answer");
    assert_eq!(turned_away.status().as_u16(), 429);
    assert!(turned_away.headers().contains_key("x-consul-index"));
    let text = turned_away.text().await.expect("a body");
    assert!(text.contains("too many blocking queries"), "{text}");
    // A registration still gets in, and wakes every watcher.
    server.add("web", "web-2", "10.0.0.2", 80).await;
    assert_eq!(blocked.len(), BUDGET);
    while let Some(answer) = timeout(LIMIT, blocked.join_next()).await.expect("answers") {
        let response = answer.expect("task").expect("an HTTP answer");
        assert_eq!(response.status().as_u16(), 200);
    }
    server.stop().await;
}
