//! Bad input and bad days: what an import, a stored record, a full log
//! device or a full data disk must not be able to do to roster.
//!
//! - An import passes exactly the validation the API does, and changes
//!   nothing when it fails.
//! - A store holding what validation now refuses still starts, serves the
//!   rest, and keeps checking health.
//! - With stderr on a full device, roster serves and stops cleanly.
//! - When the data disk fills, writes fail clearly; once space is freed they
//!   resume without a restart, and nothing acknowledged is lost.

mod common;

use std::{
    net::{SocketAddr, TcpListener, UdpSocket},
    path::Path,
    process::Stdio,
    time::Duration,
};

use common::{Server, eventually, start_server_with};
use hickory_proto::rr::RecordType;
use roster::{
    model::{CheckDefinition, CheckKind, GoDuration, Status},
    registry::{EmbeddedStore, Mutation, Store, StoredInstance},
};
use serde_json::{Value, json};
use tokio::time::{sleep, timeout};

/// A hang guard for polls, not a timing assertion.
const DEADLINE: Duration = Duration::from_secs(30);

async fn export(server: &Server) -> Value {
    let reply = server.get(&["v1", "export"]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply.body
}

/// The export's instances, without the index that every write moves.
fn instances(export: &Value) -> Value {
    export["instances"].clone()
}

#[tokio::test]
async fn an_import_is_refused_whatever_the_api_refuses_and_changes_nothing() {
    let server = start_server_with(&[], |_| {}).await;
    let reply = server
        .register(
            "web",
            "web-1",
            json!({"address": "127.0.0.1", "port": 8080,
                   "check": {"ttl": "30s", "status": "passing"}}),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let before = export(&server).await;
    let good = before["instances"][0].clone();

    let with = |edit: &dyn Fn(&mut Value)| {
        let mut instance = good.clone();
        instance["id"] = json!("web-2");
        // Its default check ID names it too (service:<id>).
        instance["checks"][0]["id"] = json!("service:web-2");
        edit(&mut instance);
        instance
    };
    let zero_interval = with(&|i| {
        i["checks"][0]["kind"] = json!({"http": {"url": "http://127.0.0.1:1/", "method": "GET",
                            "headers": [], "interval": "0s", "timeout": "0s"}});
    });
    let cases: Vec<(&str, Vec<Value>)> = vec![
        ("a zero check interval", vec![zero_interval]),
        (
            "a zero TTL",
            vec![with(&|i| {
                i["checks"][0]["kind"] = json!({"ttl": {"ttl": "0s"}})
            })],
        ),
        (
            "the unspecified address",
            vec![with(&|i| i["address"] = json!("0.0.0.0"))],
        ),
        (
            "a multicast address",
            vec![with(&|i| i["address"] = json!("224.0.0.1"))],
        ),
        ("one ID twice", vec![good.clone(), good.clone()]),
        (
            "a 100 KB maintenance reason",
            vec![with(&|i| i["maintenance"] = json!("x".repeat(100_000)))],
        ),
        (
            "control characters in the maintenance reason",
            vec![with(&|i| i["maintenance"] = json!("down\u{1b}[2J"))],
        ),
        (
            "a check ID used twice",
            vec![with(&|i| {
                let check = i["checks"][0].clone();
                i["checks"] = json!([check.clone(), check]);
            })],
        ),
        (
            "another instance's default check ID",
            vec![with(&|i| i["checks"][0]["id"] = json!("service:web-1"))],
        ),
        (
            "a TTL past Go's longest duration",
            vec![with(&|i| {
                i["checks"][0]["kind"] = json!({"ttl": {"ttl": "5124094h"}})
            })],
        ),
        (
            "the maintenance check's ID",
            vec![with(&|i| {
                i["checks"][0]["id"] = json!("_service_maintenance:web-2")
            })],
        ),
        (
            "zero thresholds",
            vec![with(&|i| {
                i["checks"][0]["failures_before_critical"] = json!(0)
            })],
        ),
    ];
    for (what, batch) in cases {
        let body = json!({"version": 1, "index": 1, "instances": batch});
        let reply = server.put_raw(&["v1", "import"], body.to_string()).await;
        assert_eq!(reply.status, 400, "{what}: {reply:?}");
        assert!(
            reply.body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {reply:?}"
        );
        assert_eq!(
            instances(&export(&server).await),
            instances(&before),
            "{what} changed the registry"
        );
    }

    // The refusals are about the values, not imports as such: the same
    // instance with sound values imports.
    let body = json!({"version": 1, "index": 1, "instances": [with(&|_| {})]});
    let reply = server.put_raw(&["v1", "import"], body.to_string()).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["imported"], 1);
}

#[tokio::test]
async fn an_export_of_a_consul_registration_without_a_port_imports_again() {
    // Consul allows a missing port (0), so an export can hold one and must
    // round-trip; the native API's own rule (1 to 65535) is the door's.
    let server = start_server_with(&[], |_| {}).await;
    let response = common::http_client()
        .put(server.url(&["v1", "agent", "service", "register"]))
        .json(&json!({"Name": "db", "ID": "db-1", "Address": "127.0.0.1"}))
        .send()
        .await
        .expect("register");
    assert_eq!(response.status(), 200);
    let exported = export(&server).await;
    assert_eq!(exported["instances"][0]["port"], 0);
    let target = start_server_with(&[], |_| {}).await;
    let reply = target
        .put_raw(&["v1", "import"], exported.to_string())
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
}

fn stored(id: &str, kind: CheckKind, status: Status) -> StoredInstance {
    StoredInstance {
        service: "web".into(),
        id: id.into(),
        address: "127.0.0.1".parse().expect("ip"),
        address_as_given: None,
        port: 8080,
        tags: vec![],
        meta: Default::default(),
        weight: 1,
        priority: 0,
        checks: vec![CheckDefinition {
            id: format!("service:{id}"),
            name: "check".into(),
            notes: String::new(),
            kind,
            success_before_passing: 1,
            failures_before_critical: 1,
            deregister_critical_after: None,
            initial_status: status,
        }],
        maintenance: None,
        create_index: 1,
        enable_tag_override: false,
        tagged_addresses: None,
    }
}

#[tokio::test]
async fn a_stored_zero_interval_check_is_set_aside_and_health_keeps_running() {
    // What an older roster let an import store: a TCP check every 0 s,
    // which made the scheduler spin on one core, across restarts.
    let data = tempfile::tempdir().expect("data dir");
    {
        let store = EmbeddedStore::open(data.path()).expect("open store");
        let spinning = CheckKind::Tcp {
            address: "127.0.0.1:1".into(),
            interval: GoDuration(Duration::ZERO),
            timeout: GoDuration(Duration::ZERO),
        };
        let ttl = CheckKind::Ttl {
            ttl: GoDuration(Duration::from_millis(500)),
        };
        store
            .commit(
                &[
                    Mutation::Put(stored("spin-1", spinning, Status::Passing)),
                    Mutation::Put(stored("ttl-1", ttl, Status::Passing)),
                ],
                100,
            )
            .expect("commit");
    }
    let server = start_server_with(&[], |config| config.data_dir = data.path().to_owned()).await;
    // The bad instance is not served; the good one is, until its TTL runs
    // out with no heartbeat: the scheduler is alive and on time.
    let reply = server
        .get(&["v1", "services", "web", "instances", "spin-1"])
        .await;
    assert_eq!(reply.status, 404, "{reply:?}");
    let reply = server
        .get(&["v1", "services", "web", "instances", "ttl-1"])
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    eventually("the TTL instance leaves DNS", DEADLINE, || async {
        server
            .query("web.service.local.", RecordType::A)
            .await
            .ips()
            .is_empty()
    })
    .await;
    // Registering the ID again with valid values replaces the stored one.
    let reply = server
        .register(
            "web",
            "spin-1",
            json!({"address": "127.0.0.1", "port": 8080,
                   "check": {"tcp": "127.0.0.1:1", "interval": "1s"}}),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    timeout(DEADLINE, server.stop())
        .await
        .expect("roster stops: nothing spins");
}

/// A port free on 127.0.0.1 for both UDP and TCP, for a child roster whose
/// log cannot be read to learn the ports it bound.
fn free_port() -> u16 {
    for _ in 0..64 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let port = udp.local_addr().expect("addr").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

#[tokio::test]
async fn roster_with_its_log_on_a_full_device_serves_and_stops_cleanly() {
    if !Path::new("/dev/full").exists() {
        eprintln!("skipped: this system has no /dev/full");
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let dns = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("open /dev/full");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_roster"))
        .args([
            "serve",
            "--dns",
            &dns.to_string(),
            "--http",
            &http.to_string(),
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--zones")
        .arg(dir.path().join("zones"))
        .current_dir(dir.path())
        // Debug logging: every request and check writes to the full device.
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(full))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn roster");
    let client = common::http_client();
    let base = format!("http://{http}/v1/services/web/instances");
    eventually("roster answers HTTP", DEADLINE, || async {
        client
            .get(format!("http://{http}/v1/services"))
            .send()
            .await
            .is_ok()
    })
    .await;
    // Many writes, each logged by the writer and the checker: before the
    // fix, the first failed log line panicked the writer and every later
    // write answered 503.
    for n in 0..20 {
        let response = client
            .put(format!("{base}/web-{n}"))
            .json(&json!({"address": "127.0.0.1", "port": 8080 + n,
                          "check": {"ttl": "30s", "status": "passing"}}))
            .send()
            .await
            .expect("register");
        assert_eq!(response.status(), 200, "registration {n}");
        let response = client
            .put(format!("{base}/web-{n}/heartbeat"))
            .json(&json!({"status": "critical", "note": "going down"}))
            .send()
            .await
            .expect("heartbeat");
        assert_eq!(response.status(), 200, "heartbeat {n}");
    }
    let response = client
        .put(format!("{base}/web-0/heartbeat"))
        .json(&json!({"status": "passing"}))
        .send()
        .await
        .expect("heartbeat");
    assert_eq!(response.status(), 200);
    let answer = common::query_udp(dns, "web.service.local.", RecordType::SRV, Some(4096)).await;
    assert_eq!(answer.srvs().len(), 1, "web-0 passing, the rest critical");
    assert!(
        child.try_wait().expect("child state").is_none(),
        "still running"
    );
    // The PID of a child this test spawned and has not yet reaped, so it
    // cannot name another process.
    let pid = child.id().expect("pid");
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -TERM {pid}");
    let status = timeout(DEADLINE, child.wait())
        .await
        .expect("roster exits on SIGTERM")
        .expect("wait");
    assert!(status.success(), "exit status {status}");
}

/// A small tmpfs this test mounts, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` where mounting is not allowed (not root): the test is skipped.
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("mount point");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .ok()?;
        status.success().then_some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the filesystem at `dir` with one file until a write fails.
fn fill(dir: &Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("create filler");
    let block = vec![0u8; 64 * 1024];
    // Bounded: the tmpfs is a few MiB.
    for _ in 0..100_000 {
        if file
            .write_all(&block)
            .and_then(|()| file.sync_all())
            .is_err()
        {
            break;
        }
    }
    // Whatever small tail is left, take it too.
    for _ in 0..100_000 {
        if file
            .write_all(&[0u8; 512])
            .and_then(|()| file.sync_all())
            .is_err()
        {
            break;
        }
    }
    path
}

#[tokio::test]
async fn writes_resume_without_a_restart_once_a_full_data_disk_has_room_again() {
    let Some(disk) = Tmpfs::mount("8m") else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let data = disk.path().join("data");
    let server = start_server_with(&[], |config| config.data_dir = data.clone()).await;
    let register = async |n: u32| {
        server
            .register(
                "web",
                &format!("web-{n}"),
                json!({"address": "127.0.0.1", "port": 8000 + n, "tags": ["x".repeat(200)]}),
            )
            .await
    };
    let mut acknowledged = Vec::new();
    for n in 0..10 {
        assert_eq!(register(n).await.status, 200);
        acknowledged.push(n);
    }
    let filler = fill(disk.path());
    // The disk is full. The commit log's blocks were allocated when it was
    // created, so writes go on into it until it is full; then its
    // checkpoint into redb needs room, and writes fail with a clear error
    // and change nothing. Bounded: the log holds ~1 MiB, a few thousand of
    // these.
    let mut refused = 0;
    let mut n = 10;
    while refused < 5 && n < 20_000 {
        let reply = register(n).await;
        if reply.status == 200 {
            acknowledged.push(n);
        } else {
            assert!(reply.status >= 500, "{reply:?}");
            refused += 1;
        }
        n += 1;
    }
    assert!(refused > 0, "the full disk refused no write");
    // Room again: writes resume in the same process.
    std::fs::remove_file(&filler).expect("free the disk");
    let mut resumed = false;
    for n in 20_000..20_200 {
        let reply = register(n).await;
        if reply.status == 200 {
            acknowledged.push(n);
            resumed = true;
            break;
        }
        sleep(Duration::from_millis(50)).await;
    }
    assert!(resumed, "writes did not resume after space was freed");
    for n in 20_200..20_210 {
        assert_eq!(register(n).await.status, 200, "write {n} after recovery");
        acknowledged.push(n);
    }
    // Nothing acknowledged is lost across a restart on the same disk.
    timeout(DEADLINE, server.stop()).await.expect("stops");
    let server = start_server_with(&[], |config| config.data_dir = data.clone()).await;
    for n in &acknowledged {
        let id = format!("web-{n}");
        let reply = server
            .get(&["v1", "services", "web", "instances", &id])
            .await;
        assert_eq!(reply.status, 200, "{id} was acknowledged but is gone");
    }
    timeout(DEADLINE, server.stop()).await.expect("stops");
}
