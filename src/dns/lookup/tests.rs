//! Answer building, name form by name form: what each section holds and
//! which response code goes with it, from a fixture table and static zones.

use std::collections::HashSet;

use super::*;
use crate::dns::fixture;

/// The table (`web` as in `fixture::web`, and `down`, whose one instance
/// is drained) and three static zones: one extending the dynamic domain,
/// one below it (`legacy.service.local.`) and one of its own
/// (`example.org.`, whose SOA TTL exceeds its MINIMUM).
struct World {
    domain: LowerName,
    table: RecordTable,
    zones: StaticZones,
}

impl World {
    fn new() -> Self {
        let down = fixture::service(
            "down",
            &[("down-1", r#"{"address":"10.5.0.1","port":1}"#)],
            &["down-1"],
        );
        let dir = tempfile::tempdir().expect("a temporary directory");
        let write = |file: &str, text: &str| {
            std::fs::write(dir.path().join(file), text).expect("zone file written");
        };
        write(
            "service.local.zone",
            "$TTL 30\nwww IN A 192.0.2.80\nalias IN CNAME www\nweb IN TXT \"static\"\n",
        );
        write(
            "legacy.service.local.zone",
            "$TTL 30\n@ IN SOA ns hostmaster 1 3600 600 86400 30\n@ IN A 192.0.2.81\n",
        );
        write(
            "example.org.zone",
            "$TTL 60\n@ IN SOA ns hostmaster 1 3600 600 86400 30\n@ IN NS ns\n\
             ns IN A 192.0.2.1\nalias IN CNAME ns\ndeep.a.b IN A 192.0.2.2\n",
        );
        let zones = StaticZones::load_dir(dir.path(), &fixture::domain()).expect("zones load");
        Self {
            domain: LowerName::from(fixture::domain()),
            table: fixture::table(&[fixture::web(), down]),
            zones,
        }
    }

    fn resolve(&self, name: &str, qtype: RecordType) -> Said {
        let qname = lower(name);
        let sources = Sources {
            domain: &self.domain,
            table: &self.table,
            zones: &self.zones,
        };
        let answer = resolve(&sources, &qname, qtype);
        Said {
            rcode: answer.rcode,
            authoritative: answer.authoritative,
            answers: texts(&answer.answers),
            authority: texts(&answer.authority),
            additionals: texts(&answer.additionals),
        }
    }
}

/// An answer as sorted text (its order is random): `name TTL TYPE RDATA`.
#[derive(Debug, PartialEq)]
struct Said {
    rcode: ResponseCode,
    authoritative: bool,
    answers: Vec<String>,
    authority: Vec<String>,
    additionals: Vec<String>,
}

fn lower(text: &str) -> LowerName {
    LowerName::from(Name::from_ascii(text).expect(text))
}

fn texts(records: &[Cow<'_, Record>]) -> Vec<String> {
    let mut texts: Vec<String> = records
        .iter()
        .map(|r| format!("{} {} {} {}", r.name, r.ttl, r.record_type(), r.data))
        .collect();
    texts.sort();
    texts
}

fn strings(texts: &[&str]) -> Vec<String> {
    let mut texts: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
    texts.sort();
    texts
}

/// NOERROR, authoritative, with these answers and additional records.
fn found(answers: &[&str], additionals: &[&str]) -> Said {
    Said {
        rcode: ResponseCode::NoError,
        authoritative: true,
        answers: strings(answers),
        authority: Vec::new(),
        additionals: strings(additionals),
    }
}

const SOA: &str =
    "service.local. 5 SOA ns.service.local. hostmaster.service.local. 7 3600 600 86400 5";
const NS: &str = "service.local. 3600 NS ns.service.local.";
/// The name server's addresses (`fixture::NS_ADDRESSES`), as glue.
const NS_GLUE: [&str; 2] = [
    "ns.service.local. 3600 A 192.0.2.53",
    "ns.service.local. 3600 AAAA 2001:db8::53",
];
const ORG_SOA: &str =
    "example.org. 30 SOA ns.example.org. hostmaster.example.org. 1 3600 600 86400 30";

/// A negative answer with `soa` in the authority section (RFC 2308).
fn negative(rcode: ResponseCode, soa: &str) -> Said {
    Said {
        rcode,
        authoritative: true,
        answers: Vec::new(),
        authority: vec![soa.to_string()],
        additionals: Vec::new(),
    }
}

fn nodata() -> Said {
    negative(ResponseCode::NoError, SOA)
}

fn nxdomain() -> Said {
    negative(ResponseCode::NXDomain, SOA)
}

const WEB_1_A: &str = "web.service.local. 17 A 10.0.0.1";
const WEB_4_A: &str = "web.service.local. 17 A 10.0.0.4";
const WEB_2_AAAA: &str = "web.service.local. 17 AAAA 2001:db8::2";
const WEB_1_SRV: &str = "web.service.local. 17 SRV 2 3 80 web-1.web.service.local.";
const WEB_2_SRV: &str = "web.service.local. 17 SRV 0 1 81 web-2.web.service.local.";
const WEB_4_SRV: &str = "web.service.local. 17 SRV 0 1 83 web-4.web.service.local.";
const AT_WEB_1: &str = "web-1.web.service.local. 17 A 10.0.0.1";
const AT_WEB_2: &str = "web-2.web.service.local. 17 AAAA 2001:db8::2";
const AT_WEB_4: &str = "web-4.web.service.local. 17 A 10.0.0.4";

#[test]
fn the_apex_holds_soa_and_ns() {
    let world = World::new();
    let apex = "service.local.";
    assert_eq!(world.resolve(apex, RecordType::SOA), found(&[SOA], &[]));
    assert_eq!(world.resolve(apex, RecordType::NS), found(&[NS], &NS_GLUE));
    assert_eq!(
        world.resolve(apex, RecordType::ANY),
        found(&[SOA, NS], &NS_GLUE)
    );
    assert_eq!(world.resolve(apex, RecordType::A), nodata());
}

#[test]
fn the_ns_target_answers_its_addresses() {
    let world = World::new();
    let ns = fixture::NS_NAME;
    assert_eq!(world.resolve(ns, RecordType::A), found(&[NS_GLUE[0]], &[]));
    assert_eq!(
        world.resolve(ns, RecordType::AAAA),
        found(&[NS_GLUE[1]], &[])
    );
    assert_eq!(world.resolve(ns, RecordType::ANY), found(&NS_GLUE, &[]));
    assert_eq!(world.resolve(ns, RecordType::TXT), nodata());
    assert_eq!(
        world.resolve("NS.Service.Local.", RecordType::A),
        found(&[NS_GLUE[0]], &[])
    );
}

/// A service that shares the name server's label does not answer at its
/// name (the glue must stay what the resolver was told), but its SRV and
/// instance names below still work.
#[test]
fn the_ns_target_takes_precedence_over_a_service_of_that_name() {
    let ns_service = fixture::service(
        "ns",
        &[("ns-1", r#"{"address":"10.9.0.1","port":53}"#)],
        &[],
    );
    let table = fixture::table(&[ns_service]);
    let domain = LowerName::from(fixture::domain());
    let zones = StaticZones::default();
    let sources = Sources {
        domain: &domain,
        table: &table,
        zones: &zones,
    };
    let said = |name: &str, qtype| texts(&resolve(&sources, &lower(name), qtype).answers);
    assert_eq!(
        said(fixture::NS_NAME, RecordType::A),
        strings(&[NS_GLUE[0]])
    );
    assert_eq!(said(fixture::NS_NAME, RecordType::SRV), strings(&[]));
    assert_eq!(
        said("_ns._tcp.service.local.", RecordType::SRV),
        strings(&["_ns._tcp.service.local. 17 SRV 0 1 53 ns-1.ns.service.local."])
    );
    assert_eq!(
        said("ns-1.ns.service.local.", RecordType::A),
        strings(&["ns-1.ns.service.local. 17 A 10.9.0.1"])
    );
}

#[test]
fn a_service_name_answers_addresses_and_srv_with_their_targets() {
    let world = World::new();
    let web = "web.service.local.";
    assert_eq!(
        world.resolve(web, RecordType::A),
        found(&[WEB_1_A, WEB_4_A], &[])
    );
    assert_eq!(
        world.resolve("WEB.Service.Local.", RecordType::AAAA),
        found(&[WEB_2_AAAA], &[])
    );
    let srv = [WEB_1_SRV, WEB_2_SRV, WEB_4_SRV];
    let targets = [AT_WEB_1, AT_WEB_2, AT_WEB_4];
    assert_eq!(world.resolve(web, RecordType::SRV), found(&srv, &targets));
    // A static record at a service name is served beside the dynamic ones.
    let txt = "web.service.local. 30 TXT static";
    assert_eq!(world.resolve(web, RecordType::TXT), found(&[txt], &[]));
    let any = [
        WEB_1_A, WEB_4_A, WEB_2_AAAA, WEB_1_SRV, WEB_2_SRV, WEB_4_SRV, txt,
    ];
    assert_eq!(world.resolve(web, RecordType::ANY), found(&any, &targets));
    assert_eq!(world.resolve(web, RecordType::MX), nodata());
    // Registered, nothing servable: the name exists.
    assert_eq!(
        world.resolve("down.service.local.", RecordType::A),
        nodata()
    );
    assert_eq!(
        world.resolve("nope.service.local.", RecordType::A),
        nxdomain()
    );
}

/// Only the common questions carry a precomputed size bound (see `fit`).
#[test]
fn a_aaaa_and_srv_at_a_service_carry_the_tables_bound() {
    let world = World::new();
    let sources = Sources {
        domain: &world.domain,
        table: &world.table,
        zones: &world.zones,
    };
    let web = world.table.services.get("web").expect("web");
    let qname = lower("web.service.local.");
    for (qtype, bound) in [
        (RecordType::A, Some(web.a_wire_bound)),
        (RecordType::AAAA, Some(web.aaaa_wire_bound)),
        (RecordType::SRV, Some(web.srv_wire_bound)),
        (RecordType::ANY, None),
        (RecordType::TXT, None),
    ] {
        assert_eq!(
            resolve(&sources, &qname, qtype).wire_bound,
            bound,
            "{qtype}"
        );
    }
    let instance = lower("web-1.web.service.local.");
    assert_eq!(resolve(&sources, &instance, RecordType::A).wire_bound, None);
}

#[test]
fn srv_names_answer_by_protocol_or_tag() {
    let world = World::new();
    let renamed = |srv: &str| srv.replacen("web.service.local.", "_web._tcp.service.local.", 1);
    let srv: Vec<String> = [WEB_1_SRV, WEB_2_SRV, WEB_4_SRV].map(renamed).to_vec();
    let srv: Vec<&str> = srv.iter().map(String::as_str).collect();
    assert_eq!(
        world.resolve("_web._tcp.service.local.", RecordType::SRV),
        found(&srv, &[AT_WEB_1, AT_WEB_2, AT_WEB_4])
    );
    assert_eq!(
        world
            .resolve("_web._udp.service.local.", RecordType::SRV)
            .answers
            .len(),
        3
    );
    assert_eq!(
        world.resolve("_web._v2.service.local.", RecordType::SRV),
        found(
            &[
                "_web._v2.service.local. 17 SRV 2 3 80 web-1.web.service.local.",
                "_web._v2.service.local. 17 SRV 0 1 81 web-2.web.service.local.",
            ],
            &[AT_WEB_1, AT_WEB_2]
        )
    );
    assert_eq!(
        world.resolve("_web._tcp.service.local.", RecordType::A),
        nodata()
    );
    // `old` is carried only by the drained web-3: the name exists.
    assert_eq!(
        world.resolve("_web._old.service.local.", RecordType::SRV),
        nodata()
    );
    assert_eq!(
        world.resolve("_web._new.service.local.", RecordType::SRV),
        nxdomain()
    );
    assert_eq!(
        world.resolve("_nope._tcp.service.local.", RecordType::SRV),
        nxdomain()
    );
}

#[test]
fn instance_names_answer_address_and_metadata() {
    let world = World::new();
    let web_2 = "web-2.web.service.local.";
    let txt = "web-2.web.service.local. 17 TXT k=v";
    assert_eq!(
        world.resolve(web_2, RecordType::AAAA),
        found(&[AT_WEB_2], &[])
    );
    assert_eq!(world.resolve(web_2, RecordType::TXT), found(&[txt], &[]));
    assert_eq!(
        world.resolve(web_2, RecordType::ANY),
        found(&[AT_WEB_2, txt], &[])
    );
    assert_eq!(world.resolve(web_2, RecordType::A), nodata());
    assert_eq!(
        world.resolve("web-1.web.service.local.", RecordType::A),
        found(&[AT_WEB_1], &[])
    );
    // Drained: registered, so the name exists, but it holds nothing.
    assert_eq!(
        world.resolve("web-3.web.service.local.", RecordType::A),
        nodata()
    );
    assert_eq!(
        world.resolve("web-9.web.service.local.", RecordType::A),
        nxdomain()
    );
    assert_eq!(
        world.resolve("web-1.nope.service.local.", RecordType::A),
        nxdomain()
    );
}

/// `_<x>.<domain>` are the empty non-terminals above SRV names.
#[test]
fn underscore_names_exist_above_srv_names() {
    let world = World::new();
    for name in [
        "_tcp.service.local.",
        "_udp.service.local.",
        "_web.service.local.",
        "_v2.service.local.",
        "_old.service.local.",
    ] {
        assert_eq!(world.resolve(name, RecordType::SRV), nodata(), "{name}");
    }
    assert_eq!(
        world.resolve("_nope.service.local.", RecordType::SRV),
        nxdomain()
    );
}

#[test]
fn other_names_in_the_domain_hold_only_static_records() {
    let world = World::new();
    assert_eq!(
        world.resolve("www.service.local.", RecordType::A),
        found(&["www.service.local. 30 A 192.0.2.80"], &[])
    );
    let cname = "alias.service.local. 30 CNAME www.service.local.";
    assert_eq!(
        world.resolve("alias.service.local.", RecordType::A),
        found(&[cname], &[])
    );
    assert_eq!(
        world.resolve("a.b.c.service.local.", RecordType::A),
        nxdomain()
    );
    // A static zone below the dynamic domain answers for its names.
    assert_eq!(
        world.resolve("legacy.service.local.", RecordType::A),
        found(&["legacy.service.local. 30 A 192.0.2.81"], &[])
    );
}

#[test]
fn static_zones_answer_with_cname_and_capped_negative_ttl() {
    let world = World::new();
    assert_eq!(
        world.resolve("ns.example.org.", RecordType::A),
        found(&["ns.example.org. 60 A 192.0.2.1"], &[])
    );
    // A CNAME owns its name: it is the answer for any other type.
    let cname = "alias.example.org. 60 CNAME ns.example.org.";
    for qtype in [RecordType::A, RecordType::CNAME, RecordType::TXT] {
        assert_eq!(
            world.resolve("alias.example.org.", qtype),
            found(&[cname], &[]),
            "{qtype}"
        );
    }
    let soa = world.resolve("example.org.", RecordType::SOA);
    assert_eq!(soa.answers.len(), 1);
    assert!(soa.answers[0].starts_with("example.org. 60 SOA"));
    // The SOA's TTL (60) is capped by its MINIMUM (30) when negative.
    assert_eq!(
        world.resolve("a.b.example.org.", RecordType::A),
        negative(ResponseCode::NoError, ORG_SOA),
        "an empty non-terminal"
    );
    assert_eq!(
        world.resolve("missing.example.org.", RecordType::A),
        negative(ResponseCode::NXDomain, ORG_SOA)
    );
}

#[test]
fn names_outside_every_zone_are_refused() {
    let world = World::new();
    let refused = Said {
        rcode: ResponseCode::Refused,
        authoritative: false,
        answers: Vec::new(),
        authority: Vec::new(),
        additionals: Vec::new(),
    };
    for name in ["example.com.", "local.", "."] {
        assert_eq!(world.resolve(name, RecordType::A), refused, "{name}");
    }
}

/// Each SRV answer's additional record is its target's address, and every
/// order of the answers comes up.
#[test]
fn srv_order_is_random_and_additionals_follow_it() {
    let world = World::new();
    let sources = Sources {
        domain: &world.domain,
        table: &world.table,
        zones: &world.zones,
    };
    let qname = lower("web.service.local.");
    let mut orders = HashSet::new();
    for _ in 0..300 {
        let answer = resolve(&sources, &qname, RecordType::SRV);
        let mut order = Vec::new();
        for (srv, address) in answer.answers.iter().zip(&answer.additionals) {
            let RData::SRV(data) = &srv.data else {
                panic!("not SRV: {srv}")
            };
            assert_eq!(data.target, address.name);
            order.push(data.port);
        }
        assert_eq!(order.len(), 3);
        orders.insert(order);
    }
    assert_eq!(orders.len(), 6, "{orders:?}");
}
