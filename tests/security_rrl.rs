//! Response-rate limiting over UDP (`dns.rate_limit`, `dns.rate_limit_slip`)
//! against a real roster on loopback: a burst from one /24 gets about a
//! second's worth of full answers, some truncated ones and silence for the
//! rest, while another /24 and TCP are answered as usual.
//!
//! No timing thresholds: the bound on full answers grows with how long the
//! burst actually took, so a slow machine makes the check looser, never
//! flaky. Every wait has an overall limit.

mod common;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use common::{Server, exchange_tcp, query_message, service_name, start_server_with};
use hickory_proto::{
    op::{Message, MessageType, ResponseCode},
    rr::{
        RecordType,
        rdata::opt::{EdnsCode, EdnsOption},
    },
};
use tokio::{
    net::UdpSocket,
    time::{Instant, timeout},
};

/// Answers per second to one network in these tests (and the burst size).
const RATE: u32 = 20;
/// Queries in a burst.
const BURST: u16 = 200;
/// A burst's answers are collected until none arrives for this long.
const QUIET: Duration = Duration::from_millis(1500);
/// The longest a whole burst may take.
const DEADLINE: Duration = Duration::from_secs(30);
/// EDNS payload the queries offer, so slipped answers must keep an OPT.
const EDNS: u16 = 1232;
/// The COOKIE option's code (RFC 7873).
const COOKIE: u16 = 10;
/// A client cookie: any 8 octets.
const CLIENT_COOKIE: [u8; 8] = [0x24, 0x64, 0xc4, 0xab, 0xcf, 0x10, 0xc9, 0x57];

/// A roster with `web` (one instance) and rate limiting at `rate`/`slip`.
async fn start(rate: u32, slip: u32) -> Server {
    start_configured(rate, slip, |_| {}).await
}

/// [`start`], with the rest of the configuration as `configure` leaves it.
async fn start_configured(
    rate: u32,
    slip: u32,
    configure: impl FnOnce(&mut roster::Config),
) -> Server {
    let server = start_server_with(&[], |config| {
        config.dns.rate_limit = rate;
        config.dns.rate_limit_slip = slip;
        configure(config);
    })
    .await;
    server.add("web", "web-1", "10.0.0.1", 80).await;
    server
}

/// A UDP socket bound to `source` (any 127/8 address is loopback on Linux).
async fn socket_at(source: [u8; 4]) -> UdpSocket {
    let address = SocketAddr::from((IpAddr::V4(Ipv4Addr::from(source)), 0));
    UdpSocket::bind(address)
        .await
        .unwrap_or_else(|e| panic!("bind UDP to {address}: {e}"))
}

/// A query with an OPT record offering [`EDNS`], carrying `cookie` (RFC
/// 7873) as its COOKIE option when given.
fn query(id: u16, qname: &str, cookie: Option<&[u8]>) -> Vec<u8> {
    let mut message = query_message(qname, RecordType::A, Some(EDNS));
    message.metadata.id = id;
    if let Some(cookie) = cookie {
        let edns = message.edns.as_mut().expect("an OPT record");
        edns.options_mut()
            .insert(EdnsOption::Unknown(COOKIE, cookie.to_vec()));
    }
    message.to_vec().expect("encode query")
}

/// What came back for a burst.
#[derive(Debug, Default)]
struct Answers {
    /// Not truncated.
    full: Vec<Message>,
    /// TC set.
    truncated: Vec<Message>,
    /// From the first query sent to the last answer received.
    elapsed: Duration,
}

impl Answers {
    fn count(&self) -> usize {
        self.full.len() + self.truncated.len()
    }

    /// What came back, for an assertion's message.
    fn summary(&self) -> String {
        format!(
            "{} full, {} truncated in {:?}",
            self.full.len(),
            self.truncated.len(),
            self.elapsed
        )
    }
}

/// Sends queries with IDs `ids` for `qname` (with `cookie`, if given) from
/// `socket` as fast as it can, then collects answers until all came or
/// none came for [`QUIET`].
async fn burst(
    socket: &UdpSocket,
    server: SocketAddr,
    qname: &str,
    ids: std::ops::Range<u16>,
    cookie: Option<&[u8]>,
) -> Answers {
    let start = Instant::now();
    let expected = ids.len();
    for id in ids {
        socket
            .send_to(&query(id, qname, cookie), server)
            .await
            .expect("send UDP query");
    }
    let mut answers = Answers::default();
    let mut buffer = vec![0u8; 65_535];
    while answers.count() < expected && start.elapsed() < DEADLINE {
        let Ok(received) = timeout(QUIET, socket.recv_from(&mut buffer)).await else {
            break;
        };
        let (len, from) = received.expect("receive UDP");
        assert_eq!(from, server);
        let message = Message::from_vec(&buffer[..len]).expect("the answer decodes");
        assert_eq!(message.metadata.message_type, MessageType::Response);
        answers.elapsed = start.elapsed();
        if message.metadata.truncation {
            answers.truncated.push(message);
        } else {
            answers.full.push(message);
        }
    }
    answers
}

/// The most full answers a limit of [`RATE`] per second (bursts of
/// [`RATE`]) allows over `elapsed`, plus one for rounding.
fn allowed(elapsed: Duration) -> usize {
    let rate = RATE as usize;
    rate + (elapsed.as_secs_f64() * f64::from(RATE)).ceil() as usize + 1
}

#[tokio::test]
async fn a_burst_from_one_network_is_limited_and_others_are_not() {
    let server = start(RATE, 2).await;
    let qname = service_name("web");
    let limited = socket_at([127, 0, 0, 1]).await;
    let answers = burst(&limited, server.dns_addr, &qname, 0..BURST, None).await;

    let (full, truncated) = (answers.full.len(), answers.truncated.len());
    let summary = format!(
        "{full} full, {truncated} truncated in {:?}",
        answers.elapsed
    );
    assert!(
        full >= 1,
        "the first answers are within the limit: {summary}"
    );
    assert!(full <= allowed(answers.elapsed), "{summary}");
    assert!(full < usize::from(BURST) / 2, "{summary}");
    assert!(
        truncated > 0,
        "every second limited answer slips: {summary}"
    );
    assert!(
        answers.count() < usize::from(BURST),
        "the rest are dropped: {summary}"
    );
    for answer in &answers.full {
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
        assert_eq!(answer.answers.len(), 1, "{answer}");
    }
    for answer in &answers.truncated {
        assert!(answer.metadata.authoritative, "{answer}");
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
        assert_eq!(answer.queries.len(), 1, "the question is kept: {answer}");
        assert!(answer.answers.is_empty(), "{answer}");
        assert!(answer.authorities.is_empty(), "{answer}");
        assert!(answer.additionals.is_empty(), "{answer}");
        let opt = answer.edns.as_ref().expect("the OPT record is kept");
        assert_eq!(opt.max_payload(), EDNS);
    }

    // Another /24 has its own budget: each of a few queries, one at a time,
    // gets its full answer.
    let other = socket_at([127, 0, 1, 1]).await;
    for id in 0..5 {
        let answers = burst(&other, server.dns_addr, &qname, id..id + 1, None).await;
        assert_eq!(answers.full.len(), 1, "query {id} from 127.0.1.1");
        assert_eq!(answers.full[0].answers.len(), 1);
    }

    // TCP from the limited network is never limited.
    for _ in 0..5 {
        let reply = exchange_tcp(
            server.dns_addr,
            &query_message(&qname, RecordType::A, Some(EDNS)),
        )
        .await;
        assert!(!reply.truncated(), "{reply}");
        assert_eq!(reply.answers().len(), 1, "{reply}");
    }

    // The metrics count what was dropped and slipped (at least what
    // arrived: loopback may still drop a datagram under a burst).
    let metrics = common::metrics(&server).await;
    let slipped = common::counter(&metrics, "dns_rrl_slipped");
    assert!(
        slipped >= answers.truncated.len() as u64 && slipped > 0,
        "{metrics}"
    );
    assert!(
        common::counter(&metrics, "dns_rrl_dropped") > 0,
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn general_path_answers_are_limited_too() {
    // NXDOMAIN answers come from hickory's general path, not the fast one.
    let server = start(RATE, 1).await;
    let qname = service_name("nope");
    let socket = socket_at([127, 0, 2, 1]).await;
    let answers = burst(&socket, server.dns_addr, &qname, 0..BURST, None).await;
    let (full, truncated) = (answers.full.len(), answers.truncated.len());
    let summary = format!(
        "{full} full, {truncated} truncated in {:?}",
        answers.elapsed
    );
    assert!(full >= 1, "{summary}");
    assert!(full <= allowed(answers.elapsed), "{summary}");
    assert!(
        truncated > 0,
        "slip 1: every limited answer slips: {summary}"
    );
    for answer in &answers.full {
        assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);
        assert!(!answer.authorities.is_empty(), "the SOA: {answer}");
    }
    for answer in &answers.truncated {
        assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);
        assert!(answer.answers.is_empty(), "{answer}");
        assert!(answer.authorities.is_empty(), "{answer}");
        assert!(answer.edns.is_some(), "the OPT record is kept: {answer}");
    }
    server.stop().await;
}

#[tokio::test]
async fn with_rate_limit_off_every_query_is_answered() {
    let server = start(0, 2).await;
    let qname = service_name("web");
    let socket = socket_at([127, 0, 0, 1]).await;
    // In waves, so that no datagram is lost to a full socket buffer on a
    // slow machine: the point is that roster drops none.
    let wave = 50;
    for start in (0..BURST).step_by(wave) {
        let ids = start..(start + wave as u16).min(BURST);
        let expected = ids.len();
        let answers = burst(&socket, server.dns_addr, &qname, ids, None).await;
        assert_eq!(answers.full.len(), expected, "{answers:?}");
        assert!(answers.truncated.is_empty(), "{answers:?}");
    }
    server.stop().await;
}

/// The COOKIE option's data in `answer`.
fn cookie_of(answer: &Message) -> Vec<u8> {
    let edns = answer.edns.as_ref().expect("an OPT record");
    match edns.option(EdnsCode::Cookie) {
        Some(EdnsOption::Unknown(_, data)) => data.clone(),
        other => panic!("no COOKIE option but {other:?}: {answer}"),
    }
}

#[tokio::test]
async fn a_client_that_sends_its_server_cookie_back_is_not_limited() {
    let server = start(RATE, 2).await;
    let qname = service_name("web");
    let socket = socket_at([127, 0, 3, 1]).await;
    // One query with a client cookie learns a server cookie (RFC 7873).
    let first = burst(&socket, server.dns_addr, &qname, 0..1, Some(&CLIENT_COOKIE)).await;
    assert_eq!(first.full.len(), 1, "{first:?}");
    let cookie = cookie_of(&first.full[0]);
    assert_eq!(cookie.len(), 24, "{cookie:02x?}");
    assert_eq!(cookie[..8], CLIENT_COOKIE);

    // Sent back, it proves the address is the client's: a burst ten times
    // the limit is answered in full.
    assert_not_limited(&socket, &server, &qname, &cookie).await;

    // The limiter was on all along: the same burst with the client cookie
    // alone is limited ...
    let client_only = burst(
        &socket,
        server.dns_addr,
        &qname,
        BURST..2 * BURST,
        Some(&CLIENT_COOKIE),
    )
    .await;
    let summary = client_only.summary();
    assert!(
        client_only.full.len() <= allowed(client_only.elapsed),
        "{summary}"
    );
    assert!(!client_only.truncated.is_empty(), "{summary}");

    // ... and so is a forger who sends that server cookie from another
    // address: it was made for 127.0.3.1.
    let forger = socket_at([127, 0, 4, 1]).await;
    let forged = burst(&forger, server.dns_addr, &qname, 0..BURST, Some(&cookie)).await;
    let summary = forged.summary();
    assert!(forged.full.len() <= allowed(forged.elapsed), "{summary}");
    assert!(forged.count() < usize::from(BURST), "{summary}");

    // The cookies counted are those of the answers sent, full or slipped:
    // the dropped queries' are not.
    let counted = |result: &str| {
        let sample = format!("roster_dns_cookies_total{{result=\"{result}\"}}");
        let server = &server;
        async move { common::prometheus_sample(server, &sample).await as usize }
    };
    assert_eq!(counted("valid").await, usize::from(BURST) - 1);
    assert_eq!(counted("client_only").await, 1 + client_only.count());
    assert_eq!(counted("invalid").await, forged.count());
    server.stop().await;
}

/// Answers each wave of a burst of [`BURST`] queries with `cookie` from
/// `socket` in full: none was limited.
async fn assert_not_limited(socket: &UdpSocket, server: &Server, qname: &str, cookie: &[u8]) {
    // In waves, so that loopback's socket buffers drop nothing on a slow
    // machine.
    let wave = 50;
    for start in (1..BURST).step_by(wave) {
        let ids = start..(start + wave as u16).min(BURST);
        let expected = ids.len();
        let answers = burst(socket, server.dns_addr, qname, ids, Some(cookie)).await;
        assert_eq!(answers.full.len(), expected, "{}", answers.summary());
        for answer in &answers.full {
            assert_eq!(answer.answers.len(), 1, "{answer}");
        }
    }
}

/// RFC 9018 section 4.4: during a secret rollover, a cookie made with the
/// secret being retired (`dns.cookie_secrets_accepted`) still proves the
/// client's address to a node that makes cookies with the new one; without
/// it listed, the same cookie is limited like any other.
#[tokio::test]
async fn during_a_cookie_secret_rollover_the_old_secrets_cookies_are_not_limited() {
    const OLD: &str = "dd3bdf9344b678b185a6f5cb60fca715";
    const NEW: &str = "445536bcd2513298075a5d379663c962";
    let secret = |text: &str| roster::config::Secret(text.to_owned());
    let old = start_configured(0, 0, |config| config.dns.cookie_secret = secret(OLD)).await;
    let qname = service_name("web");
    let socket = socket_at([127, 0, 3, 2]).await;
    let first = burst(&socket, old.dns_addr, &qname, 0..1, Some(&CLIENT_COOKIE)).await;
    assert_eq!(first.full.len(), 1, "{first:?}");
    let cookie = cookie_of(&first.full[0]);
    old.stop().await;

    let rolling = start_configured(RATE, 2, |config| {
        config.dns.cookie_secret = secret(NEW);
        config.dns.cookie_secrets_accepted = vec![secret(OLD)];
    })
    .await;
    assert_not_limited(&socket, &rolling, &qname, &cookie).await;
    rolling.stop().await;

    let rolled = start_configured(RATE, 2, |config| config.dns.cookie_secret = secret(NEW)).await;
    let answers = burst(&socket, rolled.dns_addr, &qname, 0..BURST, Some(&cookie)).await;
    let summary = answers.summary();
    assert!(answers.full.len() <= allowed(answers.elapsed), "{summary}");
    assert!(!answers.truncated.is_empty(), "{summary}");
    rolled.stop().await;
}
