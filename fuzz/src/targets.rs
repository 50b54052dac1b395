//! The four targets and the invariants each checks beyond "no panic". An
//! invariant that fails panics, so the fuzz loop saves the input like any
//! other crash.

use std::sync::atomic::{AtomicUsize, Ordering};

use hickory_proto::{
    op::Message,
    rr::Name,
    serialize::binary::{BinDecodable, BinDecoder},
};
use roster::{dns::fuzzing, http::body::parse_json, model::InstanceBody, update};

/// Runs one input through a target, panicking if an invariant fails.
type Run = Box<dyn FnMut(&[u8])>;

/// What one target is fed with and how.
pub struct Target {
    pub name: &'static str,
    /// Tokens of the input format, for the mutator.
    pub dictionary: &'static [&'static [u8]],
    pub max_len: usize,
    run: Run,
}

impl Target {
    pub fn by_name(name: &str) -> Option<Self> {
        match name {
            "dns" => Some(dns()),
            "query" => Some(query()),
            "json" => Some(json()),
            "update" => Some(update()),
            _ => None,
        }
    }

    pub fn run(&mut self, input: &[u8]) {
        (self.run)(input)
    }
}

pub const TARGETS: [&str; 4] = ["dns", "query", "json", "update"];

/// WARN and ERROR events logged while the current input ran (see
/// [`WarnCounter`]).
pub static WARNINGS: AtomicUsize = AtomicUsize::new(0);

const DNS_TOKENS: &[&[u8]] = &[
    b"\x03web\x07service\x05local\x00",
    b"\x07service\x05local\x00",
    b"\x04_web\x04_tcp",
    b"\x03_v2",
    b"\x05web-1",
    b"\x03six",
    b"\x05mixed",
    b"\x03big",
    b"\x00\x01\x00\x01",
    b"\x00\x1c\x00\x01",
    b"\x00\x21\x00\x01",
    b"\x00\x10\x00\x01",
    b"\x00\x06\x00\x01",
    b"\x00\x02\x00\x01",
    b"\x00\xff\x00\x01",
    b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00",
    b"\x00\x0a\x00\x08\x01\x02\x03\x04\x05\x06\x07\x08",
    b"\x00\x08\x00\x04\x00\x01\x18\x00",
    b"\xc0\x0c",
];

/// The UDP path: fast path, then general path, as the UDP loop runs them.
fn dns() -> Target {
    let mut target = fuzzing::UdpTarget::new();
    Target {
        name: "dns",
        dictionary: DNS_TOKENS,
        max_len: 4096,
        run: Box::new(move |input| {
            WARNINGS.store(0, Ordering::Relaxed);
            let (response, _malformed) = target.answer(&[input]).pop().unwrap_or((None, false));
            let warnings = WARNINGS.load(Ordering::Relaxed);
            assert_eq!(warnings, 0, "the UDP path logged at WARN for one datagram");
            let Some(response) = response else { return };
            check_dns_response(input, &response);
        }),
    }
}

/// What every UDP answer must be: decodable, for this query's ID, a
/// response, within the size the client can take, and echoing the question.
fn check_dns_response(query: &[u8], response: &[u8]) {
    let message = Message::from_vec(response)
        .unwrap_or_else(|error| panic!("the response does not decode: {error}: {response:?}"));
    assert!(query.len() >= 2, "an answer to less than a header");
    assert_eq!(
        message.metadata.id.to_be_bytes(),
        [query[0], query[1]],
        "the response has another ID"
    );
    assert!(query[2] & 0x80 == 0, "a response was answered");
    assert!(response[2] & 0x80 != 0, "the answer is not a response");
    let limit = match &message.edns {
        None => 512,
        Some(_) => usize::from(fuzzing::MAX_UDP_PAYLOAD),
    };
    assert!(
        response.len() <= limit,
        "{} bytes over a limit of {limit}",
        response.len()
    );
    if let (Ok(asked), false) = (Message::from_vec(query), message.queries.is_empty()) {
        assert_eq!(message.queries, asked.queries, "the question is not echoed");
    }
}

const NAME_TOKENS: &[&[u8]] = &[
    b"service.local.",
    b"web.",
    b"_web.",
    b"_tcp.",
    b"_udp.",
    b"_v2.",
    b"web-1.",
    b"_.",
    b"\\.",
    b"\\065",
    b".",
    b"*.",
    b"\x03web",
    b"\x04_tcp",
    b"\x00",
];

/// The query-name parser, on names made from text and from wire bytes,
/// as given and placed under the domain.
fn query() -> Target {
    Target {
        name: "query",
        dictionary: NAME_TOKENS,
        max_len: 512,
        run: Box::new(|input| {
            let mut names = Vec::new();
            if let Ok(text) = std::str::from_utf8(input) {
                names.extend(Name::from_ascii(text).ok());
                let under = format!("{}.{}", text.trim_end_matches('.'), fuzzing::DOMAIN);
                names.extend(Name::from_ascii(&under).ok());
            }
            let mut decoder = BinDecoder::new(input);
            names.extend(Name::read(&mut decoder).ok());
            for name in names {
                let Some(form) = fuzzing::classify_name(&name) else {
                    continue;
                };
                // Every form but Other and Apex names a label of the name.
                let lower = name.to_lowercase().to_ascii();
                if form != "Other" && form != "Apex" {
                    assert!(!lower.is_empty(), "{form} for an empty name");
                }
            }
        }),
    }
}

const JSON_TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b"\"",
    b"\"address\"",
    b"\"port\"",
    b"\"tags\"",
    b"\"meta\"",
    b"\"weight\"",
    b"\"priority\"",
    b"\"check\"",
    b"\"checks\"",
    b"\"http\"",
    b"\"tcp\"",
    b"\"ttl\"",
    b"\"interval\"",
    b"\"timeout\"",
    b"\"id\"",
    b"\"name\"",
    b"\"deregister_critical_service_after\"",
    b"null",
    b"true",
    b"false",
    b"0",
    b"-1",
    b"65535",
    b"65536",
    b"4294967296",
    b"1e309",
    b"\"0.0.0.0\"",
    b"\"::\"",
    b"\"::ffff:0.0.0.0\"",
    b"\"224.0.0.1\"",
    b"\"10.0.0.1\"",
    b"\"10s\"",
    b"\"1h\"",
    b"\"\\u0000\"",
    b"\"\\ud800\"",
];

/// The native registration body: `parse_json` into `InstanceBody`, then
/// `validate`, as `PUT /v1/services/{service}/{id}` runs them.
fn json() -> Target {
    Target {
        name: "json",
        dictionary: JSON_TOKENS,
        max_len: 8192,
        run: Box::new(|input| {
            let Ok(body) = parse_json::<InstanceBody>(input) else {
                return;
            };
            let Ok(instance) = body.validate("web", "web-1") else {
                return;
            };
            assert_ne!(instance.port, 0, "port 0 accepted");
            assert!(
                !instance.address.is_unspecified(),
                "unspecified address {} accepted",
                instance.address
            );
            assert!(
                !instance.address.is_multicast(),
                "multicast address {} accepted",
                instance.address
            );
        }),
    }
}

const UPDATE_TOKENS: &[&[u8]] = &[
    // Header: opcode UPDATE, one zone, then prerequisite/update counts.
    b"\x00\x01\x28\x00\x00\x01",
    b"\x07service\x05local\x00\x00\x06\x00\x01",
    b"\x05web-1\x03web\xc0\x0c",
    b"\x03web\xc0\x0c",
    b"\x04_web\x04_tcp\xc0\x0c",
    b"\x04_web\x03_v2\xc0\x0c",
    b"\x05six-1\x03six\xc0\x0c",
    // Type and class: A, AAAA, TXT, SRV, DHCID, ANY; IN, ANY, NONE.
    b"\x00\x01\x00\x01",
    b"\x00\x1c\x00\x01",
    b"\x00\x10\x00\x01",
    b"\x00\x21\x00\x01",
    b"\x00\x31\x00\x01",
    b"\x00\xff\x00\xff",
    b"\x00\x01\x00\xfe",
    b"\x00\x01\x00\xff",
    // TTL 0 and 30, RDATA lengths.
    b"\x00\x00\x00\x00\x00\x00",
    b"\x00\x00\x00\x1e\x00\x04\x7f\x00\x00\x05",
    b"\x09check-tcp",
    b"\x0bk=v",
    b"\x00\x00\x00\x05\x1f\x90",
];

/// DNS UPDATE's planner: a message's prerequisite and update sections
/// against a small registry (invariants in `update::fuzzing`).
fn update() -> Target {
    let target = update::fuzzing::UpdateTarget::new();
    Target {
        name: "update",
        dictionary: UPDATE_TOKENS,
        max_len: 2048,
        run: Box::new(move |input| {
            let _ = target.plan(input);
        }),
    }
}

/// Counts WARN and ERROR events into [`WARNINGS`]: roster's UDP path must
/// not log per datagram at those levels.
pub struct WarnCounter;

impl tracing::Subscriber for WarnCounter {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() <= tracing::Level::WARN
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let metadata = event.metadata();
        // roster's default log filter (src/main.rs) keeps hickory-proto's
        // events at ERROR only: its per-message SIG(0) warning is not a
        // line the server writes.
        let filtered = metadata.target().starts_with("hickory_proto")
            && *metadata.level() > tracing::Level::ERROR;
        if *metadata.level() <= tracing::Level::WARN && !filtered {
            WARNINGS.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}
