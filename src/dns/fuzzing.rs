//! Entry points for the coverage-guided fuzzer in `fuzz/` (see its
//! README): the UDP path exactly as the UDP loop runs it, and the query-name
//! parser, over a small fixed table. Hidden from the docs and not part of
//! roster's API; the server never calls it.
//!
//! Owns: nothing the server uses. Must not: change how the server answers.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{Arc, Mutex},
    task::{Context, Poll, Waker},
};

use arc_swap::ArcSwap;
use hickory_proto::rr::{LowerName, Name};

use super::{
    DnsHandler, KeyRing, ServiceScope, UpdateApplier, UpdateFuture,
    service_cache::ServiceCache,
    table::{RecordTable, TableSettings},
    udp::{self, Reply},
    zones::StaticZones,
};
use crate::{
    config::UpdateKey,
    model::{InstanceBody, ServiceName},
    registry::state::{InstanceState, ServiceState},
};

/// The most datagrams [`UdpTarget::answer`] takes at once (the UDP loop's
/// batch).
pub const MAX_BATCH: usize = super::fast::MAX_BATCH;
/// The dynamic domain the fuzz table serves.
pub const DOMAIN: &str = "service.local.";
/// roster's UDP payload limit in the fuzz table's handler.
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// The services in the fuzz table: `web` (tagged, weighted, one instance
/// in maintenance), `six` (IPv6), `mixed` (both) and `big` (too many for
/// 512 bytes). Every name form the parser knows has something to find.
const SERVICES: &[(&str, &[(&str, &str)])] = &[
    (
        "web",
        &[
            (
                "web-1",
                r#"{"address":"10.0.0.1","port":80,"tags":["v2","primary"],"weight":3,"priority":2}"#,
            ),
            (
                "web-2",
                r#"{"address":"10.0.0.2","port":81,"meta":{"k":"v"}}"#,
            ),
            ("web-3", r#"{"address":"10.0.0.3","port":82,"tags":["v2"]}"#),
            ("web-4", r#"{"address":"10.0.0.4","port":83}"#),
        ],
    ),
    (
        "six",
        &[("six-1", r#"{"address":"2001:db8::1","port":90}"#)],
    ),
    (
        "mixed",
        &[
            ("m-1", r#"{"address":"10.1.0.1","port":1,"tags":["a"]}"#),
            ("M 2", r#"{"address":"2001:db8::2","port":2}"#),
        ],
    ),
];

/// The UDP path over the fuzz table, with the UDP loop's per-thread state.
pub struct UdpTarget {
    handler: DnsHandler,
    cache: ServiceCache,
    outs: Vec<Vec<u8>>,
}

impl Default for UdpTarget {
    fn default() -> Self {
        Self::new()
    }
}

impl UdpTarget {
    /// Builds the fuzz table and a handler over it. Panics only if the
    /// fixed table above is invalid.
    pub fn new() -> Self {
        let domain = Name::from_ascii(DOMAIN).expect("the fuzz domain is a name");
        let settings = TableSettings {
            domain: domain.clone(),
            ttl: 17,
            negative_ttl: 5,
            include_warning: false,
            nameserver: std::sync::Arc::new(crate::dns::table::Nameserver::conventional(&domain)),
        };
        let mut table = RecordTable::default();
        let mut services: Vec<(String, Vec<(String, String)>)> = SERVICES
            .iter()
            .map(|(service, instances)| {
                let instances = instances
                    .iter()
                    .map(|(id, body)| ((*id).to_owned(), (*body).to_owned()))
                    .collect();
                ((*service).to_owned(), instances)
            })
            .collect();
        let big = (0..40)
            .map(|i| {
                let body = format!(r#"{{"address":"10.2.0.{i}","port":8080}}"#);
                (format!("big-{i}"), body)
            })
            .collect();
        services.push(("big".to_owned(), big));
        for (service, instances) in &services {
            let name = ServiceName::parse(service).expect("a valid fuzz service name");
            let mut state = ServiceState::new(name);
            for (id, body) in instances {
                let body: InstanceBody = serde_json::from_str(body).expect("a fuzz body");
                let instance = body.validate(service, id).expect("a valid fuzz instance");
                state.insert(Arc::new(InstanceState {
                    instance: Arc::new(instance),
                    checks: Vec::new(),
                    maintenance: (id == "web-4").then(|| "drain".to_owned()),
                    create_index: 1,
                    modify_index: 1,
                }));
            }
            table.update_service(service, Some(&state), &settings);
        }
        table.set_index(7, &settings);
        let handler = DnsHandler::new(
            Arc::new(ArcSwap::from_pointee(table)),
            Arc::new(StaticZones::default()),
            LowerName::new(&domain),
            MAX_UDP_PAYLOAD,
        );
        // With a key, so signed requests and UPDATEs take the paths they
        // take in a server with updates on (a MAC the fuzzer makes up does
        // not verify; the applier changes nothing).
        let key = UpdateKey {
            name: FUZZ_KEY.to_owned(),
            algorithm: "hmac-sha256".to_owned(),
            secret: "ZnV6ei1rZXktc2l4dGVlbi1ieXRlcy1sb25n".to_owned(),
            services: vec!["*".to_owned()],
        };
        let handler = match KeyRing::from_config(&[key]) {
            Ok(keys) => handler.with_updates(keys, Arc::new(NoUpdates)),
            Err(_) => handler,
        };
        Self {
            handler,
            cache: ServiceCache::default(),
            outs: vec![Vec::new(); MAX_BATCH],
        }
    }

    /// Answers `datagrams` (at most [`MAX_BATCH`]) as the UDP loop does:
    /// the fast path takes the batch, the general path each one it
    /// declines. `None`: nothing would be sent. The second value says
    /// whether the datagram was counted as malformed.
    pub fn answer(&mut self, datagrams: &[&[u8]]) -> Vec<(Option<Vec<u8>>, bool)> {
        let datagrams = &datagrams[..datagrams.len().min(MAX_BATCH)];
        let mut answered = [false; MAX_BATCH];
        let source = SocketAddr::from(([192, 0, 2, 1], 5353));
        let clients = [Some(source.ip()); MAX_BATCH];
        self.handler.answer_fast_batch(
            datagrams,
            &clients[..datagrams.len()],
            &mut self.cache,
            &mut self.outs,
            &mut answered,
        );
        datagrams
            .iter()
            .zip(&self.outs)
            .zip(answered)
            .map(|((datagram, out), answered)| {
                if answered {
                    return (Some(out.clone()), false);
                }
                let reply = Capture::default();
                let outcome = run_to_end(udp::answer_general(
                    &self.handler,
                    datagram,
                    source,
                    reply.clone(),
                ));
                let sent = reply.0.lock().map(|mut sent| sent.take()).unwrap_or(None);
                (sent, outcome.malformed)
            })
            .collect()
    }
}

/// The TSIG key of the fuzz handler.
const FUZZ_KEY: &str = "fuzz-key.";

/// Takes every update and changes nothing.
struct NoUpdates;

impl UpdateApplier for NoUpdates {
    fn apply(
        &self,
        _key: &Name,
        _scope: ServiceScope,
        _prerequisites: Vec<hickory_proto::rr::Record>,
        _updates: Vec<hickory_proto::rr::Record>,
    ) -> UpdateFuture {
        Box::pin(async { hickory_proto::op::ResponseCode::NoError })
    }
}

/// Collects what the general path sends.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Option<Vec<u8>>>>);

impl Reply for Capture {
    fn send(&self, bytes: &[u8]) {
        if let Ok(mut sent) = self.0.lock() {
            *sent = Some(bytes.to_vec());
        }
    }
}

/// Polls `future` until it is ready. The general path waits on nothing,
/// so this takes one poll; no runtime is needed, and none adds edges.
pub(super) fn run_to_end<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut context = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::yield_now();
    }
}

/// The query-name parser: how `name` (at or below [`DOMAIN`]) classifies,
/// as text; `None` if `name` is outside the domain.
pub fn classify_name(name: &Name) -> Option<String> {
    let domain = LowerName::new(&Name::from_ascii(DOMAIN).ok()?);
    let name = LowerName::new(name);
    domain
        .zone_of(&name)
        .then(|| format!("{:?}", super::query::parse(&name, &domain)))
}
