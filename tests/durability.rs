//! Durability of the registry, tried on the real binary: a restart keeps
//! every registration, `kill -9` in the middle of writes loses nothing that
//! was acknowledged and half-applies nothing, SIGTERM finishes cleanly, a
//! second roster cannot share a data directory, a corrupt store stops
//! start-up without being touched, and export/import moves a registry.
//!
//! Each test runs `roster serve` as a child process on ephemeral ports,
//! since crashes and signals are what is under test. A [`Roster`] guard kills
//! its child whatever happens to the test.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use hickory_proto::{
    op::{Edns, Message, Query, ResponseCode},
    rr::{Name, RData, RecordType},
};
use rand::{RngExt, SeedableRng, rngs::SmallRng};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::UdpSocket,
    process::{Child, Command},
    sync::mpsc,
    time::{Instant, sleep, timeout},
};

/// How long a debug build may take to start on a busy two-core machine.
const START_LIMIT: Duration = Duration::from_secs(60);
/// How long SIGTERM may take to end roster (its HTTP grace is 5 s).
const STOP_LIMIT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------
// A roster child process.
// ---------------------------------------------------------------------------

/// A temporary place to run roster: `data/` (the store) and `zones/`
/// (empty) under a directory that has no `config.toml`, so the built-in
/// defaults apply.
struct Site {
    root: tempfile::TempDir,
}

impl Site {
    fn new() -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join("zones")).expect("zones dir");
        Self { root }
    }

    fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    fn store_file(&self) -> PathBuf {
        self.data_dir().join("roster.redb")
    }

    /// Starts roster and waits until it serves; panics if it does not.
    async fn start(&self) -> Roster {
        match self.try_start().await {
            Ok(roster) => roster,
            Err(exited) => panic!(
                "roster did not start ({}):\n{}",
                exited.status, exited.stderr
            ),
        }
    }

    /// Starts roster expecting it to refuse `why` (e.g. "on a corrupt
    /// store"): panics if it serves or exits successfully.
    async fn start_must_fail(&self, why: &str) -> Exited {
        match self.try_start().await {
            Ok(roster) => panic!("roster started {why}:\n{}", roster.stderr()),
            Err(exited) => {
                assert!(!exited.status.success(), "{why}: {}", exited.status);
                exited
            }
        }
    }

    /// Starts roster: `Ok` once it logs that it is serving, `Err` if it
    /// exits first.
    async fn try_start(&self) -> Result<Roster, Exited> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_roster"))
            .args(["serve", "--dns", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--zones")
            .arg(self.root.path().join("zones"))
            .current_dir(self.root.path())
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info,hickory_server=warn,hickory_net=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn roster");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (lines_tx, mut lines) = mpsc::unbounded_channel();
        {
            let log = log.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    let line = strip_ansi(&line);
                    log.lock().expect("log").push(line.clone());
                    let _ = lines_tx.send(line);
                }
            });
        }
        let deadline = Instant::now() + START_LIMIT;
        loop {
            let line = match timeout(deadline - Instant::now(), lines.recv()).await {
                Ok(Some(line)) => line,
                Ok(None) => {
                    // stderr closed: roster has exited (or is about to).
                    let status = timeout(STOP_LIMIT, child.wait())
                        .await
                        .expect("roster closed stderr but did not exit")
                        .expect("wait for roster");
                    let stderr = log.lock().expect("log").join("\n");
                    return Err(Exited { status, stderr });
                }
                Err(_) => panic!(
                    "roster neither served nor exited within {START_LIMIT:?}:\n{}",
                    log.lock().expect("log").join("\n")
                ),
            };
            if line.contains("roster is serving") {
                let dns = field(&line, "dns=").expect("dns= in the serving line");
                let http = field(&line, "http=").expect("http= in the serving line");
                return Ok(Roster {
                    child,
                    dns,
                    http,
                    log,
                });
            }
        }
    }
}

/// A roster that exited instead of serving.
struct Exited {
    status: ExitStatus,
    stderr: String,
}

/// A running roster; dropping it kills the process.
struct Roster {
    child: Child,
    dns: SocketAddr,
    http: SocketAddr,
    /// Every line it wrote to stderr so far.
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Roster {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl Roster {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    fn stderr(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }

    /// Sends SIGTERM.
    fn terminate(&self) {
        let pid = self.child.id().expect("roster is running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    async fn stop(&mut self) -> ExitStatus {
        self.terminate();
        self.wait_exit().await
    }

    async fn wait_exit(&mut self) -> ExitStatus {
        match timeout(STOP_LIMIT, self.child.wait()).await {
            Ok(status) => status.expect("wait for roster"),
            Err(_) => panic!(
                "roster did not exit within {STOP_LIMIT:?} of SIGTERM:\n{}",
                self.stderr()
            ),
        }
    }

    /// `kill -9`, and reap it.
    async fn crash(&mut self) {
        self.child.kill().await.expect("kill -9 roster");
    }
}

/// Removes ANSI escape sequences (colours), in case the logger adds them.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters... final byte in @..~
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The address after `key` (e.g. `dns=`) in a log line.
fn field(line: &str, key: &str) -> Option<SocketAddr> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(key))
        .and_then(|value| value.trim_matches('"').parse().ok())
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("http client")
}

async fn put(client: &reqwest::Client, url: &str, body: Value) -> Value {
    let response = client
        .put(url)
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
    let status = response.status();
    let text = response.text().await.expect("body");
    assert!(status.is_success(), "PUT {url} {body}: {status}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("PUT {url}: {e}: {text}"))
}

async fn get(client: &reqwest::Client, url: &str) -> (reqwest::StatusCode, Value) {
    let response = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status();
    let text = response.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {url}: {e}: {text}"));
    (status, value)
}

async fn get_ok(client: &reqwest::Client, url: &str) -> Value {
    let (status, value) = get(client, url).await;
    assert!(status.is_success(), "GET {url}: {status}: {value}");
    value
}

// ---------------------------------------------------------------------------
// A small DNS client.
// ---------------------------------------------------------------------------

/// Asks `server` over UDP (EDNS, 4096-byte payload), retrying lost datagrams.
async fn dns_query(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
    let mut query = Message::query();
    query.add_query(Query::query(
        Name::from_ascii(name).expect("query name"),
        rtype,
    ));
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    query.set_edns(edns);
    let id = query.metadata.id;
    let bytes = query.to_vec().expect("encode query");
    let mut buffer = vec![0u8; 65_535];
    for _ in 0..10 {
        socket.send_to(&bytes, server).await.expect("send query");
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Ok(received) = timeout(deadline - Instant::now(), socket.recv(&mut buffer)).await
        {
            let length = received.expect("recv");
            let response = Message::from_vec(&buffer[..length]).expect("decode response");
            if response.metadata.id == id {
                return response;
            }
        }
    }
    panic!("no DNS answer from {server} for {name} {rtype}");
}

/// A response reduced to what does not depend on order: the code, and the
/// sorted answer and additional records.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    code: ResponseCode,
    answers: Vec<String>,
    additionals: Vec<String>,
}

async fn dns_answer(server: SocketAddr, name: &str, rtype: RecordType) -> Answer {
    let response = dns_query(server, name, rtype).await;
    let show = |records: &[hickory_proto::rr::Record]| {
        let mut shown: Vec<String> = records
            .iter()
            .map(|r| format!("{} {} {} {}", r.name, r.ttl, r.record_type(), r.data))
            .collect();
        shown.sort();
        shown
    };
    Answer {
        code: response.metadata.response_code,
        answers: show(&response.answers),
        additionals: show(&response.additionals),
    }
}

/// The SOA serial of the dynamic domain: the registry index, mod 2^32.
async fn soa_serial(server: SocketAddr) -> u64 {
    let response = dns_query(server, "service.local.", RecordType::SOA).await;
    response
        .answers
        .iter()
        .find_map(|r| match &r.data {
            RData::SOA(soa) => Some(u64::from(soa.serial)),
            _ => None,
        })
        .expect("an SOA answer at service.local")
}

/// The A or AAAA addresses DNS serves for a service.
async fn served_addresses(server: SocketAddr, service: &str) -> BTreeSet<String> {
    let name = format!("{service}.service.local.");
    let mut addresses = BTreeSet::new();
    for rtype in [RecordType::A, RecordType::AAAA] {
        let response = dns_query(server, &name, rtype).await;
        assert!(!response.metadata.truncation, "{name} {rtype} truncated");
        for record in &response.answers {
            match &record.data {
                RData::A(a) => addresses.insert(a.0.to_string()),
                RData::AAAA(aaaa) => addresses.insert(aaaa.0.to_string()),
                other => panic!("{name} {rtype}: unexpected {other}"),
            };
        }
    }
    addresses
}

// ---------------------------------------------------------------------------
// Instance content, as sent and as listed.
// ---------------------------------------------------------------------------

/// Everything a client decides about an instance, as the native API lists it
/// (health, timestamps and indexes left out: those are not stored).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Content {
    service: String,
    address: String,
    port: u64,
    tags: Vec<String>,
    meta: BTreeMap<String, String>,
    weight: u64,
    priority: u64,
    maintenance: Option<String>,
    /// (id, type, ttl) of each check.
    checks: Vec<(String, String, Option<String>)>,
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
fn durable_view(view: &Value) -> Value {
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
async fn list_instances(
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
enum Held {
    Absent,
    Present(Content),
}

/// One instance ID, written by one task only, so its operations are ordered.
#[derive(Clone, Debug)]
struct Slot {
    service: String,
    id: String,
    /// The state the last acknowledged operation left.
    acked: Held,
    /// The state an unacknowledged operation would leave, had it applied.
    pending: Option<Held>,
}

/// An operation on one slot.
enum Op {
    Put(Content),
    Delete,
    Maintenance(Option<String>),
}

/// What one writer task saw.
struct TaskReport {
    slots: Vec<Slot>,
    acknowledged: usize,
    /// The highest `modify_index` in an acknowledged answer.
    max_index: u64,
    /// Answers that were neither 2xx nor a broken connection.
    refusals: Vec<String>,
}

const LOAD_SERVICES: [&str; 3] = ["alpha", "beta", "gamma"];

fn load_slots(tasks: usize, per_task: usize) -> Vec<Vec<Slot>> {
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

fn random_content(rng: &mut SmallRng, service: &str, version: u64) -> Content {
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
        address: format!(
            "10.{}.{}.{}",
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
async fn write_load(
    http: SocketAddr,
    mut slots: Vec<Slot>,
    seed: u64,
    limit: Duration,
) -> TaskReport {
    let client = client();
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
enum InDoubt {
    /// After a crash: applied in full, or not at all.
    EitherWay,
    /// After SIGTERM, which answers every request it accepted: not applied.
    NotApplied,
}

/// What a restarted roster holds, checked against the slots.
struct Settled {
    /// The slots, with what was found as their acknowledged state.
    slots: Vec<Slot>,
    /// Operations in doubt that turned out applied (committed, unanswered).
    applied_in_doubt: usize,
}

/// Checks what a restarted roster holds against the slots: each holds its
/// acknowledged state or, as `in_doubt` allows, the state its one
/// unacknowledged operation would have left; nothing in between.
async fn check_slots(
    roster: &Roster,
    slots: Vec<Slot>,
    max_index: u64,
    in_doubt: InDoubt,
    context: &str,
) -> Settled {
    let client = client();
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
fn start_load(
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
struct LoadReport {
    slots: Vec<Slot>,
    acknowledged: usize,
    max_index: u64,
    refusals: Vec<String>,
}

/// Waits for the writer tasks (they end once roster is gone).
async fn finish_load(tasks: Vec<tokio::task::JoinHandle<TaskReport>>) -> LoadReport {
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
fn by_task(slots: Vec<Slot>, tasks: usize) -> Vec<Vec<Slot>> {
    let mut grouped: Vec<Vec<Slot>> = (0..tasks).map(|_| Vec::new()).collect();
    for slot in slots {
        let task: usize = slot.id[1..slot.id.find('-').expect("t<task>-<n>")]
            .parse()
            .expect("task number");
        grouped[task].push(slot);
    }
    grouped
}

// ---------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------

/// The DNS questions whose answers must survive a restart or an import.
const QUESTIONS: [(&str, RecordType); 9] = [
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

async fn dns_answers(server: SocketAddr) -> Vec<Answer> {
    let mut answers = Vec::new();
    for (name, rtype) in QUESTIONS {
        answers.push(dns_answer(server, name, rtype).await);
    }
    answers
}

/// Registers a small but varied registry: tags, metadata, weights, a TTL
/// check (heartbeated to passing), a TCP check that cannot pass, an
/// instance in maintenance, an IPv6 instance and one deregistered.
async fn populate(client: &reqwest::Client, roster: &Roster) {
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
        json!({"address": "10.0.0.2", "port": 8081, "tags": ["http"],
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
        json!({"address": "fd00::1", "port": 9000, "priority": 1,
               "checks": [{"id": "port", "tcp": "127.0.0.1:1", "interval": "10s", "timeout": "1s"}]}),
    )
    .await;
    put(
        client,
        &instance("api", "api-2"),
        json!({"address": "fd00::2", "port": 9001, "weight": 5, "meta": {"shard": "2"}}),
    )
    .await;
    heartbeat(client, roster, "web", "web-2").await;
}

async fn heartbeat(client: &reqwest::Client, roster: &Roster, service: &str, id: &str) {
    let view = put(
        client,
        &roster.url(&format!("/v1/services/{service}/instances/{id}/heartbeat")),
        json!({}),
    )
    .await;
    assert_eq!(view["status"], "passing", "{view}");
}

#[tokio::test]
async fn a_restart_keeps_registrations_answers_and_the_index() {
    let site = Site::new();
    let client = client();
    let mut roster = site.start().await;
    populate(&client, &roster).await;
    // Health changes move the index too, though they are not stored: a
    // flapping check takes it well past the last stored value.
    for status in ["warning", "passing"].repeat(15) {
        put(
            &client,
            &roster.url("/v1/services/web/instances/web-2/heartbeat"),
            json!({ "status": status }),
        )
        .await;
    }

    let services = ["web", "api"];
    let before = list_instances(&client, &roster, &services).await;
    let listing_before = get_ok(&client, &roster.url("/v1/services")).await;
    let answers_before = dns_answers(roster.dns).await;
    let serial_before = soa_serial(roster.dns).await;
    assert!(
        answers_before[0].answers.len() == 2,
        "web A before: {:?}",
        answers_before[0]
    );
    let status = roster.stop().await;
    assert!(status.success(), "SIGTERM: {status}\n{}", roster.stderr());

    let roster = site.start().await;
    let after = list_instances(&client, &roster, &services).await;
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "instance IDs"
    );
    // Index regressions are gathered and reported last, so that one run
    // shows every one of them after the rest has been checked.
    let mut index_problems = Vec::new();
    for (id, view) in &before {
        let restored = &after[id];
        assert_eq!(durable_view(restored), durable_view(view), "{id}");
        // Checks come back critical until checked or heartbeated.
        for check in restored["checks"].as_array().expect("checks") {
            assert_eq!(check["status"], "critical", "{id}: {check}");
        }
        if restored["create_index"] != view["create_index"] {
            index_problems.push(format!(
                "{id}: create_index changed from {} to {}",
                view["create_index"], restored["create_index"]
            ));
        }
        let (old, new) = (
            view["modify_index"].as_u64().expect("index"),
            restored["modify_index"].as_u64().expect("index"),
        );
        if new < old {
            index_problems.push(format!("{id}: modify_index went back from {old} to {new}"));
        }
    }
    // The index as loaded, before any check can move it (a check result
    // soon after start-up would hide a regression from the SOA serial).
    let loaded = roster
        .log
        .lock()
        .expect("log")
        .iter()
        .find(|line| line.contains("registry loaded"))
        .and_then(|line| {
            line.split_whitespace()
                .find_map(|word| word.strip_prefix("index="))
                .and_then(|index| index.parse::<u64>().ok())
        })
        .unwrap_or_else(|| panic!("no index in a 'registry loaded' line:\n{}", roster.stderr()));
    if loaded < serial_before {
        index_problems.push(format!(
            "the registry index went back from {serial_before} to {loaded} (loaded from the store)"
        ));
    }
    let serial_after = soa_serial(roster.dns).await;
    if serial_after < serial_before {
        index_problems.push(format!(
            "the SOA serial (registry index) went back from {serial_before} to {serial_after}"
        ));
    }
    // web-2 is critical until its service reports again.
    let web = served_addresses(roster.dns, "web").await;
    assert_eq!(web, BTreeSet::from(["10.0.0.1".to_owned()]));

    heartbeat(&client, &roster, "web", "web-2").await;
    assert_eq!(
        get_ok(&client, &roster.url("/v1/services")).await,
        listing_before
    );
    assert_eq!(dns_answers(roster.dns).await, answers_before);
    assert!(soa_serial(roster.dns).await > serial_after);
    assert!(
        index_problems.is_empty(),
        "the index went back across a restart:\n{}",
        index_problems.join("\n")
    );
}

#[tokio::test]
async fn kill_9_loses_no_acknowledged_write_and_half_applies_none() {
    const TASKS: usize = 8;
    const MAX_CYCLES: usize = 12;
    let overall = Instant::now() + Duration::from_secs(60);
    let site = Site::new();
    let seed: u64 = rand::rng().random();
    let mut rng = SmallRng::seed_from_u64(seed);
    let context = |cycle: usize| format!("seed {seed}, cycle {cycle}");
    let mut slots = load_slots(TASKS, 12);
    let mut max_index = 0;
    let mut cycles = 0;
    let mut total_acknowledged = 0;
    let mut in_doubt = 0;
    let mut applied_in_doubt = 0;
    loop {
        let mut roster = site.start().await;
        if cycles > 0 {
            // The store opened cleanly after the crash: check what it holds.
            let flat = slots.into_iter().flatten().collect();
            let settled = check_slots(
                &roster,
                flat,
                max_index,
                InDoubt::EitherWay,
                &context(cycles),
            )
            .await;
            applied_in_doubt += settled.applied_in_doubt;
            slots = by_task(settled.slots, TASKS);
        }
        if cycles >= MAX_CYCLES || Instant::now() >= overall {
            break;
        }
        let delay = Duration::from_millis(rng.random_range(50..=500));
        let tasks = start_load(roster.http, slots, seed.wrapping_add(cycles as u64));
        sleep(delay).await;
        roster.crash().await;
        let report = finish_load(tasks).await;
        assert!(
            report.refusals.is_empty(),
            "{}: {:?}",
            context(cycles),
            report.refusals
        );
        in_doubt += report.slots.iter().filter(|s| s.pending.is_some()).count();
        total_acknowledged += report.acknowledged;
        max_index = max_index.max(report.max_index);
        let flat = report.slots;
        slots = by_task(flat, TASKS);
        cycles += 1;
    }
    eprintln!(
        "kill -9: {cycles} cycles, {total_acknowledged} acknowledged writes, \
         {in_doubt} in flight at a crash of which {applied_in_doubt} had been \
         applied (seed {seed})"
    );
    assert!(cycles >= 3, "only {cycles} cycles ran in the time limit");
    assert!(total_acknowledged > 0, "no write was acknowledged");
}

#[tokio::test]
async fn sigterm_with_requests_in_flight_exits_cleanly_and_keeps_them() {
    const TASKS: usize = 8;
    let site = Site::new();
    let mut roster = site.start().await;
    let seed: u64 = rand::rng().random();
    let tasks = start_load(roster.http, load_slots(TASKS, 8), seed);
    sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let status = roster.stop().await;
    let took = started.elapsed();
    let report = finish_load(tasks).await;
    assert!(status.success(), "SIGTERM: {status}\n{}", roster.stderr());
    assert!(took < STOP_LIMIT, "took {took:?}");
    assert!(
        roster.stderr().contains("stopped"),
        "no clean stop logged:\n{}",
        roster.stderr()
    );
    assert!(
        report.refusals.is_empty(),
        "seed {seed}: {:?}",
        report.refusals
    );
    assert!(report.acknowledged > 0, "no write was acknowledged");
    let roster = site.start().await;
    check_slots(
        &roster,
        report.slots,
        report.max_index,
        InDoubt::NotApplied,
        &format!("seed {seed}"),
    )
    .await;
}

#[tokio::test]
async fn a_second_roster_on_the_same_data_dir_is_refused() {
    let site = Site::new();
    let client = client();
    let first = site.start().await;
    put(
        &client,
        &first.url("/v1/services/web/instances/web-1"),
        json!({"address": "10.0.0.1", "port": 80}),
    )
    .await;

    let exited = site
        .start_must_fail("a second time on the same data dir")
        .await;
    assert!(
        exited.stderr.contains("another roster"),
        "the message should say the directory is in use:\n{}",
        exited.stderr
    );

    // The first one still serves reads and writes.
    put(
        &client,
        &first.url("/v1/services/web/instances/web-2"),
        json!({"address": "10.0.0.2", "port": 80}),
    )
    .await;
    assert_eq!(
        served_addresses(first.dns, "web").await,
        BTreeSet::from(["10.0.0.1".to_owned(), "10.0.0.2".to_owned()])
    );
}

#[tokio::test]
async fn a_corrupt_store_stops_start_up_and_is_left_alone() {
    let site = Site::new();
    std::fs::create_dir_all(site.data_dir()).expect("data dir");
    let garbage: Vec<u8> = b"this is not a redb file \x00\xff\x13"
        .iter()
        .copied()
        .cycle()
        .take(64 * 1024)
        .collect();
    std::fs::write(site.store_file(), &garbage).expect("write garbage");

    let exited = site.start_must_fail("on a corrupt store").await;
    assert!(
        exited.stderr.contains("roster.redb"),
        "the message should name the file:\n{}",
        exited.stderr
    );
    assert_eq!(
        std::fs::read(site.store_file()).expect("read store"),
        garbage,
        "the corrupt file was changed"
    );
}

/// Damage inside a real store, the kind a bad disk or a stray write leaves:
/// start-up must stop as it does for garbage, with a message that names the
/// file and says what to do, without a panic, and without writing to the
/// file (it is the evidence, and the only copy).
#[tokio::test]
async fn a_damaged_store_stops_start_up_with_a_clear_message() {
    let site = Site::new();
    let client = client();
    let mut roster = site.start().await;
    for n in 0..20 {
        put(
            &client,
            &roster.url(&format!("/v1/services/web/instances/web-{n}")),
            json!({"address": format!("10.0.0.{}", n + 1), "port": 80}),
        )
        .await;
    }
    let status = roster.stop().await;
    assert!(status.success(), "SIGTERM: {status}");
    let intact = std::fs::read(site.store_file()).expect("read store");
    // Records are stored as JSON: find one, and the page that holds it.
    let record = intact
        .windows(11)
        .position(|w| w == b"\"service\":\"")
        .expect("a JSON record in the store file");
    let page = record - record % 4096;
    let damages: [(&str, usize, &[u8]); 2] = [
        ("an unreadable record", record, b"\xff\xfe\xfd"),
        ("a damaged page header", page, &[0xff; 8]),
    ];
    let mut problems = Vec::new();
    for (what, offset, bytes) in damages {
        let mut damaged = intact.clone();
        damaged[offset..offset + bytes.len()].copy_from_slice(bytes);
        std::fs::write(site.store_file(), &damaged).expect("write damaged store");
        let exited = match site.try_start().await {
            Ok(roster) => {
                problems.push(format!("{what}: roster started:\n{}", roster.stderr()));
                continue;
            }
            Err(exited) => exited,
        };
        let message = exited
            .stderr
            .lines()
            .filter(|line| line.contains("error"))
            .collect::<Vec<_>>()
            .join("\n");
        if exited.status.success() {
            problems.push(format!("{what}: exited with {}", exited.status));
        }
        if !message.contains("roster.redb") {
            problems.push(format!(
                "{what}: the message does not name the file: {message}"
            ));
        }
        if !message.contains("roster import") {
            problems.push(format!(
                "{what}: the message does not say what to do: {message}"
            ));
        }
        if exited.stderr.contains("panicked") {
            problems.push(format!("{what}: roster panicked: {message}"));
        }
        if std::fs::read(site.store_file()).expect("read store") != damaged {
            problems.push(format!("{what}: the damaged file was written to"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// `roster export` / `roster import` through the CLI.
fn cli(args: &[&str], file: Option<&Path>) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_roster"));
    command.args(args).env("NO_COLOR", "1");
    if let Some(file) = file {
        command.arg(file);
    }
    command.output().expect("run roster CLI")
}

#[tokio::test]
async fn export_and_import_move_a_registry_all_or_nothing() {
    let client = client();
    let (site_a, site_b) = (Site::new(), Site::new());
    let a = site_a.start().await;
    populate(&client, &a).await;
    let b = site_b.start().await;

    let exported = cli(&["export", "--http", &a.http.to_string()], None);
    assert!(
        exported.status.success(),
        "export: {}",
        String::from_utf8_lossy(&exported.stderr)
    );
    let file = site_b.root.path().join("export.json");
    std::fs::write(&file, &exported.stdout).expect("write export");
    let imported = cli(&["import", "--http", &b.http.to_string()], Some(&file));
    assert!(
        imported.status.success(),
        "import: {}",
        String::from_utf8_lossy(&imported.stderr)
    );

    // Imported checks start critical, as after a restart; web-2's service
    // reports to the new server.
    heartbeat(&client, &b, "web", "web-2").await;
    let services = ["web", "api"];
    let (from, to) = (
        list_instances(&client, &a, &services).await,
        list_instances(&client, &b, &services).await,
    );
    assert_eq!(from.len(), 5);
    assert_eq!(
        from.values().map(durable_view).collect::<Vec<_>>(),
        to.values().map(durable_view).collect::<Vec<_>>()
    );
    assert_eq!(
        get_ok(&client, &a.url("/v1/services")).await,
        get_ok(&client, &b.url("/v1/services")).await
    );
    assert_eq!(dns_answers(a.dns).await, dns_answers(b.dns).await);

    // Invalid imports fail and change nothing.
    let export_b = get_ok(&client, &b.url("/v1/export")).await;
    let valid = |id: &str| {
        json!({"service": "web", "id": id, "address": "10.9.9.9", "port": 1,
               "weight": 1, "priority": 0})
    };
    let mut bad_address = valid("bad");
    bad_address["address"] = json!("10.0.0.300");
    let mut bad_meta = valid("bad");
    bad_meta["meta"] = json!({"not a key": "x"});
    let mut bad_service = valid("bad");
    bad_service["service"] = json!("---");
    let bad_files = [
        ("bad json", "{\"version\": 1, \"instances\": [".to_owned()),
        (
            "bad address",
            json!({"version": 1, "index": 1, "instances": [valid("new-1"), bad_address]})
                .to_string(),
        ),
        (
            "bad meta after good ones",
            json!({"version": 1, "index": 1, "instances": [valid("new-1"), valid("new-2"), bad_meta]})
                .to_string(),
        ),
        (
            "bad service name",
            json!({"version": 1, "index": 1, "instances": [valid("new-1"), bad_service]})
                .to_string(),
        ),
    ];
    for (what, text) in bad_files {
        let file = site_b.root.path().join("bad.json");
        std::fs::write(&file, text).expect("write bad file");
        let output = cli(&["import", "--http", &b.http.to_string()], Some(&file));
        assert!(!output.status.success(), "{what}: the import succeeded");
        assert_eq!(
            get_ok(&client, &b.url("/v1/export")).await,
            export_b,
            "{what}: the failed import changed the registry"
        );
    }
}
