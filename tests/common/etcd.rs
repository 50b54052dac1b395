//! A real etcd cluster for the cluster-mode tests: 1 or 3 `etcd` processes
//! on loopback ports, each with its data directory and log in one temporary
//! directory, that a test can kill and restart member by member. An
//! [`EtcdCluster`] kills every member it started when it is dropped.
//!
//! Everything here is blocking (`std::process`, `std::net`) and every wait
//! has an overall limit. Tokio tests call it directly for the short calls
//! or through `spawn_blocking` around starts and restarts.
//!
//! The binaries are Debian's (`etcd-server`, `etcd-client`, etcd 3.4),
//! which `.ci/run` installs; a machine without them fails the test rather
//! than skipping it.

use std::{
    fs::OpenOptions,
    io::{Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    thread::sleep,
    time::{Duration, Instant},
};

use serde_json::Value;

/// The server, from Debian's `etcd-server`.
pub const ETCD: &str = "/usr/bin/etcd";
/// The v3 command-line client, from Debian's `etcd-client`.
pub const ETCDCTL: &str = "/usr/bin/etcdctl";

/// How long members may take to answer `/health` after being started: a
/// new cluster needs every member's first fsyncs and an election, on a
/// busy shared machine.
pub const START_LIMIT: Duration = Duration::from_secs(30);
/// How long a cluster with a quorum may take to (re-)elect a leader.
pub const LEADER_LIMIT: Duration = Duration::from_secs(20);
/// Starts of a new cluster before giving up: a port picked free may be
/// taken by someone else before etcd binds it.
const START_ATTEMPTS: usize = 3;
/// Between two polls.
const POLL: Duration = Duration::from_millis(50);
/// One `/health` request, connect to last byte.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// Lines of each member's log shown when something fails.
const LOG_TAIL: usize = 25;

/// Makes each cluster's `--initial-cluster-token` unique within the test
/// binary (the PID makes it unique across binaries).
static CLUSTERS: AtomicUsize = AtomicUsize::new(0);

/// A running etcd cluster; dropping it kills every member with SIGKILL.
pub struct EtcdCluster {
    /// `mN/` (data) and `mN.log` for each member; removed on drop, after
    /// the members are dead.
    dir: tempfile::TempDir,
    /// The cluster's `--initial-cluster` value, the same for every start.
    initial_cluster: String,
    /// The cluster's `--initial-cluster-token`.
    token: String,
    /// Member `i` is named `m{i}`.
    members: Vec<Member>,
    /// With it, every member also serves clients over TLS (see
    /// [`EtcdCluster::start_tls`]).
    tls: Option<EtcdTls>,
}

/// The PEM files of an etcd that serves clients over TLS and requires a
/// client certificate there (`--client-cert-auth`).
#[derive(Clone)]
pub struct EtcdTls {
    /// etcd's certificate, for 127.0.0.1.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The CA whose client certificates etcd accepts.
    pub ca_file: PathBuf,
}

/// One member: its fixed ports and, while it runs, its process.
struct Member {
    /// Where clients (roster, etcdctl, `/health`) reach it.
    client_port: u16,
    /// Where the other members reach it.
    peer_port: u16,
    /// Where clients reach it over TLS, if the cluster has TLS.
    tls_port: u16,
    /// The process, while it is running or not yet reaped. In a `Mutex` so
    /// that [`EtcdCluster::is_running`] can reap with `&self` and the
    /// cluster stays `Sync` (it may be shared with `spawn_blocking`).
    child: Mutex<Option<Child>>,
}

impl EtcdCluster {
    /// Starts `members` etcd processes (1 or 3) as one new cluster on free
    /// loopback ports and waits (up to [`START_LIMIT`]) until every member
    /// answers `/health`. Panics, with each member's log, if they do not.
    pub fn start(members: usize) -> EtcdCluster {
        EtcdCluster::start_with(members, None)
    }

    /// [`EtcdCluster::start`], every member also serving clients over TLS
    /// with `tls`, a client certificate required there
    /// ([`EtcdCluster::tls_endpoints_arg`]). The plain client URLs stay, for
    /// the harness's own health checks and `etcdctl`.
    pub fn start_tls(members: usize, tls: EtcdTls) -> EtcdCluster {
        EtcdCluster::start_with(members, Some(tls))
    }

    fn start_with(members: usize, tls: Option<EtcdTls>) -> EtcdCluster {
        assert!(members >= 1, "an etcd cluster needs a member");
        assert!(
            Path::new(ETCD).exists() && Path::new(ETCDCTL).exists(),
            "etcd is not installed: run .ci/run, which installs Debian's etcd-server \
             (and etcd-client for etcdctl)"
        );
        for attempt in 1..=START_ATTEMPTS {
            let cluster = EtcdCluster::spawn_new(members, tls.clone());
            let all: Vec<usize> = (0..members).collect();
            match cluster.wait_healthy(&all) {
                Ok(()) => return cluster,
                // Ports are picked free and then released, so another
                // process may have bound one since: start again on new
                // ones, with fresh data directories.
                Err(why) if attempt < START_ATTEMPTS && cluster.port_clash() => {
                    eprintln!("etcd start attempt {attempt} lost a port ({why}); retrying");
                }
                Err(why) => panic!(
                    "etcd cluster of {members} did not start: {why}\n{}",
                    cluster.log_tails()
                ),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// `http://127.0.0.1:PORT` of every member, running or not, by index.
    pub fn client_urls(&self) -> Vec<String> {
        (0..self.members.len())
            .map(|i| self.client_url(i))
            .collect()
    }

    /// Every member's client URL, comma-separated, for `roster serve --etcd`.
    pub fn endpoints_arg(&self) -> String {
        self.client_urls().join(",")
    }

    /// Every member's TLS client URL (`https://127.0.0.1:PORT`),
    /// comma-separated, for `roster serve --etcd`.
    pub fn tls_endpoints_arg(&self) -> String {
        assert!(self.tls.is_some(), "this etcd cluster has no TLS");
        self.members
            .iter()
            .map(|m| format!("https://127.0.0.1:{}", m.tls_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client URL of member `member`.
    pub fn client_url(&self, member: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[member].client_port)
    }

    /// The index of the current leader, waiting (up to [`LEADER_LIMIT`])
    /// until a running member says it is the leader. Asking the leader
    /// itself, not a follower, skips the stale answer a follower gives
    /// until it notices that its leader is gone.
    pub fn leader(&self) -> usize {
        eventually_sync("an etcd leader", LEADER_LIMIT, || {
            let mut seen = Vec::new();
            for member in self.running() {
                match self.status(member) {
                    Ok((id, leader)) if id == leader => return Ok(member),
                    Ok((id, leader)) => {
                        seen.push(format!("m{member}: id {id:x}, leader {leader:x}"))
                    }
                    Err(error) => seen.push(format!("m{member}: {error}")),
                }
            }
            Err(seen.join("; "))
        })
    }

    /// Kills member `member` with SIGKILL and reaps it. Panics if it is not
    /// running.
    pub fn kill(&mut self, member: usize) {
        let child = self.members[member]
            .child
            .get_mut()
            .expect("member lock")
            .take();
        let mut child = child.unwrap_or_else(|| panic!("kill: etcd m{member} is not running"));
        // Fails only if it already exited, which the wait then reports.
        let _ = child.kill();
        child.wait().expect("reap etcd");
    }

    /// Starts member `member` again with the same flags, ports and data
    /// directory, and waits (up to [`START_LIMIT`]) until it answers
    /// `/health`. Its `/health` needs a leader, so a quorum of the other
    /// members must be running: after [`EtcdCluster::kill_all`], use
    /// [`EtcdCluster::restart_all`].
    pub fn restart(&mut self, member: usize) {
        assert!(
            !self.is_running(member),
            "restart: etcd m{member} is running"
        );
        let child = self.spawn_member(member, "existing");
        *self.members[member].child.get_mut().expect("member lock") = Some(child);
        if let Err(why) = self.wait_healthy(&[member]) {
            panic!(
                "etcd m{member} did not restart: {why}\n{}",
                self.log_tails()
            );
        }
    }

    /// Kills every running member (SIGKILL) and reaps them.
    pub fn kill_all(&mut self) {
        let running: Vec<usize> = self.running().collect();
        for member in running {
            self.kill(member);
        }
    }

    /// Starts every member that is not running, all at once (one alone has
    /// no quorum, so it would never be healthy), and waits until every
    /// member answers `/health`.
    pub fn restart_all(&mut self) {
        let stopped: Vec<usize> = (0..self.members.len())
            .filter(|&member| !self.is_running(member))
            .collect();
        for &member in &stopped {
            let child = self.spawn_member(member, "existing");
            *self.members[member].child.get_mut().expect("member lock") = Some(child);
        }
        let all: Vec<usize> = (0..self.members.len()).collect();
        if let Err(why) = self.wait_healthy(&all) {
            panic!(
                "etcd members {stopped:?} did not restart: {why}\n{}",
                self.log_tails()
            );
        }
    }

    /// Whether member `member`'s process is alive (started, not killed, and
    /// not exited on its own).
    pub fn is_running(&self, member: usize) -> bool {
        let mut child = self.members[member].child.lock().expect("member lock");
        match child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            // Exited by itself: reaped now, so it counts as stopped.
            Some(_) => {
                *child = None;
                false
            }
            None => false,
        }
    }

    /// Every key under `prefix` with its value, in key order, read
    /// (linearizably) through the running members.
    pub fn get_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        let json = self
            .etcdctl(&["get", "--prefix", "-w", "json", "--", prefix])
            .unwrap_or_else(|error| panic!("etcdctl get --prefix {prefix:?}: {error}"));
        key_values(&json)
    }

    /// Every key under `prefix` as member `member` alone has it applied: a
    /// serializable read, answered from its own store with no round trip to
    /// the leader, so it shows whether that member has caught up (and may
    /// be behind). `Err` if the member does not answer.
    pub fn get_prefix_on(
        &self,
        member: usize,
        prefix: &str,
    ) -> Result<Vec<(String, String)>, String> {
        let json = self.etcdctl_on(
            &self.client_url(member),
            &[
                "get",
                "--prefix",
                "--consistency=s",
                "-w",
                "json",
                "--",
                prefix,
            ],
        )?;
        Ok(key_values(&json))
    }

    /// Puts `key` = `value` through the running members; panics if it fails.
    pub fn put(&self, key: &str, value: &str) {
        if let Err(error) = self.etcdctl(&["put", "--", key, value]) {
            panic!("etcdctl put {key:?}: {error}");
        }
    }

    /// Puts `key` = `value` through member `member` only. `Err` if it
    /// fails, e.g. while the cluster has no leader.
    pub fn put_on(&self, member: usize, key: &str, value: &str) -> Result<(), String> {
        self.etcdctl_on(&self.client_url(member), &["put", "--", key, value])
            .map(drop)
    }

    /// The cluster's current revision (that of its last write).
    pub fn revision(&self) -> i64 {
        let json = self
            .etcdctl(&["get", "-w", "json", "--", "/"])
            .unwrap_or_else(|error| panic!("etcdctl get (for the revision): {error}"));
        parse(&json)["header"]["revision"]
            .as_i64()
            .unwrap_or_else(|| panic!("no header.revision in {json}"))
    }

    /// Compacts the history up to `revision`, waiting until the backend
    /// has done it too (`--physical`), so that what follows sees it done.
    pub fn compact(&self, revision: i64) {
        if let Err(error) = self.etcdctl(&["compact", "--physical", "--", &revision.to_string()]) {
            panic!("etcdctl compact {revision}: {error}");
        }
    }

    /// Runs `etcdctl` (API v3, 5 s per command) with `args` against every
    /// running member; `Ok` with its stdout if it succeeds.
    pub fn etcdctl(&self, args: &[&str]) -> Result<String, String> {
        let endpoints: Vec<String> = self.running().map(|i| self.client_url(i)).collect();
        assert!(
            !endpoints.is_empty(),
            "etcdctl {args:?}: no etcd member is running"
        );
        self.etcdctl_on(&endpoints.join(","), args)
    }

    /// Runs `etcdctl` with `args` against `endpoints` (comma-separated).
    fn etcdctl_on(&self, endpoints: &str, args: &[&str]) -> Result<String, String> {
        let output = Command::new(ETCDCTL)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .arg("--command-timeout=5s")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run etcdctl");
        if output.status.success() {
            Ok(String::from_utf8(output.stdout).expect("etcdctl writes UTF-8"))
        } else {
            Err(format!(
                "{} ({}): {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }

    /// `(member_id, leader)` as member `member` reports them.
    fn status(&self, member: usize) -> Result<(u64, u64), String> {
        let json = self.etcdctl_on(
            &self.client_url(member),
            &["endpoint", "status", "-w", "json"],
        )?;
        // One entry per endpoint asked; the IDs are u64 beyond f64's
        // precision, which serde_json keeps exact.
        let status = &parse(&json)[0]["Status"];
        let id = status["header"]["member_id"].as_u64();
        let leader = status["leader"].as_u64();
        match (id, leader) {
            // 0 is raft's "no leader".
            (Some(_), Some(0)) => Err("no leader yet".to_owned()),
            (Some(id), Some(leader)) => Ok((id, leader)),
            _ => Err(format!("no member_id or leader in {json}")),
        }
    }

    /// The indices of the running members.
    fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.members.len()).filter(|&member| self.is_running(member))
    }

    /// A new cluster of `members` on freshly picked ports, started but not
    /// yet waited for.
    fn spawn_new(members: usize, tls: Option<EtcdTls>) -> EtcdCluster {
        let dir = tempfile::Builder::new()
            .prefix("roster-etcd-")
            .tempdir()
            .expect("tempdir for etcd");
        let ports = free_ports(3 * members);
        let members: Vec<Member> = ports
            .chunks(3)
            .map(|ports| Member {
                client_port: ports[0],
                peer_port: ports[1],
                tls_port: ports[2],
                child: Mutex::new(None),
            })
            .collect();
        let initial_cluster = members
            .iter()
            .enumerate()
            .map(|(i, m)| format!("m{i}=http://127.0.0.1:{}", m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!(
            "roster-test-{}-{}",
            std::process::id(),
            CLUSTERS.fetch_add(1, Ordering::Relaxed)
        );
        let mut cluster = EtcdCluster {
            dir,
            initial_cluster,
            token,
            members,
            tls,
        };
        for member in 0..cluster.members.len() {
            let child = cluster.spawn_member(member, "new");
            *cluster.members[member]
                .child
                .get_mut()
                .expect("member lock") = Some(child);
        }
        cluster
    }

    /// Starts member `member`'s process; `state` is `new` for a new
    /// cluster, `existing` for a restart (etcd ignores it once the data
    /// directory holds a member, but says what is meant).
    fn spawn_member(&self, member: usize, state: &str) -> Child {
        let m = &self.members[member];
        let client = format!("http://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let log_path = self.log_path(member);
        // The log is appended to across restarts. etcd's own stdout and
        // stderr go there too: flag errors and Go panics are written
        // before or outside the logger.
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open the etcd log");
        let mut command = Command::new(ETCD);
        match &self.tls {
            None => command.args(["--listen-client-urls", &client]),
            Some(tls) => command
                .arg("--listen-client-urls")
                .arg(format!("{client},https://127.0.0.1:{}", m.tls_port))
                .arg("--cert-file")
                .arg(&tls.cert_file)
                .arg("--key-file")
                .arg(&tls.key_file)
                .arg("--trusted-ca-file")
                .arg(&tls.ca_file)
                .arg("--client-cert-auth"),
        };
        command
            .arg("--name")
            .arg(format!("m{member}"))
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("m{member}")))
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", state])
            // Failover tests wait for an election: a tenth of the default
            // timings (100 ms, 1 s) is plenty on loopback and elects a new
            // leader in about a second. The election timeout stays ten
            // heartbeats, as etcd advises, so a busy machine does not cause
            // spurious elections.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            // etcd 3.4's default logger (capnslog) writes only to stderr;
            // zap can write to a file, so the test output stays readable.
            .args(["--logger", "zap", "--log-outputs"])
            .arg(&log_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the etcd log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("spawn {ETCD} for m{member}: {error}"))
    }

    /// Waits (up to [`START_LIMIT`]) until every member in `members`
    /// answers `/health` with `{"health":"true"}`; `Err` says which did not
    /// and why, as soon as one exits.
    fn wait_healthy(&self, members: &[usize]) -> Result<(), String> {
        let deadline = Instant::now() + START_LIMIT;
        let mut pending = members.to_vec();
        let mut last = String::new();
        loop {
            let mut still = Vec::new();
            for &member in &pending {
                if !self.is_running(member) {
                    return Err(format!("m{member} exited"));
                }
                match health(self.members[member].client_port) {
                    Ok(true) => {}
                    Ok(false) => {
                        last = format!("m{member} is not healthy");
                        still.push(member);
                    }
                    Err(error) => {
                        last = format!("m{member}: {error}");
                        still.push(member);
                    }
                }
            }
            pending = still;
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "members {pending:?} not healthy within {START_LIMIT:?}; last: {last}"
                ));
            }
            sleep(POLL);
        }
    }

    /// Whether a member failed because a port was taken.
    fn port_clash(&self) -> bool {
        (0..self.members.len()).any(|member| {
            std::fs::read_to_string(self.log_path(member))
                .is_ok_and(|log| log.contains("address already in use"))
        })
    }

    /// Member `member`'s log file.
    fn log_path(&self, member: usize) -> PathBuf {
        self.dir.path().join(format!("m{member}.log"))
    }

    /// The last lines of every member's log, for panic messages.
    fn log_tails(&self) -> String {
        let mut out = String::new();
        for member in 0..self.members.len() {
            let log = std::fs::read_to_string(self.log_path(member)).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL)..];
            out.push_str(&format!("--- m{member} log (last {} lines):\n", tail.len()));
            for line in tail {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        // No panics here: this may run while a test is already panicking.
        for member in &mut self.members {
            if let Ok(child) = member.child.get_mut()
                && let Some(mut child) = child.take()
            {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Polls `probe` every 50 ms until it is `Ok`, failing after `limit` with
/// the last `Err` it saw: the blocking twin of `poll::eventually`.
pub fn eventually_sync<T>(
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("{what}: not within {limit:?}; last seen: {last}")
            }
            Err(_) => sleep(POLL),
        }
    }
}

/// `count` distinct ports that were free a moment ago: all are bound at
/// once (so none repeats), then released for etcd to bind.
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().expect("local address").port())
        .collect()
}

/// `GET /health` on 127.0.0.1:`port`: whether the body says
/// `"health":"true"` (etcd 3.4 says so once the member has a leader and a
/// quorum read through raft succeeds).
fn health(port: u16) -> Result<bool, String> {
    let address = ([127, 0, 0, 1], port).into();
    let mut stream =
        TcpStream::connect_timeout(&address, HEALTH_TIMEOUT).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(HEALTH_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(HEALTH_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    // HTTP/1.0: the server closes the connection after its reply, so the
    // reply is everything up to EOF.
    stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let _ = stream.shutdown(Shutdown::Write);
    let mut reply = String::new();
    stream
        .read_to_string(&mut reply)
        .map_err(|e| e.to_string())?;
    let body = reply.split("\r\n\r\n").nth(1).unwrap_or_default();
    Ok(body.replace(' ', "").contains(r#""health":"true""#))
}

/// Parses etcdctl's JSON output.
fn parse(json: &str) -> Value {
    serde_json::from_str(json).unwrap_or_else(|error| panic!("etcdctl JSON ({error}): {json}"))
}

/// The `(key, value)` pairs of `etcdctl get -w json`, whose keys and
/// values are base64 (`kvs` is absent when nothing matched).
fn key_values(json: &str) -> Vec<(String, String)> {
    let value = parse(json);
    let Some(kvs) = value.get("kvs") else {
        return Vec::new();
    };
    let text = |kv: &Value, field: &str| {
        let encoded = kv[field]
            .as_str()
            .unwrap_or_else(|| panic!("no {field} in {kv}"));
        String::from_utf8(base64_decode(encoded))
            .unwrap_or_else(|_| panic!("{field} of {kv} is not UTF-8"))
    };
    kvs.as_array()
        .unwrap_or_else(|| panic!("kvs is not an array: {json}"))
        .iter()
        .map(|kv| (text(kv, "key"), text(kv, "value")))
        .collect()
}

/// Standard base64 with padding, as Go's encoding/json writes `[]byte`
/// (no new dependency for the one place the tests need it).
fn base64_decode(encoded: &str) -> Vec<u8> {
    let sextet = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {encoded:?}"),
        }
    };
    let mut out = Vec::with_capacity(encoded.len() / 4 * 3);
    for chunk in encoded.trim_end_matches('=').as_bytes().chunks(4) {
        let bits = chunk
            .iter()
            .enumerate()
            .fold(0, |bits, (i, &c)| bits | sextet(c) << (18 - 6 * i));
        // n characters carry n * 6 bits: 2 → 1 byte, 3 → 2, 4 → 3.
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}
