//! The hickory `RequestHandler`: protocol rules (opcode, class, EDNS, size
//! limits) around [`lookup::resolve`]. The socket loops ([`super::udp`],
//! [`super::tcp`]) own the sockets, hickory the wire format; this owns what
//! is said.

use std::{borrow::Cow, sync::Arc};

use arc_swap::ArcSwap;
use hickory_proto::{
    op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode},
    rr::{
        DNSClass, LowerName, Name, RData, Record, RecordType,
        rdata::tsig::{TSIG, TsigError, make_tsig_record},
    },
};
use hickory_server::{
    net::{runtime::Time, xfer::Protocol},
    server::{Request, RequestHandler, ResponseHandler, ResponseInfo},
    zone_handler::MessageResponseBuilder,
};
use tracing::debug;

use super::table::RecordTable;
use super::{
    fast::FastPath,
    fit,
    lookup::{self, Answer, Sources},
    service_cache::ServiceCache,
    wire,
    zones::StaticZones,
};

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
        }
    }

    /// One query through [`Self::answer_fast_batch`], with a cache of its
    /// own: for tests.
    #[cfg(test)]
    pub fn answer_fast(&self, query: &[u8], out: &mut Vec<u8>) -> bool {
        self.answer_fast_one(query, &mut ServiceCache::default(), out)
    }

    /// One query through [`Self::answer_fast_batch`]: the DNS-over-TCP
    /// loop's, which reads one message at a time. Its answers are the
    /// UDP ones' (every one of them fits the datagram the query allows, so
    /// none is ever truncated); anything bigger goes the general path.
    pub fn answer_fast_one(
        &self,
        query: &[u8],
        cache: &mut ServiceCache,
        out: &mut Vec<u8>,
    ) -> bool {
        let mut answered = [false];
        let outs = std::slice::from_mut(out);
        self.answer_fast_batch(&[query], cache, outs, &mut answered);
        answered[0]
    }

    /// Answers a batch of at most `fast::MAX_BATCH` raw UDP queries
    /// on the fast path, if they are among the common questions it answers
    /// exactly as [`Self::handle_request`] would (see `fast`), from
    /// one snapshot of the table, finding services through the calling
    /// thread's `cache`: `answered[i]` says whether `outs[i]` holds the
    /// answer to `queries[i]`; `false` means: use the general path.
    pub fn answer_fast_batch(
        &self,
        queries: &[&[u8]],
        cache: &mut ServiceCache,
        outs: &mut [Vec<u8>],
        answered: &mut [bool],
    ) {
        self.fast
            .answer_batch(queries, &self.table.load(), cache, outs, answered)
    }

    /// The response's OPT record: present when the query had one, offering
    /// the smaller of the client's size (at least 512) and roster's limit.
    fn response_edns(&self, request: &Request) -> Option<Edns> {
        let requested = request.edns.as_ref()?;
        let mut edns = Edns::new();
        edns.set_version(EDNS_VERSION);
        // RFC 3225 section 3: the DO bit MUST be copied to the response.
        edns.set_dnssec_ok(requested.flags().dnssec_ok);
        edns.set_max_payload(wire::response_payload(
            requested.max_payload(),
            self.max_udp_payload,
        ));
        Some(edns)
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
        mut response_handle: R,
    ) -> ResponseInfo {
        let edns = self.response_edns(request);
        let builder = || MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let error = |code| builder().error_msg(&request.metadata, code);

        // RFC 8945 section 5.1: a TSIG must be the message's last record.
        let misplaced_tsig = request.additionals.iter().rev().skip(1);
        if misplaced_tsig
            .into_iter()
            .any(|r| r.record_type() == RecordType::TSIG)
        {
            return send(&mut response_handle, error(ResponseCode::FormErr), request).await;
        }
        if let Some((key, signature)) = tsig_of(request) {
            let mut response = error(ResponseCode::NotAuth);
            response.set_signature(Box::new(unknown_key(key, signature)));
            return send(&mut response_handle, response, request).await;
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
                let response = builder().error_msg(&asked, code);
                return send(&mut response_handle, response, request).await;
            }
            return send(&mut response_handle, error(code), request).await;
        }
        let query = &request.queries.queries()[0];
        let qtype = query.query_type();
        if query.query_class() != DNSClass::IN
            || matches!(qtype, RecordType::AXFR | RecordType::IXFR)
        {
            // Not an open resolver, and no zone transfers.
            return send(&mut response_handle, error(ResponseCode::Refused), request).await;
        }

        let table = self.table.load_full();
        let sources = Sources {
            domain: &self.domain,
            table: &table,
            zones: &self.zones,
        };
        let mut answer: Answer<'_> = lookup::resolve(&sources, query.name(), qtype);
        keep_query_case(&mut answer, query.original().name());
        let truncated = match request.protocol() {
            Protocol::Udp => {
                let limit = wire::udp_limit(edns.as_ref().map(Edns::max_payload));
                fit::fit(
                    &mut answer,
                    request.queries.as_bytes().len(),
                    usize::from(limit),
                    edns.is_some(),
                )
            }
            _ => false,
        };
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = answer.rcode;
        metadata.authoritative = answer.authoritative;
        metadata.truncation = truncated;
        let response = builder().build(
            metadata,
            answer.answers.iter().map(Cow::as_ref),
            answer.authority.iter().map(Cow::as_ref),
            std::iter::empty::<&Record>(),
            answer.additionals.iter().map(Cow::as_ref),
        );
        send(&mut response_handle, response, request).await
    }
}

/// The TSIG record of the answer to a request signed with a key roster does
/// not hold, which is every key: roster has none. RFC 8945 section 5.2.1
/// wants NOTAUTH and TSIG error BADKEY, unsigned (no MAC: a MAC needs the
/// key), with the request's key name, algorithm, time, fudge and ID, so the
/// client can tell which of its requests failed and why.
fn unknown_key(key: &Name, request: &TSIG) -> Record<TSIG> {
    let rdata = TSIG::new(
        request.algorithm.clone(),
        request.time,
        request.fudge,
        Vec::new(),
        request.oid,
        Some(TsigError::BadKey),
        Vec::new(),
    );
    make_tsig_record(key.clone(), rdata)
}

/// The request's TSIG record (key name and data), if it is signed. hickory
/// lifts it out of the additional section only with its DNSSEC features,
/// which roster does not build; then it stays there, last (hickory's parser
/// refuses a record after it).
fn tsig_of(request: &Request) -> Option<(&Name, &TSIG)> {
    if let Some(signature) = request.signature.as_deref() {
        return Some((&signature.name, &signature.data));
    }
    match request.additionals.last() {
        Some(Record {
            name,
            data: RData::TSIG(tsig),
            ..
        }) => Some((name, tsig)),
        _ => None,
    }
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
