//! DNS over TCP under pressure: pipelining, idle and long-lived
//! connections, more connections than the cap, and damaged messages, against
//! a real roster on 127.0.0.1 with small limits.
//!
//! Every wait has an overall limit; the limits are several times what the
//! server is configured to take, never a measure of how fast it is.

mod common;

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use common::{Server, query_message, start_server_with};
use hickory_proto::{
    op::{Message, MessageType, ResponseCode},
    rr::RecordType,
};
use roster::Config;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::{Instant, sleep, timeout},
};

/// The longest any single wait in these tests may take.
const DEADLINE: Duration = Duration::from_secs(20);

/// A roster with `web` (one instance) and `big` (40: more than fits 512
/// octets), after `configure` sets its TCP limits.
async fn start(configure: impl FnOnce(&mut Config)) -> Server {
    let server = start_server_with(&[], configure).await;
    server.add("web", "web-1", "10.0.0.1", 80).await;
    for n in 0..40 {
        let address = format!("10.1.0.{}", n + 1);
        server.add("big", &format!("big-{n}"), &address, 80).await;
    }
    server
}

/// `message` with its two-octet length (RFC 1035 section 4.2.2).
fn framed(message: &[u8]) -> Vec<u8> {
    let len = u16::try_from(message.len()).expect("message fits TCP framing");
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(message);
    framed
}

/// A query for `qname`/`qtype` with `id`, encoded.
fn query_bytes(id: u16, qname: &str, qtype: RecordType) -> Vec<u8> {
    let mut query = query_message(qname, qtype, None);
    query.metadata.id = id;
    query.to_vec().expect("encode query")
}

async fn connect(server: SocketAddr) -> TcpStream {
    timeout(DEADLINE, TcpStream::connect(server))
        .await
        .expect("connect within the deadline")
        .expect("connect TCP")
}

/// Reads one framed message; `None` when the server closed the connection.
async fn read_framed(stream: &mut TcpStream) -> Option<Message> {
    let read = async {
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.ok()?;
        let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut body).await.ok()?;
        Some(Message::from_vec(&body).expect("decodable DNS response"))
    };
    timeout(DEADLINE, read)
        .await
        .expect("an answer or a close within the deadline")
}

/// Waits up to `limit` for the server to close `stream`; whether it did.
/// Anything the server sends first is skipped.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buffer = [0u8; 512];
    let closed = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    timeout(limit, closed).await.is_ok()
}

/// Asks `qname` A over `stream` and returns the answer, `None` if closed.
async fn ask(stream: &mut TcpStream, id: u16, qname: &str) -> Option<Message> {
    let query = framed(&query_bytes(id, qname, RecordType::A));
    stream.write_all(&query).await.ok()?;
    let answer = read_framed(stream).await?;
    assert_eq!(answer.metadata.id, id, "{answer}");
    Some(answer)
}

/// UDP and TCP both answer `web` with its one address.
async fn assert_still_serving(server: &Server) {
    let udp = server.query("web.service.local", RecordType::A).await;
    assert_eq!(udp.rcode(), ResponseCode::NoError, "UDP: {udp}");
    assert_eq!(udp.answers().len(), 1, "UDP: {udp}");
    let tcp = server
        .query_tcp("web.service.local", RecordType::A, None)
        .await;
    assert_eq!(tcp.rcode(), ResponseCode::NoError, "TCP: {tcp}");
    assert_eq!(tcp.answers().len(), 1, "TCP: {tcp}");
}

#[tokio::test]
async fn pipelined_queries_on_one_connection_all_get_answers_with_matching_ids() {
    let server = start(|_| {}).await;
    let mut stream = connect(server.dns_addr).await;
    // Sixty queries of three kinds and one damaged message, in one stream
    // written in 100-octet pieces, so lengths and bodies straddle segments.
    let mut expected = BTreeMap::new();
    let mut bytes = Vec::new();
    for id in 1..=60u16 {
        let (qname, rcode) = match id % 3 {
            0 => ("web.service.local", ResponseCode::NoError),
            1 => ("big.service.local", ResponseCode::NoError),
            _ => ("nothing.service.local", ResponseCode::NXDomain),
        };
        bytes.extend(framed(&query_bytes(id, qname, RecordType::A)));
        expected.insert(id, rcode);
        if id == 30 {
            // A header that promises a question, then junk.
            let mut damaged = query_bytes(999, "web.service.local", RecordType::A);
            damaged.truncate(12);
            damaged.extend_from_slice(&[0xff; 7]);
            bytes.extend(framed(&damaged));
            expected.insert(999, ResponseCode::FormErr);
        }
    }
    for piece in bytes.chunks(100) {
        stream.write_all(piece).await.expect("send queries");
    }
    let mut answered = BTreeMap::new();
    for _ in 0..expected.len() {
        let answer = read_framed(&mut stream)
            .await
            .expect("an answer for every query before the connection closes");
        assert_eq!(answer.metadata.message_type, MessageType::Response);
        assert!(
            !answer.metadata.truncation,
            "TCP is never truncated: {answer}"
        );
        if answer.metadata.id % 3 == 1 && answer.metadata.id != 999 {
            assert_eq!(answer.answers.len(), 40, "all of big over TCP: {answer}");
        }
        let previous = answered.insert(answer.metadata.id, answer.metadata.response_code);
        assert!(previous.is_none(), "two answers for one ID: {answer}");
    }
    assert_eq!(answered, expected);
    server.stop().await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let server = start(|config| config.dns.tcp_idle_timeout = 1).await;
    let mut stream = connect(server.dns_addr).await;
    assert!(ask(&mut stream, 1, "web.service.local").await.is_some());
    // hickory's loop waited 10 s here; 1 s is configured.
    assert!(
        closed_within(&mut stream, Duration::from_secs(5)).await,
        "an idle connection stayed open past 5 times its idle timeout"
    );
    assert_still_serving(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn a_client_asking_every_half_second_is_closed_at_its_maximum_age() {
    let server = start(|config| {
        config.dns.tcp_idle_timeout = 1;
        config.dns.tcp_max_connection_age = 2;
    })
    .await;
    let mut stream = connect(server.dns_addr).await;
    let opened = Instant::now();
    let mut answers = 0u16;
    // Never idle for a whole second, so only the age can close it.
    let closed = loop {
        if opened.elapsed() > DEADLINE {
            break false;
        }
        match ask(&mut stream, answers + 1, "web.service.local").await {
            Some(_) => answers += 1,
            None => break true,
        }
        sleep(Duration::from_millis(500)).await;
    };
    assert!(
        closed,
        "a trickling client kept its connection for {DEADLINE:?}"
    );
    assert!(answers >= 2, "only {answers} answers before the close");
    assert_still_serving(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn at_the_connection_cap_the_longest_idle_make_room_for_new_clients() {
    const HELD: usize = 100;
    const CAP: usize = 20;
    let server = start(|config| {
        config.dns.tcp_max_connections = CAP;
        // Long enough that only the cap closes anything during the test.
        config.dns.tcp_idle_timeout = 600;
    })
    .await;
    let mut held = Vec::with_capacity(HELD);
    for _ in 0..HELD {
        held.push(connect(server.dns_addr).await);
    }
    // A new client is served, over TCP and over UDP.
    assert_still_serving(&server).await;
    // Connections are accepted in the order they connected, and each one
    // past the cap closed the longest-idle: of the first HELD - 1, at most
    // CAP - 1 are still open. Watch each for its close.
    let mut newest = held.pop().expect("held connections");
    let (closes, mut closed) = tokio::sync::mpsc::unbounded_channel();
    let mut watchers = Vec::new();
    for mut stream in held {
        let closes = closes.clone();
        watchers.push(tokio::spawn(async move {
            if closed_within(&mut stream, DEADLINE).await {
                let _ = closes.send(());
            }
        }));
    }
    drop(closes);
    // Evictions happen as connections are accepted, all before the query
    // above was; 5 s is ample, and short of any idle timeout roster ever
    // had (10 s, and 600 here), so only the cap can explain the closes.
    let evictions_by = Instant::now() + Duration::from_secs(5);
    let mut closed_count = 0;
    while closed_count < HELD - CAP {
        match tokio::time::timeout_at(evictions_by, closed.recv()).await {
            Ok(Some(())) => closed_count += 1,
            _ => panic!("only {closed_count} of {HELD} idle connections closed at a cap of {CAP}"),
        }
    }
    // The newest connection was never the longest idle: it still answers.
    let answer = ask(&mut newest, 7, "web.service.local").await;
    assert!(answer.is_some(), "the newest connection was closed");
    for watcher in watchers {
        watcher.abort();
    }
    server.stop().await;
}

#[tokio::test]
async fn a_length_without_its_body_is_closed_and_garbage_gets_formerr_or_a_close() {
    let server = start(|config| config.dns.tcp_idle_timeout = 1).await;
    // A length promising 40 octets, then 3 of them and nothing more.
    let mut slow = connect(server.dns_addr).await;
    slow.write_all(&[0, 40, 1, 2, 3]).await.expect("send");
    assert!(
        closed_within(&mut slow, Duration::from_secs(5)).await,
        "a body that never came held the connection past 5 idle timeouts"
    );
    // Too short for a header: nothing to answer, so the server closes.
    let mut short = connect(server.dns_addr).await;
    short
        .write_all(&framed(&[0xde, 0xad, 0xbe, 0xef, 0]))
        .await
        .expect("send");
    assert!(
        closed_within(&mut short, DEADLINE).await,
        "a 5-octet message left open"
    );
    // A readable header and junk: FORMERR, and the connection goes on.
    let mut junk = connect(server.dns_addr).await;
    let mut damaged = query_bytes(0x4242, "web.service.local", RecordType::A);
    damaged.truncate(12);
    damaged.extend_from_slice(b"\x07garbage\xc0");
    junk.write_all(&framed(&damaged)).await.expect("send");
    let answer = read_framed(&mut junk).await.expect("FORMERR, not a close");
    assert_eq!(answer.metadata.id, 0x4242, "{answer}");
    assert_eq!(
        answer.metadata.response_code,
        ResponseCode::FormErr,
        "{answer}"
    );
    let answer = ask(&mut junk, 2, "web.service.local").await;
    assert!(answer.is_some(), "the connection answers after a FORMERR");
    assert_still_serving(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn out_of_descriptors_the_server_backs_off_and_still_answers_new_clients() {
    // A roster process limited to 64 descriptors, with a connection cap
    // above that: accepting fails with EMFILE once ~45 connections are open.
    let dir = tempfile::tempdir().expect("temporary directory");
    let (mut child, dns, log) = spawn_with_descriptor_limit(dir.path(), 64).await;
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(connect(dns).await); // The kernel's backlog completes these.
    }
    // The new client is answered: roster frees descriptors by closing the
    // longest-idle connections, instead of spinning while this one hangs.
    let reply = common::query_tcp(dns, "nothing.service.local", RecordType::A, None).await;
    assert_eq!(reply.rcode(), ResponseCode::NXDomain, "{reply}");
    let reply = common::query_udp(dns, "nothing.service.local", RecordType::A, None).await;
    assert_eq!(reply.rcode(), ResponseCode::NXDomain, "{reply}");
    drop(held);
    child.kill().await.expect("stop roster");
    let log = timeout(DEADLINE, log)
        .await
        .expect("log ends")
        .expect("log");
    // roster fits its caps to the limit at start (src/limits.rs), so it
    // usually meets its cap before EMFILE; either way the condition is
    // logged once per few seconds, not once per connection.
    let accept_lines = log.matches("cannot accept DNS TCP connections").count()
        + log.matches("DNS TCP connections at the cap").count();
    assert!(
        (1..=3).contains(&accept_lines),
        "expected the accept failures logged once per few seconds, got {accept_lines} lines:\n{log}"
    );
}

/// Runs `roster serve` in `dir` on ephemeral ports under `ulimit -n limit`,
/// with dns.tcp_max_connections above the limit; returns the process, its
/// DNS address and its whole log (complete when it exits).
async fn spawn_with_descriptor_limit(
    dir: &std::path::Path,
    limit: u32,
) -> (
    tokio::process::Child,
    SocketAddr,
    tokio::task::JoinHandle<String>,
) {
    use tokio::io::AsyncBufReadExt;
    let config = dir.join("config.toml");
    let text = format!(
        "data_dir = \"\"\n[dns]\nlisten = \"127.0.0.1:0\"\nzones = \"{}\"\n\
         tcp_max_connections = 512\ntcp_idle_timeout = 600\n[http]\nlisten = \"127.0.0.1:0\"\n",
        dir.join("zones").display()
    );
    std::fs::write(&config, text).expect("write config");
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n {limit} && exec \"$0\" serve --config \"$1\""
        ))
        .arg(env!("CARGO_BIN_EXE_roster"))
        .arg(&config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn roster");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let mut log = String::new();
    let dns = timeout(DEADLINE, async {
        while let Ok(Some(line)) = lines.next_line().await {
            log.push_str(&line);
            log.push('\n');
            if let Some(rest) = line.split("dns=").nth(1) {
                let address = rest.split_whitespace().next().unwrap_or_default();
                return address
                    .trim_matches(|c: char| !c.is_ascii_digit())
                    .parse::<SocketAddr>()
                    .ok();
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_else(|| panic!("roster did not report its DNS address:\n{log}"));
    let log = tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    (child, dns, log)
}
