//! A concurrent write load with a model of what each acknowledgement
//! promises, for the crash and shutdown tests; and a small but varied
//! registry whose DNS answers must survive a restart or an import.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    time::Duration,
};

use hickory_proto::rr::RecordType;
use rand::{RngExt, SeedableRng, rngs::SmallRng};
use serde_json::{Value, json};
use tokio::time::{Instant, timeout};

use super::{
    Answer, dns_answer, get, get_ok, http_client, process::Roster, put, served_addresses,
    soa_serial,
};

/// Everything a client decides about an instance, as the native API lists it
/// (health, timestamps and indexes left out: those are not stored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Content {
    pub service: String,
    pub address: String,
    pub port: u64,
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
    pub weight: u64,
    pub priority: u64,
    pub maintenance: Option<String>,
    /// (id, type, ttl) of each check.
    pub checks: Vec<(String, String, Option<String>)>,
}

impl Content {
    /// Reads an instance view (`GET /v1/services/{service}`, a PUT's answer).
    fn from_view(view: &Value) -> Self {
        let text = |key: &str| {
            view[key]
                .as_str()
                .unwrap_or_else(|| panic!("{key} in {view}"))
        };
        let number = |key: &str| {
            view[key]
                .as_u64()
                .unwrap_or_else(|| panic!("{key} in {view}"))
        };
        Self {
            service: text("service").to_owned(),
            address: text("address").to_owned(),
            port: number("port"),
            tags: serde_json::from_value(view["tags"].clone()).expect("tags"),
            meta: serde_json::from_value(view["meta"].clone()).expect("meta"),
            weight: number("weight"),
            priority: number("priority"),
            maintenance: view["maintenance"].as_str().map(str::to_owned),
            checks: view["checks"]
                .as_array()
                .expect("checks")
                .iter()
                .map(|c| {
                    (
                        c["id"].as_str().expect("check id").to_owned(),
                        c["type"].as_str().expect("check type").to_owned(),
                        c["ttl"].as_str().map(str::to_owned),
                    )
                })
                .collect(),
        }
    }

    /// The registration body that produces this content (bar maintenance).
    fn body(&self) -> Value {
        let checks: Vec<Value> = self
            .checks
            .iter()
            .map(|(id, _, ttl)| json!({"id": id, "ttl": ttl}))
            .collect();
        json!({
            "address": self.address,
            "port": self.port,
            "tags": self.tags,
            "meta": self.meta,
            "weight": self.weight,
            "priority": self.priority,
            "checks": checks,
        })
    }
}

/// Reduces an instance view to what must survive a restart: everything but
/// health, timestamps and indexes.
pub fn durable_view(view: &Value) -> Value {
    let mut view = view.clone();
    let object = view.as_object_mut().expect("instance object");
    for key in ["status", "in_dns", "create_index", "modify_index"] {
        object.remove(key);
    }
    for check in object
        .get_mut("checks")
        .and_then(Value::as_array_mut)
        .expect("checks")
    {
        let check = check.as_object_mut().expect("check object");
        for key in ["status", "output", "changed_at"] {
            check.remove(key);
        }
    }
    view
}

/// Every instance of the given services, by ID, as full views.
pub async fn list_instances(
    client: &reqwest::Client,
    roster: &Roster,
    services: &[&str],
) -> BTreeMap<String, Value> {
    let mut found = BTreeMap::new();
    for service in services {
        let (status, body) = get(client, &roster.url(&format!("/v1/services/{service}"))).await;
        if status == reqwest::StatusCode::NOT_FOUND {
            continue;
        }
        assert!(
            status.is_success(),
            "GET service {service}: {status} {body}"
        );
        for instance in body["instances"].as_array().expect("instances") {
            let id = instance["id"].as_str().expect("id").to_owned();
            assert!(
                found.insert(id.clone(), instance.clone()).is_none(),
                "{id} twice"
            );
        }
    }
    found
}

// ---------------------------------------------------------------------------
// A write load with a model of what each acknowledgement promises.
// ---------------------------------------------------------------------------

/// What the registry holds for one ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Held {
    Absent,
    Present(Content),
}

/// One instance ID, written by one task only, so its operations are ordered.
#[derive(Clone, Debug)]
pub struct Slot {
    pub service: String,
    pub id: String,
    /// The state the last acknowledged operation left.
    pub acked: Held,
    /// The state an unacknowledged operation would leave, had it applied.
    pub pending: Option<Held>,
}

/// An operation on one slot.
pub enum Op {
    Put(Content),
    Delete,
    Maintenance(Option<String>),
}

/// What one writer task saw.
pub struct TaskReport {
    pub slots: Vec<Slot>,
    pub acknowledged: usize,
    /// The highest `modify_index` in an acknowledged answer.
    pub max_index: u64,
    /// Answers that were neither 2xx nor a broken connection.
    pub refusals: Vec<String>,
}

pub const LOAD_SERVICES: [&str; 3] = ["alpha", "beta", "gamma"];

pub fn load_slots(tasks: usize, per_task: usize) -> Vec<Vec<Slot>> {
    (0..tasks)
        .map(|t| {
            (0..per_task)
                .map(|n| Slot {
                    service: LOAD_SERVICES[(t + n) % LOAD_SERVICES.len()].to_owned(),
                    id: format!("t{t}-{n}"),
                    acked: Held::Absent,
                    pending: None,
                })
                .collect()
        })
        .collect()
}

pub fn random_content(rng: &mut SmallRng, service: &str, version: u64) -> Content {
    let tags: Vec<String> = ["a", "b", "c"]
        .into_iter()
        .filter(|_| rng.random_bool(0.5))
        .map(str::to_owned)
        .collect();
    let mut meta = BTreeMap::new();
    meta.insert("v".to_owned(), version.to_string());
    meta.insert("r".to_owned(), format!("{:x}", rng.random::<u64>()));
    let checks = if rng.random_bool(0.3) {
        vec![("ttl".to_owned(), "ttl".to_owned(), Some("30s".to_owned()))]
    } else {
        vec![]
    };
    Content {
        service: service.to_owned(),
        // Loopback (127.0.0.0/8), since some of these carry a check.
        address: format!(
            "127.{}.{}.{}",
            rng.random_range(0..=255u8),
            rng.random_range(0..=255u8),
            rng.random_range(1..=254u8)
        ),
        port: rng.random_range(1..=65_535),
        tags,
        meta,
        weight: rng.random_range(1..=100),
        priority: rng.random_range(0..=3),
        maintenance: None,
        checks,
    }
}

/// Registers, re-registers, drains and deregisters the task's slots one
/// operation at a time until the server goes away (or `limit` passes). An
/// operation whose answer never came is left `pending`, and the task stops,
/// so each slot has at most one operation in doubt.
pub async fn write_load(
    http: SocketAddr,
    mut slots: Vec<Slot>,
    seed: u64,
    limit: Duration,
) -> TaskReport {
    let client = http_client();
    let mut rng = SmallRng::seed_from_u64(seed);
    let deadline = Instant::now() + limit;
    let mut report = TaskReport {
        slots: Vec::new(),
        acknowledged: 0,
        max_index: 0,
        refusals: Vec::new(),
    };
    let mut version = seed << 20;
    while Instant::now() < deadline {
        version += 1;
        let n = rng.random_range(0..slots.len());
        let slot = &mut slots[n];
        let op = match &slot.acked {
            Held::Absent => Op::Put(random_content(&mut rng, &slot.service, version)),
            Held::Present(current) => match rng.random_range(0..10) {
                0..=3 => Op::Put(random_content(&mut rng, &slot.service, version)),
                4..=6 => Op::Delete,
                _ if current.maintenance.is_some() => Op::Maintenance(None),
                _ => Op::Maintenance(Some(format!("drain {version}"))),
            },
        };
        let url = format!(
            "http://{http}/v1/services/{}/instances/{}",
            slot.service, slot.id
        );
        let previous_maintenance = match &slot.acked {
            Held::Present(c) => c.maintenance.clone(),
            Held::Absent => None,
        };
        let (request, after) = match op {
            Op::Put(mut content) => {
                let request = client.put(&url).json(&content.body());
                // Re-registration keeps the maintenance flag.
                content.maintenance = previous_maintenance;
                (request, Held::Present(content))
            }
            Op::Delete => (client.delete(&url), Held::Absent),
            Op::Maintenance(reason) => {
                let Held::Present(mut content) = slot.acked.clone() else {
                    unreachable!("maintenance only on present instances")
                };
                let body = json!({"enable": reason.is_some(), "reason": reason});
                content.maintenance = reason;
                (
                    client.put(format!("{url}/maintenance")).json(&body),
                    Held::Present(content),
                )
            }
        };
        slot.pending = Some(after.clone());
        let response = match request.send().await {
            Ok(response) => response,
            Err(_) => break,
        };
        let status = response.status();
        let Ok(text) = response.text().await else {
            break;
        };
        if !status.is_success() {
            report
                .refusals
                .push(format!("{} {}: {status}: {text}", slot.id, url));
            break;
        }
        if let Held::Present(expected) = &after {
            let view: Value = serde_json::from_str(&text).expect("instance view");
            assert_eq!(
                &Content::from_view(&view),
                expected,
                "the answer to {url} differs from what was sent"
            );
            report.max_index = report
                .max_index
                .max(view["modify_index"].as_u64().expect("modify_index"));
        }
        slot.acked = after;
        slot.pending = None;
        report.acknowledged += 1;
    }
    report.slots = slots;
    report
}

/// How the operations in doubt at an interruption may have ended.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum InDoubt {
    /// After a crash: applied in full, or not at all.
    EitherWay,
    /// After SIGTERM, which answers every request it accepted: not applied.
    NotApplied,
}

/// What a restarted roster holds, checked against the slots.
pub struct Settled {
    /// The slots, with what was found as their acknowledged state.
    pub slots: Vec<Slot>,
    /// Operations in doubt that turned out applied (committed, unanswered).
    pub applied_in_doubt: usize,
}

/// Checks what a restarted roster holds against the slots: each holds its
/// acknowledged state or, as `in_doubt` allows, the state its one
/// unacknowledged operation would have left; nothing in between.
pub async fn check_slots(
    roster: &Roster,
    slots: Vec<Slot>,
    max_index: u64,
    in_doubt: InDoubt,
    context: &str,
) -> Settled {
    let client = http_client();
    let views = list_instances(&client, roster, &LOAD_SERVICES).await;
    let mut found: BTreeMap<String, Content> = views
        .iter()
        .map(|(id, view)| (id.clone(), Content::from_view(view)))
        .collect();
    let mut settled = Vec::with_capacity(slots.len());
    let mut applied_in_doubt = 0;
    for mut slot in slots {
        let held = match found.remove(&slot.id) {
            Some(content) => Held::Present(content),
            None => Held::Absent,
        };
        let applied = held != slot.acked && slot.pending.as_ref() == Some(&held);
        applied_in_doubt += usize::from(applied);
        let allowed = held == slot.acked || (applied && in_doubt == InDoubt::EitherWay);
        assert!(
            allowed,
            "{context}: {} holds {held:?}\nacknowledged: {:?}\nin flight (unanswered): {:?}",
            slot.id, slot.acked, slot.pending
        );
        slot.acked = held;
        slot.pending = None;
        settled.push(slot);
    }
    assert!(
        found.is_empty(),
        "{context}: instances nobody registered: {found:?}"
    );
    // DNS was republished from the store: it serves exactly the instances
    // without checks (those start critical) and not in maintenance.
    for service in LOAD_SERVICES {
        let expected: BTreeSet<String> = settled
            .iter()
            .filter_map(|slot| match &slot.acked {
                Held::Present(c)
                    if c.service == service && c.checks.is_empty() && c.maintenance.is_none() =>
                {
                    Some(c.address.clone())
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            served_addresses(roster.dns, service).await,
            expected,
            "{context}: DNS for {service}"
        );
    }
    // The index never goes back, even across a crash.
    let export = get_ok(&client, &roster.url("/v1/export")).await;
    let index = export["index"].as_u64().expect("export index");
    assert!(
        index >= max_index,
        "{context}: index {index} is behind an acknowledged modify_index {max_index}"
    );
    assert_eq!(
        soa_serial(roster.dns).await,
        index & 0xffff_ffff,
        "{context}"
    );
    Settled {
        slots: settled,
        applied_in_doubt,
    }
}

/// Starts one writer task per group of slots against `http`.
pub fn start_load(
    http: SocketAddr,
    slots: Vec<Vec<Slot>>,
    seed: u64,
) -> Vec<tokio::task::JoinHandle<TaskReport>> {
    slots
        .into_iter()
        .enumerate()
        .map(|(t, slots)| {
            tokio::spawn(write_load(
                http,
                slots,
                seed.wrapping_mul(31).wrapping_add(t as u64),
                Duration::from_secs(20),
            ))
        })
        .collect()
}

/// What the writer tasks saw, together.
pub struct LoadReport {
    pub slots: Vec<Slot>,
    pub acknowledged: usize,
    pub max_index: u64,
    pub refusals: Vec<String>,
}

/// Waits for the writer tasks (they end once roster is gone).
pub async fn finish_load(tasks: Vec<tokio::task::JoinHandle<TaskReport>>) -> LoadReport {
    let mut all = LoadReport {
        slots: Vec::new(),
        acknowledged: 0,
        max_index: 0,
        refusals: Vec::new(),
    };
    for task in tasks {
        let report = timeout(Duration::from_secs(30), task)
            .await
            .expect("writer task ends once roster is gone")
            .expect("writer task");
        all.slots.extend(report.slots);
        all.acknowledged += report.acknowledged;
        all.max_index = all.max_index.max(report.max_index);
        all.refusals.extend(report.refusals);
    }
    all
}

/// Regroups slots by the task that owns them (ID `t<task>-<n>`).
pub fn by_task(slots: Vec<Slot>, tasks: usize) -> Vec<Vec<Slot>> {
    let mut grouped: Vec<Vec<Slot>> = (0..tasks).map(|_| Vec::new()).collect();
    for slot in slots {
        let task: usize = slot.id[1..slot.id.find('-').expect("t<task>-<n>")]
            .parse()
            .expect("task number");
        grouped[task].push(slot);
    }
    grouped
}

/// The DNS questions whose answers must survive a restart or an import.
pub const QUESTIONS: [(&str, RecordType); 9] = [
    ("web.service.local.", RecordType::A),
    ("web.service.local.", RecordType::SRV),
    ("_web._tcp.service.local.", RecordType::SRV),
    ("_web._v2.service.local.", RecordType::SRV),
    ("web-1.web.service.local.", RecordType::TXT),
    ("web-3.web.service.local.", RecordType::A),
    ("api.service.local.", RecordType::AAAA),
    ("api.service.local.", RecordType::SRV),
    ("gone.web.service.local.", RecordType::A),
];

pub async fn dns_answers(server: SocketAddr) -> Vec<Answer> {
    let mut answers = Vec::new();
    for (name, rtype) in QUESTIONS {
        answers.push(dns_answer(server, name, rtype).await);
    }
    answers
}

/// Registers a small but varied registry: tags, metadata, weights, a TTL
/// check (heartbeated to passing), a TCP check that cannot pass, an
/// instance in maintenance, an IPv6 instance and one deregistered. The
/// instances with a check have loopback addresses: nothing that probes may
/// point off the machine.
pub async fn populate(client: &reqwest::Client, roster: &Roster) {
    let instance =
        |service: &str, id: &str| roster.url(&format!("/v1/services/{service}/instances/{id}"));
    put(
        client,
        &instance("web", "web-1"),
        json!({"address": "10.0.0.1", "port": 8080, "tags": ["http", "v2"],
               "meta": {"version": "1.2", "zone": "a"}, "weight": 3}),
    )
    .await;
    put(
        client,
        &instance("web", "web-2"),
        json!({"address": "127.0.0.2", "port": 8081, "tags": ["http"],
               "check": {"id": "beat", "name": "heartbeat", "ttl": "60s"}}),
    )
    .await;
    put(
        client,
        &instance("web", "web-3"),
        json!({"address": "10.0.0.3", "port": 8082, "tags": ["v2"]}),
    )
    .await;
    put(
        client,
        &format!("{}/maintenance", instance("web", "web-3")),
        json!({"enable": true, "reason": "deploy 42"}),
    )
    .await;
    put(
        client,
        &instance("web", "web-4"),
        json!({"address": "10.0.0.4", "port": 8083}),
    )
    .await;
    let deleted = client
        .delete(instance("web", "web-4"))
        .send()
        .await
        .expect("DELETE web-4");
    assert_eq!(deleted.status(), reqwest::StatusCode::NO_CONTENT);
    put(
        client,
        &instance("api", "api-1"),
        json!({"address": "::1", "port": 9000, "priority": 1,
               "checks": [{"id": "port", "tcp": "127.0.0.1:1", "interval": "10s", "timeout": "1s"}]}),
    )
    .await;
    put(
        client,
        &instance("api", "api-2"),
        json!({"address": "fd00::2", "port": 9001, "weight": 5, "meta": {"shard": "2"}}),
    )
    .await;
    heartbeat_passing(client, roster, "web", "web-2").await;
}

/// Heartbeats a TTL check over `client`, asserting the instance passes.
pub async fn heartbeat_passing(client: &reqwest::Client, roster: &Roster, service: &str, id: &str) {
    let view = put(
        client,
        &roster.url(&format!("/v1/services/{service}/instances/{id}/heartbeat")),
        json!({}),
    )
    .await;
    assert_eq!(view["status"], "passing", "{view}");
}
