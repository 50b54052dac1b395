//! The update engine against a real registry (in memory): prerequisites,
//! adds, replacements, deletes, the mapping of every name, and refusals.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use hickory_proto::{
    op::ResponseCode,
    rr::{
        DNSClass, Name, RData, Record, RecordType,
        rdata::{A, AAAA, NULL, SRV, TXT},
    },
};
use tokio::sync::mpsc;

use super::{DefaultCheck, RegistryUpdates, UpdatePlan, UpdateSettings, engine, view::DHCID};
use crate::{
    dns::{ServiceScope, table::Nameserver},
    metrics::Metrics,
    model::{CheckKind, InstanceBody},
    registry::{Command, InOtherService, InstanceState, MemoryStore, Registry, TableSettings},
};

const DOMAIN: &str = "service.local.";

fn n(relative: &str) -> Name {
    let text = if relative.is_empty() {
        DOMAIN.to_owned()
    } else {
        format!("{relative}.{DOMAIN}")
    };
    Name::from_ascii(&text).expect("a valid name")
}

fn a(address: &str) -> RData {
    RData::A(A(address.parse::<Ipv4Addr>().expect("IPv4")))
}

fn aaaa(address: &str) -> RData {
    RData::AAAA(AAAA(address.parse::<Ipv6Addr>().expect("IPv6")))
}

fn txt(strings: &[&str]) -> RData {
    RData::TXT(TXT::new(strings.iter().map(|s| s.to_string()).collect()))
}

fn srv(priority: u16, weight: u16, port: u16, target: &str) -> RData {
    RData::SRV(SRV::new(priority, weight, port, n(target)))
}

fn dhcid(bytes: &[u8]) -> RData {
    RData::Unknown {
        code: DHCID,
        rdata: NULL::with(bytes.to_vec()),
    }
}

fn record(name: &str, class: DNSClass, ttl: u32, data: RData) -> Record {
    let mut record = Record::from_rdata(n(name), ttl, data);
    record.dns_class = class;
    record
}

fn empty(name: &str, class: DNSClass, rtype: RecordType) -> Record {
    let mut record = Record::update0(n(name), 0, rtype);
    record.dns_class = class;
    record
}

// The update section's forms (RFC 2136 section 2.5).
fn add(name: &str, data: RData) -> Record {
    record(name, DNSClass::IN, 300, data)
}
fn delete_rrset(name: &str, rtype: RecordType) -> Record {
    empty(name, DNSClass::ANY, rtype)
}
fn delete_name(name: &str) -> Record {
    empty(name, DNSClass::ANY, RecordType::ANY)
}
fn delete_rr(name: &str, data: RData) -> Record {
    record(name, DNSClass::NONE, 0, data)
}

// The prerequisite section's forms (section 2.4).
fn rrset_exists(name: &str, rtype: RecordType) -> Record {
    empty(name, DNSClass::ANY, rtype)
}
fn rrset_absent(name: &str, rtype: RecordType) -> Record {
    empty(name, DNSClass::NONE, rtype)
}
fn name_in_use(name: &str) -> Record {
    empty(name, DNSClass::ANY, RecordType::ANY)
}
fn name_unused(name: &str) -> Record {
    empty(name, DNSClass::NONE, RecordType::ANY)
}
fn rrset_is(name: &str, data: RData) -> Record {
    record(name, DNSClass::IN, 0, data)
}

/// A registry in memory with the update engine's settings.
struct World {
    registry: Registry,
    settings: Arc<UpdateSettings>,
}

impl World {
    async fn new(default_check: Option<DefaultCheck>) -> Self {
        let domain = Name::from_ascii(DOMAIN).expect("valid name");
        let table = TableSettings {
            domain: domain.clone(),
            ttl: 30,
            negative_ttl: 5,
            include_warning: false,
            nameserver: Arc::new(Nameserver::conventional(&domain)),
        };
        // No health checker listens: nothing is probed in these tests.
        let (events, _) = mpsc::unbounded_channel();
        let (registry, _writer) = Registry::start(
            Arc::new(MemoryStore::default()),
            table,
            events,
            Arc::new(Metrics::default()),
        )
        .await
        .expect("start");
        let settings = Arc::new(UpdateSettings {
            domain,
            default_port: 8080,
            default_check,
        });
        Self { registry, settings }
    }

    /// Registers through the registry as the native API does.
    async fn register(&self, service: &str, id: &str, body: &str) {
        let body: InstanceBody = serde_json::from_str(body).expect(body);
        let instance = body.validate(service, id).expect("valid instance");
        self.registry
            .execute(Command::Register {
                instance,
                in_other_service: InOtherService::Refuse,
            })
            .await
            .expect("registered");
    }

    fn plan(
        &self,
        scope: ServiceScope,
        prerequisites: Vec<Record>,
        updates: Vec<Record>,
    ) -> UpdatePlan {
        UpdatePlan {
            settings: self.settings.clone(),
            scope,
            prerequisites,
            updates,
        }
    }

    /// Sends an update as the DNS server does; returns the RCODE.
    async fn update(&self, prerequisites: Vec<Record>, updates: Vec<Record>) -> ResponseCode {
        self.update_as(ServiceScope::All, prerequisites, updates)
            .await
    }

    async fn update_as(
        &self,
        scope: ServiceScope,
        prerequisites: Vec<Record>,
        updates: Vec<Record>,
    ) -> ResponseCode {
        let plan = self.plan(scope, prerequisites, updates);
        RegistryUpdates::execute(self.registry.clone(), plan, n("key")).await
    }

    /// The refusal's reason, for an update that must be refused.
    fn refusal(&self, scope: ServiceScope, updates: Vec<Record>) -> (ResponseCode, String) {
        let plan = self.plan(scope, Vec::new(), updates);
        match engine::plan(&plan, &self.registry.state()) {
            Ok(changes) => panic!("planned {changes:?}"),
            Err(refusal) => (refusal.rcode, refusal.reason),
        }
    }

    fn instance(&self, id: &str) -> Option<Arc<InstanceState>> {
        self.registry.state().instance(id).cloned()
    }

    fn get(&self, id: &str) -> Arc<InstanceState> {
        self.instance(id)
            .unwrap_or_else(|| panic!("{id} is registered"))
    }

    fn index(&self) -> u64 {
        self.registry.state().index
    }
}

const WEB_1: &str = r#"{"address":"127.0.0.1","port":80,"tags":["v2"],"meta":{"k":"v"}}"#;

#[tokio::test]
async fn every_prerequisite_form_is_met_and_unmet() {
    let world = World::new(None).await;
    world.register("web", "web-1", WEB_1).await;
    let met = [
        name_in_use("web-1.web"),
        name_in_use("web"),
        name_in_use("_web._tcp"),
        name_in_use("_web._v2"),
        name_in_use(""),
        name_unused("web-2.web"),
        name_unused("api"),
        name_unused("_web._old"),
        name_unused("a.b.web"),
        rrset_exists("web-1.web", RecordType::A),
        rrset_exists("web-1.web", RecordType::TXT),
        rrset_exists("web", RecordType::SRV),
        rrset_exists("", RecordType::SOA),
        rrset_absent("web-1.web", RecordType::AAAA),
        rrset_absent("web-1.web", DHCID),
        rrset_absent("web-1.web", RecordType::MX),
        rrset_is("web-1.web", a("127.0.0.1")),
        rrset_is("web-1.web", txt(&["k=v"])),
        rrset_is("web", a("127.0.0.1")),
        rrset_is("_web._tcp", srv(0, 1, 80, "web-1.web")),
        rrset_is("_web._v2", srv(0, 1, 80, "web-1.web")),
    ];
    for prerequisite in met {
        let text = prerequisite.to_string();
        assert_eq!(
            world.update(vec![prerequisite], Vec::new()).await,
            ResponseCode::NoError,
            "{text}"
        );
    }
    let unmet = [
        (name_in_use("web-2.web"), ResponseCode::NXDomain),
        (name_in_use("_web._old"), ResponseCode::NXDomain),
        (name_unused("web-1.web"), ResponseCode::YXDomain),
        (name_unused("_web._udp"), ResponseCode::YXDomain),
        (
            rrset_exists("web-1.web", RecordType::AAAA),
            ResponseCode::NXRRSet,
        ),
        (
            rrset_exists("web-2.web", RecordType::A),
            ResponseCode::NXRRSet,
        ),
        (
            rrset_absent("web-1.web", RecordType::A),
            ResponseCode::YXRRSet,
        ),
        (
            rrset_absent("_web._v2", RecordType::SRV),
            ResponseCode::YXRRSet,
        ),
        (rrset_is("web-1.web", a("127.0.0.2")), ResponseCode::NXRRSet),
        (rrset_is("web-1.web", txt(&["k=w"])), ResponseCode::NXRRSet),
        (
            rrset_is("_web._tcp", srv(0, 1, 81, "web-1.web")),
            ResponseCode::NXRRSet,
        ),
        // Malformed prerequisites.
        (
            record("web-1.web", DNSClass::ANY, 0, a("127.0.0.1")),
            ResponseCode::FormErr,
        ),
        (
            record("web-1.web", DNSClass::IN, 5, a("127.0.0.1")),
            ResponseCode::FormErr,
        ),
        (
            record("web-1.web", DNSClass::CH, 0, a("127.0.0.1")),
            ResponseCode::FormErr,
        ),
        (
            empty("web-1.web", DNSClass::IN, RecordType::A),
            ResponseCode::FormErr,
        ),
    ];
    for (prerequisite, rcode) in unmet {
        let text = prerequisite.to_string();
        assert_eq!(
            world.update(vec![prerequisite], Vec::new()).await,
            rcode,
            "{text}"
        );
    }
    let mut outside = name_in_use("web-1.web");
    outside.name = Name::from_ascii("web.example.com.").expect("valid");
    assert_eq!(
        world.update(vec![outside], Vec::new()).await,
        ResponseCode::NotZone
    );

    // Value-dependent prerequisites compare whole RRsets: one of two
    // addresses is not the RRset.
    world
        .register("web", "web-2", r#"{"address":"127.0.0.2","port":80}"#)
        .await;
    let one = vec![rrset_is("web", a("127.0.0.1"))];
    assert_eq!(world.update(one, Vec::new()).await, ResponseCode::NXRRSet);
    let both = vec![
        rrset_is("web", a("127.0.0.2")),
        rrset_is("web", a("127.0.0.1")),
    ];
    assert_eq!(world.update(both, Vec::new()).await, ResponseCode::NoError);

    // An unmet prerequisite changes nothing.
    let before = world.index();
    let rcode = world
        .update(
            vec![name_unused("web-1.web")],
            vec![delete_name("web-1.web")],
        )
        .await;
    assert_eq!(rcode, ResponseCode::YXDomain);
    assert_eq!(world.index(), before);
    assert!(world.instance("web-1").is_some());
}

#[tokio::test]
async fn prerequisites_see_instances_that_are_not_healthy() {
    let check = r#"{"address":"127.0.0.1","port":80,
        "check":{"ttl":"30s","status":"critical"}}"#;
    let world = World::new(None).await;
    world.register("web", "web-1", check).await;
    assert!(
        !world.get("web-1").is_servable(true),
        "critical: out of DNS"
    );
    let rcode = world
        .update(vec![name_in_use("web-1.web")], Vec::new())
        .await;
    assert_eq!(rcode, ResponseCode::NoError);
}

/// The records nsupdate would send to register web-1 on port 8081 with a
/// tag and metadata.
fn web_1_records() -> Vec<Record> {
    vec![
        add("web-1.web", a("127.0.0.1")),
        add("web-1.web", txt(&["zone=a", "build=7"])),
        add("_web._tcp", srv(1, 5, 8081, "web-1.web")),
        add("_web._v2", srv(1, 5, 8081, "web-1.web")),
    ]
}

#[tokio::test]
async fn adds_an_instance_from_its_records_and_a_resend_changes_nothing() {
    let world = World::new(None).await;
    let prerequisite = vec![name_unused("web-1.web")];
    assert_eq!(
        world.update(prerequisite, web_1_records()).await,
        ResponseCode::NoError
    );
    let web_1 = world.get("web-1");
    let instance = &web_1.instance;
    assert_eq!(instance.service.as_str(), "web");
    assert_eq!(instance.address, IpAddr::from([127, 0, 0, 1]));
    assert_eq!(
        (instance.port, instance.priority, instance.weight),
        (8081, 1, 5)
    );
    assert_eq!(instance.tags, ["v2"]);
    assert_eq!(instance.meta.get("zone"), Some("a"));
    assert_eq!(instance.meta.get("build"), Some("7"));
    assert!(instance.checks.is_empty(), "no check declared, no default");

    // external-dns re-sends its adds: nothing changes, no index moves.
    let before = world.index();
    assert_eq!(
        world.update(Vec::new(), web_1_records()).await,
        ResponseCode::NoError
    );
    assert_eq!(world.index(), before);
    let plan = world.plan(ServiceScope::All, Vec::new(), web_1_records());
    let changes = engine::plan(&plan, &world.registry.state()).expect("planned");
    assert_eq!(
        changes.len(),
        1,
        "one put of the equal instance: {changes:?}"
    );

    // What was written reads back: the records are the RRsets now.
    let read_back = vec![
        rrset_is("web-1.web", a("127.0.0.1")),
        rrset_is("web-1.web", txt(&["build=7", "zone=a"])),
        rrset_is("_web._tcp", srv(1, 5, 8081, "web-1.web")),
        rrset_is("web", srv(1, 5, 8081, "web-1.web")),
        rrset_is("_web._v2", srv(1, 5, 8081, "web-1.web")),
    ];
    assert_eq!(
        world.update(read_back, Vec::new()).await,
        ResponseCode::NoError
    );
}

#[tokio::test]
async fn replaces_an_address_and_a_port_keeping_the_rest() {
    let world = World::new(None).await;
    assert_eq!(
        world.update(Vec::new(), web_1_records()).await,
        ResponseCode::NoError
    );
    let replace = vec![
        delete_rrset("web-1.web", RecordType::A),
        add("web-1.web", aaaa("::1")),
        delete_rrset("_web._tcp", RecordType::SRV),
        add("_web._tcp", srv(1, 5, 9090, "web-1.web")),
    ];
    let rcode = world
        .update(vec![rrset_is("web-1.web", a("127.0.0.1"))], replace)
        .await;
    assert_eq!(rcode, ResponseCode::NoError);
    let web_1 = world.get("web-1");
    assert_eq!(web_1.instance.address, IpAddr::from(Ipv6Addr::LOCALHOST));
    assert_eq!(web_1.instance.port, 9090);
    assert_eq!(web_1.instance.tags, ["v2"], "kept");
    assert_eq!(web_1.instance.meta.get("zone"), Some("a"), "kept");

    // Deleting a whole name and adding it back is a replacement too: the
    // SRV record at another name stays.
    let again = vec![delete_name("web-1.web"), add("web-1.web", a("127.0.0.3"))];
    assert_eq!(world.update(Vec::new(), again).await, ResponseCode::NoError);
    let web_1 = world.get("web-1");
    assert_eq!(web_1.instance.address, IpAddr::from([127, 0, 0, 3]));
    assert_eq!(web_1.instance.port, 9090);
    assert!(
        web_1.instance.meta.is_empty(),
        "its TXT was deleted with the name"
    );
}

#[tokio::test]
async fn deletes_instances_metadata_and_tags() {
    let world = World::new(None).await;
    assert_eq!(
        world.update(Vec::new(), web_1_records()).await,
        ResponseCode::NoError
    );

    // One TXT record, by value: the record as served, with every string.
    let wrong = vec![delete_rr("web-1.web", txt(&["zone=a"]))];
    assert_eq!(world.update(Vec::new(), wrong).await, ResponseCode::NoError);
    assert_eq!(
        world.get("web-1").instance.meta.len(),
        2,
        "no such RR: nothing"
    );
    let right = vec![delete_rr("web-1.web", txt(&["build=7", "zone=a"]))];
    assert_eq!(world.update(Vec::new(), right).await, ResponseCode::NoError);
    assert!(world.get("web-1").instance.meta.is_empty());

    // A tag's SRV record, by value.
    let untag = vec![delete_rr("_web._v2", srv(1, 5, 8081, "web-1.web"))];
    assert_eq!(world.update(Vec::new(), untag).await, ResponseCode::NoError);
    assert!(world.get("web-1").instance.tags.is_empty());
    // And back, then the tag's whole RRset.
    let tag = vec![add("_web._v2", srv(1, 5, 8081, "web-1.web"))];
    assert_eq!(world.update(Vec::new(), tag).await, ResponseCode::NoError);
    assert_eq!(world.get("web-1").instance.tags, ["v2"]);
    let untag = vec![delete_rrset("_web._v2", RecordType::SRV)];
    assert_eq!(world.update(Vec::new(), untag).await, ResponseCode::NoError);
    assert!(world.get("web-1").instance.tags.is_empty());

    // `update delete web-1.web.` deregisters: its SRV goes with it.
    let delete = vec![delete_name("web-1.web")];
    assert_eq!(
        world.update(Vec::new(), delete).await,
        ResponseCode::NoError
    );
    assert!(world.instance("web-1").is_none());
    let gone = vec![name_unused("web-1.web"), name_unused("_web._tcp")];
    assert_eq!(world.update(gone, Vec::new()).await, ResponseCode::NoError);

    // Deleting what is not there deletes nothing.
    let nothing = vec![
        delete_name("web-9.web"),
        delete_rr("web-9.web", a("127.0.0.9")),
        delete_rrset("_web._tcp", RecordType::SRV),
    ];
    let before = world.index();
    assert_eq!(
        world.update(Vec::new(), nothing).await,
        ResponseCode::NoError
    );
    assert_eq!(world.index(), before);
}

#[tokio::test]
async fn addresses_at_the_service_name_make_and_remove_instances() {
    let world = World::new(None).await;
    world
        .register("web", "Web_1", r#"{"address":"127.0.0.1","port":80}"#)
        .await;
    let adds = vec![
        add("web", a("127.0.0.1")),
        add("web", a("127.0.0.5")),
        add("web", aaaa("::1")),
    ];
    assert_eq!(
        world.update(Vec::new(), adds.clone()).await,
        ResponseCode::NoError
    );
    let state = world.registry.state();
    let mut ids: Vec<&str> = state.ids.keys().map(|id| &**id).collect();
    ids.sort();
    assert_eq!(ids, ["Web_1", "web-0-0-0-0-0-0-0-1", "web-127-0-0-5"]);
    let made = world.get("web-127-0-0-5");
    assert_eq!(made.instance.port, 8080, "default_port");
    assert_eq!(
        world.get("Web_1").instance.port,
        80,
        "127.0.0.1 was there: untouched"
    );

    let before = world.index();
    assert_eq!(world.update(Vec::new(), adds).await, ResponseCode::NoError);
    assert_eq!(world.index(), before, "re-sent adds change nothing");

    // external-dns deletes by value at the service name.
    let delete = vec![delete_rr("web", a("127.0.0.5"))];
    assert_eq!(
        world.update(Vec::new(), delete).await,
        ResponseCode::NoError
    );
    assert!(world.instance("web-127-0-0-5").is_none());
    // An instance registered with an ID that is not its label is reached
    // by its label.
    let delete = vec![delete_rr("web-1.web", a("127.0.0.1"))];
    assert_eq!(
        world.update(Vec::new(), delete).await,
        ResponseCode::NoError
    );
    assert!(world.instance("Web_1").is_none());
    // The whole service.
    let delete = vec![delete_name("web")];
    assert_eq!(
        world.update(Vec::new(), delete).await,
        ResponseCode::NoError
    );
    assert_eq!(world.registry.state().instance_count(), 0);
}

#[tokio::test]
async fn refuses_what_roster_cannot_hold_and_changes_nothing() {
    let world = World::new(None).await;
    world
        .register("api", "api-1", r#"{"address":"127.0.0.9","port":80}"#)
        .await;
    assert_eq!(
        world.update(Vec::new(), web_1_records()).await,
        ResponseCode::NoError
    );
    let web = |records: &[Record]| {
        let mut all = web_1_records();
        all.extend_from_slice(records);
        all
    };
    let cases: Vec<(&str, Vec<Record>, &str)> = vec![
        (
            "two addresses",
            web(&[add("web-1.web", a("127.0.0.2"))]),
            "more than one address",
        ),
        (
            "no port",
            vec![delete_rrset("_web._tcp", RecordType::SRV)],
            "no port",
        ),
        (
            "port 0",
            vec![
                add("web-2.web", a("127.0.0.2")),
                add("_web._tcp", srv(0, 1, 0, "web-2.web")),
            ],
            "port 0",
        ),
        (
            "port 0 on an existing instance",
            vec![
                delete_rrset("_web._tcp", RecordType::SRV),
                add("_web._tcp", srv(1, 5, 0, "web-1.web")),
            ],
            "port 0",
        ),
        (
            "two ports",
            vec![add("_web._tcp", srv(1, 5, 9000, "web-1.web"))],
            "more than one SRV",
        ),
        (
            "a tag's SRV with another port",
            vec![add("_web._v3", srv(1, 5, 9000, "web-1.web"))],
            "priority, weight and port",
        ),
        (
            "an SRV target in another service",
            vec![add("_web._tcp", srv(0, 1, 80, "api-1.api"))],
            "not an instance of web",
        ),
        (
            "no address",
            vec![add("web-2.web", txt(&["k=v"]))],
            "no address",
        ),
        (
            "another type",
            vec![add("web-1.web", RData::NULL(NULL::with(vec![1])))],
            "NULL",
        ),
        (
            "a TXT at a service name",
            vec![add("a-web", txt(&["heritage=external-dns"]))],
            "--registry=noop",
        ),
        (
            "a TXT that is not key=value",
            vec![add("web-1.web", txt(&["hello"]))],
            "key=value",
        ),
        (
            "a TXT dhcid",
            vec![add("web-1.web", txt(&["dhcid=AAAA"]))],
            "reserved",
        ),
        (
            "bad metadata",
            vec![add("web-1.web", txt(&["bad key=1"]))],
            "meta",
        ),
        (
            "a deeper name",
            vec![add("a.b.web", a("127.0.0.1"))],
            "no records",
        ),
        ("the apex", vec![delete_rrset("", RecordType::NS)], "apex"),
        (
            "a bad check",
            vec![add("web-1.web", txt(&["check-tcp=127.0.0.1:1"]))],
            "interval",
        ),
    ];
    let before = world.index();
    for (what, updates, reason) in cases {
        let (rcode, said) = world.refusal(ServiceScope::All, updates.clone());
        assert_eq!(rcode, ResponseCode::Refused, "{what}: {said}");
        assert!(said.contains(reason), "{what}: {said:?} lacks {reason:?}");
        assert_eq!(
            world.update(Vec::new(), updates).await,
            ResponseCode::Refused,
            "{what}"
        );
    }
    assert_eq!(world.index(), before, "nothing changed");

    // The key's scope.
    let scope = ServiceScope::Only(["api".to_owned()].into());
    let (rcode, said) = world.refusal(scope.clone(), vec![delete_name("web-1.web")]);
    assert_eq!(rcode, ResponseCode::Refused);
    assert!(said.contains("may not change the service web"), "{said}");
    let allowed = vec![add("api-2.api", a("127.0.0.10"))];
    assert_eq!(
        world.update_as(scope, Vec::new(), allowed).await,
        ResponseCode::NoError
    );

    // An ID registered in another service: the registry refuses the put.
    let taken = vec![add("api-1.web", a("127.0.0.11"))];
    assert_eq!(world.update(Vec::new(), taken).await, ResponseCode::Refused);
    assert_eq!(world.get("api-1").instance.service.as_str(), "api");

    // One instance named under two services in one update, put under both
    // or removed under one and put under the other: refused by the plan,
    // naming both, and nothing changes.
    let before = world.index();
    let address = world.get("web-1").instance.address.to_string();
    for updates in [
        vec![
            add("web-1.api", a("127.0.0.12")),
            add("web-1.web", a(&address)),
        ],
        vec![delete_name("web-1.web"), add("web-1.api", a("127.0.0.12"))],
    ] {
        let (rcode, said) = world.refusal(ServiceScope::All, updates);
        assert_eq!(rcode, ResponseCode::Refused);
        assert!(
            said.contains("web-1.api and web-1.web are one instance, web-1"),
            "{said}"
        );
    }
    assert_eq!(world.index(), before, "nothing changed");
    assert_eq!(world.get("web-1").instance.service.as_str(), "web");

    // The prescan's malformed records.
    let formerr = [
        record("web-1.web", DNSClass::ANY, 5, RData::Update0(RecordType::A)),
        record("web-1.web", DNSClass::ANY, 0, a("127.0.0.1")),
        record("web-1.web", DNSClass::NONE, 5, a("127.0.0.1")),
        empty("web-1.web", DNSClass::NONE, RecordType::ANY),
        empty("web-1.web", DNSClass::IN, RecordType::A),
        empty("web-1.web", DNSClass::IN, RecordType::ANY),
        empty("web-1.web", DNSClass::ANY, RecordType::AXFR),
        record("web-1.web", DNSClass::CH, 0, a("127.0.0.1")),
    ];
    for update in formerr {
        let text = update.to_string();
        assert_eq!(
            world.refusal(ServiceScope::All, vec![update]).0,
            ResponseCode::FormErr,
            "{text}"
        );
    }
    let mut outside = add("web-1.web", a("127.0.0.1"));
    outside.name = Name::from_ascii("web-1.example.com.").expect("valid");
    assert_eq!(
        world.refusal(ServiceScope::All, vec![outside]).0,
        ResponseCode::NotZone
    );

    // Bounds.
    let many: Vec<Record> = (0..=engine::MAX_RECORDS)
        .map(|i| add(&format!("w{i}.web"), a("127.0.0.1")))
        .collect();
    assert!(
        world
            .refusal(ServiceScope::All, many)
            .1
            .contains("more than")
    );
    let touched: Vec<Record> = (0..=super::zone::MAX_TOUCHED)
        .map(|i| add(&format!("w{i}.web"), a("127.0.0.1")))
        .collect();
    assert!(
        world
            .refusal(ServiceScope::All, touched)
            .1
            .contains("at most")
    );
}

#[tokio::test]
async fn a_check_comes_from_txt_or_is_kept_or_is_the_default() {
    let default = DefaultCheck {
        tcp: Some("{address}:{port}".into()),
        interval: Some("10s".into()),
        ..DefaultCheck::default()
    };
    let world = World::new(Some(default)).await;

    // Declared in TXT: that check, the keys kept in the metadata.
    let declared = vec![
        add("web-1.web", a("127.0.0.1")),
        add(
            "web-1.web",
            txt(&["check-http=http://127.0.0.1:1/health", "check-interval=5s"]),
        ),
    ];
    assert_eq!(
        world.update(Vec::new(), declared).await,
        ResponseCode::NoError
    );
    let web_1 = world.get("web-1");
    assert_eq!(web_1.instance.checks.len(), 1);
    assert!(matches!(
        &web_1.instance.checks[0].kind,
        CheckKind::Http { url, .. } if url == "http://127.0.0.1:1/health"
    ));
    assert_eq!(web_1.instance.meta.get("check-interval"), Some("5s"));
    let read_back = vec![rrset_is(
        "web-1.web",
        txt(&["check-http=http://127.0.0.1:1/health", "check-interval=5s"]),
    )];
    assert_eq!(
        world.update(read_back, Vec::new()).await,
        ResponseCode::NoError
    );

    // Declared nowhere: the default, with the address and port filled in.
    let plain = vec![add("web-2.web", aaaa("::1"))];
    assert_eq!(
        world.update(Vec::new(), plain.clone()).await,
        ResponseCode::NoError
    );
    let web_2 = world.get("web-2");
    assert!(matches!(
        &web_2.instance.checks[..],
        [check] if matches!(&check.kind, CheckKind::Tcp { address, .. } if address == "[::1]:8080")
    ));
    let before = world.index();
    assert_eq!(world.update(Vec::new(), plain).await, ResponseCode::NoError);
    assert_eq!(
        world.index(),
        before,
        "the default check is the same one again"
    );

    // Registered through the API with its own check: kept.
    let api = r#"{"address":"127.0.0.3","port":80,"check":{"ttl":"30s"}}"#;
    world.register("web", "web-3", api).await;
    let change = vec![add("web-3.web", txt(&["zone=b"]))];
    assert_eq!(
        world.update(Vec::new(), change).await,
        ResponseCode::NoError
    );
    let web_3 = world.get("web-3");
    assert!(matches!(&web_3.instance.checks[..], [check] if check.kind.type_name() == "ttl"));
    assert_eq!(web_3.instance.meta.get("zone"), Some("b"));

    // Check keys deleted from TXT: back to the default.
    let delete = vec![delete_rrset("web-1.web", RecordType::TXT)];
    assert_eq!(
        world.update(Vec::new(), delete).await,
        ResponseCode::NoError
    );
    let web_1 = world.get("web-1");
    assert!(matches!(&web_1.instance.checks[..], [check] if check.kind.type_name() == "tcp"));
}

#[tokio::test]
async fn a_dhcid_is_kept_opaquely_as_kea_uses_it() {
    let world = World::new(None).await;
    let identity = [0u8, 1, 1, 0xde, 0xad, 0xbe, 0xef];
    // Kea's add: the name must be unused; A and DHCID together.
    let add_lease = vec![
        add("host-1.dhcp", a("127.0.0.7")),
        add("host-1.dhcp", dhcid(&identity)),
    ];
    let rcode = world
        .update(vec![name_unused("host-1.dhcp")], add_lease)
        .await;
    assert_eq!(rcode, ResponseCode::NoError);
    let host = world.get("host-1");
    assert_eq!(host.instance.meta.get("dhcid"), Some("AAEB3q2+7w=="));
    assert_eq!(host.instance.port, 8080);
    // Not part of the TXT RRset; its own RRset by value.
    let read_back = vec![
        rrset_absent("host-1.dhcp", RecordType::TXT),
        rrset_is("host-1.dhcp", dhcid(&identity)),
    ];
    assert_eq!(
        world.update(read_back, Vec::new()).await,
        ResponseCode::NoError
    );
    let other = vec![rrset_is("host-1.dhcp", dhcid(&[0, 1, 1, 0]))];
    assert_eq!(world.update(other, Vec::new()).await, ResponseCode::NXRRSet);
    // Kea's renewal with a new address: the name is in use, so it
    // replaces the address while the DHCID is still this client's.
    let replace = vec![
        delete_rrset("host-1.dhcp", RecordType::A),
        add("host-1.dhcp", a("127.0.0.8")),
    ];
    let rcode = world
        .update(vec![rrset_is("host-1.dhcp", dhcid(&identity))], replace)
        .await;
    assert_eq!(rcode, ResponseCode::NoError);
    let host = world.get("host-1");
    assert_eq!(host.instance.address, IpAddr::from([127, 0, 0, 8]));
    assert_eq!(
        host.instance.meta.get("dhcid"),
        Some("AAEB3q2+7w=="),
        "kept"
    );
    // Kea's removal, first request: the address, while the DHCID is this
    // client's. An instance without an address is deregistered whole.
    let remove = vec![delete_rr("host-1.dhcp", a("127.0.0.8"))];
    let rcode = world
        .update(vec![rrset_is("host-1.dhcp", dhcid(&identity))], remove)
        .await;
    assert_eq!(rcode, ResponseCode::NoError);
    assert!(world.instance("host-1").is_none());
    // Second request: the DHCID is gone with the instance, NXRRSET, which
    // Kea's D2 takes as "already removed".
    let rest = world
        .update(
            vec![
                rrset_is("host-1.dhcp", dhcid(&identity)),
                rrset_absent("host-1.dhcp", RecordType::A),
                rrset_absent("host-1.dhcp", RecordType::AAAA),
            ],
            vec![delete_name("host-1.dhcp")],
        )
        .await;
    assert_eq!(rest, ResponseCode::NXRRSet);
}

#[tokio::test]
async fn a_tag_srv_alone_gives_a_new_instance_its_port() {
    let world = World::new(None).await;
    let records = vec![
        add("web-1.web", a("127.0.0.1")),
        add("_web._v2", srv(0, 1, 9000, "web-1.web")),
    ];
    assert_eq!(
        world.update(Vec::new(), records).await,
        ResponseCode::NoError
    );
    let web_1 = world.get("web-1");
    assert_eq!(
        (web_1.instance.port, web_1.instance.tags.clone()),
        (9000, vec!["v2".to_owned()])
    );
    // An existing instance's port is its own: a tag SRV must agree.
    let other = vec![add("_web._v3", srv(0, 1, 9001, "web-1.web"))];
    assert_eq!(world.update(Vec::new(), other).await, ResponseCode::Refused);
}

#[tokio::test]
async fn the_srv_names_of_a_service_are_one_rrset_and_an_address_family_is_one() {
    let world = World::new(None).await;
    world
        .register("web", "web-4", r#"{"address":"127.0.0.4","port":80}"#)
        .await;
    world
        .register("web", "web-6", r#"{"address":"::1","port":80}"#)
        .await;
    // A port changed at `<service>` is changed at `_<service>._tcp`.
    let port = vec![
        delete_rr("web", srv(0, 1, 80, "web-4.web")),
        add("web", srv(0, 1, 81, "web-4.web")),
    ];
    assert_eq!(world.update(Vec::new(), port).await, ResponseCode::NoError);
    assert_eq!(world.get("web-4").instance.port, 81);
    let read_back = vec![
        rrset_is("_web._udp", srv(0, 1, 81, "web-4.web")),
        rrset_is("_web._udp", srv(0, 1, 80, "web-6.web")),
    ];
    assert_eq!(
        world.update(read_back, Vec::new()).await,
        ResponseCode::NoError
    );
    // Deleting the service's AAAA RRset deregisters the IPv6 instances.
    let v6 = vec![delete_rrset("web", RecordType::AAAA)];
    assert_eq!(world.update(Vec::new(), v6).await, ResponseCode::NoError);
    assert!(world.instance("web-6").is_none());
    assert!(world.instance("web-4").is_some());
    // More instances than an update may touch: refused whole.
    for i in 0..=super::zone::MAX_TOUCHED {
        let body = format!(r#"{{"address":"127.0.1.{i}","port":80}}"#);
        world.register("many", &format!("m-{i}"), &body).await;
    }
    let (rcode, said) = world.refusal(ServiceScope::All, vec![delete_name("many")]);
    assert_eq!(rcode, ResponseCode::Refused);
    assert!(said.contains("at most"), "{said}");
}
