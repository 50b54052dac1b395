//! The `roster` binary as a user runs it: `roster serve` with config files,
//! flags and zone directories; start-up errors; the log line that gives the
//! bound addresses; clean shutdown on SIGTERM and SIGINT.
//!
//! Every child is spawned with `kill_on_drop`, so a failing test leaves no
//! process behind.

mod common;

use std::{net::SocketAddr, path::Path, process::Stdio, time::Duration};

use common::process::{field, strip_ansi};
use hickory_proto::{op::ResponseCode, rr::RecordType};
use serde_json::json;
use tempfile::TempDir;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    task::JoinHandle,
    time::timeout,
};

/// The longest a start-up or shutdown may take before the test gives up
/// (a hang guard, not a timing assertion).
const DEADLINE: Duration = Duration::from_secs(30);

/// `roster serve ARGS…` in `dir`, on ephemeral ports unless `args` say
/// otherwise, with zones and data kept inside `dir`. Stdout and stdin are
/// closed; stderr is piped.
fn serve(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_roster"));
    command
        .arg("serve")
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Flags that keep a test's roster off the default ports and out of the
/// working tree.
fn isolated(dir: &Path) -> Vec<String> {
    let data = dir.join("data");
    let zones = dir.join("zones");
    vec![
        "--dns".into(),
        "127.0.0.1:0".into(),
        "--http".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        data.display().to_string(),
        "--zones".into(),
        zones.display().to_string(),
    ]
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create directory");
    }
    std::fs::write(&path, text).expect("write file");
    path.display().to_string()
}

/// Runs a roster that is expected to refuse to start; returns its stderr
/// after asserting a non-zero exit.
async fn expect_start_failure(mut command: Command) -> String {
    let child = command.spawn().expect("spawn roster");
    let output = timeout(DEADLINE, child.wait_with_output())
        .await
        .expect("roster should exit at once on a start-up error, not serve")
        .expect("wait for roster");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !output.status.success(),
        "roster exited successfully despite the error: {}\n{stderr}",
        output.status
    );
    stderr
}

/// The address in a `key=ADDR` field of a log line.
fn field_addr(line: &str, key: &str) -> SocketAddr {
    field(line, &format!("{key}=")).unwrap_or_else(|| panic!("no {key}=ADDR in {line:?}"))
}

/// A roster child process that has logged that it is serving.
struct Serving {
    child: Child,
    dns: SocketAddr,
    http: SocketAddr,
    /// The log up to and including the "serving" line, as written.
    startup_log: String,
    /// The rest of the log, complete once the process exits.
    rest_of_log: JoinHandle<String>,
}

/// Spawns `command` and waits (with a deadline) for the line that says
/// roster is serving, taking the bound addresses from it.
async fn start(mut command: Command) -> Serving {
    let mut child = command.spawn().expect("spawn roster");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    let mut startup_log = String::new();
    let serving = timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.expect("read stderr") {
            startup_log.push_str(&line);
            startup_log.push('\n');
            let plain = strip_ansi(&line);
            if plain.contains("roster is serving") {
                return Some(plain);
            }
        }
        None
    })
    .await;
    let line = match serving {
        Err(_) => panic!("roster did not log \"roster is serving\" in time:\n{startup_log}"),
        Ok(None) => panic!("roster exited before serving:\n{startup_log}"),
        Ok(Some(line)) => line,
    };
    // Keep reading, so a chatty roster never blocks on a full pipe.
    let rest_of_log = tokio::spawn(async move {
        let mut log = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    Serving {
        child,
        dns: field_addr(&line, "dns"),
        http: field_addr(&line, "http"),
        startup_log,
        rest_of_log,
    }
}

impl Serving {
    /// Sends `signal` with `kill(1)` and returns the exit status and the
    /// rest of the log once roster has exited.
    async fn stop_with(mut self, signal: &str) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().expect("roster is still running");
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .await
            .expect("run kill");
        assert!(sent.success(), "kill -{signal} {pid} failed");
        let status = timeout(DEADLINE, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("roster did not exit after SIG{signal}"))
            .expect("wait for roster");
        let log = timeout(DEADLINE, self.rest_of_log)
            .await
            .expect("stderr closes when roster exits")
            .expect("log reader");
        (status, log)
    }

    async fn register(&self, service: &str, id: &str, address: &str) {
        let url = format!("http://{}/v1/services/{service}/instances/{id}", self.http);
        let response = common::http_client()
            .put(url)
            .json(&json!({"address": address, "port": 80}))
            .send()
            .await
            .expect("PUT");
        assert_eq!(response.status().as_u16(), 200, "register {service}/{id}");
    }
}

#[tokio::test]
async fn a_config_file_with_an_unknown_key_is_refused_naming_it() {
    let dir = TempDir::new().expect("tempdir");
    let config = write(dir.path(), "roster.toml", "[dns]\nttll = 5\n");
    let mut args = vec!["--config".to_owned(), config];
    args.extend(isolated(dir.path()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let stderr = expect_start_failure(serve(dir.path(), &args)).await;
    assert!(stderr.contains("ttll"), "the key is named:\n{stderr}");
    assert!(
        stderr.contains("roster.toml"),
        "the file is named:\n{stderr}"
    );
}

#[tokio::test]
async fn a_config_file_with_a_bad_value_is_refused_naming_the_key() {
    let dir = TempDir::new().expect("tempdir");
    for (text, key) in [
        ("[dns]\nttl = \"x\"\n", "ttl"),
        ("[http]\nlisten = \"nowhere\"\n", "listen"),
        ("[dns]\ndomain = \"bad_domain!\"\n", "dns.domain"),
    ] {
        let config = write(dir.path(), "roster.toml", text);
        let mut args = vec!["--config".to_owned(), config];
        args.extend(isolated(dir.path()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let stderr = expect_start_failure(serve(dir.path(), &args)).await;
        assert!(stderr.contains(key), "{text:?}: {key} is named:\n{stderr}");
        assert!(stderr.contains("roster.toml"), "{text:?}:\n{stderr}");
    }
}

#[tokio::test]
async fn config_toml_in_the_working_directory_is_read_by_default() {
    let dir = TempDir::new().expect("tempdir");
    write(dir.path(), "config.toml", "[http]\nbogus_key = 1\n");
    let args = isolated(dir.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let stderr = expect_start_failure(serve(dir.path(), &args)).await;
    assert!(stderr.contains("bogus_key"), "{stderr}");
    assert!(stderr.contains("config.toml"), "{stderr}");
}

#[tokio::test]
async fn a_broken_zone_file_stops_start_up_naming_file_and_line() {
    let dir = TempDir::new().expect("tempdir");
    write(
        dir.path(),
        "zones/example.com.zone",
        "$TTL 300\n\
         @ IN SOA ns1 hostmaster 1 3600 600 86400 60\n\
         @ IN NS ns1\n\
         ns1 IN A 192.0.2.1\n\
         www IN A 192.0.2.10\n\
         mail IN A 192.0.2.300\n\
         ok IN A 192.0.2.2\n",
    );
    let args = isolated(dir.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let stderr = expect_start_failure(serve(dir.path(), &args)).await;
    assert!(stderr.contains("example.com.zone"), "the file:\n{stderr}");
    assert!(stderr.contains("line 6"), "the line:\n{stderr}");
}

/// A file of records for the default domain, left in place when
/// `--domain` changes (the README's caution about `.local`), is refused
/// with what to do about it.
#[tokio::test]
async fn a_zone_file_without_an_soa_outside_the_domain_says_how_to_mend_it() {
    let dir = TempDir::new().expect("tempdir");
    write(
        dir.path(),
        "zones/service.local.zone",
        "$TTL 30\nlegacy-db IN A 192.0.2.50\n",
    );
    let mut args = isolated(dir.path());
    args.extend(["--domain".into(), "service.internal".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let stderr = expect_start_failure(serve(dir.path(), &args)).await;
    assert!(stderr.contains("service.local.zone"), "the file:\n{stderr}");
    assert!(stderr.contains("has no SOA"), "{stderr}");
    assert!(
        stderr.contains("rename the file service.internal.zone"),
        "what to do:\n{stderr}"
    );
}

/// A `--zones` directory that is not there serves no static zones, and
/// says so: a typo must not pass unnoticed.
#[tokio::test]
async fn a_zones_directory_that_is_not_there_is_warned_about() {
    let dir = TempDir::new().expect("tempdir");
    let args = isolated(dir.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let serving = start(serve(dir.path(), &args)).await;
    let startup = serving.startup_log.clone();
    let (status, _) = serving.stop_with("TERM").await;
    assert!(status.success(), "{status}");
    assert!(
        startup.contains("dns.zones names no directory"),
        "{startup}"
    );
}

async fn serve_answer_and_stop_on(signal: &str) {
    let dir = TempDir::new().expect("tempdir");
    let args = isolated(dir.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let roster = start(serve(dir.path(), &args)).await;
    assert_ne!(roster.dns.port(), 0, "{}", roster.startup_log);
    assert_ne!(roster.http.port(), 0, "{}", roster.startup_log);

    roster.register("web", "web-1", "10.0.0.1").await;
    let udp = common::query_udp(roster.dns, "web.service.local", RecordType::A, None).await;
    assert_eq!(udp.rcode(), ResponseCode::NoError, "{udp}");
    assert_eq!(udp.ips(), common::ips(&["10.0.0.1"]), "{udp}");
    let tcp = common::query_tcp(roster.dns, "web.service.local", RecordType::A, None).await;
    assert_eq!(tcp.ips(), common::ips(&["10.0.0.1"]), "over TCP: {tcp}");

    let (status, log) = roster.stop_with(signal).await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIG{signal}\n{log}"
    );
}

#[tokio::test]
async fn serve_logs_its_addresses_answers_and_exits_0_on_sigterm() {
    serve_answer_and_stop_on("TERM").await;
}

#[tokio::test]
async fn serve_exits_0_on_sigint() {
    serve_answer_and_stop_on("INT").await;
}

#[tokio::test]
async fn flags_override_the_config_file() {
    let dir = TempDir::new().expect("tempdir");
    let config = write(
        dir.path(),
        "roster.toml",
        "[dns]\nttl = 9\ndomain = \"from-file.test\"\nlisten = \"127.0.0.1:1\"\n",
    );
    write(
        dir.path(),
        "zones/example.com.zone",
        "$TTL 300\n@ IN SOA ns1 hostmaster 1 3600 600 86400 60\n@ IN NS ns1\nwww IN A 192.0.2.10\n",
    );
    let mut args = vec![
        "--config".to_owned(),
        config,
        "--domain".to_owned(),
        "roster.test".to_owned(),
    ];
    // --dns 127.0.0.1:0 overrides the file's port 1.
    args.extend(isolated(dir.path()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let roster = start(serve(dir.path(), &args)).await;

    roster.register("web", "web-1", "10.0.0.1").await;
    let web = common::query_udp(roster.dns, "web.roster.test", RecordType::A, Some(1232)).await;
    assert_eq!(web.ips(), common::ips(&["10.0.0.1"]), "{web}");
    assert_eq!(
        web.answers()[0].ttl,
        9,
        "the file's TTL still applies:\n{web}"
    );
    for other in ["web.from-file.test", "web.service.local"] {
        let refused = common::query_udp(roster.dns, other, RecordType::A, Some(1232)).await;
        assert_eq!(refused.rcode(), ResponseCode::Refused, "{other}: {refused}");
    }
    let www = common::query_udp(roster.dns, "www.example.com", RecordType::A, None).await;
    assert_eq!(www.ips(), common::ips(&["192.0.2.10"]), "--zones: {www}");

    let (status, log) = roster.stop_with("TERM").await;
    assert!(status.success(), "{status}\n{log}");
}

#[tokio::test]
async fn a_signal_right_after_the_serving_line_still_shuts_down_cleanly() {
    // Scripts (and these tests) take "roster is serving" as the sign that
    // roster is up; a SIGTERM sent at once must already find the handler.
    // A race, so try it often: about 40 ms a try.
    for attempt in 0..50 {
        let dir = TempDir::new().expect("tempdir");
        let args = isolated(dir.path());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let roster = start(serve(dir.path(), &args)).await;
        let (status, log) = roster.stop_with("TERM").await;
        assert_eq!(
            status.code(),
            Some(0),
            "attempt {attempt}: {status} (killed by the signal, so no handler was installed yet)\n{log}"
        );
    }
}

#[tokio::test]
async fn the_log_has_no_colour_codes_when_stderr_is_not_a_terminal() {
    let dir = TempDir::new().expect("tempdir");
    let args = isolated(dir.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let roster = start(serve(dir.path(), &args)).await;
    let startup_log = roster.startup_log.clone();
    drop(roster); // kill_on_drop
    assert!(
        !startup_log.contains('\u{1b}'),
        "stderr is a pipe here, so the log should be plain text that `grep dns=` finds:\n{}",
        startup_log.escape_debug()
    );
}

#[tokio::test]
async fn an_empty_data_dir_flag_keeps_nothing_on_disk() {
    let dir = TempDir::new().expect("tempdir");
    let zones = dir.path().join("zones");
    let zones = zones.display().to_string();
    let args = [
        "--dns",
        "127.0.0.1:0",
        "--http",
        "127.0.0.1:0",
        "--zones",
        zones.as_str(),
        "--data-dir",
        "",
    ];
    let roster = start(serve(dir.path(), &args)).await;
    roster.register("web", "web-1", "10.0.0.1").await;
    let (status, log) = roster.stop_with("TERM").await;
    assert!(status.success(), "{status}\n{log}");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read the working directory")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    assert!(
        !left.iter().any(|name| name == "data"),
        "a store was created in the working directory: {left:?}"
    );
}
