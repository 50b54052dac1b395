//! The fast path: answers the common question — A, AAAA or SRV at
//! `<service>.<domain>` over UDP — straight from the raw datagram into a
//! reused buffer, with no heap allocation and no hickory parsing or encoding.
//!
//! It answers only when its answer is exactly what the general path
//! ([`super::handler`]) would say: the same records and flags, only smaller
//! because every owner name is a compression pointer to the question. Anything
//! else — another opcode or type, an unusual header or OPT record, a name
//! with static records, an answer that would not fit the datagram, a negative
//! answer — returns `false` and goes through hickory as before, which owns
//! truncation, negative answers, static zones and every other name form.
//!
//! Owns: the wire format of those answers. Must not: allocate per query,
//! wait, or answer anything it cannot answer exactly as the general path does.

use std::{cell::RefCell, collections::HashSet, net::IpAddr};

use hickory_proto::rr::LowerName;

use super::table::{RecordTable, ServiceRecords};
use super::wire::{
    self, A_RDATA_LEN, AAAA_RDATA_LEN, CLASS_IN, FLAG_AA, FLAG_CD, FLAG_QR, FLAG_RD, HEADER_LEN,
    MAX_LABEL_LEN, MAX_POINTER_TARGET, OPCODE_MASK, OPT_LEN, QUESTION_POINTER, TYPE_A, TYPE_AAAA,
    TYPE_OPT, TYPE_SRV,
};
use super::{lookup::shuffle, service_cache::ServiceCache, zones::StaticZones};

/// EDNS options that hickory parses into typed values (NSID, client subnet)
/// and may reject; a query carrying one goes the general path so that a
/// malformed one gets the same FORMERR it gets there.
const PARSED_OPTIONS: [u16; 2] = [3, 8];
/// The most queries [`FastPath::answer_batch`] takes at once.
pub use super::service_cache::MAX_BATCH;

thread_local! {
    /// Per-thread scratch for one answer: the shuffled slots and the offsets
    /// of the SRV targets. Reused, so no query allocates once it has grown.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

#[derive(Default)]
struct Scratch {
    slots: Vec<u32>,
    targets: Vec<u16>,
}

/// What the fast path needs besides the table; built once at start.
#[derive(Debug)]
pub struct FastPath {
    /// The dynamic domain in wire form, lower-case (`\x07service\x05local\x00`).
    domain: Box<[u8]>,
    /// roster's largest UDP answer (`dns.max_udp_payload`).
    max_udp_payload: u16,
    /// Lower-case labels `L` where `L.<domain>` holds static records or is
    /// the origin of a static zone: those names go the general path, which
    /// merges or defers to the static data.
    shadowed: HashSet<Box<[u8]>>,
}

/// The parts of a query the answer depends on.
struct Question<'q> {
    /// The question section as sent (name, type, class), case preserved.
    bytes: &'q [u8],
    /// The service label as sent.
    label: &'q [u8],
    qtype: u16,
    /// The OPT record's UDP payload size, if the query had one.
    edns_payload: Option<u16>,
}

impl FastPath {
    pub fn new(domain: &LowerName, zones: &StaticZones, max_udp_payload: u16) -> Self {
        let mut wire = Vec::new();
        for label in domain.iter() {
            wire.push(label.len() as u8);
            wire.extend(label.iter().map(u8::to_ascii_lowercase));
        }
        wire.push(0);
        let depth = domain.num_labels() + 1;
        let first_label = |name: &LowerName| -> Option<Box<[u8]>> {
            (name.num_labels() == depth && domain.zone_of(name))
                .then(|| name.iter().next().map(|l| l.to_ascii_lowercase().into()))
                .flatten()
        };
        let mut shadowed = HashSet::new();
        for zone in zones.iter() {
            shadowed.extend(first_label(&zone.origin));
            if zone.origin == *domain {
                shadowed.extend(zone.records.keys().filter_map(first_label));
            }
        }
        Self {
            domain: wire.into(),
            max_udp_payload,
            shadowed,
        }
    }

    /// Answers a batch of raw UDP queries: `answered[i]` says whether
    /// `outs[i]` holds the answer to `queries[i]`, or whether it goes the
    /// general path (leaving `outs[i]` in any state). At most [`MAX_BATCH`]
    /// queries; services are found through the calling thread's `cache`.
    ///
    /// Why batches: on a large table the time goes to cache misses (the
    /// service lookup, then each service's answer data), and one query's
    /// misses come one after another. Looking up the whole batch first,
    /// asking the CPU to fetch each service's answer data as it is found,
    /// then encoding them all, lets those fetches overlap.
    pub fn answer_batch(
        &self,
        queries: &[&[u8]],
        table: &RecordTable,
        cache: &mut ServiceCache,
        outs: &mut [Vec<u8>],
        answered: &mut [bool],
    ) {
        debug_assert!(queries.len() <= MAX_BATCH);
        debug_assert!(outs.len() >= queries.len() && answered.len() >= queries.len());
        let count = queries.len().min(MAX_BATCH);
        let mut questions: [Option<Question<'_>>; MAX_BATCH] = [const { None }; MAX_BATCH];
        let mut lower = [[0u8; MAX_LABEL_LEN]; MAX_BATCH];
        let mut labels: [&[u8]; MAX_BATCH] = [&[]; MAX_BATCH];
        let parse = queries
            .iter()
            .zip(&mut questions)
            .zip(&mut lower)
            .zip(&mut labels);
        for (((query, question), lower), label) in parse {
            *question = self.parse(query);
            if let Some(service) = question.as_ref().and_then(|q| self.service_label(q, lower)) {
                *label = service;
            }
        }
        let mut services: [Option<&ServiceRecords>; MAX_BATCH] = [None; MAX_BATCH];
        cache.find_batch(table, &labels[..count], &mut services[..count]);
        for service in services.iter().flatten() {
            service.prefetch_answer_data();
        }
        let found = questions.into_iter().zip(services);
        let work = queries.iter().zip(found).zip(outs.iter_mut().zip(answered));
        for ((query, (question, service)), (out, answered)) in work {
            *answered = match (question, service) {
                (Some(question), Some(service)) => self.encode(query, &question, service, out),
                _ => false,
            };
        }
    }

    /// The service label `question` asks for, lower-cased into `buffer`;
    /// `None` if that name holds static records (the general path's).
    fn service_label<'b>(
        &self,
        question: &Question<'_>,
        buffer: &'b mut [u8; MAX_LABEL_LEN],
    ) -> Option<&'b [u8]> {
        let lower = &mut buffer[..question.label.len()];
        lower.copy_from_slice(question.label);
        lower.make_ascii_lowercase();
        let lower: &[u8] = lower;
        (self.shadowed.is_empty() || !self.shadowed.contains(lower)).then_some(lower)
    }

    /// Accepts only a plain query: opcode QUERY, one question, no answer or
    /// authority records, at most one additional record which is a
    /// well-formed EDNS(0) OPT at the root, and nothing after it.
    fn parse<'q>(&self, query: &'q [u8]) -> Option<Question<'q>> {
        let header = query.get(..HEADER_LEN)?;
        // QR = 0 and opcode = QUERY (0).
        if header[2] & (FLAG_QR | OPCODE_MASK) != 0 {
            return None;
        }
        let count = |at: usize| u16::from_be_bytes([header[at], header[at + 1]]);
        let (questions, answers, authority, additional) = (count(4), count(6), count(8), count(10));
        if questions != 1 || answers != 0 || authority != 0 || additional > 1 {
            return None;
        }
        let label_len = usize::from(*query.get(HEADER_LEN)?);
        if label_len == 0 || label_len > MAX_LABEL_LEN {
            return None;
        }
        let label = query.get(HEADER_LEN + 1..HEADER_LEN + 1 + label_len)?;
        let suffix_start = HEADER_LEN + 1 + label_len;
        let type_start = suffix_start + self.domain.len();
        // Length octets (≤ 63) are unchanged by ASCII case folding and only
        // match themselves, so this also compares the names' structure.
        if !query
            .get(suffix_start..type_start)?
            .eq_ignore_ascii_case(&self.domain)
        {
            return None;
        }
        let fixed = query.get(type_start..type_start + 4)?;
        let qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        if u16::from_be_bytes([fixed[2], fixed[3]]) != CLASS_IN {
            return None;
        }
        let question_end = type_start + 4;
        let edns_payload = match additional {
            0 => None,
            _ => Some(parse_opt(query.get(question_end..)?)?),
        };
        if additional == 0 && question_end != query.len() {
            return None;
        }
        Some(Question {
            bytes: &query[HEADER_LEN..question_end],
            label,
            qtype,
            edns_payload,
        })
    }

    fn encode(
        &self,
        query: &[u8],
        question: &Question<'_>,
        service: &ServiceRecords,
        out: &mut Vec<u8>,
    ) -> bool {
        let (slots, answers_len): (Option<&[u32]>, usize) = match question.qtype {
            TYPE_A => {
                let each = wire::compressed_address_len(A_RDATA_LEN);
                (Some(&service.v4_slots), service.v4_slots.len() * each)
            }
            TYPE_AAAA => {
                let each = wire::compressed_address_len(AAAA_RDATA_LEN);
                (Some(&service.v6_slots), service.v6_slots.len() * each)
            }
            // Computed by the table with `wire::compressed_srv_pair_len`.
            TYPE_SRV => (None, service.srv_compressed_len),
            _ => return false,
        };
        let count = slots.map_or(service.servable(), <[u32]>::len);
        if count == 0 {
            return false; // NODATA: the general path adds the SOA.
        }
        // The same limit as the general path: 512 without EDNS, else the
        // client's size (at least 512) capped by roster's.
        let response_payload = question
            .edns_payload
            .map(|size| wire::response_payload(size, self.max_udp_payload));
        let limit = usize::from(wire::udp_limit(response_payload));
        let with_opt = response_payload.is_some();
        let total = wire::response_len(question.bytes.len(), answers_len, with_opt);
        // Truncation is the general path's business, and so are answers
        // whose SRV targets a 14-bit pointer could not reach (they are over
        // any sensible UDP size anyway).
        if total > limit || total > MAX_POINTER_TARGET || count > usize::from(u16::MAX) {
            return false;
        }
        let additional = if question.qtype == TYPE_SRV { count } else { 0 };

        out.clear();
        out.extend_from_slice(&query[..2]); // ID
        // QR, AA, RD as asked; RA clear, opcode QUERY; CD as asked, NOERROR.
        out.push(FLAG_QR | FLAG_AA | (query[2] & FLAG_RD));
        out.push(query[3] & FLAG_CD);
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&(count as u16).to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&((additional + usize::from(with_opt)) as u16).to_be_bytes());
        out.extend_from_slice(question.bytes);

        let ttl = service.ttl.to_be_bytes();
        SCRATCH.with(|scratch| {
            let scratch = &mut *scratch.borrow_mut();
            scratch.slots.clear();
            match slots {
                Some(slots) => scratch.slots.extend_from_slice(slots),
                None => scratch.slots.extend(0..count as u32),
            }
            shuffle(&mut scratch.slots);
            scratch.targets.clear();
            for &slot in &scratch.slots {
                let endpoint = &service.slots[slot as usize];
                out.extend_from_slice(&QUESTION_POINTER);
                if question.qtype == TYPE_SRV {
                    let label = service.slot_label(endpoint);
                    let rdata_len = wire::compressed_srv_rdata_len(label.len());
                    put_rr_fixed(out, TYPE_SRV, ttl, rdata_len as u16);
                    out.extend_from_slice(&endpoint.priority.to_be_bytes());
                    out.extend_from_slice(&endpoint.weight.to_be_bytes());
                    out.extend_from_slice(&endpoint.port.to_be_bytes());
                    scratch.targets.push(out.len() as u16);
                    out.push(label.len() as u8);
                    out.extend_from_slice(label);
                    out.extend_from_slice(&QUESTION_POINTER);
                } else {
                    put_address(out, endpoint.address, ttl);
                }
            }
            for (&slot, &target) in scratch.slots.iter().zip(&scratch.targets) {
                out.extend_from_slice(&wire::pointer(target));
                put_address(out, service.slots[slot as usize].address, ttl);
            }
        });
        if let Some(payload) = response_payload {
            // Root owner, type OPT, class = payload size, extended RCODE 0,
            // version 0, DO clear, no options.
            out.push(0);
            out.extend_from_slice(&TYPE_OPT.to_be_bytes());
            out.extend_from_slice(&payload.to_be_bytes());
            out.extend_from_slice(&[0; 6]);
        }
        debug_assert_eq!(out.len(), total);
        true
    }
}

/// Type, class IN, TTL and RDLENGTH of a record (after its owner name).
fn put_rr_fixed(out: &mut Vec<u8>, rtype: u16, ttl: [u8; 4], rdata_len: u16) {
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.extend_from_slice(&ttl);
    out.extend_from_slice(&rdata_len.to_be_bytes());
}

/// The rest of an A or AAAA record whose owner name is already written.
fn put_address(out: &mut Vec<u8>, address: IpAddr, ttl: [u8; 4]) {
    match address {
        IpAddr::V4(v4) => {
            put_rr_fixed(out, TYPE_A, ttl, A_RDATA_LEN as u16);
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            put_rr_fixed(out, TYPE_AAAA, ttl, AAAA_RDATA_LEN as u16);
            out.extend_from_slice(&v6.octets());
        }
    }
}

/// Parses `record`, which must be exactly one OPT record at the root with
/// EDNS version 0 and well-formed options; returns its UDP payload size.
fn parse_opt(record: &[u8]) -> Option<u16> {
    let fixed = record.get(..OPT_LEN)?;
    let field = |at: usize| u16::from_be_bytes([fixed[at], fixed[at + 1]]);
    // Root name, type OPT; fixed[5] is the extended RCODE, [6] the version.
    if fixed[0] != 0 || field(1) != TYPE_OPT || fixed[6] != 0 {
        return None;
    }
    let payload = field(3);
    let mut options = record.get(OPT_LEN..)?;
    if options.len() != usize::from(field(9)) {
        return None;
    }
    while !options.is_empty() {
        let header = options.get(..4)?;
        let code = u16::from_be_bytes([header[0], header[1]]);
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        if PARSED_OPTIONS.contains(&code) {
            return None;
        }
        options = options.get(4 + len..)?;
    }
    Some(payload)
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashMap,
        net::SocketAddr,
        sync::{Arc, Mutex},
    };

    use arc_swap::ArcSwap;
    use hickory_proto::{
        op::{Edns, Message, Query, ResponseCode},
        rr::{Name, RData, Record, RecordType},
    };
    use hickory_server::{
        net::{NetError, runtime::TokioTime, xfer::Protocol},
        server::{Request, RequestHandler, ResponseHandler, ResponseInfo},
        zone_handler::MessageResponse,
    };

    use super::*;
    use crate::{
        dns::DnsHandler,
        dns::table::TableSettings,
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
    /// maintenance), `six` (IPv6 only), `mixed` (both) and `big` (40 × IPv4).
    fn table() -> RecordTable {
        let settings = TableSettings {
            domain: Name::from_ascii(DOMAIN).unwrap(),
            ttl: 17,
            negative_ttl: 5,
            include_warning: false,
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
                // OPT present iff asked, DO clear, size bounded by ours.
                assert_eq!(answer.edns.is_some(), edns.is_some(), "{name} {qtype}");
                if let Some(opt) = &answer.edns {
                    assert!(!opt.flags().dnssec_ok);
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
        // 12 header + 23 question; each SRV 2 + 10 + 6 + 6 + 2, each A 16.
        assert_eq!(bytes.len(), 12 + 23 + 3 * 26 + 3 * 16);
    }

    #[test]
    fn a_batch_answers_each_query_as_alone() {
        let handler = handler();
        let mut queries = vec![Vec::new()]; // an empty slot: declined
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
        // Twice: the service cache misses, then hits.
        handler.answer_fast_batch(&queries, &mut cache, &mut outs, &mut answered);
        handler.answer_fast_batch(&queries, &mut cache, &mut outs, &mut answered);
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
            handler.answer_fast_batch(&queries, &mut cache, &mut outs, &mut answered);
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
        assert!(fast(&handler, &cookie).is_some(), "a cookie is fine");
        let mut short = cookie.clone();
        short[opt + 10] = 11;
        unanswered(&short);
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
}
