//! The record table's build and the sizes it precomputes: each size is
//! checked against what is really encoded, so a formula in `dns::wire` that
//! drifts from the wire format fails here, not in production.

use std::{borrow::Cow, sync::Arc};

use arc_swap::ArcSwap;
use hickory_proto::{
    op::{Edns, Message, OpCode, Query},
    rr::{LowerName, Name, RData, Record, RecordType, rdata::opt::EdnsOption},
    serialize::binary::{BinEncodable, BinEncoder, NameEncoding},
};

use super::*;
use crate::dns::{
    DnsHandler, fit,
    fixture::{self, NEGATIVE_TTL, TTL},
    lookup::{self, Sources},
    wire::{self, HEADER_LEN, OPT_LEN},
    zones::StaticZones,
};

/// `name` with `count` IPv4 instances `<name>-<i>`.
fn many(name: &str, count: usize) -> ServiceState {
    let ids: Vec<String> = (0..count).map(|i| format!("{name}-{i}")).collect();
    let bodies: Vec<String> = (0..count)
        .map(|i| {
            format!(
                r#"{{"address":"10.2.{}.{}","port":8080}}"#,
                i / 256,
                i % 256
            )
        })
        .collect();
    let instances: Vec<(&str, &str)> = ids
        .iter()
        .zip(&bodies)
        .map(|(id, body)| (id.as_str(), body.as_str()))
        .collect();
    fixture::service(name, &instances, &[])
}

fn name(text: &str) -> Name {
    Name::from_ascii(text).expect(text)
}

/// The records encoded one after another without name compression.
fn uncompressed_len<'r>(records: impl IntoIterator<Item = &'r Record>) -> usize {
    let mut bytes = Vec::new();
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_name_encoding(NameEncoding::Uncompressed);
    for record in records {
        record.emit(&mut encoder).expect("a record encodes");
    }
    bytes.len()
}

#[test]
fn build_keeps_servable_instances_in_id_order_and_indexes_them() {
    let records = ServiceRecords::build(&fixture::web(), &fixture::settings());
    assert_eq!(records.name, name("web.service.local."));
    assert_eq!(records.label.as_bytes(), b"web");
    assert_eq!(records.ttl, TTL);
    // web-3 is drained: web-1, web-2, web-4 are at positions 0, 1, 2.
    assert_eq!(records.servable(), 3);
    let labels: Vec<&[u8]> = records
        .packed
        .iter()
        .map(|endpoint| records.packed_label(endpoint))
        .collect();
    assert_eq!(labels, [&b"web-1"[..], b"web-2", b"web-4"]);
    assert_eq!(&*records.v4_positions, [0, 2]);
    assert_eq!(&*records.v6_positions, [1]);
    let first = &records.packed[0];
    assert_eq!((first.port, first.weight, first.priority), (80, 3, 2));

    assert_eq!(records.instance("web-4"), InstanceLookup::Servable(2));
    assert_eq!(
        records.instance("web-3"),
        InstanceLookup::NotServable,
        "drained"
    );
    assert_eq!(records.instance("web-9"), InstanceLookup::Unknown);

    assert_eq!(records.tag("v2"), Some(&[0, 1][..]));
    assert_eq!(records.tag("old"), Some(&[][..]), "only on web-3: exists");
    assert_eq!(records.tag("new"), None);
    assert_eq!(records.tag_labels().collect::<Vec<_>>(), ["old", "v2"]);

    assert_eq!(records.target(1), name("web-2.web.service.local."));
    let srv = records.srv_record(0, records.name.clone());
    let RData::SRV(srv) = &srv.data else {
        panic!("not SRV: {srv}")
    };
    assert_eq!(
        (srv.priority, srv.weight, srv.port),
        (2, 3, 80),
        "from web-1"
    );
    assert_eq!(srv.target, name("web-1.web.service.local."));
    let txt = records.txt_record(1).expect("web-2 has metadata");
    assert_eq!(txt.name, name("web-2.web.service.local."));
    assert_eq!(txt.data.to_string(), "k=v");
    assert!(records.txt_record(0).is_none(), "web-1 has none");
}

#[test]
fn tag_use_counts_services_and_follows_every_update() {
    let settings = fixture::settings();
    let api = fixture::service(
        "api",
        &[("api-1", r#"{"address":"10.9.0.1","port":1,"tags":["v2"]}"#)],
        &[],
    );
    let mut table = fixture::table(&[fixture::web(), api]);
    assert_eq!(table.tag_use.get("v2"), Some(&2));
    assert_eq!(
        table.tag_use.get("old"),
        Some(&1),
        "a drained carrier counts"
    );

    table.update_service("web", None, &settings);
    assert!(!table.services.contains_key("web"));
    assert_eq!(table.tag_use.get("v2"), Some(&1));
    assert_eq!(table.tag_use.get("old"), None);

    // An empty service is removed, as if it were gone.
    let empty = fixture::service("api", &[], &[]);
    table.update_service("api", Some(&empty), &settings);
    assert!(table.services.is_empty());
    assert!(table.tag_use.is_empty());
}

/// `tag_use` is the count of services carrying each tag, through random
/// updates that keep, add, drop and swap tags, and empty services.
#[test]
fn tag_use_stays_a_count_of_services_per_tag() {
    use rand::{RngExt, SeedableRng, rngs::SmallRng};

    let settings = fixture::settings();
    let mut rng = SmallRng::seed_from_u64(3);
    let mut services: Vec<ServiceState> = ["web", "api", "db"]
        .iter()
        .map(|name| fixture::service(name, &[], &[]))
        .collect();
    let mut table = fixture::table(&[]);
    let tags = ["a", "b", "c", "d"];
    for step in 0..500 {
        let service = &mut services[rng.random_range(0..3)];
        let before = service.clone();
        let id = format!("i-{}", rng.random_range(0..3));
        if rng.random_range(0..3) == 0 {
            service.remove(&id);
        } else {
            let carried: Vec<String> = tags
                .iter()
                .filter(|_| rng.random_bool(0.4))
                .map(|tag| format!("{tag:?}"))
                .collect();
            let body = format!(
                r#"{{"address":"10.0.0.1","port":1,"tags":[{}]}}"#,
                carried.join(",")
            );
            service.insert(fixture::instance(service.name.as_str(), &id, &body));
        }
        let label = service.name.label().as_str().to_owned();
        table.update_service_since(&label, Some(&before), Some(service), &settings);
        let mut counted = std::collections::BTreeMap::new();
        for records in table.services.values() {
            for tag in records.tag_labels() {
                *counted.entry(tag.to_owned()).or_insert(0u32) += 1;
            }
        }
        let held: std::collections::BTreeMap<String, u32> =
            table.tag_use.iter().map(|(k, v)| (k.clone(), *v)).collect();
        assert_eq!(held, counted, "step {step}");
    }
}

#[test]
fn the_apex_follows_the_index() {
    let mut table = fixture::table(&[]);
    let Some(RData::SOA(soa)) = table.soa.as_ref().map(|r| &r.data) else {
        panic!("no SOA")
    };
    assert_eq!(soa.serial, 7);
    assert_eq!(soa.mname, name("ns.service.local."));
    assert_eq!(soa.rname, name("hostmaster.service.local."));
    assert_eq!(
        (soa.refresh, soa.retry, soa.expire, soa.minimum),
        (3600, 600, 86_400, NEGATIVE_TTL)
    );
    assert_eq!(table.soa.as_ref().map(|r| r.ttl), Some(NEGATIVE_TTL));
    let ns = table.ns.as_ref().expect("NS");
    assert_eq!(ns.data, RData::NS(NS(name("ns.service.local."))));
    assert_eq!(ns.ttl, 3600);

    // Serial arithmetic (RFC 1982) wraps at 2^32.
    table.set_index((1 << 32) + 5, &fixture::settings());
    assert_eq!(table.index, (1 << 32) + 5);
    let Some(RData::SOA(soa)) = table.soa.as_ref().map(|r| &r.data) else {
        panic!("no SOA")
    };
    assert_eq!(soa.serial, 5);
}

/// The fast path's answers are exactly as long as the table and
/// `dns::wire` say, with and without an OPT record.
#[test]
fn compressed_sizes_are_what_the_fast_path_writes() {
    let web = fixture::web();
    let records = ServiceRecords::build(&web, &fixture::settings());
    // Each SRV: pointer, fixed part, priority/weight/port, "\x05web-N",
    // then the service name in full (2 + 10 + 6 + 6 + 19); each additional:
    // pointer, fixed part, address (2 + 10 + 4, or 16 for IPv6).
    assert_eq!(records.srv_fast_len, 43 + 16 + 43 + 28 + 43 + 16);

    let table = fixture::table(&[web]);
    let handler = DnsHandler::new(
        Arc::new(ArcSwap::from_pointee(table)),
        Arc::new(StaticZones::default()),
        LowerName::from(fixture::domain()),
        4096,
    );
    // The question "\x03web\x07service\x05local\x00", type, class.
    let question_len = 19 + 4;
    for (qtype, records_len) in [
        (RecordType::A, 2 * 16),
        (RecordType::AAAA, 28),
        (RecordType::SRV, records.srv_fast_len),
    ] {
        for edns in [None, Some(1232)] {
            let query = fixture::query("web.service.local.", qtype, edns);
            let mut out = Vec::new();
            assert!(handler.answer_fast(&query, &mut out), "{qtype} {edns:?}");
            let expected =
                HEADER_LEN + question_len + records_len + if edns.is_some() { OPT_LEN } else { 0 };
            assert_eq!(out.len(), expected, "{qtype} {edns:?}");
            assert_eq!(
                wire::response_len(question_len, records_len, edns.is_some()),
                expected
            );
            Message::from_vec(&out).expect("the answer decodes");
        }
    }
}

/// The bounds are the uncompressed size plus one octet a name (`Name::len`
/// plus 2 is counted for the name's wire form of `Name::len` plus 1).
#[test]
fn wire_bounds_are_the_uncompressed_size_plus_one_octet_per_name() {
    let service = fixture::service(
        "mixed-service",
        &[
            ("a", r#"{"address":"10.1.0.1","port":1}"#),
            (
                "bb",
                r#"{"address":"2001:db8::2","port":2,"meta":{"k":"v","x":"yz"}}"#,
            ),
            (
                "a-much-longer-instance-label",
                r#"{"address":"10.1.0.3","port":3}"#,
            ),
        ],
        &[],
    );
    let records = ServiceRecords::build(&service, &fixture::settings());
    let owner = || records.name.clone();
    let addresses = |positions: &[u32]| -> Vec<Record> {
        positions
            .iter()
            .map(|&position| records.address_record(position as usize, owner()))
            .collect()
    };
    let a = addresses(&records.v4_positions);
    assert_eq!(records.a_wire_bound, uncompressed_len(&a) + a.len());
    let aaaa = addresses(&records.v6_positions);
    assert_eq!(
        records.aaaa_wire_bound,
        uncompressed_len(&aaaa) + aaaa.len()
    );

    // Each instance: the SRV (owner and target) and its address record.
    let srv: Vec<Record> = (0..records.servable())
        .flat_map(|position| {
            [
                records.srv_record(position, owner()),
                records.address_record(position, records.target(position)),
            ]
        })
        .collect();
    assert_eq!(
        records.srv_wire_bound,
        uncompressed_len(&srv) + 3 * records.servable()
    );

    // Record by record, as `fit` bounds the answers with no precomputed
    // bound: one octet per name, in the owner and in the RDATA.
    // Positions follow ID order: a, a-much-longer-instance-label, bb.
    let txt = records.txt_record(2).expect("bb has metadata");
    let table = fixture::table(&[service]);
    let soa = table.soa.clone().expect("SOA");
    let ns = table.ns.clone().expect("NS");
    for (record, names) in [
        (&a[0], 1),
        (&aaaa[0], 1),
        (&srv[0], 2),
        (&txt, 1),
        (&soa, 3),
        (&ns, 2),
    ] {
        assert_eq!(
            wire::max_encoded_len(record),
            uncompressed_len([record]) + names,
            "{record}"
        );
    }
}

/// Around the 512-octet limit and the client's EDNS size: an answer whose
/// precomputed bound fits is sent whole; one that does not is trimmed (TC
/// for answers, silently for additional records) until what is sent fits.
#[test]
fn answers_fit_the_datagram_and_only_a_bound_over_the_limit_trims() {
    let domain = LowerName::from(fixture::domain());
    let zones = StaticZones::default();
    let mut trimmed_somewhere = false;
    for count in [1, 10, 14, 15, 20, 28, 29, 30, 40] {
        let service = many("big", count);
        let table = fixture::table(&[service]);
        let records = table.services.get("big").expect("big");
        for (qtype, bound) in [
            (RecordType::A, records.a_wire_bound),
            (RecordType::SRV, records.srv_wire_bound),
        ] {
            let qname = LowerName::from(name("big.service.local."));
            let question = Query::query(name("big.service.local."), qtype);
            let question_len = question.to_bytes().expect("a question encodes").len();
            // A COOKIE option (a client and a server cookie) takes 28 of
            // the datagram's octets too.
            let sizes = [None, Some(512), Some(600), Some(1232)];
            let cases = sizes
                .into_iter()
                .flat_map(|edns| [(edns, false), (edns, edns.is_some())]);
            for (edns, cookie) in cases {
                let payload = edns.map(|size| wire::response_payload(size, 4096));
                let limit = usize::from(wire::udp_limit(payload));
                let sources = Sources {
                    domain: &domain,
                    table: &table,
                    zones: &zones,
                };
                let mut answer = lookup::resolve(&sources, &qname, qtype);
                assert_eq!(answer.wire_bound, Some(bound));
                let whole = answer.answers.len() + answer.additionals.len();
                let opt = edns.map(|size| {
                    let mut opt = Edns::new();
                    opt.set_max_payload(size);
                    if cookie {
                        opt.options_mut()
                            .insert(EdnsOption::Unknown(10, vec![7; 24]));
                    }
                    opt
                });
                let opt_len = wire::opt_record_len(opt.as_ref());
                let truncated = fit::fit(&mut answer, question_len, limit, opt_len);

                let mut message = Message::response(1, OpCode::Query);
                message.add_query(question.clone());
                let owned = |records: &[Cow<'_, Record>]| -> Vec<Record> {
                    records.iter().map(|r| r.as_ref().clone()).collect()
                };
                message.answers = owned(&answer.answers);
                message.additionals = owned(&answer.additionals);
                if let Some(opt) = opt {
                    message.set_edns(opt);
                }
                let sent = message.to_vec().expect("a response encodes").len();
                let case = format!("{count} × {qtype}, EDNS {edns:?}, cookie {cookie}");
                assert!(sent <= limit, "{case}: {sent} octets");
                assert_eq!(truncated, answer.answers.len() < count, "{case}");
                let kept = answer.answers.len() + answer.additionals.len();
                let opt_options = opt_len.saturating_sub(OPT_LEN);
                if wire::response_len(question_len, bound, edns.is_some()) + opt_options <= limit {
                    assert!(!truncated && kept == whole, "{case}: fits, yet trimmed");
                }
                trimmed_somewhere |= kept < whole;
            }
        }
    }
    assert!(trimmed_somewhere, "the cases reach past the limit");
}

/// The records `ServiceRecords::update` makes from the old ones are exactly
/// those a full build makes, through a long walk of random changes: added,
/// changed, drained and removed instances, IPv4 and IPv6, tags appearing and
/// vanishing (one that is not a label, one that is only on drained
/// instances), metadata, and IDs that are not their own labels.
#[test]
fn an_update_builds_what_a_full_build_does() {
    let ids = [
        "a", "b", "Web-C", "d-1", "d-10", "d-2", "e", "Z", "x y", "m",
    ];
    update_walk(&ids, 600);
}

/// The same through a service of hundreds of instances, whose unchanged
/// leaves are copied as runs without reading their instances; first with
/// IDs that are all labels (no sort), then with some that are not.
#[test]
fn an_update_of_a_large_service_builds_what_a_full_build_does() {
    let mut ids: Vec<String> = (0..400).map(|i| format!("web-{i}")).collect();
    update_walk(&ids.iter().map(String::as_str).collect::<Vec<_>>(), 400);
    ids.extend(["Web-C", "x y", "Z"].map(String::from));
    update_walk(&ids.iter().map(String::as_str).collect::<Vec<_>>(), 400);
}

/// `steps` random changes to a service of instances from `ids`, each
/// rebuilt with `ServiceRecords::update` and checked against a full build.
fn update_walk(ids: &[&str], steps: usize) {
    use rand::{RngExt, SeedableRng, rngs::SmallRng};

    let settings = fixture::settings();
    let mut rng = SmallRng::seed_from_u64(16);
    let mut service = fixture::service("web", &[], &[]);
    let mut records = ServiceRecords::build(&service, &settings);
    let tags = ["v1", "v2", "Canary", "not a label!", "only-drained"];
    let kept_before = records::tests::KEPT.with(|kept| kept.get());
    for step in 0..steps {
        let before = service.clone();
        // One to three changes a step, as a writer's batch may make.
        for _ in 0..rng.random_range(1..=3) {
            let id = ids[rng.random_range(0..ids.len())];
            if rng.random_range(0..4) == 0 {
                service.remove(id);
                continue;
            }
            let address = if rng.random_bool(0.7) {
                format!(
                    "10.0.{}.{}",
                    rng.random_range(0..4),
                    rng.random_range(1..255)
                )
            } else {
                format!("2001:db8::{:x}", rng.random_range(1..0xffff))
            };
            let drained = rng.random_range(0..4) == 0;
            let carried: Vec<String> = tags
                .iter()
                .filter(|tag| rng.random_bool(0.3) && (drained || **tag != "only-drained"))
                .map(|tag| format!("{tag:?}"))
                .collect();
            let meta = match rng.random_range(0..3) {
                0 => String::new(),
                1 => format!(r#","meta":{{"v":"{step}"}}"#),
                _ => format!(r#","meta":{{"a":"{}","zone":"z{step}"}}"#, "x".repeat(200)),
            };
            let body = format!(
                r#"{{"address":"{address}","port":{},"weight":{},"tags":[{}]{meta}}}"#,
                rng.random_range(1..65535),
                rng.random_range(0..100),
                carried.join(",")
            );
            let mut instance = fixture::instance("web", id, &body);
            if drained {
                Arc::make_mut(&mut instance).maintenance = Some("drain".into());
            }
            service.insert(instance);
        }
        let updated = ServiceRecords::update(&records, &before, &service, &settings);
        let built = ServiceRecords::build(&service, &settings);
        assert_eq!(format!("{updated:?}"), format!("{built:?}"), "step {step}");
        records = updated;
    }
    let kept = records::tests::KEPT.with(|kept| kept.get()) - kept_before;
    assert!(
        kept > steps,
        "updates copied members ({kept}) rather than rebuilding"
    );

    // Records of some other state than `before` are not copied from.
    let stale = ServiceRecords::build(&fixture::web(), &settings);
    let updated = ServiceRecords::update(&stale, &fixture::web(), &service, &settings);
    let built = ServiceRecords::build(&service, &settings);
    assert_eq!(format!("{updated:?}"), format!("{built:?}"));
}

/// Updates that keep every member in its place (one instance's metadata,
/// port, weight, address, drain or tags at a time, or nothing at all)
/// build what a full build does, and share with the old records what they
/// leave as it was: every level of `Sameness` but `Nothing` is reached.
#[test]
fn an_update_in_place_shares_what_it_leaves_as_it_was() {
    use rand::{RngExt, SeedableRng, rngs::SmallRng};

    use super::records::Sameness;

    struct Spec {
        address: String,
        port: u16,
        weight: u16,
        tags: Vec<&'static str>,
        meta: String,
        drained: bool,
    }
    let state = |id: &str, spec: &Spec| {
        let tags: Vec<String> = spec.tags.iter().map(|tag| format!("{tag:?}")).collect();
        let body = format!(
            r#"{{"address":"{}","port":{},"weight":{},"tags":[{}],"meta":{{"v":"{}"}}}}"#,
            spec.address,
            spec.port,
            spec.weight,
            tags.join(","),
            spec.meta
        );
        let mut instance = fixture::instance("web", id, &body);
        if spec.drained {
            Arc::make_mut(&mut instance).maintenance = Some("drain".into());
        }
        instance
    };
    let settings = fixture::settings();
    let mut rng = SmallRng::seed_from_u64(28);
    let mut ids: Vec<String> = (0..40).map(|i| format!("web-{i}")).collect();
    ids.extend(["Web-C", "x y"].map(String::from));
    let mut specs: Vec<Spec> = (0..ids.len())
        .map(|i| Spec {
            address: format!("10.0.0.{}", i + 1),
            port: 80,
            weight: 1,
            tags: vec!["v1"],
            meta: String::new(),
            drained: false,
        })
        .collect();
    let mut service = fixture::service("web", &[], &[]);
    for (id, spec) in ids.iter().zip(&specs) {
        service.insert(state(id, spec));
    }
    let mut records = ServiceRecords::build(&service, &settings);
    let mut seen = Vec::new();
    for step in 0..400 {
        let before = service.clone();
        let at = rng.random_range(0..ids.len());
        let spec = &mut specs[at];
        match rng.random_range(0..8) {
            0 => spec.meta = format!("{step}"),
            1 => spec.port = rng.random_range(1..65535),
            2 => spec.weight = rng.random_range(0..100),
            3 if spec.address.contains(':') => spec.address = format!("2001:db8::{step:x}"),
            3 => spec.address = format!("10.1.{}.{}", step / 250, step % 250 + 1),
            4 if spec.address.contains(':') => spec.address = format!("10.2.0.{}", at + 1),
            4 => spec.address = format!("2001:db8::{:x}", at + 1),
            5 => spec.drained = !spec.drained,
            6 if spec.tags.contains(&"canary") => spec.tags.retain(|tag| *tag != "canary"),
            6 => spec.tags.push("canary"),
            // The same instance again, as a fresh state.
            _ => {}
        }
        service.insert(state(&ids[at], spec));
        let updated = ServiceRecords::update(&records, &before, &service, &settings);
        seen.extend(records::tests::SAMENESS.with(|seen| seen.borrow().last().copied()));
        let built = ServiceRecords::build(&service, &settings);
        assert_eq!(format!("{updated:?}"), format!("{built:?}"), "step {step}");
        records = updated;
    }
    for level in [Sameness::Labels, Sameness::Shape, Sameness::Packed] {
        assert!(seen.contains(&level), "no update left {level:?} as it was");
    }
    assert!(
        !seen.contains(&Sameness::Nothing),
        "members stayed in place"
    );
}

/// A table updated through `update_service_since` answers the same as one
/// built afresh, and retires nothing it should not: the registry's path.
#[test]
fn update_service_since_copies_from_the_published_records() {
    let settings = fixture::settings();
    let before = fixture::web();
    let mut table = fixture::table(std::slice::from_ref(&before));
    let mut after = before.clone();
    after.remove("web-4");
    after.insert(fixture::instance(
        "web",
        "web-5",
        r#"{"address":"10.0.0.5","port":85,"tags":["new"]}"#,
    ));
    table.update_service_since("web", Some(&before), Some(&after), &settings);
    let records = table.services.get("web").expect("web");
    assert_eq!(records.instance("web-4"), InstanceLookup::Unknown);
    assert_eq!(records.instance("web-5"), InstanceLookup::Servable(2));
    assert_eq!(records.tag("new"), Some(&[2][..]));
    assert_eq!(records.tag("old"), Some(&[][..]), "web-3, drained, kept");
    assert_eq!(table.tag_use.get("new"), Some(&1));
    let txt = records.txt_record(1).expect("web-2 keeps its metadata");
    assert_eq!(txt.data.to_string(), "k=v");
}
