//! Record tables for unit tests, built from instance bodies in the HTTP
//! API's JSON, without a registry.

use std::sync::Arc;

use hickory_proto::{
    op::{Edns, Message, Query},
    rr::{Name, RecordType},
};

use super::table::{Nameserver, RecordTable, TableSettings};
use crate::{
    model::{Instance, InstanceBody, ServiceName},
    registry::state::{InstanceState, ServiceState},
};

/// The dynamic domain of every fixture table.
pub(super) const DOMAIN: &str = "service.local.";
/// TTL of every answer record built from a fixture table.
pub(super) const TTL: u32 = 17;
/// The fixture's apex NS target and its addresses (`dns.ns_name`,
/// `dns.ns_address`).
pub(super) const NS_NAME: &str = "ns.service.local.";
pub(super) const NS_ADDRESSES: [&str; 2] = ["192.0.2.53", "2001:db8::53"];
/// Negative-caching TTL (SOA MINIMUM) of a fixture table.
pub(super) const NEGATIVE_TTL: u32 = 5;

pub(super) fn domain() -> Name {
    Name::from_ascii(DOMAIN).expect("the fixture domain is a name")
}

pub(super) fn settings() -> TableSettings {
    TableSettings {
        domain: domain(),
        ttl: TTL,
        negative_ttl: NEGATIVE_TTL,
        include_warning: false,
        nameserver: Arc::new(Nameserver::new(
            &domain(),
            Name::from_ascii(NS_NAME).expect("the fixture's NS name is a name"),
            &NS_ADDRESSES.map(|a| a.parse().expect("an address")),
        )),
    }
}

/// One instance of `service` as registered; `body` as the HTTP API takes it.
pub(super) fn instance(service: &str, id: &str, body: &str) -> Arc<InstanceState> {
    let body: InstanceBody = serde_json::from_str(body).expect(body);
    let instance: Instance = body.validate(service, id).expect("valid instance");
    Arc::new(InstanceState::registered_for_test(instance))
}

/// A service of `(id, body)` instances; those in `drained` are in
/// maintenance, so registered but not servable.
pub(super) fn service(name: &str, instances: &[(&str, &str)], drained: &[&str]) -> ServiceState {
    let mut state = ServiceState::new(ServiceName::parse(name).expect("valid service name"));
    for &(id, body) in instances {
        let mut entry = instance(name, id, body);
        if drained.contains(&id) {
            Arc::make_mut(&mut entry).maintenance = Some("drain".into());
        }
        state.insert(entry);
    }
    state
}

/// `web`: web-1 (IPv4, tag v2, weight 3, priority 2), web-2 (IPv6, tag v2,
/// metadata), web-3 (IPv4, tag old, drained), web-4 (IPv4).
pub(super) fn web() -> ServiceState {
    service(
        "web",
        &[
            (
                "web-1",
                r#"{"address":"10.0.0.1","port":80,"tags":["v2"],"weight":3,"priority":2}"#,
            ),
            (
                "web-2",
                r#"{"address":"2001:db8::2","port":81,"tags":["v2"],"meta":{"k":"v"}}"#,
            ),
            (
                "web-3",
                r#"{"address":"10.0.0.3","port":82,"tags":["old"]}"#,
            ),
            ("web-4", r#"{"address":"10.0.0.4","port":83}"#),
        ],
        &["web-3"],
    )
}

/// The table of `services`, at index 7.
pub(super) fn table(services: &[ServiceState]) -> RecordTable {
    let settings = settings();
    let mut table = RecordTable::default();
    for state in services {
        table.update_service(state.name.label().as_str(), Some(state), &settings);
    }
    table.set_index(7, &settings);
    table
}

/// A query for `name`/`qtype`, with an OPT record offering `edns` if set.
pub(super) fn query(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.id = 0xBEEF;
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).expect(name), qtype));
    if let Some(size) = edns {
        let mut opt = Edns::new();
        opt.set_max_payload(size);
        message.set_edns(opt);
    }
    message.to_vec().expect("a query encodes")
}
