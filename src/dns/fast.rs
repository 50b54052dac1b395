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
    self, A_RDATA_LEN, AAAA_RDATA_LEN, CLASS_IN, FLAG_AA, FLAG_CD, FLAG_DO, FLAG_QR, FLAG_RD,
    HEADER_LEN, MAX_LABEL_LEN, MAX_POINTER_TARGET, OPCODE_MASK, OPT_LEN, QUESTION_POINTER, TYPE_A,
    TYPE_AAAA, TYPE_OPT, TYPE_SRV,
};
use super::{
    cookies::{self, Cookie, Cookies, Seen as CookieSeen},
    lookup::shuffle,
    service_cache::ServiceCache,
    zones::StaticZones,
};

/// EDNS options that hickory parses into typed values (NSID, client subnet)
/// and may reject; a query carrying one goes the general path so that a
/// malformed one gets the same FORMERR it gets there.
const PARSED_OPTIONS: [u16; 2] = [3, 8];
/// An EDNS option's code and length, before its data.
const OPTION_HEADER_LEN: usize = 4;
/// What each query of a batch held in its COOKIE option, if it had one
/// and was answered.
pub type BatchCookies = [Option<CookieSeen>; MAX_BATCH];

/// The most queries [`FastPath::answer_batch`] takes at once.
pub(super) use super::service_cache::MAX_BATCH;

thread_local! {
    /// Per-thread scratch for one answer: the shuffled positions and the offsets
    /// of the SRV targets. Reused, so no query allocates once it has grown.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

#[derive(Default)]
struct Scratch {
    positions: Vec<u32>,
    targets: Vec<u16>,
}

/// What the fast path needs besides the table; built once at start.
#[derive(Clone, Debug)]
pub(super) struct FastPath {
    /// The dynamic domain in wire form, lower-case (`\x07service\x05local\x00`).
    domain: Box<[u8]>,
    /// roster's largest UDP answer (`dns.max_udp_payload`).
    max_udp_payload: u16,
    /// Lower-case labels `L` where `L.<domain>` holds static records or is
    /// the origin of a static zone: those names go the general path, which
    /// merges or defers to the static data.
    shadowed: HashSet<Box<[u8]>>,
    /// Server cookies for queries with a COOKIE option, as the general
    /// path makes them; `None` ignores the option.
    cookies: Option<Cookies>,
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
    /// The OPT record's DO bit, which the response's OPT echoes (RFC 3225
    /// section 3: it MUST be copied).
    dnssec_ok: bool,
    /// The first COOKIE option, well-formed, when cookies are on.
    cookie: Option<Cookie<'q>>,
}

impl FastPath {
    pub(super) fn new(domain: &LowerName, zones: &StaticZones, max_udp_payload: u16) -> Self {
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
            cookies: None,
        }
    }

    /// Answers COOKIE options with server cookies from `cookies`.
    pub(super) fn set_cookies(&mut self, cookies: Cookies) {
        self.cookies = Some(cookies);
    }

    /// Answers a batch of raw UDP queries: `answered[i]` says whether
    /// `outs[i]` holds the answer to `queries[i]`, or whether it goes the
    /// general path (leaving `outs[i]` in any state). At most [`MAX_BATCH`]
    /// queries; services are found through the calling thread's `cache`.
    /// `clients[i]` is the address `queries[i]` came from, which a server
    /// cookie is made for; a COOKIE without one goes the general path.
    /// Returns what the answered queries' COOKIE options held, by index.
    ///
    /// Why batches: on a large table the time goes to cache misses (the
    /// service lookup, then each service's answer data), and one query's
    /// misses come one after another. Looking up the whole batch first,
    /// asking the CPU to fetch each service's answer data as it is found,
    /// then encoding them all, lets those fetches overlap.
    pub(super) fn answer_batch(
        &self,
        queries: &[&[u8]],
        clients: &[Option<IpAddr>],
        table: &RecordTable,
        cache: &mut ServiceCache,
        outs: &mut [Vec<u8>],
        answered: &mut [bool],
    ) -> BatchCookies {
        let mut cookies_seen: BatchCookies = [None; MAX_BATCH];
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
            let service = question.as_ref().and_then(|q| self.service_label(q, lower));
            // The apex NS target's name is the name server's, not a service's.
            let nameserver = table.nameserver.as_deref();
            if let Some(service) =
                service.filter(|l| !nameserver.is_some_and(|ns| ns.owns_label(l)))
            {
                *label = service;
            }
        }
        let mut services: [Option<&ServiceRecords>; MAX_BATCH] = [None; MAX_BATCH];
        cache.find_batch(table, &labels[..count], &mut services[..count]);
        for service in services.iter().flatten() {
            service.prefetch_answer_data();
        }
        // One clock read and one look at the secrets a batch, and neither
        // in a batch without a cookie.
        let any_cookie = questions.iter().flatten().any(|q| q.cookie.is_some());
        let keys = self
            .cookies
            .as_ref()
            .filter(|_| any_cookie)
            .map(Cookies::keys);
        let now = keys.as_ref().map_or(0, |_| cookies::now());
        let found = questions.into_iter().zip(services);
        let work = queries.iter().zip(found).zip(outs.iter_mut().zip(answered));
        for (index, ((query, (question, service)), (out, answered))) in work.enumerate() {
            let (Some(question), Some(service)) = (question, service) else {
                *answered = false;
                continue;
            };
            let client = clients.get(index).copied().flatten();
            let cookie = match (&question.cookie, &keys, client) {
                (None, _, _) => None,
                (Some(cookie), Some(keys), Some(client)) => Some(keys.answer(cookie, client, now)),
                // A COOKIE from an unknown address: the general path's.
                _ => {
                    *answered = false;
                    continue;
                }
            };
            *answered = self.encode(query, &question, service, cookie.map(|c| c.0).as_ref(), out);
            // Counted once answered: the general path counts the others.
            if let (true, Some((_, seen))) = (*answered, cookie) {
                cookies_seen[index] = Some(seen);
            }
        }
        cookies_seen
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
        let (edns_payload, dnssec_ok, cookie) = match additional {
            0 => (None, false, None),
            _ => {
                let opt = parse_opt(query.get(question_end..)?)?;
                let cookie = match (opt.cookie, &self.cookies) {
                    // A malformed one: the general path's FORMERR.
                    (Some(data), Some(_)) => Some(Cookie::parse(data)?),
                    _ => None,
                };
                (Some(opt.payload), opt.dnssec_ok, cookie)
            }
        };
        if additional == 0 && question_end != query.len() {
            return None;
        }
        Some(Question {
            bytes: &query[HEADER_LEN..question_end],
            label,
            qtype,
            edns_payload,
            dnssec_ok,
            cookie,
        })
    }

    /// Writes the answer to `question` from `service` into `out`, with
    /// `cookie` as the OPT record's COOKIE option; `false` if it is one the
    /// general path must write.
    fn encode(
        &self,
        query: &[u8],
        question: &Question<'_>,
        service: &ServiceRecords,
        cookie: Option<&[u8; cookies::ANSWER_LEN]>,
        out: &mut Vec<u8>,
    ) -> bool {
        let (positions, answers_len): (Option<&[u32]>, usize) = match question.qtype {
            TYPE_A => {
                let each = wire::compressed_address_len(A_RDATA_LEN);
                (
                    Some(&service.v4_positions),
                    service.v4_positions.len() * each,
                )
            }
            TYPE_AAAA => {
                let each = wire::compressed_address_len(AAAA_RDATA_LEN);
                (
                    Some(&service.v6_positions),
                    service.v6_positions.len() * each,
                )
            }
            // Computed by the table with `wire::srv_pair_len`.
            TYPE_SRV => (None, service.srv_fast_len),
            _ => return false,
        };
        let count = positions.map_or(service.servable(), <[u32]>::len);
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
        let options_len = cookie.map_or(0, |cookie| OPTION_HEADER_LEN + cookie.len());
        let total = wire::response_len(question.bytes.len(), answers_len, with_opt) + options_len;
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
        // SRV targets end in the service name, written out: its label, then
        // the domain (both lower-case, as the general path writes them).
        let service_label = service.label.as_bytes();
        let service_name_len = 1 + service_label.len() + self.domain.len();
        SCRATCH.with(|scratch| {
            let scratch = &mut *scratch.borrow_mut();
            scratch.positions.clear();
            match positions {
                Some(positions) => scratch.positions.extend_from_slice(positions),
                None => scratch.positions.extend(0..count as u32),
            }
            shuffle(&mut scratch.positions);
            scratch.targets.clear();
            for &position in &scratch.positions {
                let endpoint = &service.packed[position as usize];
                out.extend_from_slice(&QUESTION_POINTER);
                if question.qtype == TYPE_SRV {
                    let label = service.packed_label(endpoint);
                    let rdata_len = wire::srv_rdata_len(label.len(), service_name_len);
                    put_rr_fixed(out, TYPE_SRV, ttl, rdata_len as u16);
                    out.extend_from_slice(&endpoint.priority.to_be_bytes());
                    out.extend_from_slice(&endpoint.weight.to_be_bytes());
                    out.extend_from_slice(&endpoint.port.to_be_bytes());
                    // The target in full (RFC 2782: never compressed).
                    scratch.targets.push(out.len() as u16);
                    out.push(label.len() as u8);
                    out.extend_from_slice(label);
                    out.push(service_label.len() as u8);
                    out.extend_from_slice(service_label);
                    out.extend_from_slice(&self.domain);
                } else {
                    put_address(out, endpoint.address, ttl);
                }
            }
            for (&position, &target) in scratch.positions.iter().zip(&scratch.targets) {
                out.extend_from_slice(&wire::pointer(target));
                put_address(out, service.packed[position as usize].address, ttl);
            }
        });
        if let Some(payload) = response_payload {
            // Root owner, type OPT, class = payload size, extended RCODE 0,
            // version 0, the query's DO bit, then the COOKIE if any: the
            // general path's OPT, octet for octet.
            let flags = if question.dnssec_ok { FLAG_DO } else { 0 };
            out.push(0);
            out.extend_from_slice(&TYPE_OPT.to_be_bytes());
            out.extend_from_slice(&payload.to_be_bytes());
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&flags.to_be_bytes());
            out.extend_from_slice(&(options_len as u16).to_be_bytes());
            if let Some(cookie) = cookie {
                out.extend_from_slice(&cookies::OPTION_CODE.to_be_bytes());
                out.extend_from_slice(&(cookie.len() as u16).to_be_bytes());
                out.extend_from_slice(cookie);
            }
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

/// What the fast path reads from a query's OPT record.
struct Opt<'q> {
    /// The client's UDP payload size.
    payload: u16,
    /// The DO bit.
    dnssec_ok: bool,
    /// The first COOKIE option's data (RFC 7873 section 5.2: later ones
    /// are ignored).
    cookie: Option<&'q [u8]>,
}

/// Parses `record`, which must be exactly one OPT record at the root with
/// EDNS version 0 and well-formed options.
fn parse_opt(record: &[u8]) -> Option<Opt<'_>> {
    let fixed = record.get(..OPT_LEN)?;
    let field = |at: usize| u16::from_be_bytes([fixed[at], fixed[at + 1]]);
    // Root name, type OPT; fixed[5] is the extended RCODE, [6] the version.
    if fixed[0] != 0 || field(1) != TYPE_OPT || fixed[6] != 0 {
        return None;
    }
    let payload = field(3);
    let mut cookie = None;
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
        if code == cookies::OPTION_CODE && cookie.is_none() {
            cookie = Some(options.get(4..4 + len)?);
        }
        options = options.get(4 + len..)?;
    }
    Some(Opt {
        payload,
        cookie,
        // The TTL field: extended RCODE [5], version [6], flags [7..9].
        dnssec_ok: field(7) & FLAG_DO != 0,
    })
}

#[cfg(test)]
mod tests;
