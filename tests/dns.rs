//! DNS behaviour of a real roster, asked over UDP and TCP by a client built
//! on hickory-proto's wire format, and by `dig`.

mod common;

use std::collections::{BTreeSet, HashMap};

use common::{Reply, Server, ips, lower, start_server, start_server_with};
use hickory_proto::{
    op::ResponseCode,
    rr::{RData, RecordType},
};
use serde_json::json;

/// Registers `count` instances `<service>-<n>` at `10.<net>.<n / 250>.<n % 250 + 1>`.
async fn register_many(server: &Server, service: &str, net: u8, count: usize) -> Vec<String> {
    let mut addresses = Vec::with_capacity(count);
    for n in 0..count {
        let address = format!("10.{net}.{}.{}", n / 250, n % 250 + 1);
        server
            .add(service, &format!("{service}-{n}"), &address, 8000)
            .await;
        addresses.push(address);
    }
    addresses
}

fn assert_answer_ok(reply: &Reply) {
    assert_eq!(reply.rcode(), ResponseCode::NoError, "{reply}");
    assert!(reply.authoritative(), "AA expected:\n{reply}");
    assert!(!reply.truncated(), "TC unexpected:\n{reply}");
}

#[tokio::test]
async fn a_and_aaaa_answer_the_instances_of_a_service() {
    let server = start_server().await;
    server.add("web", "web-1", "10.0.0.1", 80).await;
    server.add("web", "web-2", "10.0.0.2", 80).await;
    server.add("web", "web-6", "fd00::6", 80).await;
    server.add("db", "db-1", "10.9.9.9", 5432).await;

    let a = server.query("web.service.local", RecordType::A).await;
    assert_answer_ok(&a);
    assert_eq!(a.ips(), ips(&["10.0.0.1", "10.0.0.2"]), "{a}");
    for record in a.answers() {
        assert_eq!(lower(&record.name), "web.service.local.", "{a}");
        assert_eq!(record.ttl, 5, "the default TTL is 5 s:\n{a}");
    }

    let aaaa = server.query("web.service.local", RecordType::AAAA).await;
    assert_answer_ok(&aaaa);
    assert_eq!(aaaa.ips(), ips(&["fd00::6"]), "{aaaa}");

    assert_eq!(
        server.ips("db.service.local", RecordType::A).await,
        ips(&["10.9.9.9"])
    );
}

/// Names match case-insensitively, and the answers carry the name as the
/// client spelled it, on the UDP fast path, the general path and TCP alike.
#[tokio::test]
async fn answers_keep_the_case_the_client_asked_in() {
    let server = start_server().await;
    server.add("web", "web-1", "10.0.0.1", 80).await;
    let asked = "WeB.SerVice.LoCal.";
    let replies = [
        // UDP without EDNS, A: the fast path.
        server.query_udp(asked, RecordType::A, None).await,
        // UDP, SRV and ANY: the fast path and the general path.
        server.query_udp(asked, RecordType::SRV, Some(1232)).await,
        server.query_udp(asked, RecordType::ANY, Some(1232)).await,
        // TCP: always the general path.
        server.query_tcp(asked, RecordType::A, None).await,
        server.query_tcp(asked, RecordType::SRV, None).await,
    ];
    for reply in replies {
        assert!(!reply.answers().is_empty(), "{reply}");
        for record in reply.answers() {
            assert_eq!(record.name.to_ascii(), asked, "{reply}");
        }
    }
}

#[tokio::test]
async fn the_ttl_and_negative_ttl_are_configurable() {
    let server = start_server_with(&[], |config| {
        config.dns.ttl = 42;
        config.dns.negative_ttl = 17;
    })
    .await;
    server.add("web", "web-1", "10.0.0.1", 80).await;

    let a = server.query("web.service.local", RecordType::A).await;
    assert_eq!(a.answers().len(), 1, "{a}");
    assert_eq!(a.answers()[0].ttl, 42, "{a}");

    let missing = server.query("nope.service.local", RecordType::A).await;
    missing.assert_negative(ResponseCode::NXDomain, "service.local");
    let (record, soa) = missing.authority_soa();
    assert_eq!(soa.minimum, 17, "{missing}");
    assert_eq!(record.ttl, 17, "{missing}");

    let soa = server.query("service.local", RecordType::SOA).await;
    match &soa.answers()[0].data {
        RData::SOA(data) => assert_eq!(data.minimum, 17, "{soa}"),
        other => panic!("expected SOA, got {other:?}"),
    }
}

#[tokio::test]
async fn srv_answers_every_name_form_with_addresses_in_additional() {
    let server = start_server().await;
    let api_1 = json!({"address": "10.0.1.1", "port": 8080, "tags": ["http", "v2"],
                       "weight": 3, "priority": 1});
    let api_2 = json!({"address": "fd00::2", "port": 8081, "tags": ["http"]});
    assert_eq!(server.register("api", "api-1", api_1).await.status, 200);
    assert_eq!(server.register("api", "api-2", api_2).await.status, 200);

    for qname in [
        "api.service.local.",
        "_api._tcp.service.local.",
        "_api._udp.service.local.",
        "_api._http.service.local.",
    ] {
        let reply = server.query(qname, RecordType::SRV).await;
        assert_answer_ok(&reply);
        let mut seen: Vec<(String, u16, u16, u16)> = Vec::new();
        for record in reply.answers() {
            assert_eq!(
                lower(&record.name),
                qname,
                "owner is the name asked:\n{reply}"
            );
            let RData::SRV(srv) = &record.data else {
                panic!("only SRV expected:\n{reply}");
            };
            seen.push((lower(&srv.target), srv.priority, srv.weight, srv.port));
            let expected = match srv.port {
                8080 => ips(&["10.0.1.1"]),
                _ => ips(&["fd00::2"]),
            };
            assert_eq!(
                reply.additional_ips_of(&srv.target),
                expected,
                "the target's address in additional:\n{reply}"
            );
        }
        seen.sort();
        assert_eq!(
            seen,
            vec![
                ("api-1.api.service.local.".to_owned(), 1, 3, 8080),
                ("api-2.api.service.local.".to_owned(), 0, 1, 8081),
            ],
            "{qname}:\n{reply}"
        );
    }

    // A tag only one instance carries selects just that one.
    let tagged = server
        .query("_api._v2.service.local", RecordType::SRV)
        .await;
    assert_answer_ok(&tagged);
    let targets: Vec<String> = tagged.srvs().iter().map(|s| lower(&s.target)).collect();
    assert_eq!(targets, vec!["api-1.api.service.local."], "{tagged}");

    // A tag nobody carries is a name that does not exist.
    let untagged = server
        .query("_api._grpc.service.local", RecordType::SRV)
        .await;
    untagged.assert_negative(ResponseCode::NXDomain, "service.local");
}

#[tokio::test]
async fn instance_names_answer_a_aaaa_and_txt_metadata() {
    let server = start_server().await;
    let body = json!({"address": "10.0.2.1", "port": 80,
                      "meta": {"version": "1.2", "zone": "eu-west-1"}});
    assert_eq!(server.register("shop", "shop-1", body).await.status, 200);
    server.add("shop", "shop-6", "fd00::61", 80).await;

    let a = server
        .query("shop-1.shop.service.local", RecordType::A)
        .await;
    assert_answer_ok(&a);
    assert_eq!(a.ips(), ips(&["10.0.2.1"]), "{a}");

    let txt = server
        .query("shop-1.shop.service.local", RecordType::TXT)
        .await;
    assert_answer_ok(&txt);
    assert_eq!(
        txt.txt_strings(),
        vec!["version=1.2", "zone=eu-west-1"],
        "{txt}"
    );

    let aaaa = server
        .query("shop-6.shop.service.local", RecordType::AAAA)
        .await;
    assert_answer_ok(&aaaa);
    assert_eq!(aaaa.ips(), ips(&["fd00::61"]), "{aaaa}");

    // The instance exists, but has no IPv4 address and no metadata.
    for qtype in [RecordType::A, RecordType::TXT] {
        let nodata = server.query("shop-6.shop.service.local", qtype).await;
        nodata.assert_negative(ResponseCode::NoError, "service.local");
    }
    let missing = server
        .query("shop-9.shop.service.local", RecordType::A)
        .await;
    missing.assert_negative(ResponseCode::NXDomain, "service.local");
}

#[tokio::test]
async fn the_apex_has_soa_and_ns() {
    let server = start_server().await;
    let soa = server.query("service.local", RecordType::SOA).await;
    assert_answer_ok(&soa);
    assert_eq!(soa.answers().len(), 1, "{soa}");
    assert_eq!(lower(&soa.answers()[0].name), "service.local.", "{soa}");
    assert!(matches!(soa.answers()[0].data, RData::SOA(_)), "{soa}");

    let ns = server.query("service.local", RecordType::NS).await;
    assert_answer_ok(&ns);
    assert!(!ns.answers().is_empty(), "{ns}");
    for record in ns.answers() {
        assert_eq!(lower(&record.name), "service.local.", "{ns}");
        assert!(matches!(record.data, RData::NS(_)), "{ns}");
    }

    // The apex exists without A records: NODATA.
    let a = server.query("service.local", RecordType::A).await;
    a.assert_negative(ResponseCode::NoError, "service.local");

    // The NS target resolves, to the address roster listens on by default,
    // and comes as glue with the NS answer (a priming resolver needs it).
    let glue = server.query("ns.service.local", RecordType::A).await;
    assert_answer_ok(&glue);
    assert_eq!(glue.ips(), [server.dns_addr.ip()], "{glue}");
    assert_eq!(ns.additional_ips(), [server.dns_addr.ip()], "{ns}");
}

/// `dns.ns_name` and `dns.ns_address` name the server and its addresses,
/// over UDP (the fast path steps aside for that name) and TCP alike, and a
/// service registered under the NS label does not take its name.
#[tokio::test]
async fn the_ns_name_and_its_addresses_are_configurable() {
    let server = start_server_with(&[], |config| {
        config.dns.ns_name = "dns1.service.local".into();
        config.dns.ns_address = vec!["127.0.0.53".parse().unwrap(), "::1".parse().unwrap()];
    })
    .await;
    server.add("dns1", "dns1-a", "127.0.0.9", 53).await;
    let ns = server.query("service.local", RecordType::NS).await;
    assert_answer_ok(&ns);
    let targets: Vec<String> = ns
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::NS(target) => Some(lower(&target.0)),
            _ => None,
        })
        .collect();
    assert_eq!(targets, ["dns1.service.local."], "{ns}");
    let soa = server.query("service.local", RecordType::SOA).await;
    match &soa.answers()[0].data {
        RData::SOA(soa_data) => assert_eq!(lower(&soa_data.mname), "dns1.service.local."),
        other => panic!("not an SOA: {other:?}"),
    }
    assert_eq!(ns.additional_ips(), ips(&["127.0.0.53", "::1"]), "{ns}");
    for name in ["dns1.service.local", "DNS1.Service.Local"] {
        let udp = server.query(name, RecordType::A).await;
        assert_eq!(udp.ips(), ips(&["127.0.0.53"]), "{udp}");
        let tcp = server.query_tcp(name, RecordType::AAAA, None).await;
        assert_eq!(tcp.ips(), ips(&["::1"]), "{tcp}");
    }
    // The service keeps its SRV and instance names.
    let srv = server
        .query("_dns1._tcp.service.local", RecordType::SRV)
        .await;
    assert_eq!(srv.srvs().len(), 1, "{srv}");
    let instance = server
        .query("dns1-a.dns1.service.local", RecordType::A)
        .await;
    assert_eq!(instance.ips(), ips(&["127.0.0.9"]), "{instance}");
}

#[tokio::test]
async fn nxdomain_and_nodata_carry_the_soa_with_the_negative_ttl() {
    let server = start_server().await;
    server.add("web", "web-1", "10.0.0.1", 80).await;

    let nx = server.query("nope.service.local", RecordType::A).await;
    nx.assert_negative(ResponseCode::NXDomain, "service.local");
    let (record, soa) = nx.authority_soa();
    assert_eq!(record.ttl, soa.minimum, "{nx}");
    assert_eq!(soa.minimum, 5, "default negative TTL:\n{nx}");

    let deep = server.query("a.b.web.service.local", RecordType::A).await;
    deep.assert_negative(ResponseCode::NXDomain, "service.local");

    for qtype in [RecordType::MX, RecordType::TXT, RecordType::CNAME] {
        let nodata = server.query("web.service.local", qtype).await;
        nodata.assert_negative(ResponseCode::NoError, "service.local");
        let (record, soa) = nodata.authority_soa();
        assert_eq!(record.ttl, soa.minimum, "{nodata}");
    }
}

#[tokio::test]
async fn names_outside_every_zone_are_refused() {
    let server = start_server().await;
    server.add("web", "web-1", "10.0.0.1", 80).await;
    for qname in [
        "example.org.",
        "local.",
        "web.service.local.evil.test.",
        ".",
    ] {
        let reply = server.query(qname, RecordType::A).await;
        assert_eq!(reply.rcode(), ResponseCode::Refused, "{qname}:\n{reply}");
        assert!(reply.answers().is_empty(), "{reply}");
    }
}

#[tokio::test]
async fn names_match_case_insensitively() {
    let server = start_server().await;
    let body = json!({"address": "10.0.0.1", "port": 80, "meta": {"k": "v"}, "tags": ["Blue"]});
    assert_eq!(server.register("Web", "Web-1", body).await.status, 200);

    let a = server.query("WeB.Service.LOCAL", RecordType::A).await;
    assert_answer_ok(&a);
    assert_eq!(a.ips(), ips(&["10.0.0.1"]), "{a}");
    let srv = server
        .query("_WEB._TCP.service.local", RecordType::SRV)
        .await;
    assert_eq!(srv.srvs().len(), 1, "{srv}");
    let tagged = server
        .query("_web._BLUE.Service.Local", RecordType::SRV)
        .await;
    assert_eq!(tagged.srvs().len(), 1, "{tagged}");
    let txt = server
        .query("WEB-1.wEb.SERVICE.local", RecordType::TXT)
        .await;
    assert_eq!(txt.txt_strings(), vec!["k=v"], "{txt}");
    let soa = server.query("SERVICE.LOCAL", RecordType::SOA).await;
    assert_eq!(soa.answers().len(), 1, "{soa}");
}

#[tokio::test]
async fn edns_is_echoed_only_when_asked() {
    let server = start_server().await;
    server.add("web", "web-1", "10.0.0.1", 80).await;

    let with = server
        .query_udp("web.service.local", RecordType::A, Some(1232))
        .await;
    assert_answer_ok(&with);
    let edns = with
        .edns()
        .unwrap_or_else(|| panic!("OPT expected:\n{with}"));
    assert_eq!(edns.version(), 0, "{with}");
    assert!(edns.max_payload() >= 512, "{with}");

    let without = server
        .query_udp("web.service.local", RecordType::A, None)
        .await;
    assert_answer_ok(&without);
    assert!(without.edns().is_none(), "no OPT without EDNS:\n{without}");
    assert_eq!(without.ips(), ips(&["10.0.0.1"]));

    // Errors echo OPT too.
    let refused = server
        .query_udp("example.org", RecordType::A, Some(1232))
        .await;
    assert_eq!(refused.rcode(), ResponseCode::Refused, "{refused}");
    assert!(refused.edns().is_some(), "{refused}");
    let nx = server
        .query_udp("nope.service.local", RecordType::A, Some(1232))
        .await;
    assert!(nx.edns().is_some(), "{nx}");
}

#[tokio::test]
async fn udp_answers_are_truncated_to_512_octets_without_edns() {
    let server = start_server().await;
    let addresses = register_many(&server, "big", 20, 40).await;
    let all = ips(&addresses.iter().map(String::as_str).collect::<Vec<_>>());

    for qtype in [RecordType::A, RecordType::SRV] {
        let udp = server.query_udp("big.service.local", qtype, None).await;
        assert_eq!(udp.rcode(), ResponseCode::NoError, "{udp}");
        assert!(udp.truncated(), "{qtype}: TC expected:\n{udp}");
        assert!(udp.wire_len <= 512, "{qtype}: {} octets", udp.wire_len);
        assert!(udp.answers().len() < 40, "{qtype}: trimmed:\n{udp}");

        // The same question over TCP has room for everything.
        let tcp = server.query_tcp("big.service.local", qtype, None).await;
        assert_answer_ok(&tcp);
        assert_eq!(tcp.answers().len(), 40, "{qtype} over TCP:\n{tcp}");
        if qtype == RecordType::SRV {
            let mut targets = BTreeSet::new();
            for srv in tcp.srvs() {
                targets.insert(lower(&srv.target));
                assert_eq!(tcp.additional_ips_of(&srv.target).len(), 1, "{tcp}");
            }
            assert_eq!(targets.len(), 40, "{tcp}");
        } else {
            assert_eq!(tcp.ips(), all);
        }
    }
}

#[tokio::test]
async fn udp_answers_honour_the_clients_edns_size() {
    let server = start_server().await;
    let addresses = register_many(&server, "big", 21, 40).await;
    let all = ips(&addresses.iter().map(String::as_str).collect::<Vec<_>>());

    // 40 A records are about 700 octets: too big for 600, fine for 1232.
    let small = server
        .query_udp("big.service.local", RecordType::A, Some(600))
        .await;
    assert!(small.truncated(), "TC expected at 600:\n{small}");
    assert!(small.wire_len <= 600, "{} octets", small.wire_len);
    assert!(small.answers().len() < 40, "{small}");
    assert!(small.edns().is_some(), "OPT kept when truncated:\n{small}");

    let large = server
        .query_udp("big.service.local", RecordType::A, Some(1232))
        .await;
    assert_answer_ok(&large);
    assert!(large.wire_len <= 1232, "{} octets", large.wire_len);
    assert_eq!(large.ips(), all, "{large}");

    let srv = server
        .query_udp("big.service.local", RecordType::SRV, Some(4096))
        .await;
    assert_answer_ok(&srv);
    assert_eq!(srv.srvs().len(), 40, "{srv}");
    assert_eq!(srv.additionals().len(), 40, "{srv}");

    // A size below 512 still gets the classic 512 (RFC 6891 section 6.2.5).
    let tiny = server
        .query_udp("big.service.local", RecordType::A, Some(100))
        .await;
    assert!(tiny.truncated(), "{tiny}");
    assert!(tiny.wire_len <= 512, "{} octets", tiny.wire_len);
}

#[tokio::test]
async fn every_instance_comes_first_about_equally_often() {
    let server = start_server().await;
    let addresses = register_many(&server, "spin", 30, 5).await;
    let all = ips(&addresses.iter().map(String::as_str).collect::<Vec<_>>());

    let mut first: HashMap<String, u32> = HashMap::new();
    let mut orders = BTreeSet::new();
    for _ in 0..300 {
        let reply = server.query("spin.service.local", RecordType::A).await;
        assert_eq!(reply.ips(), all, "every response holds every instance");
        let order = reply.ips_in_order();
        *first.entry(order[0].to_string()).or_default() += 1;
        orders.insert(order);
    }
    // Binomial(300, 1/5): mean 60, sd 6.9; [20, 100] is about 6 sd either
    // side, so a fair shuffle fails this less than once in a billion runs.
    for address in &addresses {
        let count = first.get(address).copied().unwrap_or(0);
        assert!(
            (20..=100).contains(&count),
            "{address} came first {count} times in 300: {first:?}"
        );
    }
    // 120 orders are possible; a uniform shuffle shows far more than 10.
    assert!(orders.len() > 10, "only {} distinct orders", orders.len());
}

#[tokio::test]
async fn srv_records_are_shuffled_too() {
    let server = start_server().await;
    register_many(&server, "spin", 31, 5).await;
    let mut first: HashMap<String, u32> = HashMap::new();
    for _ in 0..300 {
        let reply = server
            .query("_spin._tcp.service.local", RecordType::SRV)
            .await;
        assert_eq!(reply.srvs().len(), 5, "{reply}");
        *first.entry(lower(&reply.srvs()[0].target)).or_default() += 1;
    }
    assert_eq!(first.len(), 5, "{first:?}");
    assert!(
        first.values().all(|count| (20..=100).contains(count)),
        "{first:?}"
    );
}

#[tokio::test]
async fn writes_are_visible_to_the_very_next_query() {
    let server = start_server().await;
    server.add("rw", "rw-keep", "10.40.0.1", 80).await;
    for n in 0..100u32 {
        let id = format!("rw-{n}");
        let address = format!("10.41.{}.{}", n / 200, n % 200 + 1);
        server.add("rw", &id, &address, 80).await;
        let present = server.query("rw.service.local", RecordType::A).await;
        assert_eq!(
            present.ips(),
            ips(&["10.40.0.1", &address]),
            "round {n}, after PUT:\n{present}"
        );
        let instance = server
            .query(&format!("{id}.rw.service.local"), RecordType::A)
            .await;
        assert_eq!(instance.ips(), ips(&[&address]), "round {n}:\n{instance}");

        assert_eq!(server.deregister("rw", &id).await.status, 204);
        let gone = server.query("rw.service.local", RecordType::A).await;
        assert_eq!(
            gone.ips(),
            ips(&["10.40.0.1"]),
            "round {n}, after DELETE:\n{gone}"
        );
        let instance = server
            .query(&format!("{id}.rw.service.local"), RecordType::A)
            .await;
        instance.assert_negative(ResponseCode::NXDomain, "service.local");
    }
    // The last instance of a service gone: the service name is gone too.
    assert_eq!(server.deregister("rw", "rw-keep").await.status, 204);
    let gone = server.query("rw.service.local", RecordType::A).await;
    gone.assert_negative(ResponseCode::NXDomain, "service.local");
    server.stop().await;
}

/// While one instance moves address after address, concurrent queries
/// (from new sockets, so spread over roster's UDP threads and their service
/// caches) never see an address older than the last acknowledged move.
#[tokio::test]
async fn answers_under_churn_are_never_older_than_the_last_acknowledged_write() {
    use std::{
        net::IpAddr,
        sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst},
        time::Duration,
    };
    const MOVES: u32 = 150;
    // Bounds each of the four readers even if the writer stalled.
    const MAX_QUERIES_PER_READER: u32 = 20_000;
    let moving = |n: u32| format!("10.61.{}.{}", n / 250, n % 250 + 1);
    let number_of = |ip: &IpAddr| -> u32 {
        let IpAddr::V4(v4) = ip else {
            panic!("not IPv4: {ip}")
        };
        let [_, _, high, low] = v4.octets();
        u32::from(high) * 250 + u32::from(low) - 1
    };

    let server = start_server().await;
    server.add("churn", "churn-keep", "10.60.0.1", 80).await;
    server.add("churn", "churn-moving", &moving(0), 80).await;
    let keep: IpAddr = "10.60.0.1".parse().unwrap();
    let acknowledged = AtomicU32::new(0);
    let done = AtomicBool::new(false);

    let writer = async {
        for n in 1..=MOVES {
            server.add("churn", "churn-moving", &moving(n), 80).await;
            acknowledged.store(n, SeqCst);
        }
        done.store(true, SeqCst);
    };
    let reader = || async {
        let mut queries = 0;
        while !done.load(SeqCst) && queries < MAX_QUERIES_PER_READER {
            let floor = acknowledged.load(SeqCst);
            let (name, expect_keep) = if queries % 2 == 0 {
                ("churn.service.local", true)
            } else {
                ("churn-moving.churn.service.local", false)
            };
            let reply = server.query(name, RecordType::A).await;
            let found = reply.ips();
            assert_eq!(found.contains(&keep), expect_keep, "{name}:\n{reply}");
            let moves: Vec<u32> = found
                .iter()
                .filter(|ip| **ip != keep)
                .map(number_of)
                .collect();
            assert_eq!(moves.len(), 1, "{name}:\n{reply}");
            assert!(
                (floor..=MOVES).contains(&moves[0]),
                "{name} answered move {} after move {floor} was acknowledged:\n{reply}",
                moves[0]
            );
            queries += 1;
        }
        queries
    };
    let ((), a, b, c, d) = tokio::time::timeout(Duration::from_secs(120), async {
        tokio::join!(writer, reader(), reader(), reader(), reader())
    })
    .await
    .expect("churn test took over 120 s");
    let counts = [a, b, c, d];
    assert!(
        counts.iter().all(|&c| c > 0),
        "every reader ran: {counts:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn maintenance_drains_an_instance_out_of_dns_and_back() {
    let server = start_server().await;
    server.add("pay", "pay-1", "10.50.0.1", 80).await;
    server.add("pay", "pay-2", "10.50.0.2", 80).await;

    let drained = server.maintenance("pay", "pay-1", true, "x").await;
    assert_eq!(drained.status, 200, "{drained:?}");
    assert_eq!(drained.body["in_dns"], json!(false), "{drained:?}");
    assert_eq!(
        server.ips("pay.service.local", RecordType::A).await,
        ips(&["10.50.0.2"])
    );
    let srv = server
        .query("_pay._tcp.service.local", RecordType::SRV)
        .await;
    let targets: Vec<String> = srv.srvs().iter().map(|s| lower(&s.target)).collect();
    assert_eq!(targets, vec!["pay-2.pay.service.local."], "{srv}");
    let instance = server.query("pay-1.pay.service.local", RecordType::A).await;
    assert!(
        instance.ips().is_empty(),
        "drained instance answered:\n{instance}"
    );

    let restored = server.maintenance("pay", "pay-1", false, "").await;
    assert_eq!(restored.status, 200, "{restored:?}");
    assert_eq!(
        server.ips("pay.service.local", RecordType::A).await,
        ips(&["10.50.0.1", "10.50.0.2"])
    );
    assert_eq!(
        server.ips("pay-1.pay.service.local", RecordType::A).await,
        ips(&["10.50.0.1"])
    );
}

const EXAMPLE_COM: &str = "$TTL 300
@       IN SOA  ns1.example.com. hostmaster.example.com. 7 3600 600 86400 60
@       IN NS   ns1.example.com.
ns1     IN A    192.0.2.1
www     IN A    192.0.2.10
www     IN AAAA 2001:db8::10
";

const SERVICE_LOCAL: &str = "$TTL 30
web     IN A    192.0.2.80
legacy  IN A    192.0.2.7
legacy  IN TXT  \"owner=ops\"
";

async fn start_with_static_zones() -> Server {
    start_server_with(
        &[
            ("example.com.zone", EXAMPLE_COM),
            ("service.local.zone", SERVICE_LOCAL),
        ],
        |_| {},
    )
    .await
}

#[tokio::test]
async fn a_static_zone_is_served_authoritatively() {
    let server = start_with_static_zones().await;

    let www = server.query("WWW.Example.COM", RecordType::A).await;
    assert_answer_ok(&www);
    assert_eq!(www.ips(), ips(&["192.0.2.10"]), "{www}");
    assert_eq!(www.answers()[0].ttl, 300, "{www}");
    assert_eq!(
        server.ips("www.example.com", RecordType::AAAA).await,
        ips(&["2001:db8::10"])
    );

    let soa = server.query("example.com", RecordType::SOA).await;
    assert_answer_ok(&soa);
    match soa.answers() {
        [record] => match &record.data {
            RData::SOA(data) => {
                assert_eq!(data.serial, 7, "{soa}");
                assert_eq!(lower(&data.mname), "ns1.example.com.", "{soa}");
            }
            other => panic!("expected SOA, got {other:?}"),
        },
        _ => panic!("one SOA expected:\n{soa}"),
    }
    let ns = server.query("example.com", RecordType::NS).await;
    assert_answer_ok(&ns);
    match ns.answers() {
        [record] => assert!(
            matches!(&record.data, RData::NS(ns) if lower(&ns.0) == "ns1.example.com."),
            "{ns}"
        ),
        _ => panic!("one NS expected:\n{ns}"),
    }

    // Negative answers use the zone's own SOA: TTL min(300, MINIMUM 60).
    let nx = server.query("nothing.example.com", RecordType::A).await;
    nx.assert_negative(ResponseCode::NXDomain, "example.com");
    assert_eq!(nx.authority_soa().0.ttl, 60, "{nx}");
    let nodata = server.query("www.example.com", RecordType::MX).await;
    nodata.assert_negative(ResponseCode::NoError, "example.com");

    // Serving example.com does not make roster a resolver for the rest.
    let other = server.query("example.net", RecordType::A).await;
    assert_eq!(other.rcode(), ResponseCode::Refused, "{other}");
}

#[tokio::test]
async fn static_records_in_the_dynamic_domain_join_registered_ones() {
    let server = start_with_static_zones().await;
    server.add("web", "web-1", "10.0.0.1", 80).await;

    let web = server.query("web.service.local", RecordType::A).await;
    assert_answer_ok(&web);
    assert_eq!(web.ips(), ips(&["10.0.0.1", "192.0.2.80"]), "{web}");

    let legacy = server.query("legacy.service.local", RecordType::A).await;
    assert_answer_ok(&legacy);
    assert_eq!(legacy.ips(), ips(&["192.0.2.7"]), "{legacy}");
    let txt = server.query("Legacy.Service.Local", RecordType::TXT).await;
    assert_eq!(txt.txt_strings(), vec!["owner=ops"], "{txt}");
    let nodata = server.query("legacy.service.local", RecordType::AAAA).await;
    nodata.assert_negative(ResponseCode::NoError, "service.local");

    // The registered side still works, and so do negative answers.
    assert_eq!(
        server.ips("web-1.web.service.local", RecordType::A).await,
        ips(&["10.0.0.1"])
    );
    let nx = server.query("nope.service.local", RecordType::A).await;
    nx.assert_negative(ResponseCode::NXDomain, "service.local");

    // Deregistering leaves the static record in place.
    assert_eq!(server.deregister("web", "web-1").await.status, 204);
    assert_eq!(
        server.ips("web.service.local", RecordType::A).await,
        ips(&["192.0.2.80"])
    );
}

/// The answer section of `dig +noall +answer` as (owner, type, data) rows.
fn dig_answers(output: &str) -> Vec<(String, String, String)> {
    output
        .lines()
        .filter(|line| !line.starts_with(';') && !line.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert!(fields.len() >= 5, "unexpected dig line {line:?}");
            (
                fields[0].to_ascii_lowercase(),
                fields[3].to_owned(),
                fields[4..].join(" "),
            )
        })
        .collect()
}

/// DNS over TCP answers exactly what UDP answers (the common questions take
/// the same fast path on both), for every name form, with and without
/// EDNS: the same flags, RCODE, records and sections, in any order.
#[tokio::test]
async fn tcp_answers_what_udp_answers_for_every_form() {
    let server = start_server().await;
    let body = json!({"address": "10.62.0.1", "port": 8080, "tags": ["v2"], "meta": {"k": "v"}});
    assert_eq!(server.register("web", "web-1", body).await.status, 200);
    server.add("web", "web-2", "2001:db8::62", 8081).await;
    server.add("db", "db-1", "10.62.0.3", 5432).await;
    let sorted = |records: &[hickory_proto::rr::Record]| {
        let mut texts: Vec<String> = records
            .iter()
            .map(|r| format!("{} {} {} {}", r.name, r.ttl, r.record_type(), r.data))
            .collect();
        texts.sort();
        texts
    };
    let questions = [
        ("web.service.local", RecordType::A),
        ("WEB.Service.Local", RecordType::AAAA),
        ("web.service.local", RecordType::SRV),
        ("_web._tcp.service.local", RecordType::SRV),
        ("_web._v2.service.local", RecordType::SRV),
        ("web-1.web.service.local", RecordType::A),
        ("web-1.web.service.local", RecordType::TXT),
        ("db.service.local", RecordType::AAAA),
        ("nope.service.local", RecordType::A),
        ("service.local", RecordType::SOA),
        ("service.local", RecordType::NS),
        ("ns.service.local", RecordType::A),
        ("example.org", RecordType::A),
    ];
    for (qname, qtype) in questions {
        for edns in [None, Some(1232)] {
            let udp = server.query_udp(qname, qtype, edns).await;
            let tcp = server.query_tcp(qname, qtype, edns).await;
            let what = format!("{qname} {qtype} edns {edns:?}\nudp: {udp}\ntcp: {tcp}");
            assert!(!udp.message.metadata.truncation, "{what}");
            let (u, t) = (&udp.message, &tcp.message);
            assert_eq!(u.metadata.response_code, t.metadata.response_code, "{what}");
            assert_eq!(u.metadata.authoritative, t.metadata.authoritative, "{what}");
            assert_eq!(u.metadata.truncation, t.metadata.truncation, "{what}");
            assert_eq!(
                u.metadata.recursion_desired, t.metadata.recursion_desired,
                "{what}"
            );
            assert_eq!(u.edns.is_some(), t.edns.is_some(), "{what}");
            assert_eq!(sorted(&u.answers), sorted(&t.answers), "{what}");
            assert_eq!(sorted(&u.authorities), sorted(&t.authorities), "{what}");
            assert_eq!(sorted(&u.additionals), sorted(&t.additionals), "{what}");
        }
    }
}

/// roster holds no TSIG keys, so a signed query names a key it does not
/// know: RFC 8945 section 5.2 wants NOTAUTH with TSIG error BADKEY (as Knot
/// and NSD answer), never an answer as if it were unsigned.
#[tokio::test]
async fn a_query_signed_with_an_unknown_key_gets_notauth_badkey() {
    let server = start_server().await;
    server.add("web", "web-1", "10.61.0.1", 80).await;
    for (transport, key) in [
        ("+notcp", "hmac-sha256:roster-key.:c2VjcmV0c2VjcmV0"),
        ("+tcp", "hmac-sha512:other-key.:c2VjcmV0c2VjcmV0"),
    ] {
        let output = common::dig(
            server.dns_addr,
            &[transport, "-y", key, "web.service.local", "A"],
        )
        .await;
        assert!(output.contains("status: NOTAUTH"), "{output}");
        assert!(output.contains("ANSWER: 0"), "{output}");
        let key_name = key.split(':').nth(1).expect("a key name");
        let tsig = output
            .lines()
            .find(|line| line.contains("TSIG") && line.starts_with(key_name))
            .unwrap_or_else(|| panic!("no TSIG record for {key_name}: {output}"));
        assert!(tsig.contains("BADKEY"), "{tsig}");
    }
    // The same query unsigned is answered.
    let plain = common::dig(server.dns_addr, &["+short", "web.service.local", "A"]).await;
    assert_eq!(plain.trim(), "10.61.0.1");
}

#[tokio::test]
async fn dig_gets_the_same_answers() {
    let server = start_server().await;
    let body = json!({"address": "10.60.0.1", "port": 8080, "meta": {"v": "1"}});
    assert_eq!(server.register("web", "web-1", body).await.status, 200);
    server.add("web", "web-2", "10.60.0.2", 8081).await;
    let dns = server.dns_addr;

    let short = common::dig(dns, &["+short", "web.service.local", "A"]).await;
    let mut got: Vec<&str> = short.lines().collect();
    got.sort_unstable();
    assert_eq!(got, vec!["10.60.0.1", "10.60.0.2"], "{short}");

    let srv = common::dig(
        dns,
        &[
            "+noall",
            "+answer",
            "+additional",
            "_web._tcp.service.local",
            "SRV",
        ],
    )
    .await;
    let rows = dig_answers(&srv);
    let mut srv_rows: Vec<String> = rows
        .iter()
        .filter(|(_, kind, _)| kind == "SRV")
        .map(|(_, _, data)| data.to_ascii_lowercase())
        .collect();
    srv_rows.sort();
    assert_eq!(
        srv_rows,
        vec![
            "0 1 8080 web-1.web.service.local.",
            "0 1 8081 web-2.web.service.local."
        ],
        "{srv}"
    );
    assert!(
        rows.contains(&(
            "web-1.web.service.local.".into(),
            "A".into(),
            "10.60.0.1".into()
        )),
        "additional section:\n{srv}"
    );

    let txt = common::dig(dns, &["+short", "web-1.web.service.local", "TXT"]).await;
    assert_eq!(txt.trim(), "\"v=1\"", "{txt}");

    let nx = common::dig(dns, &["nope.service.local", "A"]).await;
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");
    assert!(nx.contains("flags: qr aa"), "{nx}");
    let refused = common::dig(dns, &["example.org", "A"]).await;
    assert!(refused.contains("status: REFUSED"), "{refused}");
}

#[tokio::test]
async fn dig_retries_a_truncated_answer_over_tcp_and_gets_everything() {
    let server = start_server().await;
    register_many(&server, "big", 22, 40).await;
    let dns = server.dns_addr;

    // Without EDNS the UDP answer is truncated; dig sees TC.
    let truncated = common::dig(dns, &["+noedns", "+ignore", "big.service.local", "A"]).await;
    assert!(truncated.contains(" tc"), "TC flag expected:\n{truncated}");

    // By default dig then asks again over TCP and gets all 40.
    let retried = common::dig(dns, &["+noedns", "big.service.local", "A"]).await;
    let rows: Vec<_> = dig_answers(
        &retried
            .lines()
            .skip_while(|line| !line.contains("ANSWER SECTION"))
            .skip(1)
            .take_while(|line| !line.trim().is_empty())
            .collect::<Vec<_>>()
            .join("\n"),
    );
    assert_eq!(rows.len(), 40, "{retried}");
    assert!(
        retried.contains("Truncated, retrying in TCP mode"),
        "{retried}"
    );

    let tcp = common::dig(dns, &["+tcp", "+short", "big.service.local", "A"]).await;
    assert_eq!(tcp.lines().count(), 40, "{tcp}");
}

/// Each UDP thread is named (`top -H`, `perf`, `/proc/PID/task/*/comm`),
/// so that it is told from the runtime's workers whose pool it runs on.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn udp_threads_are_named() {
    let server = start_server().await;
    let names = || -> Vec<String> {
        std::fs::read_dir("/proc/self/task")
            .expect("/proc/self/task")
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .map(|name| name.trim().to_owned())
            .collect()
    };
    // The server starts its UDP threads once this test's runtime lets it.
    common::eventually(
        "a UDP thread named roster-udp-0",
        std::time::Duration::from_secs(20),
        || async {
            let names = names();
            if names.iter().any(|name| name == "roster-udp-0") {
                Ok(())
            } else {
                Err(format!("{names:?}"))
            }
        },
    )
    .await;
    server.stop().await;
}

/// The CPUs in a `Cpus_allowed_list` (`0-3,8`).
#[cfg(target_os = "linux")]
fn cpu_list(text: &str) -> Vec<usize> {
    text.trim()
        .split(',')
        .filter(|part| !part.is_empty())
        .flat_map(|part| {
            let (first, last) = part.split_once('-').unwrap_or((part, part));
            let number = |n: &str| n.parse::<usize>().expect("a CPU number");
            number(first)..=number(last)
        })
        .collect()
}

/// With `dns.udp_cpu_affinity` and two sockets, each UDP thread may run
/// only on the CPUs whose datagrams its socket gets (CPU number mod 2).
#[cfg(target_os = "linux")]
#[tokio::test]
async fn udp_threads_are_pinned_to_their_sockets_cpus() {
    let status = |task: &std::path::Path| std::fs::read_to_string(task.join("status")).ok();
    let allowed = |status: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
            .map(cpu_list)
            .unwrap_or_default()
    };
    let ours = allowed(&status(std::path::Path::new("/proc/thread-self")).expect("status"));
    let theirs = |socket: usize| -> Vec<usize> {
        ours.iter()
            .copied()
            .filter(|cpu| cpu % 2 == socket)
            .collect()
    };
    if theirs(0).is_empty() || theirs(1).is_empty() {
        eprintln!("not both an even and an odd CPU to run on ({ours:?}): nothing steered; skipped");
        return;
    }
    let server = start_server_with(&[], |config| {
        config.dns.udp_sockets = 2;
        config.dns.udp_cpu_affinity = true;
    })
    .await;
    // Other tests' servers run in this process too, unpinned: look for
    // this one's, pinned as its sockets' datagrams are steered.
    common::eventually(
        "UDP threads pinned to even and odd CPUs",
        std::time::Duration::from_secs(20),
        || async {
            let mut pinned = [false; 2];
            for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
                let Ok(task) = task else { continue };
                let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
                let Some(socket) = ["roster-udp-0", "roster-udp-1"]
                    .iter()
                    .position(|udp| name.trim() == *udp)
                else {
                    continue;
                };
                if status(&task.path()).is_some_and(|s| allowed(&s) == theirs(socket)) {
                    pinned[socket] = true;
                }
            }
            if pinned == [true, true] {
                Ok(())
            } else {
                Err(format!("{pinned:?}"))
            }
        },
    )
    .await;
    // The pinned threads answer.
    server.add("web", "web-1", "10.0.0.1", 80).await;
    let web = common::service_name("web");
    assert_eq!(server.ips(&web, RecordType::A).await, ips(&["10.0.0.1"]));
    server.stop().await;
}

/// Registers `count` instances of `service` (10.x.y.z, no checks) in one
/// import, from the export of one registered the usual way.
async fn import_many(server: &Server, service: &str, count: usize) {
    server
        .add(service, &format!("{service}-0"), "10.30.0.1", 8000)
        .await;
    let export = server.get(&["v1", "export"]).await;
    let template = export.body["instances"]
        .as_array()
        .and_then(|all| all.iter().find(|i| i["id"] == format!("{service}-0")))
        .unwrap_or_else(|| panic!("{service}-0 in the export: {export:?}"))
        .clone();
    let instances: Vec<serde_json::Value> = (1..count)
        .map(|n| {
            let mut instance = template.clone();
            instance["id"] = json!(format!("{service}-{n}"));
            instance["address"] = json!(format!("10.30.{}.{}", n / 250, n % 250 + 1));
            instance
        })
        .collect();
    let body = json!({ "version": 1, "index": 0, "instances": instances });
    let reply = server.put_raw(&["v1", "import"], body.to_string()).await;
    assert_eq!(reply.status, 200, "{reply:?}");
}

/// Over TCP an answer may take 65,535 octets. Past that, answers left out
/// set TC, additional records are dropped without it, and the OPT record
/// always stays, as over UDP: hickory's encoder, left to cut by itself,
/// set TC on additional records alone and dropped the OPT record.
#[tokio::test]
async fn a_tcp_answer_too_large_for_one_message_keeps_its_opt_record() {
    let server = start_server().await;
    // ~46 octets an SRV answer: 1,000 fit in one message and their
    // addresses do not; 2,000 do not fit either.
    for (service, count) in [("wide", 1_000), ("huge", 2_000)] {
        import_many(&server, service, count).await;
        let reply = common::query_tcp(
            server.dns_addr,
            &format!("{service}.service.local."),
            RecordType::SRV,
            Some(1232),
        )
        .await;
        let case = format!(
            "{count} instances: {} answers, {} octets",
            reply.answers().len(),
            reply.wire_len
        );
        assert_eq!(reply.rcode(), ResponseCode::NoError, "{case}");
        assert!(reply.edns().is_some(), "the OPT record is gone: {case}");
        assert!(reply.wire_len <= 65_535, "{case}");
        let all = reply.answers().len() == count;
        assert_eq!(
            reply.truncated(),
            !all,
            "TC iff answers were left out: {case}"
        );
        if count == 1_000 {
            assert!(all, "{case}");
            assert!(
                reply.additionals().len() < count,
                "the addresses do not all fit: {case}"
            );
        } else {
            assert!(reply.answers().len() > 1_000, "{case}");
        }
    }
    server.stop().await;
}

/// `*.<domain>` is a name like any other (roster's dynamic domain has no
/// wildcard records), not the apex: NXDOMAIN, for SOA and NS too, where it
/// once answered the apex's records under another owner name.
#[tokio::test]
async fn a_star_label_under_the_domain_is_no_name_not_the_apex() {
    let server = start_server().await;
    server.add("web", "web-1", "10.0.0.1", 80).await;
    for qtype in [
        RecordType::SOA,
        RecordType::NS,
        RecordType::A,
        RecordType::ANY,
    ] {
        for reply in [
            common::query_udp(server.dns_addr, "*.service.local.", qtype, Some(1232)).await,
            common::query_tcp(server.dns_addr, "*.service.local.", qtype, Some(1232)).await,
        ] {
            reply.assert_negative(ResponseCode::NXDomain, "service.local.");
            assert!(reply.answers().is_empty(), "{qtype}: {reply}");
        }
    }
    server.stop().await;
}
