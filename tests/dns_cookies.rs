//! DNS cookies (RFC 7873, server cookies as RFC 9018 makes them) against a
//! real roster on loopback: a client cookie earns a server cookie over UDP
//! and TCP, roster keeps a valid one and replaces another address's,
//! malformed ones get FORMERR, nodes sharing `dns.cookie_secret` take each
//! other's, SIGHUP rolls the secret over without a restart, `dns.cookies =
//! false` ignores the option, and dig, an outside client, calls roster's
//! cookies good. That a valid cookie exempts a
//! client from rate limiting is in `security_rrl`.

mod common;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use common::{
    Reply, Server, exchange_tcp, exchange_udp, query_message, service_name, start_server_with,
};
use hickory_proto::{
    op::{Message, ResponseCode},
    rr::{
        RecordType,
        rdata::opt::{EdnsCode, EdnsOption},
    },
};
use roster::config::Secret;
use tokio::{net::UdpSocket, time::timeout};

/// The COOKIE option's code.
const COOKIE: u16 = 10;
const CLIENT_COOKIE: [u8; 8] = [0xfc, 0x93, 0xfc, 0x62, 0x80, 0x7d, 0xdb, 0x86];
/// How long one UDP attempt waits for its answer (a lost datagram is sent
/// again, five times in all).
const ATTEMPT: Duration = Duration::from_secs(2);

/// A roster with `web` (one instance), after `configure`.
async fn start(configure: impl FnOnce(&mut roster::Config)) -> Server {
    let server = start_server_with(&[], configure).await;
    server.add("web", "web-1", "10.0.0.1", 80).await;
    server
}

/// An A query for `web` with `cookie` as its COOKIE option.
fn query(cookie: &[u8]) -> Message {
    let mut message = query_message(&service_name("web"), RecordType::A, Some(1232));
    let edns = message.edns.as_mut().expect("an OPT record");
    edns.options_mut()
        .insert(EdnsOption::Unknown(COOKIE, cookie.to_vec()));
    message
}

/// The COOKIE option's data in `reply`, if it has one.
fn cookie_of(reply: &Reply) -> Option<Vec<u8>> {
    match reply.message.edns.as_ref()?.option(EdnsCode::Cookie)? {
        EdnsOption::Unknown(_, data) => Some(data.clone()),
        other => panic!("COOKIE read as {other:?}"),
    }
}

/// Asserts that `reply` answers `web` and carries a server cookie roster
/// made just now for [`CLIENT_COOKIE`]; returns the whole cookie.
fn assert_answered_with_a_cookie(reply: &Reply) -> Vec<u8> {
    assert_eq!(reply.rcode(), ResponseCode::NoError, "{reply}");
    assert_eq!(reply.answers().len(), 1, "{reply}");
    let cookie = cookie_of(reply).unwrap_or_else(|| panic!("no COOKIE in {reply}"));
    assert_eq!(
        cookie.len(),
        24,
        "client cookie and a 16-octet server cookie"
    );
    assert_eq!(cookie[..8], CLIENT_COOKIE, "the client cookie comes back");
    assert_eq!(
        cookie[8..12],
        [1, 0, 0, 0],
        "RFC 9018: version 1, reserved 0"
    );
    let stamped = u32::from_be_bytes(cookie[12..16].try_into().expect("4 octets"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    assert!(
        (now - 60..=now + 60).contains(&u64::from(stamped)),
        "stamped {stamped}, now {now}"
    );
    cookie
}

/// Sends `query` over UDP from `source` (any 127/8 address) and returns
/// the answer.
async fn exchange_from(source: Ipv4Addr, server: SocketAddr, query: &Message) -> Reply {
    let socket = UdpSocket::bind(SocketAddr::from((IpAddr::V4(source), 0)))
        .await
        .expect("bind UDP");
    let bytes = query.to_vec().expect("encode");
    let mut buffer = vec![0u8; 65_535];
    for _ in 0..5 {
        socket.send_to(&bytes, server).await.expect("send");
        if let Ok(received) = timeout(ATTEMPT, socket.recv_from(&mut buffer)).await {
            let (len, _) = received.expect("receive");
            let message = Message::from_vec(&buffer[..len]).expect("the answer decodes");
            return Reply {
                message,
                wire_len: len,
            };
        }
    }
    panic!("no answer from {server} to {source}");
}

#[tokio::test]
async fn a_client_cookie_earns_a_server_cookie_that_is_kept_while_valid() {
    let server = start(|_| {}).await;
    // UDP: the client's first query has its client cookie alone.
    let first = exchange_udp(server.dns_addr, &query(&CLIENT_COOKIE)).await;
    let cookie = assert_answered_with_a_cookie(&first);
    // Sent back, a valid and young server cookie is kept, over UDP and TCP.
    let again = exchange_udp(server.dns_addr, &query(&cookie)).await;
    assert_eq!(assert_answered_with_a_cookie(&again), cookie);
    let tcp = exchange_tcp(server.dns_addr, &query(&cookie)).await;
    assert_eq!(assert_answered_with_a_cookie(&tcp), cookie);
    // TCP with a client cookie alone earns one too.
    let tcp = exchange_tcp(server.dns_addr, &query(&CLIENT_COOKIE)).await;
    assert_answered_with_a_cookie(&tcp);
    // Every question form goes the general path with a cookie: SRV too.
    let mut srv = query(&cookie);
    srv.queries[0].set_query_type(RecordType::SRV);
    let reply = exchange_udp(server.dns_addr, &srv).await;
    assert_eq!(reply.answers().len(), 1, "{reply}");
    assert_eq!(cookie_of(&reply), Some(cookie.clone()));
    // Without a COOKIE option, no cookie comes back.
    let plain = server.query(&service_name("web"), RecordType::A).await;
    assert_eq!(cookie_of(&plain), None, "{plain}");
    server.stop().await;
}

#[tokio::test]
async fn a_cookie_made_for_another_address_or_server_is_replaced() {
    let server = start(|_| {}).await;
    let from_one = exchange_from(
        Ipv4Addr::new(127, 0, 0, 1),
        server.dns_addr,
        &query(&CLIENT_COOKIE),
    )
    .await;
    let cookie = assert_answered_with_a_cookie(&from_one);
    // From 127.0.0.2 the same cookie is not roster's: the query is answered
    // all the same (RFC 7873 section 5.2.4), with a cookie for that address.
    let from_two = exchange_from(
        Ipv4Addr::new(127, 0, 0, 2),
        server.dns_addr,
        &query(&cookie),
    )
    .await;
    let fresh = assert_answered_with_a_cookie(&from_two);
    assert_ne!(fresh, cookie);
    // Another server cookie of a length RFC 7873 allows, not roster's.
    let mut foreign = CLIENT_COOKIE.to_vec();
    foreign.extend_from_slice(&[0xab; 32]);
    let reply = exchange_udp(server.dns_addr, &query(&foreign)).await;
    assert_answered_with_a_cookie(&reply);

    // A second roster with its own random secret does not take the first's.
    let other = start(|_| {}).await;
    let reply = exchange_udp(other.dns_addr, &query(&cookie)).await;
    assert_ne!(assert_answered_with_a_cookie(&reply), cookie);
    other.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn nodes_sharing_a_secret_take_each_others_cookies() {
    const SECRET: &str = "e5e973e5a6b2a43f48e7dc849e37bfcf";
    let first = start(|config| config.dns.cookie_secret = Secret(SECRET.to_owned())).await;
    let second = start(|config| config.dns.cookie_secret = Secret(SECRET.to_owned())).await;
    let cookie =
        assert_answered_with_a_cookie(&exchange_udp(first.dns_addr, &query(&CLIENT_COOKIE)).await);
    // The second node keeps the first's cookie: it is valid there too.
    let reply = exchange_udp(second.dns_addr, &query(&cookie)).await;
    assert_eq!(assert_answered_with_a_cookie(&reply), cookie);
    first.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn malformed_cookies_get_formerr() {
    let server = start(|_| {}).await;
    // Shorter than a client cookie, a server cookie under 8 octets, over 40.
    for len in [0, 7, 9, 15, 41] {
        let cookie = vec![7u8; len];
        for reply in [
            exchange_udp(server.dns_addr, &query(&cookie)).await,
            exchange_tcp(server.dns_addr, &query(&cookie)).await,
        ] {
            assert_eq!(
                reply.rcode(),
                ResponseCode::FormErr,
                "{len} octets: {reply}"
            );
            assert!(reply.answers().is_empty(), "{reply}");
            assert_eq!(cookie_of(&reply), None, "{reply}");
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn with_cookies_off_the_option_is_ignored() {
    let server = start(|config| config.dns.cookies = false).await;
    for cookie in [CLIENT_COOKIE.to_vec(), vec![7u8; 9]] {
        let reply = exchange_udp(server.dns_addr, &query(&cookie)).await;
        assert_eq!(reply.rcode(), ResponseCode::NoError, "{reply}");
        assert_eq!(reply.answers().len(), 1, "{reply}");
        assert_eq!(cookie_of(&reply), None, "{reply}");
    }
    server.stop().await;
}

#[tokio::test]
async fn dig_calls_the_cookies_good() {
    let server = start(|_| {}).await;
    let qname = service_name("web");
    // dig sends a client cookie of its own and checks what comes back.
    let output = common::dig(server.dns_addr, &["+cookie", "+norecurse", &qname, "A"]).await;
    let line = output
        .lines()
        .find(|line| line.starts_with("; COOKIE: "))
        .unwrap_or_else(|| panic!("no COOKIE line:\n{output}"));
    assert!(line.ends_with("(good)"), "{line}");
    assert!(output.contains("10.0.0.1"), "{output}");
    // Sent back as dig would on its next query: still good, and kept.
    let cookie = line
        .trim_start_matches("; COOKIE: ")
        .split_whitespace()
        .next()
        .expect("the cookie's hex");
    let output = common::dig(
        server.dns_addr,
        &[&format!("+cookie={cookie}"), "+norecurse", &qname, "A"],
    )
    .await;
    let line = output
        .lines()
        .find(|line| line.starts_with("; COOKIE: "))
        .unwrap_or_else(|| panic!("no COOKIE line:\n{output}"));
    assert!(line.ends_with("(good)"), "{line}");
    assert!(line.contains(cookie), "a young cookie is kept: {line}");
    server.stop().await;
}

/// `roster_dns_cookies_total{result="<result>"}` on `server`'s `/metrics`.
async fn cookies_counted(server: &Server, result: &str) -> f64 {
    let sample = format!("roster_dns_cookies_total{{result=\"{result}\"}}");
    common::prometheus_sample(server, &sample).await
}

/// What operators watch, during a secret rollover above all: how many
/// queries brought which kind of cookie, counted on the fast path (UDP
/// and TCP) and on the general path alike.
#[tokio::test]
async fn metrics_count_cookies_by_kind_on_every_path() {
    const OLD: &str = "dd3bdf9344b678b185a6f5cb60fca715";
    const NEW: &str = "445536bcd2513298075a5d379663c962";
    let old = start(|config| config.dns.cookie_secret = Secret(OLD.to_owned())).await;
    let old_cookie =
        assert_answered_with_a_cookie(&exchange_udp(old.dns_addr, &query(&CLIENT_COOKIE)).await);
    old.stop().await;
    let foreign = start(|_| {}).await;
    let foreign_cookie = assert_answered_with_a_cookie(
        &exchange_udp(foreign.dns_addr, &query(&CLIENT_COOKIE)).await,
    );
    foreign.stop().await;

    let server = start(|config| {
        config.dns.cookie_secret = Secret(NEW.to_owned());
        config.dns.cookie_secrets_accepted = vec![Secret(OLD.to_owned())];
    })
    .await;
    let dns = server.dns_addr;
    // The fast path, over UDP: a client cookie alone, then sent back.
    let cookie = assert_answered_with_a_cookie(&exchange_udp(dns, &query(&CLIENT_COOKIE)).await);
    assert_answered_with_a_cookie(&exchange_udp(dns, &query(&cookie)).await);
    // ... over TCP.
    assert_answered_with_a_cookie(&exchange_tcp(dns, &query(&cookie)).await);
    // ... with the accepted secret's cookie, and another server's.
    assert_answered_with_a_cookie(&exchange_udp(dns, &query(&old_cookie)).await);
    assert_answered_with_a_cookie(&exchange_udp(dns, &query(&foreign_cookie)).await);
    // The general path: a question the fast path leaves to it, and a
    // malformed option.
    let mut txt = query(&cookie);
    txt.queries[0].set_query_type(RecordType::TXT);
    assert_eq!(
        cookie_of(&exchange_udp(dns, &txt).await),
        Some(cookie.clone())
    );
    let malformed = exchange_udp(dns, &query(&cookie[..12])).await;
    assert_eq!(malformed.rcode(), ResponseCode::FormErr, "{malformed}");

    for (result, count) in [
        ("client_only", 1.0),
        ("valid", 3.0),
        ("valid_accepted_secret", 1.0),
        ("invalid", 1.0),
        ("malformed", 1.0),
    ] {
        assert_eq!(cookies_counted(&server, result).await, count, "{result}");
    }
    server.stop().await;
}

/// RFC 9018 section 4.4's rollover on a running roster, one SIGHUP a step,
/// over a real process and its config file: the new secret made current
/// with the old one accepted, then the old one retired. A secret that does
/// not load changes nothing.
#[tokio::test]
async fn sighup_rolls_the_cookie_secret_over_without_a_restart() {
    const OLD: &str = "dd3bdf9344b678b185a6f5cb60fca715";
    const NEW: &str = "445536bcd2513298075a5d379663c962";
    let site = common::process::Site::new();
    let file = site.root.path().join("config.toml");
    let write = |secret: &str, accepted: &[&str]| {
        let accepted: Vec<String> = accepted.iter().map(|s| format!("\"{s}\"")).collect();
        let text = format!(
            "[dns]\ncookie_secret = \"{secret}\"\ncookie_secrets_accepted = [{}]\n",
            accepted.join(", ")
        );
        std::fs::write(&file, text).expect("write config.toml");
    };
    write(OLD, &[]);
    let mut roster = site.start().await;
    let registered = common::http_client()
        .put(roster.url("/v1/services/web/instances/web-1"))
        .json(&serde_json::json!({"address": "127.0.0.1", "port": 80}))
        .send()
        .await
        .expect("register web-1");
    assert!(registered.status().is_success(), "{registered:?}");
    let dns = roster.dns;
    let metrics = roster.url("/metrics");
    let reloads = |result: &'static str| {
        let metrics = metrics.clone();
        async move {
            let sample =
                format!("roster_config_reloads_total{{part=\"dns_cookies\",result=\"{result}\"}}");
            common::prometheus_sample_at(&metrics, &sample).await
        }
    };
    let seen = |result: &'static str| {
        let metrics = metrics.clone();
        async move {
            let sample = format!("roster_dns_cookies_total{{result=\"{result}\"}}");
            common::prometheus_sample_at(&metrics, &sample).await
        }
    };
    let old_cookie =
        assert_answered_with_a_cookie(&exchange_udp(dns, &query(&CLIENT_COOKIE)).await);
    // Valid, so kept.
    assert_eq!(
        assert_answered_with_a_cookie(&exchange_udp(dns, &query(&old_cookie)).await),
        old_cookie
    );

    // Step 1: the new secret makes cookies, the old one is still taken.
    write(NEW, &[OLD]);
    roster.signal("HUP");
    common::eventually("the first step applied", Duration::from_secs(20), || {
        let reloads = &reloads;
        async move { reloads("applied").await == 1.0 }
    })
    .await;
    // Only the secrets changed: nothing is said to take a restart, though
    // the file alone lacks what the command line set (--dns, --http...).
    assert!(
        !roster.stderr().contains("settings that take a restart"),
        "{}",
        roster.stderr()
    );
    let accepted_before = seen("valid_accepted_secret").await;
    let new_cookie = assert_answered_with_a_cookie(&exchange_udp(dns, &query(&old_cookie)).await);
    assert_ne!(
        new_cookie, old_cookie,
        "an accepted secret's cookie is replaced"
    );
    // Counted once the UDP thread has tallied the batch: a moment later.
    common::eventually(
        "the accepted secret's cookie counted",
        Duration::from_secs(20),
        || {
            let seen = &seen;
            async move { seen("valid_accepted_secret").await == accepted_before + 1.0 }
        },
    )
    .await;
    // The new cookie is kept, on the fast path and the general one (TCP).
    assert_eq!(
        assert_answered_with_a_cookie(&exchange_udp(dns, &query(&new_cookie)).await),
        new_cookie
    );
    assert_eq!(
        assert_answered_with_a_cookie(&exchange_tcp(dns, &query(&new_cookie)).await),
        new_cookie
    );

    // Step 2: the old secret retired; its cookies are another server's now.
    write(NEW, &[]);
    roster.signal("HUP");
    common::eventually("the second step applied", Duration::from_secs(20), || {
        let reloads = &reloads;
        async move { reloads("applied").await == 2.0 }
    })
    .await;
    let invalid_before = seen("invalid").await;
    assert_ne!(
        assert_answered_with_a_cookie(&exchange_udp(dns, &query(&old_cookie)).await),
        old_cookie
    );
    common::eventually(
        "the retired secret's cookie counted",
        Duration::from_secs(20),
        || {
            let seen = &seen;
            async move { seen("invalid").await == invalid_before + 1.0 }
        },
    )
    .await;
    assert_eq!(
        assert_answered_with_a_cookie(&exchange_udp(dns, &query(&new_cookie)).await),
        new_cookie
    );

    // A secret that is not 32 hex digits: the file does not load, and the
    // new secret stays.
    write("not-a-secret", &[]);
    roster.signal("HUP");
    common::eventually("the bad file logged", Duration::from_secs(20), || async {
        roster.stderr().contains("the configuration does not load")
    })
    .await;
    assert!(
        roster.stderr().contains("dns.cookie_secret"),
        "the log names the key:\n{}",
        roster.stderr()
    );
    let file = |result: &'static str| {
        let metrics = metrics.clone();
        async move {
            let sample =
                format!("roster_config_reloads_total{{part=\"file\",result=\"{result}\"}}");
            common::prometheus_sample_at(&metrics, &sample).await
        }
    };
    assert_eq!(
        file("refused").await,
        1.0,
        "a file that does not load is counted"
    );
    assert_eq!(file("applied").await, 2.0);
    // A setting that takes a restart: said so, and left as it is.
    std::fs::write(
        site.root.path().join("config.toml"),
        format!("[dns]\nttl = 77\ncookie_secret = \"{NEW}\"\n"),
    )
    .expect("write config.toml");
    roster.signal("HUP");
    common::eventually(
        "the restart-only change logged",
        Duration::from_secs(20),
        || async {
            roster
                .stderr()
                .contains("settings that take a restart changed")
        },
    )
    .await;
    let warned = roster
        .stderr()
        .lines()
        .find(|line| line.contains("settings that take a restart"))
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(warned.contains(r#"sections=["dns"]"#), "{warned}");
    let answer = exchange_udp(dns, &query(&new_cookie)).await;
    assert!(answer.answers().iter().all(|r| r.ttl != 77), "{answer}");
    assert_eq!(
        assert_answered_with_a_cookie(&exchange_udp(dns, &query(&new_cookie)).await),
        new_cookie
    );
    assert_eq!(reloads("applied").await, 2.0);
    let log = roster.stderr();
    for secret in [OLD, NEW] {
        assert!(!log.contains(secret), "a secret was logged:\n{log}");
    }
    assert!(roster.stop().await.success());
}

/// An answer trimmed to the client's 512 octets still carries a whole OPT
/// record with the server cookie: its 28 octets are set aside before the
/// records are fitted, so TC is set only when answers were left out, and
/// dig, an outside parser, finds nothing malformed. (The COOKIE once went
/// uncounted: with 9 SRV answers that fit, the answer came back with TC
/// and a clipped OPT record that ARCOUNT did not count.)
#[tokio::test]
async fn a_trimmed_answer_keeps_its_cookie_whole() {
    let server = start_server_with(&[], |_| {}).await;
    for i in 1..=11 {
        let address = format!("127.0.3.{i}");
        server.add("s", &format!("s-{i}"), &address, 80).await;
        if i == 9 || i == 11 {
            let args = ["+cookie", "+bufsize=512", "+ignore", "+norecurse"];
            let mut args = args.to_vec();
            let qname = service_name("s");
            args.extend([qname.as_str(), "SRV"]);
            let output = common::dig(server.dns_addr, &args).await;
            let case = format!("{i} instances:\n{output}");
            assert!(!output.contains("extra bytes"), "{case}");
            assert!(!output.contains("malformed"), "{case}");
            let cookie = output
                .lines()
                .find(|line| line.starts_with("; COOKIE: "))
                .unwrap_or_else(|| panic!("no COOKIE: {case}"));
            assert!(cookie.ends_with("(good)"), "{case}");
            let flags = output
                .lines()
                .find(|line| line.starts_with(";; flags: "))
                .unwrap_or_else(|| panic!("no flags: {case}"));
            let answers: usize = flags
                .split("ANSWER: ")
                .nth(1)
                .and_then(|rest| rest.split(',').next())
                .and_then(|count| count.trim().parse().ok())
                .unwrap_or_else(|| panic!("no ANSWER count: {case}"));
            let truncated = flags
                .trim_start_matches(";; flags: ")
                .split(';')
                .next()
                .is_some_and(|bits| bits.split(' ').any(|bit| bit == "tc"));
            assert_eq!(
                truncated,
                answers < i,
                "TC iff answers were left out: {case}"
            );
            if i == 9 {
                assert_eq!(answers, 9, "nine fit in 512 octets: {case}");
            }
        }
    }
    server.stop().await;
}
