//! The hickory `RequestHandler`: protocol rules (opcode, class, EDNS, size
//! limits, TSIG) around [`lookup::resolve`], and the gate of DNS UPDATE
//! (zone, signature), which hands a verified update to the
//! [`UpdateApplier`]. DNS cookies ([`super::cookies`]) ride in its OPT
//! records. The socket loops ([`super::udp`], [`super::tcp`]) own
//! the sockets, hickory the wire format; this owns what is said.

use std::{borrow::Cow, sync::Arc};

use arc_swap::ArcSwap;
use hickory_proto::{
    op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode},
    rr::{
        DNSClass, LowerName, Record, RecordType,
        rdata::{
            opt::{EdnsCode, EdnsOption},
            tsig::{TSIG, TsigAlgorithm, TsigError},
        },
    },
    serialize::binary::BinEncoder,
};
use hickory_server::{
    net::{runtime::Time, xfer::Protocol},
    server::{Request, RequestHandler, ResponseHandler, ResponseInfo},
    zone_handler::{MessageResponse, MessageResponseBuilder},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

use super::table::RecordTable;
use super::{
    cookies::{self, Cookie, Cookies, Seen as CookieSeen},
    fast::{BatchCookies, FastPath},
    fit,
    lookup::{self, Answer, Sources},
    service_cache::ServiceCache,
    tsig::{self, KeyRing, Verdict},
    updates::UpdateApplier,
    wire,
    zones::StaticZones,
};
use crate::metrics::{UpdateCounters, dns::CookieCounts};

/// The only EDNS version roster speaks (RFC 6891).
const EDNS_VERSION: u8 = 0;

/// Answers DNS queries from the record table and the static zones.
/// Cheap to clone: one per UDP loop and per TCP connection.
#[derive(Clone)]
pub struct DnsHandler {
    table: Arc<ArcSwap<RecordTable>>,
    zones: Arc<StaticZones>,
    domain: LowerName,
    max_udp_payload: u16,
    /// The allocation-free encoder for the common questions (UDP only).
    fast: Arc<FastPath>,
    /// The TSIG keys signed requests are checked against; empty unless
    /// DNS UPDATE is on.
    keys: Arc<KeyRing>,
    /// Where verified UPDATEs go; `None` refuses every UPDATE.
    updates: Option<Arc<dyn UpdateApplier>>,
    /// UPDATEs over UDP being applied at once: each waits for a commit on
    /// the runtime, so a flood of them must not pile up tasks without end.
    update_slots: Arc<Semaphore>,
    /// UPDATE answers by RCODE, when DNS UPDATE is on.
    update_counters: Option<Arc<UpdateCounters>>,
    /// Server cookies for queries with a COOKIE option; `None` ignores the
    /// option (`dns.cookies = false`).
    cookies: Option<Cookies>,
    /// Where the general path counts the COOKIE options it answers.
    cookie_counts: Option<Arc<CookieCounts>>,
}

/// Most UDP UPDATEs in flight; one more is dropped (its client retries).
const UDP_UPDATES_IN_FLIGHT: usize = 64;

/// How to sign an answer: with the key that signed the request, over its
/// MAC (RFC 8945 section 5.3).
struct Signing<'k> {
    key: &'k tsig::Key,
    request_mac: Vec<u8>,
    /// The answer's ID, which its TSIG's Original ID must repeat: the MAC
    /// is over the message with that ID (RFC 8945 section 4.3), and the
    /// client checks it against the header it got, whatever the request's
    /// TSIG said (a forwarder may have changed the request's ID).
    id: u16,
    /// BADTIME: the request's signing time, for the answer's TSIG.
    bad_time: Option<u64>,
}

impl DnsHandler {
    pub fn new(
        table: Arc<ArcSwap<RecordTable>>,
        zones: Arc<StaticZones>,
        domain: LowerName,
        max_udp_payload: u16,
    ) -> Self {
        let fast = Arc::new(FastPath::new(&domain, &zones, max_udp_payload));
        Self {
            table,
            zones,
            domain,
            max_udp_payload,
            fast,
            keys: Arc::new(KeyRing::default()),
            updates: None,
            update_slots: Arc::new(Semaphore::new(UDP_UPDATES_IN_FLIGHT)),
            update_counters: None,
            cookies: None,
            cookie_counts: None,
        }
    }

    /// Answers DNS cookies (RFC 7873) with server cookies made by
    /// `cookies`, on the fast path and the general one alike.
    pub fn with_cookies(mut self, cookies: Cookies) -> Self {
        Arc::make_mut(&mut self.fast).set_cookies(cookies.clone());
        self.cookies = Some(cookies);
        self
    }

    /// Whether the raw `query` from `source` carries a server cookie roster
    /// made for it: proof that the source address is the client's own,
    /// which the UDP loop exempts from rate limiting. Walks the raw query
    /// to its OPT record only when cookies are on.
    pub(super) fn has_valid_cookie(&self, query: &[u8], source: std::net::IpAddr) -> bool {
        let Some(cookies) = &self.cookies else {
            return false;
        };
        super::precheck::cookie_option(query)
            .and_then(Cookie::parse)
            .is_some_and(|cookie| {
                cookies.standing(&cookie, source, cookies::now()) == cookies::Standing::Valid
            })
    }

    /// Turns DNS UPDATE on: requests signed with `keys` are verified and
    /// answered signed, and UPDATEs to the dynamic domain go to `updates`.
    pub fn with_updates(mut self, keys: KeyRing, updates: Arc<dyn UpdateApplier>) -> Self {
        self.keys = Arc::new(keys);
        self.updates = Some(updates);
        self
    }

    /// Counts every UPDATE's answer, by RCODE, into `counters`.
    pub fn with_update_counters(mut self, counters: Arc<UpdateCounters>) -> Self {
        self.update_counters = Some(counters);
        self
    }

    /// Counts the COOKIE options the general path answers in `counts`
    /// (the fast path's callers count its own).
    pub fn with_cookie_counts(mut self, counts: Arc<CookieCounts>) -> Self {
        self.cookie_counts = Some(counts);
        self
    }

    fn count_cookie(&self, seen: CookieSeen) {
        if let Some(counts) = &self.cookie_counts {
            counts.count(seen);
        }
    }

    /// A slot for one more UDP UPDATE in flight, if there is one.
    pub(super) fn update_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.update_slots.clone().try_acquire_owned().ok()
    }

    /// Whether a raw message is an UPDATE (opcode 5), which the UDP
    /// threads hand to the runtime rather than wait for its commit.
    pub(super) fn is_update(message: &[u8]) -> bool {
        message
            .get(2)
            .is_some_and(|flags| (flags >> 3) & 0x0f == u8::from(OpCode::Update))
    }

    /// One query through [`Self::answer_fast_batch`], with a cache of its
    /// own: for tests.
    #[cfg(test)]
    pub fn answer_fast(&self, query: &[u8], out: &mut Vec<u8>) -> bool {
        // Where the general path's tests' requests come from.
        let client = std::net::IpAddr::from([127, 0, 0, 1]);
        self.answer_fast_one(query, client, &mut ServiceCache::default(), out)
            .is_some()
    }

    /// One query through [`Self::answer_fast_batch`]: the DNS-over-TCP
    /// loop's, which reads one message at a time. Its answers are the
    /// UDP ones' (every one of them fits the datagram the query allows, so
    /// none is ever truncated); anything bigger goes the general path.
    /// `client` is the query's source, for a server cookie. `None` when
    /// the query goes the general path; else what its COOKIE held, if any.
    pub fn answer_fast_one(
        &self,
        query: &[u8],
        client: std::net::IpAddr,
        cache: &mut ServiceCache,
        out: &mut Vec<u8>,
    ) -> Option<Option<CookieSeen>> {
        let mut answered = [false];
        let outs = std::slice::from_mut(out);
        let clients = [Some(client)];
        let seen = self.answer_fast_batch(&[query], &clients, cache, outs, &mut answered);
        answered[0].then_some(seen[0])
    }

    /// Answers a batch of at most `fast::MAX_BATCH` raw UDP queries
    /// on the fast path, if they are among the common questions it answers
    /// exactly as [`Self::handle_request`] would (see `fast`), from
    /// one snapshot of the table, finding services through the calling
    /// thread's `cache`: `answered[i]` says whether `outs[i]` holds the
    /// answer to `queries[i]`; `false` means: use the general path.
    /// `clients[i]` is where `queries[i]` came from (for server cookies).
    /// Returns what the answered queries' COOKIE options held, by index.
    pub fn answer_fast_batch(
        &self,
        queries: &[&[u8]],
        clients: &[Option<std::net::IpAddr>],
        cache: &mut ServiceCache,
        outs: &mut [Vec<u8>],
        answered: &mut [bool],
    ) -> BatchCookies {
        let table = self.table.load();
        self.fast
            .answer_batch(queries, clients, &table, cache, outs, answered)
    }

    /// The response's OPT record: present when the query had one, offering
    /// the smaller of the client's size (at least 512) and roster's limit,
    /// with a COOKIE option answering the query's `cookie`, if any.
    fn response_edns(&self, request: &Request, cookie: Option<&Cookie<'_>>) -> Option<Edns> {
        let requested = request.edns.as_ref()?;
        let mut edns = Edns::new();
        edns.set_version(EDNS_VERSION);
        // RFC 3225 section 3: the DO bit MUST be copied to the response.
        edns.set_dnssec_ok(requested.flags().dnssec_ok);
        edns.set_max_payload(wire::response_payload(
            requested.max_payload(),
            self.max_udp_payload,
        ));
        if let (Some(cookies), Some(cookie)) = (&self.cookies, cookie) {
            let (data, seen) = cookies.answer(cookie, request.src().ip(), cookies::now());
            self.count_cookie(seen);
            edns.options_mut()
                .insert(EdnsOption::Unknown(cookies::OPTION_CODE, data.to_vec()));
        }
        Some(edns)
    }

    /// The query's first COOKIE option (RFC 7873 section 5.2: the others
    /// are ignored) when cookies are on: `Err` for a malformed one.
    fn query_cookie<'r>(&self, request: &'r Request) -> Option<Result<Cookie<'r>, ()>> {
        self.cookies.as_ref()?;
        match request.edns.as_ref()?.option(EdnsCode::Cookie)? {
            EdnsOption::Unknown(_, data) => Some(Cookie::parse(data).ok_or(())),
            _ => None,
        }
    }
}

fn servfail(request: &Request) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = ResponseCode::ServFail;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

#[async_trait::async_trait]
impl RequestHandler for DnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let info = self.answer(request, response_handle).await;
        if request.metadata.op_code == OpCode::Update
            && let Some(counters) = &self.update_counters
        {
            counters.count(u16::from(info.response_code));
        }
        info
    }
}

impl DnsHandler {
    /// What [`RequestHandler::handle_request`] answers.
    async fn answer<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        // Read once: a malformed one gets FORMERR below, a good one its
        // answer in the OPT record.
        let cookie = self.query_cookie(request);
        let edns = self.response_edns(request, cookie.as_ref().and_then(|c| c.as_ref().ok()));
        let builder = || MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let error = |code| builder().error_msg(&request.metadata, code);

        // A TSIG that is not the message's last record (RFC 8945 section
        // 5.1) never gets here: hickory's parser refuses the message, and
        // the socket loops answer FORMERR.
        let signing = match request.signature.as_deref().map(|s| (&s.name, &s.data)) {
            None => None,
            Some((key_name, signature)) => {
                let now = tsig::now();
                match self
                    .keys
                    .verify(request.as_slice(), key_name, signature, now)
                {
                    Verdict::Valid { key, request_mac } => Some(Signing {
                        key,
                        request_mac,
                        id: request.metadata.id,
                        bad_time: None,
                    }),
                    Verdict::BadTime { key, request_mac } => {
                        let signing = Signing {
                            key,
                            request_mac,
                            id: request.metadata.id,
                            bad_time: Some(signature.time),
                        };
                        let response = || error(ResponseCode::NotAuth);
                        return respond(&mut response_handle, request, Some(&signing), response)
                            .await;
                    }
                    Verdict::BadSignature => {
                        let mut response = error(ResponseCode::NotAuth);
                        let tsig = tsig::unsigned(key_name, signature, TsigError::BadSig);
                        response.set_signature(Box::new(tsig));
                        return send(&mut response_handle, response, request).await;
                    }
                    Verdict::UnknownKey if is_gss(signature) => {
                        // GSS-TSIG (RFC 3645) needs a Kerberos realm roster
                        // is not part of: not a key it lacks, a method it
                        // does not take.
                        let response = error(ResponseCode::Refused);
                        return send(&mut response_handle, response, request).await;
                    }
                    Verdict::UnknownKey => {
                        let mut response = error(ResponseCode::NotAuth);
                        let tsig = tsig::unsigned(key_name, signature, TsigError::BadKey);
                        response.set_signature(Box::new(tsig));
                        return send(&mut response_handle, response, request).await;
                    }
                }
            }
        };
        let signing = signing.as_ref();
        if matches!(cookie, Some(Err(()))) {
            // RFC 7873 section 5.2.2: a COOKIE option of a wrong length.
            self.count_cookie(CookieSeen::Malformed);
            return respond(&mut response_handle, request, signing, || {
                error(ResponseCode::FormErr)
            })
            .await;
        }
        if request.metadata.op_code == OpCode::Update {
            let code = self.update(request, signing).await;
            let response =
                || builder().build_no_records(Metadata::response_from_request(&request.metadata));
            let response = || {
                let mut response = response();
                response.metadata_mut().response_code = code;
                response
            };
            return respond(&mut response_handle, request, signing, response).await;
        }
        let refusal = if request.metadata.op_code != OpCode::Query {
            Some(ResponseCode::NotImp)
        } else if request
            .edns
            .as_ref()
            .is_some_and(|e| e.version() > EDNS_VERSION)
        {
            Some(ResponseCode::BADVERS)
        } else if request.queries.queries().len() != 1 {
            Some(ResponseCode::FormErr)
        } else {
            None
        };
        if let Some(code) = refusal {
            if code == ResponseCode::NotImp {
                // Of the request's flags only RD means anything outside a
                // QUERY; echo it alone, as Knot does (not CD).
                let mut asked = request.metadata;
                asked.checking_disabled = false;
                let response = || builder().error_msg(&asked, code);
                return respond(&mut response_handle, request, signing, response).await;
            }
            return respond(&mut response_handle, request, signing, || error(code)).await;
        }
        let query = &request.queries.queries()[0];
        let qtype = query.query_type();
        if query.query_class() != DNSClass::IN
            || matches!(qtype, RecordType::AXFR | RecordType::IXFR)
        {
            // Not an open resolver, and no zone transfers.
            let response = || error(ResponseCode::Refused);
            return respond(&mut response_handle, request, signing, response).await;
        }

        let table = self.table.load_full();
        let sources = Sources {
            domain: &self.domain,
            table: &table,
            zones: &self.zones,
        };
        let mut answer: Answer<'_> = lookup::resolve(&sources, query.name(), qtype);
        keep_query_case(&mut answer, query.original().name());
        // Over TCP a message may take 65,535 octets; a service with
        // thousands of instances outgrows even that, and then the OPT
        // record and TC must come out as over UDP, not as hickory's
        // encoder would cut.
        let limit = match request.protocol() {
            Protocol::Udp => wire::udp_limit(edns.as_ref().map(Edns::max_payload)),
            _ => u16::MAX,
        };
        // A signed answer's TSIG must fit too.
        let tsig = signing.map_or(0, |s| tsig::record_len(s.key));
        let truncated = fit::fit(
            &mut answer,
            request.queries.as_bytes().len(),
            usize::from(limit).saturating_sub(tsig),
            wire::opt_record_len(edns.as_ref()),
        );
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = answer.rcode;
        metadata.authoritative = answer.authoritative;
        metadata.truncation = truncated;
        let response = || {
            builder().build(
                metadata,
                answer.answers.iter().map(Cow::as_ref),
                answer.authority.iter().map(Cow::as_ref),
                std::iter::empty::<&Record>(),
                answer.additionals.iter().map(Cow::as_ref),
            )
        };
        respond(&mut response_handle, request, signing, response).await
    }

    /// The RCODE of an UPDATE (RFC 2136 section 3): its zone section must
    /// name the dynamic domain (NOTAUTH elsewhere, REFUSED for a static
    /// zone, which is not roster's to change), and it must be signed with
    /// a key roster holds (verified before this). What it changes is the
    /// registry's business ([`UpdateApplier`]).
    async fn update(&self, request: &Request, signing: Option<&Signing<'_>>) -> ResponseCode {
        let zones = request.queries.queries();
        let [zone] = zones else {
            return ResponseCode::FormErr;
        };
        if zone.query_type() != RecordType::SOA {
            return ResponseCode::FormErr;
        }
        if zone.query_class() != DNSClass::IN || *zone.name() != self.domain {
            return match self.zones.exact(zone.name()) {
                Some(_) if zone.query_class() == DNSClass::IN => ResponseCode::Refused,
                _ => ResponseCode::NotAuth,
            };
        }
        let (Some(signing), Some(updates)) = (signing, self.updates.as_ref()) else {
            // Unsigned, SIG(0) (which hickory no longer verifies), or
            // updates off: nobody roster can name may change DNS.
            debug!(source = %request.src(), "unsigned DNS UPDATE refused");
            return ResponseCode::Refused;
        };
        if signing.bad_time.is_some() {
            return ResponseCode::NotAuth;
        }
        let key_name = signing.key.signer.signer_name();
        updates
            .apply(
                key_name,
                signing.key.scope.clone(),
                request.answers.clone(),
                request.authorities.clone(),
            )
            .await
    }
}

/// Whether a request's TSIG is GSS-TSIG (RFC 3645): Windows and `nsupdate
/// -g` with Kerberos.
fn is_gss(tsig: &TSIG) -> bool {
    match &tsig.algorithm {
        TsigAlgorithm::Gss => true,
        TsigAlgorithm::Unknown(name) => name.to_ascii().eq_ignore_ascii_case("gss.microsoft.com."),
        _ => false,
    }
}

/// Sends the answer `build` makes, signed when the request was: the
/// response is encoded once without its TSIG to compute the MAC (RFC 8945
/// section 5.3), then built again with it. `build` must make the same
/// message both times.
async fn respond<'q, 'a, R, A, N, S, D>(
    handle: &mut R,
    request: &Request,
    signing: Option<&Signing<'_>>,
    build: impl Fn() -> MessageResponse<'q, 'a, A, N, S, D>,
) -> ResponseInfo
where
    R: ResponseHandler,
    A: Iterator<Item = &'a Record> + Send + 'a,
    N: Iterator<Item = &'a Record> + Send + 'a,
    S: Iterator<Item = &'a Record> + Send + 'a,
    D: Iterator<Item = &'a Record> + Send + 'a,
{
    let mut response = build();
    if let Some(signing) = signing {
        let mut unsigned = Vec::with_capacity(512);
        let encoded = build().destructive_emit(&mut BinEncoder::new(&mut unsigned));
        let now = tsig::now();
        let (time, error) = match signing.bad_time {
            Some(requested) => (requested, Some((TsigError::BadTime, now))),
            None => (now, None),
        };
        let signature = encoded.ok().and_then(|_| {
            tsig::sign(
                signing.key,
                &signing.request_mac,
                &unsigned,
                signing.id,
                time,
                error,
            )
        });
        match signature {
            Some(signature) => response.set_signature(signature),
            None => {
                warn!("could not sign a DNS answer; answering SERVFAIL");
                let servfail = MessageResponseBuilder::new(&request.queries, None)
                    .error_msg(&request.metadata, ResponseCode::ServFail);
                return send(handle, servfail, request).await;
            }
        }
    }
    send(handle, response, request).await
}

/// Answers owned by the name asked for carry it as the client spelled it
/// (`WeB.service.local`), as the UDP fast path's do (it points back to the
/// question) and as Knot's and NSD's do: the table holds lower-case names.
fn keep_query_case(answer: &mut Answer<'_>, asked: &hickory_proto::rr::Name) {
    // Most questions are lower case: then there is nothing to do, and
    // nothing is allocated.
    if !asked.iter().flatten().any(u8::is_ascii_uppercase) {
        return;
    }
    for record in &mut answer.answers {
        // `==` on names ignores case; `eq_case` does not.
        if record.name == *asked && !record.name.eq_case(asked) {
            record.to_mut().name = asked.clone();
        }
    }
}

async fn send<'a, R: ResponseHandler>(
    handle: &mut R,
    response: hickory_server::zone_handler::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    request: &Request,
) -> ResponseInfo {
    match handle.send_response(response).await {
        Ok(info) => info,
        Err(error) => {
            debug!(%error, "failed to send DNS response");
            servfail(request)
        }
    }
}
