//! The seed corpus: real queries for every name form and common type,
//! with and without EDNS and compression, real names, the JSON bodies
//! roster's tests register, and UPDATE messages of every form. Written by `roster-fuzz seeds`; the output is
//! committed in `fuzz/seeds/`.

use std::path::Path;

use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query},
    rr::{
        DNSClass, Name, RData, Record, RecordType,
        rdata::{A, AAAA, SRV, TXT},
    },
    serialize::binary::{BinEncodable, BinEncoder},
};

const NAMES: &[&str] = &[
    "service.local.",
    "web.service.local.",
    "WeB.Service.Local.",
    "six.service.local.",
    "mixed.service.local.",
    "big.service.local.",
    "nope.service.local.",
    "_web._tcp.service.local.",
    "_web._udp.service.local.",
    "_web._v2.service.local.",
    "_web._primary.service.local.",
    "_tcp.service.local.",
    "web-1.web.service.local.",
    "m-2.mixed.service.local.",
    "ns.service.local.",
    "a.b.c.service.local.",
    "example.org.",
];

const TYPES: &[RecordType] = &[
    RecordType::A,
    RecordType::AAAA,
    RecordType::SRV,
    RecordType::TXT,
    RecordType::SOA,
    RecordType::NS,
    RecordType::ANY,
];

/// Bodies from roster's tests and README, valid and not.
const BODIES: &[&str] = &[
    r#"{"address":"10.0.0.1","port":80}"#,
    r#"{"address":"10.0.0.1","port":80,"tags":["v2"],"weight":3,"priority":2}"#,
    r#"{"address":"10.0.0.2","port":81,"meta":{"k":"v"}}"#,
    r#"{"address":"2001:db8::1","port":90}"#,
    r#"{"address":" 10.0.0.1 ","port":65535}"#,
    r#"{"address":"10.0.0.1","port":8080,"check":{"http":"http://10.0.0.1:8080/health","interval":"10s","timeout":"1s"}}"#,
    r#"{"address":"10.0.0.1","port":8080,"check":{"tcp":"10.0.0.1:8080","interval":"5s"}}"#,
    r#"{"address":"10.0.0.1","port":8080,"check":{"ttl":"30s"}}"#,
    r#"{"address":"10.0.0.1","port":8080,"checks":[{"ttl":"30s","id":"a"},{"ttl":"1m","id":"b","deregister_critical_service_after":"1h"}]}"#,
    r#"{"address":"0.0.0.0","port":80}"#,
    r#"{"address":"::","port":80}"#,
    r#"{"address":"10.0.0.1","port":0}"#,
    r#"{"address":"10.0.0.1","port":65536}"#,
    r#"{"address":"10.0.0.1","port":80,"extra":1}"#,
    r#"[{"address":"10.0.0.1","port":80}]"#,
];

/// Writes the seeds under `dir/<target>/`; returns how many.
pub fn write(dir: &Path) -> std::io::Result<usize> {
    let mut count = 0;
    let mut put = |target: &str, name: String, bytes: &[u8]| -> std::io::Result<()> {
        let dir = dir.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), bytes)?;
        count += 1;
        Ok(())
    };
    for (n, name) in NAMES.iter().enumerate() {
        for qtype in TYPES {
            for (e, edns) in [None, Some(512), Some(1232), Some(4096)].iter().enumerate() {
                // Not every combination: every name and type, EDNS sizes
                // spread over them, to keep the corpus small.
                if e != 0 && (n + usize::from(u16::from(*qtype)) + e) % 3 != 0 {
                    continue;
                }
                let bytes = query(name, *qtype, *edns, false);
                put("dns", format!("{n:02}-{qtype}-{e}"), &bytes)?;
            }
        }
        put("query", format!("{n:02}-text"), name.as_bytes())?;
        let mut wire = Vec::new();
        let mut encoder = BinEncoder::new(&mut wire);
        if Name::from_ascii(name)
            .map_err(std::io::Error::other)?
            .emit(&mut encoder)
            .is_ok()
        {
            put("query", format!("{n:02}-wire"), &wire)?;
        }
    }
    // Two questions, so the second is compressed against the first.
    let bytes = query("web.service.local.", RecordType::A, Some(1232), true);
    put("dns", "compressed".to_owned(), &bytes)?;
    // A DNS cookie option, and a client-subnet option.
    let mut cookie = query("web.service.local.", RecordType::A, Some(1232), false);
    let rdlen = cookie.len() - 2;
    cookie[rdlen + 1] = 12;
    cookie.extend_from_slice(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
    put("dns", "cookie".to_owned(), &cookie)?;
    let mut subnet = query("web.service.local.", RecordType::A, Some(1232), false);
    let rdlen = subnet.len() - 2;
    subnet[rdlen + 1] = 8;
    subnet.extend_from_slice(&[0, 8, 0, 4, 0, 1, 0, 0]);
    put("dns", "subnet".to_owned(), &subnet)?;
    for (n, body) in BODIES.iter().enumerate() {
        put("json", format!("{n:02}"), body.as_bytes())?;
    }
    for (n, bytes) in updates().iter().enumerate() {
        put("update", format!("{n:02}"), bytes)?;
    }
    Ok(count)
}

/// UPDATE messages as nsupdate, Kea and external-dns send them: each
/// prerequisite form, adds, and the three kinds of delete.
fn updates() -> Vec<Vec<u8>> {
    let name = |text: &str| Name::from_ascii(text).unwrap_or_else(|_| Name::root());
    let record = |owner: &str, class: DNSClass, ttl: u32, data: RData| {
        let mut record = Record::from_rdata(name(owner), ttl, data);
        record.dns_class = class;
        record
    };
    let empty = |owner: &str, class: DNSClass, rtype: RecordType| {
        let mut record = Record::update0(name(owner), 0, rtype);
        record.dns_class = class;
        record
    };
    let a = |last: u8| RData::A(A(Ipv4Addr::new(127, 0, 0, last)));
    let srv = |port: u16, target: &str| RData::SRV(SRV::new(0, 5, port, name(target)));
    let txt =
        |strings: &[&str]| RData::TXT(TXT::new(strings.iter().map(|s| (*s).to_owned()).collect()));
    let instance = "web-3.web.service.local.";
    // The SRV record naming `instance` as the service's, at `port`.
    let web_srv = |port: u16| {
        record(
            "_web._tcp.service.local.",
            DNSClass::IN,
            30,
            srv(port, instance),
        )
    };
    let cases: Vec<(Vec<Record>, Vec<Record>)> = vec![
        (vec![], vec![record(instance, DNSClass::IN, 30, a(3))]),
        (
            vec![empty(instance, DNSClass::NONE, RecordType::ANY)],
            vec![
                record(instance, DNSClass::IN, 30, a(3)),
                web_srv(8080),
                record(
                    instance,
                    DNSClass::IN,
                    30,
                    txt(&["check-tcp=127.0.0.3:8080", "check-interval=10s", "v=1"]),
                ),
            ],
        ),
        (
            vec![record("web-1.web.service.local.", DNSClass::IN, 0, a(1))],
            vec![
                empty("web-1.web.service.local.", DNSClass::ANY, RecordType::A),
                record("web-1.web.service.local.", DNSClass::IN, 30, a(9)),
            ],
        ),
        (
            vec![empty(
                "web-1.web.service.local.",
                DNSClass::ANY,
                RecordType::ANY,
            )],
            vec![empty(
                "web-1.web.service.local.",
                DNSClass::ANY,
                RecordType::ANY,
            )],
        ),
        (
            vec![empty(
                "_web._v2.service.local.",
                DNSClass::ANY,
                RecordType::SRV,
            )],
            vec![record(
                "_web._v2.service.local.",
                DNSClass::NONE,
                0,
                srv(80, "web-1.web.service.local."),
            )],
        ),
        (
            vec![empty(
                "web.service.local.",
                DNSClass::NONE,
                RecordType::AAAA,
            )],
            vec![
                record("web.service.local.", DNSClass::IN, 30, a(7)),
                record(
                    "six.service.local.",
                    DNSClass::IN,
                    30,
                    RData::AAAA(AAAA(Ipv6Addr::LOCALHOST)),
                ),
            ],
        ),
        (
            vec![],
            vec![
                record(
                    "a-web.service.local.",
                    DNSClass::IN,
                    30,
                    txt(&["heritage=external-dns,external-dns/owner=default"]),
                ),
                record("web.service.local.", DNSClass::NONE, 0, a(2)),
            ],
        ),
        // An SRV with port 0, which an instance cannot have (refused; the
        // fuzzer found the engine taking it).
        (
            vec![],
            vec![record(instance, DNSClass::IN, 30, a(3)), web_srv(0)],
        ),
    ];
    cases
        .into_iter()
        .filter_map(|(prerequisites, updates)| {
            let mut message = Message::new(0x2136, MessageType::Query, OpCode::Update);
            let mut zone = Query::query(name("service.local."), RecordType::SOA);
            zone.set_query_class(DNSClass::IN);
            message.add_query(zone);
            message.answers = prerequisites;
            message.authorities = updates;
            message.to_vec().ok()
        })
        .collect()
}

/// A query as a stub resolver sends it: RD set, DO set with EDNS.
fn query(name: &str, qtype: RecordType, edns: Option<u16>, twice: bool) -> Vec<u8> {
    let name = Name::from_ascii(name).unwrap_or_else(|_| Name::root());
    let mut message = Message::query();
    message.metadata.id = 0xBEEF;
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(name.clone(), qtype));
    if twice {
        message.add_query(Query::query(name, RecordType::AAAA));
    }
    if let Some(size) = edns {
        let mut opt = Edns::new();
        opt.set_max_payload(size);
        opt.set_dnssec_ok(true);
        message.set_edns(opt);
    }
    message.to_vec().unwrap_or_default()
}
