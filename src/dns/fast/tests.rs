//! The fast path's tests: above all `assert_same`, which proves each fast
//! answer equal to what the general path says for the same query.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use arc_swap::ArcSwap;
use hickory_proto::{
    op::{Edns, Message, Query, ResponseCode},
    rr::{
        Name, RData, Record, RecordType,
        rdata::opt::{EdnsCode, EdnsOption},
    },
};
use hickory_server::{
    net::{NetError, runtime::TokioTime, xfer::Protocol},
    server::{Request, RequestHandler, ResponseHandler, ResponseInfo},
    zone_handler::MessageResponse,
};

use super::*;
use crate::{
    dns::DnsHandler,
    dns::table::{Nameserver, TableSettings},
    model::{Instance, InstanceBody, ServiceName},
    registry::state::{InstanceState, ServiceState},
};

const DOMAIN: &str = "service.local.";

fn instance(service: &str, id: &str, body: &str) -> Arc<InstanceState> {
    let body: InstanceBody = serde_json::from_str(body).expect(body);
    let instance: Instance = body.validate(service, id).expect("valid instance");
    Arc::new(InstanceState::registered_for_test(instance))
}

/// A table with `web` (3 × IPv4, one with metadata, one tagged, one in
/// maintenance), `six` (IPv6 only), `mixed` (both), `big` (40 × IPv4) and
/// `ns`, which shares its label with the apex NS target.
fn table() -> RecordTable {
    let settings = TableSettings {
        domain: Name::from_ascii(DOMAIN).unwrap(),
        ttl: 17,
        negative_ttl: 5,
        include_warning: false,
        nameserver: Arc::new(Nameserver::new(
            &Name::from_ascii(DOMAIN).unwrap(),
            Name::from_ascii("ns.service.local.").unwrap(),
            &["192.0.2.53".parse().unwrap()],
        )),
    };
    let mut services: Vec<(&str, Vec<(String, String)>)> = vec![
        (
            "web",
            vec![
                (
                    "web-1".into(),
                    r#"{"address":"10.0.0.1","port":80,"tags":["v2"],"weight":3,"priority":2}"#
                        .into(),
                ),
                (
                    "web-2".into(),
                    r#"{"address":"10.0.0.2","port":81,"meta":{"k":"v"}}"#.into(),
                ),
                ("web-3".into(), r#"{"address":"10.0.0.3","port":82}"#.into()),
                ("web-4".into(), r#"{"address":"10.0.0.4","port":83}"#.into()),
            ],
        ),
        (
            "six",
            vec![(
                "six-1".into(),
                r#"{"address":"2001:db8::1","port":90}"#.into(),
            )],
        ),
        (
            "mixed",
            vec![
                ("m-1".into(), r#"{"address":"10.1.0.1","port":1}"#.into()),
                ("m-2".into(), r#"{"address":"2001:db8::2","port":2}"#.into()),
            ],
        ),
    ];
    services.push((
        "ns",
        vec![("ns-1".into(), r#"{"address":"10.3.0.1","port":53}"#.into())],
    ));
    services.push((
        "big",
        (0..40)
            .map(|i| {
                (
                    format!("big-{i}"),
                    format!(r#"{{"address":"10.2.0.{i}","port":8080}}"#),
                )
            })
            .collect(),
    ));
    let mut table = RecordTable::default();
    for (service, instances) in services {
        let mut state = ServiceState::new(ServiceName::parse(service).unwrap());
        for (id, body) in instances {
            let mut entry = instance(service, &id, &body);
            if id == "web-4" {
                Arc::make_mut(&mut entry).maintenance = Some("drain".into());
            }
            state.insert(entry);
        }
        table.update_service(service, Some(&state), &settings);
    }
    table.set_index(7, &settings);
    table
}

fn handler_with(zones: StaticZones) -> DnsHandler {
    DnsHandler::new(
        Arc::new(ArcSwap::from_pointee(table())),
        Arc::new(zones),
        LowerName::from(Name::from_ascii(DOMAIN).unwrap()),
        4096,
    )
}

fn handler() -> DnsHandler {
    handler_with(StaticZones::default())
}

fn query(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.id = 0xBEEF;
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(size) = edns {
        let mut opt = Edns::new();
        opt.set_max_payload(size);
        opt.set_dnssec_ok(true);
        message.set_edns(opt);
    }
    message.to_vec().unwrap()
}

fn fast(handler: &DnsHandler, query: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    handler.answer_fast(query, &mut out).then_some(out)
}

/// Captures what the general path would send over UDP.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        Ok(super::super::udp::encode_response(
            response,
            &mut self.0.lock().unwrap(),
        )?)
    }
}

async fn slow(handler: &DnsHandler, query: &[u8]) -> Vec<u8> {
    let source = SocketAddr::from(([127, 0, 0, 1], 5353));
    let request = Request::from_bytes(query.to_vec(), source, Protocol::Udp).unwrap();
    let capture = Capture::default();
    handler
        .handle_request::<_, TokioTime>(&request, capture.clone())
        .await;
    capture.0.lock().unwrap().clone()
}

/// Records as lower-case text, sorted: the same set regardless of order
/// and of the case the question was asked in.
fn texts(records: &[Record]) -> Vec<String> {
    let mut texts: Vec<String> = records
        .iter()
        .map(|r| r.to_string().to_ascii_lowercase())
        .collect();
    texts.sort();
    texts
}

/// The fast answer says exactly what the general path says.
async fn assert_same(handler: &DnsHandler, query: &[u8]) -> Message {
    let fast_bytes = fast(handler, query).expect("answered on the fast path");
    let slow_bytes = slow(handler, query).await;
    let fast = Message::from_vec(&fast_bytes).expect("fast answer decodes");
    let slow = Message::from_vec(&slow_bytes).unwrap();
    assert_eq!(fast.metadata, slow.metadata);
    assert_eq!(fast.queries, slow.queries);
    assert_eq!(texts(&fast.answers), texts(&slow.answers));
    assert_eq!(texts(&fast.authorities), texts(&slow.authorities));
    assert_eq!(texts(&fast.additionals), texts(&slow.additionals));
    assert_eq!(fast.edns, slow.edns);
    assert!(
        fast_bytes.len() < slow_bytes.len(),
        "compression: {} vs {}",
        fast_bytes.len(),
        slow_bytes.len()
    );
    // The question is copied as asked, case included.
    let question = &query[HEADER_LEN..];
    let question = &question[..question.len() - if fast.edns.is_some() { OPT_LEN } else { 0 }];
    assert_eq!(
        &fast_bytes[HEADER_LEN..HEADER_LEN + question.len()],
        question
    );
    fast
}

#[tokio::test]
async fn answers_exactly_what_the_general_path_answers() {
    let handler = handler();
    for (name, qtype) in [
        ("web.service.local.", RecordType::A),
        ("WeB.SERVICE.local.", RecordType::A),
        ("web.service.local.", RecordType::SRV),
        ("Web.Service.Local.", RecordType::SRV),
        ("six.service.local.", RecordType::AAAA),
        ("six.service.local.", RecordType::SRV),
        ("mixed.service.local.", RecordType::A),
        ("mixed.service.local.", RecordType::AAAA),
        ("mixed.service.local.", RecordType::SRV),
    ] {
        for edns in [None, Some(100), Some(1232), Some(8192)] {
            let answer = assert_same(&handler, &query(name, qtype, edns)).await;
            assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
            assert!(answer.metadata.authoritative);
            assert!(!answer.answers.is_empty());
            // OPT present iff asked, DO echoed (the query sets it, RFC
            // 3225), size bounded by ours.
            assert_eq!(answer.edns.is_some(), edns.is_some(), "{name} {qtype}");
            if let Some(opt) = &answer.edns {
                assert!(opt.flags().dnssec_ok);
                assert_eq!(opt.max_payload(), edns.unwrap().clamp(512, 4096));
            }
        }
    }
}

#[tokio::test]
async fn srv_additionals_point_at_their_targets() {
    let handler = handler();
    let bytes = fast(
        &handler,
        &query("web.service.local.", RecordType::SRV, None),
    )
    .unwrap();
    let answer = Message::from_vec(&bytes).unwrap();
    assert_eq!(answer.answers.len(), 3, "web-4 is in maintenance");
    assert_eq!(answer.additionals.len(), 3);
    for (srv, address) in answer.answers.iter().zip(&answer.additionals) {
        let RData::SRV(srv) = &srv.data else {
            panic!("not SRV: {srv}")
        };
        assert_eq!(srv.target, address.name);
        assert!(srv.target.to_ascii().ends_with(".web.service.local."));
        assert_eq!(address.ttl, 17);
    }
    // 12 header + 23 question; each SRV 2 + 10 + 6 + "\x05web-N" (6) +
    // the service name in full (19), each A 16.
    assert_eq!(bytes.len(), 12 + 23 + 3 * 43 + 3 * 16);
    // Targets are never compressed (RFC 2782, RFC 3597 section 4): the
    // service name is written out in each, besides the question.
    let service_name = b"\x03web\x07service\x05local\x00";
    let written_out = bytes
        .windows(service_name.len())
        .filter(|w| w == service_name);
    assert_eq!(written_out.count(), 1 + 3);
}

#[test]
fn a_batch_answers_each_query_as_alone() {
    let handler = handler();
    let mut queries = vec![Vec::new()]; // an empty datagram: declined
    for (name, qtype, edns) in [
        ("web.service.local.", RecordType::A, None),
        ("nope.service.local.", RecordType::A, None),
        ("Six.service.local.", RecordType::AAAA, Some(1232)),
        ("web.service.local.", RecordType::TXT, None),
        ("mixed.service.local.", RecordType::SRV, None),
        ("big.service.local.", RecordType::A, Some(1232)),
        ("big.service.local.", RecordType::A, None),
        ("web.service.local.", RecordType::SRV, Some(1232)),
    ] {
        queries.push(query(name, qtype, edns));
    }
    let queries: Vec<&[u8]> = queries.iter().map(Vec::as_slice).collect();
    let mut cache = ServiceCache::default();
    let mut outs = vec![Vec::new(); queries.len()];
    let mut answered = vec![true; queries.len()];
    let clients = vec![None; queries.len()];
    // Twice: the service cache misses, then hits.
    for _ in 0..2 {
        handler.answer_fast_batch(&queries, &clients, &mut cache, &mut outs, &mut answered);
    }
    let sorted = |records: &[Record]| {
        let mut texts: Vec<String> = records.iter().map(ToString::to_string).collect();
        texts.sort();
        texts
    };
    for ((query, out), answered) in queries.iter().zip(&outs).zip(&answered) {
        let alone = fast(&handler, query);
        assert_eq!(*answered, alone.is_some(), "{query:?}");
        let Some(alone) = alone else { continue };
        let (batch, alone) = (
            Message::from_vec(out).unwrap(),
            Message::from_vec(&alone).unwrap(),
        );
        assert_eq!(batch.metadata, alone.metadata);
        assert_eq!(batch.queries, alone.queries);
        assert_eq!(sorted(&batch.answers), sorted(&alone.answers));
        assert_eq!(sorted(&batch.additionals), sorted(&alone.additionals));
        assert_eq!(out.len(), fast(&handler, query).map_or(0, |a| a.len()));
    }
    assert_eq!(answered.iter().filter(|a| **a).count(), 5);
}

/// Random damage to real queries: the fast path never panics, and what
/// it answers is a well-formed response to a query it could parse.
#[test]
fn damaged_queries_never_panic_and_answers_stay_well_formed() {
    let handler = handler();
    let mut cache = ServiceCache::default();
    let seeds: Vec<Vec<u8>> = [
        ("web.service.local.", RecordType::A, None),
        ("web.service.local.", RecordType::SRV, Some(1232)),
        ("mixed.service.local.", RecordType::AAAA, Some(600)),
    ]
    .iter()
    .map(|(name, qtype, edns)| query(name, *qtype, *edns))
    .collect();
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut answered_total = 0;
    for round in 0..2_000 {
        let mut batch: Vec<Vec<u8>> = Vec::new();
        for _ in 0..MAX_BATCH {
            let mut bytes = seeds[next() as usize % seeds.len()].clone();
            for _ in 0..1 + next() % 4 {
                let at = next() as usize % bytes.len();
                match next() % 3 {
                    0 => bytes[at] = next() as u8,
                    1 => bytes.truncate(at),
                    _ => bytes.insert(at, next() as u8),
                }
                if bytes.is_empty() {
                    break;
                }
            }
            batch.push(bytes);
        }
        let queries: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        let mut outs = vec![Vec::new(); MAX_BATCH];
        let mut answered = [false; MAX_BATCH];
        handler.answer_fast_batch(
            &queries,
            &vec![None; queries.len()],
            &mut cache,
            &mut outs,
            &mut answered,
        );
        for ((query, out), answered) in queries.iter().zip(&outs).zip(answered) {
            if !answered {
                continue;
            }
            let response = Message::from_vec(out)
                .unwrap_or_else(|e| panic!("round {round}: {e} for {query:?}"));
            let asked = Message::from_vec(query).expect("answered queries parse");
            assert_eq!(response.metadata.id, asked.metadata.id);
            assert_eq!(response.queries, asked.queries);
            assert!(!response.answers.is_empty());
            answered_total += 1;
        }
    }
    // Damage to the ID or some flags leaves a query the fast path answers.
    assert!(answered_total > 500, "{answered_total} answered");
}

#[test]
fn every_order_is_about_equally_likely() {
    let handler = handler();
    let query = query("web.service.local.", RecordType::A, None);
    let mut orders: HashMap<Vec<String>, u32> = HashMap::new();
    for _ in 0..6000 {
        let bytes = fast(&handler, &query).unwrap();
        let answer = Message::from_vec(&bytes).unwrap();
        let order = answer.answers.iter().map(|r| r.data.to_string()).collect();
        *orders.entry(order).or_default() += 1;
    }
    // 3 instances: 6 orders, 1000 each expected.
    assert_eq!(orders.len(), 6, "{orders:?}");
    for (order, count) in &orders {
        assert!((800..1200).contains(count), "{order:?}: {count}");
    }
}

#[test]
fn everything_else_goes_the_general_path() {
    let handler = handler();
    let unanswered = |query: &[u8]| assert!(fast(&handler, query).is_none(), "{query:?}");
    for (name, qtype) in [
        ("nope.service.local.", RecordType::A),
        ("service.local.", RecordType::SOA),
        ("web-1.web.service.local.", RecordType::A),
        ("_web._tcp.service.local.", RecordType::SRV),
        ("web.service.local.", RecordType::ANY),
        ("web.service.local.", RecordType::TXT),
        ("web.service.local.", RecordType::AAAA),
        ("six.service.local.", RecordType::A),
        ("web.example.org.", RecordType::A),
        ("web.service.local.example.", RecordType::A),
        ("big.service.local.", RecordType::A),
    ] {
        unanswered(&query(name, qtype, None));
    }
    // Too big for 512 or for the client's size: truncation is not ours.
    unanswered(&query("big.service.local.", RecordType::A, Some(600)));
    assert!(
        fast(
            &handler,
            &query("big.service.local.", RecordType::A, Some(1232))
        )
        .is_some()
    );

    let plain = query("web.service.local.", RecordType::A, None);
    assert!(fast(&handler, &plain).is_some());
    let edit = |at: usize, value: u8| {
        let mut bytes = plain.clone();
        bytes[at] = value;
        bytes
    };
    unanswered(&edit(2, 0x80)); // a response
    unanswered(&edit(2, (4 << 3) | 1)); // NOTIFY (opcode 4)
    unanswered(&edit(5, 2)); // two questions
    unanswered(&edit(7, 1)); // an answer record in a query
    unanswered(&edit(9, 1)); // an authority record
    unanswered(&edit(11, 1)); // an additional record that is not there
    let class = plain.len() - 1;
    unanswered(&edit(class, 3)); // class CH
    unanswered(&plain[..plain.len() - 1]); // cut short
    let mut trailing = plain.clone();
    trailing.push(0);
    unanswered(&trailing);

    // OPT: version 1, not at the root, a client-subnet option, options
    // whose lengths do not add up.
    let with_opt = query("web.service.local.", RecordType::A, Some(1232));
    assert!(fast(&handler, &with_opt).is_some());
    let opt = plain.len();
    let mut version = with_opt.clone();
    version[opt + 6] = 1;
    unanswered(&version);
    let mut subnet = with_opt.clone();
    subnet[opt + 10] = 8;
    subnet.extend_from_slice(&[0, 8, 0, 4, 0, 1, 0, 0]);
    unanswered(&subnet);
    let mut cookie = with_opt.clone();
    cookie[opt + 10] = 12;
    cookie.extend_from_slice(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
    assert!(fast(&handler, &cookie).is_some(), "cookies off: ignored");
    let mut short = cookie.clone();
    short[opt + 10] = 11;
    unanswered(&short);
    // With cookies on, a malformed COOKIE gets the general path's FORMERR.
    let with_cookies = handler.clone().with_cookies(Cookies::new(&[7; 16]));
    assert!(
        fast(&with_cookies, &cookie).is_some(),
        "a cookie is answered"
    );
    let mut nine = with_opt.clone();
    nine[opt + 10] = 13;
    nine.extend_from_slice(&[0, 10, 0, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert!(fast(&with_cookies, &nine).is_none());
    assert!(fast(&handler, &nine).is_some(), "cookies off: ignored");
}

/// `query` with `cookie` as its OPT record's COOKIE option.
fn with_cookie(name: &str, qtype: RecordType, cookie: &[u8]) -> Vec<u8> {
    let mut message = Message::from_vec(&query(name, qtype, Some(1232))).unwrap();
    let edns = message.edns.as_mut().unwrap();
    edns.options_mut()
        .insert(EdnsOption::Unknown(cookies::OPTION_CODE, cookie.to_vec()));
    message.to_vec().unwrap()
}

/// The COOKIE option's data in an answer.
fn cookie_in(answer: &[u8]) -> Option<Vec<u8>> {
    let message = Message::from_vec(answer).unwrap();
    match message.edns?.option(EdnsCode::Cookie)? {
        EdnsOption::Unknown(_, data) => Some(data.clone()),
        _ => None,
    }
}

#[tokio::test]
async fn a_cookie_is_answered_on_the_fast_path_as_on_the_general_one() {
    let handler = handler().with_cookies(Cookies::new(&[7; 16]));
    let client = [1, 2, 3, 4, 5, 6, 7, 8];
    for (name, qtype) in [
        ("web.service.local.", RecordType::A),
        ("six.service.local.", RecordType::AAAA),
        ("web.service.local.", RecordType::SRV),
    ] {
        // A client cookie alone earns a server cookie on either path.
        let first = with_cookie(name, qtype, &client);
        let fast_bytes = fast(&handler, &first).expect("answered on the fast path");
        let cookie = cookie_in(&fast_bytes).expect("a COOKIE");
        assert_eq!(cookie.len(), 24);
        assert_eq!(cookie[..8], client);
        assert_eq!(
            cookie_in(&slow(&handler, &first).await).map(|c| c.len()),
            Some(24)
        );
        // Sent back, it is kept by both: the same answer, OPT included.
        let again = with_cookie(name, qtype, &cookie);
        let fast_bytes = fast(&handler, &again).expect("answered on the fast path");
        let slow_bytes = slow(&handler, &again).await;
        assert_eq!(cookie_in(&fast_bytes), Some(cookie.clone()));
        let (fast, slow) = (
            Message::from_vec(&fast_bytes).unwrap(),
            Message::from_vec(&slow_bytes).unwrap(),
        );
        assert_eq!(fast.metadata, slow.metadata);
        assert_eq!(texts(&fast.answers), texts(&slow.answers));
        assert_eq!(texts(&fast.additionals), texts(&slow.additionals));
        assert_eq!(fast.edns, slow.edns, "{name} {qtype}");
    }
}

#[tokio::test]
async fn names_with_static_records_go_the_general_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("service.local.zone"),
        "$TTL 30\nweb IN A 192.0.2.80\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("mixed.service.local.zone"),
        "$TTL 30\n@ IN SOA ns hostmaster 1 3600 600 86400 30\n@ IN A 192.0.2.81\n",
    )
    .unwrap();
    let domain = Name::from_ascii(DOMAIN).unwrap();
    let handler = handler_with(StaticZones::load_dir(dir.path(), &domain).unwrap());
    for name in [
        "web.service.local.",
        "WEB.service.local.",
        "mixed.service.local.",
    ] {
        assert!(
            fast(&handler, &query(name, RecordType::A, None)).is_none(),
            "{name}"
        );
    }
    assert_same(
        &handler,
        &query("six.service.local.", RecordType::AAAA, None),
    )
    .await;
}

/// The apex NS target's name answers the name server's address, not the
/// instances of a service with the same label: the fast path leaves it to
/// the general path, which knows.
#[tokio::test]
async fn the_ns_target_goes_the_general_path_whatever_service_shares_it() {
    let handler = handler();
    for name in ["ns.service.local.", "NS.service.local."] {
        let query = query(name, RecordType::A, Some(1232));
        assert!(fast(&handler, &query).is_none(), "{name}");
        let answer = Message::from_vec(&slow(&handler, &query).await).unwrap();
        let addresses: Vec<String> = answer.answers.iter().map(|r| r.data.to_string()).collect();
        assert_eq!(addresses, ["192.0.2.53"], "{name}");
    }
    let srv = query("_ns._tcp.service.local.", RecordType::SRV, Some(1232));
    let answer = Message::from_vec(&slow(&handler, &srv).await).unwrap();
    assert_eq!(answer.answers.len(), 1, "the service's SRV name is its own");
}

#[tokio::test]
async fn the_do_bit_is_echoed_on_both_paths_set_or_clear() {
    let handler = handler();
    for dnssec_ok in [false, true] {
        let mut message = Message::query();
        message.metadata.id = 0xD0D0;
        message.add_query(Query::query(
            Name::from_ascii("web.service.local.").unwrap(),
            RecordType::A,
        ));
        let mut opt = Edns::new();
        opt.set_max_payload(1232);
        opt.set_dnssec_ok(dnssec_ok);
        message.set_edns(opt);
        let answer = assert_same(&handler, &message.to_vec().unwrap()).await;
        let echoed = answer.edns.expect("an OPT record").flags().dnssec_ok;
        assert_eq!(echoed, dnssec_ok, "RFC 3225: DO is copied");
    }
}
