//! A small DNS client over UDP and TCP, built on hickory-proto's wire
//! format, so a test sees the response exactly as sent; and `dig`, as an
//! independent client.

use std::time::Duration;
use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
};

use hickory_proto::{
    op::{Edns, Message, MessageType, Query, ResponseCode},
    rr::{
        Name, RData, Record, RecordType,
        rdata::{SOA, SRV},
    },
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
    time::timeout,
};

use super::{
    DEADLINE, Server,
    poll::{LIMIT, eventually},
};

/// The dynamic domain roster serves by default.
pub const DOMAIN: &str = "service.local";

/// How long one UDP attempt waits for its answer before asking again.
const UDP_ATTEMPT: Duration = Duration::from_secs(2);
/// UDP attempts before a query counts as unanswered.
const UDP_ATTEMPTS: usize = 3;

/// The EDNS payload size the plain [`Server::query`] offers: big enough that
/// ordinary answers are never truncated.
pub const DEFAULT_EDNS: u16 = 4096;

/// A fully qualified name from text with or without the final dot.
pub fn name(text: &str) -> Name {
    let text = if text.ends_with('.') {
        text.to_owned()
    } else {
        format!("{text}.")
    };
    Name::from_ascii(&text).unwrap_or_else(|e| panic!("{text:?} is not a DNS name: {e}"))
}

/// A name as lower-case text with the final dot, for comparisons.
pub fn lower(name: &Name) -> String {
    name.to_ascii().to_ascii_lowercase()
}

/// A parsed DNS response and its size on the wire.
pub struct Reply {
    /// The response, decoded.
    pub message: Message,
    /// Its size on the wire, in octets.
    pub wire_len: usize,
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "({} octets)\n{}", self.wire_len, self.message)
    }
}

impl Reply {
    pub fn rcode(&self) -> ResponseCode {
        self.message.metadata.response_code
    }

    /// The TC flag.
    pub fn truncated(&self) -> bool {
        self.message.metadata.truncation
    }

    /// The AA flag.
    pub fn authoritative(&self) -> bool {
        self.message.metadata.authoritative
    }

    pub fn answers(&self) -> &[Record] {
        &self.message.answers
    }

    pub fn authority(&self) -> &[Record] {
        &self.message.authorities
    }

    /// The additional section, without the OPT record (see [`Reply::edns`]).
    pub fn additionals(&self) -> &[Record] {
        &self.message.additionals
    }

    /// The response's OPT record.
    pub fn edns(&self) -> Option<&Edns> {
        self.message.edns.as_ref()
    }

    /// Addresses of the A and AAAA records in the answer section, sorted.
    pub fn ips(&self) -> Vec<IpAddr> {
        let mut ips = ips_of(self.answers());
        ips.sort();
        ips
    }

    /// The sorted addresses of the A and AAAA records in the additional
    /// section (glue, SRV targets).
    pub fn additional_ips(&self) -> Vec<IpAddr> {
        let mut ips = ips_of(self.additionals());
        ips.sort();
        ips
    }

    /// Addresses of the A and AAAA records in the answer section, in order.
    pub fn ips_in_order(&self) -> Vec<IpAddr> {
        ips_of(self.answers())
    }

    /// The SRV records in the answer section.
    pub fn srvs(&self) -> Vec<&SRV> {
        self.answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(srv) => Some(srv),
                _ => None,
            })
            .collect()
    }

    /// Every string of every TXT record in the answer section, sorted.
    pub fn txt_strings(&self) -> Vec<String> {
        let mut strings: Vec<String> = self
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(txt) => Some(txt),
                _ => None,
            })
            .flat_map(|txt| txt.txt_data.iter())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        strings.sort();
        strings
    }

    /// The addresses the additional section gives for `target`, sorted.
    pub fn additional_ips_of(&self, target: &Name) -> Vec<IpAddr> {
        let target = lower(target);
        let records: Vec<Record> = self
            .additionals()
            .iter()
            .filter(|r| lower(&r.name) == target)
            .cloned()
            .collect();
        let mut ips = ips_of(&records);
        ips.sort();
        ips
    }

    /// The one SOA in the authority section, with its record (for the TTL).
    pub fn authority_soa(&self) -> (&Record, &SOA) {
        let soas: Vec<(&Record, &SOA)> = self
            .authority()
            .iter()
            .filter_map(|r| match &r.data {
                RData::SOA(soa) => Some((r, soa)),
                _ => None,
            })
            .collect();
        assert_eq!(soas.len(), 1, "expected one SOA in authority:\n{self}");
        soas[0]
    }

    /// Asserts a negative answer: `rcode`, no answers, AA, and the zone's SOA
    /// (owned by `zone`) in authority with the negative TTL (the lesser of the
    /// SOA record's TTL and its MINIMUM, RFC 2308 section 5).
    pub fn assert_negative(&self, rcode: ResponseCode, zone: &str) {
        assert_eq!(self.rcode(), rcode, "{self}");
        assert!(self.answers().is_empty(), "no answers expected:\n{self}");
        assert!(self.authoritative(), "AA expected:\n{self}");
        let (record, soa) = self.authority_soa();
        assert_eq!(lower(&record.name), lower(&name(zone)), "{self}");
        assert!(
            record.ttl <= soa.minimum,
            "negative TTL {} exceeds the SOA minimum {}:\n{self}",
            record.ttl,
            soa.minimum
        );
    }
}

fn ips_of(records: &[Record]) -> Vec<IpAddr> {
    records
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
            _ => None,
        })
        .collect()
}

/// A query message for `qname`/`qtype`, with an OPT record offering
/// `edns_payload` when given.
pub fn query_message(qname: &str, qtype: RecordType, edns_payload: Option<u16>) -> Message {
    let mut message = Message::query();
    message.metadata.recursion_desired = false;
    message.add_query(Query::query(name(qname), qtype));
    if let Some(payload) = edns_payload {
        let mut edns = Edns::new();
        edns.set_max_payload(payload);
        message.set_edns(edns);
    }
    message
}

fn parse_reply(query: &Message, bytes: &[u8]) -> Reply {
    let message = Message::from_vec(bytes)
        .unwrap_or_else(|e| panic!("undecodable DNS response ({} octets): {e}", bytes.len()));
    assert_eq!(message.metadata.id, query.metadata.id, "response ID");
    assert_eq!(
        message.metadata.message_type,
        MessageType::Response,
        "QR flag"
    );
    assert_eq!(message.queries, query.queries, "question echoed");
    Reply {
        message,
        wire_len: bytes.len(),
    }
}

/// Sends `query` over UDP to `server`, retrying a lost datagram a few times.
pub async fn exchange_udp(server: SocketAddr, query: &Message) -> Reply {
    let bytes = query.to_vec().expect("encode query");
    parse_reply(query, &exchange_udp_bytes(server, &bytes).await)
}

/// Sends the raw message `bytes` over UDP to `server` (retrying a lost
/// datagram a few times) and returns the raw answer: for queries that
/// hickory would not encode.
pub async fn exchange_udp_bytes(server: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind UDP");
    socket.connect(server).await.expect("connect UDP");
    let mut buffer = vec![0u8; 65_535];
    for _ in 0..UDP_ATTEMPTS {
        socket.send(bytes).await.expect("send UDP query");
        // Skip stray datagrams (an answer to an earlier attempt is fine too:
        // same ID, same question).
        let answer = timeout(UDP_ATTEMPT, async {
            loop {
                let len = socket.recv(&mut buffer).await.expect("receive UDP");
                if len >= 2 && buffer[..2] == bytes[..2] {
                    return len;
                }
            }
        })
        .await;
        if let Ok(len) = answer {
            buffer.truncate(len);
            return buffer;
        }
    }
    panic!("no UDP answer from {server} after {UDP_ATTEMPTS} attempts");
}

/// Sends `query` over TCP (RFC 1035 section 4.2.2: a two-octet length, then
/// the message) and reads one response.
pub async fn exchange_tcp(server: SocketAddr, query: &Message) -> Reply {
    let bytes = query.to_vec().expect("encode query");
    parse_reply(query, &exchange_tcp_bytes(server, &bytes).await)
}

/// Sends the raw message `bytes` over TCP and returns the raw response.
pub async fn exchange_tcp_bytes(server: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let exchange = async {
        let mut stream = TcpStream::connect(server).await.expect("connect TCP");
        let len = u16::try_from(bytes.len()).expect("query fits TCP framing");
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(bytes);
        stream.write_all(&framed).await.expect("send TCP query");
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.expect("read TCP length");
        let mut response = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream
            .read_exact(&mut response)
            .await
            .expect("read TCP response");
        response
    };
    timeout(DEADLINE, exchange)
        .await
        .unwrap_or_else(|_| panic!("no TCP answer from {server} within {DEADLINE:?}"))
}

pub async fn query_udp(
    server: SocketAddr,
    qname: &str,
    qtype: RecordType,
    edns_payload: Option<u16>,
) -> Reply {
    exchange_udp(server, &query_message(qname, qtype, edns_payload)).await
}

pub async fn query_tcp(
    server: SocketAddr,
    qname: &str,
    qtype: RecordType,
    edns_payload: Option<u16>,
) -> Reply {
    exchange_tcp(server, &query_message(qname, qtype, edns_payload)).await
}

/// Runs `dig @server -p port ARGS…` and returns its standard output. Fails,
/// rather than skipping, when dig is missing: a skipped interop test would
/// pass without proving anything.
pub async fn dig(server: SocketAddr, args: &[&str]) -> String {
    let run = tokio::process::Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .arg("-p")
        .arg(server.port().to_string())
        .args(["+time=3", "+tries=3"])
        .args(args)
        .kill_on_drop(true)
        .output();
    let output = match timeout(DEADLINE, run).await {
        Err(_) => panic!("dig {args:?} did not finish within {DEADLINE:?}"),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`dig` is not on PATH. These tests use it as an independent DNS client; \
             install it with `apt-get install bind9-dnsutils` (.ci/run does this)."
        ),
        Ok(Err(e)) => panic!("cannot run dig: {e}"),
        Ok(Ok(output)) => output,
    };
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "dig {args:?} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

impl Server {
    /// A query over UDP offering an EDNS payload of [`DEFAULT_EDNS`].
    pub async fn query(&self, qname: &str, qtype: RecordType) -> Reply {
        query_udp(self.dns_addr, qname, qtype, Some(DEFAULT_EDNS)).await
    }

    pub async fn query_udp(&self, qname: &str, qtype: RecordType, edns: Option<u16>) -> Reply {
        query_udp(self.dns_addr, qname, qtype, edns).await
    }

    pub async fn query_tcp(&self, qname: &str, qtype: RecordType, edns: Option<u16>) -> Reply {
        query_tcp(self.dns_addr, qname, qtype, edns).await
    }

    /// The sorted addresses DNS gives for `qname`/`qtype`, asserting NOERROR.
    pub async fn ips(&self, qname: &str, qtype: RecordType) -> Vec<IpAddr> {
        let reply = self.query(qname, qtype).await;
        assert_eq!(reply.rcode(), ResponseCode::NoError, "{qname}: {reply}");
        reply.ips()
    }
}

/// Parses text into an IP address (test data, so a typo panics).
pub fn ip(text: &str) -> IpAddr {
    text.parse()
        .unwrap_or_else(|_| panic!("{text:?} is not an IP"))
}

/// Sorted addresses from text.
pub fn ips(texts: &[&str]) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = texts.iter().map(|t| ip(t)).collect();
    ips.sort();
    ips
}

/// `<service>.service.local`.
pub fn service_name(service: &str) -> String {
    format!("{service}.{DOMAIN}")
}

/// `A <service>.service.local`.
pub async fn lookup(server: &Server, service: &str) -> Reply {
    server.query(&service_name(service), RecordType::A).await
}

/// Waits until DNS answers exactly `expected` (sorted) for the service, with
/// NOERROR; an empty `expected` means NODATA.
pub async fn wait_dns(server: &Server, service: &str, expected: &[IpAddr]) -> Reply {
    wait_dns_within(server, service, expected, LIMIT).await
}

/// [`wait_dns`] with its own time limit, for tests of how soon a change
/// must show.
pub async fn wait_dns_within(
    server: &Server,
    service: &str,
    expected: &[IpAddr],
    limit: Duration,
) -> Reply {
    let mut expected = expected.to_vec();
    expected.sort();
    eventually(
        &format!("DNS for {service} to answer {expected:?} within {limit:?}"),
        limit,
        || async {
            let reply = lookup(server, service).await;
            if reply.rcode() == ResponseCode::NoError && reply.ips() == expected {
                Ok(reply)
            } else {
                Err(format!("{:?} {:?}", reply.rcode(), reply.ips()))
            }
        },
    )
    .await
}

/// Asks `server` over UDP, offering [`DEFAULT_EDNS`], retrying lost
/// datagrams; the whole response.
pub async fn dns_query(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    query_udp(server, name, rtype, Some(DEFAULT_EDNS))
        .await
        .message
}

/// A response reduced to what does not depend on order: the code, and the
/// sorted answer and additional records.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    /// The response code.
    pub code: ResponseCode,
    /// The answer section, one record a line, sorted.
    pub answers: Vec<String>,
    /// The additional section, likewise.
    pub additionals: Vec<String>,
}

/// [`dns_query`], reduced to an [`Answer`].
pub async fn dns_answer(server: SocketAddr, name: &str, rtype: RecordType) -> Answer {
    let response = dns_query(server, name, rtype).await;
    let show = |records: &[hickory_proto::rr::Record]| {
        let mut shown: Vec<String> = records
            .iter()
            .map(|r| format!("{} {} {} {}", r.name, r.ttl, r.record_type(), r.data))
            .collect();
        shown.sort();
        shown
    };
    Answer {
        code: response.metadata.response_code,
        answers: show(&response.answers),
        additionals: show(&response.additionals),
    }
}

/// The SOA serial of the dynamic domain: the registry index, mod 2^32.
pub async fn soa_serial(server: SocketAddr) -> u64 {
    let response = dns_query(server, "service.local.", RecordType::SOA).await;
    response
        .answers
        .iter()
        .find_map(|r| match &r.data {
            RData::SOA(soa) => Some(u64::from(soa.serial)),
            _ => None,
        })
        .expect("an SOA answer at service.local")
}

/// The A or AAAA addresses DNS serves for a service.
pub async fn served_addresses(server: SocketAddr, service: &str) -> BTreeSet<String> {
    let name = format!("{service}.service.local.");
    let mut addresses = BTreeSet::new();
    for rtype in [RecordType::A, RecordType::AAAA] {
        let response = dns_query(server, &name, rtype).await;
        assert!(!response.metadata.truncation, "{name} {rtype} truncated");
        for record in &response.answers {
            match &record.data {
                RData::A(a) => addresses.insert(a.0.to_string()),
                RData::AAAA(aaaa) => addresses.insert(aaaa.0.to_string()),
                other => panic!("{name} {rtype}: unexpected {other}"),
            };
        }
    }
    addresses
}

/// Waits until DNS serves exactly `addresses` (A and AAAA, as text) for
/// `service`: the answer follows the registry's publication, which
/// follows the commit.
pub async fn wait_served(server: &Server, service: &str, addresses: &[&str]) {
    let wanted: BTreeSet<String> = addresses.iter().map(|a| (*a).to_owned()).collect();
    eventually(
        &format!("{service} serving {addresses:?}"),
        LIMIT,
        || async {
            let seen = served_addresses(server.dns_addr, service).await;
            if seen == wanted {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        },
    )
    .await;
}

// ---------------------------------------------------------------------------
// Instance content, as sent and as listed.
